// Where the time of one operation goes: `node benchmark/breakdown.mjs` (after npm run bench
// installed the compared libraries, or `npm --prefix benchmark ci`). Each line is a median
// of sequential operations (µs), so that it shows latency, not throughput:
//   - a synchronous native call (no I/O, no thread hand-off);
//   - acquire+release on an in-process MemoryStore: the JS -> runtime -> JS round trips
//     and the engine's own work, without any socket;
//   - PING over a raw socket from the JS thread (libuv): the loopback + Redis floor;
//   - PING through our client (hand-off to the I/O thread, socket, hand-off back), and
//     through ioredis;
//   - acquire+release on 1 and 5 redis-servers, ours and node-redlock's;
// and, for 64 concurrent loops on 5 servers, operations/s and the whole process' CPU per
// operation (process.cpuUsage(): every thread) against node-redlock's, plus each
// redis-server's CPU per operation (from /proc/PID/stat).
// By default our side runs on the JavaScript thread (src/addon/event_loop.rs);
// REDLOCK_RS_IO=thread runs it on a tokio I/O thread (REDLOCK_RS_THREADS=N: N of them).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'

const require = createRequire(import.meta.url)
const benchRequire = createRequire(new URL('./package.json', import.meta.url))
const { MemoryStore, Redis, Redlock } = require('../index.js')
const N = Number(process.env.OPS || 3000)
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function timed(op, n = N) {
  for (let i = 0; i < 200; i++) await op(i)
  const lat = []
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint()
    await op(i)
    lat.push(Number(process.hrtime.bigint() - t) / 1e3)
  }
  return median(lat)
}

function rawPinger(port) {
  const socket = net.connect(port, '127.0.0.1')
  socket.setNoDelay(true)
  let waiting = null
  socket.on('data', () => waiting?.())
  return {
    ready: new Promise((r) => socket.once('connect', r)),
    ping: () => new Promise((r) => ((waiting = r), socket.write('PING\r\n'))),
    close: () => socket.destroy(),
  }
}

const redisCpu = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 10_000 // µs (100 Hz ticks)
}

const servers = await startServers(5)
const ports = servers.map((s) => s.port)
const rows = []
const row = (what, us) => rows.push([what, us.toFixed(1)])
let k = 0
try {
  const mem = new Redlock([new MemoryStore()])
  const store = mem.clients[0]
  row('synchronous native call (MemoryStore#keys)', await timed(() => store.keys()))
  row('acquire+release, 1 MemoryStore (engine + JS layer, no socket)', await timed(async () => (await mem.acquire([`m${k++}`], 10_000)).release()))
  // The diagnostics channels cost nothing without a subscriber; with one, this much.
  const { tracingChannel } = await import('node:diagnostics_channel')
  const handlers = { start() {}, end() {}, asyncStart() {}, asyncEnd() {}, error() {} }
  const channels = ['acquire', 'release'].map((op) => tracingChannel(`redlock-rs:${op}`))
  channels.forEach((c) => c.subscribe(handlers))
  row('acquire+release, 1 MemoryStore, with a tracing subscriber', await timed(async () => (await mem.acquire([`d${k++}`], 10_000)).release()))
  channels.forEach((c) => c.unsubscribe(handlers))
  row('acquire+release, 1 MemoryStore, subscriber gone again', await timed(async () => (await mem.acquire([`e${k++}`], 10_000)).release()))
  const raw = rawPinger(ports[0])
  await raw.ready
  row('PING, raw socket on the JS thread (loopback + Redis)', await timed(() => raw.ping()))
  raw.close()
  const ours = new Redis(ports[0])
  row('PING, redlock-rs client', await timed(() => ours.call('PING')))
  let IORedis = null
  try {
    IORedis = benchRequire('ioredis')
  } catch {}
  if (IORedis) {
    const io = new IORedis(ports[0])
    row('PING, ioredis', await timed(() => io.ping()))
    io.disconnect()
  }
  for (const n of [1, 5]) {
    const rl = new Redlock(ports.slice(0, n).map((p) => new Redis(p)))
    row(`acquire+release, redlock-rs, ${n} redis-server(s)`, await timed(async () => (await rl.acquire([`s${k++}`], 10_000)).release()))
    await rl.quit()
    let NodeRedlock = null
    try {
      NodeRedlock = benchRequire('redlock').default
    } catch {}
    if (NodeRedlock && IORedis) {
      const clients = ports.slice(0, n).map((p) => new IORedis(p))
      const nr = new NodeRedlock(clients)
      row(`acquire+release, node-redlock, ${n} redis-server(s)`, await timed(async () => (await nr.acquire([`n${k++}`], 10_000)).release()))
      clients.forEach((c) => c.disconnect())
    }
  }
  // Throughput and CPU per operation, 64 loops on 5 servers.
  const loops = async (acquire, release) => {
    let ops = 0
    const end = Date.now() + 3_000
    const cpu0 = process.cpuUsage()
    const r0 = servers.map((s) => redisCpu(s.pid))
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (Date.now() < end) {
        await release(await acquire(`t${k++}`))
        ops++
      }
    }))
    const cpu = process.cpuUsage(cpu0)
    const redis = servers.reduce((sum, s, i) => sum + redisCpu(s.pid) - r0[i], 0)
    return { opsPerSec: ops / 3, cpuUsPerOp: (cpu.user + cpu.system) / ops, redisUsPerOp: redis / ops }
  }
  const rl = new Redlock(ports.map((p) => new Redis(p)))
  const t = await loops((key) => rl.acquire([key], 10_000), (l) => l.release())
  rows.push(['64 loops, 5 servers, redlock-rs: ops/s | process CPU µs/op | Redis CPU µs/op', `${t.opsPerSec.toFixed(0)} | ${t.cpuUsPerOp.toFixed(1)} | ${t.redisUsPerOp.toFixed(1)}`])
  await rl.quit()
  const NodeRedlock = IORedis && benchRequire('redlock').default
  if (NodeRedlock) {
    const clients = ports.map((p) => new IORedis(p))
    const nr = new NodeRedlock(clients)
    const u = await loops((key) => nr.acquire([key], 10_000), (l) => l.release())
    rows.push(['64 loops, 5 servers, node-redlock: ops/s | process CPU µs/op | Redis CPU µs/op', `${u.opsPerSec.toFixed(0)} | ${u.cpuUsPerOp.toFixed(1)} | ${u.redisUsPerOp.toFixed(1)}`])
    clients.forEach((c) => c.disconnect())
  }
  await mem.quit()
  await ours.quit()
} finally {
  await stopServers(servers)
}
console.log(`engine on: ${process.env.REDLOCK_RS_IO === 'thread' || process.env.REDLOCK_RS_THREADS ? `I/O threads (${process.env.REDLOCK_RS_THREADS ?? 1})` : 'the JavaScript thread'}`)
for (const [what, v] of rows) console.log(`${what.padEnd(82)} ${v}`)
process.exit(0)
