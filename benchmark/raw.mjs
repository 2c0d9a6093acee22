// A Redis client reduced to what the floor measurements need (benchmark/floor.mjs,
// benchmark/transfers.mjs): raw sockets from the JavaScript thread, commands written at
// once, the replies of lock commands parsed, nothing else.
import net from 'node:net'
import { createHash } from 'node:crypto'

export const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
export const MOVE = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 else return 0 end"
export const sha = (s) => createHash('sha1').update(s).digest('hex')

const encode = (args) => {
  let out = `*${args.length}\r\n`
  for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return out
}

/** One connection: commands written at once, replies matched in order. */
export class Raw {
  constructor(port) {
    this.waiting = []
    this.buf = Buffer.alloc(0)
    this.socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
    this.socket.on('data', (chunk) => this.#read(chunk))
    this.ready = new Promise((resolve) => this.socket.once('connect', resolve))
  }

  /** Commands sent in one tick leave in one write (`cork` until the tick ends). */
  send(args) {
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      process.nextTick(() => {
        this.corked = false
        this.socket.uncork()
      })
    }
    return new Promise((resolve) => {
      this.waiting.push(resolve)
      this.socket.write(encode(args))
    })
  }

  /** Replies of the kinds these commands get: +, -, :, $ (null or a bulk string). */
  #read(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk
    let at = 0
    for (;;) {
      const eol = this.buf.indexOf('\r\n', at)
      if (eol < 0) break
      const type = this.buf[at]
      const line = this.buf.toString('latin1', at + 1, eol)
      let reply
      let next = eol + 2
      if (type === 0x24 /* $ */) {
        const n = Number(line)
        if (n >= 0) {
          if (this.buf.length < next + n + 2) break
          reply = this.buf.toString('latin1', next, next + n)
          next += n + 2
        } else reply = null
      } else reply = type === 0x3a /* : */ ? Number(line) : type === 0x2d /* - */ ? new Error(line) : line
      at = next
      this.waiting.shift()(reply)
    }
    this.buf = this.buf.subarray(at)
  }

  close() {
    this.socket.destroy()
  }
}

/** Sends `args(i)` to every node; resolves with the number of `ok` replies once `need` came. */
export function quorum(nodes, args, ok, need) {
  return new Promise((resolve) => {
    let yes = 0
    let answered = 0
    let done = false
    nodes.forEach((node, i) =>
      node.send(args(i)).then((reply) => {
        answered += 1
        if (ok(reply)) yes += 1
        if (!done && (yes >= need || answered === nodes.length)) {
          done = true
          resolve(yes)
        }
      }),
    )
  })
}

/** p50 of one compare-and-set script on every node, done at the quorum-th reply (raw sockets). */
export async function roundTrip(ports, ops) {
  const nodes = ports.map((p) => new Raw(p))
  await Promise.all(nodes.map((n) => n.ready))
  await Promise.all(nodes.map((n) => n.send(['SCRIPT', 'LOAD', MOVE])))
  const q = Math.floor(nodes.length / 2) + 1
  const lat = []
  for (let i = 0; i < ops; i++) {
    const t = performance.now()
    await quorum(nodes, () => ['EVALSHA', sha(MOVE), '1', 'floor:rtt', 'a', 'b', '1000'], () => true, q)
    lat.push(performance.now() - t)
  }
  nodes.forEach((n) => n.close())
  lat.sort((x, y) => x - y)
  return lat[lat.length >> 1]
}

