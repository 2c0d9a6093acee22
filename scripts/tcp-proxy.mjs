// TCP proxies in front of a redis-server, for fault tests. `TcpProxy` passes traffic
// through, or delays it, blackholes it (accepts and forwards nothing), resets
// connections, or answers garbage instead of the server's replies. `ProxyBase` is what
// every proxy shares (the chaos run's order-keeping proxy, scripts/chaos-proxy.mjs, too).
import net from 'node:net'

/** Listens, connects each client to the target, and tracks every socket; `relay` moves the bytes. */
export class ProxyBase {
  constructor(targetPort, targetHost = '127.0.0.1') {
    this.targetPort = targetPort
    this.targetHost = targetHost
    this.mode = 'pass'
    this.delayMs = 0
    this.sockets = new Set()
    this.server = net.createServer((client) => this.#accept(client))
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = this.server.address().port
    return this
  }

  #track(socket) {
    this.sockets.add(socket)
    socket.on('close', () => this.sockets.delete(socket))
    socket.on('error', () => {})
  }

  #accept(client) {
    this.#track(client)
    if (this.mode === 'reset') return client.resetAndDestroy()
    const upstream = net.connect(this.targetPort, this.targetHost)
    this.#track(upstream)
    this.relay(client, upstream)
  }

  /** Moves the bytes between `client` and `upstream` (each proxy its own way). */
  relay(_client, _upstream) {
    throw new Error('a proxy relays its own way')
  }

  /** Drops every open connection (a network flap). */
  reset() {
    for (const s of this.sockets) s.destroy()
  }

  async stop() {
    this.reset()
    await new Promise((resolve) => this.server.close(resolve))
  }
}

export class TcpProxy extends ProxyBase {
  /** The connections open now that carry nothing more (see `silence`). */
  #silenced = new WeakSet()
  /** The connections open now whose replies lag (see `hold`), by socket: by how long. */
  #held = new WeakMap()

  /**
   * The replies on the connections open now lag `ms` (a slow link); new ones pass. `only`:
   * some of the open sockets (`[...proxy.sockets]` is in the order they opened).
   */
  hold(ms, only = this.sockets) {
    for (const s of only) this.#held.set(s, ms)
  }

  /**
   * The connections open now go silent for good, with no FIN or RST (a crashed host, a
   * lost NAT entry); new ones pass as the mode says.
   */
  silence() {
    for (const s of this.sockets) this.#silenced.add(s)
  }

  /** mode: 'pass' | 'delay' | 'blackhole' | 'reset' | 'garbage' */
  relay(client, upstream) {
    const pass = (from, to, replies) => {
      // The bytes of one direction keep their order, as TCP's do: a chunk sent once the
      // delay is off (or shorter) waits for those still delayed (found by a soak: they
      // overtook them, and a client read another command's reply).
      const queue = []
      let timer = null
      const flush = () => {
        timer = null
        while (queue.length > 0 && queue[0].at <= Date.now()) queue.shift().deliver()
        if (queue.length > 0) timer = setTimeout(flush, queue[0].at - Date.now())
      }
      const send = (delayMs, deliver) => {
        if (delayMs <= 0 && queue.length === 0) return deliver()
        const at = Math.max(Date.now() + delayMs, queue.length > 0 ? queue[queue.length - 1].at : 0)
        queue.push({ at, deliver })
        if (timer === null) timer = setTimeout(flush, at - Date.now())
      }
      from.on('data', (chunk) => {
        if (this.mode === 'blackhole' || this.#silenced.has(from)) return
        if (this.mode === 'reset') {
          client.resetAndDestroy()
          upstream.destroy()
          return
        }
        const data = replies && this.mode === 'garbage' ? Buffer.from('?garbage\r\n$-7\r\n*x\r\n') : chunk
        const held = replies ? this.#held.get(from) : undefined
        send(held ?? (this.mode === 'delay' ? this.delayMs : 0), () => to.writable && to.write(data))
      })
      // A close follows the bytes before it (delayed as they are).
      from.on('close', () => send(this.mode === 'delay' ? this.delayMs : 0, () => to.destroy()))
    }
    pass(client, upstream, false)
    pass(upstream, client, true)
  }
}
