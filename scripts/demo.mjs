// The seed's example: two contenders race for one lock; the loser waits (retries) and gets
// it once the winner releases. On three throwaway local redis-servers when redis-server is
// installed, otherwise on three in-process MemoryStores (the first line says which).
import { createRequire } from 'node:module'

import { redisServerBin, startServers, stopServers } from './redis-servers.mjs'

const require = createRequire(import.meta.url)
const { MemoryStore, Redis, RedisJsClient, Redlock } = require('../index.js')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

let servers = null
try {
  redisServerBin()
  servers = await startServers(3)
  console.log(`Using 3 throwaway redis-servers on ports ${servers.map((s) => s.port).join(', ')}\n`)
} catch {
  console.log('Using 3 in-process MemoryStores (no redis-server on PATH: install one to run against real servers)\n')
}
const stores = servers ? null : [new MemoryStore({ name: 'a' }), new MemoryStore({ name: 'b' }), new MemoryStore({ name: 'c' })]
const t0 = Date.now()
const log = (who, msg) => console.log(`${String(Date.now() - t0).padStart(5)} ms  ${who.padEnd(7)} ${msg}`)

/** The value of `key` on each node. */
const valuesOf = (key) =>
  servers
    ? Promise.all(servers.map((s) => s.command('GET', key)))
    : Promise.all(stores.map((s) => s.get(key)))

/** The seed's example: two Redis clients and one RedisJsClient, one vote each. */
function clients() {
  if (!servers) return stores
  return [
    new Redis({ host: '127.0.0.1', port: servers[0].port }),
    new RedisJsClient({ url: `redis://127.0.0.1:${servers[1].port}` }),
    new Redis({ host: '127.0.0.1', port: servers[2].port }),
  ]
}

function contender(name, holdMs) {
  const redlock = new Redlock(clients(), { retryCount: 40, retryDelay: 50, retryJitter: 25 })
  return async () => {
    log(name, 'wants orders:42')
    const started = Date.now()
    const acquired = await redlock.acquireLock('orders:42', 10_000)
    if (acquired !== true) {
      log(name, acquired === false ? 'gave up: another owner holds the lock' : 'gave up: too many servers failed')
      return
    }
    const values = await valuesOf('orders:42')
    log(name, `got the lock after ${Date.now() - started} ms (value ${values.find(Boolean)?.slice(0, 8)}… on ${values.filter(Boolean).length}/3 nodes)`)
    try {
      await sleep(holdMs) // the critical section
    } finally {
      await redlock.releaseLock('orders:42', true)
      log(name, `released after holding it ${holdMs} ms`)
      if (servers) await redlock.quit()
    }
  }
}

try {
  await Promise.all([contender('alice', 300)(), contender('bob', 200)()])
  const left = await valuesOf('orders:42')
  console.log(`\nKeys left on the ${servers ? 'servers' : 'stores'}: ${left.filter(Boolean).length} (every lock was released)`)
} finally {
  if (servers) await stopServers(servers)
  else await Promise.all(stores.map((s) => s.quit()))
}
