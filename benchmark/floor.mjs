// The floor of targets 1 and 4 of the performance issue: what the Redis round trips alone
// allow on this machine, measured side by side with node-redlock and redlock-rs.
//
// "floor" is the least a Redlock can do, written on raw sockets from the JavaScript thread
// with no library, no parsing beyond the replies it needs and none of the safety work
// (no drift, no retries, no cleanup of a lost attempt, no fencing, no line):
// - acquire: `SET key value NX PX ttl` on every node, done at the quorum-th reply;
// - release: one compare-and-delete script on every node, done at the quorum-th reply;
// - hand-over (the design issue #11 asks for): a release with a waiter of the process
//   moves the lock to it with one compare-and-set script, done at the quorum-th reply.
// So a floor cycle is two quorum round trips, and a transfer between two workers of one
// process is one. Nothing that keeps the lock safe can do with fewer.
//
//   node benchmark/floor.mjs [--seconds=4] [--rounds=3] [--ops=2000]
//
// Prints, for 5 and 1 servers, the sequential acquire+release p50 (and the floor with every
// reply awaited, as node-redlock does); for the 16-workers scenario (the bench's critical
// section: four round trips to a witness Redis) the critical sections per second, the
// section and the transfer between sections, and the bound a quorum round trip per
// transfer sets. Ratios to node-redlock in the same run.
import { randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { witnessSection } from './contention.mjs'
import { implementations } from './impls.mjs'
import { MOVE, RELEASE, Raw, quorum, roundTrip, sha } from './raw.mjs'

const IORedis = createRequire(import.meta.url)('ioredis')
const arg = (name, fallback) => Number((process.argv.find((a) => a.startsWith(`--${name}=`)) ?? `=${fallback}`).split('=')[1])

/** The floor Redlock over `ports`; `need` replies decide (the quorum, or all of them). */
async function floorLock(ports, { all = false } = {}) {
  const nodes = ports.map((p) => new Raw(p))
  await Promise.all(nodes.map((n) => n.ready))
  const q = all ? nodes.length : Math.floor(nodes.length / 2) + 1
  const [release, move] = [sha(RELEASE), sha(MOVE)]
  await Promise.all(nodes.flatMap((n) => [n.send(['SCRIPT', 'LOAD', RELEASE]), n.send(['SCRIPT', 'LOAD', MOVE])]))
  const lines = new Map() // key -> waiters of this process (resolve functions)
  const value = () => randomBytes(16).toString('hex')
  const take = async (key, ttl) => {
    const v = value()
    const won = await quorum(nodes, () => ['SET', key, v, 'NX', 'PX', String(ttl)], (r) => r === 'OK', q)
    return won >= q ? { key, value: v, ttl } : null
  }
  return {
    acquire: async (key, ttl) => {
      const line = lines.get(key)
      if (line) return new Promise((resolve) => line.push({ resolve, ttl }))
      lines.set(key, [])
      for (;;) {
        const lock = await take(key, ttl)
        if (lock) return lock
        await new Promise((r) => setTimeout(r, 1))
      }
    },
    release: async (lock) => {
      const line = lines.get(lock.key)
      const next = line?.shift()
      if (next) {
        const v = value()
        const moved = await quorum(nodes, () => ['EVALSHA', move, '1', lock.key, lock.value, v, String(next.ttl)], (r) => r === 1, q)
        if (moved >= q) return next.resolve({ key: lock.key, value: v, ttl: next.ttl })
      }
      lines.delete(lock.key)
      await quorum(nodes, () => ['EVALSHA', release, '1', lock.key, lock.value], (r) => r === 1, q)
    },
    close: async () => nodes.forEach((n) => n.close()),
  }
}

implementations.floor = (ports) => floorLock(ports)
implementations['floor, every reply'] = (ports) => floorLock(ports, { all: true })

/** The bench's 16-workers scenario, recording when each critical section starts and ends. */
async function sections(impl, ports, witnessPort, seconds) {
  const lib = await implementations[impl](ports)
  const witness = new IORedis({ port: witnessPort, host: '127.0.0.1' })
  await witness.ping()
  const key = `floor:contend:${unique++}`
  const list = []
  const end = Date.now() + seconds * 1000
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (Date.now() < end) {
        let lock
        while (!lock) lock = await lib.acquire(key, 5_000).catch(() => null)
        const start = performance.now()
        await witnessSection(witness, key)
        list.push([start, performance.now()])
        await lib.release(lock).catch(() => {})
      }
    }),
  )
  await lib.close()
  await witness.quit()
  list.sort((a, b) => a[0] - b[0])
  const gaps = list.slice(1).map(([s], i) => s - list[i][1])
  return {
    perSec: list.length / seconds,
    cs: list.reduce((a, [s, e]) => a + e - s, 0) / list.length,
    transfer: gaps.reduce((a, b) => a + b, 0) / gaps.length,
    transferP50: median(gaps),
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
let unique = 0

async function sequentialP50(impl, ports, ops) {
  const lib = await implementations[impl](ports)
  for (let i = 0; i < 200; i++) await lib.release(await lib.acquire(`floor:warm:${unique++}`, 10_000))
  const lat = []
  for (let i = 0; i < ops; i++) {
    const t = performance.now()
    await lib.release(await lib.acquire(`floor:seq:${unique++}`, 10_000))
    lat.push(performance.now() - t)
  }
  await lib.close()
  return median(lat)
}

/** 64 loops of acquire+release for `seconds`: ops/s, JavaScript-thread and process µs per op. */
async function loops(impl, ports, seconds) {
  const lib = await implementations[impl](ports)
  for (let i = 0; i < 200; i++) await lib.release(await lib.acquire(`floor:warm:${unique++}`, 10_000))
  let n = 0
  const end = Date.now() + seconds * 1000
  const [elu0, cpu0, t0] = [performance.eventLoopUtilization(), process.cpuUsage(), performance.now()]
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (Date.now() < end) {
        await lib.release(await lib.acquire(`floor:tp:${unique++}`, 10_000))
        n += 1
      }
    }),
  )
  const [elu, cpu, elapsed] = [performance.eventLoopUtilization(elu0), process.cpuUsage(cpu0), performance.now() - t0]
  await lib.close()
  return { perSec: (n * 1000) / elapsed, jsUs: (elu.active * 1000) / n, cpuUs: (cpu.user + cpu.system) / n }
}

// A child process for one `loops` run (fresh, with the environment given to it).
const child = process.argv.find((a) => a.startsWith('--loops='))
if (child) {
  const o = JSON.parse(child.slice('--loops='.length))
  process.stdout.write(JSON.stringify(await loops(o.impl, o.ports, o.seconds)))
  process.exit(0)
}
const inChild = (impl, ports, seconds, env = {}) =>
  new Promise((resolve, reject) =>
    execFile(process.execPath, [fileURLToPath(import.meta.url), `--loops=${JSON.stringify({ impl, ports, seconds })}`], { env: { ...process.env, ...env } }, (e, out) =>
      e ? reject(e) : resolve(JSON.parse(out)),
    ),
  )

const servers = await startServers(6)
const [ports5, witnessPort] = [servers.slice(0, 5).map((s) => s.port), servers[5].port]
const rounds = arg('rounds', 3)
const seconds = arg('seconds', 4)
const ops = arg('ops', 2000)
const impls = ['node-redlock', 'redlock-rs', 'floor', 'floor, every reply']
try {
  for (const [label, ports] of [
    ['5 servers', ports5],
    ['1 server', ports5.slice(0, 1)],
  ]) {
    const p50 = Object.fromEntries(impls.map((i) => [i, []]))
    for (let r = 0; r < rounds; r++) for (const impl of impls) p50[impl].push(await sequentialP50(impl, ports, ops))
    console.log(`\nsequential acquire+release, ${label} (p50 ms, median of ${rounds} rounds of ${ops}; ratio to node-redlock)`)
    const base = median(p50['node-redlock'])
    for (const impl of impls) console.log(`  ${impl.padEnd(20)} ${median(p50[impl]).toFixed(3)}  ${(median(p50[impl]) / base).toFixed(2)}x   [${p50[impl].map((x) => x.toFixed(3)).join(', ')}]`)
  }
  // 16 workers: a transfer (one section's end to the next one's start) cannot be shorter
  // than one quorum round trip, so no design of issue #11 does better than
  // 1 / (critical section + quorum round trip) critical sections per second.
  const runs = Object.fromEntries(['node-redlock', 'redlock-rs'].map((i) => [i, []]))
  const rtts = []
  for (let r = 0; r < rounds; r++) {
    for (const impl of Object.keys(runs)) runs[impl].push(await sections(impl, ports5, witnessPort, seconds))
    rtts.push(await roundTrip(ports5, ops))
  }
  const at = (impl, f) => median(runs[impl].map(f))
  const cs = at('redlock-rs', (x) => x.cs)
  const rtt = median(rtts)
  const nr = at('node-redlock', (x) => x.perSec)
  console.log(`\n16 workers on one key, 5 servers (median of ${rounds} rounds of ${seconds} s; ms; ratio to node-redlock)`)
  console.log('  implementation        CS/s   ratio  critical section  transfer (mean, p50)')
  for (const impl of Object.keys(runs)) {
    const f = (g) => at(impl, g).toFixed(2)
    console.log(`  ${impl.padEnd(20)} ${at(impl, (x) => x.perSec).toFixed(0).padStart(5)}  ${(at(impl, (x) => x.perSec) / nr).toFixed(2)}x   ${f((x) => x.cs)}              ${f((x) => x.transfer)}, ${f((x) => x.transferP50)}`)
  }
  console.log(`  quorum round trip (raw, p50): ${rtt.toFixed(3)} ms [${rtts.map((x) => x.toFixed(3)).join(', ')}]`)
  console.log(`  bound: 1 / (${cs.toFixed(2)} + ${rtt.toFixed(3)}) ms = ${(1000 / (cs + rtt)).toFixed(0)} CS/s = ${(1000 / (cs + rtt) / nr).toFixed(2)}x node-redlock`)

  // 64 loops: the JavaScript thread's time per operation (event-loop utilization) and the
  // process' CPU, each run in a fresh process; redlock-rs also with its engine on an I/O
  // thread (REDLOCK_RS_IO=thread). The floor does only its socket work and the least
  // JavaScript, with one write per connection per tick.
  const variants = [
    ['node-redlock', 'node-redlock'],
    ['redlock-rs', 'redlock-rs'],
    ['redlock-rs, I/O thread', 'redlock-rs', { REDLOCK_RS_IO: 'thread' }],
    ['floor', 'floor'],
  ]
  for (const [label, ports] of [
    ['5 servers', ports5],
    ['1 server', ports5.slice(0, 1)],
  ]) {
    const res = Object.fromEntries(variants.map(([name]) => [name, []]))
    for (let r = 0; r < rounds; r++) for (const [name, impl, env] of variants) res[name].push(await inChild(impl, ports, Math.min(seconds, 3), env))
    const m = (name, k) => median(res[name].map((x) => x[k]))
    console.log(`\n64 loops, ${label} (median of ${rounds} runs; ratio to node-redlock)`)
    console.log('  implementation            ops/s  ratio   JS-thread µs/op  ratio   process CPU µs/op  ratio')
    for (const [name] of variants) {
      const col = (k, d) => `${m(name, k).toFixed(d).padStart(7)}  ${(m(name, k) / m('node-redlock', k)).toFixed(2)}x`
      console.log(`  ${name.padEnd(24)} ${col('perSec', 0)}   ${col('jsUs', 1)}         ${col('cpuUs', 1)}`)
    }
  }
} finally {
  await stopServers(servers)
}
