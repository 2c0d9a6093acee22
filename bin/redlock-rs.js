#!/usr/bin/env node
'use strict'
// redlock-rs on the command line:
//   redlock-rs run --redis URL[,URL...] --resource NAME --ttl 30s [--wait 60s] [--fence-env VAR]
//                  [--on-lost terminate|ignore] -- CMD ARGS...
//   redlock-rs status --redis URL[,URL...] NAME
//   redlock-rs demo

const { spawn } = require('node:child_process')
const path = require('node:path')
const { Command, InvalidArgumentError, Option } = require('commander')

const { Redis, Redlock, ExecutionError } = require('..')

/** Exit status when the lock cannot be had (EX_TEMPFAIL). */
const EX_TEMPFAIL = 75
const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGTERM: 15 }

/** "30s", "500ms", "2m", "1h" or a number of ms. */
function duration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(text).trim())
  if (!m) throw new InvalidArgumentError('expected a duration like 500ms, 30s, 2m or 1h.')
  const ms = Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] || 'ms'])
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new InvalidArgumentError('expected a duration above 0.')
  return ms
}

function urls(text) {
  const list = String(text || '').split(',').map((u) => u.trim()).filter(Boolean)
  if (list.length === 0) throw new InvalidArgumentError('expected redis://host:port[,redis://...].')
  return list
}

function clientsOf(list) {
  return list.map((url) => new Redis(url, { connectTimeout: 2_000, commandTimeout: 2_000 }))
}

const fail = (message) => {
  process.stderr.write(`redlock-rs: ${message}\n`)
  process.exitCode = EX_TEMPFAIL
}

async function run(command, args, opts) {
  const redlock = new Redlock(clientsOf(opts.redis), {
    fencing: Boolean(opts.fenceEnv),
    retryDelay: 100,
    retryJitter: 0,
    // Waiting is woken by the release; the retry budget spans --wait.
    retryCount: opts.wait ? Math.max(1, Math.ceil(opts.wait / 100)) : 0,
    automaticExtensionThreshold: Math.min(500, Math.floor(opts.ttl / 3)),
  })
  let child
  let received = null
  const forward = (signal) => {
    received = signal
    if (child) child.kill(signal)
  }
  for (const signal of Object.keys(SIGNALS)) process.on(signal, forward)
  try {
    const status = await redlock.using([opts.resource], opts.ttl, async (signal, lock) => {
      if (received) return 128 + SIGNALS[received]
      const env = { ...process.env }
      if (opts.fenceEnv) env[opts.fenceEnv] = String(lock.fence)
      child = spawn(command, args, { stdio: 'inherit', env })
      signal.addEventListener('abort', () => {
        process.stderr.write(`redlock-rs: the lock on ${opts.resource} was lost: ${signal.error?.message}\n`)
        if (opts.onLost === 'terminate') child.kill('SIGTERM')
      })
      return new Promise((resolve) => {
        child.on('error', (e) => {
          process.stderr.write(`redlock-rs: cannot run ${command}: ${e.message}\n`)
          resolve(127)
        })
        child.on('exit', (code, sig) => resolve(code ?? 128 + (SIGNALS[sig] || 0)))
      })
    })
    process.exitCode = status
  } catch (e) {
    if (e instanceof ExecutionError) {
      const why = e.message.includes('expired') ? e.message : opts.wait ? `not free within ${opts.wait} ms` : 'held by another owner'
      fail(`could not lock ${opts.resource}: ${why}.`)
    } else {
      fail(e.message)
    }
  } finally {
    for (const signal of Object.keys(SIGNALS)) process.off(signal, forward)
    await redlock.quit()
  }
}

async function status(name, opts) {
  const clients = clientsOf(opts.redis)
  try {
    const rows = await Promise.all(
      clients.map(async (c, i) => {
        try {
          const [value, ttl] = await Promise.all([c.get(name), c.pttl(name)])
          return `${opts.redis[i]}: ${value === null ? 'free' : `${value} (${ttl} ms left)`}`
        } catch (e) {
          return `${opts.redis[i]}: ${e.message}`
        }
      }),
    )
    process.stdout.write(`${rows.join('\n')}\n`)
  } finally {
    await Promise.all(clients.map((c) => c.quit()))
  }
}

const program = new Command('redlock-rs')
  .description('Distributed locks on Redis (the Redlock algorithm), from the command line.')
  .showHelpAfterError()
const redisOption = () =>
  new Option('--redis <urls>', 'comma-separated redis:// URLs, one per Redlock node').env('REDLOCK_REDIS').argParser(urls).makeOptionMandatory()

program
  .command('run')
  .description('run a command while holding a lock; exits with its status, or 75 when the lock cannot be had')
  .addOption(redisOption())
  .requiredOption('--resource <name>', 'the resource to lock')
  .requiredOption('--ttl <duration>', 'lock time-to-live (extended while the command runs)', duration)
  .option('--wait <duration>', 'how long to wait for the lock (default: do not wait)', duration)
  .option('--fence-env <var>', 'put the fencing token in this environment variable of the command')
  .addOption(new Option('--on-lost <what>', 'when the lock is lost mid-run').choices(['terminate', 'ignore']).default('terminate'))
  .argument('<command>', 'the command to run (after --)')
  .argument('[args...]', 'its arguments')
  .action((command, args, opts) => run(command, args, opts))

program
  .command('status')
  .description('who holds a resource: its value and remaining ttl on each node')
  .addOption(redisOption())
  .argument('<name>', 'the resource')
  .action((name, opts) => status(name, opts))

program
  .command('demo')
  .description("the seed's example: two contenders race for one lock on throwaway local redis-servers")
  .action(() => import(path.join(__dirname, '..', 'scripts', 'demo.mjs')))

program.parseAsync(process.argv).catch((e) => {
  process.stderr.write(`redlock-rs: ${e.message}\n`)
  process.exitCode = 1
})
