'use strict'
// The thin JavaScript layer: what JavaScript idioms demand (EventEmitter, Error classes,
// rest parameters, util.inspect, AbortSignal in using(), reading ioredis / node-redis
// client options). Every lock decision is made in Rust (binding.js).

const { EventEmitter } = require('node:events')
const { inspect } = require('node:util')
let native
try {
  native = require('./binding.js')
} catch (cause) {
  throw new Error(
    `redlock-rs: no native addon for ${process.platform}-${process.arch} could be loaded. ` +
      'This package ships a prebuilt addon for linux-x64 (glibc); elsewhere build it from a clone ' +
      'with a Rust toolchain (npm install && npm run build).',
    { cause },
  )
}

const { NativeClient, NativeRedlock } = native

const QUORUM_FAILED = 'The operation was unable to achieve a quorum during its retry window.'
const EXPIRED = 'Cannot extend an already-expired lock.'
/** Why an ExecutionError happened: "locked", "undecided" or "expired" (used by using()). */
const failureOf = Symbol('redlock-rs.failure')

// ---------------------------------------------------------------------------- clients

/** What both client classes add to the native client. */
class ClientBase extends NativeClient {
  /** `DEL key [key ...]`; arrays are flattened one level, as ioredis does. */
  del(...keys) {
    return this.delKeys(keys.flat())
  }

  /** Any Redis command, like ioredis' `call`. */
  call(command, ...args) {
    return this.callCommand(command, args.flat())
  }

  [inspect.custom]() {
    return this.toString()
  }
}

/** A client shaped like ioredis' `Redis`. */
class Redis extends ClientBase {
  /**
   * `new Redis()`, `new Redis(options)`, `new Redis(url, options?)`,
   * `new Redis(port, host?, options?)`.
   */
  constructor(a0, a1, a2) {
    super('ioredis', a0, a1, a2)
  }
}

/** A Redis Cluster client shaped like ioredis' `Cluster` (keys routed by slot). */
class Cluster extends ClientBase {
  constructor(startupNodes, options) {
    super('cluster', startupNodes, options)
  }
}
Redis.Cluster = Cluster

/** A client shaped like node-redis' `createClient({ url })`. */
class RedisJsClient extends ClientBase {
  constructor(options) {
    super('node-redis', options)
  }
}

// ----------------------------------------------------------------------------- errors

/** A client voted against because another owner holds a resource. */
class ResourceLockedError extends Error {
  constructor(message) {
    super(message)
    this.name = 'ResourceLockedError'
  }
}

/** An operation did not achieve a quorum within its retry window. */
class ExecutionError extends Error {
  constructor(message, attempts) {
    super(message)
    this.name = 'ExecutionError'
    this.attempts = attempts
  }
}

/** An automatic extension in `using()` failed: the lock may have been lost. */
class LockLostError extends Error {
  constructor(message, options) {
    super(message, options)
    this.name = 'LockLostError'
  }
}

// ---------------------------------------------------------------- migration from JS clients

const pem = (v) => (v == null ? undefined : Buffer.isBuffer(v) ? v.toString('utf8') : Array.isArray(v) ? v.map(pem).join('\n') : v)

function tlsOf(tls) {
  if (!tls) return undefined
  if (tls === true) return true
  return { ca: pem(tls.ca), cert: pem(tls.cert), key: pem(tls.key), rejectUnauthorized: tls.rejectUnauthorized }
}

/**
 * The native client for an entry of `new Redlock(clients)`: our own clients as they are;
 * ioredis and node-redis clients are read for their connection options and get a native
 * connection of their own (the JS client is never used for locks and never closed).
 */
function nativeClientFor(client, i) {
  if (client instanceof NativeClient) return client
  const options = client?.options
  if (options && typeof options === 'object') {
    if (client.isCluster === true && Array.isArray(client.startupNodes)) {
      // ioredis Cluster: startup nodes, and the per-node options in redisOptions.
      const ro = options.redisOptions || {}
      return new Cluster(
        client.startupNodes.map((n) => (typeof n === 'object' ? { host: n.host, port: n.port } : n)),
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
    if (typeof client.evalsha === 'function' && 'port' in options) {
      // ioredis Redis
      return new Redis({
        host: options.host,
        port: options.port,
        username: options.username || undefined,
        password: options.password || undefined,
        db: options.db,
        tls: tlsOf(options.tls),
        connectTimeout: options.connectTimeout || undefined,
        commandTimeout: options.commandTimeout || undefined,
        lazyConnect: options.lazyConnect === true,
        ...(Array.isArray(options.sentinels) && options.sentinels.length > 0
          ? {
              sentinels: options.sentinels.map(({ host, port }) => ({ host, port })),
              name: options.name,
              sentinelUsername: options.sentinelUsername || undefined,
              sentinelPassword: options.sentinelPassword || undefined,
            }
          : {}),
      })
    }
    if (typeof client.sendCommand === 'function' && ('url' in options || 'socket' in options)) {
      // node-redis v4 / v5
      const socket = options.socket || {}
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
  }
  return client // not a client: the native constructor names it in a TypeError
}

// ------------------------------------------------------------------------------- Lock

// Completion statuses (src/completion.rs).
const DONE = 0
const LOCKED = 1
const UNDECIDED = 2
const EXPIRED_LOCK = 3
const INTERNAL = 4

/**
 * The attempts of an operation as the engine reports them (one string per attempt, one
 * character per client), turned into node-redlock's `Promise<ExecutionStats>[]` only
 * when somebody reads them.
 */
class AttemptLog {
  constructor(clients, attempts, errors, requested) {
    this.clients = clients
    this.attempts = attempts
    this.errors = errors
    this.requested = requested
  }

  /** Calls `fn(vote, client, index, message)` for every vote against. */
  eachAgainst(fn) {
    let e = 0
    for (const attempt of this.attempts) {
      for (let i = 0; i < attempt.length; i++) {
        const vote = attempt[i]
        if (vote === 'L') fn(vote, this.clients[i], lockedMessage(this.requested))
        else if (vote === 'E') fn(vote, this.clients[i], this.errors[e++])
      }
    }
  }

  toStats() {
    const n = this.clients.length
    const quorumSize = Math.floor(n / 2) + 1
    let e = 0
    return this.attempts.map((attempt) => {
      const stats = { membershipSize: n, quorumSize, votesFor: new Set(), votesAgainst: new Map() }
      for (let i = 0; i < attempt.length; i++) {
        const vote = attempt[i]
        const client = this.clients[i]
        if (vote === 'F') stats.votesFor.add(client)
        else if (vote === 'L') stats.votesAgainst.set(client, new ResourceLockedError(lockedMessage(this.requested)))
        else if (vote === 'E') stats.votesAgainst.set(client, new Error(this.errors[e++]))
      }
      return Promise.resolve(stats)
    })
  }
}

/** What `release` resolves: `{ attempts, start }`, with the attempts built when read. */
class ExecutionResult {
  #attempts

  constructor(attempts, start) {
    this.#attempts = attempts
    this.start = start
  }

  get attempts() {
    if (this.#attempts instanceof AttemptLog) this.#attempts = this.#attempts.toStats()
    return this.#attempts
  }
}

const lockedMessage = (requested) => `The operation was applied to: 0 of the ${requested} requested resources.`

class Lock {
  #attempts

  constructor(redlock, resources, value, attempts, expiration, fence) {
    this.redlock = redlock
    this.resources = resources
    this.value = value
    this.#attempts = attempts
    this.expiration = expiration
    if (fence !== undefined) this.fence = fence
  }

  /** `Promise<ExecutionStats>` for each attempt that made this lock. */
  get attempts() {
    if (this.#attempts instanceof AttemptLog) this.#attempts = this.#attempts.toStats()
    return this.#attempts
  }

  set attempts(value) {
    this.#attempts = value
  }

  /** Releases this lock (see `Redlock#release`). */
  async release() {
    return this.redlock.release(this)
  }

  /** Extends this lock by `duration` ms; resolves a new Lock (see `Redlock#extend`). */
  async extend(duration) {
    return this.redlock.extend(this, duration)
  }
}

// ----------------------------------------------------------------------------- Redlock

function lockArg(lock) {
  if (lock === null || typeof lock !== 'object') throw new TypeError('lock must be a Lock.')
  return lock
}

const noop = () => {}

/**
 * Redlocks with operations in flight. The completion callback holds its Redlock only
 * weakly (so that an idle, forgotten Redlock can be garbage collected); this set keeps
 * it alive while any of its promises is pending.
 */
const busy = new Set()

class Redlock extends EventEmitter {
  #native
  #clients
  #pending = new Map()
  #nextId = 0
  /** Keeps the process alive while operations are in flight (ref'd only then). */
  #keepAlive = null

  constructor(clients, settings) {
    super()
    // As node-redlock: failed votes are emitted as 'error' events, which must not crash a
    // process that does not listen for them.
    this.on('error', noop)
    if (clients == null || typeof clients === 'string' || typeof clients[Symbol.iterator] !== 'function') {
      throw new TypeError('clients must be an iterable of Redis clients.')
    }
    const list = Array.from(clients)
    const natives = list.map(nativeClientFor)
    const self = new WeakRef(this)
    this.#native = new NativeRedlock(natives, settings, (batch) => self.deref()?.#settle(batch))
    this.#clients = list
    Object.defineProperty(this, 'clients', { value: Object.freeze(list.slice()), enumerable: true })
    Object.defineProperty(this, 'settings', { value: Object.freeze(this.#native.settings), enumerable: true })
  }

  /** Starts `method` natively under a fresh id; resolves with its completion tuple. */
  #call(method, ...args) {
    return new Promise((resolve, reject) => {
      const id = (this.#nextId = (this.#nextId + 1) >>> 0)
      this.#native[method](id, ...args) // bad arguments throw here: the promise rejects
      this.#pending.set(id, { resolve, reject })
      if (this.#pending.size === 1) {
        busy.add(this)
        if (this.#keepAlive === null) this.#keepAlive = setInterval(noop, 0x7fffffff)
        else this.#keepAlive.ref()
      }
    })
  }

  #settle(batch) {
    for (const c of batch) {
      const waiter = this.#pending.get(c[0])
      if (waiter === undefined) continue
      this.#pending.delete(c[0])
      if (c[1] === INTERNAL) waiter.reject(new Error(c[2]))
      else waiter.resolve(c)
    }
    if (this.#pending.size === 0) {
      busy.delete(this)
      if (this.#keepAlive !== null) this.#keepAlive.unref()
    }
  }

  /** The attempts of completion `c`, emitting its votes against as events. */
  #log(c, requested) {
    const log = new AttemptLog(this.#clients, c[5], c[6], requested)
    if (this.listenerCount('error') > 1 || this.listenerCount('clientError') > 0) {
      log.eachAgainst((vote, client, message) => {
        const error = vote === 'L' ? new ResourceLockedError(message) : new Error(message)
        this.emit('error', error)
        if (vote === 'E') this.emit('clientError', error, client)
      })
    }
    return log
  }

  #fail(c, log) {
    const error = new ExecutionError(c[1] === EXPIRED_LOCK ? EXPIRED : QUORUM_FAILED, log.toStats())
    Object.defineProperty(error, failureOf, { value: c[1] === EXPIRED_LOCK ? 'expired' : c[1] === LOCKED ? 'locked' : 'undecided' })
    return error
  }

  // ---- the seed API

  /** `true`: acquired; `false`: another owner holds it; `null`: too many instances failed. */
  async acquireLock(resource, ttl) {
    const c = await this.#call('acquireLock', resource, ttl)
    this.#log(c, 1)
    return c[1] === DONE ? true : c[1] === LOCKED ? false : null
  }

  /** Releases this instance's lock on `resource` when `lockValue` is `true`. */
  async releaseLock(resource, lockValue) {
    const c = await this.#call('releaseLock', resource, lockValue)
    const log = this.#log(c, 1)
    if (c[1] !== DONE) throw this.#fail(c, log)
  }

  /** The fencing token of the lock this instance holds on `resource` (seed API, with `fencing`). */
  fenceOf(resource) {
    const fence = this.#native.fenceOf(resource)
    return fence == null ? undefined : BigInt(fence)
  }

  // ---- node-redlock v5

  /** Locks every resource (all or nothing) for `duration` ms. */
  async acquire(resources, duration, settings) {
    const c = await this.#call('acquire', resources, duration, settings)
    const log = this.#log(c, resources.length)
    if (c[1] !== DONE) throw this.#fail(c, log)
    return new Lock(this, [...resources], c[2], log, c[3], c[8] == null ? undefined : BigInt(c[8]))
  }

  /** Releases `lock` (owner-checked, idempotent). */
  async release(lock, settings) {
    lockArg(lock)
    const c = await this.#call('release', lock.resources, lock.value, settings)
    lock.expiration = 0
    const log = this.#log(c, lock.resources.length)
    if (c[1] !== DONE) throw this.#fail(c, log)
    return new ExecutionResult(log, c[4])
  }

  /** Extends `lock` to `duration` ms from now; resolves a new Lock, the old one is invalidated. */
  async extend(lock, duration, settings) {
    lockArg(lock)
    const c = await this.#call('extend', lock.resources, lock.value, Number(lock.expiration), duration, settings)
    const log = this.#log(c, lock.resources.length)
    if (c[1] !== DONE) throw this.#fail(c, log)
    lock.expiration = 0
    return new Lock(this, lock.resources, lock.value, log, c[3], lock.fence)
  }
  /**
   * Runs `routine(signal)` while holding the lock, extending it automatically
   * `automaticExtensionThreshold` ms before it expires (with the settings given here).
   * If an extension fails, `signal` is aborted with `signal.error` a LockLostError. The
   * lock is always released; a failed release never replaces the routine's result or error.
   */
  async using(resources, duration, settingsOrRoutine, optionalRoutine) {
    const settings = typeof settingsOrRoutine === 'function' ? undefined : settingsOrRoutine
    const routine = typeof settingsOrRoutine === 'function' ? settingsOrRoutine : optionalRoutine
    if (typeof routine !== 'function') throw new TypeError('routine must be a function.')
    const effective = this.#native.resolveSettings(settings)
    if (typeof duration === 'number' && effective.automaticExtensionThreshold > duration - 100) {
      throw new RangeError(
        'A lock `duration` must be at least 100ms greater than the `automaticExtensionThreshold` setting.',
      )
    }

    const controller = new AbortController()
    const signal = controller.signal
    let lock = await this.acquire(resources, duration, settings)
    let timer
    let extension
    let done = false

    const schedule = () => {
      const wait = Math.max(0, lock.expiration - Date.now() - effective.automaticExtensionThreshold)
      timer = setTimeout(() => {
        timer = undefined
        extension = extend()
      }, wait)
    }
    const extend = async () => {
      for (;;) {
        try {
          lock = await this.extend(lock, duration, settings)
          if (!done) schedule()
          return
        } catch (error) {
          // Try again while the lock is still valid, unless it is certainly gone.
          const gone = error?.[failureOf] === 'locked' || error?.[failureOf] === 'expired'
          if (done) return
          if (!gone && lock.expiration > Date.now() + effective.retryDelay) {
            await new Promise((r) => setTimeout(r, Math.max(10, effective.retryDelay)))
            continue
          }
          const lost = new LockLostError(
            `The lock on ${lock.resources.join(', ')} could not be extended and may have been lost.`,
            { cause: error },
          )
          signal.error = lost
          this.emit('error', lost)
          controller.abort(lost)
          return
        }
      }
    }

    schedule()
    try {
      return await routine(signal, lock) // the lock, as acquired: redlock-rs passes it too
    } finally {
      done = true
      if (timer) clearTimeout(timer)
      if (extension) await extension
      try {
        await this.release(lock, settings)
      } catch (error) {
        this.emit('error', error) // the lock expires by itself; the routine's outcome stands
      }
    }
  }

  /** Closes the native connections of this instance (JS clients passed in are left open). */
  async quit() {
    await this.#native.quit()
    if (this.#keepAlive !== null) clearInterval(this.#keepAlive)
    this.#keepAlive = null
  }
}

module.exports = Redlock
module.exports.default = Redlock
module.exports.Redlock = Redlock
module.exports.Redis = Redis
module.exports.RedisJsClient = RedisJsClient
module.exports.Cluster = Cluster
module.exports.Lock = Lock
module.exports.ResourceLockedError = ResourceLockedError
module.exports.ExecutionError = ExecutionError
module.exports.LockLostError = LockLostError
