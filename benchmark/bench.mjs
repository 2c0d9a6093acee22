// Side-by-side benchmark of redlock-rs and its peers on the same redis-servers in the
// same run: `npm run bench` (options: --quick for a short run).
//
// Scenarios (each for every implementation, alternating, medians of several rounds):
//   1. sequential acquire+release on distinct keys: latency p50 / p99
//   2. 64 concurrent acquire+release loops on distinct keys: throughput, and the CPU
//      the JS thread (event-loop utilization) and the whole process spend per operation
//   3. 16 workers contending for one key, default retry settings: critical sections/s,
//      Jain's fairness index over the workers, worst wait, overlaps
//   4. the same from 4 processes x 4 workers
//   5. RSS after many acquire/release cycles
//   6. 16 workers in 4 processes on a 4-permit semaphore (redlock-rs against
//      redis-semaphore's RedlockSemaphore): operations/s and the most holders seen at once
// Every scenario reports the CPU its processes spent per operation (process.cpuUsage(),
// every thread), and every scenario on the servers the lock servers' CPU per operation
// (from /proc/PID/stat: at 100 Hz, read over the whole stretch) apart from it; the
// sequential and throughput scenarios also the JavaScript thread's (event-loop
// utilization). An operation is one acquire+release (one critical section under
// contention). The results also go to results.svg, a bar chart of the ratios.
// and, only with --only=scale, benchmark/scale.mjs (100k held locks, 10k waiters).
import { execFile, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { readFileSync } from 'node:fs'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { contend } from './contention.mjs'
import { implementations, semaphores } from './impls.mjs'

/** CPU µs a process has used (user + system), from /proc/PID/stat (100 Hz ticks). */
function cpuOf(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) * 10_000
  } catch {
    return NaN
  }
}

const here = path.dirname(fileURLToPath(import.meta.url))
const quick = process.argv.includes('--quick')
// --only=sequential,throughput,contention,memory runs a subset (for quick comparisons).
const only = (process.argv.find((a) => a.startsWith('--only=')) || '').slice(7).split(',').filter(Boolean)
const wanted = (name) => only.length === 0 || only.includes(name)
// --only=scale: 100k held locks and 10k waiters (benchmark/scale.mjs, on servers of its
// own; writes benchmark/scale.md). Only when asked for: it is not part of the full run.
if (only.includes('scale')) {
  const { status } = spawnSync(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'scale.mjs')], { stdio: 'inherit' })
  if (status !== 0 || only.length === 1) process.exit(status ?? 1)
}
const ROUNDS = quick ? 1 : 3
const names = Object.keys(implementations)
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
const jain = (xs) => {
  const sum = xs.reduce((a, b) => a + b, 0)
  const sq = xs.reduce((a, b) => a + b * b, 0)
  return sq === 0 ? 0 : (sum * sum) / (xs.length * sq)
}
/** Each round runs every implementation once, in a rotated order. */
function* alternating(rounds) {
  for (let r = 0; r < rounds; r++) for (let i = 0; i < names.length; i++) yield names[(i + r) % names.length]
}
let unique = 0
const key = (tag) => `bench:${tag}:${process.pid}:${unique++}`

/** The CPU µs the redis-servers on `ports` have used so far (a reading for `redisSince`). */
function redisCpu(ports) {
  return servers.filter((s) => ports.includes(s.port)).map((s) => [s.pid, cpuOf(s.pid)])
}
const redisSince = (readings) => readings.reduce((sum, [pid, before]) => sum + cpuOf(pid) - before, 0)

/**
 * CPU per operation over a measured stretch: `usage()` starts it; `.per(ops)` gives the
 * JS thread's (event-loop utilization), the whole process' (every thread) and the Redis
 * servers' (`ports`) µs per operation.
 */
function usage(ports) {
  const elu0 = performance.eventLoopUtilization()
  const cpu0 = process.cpuUsage()
  const redis0 = redisCpu(ports)
  const t0 = performance.now()
  return {
    per(ops) {
      const elu = performance.eventLoopUtilization(elu0)
      const cpu = process.cpuUsage(cpu0)
      return {
        elapsed: (performance.now() - t0) / 1000,
        jsUsPerOp: (elu.active * 1000) / ops,
        cpuUsPerOp: (cpu.user + cpu.system) / ops,
        redisUsPerOp: redisSince(redis0) / ops,
      }
    },
  }
}

async function sequential(impl, ports, ops) {
  const lib = await implementations[impl](ports)
  for (let i = 0; i < 200; i++) await lib.release(await lib.acquire(key('warm'), 10_000))
  const lat = []
  const measured = usage(ports)
  for (let i = 0; i < ops; i++) {
    const t = process.hrtime.bigint()
    await lib.release(await lib.acquire(key('seq'), 10_000))
    lat.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  const { jsUsPerOp, cpuUsPerOp, redisUsPerOp } = measured.per(ops)
  await lib.close()
  lat.sort((a, b) => a - b)
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), jsUsPerOp, cpuUsPerOp, redisUsPerOp }
}

async function throughput(impl, ports, seconds, loops = 64) {
  const lib = await implementations[impl](ports)
  for (let i = 0; i < 200; i++) await lib.release(await lib.acquire(key('warm'), 10_000))
  let ops = 0
  const end = Date.now() + seconds * 1000
  const measured = usage(ports)
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (Date.now() < end) {
        await lib.release(await lib.acquire(key('tp'), 10_000))
        ops += 1
      }
    }),
  )
  const { elapsed, ...cpu } = measured.per(ops)
  await lib.close()
  return { opsPerSec: ops / elapsed, ...cpu }
}

function child(options) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(here, 'contention.mjs'), JSON.stringify(options)], { maxBuffer: 1 << 24 }, (e, out) =>
      e ? reject(e) : resolve(JSON.parse(out)),
    )
  })
}

function summarize(results, seconds) {
  const counts = results.flatMap((r) => r.counts)
  const total = counts.reduce((a, b) => a + b, 0)
  return {
    csPerSec: total / seconds,
    jain: jain(counts),
    worstWaitMs: Math.max(...results.map((r) => r.worstWait)),
    cpuUsPerCs: results.reduce((a, r) => a + (r.cpuUs ?? 0), 0) / Math.max(1, total),
    failures: results.reduce((a, r) => a + r.failures, 0),
    overlaps: results.reduce((a, r) => a + r.overlaps, 0),
  }
}

async function memory(impl, ports, cycles) {
  // In a child process, so that every implementation starts from a clean heap.
  const script = `
    import { implementations } from ${JSON.stringify(path.join(here, 'impls.mjs'))}
    const lib = await implementations[${JSON.stringify(impl)}](${JSON.stringify(ports)})
    let n = 0
    const run = async (count) => {
      await Promise.all(Array.from({ length: 64 }, async (_, w) => {
        for (let i = w; i < count; i += 64) await lib.release(await lib.acquire('mem:' + (n++), 10000))
      }))
    }
    await run(100000) // warm-up: connections, caches, allocator pools
    globalThis.gc?.()
    const before = process.memoryUsage().rss
    const cpu0 = process.cpuUsage()
    await run(${cycles})
    const cpu = process.cpuUsage(cpu0)
    globalThis.gc?.()
    await new Promise((r) => setTimeout(r, 200))
    const after = process.memoryUsage().rss
    await lib.close()
    process.stdout.write(JSON.stringify({ rssBeforeMB: before / 2 ** 20, rssAfterMB: after / 2 ** 20, cpuUsPerOp: (cpu.user + cpu.system) / ${cycles} }))
  `
  return new Promise((resolve, reject) => {
    // V8's young generation starts small and grows to its full size (32 MB of new space
    // on Node 20) as garbage is made: an implementation that makes little garbage may
    // still be growing it after the warm-up, which reads as +16 MB of RSS. Starting every
    // process with it at full size measures what the library keeps.
    execFile(process.execPath, ['--expose-gc', '--min-semi-space-size=16', '--input-type=module', '-e', script], { maxBuffer: 1 << 20 }, (e, out) =>
      e ? reject(e) : resolve(JSON.parse(out)),
    )
  })
}

const results = { machine: {}, scenarios: {} }
results.machine = {
  cpus: `${os.cpus().length} x ${os.cpus()[0]?.model}`,
  memoryGB: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  redis: null,
  date: new Date().toISOString(),
}

const servers = await startServers(6)
const ports5 = servers.slice(0, 5).map((s) => s.port)
const ports1 = ports5.slice(0, 1)
const witnessPort = servers[5].port
results.machine.redis = (await servers[0].command('INFO', 'server')).match(/redis_version:(\S+)/)[1]
const log = (...a) => console.error(...a)

try {
  for (const [label, ports] of wanted('throughput') || wanted('sequential') ? [['5 instances', ports5], ['1 instance', ports1]] : []) {
    const seq = {}
    const tp = {}
    for (const impl of alternating(ROUNDS)) {
      log(`sequential, ${label}: ${impl}`)
      ;(seq[impl] ??= []).push(await sequential(impl, ports, quick ? 500 : 2000))
    }
    for (const impl of alternating(ROUNDS)) {
      log(`throughput, ${label}: ${impl}`)
      ;(tp[impl] ??= []).push(await throughput(impl, ports, quick ? 1 : 3))
    }
    results.scenarios[`sequential (${label})`] = Object.fromEntries(
      names.map((n) => [
        n,
        {
          p50Ms: median(seq[n].map((r) => r.p50)),
          p99Ms: median(seq[n].map((r) => r.p99)),
          jsUsPerOp: median(seq[n].map((r) => r.jsUsPerOp)),
          cpuUsPerOp: median(seq[n].map((r) => r.cpuUsPerOp)),
          redisUsPerOp: median(seq[n].map((r) => r.redisUsPerOp)),
        },
      ]),
    )
    results.scenarios[`64 concurrent loops (${label})`] = Object.fromEntries(
      names.map((n) => [
        n,
        {
          opsPerSec: median(tp[n].map((r) => r.opsPerSec)),
          jsUsPerOp: median(tp[n].map((r) => r.jsUsPerOp)),
          cpuUsPerOp: median(tp[n].map((r) => r.cpuUsPerOp)),
          redisUsPerOp: median(tp[n].map((r) => r.redisUsPerOp)),
        },
      ]),
    )
  }

  const seconds = quick ? 3 : 5
  for (const [label, procs, workers] of wanted('contention') ? [['16 workers, 1 process', 1, 16], ['4 processes x 4 workers', 4, 4]] : []) {
    const runs = {}
    for (const impl of alternating(quick ? 1 : 2)) {
      log(`contention, ${label}: ${impl}`)
      const k = key('contend')
      const options = { impl, ports: ports5, witnessPort, key: k, workers, seconds, startAt: Date.now() + (procs === 1 ? 0 : 1500) }
      const redis0 = redisCpu(ports5)
      const parts = procs === 1 ? [await contend(options)] : await Promise.all(Array.from({ length: procs }, () => child(options)))
      const redisUs = redisSince(redis0)
      const summary = summarize(parts, seconds)
      summary.redisUsPerCs = redisUs / Math.max(1, summary.csPerSec * seconds)
      const counter = Number(await servers[5].command('GET', `${k}:counter`))
      const total = parts.flatMap((p) => p.counts).reduce((a, b) => a + b, 0)
      summary.lostUpdates = total - counter
      ;(runs[impl] ??= []).push(summary)
    }
    results.scenarios[`contention (${label})`] = Object.fromEntries(
      names.map((n) => [
        n,
        {
          csPerSec: median(runs[n].map((r) => r.csPerSec)),
          jain: median(runs[n].map((r) => r.jain)),
          worstWaitMs: Math.max(...runs[n].map((r) => r.worstWaitMs)),
          cpuUsPerCs: median(runs[n].map((r) => r.cpuUsPerCs)),
          redisUsPerCs: median(runs[n].map((r) => r.redisUsPerCs)),
          failures: runs[n].reduce((a, r) => a + r.failures, 0),
          overlaps: runs[n].reduce((a, r) => a + r.overlaps + Math.max(0, r.lostUpdates), 0),
        },
      ]),
    )
  }

  if (wanted('semaphore')) {
    const runs = {}
    const semNames = Object.keys(semaphores)
    for (let r = 0; r < (quick ? 1 : 2); r++) {
      for (const impl of r % 2 ? [...semNames].reverse() : semNames) {
        log(`semaphore, 4 processes x 4 workers, 4 permits: ${impl}`)
        const k = key('sem')
        const options = { impl, ports: ports5, witnessPort, key: k, workers: 4, permits: 4, seconds, startAt: Date.now() + 1500 }
        const redis0 = redisCpu(ports5)
        const parts = await Promise.all(Array.from({ length: 4 }, () => child(options)))
        const redisUs = redisSince(redis0)
        const ops = parts.reduce((a, p) => a + p.ops, 0)
        const cpuUs = parts.reduce((a, p) => a + p.cpuUs, 0)
        const maxHolders = Number(await servers[5].command('GET', `${k}:max`))
        ;(runs[impl] ??= []).push({ opsPerSec: ops / seconds, maxHolders, cpuUsPerOp: cpuUs / Math.max(1, ops), redisUsPerOp: redisUs / Math.max(1, ops) })
      }
    }
    results.scenarios['semaphore (4 processes x 4 workers, 4 permits)'] = Object.fromEntries(
      semNames.map((n) => [
        n,
        {
          opsPerSec: median(runs[n].map((r) => r.opsPerSec)),
          maxHolders: Math.max(...runs[n].map((r) => r.maxHolders)),
          cpuUsPerOp: median(runs[n].map((r) => r.cpuUsPerOp)),
          redisUsPerOp: median(runs[n].map((r) => r.redisUsPerOp)),
        },
      ]),
    )
  }

  const mem = {}
  for (const impl of wanted('memory') ? names : []) {
    const cycles = impl === 'redlock-rs' ? (quick ? 100_000 : 1_000_000) : quick ? 20_000 : 100_000
    log(`memory: ${impl} (${cycles} cycles)`)
    mem[impl] = { cycles, ...(await memory(impl, ports5, cycles)) }
  }
  if (wanted('memory')) results.scenarios.memory = mem
} finally {
  await stopServers(servers)
}

// ---- report
const fmt = (v, d = 0) => (typeof v === 'number' ? v.toFixed(d) : String(v))
const lines = []
const table = (title, cols) => {
  const data = results.scenarios[title]
  if (!data) return
  lines.push(`\n**${title}**\n`)
  lines.push(`| implementation | ${cols.map((c) => c[0]).join(' | ')} |`)
  lines.push(`|---|${cols.map(() => '---:').join('|')}|`)
  for (const n of Object.keys(data)) lines.push(`| ${n} | ${cols.map(([, k, d]) => fmt(data[n][k], d)).join(' | ')} |`)
}
lines.push(
  `Machine: ${results.machine.cpus}, ${results.machine.memoryGB} GiB, Node ${results.machine.node}, redis-server ${results.machine.redis}; ${results.machine.date.slice(0, 10)}.`,
)
for (const label of ['5 instances', '1 instance']) {
  table(`sequential (${label})`, [
    ['p50 ms', 'p50Ms', 3],
    ['p99 ms', 'p99Ms', 3],
    ['JS-thread µs/op', 'jsUsPerOp', 1],
    ['process CPU µs/op', 'cpuUsPerOp', 1],
    ['Redis CPU µs/op', 'redisUsPerOp', 1],
  ])
  table(`64 concurrent loops (${label})`, [
    ['ops/s', 'opsPerSec'],
    ['JS-thread µs/op', 'jsUsPerOp', 1],
    ['process CPU µs/op', 'cpuUsPerOp', 1],
    ['Redis CPU µs/op', 'redisUsPerOp', 1],
  ])
}
for (const label of ['16 workers, 1 process', '4 processes x 4 workers']) {
  table(`contention (${label})`, [
    ['critical sections/s', 'csPerSec'],
    ['Jain fairness', 'jain', 3],
    ['worst wait ms', 'worstWaitMs'],
    ['failed acquires', 'failures'],
    ['overlaps', 'overlaps'],
    ['process CPU µs/CS', 'cpuUsPerCs', 1],
    ['Redis CPU µs/CS', 'redisUsPerCs', 1],
  ])
}
table('semaphore (4 processes x 4 workers, 4 permits)', [
  ['ops/s', 'opsPerSec'],
  ['most holders at once', 'maxHolders'],
  ['process CPU µs/op', 'cpuUsPerOp', 1],
  ['Redis CPU µs/op', 'redisUsPerOp', 1],
])
table('memory', [['cycles', 'cycles'], ['RSS before MB', 'rssBeforeMB', 1], ['RSS after MB', 'rssAfterMB', 1], ['process CPU µs/op', 'cpuUsPerOp', 1]])
const markdown = lines.join('\n')
console.log(markdown)
writeFileSync(path.join(here, quick ? 'results-quick.json' : 'results.json'), JSON.stringify(results, null, 2) + '\n')
writeFileSync(path.join(here, quick ? 'results-quick.svg' : 'results.svg'), chart(results))
writeFileSync(path.join(here, quick ? 'results-quick.md' : 'results.md'), markdown + '\n')

/**
 * A bar chart of the main metric of every scenario, each implementation against the best
 * of the others (longer is better; latencies and CPU are inverted so that longer is better
 * there too).
 */
function chart(results) {
  const metrics = [
    [/^sequential/, 'p50Ms', 'p50 latency', true],
    [/^64 concurrent/, 'opsPerSec', 'ops/s', false],
    [/^64 concurrent/, 'cpuUsPerOp', 'process CPU/op', true],
    [/^contention/, 'csPerSec', 'critical sections/s', false],
    [/^semaphore/, 'opsPerSec', 'ops/s', false],
  ]
  const colors = { 'redlock-rs': '#d9480f', 'node-redlock': '#1c7ed6', 'redlock-universal': '#37b24d', 'redis-semaphore': '#7048e8' }
  const rows = []
  for (const [title, data] of Object.entries(results.scenarios)) {
    for (const [re, k, label, lower] of metrics) {
      if (!re.test(title)) continue
      const vals = Object.entries(data).filter(([, v]) => typeof v[k] === 'number' && v[k] > 0)
      if (vals.length === 0) continue
      const score = (v) => (lower ? 1 / v : v)
      const best = Math.max(...vals.map(([, v]) => score(v[k])))
      rows.push({ heading: `${title}: ${label}${lower ? ' (lower is better)' : ''}`, bars: vals.map(([n, v]) => [n, score(v[k]) / best, v[k]]) })
    }
  }
  const W = 760
  let y = 30
  const out = [`<text x="10" y="20" font-size="14" font-weight="bold">redlock-rs against its peers (${results.machine.date.slice(0, 10)}, ${results.machine.cpus})</text>`]
  for (const r of rows) {
    out.push(`<text x="10" y="${y + 12}" font-size="12" font-weight="bold">${r.heading}</text>`)
    y += 18
    for (const [n, frac, raw] of r.bars) {
      const w = Math.max(1, Math.round(frac * 420))
      out.push(`<text x="10" y="${y + 11}" font-size="11">${n}</text>`)
      out.push(`<rect x="150" y="${y + 2}" width="${w}" height="11" fill="${colors[n] ?? '#868e96'}"/>`)
      out.push(`<text x="${156 + w}" y="${y + 11}" font-size="11">${raw < 10 ? raw.toFixed(3) : Math.round(raw)}</text>`)
      y += 15
    }
    y += 8
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 10}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${out.join('\n')}\n</svg>\n`
}

