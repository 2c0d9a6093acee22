// The lock scripts on real servers: a contended workload of every kind of lock (one
// resource with its waiting line, several resources, fencing, semaphore permits, read and
// write holds, extends, waiters that give up and leave the line) must not make a single
// script fail on any server. The in-process MemoryStore runs its own copy of each script,
// so only a real server shows a Lua error (one in the line's release went unnoticed: the
// script kept the lock for the next waiter, then failed before announcing it).
import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { clientsFor, eventually, lib, quick, resource, sleep, useServers } from './helpers.mjs'

const { Redlock } = lib
const servers = useServers(test, 3)

/** The `EVALSHA` calls of `server` and how many of them failed. */
async function evalshaStats(server) {
  const line = (await server.command('INFO', 'commandstats')).split('\n').find((l) => l.startsWith('cmdstat_evalsha:'))
  const field = (name) => Number(line?.match(new RegExp(`${name}=(\\d+)`))?.[1] ?? 0)
  return { calls: field('calls'), failed: field('failed_calls') + field('rejected_calls') }
}

test('a contended workload of every lock kind makes no script fail on any server', async (t) => {
  const before = await Promise.all(servers.map(evalshaStats))
  const key = resource(t)
  const end = Date.now() + 2500
  let attempts = 0
  let gaveUp = 0
  const loop = async (take) => {
    while (Date.now() < end) {
      try {
        const lock = await take()
        attempts += (await Promise.all(lock.attempts)).length
        await sleep(1)
        if (lock.kind === 'mutex') await lock.extend(2_000)
        await lock.release()
      } catch (error) {
        if (!(error instanceof lib.ExecutionError)) throw error
        gaveUp += 1 // a waiter that gave up (and left the line)
      }
    }
  }
  const work = []
  for (let p = 0; p < 3; p++) {
    // Each Redlock is a process of its own as far as the lock is concerned.
    const patient = new Redlock(clientsFor(t, servers), { retryCount: -1, retryDelay: 30, retryJitter: 10 })
    const impatient = new Redlock(clientsFor(t, servers), quick)
    for (let w = 0; w < 2; w++) {
      work.push(loop(() => patient.acquire([`${key}:one`], 2_000)))
      work.push(loop(() => impatient.acquire([`${key}:one`], 2_000)))
      work.push(loop(() => patient.acquire([`${key}:a`, `${key}:b`], 2_000)))
      work.push(loop(() => patient.acquire([`${key}:fenced`], 2_000, { fencing: true })))
      work.push(loop(() => patient.semaphore(`${key}:sem`, 2).acquire(2_000)))
      const rw = patient.readWriteLock(`${key}:rw`)
      work.push(loop(() => (w === 0 ? rw.write : rw.read).acquire(2_000)))
    }
  }
  await Promise.all(work)
  const after = await Promise.all(servers.map(evalshaStats))
  t.true(attempts > work.length, `contended: ${attempts} attempts`)
  t.true(gaveUp > 0, 'some waiters gave up')
  after.forEach((s, i) => {
    t.true(s.calls - before[i].calls > 100, `scripts ran on server ${i}`)
    t.is(s.failed - before[i].failed, 0, `failed script calls on server ${i}`)
  })
})

test('scripts flushed from the servers (SCRIPT FLUSH) are loaded again: the command that met NOSCRIPT is sent once more', async (t) => {
  const own = await startServers(3) // not the shared servers: NOSCRIPT counts as a failed call
  t.teardown(() => stopServers(own))
  const redlock = new Redlock(clientsFor(t, own), { retryCount: 0 })
  const key = resource(t)
  const lock = await redlock.acquire([`${key}:a`, `${key}:b`], 2_000) // a lock script
  await Promise.all(own.map((s) => s.command('SCRIPT', 'FLUSH')))
  const extended = await lock.extend(5_000)
  // (Decided at the quorum: the last server, which meets NOSCRIPT too, may answer later.)
  const onEvery = (check) => eventually(async () => (await Promise.all(own.map(check))).every(Boolean), 2_000)
  await onEvery(async (s) => (await s.command('PTTL', `${key}:b`)) > 2_000) // extended on every server
  for (const s of own) t.is(await s.command('GET', `${key}:a`), lock.value)
  await Promise.all(own.map((s) => s.command('SCRIPT', 'FLUSH')))
  await extended.release()
  await onEvery(async (s) => (await s.command('EXISTS', `${key}:a`, `${key}:b`)) === 0) // released on every server
  // Each server refused an EVALSHA after each flush (the request sent at once, then the
  // usual way, which loads the script), and ran it after the reload.
  for (const stats of await Promise.all(own.map(evalshaStats))) t.true(stats.failed >= 2 && stats.failed <= 4, `${stats.failed} refused`)
})
