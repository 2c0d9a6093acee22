// Redis (ioredis-shaped) and RedisJsClient (node-redis-shaped) against real servers.
import { createRequire } from 'node:module'
import util from 'node:util'

import test from 'ava'

import { RedisServer, freePort, rawCommand } from '../scripts/redis-servers.mjs'
import { lib, sleep, useServers } from './helpers.mjs'

const IORedis = createRequire(import.meta.url)('ioredis')

const { Cluster, Redis, RedisJsClient, Redlock } = lib
const servers = useServers(test, 1)
const server = {
  get port() {
    return servers[0].port
  },
  command: (...args) => servers[0].command(...args),
}
const secured = new RedisServer({ password: 'hunter2' })
test.before(() => secured.start())
test.after.always(() => secured.stop())

function client(t, ...args) {
  const c = new Redis(...args)
  t.teardown(() => c.quit())
  return c
}

function jsClient(t, options) {
  const c = new RedisJsClient(options)
  t.teardown(() => c.quit())
  return c
}

// Connections counted by the server (including the raw one that asks).
const connectedClients = async (port) =>
  (await rawCommand(port, ['CLIENT', 'LIST'])).split('\n').filter(Boolean).length

test('Redis accepts an options object, a URL, or a port and host', async (t) => {
  const forms = [
    client(t, { host: '127.0.0.1', port: server.port }),
    client(t, `redis://127.0.0.1:${server.port}`),
    client(t, server.port, '127.0.0.1'),
    client(t, server.port),
    client(t, `redis://127.0.0.1:${server.port}`, { commandTimeout: 1000 }),
  ]
  for (const c of forms) {
    t.is(c.host, '127.0.0.1')
    t.is(c.port, server.port)
    t.is(await c.call('PING'), 'PONG')
  }
  const defaults = client(t, { lazyConnect: true })
  t.is(defaults.host, '127.0.0.1')
  t.is(defaults.port, 6379)
})

test('get, set, del, pttl and call', async (t) => {
  const c = client(t, server.port)
  t.is(await c.get('clients:missing'), null)
  t.is(await c.set('clients:bool', true), undefined)
  t.is(await c.get('clients:bool'), 'true')
  await c.set('clients:false', false)
  t.is(await server.command('GET', 'clients:false'), 'false')
  await c.set('clients:num', 42)
  t.is(await c.get('clients:num'), '42')
  await c.set('clients:float', 1.5)
  t.is(await c.get('clients:float'), '1.5')
  await c.set('clients:str', 'héllo')
  t.is(await c.get('clients:str'), 'héllo')
  await c.set(Buffer.from('clients:buf'), Buffer.from('bytes'))
  t.is(await c.get('clients:buf'), 'bytes')
  t.is(await c.pttl('clients:str'), -1)
  t.is(await c.pttl('clients:missing'), -2)
  t.is(await c.call('SET', 'clients:px', 'v', 'PX', 5000), 'OK')
  const pttl = await c.pttl('clients:px')
  t.true(pttl > 4000 && pttl <= 5000)
  t.is(await c.call('INCRBY', 'clients:counter', 5), 5)
  t.deepEqual(await c.call('MGET', 'clients:str', 'clients:missing'), ['héllo', null])
  t.is(await c.del('clients:bool', 'clients:num', 'clients:missing'), 2)
  t.is(await c.del(['clients:float', 'clients:str']), 2)
  await t.throwsAsync(c.call('NOSUCHCOMMAND'), { message: /^ERR unknown command/ })
  await t.throwsAsync(c.call('GET'), { message: /wrong number of arguments/i })
  // A server's error reply is its own line, as ioredis and node-redis give it.
  await c.call('RPUSH', 'clients:list', 'x')
  await t.throwsAsync(c.call('GET', 'clients:list'), { message: 'WRONGTYPE Operation against a key holding the wrong kind of value' })
  // SET with ioredis' further arguments: applied, and the reply returned.
  t.is(await c.set('clients:nx', 'first', 'PX', 10_000, 'NX'), 'OK')
  t.is(await c.set('clients:nx', 'second', 'NX'), null)
  t.is(await c.get('clients:nx'), 'first')
  t.true((await c.pttl('clients:nx')) > 9_000)
  t.is(await c.set('clients:nx', true, 'GET'), 'first')
  t.is(await c.get('clients:nx'), 'true')
})

test('a blocking command waits as long as it asked to block, on top of the command time-out; one without end waits for its value', async (t) => {
  const c = client(t, { port: server.port, commandTimeout: 300 })
  const started = Date.now()
  t.is(await c.call('BLPOP', 'clients:q1', 1), null)
  t.true(Date.now() - started >= 900, `returned after ${Date.now() - started} ms, as BLPOP's own time-out`)
  const popped = c.call('BLPOP', 'clients:q2', 0)
  await new Promise((r) => setTimeout(r, 600)) // twice the command time-out
  await server.command('RPUSH', 'clients:q2', 'precious')
  t.deepEqual(await popped, ['clients:q2', 'precious'], 'the value went to the caller that waited for it')
  t.is(await c.call('PING'), 'PONG', 'the connection goes on')
  // A command behind a blocking one past the command time-out does not take the
  // connection for a stuck one (which would be replaced, the blocking command cut).
  const id = await c.call('CLIENT', 'ID')
  const blocked = c.call('BLPOP', 'clients:q3', 0)
  await new Promise((r) => setTimeout(r, 600))
  const behind = c.call('PING').catch((e) => e)
  await server.command('RPUSH', 'clients:q3', 'kept')
  t.deepEqual(await blocked, ['clients:q3', 'kept'])
  t.is(await behind, 'PONG')
  t.is(await server.command('LLEN', 'clients:q3'), 0)
  t.is(await c.call('CLIENT', 'ID'), id, 'the same connection')
  // A block time past what a clock can add (the server refuses it) is no crash.
  await t.throwsAsync(c.call('BLPOP', 'clients:q4', '1e300'), { message: /timeout/ })
  t.is(await c.call('PING'), 'PONG')
})

test('clients are event emitters as ioredis and node-redis clients are: connect/ready, error, close/end', async (t) => {
  const { once } = await import('node:events')
  const c = client(t, { port: server.port })
  const ready = once(c, 'ready')
  await ready
  t.is(await c.call('PING'), 'PONG')
  const lazy = client(t, { port: server.port, lazyConnect: true })
  let connected = false
  lazy.once('connect', () => (connected = true))
  await new Promise((r) => setTimeout(r, 50))
  t.false(connected, 'a lazy client connects only when asked')
  await lazy.connect()
  t.true(connected)
  const js = jsClient(t, { url: `redis://127.0.0.1:${server.port}` })
  await once(js, 'ready')
  const down = client(t, { port: 1, connectTimeout: 300 })
  const [error] = await once(down, 'error')
  t.regex(error.message, /127\.0\.0\.1:1: could not connect/)
  const ended = once(c, 'end')
  await c.quit()
  await ended
})

test('Redis takes a port as a string of digits (as ioredis); Cluster reads as its first startup node', async (t) => {
  const byString = client(t, String(server.port), { lazyConnect: true })
  t.is(byString.port, server.port)
  t.is(byString.host, '127.0.0.1')
  const cluster = new Cluster([{ host: '127.0.0.1', port: server.port }, '127.0.0.1:7001'], { lazyConnect: true })
  t.teardown(() => cluster.quit())
  t.is(cluster.host, '127.0.0.1')
  t.is(cluster.port, server.port)
})

// Found by an audit: forms ioredis and node-redis take that were refused, and URLs shown wrong.
test('ports as strings of digits in options, "host:port" as the address, URL db range, user names and IPv6 shown as URLs carry them', async (t) => {
  const c = client(t, { port: String(server.port), lazyConnect: true })
  t.is(await c.call('PING'), 'PONG')
  const j = jsClient(t, { socket: { host: '127.0.0.1', port: String(server.port) } })
  t.is(await j.call('PING'), 'PONG')
  const hostPort = client(t, `127.0.0.1:${server.port}`)
  t.is(hostPort.port, server.port)
  t.is(await hostPort.call('PING'), 'PONG')
  t.throws(() => new Redis(`redis://127.0.0.1:${server.port}/4294967295`), { instanceOf: TypeError, message: /database number from 0 to 2147483647/ })
  const named = client(t, { port: 1, username: 'a@b:c', password: 'x', lazyConnect: true })
  t.is(named.url, 'redis://a%40b%3Ac:***@127.0.0.1:1')
  const six = new Cluster(['redis://[::1]:7000'], { lazyConnect: true })
  t.teardown(() => six.quit())
  t.regex(String(six), /\[::1\]:7000/)
  t.throws(() => new Redis({ sentinels: [5], name: 'm', lazyConnect: true }), { instanceOf: TypeError, message: /options\.sentinels\[0\].*got number/ })
  // A Redis server given as a sentinel: said the right way round.
  const notSentinel = client(t, { sentinels: [{ host: '127.0.0.1', port: server.port }], name: 'm', connectTimeout: 1_000 })
  const e = await t.throwsAsync(notSentinel.get('x'))
  t.regex(e.message, /not a sentinel/)
})

test("a Cluster takes ioredis' per-node redisOptions time-outs when the top level gives none", async (t) => {
  const net = await import('node:net')
  const silent = net.createServer(() => {})
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => silent.close())
  const cluster = new Cluster([silent.address().port], { lazyConnect: true, redisOptions: { connectTimeout: 300 } })
  t.teardown(() => cluster.quit())
  const started = Date.now()
  const e = await t.throwsAsync(cluster.get('x'))
  t.regex(e.message, /300 ms/)
  t.true(Date.now() - started < 5_000, `${Date.now() - started} ms (the default connectTimeout is 10 s)`)
})

test('call() refuses commands that would change the connection every command shares', async (t) => {
  const c = client(t, server.port)
  for (const args of [['SUBSCRIBE', 'x'], ['select', 1], ['CLIENT', 'REPLY', 'OFF'], ['MONITOR'], ['QUIT'], ['HELLO', 3]]) {
    t.throws(() => c.call(...args), { instanceOf: TypeError, message: /^call\('[A-Z]+'\) is refused: / }, args.join(' '))
  }
  t.is(await c.call('CLIENT', 'GETNAME'), null, 'other CLIENT subcommands pass')
  t.is(await c.call('PING'), 'PONG', 'the connection is as it was')
})

test('RedisJsClient: what the URL says wins over the other options, as in node-redis', async (t) => {
  const c = jsClient(t, { url: `redis://127.0.0.1:${server.port}/3`, database: 5, socket: { port: 1 } })
  t.is(c.port, server.port)
  t.is(c.url, `redis://127.0.0.1:${server.port}/3`)
  const portless = jsClient(t, { url: 'redis://127.0.0.1', socket: { port: server.port } })
  t.is(portless.port, server.port, 'a URL without a port keeps socket.port')
  t.is(await portless.call('PING'), 'PONG')
})

test('RedisJsClient takes node-redis options', async (t) => {
  const c = jsClient(t, { url: `redis://127.0.0.1:${server.port}`, database: 2 })
  t.is(c.url, `redis://127.0.0.1:${server.port}/2`)
  t.is(c.host, '127.0.0.1')
  t.is(c.port, server.port)
  await c.set('clients:db2', 'two')
  t.is(await server.command('GET', 'clients:db2'), null, 'not in db 0')
  const inDb2 = client(t, { port: server.port, db: 2 })
  t.is(await inDb2.get('clients:db2'), 'two')
  const viaSocket = jsClient(t, { socket: { host: '127.0.0.1', port: server.port, connectTimeout: 1000 } })
  t.is(await viaSocket.get('clients:db2'), null)
  const viaUrlDb = client(t, `redis://127.0.0.1:${server.port}/2`)
  t.is(await viaUrlDb.get('clients:db2'), 'two')
  // Found by an audit: ioredis reads `?db=` (and `?password=`) from the query, and the
  // lock keys of a client that ignored it went to db 0, where other processes never look.
  const viaQuery = client(t, `redis://127.0.0.1:${server.port}?db=2`)
  t.is(await viaQuery.get('clients:db2'), 'two')
  t.is(await client(t, `redis://127.0.0.1:${server.port}/0?db=2`).get('clients:db2'), null, 'the path wins, as in ioredis')
  t.throws(() => new Redis(`redis://127.0.0.1:${server.port}?db=two`), { instanceOf: TypeError, message: /db in the query/ })
  // node-redis ignores the query: so does RedisJsClient (its processes and node-redis' meet in one db).
  t.is(await jsClient(t, { url: `redis://127.0.0.1:${server.port}?db=2` }).get('clients:db2'), null)
})

test('password authentication, and a wrong password fails without showing the secret', async (t) => {
  const ok = client(t, { port: secured.port, password: 'hunter2' })
  await ok.set('auth:k', 'v')
  t.is(await ok.get('auth:k'), 'v')
  const viaUrl = jsClient(t, { url: `redis://:hunter2@127.0.0.1:${secured.port}` })
  t.is(await viaUrl.get('auth:k'), 'v')
  const viaOption = jsClient(t, { url: `redis://127.0.0.1:${secured.port}`, password: 'hunter2' })
  t.is(await viaOption.get('auth:k'), 'v')
  const wrong = client(t, { port: secured.port, password: 'wrong-secret-123' })
  const err = await t.throwsAsync(wrong.get('auth:k'))
  t.regex(err.message, new RegExp(`127\\.0\\.0\\.1:${secured.port}`))
  t.false(err.message.includes('wrong-secret-123'))
  const none = client(t, { port: secured.port })
  const noAuth = await t.throwsAsync(none.get('auth:k'))
  t.regex(noAuth.message, /NOAUTH|auth/i)
})

test('passwords never appear in inspect, toString, url or errors', async (t) => {
  const secret = 'pa55-w0rd-x'
  const clients = [
    client(t, `redis://user:${secret}@127.0.0.1:1/3`, { lazyConnect: true }),
    client(t, { port: 1, password: secret, lazyConnect: true }),
    jsClient(t, { url: `redis://:${secret}@127.0.0.1:1` }),
  ]
  for (const c of clients) {
    const shown = [util.inspect(c), String(c), c.url, util.inspect(c, { showHidden: true, depth: 5 }), JSON.stringify(c)]
    for (const s of shown) t.false(String(s).includes(secret), String(s))
    const err = await t.throwsAsync(c.get('x'))
    t.false(err.message.includes(secret))
    t.false(util.inspect(err).includes(secret))
  }
  t.is(clients[0].url, 'redis://user:***@127.0.0.1:1/3')
})

test.serial('lazyConnect waits for the first command; otherwise the client connects at once', async (t) => {
  const before = await connectedClients(server.port)
  const lazy = client(t, { port: server.port, lazyConnect: true })
  await sleep(100)
  t.is(await connectedClients(server.port), before, 'no connection yet')
  t.is(await lazy.call('PING'), 'PONG')
  t.is(await connectedClients(server.port), before + 1)
  client(t, { port: server.port })
  await sleep(100)
  t.is(await connectedClients(server.port), before + 2, 'eager client connected by itself')
  // Listened to, a lazy client reports the connection its first command makes (found by an
  // audit: no event came), and its failure.
  const heard = []
  const listened = client(t, { port: server.port, lazyConnect: true })
  for (const e of ['connect', 'ready']) listened.on(e, () => heard.push(e))
  await sleep(50)
  t.deepEqual(heard, [], 'nothing before the first command')
  await listened.get('x')
  await sleep(20)
  t.deepEqual(heard, ['connect', 'ready'])
  const failing = client(t, { port: 1, lazyConnect: true, connectTimeout: 500 })
  const errors = []
  failing.on('error', (e) => errors.push(e))
  await t.throwsAsync(failing.get('x'))
  await sleep(20)
  t.is(errors.length, 1)
})

test('commands issued before the connection is up wait for it', async (t) => {
  const c = client(t, server.port)
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => c.call('ECHO', `m${i}`)))
  t.deepEqual(results, Array.from({ length: 50 }, (_, i) => `m${i}`))
})

test.serial('one connection per client, shared by concurrent callers', async (t) => {
  const before = await connectedClients(server.port)
  const c = client(t, server.port)
  await Promise.all(Array.from({ length: 100 }, (_, i) => c.set(`clients:many:${i}`, i)))
  t.is(await connectedClients(server.port), before + 1)
})

test.serial('quit closes gracefully; later commands reject with "Connection is closed."', async (t) => {
  const before = await connectedClients(server.port)
  const c = new Redis(server.port)
  await c.call('PING')
  await c.quit()
  await sleep(50)
  t.is(await connectedClients(server.port), before)
  await t.throwsAsync(c.get('x'), { message: /Connection is closed\./ })
  await t.notThrowsAsync(c.quit(), 'quit twice is fine')
})

// Found by an audit: quit() right after construction failed the commands issued before it
// (they waited for the connection, which quit() closed).
test.serial('commands issued before quit(), while the client connects, still go out first', async (t) => {
  const key = `clients:before-quit:${process.pid}`
  // Through a proxy that delays every byte: the connection is still being made at quit().
  const { TcpProxy } = await import('../scripts/tcp-proxy.mjs')
  const proxy = await new TcpProxy(server.port).start()
  t.teardown(() => proxy.stop())
  proxy.mode = 'delay'
  proxy.delayMs = 20
  for (const make of [() => new Redis({ port: proxy.port }), () => new RedisJsClient({ url: `redis://127.0.0.1:${proxy.port}` })]) {
    const c = make()
    const [set, got, quit] = await Promise.allSettled([c.set(key, 'v'), c.get(key), c.quit()])
    t.deepEqual([set.status, got.value, quit.status], ['fulfilled', 'v', 'fulfilled'], String(set.reason))
    t.is(await server.command('GET', key), 'v')
    await server.command('DEL', key)
    await t.throwsAsync(c.get(key), { message: /Connection is closed\./ })
  }
})

// Found by an audit: a command that blocks without end (`BLPOP q 0`) kept its connection,
// and the process, alive after quit(); a command waiting for a connection outlived quit()
// until the connect time-out.
test.serial('quit closes the connection even under a blocking command, and fails what still waits: for a reply, or for a connection', async (t) => {
  const before = await connectedClients(server.port)
  const c = new Redis({ port: server.port, commandTimeout: 300 })
  await c.call('PING')
  const blocked = c.call('BLPOP', 'clients:never', '0')
  await sleep(50)
  await c.quit()
  await t.throwsAsync(blocked, { message: /Connection is closed\./ })
  await sleep(50)
  t.is(await connectedClients(server.port), before, 'the socket is closed')
  // A server that accepts connections and never answers: the command waits to connect.
  const net = await import('node:net')
  const silent = net.createServer(() => {})
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => silent.close())
  const waiting = new Redis({ port: silent.address().port, connectTimeout: 10_000 })
  const pending = waiting.get('x')
  await sleep(50)
  const quitAt = Date.now()
  await waiting.quit()
  await t.throwsAsync(pending, { message: /Connection is closed\./ })
  t.true(Date.now() - quitAt < 2_000, `rejected ${Date.now() - quitAt} ms after quit()`)
})

test('a password given for a server that has none is not needed: commands and locks go on, as with ioredis', async (t) => {
  const c = new Redis({ port: server.port, password: 'not-needed-secret' })
  t.teardown(() => c.quit())
  t.is(await c.call('PING'), 'PONG')
  const io = new IORedis({ port: server.port, password: 'not-needed-secret', lazyConnect: true })
  t.teardown(() => io.disconnect())
  for (const given of [c, io]) {
    const redlock = new Redlock([given], { retryCount: 0 })
    t.teardown(() => redlock.quit())
    const lock = await redlock.acquire([`clients:no-password:${Date.now()}`], 1_000)
    await lock.release()
  }
  // The release announcements come too (their connection goes on without the password):
  // a waiter wakes at the release, not at its retry delay.
  const key = `clients:no-password-waiter:${Date.now()}`
  const holder = new Redlock([new Redis({ port: server.port, password: 'not-needed-secret' })])
  const waiter = new Redlock([new Redis({ port: server.port, password: 'not-needed-secret' })], { retryCount: 1, retryDelay: 10_000, retryJitter: 0 })
  t.teardown(() => Promise.all([holder.quit(), waiter.quit()]))
  const held = await holder.acquire([key], 5_000)
  const waiting = waiter.acquire([key], 1_000)
  await sleep(300)
  const released = Date.now()
  await held.release()
  await (await waiting).release()
  t.true(Date.now() - released < 5_000, `woken ${Date.now() - released} ms after the release (retry delay 10 s)`)
})

test('what the server refuses while connecting is said in plain words, never as a driver dump: a db out of range, Cluster on a lone server', async (t) => {
  const cases = [
    [new Redis({ port: server.port, db: 100 }), /database number \(db\) is out of range/],
    [new Cluster([{ host: '127.0.0.1', port: server.port }]), /not part of a Redis Cluster/],
  ]
  for (const [c, words] of cases) {
    t.teardown(() => c.quit())
    const error = await t.throwsAsync(c.call('PING'))
    t.regex(error.message, words)
    t.regex(error.message, new RegExp(`127\\.0\\.0\\.1:${server.port}`))
    t.false(/ResponseError|not-needed-secret/.test(error.message), error.message)
  }
})

test('large and nested replies arrive whole (a 4 MB value, 100000 list items, a nested reply)', async (t) => {
  const c = client(t, server.port)
  const big = 'x'.repeat(4 * 1024 * 1024 - 3) + 'end'
  await c.set('clients:big', big)
  const got = await c.get('clients:big')
  t.is(got.length, big.length)
  t.true(got === big)
  const items = Array.from({ length: 100_000 }, (_, i) => `i${i}`)
  for (let i = 0; i < items.length; i += 10_000) await c.call('RPUSH', 'clients:list', ...items.slice(i, i + 10_000))
  t.teardown(() => server.command('DEL', 'clients:list', 'clients:big'))
  const list = await c.call('LRANGE', 'clients:list', 0, -1)
  t.is(list.length, items.length)
  t.is(list[99_999], 'i99999')
  // A script's nested array, with a nil and a number inside, and a command after it.
  const nested = await c.call('EVAL', "return {1, {'a', {}}, false, 'b'}", 0)
  t.deepEqual(nested, [1, ['a', []], null, 'b'])
  t.is(await c.call('ECHO', 'after'), 'after')
})

test.serial('a connection the server kills is replaced by one new connection, the command sent again', async (t) => {
  const c = client(t, server.port)
  await c.call('CLIENT', 'SETNAME', 'killed-one')
  const before = await connectedClients(server.port)
  t.true((await server.command('CLIENT', 'KILL', 'SKIPME', 'yes', 'TYPE', 'normal')) >= 1)
  t.is(await c.call('ECHO', 'again'), 'again')
  t.is(await c.call('CLIENT', 'GETNAME'), null, 'a new connection (the name was on the killed one)')
  t.is(await connectedClients(server.port), before)
})

// Found by an audit: a command issued while nothing listened at the address yet (a server
// starting with the app, or restarting) failed at once with "connection refused", where
// ioredis and node-redis queue it until they connect.
test.serial('a command issued before the server listens, or while it restarts, waits for it within its time-outs', async (t) => {
  const late = new RedisServer({ port: await freePort() })
  t.teardown(() => late.stop())
  const c = client(t, { port: late.port, connectTimeout: 3000, commandTimeout: 3000 })
  const js = jsClient(t, { url: late.url, socket: { connectTimeout: 3000 } })
  // Watched (someone listens): its first connect fails; the command that connects it later
  // says 'connect' and 'ready' (a regression hunt found them never emitted).
  const events = []
  for (const e of ['error', 'connect', 'ready']) c.on(e, () => events.push(e))
  const early = [c.set('early', 'a').then(() => events.push('set')), js.get('early')]
  await sleep(300)
  await late.start()
  await Promise.all(early)
  t.deepEqual(events.filter((e) => e !== 'error'), ['connect', 'ready', 'set'])
  t.is(await js.get('early'), 'a')
  await late.kill('SIGKILL')
  const during = c.get('early')
  await sleep(300)
  await late.start()
  t.is(await during, null, 'a new server without persistence: the key is gone, the command went through')
  // Nothing listening until the time-out: refused, naming the address, within the time-out.
  await late.kill('SIGKILL')
  const started = Date.now()
  const short = client(t, { port: late.port, connectTimeout: 300, commandTimeout: 300 })
  const e = await t.throwsAsync(short.get('k'))
  t.regex(e.message, new RegExp(`127\\.0\\.0\\.1:${late.port}.*refused`))
  t.true(Date.now() - started < 2000)
})

// Found by an audit: a Redlock's quit() closed the clients passed in without their 'close'
// and 'end' (shutdown code awaiting 'end' never went on), a lazy client connected by lock
// traffic never said 'connect' or 'ready', and a client quit while connecting said
// 'connect' and 'ready' after quit().
test.serial("clients passed to a Redlock say what happens to them: 'ready' when locks connect a lazy one, 'close' and 'end' at the Redlock's quit(); never 'ready' after quit()", async (t) => {
  const { once } = await import('node:events')
  const lazy = new Redis({ port: server.port, lazyConnect: true })
  const js = new RedisJsClient({ url: `redis://127.0.0.1:${server.port}` })
  const events = []
  for (const [name, c] of [['lazy', lazy], ['js', js]]) for (const e of ['connect', 'ready', 'close', 'end']) c.on(e, () => events.push(`${name} ${e}`))
  const redlock = new lib.Redlock([lazy, js])
  const ready = once(lazy, 'ready')
  await (await redlock.acquire([`events:${process.pid}`], 1000)).release()
  await ready
  const ended = Promise.all([once(lazy, 'end'), once(js, 'end')])
  await redlock.quit()
  await ended
  t.deepEqual(events.filter((e) => e.startsWith('lazy')), ['lazy connect', 'lazy ready', 'lazy close', 'lazy end'])
  t.deepEqual(events.filter((e) => e.startsWith('js')).slice(-2), ['js close', 'js end'])
  await t.throwsAsync(lazy.get('k'), { message: /Connection is closed/ })
  // quit() while connecting: no 'connect' or 'ready' after it.
  for (const make of [() => new Redis({ port: server.port }), () => new RedisJsClient({ url: `redis://127.0.0.1:${server.port}` })]) {
    const c = make()
    const seen = []
    for (const e of ['connect', 'ready', 'close', 'end']) c.on(e, () => seen.push(e))
    await c.quit()
    await sleep(20)
    t.deepEqual(seen, ['close', 'end'])
  }
})

// Found by a regression hunt: a watched client whose first connect failed, connected later
// by lock traffic alone, never said 'connect' or 'ready' (`await once(client, 'ready')`
// never ended).
test.serial("a watched client connected later by a Redlock's operations says 'connect' and 'ready'", async (t) => {
  const { once } = await import('node:events')
  const late = new RedisServer({ port: await freePort() })
  t.teardown(() => late.stop())
  const c = new Redis({ port: late.port, connectTimeout: 2000, commandTimeout: 2000 })
  const events = []
  for (const e of ['error', 'connect', 'ready']) c.on(e, () => events.push(e))
  const redlock = new lib.Redlock([c], { retryCount: 40, retryDelay: 50, retryJitter: 0 })
  t.teardown(() => redlock.quit())
  const acquired = redlock.acquire([`late:${process.pid}`], 1000)
  // (Listened for before the server starts: the watched connect hears it as it comes up.)
  const ready = once(c, 'ready')
  await sleep(300)
  await late.start()
  await (await acquired).release()
  await Promise.race([ready, sleep(3000).then(() => t.fail('no ready'))])
  t.deepEqual(events.filter((e) => e !== 'error'), ['connect', 'ready'])
})

// (The same, with the listeners added after the Redlock's first operation: a regression
// hunt found such a client dropped from those told of lock traffic.)
test.serial("a client watched only after a Redlock's first operation says 'ready' when lock traffic connects it", async (t) => {
  const { once } = await import('node:events')
  const late = new RedisServer({ port: await freePort() })
  t.teardown(() => late.stop())
  const c = new Redis({ port: late.port, connectTimeout: 500, commandTimeout: 500 })
  const redlock = new lib.Redlock([c], { retryCount: 0 })
  t.teardown(() => redlock.quit())
  await t.throwsAsync(redlock.acquire([`late-watch:${process.pid}`], 1000))
  const events = []
  for (const e of ['error', 'connect', 'ready']) c.on(e, () => events.push(e))
  const ready = once(c, 'ready')
  await late.start()
  for (let i = 0; i < 3; i++) await (await redlock.acquire([`late-watch:${process.pid}:${i}`], 1000).catch(() => redlock.acquire([`late-watch:${process.pid}:${i}`], 1000))).release()
  await Promise.race([ready, sleep(3000).then(() => t.fail('no ready'))])
  t.deepEqual(events.filter((e) => e !== 'error'), ['connect', 'ready'])
})

// Found by an audit of README's claims: a client listening for 'ready' while its server
// was still starting heard 'error' at once (its first connection refused), never 'ready',
// and its process exited; its commands waited for the server all the same.
test("a client listening for 'ready' while its server starts hears 'ready' once it is up (connect() itself rejects at once, as ioredis')", async (t) => {
  const port = await freePort()
  const client = new Redis({ port, connectTimeout: 5_000 })
  t.teardown(() => client.quit())
  const events = []
  const ready = new Promise((resolve) => client.on('ready', () => resolve(events.push('ready'))))
  client.on('error', (e) => events.push(`error: ${e.message}`))
  const lazy = new Redis({ port, connectTimeout: 5_000, lazyConnect: true })
  t.teardown(() => lazy.quit())
  await t.throwsAsync(lazy.connect(), { message: /refused/ })
  await sleep(400) // refused meanwhile
  const server = await new RedisServer({ port }).start()
  t.teardown(() => server.stop())
  await ready
  t.deepEqual(events, ['ready'])
  t.is(await lazy.call('PING'), 'PONG')
})
