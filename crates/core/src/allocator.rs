//! What every kind of allocator offers ([`Allocator`]), and what their handles share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::holder::Holder;
use crate::region::Region;

/// The operations every allocator kind offers (the Go `Allocator` interface: `Max`,
/// `Allocate`, `Free`, and what holders and reclaiming add). Code written against it runs on a
/// [`crate::ConcurrentBitmap`] or a [`crate::ConcurrentQueue`]; the conformance suite
/// (`tests/conformance.rs`) holds every kind to it.
pub trait Allocator {
    /// How many numbers the allocator hands out: it returns numbers in `0..max()`.
    fn max(&self) -> u64;
    /// Claims a free number, or `None` when every number was in use at some moment of the call
    /// (after reclaiming dead holders' numbers, where the allocator does that).
    fn try_allocate(&self) -> Option<u64>;
    /// Claims a free number; [`Error::NoFreeNumber`] when every number is in use.
    fn allocate(&self) -> Result<u64> {
        // Not `ok_or`: that builds (and drops) the error on every successful call too.
        match self.try_allocate() {
            Some(n) => Ok(n),
            None => Err(Error::NoFreeNumber),
        }
    }
    /// Returns a number; [`Error::NotAllocated`] if it was not allocated,
    /// [`Error::OutOfRange`] if it is not below `max()`.
    fn free(&self, n: u64) -> Result<()>;
    /// Whether `n` is allocated right now; `OutOfRange` if `n >= max()`.
    fn is_allocated(&self, n: u64) -> Result<bool>;
    /// How many numbers are in use: a snapshot, each number read atomically.
    fn count(&self) -> u64;
    /// Who holds `n`, if the region keeps holders and someone holds it; `OutOfRange` if
    /// `n >= max()`.
    fn holder_of(&self, n: u64) -> Result<Option<Holder>>;
    /// Frees every number whose holder is gone; returns how many. See [`Region::reclaim`].
    fn reclaim(&self) -> Result<u64>;
    /// The region the allocator works on.
    fn region(&self) -> &Arc<Region>;
}

/// A hint start that differs between processes and between handles of one process, so
/// allocators do not all begin on the same cache line.
pub(crate) fn initial_hint(word_count: usize) -> usize {
    static HANDLES: AtomicUsize = AtomicUsize::new(0);
    // getpid is a system call; the pid only seeds the spread, so read it once per process.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    spread(
        *PID.get_or_init(std::process::id),
        HANDLES.fetch_add(1, Ordering::Relaxed),
        word_count,
    )
}

/// Maps (pid, handle number) to a word: a multiplicative hash spreads nearby pids, which is what
/// processes started together get, across the whole bitmap.
fn spread(pid: u32, handle: usize, word_count: usize) -> usize {
    if word_count == 0 {
        return 0;
    }
    let seed = (pid as u64) << 20 | (handle as u64 & 0xF_FFFF);
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % word_count as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn hint_starts_of_consecutive_pids_spread_over_the_bitmap() {
        // 64 processes started together (consecutive pids) on 1024 words.
        let starts: BTreeSet<usize> = (4000..4064).map(|pid| spread(pid, 0, 1024)).collect();
        assert!(starts.len() >= 60, "only {} distinct starts", starts.len());
        let (lo, hi) = (starts.first().unwrap(), starts.last().unwrap());
        assert!(*lo < 128 && *hi > 896, "starts bunched in {lo}..={hi}");
        // Two handles of one process differ too.
        assert_ne!(spread(4000, 0, 1024), spread(4000, 1, 1024));
        assert_eq!(spread(4000, 0, 0), 0);
    }
}
