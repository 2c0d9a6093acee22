// Semaphores and read-write locks on real servers: never more than `permits` holders,
// never a writer with anyone else, under partitions and with a minority down; fair to
// writers across processes; crashed holders expire; fences from one sequence.
import { execFile, spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { TcpProxy } from '../scripts/tcp-proxy.mjs'
import { clientsFor, lib, resource, sleep } from './helpers.mjs'

const { Redis, Redlock, ExecutionError } = lib
const here = path.dirname(fileURLToPath(import.meta.url))
const worker = path.join(here, 'fixtures', 'shared-worker.mjs')

async function servers(t, n) {
  const list = await startServers(n)
  t.teardown(() => stopServers(list))
  return list
}

function run(options) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [worker, JSON.stringify(options)], { timeout: 60_000 }, (e, stdout, stderr) =>
      e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout),
    )
  })
}

/**
 * A Redlock that reaches only the nodes in `reach` of `all`: the others sit behind proxies
 * that answer nothing (a partition).
 */
async function partitioned(t, all, reach) {
  const ports = []
  for (let i = 0; i < all.length; i++) {
    if (reach.includes(i)) ports.push(all[i].port)
    else {
      const proxy = await new TcpProxy(all[i].port).start()
      proxy.mode = 'blackhole'
      t.teardown(() => proxy.stop())
      ports.push(proxy.port)
    }
  }
  const redlock = new Redlock(ports.map((port) => new Redis({ port, connectTimeout: 200, commandTimeout: 200 })), { retryCount: 0 })
  t.teardown(() => redlock.quit())
  return redlock
}

test('a 2-permit semaphore admits 2 holders, refuses the third, and counts its holders', async (t) => {
  const all = await servers(t, 3)
  const redlock = new Redlock(clientsFor(t, all), { retryCount: 0 })
  const sem = redlock.semaphore(resource(t), 2)
  t.is(sem.permits, 2)
  const a = await sem.acquire(5_000)
  const b = await sem.acquire(5_000)
  t.is(a.kind, 'permit')
  t.not(a.value, b.value)
  t.is(await sem.holders(), 2)
  const e = await t.throwsAsync(sem.acquire(5_000), { instanceOf: ExecutionError })
  t.is(e.reason, 'locked')
  const extended = await a.extend(6_000)
  t.is(await sem.holders(), 2)
  await extended.release()
  t.is(await sem.holders(), 1)
  const c = await sem.acquire(5_000)
  await Promise.all([b.release(), c.release()])
  t.is(await sem.holders(), 0)
})

test('partition: three clients each reaching a different 3 of 5 nodes never make more than 2 holders of a 2-permit semaphore', async (t) => {
  const all = await servers(t, 5)
  const name = resource(t)
  const views = [[0, 1, 2], [2, 3, 4], [0, 3, 4], [1, 2, 3], [0, 1, 4], [1, 3, 4]]
  const clients = await Promise.all(views.map((reach) => partitioned(t, all, reach)))
  const held = []
  for (let round = 0; round < 3; round++) {
    for (const redlock of clients) {
      try {
        held.push(await redlock.semaphore(name, 2).acquire(10_000))
      } catch (e) {
        t.true(e instanceof ExecutionError)
      }
    }
  }
  t.true(held.length <= 2, `${held.length} holders of 2 permits`)
  t.true(held.length >= 1, 'the semaphore is still usable under the partition')
  // Every holder owns its slot on a quorum of the nodes, each slot at most once.
  const slots = new Map()
  for (const lock of held) {
    for (let slot = 0; slot < 2; slot++) {
      const key = `{${name}}:redlock-rs:sem:${slot}`
      const values = await Promise.all(all.map((s) => s.command('GET', key)))
      if (values.filter((v) => v === lock.value).length >= 3) slots.set(slot, (slots.get(slot) ?? 0) + 1)
    }
  }
  t.is([...slots.values()].reduce((a, b) => a + b, 0), held.length)
  t.true([...slots.values()].every((n) => n === 1))
})

test('partition: a client reaching another majority than the holder still gets the free permit (attempts start from random slots)', async (t) => {
  const all = await servers(t, 3)
  const name = resource(t)
  const [a, b] = await Promise.all([partitioned(t, all, [0, 1]), partitioned(t, all, [0, 2])])
  const first = await a.semaphore(name, 2).acquire(10_000, { retryCount: 20, retryDelay: 20 })
  // On node 0 the holder has one slot; on node 2 every slot is free. An attempt that tried
  // the slots in the same order on both would split its votes every time.
  const second = await b.semaphore(name, 2).acquire(10_000, { retryCount: 20, retryDelay: 20 })
  const slotOf = async (lock) => {
    for (let slot = 0; slot < 2; slot++) {
      const values = await Promise.all(all.map((s) => s.command('GET', `{${name}}:redlock-rs:sem:${slot}`)))
      if (values.filter((v) => v === lock.value).length >= 2) return slot
    }
    return -1
  }
  const slots = [await slotOf(first), await slotOf(second)]
  t.true(slots.every((s) => s >= 0), `each holder owns a slot on a quorum: ${slots}`)
  t.not(slots[0], slots[1])
})

test('a minority down: a 2-permit semaphore still admits 2 holders, and read and write holds can be taken', async (t) => {
  const all = await servers(t, 5)
  const redlock = new Redlock(clientsFor(t, all, { connectTimeout: 300, commandTimeout: 300 }), { retryCount: 0 })
  await Promise.all([all[1].kill(), all[3].kill()])
  const sem = redlock.semaphore(resource(t), 2)
  const a = await sem.acquire(5_000)
  const b = await sem.acquire(5_000)
  await t.throwsAsync(sem.acquire(5_000), { instanceOf: ExecutionError })
  const rw = redlock.readWriteLock(resource(t))
  const r = await rw.read.acquire(5_000)
  await r.release()
  const w = await rw.write.acquire(5_000)
  t.is(w.kind, 'write')
  await Promise.all([a.release(), b.release(), w.release()])
})

test('6 processes on a 3-permit semaphore: at most 3 holders at once, and 3 are reached; fences strictly increase', async (t) => {
  const all = await servers(t, 3)
  const [witness] = await servers(t, 1)
  const name = resource(t)
  const ports = all.map((s) => s.port)
  await Promise.all(
    Array.from({ length: 6 }, () => run({ mode: 'permit', ports, witness: witness.port, resource: name, permits: 3, iterations: 25 })),
  )
  t.is(Number(await witness.command('GET', 'done')), 150)
  const max = Number(await witness.command('GET', 'max:holders'))
  t.true(max <= 3, `max ${max} holders`)
  t.is(max, 3, 'the permits were used')
  const fences = (await witness.command('LRANGE', 'fences', '0', '-1')).map(BigInt)
  t.is(new Set(fences.map(String)).size, fences.length, 'every permit got its own fence')
})

test.serial('read-write: readers overlap, a writer is alone, and a writer gets in within 2 s while 4 reader loops keep overlapping', async (t) => {
  const all = await servers(t, 3)
  const [witness] = await servers(t, 1)
  const name = resource(t)
  const ports = all.map((s) => s.port)
  const until = Date.now() + 6_000
  const readers = [1, 2].map(() => run({ mode: 'reader', ports, witness: witness.port, resource: name, until, holdMs: 150 }))
  await sleep(1_000)
  t.true(Number(await witness.command('GET', 'max:readers')) >= 2, 'readers overlap')
  const redlock = new Redlock(clientsFor(t, all), { retryCount: -1, retryDelay: 50 })
  const rw = redlock.readWriteLock(name)
  const asked = Date.now()
  let waited
  await rw.write.using(1_000, async () => {
    waited = Date.now() - asked
    await witness.command('INCR', 'writers')
    t.is(Number(await witness.command('GET', 'readers')), 0, 'no reader inside with the writer')
    await sleep(200)
    await witness.command('DECR', 'writers')
  })
  t.true(waited < 2_000, `the writer waited ${waited} ms`)
  await Promise.all(readers)
  t.is(Number(await witness.command('GET', 'violations') ?? 0), 0, 'no reader saw a writer')
})

test("a crashed holder's permit comes back after its TTL", async (t) => {
  const all = await servers(t, 3)
  const name = resource(t)
  const ports = all.map((s) => s.port)
  const child = spawn(process.execPath, [worker, JSON.stringify({ mode: 'hold', ports, resource: name, permits: 1, ttl: 1_000, witness: 0 })])
  t.teardown(() => child.kill('SIGKILL'))
  await new Promise((resolve) => child.stdout.on('data', resolve))
  child.kill('SIGKILL')
  const redlock = new Redlock(clientsFor(t, all), { retryCount: 0 })
  const sem = redlock.semaphore(name, 1)
  await t.throwsAsync(sem.acquire(1_000), { instanceOf: ExecutionError })
  t.is(await sem.holders(), 1)
  await sleep(1_100)
  t.is(await sem.holders(), 0)
  const lock = await sem.acquire(1_000)
  await lock.release()
})

test('a waiter on a full semaphore is woken by the release, not by its retry delay', async (t) => {
  const all = await servers(t, 3)
  const holder = new Redlock(clientsFor(t, all))
  const waiter = new Redlock(clientsFor(t, all), { retryCount: 3, retryDelay: 3_000, retryJitter: 0 })
  const name = resource(t)
  const held = await holder.semaphore(name, 1).acquire(10_000)
  const pending = waiter.semaphore(name, 1).acquire(5_000)
  await sleep(300)
  const released = Date.now()
  await held.release()
  const lock = await pending
  t.true(Date.now() - released < 1_000, `woken ${Date.now() - released} ms after the release`)
  await lock.release()
})

test("a reader kept out by a waiting writer's mark is woken when the writer gives up, not by its retry delay", async (t) => {
  const all = await servers(t, 3)
  const [first, writer, reader] = [0, 1, 2].map(() => new Redlock(clientsFor(t, all), { retryCount: 3, retryDelay: 3_000, retryJitter: 0 }))
  const name = resource(t)
  const held = await first.readWriteLock(name).read.acquire(10_000)
  const controller = new AbortController()
  const writing = writer.readWriteLock(name).write.acquire(10_000, { signal: controller.signal })
  await sleep(100) // the writer waits, its mark keeps new readers out
  const reading = reader.readWriteLock(name).read.acquire(10_000)
  await sleep(300)
  const aborted = Date.now()
  controller.abort()
  const err = await t.throwsAsync(writing, { instanceOf: ExecutionError })
  t.is(err.reason, 'aborted')
  const lock = await reading
  t.true(Date.now() - aborted < 1_000, `woken ${Date.now() - aborted} ms after the writer gave up`)
  await lock.release()
  await held.release()
})

test('fences of permits, reads and writes strictly increase, one sequence per resource', async (t) => {
  const all = await servers(t, 3)
  const redlock = new Redlock(clientsFor(t, all), { fencing: true, retryCount: 0 })
  const sem = redlock.semaphore(resource(t), 2)
  const fences = []
  for (let i = 0; i < 3; i++) {
    const lock = await sem.acquire(1_000)
    fences.push(lock.fence)
    await lock.release()
  }
  const rw = redlock.readWriteLock(resource(t))
  for (const side of ['read', 'write', 'read']) {
    const lock = await rw[side].acquire(1_000)
    fences.push(lock.fence)
    await lock.release()
  }
  for (const f of fences) t.is(typeof f, 'bigint')
  t.true(fences[1] > fences[0] && fences[2] > fences[1])
  t.true(fences[4] > fences[3] && fences[5] > fences[4])
})

test('keys never collide with mutex keys of the same name', async (t) => {
  const all = await servers(t, 3)
  const redlock = new Redlock(clientsFor(t, all), { retryCount: 0 })
  const name = resource(t)
  const mutex = await redlock.acquire([name], 5_000)
  const permit = await redlock.semaphore(name, 1).acquire(5_000)
  const write = await redlock.readWriteLock(name).write.acquire(5_000)
  t.is(await all[0].command('GET', name), mutex.value)
  await Promise.all([mutex.release(), permit.release(), write.release()])
})

// Found by an audit: `x` and `{x}` shared their keys of the library's own.
test('a name that is all hash tag, {x}, and the name inside it, x, are two resources for every kind', async (t) => {
  const all = await servers(t, 3)
  const redlock = new Redlock(clientsFor(t, all), { retryCount: 0 })
  const inner = resource(t).replace(/[{}]/g, '')
  const tagged = `{${inner}}`
  for (const name of [inner, tagged]) {
    const sem = redlock.semaphore(name, 1)
    await sem.acquire(5_000)
    t.is(await sem.holders(), 1, `${name}: its own holder only`)
    await redlock.readWriteLock(name).write.acquire(5_000)
  }
  // A waiter in the line of one is not handed the other's lock.
  const held = await redlock.acquire([tagged], 5_000)
  const waiting = new Redlock(clientsFor(t, all), { retryCount: -1, retryDelay: 5_000 })
  const onTagged = waiting.acquire([tagged], 2_000)
  onTagged.catch(() => {})
  await sleep(300)
  const d = await redlock.acquire([inner], 5_000)
  const onInner = waiting.acquire([inner], 2_000)
  await sleep(300)
  const started = Date.now()
  await d.release()
  const got = await onInner
  t.true(Date.now() - started < 1_500, `the waiter on ${inner} got it ${Date.now() - started} ms after its release`)
  await Promise.all([got.release(), held.release()])
  await onTagged.then((l) => l.release())
})

// After quit(), every call is refused as aborted, with the quit as its cause.
test('after quit(): release and holders() are aborted, with the quit as cause', async (t) => {
  const all = await servers(t, 3)
  const redlock = new Redlock(clientsFor(t, all), { retryCount: 0 })
  const lock = await redlock.acquire([resource(t)], 5_000)
  await redlock.quit()
  const released = await t.throwsAsync(lock.release(), { instanceOf: ExecutionError })
  t.is(released.reason, 'aborted')
  t.regex(String(released.cause?.message), /quit\(\) was called/)
  const holders = await t.throwsAsync(redlock.semaphore(resource(t), 2).holders(), { instanceOf: ExecutionError })
  t.is(holders.reason, 'aborted')
  t.regex(String(holders.cause?.message), /quit\(\) was called/)
})

// Found by an audit: holders() waited for every node, so one frozen node held it for its
// whole command time-out while acquires went on at once.
test('holders() answers once a quorum has: a frozen node does not hold it for its command time-out', async (t) => {
  const all = await servers(t, 3)
  t.teardown(() => all[2].resume())
  const redlock = new Redlock(clientsFor(t, all, { commandTimeout: 3_000 }), { retryCount: 0 })
  const sem = redlock.semaphore(resource(t), 3)
  const held = [await sem.acquire(10_000), await sem.acquire(10_000)]
  all[2].pause()
  const asked = Date.now()
  t.is(await sem.holders(), 2)
  t.true(Date.now() - asked < 1_500, `answered ${Date.now() - asked} ms after the call`)
  all[2].resume()
  for (const lock of held) await lock.release()
})

test('holders() without a quorum says which nodes failed and how, as acquire does (cause: an AggregateError naming each node)', async (t) => {
  const all = await startServers(3)
  t.teardown(() => stopServers(all))
  const redlock = new Redlock(clientsFor(t, all, { connectTimeout: 300, commandTimeout: 300 }), { retryCount: 0 })
  const sem = redlock.semaphore(resource(t), 2)
  t.is(await sem.holders(), 0)
  await all[0].kill()
  all[1].pause()
  t.teardown(() => all[1].resume())
  const failed = await t.throwsAsync(sem.holders(), { instanceOf: ExecutionError })
  t.is(failed.reason, 'quorum-unavailable')
  t.is(failed.message, 'The operation was unable to achieve a quorum during its retry window.')
  t.true(failed.cause instanceof AggregateError)
  const messages = failed.cause.errors.map((e) => e.message).sort()
  t.is(messages.length, 2)
  t.regex(messages.join('\n'), new RegExp(`127\\.0\\.0\\.1:${all[0].port}: `))
  t.regex(messages.join('\n'), new RegExp(`127\\.0\\.0\\.1:${all[1].port}: no reply within 300 ms`))
  t.true(failed.cause.errors.every((e) => redlock.clients.includes(e.client)))
})

test('bad input: permits, resource and duration are checked with TypeError / RangeError', async (t) => {
  const redlock = new Redlock([new Redis({ port: 1, lazyConnect: true })])
  for (const permits of [0, -1, 1.5, NaN, '2', undefined]) {
    t.throws(() => redlock.semaphore('s', permits), { instanceOf: RangeError, message: /permits/ })
  }
  t.throws(() => redlock.semaphore(42, 1), { instanceOf: TypeError, message: /resource/ })
  t.throws(() => redlock.readWriteLock(''), { instanceOf: TypeError, message: /resource/ })
  await t.throwsAsync(redlock.semaphore('s', 2).acquire(0), { instanceOf: RangeError, message: /Duration/ })
  await t.throwsAsync(redlock.readWriteLock('s').read.acquire(400_000), { instanceOf: RangeError, message: /maxDuration/ })
  await t.throwsAsync(redlock.readWriteLock('s').write.using(1_000, 'not a function'), { instanceOf: TypeError })
  // The classes are exported (and declared public): one made without a Redlock says so.
  for (const notARedlock of [undefined, {}, redlock.clients[0]]) {
    t.throws(() => new lib.Semaphore(notARedlock, 's', 1), { instanceOf: TypeError, message: /redlock must be a Redlock/ })
    t.throws(() => new lib.ReadWriteLock(notARedlock, 's'), { instanceOf: TypeError, message: /redlock must be a Redlock/ })
  }
})

// Found by an audit: a read, write or permit Lock rebuilt with `new Lock(...)` (from its
// JSON) or copied (`{ ...lock }`) was released as a mutex: release() resolved and freed
// nothing, and the holder's keys stayed until their TTL.
test('a read or write Lock rebuilt from its JSON, or copied, releases its hold; a copied permit is refused, not released as a mutex', async (t) => {
  const redlock = new lib.Redlock([new lib.MemoryStore()], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const rw = redlock.readWriteLock('rebuilt:rw')
  const write = await rw.write.acquire(5000)
  const json = JSON.parse(JSON.stringify(write))
  await redlock.release(new lib.Lock(redlock, json.resources, json.value, [], json.expiration, undefined, json.kind))
  const read = await rw.read.acquire(5000)
  await redlock.release({ ...read })
  await (await rw.write.acquire(5000)).release()
  const semaphore = redlock.semaphore('rebuilt:sem', 1)
  const permit = await semaphore.acquire(5000)
  await t.throwsAsync(redlock.release({ ...permit }), { instanceOf: TypeError, message: /permit not returned by acquire/ })
  t.is(await semaphore.holders(), 1)
  await permit.release()
  t.is(await semaphore.holders(), 0)
})
