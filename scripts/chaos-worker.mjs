// A worker process of the chaos run (scripts/chaos.mjs). It runs `loops` loops that take
// the one lock (with fencing), and inside the critical section do a read-modify-write of
// a counter on the witness redis-server, every witness call carrying the fence. The
// witness is the "storage layer" of the fencing-token story: a Lua script that refuses a
// fence lower than the highest it has seen, and that logs every call with its own clock.
//
// Messages from the parent: { type: 'stop' } (finish the current operation, release,
// quit), { type: 'arm' } (SIGSTOP yourself inside the next critical section, between the
// validity check and the write: the parent resumes the process later), { type: 'disarm' }.
// Messages to the parent: { type: 'ready' }, { type: 'ops', ops } (batches of operation
// records), { type: 'done', summary }.
import { readdirSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Redlock, Redis } = require('../index.js')
const IORedis = require('ioredis')

const cfg = JSON.parse(process.argv[2])
const { id, ports, witnessPort, resource, ttl, settings, loops, mode, seed, keys } = cfg

// ---- witness scripts (KEYS: hi, log, counter, naive)
const TIME = `local t = redis.call('TIME')
local now = string.format('%.3f', tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000)`
const witnessScripts = {
  // Enter the critical section: refused when a fence at least as high already entered.
  // Returns { verdict, counter, naive }.
  chaosEnter: `${TIME}
local hi = tonumber(redis.call('GET', KEYS[1]) or '0')
local verdict = 'ok'
if tonumber(ARGV[1]) <= hi then verdict = 'stale' else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('RPUSH', KEYS[2], table.concat({'E', ARGV[1], ARGV[2], ARGV[3], now, ARGV[4], verdict}, ' '))
return {verdict, redis.call('GET', KEYS[3]) or '0', redis.call('GET', KEYS[4]) or '0'}`,
  // Write the incremented counter and leave: the fenced counter refuses a fence below the
  // highest seen; the "naive" counter (what a store without a fence check would hold)
  // takes every write.
  chaosWrite: `${TIME}
local hi = tonumber(redis.call('GET', KEYS[1]) or '0')
local verdict = 'ok'
if tonumber(ARGV[1]) < hi then verdict = 'stale' else redis.call('SET', KEYS[3], ARGV[5]) end
redis.call('SET', KEYS[4], ARGV[6])
redis.call('RPUSH', KEYS[2], table.concat({'W', ARGV[1], ARGV[2], ARGV[3], now, ARGV[4], verdict}, ' '))
return verdict`,
  // Leave without writing (the lock expired before the write).
  chaosAbandon: `${TIME}
redis.call('RPUSH', KEYS[2], table.concat({'A', ARGV[1], ARGV[2], ARGV[3], now, ARGV[4], 'abandoned'}, ' '))
return 'abandoned'`,
}

const witness = new IORedis({ port: witnessPort, host: '127.0.0.1', maxRetriesPerRequest: null })
for (const [name, lua] of Object.entries(witnessScripts)) witness.defineCommand(name, { numberOfKeys: 4, lua })
const wkeys = [keys.hi, keys.log, keys.counter, keys.naive]

// A small seeded PRNG (mulberry32) for think times: each worker its own stream.
function prng(s) {
  let a = s >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const random = prng(seed * 1000 + id)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port, connectTimeout: 500, commandTimeout: 500 }))
const redlock = new Redlock(clients, settings)

let stopping = false
let armed = false
let batch = []
const summary = { completed: 0, acquired: 0, failed: 0, stale: 0, abandoned: 0, lateUnopposed: 0, lost: 0 }

let go
const started = new Promise((resolve) => (go = resolve))
process.on('message', (m) => {
  if (m?.type === 'go') go()
  else if (m?.type === 'stop') stopping = true
  else if (m?.type === 'arm') armed = true
  else if (m?.type === 'disarm') armed = false
})

function flush() {
  if (batch.length > 0 && process.connected) {
    process.send({ type: 'ops', ops: batch })
    batch = []
  }
}
const flusher = setInterval(flush, 250)

/** What this process holds: memory, file descriptors, and active resources by type (sockets, timers...). */
function resources() {
  const active = {}
  for (const type of process.getActiveResourcesInfo()) active[type] = (active[type] ?? 0) + 1
  const mem = process.memoryUsage()
  let fds
  try {
    fds = readdirSync('/proc/self/fd').length
  } catch {}
  return { t: Date.now(), rss: mem.rss, heapUsed: mem.heapUsed, fds, active }
}
const sampler = setInterval(() => process.connected && process.send({ type: 'sample', sample: resources() }), cfg.sampleMs ?? 5000)

/**
 * The critical section. `valid()` says whether the lock is still safe to use (a careful
 * client checks before every write); a SIGSTOP between that check and the write is the
 * textbook case that only the fence catches.
 */
async function critical(holder, valid, rec) {
  const fence = holder.lock.fence.toString()
  const op = rec.op
  if (!valid()) {
    rec.cs = 'expired-before-enter'
    return
  }
  const [verdict, counter, naive] = await witness.chaosEnter(...wkeys, fence, id, op, holder.lock.expiration)
  if (verdict !== 'ok') {
    rec.cs = 'enter-refused'
    summary.stale += 1
    return
  }
  // The work: usually short; the `using` workers sometimes hold across an automatic
  // extension, the others sometimes extend by hand.
  const long = mode === 'using' && random() < 0.02
  await sleep(long ? ttl * (0.7 + random() * 0.5) : random() * 10)
  if (mode === 'acquire' && random() < 0.05 && valid()) {
    try {
      holder.lock = await holder.lock.extend(ttl)
      rec.exp = holder.lock.expiration
      rec.extended = (rec.extended ?? 0) + 1
    } catch (e) {
      // The lock stays valid until its old expiration (the check below uses it).
      rec.extendFailed = e?.reason ?? e?.name
    }
  }
  if (!valid()) {
    await witness.chaosAbandon(...wkeys, fence, id, op, holder.lock.expiration)
    rec.cs = 'abandoned'
    summary.abandoned += 1
    return
  }
  if (armed) {
    // Paused between the validity check and the write (the parent resumes us later).
    armed = false
    rec.selfStopped = true
    process.kill(process.pid, 'SIGSTOP')
  }
  const written = await witness.chaosWrite(...wkeys, fence, id, op, holder.lock.expiration, Number(counter) + 1, Number(naive) + 1)
  if (written === 'ok') {
    rec.cs = 'completed'
    summary.completed += 1
  } else {
    rec.cs = 'write-refused'
    summary.stale += 1
  }
}

function failure(rec, e) {
  rec.ok = false
  rec.error = e?.name ?? typeof e
  rec.reason = e?.reason
  rec.message = String(e?.message ?? e).slice(0, 200)
  summary.failed += 1
}

async function loop(l) {
  let n = 0
  let wanted = Date.now() // since when this loop has wanted the lock (across failed acquires)
  while (!stopping) {
    const rec = { w: id, l, op: `${id}.${l}.${n++}`, t0: Date.now(), wanted }
    try {
      if (mode === 'using') {
        await redlock.using([resource], ttl, async (signal, lock) => {
          rec.t1 = Date.now()
          rec.ok = true
          rec.fence = lock.fence.toString()
          rec.exp0 = lock.expiration
          summary.acquired += 1
          // When an automatic extension fails, using() aborts the signal and removes the
          // keys: the lock ends there, before its expiration.
          signal.addEventListener('abort', () => (rec.lostAt ??= Date.now()), { once: true })
          await critical({ lock }, () => !signal.aborted && Date.now() < lock.expiration, rec)
          rec.exp = lock.expiration // the last expiration the automatic extensions reached
          rec.tr = Date.now() // using() releases next
          if (signal.aborted) {
            rec.lost = signal.error?.reason ?? 'aborted'
            summary.lost += 1
          }
        })
        rec.t2 = Date.now()
      } else {
        const holder = { lock: await redlock.acquire([resource], ttl) }
        rec.t1 = Date.now()
        rec.ok = true
        rec.fence = holder.lock.fence.toString()
        rec.exp0 = rec.exp = holder.lock.expiration
        summary.acquired += 1
        try {
          // An extension replaces holder.lock; a failed one leaves the old lock, valid until its expiration.
          await critical(holder, () => Date.now() < holder.lock.expiration, rec)
        } finally {
          rec.tr = Date.now()
          try {
            await holder.lock.release()
            rec.release = 'ok'
          } catch (e) {
            rec.release = e?.reason ?? e?.name ?? 'error'
            rec.releaseError = e?.name
          }
          rec.t2 = Date.now()
        }
      }
    } catch (e) {
      if (rec.ok) {
        // The critical section itself threw (a witness error): recorded, not a lock failure.
        rec.csError = String(e?.message ?? e).slice(0, 200)
      } else {
        rec.t1 = Date.now()
        failure(rec, e)
      }
    }
    if (rec.ok) wanted = Date.now()
    batch.push(rec)
    // A little space between operations, so that the loops are not all in lock-step.
    await sleep(random() * 5)
  }
}

await witness.ping()
process.send({ type: 'ready' })
await started
await Promise.all(Array.from({ length: loops }, (_, l) => loop(l)))
clearInterval(flusher)
clearInterval(sampler)
flush()
await redlock.quit()
await Promise.all(clients.map((c) => c.quit().catch(() => {})))
await witness.quit()
process.send({ type: 'done', summary }, () => process.disconnect())
