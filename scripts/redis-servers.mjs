// Throwaway redis-server processes on free loopback ports, for the tests and the demo.
// The binary comes from REDIS_SERVER_BIN or PATH. Servers are stopped by stop(), and
// killed on process exit whatever happens.

import { spawn } from 'node:child_process'
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

const live = new Set()
process.on('exit', () => {
  for (const s of live) s.child?.kill('SIGKILL')
})

/** The redis-server binary: REDIS_SERVER_BIN, or the first on PATH. */
export function redisServerBin() {
  const fromEnv = process.env.REDIS_SERVER_BIN
  const candidates = fromEnv
    ? [fromEnv]
    : (process.env.PATH || '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'redis-server'))
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK)
      return c
    } catch {}
  }
  throw new Error(
    fromEnv
      ? `REDIS_SERVER_BIN=${fromEnv} is not an executable file.`
      : 'redis-server was not found on PATH. Install it (apt-get install redis-server) or set REDIS_SERVER_BIN.',
  )
}

/** A TCP port that is free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function encode(args) {
  let out = `*${args.length}\r\n`
  for (const a of args) {
    const s = Buffer.from(String(a))
    out += `$${s.length}\r\n${s}\r\n`
  }
  return out
}

/** Parses one RESP2 reply at `buf[i]`; returns [value, next index] or undefined if incomplete. */
function parse(buf, i = 0) {
  const eol = buf.indexOf('\r\n', i)
  if (eol < 0) return undefined
  const type = String.fromCharCode(buf[i])
  const line = buf.toString('utf8', i + 1, eol)
  const next = eol + 2
  switch (type) {
    case '+':
      return [line, next]
    case '-':
      return [new Error(line), next]
    case ':':
      return [Number(line), next]
    case '$': {
      const n = Number(line)
      if (n < 0) return [null, next]
      if (buf.length < next + n + 2) return undefined
      return [buf.toString('utf8', next, next + n), next + n + 2]
    }
    case '*': {
      const n = Number(line)
      if (n < 0) return [null, next]
      const items = []
      let at = next
      for (let k = 0; k < n; k++) {
        const r = parse(buf, at)
        if (!r) return undefined
        items.push(r[0])
        at = r[1]
      }
      return [items, at]
    }
    default:
      throw new Error(`unexpected RESP type ${type}`)
  }
}

/**
 * Sends one command to 127.0.0.1:port on a fresh connection and returns the reply: an
 * independent way to look at a server's state, not the code under test.
 */
export function rawCommand(port, args, { timeout = 2000, password } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    let buf = Buffer.alloc(0)
    const replies = []
    const expected = password ? 2 : 1
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error(`no reply from 127.0.0.1:${port} within ${timeout} ms`))
    }, timeout)
    sock.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      let r
      while (replies.length < expected && (r = parse(buf))) {
        replies.push(r[0])
        buf = buf.subarray(r[1])
      }
      if (replies.length === expected) {
        clearTimeout(timer)
        sock.end()
        const last = replies[expected - 1]
        if (last instanceof Error) reject(last)
        else resolve(last)
      }
    })
    sock.write((password ? encode(['AUTH', password]) : '') + encode(args))
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** One redis-server process. */
export class RedisServer {
  constructor({ port, args = [], password, bin = redisServerBin() } = {}) {
    this.port = port
    this.password = password
    this.args = password ? [...args, '--requirepass', password] : args
    this.bin = bin
    this.child = null
    this.dir = null
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`
  }

  get pid() {
    return this.child?.pid
  }

  /**
   * Starts the server (again, on the same port after kill()) and waits until it answers.
   * A port chosen here that another process takes before the server binds it is replaced.
   */
  async start() {
    if (this.port !== undefined) return this.#start()
    for (let tries = 1; ; tries++) {
      this.port = await freePort()
      try {
        return await this.#start()
      } catch (error) {
        if (tries >= 5 || !/already in use/i.test(error.message)) throw error
      }
    }
  }

  async #start() {
    this.dir ??= mkdtempSync(path.join(os.tmpdir(), 'redlock-rs-redis-'))
    const args = [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--protected-mode', 'no', ...this.args,
    ]
    // redis-server logs to stdout: kept until it answers (for the error of a failed start,
    // e.g. a port taken meanwhile), then only drained.
    const child = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    live.add(this)
    let output = ''
    const keep = (d) => (output += d)
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    const started = () => {
      for (const s of [child.stdout, child.stderr]) {
        s.off('data', keep)
        s.resume()
      }
      return this
    }
    let exited = false
    child.once('exit', () => (exited = true))
    const deadline = Date.now() + 10_000
    for (;;) {
      if (exited) {
        const why = output.split('\n').filter((l) => /#|error|fatal/i.test(l)).slice(-3).join(' | ')
        throw new Error(`redis-server on port ${this.port} exited at start: ${why || output.slice(-500)}`)
      }
      try {
        await rawCommand(this.port, ['PING'], { timeout: 500, password: this.password })
        return started()
      } catch (e) {
        if (/NOAUTH|WRONGPASS|invalid password/.test(e.message)) return started()
        if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer: ${e.message}`)
        await sleep(20)
      }
    }
  }

  /** Kills the process (data is lost) and waits for its exit. */
  async kill(signal = 'SIGKILL') {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const gone = new Promise((r) => child.once('exit', r))
    child.kill('SIGCONT')
    child.kill(signal)
    await gone
    live.delete(this)
  }

  /** Freezes the server (SIGSTOP): connections stay open, nothing is answered. */
  pause() {
    this.child.kill('SIGSTOP')
  }

  resume() {
    this.child.kill('SIGCONT')
  }

  /** Sends a command over a fresh raw connection. */
  command(...args) {
    return rawCommand(this.port, args, { password: this.password })
  }

  async stop() {
    await this.kill('SIGKILL')
    if (this.dir) rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Starts `count` servers in parallel. `options.args` go to every server. */
export async function startServers(count, options = {}) {
  const servers = Array.from({ length: count }, () => new RedisServer(options))
  await Promise.all(servers.map((s) => s.start()))
  return servers
}

export async function stopServers(servers) {
  await Promise.all(servers.map((s) => s.stop()))
}
