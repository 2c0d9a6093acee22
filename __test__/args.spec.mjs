// Bad input: TypeError / RangeError naming the argument; never a crash or a hang.
import { createRequire } from 'node:module'

import test from 'ava'

import { lib } from './helpers.mjs'

const { MemoryStore, Redis, RedisJsClient, Redlock } = lib

// Clients that never connect: argument checks happen before any I/O.
const lazy = () => new Redis({ port: 1, lazyConnect: true })

test('bad ttl values are refused with the argument named', async (t) => {
  const redlock = new Redlock([lazy()])
  const cases = [
    [0, RangeError], [-1, RangeError], [1.5, RangeError], [NaN, RangeError], [Infinity, RangeError],
    [-Infinity, RangeError], [2 ** 53, RangeError], [1e300, RangeError],
    ['1000', TypeError], [null, TypeError], [undefined, TypeError], [{}, TypeError], [10n, TypeError], [true, TypeError],
  ]
  for (const [ttl, ErrorClass] of cases) {
    const err = await t.throwsAsync(redlock.acquireLock('r', ttl), { instanceOf: ErrorClass }, String(ttl))
    t.regex(err.message, /^ttl /, err.message)
  }
  t.regex((await t.throwsAsync(redlock.acquireLock('r', 1.5))).message, /^ttl must be an integer value in milliseconds\./)
  t.regex((await t.throwsAsync(redlock.acquireLock('r', null))).message, /Got null\./, 'null named as null (an audit found it named undefined)')
})

test('bad resources are refused with the argument named', async (t) => {
  const redlock = new Redlock([lazy()])
  for (const resource of ['', 42, null, undefined, {}, ['a'], Symbol('x')]) {
    const err = await t.throwsAsync(redlock.acquireLock(resource, 1000), { instanceOf: TypeError })
    t.regex(err.message, /^resource must be a non-empty string/)
    await t.throwsAsync(redlock.releaseLock(resource, true), { instanceOf: TypeError })
  }
  // What was given is said as it was: null is not undefined.
  await t.throwsAsync(redlock.acquireLock(null, 1000), { message: /got null\.$/ })
  t.throws(() => redlock.fenceOf(null), { instanceOf: TypeError, message: /got null\.$/ })
  await t.throwsAsync(redlock.acquire(null, 1000), { instanceOf: TypeError, message: /^resources must be .*got null\.$/ })
  await t.throwsAsync(redlock.releaseLock('r', 'yes'), { instanceOf: TypeError, message: /lockValue/ })
})

test('a huge sparse array (new Array(5e8)) is refused at once, never read element by element', async (t) => {
  // Found by an audit: acquire() copied it first (V8 out of memory: the process aborted),
  // release() read every hole (48 s and 15 GB), new Cluster() likewise.
  const redlock = new Redlock([new MemoryStore()])
  const holes = []
  holes.length = 5e8 // (holes only: nothing allocated)
  const started = Date.now()
  const refused = [
    await t.throwsAsync(redlock.acquire(holes, 1_000), { instanceOf: TypeError }),
    await t.throwsAsync(redlock.release({ resources: holes, value: 'x', expiration: Date.now() + 1_000 }), { instanceOf: TypeError }),
    await t.throwsAsync(redlock.extend({ resources: holes, value: 'x', expiration: Date.now() + 1_000 }, 1_000), { instanceOf: TypeError }),
    t.throws(() => new lib.Cluster(holes), { instanceOf: TypeError }),
  ]
  // Through ioredis clients with a keyPrefix too (found by a regression hunt: the names
  // were prefixed one by one first, 10 s).
  const IORedis = createRequire(import.meta.url)('ioredis')
  const prefixed = new Redlock([new IORedis({ port: 1, keyPrefix: 'app:', lazyConnect: true })])
  t.teardown(() => prefixed.quit())
  refused.push(
    await t.throwsAsync(prefixed.acquire(holes, 1_000), { instanceOf: TypeError }),
    await t.throwsAsync(prefixed.release({ resources: holes, value: 'x', expiration: Date.now() + 1_000 }), { instanceOf: TypeError }),
  )
  for (const e of refused) t.regex(e.message, /more than 1048576 elements/)
  t.regex(refused[0].message, /^resources /)
  t.true(Date.now() - started < 2_000, `took ${Date.now() - started} ms`)
  // Below the bound, the first hole is named.
  const few = []
  few.length = 1_000
  t.regex((await t.throwsAsync(redlock.acquire(few, 1_000))).message, /^resources\[0\] must be a non-empty string/)
})

test('bad client lists are refused', (t) => {
  t.throws(() => new Redlock(), { instanceOf: TypeError, message: /clients/ })
  t.throws(() => new Redlock(42), { instanceOf: TypeError, message: /clients/ })
  t.throws(() => new Redlock('redis://x'), { instanceOf: TypeError, message: /clients/ })
  // node-redlock's own words.
  t.throws(() => new Redlock([]), { instanceOf: TypeError, message: 'Redlock must be instantiated with at least one redis client.' })
  // node-redlock's custom scripts (a third argument) would be silently not run: refused.
  t.throws(() => new Redlock([lazy()], {}, { acquireScript: (s) => s }), { instanceOf: TypeError, message: /custom scripts/ })
  t.notThrows(() => new Redlock([lazy()], {}, {}), "node-redlock's default: no script given")
  t.throws(() => new Redlock([lazy(), {}]), { instanceOf: TypeError, message: /^clients\[1\] must be/ })
  t.throws(() => new Redlock([null]), { instanceOf: TypeError, message: /^clients\[0\]/ })
  for (const bad of [NaN, 42, 'redis://x', Symbol('s')]) t.throws(() => new Redlock([bad]), { instanceOf: TypeError, message: /^clients\[0\] must be/ }) // NaN: found by an audit
  t.throws(() => new Redlock([{ get() {}, set() {}, quit() {} }]), { instanceOf: TypeError, message: /^clients\[0\]/ })
  // An object that merely claims to be a client by its prototype is refused too.
  t.throws(() => new Redlock([Object.create(Redis.prototype)]), { instanceOf: TypeError, message: /^clients\[0\]/ })
})

test('bad settings are refused with the setting named', (t) => {
  const clients = [lazy()]
  t.throws(() => new Redlock(clients, 5), { instanceOf: TypeError, message: /^settings must be an object/ })
  t.throws(() => new Redlock(clients, { retryCount: 'x' }), { instanceOf: TypeError, message: /settings\.retryCount/ })
  t.throws(() => new Redlock(clients, { retryCount: -2 }), { instanceOf: RangeError, message: /settings\.retryCount/ })
  t.throws(() => new Redlock(clients, { retryDelay: -1 }), { instanceOf: RangeError, message: /settings\.retryDelay/ })
  t.throws(() => new Redlock(clients, { retryJitter: 0.5 }), { instanceOf: RangeError, message: /settings\.retryJitter/ })
  t.throws(() => new Redlock(clients, { driftFactor: NaN }), { instanceOf: RangeError, message: /settings\.driftFactor/ })
  t.throws(() => new Redlock(clients, { automaticExtensionThreshold: Infinity }), {
    instanceOf: RangeError,
    message: /settings\.automaticExtensionThreshold/,
  })
  t.notThrows(() => new Redlock(clients, { retryCount: -1, retryDelay: 0, retryJitter: 0, driftFactor: 0 }))
  t.notThrows(() => new Redlock(clients, null))
})

test('bad URLs, ports and options are refused by the clients', (t) => {
  const typeErrors = [
    () => new Redis('http://localhost:6379'),
    () => new Redis('redis://'),
    () => new Redis('not a url'),
    () => new Redis('redis://h/notadb'),
    () => new Redis(true),
    () => new Redis({ host: 42 }),
    () => new Redis({ port: 'six' }),
    () => new Redis({ password: 123 }),
    () => new Redis({ tls: 'yes' }),
    () => new Redis({ lazyConnect: 'no' }),
    () => new Redis(6379, 42),
    () => new RedisJsClient('redis://localhost'),
    () => new RedisJsClient({ url: 'ftp://x' }),
    () => new RedisJsClient({ url: 42 }),
    () => new RedisJsClient({ socket: 'x' }),
  ]
  for (const make of typeErrors) t.throws(make, { instanceOf: TypeError }, make.toString())
  const rangeErrors = [
    () => new Redis(0),
    () => new Redis(65536),
    () => new Redis(80.5),
    () => new Redis({ port: -1 }),
    () => new Redis({ db: -1 }),
    () => new Redis({ connectTimeout: 0 }),
    () => new Redis({ commandTimeout: NaN }),
    () => new RedisJsClient({ database: 1.5 }),
    () => new RedisJsClient({ socket: { port: 70000 } }),
  ]
  for (const make of rangeErrors) t.throws(make, { instanceOf: RangeError }, make.toString())
  t.throws(() => new Redis({ port: 99999 }), { message: /options\.port/ })
  t.throws(() => new Redis({ connectTimeout: 0 }), { message: /options\.connectTimeout/ })
  t.throws(() => new RedisJsClient({ url: 'ftp://x' }), { message: /options\.url/ })
})

test('malformed URLs never echo a password', (t) => {
  const err = t.throws(() => new Redis('redis://user:topsecret@host:notaport'))
  t.false(err.message.includes('topsecret'))
})

test('bad command arguments are refused by the clients', (t) => {
  const c = lazy()
  t.throws(() => c.get({}), { instanceOf: TypeError, message: /^key must be/ })
  t.throws(() => c.get(), { instanceOf: TypeError, message: /^key must be/ })
  t.throws(() => c.set('k', {}), { instanceOf: TypeError, message: /^value must be/ })
  t.throws(() => c.set('k'), { instanceOf: TypeError, message: /^value must be/ })
  t.throws(() => c.set('k', null), { instanceOf: TypeError, message: /got null\./ })
  t.throws(() => c.pttl(null), { instanceOf: TypeError, message: /^key must be .*got null\.$/ })
  t.throws(() => c.get(null), { instanceOf: TypeError, message: /got null\.$/ })
  t.throws(() => c.call(null), { instanceOf: TypeError, message: /^command must be .*got null\.$/ })
  t.throws(() => c.del(), { instanceOf: TypeError, message: /at least one key/ })
  t.throws(() => c.del('a', {}), { instanceOf: TypeError, message: /^keys\[1\]/ })
  t.throws(() => c.call(), { instanceOf: TypeError, message: /^command must be/ })
  t.throws(() => c.call('SET', 'k', null), { instanceOf: TypeError, message: /^args\[1\]/ })
})

test('the native lock functions refuse a handle that is not one, and bad arguments, by throwing', (t) => {
  const native = createRequire(import.meta.url)('../binding.js')
  const calls = [
    (h) => native.lockAcquire(h, 1, ['r'], 1000),
    (h) => native.lockExtend(h, 1, ['r'], 'v', Date.now() + 1000, 1000),
    (h) => native.lockRelease(h, 1, ['r'], 'v', Date.now() + 1000),
  ]
  for (const handle of [undefined, null, 1, 'x', {}, [], () => {}, Symbol('h')]) {
    for (const call of calls) t.throws(() => call(handle), { message: /external/i }, String(handle?.toString?.()))
  }
  // A real handle with missing or wrong arguments: the same errors as through Redlock.
  const handle = new native.NativeRedlock([lazy()], undefined, () => {}).handle
  t.throws(() => native.lockAcquire(handle), { message: /u32/ }) // the id
  t.throws(() => native.lockAcquire(handle, 1), { instanceOf: TypeError, message: /^resources / })
  t.throws(() => native.lockAcquire(handle, 1, ['r'], -5), { instanceOf: RangeError, message: /Duration/ })
  t.throws(() => native.lockRelease(handle, 1, ['r'], '', Date.now() + 1000), { instanceOf: TypeError, message: /^lock\.value / })
})

// Found by an audit: the same client passed twice counted as two votes (node-redlock keeps a
// Set); an ioredis-mock instance, which looks like ioredis (port 6379), was read as one and
// its locks went to a real server on localhost:6379.
test('the same client twice is one vote; ioredis-mock is refused with a hint to use MemoryStore', async (t) => {
  const store = new MemoryStore()
  const redlock = new Redlock([store, store, store])
  t.is(redlock.clients.length, 1)
  const lock = await redlock.acquire(['dup'], 1_000)
  const [stats] = await Promise.all(lock.attempts)
  t.is(stats.membershipSize, 1)
  t.is(stats.quorumSize, 1)
  await lock.release()
  class RedisMock {
    options = { host: 'localhost', port: 6379 }
    evalsha() {}
  }
  t.throws(() => new Redlock([new RedisMock()]), { instanceOf: TypeError, message: /ioredis-mock .*MemoryStore/ })
})

test('retryCount: Infinity retries until acquired, as -1 does', (t) => {
  t.is(new Redlock([lazy()], { retryCount: Infinity }).settings.retryCount, -1)
})
