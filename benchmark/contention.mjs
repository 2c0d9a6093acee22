// Contention workers: `workers` loops that take one lock, run a critical section that
// does a read-modify-write on a separate "witness" Redis (and flags overlaps), and
// release. Used in-process (scenario 3) and from child processes (scenario 4).
import { createRequire } from 'node:module'

import { implementations, semaphores } from './impls.mjs'

const require = createRequire(import.meta.url)
const IORedis = require('ioredis')

/**
 * The critical section of the contention scenarios: four round trips to the witness, a
 * read-modify-write that a second holder would corrupt. `true` when another holder was
 * inside at the same time.
 */
export async function witnessSection(witness, key) {
  const together = (await witness.incr(`${key}:holders`)) > 1
  const v = Number(await witness.get(`${key}:counter`))
  await witness.set(`${key}:counter`, v + 1)
  await witness.decr(`${key}:holders`)
  return together
}

/**
 * Runs `workers` contending loops for `seconds` on `key`. Returns per-worker counts,
 * the worst wait (ms from wanting the lock to holding it), failures and overlaps.
 */
export async function contend({ impl, ports, witnessPort, key, workers, seconds, ttl = 5_000, startAt = Date.now() }) {
  const lib = await implementations[impl](ports)
  const cpu0 = process.cpuUsage()
  const witness = new IORedis({ port: witnessPort, host: '127.0.0.1' })
  await witness.ping()
  // Processes start together: the loops begin at `startAt` (set by the parent).
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())))
  const counts = Array.from({ length: workers }, () => 0)
  let worstWait = 0
  let failures = 0
  let overlaps = 0
  let active = 0
  const end = startAt + seconds * 1000
  await Promise.all(
    counts.map(async (_, w) => {
      while (Date.now() < end) {
        const wanted = performance.now()
        let handle
        for (;;) {
          try {
            handle = await lib.acquire(key, ttl)
            break
          } catch {
            failures += 1 // retries exhausted: want it again, the wait goes on
            if (Date.now() >= end) return
          }
        }
        worstWait = Math.max(worstWait, performance.now() - wanted)
        // The critical section: a read-modify-write that a second holder would corrupt.
        active += 1
        if (active > 1) overlaps += 1
        if (await witnessSection(witness, key)) overlaps += 1
        active -= 1
        counts[w] += 1
        try {
          await lib.release(handle)
        } catch {}
      }
    }),
  )
  await lib.close()
  await witness.quit()
  const cpu = process.cpuUsage(cpu0)
  return { counts, worstWait, failures, overlaps, cpuUs: cpu.user + cpu.system }
}

/**
 * `workers` loops holding a permit of a `permits` semaphore for `seconds`; the witness
 * counts the holders at once (the highest is reported, from every process together).
 */
export async function contendSemaphore({ impl, ports, witnessPort, key, workers, permits, seconds, ttl = 5_000, startAt = Date.now() }) {
  const lib = await semaphores[impl](ports)
  const witness = new IORedis({ port: witnessPort, host: '127.0.0.1' })
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())))
  const cpu0 = process.cpuUsage()
  let ops = 0
  const end = startAt + seconds * 1000
  const enter = "local n = redis.call('incr', KEYS[1]); local m = tonumber(redis.call('get', KEYS[2]) or '0'); if n > m then redis.call('set', KEYS[2], n) end; return n"
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (Date.now() < end) {
        const handle = await lib.acquire(key, permits, ttl)
        await witness.eval(enter, 2, `${key}:holders`, `${key}:max`)
        await new Promise((r) => setTimeout(r, 1))
        await witness.decr(`${key}:holders`)
        ops += 1
        try {
          await lib.release(handle)
        } catch {}
      }
    }),
  )
  const cpu = process.cpuUsage(cpu0)
  await lib.close()
  await witness.quit()
  return { ops, cpuUs: cpu.user + cpu.system }
}

// As a child process: node contention.mjs '<json options>' -> prints the result as JSON.
if (process.argv[1] && process.argv[1].endsWith('contention.mjs') && process.argv[2]) {
  const options = JSON.parse(process.argv[2])
  const result = await (options.permits ? contendSemaphore(options) : contend(options))
  process.stdout.write(JSON.stringify(result))
}
