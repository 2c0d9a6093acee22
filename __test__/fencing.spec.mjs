// Fencing tokens: computed over a quorum, strictly increasing per resource across
// Redlock instances, one token for a multi-resource lock, monotonic when a minority of
// nodes restarts empty.
import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { clientsFor, lib, resource, sleep, useServers } from './helpers.mjs'

const { Redlock } = lib
const servers = useServers(test, 3)

test('no fencing by default; fences strictly increase across instances when on', async (t) => {
  const plain = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  const unfenced = await plain.acquire([key], 1_000)
  t.is(unfenced.fence, undefined)
  await unfenced.release()
  const a = new Redlock(clientsFor(t, servers), { fencing: true })
  const b = new Redlock(clientsFor(t, servers), { fencing: true })
  const fences = []
  for (let i = 0; i < 10; i++) {
    const lock = await (i % 2 ? b : a).acquire([key], 1_000)
    t.is(typeof lock.fence, 'bigint')
    fences.push(lock.fence)
    const extended = await lock.extend(1_000)
    t.is(extended.fence, lock.fence, 'an extension keeps the fence')
    await extended.release()
  }
  for (let i = 1; i < fences.length; i++) t.true(fences[i] > fences[i - 1], `${fences}`)
  // Per-call setting, on an instance without fencing.
  const perCall = await plain.acquire([key], 1_000, { fencing: true })
  t.true(perCall.fence > fences.at(-1))
  await perCall.release()
})

test('a multi-resource lock gets one fence above every earlier fence of each resource', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), { fencing: true })
  const [x, y] = [resource(t), resource(t)]
  for (let i = 0; i < 3; i++) await (await redlock.acquire([x], 1_000)).release()
  const onY = await redlock.acquire([y], 1_000)
  await onY.release()
  const both = await redlock.acquire([x, y], 1_000)
  t.true(both.fence > 3n)
  t.true(both.fence > onY.fence)
  await both.release()
  t.true((await redlock.acquire([y], 1_000)).fence > both.fence, 'y continues above the shared fence')
})

test('the seed API keeps the fence readable with fenceOf', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), { fencing: true })
  const key = resource(t)
  t.is(redlock.fenceOf(key), undefined)
  t.true(await redlock.acquireLock(key, 1_000))
  const first = redlock.fenceOf(key)
  t.is(typeof first, 'bigint')
  await redlock.releaseLock(key, true)
  t.is(redlock.fenceOf(key), undefined)
  t.true(await redlock.acquireLock(key, 1_000))
  t.true(redlock.fenceOf(key) > first)
  await redlock.releaseLock(key, true)
  t.throws(() => redlock.fenceOf(''), { instanceOf: TypeError })
})

for (const [name, settings, pause] of [
  ['with the restart quarantine (each sits out maxDuration)', { maxDuration: 1_000 }, 1_100],
  ['without the restart quarantine', { restartQuarantine: false }, 0],
]) {
  test(`fences stay monotonic when a minority of nodes restarts empty, one after the other, ${name}`, async (t) => {
    const own = await startServers(3)
    t.teardown(() => stopServers(own))
    const redlock = new Redlock(clientsFor(t, own, { connectTimeout: 500 }), { fencing: true, retryCount: 3, retryDelay: 50, ...settings })
    const key = resource(t)
    const fences = []
    const take = async () => {
      const lock = await redlock.acquire([key], 1_000)
      fences.push(lock.fence)
      await lock.release()
    }
    for (let i = 0; i < 3; i++) await take()
    for (const node of own) {
      await node.kill() // its counters are lost with it
      await node.start()
      await take()
      await take()
      await sleep(pause) // the next restart only once this one is trusted again
    }
    for (let i = 1; i < fences.length; i++) t.true(fences[i] > fences[i - 1], `${fences}`)
  })
}

test('two nodes, one restarted empty: once its quarantine is over, fenced acquires go on (half the nodes lost their counters: read as they are)', async (t) => {
  const stores = [new lib.MemoryStore({ name: 'a' }), new lib.MemoryStore({ name: 'b' })]
  const redlock = new Redlock(stores, { fencing: true, maxDuration: 1_000, retryCount: 0 })
  t.teardown(() => redlock.quit())
  const first = await redlock.acquire(['res'], 500)
  await first.release()
  stores[0].clear() // a restart without its data
  await redlock.acquire(['warm-up'], 500).then((l) => l.release(), () => {}) // finds it restarted
  await sleep(1_200)
  const fences = []
  for (let k = 0; k < 3; k++) {
    const lock = await redlock.acquire(['res'], 500)
    fences.push(lock.fence)
    await lock.release()
  }
  t.true(fences.every((f, k) => f > (k ? fences[k - 1] : first.fence)), `${first.fence} then ${fences}`)
})

// Found by an audit: a lock read back from JSON (toJSON writes the fence as a decimal
// string) kept the string through extend() and new Lock(), so `lock.fence + 1n` was "11".
test('a fenced lock read back from JSON extends into a Lock whose fence is a bigint; a fence that is no number is a TypeError before any call', async (t) => {
  const redlock = new Redlock([new lib.MemoryStore()], { fencing: true })
  t.teardown(() => redlock.quit())
  const lock = await redlock.acquire([resource(t)], 5_000)
  const json = JSON.parse(JSON.stringify(lock))
  t.is(json.fence, String(lock.fence))
  const extended = await redlock.extend(json, 5_000)
  t.is(extended.fence, lock.fence)
  t.is(new lib.Lock(redlock, json.resources, json.value, [], json.expiration, json.fence).fence, lock.fence)
  const bad = { ...JSON.parse(JSON.stringify(extended)), fence: 'x1' }
  await t.throwsAsync(redlock.extend(bad, 5_000), { instanceOf: TypeError, message: /^lock\.fence must be a bigint/ })
  t.true(extended.expiration > Date.now(), 'the refused extend left the lock as it was')
  await redlock.release(bad) // the release does not need the fence
})
