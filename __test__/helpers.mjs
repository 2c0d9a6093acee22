// Shared test helpers: real redis-servers per test file, and clients that are closed
// after each test.
import { createRequire } from 'node:module'

import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

import { RedisServer, freePort, startServers, stopServers } from '../scripts/redis-servers.mjs'

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
 * (e.g. TLS), with `replicas` per master, and waits until it is ready.
 */
export async function createCluster(servers, { ports = servers.map((s) => s.port), cliArgs = [], replicas = 0 } = {}) {
  const addrs = ports.map((p) => `127.0.0.1:${p}`)
  await promisify(execFile)('redis-cli', [...cliArgs, '--cluster', 'create', ...addrs, '--cluster-replicas', String(replicas), '--cluster-yes'])
  await clusterReady(servers)
  return servers
}

/**
 * A CA, a server certificate for `san`, and a client certificate (mutual TLS), in `dir`;
 * with `selfSigned`, the server's certificate is its own CA (as `openssl req -x509` makes it).
 */
export function makeCertificates(dir, san = 'IP:127.0.0.1,DNS:localhost', selfSigned = false) {
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  if (selfSigned) {
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', `subjectAltName=${san}`, '-keyout', 'server.key', '-out', 'server.crt')
    writeFileSync(path.join(dir, 'ca.crt'), readFileSync(path.join(dir, 'server.crt')))
    return
  }
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=redlock-rs test CA', '-keyout', 'ca.key', '-out', 'ca.crt')
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=redlock-rs test server', '-keyout', 'server.key', '-out', 'server.csr')
  writeFileSync(path.join(dir, 'san.ext'), `subjectAltName=${san}\n`)
  ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'server.crt', '-extfile', 'san.ext')
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=redlock-rs test client', '-keyout', 'client.key', '-out', 'client.csr')
  writeFileSync(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n')
  ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'client.crt', '-extfile', 'client.ext')
}

/**
 * A redis-server on a TLS port with certificates for `san` (see `makeCertificates`),
 * asking clients for a certificate when `authClients`; stopped and removed at the end.
 */
export async function tlsServer(t, { san, authClients = false, selfSigned = false } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  makeCertificates(dir, san, selfSigned)
  // Two free ports, each free when asked for: another test's server can take one before
  // this one binds it (tests run in parallel), so a start that finds its port taken is
  // tried again on new ones.
  for (let tries = 1; ; tries++) {
    const tlsPort = await freePort()
    const server = new RedisServer({
      args: ['--tls-port', String(tlsPort), '--tls-cert-file', path.join(dir, 'server.crt'), '--tls-key-file', path.join(dir, 'server.key'),
        '--tls-ca-cert-file', path.join(dir, 'ca.crt'), '--tls-auth-clients', authClients ? 'yes' : 'no'],
    })
    try {
      await server.start()
    } catch (error) {
      await server.stop()
      if (tries < 5 && /already in use|exited at start/i.test(error.message)) continue
      throw error
    }
    t.teardown(() => server.stop())
    return { server, tlsPort, read: (file) => readFileSync(path.join(dir, file), 'utf8'), file: (name) => path.join(dir, name) }
  }
}

/**
 * Asserts that `client` backs off a node that does not answer: its first command waits the
 * connect time-out (`ms`) and says so; the next ones fail at once.
 */
export async function backsOff(t, client, ms) {
  let started = Date.now()
  const first = await t.throwsAsync(client.get('x'))
  t.regex(first.message, new RegExp(`no connection within ${ms} ms`))
  t.true(Date.now() - started >= ms * 0.9, 'the first call waited for the connect time-out')
  started = Date.now()
  for (let i = 0; i < 5; i++) await t.throwsAsync(client.get('x'), { message: /no connection within/ })
  t.true(Date.now() - started < 500, `the next calls failed at once (${Date.now() - started} ms for 5)`)
}
