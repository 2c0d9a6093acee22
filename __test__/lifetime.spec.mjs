// No leak of V8 references: idle Redlocks and clients that nobody refers to any more are
// garbage collected, even without quit(); busy ones are kept until their promises settle.
import test from 'ava'

import { lib, resource, sleep, useServers } from './helpers.mjs'

const { Redlock, Redis } = lib
const servers = useServers(test, 1)

async function collect(registry, count, expected) {
  for (let i = 0; i < 50 && count() < expected; i++) {
    globalThis.gc()
    await sleep(20)
  }
  return count()
}

test('forgotten Redlocks and clients are garbage collected', async (t) => {
  let collected = 0
  const registry = new FinalizationRegistry(() => (collected += 1))
  // In a function of its own, so that no frame of this test still refers to the last ones.
  const useAndForget = async () => {
    const client = new Redis(servers[0].port)
    const redlock = new Redlock([client], { retryCount: 0 })
    const lock = await redlock.acquire([resource(t)], 1_000)
    await lock.release()
    registry.register(redlock, 'redlock')
    registry.register(client, 'client')
  }
  for (let i = 0; i < 50; i++) await useAndForget()
  await sleep(50)
  t.is(await collect(registry, () => collected, 100), 100)
})

test('a Redlock with an operation in flight is kept until it settles', async (t) => {
  const key = resource(t)
  const holder = new Redlock([new Redis(servers[0].port)])
  const held = await holder.acquire([key], 5_000)
  let collected = 0
  const registry = new FinalizationRegistry(() => (collected += 1))
  const pending = (() => {
    const waiter = new Redlock([new Redis(servers[0].port)], { retryCount: 40, retryDelay: 50 })
    registry.register(waiter, 'waiter')
    return waiter.acquire([key], 1_000).then((l) => l.release())
  })()
  for (let i = 0; i < 5; i++) {
    globalThis.gc()
    await sleep(10)
  }
  t.is(collected, 0, 'still waiting: not collected')
  await held.release()
  await pending
  await holder.quit()
  t.is(await collect(registry, () => collected, 1), 1)
})
