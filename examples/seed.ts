// The seed's example, in TypeScript: three Redis nodes, one lock.
// Run: REDIS_PORTS=6379,6380,6381 npx tsx examples/seed.ts (or compile with tsc).
import { Redis, RedisJsClient, Redlock } from 'redlock-rs'

const ports = (process.env.REDIS_PORTS ?? '6379,6380,6381').split(',').map(Number)
const a = new Redis({ host: '127.0.0.1', port: ports[0] })
const b = new RedisJsClient({ url: `redis://127.0.0.1:${ports[1]}` })
const c = new Redis({ host: '127.0.0.1', port: ports[2] })
const redlock = new Redlock([a, b, c])

export async function main(): Promise<boolean> {
  let ran = false
  if (await redlock.acquireLock('orders:42', 10_000)) {
    try {
      ran = true // the critical section
    } finally {
      await redlock.releaseLock('orders:42', true)
    }
  }
  await redlock.quit()
  return ran
}

// Run directly (`npx tsx examples/seed.ts`, or `node` on the compiled file): say whether
// the critical section ran. (The tests import `main` instead.)
if (require.main === module) {
  main().then(
    (ran) => console.log(`critical section ran under the lock: ${ran}`),
    (error) => {
      console.error(error)
      process.exitCode = 1
    },
  )
}
