// Server faults: killed, paused, unreachable, restarted. Each test has its own servers.
import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { clientsFor, lib, quick, resource, sleep, valuesOn } from './helpers.mjs'

const { Redis, Redlock } = lib

async function servers(t, n) {
  const list = await startServers(n)
  t.teardown(() => stopServers(list))
  return list
}

test('2 of 5 servers killed: the lock is still acquired and released', async (t) => {
  const all = await servers(t, 5)
  const redlock = new Redlock(clientsFor(t, all, { connectTimeout: 500 }), quick)
  await Promise.all([all[0].kill(), all[3].kill()])
  const key = resource(t)
  t.true(await redlock.acquireLock(key, 10_000))
  const alive = [all[1], all[2], all[4]]
  const values = await valuesOn(alive, key)
  t.is(values.filter((v) => /^[0-9a-f]{32}$/.test(v)).length, 3)
  await redlock.releaseLock(key, true)
  t.deepEqual(await valuesOn(alive, key), [null, null, null])
})

test('3 of 5 servers killed: acquireLock resolves null and leaves no key on the survivors', async (t) => {
  const all = await servers(t, 5)
  const redlock = new Redlock(clientsFor(t, all, { connectTimeout: 500 }), quick)
  await Promise.all([all[0].kill(), all[2].kill(), all[4].kill()])
  const key = resource(t)
  t.is(await redlock.acquireLock(key, 10_000), null)
  t.deepEqual(await valuesOn([all[1], all[3]], key), [null, null])
})

test('servers killed while their connections are open count as failures, not hangs', async (t) => {
  const all = await servers(t, 3)
  const clients = clientsFor(t, all, { connectTimeout: 500 })
  await Promise.all(clients.map((c) => c.call('PING'))) // connections are up
  const redlock = new Redlock(clients, quick)
  await all[0].kill()
  await all[1].kill()
  const key = resource(t)
  t.is(await redlock.acquireLock(key, 10_000), null)
  t.deepEqual(await valuesOn([all[2]], key), [null])
})

test('a paused server (SIGSTOP): acquire and release still finish within the command time-out', async (t) => {
  const all = await servers(t, 3)
  const clients = clientsFor(t, all, { commandTimeout: 300 })
  await Promise.all(clients.map((c) => c.call('PING')))
  const redlock = new Redlock(clients, { retryCount: 0 })
  all[1].pause()
  t.teardown(() => all[1].resume())
  const key = resource(t)
  let started = Date.now()
  t.true(await redlock.acquireLock(key, 10_000))
  t.true(Date.now() - started < 2_000, 'no hang on the paused node')
  started = Date.now()
  await redlock.releaseLock(key, true)
  t.true(Date.now() - started < 2_000)
  t.deepEqual(await valuesOn([all[0], all[2]], key), [null, null])
})

test('a single paused server: acquireLock resolves null after its command time-out', async (t) => {
  const [server] = await servers(t, 1)
  const [client] = clientsFor(t, [server], { commandTimeout: 300 })
  await client.call('PING')
  const redlock = new Redlock([client], { retryCount: 0 })
  server.pause()
  t.teardown(() => server.resume())
  const started = Date.now()
  t.is(await redlock.acquireLock(resource(t), 10_000), null)
  const elapsed = Date.now() - started
  t.true(elapsed >= 250 && elapsed < 3_000, `took ${elapsed} ms`)
  await t.throwsAsync(client.get('x'), { message: /no reply within 300 ms/ })
  server.resume()
  t.is(await client.get('x'), null, 'usable again once the server answers')
})

test('an unreachable server rejects commands within connectTimeout, naming host:port', async (t) => {
  const [server] = await servers(t, 1)
  const port = server.port
  await server.stop()
  const client = new Redis({ port, connectTimeout: 500 })
  t.teardown(() => client.quit())
  const started = Date.now()
  const err = await t.throwsAsync(client.get('x'))
  t.true(err.message.includes(`127.0.0.1:${port}`), err.message)
  t.true(Date.now() - started < 3_000)
})

test('a connect that never completes (blackholed) is bounded by connectTimeout', async (t) => {
  // A listening socket that never answers: TCP connects, the Redis handshake never does.
  const net = await import('node:net')
  const sockets = []
  const silent = net.createServer((s) => sockets.push(s))
  await new Promise((r) => silent.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    sockets.forEach((s) => s.destroy())
    silent.close()
  })
  const { port } = silent.address()
  const client = new Redis({ port, password: 'hunter2', connectTimeout: 300, commandTimeout: 300 })
  t.teardown(() => client.quit())
  const started = Date.now()
  const err = await t.throwsAsync(client.get('x'))
  t.regex(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`))
  t.false(err.message.includes('hunter2'))
  t.true(Date.now() - started < 3_000)
  const redlock = new Redlock([client], { retryCount: 0 })
  t.is(await redlock.acquireLock('x', 1_000), null)
})

test('a restarted server is used again without user action', async (t) => {
  const all = await servers(t, 1)
  const [client] = clientsFor(t, all, { connectTimeout: 500 })
  await client.set('k', 'v')
  await all[0].kill()
  await t.throwsAsync(client.get('k'))
  await all[0].start()
  t.is(await client.get('k'), null, 'reconnected (the data died with the process)')
  const redlock = new Redlock([client], { retryCount: 0 })
  t.true(await redlock.acquireLock(resource(t), 1_000))
})

test('a server restarted between commands is reconnected transparently', async (t) => {
  const all = await servers(t, 1)
  const [client] = clientsFor(t, all, { connectTimeout: 500 })
  await client.set('k', 'v')
  await all[0].kill()
  await all[0].start()
  await sleep(50)
  // The old connection is dead; the command is resent on a new one.
  t.is(await client.get('k'), null)
})

test('a node restarted empty while a lock is held: the remaining majority still excludes others', async (t) => {
  const all = await servers(t, 3)
  const owner = new Redlock(clientsFor(t, all, { connectTimeout: 500 }), { fencing: true })
  const rival = new Redlock(clientsFor(t, all, { connectTimeout: 500 }), { retryCount: 2, retryDelay: 20, fencing: true })
  const key = resource(t)
  const lock = await owner.acquire([key], 10_000)
  await all[0].kill()
  await all[0].start() // empty: it forgot the lock
  t.deepEqual(await valuesOn(all, key), [null, lock.value, lock.value])
  await t.throwsAsync(rival.acquire([key], 10_000), { instanceOf: lib.ExecutionError })
  t.is(await rival.acquireLock(key, 10_000), false)
  t.deepEqual(await valuesOn(all, key), [null, lock.value, lock.value], 'the failed attempts left nothing')
  const extended = await lock.extend(10_000)
  await extended.release()
  const next = await rival.acquire([key], 10_000)
  t.true(next.fence > lock.fence, 'fencing stays monotonic')
  await next.release()
})
