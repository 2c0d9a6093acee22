// Mutual exclusion across processes: 6 processes x 50 read-modify-writes of a counter in
// a separate Redis, each under the lock. No update is lost, and the fences grow in the
// order the writes happened; also while a lock node is killed and restarted.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { resource, sleep } from './helpers.mjs'

const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'counter-worker.mjs')
const PROCESSES = 6
const ITERATIONS = 50

function run(options) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [worker, JSON.stringify(options)], { timeout: 120_000 }, (e, out, err) =>
      e ? reject(new Error(`${e.message}\n${err}`)) : resolve(out),
    )
  })
}

async function contend(t, disturb) {
  const servers = await startServers(4)
  t.teardown(() => stopServers(servers))
  const [counter, ...nodes] = servers
  const options = { ports: nodes.map((s) => s.port), counterPort: counter.port, key: resource(t), iterations: ITERATIONS }
  const runs = Array.from({ length: PROCESSES }, () => run(options))
  if (disturb) await disturb(nodes)
  const lines = (await Promise.all(runs)).join('').trim().split('\n')
  const writes = lines.map((l) => l.split(' ')).map(([written, fence]) => ({ written: Number(written), fence: BigInt(fence) }))
  t.is(Number(await counter.command('GET', 'counter')), PROCESSES * ITERATIONS, 'no lost update')
  writes.sort((a, b) => a.written - b.written)
  t.deepEqual(writes.map((w) => w.written), Array.from({ length: PROCESSES * ITERATIONS }, (_, i) => i + 1), 'every value written once')
  for (let i = 1; i < writes.length; i++) {
    if (!(writes[i].fence > writes[i - 1].fence)) t.fail(`fence ${writes[i].fence} after ${writes[i - 1].fence} at write ${i + 1}`)
  }
  t.pass()
}

test('6 processes x 50 critical sections: exact count, fences increasing in write order', async (t) => {
  await contend(t)
})

test('the same while a lock node is killed and restarted empty', async (t) => {
  await contend(t, async (nodes) => {
    await sleep(300)
    await nodes[1].kill()
    await sleep(300)
    await nodes[1].start()
  })
})
