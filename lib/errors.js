'use strict'
// The error classes (ResourceLockedError, ExecutionError, LockLostError), node-redlock's
// messages, and the helpers that build the errors of failed operations.

const QUORUM_FAILED = 'The operation was unable to achieve a quorum during its retry window.'
const EXPIRED = 'Cannot extend an already-expired lock.'
const ABORTED = 'The operation was aborted.'

/**
 * Makes `message` an own enumerable field, as node-redlock's errors declare it, so that
 * JSON loggers and `{ ...error }` keep it.
 */
function listMessage(error) {
  Object.defineProperty(error, 'message', { value: error.message, enumerable: true, writable: true, configurable: true })
}

/** A client voted against because another owner holds a resource. */
class ResourceLockedError extends Error {
  constructor(message) {
    super(message)
    listMessage(this)
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
    listMessage(this)
    this.name = 'ExecutionError'
    this.attempts = attempts
    this.reason = options?.reason ?? 'internal'
  }
}

/**
 * The lock a `using()` routine held could not be kept: its extension failed (or none came
 * in time) and the lock may have been lost. An ExecutionError, as node-redlock's
 * `signal.error` (the failed extension's) is, with node-redlock's message for its reason
 * (`messageOf`); `attempts`: the failed extension's (none when no extension failed).
 */
class LockLostError extends ExecutionError {
  constructor(message, options) {
    super(message, options?.attempts ?? [], { reason: options?.reason ?? 'expired', cause: options?.cause })
    this.name = 'LockLostError'
  }
}

/** node-redlock's message for an operation that failed for `reason`. */
const messageOf = (reason) => (reason === 'expired' ? EXPIRED : reason === 'aborted' ? ABORTED : QUORUM_FAILED)

const lockedMessage = (requested) => `The operation was applied to: 0 of the ${requested} requested resources.`

/** The error of a call whose signal is aborted. */
function abortedError(signal, attempts) {
  return new ExecutionError(ABORTED, attempts, { reason: 'aborted', cause: signal?.reason })
}

/** The error of an operation that failed for `reason`, with the attempts of `log` (an AttemptLog). */
function failureError(reason, log, signal) {
  if (reason === 'aborted') return abortedError(signal, log.toStats())
  let cause = log.lastErrors()
  if (cause === undefined && reason === 'quorum-unavailable' && log.lastWon()) {
    // No node failed: the quorum came, but with no validity left.
    cause = new Error('a quorum voted for it, but no validity was left: the duration is too short for the clock drift allowed (driftFactor) and the time the attempt took.')
  }
  return new ExecutionError(messageOf(reason), log.toStats(), { reason, cause })
}

module.exports = {
  QUORUM_FAILED,
  ResourceLockedError,
  ExecutionError,
  LockLostError,
  lockedMessage,
  messageOf,
  abortedError,
  failureError,
}
