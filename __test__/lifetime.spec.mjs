// No leak of V8 references: idle Redlocks and clients that nobody refers to any more are
// garbage collected, even without quit(); busy ones are kept until their promises settle.
import { execFile } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'

import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { lib, resource, sleep, useServers } from './helpers.mjs'

const { Redlock, Redis } = lib
const servers = useServers(test, 1)

async function collect(registry, count, expected) {
  for (let i = 0; i < 50 && count() < expected; i++) {
    globalThis.gc()
    await sleep(20)
  }
  return count()
}

test('forgotten Redlocks and clients are garbage collected', async (t) => {
  let collected = 0
  const registry = new FinalizationRegistry(() => (collected += 1))
  // In a function of its own, so that no frame of this test still refers to the last ones.
  const useAndForget = async () => {
    const client = new Redis(servers[0].port)
    const redlock = new Redlock([client], { retryCount: 0 })
    const lock = await redlock.acquire([resource(t)], 1_000)
    await lock.release()
    registry.register(redlock, 'redlock')
    registry.register(client, 'client')
  }
  for (let i = 0; i < 50; i++) await useAndForget()
  await sleep(50)
  t.is(await collect(registry, () => collected, 100), 100)
})

/** The Timeout objects alive in this process (a heap snapshot's count). */
function timeoutsAlive() {
  const file = v8.writeHeapSnapshot(path.join(os.tmpdir(), `redlock-timeouts-${process.pid}.heapsnapshot`))
  try {
    const snapshot = JSON.parse(readFileSync(file, 'utf8'))
    const { node_fields: fields, node_types: [types] } = snapshot.snapshot.meta
    let n = 0
    for (let i = 0; i < snapshot.nodes.length; i += fields.length) {
      if (types[snapshot.nodes[i]] === 'object' && snapshot.strings[snapshot.nodes[i + 1]] === 'Timeout') n++
    }
    return n
  } finally {
    rmSync(file, { force: true })
  }
}

// Found by a soak: each Redlock kept its own keep-alive timer, unref'd when idle but never
// cleared, so one made per request (node-redlock's pattern) and dropped without quit() left
// a Timeout behind for ever (150 bytes a request).
test.serial('Redlocks made per request over one client and dropped without quit() leave no timer behind', async (t) => {
  const store = new lib.MemoryStore()
  const perRequest = async (i) => {
    const redlock = new Redlock([store], { retryCount: 0 })
    await (await redlock.acquire([`${resource(t)}:${i}`], 1_000)).release()
  }
  await perRequest(-1)
  await collect(new FinalizationRegistry(() => {}), () => 0, 1)
  const before = timeoutsAlive()
  for (let i = 0; i < 500; i++) await perRequest(i)
  await collect(new FinalizationRegistry(() => {}), () => 0, 1)
  const after = timeoutsAlive()
  t.true(after - before < 50, `${after - before} more Timeout objects after 500 requests (${before} before)`)
})

test('a Redlock with an operation in flight is kept until it settles', async (t) => {
  const key = resource(t)
  const holder = new Redlock([new Redis(servers[0].port)])
  const held = await holder.acquire([key], 5_000)
  let collected = 0
  const registry = new FinalizationRegistry(() => (collected += 1))
  const pending = (() => {
    const waiter = new Redlock([new Redis(servers[0].port)], { retryCount: 40, retryDelay: 50 })
    registry.register(waiter, 'waiter')
    return waiter.acquire([key], 1_000).then((l) => l.release())
  })()
  for (let i = 0; i < 5; i++) {
    globalThis.gc()
    await sleep(10)
  }
  t.is(collected, 0, 'still waiting: not collected')
  await held.release()
  await pending
  await holder.quit()
  t.is(await collect(registry, () => collected, 1), 1)
})

test('awaiting lock.attempts while the last votes are still to come keeps the process alive until they arrive', async (t) => {
  const five = await startServers(5)
  t.teardown(() => stopServers(five))
  // Two nodes frozen: the lock is won on the other three, and its stats wait for the two
  // to time out. Nothing else keeps the child's event loop alive meanwhile.
  five[3].pause()
  five[4].pause()
  const index = fileURLToPath(new URL('../index.js', import.meta.url))
  const code = `
    const { Redlock, Redis } = require(${JSON.stringify(index)})
    const ports = ${JSON.stringify(five.map((s) => s.port))}
    const redlock = new Redlock(ports.map((port) => new Redis({ port, commandTimeout: 500 })), { retryCount: 0 })
    redlock.acquire(['k'], 10000).then(async (lock) => {
      const stats = await lock.attempts[0]
      console.log('votes for', stats.votesFor.size, 'against', stats.votesAgainst.size)
      await lock.release()
      await redlock.quit()
    })`
  const out = await new Promise((resolve) =>
    execFile(process.execPath, ['-e', code], { timeout: 20_000 }, (e, stdout, stderr) => resolve({ code: e?.code ?? 0, stdout, stderr })),
  )
  t.is(out.stdout.trim(), 'votes for 3 against 2', out.stderr)
  t.is(out.code, 0)
})
