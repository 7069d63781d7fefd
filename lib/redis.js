'use strict'
// RedisAllocator: the allocator beyond one machine. Every operation is one call of the script in
// redis.lua, atomic on the server; this file checks arguments, keeps this handle's lease alive
// and tells its holder when the lease is lost. index.d.ts documents each call.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { EventEmitter } = require('node:events')
const { performance } = require('node:perf_hooks')
const { RespClient, MAX_TIMER_MS } = require('./resp.js')
const { codedError, invalidType, checkInteger, checkString, checkOptions, checkBoolean, brandCheck, constructOnly, noFreeNumber } = require('./checks.js')
const { checkPolicy } = require('./regions.js')

const SCRIPT = fs.readFileSync(path.join(__dirname, 'redis.lua'), 'utf8')
const SCRIPT_SHA = crypto.createHash('sha1').update(SCRIPT).digest('hex')

/**
 * The largest capacity: every call is one script, and Redis runs nothing else meanwhile, so one
 * search may scan at most a 2 MiB bitmap.
 */
const MAX_REDIS_CAPACITY = 2 ** 24
/** The most numbers one call takes or frees (allocateMany, blocks, freeMany), for the same reason. */
const MAX_REDIS_BATCH = 1024
const DEFAULT_LEASE_MS = 10_000
/** Shorter leases than this would be lost to an event loop busy for a moment. */
const MIN_LEASE_MS = 100
const MAX_LEASE_MS = 2 ** 31 - 1
const DEFAULT_TIMEOUT_MS = 5_000
/** How many times in a lease the handle renews it. */
const RENEWALS_PER_LEASE = 3
/**
 * The share of a lease the holder gives up early, so that it learns of the loss before the
 * server's clock ends the lease: covers clocks that run at rates 1% apart (NTP slews by at most
 * 0.05%). A step of the server's wall clock is not covered (README, "When Redis is involved").
 */
const DRIFT_MARGIN = 0.01
/**
 * A name is used inside a Redis Cluster hash tag, so it cannot hold braces; nor spaces, control
 * or format characters (zero-width, right-to-left overrides), which would print misleadingly.
 */
const NAME_PATTERN = /^[^{}\s\p{Cc}\p{Cf}]{1,200}$/u

const constructing = Symbol('numballoc redis')
/** The script's operations that write nothing (no replica has anything to confirm). */
const READS = new Set(['holder', 'count', 'bit', 'inspect'])
// The script's statuses (redis.lua); -1, no free number, is any other.
const STATUS_DONE = 0
const STATUS_LOST = -2
const STATUS_NOT_HELD = -3
const STATUS_GO_ON = -4

/** Whether `error` is a reply of the server (rather than a broken connection), whatever client sent it. */
function isReplyError(error) {
  for (let proto = Object.getPrototypeOf(error); proto !== null && proto !== Error.prototype; proto = Object.getPrototypeOf(proto)) {
    const name = proto.constructor?.name
    if (name === 'ReplyError' || name === 'ErrorReply') return true
  }
  return false
}

/** A server's error reply as a coded error; a connection's error as ERR_REDIS_UNAVAILABLE. */
function fromRedis(error) {
  if (typeof error?.code === 'string' && error.code.startsWith('ERR_')) return error
  const message = String(error?.message ?? error)
  const coded = (code, text) => {
    const out = codedError(Error, code, text)
    out.cause = error
    return out
  }
  if (!isReplyError(error)) return coded('ERR_REDIS_UNAVAILABLE', `cannot reach Redis: ${message}`)
  const detail = (prefix) => message.slice(message.indexOf(prefix) + prefix.length + 1)
  if (message.includes('NUMBALLOC_NOT_ALLOCATOR')) return coded('ERR_INCOMPATIBLE_REGION', detail('NUMBALLOC_NOT_ALLOCATOR'))
  if (message.includes('NUMBALLOC_GONE')) return coded('ERR_ALLOCATOR_GONE', detail('NUMBALLOC_GONE'))
  if (message.includes('NUMBALLOC_OLD_SERVER')) return coded('ERR_REDIS_VERSION', detail('NUMBALLOC_OLD_SERVER'))
  return coded('ERR_REDIS', `Redis refused: ${message}`)
}

/** What a call cut off by close() fails with, whatever cut it off (a command, the connection). */
function closedDuringCall() {
  return codedError(Error, 'ERR_REGION_CLOSED', 'the allocator was closed during the call')
}

/**
 * Resolves as `start()` does, or rejects with ERR_REDIS_TIMEOUT after `ms`. `start` may throw or
 * return a non-promise (a client that is not what it claims): that is the result, as if awaited.
 */
function within(start, ms) {
  // `call.expired` tells `start` its caller has been told of the timeout.
  const call = { expired: false }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => {
        call.expired = true
        reject(codedError(Error, 'ERR_REDIS_TIMEOUT', `Redis did not answer within ${ms} ms (the command may have run)`))
      },
      Math.min(ms, MAX_TIMER_MS),
    )
    // A late answer or failure of the losing side is dropped, never unhandled.
    Promise.resolve()
      .then(() => start(call))
      .then(resolve, reject)
      .finally(() => clearTimeout(timer))
  })
}

/**
 * What the allocator needs of a connection: `call(args)` sending one command, and `close()`.
 * `redis` is a URL (the connection is ours, and closed with the allocator), an ioredis client
 * or a node-redis client (the user's, left open).
 */
function connectionOf(redis, callTimeoutMs) {
  // Twice a call's bound: a call times out first, and a reply that comes after that still
  // reaches it (so that what it granted can be given back) unless the server is stuck for long.
  const timeoutMs = 2 * callTimeoutMs
  if (typeof redis === 'string') {
    const client = new RespClient(redis, timeoutMs)
    return { call: (args) => client.call(args), close: () => client.close() }
  }
  if (redis !== null && typeof redis === 'object') {
    // node-redis's Redis Cluster client: sendCommand(firstKey, isReadonly, args) routes by the key.
    if (typeof redis.sendCommand === 'function' && typeof redis.getSlotMaster === 'function') {
      const firstKey = (args) => (/^EVAL(SHA)?$/.test(args[0]) && Number(args[2]) > 0 ? String(args[3]) : undefined)
      return { call: (args) => within(() => redis.sendCommand(firstKey(args), false, args.map(String)), timeoutMs), close() {}, cluster: true }
    }
    // node-redis (v4 and later): sendCommand takes an array of strings.
    if (typeof redis.sendCommand === 'function' && 'isOpen' in redis) {
      return { call: (args) => within(() => redis.sendCommand(args.map(String)), timeoutMs), close() {} }
    }
    // ioredis, and its Cluster client (which routes a script by its first key): call(command, ...args).
    if (typeof redis.call === 'function' && typeof redis.status === 'string') {
      return { call: ([command, ...rest]) => within(() => redis.call(command, ...rest.map(String)), timeoutMs), close() {}, cluster: redis.isCluster === true }
    }
  }
  throw invalidType('options.redis', 'a redis:// URL, an ioredis client or a node-redis client', redis)
}

/** Runs the script once on `connection` over `keys` with ARGV `args`; errors come back coded. */
async function runScript(connection, keys, args) {
  let reply
  try {
    try {
      reply = await connection.call(['EVALSHA', SCRIPT_SHA, keys.length, ...keys, ...args])
    } catch (error) {
      if (!isReplyError(error) || !String(error.message).startsWith('NOSCRIPT')) throw error
      // A server that has not seen the script yet (or restarted): EVAL also caches it.
      reply = await connection.call(['EVAL', SCRIPT, keys.length, ...keys, ...args])
    }
  } catch (error) {
    throw fromRedis(error)
  }
  if (!Array.isArray(reply) || typeof reply[0] !== 'number') throw unexpected(reply)
  return reply
}

/** A reply the script cannot have sent: the client is not a Redis client, or not Redis's. */
function unexpected(reply) {
  return codedError(Error, 'ERR_REDIS', `unexpected reply from the Redis client: ${String(describeReply(reply)).slice(0, 80)}`)
}

function describeReply(reply) {
  try {
    return JSON.stringify(reply)
  } catch {
    return typeof reply
  }
}

/** `n`, or ERR_NO_FREE_NUMBER for null. */
function found(n) {
  if (n === null) throw noFreeNumber()
  return n
}

/** The pid and host of a holder, from what it registered ("pid host"). */
function holderInfo(info) {
  const text = typeof info === 'string' ? info : ''
  const space = text.indexOf(' ')
  return { pid: Number(space < 0 ? 0 : text.slice(0, space)) || 0, host: space < 0 ? '' : text.slice(space + 1) }
}

/** The keys of allocator `name`: one hash tag, so they share a Redis Cluster slot. */
function keysOf(name) {
  const tag = `numballoc:{${name}}:`
  return ['meta', 'bits', 'held', 'byowner', 'leases', 'owners'].map((part) => tag + part)
}

function checkName(name) {
  checkString('name', name)
  // Lone surrogates would all be sent as U+FFFD: two names, one allocator.
  if (!NAME_PATTERN.test(name) || !name.isWellFormed()) {
    throw codedError(
      Error,
      'ERR_INVALID_NAME',
      `A Redis allocator's name is 1-200 characters without braces, spaces or control characters. Received ${JSON.stringify(name).slice(0, 80)}`,
    )
  }
}

let ownLease
/** A number held from a RedisAllocator, with its fencing token and a signal aborted when its lease is lost. */
class RemoteLease {
  #value
  #token
  #signal
  #free
  #released = false

  static {
    ownLease = brandCheck((value) => #token in value, 'RemoteLease')
  }

  /**
   * `free()` gives this grant back (by its token; nothing if it is gone already) and stops the
   * signal from aborting.
   */
  constructor(token, value, fencing, signal, free) {
    if (token !== constructing) throw codedError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'use acquire() of a RedisAllocator to get a RemoteLease')
    this.#value = value
    this.#token = fencing
    this.#signal = signal
    this.#free = free
  }

  get value() {
    ownLease(this)
    return this.#value
  }

  get token() {
    ownLease(this)
    return this.#token
  }

  get signal() {
    ownLease(this)
    return this.#signal
  }

  get released() {
    ownLease(this)
    return this.#released
  }

  async release() {
    ownLease(this)
    if (this.#released) throw codedError(Error, 'ERR_LEASE_RELEASED', `the lease of ${this.#value} was already released`)
    this.#released = true
    // A lost lease has nothing left to give back: the server took the number already.
    if (this.#signal.aborted) return
    try {
      await this.#free()
    } catch (error) {
      this.#released = false
      throw error
    }
  }

  async [Symbol.asyncDispose]() {
    ownLease(this)
    if (!this.#released) await this.release()
  }

  get [Symbol.toStringTag]() {
    return 'RemoteLease'
  }
}

/**
 * One lease of a handle: the owner id the server knows it by, the monotonic time until which the
 * holder may count on it, and the signal controllers of the RemoteLeases held under it, by number.
 */
class Generation {
  constructor(owner) {
    this.owner = owner
    this.until = 0
    this.lost = false
    this.leases = new Map()
  }

  /** Forgets the RemoteLease of `value` if `controller` is still the one holding it. */
  forget(value, controller) {
    if (this.leases.get(value) === controller) this.leases.delete(value)
  }

  /** Aborts the signal of every RemoteLease still held under this lease. */
  end(error) {
    for (const controller of this.leases.values()) controller.abort(error)
    this.leases.clear()
  }
}

let ownAllocator
class RedisAllocator extends EventEmitter {
  #connection
  #keys
  #name
  #max
  #policy
  #leaseMs
  #replicas
  #timeoutMs
  #info
  #generation = null // the current lease, or null until one is registered (again)
  #registering = null // the promise of a registration under way
  #heartbeat = null
  #deadline = null
  // The promise of close() once it has begun: from then on no call starts, no lease is taken,
  // and no 'lost' is said (close ends the lease itself).
  #closing = null
  #closed = false // the connection is closed

  constructor(token, parts) {
    if (token !== constructing) throw codedError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'use RedisAllocator.open(name, options) to open a RedisAllocator')
    super()
    const { connection, name, max, policy, leaseMs, replicas, timeoutMs } = parts
    this.#connection = connection
    this.#keys = keysOf(name)
    this.#name = name
    this.#max = max
    this.#policy = policy
    this.#leaseMs = leaseMs
    this.#replicas = replicas
    this.#timeoutMs = timeoutMs
    this.#info = `${process.pid} ${os.hostname()}`
  }

  static {
    ownAllocator = brandCheck((value) => #keys in value, 'RedisAllocator')
  }

  /**
   * Opens allocator `name` on a Redis server, creating it if absent; resolves once this handle
   * holds a lease.
   */
  static async open(name, options) {
    checkName(name)
    const { redis, capacity, policy: asked, leaseMs = DEFAULT_LEASE_MS, timeoutMs = DEFAULT_TIMEOUT_MS, replicas = 0 } = checkOptions(options)
    checkInteger('options.capacity', capacity, 1, MAX_REDIS_CAPACITY)
    const policy = checkPolicy({ policy: asked })
    checkInteger('options.leaseMs', leaseMs, MIN_LEASE_MS, MAX_LEASE_MS)
    checkInteger('options.timeoutMs', timeoutMs, 2, MAX_LEASE_MS)
    checkInteger('options.replicas', replicas, 0, 1000)
    const connection = connectionOf(redis, timeoutMs)
    if (replicas > 0 && connection.cluster) {
      // WAIT names no key: a Cluster client would send it to any node.
      throw codedError(
        TypeError,
        'ERR_INVALID_ARG_VALUE',
        'The "options.replicas" needs a client of one server (a URL, or an ioredis or node-redis client), not a Redis Cluster client',
      )
    }
    const allocator = new RedisAllocator(constructing, { connection, name, max: capacity, policy, leaseMs, replicas, timeoutMs })
    try {
      // One bound for the whole open (connecting, loading the script, creating, a lease).
      await within(async () => {
        const [, existing, existingPolicy] = await allocator.#run(['open', capacity, policy])
        if (existing !== capacity) {
          throw codedError(Error, 'ERR_SIZE_MISMATCH', `the Redis allocator ${JSON.stringify(name)} exists with capacity ${existing}, not ${capacity}`)
        }
        if (existingPolicy !== policy) {
          throw codedError(Error, 'ERR_POLICY_MISMATCH', `the Redis allocator ${JSON.stringify(name)} exists with policy '${existingPolicy}', not '${policy}'`)
        }
        await allocator.#owner()
      }, timeoutMs)
    } catch (error) {
      await allocator.close()
      throw error
    }
    allocator.#heartbeat = setInterval(() => allocator.#renew(), Math.max(1, Math.floor(leaseMs / RENEWALS_PER_LEASE)))
    allocator.#heartbeat.unref()
    return allocator
  }

  /**
   * Runs the script once: `args` are ARGV (the operation first). With `replicas`, a write then
   * waits for that many replicas to have it, or fails with ERR_REDIS_REPLICAS (what it did on
   * the primary stands: the caller undoes what it must).
   */
  async #run(args, generation = this.#generation) {
    if (this.#closed) throw codedError(Error, 'ERR_REGION_CLOSED', 'the allocator is closed')
    let reply
    try {
      reply = await runScript(this.#connection, this.#keys, args)
    } catch (error) {
      throw this.#damaged(error, args[0], generation)
    }
    if (this.#replicas > 0 && !READS.has(args[0])) {
      // Half the timeout, so that WAIT's own answer arrives before the command times out.
      const acked = Number(await this.#command(['WAIT', this.#replicas, Math.floor(this.#timeoutMs / 2)]))
      if (acked < this.#replicas) {
        const error = codedError(
          Error,
          'ERR_REDIS_REPLICAS',
          `only ${acked} of ${this.#replicas} replicas confirmed the write within ${Math.floor(this.#timeoutMs / 2)} ms`,
        )
        error.reply = reply
        throw error
      }
    }
    return reply
  }

  /**
   * `error` as this handle reports it. Keys that are not an allocator's, met by any operation
   * but 'open', were an allocator's when this handle opened it: it is gone (deleted, replaced),
   * and so is `generation`, the lease the operation ran under, now rather than at the next
   * heartbeat.
   */
  #damaged(error, op, generation) {
    let out = error
    if (op !== 'open' && error.code === 'ERR_INCOMPATIBLE_REGION') {
      out = codedError(Error, 'ERR_ALLOCATOR_GONE', `the allocator's keys are gone or damaged: ${error.message}`)
      out.cause = error.cause
    }
    if (out.code === 'ERR_ALLOCATOR_GONE' && generation) this.#lose(generation, out.message)
    return out
  }

  /** Sends a plain command (a read of one key). */
  async #command(args) {
    if (this.#closed) throw codedError(Error, 'ERR_REGION_CLOSED', 'the allocator is closed')
    try {
      return await this.#connection.call(args)
    } catch (error) {
      throw fromRedis(error)
    }
  }

  /** The current lease, registering a new one if there is none (at first, or after a loss). */
  async #owner() {
    if (this.#closing) throw closedDuringCall()
    if (this.#generation !== null) return this.#generation
    if (this.#registering === null) {
      const generation = new Generation(crypto.randomBytes(12).toString('hex'))
      const sentAt = performance.now()
      this.#registering = this.#run(['register', generation.owner, this.#leaseMs, this.#info])
        .then(() => {
          this.#generation = generation
          this.#renewed(generation, sentAt)
          return generation
        })
        .finally(() => {
          this.#registering = null
        })
    }
    return this.#registering
  }

  /**
   * Runs allocation `args` as this handle's owner; once more under a new lease if the old one
   * ended. Only allocations: a free must not run under a lease later than the one its numbers
   * were taken under (#free).
   */
  async #owned(args) {
    for (let attempt = 0; ; attempt++) {
      let generation = await this.#owner()
      // Past its time here (a stalled event loop): lost, whatever the server still says.
      if (this.#check(generation)) generation = await this.#owner()
      const sentAt = performance.now()
      let reply
      try {
        reply = await this.#run(['alloc', generation.owner, this.#leaseMs, ...args], generation)
      } catch (error) {
        error.owner = generation.owner
        throw error
      }
      // What it granted, close() gives back (with release) or leaves to the lease.
      if (this.#closing) throw closedDuringCall()
      if (reply[0] !== STATUS_LOST) {
        this.#renewed(generation, sentAt)
        // The reply may be handled long after it came (a busy event loop): by then the lease
        // may be over here, and its numbers someone else's on the server.
        this.#check(generation)
      } else {
        this.#lose(generation, 'the server ended the lease: it was not renewed in time')
      }
      // A reply under a lease lost meanwhile is not this holder's to use: what it granted is
      // released with that lease.
      if (!generation.lost) return { reply, generation }
      if (attempt > 0) {
        throw codedError(
          Error,
          'ERR_LEASE_LOST',
          `this handle's lease on ${JSON.stringify(this.#name)} ended twice in a row before Redis answered: is a round trip longer than leaseMs, or this event loop or the server's clock stalling?`,
        )
      }
    }
  }

  /** Records that the server extended `generation`'s lease by a command sent at `sentAt`. */
  #renewed(generation, sentAt) {
    if (generation.lost) return
    const until = sentAt + this.#leaseMs * (1 - DRIFT_MARGIN)
    if (until <= generation.until) return
    generation.until = until
    if (this.#deadline === null) this.#armDeadline()
  }

  /**
   * A timer at the current lease's end. When it fires it checks the lease it was set for and
   * sets itself again for whichever lease is current then (the same one extended, or a new one
   * taken after the server ended it).
   */
  #armDeadline() {
    const generation = this.#generation
    if (generation === null || this.#closing) return
    const wait = Math.max(0, Math.ceil(generation.until - performance.now()))
    this.#deadline = setTimeout(() => {
      this.#deadline = null
      this.#check(generation)
      this.#armDeadline()
    }, wait)
    this.#deadline.unref()
  }

  /** Whether `generation` is lost, declaring it lost if its time is up. */
  #check(generation) {
    if (!generation.lost && performance.now() >= generation.until) this.#lose(generation, 'the lease was not renewed in time')
    return generation.lost
  }

  /** Declares `generation` lost: its signal aborts, 'lost' is emitted, its numbers are let go. */
  #lose(generation, reason) {
    // A closing handle's leases are ended by close().
    if (generation.lost || this.#closing) return
    generation.lost = true
    if (this.#generation === generation) this.#generation = null
    // The timer set for this lease would fire late for the next one: set it for that one.
    clearTimeout(this.#deadline)
    this.#deadline = null
    const error = codedError(Error, 'ERR_LEASE_LOST', `the lease of this handle on ${JSON.stringify(this.#name)} was lost: ${reason}`)
    generation.end(error)
    // Gone for good: give back what it held now rather than at the server's end of the lease
    // (nothing if the server released it already). A failure leaves that to the lease.
    this.#releaseAll(generation.owner).catch(() => {})
    // Not if a listener of the signals just closed the handle.
    if (!this.#closing) this.emit('lost', error)
  }

  /** Gives back every number `owner` holds, a chunk per round trip; resolves with how many. */
  async #releaseAll(owner) {
    let freed = 0
    for (;;) {
      const [, n, all] = await this.#run(['release', owner], null)
      freed += Number(n)
      if (all === 1) return freed
    }
  }

  /** `call()` within this handle's timeout: every public call answers or fails by then. */
  #bounded(call) {
    return within(call, this.#timeoutMs).catch((error) => {
      // Cut off by close() (its connection closed under it): the handle's error, not the link's.
      if (this.#closing && error.code !== 'ERR_REGION_CLOSED') throw closedDuringCall()
      throw error
    })
  }

  /** The heartbeat: extends the lease; a failure is left to the deadline. */
  async #renew() {
    const generation = this.#generation
    if (generation === null || this.#check(generation)) return
    const sentAt = performance.now()
    try {
      const [status] = await this.#run(['renew', generation.owner, this.#leaseMs], generation)
      if (status === STATUS_LOST) this.#lose(generation, 'the server ended the lease: it was not renewed in time')
      else this.#renewed(generation, sentAt)
    } catch {
      // Unreachable or slow: the deadline says when the lease is gone (#run ended it already if
      // the keys are gone).
    }
  }

  #ownAndOpen() {
    ownAllocator(this)
    if (this.#closing) throw codedError(Error, 'ERR_REGION_CLOSED', 'the allocator is closed')
  }

  get name() {
    ownAllocator(this)
    return this.#name
  }

  get max() {
    ownAllocator(this)
    return this.#max
  }

  get policy() {
    ownAllocator(this)
    return this.#policy
  }

  get leaseMs() {
    ownAllocator(this)
    return this.#leaseMs
  }

  /** A random starting point in [lo, hi] for the 'any' policy. */
  static #hint(lo, hi) {
    return lo + Math.floor(Math.random() * (hi - lo + 1))
  }

  /**
   * Allocates what `args` ask for: { status, token, numbers, generation } (the lease they are
   * held under; status STATUS_FULL when that is not free, STATUS_GO_ON with where a block search
   * goes on from in `numbers[0]`).
   */
  async #grant(args, call) {
    let owned
    try {
      owned = await this.#owned(args)
    } catch (error) {
      // Granted on the primary but not confirmed by the replicas asked for: not handed out, so
      // given back (at worst the lease ends, and with it the grant).
      if (error.code === 'ERR_REDIS_REPLICAS' && error.reply?.[0] === STATUS_DONE) {
        const numbers = error.reply.slice(2).map(Number)
        // Not awaited: the caller learns of the failure now; calls it makes next come after.
        this.#run(['free', error.owner, this.#leaseMs, ...numbers], null).catch(() => {})
      }
      throw error
    }
    const { reply, generation } = owned
    if (reply[0] === STATUS_GO_ON) return { status: STATUS_GO_ON, numbers: [Number(reply[1])] }
    if (reply[0] !== STATUS_DONE) return { status: reply[0] }
    const [token, numbers] = [Number(reply[1]), reply.slice(2).map(Number)]
    if (call.expired) {
      // The caller was told ERR_REDIS_TIMEOUT: nobody will free these, so they go back now.
      const free = numbers.length === 1 ? ['grant', numbers[0], token] : numbers
      this.#run(['free', generation.owner, this.#leaseMs, ...free], generation).catch(() => {})
      throw codedError(Error, 'ERR_REDIS_TIMEOUT', 'Redis answered after the call had timed out')
    }
    return { status: STATUS_DONE, token, numbers, generation }
  }

  /** The one number `args` ask for, or null. */
  async #one(args, call) {
    const { status, numbers } = await this.#grant(args, call)
    return status === STATUS_DONE ? numbers[0] : null
  }

  async tryAllocate() {
    this.#ownAndOpen()
    return this.#bounded((call) => this.#one(['one', RedisAllocator.#hint(0, this.#max - 1)], call))
  }

  async allocate() {
    ownAllocator(this)
    return found(await this.tryAllocate())
  }

  async acquire() {
    this.#ownAndOpen()
    return this.#bounded(async (call) => {
      const { status, numbers, token, generation } = await this.#grant(['one', RedisAllocator.#hint(0, this.#max - 1)], call)
      if (status !== STATUS_DONE) throw noFreeNumber()
      // close() began after the grant came: its lease is ended (or released) by close(), and
      // a signal made now would never abort.
      if (this.#closing) throw closedDuringCall()
      const controller = new AbortController()
      guardSignal(controller.signal, () => this.#check(generation))
      if (generation.lost) controller.abort(codedError(Error, 'ERR_LEASE_LOST', `the lease of this handle on ${JSON.stringify(this.#name)} was lost`))
      else generation.leases.set(numbers[0], controller)
      return new RemoteLease(constructing, numbers[0], token, controller.signal, () =>
        this.#bounded(async () => {
          try {
            await this.#free(generation, [numbers[0], token], 'grant')
          } catch (error) {
            // The grant is gone: freed by an earlier attempt whose answer timed out, or its
            // lease lost. Released either way: its signal must not abort later.
            if (error.code !== 'ERR_NOT_ALLOCATED') throw error
          }
          generation.forget(numbers[0], controller)
        }),
      )
    })
  }

  async tryAllocateInRange(min, max) {
    this.#ownAndOpen()
    checkInteger('min', min, 0, this.#max - 1)
    checkInteger('max', max, min, this.#max - 1)
    return this.#bounded((call) => this.#one(['range', min, max, RedisAllocator.#hint(min, max)], call))
  }

  async allocateInRange(min, max) {
    ownAllocator(this)
    return found(await this.tryAllocateInRange(min, max))
  }

  async tryAllocateBlock(count, align = 1) {
    this.#ownAndOpen()
    checkInteger('count', count, 1, Math.min(this.#max, MAX_REDIS_BATCH))
    checkInteger('align', align, 1, Number.MAX_SAFE_INTEGER)
    return this.#bounded(async (call) => {
      // A search Redis cut short (a fragmented bitmap) goes on where it stopped, a script each,
      // until the caller has been told it timed out.
      for (let from = 0; ;) {
        const { status, numbers } = await this.#grant(['block', count, align, from], call)
        if (status === STATUS_DONE) return numbers[0]
        if (status !== STATUS_GO_ON || call.expired) return null
        from = numbers[0]
      }
    })
  }

  async allocateBlock(count, align = 1) {
    ownAllocator(this)
    return found(await this.tryAllocateBlock(count, align))
  }

  async freeBlock(first, count) {
    this.#ownAndOpen()
    checkInteger('first', first, 0, this.#max - 1)
    checkInteger('count', count, 1, Math.min(this.#max - first, MAX_REDIS_BATCH))
    const [generation, list] = [this.#generation, Array.from({ length: count }, (_, i) => first + i)]
    return this.#bounded(() => this.#free(generation, list))
  }

  async allocateMany(n) {
    this.#ownAndOpen()
    checkInteger('n', n, 0, Math.min(this.#max, MAX_REDIS_BATCH))
    return this.#bounded(async (call) => {
      if (n === 0) return []
      const { status, numbers } = await this.#grant(['many', n, RedisAllocator.#hint(0, this.#max - 1)], call)
      if (status !== STATUS_DONE) throw noFreeNumber()
      return numbers
    })
  }

  async free(n) {
    this.#ownAndOpen()
    checkInteger('n', n, 0, this.#max - 1)
    const generation = this.#generation
    return this.#bounded(() => this.#free(generation, [n]))
  }

  async freeMany(numbers) {
    this.#ownAndOpen()
    if (numbers === null || typeof numbers !== 'object') throw invalidType('numbers', 'an array of numbers', numbers)
    // Read once: an object whose length or items change between reads gets what it said first.
    const count = numbers.length
    if (typeof count !== 'number') throw invalidType('numbers', 'an array of numbers', numbers)
    checkInteger('numbers.length', count, 0, Math.min(this.#max, MAX_REDIS_BATCH))
    const list = new Array(count)
    for (let i = 0; i < count; i++) {
      const n = numbers[i]
      checkInteger(`numbers[${i}]`, n, 0, this.#max - 1)
      list[i] = n
    }
    const generation = this.#generation
    return this.#bounded(async () => {
      if (count > 0) await this.#free(generation, list)
    })
  }

  /**
   * Frees `list`, all or none (or, `how` 'grant', the one number of `[n, token]` under that
   * grant only) under `generation`, the lease current when the caller asked: never under a
   * later one, which may have been given the same number since. ERR_NOT_ALLOCATED names the
   * first this handle does not hold, or the first of all when `generation` is lost (or null:
   * lost, and no other taken yet).
   */
  async #free(generation, list, how = 'numbers') {
    const notHeld = (n, why) => codedError(Error, 'ERR_NOT_ALLOCATED', `${n} is not held by this allocator (${why})`)
    const lost = "the lease it was held under was lost: it may be someone else's by now, so it is not freed from here"
    if (generation === null || this.#check(generation)) throw notHeld(list[0], lost)
    // A plain free of a number a RemoteLease holds would leave that lease's signal live on a
    // number anyone may be given: it is most likely the same number of a lease lost before,
    // which this handle was given again since.
    const leased = how === 'grant' ? undefined : list.find((n) => generation.leases.has(n))
    if (leased !== undefined) throw notHeld(leased, 'this handle holds it as a RemoteLease: its release() gives it back')
    const sentAt = performance.now()
    const [status, index] = await this.#run(['free', generation.owner, this.#leaseMs, ...(how === 'grant' ? ['grant', ...list] : list)], generation)
    // Cut off by close(), as every call in flight is (whether it ran or not).
    if (this.#closing) throw closedDuringCall()
    if (status === STATUS_LOST) {
      this.#lose(generation, 'the server ended the lease: it was not renewed in time')
      throw notHeld(list[0], lost)
    }
    // Answered after the lease ended here (a stalled event loop): it ran while the server still
    // counted the lease, so what it freed was this lease's, and nothing is sent again.
    this.#renewed(generation, sentAt)
    if (status === STATUS_NOT_HELD) throw notHeld(list[index - 1], 'not allocated, held by another, or its lease was lost')
  }

  async isAllocated(n) {
    this.#ownAndOpen()
    checkInteger('n', n, 0, this.#max - 1)
    return this.#bounded(async () => (await this.#run(['bit', n]))[1] === 1)
  }

  async count() {
    this.#ownAndOpen()
    return this.#bounded(async () => Number((await this.#run(['count']))[1]))
  }

  async holderOf(n) {
    this.#ownAndOpen()
    checkInteger('n', n, 0, this.#max - 1)
    return this.#bounded(async () => {
      const reply = await this.#run(['holder', n])
      if (reply.length === 1) return null
      const [, owner, token, info, expiresAt] = reply
      return { owner, ...holderInfo(info), expiresAt: Number(expiresAt), token: Number(token) }
    })
  }

  async reclaim() {
    this.#ownAndOpen()
    return this.#bounded(async (call) => {
      // A chunk of numbers per script, until no ended lease is left or the caller has been told
      // it timed out.
      let freed = 0
      for (;;) {
        const [, n, more] = await this.#run(['reclaim'])
        freed += Number(n)
        if (more !== 1 || call.expired) return freed
      }
    })
  }

  async close(options) {
    ownAllocator(this)
    const { release = false } = checkOptions(options)
    checkBoolean('options.release', release)
    if (this.#closing) {
      // Again (from a lease's abort listener, say): done when the first is, whatever its outcome,
      // which the first call reports.
      return this.#closing.then(
        () => {},
        () => {},
      )
    }
    this.#closing = this.#close(release)
    return this.#closing
  }

  async #close(release) {
    // Yields first: by the time anything below runs (the signals' abort listeners among it),
    // close() has stored this promise, and a close() called from them waits for it.
    await null
    clearInterval(this.#heartbeat)
    clearTimeout(this.#deadline)
    this.#deadline = null
    let generation = this.#generation
    try {
      // Without release, the numbers stay held until the lease ends, leaseMs after its last
      // renewal. Calls in flight were sent before the release on the same connection, so it
      // gives back what they were granted too. A lease being registered right now is given
      // back too, once registered: both within the one bound of the call.
      if (release) {
        await within(async () => {
          generation ??= (await this.#registering?.catch(() => null)) ?? null
          if (generation !== null) await this.#releaseAll(generation.owner)
        }, this.#timeoutMs)
      }
    } finally {
      this.#closed = true
      this.#connection.close()
      // Nothing renews the lease any more: its holders stop counting on it now.
      generation?.end(codedError(Error, 'ERR_LEASE_LOST', `the allocator ${JSON.stringify(this.#name)} was closed`))
    }
  }

  async [Symbol.asyncDispose]() {
    ownAllocator(this)
    await this.close()
  }

  get [Symbol.toStringTag]() {
    return 'RedisAllocator'
  }
}

/**
 * Makes `signal.aborted` and `signal.throwIfAborted()` ask `check()` first, so a holder that
 * reads them learns of a lost lease at once, even when its event loop was stopped past the
 * lease's end and the timer that aborts the signal has not run yet.
 */
function guardSignal(signal, check) {
  const aborted = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted').get
  Object.defineProperty(signal, 'aborted', {
    get() {
      check()
      return aborted.call(signal)
    },
  })
  Object.defineProperty(signal, 'throwIfAborted', {
    value() {
      check()
      AbortSignal.prototype.throwIfAborted.call(signal)
    },
  })
}

/** Checks the options of the functions that read or repair an allocator without opening it. */
function serverOptions(options) {
  const { redis, timeoutMs = DEFAULT_TIMEOUT_MS, ...rest } = checkOptions(options)
  checkInteger('options.timeoutMs', timeoutMs, 2, MAX_LEASE_MS)
  // connectionOf bounds each round trip by twice what it is given.
  return { connection: connectionOf(redis, timeoutMs / 2), timeoutMs, rest }
}

/**
 * Runs `work(call)` within `timeoutMs` as a whole, however many round trips it takes (a server
 * that always says there is more would keep it going forever), and closes `connection` after.
 * `call.expired` tells `work` to stop asking.
 */
async function withinWhole(connection, timeoutMs, work) {
  try {
    return await within(work, timeoutMs)
  } finally {
    connection.close()
  }
}

/** Runs `args` on allocator `name` once; a missing allocator is ENOENT. The caller closes `connection`. */
async function onAllocator(name, connection, args) {
  try {
    return await runScript(connection, keysOf(name), args)
  } catch (error) {
    if (error.code !== 'ERR_ALLOCATOR_GONE') throw error
    const missing = codedError(Error, 'ENOENT', `no Redis allocator named ${JSON.stringify(name)}`)
    missing.cause = error
    throw missing
  }
}

async function inspectRedis(name, options) {
  checkName(name)
  const { connection, timeoutMs, rest } = serverOptions(options)
  const { cells = 64 } = checkOptions(rest)
  try {
    // A BITCOUNT per cell in one script: 4,096 keep it to a few milliseconds at 2^24 numbers.
    checkInteger('options.cells', cells, 1, 4096)
  } catch (error) {
    connection.close()
    throw error
  }
  const reply = await withinWhole(connection, timeoutMs, () => onAllocator(name, connection, ['inspect', cells]))
  const [, capacity, now, policy, token, inUse, cellSize, counts, list] = reply
  const holders = []
  for (let i = 0; i < list.length; i += 4) {
    const [owner, expiresAt, info, count] = list.slice(i, i + 4)
    holders.push({
      owner,
      ...holderInfo(info),
      expiresAt: Number(expiresAt),
      alive: Number(expiresAt) > Number(now),
      count: Number(count),
    })
  }
  return {
    name,
    policy,
    capacity: Number(capacity),
    inUse: Number(inUse),
    token: Number(token),
    now: Number(now),
    holders,
    heldByDead: holders.filter((h) => !h.alive).reduce((sum, h) => sum + h.count, 0),
    cells: counts.map(Number),
    cellSize: Number(cellSize),
  }
}

async function listRedis(options) {
  const { connection, timeoutMs } = serverOptions(options)
  if (connection.cluster) {
    // SCAN names no key: a Cluster client would scan one node of many.
    throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', 'listRedis needs a client of one server (or a URL): with Redis Cluster, list each node')
  }
  const names = []
  await withinWhole(connection, timeoutMs, async (call) => {
    let cursor = '0'
    do {
      let reply
      try {
        reply = await connection.call(['SCAN', cursor, 'MATCH', 'numballoc:{*}:meta', 'COUNT', 1000])
      } catch (error) {
        throw fromRedis(error)
      }
      if (!Array.isArray(reply) || !Array.isArray(reply[1])) throw unexpected(reply)
      const [next, keys] = reply
      for (const key of keys) names.push(key.slice('numballoc:{'.length, -'}:meta'.length))
      cursor = String(next)
    } while (cursor !== '0' && !call.expired)
  })
  return [...new Set(names)].sort()
}

async function reclaimRedis(name, options) {
  checkName(name)
  const { connection, timeoutMs } = serverOptions(options)
  return withinWhole(connection, timeoutMs, async (call) => {
    let freed = 0
    for (;;) {
      const [, n, more] = await onAllocator(name, connection, ['reclaim'])
      freed += Number(n)
      if (more !== 1 || call.expired) return freed
    }
  })
}

module.exports = {
  RedisAllocator: constructOnly(RedisAllocator),
  RemoteLease: constructOnly(RemoteLease),
  MAX_REDIS_CAPACITY,
  MAX_REDIS_BATCH,
  inspectRedis,
  listRedis,
  reclaimRedis,
}
