// index.d.ts matches the code users write: the seed example and node-redlock's documented
// usage type-check with --strict, wrong argument types do not. One tsc run checks both.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

function tsc(...files) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--skipLibCheck', '--target', 'es2022',
        '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', ...files],
      { cwd: root },
      (error, stdout) => resolve({ code: error ? error.code : 0, stdout }),
    )
  })
}

test('index.d.ts accepts the seed example and refuses acquireLock(1, "x")', async (t) => {
  const { code, stdout } = await tsc('__test__/fixtures/seed-example.ts', '__test__/fixtures/bad-args.ts')
  const errors = stdout.split('\n').filter((l) => l.includes('error TS'))
  t.is(code, 2, stdout)
  t.deepEqual(errors, [
    "__test__/fixtures/bad-args.ts(5,26): error TS2345: Argument of type 'number' is not assignable to parameter of type 'string'.",
  ])
})
