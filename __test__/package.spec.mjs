// The npm package as users get it: `npm pack`, a fresh app in a temp folder that installs
// the tarball, and there the seed example as CommonJS, as ESM and as strictly checked
// TypeScript (plus a file that must not type-check), a jest test, and the CLI.
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
    'LICENSE', 'README.md', 'bin/redlock-rs.js', 'binding.d.ts', 'binding.js', 'index.d.ts', 'index.js', 'index.mjs',
    'package.json', 'redlock-rs.linux-x64-gnu.node', 'scripts/demo.mjs', 'scripts/redis-servers.mjs',
  ])
  const tarball = path.join(dir, packed.filename)
  const app = path.join(dir, 'app')
  await exec('mkdir', ['-p', app])
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, scripts: { test: 'jest' } }))
  const install = await sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, 'typescript@5', 'jest@29', '@types/node@20'], app)
  t.is(install.code, 0, install.stderr)

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
  const tscArgs = ['--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node']
  const good = await sh('npx', ['tsc', ...tscArgs, 'seed.ts'], app)
  t.is(good.code, 0, good.stdout)
  const bad = await sh('npx', ['tsc', ...tscArgs, 'bad.ts'], app)
  t.not(bad.code, 0)
  t.regex(bad.stdout, /bad\.ts\(2,\d+\): error TS2345/)
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
