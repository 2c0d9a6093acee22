// ESM entry: the same module as index.js (CommonJS), with named exports.
import redlock from './index.js'

export default redlock
export const { Redlock, Redis, RedisJsClient, Cluster, MemoryStore, Lock, Semaphore, ReadWriteLock, ResourceLockedError, ExecutionError, LockLostError } = redlock
