'use strict'
// The attempts of an operation: AttemptLog (the engine's vote strings, turned into
// node-redlock's ExecutionStats when read) and ExecutionResult (what `release` resolves).

const { inspect } = require('node:util')

const { inspectInstead, shownClient } = require('./clients.js')
const { ResourceLockedError, lockedMessage } = require('./errors.js')

/**
 * `util.inspect` of an ExecutionStats: the clients by their address (see
 * `describeClient`), never the objects, whose inspection may print a password.
 */
function inspectStats(depth, options, show) {
  const votesAgainst = new Map([...this.votesAgainst].map(([client, error]) => [shownClient(client), error]))
  const shown = { membershipSize: this.membershipSize, quorumSize: this.quorumSize, votesFor: new Set([...this.votesFor].map(shownClient)), votesAgainst }
  return inspectInstead(shown, depth, options, show)
}

/** A node's error, with the client it came from (not listed by `util.inspect`). */
function nodeError(message, client) {
  const error = new Error(message)
  clientOf.set(error, client)
  return Object.setPrototypeOf(error, NODE_ERROR)
}

/** The client of each node error (see NODE_ERROR). */
const clientOf = new WeakMap()

/**
 * A node error's prototype: an Error's, with `client` read through it, so that the client
 * (an ioredis client has its password in its options) is not an own property that
 * `util.inspect(error, { showHidden: true })` would print.
 */
const NODE_ERROR = Object.create(Error.prototype, {
  client: {
    get() {
      return clientOf.get(this)
    },
    set(client) {
      clientOf.set(this, client)
    },
    configurable: true,
  },
})

/**
 * The errors of the nodes that failed (`[client, message]` pairs, of `n` nodes) as one
 * AggregateError; undefined when none failed.
 */
function nodeErrors(failed, n) {
  if (failed.length === 0) return undefined
  const errors = failed.map(([client, message]) => nodeError(message, client))
  return new AggregateError(errors, `${errors.length} of ${n} node${n === 1 ? '' : 's'} failed: ${errors.map((e) => e.message).join('; ')}`)
}

/**
 * Whether a vote character is a node's failure: 'E', or 'e' when its events were told
 * already (as it came in, or with its attempt's report: not again).
 */
const isFailure = (vote) => vote === 'E' || vote === 'e'

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

  /**
   * The complete votes of the last attempt arrived, with the messages of all its errors
   * (they replace those of the votes known before). Calls `fn(vote, client, message)`, when
   * given, for each vote against among those that came late.
   */
  complete(attempt, errors, fn) {
    const last = this.attempts.length - 1
    const before = this.attempts[last]
    let known = 0
    for (const vote of before) if (isFailure(vote)) known++
    // (A new array: `errors` may be shared, see native.js.)
    this.errors = this.errors.slice(0, this.errors.length - known).concat(errors)
    // (The votes told already stay marked so: the late ones come without the marks.)
    let merged = ''
    for (let i = 0; i < attempt.length; i++) merged += before[i] === 'e' || before[i] === 'l' ? before[i] : attempt[i]
    this.attempts[last] = merged
    this.#lateDone?.()
    if (fn) this.eachAgainst((vote, client, message, i) => before[i] === '?' && fn(vote, client, message), last)
  }

  /**
   * Calls `fn(vote, client, message, index)` for every vote against in the attempts from
   * index `from` on (`index`: the client's).
   */
  eachAgainst(fn, from = 0) {
    let e = 0
    this.attempts.forEach((attempt, a) => {
      for (let i = 0; i < attempt.length; i++) {
        const vote = attempt[i]
        if ((vote === 'L' || vote === 'l') && a >= from) fn(vote, this.clients[i], lockedMessage(this.requested), i)
        else if (isFailure(vote)) {
          const message = this.errors[e++]
          if (a >= from) fn(vote, this.clients[i], message, i)
        }
      }
    })
  }

  /** Whether a quorum voted for the last attempt (it failed for want of validity, then). */
  lastWon() {
    const attempt = this.attempts[this.attempts.length - 1] ?? ''
    let votesFor = 0
    for (const vote of attempt) if (vote === 'F') votesFor++
    return votesFor >= Math.floor(this.clients.length / 2) + 1
  }

  /** The node errors of the last attempt, as an AggregateError (undefined when none failed). */
  lastErrors() {
    const last = this.attempts.length - 1
    const failed = []
    this.eachAgainst((vote, client, message) => {
      if (isFailure(vote)) failed.push([client, message])
    }, last)
    return nodeErrors(failed, this.clients.length)
  }

  toStats() {
    const n = this.clients.length
    const quorumSize = Math.floor(n / 2) + 1
    const last = this.attempts.length - 1
    let offset = 0
    return this.attempts.map((attempt, a) => {
      const first = offset
      for (const vote of attempt) if (isFailure(vote)) offset++
      if (a === last && this.late) return this.late.then(() => this.#stats(this.attempts[last], first, n, quorumSize))
      return Promise.resolve(this.#stats(attempt, first, n, quorumSize))
    })
  }

  /** The ExecutionStats of one attempt whose errors start at `errors[first]`. */
  #stats(attempt, first, n, quorumSize) {
    const stats = { membershipSize: n, quorumSize, votesFor: new Set(), votesAgainst: new Map() }
    Object.defineProperty(stats, inspect.custom, { value: inspectStats })
    let e = first
    for (let i = 0; i < attempt.length; i++) {
      const vote = attempt[i]
      const client = this.clients[i]
      if (vote === 'F') stats.votesFor.add(client)
      else if (vote === 'L' || vote === 'l') stats.votesAgainst.set(client, new ResourceLockedError(lockedMessage(this.requested)))
      else if (isFailure(vote)) stats.votesAgainst.set(client, new Error(this.errors[e++]))
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

module.exports = { AttemptLog, ExecutionResult, nodeErrors }
