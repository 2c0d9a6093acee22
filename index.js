'use strict'
// The thin JavaScript layer: what JavaScript idioms demand (EventEmitter, Error classes,
// rest parameters, util.inspect, AbortSignal in using(), reading ioredis / node-redis
// client options). Every lock decision is made in Rust (binding.js).

const { EventEmitter } = require('node:events')
const { inspect } = require('node:util')
const native = require('./binding.js')

const { NativeClient, NativeRedlock } = native

const QUORUM_FAILED = 'The operation was unable to achieve a quorum during its retry window.'
const EXPIRED = 'Cannot extend an already-expired lock.'
/** Why an ExecutionError happened: "locked", "undecided" or "expired". */
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
    if (client.isCluster === true || Array.isArray(client.startupNodes)) {
      throw new TypeError(`clients[${i}]: ioredis Cluster clients are not supported yet.`)
    }
    if (Array.isArray(options.sentinels) && options.sentinels.length > 0) {
      throw new TypeError(`clients[${i}]: Redis Sentinel clients are not supported yet.`)
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

class Lock {
  constructor(redlock, resources, value, attempts, expiration) {
    this.redlock = redlock
    this.resources = resources
    this.value = value
    this.attempts = attempts
    this.expiration = expiration
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

class Redlock extends EventEmitter {
  #native
  #clients

  constructor(clients, settings) {
    super()
    // As node-redlock: failed votes are emitted as 'error' events, which must not crash a
    // process that does not listen for them.
    this.on('error', () => {})
    if (clients == null || typeof clients === 'string' || typeof clients[Symbol.iterator] !== 'function') {
      throw new TypeError('clients must be an iterable of Redis clients.')
    }
    const list = Array.from(clients)
    const natives = list.map(nativeClientFor)
    this.#native = new NativeRedlock(natives, settings)
    this.#clients = list
    Object.defineProperty(this, 'clients', { value: Object.freeze(list.slice()), enumerable: true })
    Object.defineProperty(this, 'settings', { value: Object.freeze(this.#native.settings), enumerable: true })
  }

  /** Turns a native report into ExecutionStats promises, emitting the failed votes. */
  #attempts(report) {
    return report.attempts.map((attempt) => {
      const stats = {
        membershipSize: attempt.membershipSize,
        quorumSize: attempt.quorumSize,
        votesFor: new Set(),
        votesAgainst: new Map(),
      }
      for (const { client: index, vote, message } of attempt.votes) {
        const client = this.#clients[index]
        if (vote === 'for') {
          stats.votesFor.add(client)
          continue
        }
        const error = vote === 'locked' ? new ResourceLockedError(message) : new Error(message)
        stats.votesAgainst.set(client, error)
        this.emit('error', error)
        if (vote === 'error') this.emit('clientError', error, client)
      }
      return Promise.resolve(stats)
    })
  }

  #fail(report, attempts) {
    const error = new ExecutionError(report.failure === 'expired' ? EXPIRED : QUORUM_FAILED, attempts)
    Object.defineProperty(error, failureOf, { value: report.failure })
    return error
  }

  // ---- the seed API

  /** `true`: acquired; `false`: another owner holds it; `null`: too many instances failed. */
  async acquireLock(resource, ttl) {
    const report = await this.#native.acquireLock(resource, ttl)
    this.#attempts(report)
    return report.acquired ?? null
  }

  /** Releases this instance's lock on `resource` when `lockValue` is `true`. */
  async releaseLock(resource, lockValue) {
    const report = await this.#native.releaseLock(resource, lockValue)
    const attempts = this.#attempts(report)
    if (!report.ok) throw this.#fail(report, attempts)
  }

  // ---- node-redlock v5

  /** Locks every resource (all or nothing) for `duration` ms. */
  async acquire(resources, duration, settings) {
    const report = await this.#native.acquire(resources, duration, settings)
    const attempts = this.#attempts(report)
    if (!report.ok) throw this.#fail(report, attempts)
    return new Lock(this, [...resources], report.value, attempts, report.expiration)
  }

  /** Releases `lock` (owner-checked, idempotent). */
  async release(lock, settings) {
    lockArg(lock)
    const report = await this.#native.release(lock.resources, lock.value, settings)
    lock.expiration = 0
    const attempts = this.#attempts(report)
    if (!report.ok) throw this.#fail(report, attempts)
    return { attempts, start: report.start }
  }

  /** Extends `lock` to `duration` ms from now; resolves a new Lock, the old one is invalidated. */
  async extend(lock, duration, settings) {
    lockArg(lock)
    const report = await this.#native.extend(lock.resources, lock.value, Number(lock.expiration), duration, settings)
    const attempts = this.#attempts(report)
    if (!report.ok) throw this.#fail(report, attempts)
    lock.expiration = 0
    return new Lock(this, lock.resources, lock.value, attempts, report.expiration)
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
      return await routine(signal)
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
    return this.#native.quit()
  }
}

module.exports = Redlock
module.exports.default = Redlock
module.exports.Redlock = Redlock
module.exports.Redis = Redis
module.exports.RedisJsClient = RedisJsClient
module.exports.Lock = Lock
module.exports.ResourceLockedError = ResourceLockedError
module.exports.ExecutionError = ExecutionError
module.exports.LockLostError = LockLostError
