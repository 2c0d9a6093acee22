'use strict'
// Redlock (an EventEmitter): starts each operation natively under an id, settles its promise
// from the completion, and turns that into a Lock or an ExecutionError, emitting the votes.

const { EventEmitter, errorMonitor } = require('node:events')
const { inspect } = require('node:util')

const { onAbort } = require('./abort.js')
const { ClientBase, describeClient, inspectInstead, keyPrefixOf, leaveShared, lockUse, nativeClientFor, shownClient } = require('./clients.js')
const { AttemptLog, ExecutionResult, nodeErrors } = require('./attempts.js')
const { traces, subscribed, traced } = require('./diagnostics.js')
const { QUORUM_FAILED, ExecutionError, ResourceLockedError, abortedError, failureError } = require('./errors.js')
const { ReadWriteLock, Semaphore, acquireHold, holdersOf, usingHold } = require('./kinds.js')
const { Lock, MAX_ARRAY, fenceFrom, holdFor, lockArg, notOwnKey, setExpiration, wellFormed, wellFormedName } = require('./lock.js')
const {
  NativeRedlock,
  lockAcquire,
  lockExtend,
  lockRelease,
  DONE,
  LOCKED,
  INTERNAL,
  PROGRESS,
  LATE,
  FAILED,
  idOf,
  statusOf,
  succeeded,
  reasonOf,
  lockValueOf,
  messageOf,
  expirationOf,
  startOf,
  attemptsOf,
  completionsOf,
  errorsOf,
  lateAttemptOf,
  fenceTokenOf,
  slotOf,
} = require('./native.js')
const { Holding, emitError, releaseLost } = require('./using.js')

const noop = () => {}

/** How long `quit()` waits for the releases of the locks of the using() routines running (ms). */
const QUIT_RELEASE_WAIT = 1_000

/**
 * Lock objects invalidated by their extend: their keys live on under the new Lock, so
 * their expiration (0) says nothing about them; released as a lock of unknown expiration.
 */
const superseded = new WeakSet()

/**
 * The expiration of locks whose release is under way or failed (0 once one succeeded; an
 * entry at all: a release started, which an extension landing after it learns): no longer
 * to be relied on (expiration 0, set when a release starts), but a release meanwhile or
 * after tries the nodes until then, as the first did.
 */
const releasing = new WeakMap()

/**
 * The Holding (automatic extension) of each lock a `using()` routine holds, and of the
 * Locks the routine got by extending it: an extend or release by the routine reaches it.
 */
const holdings = new WeakMap()

/** Marks `lock` expired (used up); a lock object that cannot be written (frozen) stays as it is. */
const invalidate = (lock) => setExpiration(lock, 0)

/** The `signal` of a settings object, checked. */
function signalOf(settings) {
  const signal = settings?.signal
  if (signal == null) return undefined
  if (
    typeof signal !== 'object' ||
    typeof signal.aborted !== 'boolean' ||
    typeof signal.addEventListener !== 'function' ||
    typeof signal.removeEventListener !== 'function'
  ) {
    throw new TypeError('settings.signal must be an AbortSignal.')
  }
  return signal
}

/**
 * Redlocks with operations in flight. The completion callback holds its Redlock only
 * weakly (so that an idle, forgotten Redlock can be garbage collected); this set keeps
 * it alive while any of its promises is pending.
 */
const busy = new Set()

/**
 * One timer, ref'd while any Redlock is busy, keeps the process alive for them: one per
 * Redlock, never cleared, was a Timeout kept for ever by every Redlock made per request
 * and dropped without quit() (found by a soak: 150 bytes a request).
 */
let keepAlive = null

function keepAliveWhileBusy() {
  if (busy.size > 0) {
    if (keepAlive === null) keepAlive = setInterval(noop, 0x7fffffff)
    else keepAlive.ref()
  } else if (keepAlive !== null) keepAlive.unref()
}

/**
 * Tells the native side whether anyone listens for 'error' / 'clientError' events (failed
 * attempts then report their votes as they end). In a function of its own: a closure
 * made in the constructor would share its scope with the completion callback, which the
 * native side holds, and keep every Redlock alive.
 */
function followListeners(redlock, native) {
  // 'newListener' comes before the listener is added.
  const hooks = {
    newListener: (event) => {
      if (HEARD.has(event)) native.setListening(true)
    },
    removeListener: (event) => {
      if (HEARD.has(event)) native.setListening(listening(redlock))
    },
  }
  for (const [event, hook] of Object.entries(hooks)) redlock.on(event, hook)
  return hooks
}

/** Adds again those of `hooks` (see `followListeners`) that were removed. */
function keepFollowing(redlock, hooks) {
  for (const [event, hook] of Object.entries(hooks)) {
    if (redlock.listenerCount(event, hook) === 0) redlock.on(event, hook)
  }
}

/** The events whose listeners make the votes against reported (errorMonitor: 'error' too). */
const HEARD = new Set(['error', 'clientError', errorMonitor])

/** Whether anyone but the no-op listener listens for 'error' (or watches it) or 'clientError'. */
function listening(redlock) {
  return (
    redlock.listenerCount('error') > redlock.listenerCount('error', noop) ||
    redlock.listenerCount('clientError') > 0 ||
    redlock.listenerCount(errorMonitor) > 0
  )
}

/**
 * `redlock.clients`: the clients passed in, a frozen Array that also answers node-redlock's
 * `Set` reads (`has(client)`, `size`), so code written for either works.
 */
function clientList(list) {
  const clients = list.slice()
  const members = new Set(clients)
  Object.defineProperties(clients, {
    has: { value: (client) => members.has(client) },
    size: { value: clients.length },
  })
  return Object.freeze(clients)
}

class Redlock extends EventEmitter {
  #native
  /** `#native`'s handle, for lockAcquire, lockExtend and lockRelease. */
  #handle
  /** The listeners that follow who listens for errors (see `followListeners`). */
  #hooks
  #clients
  #pending = new Map()
  /** The attempt logs of settled operations whose last votes come later, by id. */
  #late = new Map()
  /** Late votes that arrived before their operation's completion, by id. */
  #early = new Map()
  #nextId = 0
  /** Aborted by `quit()`, which ends every operation under way (reason 'aborted'). */
  #closed = undefined
  /** The end of `quit()`, once called: later operations wait for it (see `#quit`). */
  #quitting = undefined
  /** The holdings of the using() routines running (their locks go at `quit()`). */
  #running = new Set()
  /** How many releases are under way, and what `quit()` waits for them with. */
  #releasing = 0
  #released = undefined
  /** The ioredis `keyPrefix` of the clients passed in ('' for none): put before every key. */
  #prefix = ''

  constructor(clients, settings, scripts) {
    super()
    // As node-redlock: failed votes are emitted as 'error' events, which must not crash a
    // process that does not listen for them.
    this.on('error', noop)
    if (clients == null || typeof clients === 'string' || typeof clients[Symbol.iterator] !== 'function') {
      throw new TypeError('clients must be an iterable of Redis clients.')
    }
    // (node-redlock's default, an object without any script, changes nothing.)
    if (scripts != null && (typeof scripts !== 'object' || Object.values(scripts).some((v) => v != null))) {
      throw new TypeError("custom scripts (node-redlock's third argument) are not supported: redlock-rs runs its own Lua scripts, which its guarantees rest on.")
    }
    if (settings != null && typeof settings === 'object' && settings.signal !== undefined) {
      throw new TypeError('settings.signal belongs to an operation (acquire, using, an acquirer), not to new Redlock(): it would abort nothing.')
    }
    // The same client twice is one server: it gets one vote (node-redlock keeps a Set).
    const list = [...new Set(clients)]
    const prefixes = new Set(list.map(keyPrefixOf))
    if (prefixes.size > 1) {
      throw new TypeError(`clients must all have the same keyPrefix; got ${[...prefixes].map((p) => JSON.stringify(p)).join(', ')}.`)
    }
    this.#prefix = prefixes.values().next().value ?? ''
    const natives = []
    try {
      list.forEach((client, i) => natives.push(nativeClientFor(client, i)))
      const self = new WeakRef(this)
      this.#native = new NativeRedlock(natives, settings, (...batch) => self.deref()?.#settle(completionsOf(batch)))
    } catch (error) {
      leaveShared(list.slice(0, natives.length))
      throw error
    }
    this.#handle = this.#native.handle
    this.#clients = list
    this.#own = list.filter((c) => c instanceof ClientBase)
    Object.defineProperty(this, 'clients', { value: clientList(list), enumerable: true })
    Object.defineProperty(this, 'settings', { value: Object.freeze(this.#native.settings), enumerable: true })
    this.#hooks = followListeners(this, this.#native)
  }

  /**
   * The key of `resource` on the nodes: the name itself, after the clients' ioredis
   * `keyPrefix` when they have one (as node-redlock's keys through them are). Anything but
   * a non-empty string is left for the native call to refuse.
   */
  #key(resource) {
    return this.#prefix !== '' && typeof resource === 'string' && resource !== '' ? this.#prefix + resource : resource
  }

  /** The keys of `resources` (see `#key`). */
  #keys(resources) {
    // (An array too long for the native call is left for it to refuse at once, not read:
    // found by a regression hunt, a sparse new Array(5e8) was mapped for 10 s.)
    return this.#prefix !== '' && Array.isArray(resources) && resources.length <= MAX_ARRAY ? resources.map((r) => this.#key(r)) : resources
  }

  /** What aborted an operation: its signal, or else `quit()`. */
  #abortedBy(signal) {
    return signal?.aborted ? signal : (this.#closed ?? signal)
  }

  #listening() {
    return listening(this)
  }

  /**
   * EventEmitter's, but the listeners that tell the native side whether anyone listens
   * stay (removing every listener would otherwise leave it deaf to the next ones), and so
   * does the no-op 'error' listener (an 'error' event with no listener would throw).
   */
  removeAllListeners(...events) {
    super.removeAllListeners(...events)
    keepFollowing(this, this.#hooks)
    if (this.listenerCount('error', noop) === 0) this.on('error', noop)
    this.#native.setListening(listening(this))
    return this
  }

  /** A fresh operation id, under which the next native operation starts. */
  #id() {
    // Our own clients passed in that wait to hear of lock traffic are told of it: a
    // lazyConnect one connects, a watched one says 'connect' and 'ready', as with
    // node-redlock, whose lock commands connect them (see ClientBase's lockUse.used).
    if (lockUse.awaiting() > 0) for (const c of this.#own) c[lockUse.used]()
    return (this.#nextId = (this.#nextId + 1) >>> 0)
  }

  /** The redlock-rs clients (Redis, RedisJsClient, Cluster, MemoryStore) passed in. */
  #own = []

  /**
   * Resolves with the completion tuple of operation `id` (just started natively). With an
   * AbortSignal, an abort stops the operation at once (it settles as ABORTED).
   */
  #wait(id, signal, requested) {
    return new Promise((resolve, reject) => {
      let settle = { resolve, reject, requested }
      if (signal?.aborted) {
        // Checked first (above), then aborted before it sends anything.
        this.#native.abort(id)
      } else if (signal) {
        const done = onAbort(signal, () => this.#native.abort(id))
        settle = { resolve: (c) => (done(), resolve(c)), reject: (e) => (done(), reject(e)), requested }
      }
      this.#pending.set(id, settle)
      if (this.#pending.size === 1) this.#keepAliveIfBusy()
    })
  }

  #settle(batch) {
    for (const c of batch) {
      try {
        this.#settleOne(c)
      } catch (error) {
        // One completion's failure (a listener that throws) must not strand the others.
        queueMicrotask(() => {
          throw error
        })
      }
    }
    // (While operations are in flight the process is kept alive already.)
    if (this.#pending.size === 0) this.#keepAliveIfBusy()
  }

  /**
   * Keeps the process alive (and this Redlock from being collected) while an operation is
   * in flight or a settled one's last votes are still to come (`lock.attempts` resolve
   * with them: awaiting one must not let the process exit). Both are bounded by time-outs.
   */
  #keepAliveIfBusy() {
    // After quit() late votes may never come: they keep nothing alive then.
    if (this.#pending.size > 0 || (this.#late.size > 0 && this.#closed === undefined)) busy.add(this)
    else busy.delete(this)
    keepAliveWhileBusy()
  }

  /** Settles the operation of completion `c` (or records its late votes). */
  #settleOne(c) {
    const id = idOf(c)
    const status = statusOf(c)
    if (status === LATE) {
      const log = this.#late.get(id)
      this.#late.delete(id)
      // The late votes can overtake their operation's completion: keep them for it.
      if (log === undefined) this.#early.set(id, c)
      else log.complete(lateAttemptOf(c), errorsOf(c), this.#listening() ? this.#emitVote : undefined)
      return
    }
    const waiter = this.#pending.get(id)
    if (waiter === undefined) return
    // A node's failure as its vote came in (its only vote in the attempt string), or an
    // attempt that is not the last, as it ended: their events now (the engine marks what
    // was told, in lower case, so that nothing is told twice).
    if (status === FAILED || status === PROGRESS) {
      this.#emitVotes(new AttemptLog(this.#clients, attemptsOf(c), errorsOf(c), waiter.requested), 0)
      return
    }
    this.#pending.delete(id)
    if (status === INTERNAL) waiter.reject(new ExecutionError(messageOf(c), [], { reason: 'internal' }))
    else waiter.resolve(c)
  }

  /** Emits 'error' (and 'clientError' for node failures) for the votes against in `log`'s attempts from `from` on. */
  #emitVotes(log, from) {
    if (!this.#listening()) return
    log.eachAgainst(this.#emitVote, from)
  }

  /** Emits 'error' (and 'clientError' for a node failure) for one vote against. */
  #emitVote = (vote, client, message) => {
    if (vote === 'e' || vote === 'l') return // (told already)
    const error = vote === 'L' ? new ResourceLockedError(message) : new Error(message)
    // A listener that throws must not change the operation's outcome (a lock won but
    // reported as failed would be held with no Lock to release it): its error is thrown
    // on its own, as an uncaught exception, as using() does with its listeners'.
    try {
      if (this.listenerCount('error') > 0) this.emit('error', error)
      if (vote === 'E') this.emit('clientError', error, client)
    } catch (thrown) {
      queueMicrotask(() => {
        throw thrown
      })
    }
  }

  /**
   * The attempts of completion `c`, emitting the votes against of its last attempt as
   * events (the earlier attempts were emitted as they ended).
   */
  #log(c, requested) {
    const attempts = attemptsOf(c)
    const log = new AttemptLog(this.#clients, attempts, errorsOf(c), requested)
    if (log.late) {
      const id = idOf(c)
      const early = this.#early.get(id)
      this.#early.delete(id)
      if (early) log.complete(lateAttemptOf(early), errorsOf(early))
      else {
        this.#late.set(id, log)
        this.#keepAliveIfBusy()
      }
    }
    this.#emitVotes(log, attempts.length - 1)
    return log
  }

  // ---- the seed API

  /** `true`: acquired; `false`: another owner holds it; `null`: too many instances failed. */
  async acquireLock(resource, ttl) {
    if (this.#quitting !== undefined) await this.#quitting
    wellFormedName(resource, 'resource')
    const key = this.#key(resource)
    notOwnKey(key, 'resource')
    const id = this.#id()
    this.#native.acquireLock(id, key, ttl) // bad arguments throw here
    const c = await this.#wait(id, undefined, 1)
    this.#log(c, 1)
    const status = statusOf(c)
    return status === DONE ? true : status === LOCKED ? false : null
  }

  /** Releases this instance's lock on `resource` when `lockValue` is `true`. */
  async releaseLock(resource, lockValue) {
    wellFormedName(resource, 'resource')
    const id = this.#id()
    this.#native.releaseLock(id, this.#key(resource), lockValue)
    const c = await this.#wait(id, undefined, 1)
    const log = this.#log(c, 1)
    if (!succeeded(c)) throw failureError(reasonOf(c), log)
  }

  /** The fencing token of the lock this instance holds on `resource` (seed API, with `fencing`). */
  fenceOf(resource) {
    wellFormedName(resource, 'resource')
    const fence = this.#native.fenceOf(this.#key(resource))
    return fence == null ? undefined : BigInt(fence)
  }

  // ---- node-redlock v5

  /** Locks every resource (all or nothing) for `duration` ms. */
  acquire(resources, duration, settings) {
    return this[acquireHold](resources, duration, settings, undefined)
  }

  /** A semaphore of `permits` on `resource`: at most `permits` holders at once. */
  semaphore(resource, permits) {
    return new Semaphore(this, resource, permits)
  }

  /** A read-write lock on `resource`: shared `read` holds, an exclusive `write` hold. */
  readWriteLock(resource) {
    return new ReadWriteLock(this, resource)
  }

  /** Acquires a hold of `hold.kind` (a mutex when `hold` is undefined). */
  [acquireHold](resources, duration, settings, hold) {
    // (Untraced, without the closure: an acquire and a release are every lock cycle.)
    if (!subscribed(traces.acquire)) return this.#acquire(resources, duration, settings, hold)
    const kind = hold?.kind ?? 'mutex'
    return traced(traces.acquire, this, resources, duration, kind, settings, () => this.#acquire(resources, duration, settings, hold))
  }

  async #acquire(resources, duration, settings, hold) {
    if (this.#quitting !== undefined) await this.#quitting
    const signal = signalOf(settings)
    // The names as they are now: the caller may change its array while the call runs.
    // (Not an array to read, or one too long: the native call refuses it at once.)
    const readable = wellFormed(resources)
    const names = readable ? [...resources] : resources
    const keys = this.#keys(names)
    if (readable) for (let i = 0; i < keys.length; i++) notOwnKey(keys[i], hold ? 'resource' : 'resources', hold ? undefined : i)
    // (An aborted signal rejects after the arguments are checked, with nothing sent.)
    const id = this.#id()
    lockAcquire(this.#handle, id, keys, duration, settings, hold)
    const c = await this.#wait(id, signal, names.length)
    const log = this.#log(c, names.length)
    if (!succeeded(c)) throw failureError(reasonOf(c), log, this.#abortedBy(signal))
    const held = hold && { ...hold, slot: slotOf(c) }
    return new Lock(this, names, lockValueOf(c), log, expirationOf(c), fenceTokenOf(c), hold?.kind ?? 'mutex', held)
  }

  /** Live holders of semaphore `resource` of `permits`, as a quorum sees them. */
  async [holdersOf](resource, permits) {
    if (this.#quitting !== undefined) await this.#quitting
    try {
      return await this.#native.holders(this.#key(resource), permits)
    } catch (error) {
      if (this.#closed !== undefined) throw abortedError(this.#closed, [])
      // The message's lines after the first: `index<TAB>message` of each node that failed.
      const failed = String(error?.message)
        .split('\n')
        .slice(1)
        .map((line) => /^(\d+)\t(.*)$/.exec(line))
        .filter((m) => m !== null && Number(m[1]) < this.clients.length)
      const cause = nodeErrors(failed.map(([, i, message]) => [this.clients[Number(i)], message]), this.clients.length) ?? error
      throw new ExecutionError(QUORUM_FAILED, [], { reason: 'quorum-unavailable', cause })
    }
  }

  /** Releases `lock` (owner-checked, idempotent). */
  release(lock, settings) {
    if (!subscribed(traces.release)) return this.#release(lock, settings)
    const kind = lock?.kind ?? 'mutex'
    return traced(traces.release, this, lock?.resources, undefined, kind, settings, () => this.#release(lock, settings), lock?.fence)
  }

  async #release(lock, settings) {
    lockArg(lock)
    holdings.get(lock)?.released()
    const id = this.#id()
    // (Only a lock whose expiration is 0 can have a release under way or failed behind it.)
    const retried = lock.expiration === 0 ? releasing.get(lock) : undefined
    const expiration = superseded.has(lock) ? NaN : (retried ?? Number(lock.expiration))
    lockRelease(this.#handle, id, this.#keys(lock.resources), lock.value, expiration, settings, holdFor(lock))
    // Its keys may be on a quorum until this release is done: a release meanwhile, or
    // after it failed, must release them, not take the lock for expired.
    releasing.set(lock, expiration)
    // No longer to be relied on from now (node-redlock's release too invalidates the lock
    // at once).
    invalidate(lock)
    // (Counted: `quit()` lets the releases under way finish before it closes the connections.)
    this.#releasing++
    let c
    try {
      c = await this.#wait(id, undefined, lock.resources.length)
    } finally {
      if (--this.#releasing === 0) this.#released?.()
    }
    const log = this.#log(c, lock.resources.length)
    if (!succeeded(c)) throw failureError(reasonOf(c), log, this.#abortedBy(undefined))
    releasing.set(lock, 0)
    return new ExecutionResult(log, startOf(c))
  }

  /**
   * Extends `lock` natively; resolves `{ expiration, log }` or throws the ExecutionError.
   * Retries stop at `until` (ms since the epoch; the lock's expiration by default).
   */
  async #extend(lock, duration, settings, until) {
    if (this.#quitting !== undefined) await this.#quitting
    lockArg(lock)
    // (Checked before the call: the Lock it gives carries the fence on.)
    fenceFrom(lock.fence, 'lock.fence')
    // (After quit(), aborted as every operation is, whatever a release meanwhile did to it.)
    if (this.#closed !== undefined) throw abortedError(this.#closed, [])
    until ??= lock.expiration
    const signal = signalOf(settings)
    const id = this.#id()
    const started = Date.now()
    lockExtend(this.#handle, id, this.#keys(lock.resources), lock.value, Number(until), duration, settings, holdFor(lock))
    const c = await this.#wait(id, signal, lock.resources.length)
    const log = this.#log(c, lock.resources.length)
    if (!succeeded(c)) {
      // The nodes that took it (or may have: no answer) hold the keys for `duration` from
      // when they did: a shorter one than the lock had left shortens the lock, even though
      // the extend failed.
      const reached = log.attempts.some((votes) => /[FE?]/.test(votes))
      const df = settings?.driftFactor ?? this.settings.driftFactor
      const shortest = started + duration - (Math.round(df * duration) + 2)
      const reason = reasonOf(c)
      if (!Object.isFrozen(lock)) {
        if (reached && shortest < lock.expiration) lock.expiration = shortest
        // Gone or taken on too many nodes to make a quorum: the lock is no longer held.
        if (reason === 'expired' || reason === 'locked') lock.expiration = Math.min(lock.expiration, Date.now())
      }
      throw failureError(reason, log, this.#abortedBy(signal))
    }
    return { expiration: expirationOf(c), log }
  }

  /** Extends `lock` to `duration` ms from now; resolves a new Lock, the old one is invalidated. */
  extend(lock, duration, settings) {
    // A lock a using() routine holds is extended in turn with the automatic extensions.
    const held = holdings.get(lock)
    const extending = held === undefined ? this.#extended(lock, duration, settings) : held.manual(lock, (until) => this.#extended(lock, duration, settings, until))
    return extending.then((extended) => {
      const pending = releasing.get(lock)
      if (pending !== undefined) {
        // Released meanwhile (the extension went out first, the release after it): the
        // new Lock claims nothing, and a release retried later tries until its keys' end.
        if (pending !== 0) releasing.set(lock, Math.max(pending, extended.expiration))
        invalidate(extended)
        return extended
      }
      const holding = holdings.get(lock)
      if (holding !== undefined) {
        holdings.set(extended, holding)
        holding.follow(extended)
        // The lock a using() routine holds stays current (its expiration follows).
        if (holding.lock === lock) return extended
      }
      invalidate(lock)
      superseded.add(lock)
      return extended
    })
  }

  /** `lock` extended (traced): a new Lock with the new expiration; `until` as for `#extend`. */
  #extended(lock, duration, settings, until) {
    const kind = lock?.kind ?? 'mutex'
    return traced(traces.extend, this, lock?.resources, duration, kind, settings, async () => {
      const { expiration, log } = await this.#extend(lock, duration, settings, until)
      return new Lock(this, lock.resources, lock.value, log, expiration, lock.fence, lock.kind, holdFor(lock))
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
    return this[usingHold](resources, duration, settings, routine, undefined)
  }

  /** `using()` for a hold of `hold.kind` (a mutex when undefined). */
  async [usingHold](resources, duration, settings, routine, hold) {
    if (typeof routine !== 'function') throw new TypeError('routine must be a function.')
    const effective = this.#native.resolveSettings(settings)
    // (A duration that is no integer is refused by the acquire, with node-redlock's message.)
    if (Number.isInteger(duration) && effective.automaticExtensionThreshold > duration - 100) {
      throw new RangeError(
        'A lock `duration` must be at least 100ms greater than the `automaticExtensionThreshold` setting.',
      )
    }
    const lock = await this[acquireHold](resources, duration, settings, hold)
    const holding = new Holding(this, lock, duration, settings, effective.automaticExtensionThreshold, (l, d, s, until) =>
      this.#extended(l, d, s, until),
    )
    holdings.set(lock, holding)
    this.#running.add(holding)
    try {
      // (Given up before it could start: `settings.signal` aborted, or `quit()` was called,
      // meanwhile. The lock goes; the routine does not run without it.)
      if (this.#quitting !== undefined && !holding.signal.aborted) holding.quit(this.#closed.reason)
      if (holding.signal.aborted) {
        const given = signalOf(settings)
        throw abortedError(given?.aborted ? given : this.#closed, lock.attempts)
      }
      return await routine(holding.signal, lock)
    } finally {
      this.#running.delete(holding)
      await holding.stop()
      holdings.delete(lock)
      // A lost lock's keys were sent away when it was lost (in the background): the
      // routine's outcome does not wait for nodes that may not answer.
      if (!holding.signal.aborted) {
        try {
          await this.release(lock, settings)
        } catch (error) {
          emitError(this, error) // the lock expires by itself; the routine's outcome stands
        }
      }
    }
  }

  /**
   * `util.inspect` (and `console.log`, also of a Lock): the clients by their address (see
   * `describeClient`), never the objects passed in, whose inspection may print a password.
   */
  [inspect.custom](depth, options, show) {
    const shown = { clients: this.clients.map(shownClient), settings: this.settings }
    return `Redlock ${inspectInstead(shown, depth, options, show)}`
  }

  /** `JSON.stringify(redlock)`: the clients by their address (passwords masked), and the settings. */
  toJSON() {
    return { clients: this.clients.map(describeClient), settings: this.settings }
  }

  /**
   * Closes the native connections of this instance, those of the redlock-rs clients passed
   * in included; ioredis and node-redis clients passed in are left open.
   */
  quit() {
    if (this.#quitting === undefined) {
      // Set before any work: a routine's abort listener that calls quit() gets this one.
      let settle
      this.#quitting = new Promise((resolve, reject) => (settle = { resolve, reject }))
      this.#quit().then(settle.resolve, settle.reject)
    }
    return this.#quitting
  }

  async #quit() {
    this.#closed = AbortSignal.abort(new Error('redlock.quit() was called.')) // (the cause of what quit() ends)
    const quitting = this.#closed.reason
    // The acquires under way end first (as aborted, leaving nothing on the nodes), so that
    // no release below hands its lock to one of them. The using() routines running hear
    // it at once, and their locks' releases start now; releases under way are waited for
    // a while. Meanwhile `#quitting` holds every later operation back (but releases) until
    // the connections are closed, which then refuses it; those started in this same turn
    // (a release right after the call) go out first.
    this.#native.stopAcquires()
    releaseLost() // (the locks just lost: their releases are waited for below)
    for (const holding of this.#running) holding.quit(quitting)
    await Promise.resolve()
    // Those and every other release under way (one started with quit()) finish first.
    if (this.#releasing > 0) {
      let timer
      const bound = new Promise((resolve) => (timer = setTimeout(resolve, QUIT_RELEASE_WAIT)))
      await Promise.race([new Promise((resolve) => (this.#released = resolve)), bound])
      clearTimeout(timer)
    }
    // The native connections close after the requests still under way that have work left
    // (within the command time-out): the process stays alive for them.
    const closing = setInterval(noop, 0x7fffffff)
    try {
      await this.#native.quit(leaveShared(this.#clients))
    } finally {
      clearInterval(closing)
    }
    // Our own clients passed in are closed too: they say so, as after their own quit().
    for (const c of this.#clients) if (c instanceof ClientBase) c[lockUse.closed]()
    busy.delete(this)
    keepAliveWhileBusy()
  }
}

module.exports = { Redlock }
