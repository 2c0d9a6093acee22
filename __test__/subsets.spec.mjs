// Every subset of 5 nodes pre-locked by another owner (32 cases): acquired iff at least 3
// nodes are free, and a failed attempt leaves no key of ours anywhere.
import test from 'ava'

import { clientsFor, lib, resource, useServers, valuesOn } from './helpers.mjs'

const { Redlock, ExecutionError } = lib
const servers = useServers(test, 5)

test('all 32 subsets of pre-locked nodes', async (t) => {
  const redlock = new Redlock(clientsFor(t, servers), { retryCount: 0 })
  for (let mask = 0; mask < 32; mask++) {
    const key = resource(t)
    const held = servers.map((_, i) => (mask >> i) & 1)
    await Promise.all(servers.map((s, i) => (held[i] ? s.command('SET', key, 'other-owner', 'PX', 10_000) : null)))
    const free = held.filter((h) => !h).length
    const label = `locked nodes ${held.join('')}`
    if (free >= 3) {
      const lock = await redlock.acquire([key], 5_000)
      const values = await valuesOn(servers, key)
      t.deepEqual(
        values.map((v, i) => (held[i] ? v === 'other-owner' : v === lock.value || v === null)),
        Array(5).fill(true),
        label,
      )
      t.true(values.filter((v) => v === lock.value).length >= 3, label)
      await lock.release()
    } else {
      const err = await t.throwsAsync(redlock.acquire([key], 5_000), { instanceOf: ExecutionError }, label)
      const stats = await err.attempts[0]
      t.is(stats.votesAgainst.size >= 3, true, label)
    }
    // Nothing of ours is left, and the other owner's keys are untouched.
    t.deepEqual(await valuesOn(servers, key), held.map((h) => (h ? 'other-owner' : null)), label)
  }
})
