//! The allocator over a shared region (Go's `ConcurrentBitmap`): a [`Bits`] view with a
//! per-handle hint, a policy, and reclaiming of dead holders' numbers. The algorithm itself,
//! its memory orderings and its proofs are in `bits.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::allocator::{initial_hint, Allocator};
use crate::backoff::Contention;
use crate::bits::{ones, Bits};
use crate::error::{Error, Result};
use crate::holder::Holder;
use crate::region::Region;

/// Moves the cyclic cursor past `n`, found by a search that started at the cursor value `start`.
///
/// The cursor is a count of positions that only grows (the next number to look at is
/// `cursor % max`), so "never backwards" is a `fetch_max`: a slower caller that found an earlier
/// number cannot store an older position over a newer one, even if the cursor has gone round
/// since, and a number just freed behind the cursor does not come back early.
fn advance_cursor(cursor: &std::sync::atomic::AtomicU64, start: u64, n: u64, max: u64) {
    let from = start % max;
    // How far past `from` the search went, wrapping; a whole lap if it came back to `from`.
    let step = match (n + 1 + max - from) % max {
        0 => max,
        step => step,
    };
    // Relaxed: as above, the cursor only orders searches.
    cursor.fetch_max(start.saturating_add(step), Ordering::Relaxed);
}

/// Which free number an allocator hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Any free number, searched from where this handle last found one; each handle starts in
    /// a different part of the bitmap. The fastest under contention: processes rarely touch the
    /// same cache line. The default.
    #[default]
    Any,
    /// The lowest free number, like Linux's `ida_alloc`: dense IDs `0..N`. Under concurrency, no
    /// number below the result was free for the whole call. Scans from 0, skipping groups of
    /// 4,096 numbers whose full count says full (see `bits.rs`, "Full counts"), so it costs a
    /// read per 4,096 numbers below the result's group and a read per 64 within it.
    Lowest,
    /// The next free number after the last one handed out from the region by any process, then
    /// wrapping, like Linux PIDs: a number just freed is the last to come back (a port in
    /// TIME_WAIT is not reused at once). The cursor is shared through the region.
    Cyclic,
}

impl Policy {
    /// Every policy, in the order the documentation lists them.
    pub const ALL: [Policy; 3] = [Policy::Any, Policy::Lowest, Policy::Cyclic];

    /// Its name in the JavaScript API and on the command line: `any`, `lowest` or `cyclic`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Any => "any",
            Policy::Lowest => "lowest",
            Policy::Cyclic => "cyclic",
        }
    }

    /// The policy of that name, if there is one.
    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|policy| policy.name() == name)
    }
}

/// The lock-free allocator over a shared [`Region`] (Go's `ConcurrentBitmap`).
///
/// Every process (or thread) that builds one over the same region shares the numbers: a number
/// is held by at most one caller between its `allocate` and its `free`.
pub struct ConcurrentBitmap {
    /// The view of `region` every call uses, built once. Its `'static` stands for "as long as
    /// `region`", which this struct owns: the mapping does not move or go away before it.
    view: Bits<'static>,
    region: Arc<Region>,
    max: u64,
    policy: Policy,
    /// Reclaim dead holders' numbers before reporting the region full.
    reclaim_when_full: bool,
    /// The word of the last allocation: the next search starts there. Per handle, never shared,
    /// so it costs no cross-process cache traffic; `Relaxed` because it is only a hint.
    hint: AtomicUsize,
    /// This handle's recent contention, for `lowest`, `cyclic` and `try_allocate_in` (the lowest
    /// in a range, whatever the policy), whose every call goes through the same words
    /// ([`crate::backoff`]).
    contention: Contention,
}

impl ConcurrentBitmap {
    /// An allocator of the numbers `0..max` of `region`. As in Go, `max == 0` means the region's
    /// whole capacity (`size * 8`), and a larger `max` is cut to the capacity.
    ///
    /// # Panics
    /// If `region` holds another kind of allocator ([`Region::expect_kind`] tells first).
    pub fn new(region: Arc<Region>, max: u64) -> ConcurrentBitmap {
        ConcurrentBitmap::with_policy(region, max, Policy::Any)
    }

    /// As [`ConcurrentBitmap::new`], handing out numbers by `policy`.
    pub fn with_policy(region: Arc<Region>, max: u64, policy: Policy) -> ConcurrentBitmap {
        let max = if max == 0 {
            region.capacity()
        } else {
            max.min(region.capacity())
        };
        let hint = initial_hint(max.div_ceil(64) as usize);
        // SAFETY: the view borrows the mapping owned by `region`, which is stored beside it and
        // outlives every use: `bits()` hands it out only for as long as `&self` lives.
        let view = unsafe { std::mem::transmute::<Bits<'_>, Bits<'static>>(region.bits(max)) };
        ConcurrentBitmap {
            view,
            region,
            max,
            policy,
            reclaim_when_full: true,
            hint: AtomicUsize::new(hint),
            contention: Contention::default(),
        }
    }

    /// Whether a full region is searched again after reclaiming dead holders' numbers (default
    /// `true`; only for regions that keep holders): a cluster whose workers crash keeps working
    /// without anyone calling [`ConcurrentBitmap::reclaim`].
    pub fn set_reclaim_when_full(&mut self, on: bool) {
        self.reclaim_when_full = on;
    }

    /// Runs `attempt`; if it finds nothing, [`ConcurrentBitmap::after_reclaim`].
    fn or_reclaim<T>(&self, attempt: impl Fn() -> Option<T>) -> Option<T> {
        attempt().or_else(|| self.after_reclaim(attempt))
    }

    /// For an attempt that found nothing: if dead holders' numbers can be reclaimed, reclaims
    /// them and runs `attempt` once more.
    #[cold]
    fn after_reclaim<T>(&self, attempt: impl Fn() -> Option<T>) -> Option<T> {
        // A region cut short under us reclaims nothing here; reclaim() reports it.
        let freed = self.reclaim_when_full
            && self.region.tracks_holders()
            && self.reclaim().unwrap_or(0) > 0;
        if freed {
            attempt()
        } else {
            None
        }
    }

    /// Frees every number of the region whose holder is gone; returns how many. See
    /// [`Region::reclaim`].
    pub fn reclaim(&self) -> Result<u64> {
        self.region.reclaim()
    }

    /// Who holds `n`, if the region keeps holders and someone holds it. `OutOfRange` unless
    /// `n < max`.
    pub fn holder_of(&self, n: u64) -> Result<Option<Holder>> {
        self.bits().record_of_number(n)?;
        self.region.holder_of(n)
    }

    /// Whether `n` is held through this allocator's region, that is by its holder (its process,
    /// or [`crate::HolderScope`]). Always false in a region without holders.
    pub fn holds(&self, n: u64) -> bool {
        let me = self.region.holder_record();
        me != 0 && matches!(self.bits().record_of_number(n), Ok(Some(record)) if record == me)
    }

    /// How this allocator picks numbers.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The region this allocator works on.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The view, by reference: every call works through the one built in `with_policy`.
    #[inline]
    fn bits(&self) -> &Bits<'_> {
        &self.view
    }

    /// Claims a free number by the allocator's policy, or `None` when all are in use.
    #[inline]
    pub fn try_allocate(&self) -> Option<u64> {
        // The fast path stays inline; only a full region goes out of line.
        match self.allocate_once() {
            Some(n) => Some(n),
            None => self.after_reclaim(|| self.allocate_once()),
        }
    }

    #[inline]
    fn allocate_once(&self) -> Option<u64> {
        match self.policy {
            Policy::Any => {
                let (n, word) = self
                    .bits()
                    .allocate_from(self.hint.load(Ordering::Relaxed))?;
                self.hint.store(word, Ordering::Relaxed);
                Some(n)
            }
            Policy::Lowest => self.bits().allocate_lowest_in(
                0,
                self.max.checked_sub(1)?,
                &mut self.contention.call(),
            ),
            Policy::Cyclic => {
                // Relaxed: the cursor only orders the search; the CAS on the bitmap decides.
                let cursor = self.region.cursor();
                // The cursor as last read: read again after a lost race, where the search starts
                // over.
                let start = std::cell::Cell::new(0);
                let from = || {
                    start.set(cursor.load(Ordering::Relaxed));
                    start.get()
                };
                let n = self
                    .bits()
                    .allocate_cyclic(from, &mut self.contention.call())?;
                advance_cursor(cursor, start.get(), n, self.max);
                Some(n)
            }
        }
    }

    /// The lowest free number in `first..=last` (Linux's `ida_alloc_range`), or `None` if every
    /// one is in use. `OutOfRange` unless `first <= last < max`.
    pub fn try_allocate_in(&self, first: u64, last: u64) -> Result<Option<u64>> {
        if first > last || last >= self.max {
            return Err(Error::OutOfRange(format!(
                "range [{first}, {last}] is not within [0, {})",
                self.max
            )));
        }
        Ok(self.or_reclaim(|| {
            self.bits()
                .allocate_lowest_in(first, last, &mut self.contention.call())
        }))
    }

    /// `count` consecutive numbers starting at a multiple of `align`, all or nothing; returns the
    /// first, or `None` if no such run is free. `OutOfRange` unless `1 <= count <= max` and
    /// `align >= 1`. See [`Bits::allocate_block`].
    pub fn try_allocate_block(&self, count: u64, align: u64) -> Result<Option<u64>> {
        if count == 0 || count > self.max || align == 0 {
            return Err(Error::OutOfRange(format!(
                "a block of {count} numbers aligned to {align} does not fit [0, {})",
                self.max
            )));
        }
        Ok(self.or_reclaim(|| self.bits().allocate_block(count, align)))
    }

    /// Frees the block of `count` numbers from `first`; `NotAllocated` (changing nothing) unless
    /// every one is allocated.
    pub fn free_block(&self, first: u64, count: u64) -> Result<()> {
        if count == 0 {
            return Err(Error::OutOfRange("a block has at least one number".into()));
        }
        self.bits().free_block(first, count)
    }

    /// `n` numbers, all or nothing: `None` (nothing allocated) if fewer than `n` are free.
    /// With the `Any` policy, several numbers of a word are claimed with one compare-and-swap.
    pub fn try_allocate_many(&self, n: usize) -> Option<Vec<u64>> {
        self.or_reclaim(|| self.allocate_many_once(n))
    }

    fn allocate_many_once(&self, n: usize) -> Option<Vec<u64>> {
        let mut taken = Vec::with_capacity(n);
        while taken.len() < n {
            if self.policy == Policy::Any {
                let w = self.hint.load(Ordering::Relaxed);
                let bits = self.bits();
                if w < bits.word_count() {
                    let want = (n - taken.len()).min(64) as u32;
                    let claimed = bits.claim_several(w, want);
                    taken.extend(ones(claimed).map(|bit| w as u64 * 64 + bit as u64));
                    if taken.len() == n {
                        break;
                    }
                }
            }
            match self.allocate_once() {
                Some(number) => taken.push(number),
                None => {
                    // Ours since a moment ago: freeing them cannot fail.
                    let _ = self.bits().free_many(&taken);
                    return None;
                }
            }
        }
        Some(taken)
    }

    /// Frees every number of `numbers`. Each must be below `max`, listed once, and allocated;
    /// otherwise the error names the first that is not, and nothing changes.
    pub fn free_many(&self, numbers: &[u64]) -> Result<()> {
        self.bits().free_many(numbers)
    }

    /// Whether `n` is allocated right now; `OutOfRange` if `n >= max`.
    pub fn is_allocated(&self, n: u64) -> Result<bool> {
        self.bits().is_allocated(n)
    }

    /// How many numbers are in use: a snapshot that reads the whole bitmap.
    pub fn count(&self) -> u64 {
        self.bits().count()
    }
}

impl std::fmt::Debug for ConcurrentBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentBitmap")
            .field("region", &self.region)
            .field("max", &self.max)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Allocator for ConcurrentBitmap {
    fn max(&self) -> u64 {
        self.max
    }

    #[inline]
    fn try_allocate(&self) -> Option<u64> {
        ConcurrentBitmap::try_allocate(self)
    }

    fn free(&self, n: u64) -> Result<()> {
        self.bits().free(n)
    }

    fn is_allocated(&self, n: u64) -> Result<bool> {
        ConcurrentBitmap::is_allocated(self, n)
    }

    fn count(&self) -> u64 {
        ConcurrentBitmap::count(self)
    }

    fn holder_of(&self, n: u64) -> Result<Option<Holder>> {
        ConcurrentBitmap::holder_of(self, n)
    }

    fn reclaim(&self) -> Result<u64> {
        ConcurrentBitmap::reclaim(self)
    }

    fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cyclic_cursor_only_moves_forwards() {
        let cursor = std::sync::atomic::AtomicU64::new(0);
        advance_cursor(&cursor, 0, 9, 100);
        assert_eq!(cursor.load(Ordering::Relaxed), 10);
        // A slower caller that started at 0 and found 5 does not move it back.
        advance_cursor(&cursor, 0, 5, 100);
        assert_eq!(cursor.load(Ordering::Relaxed), 10);
        // One that started at 10 and wrapped round to 2: 103, number 3 next.
        advance_cursor(&cursor, 10, 2, 100);
        assert_eq!(cursor.load(Ordering::Relaxed), 103);
        // A slow caller that also started at 10 and found 50 is behind it now.
        advance_cursor(&cursor, 10, 50, 100);
        assert_eq!(cursor.load(Ordering::Relaxed), 103);
        // A search that went all the way round to the number it started at: a whole lap.
        advance_cursor(&cursor, 103, 2, 100);
        assert_eq!(cursor.load(Ordering::Relaxed), 203);
    }
}
