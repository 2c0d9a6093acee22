// Restart safety on real servers: a node that restarted without its data sits out of
// acquires (and fence reads) until it has been up for settings.maxDuration, so that a
// second client cannot win a quorum that includes a node which forgot the first one's lock.
import test from 'ava'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'
import { TcpProxy } from '../scripts/tcp-proxy.mjs'
import { lib, resource, sleep, valuesOn } from './helpers.mjs'

const { MemoryStore, Redis, Redlock, ExecutionError } = lib

const RECORDS = 'redlock-rs:nodes'
const opts = { connectTimeout: 300, commandTimeout: 300 }

async function servers(t, n) {
  const list = await startServers(n)
  t.teardown(() => stopServers(list))
  return list
}

function redlockOf(t, ports, settings) {
  const redlock = new Redlock(ports.map((port) => new Redis({ port, ...opts })), settings)
  t.teardown(() => redlock.quit())
  return redlock
}

/** A server's identity as records name it: its run_id (and replication ID once promoted). */
const runIdOf = async (server) => {
  const runId = /run_id:(\w+)/.exec(await server.command('INFO', 'server'))[1]
  const replication = await server.command('INFO', 'replication')
  const promoted = !/second_repl_offset:-1\b/.test(replication)
  return promoted ? `${runId}/${/master_replid:(\w+)/.exec(replication)[1]}` : runId
}

async function eventually(check, ms, what) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms`)
    await sleep(20)
  }
}

/**
 * The contract's scenario up to B: A holds `key` on {1,2,3} (it reaches 4 and 5 only
 * through proxies that answer nothing), its record of node 3 is on node 1, and node 3
 * restarted empty.
 */
async function restartedUnderA(t, settings) {
  const all = await servers(t, 5)
  const ports = all.map((s) => s.port)
  const proxies = await Promise.all([all[3], all[4]].map((s) => new TcpProxy(s.port).start()))
  t.teardown(() => Promise.all(proxies.map((p) => p.stop())))
  for (const p of proxies) p.mode = 'blackhole'
  const a = redlockOf(t, [ports[0], ports[1], ports[2], proxies[0].port, proxies[1].port], settings)
  const key = resource(t)
  const held = await a.acquire([key], 2_500)
  t.deepEqual((await valuesOn(all, key)).map(Boolean), [true, true, true, false, false])
  const before = await runIdOf(all[2])
  const recordOf3 = (i) => all[i].command('HGET', RECORDS, `127.0.0.1:${ports[2]}`)
  await eventually(async () => (await recordOf3(0)) === before && (await recordOf3(1)) === before, 2_000, 'the record of node 3 on nodes 1 and 2')
  await all[2].kill()
  await all[2].start() // empty: it forgot A's lock
  t.not(await runIdOf(all[2]), before)
  return { all, ports, key, held, before, recordOf3, restartedAt: Date.now() }
}

test.serial('A holds {1,2,3} (4 and 5 unreachable for it); 3 restarts empty; B is refused until the quarantine is over, then wins with a greater fence', async (t) => {
  const settings = { fencing: true, maxDuration: 3_000, retryCount: 0 }
  const { all, ports, key, held, restartedAt } = await restartedUnderA(t, settings)

  // B reaches all five and never met node 3 before: its peers tell it that node 3 restarted.
  const b = redlockOf(t, ports, settings)
  const refused = await t.throwsAsync(b.acquire([key], 2_500), { instanceOf: ExecutionError })
  t.is(refused.reason, 'quorum-unavailable')
  const quarantined = refused.cause.errors.find((e) => e.message.includes(`:${ports[2]}:`))
  t.regex(quarantined.message, /restarted or replaced .* sits out lock acquisitions for another \d+ ms \(settings\.maxDuration\)/)
  t.deepEqual((await valuesOn(all, key)).map((v) => v === held.value), [true, true, false, false, false], 'B left nothing behind')

  // Without the quarantine, B would be a second holder while A holds: the hazard itself.
  const unsafe = redlockOf(t, ports, { ...settings, restartQuarantine: false })
  const second = await unsafe.acquire([key], 1_000)
  t.is(second.fence, held.fence, 'two holders at once, with the same fence')
  await second.release()

  // Once A's lock has expired and node 3 has been up for maxDuration, B acquires, with a fence above A's.
  await sleep(Math.max(0, held.expiration - Date.now(), restartedAt + 3_000 - Date.now()) + 100)
  const next = await b.acquire([key], 2_500)
  t.true(next.fence > held.fence, `fence ${next.fence} after ${held.fence}`)
  // The restarted node is trusted again: its new identity is recorded on its peers.
  const after = await runIdOf(all[2])
  await eventually(async () => (await all[0].command('HGET', RECORDS, `127.0.0.1:${ports[2]}`)) === after, 2_000, 'the new record of node 3')
  await next.release()
})

test.serial('fences stay above earlier ones after a node restarts empty, also for a later quorum of that node and one that never saw the last token', async (t) => {
  // Three nodes. X, cut off from node 1, takes tokens on {2, 3}; node 3 restarts empty and
  // sits out its quarantine; Y, cut off from node 2, then reaches node 1 (never saw X's
  // tokens) and node 3 (forgot them). Node 2 kept its data, so a majority did: Y must not
  // get a token at or below X's. Node 3 reads 0 for the counter it lost: Y is refused
  // until node 2 answers again (or a token was written to node 3 since).
  const all = await servers(t, 3)
  const settings = { fencing: true, maxDuration: 1_500, retryCount: 0 }
  const proxied = async () => {
    const proxies = await Promise.all(all.map((s) => new TcpProxy(s.port).start()))
    t.teardown(() => Promise.all(proxies.map((p) => p.stop())))
    return proxies
  }
  const [px, py] = [await proxied(), await proxied()]
  const [x, y] = [px, py].map((ps) => redlockOf(t, ps.map((p) => p.port), settings))
  const key = resource(t)
  for (const r of [x, y]) await (await r.acquire([`${key}:warm-up`], 500)).release() // every node met, and recorded
  px[0].mode = 'blackhole'
  let last
  for (let k = 0; k < 3; k++) {
    last = await x.acquire([key], 500)
    await last.release()
  }
  await all[2].kill()
  await all[2].start() // empty: it forgot X's tokens
  await sleep(1_500) // and it sits out its quarantine (its uptime is in whole seconds: a little longer)

  py[1].mode = 'blackhole'
  let refused
  const quarantined = (e) => e?.cause?.errors?.some((x) => /sits out lock acquisitions/.test(x.message))
  await eventually(async () => !quarantined((refused = await y.acquire([key], 500).then(() => null, (e) => e))), 5_000, 'the end of the quarantine')
  t.true(refused instanceof ExecutionError, 'Y is refused')
  t.is(refused.reason, 'quorum-unavailable')
  const lost = refused.cause?.errors?.find((e) => e.message.includes(`:${py[2].port}:`))
  t.regex(lost?.message ?? String(refused.cause), /restarted without its data .* fencing counter of this resource is unknown/)
  // A client that never met node 3 before learns it from node 3 itself.
  const z = redlockOf(t, py.map((p) => p.port), settings)
  await t.throwsAsync(z.acquire([key], 500), { instanceOf: ExecutionError })

  // With node 2 back, the token is read where it was kept, and written to node 3 again.
  py[1].mode = 'pass'
  py[1].reset()
  const next = await y.acquire([key], 500, { retryCount: 5 })
  t.true(next.fence > last.fence, `fence ${next.fence} after ${last.fence}`)
  await next.release()
  // Node 3 knows the counter again (its mark says so once the token reached it): node 2
  // is not needed any more.
  const fenceKey = `{${key}}:redlock-rs:fence`
  await eventually(async () => (await all[2].command('HGET', 'redlock-rs:data-lost', fenceKey)) !== null, 2_000, 'the counter named known again')
  py[1].mode = 'blackhole'
  py[1].reset()
  const after = await z.acquire([key], 500, { retryCount: 5 })
  t.true(after.fence > next.fence, `fence ${after.fence} after ${next.fence}`)
  await after.release()

  // Later X, cut off from node 3 now, takes a token on {1, 2}, and node 1 restarts empty.
  // Node 3's mark (counter known again, but older than that token) must not let Y, cut
  // off from node 2, read its token from {1, 3}.
  px[0].mode = 'pass'
  px[0].reset()
  px[2].mode = 'blackhole'
  px[2].reset()
  const latest = await x.acquire([key], 500, { retryCount: 5 })
  await latest.release()
  await all[0].kill()
  await all[0].start()
  await sleep(1_500)
  py[1].mode = 'blackhole'
  py[1].reset()
  await eventually(async () => !quarantined((refused = await y.acquire([key], 500).then(() => null, (e) => e))), 5_000, 'the end of the quarantine')
  t.true(refused instanceof ExecutionError, `Y is refused (not given ${refused?.fence} after ${latest.fence})`)
})

test.serial('a call with a lower maxDuration does not shorten the quarantine, nor record the restarted node over its old identity', async (t) => {
  const settings = { maxDuration: 20_000, retryCount: 0 }
  const { ports, key, held, before, recordOf3 } = await restartedUnderA(t, settings)
  await sleep(1_200)
  const b = redlockOf(t, ports, settings)
  const e = await t.throwsAsync(b.acquire([key], 500, { maxDuration: 1_000 }), { instanceOf: ExecutionError })
  t.is(e.reason, 'quorum-unavailable')
  t.regex(e.cause.errors.find((x) => x.message.includes(`:${ports[2]}:`)).message, /sits out lock acquisitions for another \d+ ms/)
  // A new client with the defaults is refused too: the old identity is still on record.
  const c = redlockOf(t, ports, { retryCount: 0 })
  await t.throwsAsync(c.acquire([key], 500), { instanceOf: ExecutionError })
  t.is(await recordOf3(0), before)
  t.true(held.expiration > Date.now(), 'A still held its lock meanwhile')
})

for (const [delay, what] of [[5, 'a little slower than the others'], [15, '30 ms away (a new client waits for them up to 250 ms, half its commandTimeout at most; 100 ms before)']]) {
test.serial(`peers that answer ${what} still tell a newcomer that a node restarted`, async (t) => {
  const settings = { maxDuration: 20_000, retryCount: 0 }
  const { all, ports, key, held, before, recordOf3 } = await restartedUnderA(t, settings)
  // B reaches nodes 1 and 2 (the only ones with A's record of node 3) `delay` ms late each way.
  const slow = await Promise.all([all[0], all[1]].map((s) => new TcpProxy(s.port).start()))
  t.teardown(() => Promise.all(slow.map((p) => p.stop())))
  for (const p of slow) {
    p.mode = 'delay'
    p.delayMs = delay
  }
  const b = new Redlock([slow[0].port, slow[1].port, ...ports.slice(2)].map((port) => new Redis({ port, connectTimeout: 1_000, commandTimeout: 1_000 })), settings)
  t.teardown(() => b.quit())
  const e = await t.throwsAsync(b.acquire([key], 1_000), { instanceOf: ExecutionError })
  t.is(e.reason, 'quorum-unavailable')
  t.deepEqual((await valuesOn(all, key)).map((v) => v === held.value), [true, true, false, false, false])
  t.is(await recordOf3(0), before, 'the old identity stays on record')
  t.is(await recordOf3(1), before)
})
}

test('a client that met the node before the restart notices it too (its own memory), without the peers', async (t) => {
  const [server] = await servers(t, 1)
  const redlock = redlockOf(t, [server.port], { maxDuration: 60_000, retryCount: 0 })
  await (await redlock.acquire([resource(t)], 1_000)).release()
  await server.kill()
  await server.start()
  const e = await t.throwsAsync(redlock.acquire([resource(t)], 1_000), { instanceOf: ExecutionError })
  t.is(e.reason, 'quorum-unavailable')
  t.regex(e.cause.errors[0].message, /run_id or replication ID changed/)
  t.is(await redlock.acquireLock(resource(t), 1_000), null, 'the seed API says null')
  // Extends and releases may still use it.
  await t.notThrowsAsync(redlock.acquire([resource(t)], 1_000, { restartQuarantine: false }).then((l) => l.release()))
})

test.serial('clients that name a node differently (localhost, 127.0.0.1) meet each other\'s records: a restart is noticed', async (t) => {
  const all = await servers(t, 3)
  const settings = { retryCount: 0, maxDuration: 20_000 }
  const named = (host) => {
    const redlock = new Redlock(all.map((s) => new Redis({ host, port: s.port, ...opts })), settings)
    t.teardown(() => redlock.quit())
    return redlock
  }
  const a = named('localhost')
  await (await a.acquire([resource(t)], 1_000)).release() // A meets every node
  const key = resource(t)
  all[2].pause()
  const held = await a.acquire([key], 15_000) // on nodes 1 and 2
  all[2].resume()
  await eventually(async () => (await all[2].command('GET', key)) !== null, 2_000, 'the straggler on node 3')
  await all[2].command('DEL', key) // as if node 3 never got it
  const before = await runIdOf(all[1])
  await eventually(async () => (await all[0].command('HGET', RECORDS, `localhost:${all[1].port}`)) === before, 2_000, 'the record of node 2')
  await all[1].kill()
  await all[1].start() // empty: it forgot A's lock
  const b = named('127.0.0.1') // meets nodes 2 and 3 only
  all[0].pause()
  try {
    const refused = await t.throwsAsync(b.acquire([key], 5_000), { instanceOf: ExecutionError })
    t.is(refused.reason, 'quorum-unavailable')
    t.regex(refused.cause.errors.map((e) => e.message).join('\n'), /restarted or replaced/)
  } finally {
    all[0].resume()
  }
  t.true(held.expiration > Date.now(), 'A still holds its lock')
})

test('fresh servers are usable at once, and record each other', async (t) => {
  const all = await servers(t, 3)
  const redlock = redlockOf(t, all.map((s) => s.port), { retryCount: 0 })
  const lock = await redlock.acquire([resource(t)], 1_000)
  await lock.release()
  const ids = await Promise.all(all.map(runIdOf))
  await eventually(async () => {
    const recorded = await all[1].command('HGET', RECORDS, `127.0.0.1:${all[0].port}`)
    return recorded === ids[0]
  }, 2_000, 'node 1 recorded on node 2')
  t.is(await all[0].command('HGET', RECORDS, `127.0.0.1:${all[0].port}`), null, 'a node holds no record of itself')
})

// Found by a regression hunt: the replication ID, taken into the identity to notice a
// master demoted and promoted back, also changes when a master's replicas have been gone
// for repl-backlog-ttl (no restart, no promotion, no data lost): the master was marked as
// having lost its data, and a fence could then go backwards. Only a promoted master's
// identity names its replication ID.
test('a master whose replicas went away (a new replication ID, no promotion) is the same server: not marked, not held out', async (t) => {
  const all = await servers(t, 3)
  const [replica] = await servers(t, 1)
  await replica.command('REPLICAOF', '127.0.0.1', String(all[0].port))
  await eventually(async () => /master_link_status:up/.test(await replica.command('INFO', 'replication')), 10_000, 'the replica in sync')
  const replidOf = async () => /master_replid:(\w+)/.exec(await all[0].command('INFO', 'replication'))[1]
  const ports = all.map((s) => s.port)
  const first = redlockOf(t, ports, { retryCount: 0, fencing: true })
  await (await first.acquire([resource(t)], 1_000)).release()
  const before = await replidOf()
  await replica.command('REPLICAOF', 'NO', 'ONE')
  await all[0].command('CONFIG', 'SET', 'repl-backlog-ttl', '1')
  await eventually(async () => (await replidOf()) !== before, 10_000, 'a new replication ID')
  await all[0].command('CLIENT', 'KILL', 'TYPE', 'normal') // the first client reconnects
  await all[2].kill() // and the master is needed for a quorum
  for (const redlock of [first, redlockOf(t, ports, { retryCount: 0, fencing: true })]) {
    const lock = await redlock.acquire([resource(t)], 1_000)
    await lock.release()
  }
  t.is(await all[0].command('EXISTS', 'redlock-rs:data-lost'), 0, 'not marked as having lost its data')
})

test('a majority restarted: refused with the quarantine, usable at once with restartQuarantine: false', async (t) => {
  const all = await servers(t, 3)
  const ports = all.map((s) => s.port)
  const guarded = redlockOf(t, ports, { retryCount: 0 })
  const trusting = redlockOf(t, ports, { retryCount: 0, restartQuarantine: false })
  await (await guarded.acquire([resource(t)], 1_000)).release()
  await (await trusting.acquire([resource(t)], 1_000)).release()
  await eventually(async () => (await all[2].command('HGET', RECORDS, `127.0.0.1:${ports[0]}`)) !== null, 2_000, 'records')
  await Promise.all([all[0].kill(), all[1].kill()])
  await Promise.all([all[0].start(), all[1].start()])
  const e = await t.throwsAsync(guarded.acquire([resource(t)], 1_000), { instanceOf: ExecutionError })
  t.is(e.reason, 'quorum-unavailable')
  // A new client learns it from the surviving node's records.
  const newcomer = redlockOf(t, ports, { retryCount: 0 })
  await t.throwsAsync(newcomer.acquire([resource(t)], 1_000), { instanceOf: ExecutionError })
  const lock = await trusting.acquire([resource(t)], 1_000)
  await lock.release()
  t.pass()
})

test('a MemoryStore is not recorded on the Redis servers: the next process (or a parallel one) has another store of the same name, which is trusted', async (t) => {
  const [server] = await servers(t, 1)
  // The stores of one run of a test file, next to a shared redis-server...
  const first = new Redlock([new MemoryStore({ name: 'a' }), new MemoryStore({ name: 'b' }), new Redis({ port: server.port, ...opts })], { retryCount: 0 })
  t.teardown(() => first.quit())
  await (await first.acquire([resource(t)], 1_000)).release()
  await sleep(100) // identities are recorded in the background
  t.deepEqual(await server.command('HGETALL', RECORDS), [], 'the stores are not recorded on the server')
  // ...and of the next run: new stores with the same names, one of them down.
  const stores = [new MemoryStore({ name: 'a' }), new MemoryStore({ name: 'b' })]
  const next = new Redlock([...stores, new Redis({ port: server.port, ...opts })], { retryCount: 0 })
  t.teardown(() => next.quit())
  stores[1].down()
  const lock = await next.acquire([resource(t)], 1_000)
  t.deepEqual(stores[0].keys(), lock.resources)
  await lock.release()
})

// Found by an audit: connections dropped twice in a row (CLIENT KILL, as a proxy or a
// failover does) made the next acquire fail on every node ("the server changed while its
// identity was being checked"): the check's own command reconnected, and that was taken
// for a change of server. The servers never restarted; the key is free.
test.serial('connections dropped while their server is checked are checked again, not refused: the servers did not change', async (t) => {
  const list = await servers(t, 3)
  const redlock = redlockOf(t, list.map((s) => s.port), { retryCount: 0 })
  const kill = () => Promise.all(list.map((s) => s.command('CLIENT', 'KILL', 'TYPE', 'normal')))
  for (let round = 0; round < 5; round++) {
    const first = await redlock.acquire([resource(t)], 2000)
    await kill()
    await first.release() // sent again on new connections
    await kill()
    const name = resource(t)
    const lock = await redlock.acquire([name], 2000)
    t.true((await valuesOn(list, name)).filter((v) => v === lock.value).length >= 2)
    await lock.release()
    t.true(await redlock.acquireLock(resource(t), 2000))
  }
})
