// The npm package as users get it: `npm pack`, a fresh app in a temp folder that installs
// the tarball, and there the seed example as CommonJS and as ESM, strictly checked
// TypeScript (CommonJS, ESM under nodenext and under bundler resolution, a list typed
// IRedisClient[]; plus a file that must not type-check) with TypeScript 5 and with the
// newest TypeScript on npm, a jest test, and the CLI.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import test from 'ava'

import { useServers } from './helpers.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const exec = promisify(execFile)
const servers = useServers(test, 3)

const sh = (cmd, args, cwd, env = {}) =>
  new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, timeout: 240_000, maxBuffer: 1 << 24 }, (e, stdout, stderr) =>
      resolve({ code: e ? (e.code ?? 1) : 0, stdout, stderr }),
    )
  })

const SEED = (mod) => `
const ports = (process.env.REDIS_PORTS ?? '').split(',').map(Number)
const a = new Redis({ host: '127.0.0.1', port: ports[0] })
const b = new RedisJsClient({ url: 'redis://127.0.0.1:' + ports[1] })
const c = new Redis({ host: '127.0.0.1', port: ports[2] })
const redlock = new Redlock([a, b, c])
const main = async () => {
  if (await redlock.acquireLock('orders:42', 10_000)) {
    try { console.log('${mod}: locked') } finally { await redlock.releaseLock('orders:42', true) }
  }
  await redlock.quit()
}
`

test('npm pack ships the addon, the JS layer, the types, README and LICENSE only; a fresh app uses it', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-pkg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { stdout } = await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: root, maxBuffer: 1 << 24 })
  const [packed] = JSON.parse(stdout)
  const files = packed.files.map((f) => f.path).sort()
  t.deepEqual(files, [
    'LICENSE', 'README.md', 'bin/redlock-rs.js', 'binding.d.ts', 'binding.js', 'index.d.mts', 'index.d.ts', 'index.js', 'index.mjs',
    'package.json', 'redlock-rs.linux-x64-gnu.node', 'scripts/demo.mjs', 'scripts/redis-servers.mjs',
  ])
  const tarball = path.join(dir, packed.filename)
  const app = path.join(dir, 'app')
  await exec('mkdir', ['-p', app])
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, scripts: { test: 'jest' } }))
  // TypeScript 5 and the newest TypeScript (whatever major npm's `latest` is) side by side.
  const install = await sh(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, 'typescript@5', 'typescript-latest@npm:typescript@latest', 'jest@29', '@types/node@20'],
    app,
  )
  t.is(install.code, 0, install.stderr)
  t.notRegex(install.stderr, /@types\/node/, 'the optional @types/node peer is satisfied without a warning')

  writeFileSync(path.join(app, 'seed.cjs'), `const { Redis, RedisJsClient, Redlock } = require('redlock-rs')\n${SEED('cjs')}\nmain()`)
  writeFileSync(path.join(app, 'seed.mjs'), `import Redlock, { Redis, RedisJsClient } from 'redlock-rs'\n${SEED('esm')}\nawait main()`)
  writeFileSync(
    path.join(app, 'seed.ts'),
    `import Redlock, { Redis, RedisJsClient, ExecutionError, type Lock } from 'redlock-rs'\n${SEED('ts')}
export async function v5(): Promise<bigint | undefined> {
  const lock: Lock = await redlock.acquire(['a'], 5000, { fencing: true })
  try { return lock.fence } finally { await lock.release() }
}
export const isExecutionError = (e: unknown): boolean => e instanceof ExecutionError
void main`,
  )
  // ESM (an .mts file: ESM whatever the app's package.json says) with the default import,
  // and CommonJS (.cts) with TypeScript's require form; both pass a list typed IRedisClient[].
  writeFileSync(
    path.join(app, 'esm.mts'),
    `import Redlock, { Redis, RedisJsClient, Redlock as Named, type IRedisClient, type Lock } from 'redlock-rs'
const clients: IRedisClient[] = [new Redis(6379), new RedisJsClient({ url: 'redis://127.0.0.1:6380' })]
const redlock: Named = new Redlock(clients)
export const held = (): Promise<number> =>
  redlock.using(['a'], 5000, async (signal, lock: Lock) => (signal.aborted ? 0 : lock.expiration))
`,
  )
  writeFileSync(
    path.join(app, 'cjs.cts'),
    `import lib = require('redlock-rs')
import type { IRedisClient } from 'redlock-rs'
const clients: IRedisClient[] = [new lib.Redis(6379), new lib.RedisJsClient({ url: 'redis://127.0.0.1:6380' })]
export const redlock = new lib.Redlock(clients, { retryCount: 3 })
`,
  )
  writeFileSync(path.join(app, 'bad.ts'), `import { Redis, Redlock } from 'redlock-rs'\nvoid new Redlock([new Redis()]).acquireLock(1, 'x')\n`)
  writeFileSync(
    path.join(app, 'lock.test.js'),
    `const { Redis, Redlock } = require('redlock-rs')
test('a lock from jest', async () => {
  const ports = process.env.REDIS_PORTS.split(',').map(Number)
  const redlock = new Redlock(ports.map((p) => new Redis(p)))
  const lock = await redlock.acquire(['jest:lock'], 5000)
  expect(lock.value).toMatch(/^[0-9a-f]{32}$/)
  await lock.release()
  await redlock.quit()
})
`,
  )
  const env = { REDIS_PORTS: servers.map((s) => s.port).join(',') }
  const cjs = await sh(process.execPath, ['seed.cjs'], app, env)
  t.is(cjs.stdout.trim(), 'cjs: locked', cjs.stderr)
  const esm = await sh(process.execPath, ['seed.mjs'], app, env)
  t.is(esm.stdout.trim(), 'esm: locked', esm.stderr)
  // No `types` setting: the package's types bring @types/node in themselves (TypeScript 7
  // no longer includes every @types package by default).
  const strict = ['--noEmit', '--strict', '--target', 'es2022']
  const nodenext = [...strict, '--module', 'nodenext', '--moduleResolution', 'nodenext']
  const bundler = [...strict, '--module', 'esnext', '--moduleResolution', 'bundler']
  for (const ts of ['typescript', 'typescript-latest']) {
    const tsc = (...args) => sh(process.execPath, [path.join(app, 'node_modules', ts, 'bin', 'tsc'), ...args], app)
    const version = (await tsc('--version')).stdout.trim()
    const good = await tsc(...nodenext, 'seed.ts', 'esm.mts', 'cjs.cts')
    t.is(good.code, 0, `${version}, nodenext: ${good.stdout}`)
    const esmBundler = await tsc(...bundler, 'esm.mts')
    t.is(esmBundler.code, 0, `${version}, bundler: ${esmBundler.stdout}`)
    const bad = await tsc(...nodenext, 'bad.ts')
    t.not(bad.code, 0, version)
    t.regex(bad.stdout, /bad\.ts\(2,\d+\): error TS2345/, version)
  }
  const jest = await sh('npx', ['jest', '--ci'], app, env)
  t.is(jest.code, 0, jest.stderr)
  t.regex(jest.stderr, /1 passed/)
  const cli = await sh('npx', ['redlock-rs', 'status', '--redis', `redis://127.0.0.1:${servers[0].port}`, 'orders:42'], app)
  t.is(cli.code, 0, cli.stderr)
  t.regex(cli.stdout, /free/)
})

test('without a native addon for the platform, loading fails with a clear message', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-noaddon-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const f of ['index.js', 'binding.js', 'package.json']) await exec('cp', [path.join(root, f), dir])
  const r = await sh(process.execPath, ['-e', "require('./index.js')"], dir)
  t.not(r.code, 0)
  t.regex(r.stderr, /redlock-rs: no native addon for linux-x64 could be loaded/)
  t.regex(r.stderr, /npm run build/)
})
