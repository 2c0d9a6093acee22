// Lock metrics for Prometheus from redlock-rs' diagnostics channels (prom-client is only
// this example's dependency): how long acquire, extend and release take and how they end
// (ok or the failure's reason), and how many locks using() lost.
import { channel, tracingChannel } from 'node:diagnostics_channel'

import { Counter, Histogram, Registry } from 'prom-client'

type Context = { startedAt?: bigint; error?: unknown; reason?: string; kind?: string }

export function instrument(registry: Registry = new Registry()): Registry {
  const duration = new Histogram({
    name: 'redlock_operation_seconds',
    help: 'redlock-rs operations by kind and outcome',
    labelNames: ['operation', 'kind', 'outcome'],
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  })
  const lost = new Counter({ name: 'redlock_locks_lost_total', help: 'locks using() lost', registers: [registry] })
  for (const operation of ['acquire', 'extend', 'release']) {
    tracingChannel<unknown, Context>(`redlock-rs:${operation}`).subscribe({
      start(ctx) {
        ctx.startedAt = process.hrtime.bigint()
      },
      end() {},
      asyncStart() {},
      asyncEnd(ctx) {
        const seconds = Number(process.hrtime.bigint() - (ctx.startedAt ?? 0n)) / 1e9
        const outcome = ctx.error ? (ctx.reason ?? 'error') : 'ok'
        duration.observe({ operation, kind: ctx.kind ?? 'mutex', outcome }, seconds)
      },
      error() {},
    })
  }
  channel('redlock-rs:lost').subscribe(() => lost.inc())
  return registry
}
