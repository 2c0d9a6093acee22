// Waiting for a held lock: first come first served within a process, woken by the
// holder's release (not by polling), and no subscription left behind.
import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { clientsFor, lib, resource, sleep, useServers, valuesOn } from './helpers.mjs'

const { Redis, Redlock } = lib
const servers = useServers(test, 3)
// A retry delay far longer than the tests: only a release announcement can explain a
// waiter that gets the lock quickly.
const slowPolling = { retryCount: 3, retryDelay: 4_000, retryJitter: 0 }

/** A lock held by one Redlock, and another Redlock's acquire of it, under way. */
async function heldAndAwaited(t) {
  const holder = new Redlock(clientsFor(t, servers))
  const waiter = new Redlock(clientsFor(t, servers), slowPolling)
  const key = resource(t)
  const lock = await holder.acquire([key], 5_000)
  return { key, lock, waiter, waiting: waiter.acquire([key], 5_000) }
}

test('waiters of one process get the lock in arrival order, as soon as it is released', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), slowPolling)
  const key = resource(t)
  const first = await redlock.acquire([key], 5_000)
  const order = []
  const started = Date.now()
  const waiters = [0, 1, 2, 3, 4].map(async (i) => {
    await sleep(i * 20) // arrive in order
    const lock = await redlock.acquire([key], 5_000)
    order.push(i)
    await sleep(10)
    await lock.release()
  })
  await sleep(150)
  await first.release()
  await Promise.all(waiters)
  t.deepEqual(order, [0, 1, 2, 3, 4])
  t.true(Date.now() - started < 3_000, 'handed over on release, not after a 4 s retry delay')
})

test('a waiter in another Redlock instance is woken by the release', async (t) => {
  const { lock, waiting } = await heldAndAwaited(t)
  await sleep(300) // the waiter failed once and is now waiting
  const released = Date.now()
  await lock.release()
  const got = await waiting
  t.true(Date.now() - released < 2_000, `got it ${Date.now() - released} ms after the release`)
  t.true(got.attempts.length >= 2)
  await got.release()
})

test("waiters still queued behind their process's head when the retry window ends reject with their own attempt's votes", async (t) => {
  const holder = new Redlock(clientsFor(t, servers))
  const waiters = new Redlock(clientsFor(t, servers), { retryCount: 2, retryDelay: 50, retryJitter: 0 })
  const key = resource(t)
  const lock = await holder.acquire([key], 5_000)
  const failures = await Promise.all([0, 1, 2].map(() => waiters.acquire([key], 1_000).catch((e) => e)))
  for (const e of failures) {
    t.is(e.reason, 'locked')
    t.true(e.attempts.length >= 1, 'at least one attempt')
    const stats = await e.attempts.at(-1)
    t.is(stats.votesAgainst.size, 3, "the holder's nodes voted against")
  }
  t.is(failures[0].attempts.length, 3, 'the head: retryCount + 1 attempts')
  await lock.release()
})

test('quit() closes the pub/sub connection of a Redlock that waited, as the others: nothing of it stays on the server', async (t) => {
  const [server] = await startServers(1)
  t.teardown(() => stopServers([server]))
  const clients = async () => (await server.command('CLIENT', 'LIST')).trim().split('\n').length - 1 // not this one
  for (let i = 0; i < 5; i++) {
    const holder = new Redlock([new Redis(server.port)])
    const waiter = new Redlock([new Redis(server.port)], slowPolling)
    const key = resource(t)
    const lock = await holder.acquire([key], 5_000)
    const waiting = waiter.acquire([key], 5_000)
    await sleep(100) // the waiter listens for the release
    await lock.release()
    await (await waiting).release()
    await Promise.all([holder.quit(), waiter.quit()])
  }
  let left = await clients()
  for (let i = 0; i < 50 && left > 0; i++) {
    await sleep(20)
    left = await clients()
  }
  t.is(left, 0, 'no connection of the quit Redlocks is left')
  t.deepEqual(await server.command('PUBSUB', 'CHANNELS', '*'), [])
})

test('subscriptions end once nobody waits', async (t) => {
  const { key, lock, waiting, waiter } = await heldAndAwaited(t)
  await sleep(300)
  const channel = `redlock-rs:released:${key}`
  const subscribers = async () => (await Promise.all(servers.map((s) => s.command('PUBSUB', 'NUMSUB', channel)))).map((r) => r[1])
  t.deepEqual(await subscribers(), [1, 1, 1], 'the waiter listens on every node')
  await lock.release()
  await (await waiting).release()
  // Kept for a 2 s grace period (a contended lock empties its line at every hand-over).
  await sleep(2_600)
  await waiter.acquire([resource(t)], 1_000).then((l) => l.release()) // lets expired lines go
  await sleep(200)
  t.deepEqual(await subscribers(), [0, 0, 0])
})

// Serial (before the others): it kills every pub/sub connection on the servers.
test.serial('a waiter whose pub/sub connection was killed subscribes again and is still woken', async (t) => {
  const { key, lock, waiting } = await heldAndAwaited(t)
  const channel = `redlock-rs:released:${key}`
  // Polled rather than slept for, so that a loaded machine only makes it slower; both
  // waits end well before the retry delay (4 s), which would also make it subscribe.
  const subscribedWithin = async (ms) => {
    const deadline = Date.now() + ms
    for (;;) {
      const counts = await Promise.all(servers.map((s) => s.command('PUBSUB', 'NUMSUB', channel)))
      if (counts.every((r) => r[1] === 1) || Date.now() > deadline) return counts.map((r) => r[1])
      await sleep(20)
    }
  }
  t.deepEqual(await subscribedWithin(2_000), [1, 1, 1], 'subscribed on every node')
  const killed = Date.now()
  for (const s of servers) await s.command('CLIENT', 'KILL', 'TYPE', 'pubsub')
  // Woken by the loss, it retried and subscribed again.
  t.deepEqual(await subscribedWithin(2_000), [1, 1, 1], 'subscribed again on every node')
  t.true(Date.now() - killed < 3_000, 'before the retry delay')
  const released = Date.now()
  await lock.release()
  const got = await waiting
  t.true(Date.now() - released < 2_000, `got it ${Date.now() - released} ms after the release`)
  await got.release()
})

/** Every command `server` receives, as MONITOR lines, until the test ends. */
async function monitor(t, server) {
  const net = await import('node:net')
  const socket = net.connect(server.port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const seen = { log: '' }
  socket.on('data', (d) => (seen.log += d))
  socket.write('MONITOR\r\n')
  await new Promise((r) => socket.once('data', r))
  return seen
}

/** Five waiters behind a holder; each holder releases in turn. Which releases were hand-overs (one EVALSHA carrying the old and the new value, seen by MONITOR)? */
async function handOvers(t, redlock, key) {
  const first = await redlock.acquire([key], 5_000)
  const seen = await monitor(t, servers[0])
  const locks = [first]
  const waiters = [0, 1, 2, 3, 4].map(async (i) => {
    await sleep(i * 20)
    return redlock.acquire([key], 5_000)
  })
  await sleep(150)
  for (let i = 0; i < 5; i++) {
    await sleep(20) // the next waiter is at the head of the line, offering to take over
    await locks[i].release()
    locks.push(await waiters[i])
  }
  await locks[5].release()
  const expiring = locks[1].expiration - Date.now()
  t.true(expiring < 5_000, `the handed lock's validity counts from the hand-over (${expiring} ms)`)
  t.deepEqual(await valuesOn(servers, key), [null, null, null])
  return locks.slice(0, 5).map((l, i) => seen.log.includes(`"${l.value}" "${locks[i + 1].value}"`))
}

/** A connection listening for `key`'s release announcements on every server, as the waiters of another process do. */
async function listenElsewhere(t, key) {
  const net = await import('node:net')
  for (const server of servers) {
    const socket = net.connect(server.port, '127.0.0.1')
    t.teardown(() => socket.destroy())
    socket.write(`SUBSCRIBE redlock-rs:released:${key}\r\n`)
    await new Promise((r) => socket.once('data', r))
  }
}

test.serial('a release hands the lock over to the next waiter of the process in one step, at most 3 times in a row while another process listens', async (t) => {
  const key = resource(t)
  await listenElsewhere(t, key)
  // The fourth release in a row goes to the nodes (a RELEASE that other processes hear), then hand-overs again.
  t.deepEqual(await handOvers(t, new Redlock(clientsFor(t, servers), slowPolling), key), [true, true, true, false, true])
})

test.serial('with no other process listening, every release is a hand-over', async (t) => {
  const key = resource(t)
  t.deepEqual(await handOvers(t, new Redlock(clientsFor(t, servers), slowPolling), key), [true, true, true, true, true])
})

test.serial('a line that forms again while the lock is held in this process waits for the hand-over, without an attempt bound to fail', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), slowPolling)
  const key = resource(t)
  const first = await redlock.acquire([key], 5_000)
  const second = redlock.acquire([key], 5_000)
  await sleep(300) // failed once, now waiting for the release
  await first.release()
  const held = await second // handed over: the line is empty, the lock held here
  t.is(held.attempts.length, 2, 'the first waiter found the lock held once')
  const third = redlock.acquire([key], 5_000)
  await sleep(300)
  const released = await held.release()
  // The release's own stats resolve too (the late moves go to the new holder only).
  const releaseStats = await Promise.race([released.attempts[0], sleep(3_000).then(() => null)])
  t.truthy(releaseStats, "the release's stats resolved")
  t.true(releaseStats.votesFor.size >= 2)
  const next = await third
  t.is(next.attempts.length, 1, 'handed over, with no attempt before')
  // Decided on a quorum; its stats resolve with every node's move, as an attempt's do.
  t.is((await next.attempts[0]).votesFor.size, 3)
  t.deepEqual(await valuesOn(servers, key), [next.value, next.value, next.value])
  // Released, the lock is no longer counted as held here: the next acquire tries at once.
  await next.release()
  const free = await redlock.acquire([key], 5_000)
  t.is(free.attempts.length, 1)
  await free.release()
})

test.serial('two workers passing a lock back and forth do not keep a waiter of another process out: hand-overs in a row stay bounded when their line empties', async (t) => {
  const key = resource(t)
  const passing = new Redlock(clientsFor(t, servers), slowPolling)
  const other = new Redlock(clientsFor(t, servers), { retryCount: -1, retryDelay: 200, retryJitter: 0 })
  let stop = false
  let passes = 0
  const workers = [0, 1].map(async () => {
    while (!stop) {
      const lock = await passing.acquire([key], 5_000)
      passes += 1
      await sleep(5)
      await lock.release()
    }
  })
  await sleep(200)
  const before = passes
  const started = Date.now()
  const lock = await Promise.race([other.acquire([key], 5_000), sleep(5_000).then(() => null)])
  const waited = Date.now() - started
  stop = true
  if (lock) await lock.release()
  await Promise.all(workers)
  t.truthy(lock, `the other process' waiter never got the lock (${passes - before} passes meanwhile)`)
  t.true(passes - before < 40, `${passes - before} passes in ${waited} ms before the other process' turn`)
})

test.serial('a line that forms again after the lock held in this process expired tries at once', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), slowPolling)
  const key = resource(t)
  const first = await redlock.acquire([key], 5_000)
  const second = redlock.acquire([key], 300)
  await sleep(300)
  await first.release()
  await second // handed over, valid for about 300 ms, never released
  await sleep(400)
  const started = Date.now()
  const next = await redlock.acquire([key], 5_000)
  // Waiting for a release that never comes would take the 4 s retry delay.
  t.true(Date.now() - started < 2_000, `${Date.now() - started} ms`)
  t.is(next.attempts.length, 1)
  await next.release()
})

test.serial('a hand-over that cannot move the lock (its key was stolen) leaves nothing of the waiter behind', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), { retryCount: 3, retryDelay: 100, retryJitter: 0 })
  const key = resource(t)
  const held = await redlock.acquire([key], 5_000)
  const waiting = redlock.acquire([key], 5_000)
  await sleep(50)
  for (const s of servers) await s.command('SET', key, 'thief', 'PX', 5_000)
  await held.release()
  const error = await t.throwsAsync(waiting, { instanceOf: lib.ExecutionError })
  t.is(error.reason, 'locked', 'the waiter went on retrying and found the thief (no internal error)')
  t.deepEqual(await valuesOn(servers, key), ['thief', 'thief', 'thief'])
  for (const s of servers) await s.command('DEL', key)
})

/** Messages announced on `key`'s release channel of `server`, until the test ends. */
async function announcements(t, server, key) {
  const net = await import('node:net')
  const socket = net.connect(server.port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const seen = { log: '' }
  socket.write(`SUBSCRIBE redlock-rs:released:${key}\r\n`)
  await new Promise((r) => socket.once('data', r))
  socket.on('data', (d) => (seen.log += d))
  return seen
}

for (const [label, holders, announced] of [
  ['held by one owner on a quorum: the cleanup of a lost attempt is not announced', ['other', 'other'], false],
  ['split between owners: the cleanup of a lost attempt is announced (the lock may be free)', ['x', 'y'], true],
]) {
  test.serial(`${label}`, async (t) => {
    const key = resource(t)
    for (const [i, v] of holders.entries()) await servers[i].command('SET', key, v, 'PX', 5_000)
    const heard = await announcements(t, servers[2], key)
    const redlock = new Redlock(clientsFor(t, servers), { retryCount: 0 })
    const error = await t.throwsAsync(redlock.acquire([key], 5_000), { instanceOf: lib.ExecutionError })
    t.is(error.reason, 'locked')
    await sleep(200)
    t.deepEqual(await valuesOn(servers, key), [...holders, null], 'what the attempt set on the third node is gone')
    t.is(heard.log.includes('message'), announced)
    for (const s of servers) await s.command('DEL', key)
  })
}
