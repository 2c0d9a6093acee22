// The npm packages as users get them. The root package (`npm pack`) holds JavaScript and
// types only; the addon comes in a platform package, redlock-rs-<platform>, selected
// through optionalDependencies. The test runs README's release steps on a copy (the packed
// root, npm/ with the addon built here for this platform and stand-ins for the others,
// `napi pre-publish`), packs the root and each platform package, and installs the root
// tarball into a fresh app in a temp folder, with npm `overrides` pointing the platform
// packages at their tarballs (standing in for the registry). There: which addon file is
// loaded, the seed example as CommonJS and as ESM, strictly checked TypeScript (CommonJS,
// ESM under nodenext and under bundler resolution, a list typed IRedisClient[]; plus a file
// that must not type-check) with TypeScript 5 and with the newest TypeScript on npm, a jest
// test, and the CLI. Then the loader's message on platforms without an addon.
import { execFile } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import { parseTriple } from '@napi-rs/cli'
import test from 'ava'

import { useServers } from './helpers.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const exec = promisify(execFile)
const servers = useServers(test, 3)
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
// napi.targets as platform names (linux-x64-gnu, darwin-arm64, ...), as napi-rs names them.
const platforms = pkg.napi.targets.map((triple) => parseTriple(triple).platformArchABI)
// The addon built here (npm run build): redlock-rs.<platform>.node in the clone.
const builtAddon = readdirSync(root).find((f) => /^redlock-rs\.[^.]+\.node$/.test(f))
const host = builtAddon?.split('.')[1]
const napi = path.join(root, 'node_modules', '.bin', 'napi')

const sh = (cmd, args, cwd, env = {}) =>
  new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, timeout: 240_000, maxBuffer: 1 << 24 }, (e, stdout, stderr) =>
      resolve({ code: e ? (e.code ?? 1) : 0, stdout, stderr }),
    )
  })

/** `npm pack` of `folders` (relative to `cwd`) into `dest`: npm's JSON report, by package name. */
async function pack(cwd, dest, folders = ['.']) {
  const { stdout } = await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest, ...folders], { cwd, maxBuffer: 1 << 24 })
  return Object.fromEntries(JSON.parse(stdout).map((p) => [p.name, { ...p, files: p.files.map((f) => f.path).sort() }]))
}

// The JavaScript layer's modules, which index.js re-exports.
const LIB_FILES = ['abort', 'attempts', 'clients', 'diagnostics', 'errors', 'kinds', 'lock', 'native', 'redlock', 'using'].map((m) => `lib/${m}.js`)
// What the root package holds, in a clone and in a release alike: no .node file.
const ROOT_FILES = [
  'LICENSE', 'README.md', 'bin/redlock-rs.js', 'binding.d.ts', 'binding.js', 'index.d.mts', 'index.d.ts', 'index.js', 'index.mjs',
  ...LIB_FILES, 'package.json', 'scripts/demo.mjs', 'scripts/redis-servers.mjs',
]
// Prints which redlock-rs addon files the process has loaded (dlopen), as absolute paths.
const LOADED = `console.log(JSON.stringify(process.report.getReport().sharedObjects.filter((f) => /redlock-rs[^\\\\/]*\\.node$/.test(f))))`

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

test('the root package holds JavaScript and types only; released with its platform packages, a fresh app loads the addon from redlock-rs-<platform>', async (t) => {
  t.truthy(host, 'the addon is built (npm run build)')
  t.true(platforms.includes(host), `napi.targets includes ${host}`)
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-pkg-')))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))

  // A clone packs JavaScript and types, and no addon, even right after a build.
  const cloned = (await pack(root, dir))['redlock-rs']
  t.deepEqual(cloned.files, ROOT_FILES)
  t.is(pkg.optionalDependencies, undefined, 'the repository lists no unpublished packages, so npm ci needs none')
  const guard = await sh('npm', ['run', 'prepublishOnly'], root)
  t.not(guard.code, 0, 'npm publish refuses a root package without its platform packages')
  t.regex(guard.stderr, /napi pre-publish -t npm/)

  // The release steps (README, "Releasing") on a copy: the packed root with npm/, the built
  // addons in artifacts/ as the workflow downloads them (the one built here; stand-ins for
  // those only CI builds), `napi artifacts` (into npm/<platform>), then `napi pre-publish`,
  // which writes the root's optionalDependencies (publishing skipped).
  const release = path.join(dir, 'release')
  mkdirSync(release)
  await exec('tar', ['xzf', path.join(dir, cloned.filename), '-C', release, '--strip-components=1'])
  cpSync(path.join(root, 'npm'), path.join(release, 'npm'), { recursive: true })
  t.deepEqual(readdirSync(path.join(release, 'npm')).sort(), [...platforms].sort(), 'npm/ has a package for every target')
  for (const [i, p] of platforms.entries()) {
    const downloaded = path.join(release, 'artifacts', `bindings-${pkg.napi.targets[i]}`)
    mkdirSync(downloaded, { recursive: true })
    const addon = path.join(downloaded, `redlock-rs.${p}.node`)
    if (p === host) copyFileSync(path.join(root, builtAddon), addon)
    else writeFileSync(addon, 'stand-in: the release workflow builds this one')
  }
  const artifacts = await sh(napi, ['artifacts'], release)
  t.is(artifacts.code, 0, artifacts.stderr)
  const prePublish = await sh(napi, ['pre-publish', '-t', 'npm', '--skip-optional-publish', '--no-gh-release'], release)
  t.is(prePublish.code, 0, prePublish.stderr)
  const manifest = JSON.parse(readFileSync(path.join(release, 'package.json'), 'utf8'))
  t.deepEqual(manifest.optionalDependencies, Object.fromEntries(platforms.map((p) => [`redlock-rs-${p}`, pkg.version])))
  const released = await sh('npm', ['run', 'prepublishOnly'], release)
  t.is(released.code, 0, released.stderr)

  const tarballs = path.join(dir, 'tarballs')
  mkdirSync(tarballs)
  const packs = await pack(release, tarballs, ['.', ...platforms.map((p) => `./npm/${p}`)])
  t.deepEqual(packs['redlock-rs'].files, ROOT_FILES, 'the released root holds no .node file either')
  const platformPack = packs[`redlock-rs-${host}`]
  t.deepEqual(platformPack.files, ['README.md', 'package.json', `redlock-rs.${host}.node`])
  t.is(platformPack.version, pkg.version)

  const app = path.join(dir, 'app')
  mkdirSync(app)
  // The platform packages are not on the registry: overrides point npm at their tarballs.
  const overrides = Object.fromEntries(platforms.map((p) => [`redlock-rs-${p}`, `file:${path.join(tarballs, packs[`redlock-rs-${p}`].filename)}`]))
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, scripts: { test: 'jest' }, overrides }))
  // TypeScript 5 and the newest TypeScript (whatever major npm's `latest` is) side by side.
  const install = await sh(
    'npm',
    [
      'install', '--no-audit', '--no-fund', '--prefer-offline', path.join(tarballs, packs['redlock-rs'].filename),
      'typescript@5', 'typescript-latest@npm:typescript@latest', 'jest@29',
    ],
    app,
  )
  t.is(install.code, 0, install.stderr)
  t.notRegex(install.stderr, /@types\/node/, '@types/node comes without a warning')
  t.notRegex(install.stderr, /redlock-rs-/, 'the platform packages of other platforms are skipped without a warning')
  const modules = path.join(app, 'node_modules')
  t.deepEqual(readdirSync(modules).filter((n) => n.startsWith('redlock-rs-')), [`redlock-rs-${host}`], 'only this platform\'s package is installed')
  t.deepEqual(readdirSync(path.join(modules, 'redlock-rs')).filter((f) => f.endsWith('.node')), [])
  const expected = [path.join(modules, `redlock-rs-${host}`, `redlock-rs.${host}.node`)]
  const cjsLoad = await sh(process.execPath, ['-e', `const { Redlock } = require('redlock-rs'); if (typeof Redlock !== 'function') process.exit(3); ${LOADED}`], app)
  t.is(cjsLoad.code, 0, cjsLoad.stderr)
  t.deepEqual(JSON.parse(cjsLoad.stdout), expected, 'require() loads the addon of the platform package')
  const esmLoad = await sh(
    process.execPath,
    ['--input-type=module', '-e', `import Redlock, { Redis } from 'redlock-rs'; if (typeof Redlock !== 'function' || typeof Redis !== 'function') process.exit(3); ${LOADED}`],
    app,
  )
  t.is(esmLoad.code, 0, esmLoad.stderr)
  t.deepEqual(JSON.parse(esmLoad.stdout), expected, 'import loads the addon of the platform package')

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
  // No @types package installed by the app and no `types` setting: the package depends on
  // @types/node and its types reference it (TypeScript 7 no longer includes every @types
  // package by default).
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

/** Copies the loader (index.js, lib/*.js, binding.js, package.json) into a temp folder without any addon. */
function loaderOnly(t) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-noaddon-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(path.join(dir, 'lib'))
  for (const f of ['index.js', ...LIB_FILES, 'binding.js', 'package.json']) copyFileSync(path.join(root, f), path.join(dir, f))
  // Makes the process report another platform: what the loader reads to pick an addon.
  writeFileSync(
    path.join(dir, 'platform.cjs'),
    `for (const key of ['platform', 'arch']) {
  const value = process.env['SIMULATED_' + key.toUpperCase()]
  if (value) Object.defineProperty(process, key, { value, enumerable: true })
}`,
  )
  return dir
}
const load = (dir, platform = '', arch = '') =>
  sh(process.execPath, ['--require', './platform.cjs', '-e', "require('./index.js')"], dir, { SIMULATED_PLATFORM: platform, SIMULATED_ARCH: arch })

test('without its platform package, loading fails with a message naming the platform, its package and how to build from source', async (t) => {
  const dir = loaderOnly(t)
  const here = await load(dir)
  t.not(here.code, 0)
  t.regex(here.stderr, new RegExp(`redlock-rs: no native addon for ${host} could be loaded\\. It comes in the package redlock-rs-${host}, an optional dependency`))
  t.regex(here.stderr, /rustup\.rs.*`npm install && npm run build`/)
  for (const [platform, arch, name] of [['darwin', 'arm64', 'darwin-arm64'], ['win32', 'x64', 'win32-x64-msvc']]) {
    const r = await load(dir, platform, arch)
    t.not(r.code, 0)
    t.regex(r.stderr, new RegExp(`no native addon for ${name} could be loaded\\. It comes in the package redlock-rs-${name},`))
  }
})

test('on a platform without a prebuilt addon, the message names it, the prebuilt platforms and how to build from source', async (t) => {
  const dir = loaderOnly(t)
  // linux-s390x: napi-rs' loader knows it, no package is published; aix: the loader knows nothing.
  for (const [platform, arch, name] of [['linux', 's390x', 'linux-s390x-gnu'], ['freebsd', 'x64', 'freebsd-x64'], ['aix', 'ppc64', 'aix-ppc64']]) {
    const r = await load(dir, platform, arch)
    t.not(r.code, 0)
    t.regex(r.stderr, new RegExp(`redlock-rs: no native addon for ${name} could be loaded\\. No prebuilt addon is published for ${name}`))
    const listed = r.stderr.match(/\(prebuilt: ([^)]*)\)/)?.[1].split(', ')
    t.deepEqual(listed?.sort(), [...platforms].sort(), 'the prebuilt platforms are napi.targets')
    t.regex(r.stderr, /clone the redlock-rs repository, install a Rust toolchain \(https:\/\/rustup\.rs\), run `npm install && npm run build`/)
  }
})

// Found while comparing two builds in one process: the second copy of the addon failed to
// load ("cannot allocate memory in static TLS block", mimalloc's initial-exec TLS), as it
// would with two versions of the package in one app.
test('two copies of the addon (two versions of the package) load and lock in one process', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-two-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const copy of ['a', 'b']) {
    cpSync(root, path.join(dir, copy), { recursive: true, filter: (f) => !/node_modules|target|\.git$|__test__|benchmark/.test(f) })
  }
  const script = `
    const ports = process.env.REDIS_PORTS.split(',').map(Number)
    const [a, b] = ['a', 'b'].map((c) => require(${JSON.stringify(dir)} + '/' + c))
    const main = async () => {
      for (const lib of [a, b]) {
        const redlock = new lib.Redlock(ports.map((port) => new lib.Redis({ port })))
        await (await redlock.acquire(['two-copies'], 1000)).release()
        await redlock.quit()
      }
      console.log('both locked')
    }
    main().catch((e) => { console.error(e); process.exit(1) })`
  const r = await sh(process.execPath, ['-e', script], dir, { REDIS_PORTS: servers.map((s) => s.port).join(',') })
  t.is(r.code, 0, r.stderr)
  t.is(r.stdout.trim(), 'both locked')
})
