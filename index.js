'use strict'
// The thin JavaScript layer: what JavaScript idioms demand (EventEmitter, Error classes,
// rest parameters, util.inspect, AbortSignal in using(), reading ioredis / node-redis
// client options). Every lock decision is made in Rust (binding.js).
//
// This file only re-exports; the code is in lib/, by concern:
// - native.js: loading the addon, and decoding its completion tuples;
// - abort.js: one 'abort' listener per AbortSignal, whatever waits for it;
// - clients.js: Redis, Cluster, MemoryStore, RedisJsClient, and reading JS clients' options;
// - errors.js: ResourceLockedError, ExecutionError, LockLostError;
// - attempts.js: the attempts of an operation (AttemptLog, ExecutionResult);
// - lock.js: Lock;
// - redlock.js: Redlock;
// - kinds.js: Semaphore, ReadWriteLock;
// - using.js: the automatic extension of `using()`;
// - diagnostics.js: the diagnostics_channel channels.

const { Redis, RedisJsClient, Cluster, MemoryStore } = require('./lib/clients.js')
const { ResourceLockedError, ExecutionError, LockLostError } = require('./lib/errors.js')
const { ReadWriteLock, Semaphore } = require('./lib/kinds.js')
const { Lock } = require('./lib/lock.js')
const { Redlock } = require('./lib/redlock.js')

module.exports = Redlock
module.exports.default = Redlock
module.exports.Redlock = Redlock
module.exports.Redis = Redis
module.exports.RedisJsClient = RedisJsClient
module.exports.Cluster = Cluster
module.exports.MemoryStore = MemoryStore
module.exports.Lock = Lock
module.exports.Semaphore = Semaphore
module.exports.ReadWriteLock = ReadWriteLock
module.exports.ResourceLockedError = ResourceLockedError
module.exports.ExecutionError = ExecutionError
module.exports.LockLostError = LockLostError
