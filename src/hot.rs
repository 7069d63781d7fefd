//! The hot path: each allocator's `allocate()` and `free(n)` as raw N-API functions of its own.
//!
//! A napi-rs `#[napi]` function costs several times what a raw callback does, most of whose
//! cost is Node-API's own entry and exit (BENCHMARKS.md). So `allocatorHotPath(id)`
//! creates, for one allocator, two raw functions whose N-API `data` pointer is that allocator:
//! a call finds it in the `napi_get_cb_info` it makes anyway, with no id to read, no table to
//! search and no type check to pay, and no foreign pointer can ever reach it. Each function holds
//! a reference to the allocator, dropped by a finalizer when the function is garbage-collected.

use std::ffi::{c_void, CStr};
use std::ptr::null_mut;
use std::rc::Rc;

use crate::slot::{Engine, Slot};
use crate::{to_js, to_u64};
use napi::bindgen_prelude::*;
use napi::sys;

type RawCallback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// Creates `[allocate, free]` for one allocator: see the module documentation.
/// Each kind gets its own pair of callbacks (monomorphised), so a call pays no dispatch.
pub fn functions<A: Engine>(env: &Env, slot: &Rc<Slot<A>>) -> Result<Array<'static>> {
    let raw_env = env.raw();
    let mut pair = env.create_array(2)?;
    let functions: [(&CStr, RawCallback); 2] = [(c"allocate", allocate::<A>), (c"free", free::<A>)];
    for (index, (name, callback)) in functions.into_iter().enumerate() {
        let data = Rc::into_raw(Rc::clone(slot)) as *mut c_void;
        let mut function = null_mut();
        // SAFETY: a live env; a NUL-terminated name (NAPI_AUTO_LENGTH = -1); a callback with the
        // N-API signature. `data` is a strong reference that the finalizer gives back exactly once,
        // when the function is collected; until then every call may borrow it.
        unsafe {
            let created = sys::napi_create_function(
                raw_env,
                name.as_ptr(),
                -1,
                Some(callback),
                data,
                &mut function,
            );
            if created != sys::Status::napi_ok {
                drop(Rc::from_raw(data as *const Slot<A>));
                return Err(Error::from_status(Status::GenericFailure));
            }
            check(sys::napi_add_finalizer(
                raw_env,
                function,
                data,
                Some(release_slot::<A>),
                null_mut(),
                null_mut(),
            ))?;
            pair.set(index as u32, Unknown::from_raw_unchecked(raw_env, function))?;
        }
    }
    // SAFETY: the array lives in the caller's handle scope, which napi-rs returns it from.
    Ok(unsafe { std::mem::transmute::<Array<'_>, Array<'static>>(pair) })
}

/// Gives back the reference a hot function held.
unsafe extern "C" fn release_slot<A: Engine>(
    _env: sys::napi_env,
    data: *mut c_void,
    _hint: *mut c_void,
) {
    drop(Rc::from_raw(data as *const Slot<A>));
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::from_status(Status::GenericFailure))
    }
}

/// The allocator a hot function belongs to, and up to `N` arguments (missing ones `undefined`).
///
/// # Safety
/// `env` and `info` must be the ones N-API passed to a function made by [`functions`], which is
/// alive (it is running), so its `data` reference to the allocator is too.
unsafe fn call_info<'a, A: Engine, const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> (&'a Slot<A>, [sys::napi_value; N]) {
    let mut args = [null_mut(); N];
    let mut count = N;
    let mut data = null_mut();
    sys::napi_get_cb_info(
        env,
        info,
        &mut count,
        args.as_mut_ptr(),
        null_mut(),
        &mut data,
    );
    (&*(data as *const Slot<A>), args)
}

/// `allocate()`: claims a number and returns it, or -1 when every number is in use.
unsafe extern "C" fn allocate<A: Engine>(
    raw_env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let (slot, []) = call_info::<A, 0>(raw_env, info);
    let env = Env::from_raw(raw_env);
    let mut value = null_mut();
    match slot.live(&env).map(A::try_allocate) {
        Ok(Some(n)) => {
            slot.held.insert(n);
            // Numbers below 2^31 become V8 small integers, which cost no heap allocation.
            match i32::try_from(n) {
                Ok(small) => sys::napi_create_int32(raw_env, small, &mut value),
                Err(_) => sys::napi_create_double(raw_env, n as f64, &mut value),
            }
        }
        Ok(None) => sys::napi_create_int32(raw_env, -1, &mut value),
        Err(_) => return null_mut(), // the JS exception is pending
    };
    value
}

/// `free(n)`: frees a number; throws `ERR_NOT_ALLOCATED` on a double free. lib/regions.js has
/// checked that `n` is an integer in `[0, max)`; anything else is still refused here, never
/// misused.
unsafe extern "C" fn free<A: Engine>(
    raw_env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let (slot, [n_value]) = call_info::<A, 1>(raw_env, info);
    let env = Env::from_raw(raw_env);
    let mut n = f64::NAN;
    sys::napi_get_value_double(raw_env, n_value, &mut n);
    let _: Result<()> = slot.live(&env).and_then(|allocator| {
        // Not `fract()`, which is a libm call here: a whole number below 2^64 survives the
        // round trip through u64 (NaN and negatives fail the first test).
        if !((0.0..18_446_744_073_709_551_616.0).contains(&n) && n as u64 as f64 == n) {
            return Err(to_js(
                &env,
                numballoc_core::Error::OutOfRange(format!("{n} is not a non-negative integer")),
            ));
        }
        allocator.free(to_u64(n)).map_err(|e| to_js(&env, e))?;
        slot.held.remove(to_u64(n));
        Ok(())
    });
    null_mut()
}
