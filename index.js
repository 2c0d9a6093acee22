'use strict'
// The thin JavaScript layer: what JavaScript idioms demand (EventEmitter, Error classes,
// rest parameters, util.inspect, AbortSignal in using(), reading ioredis / node-redis
// client options). Every lock decision is made in Rust (binding.js).

const diagnostics = require('node:diagnostics_channel')
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
const ABORTED = 'The operation was aborted.'

/**
 * Tracing channels (`node:diagnostics_channel`) for APM tools and metrics: the context is
 * `{ resources, duration, kind, settings }` and, at the end, `{ attempts, fence, reason }`.
 * Nothing is built when no one subscribes.
 */
const traces = {
  acquire: diagnostics.tracingChannel('redlock-rs:acquire'),
  release: diagnostics.tracingChannel('redlock-rs:release'),
  extend: diagnostics.tracingChannel('redlock-rs:extend'),
}
/** Published when `using()` loses its lock: `{ resources, value, expiration, error }`. */
const lostChannel = diagnostics.channel('redlock-rs:lost')

/**
 * Runs `operation()` traced on `channel` (when someone subscribes), with `context` filled
 * in at the end from its result or error.
 */
function traced(channel, context, operation) {
  if (!channel.hasSubscribers) return operation()
  return channel.tracePromise(async () => {
    try {
      const result = await operation()
      context.attempts = result?.attempts ?? result?.log?.toStats()
      context.fence = result?.fence
      return result
    } catch (error) {
      context.attempts = error?.attempts
      context.reason = error?.reason
      throw error
    }
  }, context)
}

/** `Symbol.asyncDispose` (Node.js 20 has it; older runtimes use the well-known fallback). */
const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')

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

/**
 * An operation did not achieve a quorum within its retry window. `reason` says why:
 * 'locked' | 'quorum-unavailable' | 'expired' | 'aborted' | 'internal'; `cause` holds the
 * node errors of the last attempt (an AggregateError) when nodes failed.
 */
class ExecutionError extends Error {
  constructor(message, attempts, options) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ExecutionError'
    this.attempts = attempts
    this.reason = options?.reason ?? 'internal'
  }
}

/** An automatic extension in `using()` failed: the lock may have been lost. */
class LockLostError extends Error {
  constructor(message, options) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'LockLostError'
    this.reason = options?.reason ?? 'expired'
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

// Completion statuses (src/completion.rs, `status`), and the `reason` of each failure.
const DONE = 0
const LOCKED = 1
const INTERNAL = 4
const ABORTED_OP = 5
const PROGRESS = 6
const LATE = 7
const REASONS = ['', 'locked', 'quorum-unavailable', 'expired', 'internal', 'aborted']

/**
 * The attempts of an operation as the engine reports them (one string per attempt, one
 * character per client), turned into node-redlock's `Promise<ExecutionStats>[]` only
 * when somebody reads them.
 */
class AttemptLog {
  #lateDone

  constructor(clients, attempts, errors, requested) {
    this.clients = clients
    this.attempts = attempts
    this.errors = errors
    this.requested = requested
    // Votes marked '?' come later (the attempt was decided before every node answered):
    // the last attempt's stats resolve once they are in, as node-redlock's do.
    if (attempts.length > 0 && attempts[attempts.length - 1].includes('?')) {
      this.late = new Promise((resolve) => (this.#lateDone = resolve))
    }
  }

  /** The complete votes of the last attempt (and their errors) arrived. */
  complete(attempt, errors) {
    this.attempts[this.attempts.length - 1] = attempt
    this.errors.push(...errors)
    this.#lateDone?.()
  }

  /**
   * Calls `fn(vote, client, message)` for every vote against in the attempts from index
   * `from` on.
   */
  eachAgainst(fn, from = 0) {
    let e = 0
    this.attempts.forEach((attempt, a) => {
      for (let i = 0; i < attempt.length; i++) {
        const vote = attempt[i]
        if (vote === 'L' && a >= from) fn(vote, this.clients[i], lockedMessage(this.requested))
        else if (vote === 'E') {
          const message = this.errors[e++]
          if (a >= from) fn(vote, this.clients[i], message)
        }
      }
    })
  }

  /** The node errors of the last attempt, as an AggregateError (undefined when none failed). */
  lastErrors() {
    const last = this.attempts.length - 1
    const errors = []
    this.eachAgainst((vote, client, message) => {
      if (vote === 'E') errors.push(Object.assign(new Error(message), { client }))
    }, last)
    if (errors.length === 0) return undefined
    const n = this.clients.length
    return new AggregateError(errors, `${errors.length} of ${n} Redis node${n === 1 ? '' : 's'} failed: ${errors.map((e) => e.message).join('; ')}`)
  }

  toStats() {
    const n = this.clients.length
    const quorumSize = Math.floor(n / 2) + 1
    const last = this.attempts.length - 1
    let offset = 0
    return this.attempts.map((attempt, a) => {
      const first = offset
      for (const vote of attempt) if (vote === 'E') offset++
      if (a === last && this.late) return this.late.then(() => this.#stats(this.attempts[last], first, n, quorumSize))
      return Promise.resolve(this.#stats(attempt, first, n, quorumSize))
    })
  }

  /** The ExecutionStats of one attempt whose errors start at `errors[first]`. */
  #stats(attempt, first, n, quorumSize) {
    const stats = { membershipSize: n, quorumSize, votesFor: new Set(), votesAgainst: new Map() }
    let e = first
    for (let i = 0; i < attempt.length; i++) {
      const vote = attempt[i]
      const client = this.clients[i]
      if (vote === 'F') stats.votesFor.add(client)
      else if (vote === 'L') stats.votesAgainst.set(client, new ResourceLockedError(lockedMessage(this.requested)))
      else if (vote === 'E') stats.votesAgainst.set(client, new Error(this.errors[e++]))
    }
    return stats
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

  /** `await using lock = await redlock.acquire(...)`: releases the lock; an expired one is no error. */
  async [asyncDispose]() {
    try {
      await this.redlock.release(this)
    } catch (error) {
      if (error?.reason !== 'expired') throw error
    }
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


/** The `signal` of a settings object, checked. */
function signalOf(settings) {
  const signal = settings?.signal
  if (signal == null) return undefined
  if (typeof signal !== 'object' || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw new TypeError('settings.signal must be an AbortSignal.')
  }
  return signal
}

/** The error of a call whose signal is aborted. */
function abortedError(signal, attempts) {
  return new ExecutionError(ABORTED, attempts, { reason: 'aborted', cause: signal?.reason })
}

/**
 * Redlocks with operations in flight. The completion callback holds its Redlock only
 * weakly (so that an idle, forgotten Redlock can be garbage collected); this set keeps
 * it alive while any of its promises is pending.
 */
const busy = new Set()

/**
 * Tells the native side whether anyone listens for 'error' / 'clientError' events (failed
 * attempts then report their votes as they end). In a function of its own: a closure
 * made in the constructor would share its scope with the completion callback, which the
 * native side holds, and keep every Redlock alive.
 */
function followListeners(redlock, native) {
  // 'newListener' comes before the listener is added: an 'error' listener then makes two
  // with the no-op, a 'clientError' listener one.
  redlock.on('newListener', (event) => {
    if (event === 'error' || event === 'clientError') native.setListening(true)
  })
  redlock.on('removeListener', (event) => {
    if (event === 'error' || event === 'clientError') {
      native.setListening(redlock.listenerCount('error') > 1 || redlock.listenerCount('clientError') > 0)
    }
  })
}

class Redlock extends EventEmitter {
  #native
  #clients
  #pending = new Map()
  /** The attempt logs of settled operations whose last votes come later, by id. */
  #late = new Map()
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
    followListeners(this, this.#native)
  }

  #listening() {
    return this.listenerCount('error') > 1 || this.listenerCount('clientError') > 0
  }

  /**
   * Starts `method` natively under a fresh id; resolves with its completion tuple. With an
   * AbortSignal, an abort stops the operation at once (it settles as ABORTED).
   */
  #call(method, signal, requested, ...args) {
    return new Promise((resolve, reject) => {
      const id = (this.#nextId = (this.#nextId + 1) >>> 0)
      this.#native[method](id, ...args) // bad arguments throw here: the promise rejects
      let settle = { resolve, reject, requested }
      if (signal) {
        const onAbort = () => this.#native.abort(id)
        signal.addEventListener('abort', onAbort, { once: true })
        const done = () => signal.removeEventListener('abort', onAbort)
        settle = { resolve: (c) => (done(), resolve(c)), reject: (e) => (done(), reject(e)), requested }
      }
      this.#pending.set(id, settle)
      if (this.#pending.size === 1) {
        busy.add(this)
        if (this.#keepAlive === null) this.#keepAlive = setInterval(noop, 0x7fffffff)
        else this.#keepAlive.ref()
      }
    })
  }

  #settle(batch) {
    for (const c of batch) {
      if (c[1] === LATE) {
        this.#late.get(c[0])?.complete(c[5][0], c[6])
        this.#late.delete(c[0])
        continue
      }
      const waiter = this.#pending.get(c[0])
      if (waiter === undefined) continue
      if (c[1] === PROGRESS) {
        this.#emitVotes(new AttemptLog(this.#clients, c[5], c[6], waiter.requested), 0)
        continue
      }
      this.#pending.delete(c[0])
      if (c[1] === INTERNAL) waiter.reject(new ExecutionError(c[2], [], { reason: 'internal' }))
      else waiter.resolve(c)
    }
    if (this.#pending.size === 0) {
      busy.delete(this)
      if (this.#keepAlive !== null) this.#keepAlive.unref()
    }
  }

  /** Emits 'error' (and 'clientError' for node failures) for the votes against in `log`'s attempts from `from` on. */
  #emitVotes(log, from) {
    if (!this.#listening()) return
    log.eachAgainst((vote, client, message) => {
      const error = vote === 'L' ? new ResourceLockedError(message) : new Error(message)
      this.emit('error', error)
      if (vote === 'E') this.emit('clientError', error, client)
    }, from)
  }

  /**
   * The attempts of completion `c`, emitting the votes against of its last attempt as
   * events (the earlier attempts were emitted as they ended).
   */
  #log(c, requested) {
    const log = new AttemptLog(this.#clients, c[5], c[6], requested)
    if (log.late) this.#late.set(c[0], log)
    this.#emitVotes(log, c[5].length - 1)
    return log
  }

  #fail(c, log, signal) {
    const reason = REASONS[c[1]] || 'internal'
    if (reason === 'aborted') return abortedError(signal, log.toStats())
    const message = reason === 'expired' ? EXPIRED : QUORUM_FAILED
    return new ExecutionError(message, log.toStats(), { reason, cause: log.lastErrors() })
  }

  // ---- the seed API

  /** `true`: acquired; `false`: another owner holds it; `null`: too many instances failed. */
  async acquireLock(resource, ttl) {
    const c = await this.#call('acquireLock', undefined, 1, resource, ttl)
    this.#log(c, 1)
    return c[1] === DONE ? true : c[1] === LOCKED ? false : null
  }

  /** Releases this instance's lock on `resource` when `lockValue` is `true`. */
  async releaseLock(resource, lockValue) {
    const c = await this.#call('releaseLock', undefined, 1, resource, lockValue)
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
  acquire(resources, duration, settings) {
    const context = { resources, duration, kind: 'mutex', settings }
    return traced(traces.acquire, context, () => this.#acquire(resources, duration, settings))
  }

  async #acquire(resources, duration, settings) {
    const signal = signalOf(settings)
    if (signal?.aborted) {
      this.#native.resolveSettings(settings) // bad settings still throw first
      throw abortedError(signal, [])
    }
    const c = await this.#call('acquire', signal, resources?.length, resources, duration, settings)
    const log = this.#log(c, resources.length)
    if (c[1] !== DONE) throw this.#fail(c, log, signal)
    return new Lock(this, [...resources], c[2], log, c[3], c[7] == null ? undefined : BigInt(c[7]))
  }

  /** Releases `lock` (owner-checked, idempotent). */
  release(lock, settings) {
    const context = { resources: lock?.resources, duration: undefined, kind: 'mutex', settings }
    return traced(traces.release, context, () => this.#release(lock, settings))
  }

  async #release(lock, settings) {
    lockArg(lock)
    const c = await this.#call('release', undefined, lock.resources?.length, lock.resources, lock.value, settings)
    lock.expiration = 0
    const log = this.#log(c, lock.resources.length)
    if (c[1] !== DONE) throw this.#fail(c, log)
    return new ExecutionResult(log, c[4])
  }

  /** Extends `lock` natively; resolves `{ expiration, log }` or throws the ExecutionError. */
  async #extend(lock, duration, settings) {
    lockArg(lock)
    const signal = signalOf(settings)
    if (signal?.aborted) throw abortedError(signal, [])
    const c = await this.#call('extend', signal, lock.resources?.length, lock.resources, lock.value, Number(lock.expiration), duration, settings)
    const log = this.#log(c, lock.resources.length)
    if (c[1] !== DONE) throw this.#fail(c, log, signal)
    return { expiration: c[3], log }
  }

  /** Extends `lock` to `duration` ms from now; resolves a new Lock, the old one is invalidated. */
  extend(lock, duration, settings) {
    const context = { resources: lock?.resources, duration, kind: 'mutex', settings }
    return traced(traces.extend, context, async () => {
      const { expiration, log } = await this.#extend(lock, duration, settings)
      lock.expiration = 0
      return new Lock(this, lock.resources, lock.value, log, expiration, lock.fence)
    })
  }

  /**
   * Runs `routine(signal, lock)` while holding the lock, extending it automatically
   * `automaticExtensionThreshold` ms before it expires (with the settings given here).
   * `lock` stays current: its `expiration` follows the extensions. When the lock is not
   * extended by its expiration (the extension's retries are bounded by the time the lock
   * has left), `signal` is aborted, no later than `lock.expiration`, with `signal.error`
   * a LockLostError, and the keys still ours are removed. The lock is always released; a
   * failed release never replaces the routine's result or error.
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
    const lock = await this.acquire(resources, duration, settings)
    const holding = new Holding(this, lock, duration, settings, effective.automaticExtensionThreshold, (l, d, s) => {
      const context = { resources: l.resources, duration: d, kind: 'mutex', settings: s }
      return traced(traces.extend, context, () => this.#extend(l, d, s))
    })
    try {
      return await routine(holding.signal, lock)
    } finally {
      await holding.stop()
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

/**
 * The automatic extension of a lock held by `using()`: extends `threshold` ms before the
 * lock expires, and aborts `signal` when the lock has not been extended by its expiration.
 */
class Holding {
  #controller = new AbortController()
  #timer
  #lossTimer
  #extension
  #done = false

  constructor(redlock, lock, duration, settings, threshold, extend) {
    this.redlock = redlock
    this.lock = lock
    this.duration = duration
    this.settings = settings
    this.threshold = threshold
    this.extendFn = extend
    this.#armLoss()
    this.#schedule()
  }

  get signal() {
    return this.#controller.signal
  }

  /** Aborts the signal at the lock's expiration unless an extension moved it. */
  #armLoss() {
    clearTimeout(this.#lossTimer)
    const left = Math.max(0, this.lock.expiration - Date.now())
    this.#lossTimer = setTimeout(() => this.#lose('expired'), left)
  }

  #schedule() {
    const wait = Math.max(0, this.lock.expiration - Date.now() - this.threshold)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#extension = this.#extend()
    }, wait)
  }

  async #extend() {
    try {
      // The engine stops retrying when the lock expires.
      const { expiration, log } = await this.extendFn(this.lock, this.duration, this.settings)
      if (this.#done || this.signal.aborted) return
      this.lock.expiration = expiration
      this.lock.attempts = log
      this.#armLoss()
      this.#schedule()
    } catch (error) {
      this.#lose(error?.reason ?? 'internal', error)
    }
  }

  #lose(reason, error) {
    if (this.#done || this.signal.aborted) return
    clearTimeout(this.#timer)
    clearTimeout(this.#lossTimer)
    const { lock, redlock } = this
    const cause = error?.cause instanceof AggregateError ? error.cause : error
    const lost = new LockLostError(
      `The lock on ${lock.resources.join(', ')} could not be extended and may have been lost.`,
      { cause, reason },
    )
    lost.expiration = lock.expiration
    const signal = this.signal
    signal.error = lost
    redlock.emit('error', lost)
    if (lostChannel.hasSubscribers) {
      lostChannel.publish({ resources: lock.resources, value: lock.value, expiration: lock.expiration, error: lost })
    }
    this.#controller.abort(lost)
    // Our keys that are left go now (owner-checked: a new holder's keys stay).
    redlock.release({ resources: lock.resources, value: lock.value }, this.settings).catch(noop)
  }

  /** Stops extending (waits for an extension in flight). */
  async stop() {
    this.#done = true
    clearTimeout(this.#timer)
    clearTimeout(this.#lossTimer)
    if (this.#extension) await this.#extension
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
