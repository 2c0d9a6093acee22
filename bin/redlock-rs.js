#!/usr/bin/env node
'use strict'
// redlock-rs on the command line:
//   redlock-rs run --redis URL[,URL...] --resource NAME --ttl 30s [--wait 60s] [--fence-env VAR]
//                  [--on-lost terminate|ignore] -- CMD ARGS...
//   redlock-rs status --redis URL[,URL...] NAME
//   redlock-rs demo
//
// Exit status (sysexits.h): the command's own, or
//   64 EX_USAGE        bad arguments
//   69 EX_UNAVAILABLE  status: too few Redis nodes answered for a quorum
//   70 EX_SOFTWARE     an internal error
//   75 EX_TEMPFAIL     run: the lock could not be had (held by another owner, or too few
//                      Redis nodes answered); the one line on stderr says which

const { spawn } = require('node:child_process')
const { constants } = require('node:os')
const path = require('node:path')
const { Command, InvalidArgumentError, Option } = require('commander')

/** The library, loaded on first use: `--help` works even where the native addon cannot load. */
let loaded
const lib = () => (loaded ??= require('..'))

const EX_USAGE = 64
const EX_UNAVAILABLE = 69
const EX_SOFTWARE = 70
const EX_TEMPFAIL = 75
/** The signals passed on to the command (and that stop a wait for the lock). */
const FORWARDED = ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGTERM']
/** The exit status of a process that signal `name` ended: 128 + its number, as shells give it. */
const signalStatus = (name) => 128 + (constants.signals[name] ?? 0)

const EXIT_CODES = `
Exit status:
  the command's own   when it ran under the lock (127: it could not be started;
                      128 + n: signal n ended it)
  128 + n             run: signal n stopped the wait for the lock (the command did
                      not run)
  64                  bad arguments
  69                  status: too few of the Redis nodes answered for a quorum
  70                  an internal error
  75                  run: the lock could not be had (held by another owner, also
                      after --wait, or too few Redis nodes answered to decide); the
                      one line on stderr says which`

/** `--ttl` bounds: the lock is extended while the command runs, so it need not be long. */
const MIN_TTL = 200
const MAX_TTL = 300_000
const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** "500ms", "30s", "2m", "1h": a unit is required. */
function duration(text, { zero = false } = {}) {
  const value = String(text).trim()
  if (/^\d+(?:\.\d+)?$/.test(value)) {
    const n = Number(value)
    const hint = n < 100 ? `${value}s or ${Math.round(n * 1000)}ms` : `${value}ms or ${n / 1000}s`
    throw new InvalidArgumentError(`A duration needs a unit: add a unit, e.g. ${hint}.`)
  }
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value)
  if (!m) throw new InvalidArgumentError('Expected a duration like 500ms, 30s, 2m or 1h.')
  const ms = Math.round(Number(m[1]) * UNITS[m[2]])
  if (!Number.isSafeInteger(ms)) throw new InvalidArgumentError(`${value} is too long.`)
  if (ms < 0 || (ms === 0 && !zero)) throw new InvalidArgumentError('Expected a duration above 0.')
  return ms
}

/**
 * How long past --wait a wait for nodes that answer too slowly is stopped (ms; a tenth
 * of the wait when longer: the retries that span it take their own time too).
 */
const WAIT_SLACK = 200

/** The longest --wait (a week: longer waits are for a scheduler, not a lock). */
const MAX_WAIT = 7 * 24 * 3_600_000

/** --wait: 0 (do not wait) up to MAX_WAIT. */
function wait(text) {
  const ms = duration(text, { zero: true })
  if (ms > MAX_WAIT) throw new InvalidArgumentError('The wait must be at most 168h (7 days).')
  return ms
}

function ttl(text) {
  const ms = duration(text)
  if (ms < MIN_TTL || ms > MAX_TTL) {
    throw new InvalidArgumentError(
      `The ttl must be between ${MIN_TTL}ms and ${MAX_TTL / 60_000}m (the lock is extended while the command runs, so a long ttl is never needed).`,
    )
  }
  return ms
}

/** A resource name: not empty (the library would refuse it, naming its own argument). */
function resourceName(text) {
  if (text === '') throw new InvalidArgumentError('Expected a non-empty name.')
  return text
}

/** Splits the list; each entry is checked (without echoing passwords) by `addresses`. */
function urls(text) {
  const list = String(text || '').split(',').map((u) => u.trim()).filter(Boolean)
  if (list.length === 0) throw new InvalidArgumentError('Expected redis://host:port[,redis://...].')
  return list
}

/** `entry` with any credentials hidden, for messages. */
// (Up to the last '@': a password may hold '/' or '@' unencoded.)
const redact = (entry) => entry.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/i, (_, scheme = '') => `${scheme}***@`)

class UsageError extends Error {}

/**
 * A redis:// or rediss:// URL for each `--redis` entry; a bare `host`, `host:port` or
 * `[v6]:port` is read as redis://host:port (port 6379 by default).
 */
function addresses(list) {
  return list.map((entry) => {
    const bad = (why) =>
      new UsageError(`--redis: "${redact(entry)}" ${why}; use redis://host:port (or host:port), e.g. redis://127.0.0.1:6379.`)
    let url = entry
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(entry)) {
      const m = /^(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?)(?::(\d+))?$/i.exec(entry)
      if (!m) throw bad('is not a Redis address')
      url = `redis://${m[1]}:${m[2] ?? 6379}`
    }
    let parsed
    try {
      parsed = new URL(url)
    } catch {
      throw bad('is not a valid URL')
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') throw bad(`has the scheme ${parsed.protocol}//, not redis:// or rediss://`)
    if (!parsed.hostname) throw bad('has no host')
    return url
  })
}

function clientsOf(list) {
  const { Redis } = lib() // an addon that cannot load is no usage error: it throws as it is
  return list.map((url) => {
    try {
      return new Redis(url, { connectTimeout: 2_000, commandTimeout: 2_000 })
    } catch (e) {
      throw new UsageError(`--redis: "${redact(url)}": ${e.message}`)
    }
  })
}

const oneLine = (text) => String(text).replace(/\s+/g, ' ').trim().replace(/\.$/, '')

/** The node errors behind `error` (the AggregateError in its cause chain), in one line. */
function failedNodes(error) {
  for (let e = error, depth = 0; e && depth < 4; e = e.cause, depth++) {
    if (Array.isArray(e.errors)) return e.errors.map((n) => oneLine(n?.message ?? n)).join('; ')
  }
  return ''
}

function unavailable(error, count) {
  const nodes = failedNodes(error)
  return `too few of the ${count} Redis nodes answered${nodes ? `: ${nodes}` : ''}`
}

/** The one-line reason of an ExecutionError or LockLostError, from its `reason`. */
function why(error, count, { wait, lost } = {}) {
  switch (error.reason) {
    case 'locked':
      return lost ? 'another owner holds it now' : wait ? `not free within ${wait} ms` : 'held by another owner'
    case 'quorum-unavailable':
      return unavailable(error, count)
    case 'expired':
      return 'it expired before it could be extended'
    default:
      return oneLine(error.message)
  }
}

/** `run`'s status when the lock could not be had: 75 whatever the reason (it is on stderr). */
function exitCodeOf(error) {
  return error.reason === 'internal' ? EX_SOFTWARE : EX_TEMPFAIL
}

const fail = (message, code) => {
  process.stderr.write(`redlock-rs: ${message}\n`)
  process.exitCode = code
}

/** Usage errors go through commander, as its own do (message, help, exit 64). */
function usage(cmd, error) {
  if (error instanceof UsageError) cmd.error(`error: ${error.message}`, { exitCode: EX_USAGE, code: 'redlock-rs.usage' })
  throw error
}

async function run(command, args, opts, cmd) {
  let clients
  try {
    clients = clientsOf(addresses(opts.redis))
  } catch (e) {
    usage(cmd, e)
  }
  const count = clients.length
  const redlock = new (lib().Redlock)(clients, {
    fencing: Boolean(opts.fenceEnv),
    retryDelay: 100,
    retryJitter: 0,
    // Waiting is woken by the release; the retry budget spans --wait.
    retryCount: opts.wait ? Math.max(1, Math.ceil(opts.wait / 100)) : 0,
    // Well inside every ttl --ttl accepts (at least 100 ms before the end).
    automaticExtensionThreshold: Math.min(500, Math.floor(opts.ttl / 3)),
  })
  let child
  let received = null
  // A signal while the lock is awaited stops the wait; once the command runs, it is passed on.
  const waiting = new AbortController()
  const forward = (signal) => {
    received = signal
    // (Ctrl-C in a terminal reaches the whole foreground process group, the command
    // included, which then hears it twice, as under `npm exec`: where a signal came from
    // cannot be told, and one sent to this process alone must reach the command.)
    if (child) child.kill(signal)
    else waiting.abort(new Error(`${signal} received`))
  }
  for (const signal of FORWARDED) process.on(signal, forward)
  // --wait bounds the wait whatever the nodes do: the retries span it, but an attempt on
  // nodes that do not answer takes up to their time-outs. Shortly past it, the wait stops.
  let late = false
  const deadline = opts.wait
    ? setTimeout(() => {
        late = true
        waiting.abort(new Error(`not acquired within ${opts.wait} ms`))
      }, opts.wait + Math.max(WAIT_SLACK, opts.wait / 10))
    : undefined
  try {
    const status = await redlock.using([opts.resource], opts.ttl, { signal: waiting.signal }, async (signal, lock) => {
      clearTimeout(deadline)
      if (received) return signalStatus(received)
      // (The wait ended as the lock came: it is given up, the command does not run.)
      if (late || signal.aborted) throw signal.error
      const env = { ...process.env }
      if (opts.fenceEnv) env[opts.fenceEnv] = String(lock.fence)
      child = spawn(command, args, { stdio: 'inherit', env })
      signal.addEventListener('abort', () => {
        const lost = signal.error
        const reason = lost instanceof lib().LockLostError || lost instanceof lib().ExecutionError ? why(lost, count, { lost: true }) : oneLine(lost?.message)
        process.stderr.write(`redlock-rs: the lock on ${opts.resource} was lost: ${reason}.\n`)
        if (opts.onLost === 'terminate') child.kill('SIGTERM')
      })
      return new Promise((resolve) => {
        child.on('error', (e) => {
          process.stderr.write(`redlock-rs: cannot run ${command}: ${e.message}\n`)
          resolve(127)
        })
        child.on('exit', (code, sig) => resolve(code ?? signalStatus(sig)))
      })
    })
    process.exitCode = status
  } catch (e) {
    if (received && !child) {
      process.exitCode = signalStatus(received) // stopped while waiting for the lock
    } else if (late && !child) {
      fail(`could not lock ${opts.resource}: not acquired within ${opts.wait} ms (the Redis nodes answered too slowly).`, EX_TEMPFAIL)
    } else if (e instanceof lib().ExecutionError) {
      fail(`could not lock ${opts.resource}: ${why(e, count, opts)}.`, exitCodeOf(e))
    } else if (!child && (e instanceof TypeError || e instanceof RangeError)) {
      // The library refused an argument before anything ran (an empty --resource, say).
      fail(`could not lock ${opts.resource}: ${oneLine(e.message)}`, EX_USAGE)
    } else {
      fail(`could not lock ${opts.resource}: ${oneLine(e?.message ?? e)}.`, EX_SOFTWARE)
    }
  } finally {
    clearTimeout(deadline)
    for (const signal of FORWARDED) process.off(signal, forward)
    await redlock.quit()
  }
}

async function status(name, opts, cmd) {
  let clients
  try {
    clients = clientsOf(addresses(opts.redis))
  } catch (e) {
    usage(cmd, e)
  }
  try {
    let answered = 0
    const rows = await Promise.all(
      clients.map(async (c) => {
        try {
          // (A node not listening is said at once: a command would wait for it to listen.)
          await c.connect()
          const [value, ttl] = await Promise.all([c.get(name), c.pttl(name)])
          answered += 1
          return `${c.url}: ${value === null ? 'free' : `${value} (${ttl} ms left)`}`
        } catch (e) {
          return `${c.url}: ${oneLine(e.message)}`
        }
      }),
    )
    process.stdout.write(`${rows.join('\n')}\n`)
    const quorum = Math.floor(clients.length / 2) + 1
    if (answered < quorum) {
      fail(`only ${answered} of ${clients.length} Redis nodes answered; a quorum needs ${quorum}.`, EX_UNAVAILABLE)
    }
  } finally {
    await Promise.all(clients.map((c) => c.quit()))
  }
}

const program = new Command('redlock-rs')
  .description('Distributed locks on Redis (the Redlock algorithm), from the command line.')
  .version(require('../package.json').version, '-V, --version', "print redlock-rs' version")
  // Options of the program only before a subcommand: `run ... backup.sh -V` passes -V to
  // the command (found by a regression hunt: it printed the version and ran nothing).
  .enablePositionalOptions()
  .showHelpAfterError()
  // Usage errors exit 64 (EX_USAGE); help exits 0. Set before the subcommands inherit it.
  .exitOverride((e) => process.exit(e.exitCode === 0 ? 0 : EX_USAGE))
  .addHelpText('after', EXIT_CODES)
const redisOption = () =>
  new Option('--redis <urls>', 'comma-separated redis://host:port URLs (or host:port), one per Redlock node')
    .env('REDLOCK_REDIS')
    .argParser(urls)
    .makeOptionMandatory()

program
  .command('run')
  .description('run a command while holding a lock; exits with its status, or 75 when the lock cannot be had (held by another owner, or Redis unavailable)')
  .addOption(redisOption())
  .requiredOption('--resource <name>', 'the resource to lock', resourceName)
  .requiredOption('--ttl <duration>', `lock time-to-live with a unit, ${MIN_TTL}ms to ${MAX_TTL / 60_000}m, e.g. 30s (extended while the command runs)`, ttl)
  .option('--wait <duration>', 'how long to wait for the lock, with a unit, e.g. 60s, at most 168h (default: 0ms, do not wait)', wait)
  .option('--fence-env <var>', 'put the fencing token in this environment variable of the command')
  .addOption(new Option('--on-lost <what>', 'when the lock is lost mid-run').choices(['terminate', 'ignore']).default('terminate'))
  .argument('<command>', 'the command to run (after --)')
  .argument('[args...]', 'its arguments')
  .passThroughOptions()
  .addHelpText('after', EXIT_CODES)
  .action((command, args, opts, cmd) => run(command, args, opts, cmd))

program
  .command('status')
  .description('who holds a resource: its value and remaining ttl on each node; exits 69 when too few nodes answer for a quorum')
  .addOption(redisOption())
  .argument('<name>', 'the resource')
  .addHelpText('after', EXIT_CODES)
  .action((name, opts, cmd) => status(name, opts, cmd))

program
  .command('demo')
  .description("the seed's example: two contenders race for one lock on throwaway local redis-servers (in-process MemoryStores when redis-server is not on PATH)")
  .action(() => import(path.join(__dirname, '..', 'scripts', 'demo.mjs')))

program.parseAsync(process.argv).catch((e) => {
  process.stderr.write(`redlock-rs: ${e.message}\n`)
  process.exitCode = EX_SOFTWARE
})
