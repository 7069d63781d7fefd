//! The lock-free bitmap allocator over a region's words.
//!
//! # Memory orderings
//! - Scanning a word (`load`, `Relaxed`): the value only picks a candidate bit and is the expected
//!   value of the compare-and-swap that follows; the CAS is what decides.
//! - Claiming a bit (`compare_exchange_weak`, success `Acquire`, failure `Relaxed`): `Acquire`
//!   pairs with the `Release` of the `free` that last cleared the bit, so everything the previous
//!   holder did with the number happens-before the new holder's use of it. A failed CAS publishes
//!   nothing and only hands back the current word to retry with.
//! - Freeing (`fetch_and`, `Release`): publishes the holder's writes to the next claimer. The
//!   read-modify-write returns the previous word atomically, so of two racing frees of one number
//!   exactly one sees the bit set; the other reports `NotAllocated` and changed nothing.
//! - `is_allocated` (`Acquire`) and `count` (`Relaxed`) are snapshots.
//!
//! # Never a spurious "full"
//! `allocate` visits each word at most once, but it leaves a word only after *seeing* it with no
//! free bit; a failed CAS retries the same word with the fresh value. So if some number stayed free
//! for the whole call, the word holding it never looked full, and the call claimed a number in it
//! (or earlier). `NoFreeNumber` therefore means every number was taken at some moment of the call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::region::Region;

/// The Go `Allocator` interface: `Max`, `Allocate`, `Free`.
pub trait Allocator {
    /// How many numbers the allocator hands out: it returns numbers in `0..max()`.
    fn max(&self) -> u64;
    /// Claims a free number; [`Error::NoFreeNumber`] when every number is in use.
    fn allocate(&self) -> Result<u64>;
    /// Returns a number; [`Error::NotAllocated`] if it was not allocated,
    /// [`Error::OutOfRange`] if it is not below `max()`.
    fn free(&self, n: u64) -> Result<()>;
}

/// The words of a bitmap limited to its first `max` bits: the algorithm, with no state of its own.
#[derive(Clone, Copy)]
pub struct Bits<'a> {
    words: &'a [AtomicU64],
    max: u64,
}

impl<'a> Bits<'a> {
    /// A view of the first `max` bits of `words`. `max` must be at most `64 * words.len()`.
    pub fn new(words: &'a [AtomicU64], max: u64) -> Bits<'a> {
        assert!(max <= words.len() as u64 * 64, "max exceeds the bitmap");
        Bits {
            words: &words[..max.div_ceil(64) as usize],
            max,
        }
    }

    /// How many words hold numbers below `max`.
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// The bits of word `w` that are numbers below `max`.
    #[inline]
    fn valid_mask(&self, w: usize) -> u64 {
        let end = self.max - w as u64 * 64;
        if end >= 64 {
            u64::MAX
        } else {
            (1u64 << end) - 1
        }
    }

    /// Claims a free number, visiting words from `start` onwards and wrapping. Returns the number
    /// and the word it was found in (the caller's next hint).
    #[inline]
    pub fn allocate_from(&self, start: usize) -> Option<(u64, usize)> {
        let n = self.words.len();
        if n == 0 {
            return None;
        }
        let start = if start < n { start } else { 0 };
        for w in (start..n).chain(0..start) {
            if let Some(bit) = self.claim_in_word(w) {
                return Some((w as u64 * 64 + bit as u64, w));
            }
        }
        None
    }

    /// Claims the lowest free bit of word `w`, retrying while the word has a free bit.
    #[inline]
    fn claim_in_word(&self, w: usize) -> Option<u32> {
        let word = &self.words[w];
        let mask = self.valid_mask(w);
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let free = !current & mask;
            if free == 0 {
                return None;
            }
            let bit = free.trailing_zeros();
            match word.compare_exchange_weak(
                current,
                current | (1u64 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(bit),
                Err(actual) => current = actual,
            }
        }
    }

    fn check_range(&self, n: u64) -> Result<()> {
        if n < self.max {
            Ok(())
        } else {
            Err(Error::OutOfRange(format!(
                "number {n} is outside [0, {})",
                self.max
            )))
        }
    }

    /// Frees `n`: `NotAllocated` if it was free (nothing changes), `OutOfRange` if `n >= max`.
    #[inline]
    pub fn free(&self, n: u64) -> Result<()> {
        self.check_range(n)?;
        let bit = 1u64 << (n % 64);
        let before = self.words[(n / 64) as usize].fetch_and(!bit, Ordering::Release);
        if before & bit == 0 {
            return Err(Error::NotAllocated(n));
        }
        Ok(())
    }

    /// Whether `n` is allocated right now.
    pub fn is_allocated(&self, n: u64) -> Result<bool> {
        self.check_range(n)?;
        let word = self.words[(n / 64) as usize].load(Ordering::Acquire);
        Ok(word & (1u64 << (n % 64)) != 0)
    }

    /// How many numbers below `max` are allocated: a snapshot, one word at a time.
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(w, word)| {
                (word.load(Ordering::Relaxed) & self.valid_mask(w)).count_ones() as u64
            })
            .sum()
    }
}

/// A hint start that differs between processes and between handles of one process, so
/// allocators do not all begin on the same cache line.
fn initial_hint(word_count: usize) -> usize {
    static HANDLES: AtomicUsize = AtomicUsize::new(0);
    spread(
        std::process::id(),
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

/// The lock-free allocator over a shared [`Region`] (Go's `ConcurrentBitmap`).
///
/// Every process (or thread) that builds one over the same region shares the numbers: a number
/// is held by at most one caller between its `allocate` and its `free`.
#[derive(Debug)]
pub struct ConcurrentBitmap {
    region: Arc<Region>,
    max: u64,
    /// The word of the last allocation: the next search starts there. Per handle, never shared,
    /// so it costs no cross-process cache traffic; `Relaxed` because it is only a hint.
    hint: AtomicUsize,
}

impl ConcurrentBitmap {
    /// An allocator of the numbers `0..max` of `region`. As in Go, `max == 0` means the region's
    /// whole capacity (`size * 8`), and a larger `max` is cut to the capacity.
    pub fn new(region: Arc<Region>, max: u64) -> ConcurrentBitmap {
        let max = if max == 0 {
            region.capacity()
        } else {
            max.min(region.capacity())
        };
        let hint = initial_hint(max.div_ceil(64) as usize);
        ConcurrentBitmap {
            region,
            max,
            hint: AtomicUsize::new(hint),
        }
    }

    /// The region this allocator works on.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    #[inline]
    fn bits(&self) -> Bits<'_> {
        Bits::new(self.region.words(), self.max)
    }

    /// Claims a free number, or `None` when all are in use.
    #[inline]
    pub fn try_allocate(&self) -> Option<u64> {
        let (n, word) = self
            .bits()
            .allocate_from(self.hint.load(Ordering::Relaxed))?;
        self.hint.store(word, Ordering::Relaxed);
        Some(n)
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

impl Allocator for ConcurrentBitmap {
    fn max(&self) -> u64 {
        self.max
    }

    fn allocate(&self) -> Result<u64> {
        self.try_allocate().ok_or(Error::NoFreeNumber)
    }

    fn free(&self, n: u64) -> Result<()> {
        self.bits().free(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn hands_out_every_number_once_then_reports_full() {
        for max in [1u64, 63, 64, 65, 200, 256] {
            let w = words(4);
            let bits = Bits::new(&w, max);
            let mut seen = BTreeSet::new();
            for i in 0..max {
                let (n, _) = bits.allocate_from(i as usize % 5).expect("not full yet");
                assert!(n < max);
                assert!(seen.insert(n), "{n} handed out twice");
            }
            assert_eq!(bits.allocate_from(0), None);
            assert_eq!(bits.count(), max);
            bits.free(max / 2).unwrap();
            assert_eq!(bits.allocate_from(0).map(|(n, _)| n), Some(max / 2));
        }
    }

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

    #[test]
    fn bits_beyond_max_are_ignored() {
        let w = words(1);
        w[0].store(u64::MAX << 10, Ordering::Relaxed);
        let bits = Bits::new(&w, 10);
        assert_eq!(bits.count(), 0);
        assert_eq!(bits.allocate_from(0).map(|(n, _)| n), Some(0));
    }

    #[test]
    fn double_free_and_range_are_errors() {
        let w = words(1);
        let bits = Bits::new(&w, 64);
        assert!(matches!(bits.free(3), Err(Error::NotAllocated(3))));
        assert!(matches!(bits.free(64), Err(Error::OutOfRange(_))));
        assert!(matches!(bits.is_allocated(64), Err(Error::OutOfRange(_))));
        let (n, _) = bits.allocate_from(0).unwrap();
        bits.free(n).unwrap();
        assert!(matches!(bits.free(n), Err(Error::NotAllocated(_))));
        assert_eq!(bits.count(), 0);
    }

    #[test]
    fn threads_never_share_a_number() {
        let w: Arc<Vec<AtomicU64>> = Arc::new(words(4));
        let held: Arc<Vec<AtomicU64>> = Arc::new(words(4));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (w, held) = (w.clone(), held.clone());
                std::thread::spawn(move || {
                    let bits = Bits::new(&w, 250);
                    let shadow = Bits::new(&held, 250);
                    let mut mine = Vec::new();
                    for round in 0..20_000 {
                        if let Some((n, _)) = bits.allocate_from(t + round % 4) {
                            // The shadow bitmap would see a double claim as a failed set.
                            let bit = 1u64 << (n % 64);
                            let before = held[(n / 64) as usize].fetch_or(bit, Ordering::SeqCst);
                            assert_eq!(before & bit, 0, "{n} held by two threads");
                            mine.push(n);
                        }
                        if mine.len() > 40 || (round % 3 == 0 && !mine.is_empty()) {
                            let n = mine.swap_remove(round % mine.len());
                            shadow.free(n).unwrap();
                            bits.free(n).unwrap();
                        }
                    }
                    for n in mine {
                        shadow.free(n).unwrap();
                        bits.free(n).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Bits::new(&w, 250).count(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(usize),
        Free(u64),
    }

    proptest! {
        /// Any sequence of operations agrees with a set model.
        #[test]
        fn agrees_with_a_set(
            max in 1u64..300,
            ops in proptest::collection::vec(
                prop_oneof![
                    (0usize..8).prop_map(Op::Allocate),
                    (0u64..320).prop_map(Op::Free),
                ],
                0..400,
            ),
        ) {
            let w = words(5);
            let bits = Bits::new(&w, max);
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate(start) => match bits.allocate_from(start) {
                        Some((n, _)) => {
                            prop_assert!(n < max);
                            prop_assert!(model.insert(n));
                        }
                        None => prop_assert_eq!(model.len() as u64, max),
                    },
                    Op::Free(n) => {
                        let result = bits.free(n);
                        if n >= max {
                            prop_assert!(matches!(result, Err(Error::OutOfRange(_))));
                        } else if model.remove(&n) {
                            prop_assert!(result.is_ok());
                        } else {
                            prop_assert!(matches!(result, Err(Error::NotAllocated(_))));
                        }
                    }
                }
                prop_assert_eq!(bits.count(), model.len() as u64);
            }
        }
    }
}
