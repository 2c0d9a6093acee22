'use strict'
// One 'abort' listener per AbortSignal for everything under way with it: one shared
// shutdown signal given to many calls (acquires, using() routines, of any instance) would
// otherwise pass Node.js' listener limit and warn of a leak.

/** The callbacks waiting for each signal, with what takes its one listener off. */
const waiting = new WeakMap()

/** Calls `fn` once when `signal` aborts; returns what stops that. */
function onAbort(signal, fn) {
  let fns = waiting.get(signal)
  if (fns === undefined) {
    fns = new Set()
    const fire = () => {
      waiting.delete(signal)
      // One that throws must not keep the others from hearing the abort: its error is
      // thrown on its own, as an uncaught exception.
      for (const f of fns) {
        try {
          f()
        } catch (thrown) {
          queueMicrotask(() => {
            throw thrown
          })
        }
      }
    }
    fns.stop = () => {
      try {
        signal.removeEventListener('abort', fire)
      } catch {} // a signal's own failure must not keep the result from its caller
    }
    waiting.set(signal, fns)
    signal.addEventListener('abort', fire, { once: true })
  }
  const entry = () => fn() // (its own entry: the same function may wait twice)
  fns.add(entry)
  return () => {
    fns.delete(entry)
    if (fns.size === 0 && waiting.get(signal) === fns) {
      waiting.delete(signal)
      fns.stop()
    }
  }
}

module.exports = { onAbort }
