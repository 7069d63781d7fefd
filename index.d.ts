/// <reference lib="esnext.disposable" />

/**
 * numballoc: unique numbers (ports, worker IDs, slots) across every process on a machine, from
 * a lock-free allocator in a named shared-memory region: a bitmap (`ConcurrentBitmap`) or a
 * first-in first-out queue (`ConcurrentQueue`); and across machines, from a Redis server
 * (`RedisAllocator`).
 *
 * Every error thrown has a stable `code`:
 * - `ERR_NO_FREE_NUMBER`: every number is in use (`allocate`).
 * - `ERR_NOT_ALLOCATED`: `free` of a number that is not allocated (a double free); for a `RedisAllocator`, one this
 *   handle does not hold under its current lease.
 * - `ERR_OUT_OF_RANGE` (`RangeError`): a number, size or option outside its range, or not an integer.
 * - `ERR_INVALID_ARG_TYPE` (`TypeError`): an argument of the wrong type.
 * - `ERR_INVALID_ARG_VALUE` (`TypeError`): an option with a value it cannot take (a policy name).
 * - `ERR_INVALID_NAME`: a region name that is not 1–255 letters, digits, `.`, `_` or `-`, or is `.`/`..`
 *   (or a directory with a NUL byte).
 * - `ERR_SIZE_MISMATCH`: the region exists with another size.
 * - `ERR_TAG_MISMATCH`: the region exists with another `tag`.
 * - `ERR_KIND_MISMATCH`: the region holds another kind of allocator (a bitmap opened as a queue, or the reverse).
 * - `ERR_TOO_MANY_HOLDERS`: every holder slot of the region (4096) is taken by a live holder.
 * - `ERR_REGION_NOT_PRIVATE`: a region opened with `private: true` belongs to another user or is open to others.
 * - `ERR_POOL_MISMATCH`: a port pool exists under that name for other ports (or the region is not a pool).
 * - `ERR_INVALID_HOST`: a port pool's `host` cannot be listened on (unknown name, not this machine's address).
 * - `ERR_ILLEGAL_CONSTRUCTOR` (`TypeError`): `new` of a class that has a factory (`loadShared`, `PortPool.open`).
 * - `ERR_CONSTRUCT_CALL_REQUIRED` (`TypeError`): a class called without `new`.
 * - `ERR_INVALID_THIS` (`TypeError`): a method or getter called on something that is not an instance of its class.
 * - `ERR_NATIVE_ADDON_MISSING`: no native addon for this platform (neither a local build nor its package, such as
 *   `numballoc-linux-x64-gnu`, is installed), or the one found cannot be loaded.
 * - `ERR_INCOMPATIBLE_REGION`: not a numballoc region, another format version, corrupt or truncated; for Redis, keys
 *   of the name that hold something else.
 * - `ERR_REGION_CLOSED`: use of a closed `SharedMemory` or allocator.
 * - `ERR_LEASE_RELEASED`: `release()` of a lease that was already released.
 * - `ERR_LEASE_LOST`: a `RedisAllocator`'s lease ended before it was renewed (the signal's reason); also an
 *   allocation's error when the lease ended twice in a row before Redis answered (a round trip longer than `leaseMs`).
 * - `ERR_POLICY_MISMATCH`: a Redis allocator exists with another `policy`.
 * - `ERR_ALLOCATOR_GONE`: a Redis allocator's keys were deleted, evicted or replaced by another type of key (or the
 *   server lost them).
 * - `ERR_REDIS_UNAVAILABLE`: Redis cannot be reached, or the connection broke before the reply.
 * - `ERR_REDIS_TIMEOUT`: Redis did not answer within `timeoutMs` (the command may have run).
 * - `ERR_REDIS_REPLICAS`: fewer replicas than `replicas` confirmed a write in time.
 * - `ERR_REDIS_VERSION`: the server is older than Redis 7.0.
 * - `ERR_REDIS`: Redis refused a command (its message is in `message`, the reply in `cause`).
 * - `ERR_INVALID_URL` (`TypeError`): not a `redis://`, `rediss://` or `unix://` URL, or one it cannot read (no host,
 *   a bad database, bad percent-encoding, a user without a password).
 * - System errors keep their usual code (`ENOENT`, `EACCES`, `ENOSPC`, ...) with `syscall`,
 *   `errno` and `path`, as Node's own `fs` errors do.
 *
 * Options are read from the options object's own properties, once: never from
 * `Object.prototype`. The types use `AbortSignal` and `Disposable`: from `@types/node` (or the
 * DOM library) and `esnext.disposable`.
 * @packageDocumentation
 */

/** The error `code`s numballoc throws besides system error codes. */
export type NumballocErrorCode =
  | 'ERR_NO_FREE_NUMBER'
  | 'ERR_NOT_ALLOCATED'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_INVALID_NAME'
  | 'ERR_SIZE_MISMATCH'
  | 'ERR_TAG_MISMATCH'
  | 'ERR_KIND_MISMATCH'
  | 'ERR_POOL_MISMATCH'
  | 'ERR_INVALID_HOST'
  | 'ERR_ILLEGAL_CONSTRUCTOR'
  | 'ERR_INCOMPATIBLE_REGION'
  | 'ERR_REGION_CLOSED'
  | 'ERR_LEASE_RELEASED'
  | 'ERR_LEASE_LOST'
  | 'ERR_POLICY_MISMATCH'
  | 'ERR_ALLOCATOR_GONE'
  | 'ERR_REDIS_UNAVAILABLE'
  | 'ERR_REDIS_TIMEOUT'
  | 'ERR_REDIS_REPLICAS'
  | 'ERR_REDIS_VERSION'
  | 'ERR_REDIS'
  | 'ERR_INVALID_URL'
  | 'ERR_TOO_MANY_HOLDERS'
  | 'ERR_REGION_NOT_PRIVATE'
  | 'ERR_CONSTRUCT_CALL_REQUIRED'
  | 'ERR_INVALID_THIS'
  | 'ERR_NATIVE_ADDON_MISSING'

/** The largest region size in bytes (2^40): regions hold at most 2^43 numbers. */
export declare const MAX_SIZE: number

/** The largest `capacity` of a `ConcurrentQueue` (2^30). */
export declare const MAX_QUEUE_CAPACITY: number

/**
 * The largest `capacity` of a `RedisAllocator` (2^24): each call is one script, during which
 * Redis serves nobody else, so a search scans at most a 2 MiB bitmap. Batches and blocks
 * (`allocateMany`, `freeMany`, `allocateBlock`, `freeBlock`) take at most 1,024 numbers (a script that frees or takes more would hold Redis up for milliseconds).
 */
export declare const MAX_REDIS_CAPACITY: number

/** Where and how a region is opened. */
export interface RegionOptions {
  /** Create the region if it does not exist (default `true`). With `false` a missing region throws `ENOENT`. */
  create?: boolean
  /**
   * Permission bits of a region this call creates, `0` to `0o777` (default `0o600`), applied
   * exactly, regardless of the umask. Give write permission to everyone you give read
   * permission to: a user who can only read a region can still take file locks on it, and so
   * keep a dead holder's numbers from coming back.
   */
  mode?: number
  /**
   * Keep the region in a regular file named `name` in this directory instead of POSIX shared
   * memory (`/dev/shm/<name>` on Linux): for persistence, or containers sharing a volume.
   */
  directory?: string
  /**
   * Record who holds each number (default `true`): each holder (a process; in Node, each
   * JavaScript thread) takes a slot in the region and holds a kernel lock on it while it lives,
   * so the numbers of holders that ended come back: given back as a holder ends normally, and
   * reclaimed after a crash whenever a process opens the region or finds it full (and by
   * `reclaim()`). Costs 4 bytes per number and 32 KiB a region. Fixed when the region is
   * created: opening an existing region keeps its choice (see `SharedMemory.tracksHolders`).
   */
  holders?: boolean
  /**
   * Refuse a region that another user owns or that grants any permission to group or others
   * (`ERR_REGION_NOT_PRIVATE`), before reading a byte of it (default `false`). For per-user
   * regions in a directory everyone can write, such as `/dev/shm`, where another user could
   * create one first, fill it, or watch it. `getPort()`'s per-user pool is opened this way.
   */
  private?: boolean
  /**
   * What the numbers stand for, a 64-bit value written when this call creates the region. When
   * the region exists, its tag must be this one (`ERR_TAG_MISMATCH`), so programs that mean
   * different things by one name are stopped. Absent: created with `0n`, any tag accepted.
   */
  tag?: bigint
}

/** A named region of shared memory, mapped into this process (Go's `SharedMemory`). */
export declare class SharedMemory {
  private constructor()
  /**
   * The region's name: on Linux, `/dev/shm/<name>` unless a `directory` was given. Still readable
   * after `close()`, as `size` is (the other getters throw `ERR_REGION_CLOSED` then).
   */
  readonly name: string
  /**
   * The bitmap size in bytes, as given to `loadShared` (Go's `Size()`): room for `size * 8`
   * numbers. A queue region's size is its capacity. Still readable after `close()`.
   */
  readonly size: number
  /** Which allocator the region holds: `'bitmap'`, or `'queue'` (made by `ConcurrentQueue.open`). */
  readonly kind: 'bitmap' | 'queue'
  /**
   * How many numbers the region was created for: `size * 8`, unless it was created by
   * `ConcurrentBitmap.open` with a smaller `capacity`. Allocators over it hand out `0` to
   * `capacity - 1`.
   */
  readonly capacity: number
  /** Whether the region records which process holds each number (fixed at its creation). */
  readonly tracksHolders: boolean
  /** The tag written when the region was created (`0n` if none). */
  readonly tag: bigint
  /**
   * A snapshot copy of the bitmap as 32-bit blocks (Go's `Blocks()`): number `n` is allocated
   * when bit `n % 32` of block `Math.floor(n / 32)` is set. Changing the copy changes nothing.
   * @throws `ERR_REGION_CLOSED`; `ERR_KIND_MISMATCH` for a queue region, which has no bitmap.
   */
  blocks(): Uint32Array
  /** Unmaps the region in this process (it stays for the others). Idempotent. */
  close(): void
}

/**
 * Opens the region `name` with a bitmap of `size` bytes (`size * 8` numbers), creating it if it
 * does not exist (Go's `LoadShared`). Creation is race-free: when several processes open a new
 * region at once, exactly one initialises it and none sees it half-written. Its storage is
 * reserved at creation, so a full `/dev/shm` throws `ENOSPC` here instead of crashing later.
 *
 * @param name 1–255 letters, digits, `.`, `_` or `-`; not `.` or `..`.
 * @param size bytes of bitmap, an integer from 1 to `MAX_SIZE`. Absent: open the existing region
 *   whatever its size (read from its header); it is never created then.
 * In a region with holders, opening it also takes this thread's holder slot (once per thread
 * and region) and reclaims the numbers of holders that are gone.
 *
 * @throws `ERR_INVALID_NAME`, `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_TYPE`, `ERR_SIZE_MISMATCH`,
 *   `ERR_TAG_MISMATCH`, `ERR_INCOMPATIBLE_REGION` (also for a FIFO under the name),
 *   `ERR_TOO_MANY_HOLDERS`, `ENOENT` (with `create: false`, or no size), `EACCES`, `ENOSPC`,
 *   `EMFILE`; what the system says of other things under the name, at once: `EISDIR` or
 *   `EINVAL` (a directory), `ENXIO` (a socket), `ELOOP` (a symbolic link).
 * @example
 * const mem = loadShared('ports', 128) // numbers 0..1023
 * const same = loadShared('ports') // the existing region, size 128
 */
export declare function loadShared(name: string, size?: number, options?: RegionOptions): SharedMemory

/**
 * Removes the region `name` (Go's `DestroyShared`). Processes that have it open keep working on
 * their mapping; the next `loadShared` creates a fresh, empty region. Only a numballoc region is
 * removed (finished, cut short, or left unfinished by a creator that died): anything else under
 * the name (a foreign file, a FIFO, a directory, a symbolic link) is refused and left in place.
 * @returns whether the region existed.
 * @throws `ERR_INCOMPATIBLE_REGION` for what is not a region; `EACCES` (also for a region created
 *   with `mode: 0`, which not even its owner may read to tell it is a region: remove it with
 *   `rm`), `ENXIO` (a socket).
 */
export declare function destroyShared(name: string, options?: Pick<RegionOptions, 'directory'>): boolean

/** One holder named by a region's holder records. */
export interface HolderReport {
  /**
   * The process id of the holder, as it saw itself (in a container, its pid there); 0 if not
   * known. For display: liveness never depends on it.
   */
  pid: number
  /**
   * Whether it is still running (the kernel holds its lock, or that could not be checked); a
   * dead holder's numbers are what `reclaim()` frees.
   */
  alive: boolean
  /** How many numbers it holds. */
  count: number
}

/** What `inspectShared` found in a region: a snapshot, read without changing anything. */
export interface RegionReport {
  /** The region's name. */
  name: string
  /** Where it lives: `/name` for POSIX shared memory (`/dev/shm/name` on Linux), else its file. */
  path: string
  /** Which allocator it holds. */
  kind: 'bitmap' | 'queue'
  /** Bitmap size in bytes (a queue's capacity). */
  size: number
  /** Numbers it was created for (`size * 8` unless fewer were asked for). */
  capacity: number
  /** Whether it records which process holds each number. */
  tracksHolders: boolean
  /** Its tag (`0n` if none). */
  tag: bigint
  /** Numbers allocated. */
  inUse: number
  /** Numbers held by processes that are no longer running. */
  heldByDead: number
  /** Every holder of numbers, most numbers first (empty without holder records). */
  holders: HolderReport[]
  /**
   * Numbers allocated in each run of `cellSize` consecutive numbers, from 0 up: a picture of
   * where the allocated numbers are. The last cell may cover fewer numbers.
   */
  cells: number[]
  /** Numbers per cell. */
  cellSize: number
  /** What waits in a queue region; absent for a bitmap. */
  queue?: QueueReport
}

/** What waits in a queue region (`inspectShared(name).queue`). */
export interface QueueReport {
  /** How many numbers wait to be handed out. */
  waiting: number
  /** The first of them (at most 16), the next to be handed out first. */
  next: number[]
  /**
   * How many of them a holder left stranded by stopping (or stalling) in the middle of a call:
   * allocators take them first, so they come back late, never twice and never lost.
   */
  stranded: number
}

/** Options of `inspectShared`. */
export interface InspectOptions extends Pick<RegionOptions, 'directory'> {
  /** About how many cells `cells` should have (default 64, at most one per number). */
  cells?: number
}

/**
 * Reads the region `name` without changing it or needing write permission: capacity, numbers in
 * use, who holds them (alive or dead) and where they are. What `numballoc inspect` prints.
 * @throws `ENOENT`, `EACCES`, `ERR_INCOMPATIBLE_REGION`, `ERR_INVALID_NAME`.
 */
export declare function inspectShared(name: string, options?: InspectOptions): RegionReport

/**
 * Opens the existing region `name`, frees every number whose holder is gone, and returns how
 * many came back: what `numballoc reclaim` prints. 0 for a region without holders.
 * @throws `ENOENT`, `EACCES`, `ERR_INCOMPATIBLE_REGION`, `ERR_INVALID_NAME`.
 * @example
 * reclaimShared('worker-ids') // 3 after a worker holding 3 IDs was killed
 */
export declare function reclaimShared(name: string, options?: Pick<RegionOptions, 'directory'>): number

/**
 * The names of the numballoc regions in `directory`, or in POSIX shared memory (`/dev/shm`; Linux
 * only, other systems cannot list it: `ENOTSUP`), sorted. Objects this process cannot read are
 * left out.
 */
export declare function listShared(options?: Pick<RegionOptions, 'directory'>): string[]

/** Go's `Allocator` interface: `Max()`, `Allocate()`, `Free(n)`. */
export interface Allocator {
  /** The allocator hands out the numbers `0` to `max - 1`. */
  readonly max: number
  /**
   * Claims a number no other holder has.
   * @throws `ERR_NO_FREE_NUMBER` when every number is in use.
   */
  allocate(): number
  /**
   * Gives a number back.
   * @throws `ERR_NOT_ALLOCATED` if it is not allocated, `ERR_OUT_OF_RANGE` if not in `[0, max)`.
   */
  free(n: number): void
}

/**
 * Which free number an allocator hands out:
 * - `'any'` (default): any free number, searched from where this allocator last found one;
 *   each process starts in a different part of the bitmap, so processes rarely touch the same
 *   cache line. The fastest under contention.
 * - `'lowest'`: the lowest free number, like Linux's `ida_alloc`: dense worker IDs `0..N-1`.
 *   Even under concurrency, no number below the result was free for the whole call. Costs a
 *   read per 64 numbers below the result.
 * - `'cyclic'`: the next free number after the last one handed out from the region by any
 *   process, wrapping at `max`, like Linux PIDs: a number just freed is the last to come back
 *   (a port in TIME_WAIT is not handed out again at once).
 *
 * With `'lowest'` and `'cyclic'` every call goes through the same few numbers, so a call that
 * lost a race for one to another process waits a moment (0.5 µs, doubling while it keeps
 * losing, at most 64 µs) and lets the winner go on: two processes at full speed then come
 * close to the speed of one, instead of a fraction of it. So does `allocateInRange` (the
 * lowest in a range) under any policy; `allocate()` with `'any'` never waits.
 */
export type Policy = 'any' | 'lowest' | 'cyclic'

/** Options of an allocator. */
export interface ConcurrentBitmapOptions {
  /** Which free number `allocate()` hands out (default `'any'`). */
  policy?: Policy
  /**
   * When no number is free, first free the numbers of holders that died (as `reclaim()` does)
   * and search again (default `true`; only in regions that record holders). A cluster whose
   * workers crash keeps working without anyone calling `reclaim()`.
   */
  reclaimWhenFull?: boolean
  /**
   * When this process exits normally, give back every number this allocator still holds, as
   * `close({ release: true })` does (default `false`). A process that is killed cannot; its
   * numbers come back through `reclaim()`.
   */
  releaseOnExit?: boolean
}

/**
 * A number held until released. Implements `Symbol.dispose`, so in TypeScript 5.2+
 * `using id = ids.acquire()` (or `using port = await pool.acquire()`) releases it when the scope
 * ends.
 */
export declare class Lease implements Disposable {
  private constructor()
  /** The number held. */
  readonly value: number
  /** Whether `release()` (or disposal) has given it back. Stays `false` when a release failed. */
  readonly released: boolean
  /**
   * Gives the number back, if its allocator still holds it for this lease: a lease never frees
   * a number that was freed another way meanwhile and handed to another handle of this thread,
   * to another process, or to its own allocator again (its allocator refuses a plain `free` of
   * a leased number). In a region without holder records, a number another process freed and
   * took again cannot be told from one still held, and is freed.
   * @throws `ERR_LEASE_RELEASED` if it was released already (never a double free).
   * @throws `ERR_NOT_ALLOCATED` if its allocator no longer holds the number.
   * @throws `ERR_REGION_CLOSED` if its allocator is closed (the lease stays unreleased).
   */
  release(): void
  /** Releases the number if it is not released yet (so `using` after `release()` is fine). */
  [Symbol.dispose](): void
}

/** Options of `ConcurrentBitmap.close`. */
export interface CloseOptions {
  /**
   * First give back every number this allocator took and still holds (default `false`). In a
   * region without holder records "still holds" means "still allocated": a number another
   * process freed and took again since is freed too, so there use `release` only where nobody
   * frees numbers they did not take. Several allocators of one region on one thread tell their
   * numbers apart by what each took: one freed from another thread or process and then taken
   * by a sibling counts as the first taker's too, and neither gives it back here (the thread's
   * end does, with holder records).
   */
  release?: boolean
}

/** The process holding a number. */
export interface Holder {
  /**
   * The holder's process id as it saw itself (in a container, its pid there), 0 if not known.
   * For display: numballoc never judges a holder by its pid.
   */
  readonly pid: number
}

/** Options of `ConcurrentBitmap.open`. */
export interface ConcurrentBitmapOpenOptions extends RegionOptions, ConcurrentBitmapOptions {
  /**
   * How many numbers the allocator hands out (`0` to `capacity - 1`). The region is sized to
   * `Math.ceil(capacity / 8)` bytes, so every process should open it with the same capacity.
   * Absent: open the existing region, whatever its size, and hand out all its numbers.
   */
  capacity?: number
}

/**
 * What every allocator kind offers: `ConcurrentBitmap` and `ConcurrentQueue` both extend it
 * (it is not exported itself). Code written against it runs on either.
 */
declare abstract class AllocatorBase implements Allocator, AsyncAllocator {
  /** The allocator hands out the numbers `0` to `max - 1`. */
  readonly max: number
  /**
   * Claims a number no other holder has: a bitmap's by its `policy`, a queue's the number freed
   * longest ago. Never fails while some number stayed free for the whole call.
   * @throws `ERR_NO_FREE_NUMBER` ("could not allocate a free number") when every number is in use;
   *   `ERR_REGION_CLOSED`.
   */
  allocate(): number
  /** As `allocate()`, but returns `null` instead of throwing when every number is in use. */
  tryAllocate(): number | null
  /**
   * Allocates a number as a `Lease`, released by `lease.release()` or at the end of a
   * `using` scope.
   * @throws as `allocate()`.
   * @example
   * {
   *   using port = pool.acquire()
   *   server.listen(8000 + port.value)
   * } // released here
   */
  acquire(): Lease
  /**
   * Gives a number back so another holder can get it.
   * @throws `ERR_NOT_ALLOCATED` if it is not allocated (a double free: nothing changes), or if
   *   this allocator holds it as a `Lease` (its `release()` gives it back);
   *   `ERR_OUT_OF_RANGE` (`RangeError`) if not an integer in `[0, max)`; `ERR_INVALID_ARG_TYPE`
   *   (`TypeError`) if not a number; `ERR_REGION_CLOSED`.
   */
  free(n: number): void
  /**
   * Frees every number of the region whose holder is gone, and returns how many came back
   * (including numbers a holder was in the middle of taking or freeing when it died). A holder
   * is gone when the kernel no longer holds its slot's lock, whatever its pid, namespace or
   * `/proc` say; one whose state cannot be told counts as alive. Never frees a live holder's
   * number. Several processes may reclaim at once: each number is freed once. Costs a system
   * call per holder slot in use, and one pass over the holder records only when a holder is
   * gone. Returns 0 for regions without holders. On a `ConcurrentQueue` (and through
   * `reclaimShared` or `numballoc reclaim` on a queue region) it then reads every state once to
   * put right a count of held numbers that says more than they do (a region damaged or copied
   * while in use would otherwise say "none free" while numbers wait); only if nothing moved
   * meanwhile, so it never lowers a sound count. Reclaiming when full does not do this.
   * @throws `ERR_REGION_CLOSED`.
   */
  reclaim(): number
  /**
   * The holder of `n` right now (also while it is being allocated): its `pid` as it saw itself,
   * 0 if not known. `null` if nobody holds `n` or the region does not record holders.
   * @throws `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_TYPE`, `ERR_REGION_CLOSED`.
   */
  holderOf(n: number): Holder | null
  /**
   * Whether `n` is allocated right now, by any process.
   * @throws `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_TYPE`, `ERR_REGION_CLOSED`.
   */
  isAllocated(n: number): boolean
  /** How many numbers below `max` are in use, by all processes: a snapshot that reads the whole bitmap (or every state of a queue). */
  count(): number
  /**
   * Stops using the allocator (and its region, if it came from `open`). Idempotent. The numbers
   * it holds stay allocated, unless `release: true` gives back every number this allocator
   * allocated and still holds. Its reference to the region goes at once (the region's mapping
   * and descriptor with it, once nothing else in the process has it open), not when the
   * allocator is garbage-collected.
   */
  close(options?: CloseOptions): void
}

/**
 * The lock-free allocator over a shared region (Go's `ConcurrentBitmap`). Every process that
 * builds one over the same region shares its numbers: a number is held by at most one caller
 * between its `allocate()` and its `free()`.
 *
 * @example
 * const ids = ConcurrentBitmap.open('worker-ids', { capacity: 64 })
 * const id = ids.allocate() // unique among all processes using 'worker-ids'
 * ids.free(id)
 * ids.close()
 */
export declare class ConcurrentBitmap extends AllocatorBase {
  /**
   * An allocator over `mem` (Go's `ConcurrentBitmap(mem, max)`): `max` of `0` or absent means
   * the region's capacity, `mem.capacity` (`mem.size * 8` unless it was created for a capacity);
   * otherwise `Math.min(mem.capacity, max)`. Closing `mem` closes the allocator.
   * @throws `ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE` (policy), `ERR_OUT_OF_RANGE`,
   *   `ERR_REGION_CLOSED`, `ERR_KIND_MISMATCH` (a queue region), `ENOMEM` (this process cannot
   *   have the bookkeeping of what the allocator holds: a bit per number).
   */
  constructor(mem: SharedMemory, max?: number, options?: ConcurrentBitmapOptions)
  /**
   * Opens (or creates) a region sized for `capacity` numbers and an allocator over it, in one
   * step. The allocator owns the region: its `close()` closes the region too.
   * Called on a subclass, it returns an instance of the subclass (constructed with the same
   * arguments as `new ConcurrentBitmap(mem, max, options)`).
   * @throws as `loadShared`, and `ERR_SIZE_MISMATCH` if the region was made for another capacity.
   */
  static open<T extends ConcurrentBitmap>(
    this: new (mem: SharedMemory, max?: number, options?: ConcurrentBitmapOptions) => T,
    name: string,
    options?: ConcurrentBitmapOpenOptions,
  ): T
  /** Which free number `allocate()` hands out. */
  readonly policy: Policy
  /**
   * Claims the lowest free number in `[min, max]`, both inclusive (Linux's `ida_alloc_range`).
   * Never fails while some number of the range stayed free for the whole call.
   * @throws `ERR_NO_FREE_NUMBER` when every number of the range is in use; `ERR_OUT_OF_RANGE`
   *   unless `0 <= min <= max < this.max`.
   * @example
   * const port = 8000 + ports.allocateInRange(0, 99) // a port in 8000..8099
   */
  allocateInRange(min: number, max: number): number
  /** As `allocateInRange`, but returns `null` instead of throwing when the range is full. */
  tryAllocateInRange(min: number, max: number): number | null
  /**
   * Claims `count` consecutive numbers starting at a multiple of `align` (default 1), all or
   * nothing, and returns the first. No other process can obtain a number inside a block it did
   * not get, and a failed attempt leaves nothing allocated. Give it back with `freeBlock`.
   * @throws `ERR_NO_FREE_NUMBER` when no such run is free; `ERR_OUT_OF_RANGE` unless
   *   `1 <= count <= max` and `align >= 1`.
   * @example
   * const first = slots.allocateBlock(4, 4) // e.g. 8, for 8, 9, 10, 11
   */
  allocateBlock(count: number, align?: number): number
  /** As `allocateBlock`, but returns `null` instead of throwing when no run is free. */
  tryAllocateBlock(count: number, align?: number): number | null
  /**
   * Frees the `count` numbers from `first` (a block, or any run of allocated numbers).
   * @throws `ERR_NOT_ALLOCATED`, naming the first that is not allocated, or that this allocator
   *   holds as a `Lease` (nothing changes);
   *   `ERR_OUT_OF_RANGE`.
   */
  freeBlock(first: number, count: number): void
  /**
   * Claims `n` numbers at once, all or nothing (one call from JavaScript instead of `n`).
   * @throws `ERR_NO_FREE_NUMBER` if fewer than `n` are free (nothing is allocated);
   *   `ERR_OUT_OF_RANGE` unless `0 <= n <= max`.
   */
  allocateMany(n: number): number[]
  /**
   * Frees every number of `numbers` at once. Each must be in `[0, max)`, listed once and
   * allocated; otherwise nothing changes.
   * @throws `ERR_NOT_ALLOCATED` (also for a number listed twice, or held as a `Lease` of this
   *   allocator), `ERR_OUT_OF_RANGE`,
   *   `ERR_INVALID_ARG_TYPE`.
   */
  freeMany(numbers: ArrayLike<number>): void
}

/** Options of `ConcurrentQueue`. */
export interface ConcurrentQueueOptions {
  /**
   * When no number is free, first free the numbers of holders that died (as `reclaim()` does)
   * and look again (default `true`; only in regions that record holders).
   */
  reclaimWhenFull?: boolean
  /**
   * When this process exits normally, give back every number this allocator still holds, as
   * `close({ release: true })` does (default `false`).
   */
  releaseOnExit?: boolean
}

/** Options of `ConcurrentQueue.open`. */
export interface ConcurrentQueueOpenOptions extends RegionOptions, ConcurrentQueueOptions {
  /**
   * How many numbers the queue hands out (`0` to `capacity - 1`), `1` to `MAX_QUEUE_CAPACITY`.
   * Every process must open it with the same capacity (`ERR_SIZE_MISMATCH` otherwise).
   */
  capacity: number
}

/**
 * A lock-free first-in first-out allocator over a shared region: numbers come back in the
 * order they were freed, so the number freed longest ago is handed out first (a port rests in
 * TIME_WAIT as long as possible; wear spreads evenly over slots). A new queue hands out `0`,
 * `1`, `2`, ... in order. If `free(a)` returned before `free(b)` was called and both are still
 * free, `a` comes back before `b`; frees that overlap come back in the order they took their
 * place. A number whose free was interrupted (its process stalled or was killed mid-call) comes
 * back late, never twice and never lost. Every process that opens the region
 * shares its numbers, and a holder's numbers come back when it dies, as with `ConcurrentBitmap`.
 *
 * Every `allocate()` goes through the number at the head of the queue, so one that lost that
 * number to another process waits a moment before it goes on, as `'lowest'` and `'cyclic'`
 * bitmaps do (see `Policy`). A wait never depends on another process: one that was killed
 * slows nobody down.
 *
 * @example
 * const slots = ConcurrentQueue.open('gpu-slots', { capacity: 8 })
 * const slot = slots.allocate() // 0 first, then the slot freed longest ago
 * slots.free(slot)
 * slots.close()
 */
export declare class ConcurrentQueue extends AllocatorBase {
  /**
   * A queue over `mem`, a region made by `ConcurrentQueue.open` (opened with `loadShared(name)`).
   * @throws `ERR_KIND_MISMATCH` for a bitmap region; `ERR_INVALID_ARG_TYPE`, `ERR_REGION_CLOSED`.
   */
  constructor(mem: SharedMemory, options?: ConcurrentQueueOptions)
  /**
   * Opens (or creates) a queue region of `capacity` numbers and the allocator over it. The
   * allocator owns the region: its `close()` closes the region too. Called on a subclass, it
   * returns an instance of the subclass.
   * @throws as `loadShared`; `ERR_SIZE_MISMATCH` if the queue was made with another capacity;
   *   `ERR_KIND_MISMATCH` if the region holds a bitmap; `ERR_OUT_OF_RANGE` for a capacity
   *   outside `1..MAX_QUEUE_CAPACITY`.
   */
  static open<T extends ConcurrentQueue>(
    this: new (mem: SharedMemory, options?: ConcurrentQueueOptions) => T,
    name: string,
    options: ConcurrentQueueOpenOptions,
  ): T
  /**
   * The numbers waiting, the next to be handed out first (at most `limit`, default 100): a
   * snapshot, each number read atomically, not the whole at one instant. Reads every number's
   * state.
   */
  waiting(limit?: number): number[]
}

/** A value, or a promise of it: what `AsyncAllocator`'s calls return. */
export type Awaitable<T> = T | Promise<T>

/**
 * What every allocator offers, on one machine or beyond: the shared-memory allocators return
 * their results at once, `RedisAllocator` returns promises. Code that `await`s each call runs on
 * either:
 * @example
 * async function withId(ids: AsyncAllocator, work: (id: number) => Promise<void>) {
 *   const id = await ids.allocate()
 *   try {
 *     await work(id)
 *   } finally {
 *     await ids.free(id)
 *   }
 * }
 */
export interface AsyncAllocator {
  /** The allocator hands out the numbers `0` to `max - 1`. */
  readonly max: number
  /** Claims a number no other holder has. @throws `ERR_NO_FREE_NUMBER` when every number is in use. */
  allocate(): Awaitable<number>
  /** As `allocate()`, but `null` instead of `ERR_NO_FREE_NUMBER`. */
  tryAllocate(): Awaitable<number | null>
  /** Gives a number back. @throws `ERR_NOT_ALLOCATED` (a double free), `ERR_OUT_OF_RANGE`. */
  free(n: number): Awaitable<void>
  /** A number held until the lease is released. */
  acquire(): Awaitable<{ readonly value: number; release(): Awaitable<void> }>
  /** Whether `n` is held right now. */
  isAllocated(n: number): Awaitable<boolean>
  /** How many numbers are held. */
  count(): Awaitable<number>
  /** Who holds `n` (at least its `pid`), or `null`. */
  holderOf(n: number): Awaitable<Holder | null>
  /** Gives back the numbers of holders that are gone; returns how many. */
  reclaim(): Awaitable<number>
  /** Stops using the allocator; `release: true` first gives back what it holds. */
  close(options?: CloseOptions): Awaitable<void>
}

/** Options of `RedisAllocator.open`. */
export interface RedisAllocatorOptions {
  /**
   * The server: a URL (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS,
   * `unix:///path/to/redis.sock[?db=N]`, with a password `unix://:password@localhost/path`; a user needs a password:
   * `redis://user@host` is `ERR_INVALID_URL`),
   * for which the allocator makes a connection of its own
   * and closes it with `close()`; or the app's own client, an `ioredis` instance or a connected
   * `node-redis` (`redis` package, v4 or later) client, which it uses and leaves open. Their Redis
   * Cluster clients (`new Redis.Cluster(...)`, `createCluster(...)`) work too: every key of an
   * allocator has one hash tag, so each allocator lives in one slot.
   */
  redis: string | RedisClientLike
  /** How many numbers the allocator hands out (`0` to `capacity - 1`), 1 to `MAX_REDIS_CAPACITY`. */
  capacity: number
  /**
   * Which free number `allocate()` hands out (default `'any'`): `'any'` searches from a random
   * point, `'lowest'` the lowest free number, `'cyclic'` the next after the last one handed out
   * by anyone. Every handle of the allocator must ask for the same.
   */
  policy?: Policy
  /**
   * How long this handle's numbers stay held after it stops renewing its lease (it renews three
   * times per lease while open), in ms: 100 to 2^31 - 1, default 10,000. A process that dies
   * gets its numbers back to others this long after its last renewal; a holder cut off from
   * Redis, or whose event loop stalls, loses them (its leases' `signal` aborts) slightly before
   * that (1% of the lease earlier, for clocks that run at different rates).
   */
  leaseMs?: number
  /**
   * How long a call waits for Redis before it fails with `ERR_REDIS_TIMEOUT`, in ms: 2 to
   * 2^31 - 1, default 5,000. A call never waits longer, however many round trips it takes
   * (`close({ release: true })` included); one that timed out may still have run on the server.
   */
  timeoutMs?: number
  /**
   * How many replicas must have each write before a call succeeds (default 0: Redis's
   * asynchronous replication, in which a failover can lose the last writes and hand a number out
   * twice). Waits with `WAIT` for at most `timeoutMs / 2`; fewer confirmations fail the call
   * with `ERR_REDIS_REPLICAS`, and an allocation is given back. `WAIT` narrows the window, it
   * does not close it: Redis replication is not a consensus protocol. Needs a client of one
   * server (`WAIT` names no key a Cluster client could route by): `ERR_INVALID_ARG_VALUE`.
   */
  replicas?: number
}

/** The part of an ioredis or node-redis client the allocator uses. */
export type RedisClientLike =
  | { call(command: string, ...args: string[]): Promise<unknown>; status: string }
  | { sendCommand(args: string[]): Promise<unknown>; isOpen: boolean }
  | { sendCommand(firstKey: string | undefined, isReadonly: boolean, args: string[]): Promise<unknown>; getSlotMaster(slot: number): unknown }

/** The holder of a number of a `RedisAllocator`. */
export interface RedisHolder extends Holder {
  /** The holder's handle: an id of its current lease (a new one after a lost lease). */
  readonly owner: string
  /** The holder's process id on its machine. */
  readonly pid: number
  /** The holder's machine (`os.hostname()`). */
  readonly host: string
  /** When the holder's lease ends unless renewed, in ms since the epoch by the server's clock. */
  readonly expiresAt: number
  /** The fencing token of the grant that gave the holder this number. */
  readonly token: number
}

/**
 * A number of a `RedisAllocator` held until released, with the lease it depends on.
 * Implements `Symbol.asyncDispose`: `await using id = await ids.acquire()`.
 */
export declare class RemoteLease implements AsyncDisposable {
  private constructor()
  /** The number held. */
  readonly value: number
  /**
   * The fencing token of this grant: larger than every token the allocator handed out before.
   * Pass it to a downstream system with each write, so it can refuse a holder whose lease has
   * ended and whose number another holder has since been given a larger token for.
   */
  readonly token: number
  /**
   * Aborted (with an `ERR_LEASE_LOST` error as its `reason`) when this handle's lease is lost:
   * not renewed in time (Redis unreachable, the event loop stalled), ended by the server, or the
   * allocator closed. Happens no later than anyone else can be given the number, as far as the
   * holder's and the server's clocks run at rates within 1% of each other. Reading `aborted` or
   * calling `throwIfAborted()` checks the clock, so a process stopped past its lease sees the
   * loss at once, before the timer that aborts the signal has run.
   */
  readonly signal: AbortSignal
  /** Whether `release()` has given it back. */
  readonly released: boolean
  /**
   * Gives the number back (nothing to do if the lease was lost, or if an earlier `release()`
   * that timed out gave it back). Once it resolves, the signal never aborts.
   * @throws `ERR_LEASE_RELEASED` if released already; the Redis errors.
   */
  release(): Promise<void>
  /** Releases the number if it is not released yet. */
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * An allocator over a Redis (7.0 or later) or Valkey server: every machine, process and thread
 * that opens the same name on the same server shares its numbers. Each operation is one Lua
 * script, atomic on the server. Each handle holds a lease it renews while open; a holder that
 * dies or is cut off stops renewing, and its numbers come back `leaseMs` later, reclaimed by the
 * next allocation (no sweeper to run). Events: `'lost'` (an `ERR_LEASE_LOST` error) when this
 * handle's lease was lost; the next call takes a new lease.
 *
 * @example
 * const ids = await RedisAllocator.open('worker-ids', { redis: 'redis://127.0.0.1:6379', capacity: 1024, policy: 'lowest' })
 * const id = await ids.allocate() // unique among every process of every machine on that server
 * await ids.free(id)
 * await ids.close()
 */
export declare class RedisAllocator implements AsyncAllocator, AsyncDisposable {
  private constructor()
  /**
   * Opens the allocator `name` (1-200 characters, no braces, spaces, control or format
   * characters) on the server, creating it if absent, and takes this handle's lease. The server
   * must keep the allocator's keys: `maxmemory-policy` `noeviction` (the default) or `volatile-*`;
   * an evicted key makes every call fail with `ERR_ALLOCATOR_GONE` (never a number handed out
   * twice).
   * @throws `ERR_SIZE_MISMATCH` / `ERR_POLICY_MISMATCH` if it exists with another capacity or
   *   policy; `ERR_INCOMPATIBLE_REGION` if keys of that name hold something else (another type
   *   of key, another format, meta fields that do not parse); `ERR_ALLOCATOR_GONE` if some of its
   *   keys are missing; `ERR_REDIS_REPLICAS` with `replicas`, if its creation or lease is not
   *   confirmed in time;
   *   `ERR_INVALID_NAME`, `ERR_INVALID_URL`, `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_TYPE`; the
   *   Redis errors (`ERR_REDIS_UNAVAILABLE`, `ERR_REDIS_TIMEOUT`, `ERR_REDIS_VERSION`, `ERR_REDIS`).
   */
  static open(name: string, options: RedisAllocatorOptions): Promise<RedisAllocator>
  /** The allocator's name. */
  readonly name: string
  /** The allocator hands out the numbers `0` to `max - 1` (its capacity). */
  readonly max: number
  /** Which free number `allocate()` hands out. */
  readonly policy: Policy
  /** This handle's lease, in ms. */
  readonly leaseMs: number
  /**
   * Claims a number no other holder has, by the policy; first gives back the numbers of leases
   * that ended, if none is free otherwise.
   * @throws `ERR_NO_FREE_NUMBER` when every number is held; `ERR_LEASE_LOST` when this handle's
   *   lease ended twice in a row before Redis answered (a round trip longer than `leaseMs`, a
   *   stalling event loop); `ERR_ALLOCATOR_GONE`; `ERR_REGION_CLOSED`; the Redis errors.
   */
  allocate(): Promise<number>
  /** As `allocate()`, but `null` instead of `ERR_NO_FREE_NUMBER`. */
  tryAllocate(): Promise<number | null>
  /** A number in `[min, max]`. @throws as `allocate()`; `ERR_OUT_OF_RANGE`. */
  allocateInRange(min: number, max: number): Promise<number>
  /** As `allocateInRange`, but `null` when none is free. */
  tryAllocateInRange(min: number, max: number): Promise<number | null>
  /**
   * `count` consecutive numbers, the first a multiple of `align` (default 1), all or none: the
   * lowest such run. Resolves with the first. @throws as `allocate()`; `ERR_OUT_OF_RANGE`.
   */
  allocateBlock(count: number, align?: number): Promise<number>
  /** As `allocateBlock`, but `null` when no such run is free. */
  tryAllocateBlock(count: number, align?: number): Promise<number | null>
  /** Frees `count` numbers from `first`, all or none. @throws as `freeMany`. */
  freeBlock(first: number, count: number): Promise<void>
  /** `n` numbers in one round trip, all or none. @throws as `allocate()`; `ERR_OUT_OF_RANGE`. */
  allocateMany(n: number): Promise<number[]>
  /**
   * Frees every number of `numbers` in one round trip, all or none.
   * @throws `ERR_NOT_ALLOCATED` (nothing freed) if one is not held by this handle under its
   *   current lease (as `free`), or appears twice.
   */
  freeMany(numbers: ArrayLike<number>): Promise<void>
  /**
   * Gives back a number this handle holds, under the lease current when it is called (never
   * under a later one).
   * @throws `ERR_NOT_ALLOCATED` if this handle does not hold it: never allocated, freed already,
   *   held by another handle, or held under a lease this handle lost (its number may be someone
   *   else's now, so it is never freed from here, even when that lease is lost while the call
   *   waits), or held as a `RemoteLease` of this handle (its `release()` gives it back);
   *   `ERR_OUT_OF_RANGE`; `ERR_INVALID_ARG_TYPE`.
   */
  free(n: number): Promise<void>
  /** A number as a `RemoteLease`, with its fencing token and signal. @throws as `allocate()`. */
  acquire(): Promise<RemoteLease>
  /** Whether `n` is held right now, by anyone (also by a lease that ended and is not reclaimed yet). */
  isAllocated(n: number): Promise<boolean>
  /** How many numbers are held, by anyone. */
  count(): Promise<number>
  /** Who holds `n`: its lease's owner id, pid, host, lease end and grant token; `null` if free. */
  holderOf(n: number): Promise<RedisHolder | null>
  /** Gives back the numbers of every lease that has ended; resolves with how many. */
  reclaim(): Promise<number>
  /**
   * Stops renewing this handle's lease and closes the connection if it made it (a client passed
   * in stays open). Its numbers stay held until the lease ends, unless `release: true` gives them
   * back now. Its leases' signals abort. Calls still in flight fail with `ERR_REGION_CLOSED`
   * (what they were granted goes with the rest), and no `'lost'` is emitted. Idempotent: a
   * second call resolves when the first does, and its options change nothing. With
   * `release: true` it answers within `timeoutMs` too (`ERR_REDIS_TIMEOUT`: what it could not
   * give back stays held until the lease ends); the handle is closed either way.
   */
  close(options?: CloseOptions): Promise<void>
  /** `await using ids = await RedisAllocator.open(...)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void>
  // An EventEmitter (node:events) at run time, whose one event is 'lost': its methods are typed
  // here for that event, so that the types need no @types/node.
  /** Calls `listener` whenever this handle's lease is lost (`'lost'`: see `LostListener`). */
  on(event: 'lost', listener: LostListener): this
  /** Calls `listener` the next time this handle's lease is lost, once. */
  once(event: 'lost', listener: LostListener): this
  /** Stops calling `listener` (added with `on`, `once` or their aliases). */
  off(event: 'lost', listener: LostListener): this
  /** The same as `on`. */
  addListener(event: 'lost', listener: LostListener): this
  /** As `on`, called before the listeners already added. */
  prependListener(event: 'lost', listener: LostListener): this
  /** As `once`, called before the listeners already added. */
  prependOnceListener(event: 'lost', listener: LostListener): this
  /** The same as `off`. */
  removeListener(event: 'lost', listener: LostListener): this
  /** Removes every `'lost'` listener (every listener, without an event). */
  removeAllListeners(event?: 'lost'): this
  /** The `'lost'` listeners, in calling order. */
  listeners(event: 'lost'): LostListener[]
  /** The `'lost'` listeners as added (`once` wrappers included). */
  rawListeners(event: 'lost'): LostListener[]
  /** How many `'lost'` listeners there are (that are `listener`, if given). */
  listenerCount(event: 'lost', listener?: LostListener): number
  /** The events that have listeners: `['lost']` or `[]`. */
  eventNames(): Array<string | symbol>
  /** How many listeners of one event before Node warns of a leak (default 10). */
  setMaxListeners(n: number): this
  /** See `setMaxListeners`. */
  getMaxListeners(): number
  /** Calls the `'lost'` listeners with `error`, as the handle does when its lease is lost. */
  emit(event: 'lost', error: Error & { code: 'ERR_LEASE_LOST' }): boolean
}

/** Listens for `'lost'` on a `RedisAllocator`: the error says which lease ended and why. */
export type LostListener = (error: Error & { code: 'ERR_LEASE_LOST' }) => void

/** Where the functions that read or repair a Redis allocator without opening it go. */
export interface RedisServerOptions {
  /** A URL or a client, as `RedisAllocatorOptions.redis`. */
  redis: string | RedisClientLike
  /**
   * As `RedisAllocatorOptions.timeoutMs` (default 5,000): the whole call answers or fails within
   * it, however many round trips it takes.
   */
  timeoutMs?: number
}

/** What `inspectRedis` reads: a snapshot taken in one script, changing nothing. */
export interface RedisReport {
  /** The allocator's name. */
  name: string
  /** How many numbers it hands out (`0` to `capacity - 1`). */
  capacity: number
  /** Its policy, fixed when it was created. */
  policy: Policy
  /** Numbers held, by anyone (also under leases that ended and are not reclaimed yet). */
  inUse: number
  /** The last fencing token handed out. */
  token: number
  /** The server's clock when it was read, in ms since the epoch. */
  now: number
  /** Every lease: its owner id, pid and host, when it ends, whether it still runs, and how many numbers it holds. */
  holders: { owner: string; pid: number; host: string; expiresAt: number; alive: boolean; count: number }[]
  /** Numbers held under leases that ended: what `reclaimRedis` would free. */
  heldByDead: number
  /** Numbers held per run of `cellSize` numbers. */
  cells: number[]
  /** How many numbers each cell covers (the last one may cover fewer). */
  cellSize: number
}

/**
 * Reads the Redis allocator `name` without a lease or a change: what `numballoc inspect NAME
 * --redis URL` shows. `cells` (1-4096, default 64): about how many cells `cells` has.
 * @throws `ENOENT` if there is no allocator of that name; `ERR_INCOMPATIBLE_REGION` (nothing
 *   modified) if keys of that name hold something else; the Redis errors.
 */
export declare function inspectRedis(name: string, options: RedisServerOptions & { cells?: number }): Promise<RedisReport>

/**
 * The names of the Redis allocators on the server (a `SCAN`), sorted.
 * @throws `ERR_INVALID_ARG_VALUE` for a Redis Cluster client (list each node by a URL instead);
 *   `ERR_REDIS_TIMEOUT` if the whole `SCAN` does not finish within `timeoutMs`.
 */
export declare function listRedis(options: RedisServerOptions): Promise<string[]>

/**
 * Gives back the numbers of every lease of allocator `name` that has ended, and resolves with
 * how many: what `numballoc reclaim NAME --redis URL` does. Allocations do it by themselves.
 * @throws `ENOENT` if there is no allocator of that name; `ERR_INCOMPATIBLE_REGION` (nothing
 *   modified) if keys of that name hold something else; the Redis errors.
 */
export declare function reclaimRedis(name: string, options: RedisServerOptions): Promise<number>

/** Options of `PortPool.open`. */
export interface PortPoolOptions extends Pick<RegionOptions, 'directory' | 'mode'> {
  /** The first port of the pool, 1–65535. */
  from: number
  /** The last port of the pool (inclusive), `from`–65535. */
  to: number
  /**
   * Where the ports must be free, as `server.listen(port, host)` will use them. Default: where
   * `server.listen(port)` listens, the IPv6 wildcard (which covers IPv4 too) or, without IPv6,
   * the IPv4 wildcard: a port any program listens on, on any address, is skipped.
   */
  host?: string
}

/** Options of `PortPool.acquire`, `PortPool.getPort` and `getPort`: get-port's names. */
export interface GetPortOptions {
  /**
   * A preferred port or preferred ports, tried in order (`portNumbers(3000, 3100)` for a range);
   * when none is free, any port of the pool. Each must be inside the pool.
   */
  port?: number | Iterable<number>
  /** Ports never to hand out. */
  exclude?: Iterable<number>
  /** Where the port must be free, instead of the pool's `host`. */
  host?: string
  /**
   * get-port's option, accepted so that its calls compile unchanged, and ignored: a port from
   * numballoc is reserved for this process until it is released anyway.
   */
  reserve?: boolean
}

/**
 * A pool of ports shared by every process that opens it by name, backed by one region (its tag
 * records the port range). A port is handed out to one process at a time, and only when it can
 * be listened on right now: ports some other program uses are skipped, not handed out, and
 * tried again by later calls. Ports of processes that died come back by themselves when no
 * other port is free, or when one is preferred.
 *
 * @example
 * const pool = await PortPool.open('my-app-ports', { from: 9000, to: 9099 })
 * const port = await pool.getPort() // unique among all processes using 'my-app-ports'
 * http.createServer(handler).listen(port)
 */
export declare class PortPool {
  private constructor()
  /**
   * Opens (or creates) the pool `name` of the ports `from` to `to`. Every process must open it
   * with the same range.
   * @throws `ERR_OUT_OF_RANGE` (ports outside 1–65535, `from > to`, non-integers),
   *   `ERR_INVALID_ARG_TYPE`, `ERR_INVALID_HOST` (a host this machine cannot listen on),
   *   `ERR_POOL_MISMATCH` (the pool exists with other ports), and `loadShared`'s errors.
   *   Nothing is created when the arguments are bad.
   */
  static open(name: string, options: PortPoolOptions): Promise<PortPool>
  /** The region's name. */
  readonly name: string
  /** The first port. */
  readonly from: number
  /** The last port (inclusive). */
  readonly to: number
  /** The host ports are checked on, if one was given. */
  readonly host: string | undefined
  /**
   * A port that no other process of the pool holds and that can be listened on now: the first
   * free preferred port, else the next free port after the last one handed out (a port just
   * released is the last to come back). Held until `release(port)`, or until this process dies
   * and the pool reclaims it.
   * @throws `ERR_NO_FREE_NUMBER` when every port is held or in use by other programs;
   *   `ERR_OUT_OF_RANGE` for a preferred port outside the pool; `ERR_INVALID_HOST`.
   * @example
   * const port = await pool.getPort({ port: [3000, 3001], exclude: [3002] })
   */
  getPort(options?: GetPortOptions): Promise<number>
  /**
   * As `getPort`, without waiting: the checks that a port can be listened on are blocking binds
   * in native code (a `host` name is resolved with a blocking lookup). For code that cannot
   * await, such as a configuration file that is evaluated synchronously.
   */
  getPortSync(options?: GetPortOptions): number
  /**
   * As `getPort`, as a `Lease` whose `value` is the port: `using lease = await pool.acquire()`
   * releases it when the scope ends.
   */
  acquire(options?: GetPortOptions): Promise<Lease>
  /**
   * Gives a port back.
   * @throws `ERR_NOT_ALLOCATED` if it is not held, or is held as a `Lease` (from `acquire()`,
   *   whose `release()` gives it back); `ERR_OUT_OF_RANGE` outside the pool.
   */
  release(port: number): void
  /** The process holding `port`, or `null`. */
  holderOf(port: number): Holder | null
  /** How many ports of the pool are held, by all processes. */
  count(): number
  /** Frees the ports of processes that died (see `ConcurrentBitmap.reclaim`); returns how many. */
  reclaim(): number
  /** Stops using the pool; `release: true` first gives back every port this pool object holds. */
  close(options?: CloseOptions): void
}

/**
 * A drop-in for get-port's `getPort(options)`: a port that is free now and that no other process
 * using numballoc holds, coordinated through one pool per user (`numballoc-ports-<uid>`, or the
 * region named by `NUMBALLOC_PORT_POOL`; refused with `ERR_REGION_NOT_PRIVATE` if another user
 * made it or others may use it). Without a free preferred port it hands out a port of the
 * dynamic range 49152–65535 less the kernel's ephemeral range (`ip_local_port_range`, so
 * 61000–65535 by default: outgoing connections take ephemeral ports without asking anyone), the
 * next call moving on past the last one. The port stays held until `releasePort(port)` or until
 * the process exits (the pool reclaims it when it needs it).
 * @example
 * import { getPort, portNumbers } from 'numballoc'
 * const port = await getPort({ port: portNumbers(3000, 3100) })
 */
export declare function getPort(options?: GetPortOptions): Promise<number>

/**
 * `getPort(options)` without waiting, for code that cannot await: Jest and Playwright
 * configuration files, which are evaluated synchronously. Checks that a port can be listened on
 * with a blocking bind in native code; otherwise the same pool, options, errors and guarantees.
 * @example
 * // playwright.config.js: evaluated in the runner and again in each worker, which must agree
 * const { getPortSync, portNumbers } = require('numballoc')
 * process.env.PORT ??= String(getPortSync({ port: portNumbers(3000, 3100) }))
 * const port = Number(process.env.PORT)
 * module.exports = { webServer: { command: `PORT=${port} npm start`, port } }
 */
export declare function getPortSync(options?: GetPortOptions): number

/** Gives back a port `getPort` handed out. @throws `ERR_NOT_ALLOCATED`. */
export declare function releasePort(port: number): void

/**
 * get-port's `portNumbers(from, to)`: the ports `from` to `to`, inclusive, for the `port` option.
 * @throws `ERR_OUT_OF_RANGE` unless `1 <= from <= to <= 65535`, integers.
 */
export declare function portNumbers(from: number, to: number): Iterable<number>
