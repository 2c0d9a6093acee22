// A randomized fault run with a checker: `npm run chaos -- --seconds N [--seed S]`.
//
// Worker processes (scripts/chaos-worker.mjs) take one lock (fencing on, short TTL) and do
// a read-modify-write of a counter on a separate "witness" redis-server inside the
// critical section, each witness call carrying the fence. The 5 lock nodes are reached
// through TCP proxies. A nemesis, driven by a seeded PRNG (the fault plan is a function
// of the seed), injects faults on at most 2 nodes at a time (a minority): kill and
// restart (empty, or with AOF `appendfsync always`), SIGSTOP / SIGCONT, network
// blackhole, delay and reset (at the proxy), a slow node (DEBUG SLEEP), and it SIGSTOPs a
// worker past its TTL (sometimes right inside its critical section, between its validity
// check and its write: the case only a fence can catch). The run ends with a healthy
// stretch, then the workers stop and a checker reads the history:
//   - the counter equals the number of completed critical sections;
//   - no two critical sections of valid lock holders overlapped (witness clock vs. each
//     holder's lock.expiration);
//   - fences of accepted critical sections strictly increase in log order, and no holder
//     whose lock was still valid was refused by the fence check;
//   - every acquire either held or failed with an ExecutionError with a reason, none
//     took longer than its retry window (outside the worker's own pauses);
//   - no lock keys are left on any node after the workers released.
// A stale holder (paused past its TTL) whose write the witness refused by the fence is
// reported as "caught by fencing", with what a store without the fence check would have
// lost. The report (a table per fault kind) is printed and written to
// <out>/chaos.md with an SVG timeline <out>/chaos.svg. Exit status 1 on any violation.
//
// Options: --seconds N (60) --seed S (random) --out DIR (benchmark) --json FILE
//          --workers N (6) --loops N (2 per worker) --ttl MS (1500) --max-duration MS (3000)
//          --sabotage (worker 0 locks another resource: the checker must fail the run)
//          --fault-rate R (faults R times as often as by default; 0.25 for a soak)
//          --history FILE (operations, witness log and faults as JSON)
import { fork } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { ChaosProxy } from './chaos-proxy.mjs'
import { RedisServer, rawCommand } from './redis-servers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)

// ---------------------------------------------------------------------------- options

function option(name, fallback) {
  const argv = process.argv.slice(2)
  const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  if (i < 0) return fallback
  const a = argv[i]
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[i + 1]
}
const int = (name, fallback) => {
  const v = Number(option(name, fallback))
  if (!Number.isInteger(v) || v < 0) {
    console.error(`--${name} must be a non-negative integer`)
    process.exit(64)
  }
  return v
}
const SECONDS = int('seconds', 60)
const SEED = int('seed', Math.floor(Math.random() * 1e6))
const WORKERS = int('workers', 6)
const LOOPS = int('loops', 2)
const TTL = int('ttl', 1500)
const MAX_DURATION = int('max-duration', 3000)
const OUT = path.resolve(option('out', path.join(root, 'benchmark')))
const JSON_OUT = option('json', undefined)
// --history FILE: the whole history (operations, witness log, faults) as JSON, for digging into a violation.
const HISTORY_OUT = option('history', undefined)
// --sabotage: worker 0 locks another resource while it writes the same counter (a
// misconfigured client): the checker must report overlaps. For testing the checker.
const SABOTAGE = process.argv.includes('--sabotage')
// --fault-rate R: faults R times as often as by default (0.25 for a soak).
const FAULT_RATE = Number(option('fault-rate', 1))
if (!(FAULT_RATE > 0)) {
  console.error('--fault-rate must be a positive number')
  process.exit(64)
}
const NODES = 5
const AOF_NODES = [0, 1] // these two persist every write (appendfsync always)
const MAX_NODE_FAULTS = 2 // a minority of 5
const SETTINGS = { fencing: true, retryCount: 20, retryDelay: 100, retryJitter: 50, maxDuration: MAX_DURATION }
// An acquire that takes longer than its retry window, plus one TTL-bounded attempt and
// a connect time-out of slack, has hung.
const ACQUIRE_BOUND = SETTINGS.retryCount * (SETTINGS.retryDelay + SETTINGS.retryJitter) + 2 * TTL + 1000
// The run ends with this long without faults: every key a fault left behind has expired.
const SETTLE = 2 * TTL + 1500
const QUARANTINE = MAX_DURATION + 300 // a restarted node sits out this long (a little slack)
// How long a worker armed to stop inside its next critical section may take to reach one:
// under the faults a wait can take several seconds (p99 waits of 4-7 s in 30 s runs), and a
// fault that misses leaves the run without its stale holder (it once missed with 2 s).
const REACH_CS = 6000

const log = (...a) => console.error(`[chaos ${((Date.now() - (globalThis.t0 ?? Date.now())) / 1000).toFixed(1)}s]`, ...a)

// ------------------------------------------------------------------------------- PRNG

function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// ----------------------------------------------------------------------------- the plan

export const FAULT_KINDS = {
  'kill-empty': 'kill + restart empty',
  'kill-aof': 'kill + restart with AOF',
  sigstop: 'SIGSTOP / SIGCONT node',
  blackhole: 'network blackhole',
  delay: 'network delay',
  reset: 'connection reset',
  slow: 'slow node (DEBUG SLEEP 0.5)',
  'client-pause': 'worker SIGSTOP past TTL',
  'client-pause-cs': 'worker SIGSTOP in critical section',
}

/**
 * The fault plan: a pure function of the seed and the run's length. Node faults never
 * exceed MAX_NODE_FAULTS at a time (a restarted node counts until its quarantine is
 * over: it cannot vote before), client pauses one at a time; everything ends before the
 * healthy stretch at the end.
 */
export function plan(seed, chaosMs) {
  const random = prng(seed)
  const between = (lo, hi) => Math.round(lo + random() * (hi - lo))
  const pick = (xs) => xs[Math.floor(random() * xs.length)]
  /** Draws the size of fault `f` (who and how long), the same way wherever it is placed. */
  const size = (f) => {
    if (f.kind.startsWith('client-pause')) {
      f.worker = Math.floor(random() * WORKERS)
      f.pause = TTL + between(300, 1500)
      f.busy = f.pause + (f.kind === 'client-pause-cs' ? REACH_CS : 0) // time to reach a critical section
    } else if (f.kind === 'kill-empty' || f.kind === 'kill-aof') {
      f.down = between(200, 2000)
      f.busy = f.down + 500 + QUARANTINE
    } else if (f.kind === 'slow') {
      f.sleeps = between(1, 5)
      f.busy = f.sleeps * 500 + 200
    } else {
      f.duration = between(500, 3000)
      if (f.kind === 'delay') f.delayMs = between(20, 400)
      f.busy = f.duration
    }
    return f
  }
  const nodeBusy = Array.from({ length: NODES }, () => 0)
  let clientBusy = 0
  const faults = []
  let t = 1000
  let forcedInCs = false
  while (t < chaosMs) {
    const kind = pick(Object.keys(FAULT_KINDS))
    const f = { at: t, kind }
    if (kind === 'client-pause' || kind === 'client-pause-cs') {
      size(f)
      if (clientBusy <= t && t + f.busy < chaosMs) {
        clientBusy = t + f.busy + 200
        faults.push(f)
        if (kind === 'client-pause-cs') forcedInCs = true
      }
    } else {
      const free = [...Array(NODES).keys()].filter((n) => nodeBusy[n] <= t && (kind !== 'kill-aof' || AOF_NODES.includes(n)))
      const active = nodeBusy.filter((b) => b > t).length
      if (free.length > 0 && active < MAX_NODE_FAULTS) {
        f.node = pick(free)
        size(f)
        if (t + f.busy < chaosMs) {
          nodeBusy[f.node] = t + f.busy + 100
          faults.push(f)
        }
      }
    }
    t += Math.round(between(200, 1500) / FAULT_RATE)
  }
  // The textbook case at least once a run: a worker paused inside its critical section.
  if (!forcedInCs && chaosMs > 4000) faults.push({ at: 2000, kind: 'client-pause-cs', worker: 0, pause: TTL + 800, busy: TTL + 800 + REACH_CS })
  // Every kind at least once, also in a short run: a kind the draw left out goes where it
  // fits first (a long run has them all, so its plan is what the draw made).
  for (const kind of Object.keys(FAULT_KINDS)) {
    if (faults.some((f) => f.kind === kind)) continue
    const placed = place(faults, size({ kind }), chaosMs)
    if (placed) faults.push(placed)
  }
  faults.sort((a, b) => a.at - b.at)
  return faults
}

/**
 * `f` at the earliest time (and on the first node) where it keeps the plan's rules: one
 * fault per node and at most MAX_NODE_FAULTS node faults at a time (client pauses one at
 * a time), ending before `chaosMs`. Undefined when it fits nowhere.
 */
function place(faults, f, chaosMs) {
  const client = f.kind.startsWith('client-pause')
  const span = (g) => [g.at, g.at + g.busy + (g.node === undefined ? 200 : 100)]
  const overlaps = ([a, b], [c, d]) => a < d && c < b
  for (let at = 1000; at + f.busy < chaosMs; at += 250) {
    const mine = [at, at + f.busy + (client ? 200 : 100)]
    if (client) {
      if (!faults.some((g) => g.node === undefined && overlaps(mine, span(g)))) return { ...f, at }
      continue
    }
    const others = faults.filter((g) => g.node !== undefined && overlaps(mine, span(g)))
    // Node faults active at each moment of `mine` (it is enough to look where one starts).
    const busiest = Math.max(0, ...[at, ...others.map((g) => g.at)].filter((t) => t >= at && t < mine[1]).map((t) => others.filter((g) => span(g)[0] <= t && t < span(g)[1]).length))
    if (busiest >= MAX_NODE_FAULTS) continue
    const candidates = f.kind === 'kill-aof' ? AOF_NODES : [...Array(NODES).keys()]
    const node = candidates.find((n) => !others.some((g) => g.node === n))
    if (node !== undefined) return { ...f, at, node }
  }
  return undefined
}

// --------------------------------------------------------------------------- processes

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** The state letter of a process ('T' when stopped), or undefined when it is gone. */
function procState(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  } catch {
    return undefined
  }
}

const nodes = [] // { server, proxy, aof }
let witness
const workers = [] // { id, child, pid, done, summary, stderr, exited }
const ops = []
const faults = [] // executed faults with their real times
const intentionalPause = new Map() // worker id -> resume deadline (ms)
let cleaningUp = false

async function cleanup() {
  if (cleaningUp) return
  cleaningUp = true
  for (const w of workers) {
    try {
      process.kill(w.pid, 'SIGCONT')
      if (w.exited === undefined) w.child.kill('SIGKILL')
    } catch {}
  }
  await Promise.all(nodes.map((n) => n.proxy?.stop().catch(() => {})))
  await Promise.all([...nodes.map((n) => n.server), witness].filter(Boolean).map((s) => s.stop().catch(() => {})))
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    cleanup().finally(() => process.exit(130))
  })
}

// ------------------------------------------------------------------------------ nemesis

async function runFault(f) {
  const rec = { kind: f.kind, node: f.node, worker: f.worker, start: Date.now(), planned: f.at }
  faults.push(rec)
  const node = f.node === undefined ? undefined : nodes[f.node]
  try {
    switch (f.kind) {
      case 'kill-empty':
      case 'kill-aof': {
        await node.server.kill('SIGKILL')
        if (f.kind === 'kill-empty') {
          rmSync(path.join(node.server.dir, 'appendonlydir'), { recursive: true, force: true })
          rmSync(path.join(node.server.dir, 'dump.rdb'), { force: true })
        }
        await sleep(f.down)
        await node.server.start()
        rec.restarted = Date.now()
        rec.detail = `down ${f.down} ms`
        await sleep(QUARANTINE)
        break
      }
      case 'sigstop':
        node.server.pause()
        await sleep(f.duration)
        node.server.resume()
        rec.detail = `${f.duration} ms`
        break
      case 'blackhole':
      case 'reset':
        node.proxy.setMode(f.kind)
        await sleep(f.duration)
        node.proxy.setMode('pass')
        rec.detail = `${f.duration} ms`
        break
      case 'delay':
        node.proxy.setMode('delay', f.delayMs)
        await sleep(f.duration)
        node.proxy.setMode('pass')
        rec.detail = `${f.delayMs} ms for ${f.duration} ms`
        break
      case 'slow':
        for (let i = 0; i < f.sleeps; i++) await rawCommand(node.server.port, ['DEBUG', 'SLEEP', '0.5'], { timeout: 5000 })
        rec.detail = `${f.sleeps} x 0.5 s`
        break
      case 'client-pause': {
        const w = workers[f.worker]
        if (w.exited !== undefined) break
        intentionalPause.set(w.id, Date.now() + f.pause)
        process.kill(w.pid, 'SIGSTOP')
        rec.start = Date.now()
        await sleep(f.pause)
        process.kill(w.pid, 'SIGCONT')
        intentionalPause.delete(w.id)
        rec.detail = `${f.pause} ms`
        break
      }
      case 'client-pause-cs': {
        const w = workers[f.worker]
        if (w.exited !== undefined) break
        intentionalPause.set(w.id, Infinity)
        w.child.send({ type: 'arm' })
        const deadline = Date.now() + REACH_CS
        while (procState(w.pid) !== 'T' && Date.now() < deadline) await sleep(5)
        if (procState(w.pid) !== 'T') {
          w.child.send({ type: 'disarm' })
          intentionalPause.delete(w.id)
          rec.detail = 'did not reach a critical section'
          rec.missed = true
          break
        }
        rec.start = Date.now()
        intentionalPause.set(w.id, rec.start + f.pause)
        await sleep(f.pause)
        process.kill(w.pid, 'SIGCONT')
        intentionalPause.delete(w.id)
        rec.detail = `${f.pause} ms`
        break
      }
    }
  } catch (e) {
    rec.error = String(e?.message ?? e)
    log(`fault ${f.kind} failed: ${rec.error}`)
  }
  rec.end = Date.now()
}

/** Runs the plan: each fault at its time, after the previous fault on its target ended. */
async function nemesis(schedule, startedAt) {
  const onTarget = new Map()
  const running = new Set()
  for (const f of schedule) {
    await sleep(startedAt + f.at - Date.now())
    const target = f.node !== undefined ? `n${f.node}` : 'client'
    const nodeFaults = () => [...running].filter((r) => r.node !== undefined).length
    // Faults that ran over their planned time delay the next one, never overlap it.
    if (onTarget.get(target)) await onTarget.get(target)
    while (f.node !== undefined && nodeFaults() >= MAX_NODE_FAULTS) await Promise.race(running)
    const p = runFault(f)
    p.node = f.node
    running.add(p)
    const done = p.finally(() => running.delete(p))
    onTarget.set(target, done)
  }
  await Promise.all(running)
}

/** Resumes any worker found stopped that no fault means to keep stopped (a race with 'disarm'). */
function watchStopped() {
  return setInterval(() => {
    for (const w of workers) {
      if (w.exited !== undefined) continue
      const until = intentionalPause.get(w.id)
      if (until !== undefined && Date.now() < until) continue
      if (procState(w.pid) === 'T') {
        try {
          process.kill(w.pid, 'SIGCONT')
        } catch {}
      }
    }
  }, 100)
}

// ------------------------------------------------------------------------------ checker

const quantile = (xs, q) => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

/** Reads the history and returns { violations, stats }. */
function check({ entries, counter, naive, leftKeys, pauses, startedAt }) {
  const rel = (t) => `+${((t - startedAt) / 1000).toFixed(3)} s`
  const violations = []
  const violation = (kind, at, detail) => violations.push({ kind, at, detail })
  const byOp = new Map(ops.map((o) => [o.op, o]))

  // 1. Worker processes: all finished by themselves.
  for (const w of workers) {
    if (!w.done) violation('worker did not finish', Date.now(), `worker ${w.id} exit ${w.exited}: ${w.stderr.slice(-500)}`)
  }

  // 2. Critical sections from the witness log.
  const cs = new Map() // op -> { enter, end, fence, exp, verdicts }
  let lastAcceptedFence = -Infinity
  let acceptedWrites = 0
  let writeAttempts = 0
  const caught = []
  let lateUnopposed = 0
  for (const e of entries) {
    const rec = byOp.get(e.op)
    // Until when the holder's lock was valid: the latest expiration it knew of (with
    // using(), extensions move it), or earlier, when using() told it that the lock was
    // lost (its signal aborted: using() then removes the keys itself).
    const exp = Math.min(Math.max(e.exp, rec?.exp ?? 0), rec?.lostAt ?? Infinity)
    if (e.type === 'E') {
      if (e.verdict === 'ok') {
        if (!(e.fence > lastAcceptedFence)) violation('fence not increasing', e.t, `op ${e.op} fence ${e.fence} after ${lastAcceptedFence}`)
        lastAcceptedFence = e.fence
        cs.set(e.op, { op: e.op, w: e.w, enter: e.t, end: Infinity, fence: e.fence, exp, lostAt: rec?.lostAt })
        if (e.t >= e.exp) lateUnopposed += 1
      } else if (e.t < Math.min(e.exp, rec?.lostAt ?? Infinity)) {
        violation('valid holder refused by fence', e.t, `op ${e.op} (worker ${e.w}) entered with fence ${e.fence} at ${rel(e.t)}, its lock valid until ${rel(e.exp)}, but fence ${lastAcceptedFence} had entered before`)
      } else {
        caught.push({ op: e.op, w: e.w, fence: e.fence, at: e.t, late: e.t - e.exp, what: 'enter', selfStopped: rec?.selfStopped })
      }
    } else if (e.type === 'W' || e.type === 'A') {
      const c = cs.get(e.op)
      if (c) {
        c.end = Math.min(c.end, e.t)
        c.exp = Math.min(Math.max(c.exp, exp), c.lostAt ?? Infinity)
      }
      if (e.type === 'W') {
        writeAttempts += 1
        if (e.verdict === 'ok') {
          acceptedWrites += 1
          if (e.t >= exp) lateUnopposed += 1
        } else if (e.t < exp) {
          violation('valid holder refused by fence', e.t, `op ${e.op} (worker ${e.w}) wrote with fence ${e.fence} at ${rel(e.t)}, its lock valid until ${rel(exp)}, after a higher fence entered`)
        } else {
          caught.push({ op: e.op, w: e.w, fence: e.fence, at: e.t, late: e.t - exp, what: 'write', selfStopped: rec?.selfStopped })
        }
      }
    }
  }

  // 3. No two valid holders at once: each critical section counts from its enter to the
  // earlier of its end and its lock's expiration.
  const sections = [...cs.values()].sort((a, b) => a.enter - b.enter)
  let prev = null
  let physicalOverlaps = 0
  let lastPhysicalEnd = -Infinity
  for (const c of sections) {
    const validEnd = Math.min(c.end, c.exp)
    if (prev && c.enter < prev.validEnd) {
      violation('overlap', c.enter, `op ${c.op} (worker ${c.w}, fence ${c.fence}) entered at ${rel(c.enter)} while op ${prev.op} (worker ${prev.w}, fence ${prev.fence}) held a valid lock until ${rel(prev.validEnd)}`)
    }
    if (c.enter < lastPhysicalEnd) physicalOverlaps += 1
    lastPhysicalEnd = Math.max(lastPhysicalEnd, c.end)
    if (!prev || validEnd > prev.validEnd) prev = { ...c, validEnd }
  }

  // 4. The counter: the witness' counter, its accepted writes and the workers' completed sections agree.
  const completed = ops.filter((o) => o.cs === 'completed').length
  if (!(counter === acceptedWrites && counter === completed)) {
    violation('counter', Date.now(), `counter ${counter}, accepted writes ${acceptedWrites}, completed critical sections reported by the workers ${completed}`)
  }

  // 5. Acquires: held, or failed with a reason; none hung.
  const reasons = {}
  let longest = 0
  let longestRelease = 0
  for (const o of ops) {
    const took = o.t1 - o.t0
    const paused = pauses.some((p) => p.worker === o.w && p.start < o.t1 && p.end > o.t0)
    if (!paused) longest = Math.max(longest, took)
    if (!paused && took > ACQUIRE_BOUND) violation('acquire hung', o.t1, `op ${o.op} took ${took} ms (bound ${ACQUIRE_BOUND} ms), ${o.ok ? 'held' : `failed: ${o.reason}`}`)
    if (o.tr !== undefined && o.t2 !== undefined) {
      const releasing = o.t2 - o.tr
      const pausedReleasing = pauses.some((p) => p.worker === o.w && p.start < o.t2 && p.end > o.tr)
      if (!pausedReleasing) longestRelease = Math.max(longestRelease, releasing)
      if (!pausedReleasing && releasing > ACQUIRE_BOUND) violation('release hung', o.t2, `op ${o.op}: the release took ${releasing} ms (bound ${ACQUIRE_BOUND} ms)`)
    }
    if (o.ok) continue
    const key = o.error === 'ExecutionError' && ['locked', 'quorum-unavailable'].includes(o.reason) ? o.reason : `${o.error}/${o.reason}`
    reasons[key] = (reasons[key] ?? 0) + 1
    if (key !== o.reason) violation('acquire failed without a reason', o.t1, `op ${o.op}: ${o.error} reason=${o.reason}: ${o.message}`)
  }
  for (const o of ops) if (o.csError) violation('critical section error', o.t1, `op ${o.op}: ${o.csError}`)
  const extendFailures = {}
  for (const o of ops) {
    if (o.extendFailed === undefined) continue
    extendFailures[o.extendFailed] = (extendFailures[o.extendFailed] ?? 0) + 1
    if (!['locked', 'quorum-unavailable', 'expired'].includes(o.extendFailed)) violation('extend failed without a reason', o.t1, `op ${o.op}: ${o.extendFailed}`)
  }
  const releaseFailures = {}
  for (const o of ops) {
    if (o.release && o.release !== 'ok') {
      releaseFailures[o.release] = (releaseFailures[o.release] ?? 0) + 1
      if (!['quorum-unavailable', 'expired'].includes(o.release)) violation('release failed without a reason', o.t2, `op ${o.op}: ${o.releaseError} ${o.release}`)
    }
  }

  // 6. No lock keys left.
  for (const k of leftKeys) violation('lock key left', Date.now(), `${k.node}: ${k.key} (pttl ${k.pttl})`)

  return {
    violations,
    stats: {
      completed,
      counter,
      acceptedWrites,
      writeAttempts,
      naive,
      naiveLost: writeAttempts - naive,
      caught,
      lateUnopposed,
      physicalOverlaps,
      acquires: ops.length,
      held: ops.filter((o) => o.ok).length,
      reasons,
      releaseFailures,
      extends: ops.reduce((a, o) => a + (o.extended ?? 0), 0),
      extendFailures,
      longestAcquire: longest,
      longestRelease,
      lost: ops.filter((o) => o.lost).length,
      abandoned: ops.filter((o) => o.cs === 'abandoned').length,
      expiredBeforeEnter: ops.filter((o) => o.cs === 'expired-before-enter').length,
      enters: sections.length,
    },
  }
}

// ---------------------------------------------------------------------------- resources

const nodeSamples = [] // { t, clients: [connected_clients per node, or null] }

/** Connections on each lock node (read directly): the workers' connections must not pile up. */
async function sampleNodes() {
  const clients = await Promise.all(
    nodes.map(async (n) => {
      try {
        return Number(/connected_clients:(\d+)/.exec(await rawCommand(n.server.port, ['INFO', 'clients'], { timeout: 1000 }))[1])
      } catch {
        return null
      }
    }),
  )
  nodeSamples.push({ t: Date.now(), clients })
}

/**
 * Resources at the start (the first sample after a warm-up: a tenth of the run, at most
 * a minute) against the end (the last sample while the workers still ran).
 */
function resourceReport(startedAt, runMs) {
  const warm = startedAt + Math.min(60_000, runMs / 10)
  const first = (xs) => xs.find((x) => x.t >= warm) ?? xs[0]
  const sockets = (s) => (s.active?.TCPSocketWrap ?? 0) + (s.active?.TCPWRAP ?? 0)
  const rows = workers.map((w) => {
    const a = first(w.samples)
    const b = w.samples.at(-1)
    return a && b ? { id: w.id, a, b, max: Math.max(...w.samples.map((s) => s.rss)) } : null
  })
  const mb = (v) => (v / 2 ** 20).toFixed(1)
  const lines = []
  lines.push(`**Resources** (from ${((Math.max(warm, startedAt) - startedAt) / 1000).toFixed(0)} s to the end: start → end)`)
  lines.push('')
  lines.push('| worker | RSS MB | peak RSS MB | JS heap MB | file descriptors | JS sockets | JS timers | JS active resources |')
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|')
  for (const r of rows) {
    if (!r) continue
    const total = (s) => Object.values(s.active ?? {}).reduce((x, y) => x + y, 0)
    lines.push(
      `| ${r.id} | ${mb(r.a.rss)} → ${mb(r.b.rss)} | ${mb(r.max)} | ${mb(r.a.heapUsed)} → ${mb(r.b.heapUsed)} | ${r.a.fds} → ${r.b.fds} | ${sockets(r.a)} → ${sockets(r.b)} | ${r.a.active?.Timeout ?? 0} → ${r.b.active?.Timeout ?? 0} | ${total(r.a)} → ${total(r.b)} |`,
    )
  }
  const na = nodeSamples.find((x) => x.t >= warm) ?? nodeSamples[0]
  const nb = nodeSamples.at(-1)
  if (na && nb) {
    lines.push('')
    lines.push(`Connections on the lock nodes (connected_clients, node 1..5): ${na.clients.map((c) => c ?? '–').join(' / ')} → ${nb.clients.map((c) => c ?? '–').join(' / ')}.`)
  }
  return lines.join('\n')
}

// ------------------------------------------------------------------------------ report

function union(intervals) {
  const s = [...intervals].sort((a, b) => a[0] - b[0])
  const out = []
  for (const [a, b] of s) {
    if (out.length && a <= out.at(-1)[1]) out.at(-1)[1] = Math.max(out.at(-1)[1], b)
    else out.push([a, b])
  }
  return out
}
const within = (t, intervals) => intervals.some(([a, b]) => t >= a && t <= b)

function table({ entries, violations, startedAt, endedAt }) {
  const completedAt = entries.filter((e) => e.type === 'W' && e.verdict === 'ok').map((e) => e.t)
  const held = ops.filter((o) => o.ok)
  const kinds = Object.keys(FAULT_KINDS)
  const rows = []
  const row = (label, count, intervals) => {
    const inside = (t) => within(t, intervals)
    const waits = held.filter((o) => inside(o.t1)).map((o) => o.t1 - o.wanted)
    rows.push({
      label,
      count,
      seconds: intervals.reduce((a, [s, e]) => a + (e - s), 0) / 1000,
      ops: completedAt.filter(inside).length,
      violations: violations.filter((v) => inside(v.at)).length,
      p99: quantile(waits, 0.99),
    })
  }
  const active = union(faults.filter((f) => !f.missed).map((f) => [f.start, f.end]))
  // The stretches with no fault at all.
  const quiet = []
  let at = startedAt
  for (const [a, b] of active) {
    if (a > at) quiet.push([at, a])
    at = Math.max(at, b)
  }
  if (endedAt > at) quiet.push([at, endedAt])
  row('no fault', '', quiet)
  for (const k of kinds) {
    const fs = faults.filter((f) => f.kind === k && !f.missed)
    row(FAULT_KINDS[k], fs.length, union(fs.map((f) => [f.start, f.end])))
  }
  row('whole run', faults.filter((f) => !f.missed).length, [[startedAt, endedAt]])
  return rows
}

const fmt = (v, d = 0) => (v === undefined || v === null || v === '' ? '–' : typeof v === 'number' ? v.toFixed(d) : String(v))

function markdown({ rows, result, meta }) {
  const { stats, violations } = result
  const lines = []
  lines.push(`# Chaos run`)
  lines.push('')
  lines.push(
    `\`npm run chaos -- --seconds ${meta.seconds} --seed ${meta.seed}\`: ${meta.seconds} s (faults for the first ${(meta.chaosMs / 1000).toFixed(0)} s, then ${(SETTLE / 1000).toFixed(1)} s healthy), ` +
      `${NODES} lock nodes behind TCP proxies (nodes 1 and 2 with \`appendfsync always\`), ${WORKERS} worker processes x ${LOOPS} loops on one lock, ` +
      `TTL ${TTL} ms, fencing, retryCount ${SETTINGS.retryCount} / retryDelay ${SETTINGS.retryDelay} / retryJitter ${SETTINGS.retryJitter}, maxDuration ${MAX_DURATION} ms ` +
      `(restart quarantine on). At most ${MAX_NODE_FAULTS} nodes faulty at a time; a restarted node counts as faulty until its quarantine is over. ` +
      `Half of the workers use acquire/release, half using(). Machine: ${meta.machine}; ${meta.date}.`,
  )
  lines.push('')
  lines.push('| fault | injected | time active s | critical sections done while active | violations | p99 wait ms |')
  lines.push('|---|---:|---:|---:|---:|---:|')
  for (const r of rows) lines.push(`| ${r.label} | ${fmt(r.count)} | ${fmt(r.seconds, 1)} | ${fmt(r.ops)} | ${fmt(r.violations)} | ${fmt(r.p99)} |`)
  lines.push('')
  lines.push('"Wait" is from when a loop first wanted the lock (across failed acquires) to holding it. Faults overlap, so the rows do not add up to the whole run.')
  lines.push('')
  lines.push('**Checks**')
  lines.push('')
  const ok = (b) => (b ? 'ok' : '**FAILED**')
  const kinds = new Set(violations.map((v) => v.kind))
  lines.push(`- counter = completed critical sections: counter ${stats.counter}, accepted writes ${stats.acceptedWrites}, completed as the workers saw them ${stats.completed}: ${ok(!kinds.has('counter'))}`)
  lines.push(`- overlapping critical sections of valid lock holders: ${violations.filter((v) => v.kind === 'overlap').length} (${stats.enters} critical sections entered): ${ok(!kinds.has('overlap'))}. A holder counts as valid from its entry until it left, or its lock expired, or (using()) its signal was aborted because an extension failed, whichever came first; times are the witness clock and the holder's lock.expiration, on the same machine`)
  lines.push(`- fences strictly increasing in log order, no valid holder refused by the fence: ${ok(!kinds.has('fence not increasing') && !kinds.has('valid holder refused by fence'))}`)
  const reasons = Object.entries(stats.reasons).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  lines.push(`- acquires: ${stats.acquires}, held ${stats.held}, failed with a reason: ${reasons}; longest ${stats.longestAcquire} ms (bound ${ACQUIRE_BOUND} ms, outside the worker's own pauses): ${ok(!kinds.has('acquire hung') && !kinds.has('acquire failed without a reason'))}`)
  const rel = Object.entries(stats.releaseFailures).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  lines.push(`- releases that failed (the key then expires by itself): ${rel}; longest release ${stats.longestRelease} ms: ${ok(!kinds.has('release hung') && !kinds.has('release failed without a reason'))}`)
  lines.push(`- lock keys left on the nodes after the workers released: ${violations.filter((v) => v.kind === 'lock key left').length}: ${ok(!kinds.has('lock key left'))}`)
  lines.push(`- worker processes finished by themselves: ${ok(!kinds.has('worker did not finish'))}`)
  lines.push('')
  lines.push('**Caught by fencing** (by design, not violations)')
  lines.push('')
  const selfStopped = stats.caught.filter((c) => c.selfStopped).length
  lines.push(
    `- stale holders refused by the witness' fence check: ${stats.caught.length} (${stats.caught.filter((c) => c.what === 'write').length} writes, ${stats.caught.filter((c) => c.what === 'enter').length} entries; ${selfStopped} paused inside the critical section on purpose). ` +
      `Each had passed its validity check, was then paused past its lock's expiration while another worker took the lock with a higher fence.`,
  )
  for (const c of stats.caught.slice(0, 8)) lines.push(`  - worker ${c.w}, op ${c.op}, fence ${c.fence}: ${c.what} refused ${fmt(c.late)} ms after its lock expired`)
  lines.push(`- without the fence check the counter would have lost ${stats.naiveLost} update${stats.naiveLost === 1 ? '' : 's'} (an unfenced copy took every write: ${stats.naive} of ${stats.writeAttempts})`)
  lines.push(`- critical sections that physically overlapped a stale holder's: ${stats.physicalOverlaps}; writes or entries after the lock's expiration that nobody contested (accepted, harmless): ${stats.lateUnopposed}`)
  lines.push(`- critical sections left because the lock expired before the write: ${stats.abandoned}; using() routines whose lock was lost: ${stats.lost}`)
  const ext = Object.entries(stats.extendFailures).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  lines.push(`- extensions by hand inside critical sections: ${stats.extends} succeeded; failed (with a reason): ${ext}`)
  lines.push('')
  lines.push(`**Violations: ${violations.length}**`)
  lines.push('')
  for (const v of violations.slice(0, 30)) lines.push(`- ${v.kind} at +${((v.at - meta.startedAt) / 1000).toFixed(2)} s: ${v.detail}`)
  if (violations.length > 30) lines.push(`- ... and ${violations.length - 30} more`)
  lines.push('')
  lines.push(meta.resources)
  lines.push('')
  lines.push('Timeline: [chaos.svg](chaos.svg).')
  return lines.join('\n')
}

const COLORS = {
  'kill-empty': '#d62728',
  'kill-aof': '#ff9896',
  sigstop: '#9467bd',
  blackhole: '#333333',
  delay: '#1f77b4',
  reset: '#ff7f0e',
  slow: '#2ca02c',
  'client-pause': '#8c564b',
  'client-pause-cs': '#e377c2',
}

function svg({ entries, startedAt, endedAt, violations }) {
  const seconds = Math.ceil((endedAt - startedAt) / 1000)
  const perSecond = Array.from({ length: seconds }, () => 0)
  for (const e of entries) {
    if (e.type !== 'W' || e.verdict !== 'ok') continue
    const i = Math.floor((e.t - startedAt) / 1000)
    if (i >= 0 && i < seconds) perSecond[i] += 1
  }
  const W = 1000
  const left = 60
  const right = 20
  const chartH = 180
  const laneH = 14
  const lanes = [...Array(NODES).keys()].map((n) => `node ${n + 1}`).concat([...Array(WORKERS).keys()].map((w) => `worker ${w}`))
  const top = 30
  const lanesTop = top + chartH + 30
  const H = lanesTop + lanes.length * laneH + 70
  const x = (t) => left + ((t - startedAt) / 1000 / seconds) * (W - left - right)
  const max = Math.max(1, ...perSecond)
  const y = (v) => top + chartH - (v / max) * chartH
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;')
  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`)
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  out.push(`<text x="${left}" y="18" font-size="13">Critical sections completed per second (seed ${SEED}, ${seconds} s); faults below</text>`)
  // Faults shaded behind the chart.
  for (const f of faults) {
    if (f.missed) continue
    out.push(`<rect x="${x(f.start).toFixed(1)}" y="${top}" width="${Math.max(1, x(f.end) - x(f.start)).toFixed(1)}" height="${chartH}" fill="${COLORS[f.kind]}" opacity="0.08"/>`)
  }
  const step = (W - left - right) / seconds
  perSecond.forEach((v, i) => {
    out.push(`<rect x="${(left + i * step).toFixed(1)}" y="${y(v).toFixed(1)}" width="${Math.max(0.5, step - 0.5).toFixed(1)}" height="${(top + chartH - y(v)).toFixed(1)}" fill="#4c72b0"/>`)
  })
  out.push(`<line x1="${left}" y1="${top + chartH}" x2="${W - right}" y2="${top + chartH}" stroke="black"/>`)
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + chartH}" stroke="black"/>`)
  for (const v of [0, Math.round(max / 2), max]) out.push(`<text x="${left - 5}" y="${y(v) + 4}" text-anchor="end">${v}</text>`)
  const tick = seconds <= 60 ? 5 : seconds <= 300 ? 30 : 60
  for (let s = 0; s <= seconds; s += tick) {
    out.push(`<line x1="${x(startedAt + s * 1000)}" y1="${top + chartH}" x2="${x(startedAt + s * 1000)}" y2="${top + chartH + 4}" stroke="black"/>`)
    out.push(`<text x="${x(startedAt + s * 1000)}" y="${top + chartH + 16}" text-anchor="middle">${s}s</text>`)
  }
  lanes.forEach((name, i) => {
    out.push(`<text x="${left - 5}" y="${lanesTop + i * laneH + 10}" text-anchor="end">${esc(name)}</text>`)
    out.push(`<line x1="${left}" y1="${lanesTop + i * laneH + laneH / 2}" x2="${W - right}" y2="${lanesTop + i * laneH + laneH / 2}" stroke="#eee"/>`)
  })
  for (const f of faults) {
    if (f.missed) continue
    const lane = f.node !== undefined ? f.node : NODES + f.worker
    const yy = lanesTop + lane * laneH + 2
    const end = f.restarted ? f.restarted : f.end
    out.push(`<rect x="${x(f.start).toFixed(1)}" y="${yy}" width="${Math.max(1.5, x(end) - x(f.start)).toFixed(1)}" height="${laneH - 4}" fill="${COLORS[f.kind]}"><title>${esc(FAULT_KINDS[f.kind])} ${esc(f.detail ?? '')}</title></rect>`)
    if (f.restarted) {
      out.push(`<rect x="${x(f.restarted).toFixed(1)}" y="${yy}" width="${Math.max(1, x(f.end) - x(f.restarted)).toFixed(1)}" height="${laneH - 4}" fill="${COLORS[f.kind]}" opacity="0.3"><title>restart quarantine</title></rect>`)
    }
  }
  for (const v of violations) {
    out.push(`<line x1="${x(v.at)}" y1="${top}" x2="${x(v.at)}" y2="${lanesTop + lanes.length * laneH}" stroke="red" stroke-width="1.5"><title>${esc(v.kind)}</title></line>`)
  }
  // Legend, in two rows.
  const ly = lanesTop + lanes.length * laneH + 20
  Object.entries(FAULT_KINDS).forEach(([k, label], i) => {
    const row = i < 5 ? 0 : 1
    const col = row === 0 ? i : i - 5
    const lx = left + col * 185
    const yy = ly + row * 16
    out.push(`<rect x="${lx}" y="${yy}" width="10" height="10" fill="${COLORS[k]}"/><text x="${lx + 13}" y="${yy + 9}">${esc(label)}</text>`)
  })
  out.push(`<text x="${left}" y="${ly + 44}" fill="#555">Light parts: a restarted node's quarantine (it sits out acquires until up for maxDuration). Red lines: violations (${violations.length}).</text>`)
  out.push('</svg>')
  return out.join('\n')
}

// --------------------------------------------------------------------------------- run

async function main() {
  globalThis.t0 = Date.now()
  const chaosMs = SECONDS * 1000 - SETTLE
  const schedule = plan(SEED, chaosMs)
  log(`seed ${SEED}, ${SECONDS} s, ${schedule.length} faults planned`)

  witness = await new RedisServer({ args: ['--enable-debug-command', 'yes'] }).start()
  for (let i = 0; i < NODES; i++) {
    const aof = AOF_NODES.includes(i)
    const args = ['--enable-debug-command', 'yes', ...(aof ? ['--appendonly', 'yes', '--appendfsync', 'always'] : [])]
    const server = await new RedisServer({ args }).start()
    const proxy = await new ChaosProxy(server.port).start()
    nodes.push({ server, proxy, aof })
  }
  const keys = { hi: 'chaos:hi', log: 'chaos:log', counter: 'chaos:counter', naive: 'chaos:naive' }
  const resource = 'chaos:lock'

  const ready = []
  for (let id = 0; id < WORKERS; id++) {
    const cfg = {
      id,
      ports: nodes.map((n) => n.proxy.port),
      witnessPort: witness.port,
      resource: SABOTAGE && id === 0 ? `${resource}:sabotage` : resource,
      ttl: TTL,
      settings: SETTINGS,
      loops: LOOPS,
      mode: id % 2 === 0 ? 'acquire' : 'using',
      seed: SEED,
      keys,
    }
    const child = fork(path.join(here, 'chaos-worker.mjs'), [JSON.stringify(cfg)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
    const w = { id, child, pid: child.pid, done: false, stderr: '', exited: undefined, samples: [] }
    workers.push(w)
    child.stderr.on('data', (d) => {
      w.stderr = (w.stderr + d).slice(-4000)
    })
    w.exit = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        w.exited = code ?? signal
        resolve()
      }),
    )
    ready.push(
      new Promise((resolve, reject) => {
        child.on('message', (m) => {
          if (m.type === 'ready') resolve()
          else if (m.type === 'ops') ops.push(...m.ops)
          else if (m.type === 'sample') w.samples.push(m.sample)
          else if (m.type === 'done') {
            w.done = true
            w.summary = m.summary
          }
        })
        child.once('exit', () => reject(new Error(`worker ${id} exited at start: ${w.stderr}`)))
      }),
    )
  }
  await Promise.all(ready)

  const startedAt = Date.now()
  for (const w of workers) w.child.send({ type: 'go' })
  const watcher = watchStopped()
  const progress = setInterval(() => log(`${ops.filter((o) => o.cs === 'completed').length} critical sections, ${faults.filter((f) => f.end === undefined).length} faults active`), 10_000)
  const sampler = setInterval(() => sampleNodes().catch(() => {}), 10_000)
  await nemesis(schedule, startedAt)
  log('faults over; healthy until the end')
  await sleep(startedAt + SECONDS * 1000 - Date.now())
  clearInterval(progress)
  await sampleNodes()
  clearInterval(sampler)

  // Stop the workers: each finishes its operation, releases and quits.
  for (const w of workers) {
    try {
      process.kill(w.pid, 'SIGCONT')
      w.child.send({ type: 'stop' })
    } catch {}
  }
  const deadline = sleep(ACQUIRE_BOUND + 5000)
  await Promise.race([Promise.all(workers.map((w) => w.exit)), deadline])
  clearInterval(watcher)
  const endedAt = Date.now()
  for (const w of workers) if (w.exited === undefined) w.child.kill('SIGKILL')
  await Promise.all(workers.map((w) => w.exit))

  // Lock keys left on the nodes (read directly, not through the proxies). The fence
  // counters, the nodes' identity records and the marks of restarted nodes are meant to
  // stay.
  const kept = new Set(['redlock-rs:nodes', 'redlock-rs:data-lost'])
  const leftKeys = []
  for (const [i, n] of nodes.entries()) {
    const all = await rawCommand(n.server.port, ['KEYS', '*'])
    for (const key of all) {
      if (kept.has(key) || key.endsWith(':redlock-rs:fence')) continue
      leftKeys.push({ node: `node ${i + 1}`, key, pttl: await rawCommand(n.server.port, ['PTTL', key]) })
    }
  }
  const raw = await rawCommand(witness.port, ['LRANGE', keys.log, '0', '-1'], { timeout: 30_000 })
  const entries = raw.map((line) => {
    const [type, fence, w, op, t, exp, verdict] = line.split(' ')
    return { type, fence: Number(fence), w: Number(w), op, t: Number(t), exp: Number(exp), verdict }
  })
  const counter = Number((await witness.command('GET', keys.counter)) ?? 0)
  const naive = Number((await witness.command('GET', keys.naive)) ?? 0)
  const pauses = faults.filter((f) => f.kind.startsWith('client-pause') && !f.missed).map((f) => ({ worker: f.worker, start: f.start, end: f.end }))

  const result = check({ entries, counter, naive, leftKeys, pauses, startedAt })
  const rows = table({ entries, violations: result.violations, startedAt, endedAt })
  const meta = {
    seconds: SECONDS,
    seed: SEED,
    chaosMs,
    startedAt,
    machine: `${os.cpus().length} x ${os.cpus()[0]?.model}, Node ${process.version}, redis-server ${(await witness.command('INFO', 'server')).match(/redis_version:(\S+)/)[1]}`,
    date: new Date().toISOString().slice(0, 10),
    resources: resourceReport(startedAt, SECONDS * 1000),
  }
  const md = markdown({ rows, result, meta })
  console.log(md)
  mkdirSync(OUT, { recursive: true })
  writeFileSync(path.join(OUT, 'chaos.md'), md + '\n')
  writeFileSync(path.join(OUT, 'chaos.svg'), svg({ entries, startedAt, endedAt, violations: result.violations }) + '\n')
  if (JSON_OUT) {
    writeFileSync(
      JSON_OUT,
      JSON.stringify({ seed: SEED, seconds: SECONDS, rows, violations: result.violations, stats: result.stats, faults, workers: workers.map((w) => w.summary ?? null) }, null, 2),
    )
  }
  if (HISTORY_OUT) writeFileSync(HISTORY_OUT, JSON.stringify({ startedAt, endedAt, seed: SEED, faults, ops, entries, nodeSamples, ports: nodes.map((n) => ({ server: n.server.port, proxy: n.proxy.port })) }))
  await cleanup()
  return result.violations.length === 0 ? 0 : 1
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    async (e) => {
      console.error(e)
      await cleanup()
      process.exit(2)
    },
  )
}
