// `await using` (TypeScript 5.2+, explicit resource management): the lock is released when
// the block ends, whatever happens in it. Runs on Node.js 20 when compiled with target
// ES2022 and lib esnext.disposable. No redis-server needed: a MemoryStore is the node.
import { MemoryStore, Redlock } from 'redlock-rs'

export async function main(): Promise<{ inside: string[]; after: string[] }> {
  const store = new MemoryStore()
  const redlock = new Redlock([store])
  let inside: string[] = []
  {
    await using lock = await redlock.acquire(['orders:42'], 5_000)
    inside = store.keys() // held here
    void lock
  }
  const after = store.keys() // released by the end of the block
  await redlock.quit()
  return { inside, after }
}
