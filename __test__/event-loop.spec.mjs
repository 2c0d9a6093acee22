// Where the engine runs: on the JavaScript thread of each thread that uses the addon
// (driven by Node's event loop), or on an I/O thread with REDLOCK_RS_IO=thread. Both give
// the same locks, and neither keeps a process alive once its work is done.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { eventually, lib, resource, useServers, valuesOn } from './helpers.mjs'

const { Redlock, Redis } = lib
const servers = useServers(test, 3)
const fixtureFile = (name) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))

/** Runs a fixture in a process of its own with `env`; resolves with its output, rejects if it does not exit within 60 s. */
function runFixture(env, fixture = fixtureFile('io-mode.mjs')) {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [fixture, String(servers[0].port)], { env: { ...process.env, ...env }, timeout: 60_000 }, (e, out, err) =>
      e ? reject(new Error(`${e.message}\n${err}`)) : resolve(JSON.parse(out)),
    ),
  )
}

for (const [mode, env] of [
  ['the JavaScript thread (the default)', {}],
  ['an I/O thread (REDLOCK_RS_IO=thread)', { REDLOCK_RS_IO: 'thread' }],
]) {
  test(`on ${mode}: 80 contended critical sections, no overlap, and the process exits on its own`, async (t) => {
    t.deepEqual(await runFixture(env), { sections: 80, overlaps: 0 })
  })

  test(`on ${mode}: a worker terminated while it waits for a lock ends its acquire (it never takes the lock)`, async (t) => {
    t.deepEqual(await runFixture(env, fixtureFile('worker-terminated.mjs')), { held: false })
  })

  test(`on ${mode}: 3000 operations finishing together, more than one call of the callback carries, each settle once with their own results`, async (t) => {
    t.deepEqual(await runFixture(env, fixtureFile('big-batch.mjs')), {
      locks: 1500,
      distinctValues: 1500,
      validExpirations: 1500,
      lostReasons: ['locked'],
      lostVotesAgainst: 1500,
      released: 1500,
    })
  })
}

test('Redlocks in worker threads and in the main thread share one lock without overlap', async (t) => {
  const key = resource(t)
  const ports = servers.map((s) => s.port)
  const source = `
    const { parentPort, workerData } = require('node:worker_threads')
    const { Redlock, Redis } = require(${JSON.stringify(fileURLToPath(new URL('../index.js', import.meta.url)))})
    const redlock = new Redlock(workerData.ports.map((p) => new Redis(p)), { retryCount: -1, retryDelay: 20 })
    ;(async () => {
      const spans = []
      for (let i = 0; i < 30; i++) {
        const lock = await redlock.acquire([workerData.key], 2_000)
        const start = Date.now()
        await new Promise((r) => setTimeout(r, 1))
        spans.push([start, Date.now()])
        await lock.release()
      }
      await redlock.quit()
      parentPort.postMessage(spans)
    })()`
  const workers = [0, 1].map(
    () =>
      new Promise((resolve, reject) => {
        const w = new Worker(source, { eval: true, workerData: { ports, key } })
        w.once('message', resolve)
        w.once('error', reject)
      }),
  )
  const redlock = new Redlock(ports.map((p) => new Redis(p)), { retryCount: -1, retryDelay: 20 })
  const mine = []
  for (let i = 0; i < 30; i++) {
    const lock = await redlock.acquire([key], 2_000)
    const start = Date.now()
    await new Promise((r) => setTimeout(r, 1))
    mine.push([start, Date.now()])
    await lock.release()
  }
  await redlock.quit()
  // By start, then end: spans are in whole ms, and a section that starts in the ms the
  // previous one ended in (a hand-over under a millisecond) must sort after it.
  const spans = [mine, ...(await Promise.all(workers))].flat().sort((a, b) => a[0] - b[0] || a[1] - b[1])
  t.is(spans.length, 90)
  const overlapping = spans.filter((s, i) => i > 0 && s[0] < spans[i - 1][1])
  t.deepEqual(overlapping, [], 'no critical section starts before the previous one ended')
})

// More operations started in one go than wait for the event loop's next iteration: the
// ones started first leave at once (in a turn run inside the call that starts one too
// many), and every result still reaches JavaScript, once, at a later iteration.
test('a burst of 300 operations started in one go: every one settles once, with its own lock on every node', async (t) => {
  const key = resource(t)
  const redlock = new Redlock(servers.map((s) => new Redis(s.port)))
  const keys = Array.from({ length: 300 }, (_, i) => `${key}:${i}`)
  const locks = await Promise.all(keys.map((k) => redlock.acquire([k], 10_000)))
  t.is(new Set(locks.map((l) => l.value)).size, 300)
  for (const i of [0, 31, 32, 33, 150, 299]) {
    t.deepEqual(await valuesOn(servers, keys[i]), servers.map(() => locks[i].value), `key ${i}`)
  }
  const released = await Promise.all(locks.map((l) => l.release()))
  t.is(released.length, 300)
  // A release is done once a quorum released: the last server may still be reading the
  // burst's commands (Redis reads a client's input 16 KB at a time and serves the other
  // clients in between), so its last keys go a moment later.
  for (const i of [0, 150, 299]) {
    await eventually(async () => (await valuesOn(servers, keys[i])).every((v) => v === null))
  }
  await redlock.quit()
})

test('a burst of 100 waiters on one key started in one go: each holds it in turn, without overlap', async (t) => {
  const key = resource(t)
  const redlock = new Redlock(servers.map((s) => new Redis(s.port)), { retryCount: -1, retryDelay: 20 })
  const memory = new Redlock([new lib.MemoryStore()], { retryCount: -1, retryDelay: 20 })
  for (const lock of [redlock, memory]) {
    let holders = 0
    let most = 0
    const sections = await Promise.all(
      Array.from({ length: 100 }, async () => {
        const l = await lock.acquire([key], 10_000)
        most = Math.max(most, ++holders)
        await new Promise((r) => setImmediate(r))
        holders--
        await l.release()
        return 1
      }),
    )
    t.is(sections.length, 100)
    t.is(most, 1)
  }
  await redlock.quit()
  await memory.quit()
})

// Operations that finish without waiting for I/O (a MemoryStore's) used to keep the event
// loop in its timers phase for as long as a loop of them ran: a stop flag set by a timer
// was never seen.
test('a loop of in-memory locks leaves the event loop its turns: timers and immediates run meanwhile', async (t) => {
  const redlock = new Redlock([new lib.MemoryStore()])
  let stop = false
  let immediates = 0
  const tick = () => {
    immediates++
    if (immediates < 3) setImmediate(tick)
  }
  setImmediate(tick)
  setTimeout(() => (stop = true), 50)
  const started = Date.now()
  let cycles = 0
  // Until both the timer and a few immediates ran (or 20 s, the old behaviour's outcome).
  while (!(stop && immediates >= 3) && Date.now() - started < 20_000) {
    await (await redlock.acquire([`${resource(t)}`], 10_000)).release()
    cycles++
  }
  t.true(stop, `the timer ran (after ${cycles} cycles)`)
  t.true(immediates >= 3, `setImmediate callbacks ran (${immediates})`)
  await redlock.quit()
})

// A process whose main thread never loads the addon: each worker that loads it is its only
// user. The second such worker used to crash the process (SIGSEGV in the allocator's thread
// set-up, mimalloc v3, when the addon's module registration ran on the new thread).
test('worker threads that load the addon one after another, with the main thread never loading it, run and exit', async (t) => {
  const addon = fileURLToPath(new URL('../index.js', import.meta.url))
  const source = `
    const { Worker } = require('node:worker_threads')
    ;(async () => {
      for (let i = 0; i < 3; i++) {
        const code = await new Promise((resolve, reject) => {
          const w = new Worker(${JSON.stringify(`
            const { parentPort } = require('node:worker_threads')
            const { Redlock, MemoryStore } = require(${JSON.stringify(addon)})
            const redlock = new Redlock([new MemoryStore()])
            redlock.acquire(['w'], 1000).then((l) => l.release()).then(() => redlock.quit()).then(() => parentPort.postMessage('ok'))
          `)}, { eval: true })
          w.once('message', (m) => process.stdout.write(m + '\\n'))
          w.once('error', reject)
          w.once('exit', resolve)
        })
        if (code !== 0) throw new Error('worker exited with ' + code)
      }
    })()`
  const out = await new Promise((resolve, reject) =>
    execFile(process.execPath, ['-e', source], { timeout: 60_000 }, (e, stdout, stderr) =>
      e ? reject(new Error(`${e.message} (signal ${e.signal})\n${stderr}`)) : resolve(stdout),
    ),
  )
  t.is(out, 'ok\nok\nok\n')
})
