'use strict'
// Port pools: a region whose numbers stand for ports, handed out only when they can be listened
// on right now. index.d.ts documents each call; README.md shows the migration from get-port.

const net = require('node:net')
const native = require('./native.js')
const { ConcurrentBitmap, inspectShared, leaseOf, LEASED } = require('./regions.js')
const { codedError, invalidType, outOfRange, checkInteger, checkString, checkOptions, brandCheck, constructOnly } = require('./checks.js')

// A pool's region tag (FORMAT.md, offset 112): 'P' in the top byte, then the first and last port,
// so a process that opens the pool with another range is refused instead of sharing numbers
// that mean other ports.
const PORT_POOL_KIND = 0x50n

function portPoolTag(from, to) {
  return (PORT_POOL_KIND << 56n) | (BigInt(from) << 16n) | BigInt(to)
}

/** The port range a region tag stands for, or null if the region is not a port pool. */
function portRangeOfTag(tag) {
  if (tag >> 56n !== PORT_POOL_KIND) return null
  return { from: Number((tag >> 16n) & 0xffffn), to: Number(tag & 0xffffn) }
}

const constructing = Symbol('numballoc port pool')

/** The allocator under a pool (for `numballoc run`, which hands its holder to a command). */
let poolBitmap // set in PortPool's static block

function checkPort(name, value, from = 1, to = 65535) {
  checkInteger(name, value, from, to)
  return value
}

/** get-port's `portNumbers(from, to)`: the ports from `from` to `to`, inclusive. */
function portNumbers(from, to) {
  checkPort('from', from)
  checkPort('to', to, from)
  return (function* () {
    for (let port = from; port <= to; port++) yield port
  })()
}

/** A `port` option (one number or an iterable of them) or `exclude` (an iterable) as an array. */
function portList(name, value, from, to, single) {
  if (value === undefined) return []
  if (single && typeof value === 'number') return [checkPort(name, value, from, to)]
  if (value === null || typeof value !== 'object' || typeof value[Symbol.iterator] !== 'function') {
    throw invalidType(name, single ? 'a number or an iterable of numbers' : 'an iterable of numbers', value)
  }
  const ports = []
  for (const port of value) {
    // More entries than there are ports: an endless iterable, refused instead of filling memory.
    if (ports.length === 65535) throw outOfRange(name, 'an iterable of at most 65535 ports', 'more')
    ports.push(checkPort(`${name}[${ports.length}]`, port, from, to))
  }
  return ports
}

/**
 * The ports getPort() hands out when no preferred port is free: the dynamic range 49152-65535,
 * less the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default), which
 * outgoing connections take ports from without asking anyone: one could take a handed-out port
 * before its holder listens on it. If nothing is left, the whole dynamic range.
 */
function dynamicPorts() {
  let [low, high] = [32768, 60999] // Linux's default, where the setting cannot be read
  try {
    const read = require('node:fs').readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (read.length === 2 && read.every(Number.isInteger)) [low, high] = read
  } catch {
    // not Linux, or no /proc: keep the default
  }
  const candidates = [
    [Math.max(49152, high + 1), 65535],
    [49152, Math.min(65535, low - 1)],
  ].filter(([first, last]) => first <= last)
  const widest = candidates.sort((a, b) => b[1] - b[0] - (a[1] - a[0]))[0]
  return widest ?? [49152, 65535]
}

/**
 * Whether `port` can be listened on at `host`, found by listening for a moment: false if it is
 * taken (EADDRINUSE) or not ours to take (EACCES); anything else (a host that is not this
 * machine's) rejects. Without a host, exactly as `server.listen(port)` will: on the IPv6
 * wildcard, which sees IPv4 listeners too (dual stack), or the IPv4 wildcard where there is no
 * IPv6. (No host also skips the DNS lookup that listening on a named host does, which loads
 * Node's resolver the first time in a process: BENCHMARKS.md has what that costs.)
 */
function canListen(port, host) {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', (error) => {
      if (error.code === 'EADDRINUSE' || error.code === 'EACCES') resolve(false)
      else reject(error)
    })
    // exclusive: in a cluster worker, listen in this process instead of through the primary.
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/** `canListen` without waiting: a blocking bind in native code, for `getPortSync`. */
function canListenSync(port, host) {
  return native.portCanListen(port, host ?? null)
}

function invalidHost(host, cause) {
  const error = codedError(Error, 'ERR_INVALID_HOST', `cannot listen on host ${JSON.stringify(host)}: ${cause.message}`)
  error.cause = cause
  return error
}

async function checkHost(host) {
  if (host === undefined) return
  checkString('options.host', host)
  try {
    await canListen(0, host)
  } catch (cause) {
    throw invalidHost(host, cause)
  }
}

function checkHostSync(host) {
  if (host === undefined) return
  checkString('options.host', host)
  try {
    canListenSync(0, host)
  } catch (cause) {
    throw invalidHost(host, cause)
  }
}

function poolMismatch(name, from, to, directory, cause) {
  let found = 'is not a port pool'
  try {
    const range = portRangeOfTag(inspectShared(name, { directory, cells: 1 }).tag)
    if (range) found = `is the pool of ports ${range.from}-${range.to}`
  } catch {
    // unreadable: say only that it is not the pool asked for
  }
  const error = codedError(Error, 'ERR_POOL_MISMATCH', `region '${name}' ${found}, not of ports ${from}-${to}`)
  error.cause = cause
  return error
}

let ownPool // (self) => throws ERR_INVALID_THIS unless self is a PortPool; set in its static block
class PortPool {
  #bitmap
  #name
  #from
  #to
  #host
  #fallback // [first, last] numbers to hand out when no preferred port is free, or null: any
  #cursor // with a fallback: where this pool object looks next in it (a port just released
  // is not handed out again at once; each process starts at a random place)

  constructor(token, bitmap, name, from, to, host, fallback) {
    if (token !== constructing) {
      throw codedError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'use PortPool.open(name, { from, to }) to open a PortPool')
    }
    this.#bitmap = bitmap
    this.#name = name
    this.#from = from
    this.#to = to
    this.#host = host
    this.#fallback = fallback
    if (fallback) this.#cursor = fallback[0] + Math.floor(Math.random() * (fallback[1] - fallback[0] + 1))
  }

  static {
    ownPool = brandCheck((value) => #bitmap in value, 'PortPool')
    poolBitmap = (pool) => pool.#bitmap
  }

  static async open(name, options) {
    checkString('name', name)
    const { from, to, host, directory, mode } = checkOptions(options)
    checkPort('options.from', from)
    checkPort('options.to', to)
    if (to < from) throw outOfRange('options.to', `>= options.from (${from})`, to)
    await checkHost(host)
    return PortPool.#open(name, from, to, host, { directory, mode }, null, typeof this === 'function' ? this : PortPool)
  }

  static #open(name, from, to, host, regionOptions, fallback, Class = PortPool) {
    let bitmap
    try {
      // cyclic: a port just released is the last to come back, so a client still talking to
      // the old server does not reach a new one. reclaimWhenFull is off because acquire()
      // reclaims by itself, also when a preferred port is held by a dead process.
      bitmap = ConcurrentBitmap.open(name, {
        ...regionOptions,
        capacity: to - from + 1,
        tag: portPoolTag(from, to),
        policy: 'cyclic',
        reclaimWhenFull: false,
      })
    } catch (error) {
      if (['ERR_TAG_MISMATCH', 'ERR_SIZE_MISMATCH', 'ERR_KIND_MISMATCH'].includes(error.code)) {
        throw poolMismatch(name, from, to, regionOptions.directory, error)
      }
      throw error
    }
    try {
      const pool = new Class(constructing, bitmap, name, from, to, host, fallback)
      ownPool(pool) // open.call(SomethingElse): a coded error, and the pool closed
      return pool
    } catch (error) {
      bitmap.close()
      throw error
    }
  }

  /**
   * The pool `getPort()` uses: every port, handing out `dynamicPorts()` when no preferred port
   * is free. One per user (`numballoc-ports-<uid>`), or `NUMBALLOC_PORT_POOL`.
   */
  static defaultPool() {
    const uid = typeof process.getuid === 'function' ? process.getuid() : 0
    const name = process.env.NUMBALLOC_PORT_POOL || `numballoc-ports-${uid}`
    const [first, last] = dynamicPorts()
    // private: in /dev/shm anyone can create a file first; a pool another user made, fills or
    // can read is refused, never used.
    return PortPool.#open(name, 1, 65535, undefined, { private: true }, [first - 1, last - 1])
  }

  get name() {
    ownPool(this)
    return this.#name
  }

  get from() {
    ownPool(this)
    return this.#from
  }

  get to() {
    ownPool(this)
    return this.#to
  }

  get host() {
    ownPool(this)
    return this.#host
  }

  async acquire(options) {
    ownPool(this)
    const port = await this.getPort(options)
    return leaseOf(this.#bitmap, port - this.#from, port, (error) => this.#named(error, port))
  }

  async getPort(options) {
    ownPool(this)
    const { preferred, excluded, host } = this.#request(options)
    if (host !== undefined) await checkHost(host)
    const search = this.#search(preferred, excluded)
    return this.#run(search, async (port) => canListen(port, host ?? this.#host))
  }

  getPortSync(options) {
    ownPool(this)
    const { preferred, excluded, host } = this.#request(options)
    checkHostSync(host)
    const search = this.#search(preferred, excluded)
    let step = search.next()
    try {
      while (!step.done) step = search.next(canListenSync(step.value, host ?? this.#host))
      return this.#from + step.value
    } finally {
      search.return() // frees what the search held, also when a check threw
    }
  }

  /** getPort's options, checked. */
  #request(options) {
    const { port, exclude, host: given } = checkOptions(options)
    const host = given === '' ? undefined : given // as listen({ host: '' }): no host
    return {
      preferred: portList('options.port', port, this.#from, this.#to, true),
      excluded: new Set(portList('options.exclude', exclude, 1, 65535, false)),
      host,
    }
  }

  /** Runs `search` with `check` deciding each port it yields; the port it claimed. */
  async #run(search, check) {
    let step = search.next()
    try {
      while (!step.done) step = search.next(await check(step.value))
      return this.#from + step.value
    } finally {
      search.return() // frees what the search held, also when a check threw
    }
  }

  /**
   * The search both getPort and getPortSync run: claims the first preferred port, or else any
   * port of the pool, that is not excluded and can be listened on. It yields each claimed port
   * to be checked and is sent back whether it can be listened on; it returns the number it kept.
   * Ports found taken by other programs are held while the search goes on (so it moves past
   * them) and freed at the end, so they are tried again by later calls.
   */
  *#search(preferred, excluded) {
    const held = []
    let winner = -1
    let reclaimed = false
    // Dead holders' ports come back at most once a call: reclaim() reads every holder record.
    const reclaimOnce = () => !reclaimed && (reclaimed = true) && this.#bitmap.reclaim() > 0
    try {
      for (const port of preferred) {
        if (excluded.has(port)) continue
        const n = port - this.#from
        let claimed = this.#bitmap.tryAllocateInRange(n, n)
        if (claimed === null && reclaimOnce()) claimed = this.#bitmap.tryAllocateInRange(n, n)
        if (claimed === null) continue
        held.push(n)
        if (yield port) return (winner = n)
      }
      for (;;) {
        const n = this.#fallback ? this.#fromCursor() : this.#bitmap.tryAllocate()
        if (n === null) {
          if (reclaimOnce()) continue
          throw this.#noFreePort(held.length)
        }
        held.push(n)
        const port = this.#from + n
        if (!excluded.has(port) && (yield port)) return (winner = n)
      }
    } finally {
      const others = held.filter((n) => n !== winner)
      if (others.length > 0) this.#bitmap.freeMany(others)
    }
  }

  /** The first free number of the fallback range at or after the cursor, wrapping; moves the cursor past it. */
  #fromCursor() {
    const [first, last] = this.#fallback
    const n = this.#bitmap.tryAllocateInRange(this.#cursor, last) ?? (this.#cursor > first ? this.#bitmap.tryAllocateInRange(first, this.#cursor - 1) : null)
    if (n !== null) this.#cursor = n === last ? first : n + 1
    return n
  }

  #noFreePort(skipped) {
    const [first, last] = this.#fallback ?? [0, this.#to - this.#from]
    const held = this.#bitmap.count() - skipped
    return codedError(
      Error,
      'ERR_NO_FREE_NUMBER',
      `no free port in ${this.#from + first}-${this.#from + last}: ${held} held through the pool, ${skipped} excluded or in use by other programs`,
    )
  }

  release(port) {
    ownPool(this)
    checkPort('port', port, this.#from, this.#to)
    try {
      this.#bitmap.free(port - this.#from)
    } catch (error) {
      throw this.#named(error, port)
    }
  }

  /** `cause` naming the port, not the pool's internal number for it, if it is ERR_NOT_ALLOCATED. */
  #named(cause, port) {
    if (cause.code !== 'ERR_NOT_ALLOCATED') return cause
    const why = cause[LEASED]
      ? `port ${port} is held as a Lease of pool '${this.#name}': its release() gives it back`
      : `port ${port} is not held in pool '${this.#name}' (released twice?)`
    const error = codedError(Error, 'ERR_NOT_ALLOCATED', why)
    error.cause = cause
    return error
  }

  holderOf(port) {
    ownPool(this)
    checkPort('port', port, this.#from, this.#to)
    return this.#bitmap.holderOf(port - this.#from)
  }

  count() {
    ownPool(this)
    return this.#bitmap.count()
  }

  reclaim() {
    ownPool(this)
    return this.#bitmap.reclaim()
  }

  close(options) {
    ownPool(this)
    this.#bitmap.close(options)
  }

  get [Symbol.toStringTag]() {
    return 'PortPool'
  }
}

let defaultPool

/** get-port's `getPort(options)`, coordinated through this user's machine-wide pool. */
async function getPort(options) {
  defaultPool ??= PortPool.defaultPool()
  return defaultPool.getPort(options)
}

/** `getPort(options)` without waiting, for code that cannot await (configuration files). */
function getPortSync(options) {
  defaultPool ??= PortPool.defaultPool()
  return defaultPool.getPortSync(options)
}

function releasePort(port) {
  checkPort('port', port) // before the pool is opened (or created) for nothing
  defaultPool ??= PortPool.defaultPool()
  defaultPool.release(port)
}

/** This process's default pool (getPort's), opened if it is not yet. */
function defaultPortPool() {
  defaultPool ??= PortPool.defaultPool()
  return defaultPool
}

module.exports = {
  PortPool: constructOnly(PortPool),
  getPort,
  getPortSync,
  releasePort,
  portNumbers,
  portRangeOfTag,
  defaultPortPool,
  poolBitmap: (pool) => poolBitmap(pool),
}
