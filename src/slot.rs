//! An allocator handle of any kind, and what the binding asks of every kind: one slot type,
//! generic over the core allocator, so the hot path and the shared calls are written once.

use std::cell::Cell;
use std::rc::Rc;

use napi::bindgen_prelude::*;
use numballoc_core::{Allocator, ConcurrentBitmap, ConcurrentQueue, Result as CoreResult};

use crate::{region_closed, to_js, RegionSlot};

/// What the binding needs of an allocator kind beyond [`Allocator`].
pub trait Engine: Allocator + 'static {
    /// Whether `n` is held through this allocator's holder.
    fn holds(&self, n: u64) -> bool;
    /// Frees numbers this handle holds (checked first where the kind can: nothing changes on an
    /// error).
    fn free_all(&self, numbers: &[u64]) -> CoreResult<()>;
}

impl Engine for ConcurrentBitmap {
    fn holds(&self, n: u64) -> bool {
        ConcurrentBitmap::holds(self, n)
    }

    fn free_all(&self, numbers: &[u64]) -> CoreResult<()> {
        self.free_many(numbers)
    }
}

impl Engine for ConcurrentQueue {
    fn holds(&self, n: u64) -> bool {
        ConcurrentQueue::holds(self, n)
    }

    fn free_all(&self, numbers: &[u64]) -> CoreResult<()> {
        numbers.iter().try_for_each(|&n| self.free(n))
    }
}

/// An allocator of kind `A`: usable while neither it nor its `SharedMemory` is closed.
pub struct Slot<A> {
    pub allocator: A,
    pub memory: Rc<RegionSlot>,
    pub closed: Cell<bool>,
    /// What this handle holds, for `close({ release: true })`.
    pub held: crate::held::Held,
}

impl<A: Engine> Slot<A> {
    /// `ENOMEM` (with the region's name) if this process cannot keep track of what the handle
    /// holds (see [`crate::held::Held::new`]).
    pub fn new(allocator: A, memory: Rc<RegionSlot>) -> CoreResult<Slot<A>> {
        let held = crate::held::Held::new(allocator.max())
            .map_err(|e| numballoc_core::Error::os("malloc", allocator.region().name(), e))?;
        Ok(Slot {
            held,
            allocator,
            memory,
            closed: Cell::new(false),
        })
    }

    #[inline]
    pub fn live(&self, env: &Env) -> Result<&A> {
        if self.closed.get() || !self.memory.is_open() {
            return Err(region_closed(env));
        }
        Ok(&self.allocator)
    }

    /// `allocate()`: a number, now held by this handle, or `None` when every number is in use.
    #[inline]
    pub fn allocate(&self, env: &Env) -> Result<Option<u64>> {
        let n = self.live(env)?.try_allocate();
        if let Some(n) = n {
            self.held.insert(n);
        }
        Ok(n)
    }

    /// `free(n)`: `ERR_NOT_ALLOCATED` on a double free. lib/regions.js has checked that `n` is
    /// an integer in `[0, max)`; anything else is still refused here, never misused.
    #[inline]
    pub fn free(&self, env: &Env, n: f64) -> Result<()> {
        let allocator = self.live(env)?;
        // Not `fract()`, which is a libm call here: a whole number below 2^64 survives the
        // round trip through u64 (NaN and negatives fail the first test).
        if !((0.0..18_446_744_073_709_551_616.0).contains(&n) && n as u64 as f64 == n) {
            return Err(to_js(
                env,
                numballoc_core::Error::OutOfRange(format!("{n} is not a non-negative integer")),
            ));
        }
        let n = n as u64;
        allocator.free(n).map_err(|e| to_js(env, e))?;
        self.freed(n);
        Ok(())
    }

    /// After this handle freed `n`: nobody on this thread holds it any more, though a sibling
    /// handle that took it still counts it as its own (see [`Took`]), unless told.
    #[inline]
    pub fn freed(&self, n: u64) {
        if !self.held.remove(n) {
            crate::forget_in_siblings(self.allocator.region().identity(), n);
        }
    }
}

/// What a handle took and still counts as its own, as the other handles of its region on this
/// thread see it: a number one of them took is not another's to give back, though the holder
/// record (the thread's) is the same.
pub trait Took {
    fn took(&self, n: u64) -> bool;
    /// `n` was freed (by another handle of the thread): it is not this handle's any more.
    fn forget(&self, n: u64);
    /// Whether this is an open handle (else what a closed one left).
    fn open(&self) -> bool {
        true
    }
}

impl<A: Engine> Took for Slot<A> {
    fn took(&self, n: u64) -> bool {
        self.held.contains(n)
    }

    fn forget(&self, n: u64) {
        self.held.remove(n);
    }
}

/// The numbers a closed handle took and did not give back. They stay held by this thread's
/// holder, so they stay out of its other handles' reach as long as the handle's JS object lives
/// (its id's [`crate::handles::Handle::Closed`] keeps them), though the allocator itself is gone.
pub struct ClosedHoldings(std::cell::RefCell<std::collections::BTreeSet<u64>>);

impl ClosedHoldings {
    /// What `held` still holds, if anything.
    pub fn of(held: &crate::held::Held) -> Option<ClosedHoldings> {
        let numbers = held.numbers();
        (!numbers.is_empty())
            .then(|| ClosedHoldings(std::cell::RefCell::new(numbers.into_iter().collect())))
    }
}

impl Took for ClosedHoldings {
    fn took(&self, n: u64) -> bool {
        self.0.borrow().contains(&n)
    }

    fn forget(&self, n: u64) {
        self.0.borrow_mut().remove(&n);
    }

    fn open(&self) -> bool {
        false
    }
}

/// Any slot, for the calls every kind shares (`max`, `count`, `reclaim`, `close`, ...).
pub trait AnySlot {
    /// The allocator, unless it or its region is closed.
    fn live_allocator(&self, env: &Env) -> Result<&dyn Allocator>;
    fn held(&self) -> &crate::held::Held;
    fn is_closed(&self) -> bool;
    fn memory(&self) -> &Rc<RegionSlot>;
    /// Marks the handle closed (idempotent).
    fn mark_closed(&self);
    fn holds(&self, n: u64) -> bool;
    fn free_all(&self, numbers: &[u64]) -> CoreResult<()>;
    /// The allocator even when closed: for `close()`, which gives back what it held.
    fn allocator(&self) -> &dyn Allocator;
    /// [`Slot::allocate`].
    fn allocate(&self, env: &Env) -> Result<Option<u64>>;
    /// [`Slot::free`].
    fn free(&self, env: &Env, n: f64) -> Result<()>;
}

impl<A: Engine> AnySlot for Slot<A> {
    fn live_allocator(&self, env: &Env) -> Result<&dyn Allocator> {
        Ok(self.live(env)?)
    }

    fn held(&self) -> &crate::held::Held {
        &self.held
    }

    fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn memory(&self) -> &Rc<RegionSlot> {
        &self.memory
    }

    fn mark_closed(&self) {
        self.closed.set(true);
    }

    fn holds(&self, n: u64) -> bool {
        self.allocator.holds(n)
    }

    fn free_all(&self, numbers: &[u64]) -> CoreResult<()> {
        self.allocator.free_all(numbers)
    }

    fn allocator(&self) -> &dyn Allocator {
        &self.allocator
    }

    #[inline]
    fn allocate(&self, env: &Env) -> Result<Option<u64>> {
        Slot::allocate(self, env)
    }

    #[inline]
    fn free(&self, env: &Env, n: f64) -> Result<()> {
        Slot::free(self, env, n)
    }
}
