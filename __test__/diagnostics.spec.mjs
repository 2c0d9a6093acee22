// Tracing channels on node:diagnostics_channel: redlock-rs:acquire / :release / :extend
// with { resources, duration, kind, settings } and, at the end, { attempts, fence, reason };
// redlock-rs:lost when using() loses its lock.
import diagnostics from 'node:diagnostics_channel'

import test from 'ava'

import { clientsFor, lib, resource, sleep, useServers } from './helpers.mjs'

const { Redlock } = lib
const servers = useServers(test, 3)

/** Records the tracing events of `name` until the test ends. */
function record(t, name) {
  const events = []
  const handlers = Object.fromEntries(
    ['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((kind) => [kind, (ctx) => events.push({ kind, ctx: { ...ctx } })]),
  )
  const channel = diagnostics.tracingChannel(name)
  channel.subscribe(handlers)
  t.teardown(() => channel.unsubscribe(handlers))
  return events
}

test.serial('acquire, extend and release are traced with their context and outcome', async (t) => {
  const acquires = record(t, 'redlock-rs:acquire')
  const extends_ = record(t, 'redlock-rs:extend')
  const releases = record(t, 'redlock-rs:release')
  const redlock = new Redlock(clientsFor(t, servers), { fencing: true })
  const key = resource(t)
  const lock = await redlock.acquire([key], 2_000)
  const extended = await lock.extend(3_000)
  await extended.release()
  const started = acquires.find((e) => e.kind === 'start')
  t.deepEqual(started.ctx.resources, [key])
  t.is(started.ctx.duration, 2_000)
  t.is(started.ctx.kind, 'mutex')
  const ended = acquires.find((e) => e.kind === 'asyncEnd')
  t.is(ended.ctx.fence, lock.fence)
  // Every end has all three of attempts, fence and reason (found by an audit: a success
  // had no reason key, a failure no fence key).
  t.true(['attempts', 'fence', 'reason'].every((k) => k in ended.ctx))
  t.is(ended.ctx.reason, undefined)
  t.is(ended.ctx.attempts.length, 1)
  t.is(ended.ctx.result, lock)
  t.is(extends_.find((e) => e.kind === 'start').ctx.duration, 3_000)
  // A release ends with the fencing token of the lock it released (found by an audit:
  // undefined, its result having none).
  const released = releases.find((e) => e.kind === 'asyncEnd')
  t.is(released.ctx.fence, extended.fence)
  t.is(typeof released.ctx.fence, 'bigint')

  // A failure carries its reason.
  const holder = await redlock.acquire([key], 2_000)
  await t.throwsAsync(redlock.acquire([key], 1_000, { retryCount: 0 }))
  const failed = acquires.filter((e) => e.kind === 'error').at(-1)
  t.is(failed.ctx.reason, 'locked')
  t.true('fence' in failed.ctx)
  t.is(failed.ctx.error.reason, 'locked')
  await holder.release()
})

test.serial("using()'s own extensions are traced like extend(): a Lock as the result, with its fence", async (t) => {
  const extends_ = record(t, 'redlock-rs:extend')
  const redlock = new Redlock(clientsFor(t, servers), { fencing: true })
  let held
  await redlock.using([resource(t)], 400, { automaticExtensionThreshold: 250 }, async (signal, lock) => {
    held = lock
    const first = lock.expiration
    while (lock.expiration === first) await sleep(10)
  })
  const ended = extends_.find((e) => e.kind === 'asyncEnd')
  t.truthy(ended, 'the extension was traced')
  t.true(ended.ctx.result instanceof lib.Lock)
  t.is(ended.ctx.result.value, held.value)
  t.is(ended.ctx.fence, held.fence)
  t.is(typeof ended.ctx.fence, 'bigint')
  t.is(ended.ctx.attempts.length, 1)
})

test.serial('redlock-rs:lost is published when using() loses its lock', async (t) => {
  const lost = []
  const onLost = (message) => lost.push(message)
  diagnostics.subscribe('redlock-rs:lost', onLost)
  t.teardown(() => diagnostics.unsubscribe('redlock-rs:lost', onLost))
  const redlock = new Redlock(clientsFor(t, servers))
  const key = resource(t)
  await redlock.using([key], 1_000, { automaticExtensionThreshold: 500 }, async (signal) => {
    for (const s of servers) await s.command('SET', key, 'thief', 'PX', 5_000)
    await new Promise((resolve) => signal.addEventListener('abort', resolve))
  })
  t.is(lost.length, 1)
  t.deepEqual(lost[0].resources, [key])
  t.true(lost[0].error instanceof lib.LockLostError)
  for (const s of servers) await s.command('DEL', key)
})

test.serial('without subscribers nothing is traced and operations work as before', async (t) => {
  t.false(diagnostics.tracingChannel('redlock-rs:acquire').hasSubscribers)
  const redlock = new Redlock(clientsFor(t, servers))
  const lock = await redlock.acquire([resource(t)], 1_000)
  await sleep(1)
  await lock.release()
  t.pass()
})
