// The examples in examples/ type-check strictly and run against real servers.
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import test from 'ava'

import { useServers } from './helpers.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = path.join(root, 'target', 'examples')
const servers = useServers(test, 3)

test.before(async () => {
  // Compiled inside the package, so that 'redlock-rs' resolves to this package itself.
  await promisify(execFile)(
    process.execPath,
    [path.join(root, 'node_modules/typescript/bin/tsc'), '--strict', '--skipLibCheck', '--target', 'es2022', '--module', 'nodenext',
      '--moduleResolution', 'nodenext', '--types', 'node', '--rootDir', 'examples', '--outDir', out, 'examples/seed.ts', 'examples/fencing.ts'],
    { cwd: root },
  )
})

test('examples/seed.ts runs the critical section under the lock', async (t) => {
  process.env.REDIS_PORTS = servers.map((s) => s.port).join(',')
  const { main } = createRequire(import.meta.url)(path.join(out, 'seed.js'))
  t.true(await main())
  t.is(await servers[0].command('GET', 'orders:42'), null)
})

test('examples/fencing.ts: increasing fences, and the store refuses an older one', async (t) => {
  const { main, FencedStore } = createRequire(import.meta.url)(path.join(out, 'fencing.js'))
  const store = new FencedStore()
  const [first, second] = await main(servers.map((s) => s.port), store)
  t.true(second > first)
  t.is(store.value, 'second')
  t.false(store.write('late write from the first holder', first))
  t.is(store.value, 'second')
})
