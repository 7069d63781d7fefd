//! The Node binding: functions over integer handles, wrapped into the typed classes of
//! `lib/regions.js`. No algorithm lives here, only conversions, handle state and error mapping.
//!
//! # Why this shape
//! `allocate` and `free` are the hot path, and what a call costs is mostly the binding: a
//! napi-rs generated function converts its arguments and result and looks up what it works on,
//! a raw N-API callback does only the entry and exit Node-API itself needs (BENCHMARKS.md has
//! the measurements that chose this). So each allocator gets its own two raw N-API functions
//! for the hot calls (`hot`), and the other calls are ordinary napi-rs functions over integer
//! handle ids into a per-thread table (`handles`): a wrong id is an error, never a wild pointer,
//! without a type-tag check.

mod handles;
mod held;
mod hot;
mod slot;

use std::cell::RefCell;
use std::path::PathBuf;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use numballoc_core::header::Kind;
use numballoc_core::{
    ConcurrentBitmap, ConcurrentQueue, Error as CoreError, HolderScope, OpenOptions, Policy, Region,
};

use handles::{Handle, HandleId};
use slot::{AnySlot, ClosedHoldings, Engine, Slot, Took};

/// An open `SharedMemory`: the mapping until `close()`, then `None`.
pub struct RegionSlot {
    region: RefCell<Option<Arc<Region>>>,
}

impl RegionSlot {
    fn region(&self, env: &Env) -> Result<Arc<Region>> {
        // Copied out before the error is made: making it can run a user's setter, which may
        // close this region (a borrow held across it would panic, and abort the process).
        let region = self.region.borrow().clone();
        region.ok_or_else(|| region_closed(env))
    }

    pub(crate) fn is_open(&self) -> bool {
        self.region.borrow().is_some()
    }

    fn close(&self) {
        self.region.borrow_mut().take();
    }
}

/// Allocator handles by region file (device, inode).
type Siblings = std::collections::HashMap<(u64, u64), Vec<std::rc::Weak<dyn Took>>>;

thread_local! {
    /// The allocator handles of this thread, by region file: `close({ release: true })` of one
    /// must not free a number that another handle of the same region took since (after this
    /// one's was freed through it), since both write the same holder record.
    static SIBLINGS: RefCell<Siblings> = RefCell::new(Siblings::new());
}

pub(crate) fn region_closed(env: &Env) -> Error {
    throw_js(
        env,
        "ERR_REGION_CLOSED",
        "the region is closed",
        ErrorClass::Error,
        None,
    )
}

enum ErrorClass {
    Error,
    RangeError,
    TypeError,
}

/// Throws a JavaScript error with `code` (and, for system errors, `errno`, `syscall`, `path`)
/// and returns the status that tells napi-rs an exception is pending.
fn throw_js(
    env: &Env,
    code: &str,
    message: &str,
    class: ErrorClass,
    os: Option<&CoreError>,
) -> Error {
    let build = || -> Result<()> {
        let code_value = env.create_string(code)?;
        let message_value = env.create_string(message)?;
        let mut raw = ptr::null_mut();
        let create = match class {
            ErrorClass::Error => sys::napi_create_error,
            ErrorClass::RangeError => sys::napi_create_range_error,
            ErrorClass::TypeError => sys::napi_create_type_error,
        };
        // SAFETY: env is the live environment of this call; the strings were created in it.
        let status = unsafe { create(env.raw(), code_value.raw(), message_value.raw(), &mut raw) };
        if status != sys::Status::napi_ok {
            return Err(Error::from_status(Status::GenericFailure));
        }
        let mut error = Object::from_raw(env.raw(), raw);
        if let Some(os) = os {
            if let Some(errno) = os.errno() {
                // Node reports errno negated, as libuv does.
                error.set_named_property("errno", -errno)?;
            }
            if let Some(syscall) = os.syscall() {
                error.set_named_property("syscall", syscall)?;
            }
            if let Some(path) = os.path() {
                error.set_named_property("path", path)?;
            }
        }
        env.throw(error)
    };
    match build() {
        Ok(()) => Error::from_status(Status::PendingException),
        Err(e) => e,
    }
}

/// Maps a core error to the JavaScript error `index.d.ts` documents.
fn to_js(env: &Env, error: CoreError) -> Error {
    let class = match error {
        CoreError::OutOfRange(_) => ErrorClass::RangeError,
        _ => ErrorClass::Error,
    };
    let os = error.syscall().is_some().then_some(&error);
    throw_js(env, error.code(), &error.to_string(), class, os)
}

fn not_a_handle(env: &Env, kind: &str) -> Error {
    throw_js(
        env,
        "ERR_INVALID_ARG_TYPE",
        &format!("not a {kind} handle"),
        ErrorClass::TypeError,
        None,
    )
}

fn memory(env: &Env, id: HandleId) -> Result<Rc<RegionSlot>> {
    match handles::get(id) {
        Some(Handle::Memory(slot)) => Ok(slot),
        _ => Err(not_a_handle(env, "SharedMemory")),
    }
}

fn bitmap(env: &Env, id: HandleId) -> Result<Rc<Slot<ConcurrentBitmap>>> {
    match handles::get(id) {
        Some(Handle::Bitmap(slot)) => Ok(slot),
        Some(Handle::Closed { .. }) => Err(region_closed(env)),
        _ => Err(not_a_handle(env, "ConcurrentBitmap")),
    }
}

/// An allocator handle of any kind.
fn allocator(env: &Env, id: HandleId) -> Result<Rc<dyn AnySlot>> {
    match handles::get(id) {
        Some(Handle::Bitmap(slot)) => Ok(slot),
        Some(Handle::Queue(slot)) => Ok(slot),
        Some(Handle::Closed { .. }) => Err(region_closed(env)),
        _ => Err(not_an_allocator(env)),
    }
}

fn not_an_allocator(env: &Env) -> Error {
    not_a_handle(env, "ConcurrentBitmap or ConcurrentQueue")
}

/// Numbers cross the boundary as doubles: every number below 2^53 is exact, and the largest
/// region holds 2^43 numbers. `lib/regions.js` has already checked they are non-negative integers
/// (the package exports no way to call the binding without it).
#[inline]
fn to_u64(n: f64) -> u64 {
    n as u64
}

/// The holder of every number taken on one JavaScript thread (the main thread, or one worker):
/// its slots stay while the thread runs, even after the handles that took numbers are closed or
/// collected, and are given back with every number still held when the thread ends: a worker
/// that exits or is terminated, or the process exiting normally (glibc runs the exiting
/// thread's thread-local destructors in `exit`). A process that dies otherwise leaves them to be
/// reclaimed. Exec-only: Node forks only to exec (`child_process`).
struct ThreadHolder(Arc<HolderScope>);

impl Drop for ThreadHolder {
    fn drop(&mut self) {
        // No JavaScript runs on this thread any more, so no handle can use these slots again.
        self.0.end();
    }
}

thread_local! {
    static SCOPE: ThreadHolder = ThreadHolder(HolderScope::exec_only(true));
}

/// A tag as the 64-bit value it is, or `ERR_OUT_OF_RANGE` (never truncated).
fn tag_value(env: &Env, tag: BigInt) -> Result<u64> {
    match tag.get_u64() {
        (false, value, true) => Ok(value),
        _ => Err(throw_js(
            env,
            "ERR_OUT_OF_RANGE",
            "a tag must be >= 0n and < 2n ** 64n",
            ErrorClass::RangeError,
            None,
        )),
    }
}

/// Opens or creates a region (see `loadShared`): `kind` `'bitmap'` of `size` bytes, `'queue'`
/// of `capacity` numbers, or `'any'` to open an existing one whatever its kind and size. Returns
/// its handle.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn region_open(
    env: Env,
    name: String,
    kind: String,
    size: Option<f64>,
    capacity: Option<f64>,
    create: bool,
    mode: u32,
    directory: Option<String>,
    holders: bool,
    tag: Option<BigInt>,
    private: bool,
) -> Result<HandleId> {
    let options = OpenOptions {
        private,
        create,
        mode,
        directory: directory.map(PathBuf::from),
        holders,
        tag: tag.map(|t| tag_value(&env, t)).transpose()?,
        capacity: capacity.map(to_u64),
        scope: Some(SCOPE.with(|holder| holder.0.clone())),
        reclaim: true,
    };
    let region = match (kind.as_str(), size, capacity) {
        ("queue", _, Some(capacity)) => Region::open_queue(&name, to_u64(capacity), &options),
        ("bitmap", Some(size), _) => Region::open(&name, to_u64(size), &options),
        ("any", None, _) => Region::open_existing(&name, &options),
        _ => {
            return Err(throw_js(
                &env,
                "ERR_INVALID_ARG_VALUE",
                &format!("cannot open a region of kind {kind:?} with size {size:?} and capacity {capacity:?}"),
                ErrorClass::TypeError,
                None,
            ))
        }
    }
    .map_err(|e| to_js(&env, e))?;
    Ok(handles::insert(Handle::Memory(Rc::new(RegionSlot {
        region: RefCell::new(Some(Arc::new(region))),
    }))))
}

/// The region's kind: `'bitmap'` or `'queue'`.
#[napi]
pub fn region_kind(env: Env, memory_id: HandleId) -> Result<&'static str> {
    Ok(memory(&env, memory_id)?.region(&env)?.kind().name())
}

/// The region's bitmap size in bytes (a queue's capacity), from its header.
#[napi]
pub fn region_size(env: Env, memory_id: HandleId) -> Result<f64> {
    Ok(memory(&env, memory_id)?.region(&env)?.size() as f64)
}

/// How many numbers the region was created for.
#[napi]
pub fn region_capacity(env: Env, memory_id: HandleId) -> Result<f64> {
    Ok(memory(&env, memory_id)?.region(&env)?.capacity() as f64)
}

/// The region's application tag.
#[napi]
pub fn region_tag(env: Env, memory_id: HandleId) -> Result<BigInt> {
    Ok(BigInt::from(memory(&env, memory_id)?.region(&env)?.tag()))
}

/// One process named by a region's holder records.
#[napi(object)]
pub struct HolderReport {
    pub pid: u32,
    pub alive: bool,
    pub count: f64,
}

/// What `regionInspect` found in a region.
#[napi(object)]
pub struct RegionReport {
    pub name: String,
    pub path: String,
    /// `'bitmap'` or `'queue'`.
    pub kind: String,
    pub size: f64,
    pub capacity: f64,
    pub tracks_holders: bool,
    pub tag: BigInt,
    pub in_use: f64,
    pub held_by_dead: f64,
    pub holders: Vec<HolderReport>,
    pub cells: Vec<f64>,
    pub cell_size: f64,
    /// What waits in a queue region; absent for a bitmap.
    pub queue: Option<QueueReport>,
}

/// What waits in a queue region.
#[napi(object)]
pub struct QueueReport {
    pub waiting: f64,
    pub next: Vec<f64>,
    pub stranded: f64,
}

/// Reads a region without changing it (see `inspectShared`).
#[napi]
pub fn region_inspect(
    env: Env,
    name: String,
    directory: Option<String>,
    cells: u32,
) -> Result<RegionReport> {
    let directory = directory.map(PathBuf::from);
    let report = numballoc_core::inspect::inspect(&name, directory.as_deref(), cells as usize)
        .map_err(|e| to_js(&env, e))?;
    Ok(RegionReport {
        kind: report.header.kind.name().to_owned(),
        queue: report.queue.as_ref().map(|q| QueueReport {
            waiting: q.waiting as f64,
            next: q.next.iter().map(|&n| n as f64).collect(),
            stranded: q.stranded as f64,
        }),
        held_by_dead: report.held_by_dead() as f64,
        size: report.header.size as f64,
        capacity: report.header.capacity as f64,
        tracks_holders: report.header.holders,
        tag: BigInt::from(report.header.tag),
        in_use: report.in_use as f64,
        holders: report
            .holders
            .iter()
            .map(|h| HolderReport {
                pid: h.holder.pid,
                alive: h.alive,
                count: h.count as f64,
            })
            .collect(),
        cells: report.cells.iter().map(|&c| c as f64).collect(),
        cell_size: report.cell_size as f64,
        name: report.name,
        path: report.path,
    })
}

/// The names of the regions in `directory` or POSIX shared memory (see `listShared`).
#[napi]
pub fn region_list(env: Env, directory: Option<String>) -> Result<Vec<String>> {
    let directory = directory.map(PathBuf::from);
    numballoc_core::inspect::list(directory.as_deref()).map_err(|e| to_js(&env, e))
}

/// Whether the region records who holds each number.
#[napi]
pub fn region_tracks_holders(env: Env, memory_id: HandleId) -> Result<bool> {
    Ok(memory(&env, memory_id)?.region(&env)?.tracks_holders())
}

/// How many 32-bit blocks `regionCopyBlocks` writes.
#[napi]
pub fn region_block_count(env: Env, memory_id: HandleId) -> Result<u32> {
    let region = memory(&env, memory_id)?.region(&env)?;
    region
        .expect_kind(Kind::Bitmap)
        .map_err(|e| to_js(&env, e))?;
    Ok(region.block_count() as u32)
}

/// Copies the bitmap into `out` as 32-bit blocks (Go's `Blocks()`).
#[napi]
pub fn region_copy_blocks(env: Env, memory_id: HandleId, mut out: Uint32ArraySlice) -> Result<()> {
    let region = memory(&env, memory_id)?.region(&env)?;
    region
        .expect_kind(Kind::Bitmap)
        .map_err(|e| to_js(&env, e))?;
    // SAFETY: the typed array was allocated by lib/regions.js for this call and is not aliased.
    region.copy_blocks(unsafe { out.as_mut() });
    Ok(())
}

/// Closes a region handle; idempotent. Allocators built on it see it closed.
#[napi]
pub fn region_close(env: Env, memory_id: HandleId) -> Result<()> {
    memory(&env, memory_id)?.close();
    release_unused_slots();
    Ok(())
}

/// Gives back this thread's holder slots in regions that no handle has open any more and in
/// which it holds no number, so that regions opened and closed over a thread's life do not
/// each keep a mapping and a descriptor.
fn release_unused_slots() {
    SCOPE.with(|holder| holder.0.release_unused());
}

/// Opens an existing region without reclaiming, then reclaims: how many numbers came back (see
/// `reclaimShared`).
#[napi]
pub fn region_reclaim(env: Env, name: String, directory: Option<String>) -> Result<f64> {
    let options = OpenOptions {
        directory: directory.map(PathBuf::from),
        reclaim: false,
        scope: Some(SCOPE.with(|holder| holder.0.clone())),
        ..OpenOptions::default()
    };
    let region = Region::open_existing(&name, &options).map_err(|e| to_js(&env, e))?;
    let reclaimed = region.reclaim();
    drop(region);
    release_unused_slots();
    reclaimed.map(|n| n as f64).map_err(|e| to_js(&env, e))
}

/// Removes a region; returns whether it existed.
#[napi]
pub fn region_destroy(env: Env, name: String, directory: Option<String>) -> Result<bool> {
    let directory = directory.map(PathBuf::from);
    numballoc_core::destroy(&name, directory.as_deref()).map_err(|e| to_js(&env, e))
}

/// The facts lib/ checks arguments against, as the core states them, so that each is written
/// once: the largest region size, the largest and the default mode, the policies' names.
#[napi(object)]
pub struct Limits {
    pub max_size: f64,
    pub max_queue_capacity: f64,
    pub max_mode: u32,
    pub default_mode: u32,
    pub policies: Vec<String>,
}

#[napi]
pub fn limits() -> Limits {
    Limits {
        max_size: numballoc_core::header::MAX_SIZE as f64,
        max_queue_capacity: numballoc_core::header::MAX_QUEUE_CAPACITY as f64,
        max_mode: numballoc_core::MAX_MODE,
        default_mode: numballoc_core::OpenOptions::default().mode,
        policies: Policy::ALL.iter().map(|p| p.name().to_owned()).collect(),
    }
}

/// Builds an allocator over an open region (Go's `ConcurrentBitmap(mem, max)`); `policy` is
/// `'any'`, `'lowest'` or `'cyclic'` (lib/regions.js has checked it; another is refused here too,
/// never taken for `'any'`).
#[napi]
pub fn bitmap_new(
    env: Env,
    memory_id: HandleId,
    max: f64,
    policy: String,
    reclaim_when_full: bool,
) -> Result<HandleId> {
    let Some(policy) = Policy::from_name(&policy) else {
        return Err(throw_js(
            &env,
            "ERR_INVALID_ARG_VALUE",
            &format!("unknown policy {policy:?}"),
            ErrorClass::TypeError,
            None,
        ));
    };
    let memory = memory(&env, memory_id)?;
    let region = memory.region(&env)?;
    region
        .expect_kind(Kind::Bitmap)
        .map_err(|e| to_js(&env, e))?;
    let mut bitmap = ConcurrentBitmap::with_policy(region, to_u64(max), policy);
    bitmap.set_reclaim_when_full(reclaim_when_full);
    let slot = Rc::new(Slot::new(bitmap, memory).map_err(|e| to_js(&env, e))?);
    register(slot.clone());
    Ok(handles::insert(Handle::Bitmap(slot)))
}

/// Builds a first-in first-out allocator over an open queue region (`ERR_KIND_MISMATCH` for a
/// bitmap region).
#[napi]
pub fn queue_new(env: Env, memory_id: HandleId, reclaim_when_full: bool) -> Result<HandleId> {
    let memory = memory(&env, memory_id)?;
    let region = memory.region(&env)?;
    let mut queue = ConcurrentQueue::new(region).map_err(|e| to_js(&env, e))?;
    queue.set_reclaim_when_full(reclaim_when_full);
    let slot = Rc::new(Slot::new(queue, memory).map_err(|e| to_js(&env, e))?);
    register(slot.clone());
    Ok(handles::insert(Handle::Queue(slot)))
}

/// The numbers waiting in a queue, the next to be handed out first (at most `limit`).
#[napi]
pub fn queue_waiting(env: Env, queue_id: HandleId, limit: f64) -> Result<Vec<f64>> {
    let slot = match handles::get(queue_id) {
        Some(Handle::Queue(slot)) => slot,
        Some(Handle::Closed { .. }) => return Err(region_closed(&env)),
        _ => return Err(not_a_handle(&env, "ConcurrentQueue")),
    };
    let limit = usize::try_from(to_u64(limit)).unwrap_or(usize::MAX);
    let waiting = slot.live(&env)?.waiting(limit);
    Ok(waiting.into_iter().map(|n| n as f64).collect())
}

/// Records a new allocator handle among its region's siblings on this thread.
fn register<A: Engine>(slot: Rc<Slot<A>>) {
    let identity = slot.allocator.region().identity();
    let slot: Rc<dyn Took> = slot;
    prune_siblings();
    add_sibling(identity, &slot);
}

/// Tells the handles of the region `identity` on this thread that `n` was freed: none of them
/// holds it any more, whoever took it.
pub(crate) fn forget_in_siblings(identity: (u64, u64), n: u64) {
    siblings_of(identity)
        .iter()
        .for_each(|sibling| sibling.forget(n));
}

/// The handles of the region `identity` on this thread that are still there, open or closed;
/// copied out of the list, so that using them never meets its borrow.
fn siblings_of(identity: (u64, u64)) -> Vec<Rc<dyn Took>> {
    SIBLINGS.with(|siblings| {
        let siblings = siblings.borrow();
        siblings
            .get(&identity)
            .into_iter()
            .flatten()
            .filter_map(std::rc::Weak::upgrade)
            .collect()
    })
}

/// Records `took` among the handles of the region `identity` on this thread (see [`Mine`]).
fn add_sibling(identity: (u64, u64), took: &Rc<dyn Took>) {
    SIBLINGS.with(|siblings| {
        siblings
            .borrow_mut()
            .entry(identity)
            .or_default()
            .push(Rc::downgrade(took));
    });
}

/// Forgets the handles that are gone, and what closed ones left of a region with no open handle
/// on this thread any more: it protected only the open ones, and the region may be gone since,
/// its inode given to a new one.
fn prune_siblings() {
    SIBLINGS.with(|siblings| {
        siblings.borrow_mut().retain(|_, list| {
            list.retain(|weak| weak.strong_count() > 0);
            list.iter()
                .any(|weak| weak.upgrade().is_some_and(|took| took.open()))
        });
    });
}

/// The allocator's `max`.
#[napi]
pub fn allocator_max(env: Env, allocator_id: HandleId) -> Result<f64> {
    Ok(allocator(&env, allocator_id)?.allocator().max() as f64)
}

/// Whether a number is allocated.
#[napi]
pub fn allocator_is_allocated(env: Env, allocator_id: HandleId, n: f64) -> Result<bool> {
    let slot = allocator(&env, allocator_id)?;
    let live = slot.live_allocator(&env)?;
    live.is_allocated(to_u64(n)).map_err(|e| to_js(&env, e))
}

/// How many numbers are in use.
#[napi]
pub fn allocator_count(env: Env, allocator_id: HandleId) -> Result<f64> {
    let slot = allocator(&env, allocator_id)?;
    Ok(slot.live_allocator(&env)?.count() as f64)
}

/// The lowest free number in `first..=last`; -1 when none is free.
#[napi]
pub fn bitmap_allocate_in_range(
    env: Env,
    bitmap_id: HandleId,
    first: f64,
    last: f64,
) -> Result<f64> {
    let slot = bitmap(&env, bitmap_id)?;
    let found = slot
        .live(&env)?
        .try_allocate_in(to_u64(first), to_u64(last))
        .map_err(|e| to_js(&env, e))?;
    found.inspect(|&n| slot.held.insert(n));
    Ok(found.map_or(-1.0, |n| n as f64))
}

/// `count` consecutive numbers from a multiple of `align`, all or nothing; the first, or -1.
#[napi]
pub fn bitmap_allocate_block(env: Env, bitmap_id: HandleId, count: f64, align: f64) -> Result<f64> {
    let slot = bitmap(&env, bitmap_id)?;
    let found = slot
        .live(&env)?
        .try_allocate_block(to_u64(count), to_u64(align))
        .map_err(|e| to_js(&env, e))?;
    found.inspect(|&first| slot.held.insert_run(first, to_u64(count)));
    Ok(found.map_or(-1.0, |n| n as f64))
}

/// Frees the block of `count` numbers from `first`.
#[napi]
pub fn bitmap_free_block(env: Env, bitmap_id: HandleId, first: f64, count: f64) -> Result<()> {
    let slot = bitmap(&env, bitmap_id)?;
    slot.live(&env)?
        .free_block(to_u64(first), to_u64(count))
        .map_err(|e| to_js(&env, e))?;
    (to_u64(first)..to_u64(first) + to_u64(count)).for_each(|n| slot.freed(n));
    Ok(())
}

/// Fills the first `count` entries of `out` with distinct numbers, all or nothing; false (nothing
/// allocated) if too few are free. `out` may be longer: lib/regions.js reuses one array.
#[napi]
pub fn bitmap_allocate_many(
    env: Env,
    bitmap_id: HandleId,
    mut out: Float64ArraySlice,
    count: f64,
) -> Result<bool> {
    let slot = bitmap(&env, bitmap_id)?;
    // SAFETY: the typed array belongs to lib/regions.js, which lends it to this call only.
    let out = prefix(unsafe { out.as_mut() }, count)?;
    let Some(numbers) = slot.live(&env)?.try_allocate_many(out.len()) else {
        return Ok(false);
    };
    for (out, n) in out.iter_mut().zip(numbers) {
        slot.held.insert(n);
        *out = n as f64;
    }
    Ok(true)
}

/// The first `count` entries of `array`; `count` comes from lib/regions.js, which never asks for
/// more than the array holds.
fn prefix<T>(array: &mut [T], count: f64) -> Result<&mut [T]> {
    let len = array.len();
    array
        .get_mut(..to_u64(count) as usize)
        .ok_or_else(|| Error::from_reason(format!("{count} entries asked of an array of {len}")))
}

/// Frees every number of the first `count` entries of `numbers` (checked first: nothing
/// changes on an error).
#[napi]
pub fn bitmap_free_many(
    env: Env,
    bitmap_id: HandleId,
    mut numbers: Float64ArraySlice,
    count: f64,
) -> Result<()> {
    let slot = bitmap(&env, bitmap_id)?;
    // SAFETY: as in bitmap_allocate_many.
    let numbers: Vec<u64> = prefix(unsafe { numbers.as_mut() }, count)?
        .iter()
        .map(|&n| to_u64(n))
        .collect();
    slot.live(&env)?
        .free_many(&numbers)
        .map_err(|e| to_js(&env, e))?;
    numbers.iter().for_each(|&n| slot.freed(n));
    Ok(())
}

/// Frees every number whose holder is dead; returns how many.
#[napi]
pub fn allocator_reclaim(env: Env, allocator_id: HandleId) -> Result<f64> {
    let slot = allocator(&env, allocator_id)?;
    let reclaimed = slot
        .live_allocator(&env)?
        .reclaim()
        .map_err(|e| to_js(&env, e))?;
    Ok(reclaimed as f64)
}

/// The descriptor whose open file description holds this allocator's holder lock, or -1 in a
/// region without holders: passed to a child process, it keeps the holder alive while the child
/// lives (see `numballoc run`).
#[napi]
pub fn allocator_holder_fd(env: Env, allocator_id: HandleId) -> Result<i32> {
    let slot = allocator(&env, allocator_id)?;
    Ok(slot
        .live_allocator(&env)?
        .region()
        .holder_fd()
        .unwrap_or(-1))
}

/// The pid of the holder of `n` (0 if unknown), or -1 if nobody holds it (or the region does not
/// record holders).
#[napi]
pub fn allocator_holder_of(env: Env, allocator_id: HandleId, n: f64) -> Result<f64> {
    let slot = allocator(&env, allocator_id)?;
    let holder = slot
        .live_allocator(&env)?
        .holder_of(to_u64(n))
        .map_err(|e| to_js(&env, e))?;
    Ok(holder.map_or(-1.0, |h| h.pid as f64))
}

/// Which of the numbers an allocator handle took it still holds.
struct Mine<'a> {
    slot: &'a Rc<dyn AnySlot>,
    /// Other handles of its region on this thread, open or closed: a number one of them took
    /// since is theirs, though it was this handle's once and bears the same holder record.
    others: Vec<Rc<dyn Took>>,
}

impl<'a> Mine<'a> {
    fn of(slot: &'a Rc<dyn AnySlot>) -> Mine<'a> {
        let mut others = siblings_of(slot.allocator().region().identity());
        others.retain(|other| !std::ptr::addr_eq(Rc::as_ptr(other), Rc::as_ptr(slot)));
        Mine { slot, others }
    }

    /// Whether the handle still holds `n`, which its own bookkeeping says it took: with holder
    /// records, the record still names this thread's holder; without, `n` is still allocated
    /// (a number another process freed and took again since cannot be told apart there).
    fn still_holds(&self, n: u64) -> bool {
        let engine = self.slot.allocator();
        let ours = if engine.region().tracks_holders() {
            self.slot.holds(n)
        } else {
            engine.is_allocated(n).unwrap_or(false)
        };
        ours && !self.others.iter().any(|other| other.took(n))
    }
}

/// Whether the handle took `n` and still holds it (see [`Mine`]): a lease of it is live.
fn still_taken(slot: &Rc<dyn AnySlot>, n: u64) -> bool {
    slot.held().contains(n) && Mine::of(slot).still_holds(n)
}

/// Whether the handle took `n` and still holds it: while it does, a lease of `n` is live, and
/// lib/regions.js refuses a plain free of it.
#[napi]
pub fn allocator_still_holds(env: Env, allocator_id: HandleId, n: f64) -> Result<bool> {
    Ok(still_taken(&allocator(&env, allocator_id)?, to_u64(n)))
}

/// Gives back a number a `Lease` of this handle holds: `ERR_NOT_ALLOCATED` if the handle no
/// longer holds it (freed through another handle, and perhaps handed to someone else since),
/// so that a lease never frees a number that is not its own.
#[napi]
pub fn allocator_release(env: Env, allocator_id: HandleId, n: f64) -> Result<()> {
    let slot = allocator(&env, allocator_id)?;
    slot.live_allocator(&env)?;
    let number = to_u64(n);
    if still_taken(&slot, number) {
        slot.free(&env, n)
    } else {
        Err(throw_js(
            &env,
            "ERR_NOT_ALLOCATED",
            &format!("number {number} is not held by this allocator any more (freed, and perhaps taken by another handle or process)"),
            ErrorClass::Error,
            None,
        ))
    }
}

/// Closes an allocator handle; idempotent. With `release`, first frees every number this handle
/// still holds (that nobody took from it: with holders, those whose record still names this
/// thread's holder). With `closeRegion`, closes its region too.
#[napi]
pub fn allocator_close(
    env: Env,
    allocator_id: HandleId,
    close_region: bool,
    release: bool,
) -> Result<()> {
    if let Some(Handle::Closed { .. }) = handles::get(allocator_id) {
        return Ok(());
    }
    let slot = allocator(&env, allocator_id)?;
    if release && !slot.is_closed() && slot.memory().is_open() {
        let mine = Mine::of(&slot);
        let numbers: Vec<u64> = slot
            .held()
            .take_all()
            .into_iter()
            .filter(|&n| mine.still_holds(n))
            .collect();
        slot.free_all(&numbers).map_err(|e| to_js(&env, e))?;
    }
    slot.mark_closed();
    let memory = slot.memory().clone();
    let holdings = ClosedHoldings::of(slot.held()).map(Rc::new);
    if let Some(holdings) = &holdings {
        let took: Rc<dyn Took> = holdings.clone();
        add_sibling(slot.allocator().region().identity(), &took);
    }
    drop(slot);
    handles::close(allocator_id, holdings);
    prune_siblings();
    if close_region {
        memory.close();
    }
    release_unused_slots();
    Ok(())
}

/// Forgets a handle whose JS object was garbage-collected (called by lib/regions.js
/// FinalizationRegistry). Its id may be reused afterwards: no JS object refers to it any more.
#[napi]
pub fn release_handle(id: HandleId) {
    handles::remove(id);
    prune_siblings();
    release_unused_slots();
}

/// `[allocate, free, io]`: a hot path (see `src/hot.rs`) for every allocator of this thread,
/// or bound to one; null where the runtime allows no external ArrayBuffer (then
/// `allocatorAllocate` and `allocatorFree` do the same).
#[napi(ts_return_type = "[allocate: () => void, free: () => void, io: Float64Array] | null")]
pub fn hot_path(env: Env, bound_to: Option<HandleId>) -> Result<Option<Array<'static>>> {
    let bound = match bound_to {
        Some(id) => Some(match handles::get(id) {
            Some(handle) if handle.allocator().is_some() => handle,
            _ => return Err(not_an_allocator(&env)),
        }),
        None => None,
    };
    hot::functions(&env, bound)
}

/// `allocate()` as a napi-rs function: the number, or -1 when every number is in use.
#[napi]
pub fn allocator_allocate(env: Env, allocator_id: HandleId) -> Result<f64> {
    let n = allocator(&env, allocator_id)?.allocate(&env)?;
    Ok(n.map_or(-1.0, |n| n as f64))
}

/// `free(n)` as a napi-rs function.
#[napi]
pub fn allocator_free(env: Env, allocator_id: HandleId, n: f64) -> Result<()> {
    allocator(&env, allocator_id)?.free(&env, n)
}

/// Whether `port` can be listened on right now, found by binding a TCP listener for a moment, as
/// `server.listen(port, host)` would: without a host on the IPv6 wildcard (which sees IPv4
/// listeners too) or, where there is no IPv6, the IPv4 one; with a host on its first address.
/// `false` when it is taken (`EADDRINUSE`) or not ours to take (`EACCES`); anything else (a
/// host that does not resolve or is not this machine's) throws, with `code` and `syscall`.
/// Synchronous: for `getPortSync`.
#[napi]
pub fn port_can_listen(env: Env, port: u32, host: Option<String>) -> Result<bool> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
    let port = u16::try_from(port).map_err(|_| {
        throw_js(
            &env,
            "ERR_OUT_OF_RANGE",
            "a port is at most 65535",
            ErrorClass::RangeError,
            None,
        )
    })?;
    let fail = |syscall: &'static str, shown: &str, error: std::io::Error| {
        to_js(&env, CoreError::os(syscall, shown, error))
    };
    let candidates: Vec<SocketAddr> = match &host {
        Some(host) => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| fail("getaddrinfo", host, e))?
            .take(1)
            .collect(),
        None => vec![
            (Ipv6Addr::UNSPECIFIED, port).into(),
            (Ipv4Addr::UNSPECIFIED, port).into(),
        ],
    };
    let mut last = None;
    for address in candidates {
        match TcpListener::bind(address) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(false),
            // No IPv6 here: the IPv4 wildcard is what listen() would use.
            Err(e) if host.is_none() && address.is_ipv6() => last = Some(e),
            Err(e) => return Err(fail("bind", &address.to_string(), e)),
        }
    }
    match last {
        Some(error) => Err(fail("bind", "*", error)),
        None => Err(throw_js(
            &env,
            "ERR_INVALID_HOST",
            &format!("host {:?} has no address", host.unwrap_or_default()),
            ErrorClass::Error,
            None,
        )),
    }
}
