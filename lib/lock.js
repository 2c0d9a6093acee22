'use strict'
// A held lock (Lock), the native description of what a semaphore or read-write lock's Lock
// holds (holdOf), and the checks of a lock argument and of resource names.

const { AttemptLog } = require('./attempts.js')

/** `Symbol.asyncDispose` (Node.js 20 has it; older runtimes use the well-known fallback). */
const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')

/**
 * A fence as a bigint: also from the decimal string `toJSON()` writes (a lock read back
 * from JSON) or a safe integer; none (undefined or null) is undefined; anything else is a
 * TypeError naming it.
 */
function fenceFrom(fence, name = 'fence') {
  if (fence === undefined || fence === null) return undefined
  if (typeof fence === 'bigint') return fence
  if ((typeof fence === 'string' && fence.length <= 1000 && /^-?[0-9]+$/.test(fence)) || Number.isSafeInteger(fence)) return BigInt(fence)
  const got = typeof fence === 'string' ? JSON.stringify(fence.slice(0, 40)) : typeof fence
  throw new TypeError(`${name} must be a bigint (or the decimal string toJSON() gives), got ${got}.`)
}

/** The native description of what a semaphore or read-write lock's Lock holds. */
const holdOf = new WeakMap()

class Lock {
  #attempts

  /**
   * `kind`: 'mutex' | 'permit' | 'read' | 'write'; `hold`: the native description of a
   * semaphore permit or read-write hold.
   */
  constructor(redlock, resources, value, attempts, expiration, fence, kind = 'mutex', hold = undefined) {
    this.redlock = redlock
    this.resources = resources
    this.value = value
    this.#attempts = attempts
    this.expiration = expiration
    fence = fenceFrom(fence)
    if (fence !== undefined) this.fence = fence
    this.kind = kind
    if (hold !== undefined) holdOf.set(this, hold)
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
  release() {
    return this.redlock.release(this)
  }

  /**
   * `await using lock = await redlock.acquire(...)`: releases the lock; an expired one is no
   * error (its release is tried, and any failure of it ignored: there is nothing left to
   * protect).
   */
  async [asyncDispose]() {
    const expiration = this.expiration
    try {
      await this.redlock.release(this)
    } catch (error) {
      // Expired before or during its release: nothing was left to protect.
      if (expiration > Date.now() && error?.reason !== 'expired') throw error
    }
  }

  /**
   * `JSON.stringify(lock)`: what the lock is (the fence as a decimal string: JSON has no
   * bigint), without its Redlock and clients (whose options may hold a password).
   */
  toJSON() {
    const { resources, value, expiration, kind, fence } = this
    return { resources, value, expiration, kind, ...(fence === undefined ? {} : { fence: String(fence) }) }
  }

  /** Extends this lock by `duration` ms; resolves a new Lock (see `Redlock#extend`). */
  extend(duration) {
    return this.redlock.extend(this, duration)
  }
}

/** Sets `lock.expiration`; a lock object that cannot be written (frozen: the user's doing) keeps its own. */
function setExpiration(lock, expiration) {
  try {
    lock.expiration = expiration
  } catch {}
}

/**
 * The native hold of `lock`: the one its acquire gave, else (a Lock rebuilt with `new
 * Lock(...)`, or a copy such as `{ ...lock }`) what its kind tells: nothing for a mutex, the
 * kind for a read or write hold. A permit's slot is known only to the Lock its acquire
 * returned: released as a mutex, a copy would free nothing and resolve all the same.
 */
function holdFor(lock) {
  const hold = holdOf.get(lock)
  if (hold !== undefined) return hold
  const kind = lock.kind
  if (kind === undefined || kind === 'mutex') return undefined
  if (kind === 'read' || kind === 'write') return { kind }
  if (kind === 'permit') {
    throw new TypeError('lock is a semaphore permit not returned by acquire() (rebuilt, or copied): the slot it holds is not known; release or extend the Lock that acquire() returned.')
  }
  throw new TypeError(`lock.kind must be 'mutex', 'permit', 'read' or 'write'; got ${typeof kind === 'string' ? JSON.stringify(kind) : typeof kind}.`)
}

/**
 * `lock` as release and extend take it: a Lock, or an object with its `resources` and
 * `value` (what is wrong with those is said by the native call, naming the field).
 */
function lockArg(lock) {
  if (lock === null || typeof lock !== 'object' || (lock.resources === undefined && lock.value === undefined)) {
    throw new TypeError('lock must be a Lock.')
  }
  return lock
}

/** The longest array the native calls take (`MAX_ARRAY` in src/addon/js.rs). */
const MAX_ARRAY = 1 << 20

/**
 * Throws a TypeError naming the first resource that is not well-formed Unicode (a lone
 * surrogate): it could not be told apart from another such name once sent to Redis.
 * Whether `resources` is an array to read (and copy): anything else, or one too long (a
 * sparse `new Array(5e8)`), is left for the native call to refuse at once.
 */
function wellFormed(resources) {
  if (!Array.isArray(resources) || resources.length > MAX_ARRAY) return false
  for (let i = 0; i < resources.length; i++) wellFormedName(resources[i], 'resources', i)
  return true
}

/** `index`: the place of `value` in the array `name` (its name is built only for the error). */
function wellFormedName(value, name, index) {
  if (typeof value === 'string' && !value.isWellFormed()) {
    throw new TypeError(`${named(name, index)} must be well-formed Unicode: it has a lone surrogate.`)
  }
}

/**
 * Throws a TypeError when `key` (a resource name, with the clients' keyPrefix) is one of the
 * library's own keys: `redlock-rs:nodes`, `{r}:redlock-rs:fence`, `r{t}:redlock-rs:tagged:...`
 * (found by an audit: locked as a mutex, it took the restart records' place, or was
 * overwritten by a fencing counter). Checked with the prefix (found by a regression hunt:
 * a keyPrefix of 'redlock-rs:' let 'nodes' through).
 */
function notOwnKey(key, name, index) {
  if (typeof key === 'string' && (key.startsWith('redlock-rs:') || (key.startsWith('{') && key.includes('}:redlock-rs:')) || key.includes(':redlock-rs:tagged:'))) {
    throw new TypeError(`${named(name, index)} is a key of redlock-rs' own (it starts with 'redlock-rs:', or with '{' and has '}:redlock-rs:' in it, or has ':redlock-rs:tagged:'): give the resource another name.`)
  }
}

const named = (name, index) => (index === undefined ? name : `${name}[${index}]`)

module.exports = { Lock, MAX_ARRAY, fenceFrom, holdFor, lockArg, notOwnKey, setExpiration, wellFormed, wellFormedName }
