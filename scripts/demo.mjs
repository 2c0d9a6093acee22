// The seed's example against three throwaway local redis-servers: two contenders race
// for one lock; the loser waits (retries) and gets it once the winner releases.
import { createRequire } from 'node:module'

import { startServers, stopServers } from './redis-servers.mjs'

const require = createRequire(import.meta.url)
const { Redis, RedisJsClient, Redlock } = require('../index.js')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const t0 = Date.now()
const log = (who, msg) => console.log(`${String(Date.now() - t0).padStart(5)} ms  ${who.padEnd(7)} ${msg}`)

const servers = await startServers(3)
console.log(`Started 3 redis-servers on ports ${servers.map((s) => s.port).join(', ')}\n`)

function contender(name, holdMs) {
  // The seed's example: two Redis clients and one RedisJsClient, one vote each.
  const a = new Redis({ host: '127.0.0.1', port: servers[0].port })
  const b = new RedisJsClient({ url: `redis://127.0.0.1:${servers[1].port}` })
  const c = new Redis({ host: '127.0.0.1', port: servers[2].port })
  const redlock = new Redlock([a, b, c], { retryCount: 40, retryDelay: 50, retryJitter: 25 })
  return async () => {
    log(name, 'wants orders:42')
    const started = Date.now()
    const acquired = await redlock.acquireLock('orders:42', 10_000)
    if (acquired !== true) {
      log(name, acquired === false ? 'gave up: another owner holds the lock' : 'gave up: too many servers failed')
      return
    }
    const values = await Promise.all(servers.map((s) => s.command('GET', 'orders:42')))
    log(name, `got the lock after ${Date.now() - started} ms (value ${values.find(Boolean)?.slice(0, 8)}… on ${values.filter(Boolean).length}/3 servers)`)
    try {
      await sleep(holdMs) // the critical section
    } finally {
      await redlock.releaseLock('orders:42', true)
      log(name, `released after holding it ${holdMs} ms`)
      await redlock.quit()
    }
  }
}

try {
  await Promise.all([contender('alice', 300)(), contender('bob', 200)()])
  const left = await Promise.all(servers.map((s) => s.command('GET', 'orders:42')))
  console.log(`\nKeys left on the servers: ${left.filter(Boolean).length} (every lock was released)`)
} finally {
  await stopServers(servers)
}
