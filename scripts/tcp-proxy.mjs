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

  /** The replies on the connections open now lag `ms` (a slow link); new ones pass. */
  hold(ms) {
    for (const s of this.sockets) this.#held.set(s, ms)
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
      from.on('data', (chunk) => {
        if (this.mode === 'blackhole' || this.#silenced.has(from)) return
        if (this.mode === 'reset') {
          client.resetAndDestroy()
          upstream.destroy()
          return
        }
        const data = replies && this.mode === 'garbage' ? Buffer.from('?garbage\r\n$-7\r\n*x\r\n') : chunk
        const held = replies ? this.#held.get(from) : undefined
        if (held !== undefined) setTimeout(() => to.writable && to.write(data), held)
        else if (this.mode === 'delay') setTimeout(() => to.writable && to.write(data), this.delayMs)
        else if (to.writable) to.write(data)
      })
      // A close follows the bytes before it (delayed as they are).
      from.on('close', () => (this.mode === 'delay' ? setTimeout(() => to.destroy(), this.delayMs) : to.destroy()))
    }
    pass(client, upstream, false)
    pass(upstream, client, true)
  }
}
