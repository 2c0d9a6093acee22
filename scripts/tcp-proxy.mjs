// A TCP proxy in front of a redis-server, for fault tests: it passes traffic through, or
// delays it, blackholes it (accepts and forwards nothing), resets connections, or answers
// garbage instead of the server's replies.
import net from 'node:net'

export class TcpProxy {
  constructor(targetPort, targetHost = '127.0.0.1') {
    this.targetPort = targetPort
    this.targetHost = targetHost
    /** 'pass' | 'delay' | 'blackhole' | 'reset' | 'garbage' */
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
    const relay = (from, to, replies) => {
      from.on('data', (chunk) => {
        if (this.mode === 'blackhole') return
        if (this.mode === 'reset') {
          client.resetAndDestroy()
          upstream.destroy()
          return
        }
        const data = replies && this.mode === 'garbage' ? Buffer.from('?garbage\r\n$-7\r\n*x\r\n') : chunk
        if (this.mode === 'delay') setTimeout(() => to.writable && to.write(data), this.delayMs)
        else if (to.writable) to.write(data)
      })
      from.on('close', () => to.destroy())
    }
    relay(client, upstream, false)
    relay(upstream, client, true)
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
