'use strict'
// Diagnostics (`node:diagnostics_channel`): the tracing channels of acquire, release and
// extend, the channel of locks lost in `using()`, and `traced()`, which runs an operation traced.

const diagnostics = require('node:diagnostics_channel')

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
/**
 * Whether anyone listens on the tracing channel `channel`. Its `hasSubscribers` came in
 * Node.js 20.13; before it, a tracing channel is asked through its five channels.
 */
const subscribed =
  'hasSubscribers' in Object.getPrototypeOf(traces.acquire)
    ? (channel) => channel.hasSubscribers
    : (channel) =>
        channel.start.hasSubscribers ||
        channel.end.hasSubscribers ||
        channel.asyncStart.hasSubscribers ||
        channel.asyncEnd.hasSubscribers ||
        channel.error.hasSubscribers

/** Published when `using()` loses its lock: `{ resources, value, expiration, error }`. */
const lostChannel = diagnostics.channel('redlock-rs:lost')

/**
 * Runs `operation()` of `redlock` traced on `channel` when someone subscribes, with the
 * context `{ resources, duration, kind, settings }` (built only then; `settings`: the
 * instance's with the call's on top) filled in at the end from its result or error;
 * `fence`: the lock's fencing token, for a release (whose result has none).
 */
function traced(channel, redlock, resources, duration, kind, settings, operation, fence) {
  if (!subscribed(channel)) return operation()
  const context = { resources, duration, kind, settings: { ...redlock.settings, ...settings } }
  return channel.tracePromise(async () => {
    try {
      const result = await operation()
      context.attempts = result?.attempts ?? result?.log?.toStats()
      context.fence = result?.fence ?? fence
      context.reason = undefined
      return result
    } catch (error) {
      context.attempts = error?.attempts
      context.fence = fence
      context.reason = error?.reason
      throw error
    }
  }, context)
}

module.exports = { traces, lostChannel, subscribed, traced }
