// The implementations compared, behind one small interface, each on its own clients:
//   open(ports, { ttl }) -> { acquire(key) -> handle, release(handle), close() }
// Each uses its library's default retry settings unless a scenario overrides them.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export const implementations = {
  'redlock-rs': async (ports, { retry } = {}) => {
    const { Redlock, Redis, ExecutionError } = require('../index.js')
    const redlock = new Redlock(
      ports.map((port) => new Redis({ port, host: '127.0.0.1' })),
      retry === 'none' ? { retryCount: 0 } : {},
    )
    return {
      acquire: (key, ttl) => redlock.acquire([key], ttl),
      release: (lock) => lock.release(),
      isContention: (e) => e instanceof ExecutionError,
      close: () => redlock.quit(),
    }
  },
  'node-redlock': async (ports, { retry } = {}) => {
    const Redlock = require('redlock').default
    const { ExecutionError } = require('redlock')
    const IORedis = require('ioredis')
    const clients = ports.map((port) => new IORedis({ port, host: '127.0.0.1' }))
    const redlock = new Redlock(clients, retry === 'none' ? { retryCount: 0 } : {})
    return {
      acquire: (key, ttl) => redlock.acquire([key], ttl),
      release: (lock) => lock.release(),
      isContention: (e) => e instanceof ExecutionError,
      close: () => Promise.all(clients.map((c) => c.quit())),
    }
  },
  'redlock-universal': async (ports, { retry } = {}) => {
    const { createRedlock, IoredisAdapter } = require('redlock-universal')
    const IORedis = require('ioredis')
    const clients = ports.map((port) => new IORedis({ port, host: '127.0.0.1' }))
    const adapters = clients.map((c) => new IoredisAdapter(c))
    return {
      acquire: async (key, ttl) => {
        const lock = createRedlock({ adapters, key, ttl, ...(retry === 'none' ? { retryAttempts: 0 } : {}) })
        return { lock, handle: await lock.acquire() }
      },
      release: ({ lock, handle }) => lock.release(handle),
      isContention: () => true,
      close: () => Promise.all(clients.map((c) => c.quit())),
    }
  },
  'redis-semaphore': async (ports, { retry } = {}) => {
    const { RedlockMutex } = require('redis-semaphore')
    const IORedis = require('ioredis')
    const clients = ports.map((port) => new IORedis({ port, host: '127.0.0.1' }))
    return {
      acquire: async (key, ttl) => {
        const mutex = new RedlockMutex(clients, key, {
          lockTimeout: ttl,
          refreshInterval: 0,
          ...(retry === 'none' ? { acquireAttemptsLimit: 1 } : {}),
        })
        await mutex.acquire()
        return mutex
      },
      release: (mutex) => mutex.release(),
      isContention: () => true,
      close: () => Promise.all(clients.map((c) => c.quit())),
    }
  },
}

// Semaphores compared (scenario "semaphore"): `open(ports)` -> { acquire(key, permits, ttl), release(handle), close() }.
export const semaphores = {
  'redlock-rs': async (ports) => {
    const { Redlock, Redis } = require('../index.js')
    const redlock = new Redlock(ports.map((port) => new Redis({ port, host: '127.0.0.1' })), { retryCount: -1, retryDelay: 50 })
    return {
      acquire: (key, permits, ttl) => redlock.semaphore(key, permits).acquire(ttl),
      release: (lock) => lock.release(),
      close: () => redlock.quit(),
    }
  },
  'redis-semaphore': async (ports) => {
    const { RedlockSemaphore } = require('redis-semaphore')
    const IORedis = require('ioredis')
    const clients = ports.map((port) => new IORedis({ port, host: '127.0.0.1' }))
    return {
      acquire: async (key, permits, ttl) => {
        const sem = new RedlockSemaphore(clients, key, permits, { lockTimeout: ttl, refreshInterval: 0, acquireTimeout: 60_000, retryInterval: 50 })
        await sem.acquire()
        return sem
      },
      release: (sem) => sem.release(),
      close: () => Promise.all(clients.map((c) => c.quit())),
    }
  },
}

