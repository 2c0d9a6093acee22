// node-redlock v5's API (acquire / release / extend / using, Lock, errors, events), with
// native clients and with ioredis and node-redis clients passed in, on 1, 3 and 5 servers.
import { createRequire } from 'node:module'

import test from 'ava'

import Redlock, { ExecutionError, Lock, LockLostError, MemoryStore, Redis, RedisJsClient, ResourceLockedError } from '../index.js'
import { RedisServer, rawCommand } from '../scripts/redis-servers.mjs'
import { resource, sleep, useServers, valuesOn } from './helpers.mjs'

const require = createRequire(import.meta.url)
const IORedis = require('ioredis')
const { createClient } = require('redis')
const redis4 = require('redis4')

const servers = useServers(test, 5)

/** Client factories: the same test bodies run with each. JS clients are never connected. */
const kinds = {
  native: (list) => list.map((s, i) => (i % 2 ? new RedisJsClient({ url: s.url }) : new Redis(s.port, '127.0.0.1'))),
  ioredis: (list) => list.map((s) => new IORedis({ port: s.port, host: '127.0.0.1', lazyConnect: true, connectionName: 'js-client' })),
  'node-redis v5': (list) => list.map((s) => createClient({ url: s.url, name: 'js-client' })),
  'node-redis v4': (list) => list.map((s) => redis4.createClient({ url: s.url, name: 'js-client' })),
}

function redlockOf(t, kind, list, settings) {
  const clients = kinds[kind](list)
  const redlock = new Redlock(clients, settings)
  t.teardown(() => redlock.quit())
  return { redlock, clients }
}

const isHex128 = (v) => typeof v === 'string' && /^[0-9a-f]{32}$/.test(v)

const lifecycle = test.macro({
  async exec(t, kind, n) {
    const list = servers.slice(0, n)
    const { redlock, clients } = redlockOf(t, kind, list)
    const key = resource(t)
    const before = Date.now()
    const lock = await redlock.acquire([key], 10_000)
    t.true(lock instanceof Lock)
    t.is(lock.redlock, redlock)
    t.deepEqual(lock.resources, [key])
    t.true(isHex128(lock.value))
    // expiration = decision time + validity, validity = ttl - elapsed - drift (102 ms here)
    t.true(lock.expiration <= Date.now() + 10_000 - 102 && lock.expiration > before + 9_000, `${lock.expiration - before}`)
    t.is(lock.attempts.length, 1)
    const stats = await lock.attempts[0]
    t.is(stats.membershipSize, n)
    t.is(stats.quorumSize, Math.floor(n / 2) + 1)
    t.true(stats.votesFor.size >= stats.quorumSize)
    for (const c of stats.votesFor) t.true(clients.includes(c), 'votes are keyed by the clients passed in')
    t.is(stats.votesAgainst.size, 0)
    t.true((await valuesOn(list, key)).filter((v) => v === lock.value).length >= stats.quorumSize)

    // Another instance is refused, with ResourceLockedError votes keyed by its clients.
    const other = redlockOf(t, kind, list, { retryCount: 0 })
    const err = await t.throwsAsync(other.redlock.acquire([key], 2_000), { instanceOf: ExecutionError })
    t.is(err.message, 'The operation was unable to achieve a quorum during its retry window.')
    // As node-redlock's, the message is an own enumerable field: JSON loggers keep it.
    t.is(JSON.parse(JSON.stringify(err)).message, err.message)
    t.is({ ...err }.message, err.message)
    t.is(err.attempts.length, 1)
    const refused = await err.attempts[0]
    t.true(refused.votesAgainst.size >= refused.quorumSize)
    for (const [c, e] of refused.votesAgainst) {
      t.true(other.clients.includes(c))
      // node-redlock's clients are a Set: its reads work on ours too.
      t.true(other.redlock.clients.has(c))
      t.is(other.redlock.clients.size, other.clients.length)
      t.true(e instanceof ResourceLockedError)
      t.is(e.message, 'The operation was applied to: 0 of the 1 requested resources.')
      t.is(JSON.parse(JSON.stringify(e)).message, e.message)
    }

    // extend: a new Lock, the old one invalidated, the TTL reset on the servers.
    await sleep(50)
    const extended = await lock.extend(20_000)
    t.not(extended, lock)
    t.is(lock.expiration, 0)
    t.is(extended.value, lock.value)
    t.true(extended.expiration > Date.now() + 15_000)
    const pttls = await Promise.all(list.map((s) => s.command('PTTL', key)))
    t.true(pttls.filter((p) => p > 10_000).length >= stats.quorumSize, `${pttls}`)

    // release: keys gone, result with attempts and start.
    const result = await extended.release()
    t.is(extended.expiration, 0)
    t.is(result.attempts.length, 1)
    t.is(typeof result.start, 'number')
    t.true((await result.attempts[0]).votesFor.size >= stats.quorumSize)
    t.deepEqual(await valuesOn(list, key), Array(n).fill(null))

    // using: held during the routine, released after.
    const value = await redlock.using([key], 1_000, async (signal) => {
      t.false(signal.aborted)
      t.true((await valuesOn(list, key)).filter(isHex128).length >= stats.quorumSize)
      return 'done'
    })
    t.is(value, 'done')
    t.deepEqual(await valuesOn(list, key), Array(n).fill(null))
  },
  title: (_, kind, n) => `acquire, extend, release and using with ${kind} clients on ${n} server${n > 1 ? 's' : ''}`,
})

for (const kind of Object.keys(kinds)) {
  for (const n of [1, 3, 5]) test(lifecycle, kind, n)
}

test('JS clients are read for their options, never used for lock traffic and never closed', async (t) => {
  const js = new IORedis({ port: servers[0].port, host: '127.0.0.1', lazyConnect: true, connectionName: 'js-client' })
  const nr = createClient({ url: servers[1].url, name: 'js-client' })
  const redlock = new Redlock([js, nr, new Redis(servers[2].port)])
  const lock = await redlock.acquire([resource(t)], 1_000)
  await lock.release()
  await redlock.quit()
  for (const s of servers.slice(0, 2)) {
    t.false((await s.command('CLIENT', 'LIST')).includes('name=js-client'), 'no connection from the JS clients')
  }
  t.is(js.status, 'wait', 'the ioredis client was not touched')
  t.false(nr.isOpen)
  // It still works after redlock.quit(): it was never closed.
  await js.connect()
  t.is(await js.ping(), 'PONG')
  js.disconnect()
})

test("Redlocks made per call over the same JS client share one connection (node-redlock's per-request pattern); one's quit() leaves it to the others", async (t) => {
  const own = new RedisServer()
  await own.start()
  t.teardown(() => own.stop())
  const connections = async () => (await rawCommand(own.port, ['CLIENT', 'LIST'])).split('\n').filter(Boolean).length - 1
  const js = new IORedis({ port: own.port, host: '127.0.0.1', lazyConnect: true })
  const nr = createClient({ url: `redis://127.0.0.1:${own.port}` })
  // Found by an audit: each Redlock opened connections of its own, closed only when it was
  // garbage collected; 1300 calls ran a process out of file descriptors (ulimit -n 1024).
  for (let i = 0; i < 300; i++) {
    const redlock = new Redlock([js, nr])
    await (await redlock.acquire([`${resource(t)}:${i % 3}`], 1_000)).release()
  }
  t.is(await connections(), 2, 'one connection per JS client')
  const [a, b] = [new Redlock([js]), new Redlock([js])]
  await (await a.acquire([resource(t)], 1_000)).release()
  await a.quit()
  const lock = await b.acquire([resource(t)], 1_000)
  t.is(lock.attempts.length, 1, 'the connection another Redlock shares stays open after one quits')
  await lock.release()
  t.is(await connections(), 2)
  await b.quit()
  // The per-call Redlocks never quit: they keep theirs, as node-redlock keeps the client.
  t.is(await connections(), 2)
  const last = new Redlock([js])
  await (await last.acquire([resource(t)], 1_000)).release()
  await last.quit()
  t.is(await connections(), 2)
  t.is(js.status, 'wait', 'the ioredis client was not touched')
})

test('a Redlock alone over a JS client closes its connection at quit()', async (t) => {
  const own = new RedisServer()
  await own.start()
  t.teardown(() => own.stop())
  const connections = async () => (await rawCommand(own.port, ['CLIENT', 'LIST'])).split('\n').filter(Boolean).length - 1
  const redlock = new Redlock([new IORedis({ port: own.port, host: '127.0.0.1', lazyConnect: true })])
  await (await redlock.acquire([resource(t)], 1_000)).release()
  t.is(await connections(), 1)
  await redlock.quit()
  t.is(await connections(), 0)
  const again = new Redlock(redlock.clients)
  await (await again.acquire([resource(t)], 1_000)).release()
  t.is(await connections(), 1, 'a new Redlock after the last quit() connects anew')
  await again.quit()
})

test('ioredis and node-redis connection options are carried over (db, password)', async (t) => {
  const { RedisServer } = await import('../scripts/redis-servers.mjs')
  const secured = await new RedisServer({ password: 's3cret' }).start()
  t.teardown(() => secured.stop())
  const io = new IORedis({ port: secured.port, password: 's3cret', db: 3, lazyConnect: true })
  const nr = createClient({ url: `redis://:s3cret@127.0.0.1:${secured.port}/4` })
  for (const [client, db] of [[io, '3'], [nr, '4']]) {
    const redlock = new Redlock([client])
    const key = resource(t)
    const lock = await redlock.acquire([key], 10_000) // long enough for a loaded machine
    t.is(await rawCommand(secured.port, ['GET', key], { password: 's3cret' }), null, 'not in db 0')
    const inDb = await new Promise((resolve, reject) => {
      const r = new Redis({ port: secured.port, password: 's3cret', db: Number(db) })
      r.get(key).then((v) => r.quit().then(() => resolve(v)), reject)
    })
    t.is(inDb, lock.value)
    await lock.release()
    await redlock.quit()
  }
})

test("an ioredis keyPrefix is honoured, as node-redlock's keys through that client carry it (both contend on the same keys)", async (t) => {
  const list = servers.slice(0, 3)
  const prefixed = list.map((s) => new IORedis({ port: s.port, host: '127.0.0.1', keyPrefix: 'app:', lazyConnect: true }))
  const redlock = new Redlock(prefixed, { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const key = resource(t)
  const lock = await redlock.acquire([key], 5_000)
  t.deepEqual(lock.resources, [key], 'the resources as given')
  t.deepEqual(await valuesOn(list, `app:${key}`), [lock.value, lock.value, lock.value])
  t.deepEqual(await valuesOn(list, key), [null, null, null])
  // Another process locking the prefixed key directly (node-redlock through such a client) contends.
  const plain = new Redlock(list.map((s) => new Redis(s.port)), { retryCount: 0 })
  t.teardown(() => plain.quit())
  await t.throwsAsync(plain.acquire([`app:${key}`], 1_000), { instanceOf: ExecutionError })
  const extended = await lock.extend(5_000)
  await extended.release()
  t.deepEqual(await valuesOn(list, `app:${key}`), [null, null, null])
  // The seed API and semaphores too.
  t.true(await redlock.acquireLock(key, 5_000))
  t.is(await list[0].command('GET', `app:${key}`) !== null, true)
  await redlock.releaseLock(key, true)
  const sem = await redlock.semaphore(key, 2).acquire(5_000)
  t.is((await list[0].command('KEYS', `*app:${key}*`)).length, 1, 'the permit key is named after the prefixed resource')
  await sem.release()
  // An empty name is still refused (the prefix alone is no resource).
  await t.throwsAsync(redlock.acquire([''], 1_000), { instanceOf: TypeError, message: /resources\[0\] must be a non-empty string/ })
  await t.throwsAsync(redlock.acquireLock('', 1_000), { instanceOf: TypeError })
  // Clients that disagree on the prefix are refused: which keys would be the lock?
  t.throws(() => new Redlock([prefixed[0], new IORedis({ port: list[1].port, lazyConnect: true })]), {
    instanceOf: TypeError,
    message: /same keyPrefix; got "app:", ""/,
  })
})

test('multi-resource locks are all or nothing', async (t) => {
  const list = servers.slice(0, 3)
  const { redlock } = redlockOf(t, 'native', list, { retryCount: 0 })
  const [a, b, c] = [resource(t), resource(t), resource(t)]
  const lock = await redlock.acquire([a, b], 10_000) // long enough for a loaded machine
  for (const k of [a, b]) t.true((await valuesOn(list, k)).every((v) => v === lock.value || v === null))
  // [b, c] conflicts on b: nothing of it is set, c included.
  const err = await t.throwsAsync(redlock.acquire([b, c], 1_000), { instanceOf: ExecutionError })
  const stats = await err.attempts[0]
  for (const e of stats.votesAgainst.values()) t.is(e.message, 'The operation was applied to: 0 of the 2 requested resources.')
  t.deepEqual(await valuesOn(list, c), [null, null, null])
  await lock.release()
  t.deepEqual([...(await valuesOn(list, a)), ...(await valuesOn(list, b))], Array(6).fill(null))
  const both = await redlock.acquire([b, c], 1_000)
  await both.release()
})

test('settings: node-redlock defaults, per-call overrides where 0 is valid, retryCount + 1 attempts', async (t) => {
  const list = servers.slice(0, 3)
  const { redlock } = redlockOf(t, 'native', list, { retryDelay: 1, retryJitter: 0 })
  t.is(redlock.settings.retryCount, 10)
  const key = resource(t)
  const lock = await redlock.acquire([key], 5_000)
  let err = await t.throwsAsync(redlock.acquire([key], 1_000), { instanceOf: ExecutionError })
  t.is(err.attempts.length, 11, 'default retryCount 10: 11 attempts')
  err = await t.throwsAsync(redlock.acquire([key], 1_000, { retryCount: 0 }), { instanceOf: ExecutionError })
  t.is(err.attempts.length, 1, 'retryCount 0 is honoured')
  err = await t.throwsAsync(redlock.acquire([key], 1_000, { retryCount: 3, retryDelay: 0 }), { instanceOf: ExecutionError })
  t.is(err.attempts.length, 4)
  const started = Date.now()
  await t.throwsAsync(redlock.acquire([key], 1_000, { retryCount: 2, retryDelay: 150, retryJitter: 0 }))
  t.true(Date.now() - started >= 290, 'retryDelay applies between attempts')
  await lock.release()
})

test('errors: bad durations, expired locks, bad resources', async (t) => {
  const { redlock } = redlockOf(t, 'native', servers.slice(0, 1))
  for (const d of [1.5, 0, -5, NaN, Infinity, '100', null]) {
    const e = await t.throwsAsync(redlock.acquire(['x'], d))
    t.true(e instanceof TypeError || e instanceof RangeError)
    t.true(e.message.startsWith('Duration must be an integer value in milliseconds.'), e.message)
  }
  await t.throwsAsync(redlock.acquire([], 1000), { instanceOf: TypeError, message: /resources/ })
  await t.throwsAsync(redlock.acquire('x', 1000), { instanceOf: TypeError, message: /resources/ })
  await t.throwsAsync(redlock.acquire(['a', ''], 1000), { instanceOf: TypeError, message: /resources\[1\]/ })
  await t.throwsAsync(redlock.acquire(['a'], 1000, { retryCount: 'x' }), { instanceOf: TypeError, message: /retryCount/ })
  await t.throwsAsync(redlock.release(null), { instanceOf: TypeError, message: /lock/ })
  const lock = await redlock.acquire([resource(t)], 100)
  await sleep(150)
  const err = await t.throwsAsync(lock.extend(1_000), { instanceOf: ExecutionError })
  t.is(err.message, 'Cannot extend an already-expired lock.')
  t.deepEqual(err.attempts, [])
  const ok = await redlock.acquire([resource(t)], 1_000)
  await t.throwsAsync(ok.extend(2.5), { message: /^Duration must be an integer value in milliseconds\./ })
  await ok.release()
  await t.throwsAsync(redlock.using(['x'], 500, async () => {}), { instanceOf: RangeError, message: /at least 100ms greater/ })
  await t.throwsAsync(redlock.using(['x'], 1.5, async () => {}), { message: /^Duration must be an integer value in milliseconds\./ })
  await t.throwsAsync(redlock.using(['x'], 1000), { instanceOf: TypeError, message: /routine/ })
})

test("events: 'error' for each failed vote; no crash without listeners", async (t) => {
  const list = servers.slice(0, 3)
  const { redlock: holder } = redlockOf(t, 'native', list)
  const { redlock } = redlockOf(t, 'native', list, { retryCount: 1, retryDelay: 1 })
  const key = resource(t)
  const lock = await holder.acquire([key], 2_000)
  const errors = []
  const clientErrors = []
  redlock.on('error', (e) => errors.push(e))
  redlock.on('clientError', (e) => clientErrors.push(e))
  const err = await t.throwsAsync(redlock.acquire([key], 1_000))
  let against = 0
  for (const a of err.attempts) against += (await a).votesAgainst.size
  t.is(errors.length, against)
  t.true(errors.every((e) => e instanceof ResourceLockedError))
  t.is(clientErrors.length, 0, 'a held resource is not a client error')
  // Nobody listening: still no unhandled 'error' event.
  const { redlock: quiet } = redlockOf(t, 'native', list, { retryCount: 0 })
  await t.throwsAsync(quiet.acquire([key], 1_000), { instanceOf: ExecutionError })
  t.is(await quiet.acquireLock(key, 1_000), false)
  await lock.release()
})

// Serial (here and below): these measure a lock's timing, which other tests running beside
// them on a loaded machine would stretch.
test.serial('using() keeps the lock through 3x its duration, extending with the settings given to it', async (t) => {
  const list = servers.slice(0, 3)
  const { redlock } = redlockOf(t, 'native', list)
  const { redlock: rival } = redlockOf(t, 'native', list, { retryCount: 0 })
  const key = resource(t)
  let gaps = 0
  let checks = 0
  let rivalWins = 0
  // The threshold is the using() call's own (the instance's is 500); the margin of 1.2 s
  // leaves room for a loaded machine.
  const result = await redlock.using([key], 1_500, { automaticExtensionThreshold: 1_200 }, async (signal) => {
    const end = Date.now() + 4_500
    while (Date.now() < end) {
      const values = await valuesOn(list, key)
      checks += 1
      if (values.filter(isHex128).length < 2) gaps += 1
      if (await rival.acquireLock(key, 1_000)) rivalWins += 1
      await sleep(25)
    }
    return signal.error
  })
  t.is(result, undefined, `never aborted (${result?.cause?.message}: ${result?.cause?.attempts?.length} attempts)`)
  t.true(checks > 10)
  t.is(gaps, 0, 'held on a quorum at every check')
  t.is(rivalWins, 0)
  t.deepEqual(await valuesOn(list, key), [null, null, null], 'released at the end')
})

test.serial('using() whose key is stolen: the signal aborts with LockLostError and the thief keeps its key', async (t) => {
  const list = servers.slice(0, 3)
  const { redlock } = redlockOf(t, 'native', list)
  const key = resource(t)
  const errors = []
  redlock.on('error', (e) => errors.push(e))
  // No retries: the refused extension reports at once, 2.4 s before the lock's expiration
  // (whose own timer would report the loss as 'expired', without the refusal as cause).
  const outcome = await redlock.using([key], 3_000, { automaticExtensionThreshold: 2_400, retryCount: 0 }, async (signal) => {
    for (const s of list) await s.command('SET', key, 'thief', 'PX', 10_000)
    const aborted = new Promise((resolve) => signal.addEventListener('abort', resolve))
    await Promise.race([aborted, sleep(6_000)])
    return { aborted: signal.aborted, error: signal.error, reason: signal.reason }
  })
  t.true(outcome.aborted)
  t.true(outcome.error instanceof LockLostError)
  t.is(outcome.reason, outcome.error)
  t.true(outcome.error.cause instanceof ExecutionError, `${outcome.error.reason}: ${outcome.error.cause}`)
  t.true(errors.some((e) => e instanceof LockLostError))
  t.deepEqual(await valuesOn(list, key), ['thief', 'thief', 'thief'], "the thief's key is untouched")
  for (const s of list) await s.command('DEL', key)
})

test.serial('using() with retryCount 0 still retries its extension while the lock has time left: a pause of two of three nodes shorter than that is survived', async (t) => {
  const list = servers.slice(0, 3)
  const clients = list.map((s) => new Redis({ port: s.port, commandTimeout: 100 }))
  const redlock = new Redlock(clients, { retryCount: 0, retryDelay: 50, retryJitter: 10 })
  t.teardown(() => redlock.quit())
  const key = resource(t)
  const outcome = await redlock.using([key], 1_500, async (signal, lock) => {
    // The extension is due 500 ms before expiry, at about 1000 ms; the nodes are back 250 ms later.
    await sleep(900)
    list[1].pause()
    list[2].pause()
    await sleep(250)
    list[1].resume()
    list[2].resume()
    await sleep(600)
    return { aborted: signal.aborted, reason: signal.error?.reason, expiration: lock.expiration }
  })
  t.false(outcome.aborted, `lost: ${outcome.reason}`)
  t.true(outcome.expiration > Date.now() - 1_000)
})

test.serial("a using() routine that extends or releases its lock itself: the extension follows it, and nothing is reported lost", async (t) => {
  const list = servers.slice(0, 3)
  const { redlock } = redlockOf(t, 'native', list)
  const errors = []
  redlock.on('error', (e) => errors.push(e))
  const key = resource(t)
  const seen = await redlock.using([key], 1_000, async (signal, lock) => {
    const longer = await lock.extend(3_000)
    t.is(lock.expiration, longer.expiration, "the routine's lock follows its own extension")
    // Past the first expiration: the lock is still held, by the same value.
    await sleep(1_500)
    const values = await valuesOn(list, key)
    return { aborted: signal.aborted, values, value: lock.value }
  })
  t.false(seen.aborted)
  t.deepEqual(seen.values, [seen.value, seen.value, seen.value])
  t.deepEqual(await valuesOn(list, key), [null, null, null], 'released at the end')
  // Released by the routine: the extension stops, no loss is reported.
  await redlock.using([key], 600, { automaticExtensionThreshold: 400 }, async (signal, lock) => {
    await lock.release()
    await sleep(800)
    t.false(signal.aborted)
  })
  t.deepEqual(errors, [])
})

test.serial('using() with a threshold of 0 extends anyway, and with a duration past the 24.8-day timer limit keeps its lock', async (t) => {
  const list = servers.slice(0, 3)
  const { redlock } = redlockOf(t, 'native', list, { automaticExtensionThreshold: 0 })
  const key = resource(t)
  const kept = await redlock.using([key], 300, async (signal) => {
    await sleep(800)
    return !signal.aborted
  })
  t.true(kept, 'extended with a threshold of 0')
  const month = 30 * 24 * 3600 * 1000
  const { redlock: long } = redlockOf(t, 'native', list, { maxDuration: month })
  const warnings = []
  const onWarning = (w) => warnings.push(w)
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  const held = await long.using([resource(t)], month, async (signal) => {
    await sleep(200)
    return !signal.aborted
  })
  t.true(held)
  t.deepEqual(warnings.map(String), [])
})

test("after removeAllListeners(), a new 'error' listener hears failed votes again", async (t) => {
  const list = servers.slice(0, 3)
  const { redlock: holder } = redlockOf(t, 'native', list)
  const key = resource(t)
  const lock = await holder.acquire([key], 2_000)
  for (const remove of [(r) => r.removeAllListeners('error'), (r) => r.removeAllListeners()]) {
    const { redlock } = redlockOf(t, 'native', list, { retryCount: 0 })
    remove(redlock)
    const errors = []
    redlock.on('error', (e) => errors.push(e))
    await t.throwsAsync(redlock.acquire([key], 1_000), { instanceOf: ExecutionError })
    t.is(errors.length, 3)
  }
  // Only a 'clientError' listener after removing them all: no unhandled 'error' event (it
  // would end the process), and the node failures reach it.
  const dead = new Redis({ port: 1, connectTimeout: 200 })
  const { redlock: lone } = { redlock: new Redlock([dead], { retryCount: 0 }) }
  t.teardown(() => lone.quit())
  lone.removeAllListeners()
  const clientErrors = []
  lone.on('clientError', (e) => clientErrors.push(e))
  await t.throwsAsync(lone.acquire([key], 1_000), { instanceOf: ExecutionError })
  t.is(clientErrors.length, 1)
  await lock.release()
})

test("using(): the routine's error or result is never replaced by a release failure", async (t) => {
  const [server] = servers
  // (A time-out with room for a loaded machine: nothing here waits for it.)
  const client = new Redis({ port: server.port, commandTimeout: 2_000 })
  const redlock = new Redlock([client], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const key = resource(t)
  // The routine fails: its error comes out, and the lock is released.
  await t.throwsAsync(
    redlock.using([key], 1_000, async () => {
      throw new Error('routine failed')
    }),
    { message: 'routine failed' },
  )
  t.is(await server.command('GET', key), null)
  // The release fails (connection closed under it): the routine's result still comes out.
  const result = await redlock.using([key], 1_000, async () => {
    await client.quit()
    return 42
  })
  t.is(result, 42)
})

// --- the node-redlock defects that must not exist here

test('regression 1: a tied vote with even N fails cleanly (no hang) and cleans up, after the whole retry window', async (t) => {
  const list = servers.slice(0, 4)
  for (const owners of [['other', 'other'], ['other', 'another']]) {
    const key = resource(t)
    for (const [i, owner] of owners.entries()) await list[i].command('SET', key, owner, 'PX', 10_000)
    const { redlock } = redlockOf(t, 'native', list, { retryCount: 2, retryDelay: 100, retryJitter: 0 })
    const started = Date.now()
    const err = await t.throwsAsync(redlock.acquire([key], 1_000), { instanceOf: ExecutionError })
    // Two retry delays, as node-redlock waits: a waiter does not give up early because
    // its own cleanup kept the free nodes for it.
    t.true(Date.now() - started >= 200, `gave up after ${Date.now() - started} ms (${owners})`)
    t.is(err.attempts.length, 3)
    t.deepEqual(await valuesOn(list, key), [...owners, null, null])
    for (const s of list) await s.command('DEL', key)
  }
})

test.serial('regression 2: a lock won after retries is not already expired', async (t) => {
  const list = servers.slice(0, 3)
  const { redlock: holder } = redlockOf(t, 'native', list)
  const { redlock } = redlockOf(t, 'native', list, { retryCount: 20, retryDelay: 100, retryJitter: 0 })
  const key = resource(t)
  await holder.acquire([key], 900) // held for 900 ms, then expires
  const lock = await redlock.acquire([key], 1_000)
  t.true(lock.attempts.length > 5, `won after ${lock.attempts.length} attempts`)
  const left = lock.expiration - Date.now()
  t.true(left > 300, `validity left ${left} ms (node-redlock measures from the first attempt: ~0)`)
  await lock.release()
})

test('regression 3: keys from a failed attempt do not block the next contender', async (t) => {
  const list = servers.slice(0, 2)
  const key = resource(t)
  await list[0].command('SET', key, 'holder', 'PX', 10_000)
  const { redlock: first } = redlockOf(t, 'native', list, { retryCount: 0 })
  await t.throwsAsync(first.acquire([key], 10_000))
  t.deepEqual(await valuesOn(list, key), ['holder', null], 'the failed attempt left nothing on the free node')
  await list[0].command('DEL', key) // the holder goes
  const { redlock: second } = redlockOf(t, 'native', list, { retryCount: 0 })
  const lock = await second.acquire([key], 1_000)
  await lock.release()
})

test("release() invalidates the lock at once, as node-redlock's does (expiration 0 before the nodes answer)", async (t) => {
  const redlock = new Redlock([new MemoryStore()])
  const lock = await redlock.acquire([resource(t)], 5_000)
  const releasing = lock.release()
  t.is(lock.expiration, 0)
  await releasing
  t.is(lock.expiration, 0)
})

test('regression 4: releasing an expired lock resolves at once', async (t) => {
  const { redlock } = redlockOf(t, 'native', servers.slice(0, 3))
  const lock = await redlock.acquire([resource(t)], 50)
  await sleep(100)
  const started = Date.now()
  const result = await redlock.release(lock)
  t.is(result.attempts.length, 1, 'one attempt, no retry window')
  t.true(Date.now() - started < 1_000)
})

test('regression 5: retryCount -1 keeps a bounded window of attempts', async (t) => {
  const list = servers.slice(0, 1)
  const key = resource(t)
  await list[0].command('SET', key, 'holder', 'PX', 20_000)
  const { redlock } = redlockOf(t, 'native', list, { retryCount: -1, retryDelay: 0, retryJitter: 0 })
  // The holder goes once 150 attempts failed, counted by their events (not by time, which
  // a loaded machine stretches).
  let failed = 0
  redlock.on('error', () => {
    failed += 1
    if (failed === 150) list[0].command('DEL', key)
  })
  const lock = await redlock.acquire([key], 1_000)
  t.true(failed >= 150, `${failed} attempts failed before the holder left`)
  t.is(lock.attempts.length, 100, 'the window keeps the last 100 attempts')
  await lock.release()
})

// --- node-redlock's documented usage, unchanged but for the import line

test("node-redlock v5's README usage runs unchanged", async (t) => {
  const [redisA, redisB, redisC] = servers.slice(0, 3).map((s) => new IORedis({ port: s.port, host: '127.0.0.1', lazyConnect: true }))
  const redlock = new Redlock([redisA, redisB, redisC], {
    driftFactor: 0.01,
    retryCount: 10,
    retryDelay: 200,
    retryJitter: 200,
    automaticExtensionThreshold: 500,
  })
  t.teardown(() => redlock.quit())
  redlock.on('error', (error) => {
    if (error instanceof ResourceLockedError) return
    t.log(error)
  })
  const senderId = resource(t)
  const recipientId = resource(t)
  await redlock.using([senderId, recipientId], 5000, async (signal) => {
    if (signal.aborted) throw signal.error
    t.true((await servers[0].command('GET', senderId)) !== null)
  })
  let lock = await redlock.acquire(['a' + senderId], 5000)
  try {
    lock = await lock.extend(5000)
  } finally {
    await lock.release()
  }
  t.is(await servers[0].command('GET', 'a' + senderId), null)
})

test("events: 'clientError' (error, client) for node failures, alongside 'error'", async (t) => {
  const { startServers, stopServers } = await import('../scripts/redis-servers.mjs')
  const own = await startServers(3)
  t.teardown(() => stopServers(own))
  // The dead node refuses connections at once; the time-out only bounds the live ones'
  // connects, which a loaded machine can slow down.
  const clients = own.map((s) => new Redis({ port: s.port, connectTimeout: 3_000 }))
  const redlock = new Redlock(clients, { retryCount: 0 })
  t.teardown(() => redlock.quit())
  await own[2].kill()
  const clientErrors = []
  const errors = []
  redlock.on('clientError', (e, c) => clientErrors.push([e, c]))
  redlock.on('error', (e) => errors.push(e))
  const lock = await redlock.acquire([resource(t)], 1_000)
  await lock.release()
  t.true(clientErrors.length >= 1, 'the dead node was reported')
  for (const [e, c] of clientErrors) {
    t.is(c, clients[2])
    t.regex(e.message, new RegExp(`127\\.0\\.0\\.1:${own[2].port}`))
    t.true(errors.includes(e))
  }
})

test('driftFactor: the expiration leaves round(driftFactor * ttl) + 2 ms of margin', async (t) => {
  const { redlock } = redlockOf(t, 'native', servers.slice(0, 1))
  const before = Date.now()
  const plain = await redlock.acquire([resource(t)], 10_000)
  const after = Date.now()
  const drifty = await redlock.acquire([resource(t)], 10_000, { driftFactor: 0.1 })
  const after2 = Date.now()
  // validity = ttl - elapsed - drift: 10000 - 102 (0.01) and 10000 - 1002 (0.1)
  t.true(plain.expiration <= after + 10_000 - 102 && plain.expiration >= before + 10_000 - 102 - 50)
  t.true(drifty.expiration <= after2 + 10_000 - 1_002 && drifty.expiration >= after + 10_000 - 1_002 - 50)
  await plain.release()
  await drifty.release()
})

// Found by an audit: an ioredis client on a unix socket (`path`) was read as the default
// localhost:6379, so the locks went to whatever listened there; our own Redis took
// `keyPrefix` and ignored it, so moving the same options from ioredis changed the keys.
test('options that would send the locks elsewhere or change their keys are refused, never ignored', (t) => {
  const socketed = new IORedis({ path: '/tmp/redis.sock', lazyConnect: true })
  t.teardown(() => socketed.disconnect())
  t.throws(() => new Redlock([socketed]), { instanceOf: TypeError, message: /options\.path.*unix socket/ })
  const nodeRedis = createClient({ socket: { path: '/tmp/redis.sock' } })
  t.throws(() => new Redlock([nodeRedis]), { instanceOf: TypeError, message: /socket\.path.*unix socket/ })
  t.throws(() => new Redis({ path: '/tmp/redis.sock', lazyConnect: true }), { instanceOf: TypeError, message: /options\.path/ })
  t.throws(() => new RedisJsClient({ socket: { path: '/tmp/redis.sock' } }), { instanceOf: TypeError, message: /options\.socket\.path/ })
  t.throws(() => new Redis({ keyPrefix: 'app:', lazyConnect: true }), { instanceOf: TypeError, message: /options\.keyPrefix/ })
  // ioredis' defaults (an empty keyPrefix) are no prefix at all.
  t.notThrows(() => new Redis({ keyPrefix: '', lazyConnect: true }))
  // An ioredis Cluster's natMap (the nodes would be reached where the cluster announces them).
  const natted = new IORedis.Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true, natMap: { '10.0.0.1:7000': { host: '127.0.0.1', port: 7000 } } })
  t.teardown(() => natted.disconnect())
  t.throws(() => new Redlock([natted]), { instanceOf: TypeError, message: /natMap/ })
  // So is an ioredis Sentinel client's (found by an audit: it was ignored, the locks went to
  // the master the sentinels name, not where ioredis itself writes).
  const sentinelNatted = new IORedis({ sentinels: [{ host: '127.0.0.1', port: 26379 }], name: 'mymaster', lazyConnect: true, natMap: { '10.0.0.1:6379': { host: '127.0.0.1', port: 6380 } } })
  t.teardown(() => sentinelNatted.disconnect())
  t.throws(() => new Redlock([sentinelNatted]), { instanceOf: TypeError, message: /natMap/ })
  // node-redis clients whose options are private: said plainly, with what to pass instead.
  const { createSentinel } = require('redis')
  const sentinel = createSentinel({ name: 'mymaster', sentinelRootNodes: [{ host: '127.0.0.1', port: 26379 }] })
  t.throws(() => new Redlock([sentinel]), { instanceOf: TypeError, message: /clients\[0\] is a node-redis RedisSentinel.*new Redis\(\{ sentinels, name \}\)/ })
})

// Found by an audit: a node-redis client made with neither url nor socket (node-redis'
// README's createClient(), localhost:6379) was refused as "not a client".
test("node-redis clients made with node-redis' defaults (no url, no socket) are read as localhost:6379", (t) => {
  for (const options of [undefined, { database: 3 }, { password: 'x' }]) {
    const redlock = new Redlock([createClient(options), redis4.createClient(options)])
    t.deepEqual(redlock.toJSON().clients, ['node-redis(localhost:6379)', 'node-redis(localhost:6379)'])
    redlock.quit()
  }
  // (A regression hunt found an application's own wrapper class named RedisClient taken
  // for one, its own host and port dropped.)
  class RedisClient {
    options = { host: '127.0.0.1', port: 6390 }
    isOpen = false
    sendCommand() {}
    duplicate() {}
  }
  t.throws(() => new Redlock([new RedisClient()]), { instanceOf: TypeError, message: /clients\[0\] must be/ })
})

// Found by an audit: listening with events.errorMonitor alone (as monitoring code does)
// heard no 'error' event: the votes against were reported only to 'error' or
// 'clientError' listeners.
test("events.errorMonitor listeners hear the votes against, as with node-redlock", async (t) => {
  const { errorMonitor } = await import('node:events')
  const stores = [new MemoryStore(), new MemoryStore(), new MemoryStore()]
  stores[1].down()
  stores[2].down()
  const redlock = new Redlock(stores, { retryCount: 1, retryDelay: 10, retryJitter: 0 })
  t.teardown(() => redlock.quit())
  const seen = []
  redlock.on(errorMonitor, (e) => seen.push(e.message))
  await t.throwsAsync(redlock.acquire(['monitored'], 1000), { instanceOf: ExecutionError })
  t.is(seen.length, 4, seen.join('; '))
})

// Found by an audit: a lock that reached its quorum with no validity left (a duration too
// short for the drift) failed as 'quorum-unavailable' with no cause and every node's vote
// for it, which read as a contradiction.
test("a quorum reached with no validity left says so in the error's cause", async (t) => {
  const redlock = new Redlock([new MemoryStore(), new MemoryStore(), new MemoryStore()], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const e = await t.throwsAsync(redlock.acquire(['too-short'], 3), { instanceOf: ExecutionError })
  t.is(e.reason, 'quorum-unavailable')
  t.regex(e.cause.message, /no validity was left/)
})

// Found by an audit: a resource whose key is a hash or a list (the application's own data
// under the same name) was read as node failures ('quorum-unavailable', 'clientError'
// events, acquireLock null); node-redlock reads it as locked, and so do we now.
test('a resource whose key holds another type of value (a hash, a list) is locked by someone else, not a node failure', async (t) => {
  const list = servers.slice(0, 3)
  for (const kind of ['native', 'ioredis']) {
    const { redlock } = redlockOf(t, kind, list, { retryCount: 1, retryDelay: 10 })
    const failures = []
    redlock.on('clientError', (e) => failures.push(e))
    for (const [type, fill] of [['hash', (k) => ['HSET', k, 'f', 'v']], ['list', (k) => ['RPUSH', k, 'a']]]) {
      const key = `${resource(t)}:${kind}:${type}`
      for (const s of list) await s.command(...fill(key))
      const error = await t.throwsAsync(redlock.acquire([key], 1_000), { instanceOf: ExecutionError })
      t.is(error.reason, 'locked', `${kind} ${type}`)
      const [stats] = await Promise.all(error.attempts)
      t.is(stats.votesAgainst.size, 3)
      t.true([...stats.votesAgainst.values()].every((e) => e instanceof ResourceLockedError))
      t.false(await redlock.acquireLock(key, 1_000))
      // Fenced (a script rather than SET NX), the same.
      const fenced = await t.throwsAsync(redlock.acquire([key], 1_000, { fencing: true }), { instanceOf: ExecutionError })
      t.is(fenced.reason, 'locked')
      // A lock whose key became another type meanwhile: extending it says so, releasing it is done.
      const other = `${key}:later`
      const lock = await redlock.acquire([other], 5_000)
      for (const s of list) await s.command('DEL', other).then(() => s.command(...fill(other)))
      await t.throwsAsync(lock.extend(5_000), { instanceOf: ExecutionError })
      await t.notThrowsAsync(lock.release())
      t.deepEqual(await Promise.all(list.map((s) => s.command('TYPE', key))), [type, type, type], 'the data is left as it was')
    }
    // A fenced acquire whose counter is another type (found by a regression hunt): its
    // script set the lock before it read the counter, and that key is removed.
    const name = `${resource(t)}:${kind}:fenced`
    for (const s of list) await s.command('HSET', `{${name}}:redlock-rs:fence`, 'f', 'v')
    await t.throwsAsync(redlock.acquire([name], 5_000, { fencing: true }), { instanceOf: ExecutionError })
    t.deepEqual(await valuesOn(list, name), [null, null, null])
    t.deepEqual(failures, [])
  }
})
