'use strict'
// The thin JavaScript layer: class shapes that JavaScript idioms demand (EventEmitter,
// rest parameters, util.inspect). Every decision is made in Rust (binding.js).

const { EventEmitter } = require('node:events')
const { inspect } = require('node:util')
const native = require('./binding.js')

const { NativeClient, NativeRedlock } = native

/** What both client classes add to the native client. */
class ClientBase extends NativeClient {
  /** `DEL key [key ...]`; arrays are flattened one level, as ioredis does. */
  del(...keys) {
    return this.delKeys(keys.flat())
  }

  /** Any Redis command, like ioredis' `call`. */
  call(command, ...args) {
    return this.callCommand(command, args.flat())
  }

  [inspect.custom]() {
    return this.toString()
  }
}

/** A client shaped like ioredis' `Redis`. */
class Redis extends ClientBase {
  /**
   * `new Redis()`, `new Redis(options)`, `new Redis(url, options?)`,
   * `new Redis(port, host?, options?)`.
   */
  constructor(a0, a1, a2) {
    super('ioredis', a0, a1, a2)
  }
}

/** A client shaped like node-redis' `createClient({ url })`. */
class RedisJsClient extends ClientBase {
  constructor(options) {
    super('node-redis', options)
  }
}

function toClientList(clients) {
  if (clients == null || typeof clients[Symbol.iterator] !== 'function' || typeof clients === 'string') {
    throw new TypeError('clients must be an iterable of Redis clients.')
  }
  return Array.from(clients)
}

class Redlock extends EventEmitter {
  #native

  constructor(clients, settings) {
    super()
    const list = toClientList(clients)
    this.#native = new NativeRedlock(list, settings)
    Object.defineProperty(this, 'clients', { value: Object.freeze(list), enumerable: true })
    Object.defineProperty(this, 'settings', { value: Object.freeze(this.#native.settings), enumerable: true })
  }

  /** `true`: acquired; `false`: another owner holds it; `null`: too many instances failed. */
  async acquireLock(resource, ttl) {
    return this.#native.acquireLock(resource, ttl)
  }

  /** Releases this instance's lock on `resource` when `lockValue` is `true`. */
  async releaseLock(resource, lockValue) {
    return this.#native.releaseLock(resource, lockValue)
  }

  /** Closes the connections of this instance's clients. */
  async quit() {
    return this.#native.quit()
  }
}

module.exports = Redlock
module.exports.default = Redlock
module.exports.Redlock = Redlock
module.exports.Redis = Redis
module.exports.RedisJsClient = RedisJsClient
