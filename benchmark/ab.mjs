// Two builds of redlock-rs side by side in one process, alternating rounds, so that this
// machine's swings in speed hit both alike (runs in separate processes minutes apart
// differ by more than most changes do).
//
//   node benchmark/ab.mjs <mem|seq|loops> <dirA> <dirB> [--servers=N] [--rounds=R] [--ms=M]
//
// A build is a folder with `index.js`, `binding.js`, `package.json`, `lib/` and the
// `.node` file, for example:
//   git archive <commit> lib index.js binding.js package.json | tar -x -C /tmp/a
//   cp <that commit's build>.node /tmp/a/redlock-rs.linux-x64-gnu.node
// At most two: each copy of the addon takes a share of the process' static TLS block.
//
// Scenarios: `mem`, acquire+release in a loop on a MemoryStore (no socket); `seq`, the same
// on the servers; `loops`, 64 such loops at once. Prints the median ops/s and process CPU
// per operation (every thread) of each build.
import { createRequire } from 'node:module'
import path from 'node:path'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'

const require = createRequire(import.meta.url)
const arg = (name, fallback) => Number((process.argv.find((a) => a.startsWith(`--${name}=`)) ?? `=${fallback}`).split('=')[1])
const [scenario, ...dirs] = process.argv.slice(2).filter((a) => !a.startsWith('--'))
if (!['mem', 'seq', 'loops'].includes(scenario) || dirs.length !== 2) {
  console.error('usage: node benchmark/ab.mjs <mem|seq|loops> <dirA> <dirB> [--servers=N] [--rounds=R] [--ms=M]')
  process.exit(2)
}
const rounds = arg('rounds', 8)
const ms = arg('ms', 1000)
const servers = scenario === 'mem' ? [] : await startServers(arg('servers', 1))

let k = 0
const builds = dirs.map((dir) => {
  const lib = require(path.resolve(dir, 'index.js'))
  const clients = scenario === 'mem' ? [new lib.MemoryStore()] : servers.map((s) => new lib.Redis(s.port))
  return { dir, redlock: new lib.Redlock(clients), runs: [] }
})

/** `loops` loops of acquire+release for `time` ms: [ops/s, process CPU µs per op]. */
async function run(redlock, time, loops) {
  let stop = false
  let n = 0
  const loop = async () => {
    while (!stop) {
      await (await redlock.acquire([`ab:${k++}`], 10_000)).release()
      n++
    }
  }
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  setTimeout(() => (stop = true), time)
  await Promise.all(Array.from({ length: loops }, loop))
  const cpu = process.cpuUsage(cpu0)
  return [(n / (performance.now() - t0)) * 1000, (cpu.user + cpu.system) / n]
}

const loops = scenario === 'loops' ? 64 : 1
for (let r = 0; r < rounds; r++) {
  for (const b of r % 2 ? [...builds].reverse() : builds) {
    await run(b.redlock, 100, loops) // warm-up
    b.runs.push(await run(b.redlock, ms, loops))
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1]
for (const b of builds) {
  const ops = median(b.runs.map((x) => x[0]))
  const cpu = median(b.runs.map((x) => x[1]))
  console.log(`${scenario} ${b.dir}: ${ops.toFixed(0)} ops/s, ${(1e6 / ops).toFixed(1)} µs/op, process CPU ${cpu.toFixed(1)} µs/op`)
}
for (const b of builds) await b.redlock.quit()
await stopServers(servers)
