// Redis Cluster: real 3-master clusters (redis-cli --cluster create). Keys are routed by
// slot; a multi-resource lock across slots is refused with the hash-tag fix; with hash
// tags it works; a Redlock over three independent clusters gives each one vote.
import { createRequire } from 'node:module'

import test from 'ava'

import { rawCommand, startServers, stopServers } from '../scripts/redis-servers.mjs'
import { clusterReady, createCluster, lib, resource, sleep } from './helpers.mjs'

const require = createRequire(import.meta.url)
const IORedis = require('ioredis')
const { Cluster, Redis, Redlock } = lib

async function startCluster() {
  const servers = await startServers(3, { args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'] })
  return createCluster(servers)
}

/** A 3-master cluster of this test's own, stopped after it. */
async function ownCluster(t) {
  const servers = await startCluster()
  t.teardown(() => stopServers(servers))
  return servers
}

/** A Redlock's nodes: one Cluster client whose startup nodes are `servers`. */
const clusterNode = (servers) => [new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })))]

/** The server of `servers` that owns `key`'s slot. */
async function ownerOf(servers, key) {
  const slot = await rawCommand(servers[0].port, ['CLUSTER', 'KEYSLOT', key])
  const ranges = await rawCommand(servers[0].port, ['CLUSTER', 'SLOTS'])
  const [, , [, port]] = ranges.find(([from, to]) => slot >= from && slot <= to)
  return servers.find((s) => s.port === port)
}

/** A key named after `key` whose slot another shard than `shard` serves. */
async function keyElsewhere(servers, key, shard) {
  for (let n = 0; ; n++) {
    if ((await ownerOf(servers, `${key}:${n}`)) !== shard) return `${key}:${n}`
  }
}

const clusters = []
test.before(async () => {
  clusters.push(...(await Promise.all([startCluster(), startCluster(), startCluster()])))
})
test.after.always(async () => {
  await Promise.all(clusters.map((c) => stopServers(c)))
})

test('commands are routed by slot', async (t) => {
  const [servers] = clusters
  const cluster = new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })))
  t.teardown(() => cluster.quit())
  t.is(Redis.Cluster, Cluster)
  for (const key of ['a', 'b', 'c', 'orders:1', 'orders:2', 'users:9']) {
    await cluster.set(key, `v-${key}`)
    t.is(await cluster.get(key), `v-${key}`)
    t.is(await (await ownerOf(servers, key)).command('GET', key), `v-${key}`, `${key} lives on its slot's master`)
  }
  t.is(await cluster.del('a'), 1)
  const fromString = new Cluster([`127.0.0.1:${servers[1].port}`])
  t.is(await fromString.get('b'), 'v-b')
  await fromString.quit()
})

test('a lock on one cluster; multi-resource locks need one slot', async (t) => {
  const [servers] = clusters
  const redlock = new Redlock([new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })))], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const key = resource(t)
  const lock = await redlock.acquire([key], 2_000)
  t.is(await (await ownerOf(servers, key)).command('GET', key), lock.value)
  await lock.release()
  const err = await t.throwsAsync(redlock.acquire(['order:1:items', 'order:1:payment'], 2_000), { instanceOf: TypeError })
  t.regex(err.message, /hash slots/)
  t.regex(err.message, /\{order:42\}:items/)
  const tagged = await redlock.acquire(['{order:1}:items', '{order:1}:payment'], 2_000, { fencing: true })
  const owner = await ownerOf(servers, '{order:1}:items')
  t.is(await owner.command('GET', '{order:1}:items'), tagged.value)
  t.is(await owner.command('GET', '{order:1}:payment'), tagged.value)
  t.is(typeof tagged.fence, 'bigint')
  await tagged.release()
  t.is(await owner.command('GET', '{order:1}:items'), null)
})

test('names with a } and no hash tag (a}b, {}x) lock, wait, fence and release on a cluster: the library\'s keys stay in their slot', async (t) => {
  const [servers] = clusters
  const nodes = servers.map((s) => ({ host: '127.0.0.1', port: s.port }))
  const redlock = new Redlock([new Cluster(nodes)], { retryCount: 10, retryDelay: 50, retryJitter: 0 })
  t.teardown(() => redlock.quit())
  const tag = resource(t).replace(/[{}]/g, '')
  for (const name of [`${tag}a}b`, `{}${tag}x`, `${tag}u{}v`]) {
    const lock = await redlock.acquire([name], 2_000, { fencing: true })
    t.is(typeof lock.fence, 'bigint', name)
    t.is(await (await ownerOf(servers, name)).command('GET', name), lock.value, name)
    const waiting = redlock.acquire([name], 2_000) // retries: joins the waiting line
    await sleep(80)
    await lock.release()
    await (await waiting).release()
    await redlock.using([name], 1_000, async () => {})
    const permit = await redlock.semaphore(name, 2).acquire(1_000)
    await permit.release()
    const write = await redlock.readWriteLock(name).write.acquire(1_000)
    await write.release()
    t.is(await (await ownerOf(servers, name)).command('GET', name), null, name)
  }
})

test('a release while the resource\'s slot migrates (TRYAGAIN for scripts on several keys) releases the lock', async (t) => {
  const servers = clusters[1] // (its slots are put back as they were)
  const nodes = servers.map((s) => ({ host: '127.0.0.1', port: s.port }))
  const redlock = new Redlock([new Cluster(nodes, { commandTimeout: 1_000 })], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const key = resource(t)
  const slot = String(await rawCommand(servers[0].port, ['CLUSTER', 'KEYSLOT', key]))
  const source = await ownerOf(servers, key)
  const target = servers.find((s) => s !== source)
  const id = async (s) => String(await s.command('CLUSTER', 'MYID'))
  await (await redlock.acquire([`{${key}}:warm`], 1_000)).release() // connected
  await target.command('CLUSTER', 'SETSLOT', slot, 'IMPORTING', await id(source))
  await source.command('CLUSTER', 'SETSLOT', slot, 'MIGRATING', await id(target))
  t.teardown(async () => {
    for (const s of servers) await s.command('CLUSTER', 'SETSLOT', slot, 'NODE', await id(source))
  })
  const reader = new Cluster(nodes) // follows ASK, as the locks' commands do
  t.teardown(() => reader.quit())
  const lock = await redlock.acquire([key], 10_000)
  t.is(await reader.get(key), lock.value)
  await lock.release()
  t.is(await reader.get(key), null)
  t.true(await redlock.acquireLock(key, 10_000))
  await redlock.releaseLock(key, true)
  t.is(await reader.get(key), null)
})

test('waiting across processes on a cluster: the waiting line lives in the resource\'s slot, and the waiter gets the lock at the release', async (t) => {
  const [servers] = clusters
  const nodes = servers.map((s) => ({ host: '127.0.0.1', port: s.port }))
  const holder = new Redlock([new Cluster(nodes)])
  const waiter = new Redlock([new Cluster(nodes)], { retryCount: -1, retryDelay: 30, retryJitter: 0 })
  t.teardown(() => Promise.all([holder.quit(), waiter.quit()]))
  const key = resource(t)
  const owner = await ownerOf(servers, key)
  const held = await holder.acquire([key], 5_000)
  const waiting = waiter.acquire([key], 5_000)
  const line = `{${key}}:redlock-rs:line`
  const deadline = Date.now() + 5_000
  while ((await owner.command('ZCARD', line)) !== 1) {
    if (Date.now() > deadline) t.fail('the waiter never took its place in the line')
    await sleep(10)
  }
  await held.release()
  const got = await waiting
  t.is(await owner.command('GET', key), got.value)
  await got.release()
  t.is(await owner.command('GET', key), null)
  t.is(await owner.command('EXISTS', line), 0, 'its ticket left the line')
})

test('semaphores and read-write locks on a cluster: their keys share the resource\'s slot', async (t) => {
  const [servers] = clusters
  const redlock = new Redlock([new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })))], { retryCount: 0, fencing: true })
  t.teardown(() => redlock.quit())
  const name = resource(t)
  const sem = redlock.semaphore(name, 2)
  const [a, b] = [await sem.acquire(2_000), await sem.acquire(2_000)]
  await t.throwsAsync(sem.acquire(2_000), { instanceOf: lib.ExecutionError })
  t.is(await sem.holders(), 2)
  t.true(b.fence > a.fence)
  await Promise.all([a.release(), b.release()])
  const rw = redlock.readWriteLock(name)
  const r = await rw.read.acquire(2_000)
  await t.throwsAsync(rw.write.acquire(2_000), { instanceOf: lib.ExecutionError })
  await r.release()
  const w = await rw.write.acquire(2_000)
  await w.release()
  // The keys live on the master of the resource's slot (its hash tag).
  const owner = await ownerOf(servers, `{${name}}`)
  const permit = await sem.acquire(2_000)
  const slots = await Promise.all([0, 1].map((slot) => owner.command('GET', `{${name}}:redlock-rs:sem:${slot}`)))
  t.is(slots.filter((v) => v === permit.value).length, 1, 'the permit holds one of the 2 slots there')
  await permit.release()
})

test('a Redlock over three independent clusters: each cluster is one vote (also through ioredis Clusters, whatever the form of their startup nodes)', async (t) => {
  const clients = clusters.map((servers) => new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port }))))
  const redlock = new Redlock(clients, { retryCount: 0 })
  // ioredis' forms of a startup node: a port, "host:port", { host, port }.
  const forms = [(port) => port, (port) => `127.0.0.1:${port}`, (port) => ({ host: '127.0.0.1', port })]
  const rival = new Redlock(clusters.map((servers, i) => new IORedis.Cluster([forms[i](servers[0].port)], { lazyConnect: true })), { retryCount: 0 })
  t.teardown(() => Promise.all([redlock.quit(), rival.quit()]))
  const key = resource(t)
  const lock = await redlock.acquire([key], 5_000)
  const stats = await lock.attempts[0]
  t.is(stats.membershipSize, 3)
  t.is(stats.quorumSize, 2)
  for (const servers of clusters) t.is(await (await ownerOf(servers, key)).command('GET', key), lock.value)
  await t.throwsAsync(rival.acquire([key], 5_000), { instanceOf: lib.ExecutionError })
  await lock.release()
  const theirs = await rival.acquire([key], 5_000)
  await theirs.release()
  // One cluster gone entirely: still a quorum of two.
  await stopServers(clusters[2])
  const survivor = await redlock.acquire([resource(t)], 5_000)
  await survivor.release()
  t.pass()
})

test('a shard whose master restarted empty sits out of acquires on its slots until up for maxDuration; other shards do not', async (t) => {
  const servers = await ownCluster(t)
  const nodes = () => clusterNode(servers)
  const maxDuration = 4_000
  const first = new Redlock(nodes(), { retryCount: 0, maxDuration })
  t.teardown(() => first.quit())
  const key = resource(t)
  const owner = await ownerOf(servers, key)
  let elsewhere = null
  for (let n = 0; elsewhere === null; n++) {
    if ((await ownerOf(servers, `${key}:${n}`)) !== owner) elsewhere = `${key}:${n}`
  }
  await first.acquire([key], 3_000)
  await sleep(100) // the shard's identity is recorded (on another shard) in the background

  // The shard's master restarts without its data (the cluster config survives: same slots).
  await owner.kill()
  await owner.start()
  await clusterReady(servers)
  t.is(await owner.command('GET', key), null, 'the restart lost the lock')

  // A new client, whose first contact is after the restart, learns it from the records.
  const second = new Redlock(nodes(), { retryCount: 0, maxDuration })
  t.teardown(() => second.quit())
  const refused = await t.throwsAsync(second.acquire([key], 1_000), { instanceOf: lib.ExecutionError })
  t.is(refused.reason, 'quorum-unavailable')
  t.regex(refused.cause.errors[0].message, new RegExp(`127\\.0\\.0\\.1:${owner.port}: restarted or replaced .* sits out`))
  // The client that held the lock noticed the dropped connection and checks again.
  await t.throwsAsync(first.acquire([key], 1_000), { instanceOf: lib.ExecutionError })
  // Slots of other shards are not held up.
  const other = await second.acquire([elsewhere], 1_000)
  await other.release()
  // Without the quarantine the restarted shard is used at once (the hazard it closes).
  const unchecked = new Redlock(nodes(), { retryCount: 0, maxDuration, restartQuarantine: false })
  t.teardown(() => unchecked.quit())
  const early = await unchecked.acquire([key], 1_000)
  await early.release()
  // Once the shard's master has been up for maxDuration, it is trusted again.
  await sleep(maxDuration)
  const later = await second.acquire([key], 1_000)
  await later.release()
})

test('a shard whose master is down does not hold up locks on the other shards (cluster-require-full-coverage no)', async (t) => {
  const servers = await ownCluster(t)
  const key = resource(t)
  const down = await ownerOf(servers, key)
  const alive = await keyElsewhere(servers, key, down)
  const owner = await ownerOf(servers, alive)
  for (const s of servers) await s.command('CONFIG', 'SET', 'cluster-require-full-coverage', 'no')
  await down.kill()
  const redlock = new Redlock([new Cluster(servers.filter((s) => s !== down).map((s) => ({ host: '127.0.0.1', port: s.port })), { connectTimeout: 500, commandTimeout: 2_000 })], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const lock = await redlock.acquire([alive], 2_000)
  t.is(await owner.command('GET', alive), lock.value)
  // (commandTimeout 2 s: the cluster connection stalls for about a second after the
  // death of a master, in redis-rs' slot refresh.)
  await lock.release()
  // The dead shard's own slots are refused, saying why.
  const e = await t.throwsAsync(redlock.acquire([key], 1_000), { instanceOf: lib.ExecutionError })
  t.is(e.reason, 'quorum-unavailable')
})

// Found by an audit: a client made while one master was frozen (SIGSTOP, a hung host)
// spent its whole connect time-out on that master, and could reach no shard at all until
// a failover.
test('a Cluster client made while one master is frozen reaches the other shards', async (t) => {
  const servers = await ownCluster(t)
  const key = resource(t)
  const frozen = await ownerOf(servers, key)
  const alive = await keyElsewhere(servers, key, frozen)
  frozen.pause()
  t.teardown(() => frozen.resume())
  // Every master a startup node, the frozen one first (a regression hunt found a fix that
  // only worked without it).
  const all = [frozen, ...servers.filter((s) => s !== frozen)].map((s) => ({ host: '127.0.0.1', port: s.port }))
  const cluster = new Cluster(all, { connectTimeout: 1_000, commandTimeout: 1_000 })
  t.teardown(() => cluster.quit())
  await cluster.set(alive, 'v')
  t.is(await cluster.get(alive), 'v')
  await t.throwsAsync(cluster.get(key), { message: /no reply within|could not be reached/ })
})

// Found by an audit: a startup node's URL lost its credentials (NOAUTH on a cluster with a
// password), ioredis' redisOptions and port-number startup nodes were not read.
test('startup nodes as URLs with credentials, as port numbers, and redisOptions give every node its password', async (t) => {
  const password = 'cluster-secret'
  const servers = await startServers(3, { password, args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--masterauth', password] })
  t.teardown(() => stopServers(servers))
  await createCluster(servers, { cliArgs: ['-a', password, '--no-auth-warning'] })
  const [a, b] = servers.map((s) => s.port)
  const variants = [
    new Cluster([`redis://:${password}@127.0.0.1:${a}`]),
    new Cluster([a, b], { redisOptions: { password } }),
  ]
  for (const cluster of variants) {
    t.teardown(() => cluster.quit())
    const key = resource(t)
    await cluster.set(key, 'v')
    t.is(await cluster.get(key), 'v')
    t.notRegex(String(cluster), new RegExp(password))
  }
  t.throws(() => new Cluster([`redis://127.0.0.1:${a}/3`]), { instanceOf: RangeError, message: /startupNodes\[0\].*only db 0/ })
  // node-redis v5 createCluster: its root nodes and defaults are read.
  const { createCluster: nodeRedisCluster } = require('redis')
  const nr = nodeRedisCluster({ rootNodes: [{ url: `redis://127.0.0.1:${a}` }], defaults: { password } })
  const redlock = new Redlock([nr], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const lock = await redlock.acquire([resource(t)], 2_000)
  await lock.release()
})

/** A cluster of three masters with one replica each; stopped after the test. */
async function clusterWithReplicas(t) {
  const servers = await startServers(6, { args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'] })
  t.teardown(() => stopServers(servers))
  return createCluster(servers, { replicas: 1 })
}

/** The replica of master `owner` among `servers`, once it is in sync. */
async function replicaOf(servers, owner) {
  const ownerId = await owner.command('CLUSTER', 'MYID')
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(100)) {
    const lines = (await owner.command('CLUSTER', 'NODES')).split('\n')
    const line = lines.find((l) => l.split(' ')[3] === ownerId && !l.includes('fail'))
    const port = line && Number(line.split(' ')[1].split(':')[1].split('@')[0])
    const candidate = servers.find((s) => s.port === port)
    if (candidate && (await candidate.command('INFO', 'replication')).includes('master_link_status:up')) return candidate
  }
  throw new Error(`no replica of ${owner.port} in sync`)
}

// Found by an audit: waitReplicas sent a keyless WAIT, which redis-rs sends to every master
// and answers with the least count: one lagging replica anywhere in the cluster failed
// every lock, with a message untrue of the lock's own master.
test("waitReplicas on a cluster waits for the replicas of the lock's own master", async (t) => {
  const servers = await clusterWithReplicas(t)
  const key = resource(t)
  const owner = await ownerOf(servers, key)
  const other = servers.slice(0, 3).find((s) => s !== owner && s.port !== owner.port)
  const [ownReplica, otherReplica] = [await replicaOf(servers, owner), await replicaOf(servers, other)]
  t.not(ownReplica, otherReplica)
  const redlock = new Redlock([new Cluster(servers.slice(0, 3).map((s) => ({ host: '127.0.0.1', port: s.port })), { commandTimeout: 1_000 })], { retryCount: 0, waitReplicas: 1 })
  t.teardown(() => redlock.quit())
  otherReplica.child.kill('SIGSTOP')
  t.teardown(() => otherReplica.child.kill('SIGCONT'))
  // (A cluster just made may answer its first WAITs late: a few tries.)
  let acquired = null
  for (let tries = 0; acquired === null && tries < 5; tries++) {
    acquired = await redlock.acquire([key], 5_000).catch(() => null)
  }
  t.truthy(acquired, "the lock's master has its replica: the lock is acknowledged")
  await acquired?.release()
})

// Found by an audit: a failover that lost a lock (the replica had not received it, then
// CLUSTER FAILOVER TAKEOVER, the old master alive) moved the slot to the promoted master
// without a connection dropped (MOVED is followed), so a client connected before it never
// checked that master again and took the lost lock at once: two holders. A fresh client
// was refused (the promoted master sits out).
test('after a failover that lost a lock, a client connected before it does not take the lock: the slot\'s new master sits out', async (t) => {
  const servers = await clusterWithReplicas(t)
  const nodes = () => clusterNode(servers.slice(0, 3))
  const key = resource(t)
  const owner = await ownerOf(servers, key)
  const replica = await replicaOf(servers, owner)
  const [holder, rival] = [new Redlock(nodes(), { retryCount: 0 }), new Redlock(nodes(), { retryCount: 2, retryDelay: 50 })]
  t.teardown(() => Promise.all([holder.quit(), rival.quit()]))
  for (const r of [holder, rival]) await (await r.acquire([`${key}:warm`], 1000)).release()
  // The replica loses its link (it can no longer authenticate): the lock is not replicated.
  await replica.command('CONFIG', 'SET', 'masteruser', 'nobody-here')
  await replica.command('CONFIG', 'SET', 'masterauth', 'wrong')
  await replica.command('CLIENT', 'KILL', 'TYPE', 'master')
  await sleep(200)
  const lock = await holder.acquire([key], 20_000)
  t.is(await owner.command('GET', key), lock.value)
  t.is(await replica.command('CLUSTER', 'FAILOVER', 'TAKEOVER'), 'OK')
  await replica.command('CONFIG', 'SET', 'masteruser', '')
  await replica.command('CONFIG', 'SET', 'masterauth', '')
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
    if ((await owner.command('ROLE'))[0] === 'slave') break
  }
  t.is(await replica.command('GET', key), null, 'the failover lost the lock')
  const refused = await t.throwsAsync(rival.acquire([key], 5_000), { instanceOf: lib.ExecutionError })
  t.is(refused.reason, 'quorum-unavailable')
  t.regex(refused.cause.errors[0].message, /changed \(a failover\)|restarted or replaced .* sits out/)
  t.is(await replica.command('GET', key), null, 'the refused attempts left nothing')
  t.true(Date.now() < lock.expiration)
})

// Found by an audit: a master demoted by a failover and promoted back (TAKEOVER) kept its
// run_id, so a client that trusted it before the first failover trusted it again at once,
// though it had missed a lock another client took on its stand-in meanwhile: two holders.
// Its replication ID changes at every promotion, and is now part of its identity.
test('a master demoted by a failover and promoted back sits out for a client that trusted it before: it may lack a lock taken on its stand-in', async (t) => {
  const servers = await clusterWithReplicas(t)
  const maxDuration = 6_000
  const nodes = () => clusterNode(servers.slice(0, 3))
  const key = `{${resource(t)}}`
  const owner = await ownerOf(servers, key)
  const replica = await replicaOf(servers, owner)
  const early = new Redlock(nodes(), { retryCount: 0, maxDuration })
  const holder = new Redlock(nodes(), { retryCount: 0, maxDuration })
  t.teardown(() => Promise.all([early.quit(), holder.quit()]))
  await (await early.acquire([`${key}:warm`], 1_000)).release() // the owner checked and trusted
  const roleOf = async (s) => (await s.command('ROLE'))[0]
  const until = async (done) => {
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(100)) if (await done()) return
    throw new Error('timed out')
  }
  // A graceful failover: the replica takes over, the owner follows it.
  await replica.command('CLUSTER', 'FAILOVER')
  await until(async () => (await roleOf(owner)) === 'slave')
  await clusterReady(servers)
  // The holder waits out the promoted replica's quarantine, then the owner (a replica now)
  // loses its link, and the holder locks the key on the stand-in alone.
  await until(() => holder.acquire([`${key}:warm`], 1_000).then((l) => l.release().then(() => true), () => false))
  await owner.command('CONFIG', 'SET', 'masteruser', 'nobody-here')
  await owner.command('CONFIG', 'SET', 'masterauth', 'wrong')
  await owner.command('CLIENT', 'KILL', 'TYPE', 'master')
  await sleep(200)
  const lock = await holder.acquire([key], maxDuration)
  // The owner takes its slots back without the lock.
  t.is(await owner.command('CLUSTER', 'FAILOVER', 'TAKEOVER'), 'OK')
  await owner.command('CONFIG', 'SET', 'masteruser', '')
  await owner.command('CONFIG', 'SET', 'masterauth', '')
  await until(async () => (await roleOf(owner)) === 'master')
  t.is(await owner.command('GET', key), null, 'the owner missed the lock')
  const refused = await t.throwsAsync(early.acquire([key], 1_000), { instanceOf: lib.ExecutionError })
  t.is(refused.reason, 'quorum-unavailable')
  t.true(Date.now() < lock.expiration)
})

// A regression hunt found that the failover check (the run_id of the master that took the
// key, read by a script) failed every acquire on a cluster for an ACL user without INFO
// (`+@all -@dangerous`): there was nothing to compare with, and the script was refused.
test('an ACL user without INFO (+@all -@dangerous) locks on a cluster', async (t) => {
  const servers = clusters[2]
  for (const s of servers) await s.command('ACL', 'SETUSER', 'no-info', 'on', '>pw', '~*', '&*', '+@all', '-@dangerous')
  t.teardown(() => Promise.all(servers.map((s) => s.command('ACL', 'DELUSER', 'no-info'))))
  const cluster = new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.port })), { username: 'no-info', password: 'pw' })
  const redlock = new Redlock([cluster], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  for (const name of ['a', 'b', 'c', 'd']) {
    const lock = await redlock.acquire([`${resource(t)}:${name}`], 5_000)
    await lock.release()
  }
  t.pass()
})

// Found by a regression hunt: shards are recorded by their slots, so after a reshard (one
// slot moved) a master that restarted empty met no record under its new name and was
// trusted at once: a second holder of a lock it had forgotten. Records are now matched by
// overlapping slots; the master that took the slot is the same server, still trusted.
test('after a reshard, a shard master that restarts empty still sits out; the one that took slots over does not', async (t) => {
  const servers = await ownCluster(t)
  const nodes = () => clusterNode(servers)
  const first = new Redlock(nodes(), { retryCount: 0 })
  t.teardown(() => first.quit())
  const key = resource(t)
  const owner = await ownerOf(servers, key)
  const lock = await first.acquire([key], 30_000)
  await sleep(100) // recorded (on another shard) in the background
  // One slot of the owner's, not the key's, moves to another master.
  const slots = await rawCommand(owner.port, ['CLUSTER', 'SLOTS'])
  const [from] = slots.find(([, , [, port]]) => port === owner.port)
  const keySlot = await rawCommand(owner.port, ['CLUSTER', 'KEYSLOT', key])
  const moved = from === keySlot ? from + 1 : from
  const taker = servers.find((s) => s !== owner)
  const takerId = await taker.command('CLUSTER', 'MYID')
  for (const s of servers) await s.command('CLUSTER', 'SETSLOT', String(moved), 'NODE', takerId)
  await clusterReady(servers)
  let onTaker = null
  for (let n = 0; onTaker === null; n++) {
    if ((await rawCommand(owner.port, ['CLUSTER', 'KEYSLOT', `{${n}}`])) === moved) onTaker = `{${n}}:${key}`
  }
  const second = new Redlock(nodes(), { retryCount: 0 })
  t.teardown(() => second.quit())
  await (await second.acquire([onTaker], 1_000)).release()
  // The owner restarts without its data.
  await owner.kill()
  await owner.start()
  await clusterReady(servers)
  const third = new Redlock(nodes(), { retryCount: 0 })
  t.teardown(() => third.quit())
  const refused = await t.throwsAsync(third.acquire([key], 1_000), { instanceOf: lib.ExecutionError })
  t.regex(refused.cause.errors[0].message, /restarted or replaced .* sits out/)
  t.true(Date.now() < lock.expiration)
  await (await third.acquire([onTaker], 1_000)).release()
})

// A short regression hunt found that matching records by overlapping slots quarantined a
// master added to the cluster as soon as it took a slot from a recorded master (that one
// handed the slot over, and is still a master): it was judged as if it had restarted.
test('a master added to the cluster that takes a slot from a recorded master is trusted', async (t) => {
  const servers = await ownCluster(t)
  const [added] = await startServers(1, { args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'] })
  t.teardown(() => stopServers([added]))
  const nodes = () => clusterNode(servers)
  const first = new Redlock(nodes(), { retryCount: 0 })
  t.teardown(() => first.quit())
  const key = resource(t)
  const owner = await ownerOf(servers, key)
  await (await first.acquire([key], 1_000)).release()
  await sleep(100) // recorded
  await servers[0].command('CLUSTER', 'MEET', '127.0.0.1', String(added.port))
  const addedId = await added.command('CLUSTER', 'MYID')
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
    const known = await Promise.all(servers.map((s) => s.command('CLUSTER', 'NODES')))
    if (known.every((n) => n.includes(addedId))) break
  }
  const slot = await rawCommand(owner.port, ['CLUSTER', 'KEYSLOT', key])
  for (const s of [...servers, added]) await s.command('CLUSTER', 'SETSLOT', String(slot), 'NODE', addedId)
  await clusterReady([...servers, added])
  const second = new Redlock(nodes(), { retryCount: 2, retryDelay: 100 })
  t.teardown(() => second.quit())
  const lock = await second.acquire([key], 1_000)
  t.is(await added.command('GET', key), lock.value)
  await lock.release()
})
