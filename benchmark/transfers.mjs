// Where the time of the 4 processes x 4 workers scenario goes: each worker loops acquire,
// critical section (the bench's: four round trips to a witness Redis), release. Every
// critical section's start and end are recorded (wall clock, one machine); the time
// between one section's end and the next one's start is the lock's transfer, split by
// whether the next holder is in the same process (a hand-over, for redlock-rs) or in
// another one.
//
//   node benchmark/transfers.mjs [--impls=redlock-rs,redlock-universal] [--seconds=4] [--rounds=2]
//                                [--procs=4] [--workers=4]
//
// `--procs=1 --workers=16` is the 16-workers scenario.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const here = fileURLToPath(import.meta.url)
const arg = (name, fallback) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback

if (process.argv[2]?.startsWith('{')) {
  // A child: one process of `workers` workers.
  const o = JSON.parse(process.argv[2])
  const { implementations } = await import('./impls.mjs')
  const { witnessSection } = await import('./contention.mjs')
  const IORedis = require('ioredis')
  const lib = await implementations[o.impl](o.ports)
  const witness = new IORedis({ port: o.witnessPort, host: '127.0.0.1' })
  await witness.ping()
  await new Promise((r) => setTimeout(r, Math.max(0, o.startAt - Date.now())))
  const now = () => performance.timeOrigin + performance.now()
  const sections = []
  let failures = 0
  const end = o.startAt + o.seconds * 1000
  await Promise.all(
    Array.from({ length: o.workers }, async (_, w) => {
      while (Date.now() < end) {
        let lock
        for (;;) {
          try {
            lock = await lib.acquire(o.key, 5_000)
            break
          } catch {
            failures += 1
            if (Date.now() >= end) return
          }
        }
        const start = now()
        await witnessSection(witness, o.key)
        sections.push([start, now(), w])
        try {
          await lib.release(lock)
        } catch {}
      }
    }),
  )
  await lib.close()
  await witness.quit()
  process.stdout.write(JSON.stringify({ sections, failures }))
} else {
  const { startServers, stopServers } = await import('../scripts/redis-servers.mjs')
  const { roundTrip } = await import('./raw.mjs')
  const servers = await startServers(6)
  const ports = servers.slice(0, 5).map((s) => s.port)
  const seconds = Number(arg('seconds', 4))
  const procs = Number(arg('procs', 4))
  const workers = Number(arg('workers', 4))
  const stats = (xs) => {
    const s = [...xs].sort((a, b) => a - b)
    const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1)
    return { n: s.length, mean, p50: s[s.length >> 1] ?? 0, p90: s[Math.floor(s.length * 0.9)] ?? 0, p99: s[Math.floor(s.length * 0.99)] ?? 0, max: s.at(-1) ?? 0, slow: s.filter((x) => x > 10).reduce((a, b) => a + b, 0) }
  }
  const f = (x) => x.toFixed(2)
  console.log('| implementation | CS/s | Jain (per worker) | CS ms (mean) | same-process transfer ms (n, mean, p50) | cross-process transfer ms (n, mean, p50, p90) | failed |')
  console.log('|---|---:|---:|---:|---|---|---:|')
  const bounds = []
  const tails = []
  for (let round = 0; round < Number(arg('rounds', 2)); round++) {
    const rates = {}
    for (const impl of arg('impls', 'redlock-rs,redlock-universal').split(',')) {
      const o = { impl, ports, witnessPort: servers[5].port, key: `t${round}${Date.now()}`, seconds, workers, startAt: Date.now() + 1500 }
      const parts = await Promise.all(
        Array.from(
          { length: procs },
          () =>
            new Promise((resolve, reject) =>
              execFile(process.execPath, [here, JSON.stringify(o)], { maxBuffer: 1 << 26 }, (e, out) => (e ? reject(e) : resolve(JSON.parse(out)))),
            ),
        ),
      )
      const all = parts.flatMap((p, i) => p.sections.map(([s, e]) => ({ s, e, p: i }))).sort((a, b) => a.s - b.s)
      const same = []
      const cross = []
      for (let i = 1; i < all.length; i++) (all[i].p === all[i - 1].p ? same : cross).push(all[i].s - all[i - 1].e)
      const counts = parts.flatMap((p) => Array.from({ length: workers }, (_, w) => p.sections.filter((x) => x[2] === w).length))
      const jain = counts.reduce((a, b) => a + b, 0) ** 2 / (counts.length * counts.reduce((a, b) => a + b * b, 0))
      const cs = stats(all.map((x) => x.e - x.s))
      const [sm, cr] = [stats(same), stats(cross)]
      rates[impl] = { perSec: all.length / seconds, cs: cs.mean }
      tails.push([impl, { cr }])
      console.log(
        `| ${impl} | ${(all.length / seconds).toFixed(0)} | ${jain.toFixed(3)} | ${f(cs.mean)} | ${sm.n}, ${f(sm.mean)}, ${f(sm.p50)} | ${cr.n}, ${f(cr.mean)}, ${f(cr.p50)}, ${f(cr.p90)} | ${parts.reduce((a, p) => a + p.failures, 0)} |`,
      )
    }
    // No design moves the lock with less than one quorum round trip, so none exceeds
    // 1 / (critical section + quorum round trip), whatever it does between sections.
    const rtt = await roundTrip(ports, 1000)
    const ours = rates['redlock-rs']
    const peers = Object.entries(rates).filter(([name]) => name !== 'redlock-rs')
    if (ours && peers.length) {
      const [peer, best] = peers.sort((a, b) => b[1].perSec - a[1].perSec)[0]
      const bound = 1000 / (ours.cs + rtt)
      bounds.push(
        `round ${round + 1}: quorum round trip (raw, p50) ${rtt.toFixed(3)} ms; bound 1 / (${ours.cs.toFixed(2)} + ${rtt.toFixed(3)}) ms = ${bound.toFixed(0)} CS/s = ${(bound / best.perSec).toFixed(2)}x ${peer} (${best.perSec.toFixed(0)}); redlock-rs ${(ours.perSec / best.perSec).toFixed(2)}x`,
      )
    }
  }
  if (bounds.length) console.log(`\n${bounds.join('\n')}`)
  // The cross-process tail: a few slow transfers can take much of the run.
  for (const [impl, { cr }] of tails) {
    console.log(`${impl}: cross-process transfer p99 ${f(cr.p99)} ms, max ${f(cr.max)} ms; ${(cr.slow / 1000).toFixed(2)} s of the ${seconds} s in transfers over 10 ms`)
  }
  await stopServers(servers)
}
