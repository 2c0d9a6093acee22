// The waiting line kept on the nodes, across processes: heads of different processes
// are served in the order their waits began, a release keeps the lock for the first of
// them (a newcomer cannot jump the line, even while that waiter is paused), and a waiter
// that died holds the lock back only until its ticket expires.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { TcpProxy } from '../scripts/tcp-proxy.mjs'
import { clientsFor, eventually, lib, resource, sleep, useServers, valuesOn } from './helpers.mjs'

const { Redlock, Redis, ExecutionError } = lib
const servers = useServers(test, 3)
const fixture = fileURLToPath(new URL('./fixtures/line-waiter.mjs', import.meta.url))

/** The tickets in `key`'s line on each server. */
const lineOn = (key) => Promise.all(servers.map((s) => s.command('ZRANGE', `{${key}}:redlock-rs:line`, '0', '-1')))

/** A waiter for `key` in a process of its own; `got` resolves when it holds the lock. */
function waiterProcess(t, key) {
  const child = spawn(process.execPath, [fixture, servers.map((s) => s.port).join(','), key], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  const got = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => String(d).includes('got') && resolve())
    child.on('exit', (code, signal) => reject(new Error(`the waiter exited (${code ?? signal}) without the lock`)))
  })
  got.catch(() => {})
  const exited = new Promise((resolve) => child.on('exit', resolve))
  return { child, got, exited }
}

/** Waits for a release up to 10 s, unless one is announced. */
const PATIENT = { retryCount: -1, retryDelay: 10_000, retryJitter: 0 }

/**
 * A waiter for `key` (held by another owner) in this process, `PATIENT`, that has taken its
 * place in the line on every server: its first attempt lost, it waits for a release, and
 * an announcement of one sends it to its second attempt, which takes that place. Its
 * acquire (`got`) and its ticket.
 */
async function patientWaiterInLine(t, key, options = {}) {
  const redlock = new Redlock(clientsFor(t, servers), PATIENT)
  const got = redlock.acquire([key], 10_000, options)
  got.catch(() => {})
  await eventually(async () => {
    await servers[0].command('PUBLISH', `redlock-rs:released:${key}`, 'some-release')
    return (await lineOn(key)).every((l) => l.length === 1)
  }, 10_000)
  const [ticket] = (await lineOn(key))[0]
  return { got, ticket, redlock }
}

/** A lock on a fresh key, and a waiter process that has taken its place in the line on every server. */
async function heldWithWaiterInLine(t) {
  const holder = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  const lock = await holder.acquire([key], 10_000)
  const waiter = waiterProcess(t, key)
  await eventually(async () => (await lineOn(key)).every((l) => l.length === 1), 10_000)
  return { key, lock, waiter }
}

test('heads of different processes get the lock in the order their waits began', async (t) => {
  const key = resource(t)
  const holder = new Redlock(clientsFor(t, servers))
  const held = await holder.acquire([key], 10_000)
  const order = []
  const waiters = [0, 1, 2].map(async (i) => {
    // Each Redlock is a process of its own as far as the lock is concerned (its own local line).
    const redlock = new Redlock(clientsFor(t, servers), { retryCount: -1, retryDelay: 20, retryJitter: 0 })
    await sleep(i * 150) // each has waited (and taken its place in the line) before the next arrives
    const lock = await redlock.acquire([key], 10_000)
    order.push(i)
    await sleep(30)
    await lock.release()
  })
  await eventually(async () => (await lineOn(key)).every((l) => l.length === 3), 10_000)
  await held.release()
  await Promise.all(waiters)
  // Without the line every release wakes all three, and the fastest takes the lock.
  t.deepEqual(order, [0, 1, 2])
  await eventually(async () => (await lineOn(key)).every((l) => l.length === 0))
  t.deepEqual(await valuesOn(servers, key), [null, null, null])
})

test('a release keeps the lock for the first waiter in line, even while it is paused: a newcomer cannot take it', async (t) => {
  const { key, lock, waiter } = await heldWithWaiterInLine(t)
  const [ticket] = (await lineOn(key))[0]
  waiter.child.kill('SIGSTOP')
  await lock.release()
  t.deepEqual(await valuesOn(servers, key), Array(3).fill(`redlock-rs:reserved:${ticket}`))
  const newcomer = new Redlock(clientsFor(t, servers), { retryCount: 0 })
  const error = await t.throwsAsync(newcomer.acquire([key], 5_000), { instanceOf: ExecutionError })
  t.is(error.reason, 'locked')
  waiter.child.kill('SIGCONT')
  await waiter.got
  await waiter.exited
  t.deepEqual(await valuesOn(servers, key), [null, null, null], 'released by the waiter')
  t.deepEqual(await lineOn(key), [[], [], []], 'its ticket left the line')
})

test('a waiter that dies first in line holds the released lock back only until its ticket expires', async (t) => {
  const { key, lock, waiter } = await heldWithWaiterInLine(t)
  waiter.child.kill('SIGKILL')
  await waiter.exited
  await lock.release()
  const values = await valuesOn(servers, key)
  t.true(values.every((v) => v?.startsWith('redlock-rs:reserved:')), `kept for the dead waiter: ${values}`)
  const next = new Redlock(clientsFor(t, servers), { retryCount: -1, retryDelay: 50 })
  const got = await next.acquire([key], 5_000)
  // Held on a quorum at least: each node's reservation expires on its own clock, so an
  // attempt can land where two have expired and the third not yet (it votes against).
  const held = await valuesOn(servers, key)
  t.true(held.filter((v) => v === got.value).length >= 2, `held on a quorum: ${held}`)
  t.true(held.every((v) => v === got.value || v === null || v.startsWith('redlock-rs:reserved:')), `${held}`)
  await got.release()
  // A reservation left on a node expires on its own.
  await eventually(async () => (await valuesOn(servers, key)).every((v) => v === null))
  t.deepEqual(await valuesOn(servers, key), [null, null, null])
  // The new waiter's ticket leaves in the background once its wait is over.
  await eventually(async () => (await lineOn(key)).every((l) => l.length === 0))
  t.deepEqual(await lineOn(key), [[], [], []], 'the dead ticket expired, the new one left')
})

test("an attempt lost to another owner frees what it took where it is alone in the line, and retries when that owner's release is announced", async (t) => {
  // The waiter is first in line on every server. The holder's release frees one server
  // only (another owner holds the other two): it keeps that one for the waiter, which then
  // loses 1 to 2. Alone in the line there, the cleanup of that attempt frees the server
  // (kept for the waiter's own ticket, it would sit reserved while the waiter sleeps:
  // with the lock held on a quorum by another owner the waiter waits for that owner's
  // release, or its retry delay, 10 s here). Announced, that release wakes the waiter at
  // once, and it takes every server.
  const holder = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  const lock = await holder.acquire([key], 10_000)
  const { got, ticket } = await patientWaiterInLine(t, key)
  // Another owner on two of the three servers.
  for (const s of servers.slice(1)) await s.command('SET', key, 'another-owner', 'PX', '10000')
  await lock.release().catch(() => {}) // not ours on a quorum any more: it may fail
  // The waiter's attempt after the release takes the first server (kept for it), loses,
  // and frees it again; its ticket stays first in the line there.
  await eventually(async () => (await valuesOn(servers, key))[0] === null, 5_000)
  t.deepEqual((await lineOn(key))[0], [ticket])
  await sleep(100)
  t.is((await valuesOn(servers, key))[0], null, 'nothing sits reserved for the sleeping waiter')
  const gone = Date.now()
  for (const s of servers.slice(1)) {
    await s.command('DEL', key)
    await s.command('PUBLISH', `redlock-rs:released:${key}`, 'another-owner')
  }
  const acquired = await got
  t.true(Date.now() - gone < 5_000, `acquired ${Date.now() - gone} ms after the other owner left`)
  await acquired.release()
})

test('two heads that split an even vote after a release: the older one gets the lock in milliseconds, not after a retry delay', async (t) => {
  // Two nodes. A reaches the first at once and the second 20 ms late each way; B the
  // first 3 ms late each way and the second at once. After the release both heads race:
  // each takes its near node and loses on the other. B's cleanup on the second node runs
  // before A's command gets there, with only B's ticket in that node's line, and A's own
  // cleanup keeps the first node for A: the heads must still sort it out (a version that
  // waited for a release after a kept cleanup left the nodes reserved for A and for B,
  // unannounced, for a whole retry delay: 1 s here).
  const nodes = servers.slice(0, 2)
  const proxied = async (delays) =>
    Promise.all(
      nodes.map(async (s, i) => {
        if (!delays[i]) return s.port
        const proxy = await new TcpProxy(s.port).start()
        proxy.mode = 'delay'
        proxy.delayMs = delays[i]
        t.teardown(() => proxy.stop())
        return proxy.port
      }),
    )
  const redlockOn = (ports) => {
    const redlock = new Redlock(ports.map((port) => new Redis({ port })), { retryCount: 20, retryDelay: 1_000, retryJitter: 0 })
    t.teardown(() => redlock.quit())
    return redlock
  }
  const holder = redlockOn(nodes.map((s) => s.port))
  const a = redlockOn(await proxied([0, 20]))
  const b = redlockOn(await proxied([3, 0]))
  // The split needs A's command to reach the first node before B's, a 3 ms race: on a
  // loaded machine B sometimes wins both nodes outright (its first attempt after the
  // release, no split), which the line allows (neither had a ticket yet), and A then
  // waits out B's lock. Such a round does not test the split, so it is run again, up to
  // five rounds, and at least one must split.
  let splits = 0
  for (let round = 0; round < 5 && splits === 0; round++) {
    const key = `${resource(t)}:${round}`
    const held = await holder.acquire([key], 10_000)
    const gotA = a.acquire([key], 5_000)
    await sleep(15) // A's wait began first: A is first in the nodes' line
    const gotB = b.acquire([key], 5_000)
    gotB.catch(() => {})
    await sleep(300) // both lost their first attempt and wait for the release
    const released = Date.now()
    await held.release()
    const first = await Promise.race([gotA.then(() => 'A'), gotB.then(() => 'B')])
    const outright = first === 'B' && (await gotB).attempts.length === 2
    if (outright) {
      t.log(`round ${round}: B won outright, without a split`)
      await (await gotB).release()
      await (await gotA).release()
      continue
    }
    splits++
    const lock = await gotA
    t.true(Date.now() - released < 500, `A acquired ${Date.now() - released} ms after the release`)
    await lock.release()
    await (await gotB).release()
  }
  t.is(splits, 1, 'no round split the vote')
})

test('a lock that expires (its holder never released it) is kept for the first waiter in line, who is told at once', async (t) => {
  // The first waiter sleeps 10 s between retries. A waiter behind it, retrying every 50 ms,
  // is the first to find the expired lock free: it keeps it for the first waiter's ticket
  // and announces that, instead of being told to wait while the lock sits free for the
  // first waiter's whole retry delay.
  const holder = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  const lock = await holder.acquire([key], 1_500) // never released
  const { got, ticket } = await patientWaiterInLine(t, key)
  const behind = new Redlock(clientsFor(t, servers), { retryCount: -1, retryDelay: 50, retryJitter: 0 })
  const second = behind.acquire([key], 1_000)
  second.catch(() => {})
  const first = await got
  const late = Date.now() - lock.expiration
  t.true(late < 2_000, `the first waiter got the lock ${late} ms after it expired (its retry delay: 10 s)`)
  t.false(ticket === undefined)
  await first.release()
  await (await second).release()
})

test('a waiter whose Redlock quits while it is first in line takes its ticket out of the lines: the next waiter gets the lock at the release', async (t) => {
  const holder = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  const lock = await holder.acquire([key], 10_000)
  const { got, redlock } = await patientWaiterInLine(t, key)
  const next = new Redlock(clientsFor(t, servers), PATIENT)
  const second = next.acquire([key], 5_000)
  second.catch(() => {})
  await sleep(100)
  await redlock.quit()
  t.is((await t.throwsAsync(got, { instanceOf: ExecutionError })).reason, 'aborted')
  t.deepEqual(await lineOn(key), [[], [], []], 'its ticket left every line')
  const released = Date.now()
  await lock.release()
  const taken = await second
  t.true(Date.now() - released < 2_000, `the next waiter got the lock ${Date.now() - released} ms after the release`)
  await taken.release()
})

test('a waiter that leaves the line while the lock is kept for it frees the lock and wakes the others', async (t) => {
  // W waits in line; the lock is then kept for W's ticket, unannounced (W sleeps on), and
  // W gives up. Its leave must free the lock and say so to the waiters without a ticket:
  // it used to announce the reservation of the leaving ticket, which wakes nobody, and
  // they slept their whole retry delay (10 s here) with the lock free.
  const key = resource(t)
  const holder = new Redlock(clientsFor(t, servers))
  await holder.acquire([key], 10_000)
  const giveUp = new AbortController()
  const { got: wGot, ticket } = await patientWaiterInLine(t, key, { signal: giveUp.signal })
  // B arrives now: its first attempt finds the lock held, and it waits without a ticket.
  const b = new Redlock(clientsFor(t, servers), PATIENT)
  const bGot = b.acquire([key], 10_000)
  bGot.catch(() => {})
  await sleep(300)
  t.deepEqual(await lineOn(key), [[ticket], [ticket], [ticket]], 'B has no ticket yet')
  for (const s of servers) await s.command('SET', key, `redlock-rs:reserved:${ticket}`, 'PX', '10000')
  const left = Date.now()
  giveUp.abort()
  await t.throwsAsync(wGot)
  const lock = await bGot
  t.true(Date.now() - left < 5_000, `B took the lock ${Date.now() - left} ms after W left`)
  await lock.release()
})
