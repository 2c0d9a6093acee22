// Scale: `node benchmark/scale.mjs` (or `npm run bench -- --only=scale`). Writes
// benchmark/scale.md (--out DIR to write elsewhere).
//
//   1. 100k distinct locks held at once by one process: acquire them all (at most 1000
//      in flight), hold them, extend them all, release them all. Time per phase, process
//      RSS per held lock, Redis memory (INFO used_memory) per lock.
//   2. 10k waiters on 1k keys across 4 processes (10 waiters per key, 2-3 of them in each
//      process), each holding its lock for 20 ms: all served, none starved (the worst
//      wait against the 10 x 20 ms a key is held for in all).
//
// On 3 redis-servers of its own (started here, stopped at the end).
import { fork } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'

const require = createRequire(import.meta.url)
const { Redlock, Redis } = require('../index.js')

const here = path.dirname(fileURLToPath(import.meta.url))
v8.setFlagsFromString('--expose-gc')
const gc = globalThis.gc ?? vm.runInNewContext('gc')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
const mb = (bytes) => (bytes / 2 ** 20).toFixed(1)

const LOCKS = 100_000
const IN_FLIGHT = 1_000
const HOLD_MS = 5_000
const DURATION = 120_000
const WAITER_PROCS = 4
const WAITERS = 10_000
const KEYS = 1_000
const WAITER_HOLD = 20

/** Runs `fn(i)` for i < n with at most `limit` in flight. */
async function limited(n, limit, fn) {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await fn(next++)
    }),
  )
}

async function settle() {
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(100)
  }
}

const usedMemory = async (servers) =>
  Promise.all(servers.map(async (s) => Number(/used_memory:(\d+)/.exec(await s.command('INFO', 'memory'))[1])))
const dbsize = (servers) => Promise.all(servers.map((s) => s.command('DBSIZE')))

// ------------------------------------------------------------------ 1. 100k held locks

async function held(servers) {
  const redlock = new Redlock(servers.map((s) => new Redis({ port: s.port })))
  // Warm-up: connections, scripts, allocator pools.
  await limited(2_000, 200, async (i) => (await redlock.acquire([`scale:warm:${i}`], 10_000)).release())
  await settle()
  const rss0 = process.memoryUsage().rss
  const heap0 = process.memoryUsage().heapUsed
  const redis0 = await usedMemory(servers)
  const keys0 = await dbsize(servers)

  const locks = Array.from({ length: LOCKS })
  let t = performance.now()
  await limited(LOCKS, IN_FLIGHT, async (i) => {
    locks[i] = await redlock.acquire([`scale:held:${i}`], DURATION)
  })
  const acquireMs = performance.now() - t
  await settle()
  const rss1 = process.memoryUsage().rss
  const heap1 = process.memoryUsage().heapUsed
  const redis1 = await usedMemory(servers)
  const keys1 = await dbsize(servers)
  await sleep(HOLD_MS)
  const keysHeld = await dbsize(servers)

  t = performance.now()
  await limited(LOCKS, IN_FLIGHT, async (i) => {
    locks[i] = await locks[i].extend(DURATION)
  })
  const extendMs = performance.now() - t
  const soonest = Math.min(...locks.map((l) => l.expiration))

  t = performance.now()
  await limited(LOCKS, IN_FLIGHT, async (i) => {
    await locks[i].release()
  })
  const releaseMs = performance.now() - t
  locks.length = 0
  await settle()
  const rss2 = process.memoryUsage().rss
  const heap2 = process.memoryUsage().heapUsed
  const redis2 = await usedMemory(servers)
  const keys2 = await dbsize(servers)
  // A second round: memory that a round leaves behind would show up here again.
  t = performance.now()
  await limited(LOCKS, IN_FLIGHT, async (i) => {
    locks[i] = await redlock.acquire([`scale:again:${i}`], DURATION)
  })
  const againAcquireMs = performance.now() - t
  t = performance.now()
  await limited(LOCKS, IN_FLIGHT, async (i) => {
    await locks[i].release()
  })
  const againReleaseMs = performance.now() - t
  locks.length = 0
  await settle()
  const rss3 = process.memoryUsage().rss
  const heap3 = process.memoryUsage().heapUsed
  await redlock.quit()
  return {
    acquireMs,
    extendMs,
    releaseMs,
    soonestLeftMs: soonest - Date.now(),
    rss0,
    rss1,
    rss2,
    rss3,
    heap0,
    heap1,
    heap2,
    heap3,
    againAcquireMs,
    againReleaseMs,
    rssPerLock: (rss1 - rss0) / LOCKS,
    heapPerLock: (heap1 - heap0) / LOCKS,
    redisPerLock: redis1.map((m, i) => (m - redis0[i]) / LOCKS),
    redisAfter: redis2.map((m, i) => m - redis0[i]),
    keys: { before: keys0, held: keys1, afterHold: keysHeld, after: keys2 },
  }
}

// ------------------------------------------------- 2. 10k waiters on 1k keys, 4 processes

/** In a child process: this process' share of the waiters; reports their waits. */
async function waiterProcess({ ports, index, startAt }) {
  const redlock = new Redlock(ports.map((port) => new Redis({ port })), { retryCount: -1 })
  await (await redlock.acquire([`scale:warm:${index}`], 1_000)).release()
  const per = WAITERS / WAITER_PROCS
  const waits = []
  let failed = 0
  const deadline = setTimeout(() => {
    process.send({ waits, failed, unfinished: per - waits.length - failed })
    process.exit(0)
  }, 120_000)
  await sleep(startAt - Date.now())
  const cpu0 = process.cpuUsage()
  await Promise.all(
    Array.from({ length: per }, async (_, j) => {
      const key = `scale:wait:${(index * per + j) % KEYS}`
      const t0 = performance.now()
      try {
        const lock = await redlock.acquire([key], 5_000)
        waits.push(performance.now() - t0)
        await sleep(WAITER_HOLD)
        await lock.release()
      } catch {
        failed += 1
      }
    }),
  )
  clearTimeout(deadline)
  const cpu = process.cpuUsage(cpu0)
  await redlock.quit()
  process.send({ waits, failed, unfinished: per - waits.length - failed, cpuMs: (cpu.user + cpu.system) / 1000, rss: process.memoryUsage().rss })
}

async function waiters(servers) {
  const ports = servers.map((s) => s.port)
  const startAt = Date.now() + 2_000
  const t = Date.now()
  const parts = await Promise.all(
    Array.from({ length: WAITER_PROCS }, (_, index) => {
      const child = fork(fileURLToPath(import.meta.url), ['--waiter', JSON.stringify({ ports, index, startAt })], { stdio: 'inherit' })
      return new Promise((resolve, reject) => {
        let result
        child.on('message', (m) => (result = m))
        child.on('exit', (code) => (result ? resolve(result) : reject(new Error(`waiter process ${index} exited ${code}`))))
      })
    }),
  )
  const totalMs = Date.now() - Math.max(t, startAt)
  const waits = parts.flatMap((p) => p.waits).sort((a, b) => a - b)
  return {
    served: waits.length,
    failed: parts.reduce((a, p) => a + p.failed, 0),
    unfinished: parts.reduce((a, p) => a + p.unfinished, 0),
    p50: quantile(waits, 0.5),
    p99: quantile(waits, 0.99),
    max: waits.at(-1),
    totalMs,
    cpuMs: parts.map((p) => p.cpuMs),
    perProcessMax: parts.map((p) => Math.max(...p.waits)),
    keysLeft: await dbsize(servers),
  }
}

// ------------------------------------------------------------------------------ main

async function main() {
  const outIndex = process.argv.indexOf('--out')
  const out = outIndex > 0 ? path.resolve(process.argv[outIndex + 1]) : here
  const servers = await startServers(3)
  let a
  let b
  try {
    const version = (await servers[0].command('INFO', 'server')).match(/redis_version:(\S+)/)[1]
    console.error(`scale: ${LOCKS} held locks on 3 redis-servers ...`)
    a = await held(servers)
    console.error(`scale: ${WAITERS} waiters on ${KEYS} keys in ${WAITER_PROCS} processes ...`)
    b = await waiters(servers)
    const f = (v, d = 0) => v.toFixed(d)
    const lines = [
      '# Scale',
      '',
      `\`node benchmark/scale.mjs\` (also \`npm run bench -- --only=scale\`), on 3 local redis-server ${version} (a Redlock of 3 masters), ` +
        `${os.cpus().length} x ${os.cpus()[0]?.model}, Node ${process.version}; ${new Date().toISOString().slice(0, 10)}. Default settings (no fencing) unless said.`,
      '',
      `## ${LOCKS.toLocaleString('en')} distinct locks held at once by one process`,
      '',
      `At most ${IN_FLIGHT} operations in flight; duration ${DURATION / 1000} s; the locks are held ${HOLD_MS / 1000} s between acquiring and extending.`,
      '',
      '| phase | time s | locks/s |',
      '|---|---:|---:|',
      `| acquire all | ${f(a.acquireMs / 1000, 2)} | ${f(LOCKS / (a.acquireMs / 1000))} |`,
      `| extend all | ${f(a.extendMs / 1000, 2)} | ${f(LOCKS / (a.extendMs / 1000))} |`,
      `| release all | ${f(a.releaseMs / 1000, 2)} | ${f(LOCKS / (a.releaseMs / 1000))} |`,
      `| second round: acquire another ${LOCKS.toLocaleString('en')} | ${f(a.againAcquireMs / 1000, 2)} | ${f(LOCKS / (a.againAcquireMs / 1000))} |`,
      `| second round: release them | ${f(a.againReleaseMs / 1000, 2)} | ${f(LOCKS / (a.againReleaseMs / 1000))} |`,
      '',
      '| memory | value |',
      '|---|---:|',
      `| process RSS before / holding / after release / after a second round | ${mb(a.rss0)} / ${mb(a.rss1)} / ${mb(a.rss2)} / ${mb(a.rss3)} MB |`,
      `| JS heap used before / holding / after release / after a second round | ${mb(a.heap0)} / ${mb(a.heap1)} / ${mb(a.heap2)} / ${mb(a.heap3)} MB |`,
      `| process RSS per held lock (the Lock objects included) | ${f(a.rssPerLock)} bytes |`,
      `| of which JS heap per held lock | ${f(a.heapPerLock)} bytes |`,
      `| Redis used_memory per lock, per node | ${a.redisPerLock.map((v) => f(v)).join(' / ')} bytes |`,
      `| Redis used_memory left after release, per node | ${a.redisAfter.map((v) => f(v / 1024)).join(' / ')} KiB |`,
      `| keys per node: before / holding / after ${HOLD_MS / 1000} s / after release | ${a.keys.before[0]} / ${a.keys.held[0]} / ${a.keys.afterHold[0]} / ${a.keys.after[0]} |`,
      '',
      `Every extended lock still had ${f(a.soonestLeftMs / 1000, 1)} s or more left when the release phase started. ` +
        `The second round runs on the same Redlock: its acquires took ${f(a.againAcquireMs / a.acquireMs, 1)} x the time of the first round's. ` +
        `RSS after the release ${mb(a.rss2)} MB, after the second round ${mb(a.rss3)} MB (the allocators keep their pages; the JS heap is back to ${mb(a.heap3)} MB).`,
      '',
      `## ${WAITERS.toLocaleString('en')} waiters on ${KEYS.toLocaleString('en')} keys across ${WAITER_PROCS} processes`,
      '',
      `Each key has ${WAITERS / KEYS} waiters (2 or 3 in each process), all starting at once with \`retryCount: -1\`; each holds its lock ${WAITER_HOLD} ms, ` +
        `so a key is busy for at least ${(WAITERS / KEYS) * WAITER_HOLD} ms in all.`,
      '',
      '| served | failed | not served within 120 s | wait p50 ms | p99 ms | max ms | max per process ms | all done in s | CPU per process s |',
      '|---:|---:|---:|---:|---:|---:|---|---:|---|',
      `| ${b.served} | ${b.failed} | ${b.unfinished} | ${f(b.p50)} | ${f(b.p99)} | ${f(b.max)} | ${b.perProcessMax.map((v) => f(v)).join(' / ')} | ${f(b.totalMs / 1000, 1)} | ${b.cpuMs.map((v) => f(v / 1000, 1)).join(' / ')} |`,
      '',
      '',
      `${WAITERS.toLocaleString('en')} acquire/release pairs took ${f(b.totalMs / 1000, 1)} s in all; the longest wait (${f(b.max / 1000, 1)} s) is about that: ` +
        'the last waiter was served when the work ahead of it was done, and every waiter of every process was served (none failed, none left waiting).',
      '',
      `Keys left on the nodes afterwards: ${b.keysLeft.join(' / ')} (the nodes' identity records, one key each).`,
    ]
    const md = lines.join('\n')
    console.log(md)
    mkdirSync(out, { recursive: true })
    writeFileSync(path.join(out, 'scale.md'), md + '\n')
  } finally {
    await stopServers(servers)
  }
}

const waiterArg = process.argv.indexOf('--waiter')
if (waiterArg > 0) await waiterProcess(JSON.parse(process.argv[waiterArg + 1]))
else await main()
