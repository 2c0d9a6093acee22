// index.d.ts matches the code users write: the seed example type-checks with --strict,
// wrong argument types do not.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import test from 'ava'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const tsc = (file) =>
  promisify(execFile)(
    process.execPath,
    [path.join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--target', 'es2022',
      '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', file],
    { cwd: root },
  )

test('the seed example type-checks against index.d.ts', async (t) => {
  await t.notThrowsAsync(tsc('__test__/fixtures/seed-example.ts'))
})

test('acquireLock(1, "x") does not type-check', async (t) => {
  const err = await t.throwsAsync(tsc('__test__/fixtures/bad-args.ts'))
  t.regex(err.stdout, /bad-args\.ts\(5,26\): error TS2345: Argument of type 'number' is not assignable to parameter of type 'string'/)
})
