// The chaos run (scripts/chaos.mjs) in short and seeded: 30 s of random faults on 5 lock
// nodes with 6 worker processes, then the checker. Reports go to a temporary directory.
// Also shows that the checker is not vacuous: a client that locks another resource while
// writing the same counter makes the run fail.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * Runs scripts/chaos.mjs in a process group of its own (its workers and redis-servers
 * are in it too). On teardown, a run still going is asked to stop (it then stops its
 * servers and workers), and the whole group is killed after 5 s.
 */
function chaos(t, args) {
  const out = mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-chaos-'))
  const json = path.join(out, 'chaos.json')
  const child = spawn(process.execPath, [path.join(root, 'scripts/chaos.mjs'), ...args, '--out', out, '--json', json], {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, 'SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))])
    }
    try {
      process.kill(-child.pid, 'SIGKILL') // anything of the group left behind
    } catch {}
    rmSync(out, { recursive: true, force: true })
  })
  return exited.then((code) => ({ code, stdout, stderr, result: JSON.parse(readFileSync(json, 'utf8')) }))
}

test('30 s of random faults (seed 1): no violations, and the stale holder is caught by the fence', async (t) => {
  const { code, stdout, result } = await chaos(t, ['--seconds', '30', '--seed', '1'])
  t.log(stdout.split('\n').filter((l) => l.startsWith('|')).join('\n'))
  t.deepEqual(result.violations, [], stdout)
  t.is(code, 0)
  t.true(result.stats.completed > 0, 'critical sections were completed')
  t.is(result.stats.counter, result.stats.completed)
  t.true(result.faults.length > 5, 'faults were injected')
  // The worker paused inside its critical section past its TTL: the witness refused its write.
  t.true(result.stats.caught.length > 0, 'a stale holder was caught by fencing')
})

test('the checker catches two holders at once (a client that locks another resource)', async (t) => {
  const { code, result } = await chaos(t, ['--seconds', '8', '--seed', '2', '--sabotage'])
  t.is(code, 1)
  // Seen as critical sections of valid holders that overlap, or, once the other
  // resource's fences fall behind, as a valid holder whose entry the fence check refused.
  t.true(result.violations.some((v) => v.kind === 'overlap' || v.kind === 'valid holder refused by fence'), JSON.stringify(result.violations.slice(0, 3)))
})
