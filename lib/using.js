'use strict'
// The automatic extension of a lock held by `using()` (Holding): extends the lock before it
// expires, and aborts the routine's signal with a LockLostError when it could not.

const { onAbort } = require('./abort.js')
const { lostChannel } = require('./diagnostics.js')
const { LockLostError, messageOf } = require('./errors.js')
const { setExpiration } = require('./lock.js')

const noop = () => {}

/**
 * Emits `error` as an 'error' event of `emitter` when anyone listens (none: nothing to
 * throw). A listener that throws does not stop the caller: its error is thrown on its
 * own, as an uncaught exception, as from any event listener.
 */
function emitError(emitter, error) {
  if (emitter.listenerCount('error') === 0) return
  try {
    emitter.emit('error', error)
  } catch (thrown) {
    queueMicrotask(() => {
      throw thrown
    })
  }
}

/**
 * The signal is aborted this many ms before the lock's expiration (a timer fires up to a
 * millisecond late), and an extension stops retrying this many ms before that, so that
 * its own failure (its reason, and the nodes' errors) is what the loss reports.
 */
const LOSS_MARGIN = 2
const EXTENSION_MARGIN = 8

/**
 * Locks held by `using()` in this process. Their losses can fall due together (a quorum
 * of nodes gone under hundreds of locks extended in step), and the JavaScript thread
 * handles them one after the other (the failed extension's error, the abort; their
 * releases wait until all are told), so each loss is reported earlier by
 * [`PER_HOLDING`] ms per lock held, at most [`MAX_LEAD`] ms: the last of them still in time.
 */
let holdings = 0
const PER_HOLDING = 0.25
const MAX_LEAD = 250

/**
 * The releases of the locks lost in this turn of the event loop, started once every loss
 * due in it has been told (the releases cost the JavaScript thread most of a loss' time).
 */
let lostReleases = []

function releaseAfterLosses(release) {
  if (lostReleases.length === 0) setImmediate(releaseLost)
  lostReleases.push(release)
}

/** Starts the releases of the locks lost (also at `quit()`, which waits for them). */
function releaseLost() {
  const due = lostReleases
  lostReleases = []
  for (const start of due) start()
}

/**
 * How long before a lock's expiration its loss is reported (ms), for a lock extended
 * `lead` ms before it expires: at most half of that goes to the loss' lead, so that the
 * extension has time to try.
 */
const lossLead = (lead) => LOSS_MARGIN + Math.min(MAX_LEAD, holdings * PER_HOLDING, lead / 2)

/**
 * An extension starts at least this many ms before the lock expires, whatever the
 * threshold (one of 0 would start it only once the lock was lost).
 */
const MIN_LEAD = 100

/** The least time an automatic extension has to try before it gives up (ms; see `#schedule`). */
const EXTENSION_WINDOW = 200

/** The longest delay of a Node.js timer (a longer one fires at once). */
const MAX_DELAY = 0x7fffffff

/**
 * The automatic extension of a lock held by `using()`: extends `threshold` ms before the
 * lock expires, and aborts `signal` when the lock has not been extended by its expiration.
 */
class Holding {
  #controller = new AbortController()
  #timer
  #lossTimer
  #extension
  /** The routine's own extensions, one after the other (see `manual`). */
  #turns = Promise.resolve()
  /** How many of them are queued or under way. */
  #manual = 0
  /** When the extension under way started (ms since the epoch). */
  #extensionStarted = 0
  /** The error of the routine's own extension that failed last, none succeeding since. */
  #failure
  #done = false
  /** Whether this lock counts in `holdings`. */
  #held = true
  /** Whether the routine released its lock itself. */
  #released = false
  /** The lock's expiration as the extensions moved it (kept here too: a frozen Lock keeps its own). */
  #expiration

  constructor(redlock, lock, duration, settings, threshold, extend) {
    holdings++
    this.redlock = redlock
    this.lock = lock
    this.duration = duration
    this.settings = settings
    this.threshold = threshold
    this.extendFn = extend
    this.#expiration = lock.expiration
    this.#armLoss()
    this.#schedule()
    // `settings.signal` aborted while the routine runs: the routine hears it at once (its
    // signal aborts, reason 'aborted', the abort's reason as cause) and the lock goes.
    const given = settings?.signal
    if (given?.aborted) this.#userAbort()
    else if (given) this.#stopUserAbort = onAbort(given, this.#userAbort)
  }

  /** Takes this routine off `settings.signal` (see lib/abort.js). */
  #stopUserAbort = () => {}

  /** The lock's expiration moved to `expiration`: here, and on the Lock (unless frozen). */
  #follow(expiration) {
    this.#expiration = expiration
    setExpiration(this.lock, expiration)
  }

  /** How long before the lock's expiration its loss is reported (ms; see `lossLead`). */
  #lossLead() {
    return lossLead(this.#lead())
  }

  #userAbort = () => this.#lose('aborted', undefined, this.settings.signal.reason, true)

  /**
   * `redlock.quit()` was called (`cause`): the routine hears it at once (reason
   * 'aborted') and the lock goes.
   */
  quit(cause) {
    this.#lose('aborted', undefined, cause, true)
  }

  get signal() {
    return this.#controller.signal
  }

  /**
   * Aborts the signal just before the lock's expiration unless an extension moved it:
   * with the reason 'quorum-unavailable' when an extension is still waiting for the nodes
   * (they did not decide in time), 'expired' when none was under way.
   */
  #armLoss() {
    clearTimeout(this.#lossTimer)
    const left = Math.max(0, this.#expiration - Date.now() - this.#lossLead())
    this.#lossTimer =
      left > MAX_DELAY
        ? setTimeout(() => this.#armLoss(), MAX_DELAY)
        : setTimeout(() => this.#lossDue(), left)
  }

  /**
   * The lock was not extended in time: lost with the reason 'quorum-unavailable' when an
   * extension is still waiting for the nodes, with the error of the routine's own
   * extension when that failed last, else 'expired'.
   */
  #lossDue() {
    if (this.#waitingForNodes()) this.#lose('quorum-unavailable')
    else if (this.#failure !== undefined) this.#lose(this.#failure?.reason ?? 'internal', this.#failure)
    else this.#lose('expired')
  }

  /**
   * Whether an extension under way had the time to hear from the nodes: one started only
   * once the lock was (nearly) expired, because the JavaScript thread was busy past the
   * time to extend, waits for nobody: the lock simply expired.
   */
  #waitingForNodes() {
    if (this.#manual > 0) return true
    return this.#extension !== undefined && this.#extensionStarted < this.#expiration - this.#lossLead() - EXTENSION_MARGIN
  }

  /**
   * How long before the lock expires its extension starts: the threshold, MIN_LEAD at
   * least, unless 70% of the duration is shorter (a lock of 100 ms with a threshold of 0
   * has about 97 ms of validity: a lead of MIN_LEAD would extend it back to back; one of
   * half the duration left its extension too little time to ride out a 40 ms stall).
   */
  #lead() {
    return Math.max(this.threshold, Math.min(MIN_LEAD, this.duration * 0.7))
  }

  #schedule() {
    clearTimeout(this.#timer)
    // The extension starts earlier when the loss' lead (many locks held) leaves it less
    // than EXTENSION_WINDOW ms to try (or the threshold's time, when shorter): by what is
    // missing, at most halfway to the threshold.
    const lead = this.#lead()
    const left = this.#expiration - Date.now() - lead
    const window = lead - this.#lossLead() - EXTENSION_MARGIN
    const wanted = Math.min(EXTENSION_WINDOW, lead - LOSS_MARGIN - EXTENSION_MARGIN)
    const earlier = Math.min(Math.max(0, wanted - window), Math.max(0, left) / 2)
    const wait = Math.max(0, left - earlier)
    if (wait > MAX_DELAY) {
      this.#timer = setTimeout(() => this.#schedule(), MAX_DELAY)
      return
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      // (The routine's own extension under way schedules the next one when it ends.)
      if (this.#manual > 0) return
      this.#extensionStarted = Date.now()
      this.#extension = this.#extend()
    }, wait)
  }

  async #extend() {
    try {
      // Retried until a little before the lock expires, however small retryCount is: the
      // lock's time left bounds the retries.
      const until = this.#expiration - this.#lossLead() - EXTENSION_MARGIN
      const extended = await this.extendFn(this.lock, this.duration, { ...this.settings, retryCount: -1 }, until)
      this.#extension = undefined
      // (Released by the routine meanwhile: what the extension set went with the release.)
      if (this.signal.aborted || this.#released) return
      // Kept also when the routine just ended: the release that follows retries while the
      // extended lock is valid.
      this.#follow(extended.expiration)
      this.lock.attempts = extended.attempts
      this.#failure = undefined
      if (this.#done) return
      this.#armLoss()
      this.#schedule()
    } catch (error) {
      this.#extension = undefined
      // (One started too late to ask the nodes says less than the routine's own that failed.)
      const failed = error?.attempts?.length === 0 && this.#failure !== undefined ? this.#failure : error
      this.#lose(failed?.reason ?? 'internal', failed)
    }
  }

  /**
   * Gives the lock up: the routine's signal aborts with a LockLostError for `reason` and
   * the keys go. `byUser`: the user gave it up (`settings.signal` aborted, `quit()`):
   * no loss to report as an event.
   */
  #lose(reason, error, cause = error?.cause instanceof AggregateError ? error.cause : error, byUser = false) {
    if (this.#done || this.signal.aborted) return
    this.#unhold()
    clearTimeout(this.#timer)
    clearTimeout(this.#lossTimer)
    const { lock, redlock } = this
    // (node-redlock's message for the reason; what and why in the fields.)
    const lost = new LockLostError(messageOf(reason), { cause, reason, attempts: error?.attempts })
    lost.resources = lock.resources
    lost.expiration = this.#expiration
    this.signal.error = lost
    // The lock is no longer to be relied on: our keys that are left go now (owner-checked:
    // a new holder's keys stay), retried while the lock would still be valid; the lock
    // keeps the moment of its loss as its expiration, also while the release is under way
    // (a release sets 0 at once: found by a soak reading it then).
    const lostAt = Math.min(this.#expiration, Date.now())
    const release = () => {
      const releasing = redlock.release(lock, this.settings)
      setExpiration(lock, lostAt)
      return releasing.catch(noop).then(() => setExpiration(lock, lostAt))
    }
    // (Given up by the user: released now, for `quit()` waits for it; a lock lost, once
    // every loss due in this turn has been told.)
    if (byUser) release()
    else releaseAfterLosses(release)
    this.#follow(lostAt)
    // The routine hears of it before any listener below can get in the way.
    this.#controller.abort(lost)
    if (byUser) return
    emitError(redlock, lost)
    if (lostChannel.hasSubscribers) {
      lostChannel.publish({ resources: lock.resources, value: lock.value, expiration: this.#expiration, error: lost })
    }
  }

  /**
   * Runs `extend`, an extension of the lock by the routine itself, never at the same time
   * as another extension: the nodes would keep the TTL of whichever landed last, and the
   * lock the expiration of whichever settled last. It waits for the automatic extension
   * under way (and the routine's earlier ones), and none starts until it ends. A lock
   * given up meanwhile (lost, or aborted) is not extended: it rejects with the loss. One
   * that failed but shortened the lock (see `Redlock#extend`) moves the loss forward.
   */
  manual(lock, extend) {
    this.#manual++
    clearTimeout(this.#timer)
    const turn = this.#turns.then(async () => {
      if (this.#extension) await this.#extension
      try {
        if (this.signal.aborted) throw this.signal.error
        // Retried, like the automatic extensions, until a little before the loss is due:
        // its own failure (its reason, the nodes' errors) is what the loss then reports.
        // Any Lock of this holding (the routine's, or one an extend of it returned, which
        // the automatic extensions do not update) is valid until the holding's expiration;
        // one superseded by a later extend of it (expiration 0) is not.
        const current = lock === this.lock || lock.expiration !== 0
        const extended = await extend(current ? this.#expiration - this.#lossLead() - EXTENSION_MARGIN : undefined)
        if (this.signal.aborted) throw this.signal.error
        return extended
      } catch (error) {
        // (Only this lock's own failed extend moves its loss: an older Lock of it may have
        // been refused without reaching the nodes.)
        if (lock === this.lock && !this.#done && !this.signal.aborted) {
          this.#failure = error
          this.#armLoss()
        }
        throw error
      } finally {
        if (--this.#manual === 0 && !this.#done && !this.signal.aborted && this.#extension === undefined) this.#schedule()
      }
    })
    this.#turns = turn.catch(noop)
    return turn
  }

  /**
   * The routine extended its lock itself (`extended`, the new Lock): the lock follows,
   * and the next automatic extension counts from its new expiration.
   */
  follow(extended) {
    if (this.#done || this.signal.aborted) return
    this.#follow(extended.expiration)
    this.lock.attempts = extended.attempts
    this.#failure = undefined
    this.#armLoss()
    if (this.#extension === undefined) this.#schedule()
  }

  /** This lock no longer counts in `holdings` (once). */
  #unhold() {
    if (!this.#held) return
    this.#held = false
    holdings--
  }

  /** The routine released its lock itself: nothing more to extend, no loss to report. */
  released() {
    this.#unhold()
    this.#released = true
    this.#done = true
    clearTimeout(this.#timer)
    clearTimeout(this.#lossTimer)
  }

  /** Stops extending (waits for an extension in flight). */
  async stop() {
    this.#unhold()
    this.#done = true
    this.#stopUserAbort()
    clearTimeout(this.#timer)
    clearTimeout(this.#lossTimer)
    if (this.#extension) await this.#extension
  }
}

module.exports = { Holding, emitError, releaseLost }
