// Node.js before 20.13 (which package.json's "node": ">= 20" takes in) has no
// TracingChannel#hasSubscribers: tracing must still fire there (found by an audit: it
// never did). Emulated by removing the getter before the package is loaded. (Node.js 20.13
// and later's own tracePromise() asks the getter too, so the emulation stops at the
// library's decision to trace; older versions' tracePromise() does not ask.)
import { createRequire } from 'node:module'
import diagnostics from 'node:diagnostics_channel'

import test from 'ava'

delete Object.getPrototypeOf(diagnostics.tracingChannel('redlock-rs:probe')).hasSubscribers
const { traces, subscribed } = createRequire(import.meta.url)('../lib/diagnostics.js')

test('without TracingChannel#hasSubscribers, a listener of any one event makes the library trace', (t) => {
  t.is(traces.acquire.hasSubscribers, undefined)
  t.false(subscribed(traces.acquire))
  for (const event of ['start', 'end', 'asyncStart', 'asyncEnd', 'error']) {
    const listener = { [event]: () => {} }
    traces.release.subscribe(listener)
    t.true(subscribed(traces.release), event)
    t.false(subscribed(traces.acquire))
    traces.release.unsubscribe(listener)
    t.false(subscribed(traces.release))
  }
})
