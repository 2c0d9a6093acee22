'use strict'
// The lock kinds beyond the mutex: Semaphore and ReadWriteLock (and the Acquirer of one kind
// of hold they are made of), and the symbols of the Redlock operations they call.

const { wellFormedName } = require('./lock.js')

/** Redlock's internal operations, for Semaphore and ReadWriteLock. */
const acquireHold = Symbol('redlock-rs.acquireHold')
const usingHold = Symbol('redlock-rs.usingHold')
const holdersOf = Symbol('redlock-rs.holders')

/** The most permits a semaphore may have (each is a key on every node). */
const MAX_PERMITS = 10_000

/** Takes holds of one kind on one resource: a semaphore's permits, or a read-write lock's side. */
class Acquirer {
  #redlock
  #hold

  constructor(redlock, resource, hold) {
    if (typeof redlock?.[acquireHold] !== 'function') {
      throw new TypeError('redlock must be a Redlock (the instance whose nodes hold the semaphore or read-write lock).')
    }
    if (typeof resource !== 'string' || resource.length === 0) {
      throw new TypeError(`resource must be a non-empty string; got ${resource === '' ? 'an empty string' : typeof resource}.`)
    }
    wellFormedName(resource, 'resource')
    this.#redlock = redlock
    this.#hold = hold
    Object.defineProperty(this, 'resource', { value: resource, enumerable: true })
  }

  /** Acquires a hold for `duration` ms; resolves a Lock whose `kind` says which. */
  acquire(duration, settings) {
    return this.#redlock[acquireHold]([this.resource], duration, settings, this.#hold)
  }

  /**
   * Runs `routine(signal, lock)` holding it, extending it automatically, as
   * `Redlock#using`. `using(duration, routine)`, `using(duration, settings, routine)` or
   * `using(duration, routine, settings)`.
   */
  using(duration, a, b) {
    const [settings, routine] = typeof a === 'function' ? [b, a] : [a, b]
    return this.#redlock[usingHold]([this.resource], duration, settings, routine, this.#hold)
  }
}

/** At most `permits` holders at once (see README: "Semaphores and read-write locks"). */
class Semaphore extends Acquirer {
  #redlock

  constructor(redlock, resource, permits) {
    if (!Number.isInteger(permits) || permits < 1 || permits > MAX_PERMITS) {
      throw new RangeError(`permits must be an integer from 1 to ${MAX_PERMITS}; got ${typeof permits === 'string' ? JSON.stringify(permits) : String(permits)}.`)
    }
    super(redlock, resource, { kind: 'permit', permits })
    this.#redlock = redlock
    Object.defineProperty(this, 'permits', { value: permits, enumerable: true })
  }

  /** How many live holders the semaphore has, as a quorum of the nodes sees them. */
  holders() {
    return this.#redlock[holdersOf](this.resource, this.permits)
  }
}

/** Many readers or one writer (see README: "Semaphores and read-write locks"). */
class ReadWriteLock {
  constructor(redlock, resource) {
    const read = new Acquirer(redlock, resource, { kind: 'read' })
    Object.defineProperty(this, 'resource', { value: resource, enumerable: true })
    Object.defineProperty(this, 'read', { value: read, enumerable: true })
    Object.defineProperty(this, 'write', { value: new Acquirer(redlock, resource, { kind: 'write' }), enumerable: true })
  }
}

module.exports = { Acquirer, Semaphore, ReadWriteLock, acquireHold, usingHold, holdersOf }
