'use strict'
// The client classes (Redis, Cluster, MemoryStore, RedisJsClient) on the native client, and
// the migration from JS clients: reading ioredis / node-redis client options.

const { createPrivateKey } = require('node:crypto')
const { EventEmitter } = require('node:events')
const nodeTls = require('node:tls')
const { inspect } = require('node:util')

const { NativeClient } = require('./native.js')

const noop = () => {}
const watchFor = Symbol('watchFor')
/**
 * How many clients wait to hear of lock traffic (see ClientBase#awaitUse): while none
 * does, a Redlock's operation tells its clients nothing (one read per operation).
 */
let awaitingUse = 0

/** What a Redlock tells the clients passed in (see ClientBase). */
const lockUse = { used: Symbol('used'), closed: Symbol('closed'), awaiting: () => awaitingUse }

/**
 * What the client classes add to the native client, among which the events of ioredis' and
 * node-redis' clients (`on('error', ...)` and the rest: EventEmitter's methods): 'connect'
 * and 'ready' once connected, 'error' when connecting fails (only to listeners: commands
 * reject with the same error anyway), 'close' and 'end' after `quit()`. A client connects
 * in the background either way; it is watched (and the process kept alive until it is up
 * or its connectTimeout passes) only once someone listens for 'connect', 'ready' or
 * 'error', so a script that never listens exits as soon as its work is done.
 */
class ClientBase extends NativeClient {
  #connected = false
  #ended = false
  /** quit() was called (it may still wait for the connection). */
  #quitCalled = false
  /** Whether a Redlock's operation asks whether the connection is up (see lockUse.used). */
  #asking = false
  /** Whether lock traffic is to be told to it (see #awaitUse). */
  #awaiting = false
  /** Whether listening for the connection starts watching it (not with lazyConnect). */
  #watchable = false
  #watching = false
  /** lazyConnect, and someone listens: the first command's connection is watched. */
  #watchFirstUse = false

  /** For the constructors: this client connects by itself (no lazyConnect). */
  connectsByItself() {
    this.#watchable = true
  }

  /** Connects now (for lazyConnect); resolves once connected. */
  connect() {
    return this.#heardOf(super.connect())
  }

  /**
   * The watched connect of a client someone listens to: a server still starting is tried
   * again until connectTimeout, so that 'ready' comes once it is up (found by an audit of
   * README's claims: 'error' came at once, and the process exited).
   */
  #watch() {
    this.#heardOf(this.connectWaiting()).catch(noop)
  }

  /** `connecting`, told as 'connect' and 'ready' when it resolves, as 'error' when not. */
  #heardOf(connecting) {
    connecting.then(
      () => this.#up(),
      (error) => {
        if (this.listenerCount('error') > 0) this.emit('error', error)
      },
    )
    return connecting
  }

  /**
   * Closes gracefully; later commands reject with "Connection is closed.". No 'connect' or
   * 'ready' once called, even when a connect under way ends after.
   */
  async quit() {
    this.#quitCalled = true
    await super.quit()
    this[lockUse.closed]()
  }

  /** Closed (by its `quit()`, or a Redlock's, as node-redlock quits its clients): 'close' and 'end', once. */
  [lockUse.closed]() {
    this.#heard()
    if (this.#ended) return
    this.#ended = true
    this.emit('close')
    this.emit('end')
  }

  /**
   * A Redlock's operation uses this client's connection, as a command would: a lazy one
   * connects, a watched one not yet connected (its first connect failed) says 'connect'
   * and 'ready' once the connection is up.
   */
  [lockUse.used]() {
    if (!this.#awaiting) return
    this.#used()
    if (this.#connected || this.#ended || this.#quitCalled) return this.#heard()
    if (!this.#asking) {
      this.#asking = true
      super.connect().then(
        () => this.#up(),
        noop,
      ).finally(() => {
        this.#asking = false
      })
    }
  }

  /**
   * Someone listens and the connection is not up yet (or a lazy client waits for its first
   * use): lock traffic is to be told to it, until it is up or closed.
   */
  #awaitUse() {
    if (this.#awaiting || this.#connected) return
    this.#awaiting = true
    awaitingUse++
  }

  /** Nothing more to tell it of lock traffic. */
  #heard() {
    if (!this.#awaiting) return
    this.#awaiting = false
    awaitingUse--
  }

  /**
   * A listener for `event` is being added: the connection is watched from then on (with
   * lazyConnect, from the first command on).
   */
  [watchFor](event) {
    if (this.#watching || !(event === 'connect' || event === 'ready' || event === 'error')) return
    if (this.#watchable) {
      this.#watching = true
      this.#watch()
    } else {
      this.#watchFirstUse = true
    }
    this.#awaitUse()
  }

  /** A command is issued: a lazy client's first connect is watched when someone listens. */
  #used() {
    if (!this.#watchFirstUse) return
    this.#watchFirstUse = false
    this.#watching = true
    this.#watch()
  }

  /** Connected (first time): 'connect' and 'ready', once, never after quit(). */
  #up() {
    this.#heard()
    if (this.#connected || this.#ended || this.#quitCalled) return
    this.#connected = true
    this.emit('connect')
    this.emit('ready')
  }

  /**
   * `reply`, the promise of a command issued by a watched client not yet connected (its
   * first connect failed, the server came up later): its answer says the client is up.
   */
  #noted(reply) {
    if (!this.#watching || this.#connected) return reply
    return reply.then((value) => {
      this.#up()
      return value
    })
  }

  get(key) {
    this.#used()
    return this.#noted(super.get(key))
  }

  pttl(key) {
    this.#used()
    return this.#noted(super.pttl(key))
  }

  callCommand(command, args) {
    this.#used()
    return this.#noted(super.callCommand(command, args))
  }

  delKeys(keys) {
    this.#used()
    return this.#noted(super.delKeys(keys))
  }

  /** `DEL key [key ...]`; arrays are flattened one level, as ioredis does. */
  del(...keys) {
    return this.delKeys(keys.flat())
  }

  /**
   * `SET key value`; with ioredis' further arguments (`'PX', 1000, 'NX'`, ...) it resolves
   * with the server's reply: 'OK', `null` when NX or XX did not set, the old value with GET.
   */
  set(key, value, ...options) {
    this.#used()
    if (options.length === 0 || (typeof key !== 'string' && !Buffer.isBuffer(key)) || value == null) return this.#noted(super.set(key, value))
    return this.callCommand('SET', [key, typeof value === 'boolean' ? String(value) : value, ...options.flat()])
  }

  /** Any Redis command, like ioredis' `call`. */
  call(command, ...args) {
    return this.callCommand(command, args.flat())
  }

  [inspect.custom]() {
    return this.toString()
  }
}

// EventEmitter's methods; those that add a listener first start watching the connection.
const adding = new Set(['on', 'addListener', 'once', 'prependListener', 'prependOnceListener'])
for (const name of Object.getOwnPropertyNames(EventEmitter.prototype)) {
  if (name === 'constructor' || name in ClientBase.prototype) continue
  const method = EventEmitter.prototype[name]
  const value = adding.has(name)
    ? function (event, listener) {
        this[watchFor](event)
        return method.call(this, event, listener)
      }
    : method
  Object.defineProperty(ClientBase.prototype, name, { ...Object.getOwnPropertyDescriptor(EventEmitter.prototype, name), value })
}

const lazyIn = (...args) => args.some((a) => a !== null && typeof a === 'object' && a.lazyConnect === true)

/** A client shaped like ioredis' `Redis`. */
class Redis extends ClientBase {
  /**
   * `new Redis()`, `new Redis(options)`, `new Redis(url, options?)`,
   * `new Redis(port, host?, options?)`.
   */
  constructor(a0, a1, a2) {
    super('ioredis', a0, a1, a2)
    if (!lazyIn(a0, a1, a2)) this.connectsByItself()
  }
}

/** A Redis Cluster client shaped like ioredis' `Cluster` (keys routed by slot). */
class Cluster extends ClientBase {
  constructor(startupNodes, options) {
    super('cluster', startupNodes, options)
    if (!lazyIn(options)) this.connectsByItself()
  }
}
Redis.Cluster = Cluster

/**
 * An in-process lock node, usable wherever a client is: `new Redlock([new MemoryStore()])`,
 * or several for a quorum. For tests of code that takes locks, and for the demo. Not shared
 * between processes. Fault injection: `down()` / `up()` (calls fail at once), `pause(ms)`
 * (calls wait, like a frozen server, until the callers' time-outs), `clear()` (every key is
 * lost, like a restart without persistence: its identity changes too), `keys()`.
 */
class MemoryStore extends ClientBase {
  constructor(options) {
    super('memory', options)
  }

  down() {
    this.memoryControl('down')
  }

  up() {
    this.memoryControl('up')
  }

  pause(ms) {
    if (typeof ms !== 'number') throw new TypeError(`ms must be a number of milliseconds; got ${typeof ms}.`)
    this.memoryControl('pause', ms)
  }

  clear() {
    this.memoryControl('clear')
  }

  /** The keys held now, sorted (lock keys, fencing counters, the library's records). */
  keys() {
    return this.memoryKeys()
  }
}

/** A client shaped like node-redis' `createClient({ url })`. */
class RedisJsClient extends ClientBase {
  constructor(options) {
    super('node-redis', options)
    this.connectsByItself()
  }
}

// ---------------------------------------------------------------- migration from JS clients

const pem = (v) => (v == null ? undefined : Buffer.isBuffer(v) ? v.toString('utf8') : Array.isArray(v) ? v.map(pem).join('\n') : v)

function tlsOf(tls) {
  if (!tls) return undefined
  if (tls === true) return true
  // Node's default check is what the connection does; any other function it cannot run
  // (the native option refuses it, naming servername instead, unless rejectUnauthorized is
  // false: then nothing is checked, as with node:tls).
  const check = tls.checkServerIdentity === nodeTls.checkServerIdentity ? undefined : tls.checkServerIdentity
  return { ca: pem(tls.ca), cert: pem(tls.cert), key: decrypted(tls), servername: tls.servername, rejectUnauthorized: tls.rejectUnauthorized, checkServerIdentity: check }
}

/**
 * The client key of an ioredis or node-redis client's TLS options, decrypted when it comes
 * with a passphrase (node:tls takes both; found by an audit: such a key was refused).
 */
function decrypted(tls) {
  const key = pem(tls.key)
  if (key === undefined || tls.passphrase == null) return key
  try {
    return createPrivateKey({ key, passphrase: tls.passphrase }).export({ type: 'pkcs8', format: 'pem' })
  } catch (error) {
    throw new TypeError(`the client's TLS key could not be read with its passphrase (${error.code ?? error.message}).`)
  }
}

/**
 * One of an ioredis Cluster's startup nodes in the forms ioredis accepts: a port number,
 * "host:port" or a URL (as they are), `{ host?, port? }` (host 127.0.0.1 by default, as
 * ioredis has it).
 */
function startupNodeOf(node) {
  if (typeof node === 'number') return { host: '127.0.0.1', port: node }
  if (typeof node === 'object' && node !== null) return { host: node.host || '127.0.0.1', port: node.port == null ? 6379 : Number(node.port) }
  return node
}

/** Whether ioredis' `natMap` option maps any address (a function, or a non-empty object). */
function hasNatMap(nat) {
  return typeof nat === 'function' || (nat !== null && typeof nat === 'object' && Object.keys(nat).length > 0)
}

/** ioredis Cluster: startup nodes, and the per-node options in redisOptions. */
function fromIoredisCluster(client, options) {
  const ro = options.redisOptions || {}
  if (hasNatMap(options.natMap)) {
    // The nodes would be reached at the addresses the cluster announces, not the mapped ones.
    throw new TypeError("the ioredis Cluster's natMap is not supported: give new Cluster() startup nodes the cluster announces addresses this machine can reach.")
  }
  return new Cluster(
    client.startupNodes.map(startupNodeOf),
    {
      username: ro.username || undefined,
      password: ro.password || undefined,
      tls: tlsOf(ro.tls),
      connectTimeout: ro.connectTimeout || undefined,
      commandTimeout: ro.commandTimeout || undefined,
      lazyConnect: options.lazyConnect === true,
    },
  )
}

/**
 * A node-redis v5 Cluster (`createCluster`): its root nodes (a URL or `socket: { host,
 * port }` each), and the options every node gets (`defaults`).
 */
function fromNodeRedisCluster(options) {
  const d = options.defaults || {}
  const socket = d.socket || {}
  return new Cluster(
    options.rootNodes.map((n) => n?.url ?? { host: n?.socket?.host || '127.0.0.1', port: n?.socket?.port ?? 6379 }),
    {
      username: d.username || undefined,
      password: d.password || undefined,
      tls: socket.tls ? tlsOf(socket) : undefined,
      connectTimeout: socket.connectTimeout || undefined,
    },
  )
}

/** The name of `client`'s class or of one it extends that is among `names`, if any. */
function classAmong(client, names) {
  for (let p = Object.getPrototypeOf(client ?? {}); p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    if (names.includes(p.constructor?.name)) return p.constructor.name
  }
  return undefined
}

/** A JS client connected through a unix socket: not supported (locks would go elsewhere). */
function refuseUnixSocket(path, name) {
  if (typeof path === 'string' && path !== '') {
    throw new TypeError(`${name}: a unix socket is not supported: redlock-rs connects over TCP (give the client host and port).`)
  }
}

/** ioredis Redis (standalone, or a Sentinel group). */
function fromIoredis(options) {
  refuseUnixSocket(options.path, 'the ioredis client\'s options.path')
  const sentinel = Array.isArray(options.sentinels) && options.sentinels.length > 0
  if (sentinel && hasNatMap(options.natMap)) {
    // The master would be reached where the sentinels name it, not at the mapped address.
    throw new TypeError("the ioredis client's natMap is not supported: give new Redis({ sentinels, name }) sentinels that name addresses this machine can reach.")
  }
  return new Redis({
    host: options.host,
    port: options.port,
    username: options.username || undefined,
    password: options.password || undefined,
    db: options.db,
    // With sentinels, ioredis uses `tls` for the master only with enableTLSForSentinelMode,
    // and `sentinelTLS` for the sentinels.
    tls: sentinel && !options.enableTLSForSentinelMode ? undefined : tlsOf(options.tls),
    connectTimeout: options.connectTimeout || undefined,
    commandTimeout: options.commandTimeout || undefined,
    lazyConnect: options.lazyConnect === true,
    ...(sentinel
      ? {
          sentinels: options.sentinels.map(({ host, port }) => ({ host, port })),
          name: options.name,
          sentinelUsername: options.sentinelUsername || undefined,
          sentinelPassword: options.sentinelPassword || undefined,
          sentinelTLS: tlsOf(options.sentinelTLS),
        }
      : {}),
  })
}

/** node-redis v4 / v5 (ca/cert/key on the socket options). */
function fromNodeRedis(options) {
  const socket = options.socket || {}
  refuseUnixSocket(socket.path, 'the node-redis client\'s socket.path')
  return new RedisJsClient({
    url: options.url || undefined,
    username: options.username || undefined,
    password: options.password || undefined,
    database: options.database,
    socket: {
      host: socket.host,
      port: socket.port,
      tls: socket.tls ? tlsOf(socket) : undefined, // node-redis keeps ca/cert/key on socket
      connectTimeout: socket.connectTimeout || undefined,
    },
  })
}

/**
 * The native clients made for ioredis and node-redis clients, by client, with how many
 * Redlocks use each and have not quit: every Redlock made with the same client shares one
 * connection (code written for node-redlock may make a Redlock per request over one
 * shared client, and never quit it, which would close that client).
 */
const derived = new WeakMap()

/**
 * The native client for an entry of `new Redlock(clients)`: our own clients as they are;
 * ioredis and node-redis clients are read for their connection options and get a native
 * connection, shared by the Redlocks made with that client (the JS client is never used
 * for locks and never closed). A Redlock that quits says so with `leaveShared`.
 */
function nativeClientFor(client, index) {
  if (client instanceof NativeClient) return client
  const shared = derived.get(client)
  if (shared !== undefined) {
    shared.users++
    return shared.native
  }
  const native = readClient(client, index)
  // (Object.is: NaN is not a client either, and no WeakMap key; found by an audit.)
  if (!Object.is(native, client)) derived.set(client, { native, users: 1 })
  return native
}

/**
 * A Redlock made with `clients` quits (or was never made): the indices of those whose
 * native connections other Redlocks still use, which stay open.
 */
function leaveShared(clients) {
  const keep = []
  clients.forEach((client, i) => {
    const shared = derived.get(client)
    if (shared === undefined) return
    if (--shared.users > 0) keep.push(i)
    else derived.delete(client)
  })
  return keep
}

/** A native client for an ioredis or node-redis client, from its options (see nativeClientFor). */
function readClient(client, index) {
  if (/RedisMock/.test(client?.constructor?.name ?? '')) {
    // It looks like ioredis (options.port 6379): read as one, it would lock a real server.
    throw new TypeError('ioredis-mock clients are not supported (the locks would go to a real server on their host and port): use MemoryStore in tests, new Redlock([new MemoryStore()]).')
  }
  if (typeof client?.sendCommand === 'function' && Array.isArray(client._options?.rootNodes)) return fromNodeRedisCluster(client._options)
  const hidden = typeof client?.sendCommand === 'function' && classAmong(client, ['RedisCluster', 'RedisSentinel', 'RedisClientPool'])
  if (hidden) {
    // Their options are private: nothing to read the servers from.
    throw new TypeError(
      `clients[${index}] is a node-redis ${hidden}, which cannot be read for its servers (its options are private): pass ${hidden === 'RedisCluster' ? "new Cluster([...startup nodes], options)" : hidden === 'RedisSentinel' ? "new Redis({ sentinels, name })" : 'a client made with createClient, or new Redis(url)'} from redlock-rs instead.`,
    )
  }
  const options = client?.options
  if (options && typeof options === 'object') {
    if (client.isCluster === true && Array.isArray(client.startupNodes)) return fromIoredisCluster(client, options)
    if (typeof client.evalsha === 'function' && 'port' in options) return fromIoredis(options)
    if (typeof client.sendCommand === 'function' && ('url' in options || 'socket' in options)) return fromNodeRedis(options)
  }
  // node-redis' createClient() with neither url nor socket (localhost:6379, its default):
  // its class, its shape, and none of the options another client would name a server by.
  if (
    typeof client?.sendCommand === 'function' &&
    typeof client.isOpen === 'boolean' &&
    typeof client.duplicate === 'function' &&
    classAmong(client, ['RedisClient']) &&
    !(options && typeof options === 'object' && ['host', 'port', 'path'].some((k) => k in options))
  ) {
    return fromNodeRedis(options ?? {})
  }
  return client // not a client: the native constructor names it in a TypeError
}

/**
 * The `keyPrefix` an ioredis client (or Cluster) puts before every key ('' for any other
 * client): node-redlock's lock keys through it carry the prefix, and so must ours.
 */
function keyPrefixOf(client) {
  if (client instanceof NativeClient) return ''
  const options = client?.options
  if (!options || typeof options !== 'object' || typeof client.evalsha !== 'function') return ''
  const prefix = client.isCluster === true ? (options.keyPrefix ?? options.redisOptions?.keyPrefix) : options.keyPrefix
  return typeof prefix === 'string' ? prefix : ''
}

/**
 * The `host:port` of a client's URL or of an ioredis startup node given as a string, and
 * nothing else of it: ioredis reads a password from `user:pass@host:port` (no scheme) and
 * from `?password=` too (found by an audit: both were printed).
 */
function addressOf(text) {
  if (/^\d+$/.test(text)) return `127.0.0.1:${text}` // a port alone, as ioredis reads it
  try {
    const u = new URL(text.includes('//') ? text : `redis://${text}`)
    return `${u.hostname}:${u.port || 6379}`
  } catch {
    return '(an address)'
  }
}

/**
 * A client as `util.inspect` shows it wherever the library lists clients (the votes of an
 * attempt, a node's error, a Redlock): ours by their `toString()` (passwords masked), an
 * ioredis or node-redis client by its kind and address only, since inspecting the client
 * itself prints its options, password included.
 */
function describeClient(client) {
  if (client instanceof NativeClient) return client.toString()
  const o = client?.options
  if (o && typeof o === 'object') {
    if (client.isCluster === true && Array.isArray(client.startupNodes)) {
      const nodes = client.startupNodes.map(startupNodeOf).map((n) => (typeof n === 'object' ? `${n.host}:${n.port}` : addressOf(String(n))))
      return `ioredis Cluster(${nodes.join(', ')})`
    }
    if (typeof client.evalsha === 'function') return `ioredis(${o.host ?? 'localhost'}:${o.port ?? 6379}${o.db ? `/${o.db}` : ''})`
    if (typeof client.sendCommand === 'function') {
      const socket = o.socket || {}
      return `node-redis(${o.url ? addressOf(String(o.url)) : `${socket.host ?? 'localhost'}:${socket.port ?? 6379}`})`
    }
  }
  return Object.prototype.toString.call(client)
}

/** What `util.inspect` prints for `client` where the library lists it (see describeClient). */
function shownClient(client) {
  const text = describeClient(client)
  return { [inspect.custom]: () => text }
}

/** For `[inspect.custom](depth, options, show)`: `shown` inspected in the object's place. */
function inspectInstead(shown, depth, options, show) {
  return show(shown, { ...options, depth: options.depth === null ? null : Math.max(0, depth) })
}

module.exports = { Redis, Cluster, MemoryStore, RedisJsClient, tlsOf, nativeClientFor, leaveShared, keyPrefixOf, describeClient, shownClient, inspectInstead, lockUse, ClientBase }
