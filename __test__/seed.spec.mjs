// The seed API (acquireLock / releaseLock) on real redis-servers.
import test from 'ava'

import { clientsFor, lib, quick, resource, sleep, useServers, valuesOn } from './helpers.mjs'

const { MemoryStore, Redlock } = lib
const servers = useServers(test, 5)

test('seed flow on one instance', async (t) => {
  const [a] = clientsFor(t, servers.slice(0, 1))
  const redlock = new Redlock([a])
  const key = resource(t)
  t.true(await redlock.acquireLock(key, 10_000))
  const [value] = await valuesOn(servers.slice(0, 1), key)
  t.regex(value, /^[0-9a-f]{32}$/)
  const pttl = await servers[0].command('PTTL', key)
  t.true(pttl > 9_000 && pttl <= 10_000, `pttl ${pttl}`)
  await redlock.releaseLock(key, true)
  t.deepEqual(await valuesOn(servers.slice(0, 1), key), [null])
})

test('seed flow on five instances with mixed Redis and RedisJsClient clients', async (t) => {
  const clients = clientsFor(t, servers)
  t.true(clients[1] instanceof lib.RedisJsClient)
  t.true(clients[0] instanceof lib.Redis)
  const redlock = new Redlock(clients)
  const key = resource(t)
  t.true(await redlock.acquireLock(key, 10_000))
  // Decided as soon as a quorum agreed: at least 3 nodes hold our one value.
  const values = (await valuesOn(servers, key)).filter(Boolean)
  t.true(values.length >= 3, `held on ${values.length} of 5`)
  t.regex(values[0], /^[0-9a-f]{32}$/)
  t.is(new Set(values).size, 1, 'one value on every node that holds it')
  await redlock.releaseLock(key, true)
  t.deepEqual(await valuesOn(servers, key), [null, null, null, null, null])
})

test('two Redlock instances exclude each other', async (t) => {
  const first = new Redlock(clientsFor(t, servers), quick)
  const second = new Redlock(clientsFor(t, servers), quick)
  const key = resource(t)
  t.true(await first.acquireLock(key, 10_000))
  t.false(await second.acquireLock(key, 10_000))
  await first.releaseLock(key, true)
  t.true(await second.acquireLock(key, 10_000))
  t.false(await first.acquireLock(key, 10_000))
  await second.releaseLock(key, true)
})

test('a waiting contender gets the lock once it is released (retries)', async (t) => {
  const first = new Redlock(clientsFor(t, servers))
  const second = new Redlock(clientsFor(t, servers), { retryCount: 50, retryDelay: 20, retryJitter: 5 })
  const key = resource(t)
  t.true(await first.acquireLock(key, 10_000))
  const waiting = second.acquireLock(key, 10_000)
  await sleep(100)
  await first.releaseLock(key, true)
  t.true(await waiting)
  await second.releaseLock(key, true)
})

test('release is owner-checked: one instance cannot release another one\'s lock', async (t) => {
  const owner = new Redlock(clientsFor(t, servers), quick)
  const other = new Redlock(clientsFor(t, servers), quick)
  const key = resource(t)
  t.true(await owner.acquireLock(key, 10_000))
  const before = await valuesOn(servers, key)
  await other.releaseLock(key, true) // never held by `other`: resolves, deletes nothing
  t.deepEqual(await valuesOn(servers, key), before)
  // Even a key that another owner set after ours expired is never deleted by us.
  await owner.releaseLock(key, true)
  for (const s of servers) await s.command('SET', key, 'someone-else', 'PX', 10_000)
  await owner.releaseLock(key, true)
  t.deepEqual(await valuesOn(servers, key), Array(5).fill('someone-else'))
  for (const s of servers) await s.command('DEL', key)
})

test('releaseLock(resource, false | null) does nothing', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  t.true(await redlock.acquireLock(key, 10_000))
  const before = await valuesOn(servers, key)
  await redlock.releaseLock(key, false)
  await redlock.releaseLock(key, null)
  t.deepEqual(await valuesOn(servers, key), before)
  await redlock.releaseLock(key, true)
  t.deepEqual(await valuesOn(servers, key), Array(5).fill(null))
})

test('releasing an expired, released or never-held lock resolves', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  await t.notThrowsAsync(redlock.releaseLock(key, true))
  t.true(await redlock.acquireLock(key, 100))
  await sleep(200)
  t.deepEqual(await valuesOn(servers, key), Array(5).fill(null), 'expired by TTL')
  await t.notThrowsAsync(redlock.releaseLock(key, true))
  await t.notThrowsAsync(redlock.releaseLock(key, true))
})

test('a lock expires after its TTL and can then be taken by another owner', async (t) => {
  const first = new Redlock(clientsFor(t, servers), quick)
  const second = new Redlock(clientsFor(t, servers), quick)
  const key = resource(t)
  t.true(await first.acquireLock(key, 200))
  t.false(await second.acquireLock(key, 10_000))
  await sleep(300)
  t.true(await second.acquireLock(key, 10_000))
  await second.releaseLock(key, true)
})

test('a tied vote with an even number of instances fails cleanly and removes our keys', async (t) => {
  for (const n of [2, 4]) {
    const subset = servers.slice(0, n)
    const key = resource(t)
    // Another owner holds half of the nodes.
    for (const s of subset.slice(0, n / 2)) await s.command('SET', key, 'other-owner', 'PX', 10_000)
    const redlock = new Redlock(clientsFor(t, subset), { retryCount: 0 })
    t.false(await redlock.acquireLock(key, 10_000), `n=${n}`)
    t.deepEqual(
      await valuesOn(subset, key),
      [...Array(n / 2).fill('other-owner'), ...Array(n / 2).fill(null)],
      `n=${n}: nothing of ours is left`,
    )
    for (const s of subset) await s.command('DEL', key)
  }
})

test('a failed attempt leaves no key of ours behind (majority held elsewhere)', async (t) => {
  const key = resource(t)
  for (const s of servers.slice(0, 3)) await s.command('SET', key, 'other-owner', 'PX', 10_000)
  const redlock = new Redlock(clientsFor(t, servers), quick)
  t.false(await redlock.acquireLock(key, 10_000))
  t.deepEqual(await valuesOn(servers, key), ['other-owner', 'other-owner', 'other-owner', null, null])
  for (const s of servers) await s.command('DEL', key)
})

test('a minority held elsewhere does not stop the lock', async (t) => {
  const key = resource(t)
  for (const s of servers.slice(0, 2)) await s.command('SET', key, 'other-owner', 'PX', 10_000)
  const redlock = new Redlock(clientsFor(t, servers), quick)
  t.true(await redlock.acquireLock(key, 10_000))
  const values = await valuesOn(servers, key)
  t.deepEqual(values.slice(0, 2), ['other-owner', 'other-owner'])
  t.regex(values[2], /^[0-9a-f]{32}$/)
  await redlock.releaseLock(key, true)
  t.deepEqual(await valuesOn(servers, key), ['other-owner', 'other-owner', null, null, null])
  for (const s of servers) await s.command('DEL', key)
})

test('a lock whose TTL leaves no validity after drift is not acquired, and nothing is left', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), { retryCount: 0 })
  const key = resource(t)
  // ttl 2 ms: drift is round(0.02) + 2 = 2 ms, so validity can never be > 0.
  t.is(await redlock.acquireLock(key, 2), null)
  await sleep(20)
  t.deepEqual(await valuesOn(servers, key), Array(5).fill(null))
})

test('lock values are fresh random 128-bit hex strings', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers.slice(0, 1)))
  const seen = new Set()
  for (let i = 0; i < 20; i++) {
    const key = resource(t)
    t.true(await redlock.acquireLock(key, 10_000))
    const [v] = await valuesOn(servers.slice(0, 1), key)
    t.regex(v, /^[0-9a-f]{32}$/)
    seen.add(v)
    await redlock.releaseLock(key, true)
  }
  t.is(seen.size, 20)
})

test('settings and clients are readable, with node-redlock defaults', async (t) => {
  const clients = clientsFor(t, servers.slice(0, 3))
  const redlock = new Redlock(clients)
  t.deepEqual({ ...redlock.settings }, {
    driftFactor: 0.01,
    retryCount: 10,
    retryDelay: 200,
    retryJitter: 100,
    automaticExtensionThreshold: 500,
    fencing: false,
    waitReplicas: 0,
    maxDuration: 300_000,
    restartQuarantine: true,
  })
  t.deepEqual([...redlock.clients], clients)
  t.is(redlock.clients[1], clients[1])
  const custom = new Redlock(new Set(clients), { retryCount: 0, retryDelay: 0, driftFactor: 0 })
  t.is(custom.settings.retryCount, 0)
  t.is(custom.settings.retryDelay, 0)
  t.is(custom.settings.driftFactor, 0)
  t.is(custom.clients.length, 3)
})

// Found by an audit: the seed's releaseLock of an expired lock retried for the whole retry
// window and then rejected when most nodes were down (a Lock's release resolves).
test('releaseLock of an expired lock resolves at once even with most nodes down, as a Lock\'s release does', async (t) => {
  const stores = [new MemoryStore(), new MemoryStore(), new MemoryStore()]
  const redlock = new Redlock(stores)
  t.true(await redlock.acquireLock('seed:expired', 300))
  stores[0].down()
  stores[1].down()
  await sleep(400)
  const started = Date.now()
  await t.notThrowsAsync(redlock.releaseLock('seed:expired', true))
  t.true(Date.now() - started < 1_000, `resolved ${Date.now() - started} ms after the call`)
})
