// Authentication (password and ACL users) and TLS with a self-signed CA, on real servers;
// wrong credentials fail clearly without showing the secret.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import util from 'node:util'

import test from 'ava'

import { RedisServer, freePort, rawCommand } from '../scripts/redis-servers.mjs'
import { createCluster, lib, makeCertificates, resource, tlsServer } from './helpers.mjs'

const { Cluster, Redis, RedisJsClient, Redlock } = lib
const require = createRequire(import.meta.url)

test('ACL users: username and password by options and URL; locks work; wrong ones fail without the secret', async (t) => {
  const server = await new RedisServer({ password: 'admin-secret' }).start()
  t.teardown(() => server.stop())
  await server.command('ACL', 'SETUSER', 'locker', 'on', '>locker-secret', '~*', '&*', '+@all')
  const clients = [
    new Redis({ port: server.port, username: 'locker', password: 'locker-secret' }),
    new Redis(`redis://locker:locker-secret@127.0.0.1:${server.port}`),
    new RedisJsClient({ url: `redis://127.0.0.1:${server.port}`, username: 'locker', password: 'locker-secret' }),
  ]
  const redlock = new Redlock(clients, { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const key = resource(t)
  const lock = await redlock.acquire([key], 1_000)
  t.is(await rawCommand(server.port, ['GET', key], { password: 'admin-secret' }), lock.value)
  await lock.release()
  for (const wrong of [
    new Redis({ port: server.port, username: 'locker', password: 'not-the-secret' }),
    new Redis(`redis://nobody:not-the-secret@127.0.0.1:${server.port}`),
  ]) {
    const err = await t.throwsAsync(wrong.get('x'))
    t.regex(err.message, new RegExp(`127\\.0\\.0\\.1:${server.port}`))
    t.regex(err.message, /auth|password|WRONGPASS/i)
    t.false(err.message.includes('not-the-secret'))
    await wrong.quit()
  }
})

// Found by an audit: Redis 7 gives a new ACL user no channels (acl-pubsub-default
// resetchannels), so `ACL SETUSER app on >pw ~* +@all` could acquire but never release:
// the release script's PUBLISH (the waiters' wake-up) failed the whole script.
test('an ACL user without channel permissions (Redis 7 default) acquires, extends, releases, waits and hands over', async (t) => {
  const server = await new RedisServer({ password: 'admin-secret' }).start()
  t.teardown(() => server.stop())
  await server.command('ACL', 'SETUSER', 'app', 'on', '>app-secret', '~*', 'resetchannels', '+@all')
  const client = () => new Redis({ port: server.port, username: 'app', password: 'app-secret' })
  const [a, b] = [new Redlock([client()], { retryCount: 0 }), new Redlock([client()], { retryDelay: 50, retryCount: 40 })]
  t.teardown(() => Promise.all([a.quit(), b.quit()]))
  const key = resource(t)
  const admin = (...args) => rawCommand(server.port, args, { password: 'admin-secret' })
  const lock = await (await a.acquire([key], 1_000)).extend(2_000)
  await lock.release()
  t.is(await admin('EXISTS', key), 0)
  // Contended: a waiter of another instance gets it after the release (by its retries, as
  // it may not subscribe), and a waiter of the same instance by a hand-over.
  const held = await a.acquire([key], 2_000)
  const waiting = b.acquire([key], 1_000)
  const queued = a.acquire([key], 1_000, { retryCount: 40, retryDelay: 50 })
  await new Promise((r) => setTimeout(r, 100))
  await held.release()
  const [first, second] = await Promise.all([waiting, queued].map((p) => p.then(async (l) => (await l.release(), l.value))))
  t.not(first, second)
  t.is(await admin('EXISTS', key), 0)
})

test('a server that echoes a refused AUTH with its arguments (Redis 5 to 6.0, AUTH renamed away): the password stays out of errors and events', async (t) => {
  const net = await import('node:net')
  const secret = 'hunter2-S3CRET'
  // Every command refused as Redis before 6.2 refuses an unknown one, arguments echoed.
  const server = net.createServer((socket) => {
    socket.on('data', (d) => {
      const [name, ...args] = d.toString('latin1').split('\r\n').filter((_, i) => i % 2 === 0 && i > 0)
      socket.write(`-ERR unknown command \`${name}\`, with args beginning with: ${args.map((a) => `\`${a}\`, `).join('')}\r\n`)
    })
    socket.on('error', () => {})
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const client = new Redis({ port: server.address().port, password: secret, connectTimeout: 500, commandTimeout: 500 })
  const redlock = new Redlock([client], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const events = []
  redlock.on('clientError', (e) => events.push(util.inspect(e)))
  const direct = await t.throwsAsync(client.get('k'))
  t.regex(direct.message, /does not know the command 'AUTH'/)
  const failed = await t.throwsAsync(redlock.acquire([resource(t)], 1_000))
  for (const text of [direct.message, util.inspect(direct), util.inspect(failed, { depth: null }), ...events]) t.false(text.includes(secret), text)
})

test('TLS (rediss://) with a self-signed CA; an untrusted certificate is refused', async (t) => {
  const { server, tlsPort, read } = await tlsServer(t)
  const ca = read('ca.crt')
  const clients = [
    new Redis({ host: '127.0.0.1', port: tlsPort, tls: { ca } }),
    new Redis(`rediss://127.0.0.1:${tlsPort}`, { tls: { ca } }),
    new RedisJsClient({ url: `rediss://127.0.0.1:${tlsPort}`, socket: { tls: { ca } } }),
  ]
  const redlock = new Redlock(clients, { retryCount: 0 })
  t.teardown(() => redlock.quit())
  t.is(await clients[0].call('PING'), 'PONG')
  const key = resource(t)
  const lock = await redlock.acquire([key], 1_000)
  t.is(await server.command('GET', key), lock.value, 'written through TLS, read over plain TCP')
  await lock.release()
  // Without the CA the certificate is not trusted.
  const untrusted = new Redis({ host: '127.0.0.1', port: tlsPort, tls: true, connectTimeout: 2_000 })
  const err = await t.throwsAsync(untrusted.get('x'))
  t.regex(err.message, new RegExp(`127\\.0\\.0\\.1:${tlsPort}`))
  await untrusted.quit()
  // rejectUnauthorized: false accepts it (testing only).
  const insecure = new Redis({ host: '127.0.0.1', port: tlsPort, tls: { rejectUnauthorized: false } })
  t.is(await insecure.call('PING'), 'PONG')
  await insecure.quit()
})

// Found by an audit: node-redis' own TLS options (on the socket) were dropped, and a CA read
// with fs.readFileSync (a Buffer) was refused.
test("TLS options as node-redis and node:tls give them: socket.tls true with ca on the socket, Buffers, arrays", async (t) => {
  const { tlsPort, read } = await tlsServer(t)
  const ca = read('ca.crt')
  const clients = [
    new RedisJsClient({ url: `rediss://127.0.0.1:${tlsPort}`, socket: { tls: true, ca } }),
    new RedisJsClient({ socket: { host: '127.0.0.1', port: tlsPort, tls: true, ca: Buffer.from(ca) } }),
    new Redis({ host: '127.0.0.1', port: tlsPort, tls: { ca: [Buffer.from(ca)] } }),
    // A rediss:// URL sets socket.tls itself, as in node-redis (found by an audit).
    new RedisJsClient({ url: `rediss://127.0.0.1:${tlsPort}`, socket: { ca } }),
    // Empty PEM fields are absent, as for Node's tls (`ca: process.env.CA ?? ''`).
    new Redis({ host: '127.0.0.1', port: tlsPort, tls: { ca: '', cert: '', key: Buffer.alloc(0), rejectUnauthorized: false } }),
  ]
  t.teardown(() => Promise.all(clients.map((c) => c.quit())))
  for (const c of clients) t.is(await c.call('PING'), 'PONG')
  t.throws(() => new Redis({ port: tlsPort, tls: { ca: 42 } }), { instanceOf: TypeError, message: /options\.tls\.ca/ })
})

test('TLS: a self-signed server certificate given as tls.ca is trusted (as OpenSSL does); failures are said in plain words', async (t) => {
  const { server, tlsPort, read } = await tlsServer(t, { selfSigned: true })
  const ca = read('server.crt')
  const trusted = new Redis({ host: '127.0.0.1', port: tlsPort, tls: { ca } })
  const redlock = new Redlock([trusted], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  const lock = await redlock.acquire([resource(t)], 1_000)
  t.is(await server.command('GET', lock.resources[0]), lock.value)
  await lock.release()
  t.is(await new Redis({ host: 'localhost', port: tlsPort, tls: { ca } }).call('PING'), 'PONG')
  // Not given: refused, in words that say what to do, not rustls' error names.
  const untrusted = new Redis({ host: '127.0.0.1', port: tlsPort, tls: true, connectTimeout: 2_000 })
  const err = await t.throwsAsync(untrusted.get('x'))
  t.regex(err.message, new RegExp(`127\\.0\\.0\\.1:${tlsPort}: could not connect: TLS failed: .*tls\\.ca`))
  t.notRegex(err.message, /Other|Error\(/)
  await untrusted.quit()
  // Trusted, but for another name than the host's: refused.
  const renamed = new Redis({ host: '127.0.0.1', port: tlsPort, tls: { ca, servername: 'elsewhere.test' }, connectTimeout: 2_000 })
  await t.throwsAsync(renamed.get('x'), { message: /not valid for name/ })
  await renamed.quit()
})

test('TLS: servername checks the certificate against a name other than the host; a client certificate for mutual TLS', async (t) => {
  // A certificate valid for redis.test only, not for 127.0.0.1; a client certificate asked for.
  const { server, tlsPort, read } = await tlsServer(t, { san: 'DNS:redis.test', authClients: true })
  const [ca, cert, key] = [read('ca.crt'), read('client.crt'), read('client.key')]
  const client = (tls) => new Redis({ host: '127.0.0.1', port: tlsPort, tls, connectTimeout: 2_000 })

  const named = client({ ca, cert, key, servername: 'redis.test' })
  t.teardown(() => named.quit())
  t.is(await named.call('PING'), 'PONG')
  const redlock = new Redlock([named], { retryCount: 0 })
  const lock = await redlock.acquire([resource(t)], 1_000)
  t.is(await server.command('GET', lock.resources[0]), lock.value)
  // A waiter listens for the release on its own (pub/sub) TLS connection, checked the same way.
  const waiting = new Redlock([named], { retryCount: 20, retryDelay: 10_000 }).acquire(lock.resources, 1_000)
  while (!/ sub=1 /.test(await server.command('CLIENT', 'LIST'))) await new Promise((r) => setTimeout(r, 20))
  await lock.release()
  await (await waiting).release()

  // Checked against the host (127.0.0.1), or another name: refused, saying why.
  for (const tls of [{ ca, cert, key }, { ca, cert, key, servername: 'other.test' }]) {
    const wrong = client(tls)
    const err = await t.throwsAsync(wrong.get('x'))
    t.regex(err.message, new RegExp(`127\\.0\\.0\\.1:${tlsPort}: could not connect: TLS failed: .*not valid for name`))
    await wrong.quit()
  }
  // The server asks for a client certificate: without one, refused.
  const anonymous = client({ ca, servername: 'redis.test' })
  await t.throwsAsync(anonymous.get('x'), { message: new RegExp(`127\\.0\\.0\\.1:${tlsPort}: `) })
  await anonymous.quit()
  // A file that is not what its field needs is a TypeError naming the field, when the
  // client is made (not a failed connect later).
  for (const [tls, field] of [
    [{ ca: 'not a certificate', servername: 'redis.test' }, /options\.tls\.ca must be PEM text of certificates/],
    [{ ca, cert: key, key }, /options\.tls\.cert must be PEM text of certificates/],
    [{ ca, cert, key: cert }, /options\.tls\.key must be PEM text of a private key/],
    [{ ca, cert }, /options\.tls\.cert and options\.tls\.key go together/],
  ]) {
    t.throws(() => client(tls), { instanceOf: TypeError, message: field })
  }
  t.throws(() => new RedisJsClient({ url: `rediss://127.0.0.1:${tlsPort}`, socket: { tls: true, ca: 'garbage' } }), { instanceOf: TypeError, message: /\.ca must be PEM text/ })
  // PEM armour around something else (found by an audit: it failed every connect instead).
  const armoured = '-----BEGIN CERTIFICATE-----\nQUFBQUFBQUFBQUFB\n-----END CERTIFICATE-----\n'
  t.throws(() => client({ ca: armoured }), { instanceOf: TypeError, message: /options\.tls\.ca must be PEM text of certificates.*not an X\.509 certificate/ })
  // Node's TLS options the connection cannot honour are refused, not left unread (found by
  // an audit: a checkServerIdentity that allowed the address was dropped).
  t.throws(() => client({ ca, checkServerIdentity: () => undefined }), { instanceOf: TypeError, message: /options\.tls\.checkServerIdentity is not supported.*options\.tls\.servername/ })
  // Unless nothing is checked (node:tls then ignores its verdict too).
  const unchecked = client({ cert, key, rejectUnauthorized: false, checkServerIdentity: () => undefined })
  t.is(await unchecked.call('PING'), 'PONG')
  await unchecked.quit()
  t.throws(() => client({ ca, cert, key, passphrase: 'x' }), { instanceOf: TypeError, message: /options\.tls\.passphrase is not supported/ })

  // An ioredis client's encrypted key and its passphrase (node:tls takes both) are read.
  const IORedis = require('ioredis')
  const { createPrivateKey } = await import('node:crypto')
  const encrypted = createPrivateKey(key).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'open sesame' })
  const io = new IORedis({ host: '127.0.0.1', port: tlsPort, lazyConnect: true, tls: { ca, cert, key: encrypted, passphrase: 'open sesame', servername: 'redis.test' } })
  t.teardown(() => io.disconnect())
  const migrated = new Redlock([io], { retryCount: 0 })
  t.teardown(() => migrated.quit())
  await (await migrated.acquire([resource(t)], 1_000)).release()
  const badPhrase = new IORedis({ host: '127.0.0.1', port: tlsPort, lazyConnect: true, tls: { ca, cert, key: encrypted, passphrase: 'wrong' } })
  t.teardown(() => badPhrase.disconnect())
  t.throws(() => new Redlock([badPhrase]), { instanceOf: TypeError, message: /TLS key could not be read with its passphrase/ })
  // Its own checkServerIdentity: Node's default is what the connection does; another is refused.
  const tls = await import('node:tls')
  const checked = new IORedis({ host: '127.0.0.1', port: tlsPort, lazyConnect: true, tls: { ca, cert, key, servername: 'redis.test', checkServerIdentity: tls.checkServerIdentity } })
  t.teardown(() => checked.disconnect())
  const withDefault = new Redlock([checked], { retryCount: 0 })
  t.teardown(() => withDefault.quit())
  await (await withDefault.acquire([resource(t)], 1_000)).release()
  const lenient = new IORedis({ host: '127.0.0.1', port: tlsPort, lazyConnect: true, tls: { ca, checkServerIdentity: () => undefined } })
  t.teardown(() => lenient.disconnect())
  t.throws(() => new Redlock([lenient]), { instanceOf: TypeError, message: /checkServerIdentity is not supported/ })
})

test('a Redis Cluster over TLS with a private CA: the CA reaches every shard\'s connection', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-tls-cluster-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  makeCertificates(dir)
  const tls = ['--tls-cert-file', path.join(dir, 'server.crt'), '--tls-key-file', path.join(dir, 'server.key'),
    '--tls-ca-cert-file', path.join(dir, 'ca.crt'), '--tls-auth-clients', 'no', '--tls-cluster', 'yes']
  const servers = []
  t.teardown(() => Promise.all(servers.map((s) => s.stop())))
  for (let i = 0; i < 3; i++) {
    const tlsPort = await freePort()
    const server = new RedisServer({ args: ['--tls-port', String(tlsPort), ...tls, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'] })
    server.tlsPort = tlsPort
    servers.push(await server.start())
  }
  await createCluster(servers, { ports: servers.map((s) => s.tlsPort), cliArgs: ['--tls', '--cacert', path.join(dir, 'ca.crt')] })
  const ca = readFileSync(path.join(dir, 'ca.crt'), 'utf8')
  const cluster = new Cluster(servers.map((s) => ({ host: '127.0.0.1', port: s.tlsPort })), { tls: { ca }, connectTimeout: 3_000 })
  const redlock = new Redlock([cluster], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  // Keys on every shard: each shard's connection is made with the CA.
  for (const key of ['a', 'b', 'c', resource(t)]) {
    const lock = await redlock.acquire([key], 5_000)
    await lock.release()
  }
  const untrusted = new Cluster([{ host: '127.0.0.1', port: servers[0].tlsPort }], { tls: true, connectTimeout: 2_000 })
  await t.throwsAsync(untrusted.get('a'))
  await untrusted.quit()
})

// Found by an audit: an ExecutionError's attempts list the clients passed in (votesFor,
// votesAgainst), and so do its node errors and a Lock's Redlock; inspecting an ioredis
// client prints its options, password included.
test('util.inspect of errors, their attempts, locks and Redlocks made of ioredis and node-redis clients never shows a password', async (t) => {
  const IORedis = require('ioredis')
  const { createClient } = require('redis')
  const secret = 'inspect-secret-42'
  const server = await new RedisServer({ password: secret }).start()
  t.teardown(() => server.stop())
  const io = new IORedis({ port: server.port, password: secret, lazyConnect: true })
  t.teardown(() => io.disconnect())
  const dead = await freePort()
  const nodeRedis = createClient({ url: `redis://:${secret}@127.0.0.1:${dead}` })
  const redlock = new Redlock([io, nodeRedis, new Redis({ port: dead, password: secret })], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  // Two of the three nodes are down: the acquire fails, with the node errors and the votes.
  const lock = await redlock.acquire([resource(t)], 2_000).catch((error) => error)
  t.true(lock instanceof Error)
  const shown = [util.inspect(lock, { depth: Infinity }), util.inspect(await Promise.all(lock.attempts), { depth: Infinity }), util.inspect(redlock, { depth: Infinity })]
  for (const text of shown) t.false(text.includes(secret), text)
  // Hidden properties too (found by an audit: a node error's client was one).
  t.false(util.inspect(lock, { depth: Infinity, showHidden: true }).includes(secret))
  const wrongSecret = 'wrong-inspect-secret'
  const refused = new Redlock([new IORedis({ port: server.port, password: wrongSecret, lazyConnect: true })], { retryCount: 0 })
  t.teardown(() => refused.quit())
  const failed = await t.throwsAsync(refused.acquire([resource(t)], 2_000))
  t.truthy(failed.cause.errors[0].client, 'the client is still there to read')
  t.false(util.inspect(failed, { depth: Infinity, showHidden: true }).includes(wrongSecret))
  t.regex(shown[1], /node-redis\(127\.0\.0\.1:\d+\)/)
  t.regex(shown[2], /ioredis\(localhost:\d+\)/)
  // The objects themselves are still what the stats and errors hold (the two refusals
  // decide the attempt: the ioredis client's vote may come too late to be in it).
  const [stats] = await Promise.all(lock.attempts)
  t.true(stats.votesAgainst.has(nodeRedis))
  t.is(lock.cause.errors[0].client, nodeRedis)
  const alone = new Redlock([io])
  t.teardown(() => alone.quit())
  const held = await alone.acquire([resource(t)], 2_000)
  t.false(util.inspect(held, { depth: Infinity }).includes(secret))
  // JSON too (found by an audit): what the lock is, never its clients; a fence as a string.
  const json = JSON.parse(JSON.stringify(held))
  t.deepEqual(Object.keys(json).sort(), ['expiration', 'kind', 'resources', 'value'])
  t.false(JSON.stringify(alone).includes(secret), JSON.stringify(alone))
  await held.release()
  // An ioredis Cluster's startup nodes as strings, with the password in the two forms
  // ioredis reads (found by an audit: both were printed), show as host:port.
  const cluster = new IORedis.Cluster([`alice:${secret}@127.0.0.1:${dead}`, `redis://127.0.0.1:${dead}?password=${secret}`, String(dead)], { lazyConnect: true })
  t.teardown(() => cluster.disconnect())
  const overCluster = new Redlock([cluster], { retryCount: 0 })
  t.teardown(() => overCluster.quit())
  t.deepEqual(overCluster.toJSON().clients, [`ioredis Cluster(127.0.0.1:${dead}, 127.0.0.1:${dead}, 127.0.0.1:${dead})`])
  t.false(util.inspect(overCluster, { depth: Infinity }).includes(secret))
  const fenced = new Redlock([io], { fencing: true })
  t.teardown(() => fenced.quit())
  const withFence = await fenced.acquire([resource(t)], 2_000)
  t.is(JSON.parse(JSON.stringify(withFence)).fence, String(withFence.fence))
  await withFence.release()
})

// Found by an audit: README's list of the commands a limited ACL user needs lacked those
// the waiting-line scripts run (ZADD, ZRANGE, TIME, ...): a contended acquire failed on
// every node. The list is read from README itself.
test("an ACL user with exactly README's commands and key patterns runs every kind of lock, contended", async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const commands = /or at least `([A-Z\s]+)`/.exec(readme)[1].split(/\s+/).filter(Boolean)
  t.true(commands.includes('EVALSHA'))
  const server = await new RedisServer({ password: 'admin-secret' }).start()
  t.teardown(() => server.stop())
  const admin = (...args) => rawCommand(server.port, args, { password: 'admin-secret' })
  await admin('ACL', 'SETUSER', 'locker', 'on', '>s', '~locks:*', '~{locks:*}:redlock-rs:*', '~redlock-rs:*', '&redlock-rs:*', '-@all', ...commands.map((c) => `+${c.toLowerCase()}`))
  const client = () => new Redis({ port: server.port, username: 'locker', password: 's', commandTimeout: 1000 })
  const settings = { retryDelay: 50, retryCount: 60, fencing: true }
  const [a, b] = [new Redlock([client()], settings), new Redlock([client()], settings)]
  const errors = []
  for (const r of [a, b]) r.on('error', (e) => errors.push(e.message))
  t.teardown(() => Promise.all([a.quit(), b.quit()]))
  const key = `locks:${resource(t)}`
  const first = await a.acquire([key], 2000)
  const waiter = b.acquire([key], 2000)
  await new Promise((r) => setTimeout(r, 120))
  await (await first.extend(2000)).release()
  const second = await waiter
  t.true(second.fence > first.fence)
  await second.release()
  const sem = [a.semaphore(key, 1), b.semaphore(key, 1)]
  const permit = await sem[0].acquire(2000)
  const next = sem[1].acquire(2000)
  await new Promise((r) => setTimeout(r, 120))
  await permit.release()
  await (await next).release()
  const read = await a.readWriteLock(key).read.acquire(2000)
  const write = b.readWriteLock(key).write.acquire(2000)
  await new Promise((r) => setTimeout(r, 120))
  await read.release()
  await (await write).release()
  t.deepEqual(errors.filter((m) => /NOPERM|permission|can't run/i.test(m)), [])
})
