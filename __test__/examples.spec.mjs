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
    [path.join(root, 'node_modules/typescript/bin/tsc'), '--strict', '--skipLibCheck', '--target', 'es2022', '--lib', 'es2022,esnext.disposable',
      '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', '--rootDir', 'examples', '--outDir', out,
      'examples/seed.ts', 'examples/fencing.ts', 'examples/dispose.ts', 'examples/metrics.ts'],
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

test('examples/dispose.ts: `await using` releases the lock at the end of the block, on Node.js 20', async (t) => {
  const { main } = createRequire(import.meta.url)(path.join(out, 'dispose.js'))
  const { inside, after } = await main()
  t.deepEqual(inside, ['orders:42'])
  t.deepEqual(after, [])
})

test.serial('examples/metrics.ts turns the diagnostics channels into prom-client metrics', async (t) => {
  const require = createRequire(import.meta.url)
  const { instrument } = require(path.join(out, 'metrics.js'))
  const { MemoryStore, Redlock } = require('../index.js')
  const registry = instrument()
  const redlock = new Redlock([new MemoryStore()], { retryCount: 0 })
  const lock = await redlock.acquire(['m'], 1_000)
  await t.throwsAsync(redlock.acquire(['m'], 1_000))
  await (await lock.extend(1_000)).release()
  const text = await registry.metrics()
  t.regex(text, /redlock_operation_seconds_count\{operation="acquire",kind="mutex",outcome="ok"\} 1/)
  t.regex(text, /redlock_operation_seconds_count\{operation="acquire",kind="mutex",outcome="locked"\} 1/)
  t.regex(text, /redlock_operation_seconds_count\{operation="extend",kind="mutex",outcome="ok"\} 1/)
  t.regex(text, /redlock_operation_seconds_count\{operation="release",kind="mutex",outcome="ok"\} 1/)
  await redlock.quit()
})
