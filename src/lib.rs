//! The Node binding: plain functions over `External` handles, wrapped into the typed classes of
//! `index.js`. No algorithm lives here, only conversions, handle state and error mapping.
//!
//! Why functions and not `#[napi]` classes: a method call on a napi-rs 3 class costs several
//! times a plain function call taking an `External` (measured for issue #3), and `allocate`/`free`
//! are the hot path. `index.js` gives them the class shape at the cost of one JS call.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use numballoc_core::{Allocator, ConcurrentBitmap, Error as CoreError, OpenOptions, Region};

/// An open `SharedMemory`: the mapping until `close()`, then `None`.
pub struct RegionSlot {
    region: RefCell<Option<Arc<Region>>>,
}

/// A `SharedMemory` handle, shared with the allocators built on it so they see it closed.
pub type MemoryHandle = Rc<RegionSlot>;

impl RegionSlot {
    fn region(&self, env: &Env) -> Result<Arc<Region>> {
        self.region
            .borrow()
            .clone()
            .ok_or_else(|| region_closed(env))
    }

    fn is_open(&self) -> bool {
        self.region.borrow().is_some()
    }
}

/// A `ConcurrentBitmap` handle: usable while neither it nor its `SharedMemory` is closed.
pub struct BitmapHandle {
    bitmap: ConcurrentBitmap,
    memory: MemoryHandle,
    closed: Cell<bool>,
}

impl BitmapHandle {
    #[inline]
    fn live(&self, env: &Env) -> Result<&ConcurrentBitmap> {
        if self.closed.get() || !self.memory.is_open() {
            return Err(region_closed(env));
        }
        Ok(&self.bitmap)
    }
}

fn region_closed(env: &Env) -> Error {
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

/// Numbers cross the boundary as doubles: every number below 2^53 is exact, and the largest
/// region holds 2^43 numbers. `index.js` has already checked they are non-negative integers.
#[inline]
fn to_u64(n: f64) -> u64 {
    n as u64
}

/// Opens or creates a region (see `loadShared`). Returns its handle.
#[napi]
pub fn region_open(
    env: Env,
    name: String,
    size: f64,
    create: bool,
    mode: u32,
    directory: Option<String>,
) -> Result<External<MemoryHandle>> {
    let options = OpenOptions {
        create,
        mode,
        directory: directory.map(PathBuf::from),
    };
    let region = Region::open(&name, to_u64(size), &options).map_err(|e| to_js(&env, e))?;
    Ok(External::new(Rc::new(RegionSlot {
        region: RefCell::new(Some(Arc::new(region))),
    })))
}

/// How many 32-bit blocks `regionCopyBlocks` writes.
#[napi]
pub fn region_block_count(env: Env, memory: &External<MemoryHandle>) -> Result<u32> {
    let region = memory.region(&env)?;
    Ok(region.block_count() as u32)
}

/// Copies the bitmap into `out` as 32-bit blocks (Go's `Blocks()`).
#[napi]
pub fn region_copy_blocks(
    env: Env,
    memory: &External<MemoryHandle>,
    mut out: Uint32ArraySlice,
) -> Result<()> {
    let region = memory.region(&env)?;
    // SAFETY: the typed array was allocated by index.js for this call and is not aliased.
    region.copy_blocks(unsafe { out.as_mut() });
    Ok(())
}

/// Closes a region handle; idempotent. Allocators built on it see it closed.
#[napi]
pub fn region_close(memory: &External<MemoryHandle>) {
    memory.region.borrow_mut().take();
}

/// Removes a region; returns whether it existed.
#[napi]
pub fn region_destroy(env: Env, name: String, directory: Option<String>) -> Result<bool> {
    let directory = directory.map(PathBuf::from);
    numballoc_core::destroy(&name, directory.as_deref()).map_err(|e| to_js(&env, e))
}

/// Builds an allocator over an open region (Go's `ConcurrentBitmap(mem, max)`).
#[napi]
pub fn bitmap_new(
    env: Env,
    memory: &External<MemoryHandle>,
    max: f64,
) -> Result<External<BitmapHandle>> {
    let region = memory.region(&env)?;
    Ok(External::new(BitmapHandle {
        bitmap: ConcurrentBitmap::new(region, to_u64(max)),
        memory: Rc::clone(memory),
        closed: Cell::new(false),
    }))
}

/// The allocator's `max`.
#[napi]
pub fn bitmap_max(bitmap: &External<BitmapHandle>) -> f64 {
    bitmap.bitmap.max() as f64
}

/// Claims a number; -1 when none is free.
#[napi]
pub fn bitmap_allocate(env: Env, bitmap: &External<BitmapHandle>) -> Result<f64> {
    let live = bitmap.live(&env)?;
    Ok(live.try_allocate().map_or(-1.0, |n| n as f64))
}

/// Frees a number.
#[napi]
pub fn bitmap_free(env: Env, bitmap: &External<BitmapHandle>, n: f64) -> Result<()> {
    let live = bitmap.live(&env)?;
    live.free(to_u64(n)).map_err(|e| to_js(&env, e))
}

/// Whether a number is allocated.
#[napi]
pub fn bitmap_is_allocated(env: Env, bitmap: &External<BitmapHandle>, n: f64) -> Result<bool> {
    let live = bitmap.live(&env)?;
    live.is_allocated(to_u64(n)).map_err(|e| to_js(&env, e))
}

/// How many numbers are in use.
#[napi]
pub fn bitmap_count(env: Env, bitmap: &External<BitmapHandle>) -> Result<f64> {
    let live = bitmap.live(&env)?;
    Ok(live.count() as f64)
}

/// Closes an allocator handle; idempotent. With `closeRegion`, closes its region too.
#[napi]
pub fn bitmap_close(bitmap: &External<BitmapHandle>, close_region: bool) {
    bitmap.closed.set(true);
    if close_region {
        bitmap.memory.region.borrow_mut().take();
    }
}
