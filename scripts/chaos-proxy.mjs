// The TCP proxy of the chaos run (scripts/chaos.mjs), in front of each lock node.
import net from 'node:net'

/**
 * A TCP proxy in front of a lock node whose faults behave like a network's: bytes are
 * never dropped or reordered within a connection (TCP retransmits), only held back.
 * 'pass'; 'delay' (every chunk held for delayMs); 'blackhole' (nothing delivered until
 * the mode changes, then everything in order, as after a healed partition; new
 * connections get no answer); 'reset' (connections reset, new ones refused).
 */
export class ChaosProxy {
  constructor(targetPort) {
    this.targetPort = targetPort
    this.mode = 'pass'
    this.delayMs = 0
    this.pipes = new Set()
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
    const upstream = net.connect(this.targetPort, '127.0.0.1')
    this.#track(upstream)
    const kill = () => {
      if (!client.destroyed) client.resetAndDestroy()
      upstream.destroy()
    }
    this.#pipe(client, upstream, kill)
    this.#pipe(upstream, client, kill)
  }

  #pipe(from, to, kill) {
    const pipe = { queue: [], timer: null }
    const pump = () => {
      clearTimeout(pipe.timer)
      pipe.timer = null
      while (pipe.queue.length > 0) {
        if (this.mode === 'blackhole') return
        const head = pipe.queue[0]
        const wait = head.due - Date.now()
        if (wait > 0) {
          pipe.timer = setTimeout(pump, wait)
          return
        }
        pipe.queue.shift()
        if (to.writable) to.write(head.chunk)
      }
    }
    pipe.pump = pump
    pipe.kill = kill
    this.pipes.add(pipe)
    from.on('data', (chunk) => {
      if (this.mode === 'reset') return kill()
      pipe.queue.push({ chunk, due: this.mode === 'delay' ? Date.now() + this.delayMs : 0 })
      if (pipe.timer === null) pump()
    })
    from.on('close', () => {
      this.pipes.delete(pipe)
      clearTimeout(pipe.timer)
      to.destroy()
    })
  }

  setMode(mode, delayMs = 0) {
    this.mode = mode
    this.delayMs = delayMs
    if (mode === 'reset') for (const p of this.pipes) p.kill()
    else for (const p of this.pipes) p.pump()
  }

  async stop() {
    for (const s of this.sockets) s.destroy()
    await new Promise((resolve) => this.server.close(resolve))
  }
}
