// The TCP proxy of the chaos run (scripts/chaos.mjs), in front of each lock node.
import { ProxyBase } from './tcp-proxy.mjs'

/**
 * A TCP proxy in front of a lock node whose faults behave like a network's: bytes are
 * never dropped or reordered within a connection (TCP retransmits), only held back.
 * 'pass'; 'delay' (every chunk held for delayMs); 'blackhole' (nothing delivered until
 * the mode changes, then everything in order, as after a healed partition; new
 * connections get no answer); 'reset' (connections reset, new ones refused).
 */
export class ChaosProxy extends ProxyBase {
  constructor(targetPort) {
    super(targetPort)
    this.pipes = new Set()
  }

  relay(client, upstream) {
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
}
