//! The hot path: `allocate()` and `free(n)` of every allocator of a JS thread, as two raw N-API
//! functions and a buffer of two numbers that they share with JavaScript.
//!
//! - Raw functions: a napi-rs `#[napi]` function costs several times a raw callback, most of it
//!   Node-API's own entry and exit (BENCHMARKS.md).
//! - Two functions for every allocator, not two per allocator: V8 makes a call site fast when it
//!   always reaches the same native function. With a pair per allocator, a program with two
//!   allocators made the call sites in lib/regions.js reach several, and every pair of every
//!   allocator slower (BENCHMARKS.md). One allocator of a thread (lib/regions.js picks the first
//!   to make 64 calls) gets a pair of its own besides, bound to it, which skips the lookup of the
//!   handle id: lib/regions.js calls it from call sites of its own, which it alone reaches.
//! - A buffer, not arguments and a return value: reading an argument and creating a value each
//!   cost a Node-API call, more than JavaScript writing and reading a typed array. lib/regions.js
//!   writes the allocator's handle id to `io[1]` (unless the pair is bound) and for `free` the
//!   number to `io[0]`, calls, and reads `allocate`'s number, or -1 when every number is in use,
//!   from `io[0]`.
//!
//! The buffer is memory of ours, behind a reference count that the two functions and the
//! ArrayBuffer over it each hold until their finalizers run: whatever JavaScript does with the
//! ArrayBuffer (detach it, transfer it to another thread), the functions never touch freed
//! memory, and they access it atomically. The handle id finds its allocator in this thread's
//! table: a stale or made-up id finds nothing (an error) or another handle of this thread. A bound
//! pair reaches its allocator through a weak reference: once closed, it is gone for the pair too.

use std::ffi::{c_void, CStr};
use std::ptr::null_mut;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::handles::{Handle, TableRef};
use crate::not_an_allocator;
use crate::slot::{AnySlot, Slot};
use napi::bindgen_prelude::*;
use napi::sys;
use numballoc_core::{ConcurrentBitmap, ConcurrentQueue};

type RawCallback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// What the two functions and the ArrayBuffer share.
struct Shared {
    /// `[number, handle id]` as the bits of two doubles (a `Float64Array` in JavaScript).
    io: [AtomicU64; 2],
    /// Where the handle id is looked up, or the one allocator these functions are bound to.
    target: Target,
}

enum Target {
    Table(TableRef),
    /// Weak, as the table's entry is strong: closing the allocator drops it, and with it its
    /// region, at once, though these functions live until they are collected.
    Bound(Bound),
}

enum Bound {
    Bitmap(Weak<Slot<ConcurrentBitmap>>),
    Queue(Weak<Slot<ConcurrentQueue>>),
}

impl Bound {
    /// `None` for a handle that is not an allocator (the caller checked).
    fn of(handle: Handle) -> Option<Bound> {
        match handle {
            Handle::Bitmap(slot) => Some(Bound::Bitmap(Rc::downgrade(&slot))),
            Handle::Queue(slot) => Some(Bound::Queue(Rc::downgrade(&slot))),
            Handle::Memory(_) | Handle::Closed { .. } => None,
        }
    }

    fn upgrade(&self) -> Option<Handle> {
        match self {
            Bound::Bitmap(slot) => slot.upgrade().map(Handle::Bitmap),
            Bound::Queue(slot) => slot.upgrade().map(Handle::Queue),
        }
    }
}

impl Shared {
    fn number(&self) -> f64 {
        // Relaxed: only this thread's JavaScript writes it, before the call that reads it.
        f64::from_bits(self.io[0].load(Ordering::Relaxed))
    }

    fn set_number(&self, n: f64) {
        self.io[0].store(n.to_bits(), Ordering::Relaxed);
    }

    /// Calls `f` with the allocator these functions are bound to, or the one whose handle id
    /// JavaScript wrote, or throws.
    #[inline]
    fn with_allocator<R>(&self, env: &Env, f: impl FnOnce(&dyn AnySlot) -> Result<R>) -> Result<R> {
        let found;
        let handle = match &self.target {
            Target::Bound(bound) => {
                found = bound.upgrade();
                match &found {
                    Some(handle) => handle,
                    None => return Err(crate::region_closed(env)),
                }
            }
            Target::Table(table) => {
                let raw = f64::from_bits(self.io[1].load(Ordering::Relaxed));
                let id = raw as u32;
                // Only a whole number in u32's range is an id (`as` saturates: -1 would be 0).
                if id as f64 != raw {
                    return Err(not_an_allocator(env));
                }
                found = table.get(id);
                match &found {
                    Some(handle) => handle,
                    None => return Err(not_an_allocator(env)),
                }
            }
        };
        // A match per kind, not `Handle::allocator`: each arm then calls its kind's methods
        // directly, where one `&dyn` made them virtual calls (measurably slower: the session notes of
        // #10 have the figures).
        match handle {
            Handle::Bitmap(slot) => f(&**slot),
            Handle::Queue(slot) => f(&**slot),
            Handle::Memory(_) => Err(not_an_allocator(env)),
            Handle::Closed { .. } => Err(crate::region_closed(env)),
        }
    }
}

/// `[allocate, free, io]` for the calling JS thread (see the module documentation), bound to
/// `bound` if given (then `io[1]` is not read), or `None` where the runtime allows no ArrayBuffer
/// over memory of ours (Electron's V8 memory cage).
pub fn functions(env: &Env, bound: Option<Handle>) -> Result<Option<Array<'static>>> {
    let raw_env = env.raw();
    let shared = Rc::new(Shared {
        io: [AtomicU64::new(0), AtomicU64::new(0)],
        target: match bound.and_then(Bound::of) {
            Some(bound) => Target::Bound(bound),
            None => Target::Table(TableRef::current()),
        },
    });
    let mut out = env.create_array(3)?;
    // SAFETY: a live env. Each raw reference handed to N-API (`Rc::into_raw`) is given back
    // at most once: by the finalizer of what holds it, or here where creating that failed before
    // N-API took the reference; until then the memory it points to stays.
    unsafe {
        let hint = Rc::into_raw(Rc::clone(&shared)) as *mut c_void;
        let mut buffer = null_mut();
        let created = sys::napi_create_external_arraybuffer(
            raw_env,
            shared.io.as_ptr() as *mut c_void,
            std::mem::size_of_val(&shared.io),
            Some(release_buffer),
            hint,
            &mut buffer,
        );
        if created == sys::Status::napi_no_external_buffers_allowed {
            // Refused before the buffer was made: the reference is still ours.
            drop(Rc::from_raw(hint as *const Shared));
            return Ok(None);
        }
        if created != sys::Status::napi_ok {
            // Node may have run the finalizer already (it does on some failures): leaking the
            // reference is safe, giving it back a second time is not.
            return Err(Error::from_status(Status::GenericFailure));
        }
        let mut io = null_mut();
        check(sys::napi_create_typedarray(
            raw_env,
            sys::TypedarrayType::float64_array,
            2,
            buffer,
            0,
            &mut io,
        ))?;
        out.set(2, Unknown::from_raw_unchecked(raw_env, io))?;
        let functions: [(&CStr, RawCallback); 2] = [(c"allocate", allocate), (c"free", free)];
        for (index, (name, callback)) in functions.into_iter().enumerate() {
            let data = Rc::into_raw(Rc::clone(&shared)) as *mut c_void;
            let mut function = null_mut();
            // NAPI_AUTO_LENGTH (-1): the name is NUL-terminated.
            let created = sys::napi_create_function(
                raw_env,
                name.as_ptr(),
                -1,
                Some(callback),
                data,
                &mut function,
            );
            if created != sys::Status::napi_ok {
                drop(Rc::from_raw(data as *const Shared));
                return Err(Error::from_status(Status::GenericFailure));
            }
            // Without its finalizer the function keeps its reference for good: a leak, not a
            // dangling pointer.
            check(sys::napi_add_finalizer(
                raw_env,
                function,
                data,
                Some(release_function),
                null_mut(),
                null_mut(),
            ))?;
            out.set(index as u32, Unknown::from_raw_unchecked(raw_env, function))?;
        }
        // The array lives in the caller's handle scope, which napi-rs returns it from.
        Ok(Some(std::mem::transmute::<Array<'_>, Array<'static>>(out)))
    }
}

/// Gives back the reference the ArrayBuffer held (its hint; its data is the buffer).
unsafe extern "C" fn release_buffer(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    drop(Rc::from_raw(hint as *const Shared));
}

/// Gives back the reference a function held (its data).
unsafe extern "C" fn release_function(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    drop(Rc::from_raw(data as *const Shared));
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::from_status(Status::GenericFailure))
    }
}

/// What a function made by [`functions`] shares.
///
/// # Safety
/// `env` and `info` must be the ones N-API passed to a function made by [`functions`], which is
/// alive (it is running), so its reference to the shared state is too.
unsafe fn shared<'a>(env: sys::napi_env, info: sys::napi_callback_info) -> &'a Shared {
    let mut data = null_mut();
    sys::napi_get_cb_info(env, info, null_mut(), null_mut(), null_mut(), &mut data);
    &*(data as *const Shared)
}

/// `allocate()`: claims a number for the allocator of `io[1]` and leaves it in `io[0]`, or -1
/// when every number is in use.
unsafe extern "C" fn allocate(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let shared = shared(env, info);
    let env = Env::from_raw(env);
    if let Ok(n) = shared.with_allocator(&env, |slot| slot.allocate(&env)) {
        // Through i64, one instruction on x86-64 (u64 takes several): a number is below 2^53.
        shared.set_number(n.map_or(-1.0, |n| n as i64 as f64));
    } // else the JS exception is pending
    null_mut()
}

/// `free()`: frees `io[0]` through the allocator of `io[1]`; throws `ERR_NOT_ALLOCATED` on a
/// double free.
unsafe extern "C" fn free(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let shared = shared(env, info);
    let env = Env::from_raw(env);
    let _ = shared.with_allocator(&env, |slot| slot.free(&env, shared.number()));
    null_mut()
}
