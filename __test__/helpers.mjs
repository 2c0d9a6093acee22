// Shared test helpers: real redis-servers per test file, and clients that are closed
// after each test.
import { createRequire } from 'node:module'

import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

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

/** Waits until every server of a cluster says `cluster_state:ok` (20 s at most). */
export async function clusterReady(servers) {
  const deadline = Date.now() + 20_000
  for (;;) {
    const infos = await Promise.all(servers.map((s) => s.command('CLUSTER', 'INFO').catch(() => '')))
    if (infos.every((i) => i.includes('cluster_state:ok'))) return
    if (Date.now() > deadline) throw new Error('the cluster is not ready')
    await sleep(100)
  }
}

/**
 * Makes `servers` (started with `--cluster-enabled yes`) one cluster of masters with
 * `redis-cli --cluster create` at `ports` (default: their ports), `cliArgs` before it
 * (e.g. TLS), and waits until it is ready.
 */
export async function createCluster(servers, { ports = servers.map((s) => s.port), cliArgs = [] } = {}) {
  const addrs = ports.map((p) => `127.0.0.1:${p}`)
  await promisify(execFile)('redis-cli', [...cliArgs, '--cluster', 'create', ...addrs, '--cluster-replicas', '0', '--cluster-yes'])
  await clusterReady(servers)
  return servers
}
