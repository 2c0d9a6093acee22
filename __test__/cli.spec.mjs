// The command line, run as a subprocess against real redis-servers.
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { resource, sleep, useServers, valuesOn } from './helpers.mjs'

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'redlock-rs.js')
const servers = useServers(test, 3)
const redisUrls = () => servers.map((s) => s.url).join(',')

function run(args, { env = {} } = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, timeout: 30_000 }, (e, stdout, stderr) =>
      resolve({ code: e ? e.code : 0, stdout, stderr }),
    )
  })
}

test("runs the command under the lock and exits with the command's status; the fence goes into the env", async (t) => {
  const key = resource(t)
  const r = await run(['run', '--redis', redisUrls(), '--resource', key, '--ttl', '5s', '--fence-env', 'FENCE', '--', 'sh', '-c', 'echo "fence=$FENCE"; exit 3'])
  t.is(r.code, 3)
  t.regex(r.stdout, /^fence=\d+$/m)
  t.deepEqual(await valuesOn(servers, key), [null, null, null], 'released after')
  // REDLOCK_REDIS may give the URLs.
  const viaEnv = await run(['run', '--resource', key, '--ttl', '5s', '--', 'true'], { env: { REDLOCK_REDIS: redisUrls() } })
  t.is(viaEnv.code, 0)
})

test('exits 75 with a one-line reason when the lock cannot be had within --wait', async (t) => {
  const key = resource(t)
  for (const s of servers) await s.command('SET', key, 'someone-else', 'PX', 10_000)
  const started = Date.now()
  const r = await run(['run', '--redis', redisUrls(), '--resource', key, '--ttl', '5s', '--wait', '500ms', '--', 'echo', 'never'])
  t.is(r.code, 75)
  t.is(r.stdout, '')
  t.is(r.stderr.trim().split('\n').length, 1)
  t.regex(r.stderr, /could not lock .*not free within 500 ms/)
  t.true(Date.now() - started < 5_000)
  const noWait = await run(['run', '--redis', redisUrls(), '--resource', key, '--ttl', '5s', '--', 'echo', 'never'])
  t.is(noWait.code, 75)
  t.regex(noWait.stderr, /held by another owner/)
})

test('two runs of the same resource never overlap', async (t) => {
  const key = resource(t)
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const log = path.join(dir, 'log')
  const section = (name) => [
    'run', '--redis', redisUrls(), '--resource', key, '--ttl', '5s', '--wait', '20s', '--',
    'sh', '-c', `for i in 1 2 3; do echo "${name} start" >> ${log}; sleep 0.1; echo "${name} end" >> ${log}; done`,
  ]
  const results = await Promise.all([run(section('a')), run(section('b')), run(section('c'))])
  t.deepEqual(results.map((r) => r.code), [0, 0, 0])
  const lines = readFileSync(log, 'utf8').trim().split('\n')
  t.is(lines.length, 18)
  // Each run's three sections are contiguous: a run never starts while another is inside.
  const owners = lines.map((l) => l.split(' ')[0])
  for (let i = 0; i < lines.length; i += 6) t.is(new Set(owners.slice(i, i + 6)).size, 1, lines.join('\n'))
})

test('SIGTERM to the CLI reaches the command and the lock is released', async (t) => {
  const key = resource(t)
  const child = spawn(process.execPath, [cli, 'run', '--redis', redisUrls(), '--resource', key, '--ttl', '5s', '--', 'sleep', '30'])
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  // Wait until it holds the lock.
  for (let i = 0; i < 50 && (await valuesOn(servers, key)).every((v) => v === null); i++) await sleep(50)
  t.true((await valuesOn(servers, key)).some((v) => v !== null), 'locked while the command runs')
  child.kill('SIGTERM')
  const { code } = await exited
  t.is(code, 143, 'the status of a command ended by SIGTERM')
  t.deepEqual(await valuesOn(servers, key), [null, null, null])
})

test('a lock lost mid-run is reported and the command terminated (or only reported with --on-lost=ignore)', async (t) => {
  for (const [onLost, expected] of [['terminate', 143], ['ignore', 0]]) {
    const key = resource(t)
    const running = run(['run', '--redis', redisUrls(), '--resource', key, '--ttl', '1s', `--on-lost=${onLost}`, '--', 'sleep', '2'])
    for (let i = 0; i < 50 && (await valuesOn(servers, key)).every((v) => v === null); i++) await sleep(50)
    for (const s of servers) await s.command('SET', key, 'thief', 'PX', 10_000)
    const r = await running
    t.regex(r.stderr, /the lock on .* was lost/, onLost)
    t.is(r.code, expected, onLost)
    t.deepEqual(await valuesOn(servers, key), ['thief', 'thief', 'thief'], "the thief's key is untouched")
  }
})

test('status shows who holds a resource on each node', async (t) => {
  const key = resource(t)
  await servers[0].command('SET', key, 'abc123', 'PX', 10_000)
  const r = await run(['status', '--redis', redisUrls(), key])
  t.is(r.code, 0)
  const lines = r.stdout.trim().split('\n')
  t.is(lines.length, 3)
  t.regex(lines[0], /abc123 \(\d+ ms left\)/)
  t.regex(lines[1], /: free$/)
})

test('the demo races two contenders on throwaway servers and leaves nothing behind', async (t) => {
  const r = await run(['demo'])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /got the lock/)
  t.regex(r.stdout, /Keys left on the servers: 0/)
})

test('bad arguments are usage errors', async (t) => {
  const r = await run(['run', '--redis', redisUrls(), '--resource', 'x', '--ttl', 'soon', '--', 'true'])
  t.not(r.code, 0)
  t.regex(r.stderr, /duration/)
})
