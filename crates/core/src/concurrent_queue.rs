//! The first-in first-out allocator over a shared region (issue #13): the [`crate::queue`]
//! algorithm with holders and reclaiming, as [`crate::ConcurrentBitmap`] is the bitmap's.

use std::sync::Arc;

use crate::allocator::{initial_hint, Allocator};
use crate::error::Result;
use crate::header::Kind;
use crate::holder::Holder;
use crate::queue::{Caller, Queue};
use crate::region::{OpenOptions, Region};

/// A lock-free allocator that hands numbers back in the order they were freed: the number freed
/// longest ago comes first, and a new queue hands out `0, 1, 2, ...` (see [`crate::queue`] for
/// what holds when frees overlap or a participant stops).
///
/// Every process (or thread) that builds one over the same region shares the numbers: a number
/// is held by at most one caller between its `allocate` and its `free`.
pub struct ConcurrentQueue {
    /// The view of `region` every call uses, built once. Its `'static` stands for "as long as
    /// `region`", which this struct owns: the mapping does not move or go away before it.
    view: Queue<'static>,
    region: Arc<Region>,
    /// Where this handle looks next for stranded numbers, and its recent contention: per handle,
    /// so no cross-process traffic.
    caller: Caller,
    reclaim_when_full: bool,
}

impl ConcurrentQueue {
    /// The allocator of a queue region's numbers, `0..capacity`. `KindMismatch` if the region
    /// holds another kind.
    pub fn new(region: Arc<Region>) -> Result<ConcurrentQueue> {
        region.expect_kind(Kind::Queue)?;
        // SAFETY: the view borrows the mapping owned by `region`, which is stored beside it and
        // outlives every use: `queue()` hands it out only for as long as `&self` lives.
        let view = unsafe { std::mem::transmute::<Queue<'_>, Queue<'static>>(region.queue()) };
        let start = initial_hint(region.capacity() as usize) as u64;
        let caller = Caller::starting_at(start);
        Ok(ConcurrentQueue {
            view,
            region,
            caller,
            reclaim_when_full: true,
        })
    }

    /// Opens (or creates) the queue region `name` of `capacity` numbers and builds the allocator
    /// over it: [`Region::open_queue`], then [`ConcurrentQueue::new`].
    pub fn open(name: &str, capacity: u64, options: &OpenOptions) -> Result<ConcurrentQueue> {
        ConcurrentQueue::new(Arc::new(Region::open_queue(name, capacity, options)?))
    }

    /// Whether an empty queue is looked at again after reclaiming dead holders' numbers
    /// (default `true`; only for regions that keep holders).
    pub fn set_reclaim_when_full(&mut self, on: bool) {
        self.reclaim_when_full = on;
    }

    #[inline]
    fn queue(&self) -> &Queue<'_> {
        &self.view
    }

    /// The number freed longest ago, or `None` when every number was held at some moment of
    /// the call (after reclaiming dead holders' numbers).
    #[inline]
    pub fn try_allocate(&self) -> Option<u64> {
        let me = self.region.holder_record();
        match self.queue().allocate(me, &self.caller) {
            Some(n) => Some(n),
            None => self.after_reclaim(me),
        }
    }

    #[cold]
    fn after_reclaim(&self, me: u32) -> Option<u64> {
        // The holders only: a recount (in `reclaim`) reads every state, which "full" does not
        // need.
        let freed = self.reclaim_when_full
            && self.region.tracks_holders()
            && self.region.reclaim_holders().unwrap_or(0) > 0;
        if freed {
            self.queue().allocate(me, &self.caller)
        } else {
            None
        }
    }

    /// Puts `n` at the back of the queue. `NotAllocated` if it is not held, `OutOfRange` if it
    /// is not below the capacity.
    pub fn free(&self, n: u64) -> Result<()> {
        self.queue().free(n)
    }

    /// Whether `n` is held right now; `OutOfRange` if it is not below the capacity.
    pub fn is_allocated(&self, n: u64) -> Result<bool> {
        Ok(self.queue().holder_of(n)?.is_some())
    }

    /// How many numbers are held: a pass over every state word.
    pub fn count(&self) -> u64 {
        self.queue().held()
    }

    /// Who holds `n`, if the region keeps holders and someone holds it.
    pub fn holder_of(&self, n: u64) -> Result<Option<Holder>> {
        self.region.holder_of(n)
    }

    /// Whether `n` is held through this allocator's region, that is by its holder. Always false
    /// in a region without holders.
    pub fn holds(&self, n: u64) -> bool {
        let me = self.region.holder_record();
        me != 0 && matches!(self.queue().holder_of(n), Ok(Some(record)) if record == me)
    }

    /// Frees every number whose holder is gone; returns how many. See [`Region::reclaim`] (which
    /// also puts right a count of held numbers above the states).
    pub fn reclaim(&self) -> Result<u64> {
        self.region.reclaim()
    }

    /// The first `limit` numbers waiting, in the order they would be handed out (stranded ones
    /// by their ticket): a snapshot of each state word, not of the whole. Reads every state;
    /// memory in `limit`.
    pub fn waiting(&self, limit: usize) -> Vec<u64> {
        self.queue().waiting(limit)
    }

    /// The region this allocator works on.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

impl std::fmt::Debug for ConcurrentQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentQueue")
            .field("region", &self.region)
            .field("capacity", &self.region.capacity())
            .finish()
    }
}

impl Allocator for ConcurrentQueue {
    fn max(&self) -> u64 {
        self.region.capacity()
    }

    #[inline]
    fn try_allocate(&self) -> Option<u64> {
        ConcurrentQueue::try_allocate(self)
    }

    fn free(&self, n: u64) -> Result<()> {
        ConcurrentQueue::free(self, n)
    }

    fn is_allocated(&self, n: u64) -> Result<bool> {
        ConcurrentQueue::is_allocated(self, n)
    }

    fn count(&self) -> u64 {
        ConcurrentQueue::count(self)
    }

    fn holder_of(&self, n: u64) -> Result<Option<Holder>> {
        ConcurrentQueue::holder_of(self, n)
    }

    fn reclaim(&self) -> Result<u64> {
        ConcurrentQueue::reclaim(self)
    }

    fn region(&self) -> &Arc<Region> {
        &self.region
    }
}
