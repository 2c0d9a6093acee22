// Fencing tokens: a store that refuses writes carrying an older fence than it has seen,
// so a holder paused past its lock's expiry cannot overwrite a newer holder's work.
import { Redis, Redlock } from 'redlock-rs'

/** A toy store with the fencing check a real one would do in its UPDATE ... WHERE. */
export class FencedStore {
  private fence = -1n
  value: string | undefined

  write(value: string, fence: bigint): boolean {
    if (fence <= this.fence) return false // an older (or replayed) holder: refused
    this.fence = fence
    this.value = value
    return true
  }
}

export async function main(ports: number[], store: FencedStore): Promise<bigint[]> {
  const redlock = new Redlock(ports.map((p) => new Redis(p)), { fencing: true })
  const fences: bigint[] = []
  for (const value of ['first', 'second']) {
    const lock = await redlock.acquire(['account:7'], 5_000)
    if (lock.fence === undefined) throw new Error('fencing is on: every lock has a fence')
    store.write(value, lock.fence)
    fences.push(lock.fence)
    await lock.release()
  }
  await redlock.quit()
  return fences
}
