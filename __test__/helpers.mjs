// Shared test helpers: real redis-servers per test file, and clients that are closed
// after each test.
import { createRequire } from 'node:module'

import { startServers, stopServers } from '../scripts/redis-servers.mjs'

const require = createRequire(import.meta.url)
export const lib = require('../index.js')

/**
 * Starts `count` servers before the file's tests and stops them afterwards (also when
 * tests fail). Returns an array filled in once they run.
 */
export function useServers(test, count, options) {
  const servers = []
  test.before(async () => {
    servers.push(...(await startServers(count, options)))
  })
  test.after.always(async () => {
    await stopServers(servers)
  })
  return servers
}

/** Clients for `servers`, alternating Redis and RedisJsClient; closed after the test. */
export function clientsFor(t, servers, { mixed = true, ...opts } = {}) {
  const clients = servers.map((s, i) =>
    mixed && i % 2 === 1
      ? new lib.RedisJsClient({ url: s.url, commandTimeout: opts.commandTimeout, socket: { connectTimeout: opts.connectTimeout } })
      : new lib.Redis({ host: '127.0.0.1', port: s.port, ...opts }),
  )
  t.teardown(() => Promise.all(clients.map((c) => c.quit())))
  return clients
}

/** Fast retry settings for tests that expect failure. */
export const quick = { retryCount: 2, retryDelay: 20, retryJitter: 10 }

let n = 0
/** A resource name unique within the run. */
export function resource(t) {
  n += 1
  return `test:${t.title.replace(/\W+/g, '-').slice(0, 40)}:${process.pid}:${n}`
}

/** The value of `key` on each server (read with raw commands, not the library). */
export function valuesOn(servers, key) {
  return Promise.all(servers.map((s) => s.command('GET', key)))
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Waits until `check()` is true (polling), failing after `ms`. */
export async function eventually(check, ms = 3000) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`)
    await sleep(10)
  }
}
