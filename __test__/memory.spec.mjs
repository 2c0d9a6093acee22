// MemoryStore: an in-process lock node for users' tests and the demo. No redis-server in
// this file: every lock kind, TTLs, fencing, waiting, and the fault injection users need to
// test their own lock-lost paths.
import test from 'ava'

import { lib, sleep } from './helpers.mjs'

const { MemoryStore, Redlock, ExecutionError, LockLostError } = lib

function quorum(t, n = 3, settings = {}) {
  const stores = Array.from({ length: n }, (_, i) => new MemoryStore({ name: `s${i}` }))
  const redlock = new Redlock(stores, settings)
  t.teardown(() => redlock.quit())
  return { stores, redlock }
}

test('mutex: acquire, extend, release on a quorum of stores; keys() shows what is held', async (t) => {
  const { stores, redlock } = quorum(t)
  const lock = await redlock.acquire(['a', 'b'], 1_000)
  t.deepEqual(stores.map((s) => s.keys()), [['a', 'b'], ['a', 'b'], ['a', 'b']])
  t.is(await stores[0].get('a'), lock.value)
  const longer = await lock.extend(2_000)
  t.true(longer.expiration > Date.now() + 1_500)
  await t.throwsAsync(redlock.acquire(['b'], 1_000, { retryCount: 0 }), { instanceOf: ExecutionError, message: /quorum/ })
  await longer.release()
  t.deepEqual(stores.map((s) => s.keys()), [[], [], []])
  t.is(String(stores[1]), "MemoryStore <MemoryStore 's1'>")
})

test('TTLs expire on the store clock; the seed API works on stores', async (t) => {
  const { stores, redlock } = quorum(t, 1, { retryCount: 0 })
  t.true(await redlock.acquireLock('job', 50))
  t.false(await redlock.acquireLock('job', 50))
  await sleep(70)
  t.deepEqual(stores[0].keys(), [])
  t.true(await redlock.acquireLock('job', 1_000))
  await redlock.releaseLock('job', true)
})

test('fencing tokens, waiting woken by a release, semaphores and read-write locks', async (t) => {
  const { redlock } = quorum(t, 3, { fencing: true })
  const a = await redlock.acquire(['f'], 1_000)
  const waiter = new Redlock(redlock.clients, { fencing: true, retryDelay: 5_000, retryCount: 2 })
  const pending = waiter.acquire(['f'], 1_000)
  await sleep(50)
  const released = Date.now()
  await a.release()
  const b = await pending
  t.true(Date.now() - released < 500, 'woken by the release')
  t.true(b.fence > a.fence)
  await b.release()
  const sem = redlock.semaphore('pool', 2)
  const [p1, p2] = [await sem.acquire(1_000), await sem.acquire(1_000)]
  t.is(await sem.holders(), 2)
  await t.throwsAsync(sem.acquire(1_000, { retryCount: 0 }), { instanceOf: ExecutionError })
  await Promise.all([p1.release(), p2.release()])
  const rw = redlock.readWriteLock('cfg')
  const r1 = await rw.read.acquire(1_000)
  const r2 = await rw.read.acquire(1_000)
  await t.throwsAsync(rw.write.acquire(1_000, { retryCount: 0 }))
  await Promise.all([r1.release(), r2.release()])
  const w = await rw.write.acquire(1_000)
  t.is(w.kind, 'write')
  await w.release()
})

// Found by an audit: with the holder on a bare quorum and a store free, two waiting fenced
// acquires (or permits, or writers) each took that store, lost, and announced its release,
// which woke the other at once: on MemoryStores (every step ready at once) the JavaScript
// thread ran nothing else for the holder's whole TTL.
for (const kind of ['mutex', 'permit', 'write']) {
  test(`${kind}: two waiters do not wake each other with their cleanups while a holder keeps the lock (fencing)`, async (t) => {
    const stores = [0, 1, 2].map((i) => new MemoryStore({ name: `ping-${kind}-${i}` }))
    const [a, b, c] = [0, 1, 2].map(() => new Redlock(stores, { fencing: true, retryCount: -1, retryDelay: 30, retryJitter: 20 }))
    t.teardown(() => Promise.all([a, b, c].map((r) => r.quit())))
    const take = (r) => (kind === 'permit' ? r.semaphore('ping', 1).acquire(2_000) : kind === 'write' ? r.readWriteLock('ping').write.acquire(2_000) : r.acquire(['ping'], 2_000))
    const first = await take(a)
    const waiting = [take(b), take(c)]
    await sleep(50)
    await first.release()
    waiting.push(take(a)) // three waiters now; one of them wins
    const left = new Map(waiting.map((p, i) => [i, p.then((lock) => ({ lock, i }))]))
    const next = async () => {
      const { lock, i } = await Promise.race(left.values())
      left.delete(i)
      return lock
    }
    const holder = await next()
    // The holder's own work: a short timer fires while it holds the lock.
    const before = Date.now()
    await sleep(5)
    t.true(Date.now() - before < 500, `a 5 ms timer fired after ${Date.now() - before} ms`)
    await sleep(300)
    t.true(Date.now() < holder.expiration)
    await holder.release()
    // The other two get it in turn. Each tried about once per retry delay while it waited
    // (about 10 times in 350 ms), not at every cleanup of the other.
    while (left.size > 0) {
      const lock = await next()
      t.true(lock.attempts.length < 40, `${lock.attempts.length} attempts`)
      await lock.release()
    }
  })
}

test('down(): calls fail at once; a minority down is tolerated, a majority is quorum-unavailable', async (t) => {
  const { stores, redlock } = quorum(t, 3, { retryCount: 0 })
  stores[0].down()
  const lock = await redlock.acquire(['x'], 1_000)
  await lock.release()
  stores[1].down()
  const started = Date.now()
  const e = await t.throwsAsync(redlock.acquire(['x'], 1_000), { instanceOf: ExecutionError })
  t.true(Date.now() - started < 200)
  t.is(e.reason, 'quorum-unavailable')
  t.regex(e.cause.errors[0].message, /^MemoryStore 's0': could not connect: the store is down/)
  stores[0].up()
  stores[1].up()
  await (await redlock.acquire(['x'], 1_000)).release()
})

test('pause(ms): calls hang until the command time-out, like a frozen server', async (t) => {
  const store = new MemoryStore({ commandTimeout: 200 })
  const redlock = new Redlock([store], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  store.pause(1_000)
  const started = Date.now()
  t.is(await redlock.acquireLock('p', 5_000), null)
  const took = Date.now() - started
  t.true(took >= 150 && took < 900, `${took} ms`)
  await t.throwsAsync(store.get('p'), { message: /no reply within 200 ms/ })
  // A command that gave up still runs when the pause ends, as one sent to a stopped server.
  await t.throwsAsync(store.set('late', 'v'), { message: /no reply within 200 ms/ })
  store.pause(0)
  await sleep(20)
  t.is(await store.get('late'), 'v')
})

test("the store's commands answer as Redis does: SET's options and errors, WRONGTYPE, arity, binary keys and values", async (t) => {
  const store = new MemoryStore()
  t.teardown(() => store.quit())
  t.is(await store.call('SET', 'x', 'v', 'XX'), null)
  t.is(await store.get('x'), null)
  await t.throwsAsync(store.call('SET', 'x', 'v', 'NX', 'XX'), { message: /ERR syntax error/ })
  await t.throwsAsync(store.call('SET', 'x', 'v', 'PX', '0'), { message: /ERR invalid expire time in 'set' command/ })
  await t.throwsAsync(store.call('SET', 'x', 'v', 'PX', 'abc'), { message: /ERR value is not an integer or out of range/ })
  t.is(await store.call('SET', 'x', 'v', 'PX', '10000'), 'OK')
  t.is(await store.call('SET', 'x', 'w', 'KEEPTTL'), 'OK')
  t.true((await store.pttl('x')) > 9_000)
  t.is(await store.call('SET', 'x', 'y', 'PXAT', String(Date.now() - 1_000)), 'OK')
  t.is(await store.get('x'), null, 'a past PXAT: the key goes')
  t.is(await store.call('SET', 'x', 'new', 'GET'), null)
  t.is(await store.call('SET', 'x', 'newer', 'GET'), 'new')
  t.is(await store.del('x', 'x'), 1)
  await store.call('HSET', 'h', 'f', 'v')
  await t.throwsAsync(store.get('h'), { message: /WRONGTYPE/ })
  await t.throwsAsync(store.call('HGET', 'x2', 'f').then(() => store.set('s', 'v')).then(() => store.call('HGET', 's', 'f')), { message: /WRONGTYPE/ })
  await t.throwsAsync(store.call('GET', 'a', 'b'), { message: /wrong number of arguments for 'get' command/ })
  t.is(await store.call('PING', 'hello'), 'hello')
  await store.set(Buffer.from([0xff]), Buffer.from([0x61, 0xfe]))
  t.is(await store.get(Buffer.from([0xfe])), null, 'binary keys stay apart')
  t.deepEqual(Buffer.from(await store.call('GET', Buffer.from([0xff]))), Buffer.from([0x61, 0xfe]))
  await store.set('\u{10FFFF}', 'x\u{10FFFF}y') // text the store's binary marks look like
  t.is(await store.get('\u{10FFFF}'), 'x\u{10FFFF}y')
  t.is(await store.get(Buffer.from([0xff])), 'a\ufffd', 'still apart from the binary key')
})

test('clear(): every key is lost, like a restart without persistence, and the store sits out as a restarted node', async (t) => {
  const { stores, redlock } = quorum(t, 3, { retryCount: 0, maxDuration: 60_000 })
  const lock = await redlock.acquire(['c'], 5_000)
  stores[0].clear()
  t.deepEqual(stores[0].keys(), [])
  // The other two still hold it: a rival is refused, and the cleared store does not vote.
  const rival = new Redlock(stores, { retryCount: 0, maxDuration: 60_000 })
  const e = await t.throwsAsync(rival.acquire(['c'], 1_000))
  t.regex(e.cause?.errors?.[0]?.message ?? '', /restarted or replaced/)
  await lock.release()
})

// The README's "Testing your code" example: a lock lost mid-job.
test('testing your code: using() loses its lock when the stores go down, and the routine sees signal.aborted', async (t) => {
  const stores = [new MemoryStore(), new MemoryStore(), new MemoryStore()]
  const redlock = new Redlock(stores)
  t.teardown(() => redlock.quit())
  const seen = await redlock.using(['report'], 1_000, async (signal) => {
    stores[0].down()
    stores[1].down() // a majority gone: the next extension fails
    await new Promise((resolve) => signal.addEventListener('abort', resolve))
    return { aborted: signal.aborted, error: signal.error }
  })
  t.true(seen.aborted)
  t.true(seen.error instanceof LockLostError)
  t.is(seen.error.reason, 'quorum-unavailable')
})

test('using(): stores that stop answering (paused) lose the lock before its expiration, as quorum-unavailable with their time-outs as cause', async (t) => {
  const stores = [0, 1, 2].map(() => new MemoryStore({ commandTimeout: 150 }))
  const redlock = new Redlock(stores, { retryCount: 50, retryDelay: 30, retryJitter: 0, automaticExtensionThreshold: 300 })
  t.teardown(() => redlock.quit())
  const seen = await redlock.using(['paused'], 700, async (signal, lock) => {
    stores[1].pause(5_000)
    stores[2].pause(5_000) // a majority frozen: every extension attempt times out
    const expiration = lock.expiration
    await new Promise((resolve) => signal.addEventListener('abort', resolve))
    stores[1].up()
    stores[2].up()
    return { at: Date.now(), expiration, error: signal.error }
  })
  t.true(seen.at <= seen.expiration, `aborted ${seen.at - seen.expiration} ms after the expiration`)
  t.true(seen.error instanceof LockLostError)
  t.is(seen.error.reason, 'quorum-unavailable')
  t.true(seen.error.cause instanceof AggregateError)
  for (const e of seen.error.cause.errors) t.regex(e.message, /^MemoryStore '[^']+': no reply within \d+ ms$/)
})

test('bad options are refused; store methods check their arguments', (t) => {
  t.throws(() => new MemoryStore('x'), { instanceOf: TypeError, message: /options/ })
  t.throws(() => new MemoryStore({ name: 3 }), { instanceOf: TypeError, message: /options\.name/ })
  t.throws(() => new MemoryStore({ name: '' }), { instanceOf: TypeError, message: /options\.name must be a non-empty string/ })
  // A misspelt option is refused, never silently not applied.
  t.throws(() => new MemoryStore({ nam: 'x' }), { instanceOf: TypeError, message: /options\.nam is not a MemoryStore option/ })
  t.throws(() => new MemoryStore({ commandTimeOut: 50 }), { instanceOf: TypeError, message: /options\.commandTimeOut/ })
  const store = new MemoryStore()
  t.throws(() => store.pause('long'), { instanceOf: TypeError })
  t.throws(() => store.pause(-1), { instanceOf: RangeError })
})
