'use strict'
// Regions and allocators: typed classes over the addon's native functions (src/lib.rs; loaded
// by lib/native.js). Argument checks live here, where the JS error classes are;
// everything about regions and numbers lives in Rust. index.d.ts documents each call.

const native = require('./native.js')
const {
  codedError,
  describe,
  invalidType,
  outOfRange,
  checkInteger,
  checkString,
  checkOptions,
  checkBoolean,
  brandCheck,
  constructOnly,
  noFreeNumber,
} = require('./checks.js')
const { createLease } = require('./lease.js')
const { hotPath } = require('./hot.js')

// Native handles are ids into a per-thread table; an id is released once the object holding it
// is garbage-collected, so it can never be reused while some object could still pass it.
const handles = new FinalizationRegistry((id) => native.releaseHandle(id))

// The largest region size, the largest and the default mode, and the policies' names, as the core
// states them.
const { maxSize: MAX_SIZE, maxQueueCapacity: MAX_QUEUE_CAPACITY, maxMode: MAX_MODE, defaultMode: DEFAULT_MODE, policies: POLICIES } = native.limits()
/** The largest batch whose scratch array an allocator keeps for the next batch (32 KiB). */
const SCRATCH_KEPT = 4096

/** The region options shared by loadShared, destroyShared and ConcurrentBitmap.open. */
function regionOptions(options) {
  const { create = true, mode = DEFAULT_MODE, directory, holders = true, tag, private: owned = false } = checkOptions(options)
  checkBoolean('options.create', create)
  checkBoolean('options.private', owned)
  checkInteger('options.mode', mode, 0, MAX_MODE) // permission bits only: no setuid, setgid or sticky
  if (directory !== undefined) {
    checkString('options.directory', directory)
    if (directory === '')
      throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', 'The "options.directory" must not be empty (use \'.\' for the current directory)')
  }
  checkBoolean('options.holders', holders)
  if (tag !== undefined) {
    if (typeof tag !== 'bigint') throw invalidType('options.tag', 'of type bigint', tag)
    if (tag < 0n || tag >= 1n << 64n) throw outOfRange('options.tag', '>= 0n and < 2n ** 64n', `${tag}n`)
  }
  return { create, mode, directory: directory ?? null, holders, tag: tag ?? null, private: owned }
}

let memoryHandle // (mem: SharedMemory) => native handle; set in SharedMemory's static block
const constructing = Symbol('numballoc internal')

let ownMemory // (self) => throws ERR_INVALID_THIS unless self is a SharedMemory; set in its static block
class SharedMemory {
  #handle
  #name
  #size

  constructor(token, handle, name, size) {
    if (token !== constructing) {
      throw codedError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'use loadShared(name, size) to open a SharedMemory')
    }
    this.#handle = handle
    handles.register(this, handle)
    this.#name = name
    this.#size = size
  }

  static {
    ownMemory = brandCheck((value) => #handle in value, 'SharedMemory')
    memoryHandle = (mem) => mem.#handle
  }

  get name() {
    ownMemory(this)
    return this.#name
  }

  get size() {
    ownMemory(this)
    return this.#size
  }

  get capacity() {
    ownMemory(this)
    return native.regionCapacity(this.#handle)
  }

  get kind() {
    ownMemory(this)
    return native.regionKind(this.#handle)
  }

  get tracksHolders() {
    ownMemory(this)
    return native.regionTracksHolders(this.#handle)
  }

  get tag() {
    ownMemory(this)
    return native.regionTag(this.#handle)
  }

  blocks() {
    ownMemory(this)
    const out = new Uint32Array(native.regionBlockCount(this.#handle))
    native.regionCopyBlocks(this.#handle, out)
    return out
  }

  close() {
    ownMemory(this)
    native.regionClose(this.#handle)
  }

  get [Symbol.toStringTag]() {
    return 'SharedMemory'
  }
}

function loadShared(name, size, options) {
  checkString('name', name)
  if (size !== undefined) checkInteger('size', size, 1, MAX_SIZE)
  return openRegion(name, size === undefined ? 'any' : 'bitmap', size, undefined, regionOptions(options))
}

/**
 * Opens a region with checked arguments: `kind` 'bitmap' (of `size` bytes), 'queue' (of
 * `capacity` numbers) or 'any' (an existing region); `capacity` is asked of a bitmap only when
 * given.
 */
function openRegion(name, kind, size, capacity, { create, mode, directory, holders, tag, private: owned }) {
  const handle = native.regionOpen(name, kind, size ?? null, capacity ?? null, create, mode, directory, holders, tag, owned)
  return new SharedMemory(constructing, handle, name, size ?? native.regionSize(handle))
}

function destroyShared(name, options) {
  checkString('name', name)
  const { directory } = regionOptions(options)
  return native.regionDestroy(name, directory)
}

function inspectShared(name, options) {
  checkString('name', name)
  const { cells = 64, ...rest } = checkOptions(options)
  checkInteger('options.cells', cells, 1, 1 << 20)
  const { directory } = regionOptions(rest)
  return native.regionInspect(name, directory, cells)
}

function reclaimShared(name, options) {
  checkString('name', name)
  const { directory } = regionOptions(options)
  return native.regionReclaim(name, directory)
}

function listShared(options) {
  const { directory } = regionOptions(options)
  return native.regionList(directory)
}

// Allocators opened with releaseOnExit, closed with { release: true } when the process exits.
const releasedAtExit = new Set()
let exitHookInstalled = false

function releaseAtExit(allocator) {
  releasedAtExit.add(allocator)
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const each of releasedAtExit) each.close({ release: true })
    })
  }
}

function checkPolicy(options) {
  const { policy = 'any' } = options
  if (!POLICIES.includes(policy)) {
    throw codedError(
      TypeError,
      'ERR_INVALID_ARG_VALUE',
      `The "options.policy" must be one of ${POLICIES.map((p) => `'${p}'`).join(', ')}. Received ${describe(policy)}`,
    )
  }
  return policy
}

/** Throws ERR_NO_FREE_NUMBER for a native -1, else returns the number. */
function found(n) {
  if (n < 0) throw noFreeNumber()
  return n
}

let allocatorHandle // (allocator) => native handle; set in AllocatorBase's static block
let adopt // (allocator) => marks that closing it closes its region; set there too

/**
 * The descriptor holding the holder lock of `allocator`'s region, or -1 (no holders): for the
 * `numballoc run` command, which hands it to the command it runs. Not part of the public API.
 */
function holderFd(allocator) {
  return native.allocatorHolderFd(allocatorHandle(allocator))
}

let leases // what AllocatorBase's static block lets the rest of this module do with its leased numbers

/**
 * `n`, just allocated by `allocator`, as a Lease: its release frees `n` only while the allocator
 * still holds it for this lease (not freed another way, and not given to it again since).
 * `rename(error)` may say it in other words (a port pool names the port).
 */
function leaseOf(allocator, n, value = n, rename = (error) => error) {
  const token = leases.take(allocator, n)
  return createLease(value, () => {
    try {
      if (!leases.holds(allocator, n, token)) throw leaseGone(n)
      native.allocatorRelease(allocatorHandle(allocator), n)
    } catch (error) {
      // Gone for good: forgotten, so that a plain free of the number, if given again, is not refused.
      if (error.code === 'ERR_NOT_ALLOCATED') leases.forget(allocator, n, token)
      throw rename(error)
    }
    leases.forget(allocator, n, token)
  })
}

function leaseGone(n) {
  return codedError(Error, 'ERR_NOT_ALLOCATED', `number ${n} is not held by this lease any more (freed another way, and given out again)`)
}

/**
 * The numbers of `leased` among `first..first+count-1`, in a new array (so that the caller may
 * change `leased`): whichever is shorter is walked, the range or the leases.
 */
function leasedIn(leased, first, count) {
  if (leased.size === 0) return []
  if (count > leased.size) return [...leased.keys()].filter((n) => n >= first && n < first + count)
  const found = []
  for (let n = first; n < first + count; n++) if (leased.has(n)) found.push(n)
  return found
}

/** Throws if `allocator` holds `n`, which it has leased, for its lease; else forgets the stale lease. */
function refuseIfLive(allocator, n) {
  if (native.allocatorStillHolds(allocatorHandle(allocator), n)) throw leasedNotFreed(n)
  leases.forgetStale(allocator, n)
}

/** Marks the ERR_NOT_ALLOCATED of a plain free refused because its number is held as a Lease. */
const LEASED = Symbol('numballoc leased')

function leasedNotFreed(n) {
  const error = codedError(Error, 'ERR_NOT_ALLOCATED', `number ${n} is held as a Lease of this allocator: its release() gives it back`)
  error[LEASED] = true
  return error
}

/**
 * Opens an allocator over a region `openRegion` just opened for it: `make()` builds it (`new
 * this(...)` in a static `open`, so a subclass gets an instance of itself), `own` checks it is
 * of the class asked for (open.call(SomethingElse) is a coded error); on any error the region
 * is closed.
 */
function openOver(mem, make, own) {
  try {
    const allocator = make()
    own(allocator)
    adopt(allocator)
    return allocator
  } catch (error) {
    mem.close()
    throw error
  }
}

let ownAllocator // (self) => throws ERR_INVALID_THIS unless self is an allocator
// allocate() and free(n) of every allocator of this thread (lib/hot.js), but one: the first to
// make BIND_AFTER such calls gets a hot path bound to it, which skips the lookup of its handle id.
// Not simply the first allocator: that may be a short-lived one (a probe, getPort()'s pool). Each
// call site below still reaches one native function, as V8 needs to make it fast (src/hot.rs).
const [hotAllocate, hotFree, hotIo] = hotPath(native)
const BIND_AFTER = 64
let boundGiven = false

/**
 * What every allocator kind shares: its native handle, the hot `allocate`/`free` path, leases,
 * release on exit and close. Not exported: ConcurrentBitmap and ConcurrentQueue build on it.
 */
class AllocatorBase {
  #handle
  #boundAllocate = null // the hot path bound to this allocator, if it is the one
  #boundFree
  #boundIo
  #hotCalls = 0 // until an allocator of the thread has its bound hot path
  #max
  #ownsMemory = false
  // The numbers this allocator holds as a Lease (each to its lease's token), once it made one:
  // a plain free of one is refused, and a lease whose number this allocator was given again
  // since (freed another way meanwhile) frees nothing.
  #leased = null

  constructor(token, handle, releaseOnExit) {
    if (token !== constructing) throw codedError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'Illegal constructor')
    this.#handle = handle
    handles.register(this, handle)
    this.#max = native.allocatorMax(handle)
    if (releaseOnExit) releaseAtExit(this)
  }

  static {
    ownAllocator = brandCheck((value) => #handle in value, 'ConcurrentBitmap or ConcurrentQueue')
    allocatorHandle = (allocator) => allocator.#handle
    leases = {
      take(allocator, n) {
        const token = {}
        ;(allocator.#leased ??= new Map()).set(n, token)
        return token
      },
      holds: (allocator, n, token) => allocator.#leased?.get(n) === token,
      forget(allocator, n, token) {
        if (allocator.#leased?.get(n) === token) allocator.#leased.delete(n)
      },
      // The numbers first..first+count-1 were given to the allocator: a lease of one is stale.
      given(allocator, first, count = 1) {
        const leased = allocator.#leased
        if (leased !== null) for (const n of leasedIn(leased, first, count)) leased.delete(n)
      },
      givenAll(allocator, numbers, count) {
        const leased = allocator.#leased
        if (leased !== null && leased.size > 0) for (let i = 0; i < count; i++) leased.delete(numbers[i])
      },
      // A plain free of a number held as a Lease: refused, nothing freed. A lease whose number
      // the allocator no longer holds (freed through another handle, taken by another) is
      // stale: forgotten, and the free goes on.
      refuse(allocator, numbers, count) {
        const leased = allocator.#leased
        if (leased !== null && leased.size > 0) for (let i = 0; i < count; i++) if (leased.has(numbers[i])) refuseIfLive(allocator, numbers[i])
      },
      refuseRange(allocator, first, count) {
        const leased = allocator.#leased
        if (leased !== null) for (const n of leasedIn(leased, first, count)) refuseIfLive(allocator, n)
      },
      forgetStale(allocator, n) {
        allocator.#leased.delete(n)
      },
    }
    adopt = (allocator) => {
      allocator.#ownsMemory = true
    }
  }

  get max() {
    ownAllocator(this)
    return this.#max
  }

  /** The number allocated, or -1 when every number is in use. */
  #allocate() {
    if (this.#boundAllocate !== null) {
      this.#boundAllocate()
      return this.#boundIo[0]
    }
    hotIo[1] = this.#handle
    hotAllocate()
    const n = hotIo[0]
    if (!boundGiven) this.#countHotCall()
    return n
  }

  #countHotCall() {
    if (++this.#hotCalls === BIND_AFTER) {
      boundGiven = true
      ;[this.#boundAllocate, this.#boundFree, this.#boundIo] = hotPath(native, this.#handle)
    }
  }

  allocate() {
    ownAllocator(this)
    const n = this.#allocate()
    if (n < 0) throw noFreeNumber()
    if (this.#leased !== null) this.#leased.delete(n)
    return n
  }

  acquire() {
    ownAllocator(this)
    return leaseOf(this, this.allocate())
  }

  tryAllocate() {
    ownAllocator(this)
    const n = this.#allocate()
    if (n < 0) return null
    if (this.#leased !== null) this.#leased.delete(n)
    return n
  }

  free(n) {
    ownAllocator(this)
    checkInteger('n', n, 0, this.#max - 1)
    if (this.#leased !== null && this.#leased.has(n)) refuseIfLive(this, n)
    if (this.#boundAllocate !== null) {
      this.#boundIo[0] = n
      this.#boundFree()
      return
    }
    hotIo[0] = n
    hotIo[1] = this.#handle
    hotFree()
    if (!boundGiven) this.#countHotCall()
  }

  reclaim() {
    ownAllocator(this)
    return native.allocatorReclaim(this.#handle)
  }

  holderOf(n) {
    ownAllocator(this)
    checkInteger('n', n, 0, this.#max - 1)
    const pid = native.allocatorHolderOf(this.#handle, n)
    return pid < 0 ? null : { pid }
  }

  isAllocated(n) {
    ownAllocator(this)
    checkInteger('n', n, 0, this.#max - 1)
    return native.allocatorIsAllocated(this.#handle, n)
  }

  count() {
    ownAllocator(this)
    return native.allocatorCount(this.#handle)
  }

  close(options) {
    ownAllocator(this)
    const { release = false } = checkOptions(options)
    checkBoolean('options.release', release)
    releasedAtExit.delete(this)
    native.allocatorClose(this.#handle, this.#ownsMemory, release)
  }
}

/** Checks the options every allocator constructor takes; returns them with their defaults. */
function allocatorOptions(checked) {
  const { reclaimWhenFull = true, releaseOnExit = false } = checked
  checkBoolean('options.reclaimWhenFull', reclaimWhenFull)
  checkBoolean('options.releaseOnExit', releaseOnExit)
  return { reclaimWhenFull, releaseOnExit }
}

/** Checks the allocator options a static `open` passes on, before anything is created. */
function checkOpenOptions({ reclaimWhenFull, releaseOnExit }) {
  if (reclaimWhenFull !== undefined) checkBoolean('options.reclaimWhenFull', reclaimWhenFull)
  if (releaseOnExit !== undefined) checkBoolean('options.releaseOnExit', releaseOnExit)
}

let ownBitmap // (self) => throws ERR_INVALID_THIS unless self is a ConcurrentBitmap; set in its static block
class ConcurrentBitmap extends AllocatorBase {
  #policy
  #scratch = null // see #takeScratch

  constructor(mem, max = 0, options) {
    if (!(mem instanceof SharedMemory)) throw invalidType('mem', 'an instance of SharedMemory', mem)
    checkInteger('max', max, 0, Number.MAX_SAFE_INTEGER)
    const checked = checkOptions(options)
    const { reclaimWhenFull, releaseOnExit } = allocatorOptions(checked)
    const policy = checkPolicy(checked)
    super(constructing, native.bitmapNew(memoryHandle(mem), max, policy, reclaimWhenFull), releaseOnExit)
    this.#policy = policy
  }

  static {
    ownBitmap = brandCheck((value) => #policy in value, 'ConcurrentBitmap')
  }

  static open(name, options) {
    checkString('name', name)
    const { capacity, policy, reclaimWhenFull, releaseOnExit, ...rest } = checkOptions(options)
    if (capacity !== undefined) checkInteger('options.capacity', capacity, 1, MAX_SIZE * 8)
    checkPolicy({ policy })
    checkOpenOptions({ reclaimWhenFull, releaseOnExit })
    // Every option is checked above or in openRegion before anything is created.
    const size = capacity === undefined ? undefined : Math.ceil(capacity / 8)
    const mem = openRegion(name, size === undefined ? 'any' : 'bitmap', size, capacity, regionOptions(rest))
    // `new this`: a subclass's open() gives an instance of the subclass.
    const Class = typeof this === 'function' ? this : ConcurrentBitmap
    return openOver(mem, () => new Class(mem, capacity ?? 0, { policy, reclaimWhenFull, releaseOnExit }), ownBitmap)
  }

  get policy() {
    ownBitmap(this)
    return this.#policy
  }

  allocateInRange(min, max) {
    ownBitmap(this)
    return found(this.#inRange(min, max))
  }

  tryAllocateInRange(min, max) {
    ownBitmap(this)
    const n = this.#inRange(min, max)
    return n < 0 ? null : n
  }

  #inRange(min, max) {
    checkInteger('min', min, 0, this.max - 1)
    checkInteger('max', max, min, this.max - 1)
    const n = native.bitmapAllocateInRange(allocatorHandle(this), min, max)
    if (n >= 0) leases.given(this, n)
    return n
  }

  allocateBlock(count, align = 1) {
    ownBitmap(this)
    return found(this.#block(count, align))
  }

  tryAllocateBlock(count, align = 1) {
    ownBitmap(this)
    const first = this.#block(count, align)
    return first < 0 ? null : first
  }

  #block(count, align) {
    checkInteger('count', count, 1, this.max)
    checkInteger('align', align, 1, Number.MAX_SAFE_INTEGER)
    const first = native.bitmapAllocateBlock(allocatorHandle(this), count, align)
    if (first >= 0) leases.given(this, first, count)
    return first
  }

  freeBlock(first, count) {
    ownBitmap(this)
    checkInteger('first', first, 0, this.max - 1)
    checkInteger('count', count, 1, this.max - first)
    leases.refuseRange(this, first, count)
    native.bitmapFreeBlock(allocatorHandle(this), first, count)
  }

  allocateMany(n) {
    ownBitmap(this)
    checkInteger('n', n, 0, this.max)
    const out = this.#takeScratch(n)
    try {
      if (!native.bitmapAllocateMany(allocatorHandle(this), out, n)) throw noFreeNumber()
      leases.givenAll(this, out, n)
      try {
        // A loop, not Array.from: several times faster for the short lists this is used for.
        const numbers = new Array(n)
        for (let i = 0; i < n; i++) numbers[i] = out[i]
        return numbers
      } catch (cause) {
        // Out of memory for the array: all or nothing, so give the numbers back.
        native.bitmapFreeMany(allocatorHandle(this), out, n)
        const error = codedError(RangeError, 'ERR_OUT_OF_RANGE', `cannot return ${n} numbers as an array: ${cause.message}`)
        error.cause = cause
        throw error
      }
    } finally {
      this.#giveScratch(out)
    }
  }

  /**
   * A Float64Array of at least `n` entries for one call to lend the binding. Creating a typed
   * array costs more than a batch call itself, so one is kept per allocator and reused; taken
   * out while lent, so a call made meanwhile (from a getter of `freeMany`'s argument, say) gets
   * another instead of overwriting it.
   */
  #takeScratch(n) {
    const scratch = this.#scratch
    if (scratch !== null && scratch.length >= n) {
      this.#scratch = null
      return scratch
    }
    try {
      return new Float64Array(n <= SCRATCH_KEPT ? Math.max(n, 64) : n)
    } catch (cause) {
      // More than a typed array may hold, or no memory for it: nothing has been taken yet.
      const error = codedError(RangeError, 'ERR_OUT_OF_RANGE', `cannot make room for ${n} numbers: ${cause.message}`)
      error.cause = cause
      throw error
    }
  }

  #giveScratch(scratch) {
    if (scratch.length <= SCRATCH_KEPT && (this.#scratch === null || this.#scratch.length < scratch.length)) this.#scratch = scratch
  }

  freeMany(numbers) {
    ownBitmap(this)
    if (numbers === null || typeof numbers !== 'object') throw invalidType('numbers', 'an array of numbers', numbers)
    // Read once: an object whose length changes between reads gets what it said the first time.
    const count = numbers.length
    if (typeof count !== 'number') throw invalidType('numbers', 'an array of numbers', numbers)
    // More than max numbers cannot all be distinct and allocated.
    const max = this.max
    checkInteger('numbers.length', count, 0, max)
    const list = this.#takeScratch(count)
    try {
      for (let i = 0; i < count; i++) {
        const n = numbers[i]
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n >= max) checkInteger(`numbers[${i}]`, n, 0, max - 1)
        list[i] = n
      }
      leases.refuse(this, list, count)
      native.bitmapFreeMany(allocatorHandle(this), list, count)
    } finally {
      this.#giveScratch(list)
    }
  }

  get [Symbol.toStringTag]() {
    return 'ConcurrentBitmap'
  }
}

let ownQueue // (self) => throws ERR_INVALID_THIS unless self is a ConcurrentQueue; set in its static block
/** How many waiting numbers `waiting()` returns when not told. */
const WAITING_SHOWN = 100
class ConcurrentQueue extends AllocatorBase {
  #queue = true

  constructor(mem, options) {
    if (!(mem instanceof SharedMemory)) throw invalidType('mem', 'an instance of SharedMemory', mem)
    const { reclaimWhenFull, releaseOnExit } = allocatorOptions(checkOptions(options))
    super(constructing, native.queueNew(memoryHandle(mem), reclaimWhenFull), releaseOnExit)
  }

  static {
    ownQueue = brandCheck((value) => #queue in value, 'ConcurrentQueue')
  }

  static open(name, options) {
    checkString('name', name)
    const { capacity, reclaimWhenFull, releaseOnExit, ...rest } = checkOptions(options)
    checkInteger('options.capacity', capacity, 1, MAX_QUEUE_CAPACITY)
    checkOpenOptions({ reclaimWhenFull, releaseOnExit })
    const mem = openRegion(name, 'queue', undefined, capacity, regionOptions(rest))
    const Class = typeof this === 'function' ? this : ConcurrentQueue
    return openOver(mem, () => new Class(mem, { reclaimWhenFull, releaseOnExit }), ownQueue)
  }

  waiting(limit = WAITING_SHOWN) {
    ownQueue(this)
    checkInteger('limit', limit, 0, Number.MAX_SAFE_INTEGER)
    return native.queueWaiting(allocatorHandle(this), limit)
  }

  get [Symbol.toStringTag]() {
    return 'ConcurrentQueue'
  }
}

module.exports = {
  loadShared,
  destroyShared,
  inspectShared,
  listShared,
  reclaimShared,
  SharedMemory: constructOnly(SharedMemory),
  ConcurrentBitmap: constructOnly(ConcurrentBitmap),
  ConcurrentQueue: constructOnly(ConcurrentQueue),
  MAX_SIZE,
  MAX_QUEUE_CAPACITY,
  holderFd,
  leaseOf,
  LEASED,
  checkPolicy,
}
