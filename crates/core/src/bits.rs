//! The lock-free bitmap algorithm over a region's words, with two summary levels and holder
//! records. It has no state of its own, so every process (and the loom model) runs the same code.
//!
//! # Layout
//! The bitmap has a bit per number (1 = allocated). Summary level 1 has a bit per bitmap word,
//! set when that word is full; level 2 a bit per level-1 word, set when all 64 words it covers
//! are full. An all-zero region is empty and consistent. A search skips 64 full words per set
//! level-1 bit and 4,096 per set level-2 bit, so finding the one free number among 2^24 reads
//! at most 64 + 64 + 1 words instead of 262,144.
//!
//! # Summary bits are hints
//! Only the compare-and-swap on a bitmap word hands out a number. A search first follows the
//! summaries (pass 1, which visits each word at most once). Only if that finds nothing does it
//! scan every bitmap word (pass 2), and only pass 2 may conclude "full". So a summary bit that is
//! wrong, for instance because a process died between freeing a number and clearing the bit,
//! costs a longer search and never a number. Pass 2 repairs the wrong bits it meets.
//!
//! Without crashes a set summary bit is always right: a search that meets a full word sets its
//! level-1 bit and then re-reads the word, clearing the bit again if a number was freed meanwhile;
//! whoever frees a number in a full word reads the level-1 bit and clears it if set. A
//! `fence(SeqCst)` stands between the write and the read on both sides, so in every interleaving
//! at least one sees the other's write (Dekker's pattern), and the same holds one level up.
//! (Fences rather than SeqCst accesses: loom checks fences fully; `tests/loom.rs` checks this.)
//! A full word whose bit is not set yet costs one probe, after which it is marked.
//!
//! # Full counts
//! Summary bits are hints, good enough to find *a* free number fast, but not to prove that a
//! stretch of the bitmap has none: `lowest` must not skip a number that stayed free for its
//! whole call, a block search must not pass over a free run, and "full" must not be spurious. For
//! that each level-1 word (a group of 64 bitmap words) also has a count of its full words that
//! is never more than the truth: whoever fills a word (sets the last free bit) adds one
//! *after* doing so; whoever unfills one (clears a bit of a full word) subtracts one *before*,
//! with a compare-and-swap loop so that the decision rests on the very value it replaces (and
//! gives the one back if another free got there first). A count equal to the group's words, when
//! read, therefore means every word of the group was full at that moment: a search may skip the
//! whole group and keep every promise above. A holder that stops between the two steps leaves the
//! count short, never over (the loom model `a_full_count_never_hides_a_number_free_for_the_whole_search`
//! checks each stop), which costs a scan of that group's words, never a number. Counts change
//! only when a word fills or unfills, so the usual allocate and free touch none; `allocate_from`
//! prefers a word with room to spare to the last number of its hinted word, so a steady pair in
//! a nearly full region fills nothing.
//!
//! Counts may be `Relaxed`: a free's decrement is sequenced before its release of the word, which
//! the next filler of that word acquires before its increment, so a word's decrements and
//! increments alternate in the count's modification order; and a search that starts after a free
//! (happens-after it) reads that free's decrement or a later value.
//!
//! # Holders
//! A region may keep a holder record per number (see [`crate::holder`]: a record names a holder
//! slot and its generation). Then the record is the claim: `allocate` takes the record from 0 to
//! this holder's with a compare-and-swap, then sets the bit (only the record's owner ever sets
//! that bit, so a plain `fetch_or` does); `free` reads the record, clears the bit (where a double
//! free shows), then clears the record if it is still what it read. So a set bit always has a
//! record, and a holder that stops anywhere in between leaves a record naming its slot, which a
//! [`Bits::sweep`] of that slot takes over and clears. A search skips a free bit whose record is
//! taken: its owner is in the middle of claiming or freeing it.
//!
//! Anyone may free a number it did not take. A free and a sweep of the same number are two frees:
//! the one that clears the bit first frees it, and the record is cleared exactly once, by its
//! owner's store, by a compare-and-swap from the value read before the bit was cleared, or by the
//! sweep that took it over. The generation in the record keeps a free delayed past a sweep from
//! clearing the record of the slot's next holder (`tests/loom.rs` shows the nameless bit it would
//! leave otherwise). If such a delayed free lands after the number was taken again, it clears
//! that holder's bit but never its record: the number stays out of everyone else's reach until
//! that holder frees it or ends, as with any double free.
//!
//! # Memory orderings
//! - Scanning a word or a summary (`load`, `Relaxed`): the value only picks a candidate and is
//!   the expected value of the compare-and-swap that follows; the CAS is what decides.
//! - Claiming a bit (`compare_exchange_weak`, success `Acquire`, failure `Relaxed`): `Acquire`
//!   pairs with the release of the `free` that last cleared the bit, so everything the previous
//!   holder did with the number happens-before the new holder's use of it. A failed CAS publishes
//!   nothing and only hands back the current word to retry with.
//! - Freeing (`fetch_and`, `SeqCst`): a release for the next claimer, and `SeqCst` for the summary
//!   protocol above. The read-modify-write returns the previous word atomically, so of two racing
//!   frees of one number exactly one sees the bit set; the other reports `NotAllocated` and
//!   changed nothing.
//! - Summary updates (`AcqRel`) and the re-reads that check them (`Acquire`), with a
//!   `fence(SeqCst)` between write and read on both sides: see above. They happen only when a
//!   word is found full or stops being full.
//! - Holder records: taken with `compare_exchange` (`Acquire`, pairing with the `Release` that
//!   cleared it on the previous free); the bit then set with `fetch_or` (`AcqRel`). A free reads
//!   the record first (`Relaxed`: only the expected value of what follows) and clears it after
//!   the bit with a `Release` store or compare-and-swap. A sweep takes a record over with
//!   `AcqRel` (acquiring what its holder did), then clears the bit and stores 0 (`Release`).
//! - `is_allocated` (`Acquire`) and `count` (`Relaxed`) are snapshots.
//!
//! # Never a spurious "full"
//! Pass 2 visits each word at most once, but it leaves a word only after *seeing* it with no free
//! bit; a failed CAS retries the same word with the fresh value. So if some number stayed free
//! for the whole call, the word holding it never looked full, and the call claimed a number in it
//! (or earlier). `NoFreeNumber` therefore means every number was taken at some moment of the call.

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::holder::{record, record_generation, record_slot, SWEEPING};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// How many words after a hinted word with one free number `allocate_from` looks at for one with
/// more (four cache lines): at 99% fill about one word in eight has two or more free numbers,
/// so 31 words miss one about once in a hundred times.
const ROOMIER_REACH: usize = 31;

/// What [`Bits::claim_backing_off`] came to.
enum Claim {
    Took(u64),
    /// No usable free bit in the word.
    Nothing,
    /// A race for a number lost to another caller, and waited on.
    Lost,
}

/// The positions of the set bits of `word`, lowest first.
#[inline]
pub fn ones(word: u64) -> impl Iterator<Item = u32> {
    let mut rest = word;
    std::iter::from_fn(move || {
        (rest != 0).then(|| {
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            bit
        })
    })
}

/// The low `n` bits set (`n` up to 64).
#[inline]
fn low_bits(n: u64) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// The bits of word `w` that stand for items below `limit`, when each word holds 64 items.
#[inline]
fn mask_below(limit: u64, w: usize) -> u64 {
    low_bits(limit.saturating_sub(w as u64 * 64))
}

/// The shared memory a [`Bits`] view works on: a region's sections, with the lengths
/// [`crate::header::Header`] gives them.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    /// The bitmap.
    pub words: &'a [AtomicU64],
    /// Summary level 1: a bit per bitmap word, a hint that it is full.
    pub l1: &'a [AtomicU64],
    /// Summary level 2: a bit per level-1 word, a hint that the 64 words it covers are full.
    pub l2: &'a [AtomicU64],
    /// A count per level-1 word (a group of 64 bitmap words): never more than how many of the
    /// group's words are full (see "Full counts" above).
    pub counts: &'a [AtomicU32],
    /// One holder record per number, if the region keeps them (see "Holders" above).
    pub holders: Option<&'a [AtomicU32]>,
}

/// A bitmap and its summaries, limited to the first `max` numbers: the algorithm, with no state
/// of its own. Every process that works on a region builds the same view over its memory.
#[derive(Clone, Copy)]
pub struct Bits<'a> {
    /// Every bitmap word of the region (the summaries cover all of them).
    words: &'a [AtomicU64],
    l1: &'a [AtomicU64],
    l2: &'a [AtomicU64],
    counts: &'a [AtomicU32],
    holders: Option<&'a [AtomicU32]>,
    /// The record this holder writes for the numbers it claims (see [`crate::holder`]).
    me: u32,
    capacity: u64,
    max: u64,
    /// Words holding numbers below `max`: the only ones this view hands numbers from.
    searched: usize,
}

impl<'a> Bits<'a> {
    /// A view of the numbers `0..max` of a bitmap of `capacity` numbers with its summaries.
    /// `holders`, if given, has one record per number of the capacity, and `me` is the record
    /// this view writes for the numbers it claims (a live holder's: see [`crate::holder`]).
    #[inline]
    pub fn new(parts: Parts<'a>, me: u32, capacity: u64, max: u64) -> Bits<'a> {
        let Parts {
            words,
            l1,
            l2,
            counts,
            holders,
        } = parts;
        assert!(
            capacity <= words.len() as u64 * 64,
            "capacity exceeds the bitmap"
        );
        assert!(max <= capacity, "max exceeds the capacity");
        assert!(l1.len() * 64 >= words.len() && l2.len() * 64 >= l1.len());
        assert!(counts.len() >= l1.len());
        assert!(holders.is_none_or(|h| h.len() as u64 >= capacity));
        Bits {
            words,
            l1,
            l2,
            counts,
            holders,
            me,
            capacity,
            max,
            searched: max.div_ceil(64) as usize,
        }
    }

    /// How many words hold numbers below `max`.
    pub fn word_count(&self) -> usize {
        self.searched
    }

    /// The bits of word `w` that this view may hand out.
    #[inline]
    fn usable(&self, w: usize) -> u64 {
        mask_below(self.max, w)
    }

    /// The bits of word `w` that exist: a word is full when all of them are set.
    #[inline]
    fn existing(&self, w: usize) -> u64 {
        mask_below(self.capacity, w)
    }

    /// Claims a free number, visiting words from `start` onwards and wrapping. Returns the number
    /// and the word it was found in (the caller's next hint).
    #[inline]
    pub fn allocate_from(&self, start: usize) -> Option<(u64, usize)> {
        if self.searched == 0 {
            return None;
        }
        let start = if start < self.searched { start } else { 0 };
        let start = self.roomier(start);
        // The hinted word first: in the common case it has a free bit and this is all we touch.
        if let Some(n) = self.claim(start) {
            return Some((n, start));
        }
        self.guided_search(start).or_else(|| self.full_scan(start))
    }

    /// `w`, or if it has just one free number left, one of the next [`ROOMIER_REACH`] words that
    /// has more: taking a word's last number fills it and freeing it unfills it, and each of
    /// those moves its group's full count, so a steady allocate and free in a nearly full region
    /// moves to a word it does not fill when one is near, and stays there (the hint follows).
    #[inline]
    fn roomier(&self, w: usize) -> usize {
        let free =
            |w: usize| (!self.words[w].load(Ordering::Relaxed) & self.usable(w)).count_ones();
        if free(w) != 1 {
            return w;
        }
        let end = (w + 1 + ROOMIER_REACH).min(self.searched);
        (w + 1..end).find(|&v| free(v) >= 2).unwrap_or(w)
    }

    /// Pass 1: words from `start` onwards (wrapping), skipping those the summaries mark full.
    fn guided_search(&self, start: usize) -> Option<(u64, usize)> {
        for (from, to) in [(start + 1, self.searched), (0, start)] {
            let mut w = from;
            while w < to {
                let l1_index = w / 64;
                let l2_index = l1_index / 64;
                let l2_word = self.l2[l2_index].load(Ordering::Relaxed);
                if l2_word & (1 << (l1_index % 64)) != 0 {
                    // The 64 words of this level-1 word are full: jump to the next level-1 word
                    // of this level-2 word that is not.
                    let open = !l2_word & !low_bits((l1_index % 64) as u64);
                    w = match open {
                        0 => (l2_index + 1) * 64 * 64,
                        _ => (l2_index * 64 + open.trailing_zeros() as usize) * 64,
                    };
                    continue;
                }
                let l1_word = self.l1[l1_index].load(Ordering::Relaxed);
                let open = !l1_word & !low_bits((w % 64) as u64);
                if open == 0 {
                    w = (l1_index + 1) * 64;
                    continue;
                }
                w = l1_index * 64 + open.trailing_zeros() as usize;
                if w >= to {
                    break;
                }
                if let Some(n) = self.claim(w) {
                    return Some((n, w));
                }
                w += 1;
            }
        }
        None
    }

    /// Pass 2: every word from `start` (wrapping), ignoring the summary bits and repairing them;
    /// it skips only groups whose count says full, which they then were.
    #[cold]
    fn full_scan(&self, start: usize) -> Option<(u64, usize)> {
        for w in self
            .open_words(start, self.searched)
            .chain(self.open_words(0, start))
        {
            if let Some(n) = self.claim(w) {
                // Pass 1 missed this word: its summary bits said full. Clear them.
                self.mark_open(w);
                return Some((n, w));
            }
        }
        None
    }

    /// The words `from..to` in order, but for those of groups whose count says full (all their
    /// words were full when it was read).
    fn open_words(&self, from: usize, to: usize) -> impl Iterator<Item = usize> + '_ {
        let mut w = from;
        std::iter::from_fn(move || {
            while w < to {
                if (w == from || w.is_multiple_of(64)) && self.group_full(w / 64) {
                    w = (w / 64 + 1) * 64;
                    continue;
                }
                w += 1;
                return Some(w - 1);
            }
            None
        })
    }

    /// Claims the lowest usable free bit of word `w`, retrying while the word has one. A word
    /// found full gets its summary bit: marking happens when a search meets a full word, not when
    /// an allocation fills one, so a steady allocate/free pair on a nearly full word costs no
    /// summary write.
    #[inline]
    fn claim(&self, w: usize) -> Option<u64> {
        self.claim_masked(w, self.usable(w))
    }

    /// As [`Bits::claim`], but only among the bits of `allowed`.
    #[inline]
    fn claim_masked(&self, w: usize, allowed: u64) -> Option<u64> {
        match self.claim_backing_off(w, allowed, None) {
            Claim::Took(n) => Some(n),
            Claim::Nothing | Claim::Lost => None,
        }
    }

    /// As [`Bits::claim_masked`]; with a `backoff`, for the policies whose every call goes
    /// through the same words: a race lost for a number (another caller took that very bit, or
    /// its record) waits (see [`crate::backoff`]) and ends the claim with [`Claim::Lost`], so
    /// that the caller searches again from where its policy starts, with what changed meanwhile.
    #[inline(always)]
    fn claim_backing_off(
        &self,
        w: usize,
        allowed: u64,
        mut backoff: Option<&mut Backoff>,
    ) -> Claim {
        let word = &self.words[w];
        let mut current = word.load(Ordering::Relaxed);
        // Bits whose holder record another caller owns: it is in the middle of claiming or
        // freeing them, or it died there and `reclaim` will clean up.
        let mut skip = 0u64;
        loop {
            let free = !current & allowed & !skip;
            if free == 0 {
                if current & self.existing(w) == self.existing(w) {
                    self.mark_full(w);
                }
                return Claim::Nothing;
            }
            let bit = free.trailing_zeros();
            let n = w as u64 * 64 + bit as u64;
            if let Some(holders) = self.holders {
                // A record taken before the claim (its holder is claiming or freeing the number,
                // or died there) is passed over without a wait: no race was lost to it.
                if backoff.is_some() && holders[n as usize].load(Ordering::Relaxed) != 0 {
                    skip |= 1 << bit;
                    continue;
                }
                if !self.take_holder(holders, n) {
                    if let Some(backoff) = backoff.as_deref_mut() {
                        backoff.lost_race();
                        return Claim::Lost;
                    }
                    skip |= 1 << bit;
                    continue;
                }
                // Only the owner of a holder record sets its bit, so this cannot race.
                self.set_bits(w, 1u64 << bit);
                return Claim::Took(n);
            }
            match word.compare_exchange_weak(
                current,
                current | (1u64 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.count_if_filled(w, current, 1u64 << bit);
                    return Claim::Took(n);
                }
                Err(actual) => {
                    current = actual;
                    // Lost only if another caller took this very bit: not for a change of
                    // another bit of the word (a free, say), nor a weak compare-and-swap's
                    // spurious failure.
                    if actual & (1u64 << bit) != 0 {
                        if let Some(backoff) = backoff.as_deref_mut() {
                            backoff.lost_race();
                            return Claim::Lost;
                        }
                    }
                }
            }
        }
    }

    /// Sets `bits` of word `w`, whose holder records this view owns (so no one else sets them),
    /// and counts the word full if that filled it.
    #[inline]
    fn set_bits(&self, w: usize, bits: u64) {
        let before = self.words[w].fetch_or(bits, Ordering::AcqRel);
        self.count_if_filled(w, before, bits);
    }

    /// After setting `set` in word `w`, which was `before`: if that made the word full, one
    /// more full word in its group's count. After, never before: the count may lag behind the
    /// words it counts, never run ahead of them.
    #[inline]
    fn count_if_filled(&self, w: usize, before: u64, set: u64) {
        let existing = self.existing(w);
        if before & existing != existing && (before | set) & existing == existing {
            // Relaxed: see "Full counts" above; the word's own release and acquire order it.
            self.counts[w / 64].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clears `bits` of word `w` (an atomic AND, as a compare-and-swap loop) and returns the
    /// word as it was. If it was full, its group's count goes down first: the count never says
    /// full while a number of the group is free.
    #[inline]
    fn clear_bits(&self, w: usize, bits: u64) -> u64 {
        let word = &self.words[w];
        let existing = self.existing(w);
        let count = &self.counts[w / 64];
        let mut current = word.load(Ordering::Relaxed);
        // Whether this call has taken the word out of the count, expecting to unfill it.
        let mut uncounted = false;
        loop {
            let full = current & existing == existing;
            if full != uncounted {
                // Full and still counted: uncount it before the AND. Not full after all (another
                // free got there first, and uncounted it itself): give the count back.
                if full {
                    count.fetch_sub(1, Ordering::Relaxed);
                } else {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                uncounted = full;
            }
            if current & bits == 0 {
                // Nothing to clear (and never full: `bits` lie within `existing`), if this is the
                // word's latest value: a plain load may be older, and a sweep taking over a
                // stopped holder's record must not miss the bit it set. A compare-and-swap that
                // writes the value it read reads the latest, as the AND would have.
                match word.compare_exchange(current, current, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => return current,
                    Err(actual) => {
                        current = actual;
                        continue;
                    }
                }
            }
            match word.compare_exchange_weak(
                current,
                current & !bits,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return current,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether the count of level-1 word `i` says all the bitmap words it covers are full: then
    /// they all were at the moment it was read.
    #[inline]
    fn group_full(&self, i: usize) -> bool {
        let words = (self.words.len() - i * 64).min(64) as u32;
        self.counts[i].load(Ordering::Relaxed) == words
    }

    /// Claims number `n`'s holder record for this process: the allocation itself, when the
    /// region keeps holders. Acquire pairs with the Release that cleared the record on free.
    #[inline]
    fn take_holder(&self, holders: &[AtomicU32], n: u64) -> bool {
        holders[n as usize]
            .compare_exchange(0, self.me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Number `n`'s holder record, read before a free clears the bit (0 without holders): the
    /// value that free may then clear, and no other.
    #[inline]
    fn record_of(&self, n: u64) -> u32 {
        // Relaxed: it is only the expected value of the compare-and-swap in `drop_holder`.
        self.holders
            .map_or(0, |holders| holders[n as usize].load(Ordering::Relaxed))
    }

    /// Clears number `n`'s holder record after this call cleared its bit, if it still is
    /// `expected` (what it was before the bit was cleared). Release: the holder's work with the
    /// number happens-before the next claim of the record.
    ///
    /// Our own record nobody else may change while we live (only a holder of our slot's lock
    /// writes records naming it), so a store does. Another holder's may have been taken over and
    /// cleared by whoever reclaims its slot, and then claimed by the slot's next holder, whose
    /// generation differs: so a compare-and-swap, and if it fails the record is not ours to clear.
    /// A record taken over by a sweep ([`SWEEPING`]) is the sweeper's to clear, after its own
    /// clear of the bit: cleared here, a claimer could take the number in between and the
    /// sweeper would clear that claimer's bit.
    #[inline]
    fn drop_holder(&self, n: u64, expected: u32) {
        if let Some(holders) = self.holders {
            let record = &holders[n as usize];
            if expected == self.me {
                record.store(0, Ordering::Release);
            } else if expected != 0 && record_generation(expected) != SWEEPING {
                let _ = record.compare_exchange(expected, 0, Ordering::Release, Ordering::Relaxed);
            }
        }
    }

    /// Claims up to `want` of the lowest usable free bits of word `w` with one atomic operation;
    /// returns the bits claimed (none if the word has no usable free bit).
    // Used by the region code, which is not built under loom.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn claim_several(&self, w: usize, want: u32) -> u64 {
        let word = &self.words[w];
        let usable = self.usable(w);
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let mut free = !current & usable;
            if free == 0 {
                if current & self.existing(w) == self.existing(w) {
                    self.mark_full(w);
                }
                return 0;
            }
            let mut take = 0u64;
            let mut wanted = want;
            while wanted > 0 && free != 0 {
                let lowest = free & free.wrapping_neg();
                free ^= lowest;
                let n = w as u64 * 64 + lowest.trailing_zeros() as u64;
                if self
                    .holders
                    .is_none_or(|holders| self.take_holder(holders, n))
                {
                    take |= lowest;
                    wanted -= 1;
                }
            }
            if self.holders.is_some() {
                // The records are ours, so no one else sets these bits.
                if take != 0 {
                    self.set_bits(w, take);
                }
                return take;
            }
            match word.compare_exchange_weak(
                current,
                current | take,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.count_if_filled(w, current, take);
                    return take;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Frees every number of `numbers`, one atomic operation per word. Each must be below `max`,
    /// listed once and allocated; otherwise the error names the first (lowest) that is not, and
    /// nothing changes.
    pub fn free_many(&self, numbers: &[u64]) -> Result<()> {
        let mut sorted = numbers.to_vec();
        sorted.sort_unstable();
        if let Some(&last) = sorted.last() {
            self.check_range(last)?;
        }
        // (word, bits) for each word the numbers fall in.
        let mut words: Vec<(usize, u64)> = Vec::new();
        for &n in &sorted {
            let (w, bit) = ((n / 64) as usize, 1u64 << (n % 64));
            match words.last_mut() {
                Some((last, bits)) if *last == w => {
                    if *bits & bit != 0 {
                        return Err(Error::NotAllocated(n)); // listed twice
                    }
                    *bits |= bit;
                }
                _ => words.push((w, bit)),
            }
        }
        for &(w, bits) in &words {
            let missing = !self.words[w].load(Ordering::Acquire) & bits;
            if missing != 0 {
                return Err(Error::NotAllocated(
                    w as u64 * 64 + missing.trailing_zeros() as u64,
                ));
            }
        }
        for (w, bits) in words {
            self.release_word(w, bits);
        }
        Ok(())
    }

    /// Clears the bits `bits` of word `w` (all allocated), then their holder records, then the
    /// word's summary bits if it was full.
    fn release_word(&self, w: usize, bits: u64) {
        let mut expected = [0u32; 64];
        if self.holders.is_some() {
            for bit in ones(bits) {
                expected[bit as usize] = self.record_of(w as u64 * 64 + bit as u64);
            }
        }
        let before = self.clear_bits(w, bits);
        // Only the bits this call cleared: one that was already clear was freed by someone else,
        // whose record is theirs to clear.
        for bit in ones(bits & before) {
            self.drop_holder(w as u64 * 64 + bit as u64, expected[bit as usize]);
        }
        if before & self.existing(w) == self.existing(w) {
            self.mark_open(w);
        }
    }

    /// The bits of word `w` for the numbers `first..=last` that this view may hand out.
    #[inline]
    fn range_mask(&self, w: usize, first: u64, last: u64) -> u64 {
        let base = w as u64 * 64;
        let low = first.saturating_sub(base);
        let high = (last + 1).saturating_sub(base);
        self.usable(w) & low_bits(high) & !low_bits(low)
    }

    /// The lowest free number in `first..=last` (which must be below `max`), scanning word by
    /// word, without the summary bits, over the groups whose full count does not say full. If
    /// some number of the range below the result stayed free for the whole call, its group's
    /// count did not say full and its word was seen with it free, and the lowest such bit was
    /// claimed instead: so no number below the result was free for the whole call, and `None`
    /// means every number of the range was taken at some moment of it.
    /// `backoff` is the caller's side of [`crate::backoff`]: every lowest allocate goes through
    /// the same first words.
    pub fn allocate_lowest_in(&self, first: u64, last: u64, backoff: &mut Backoff) -> Option<u64> {
        debug_assert!(first <= last && last < self.max);
        let (first_word, last_word) = ((first / 64) as usize, (last / 64) as usize);
        // After a race lost (and waited on), from `first` again: numbers freed meanwhile below
        // where it was lost come first, and the pass that returns keeps the promise on its own.
        'search: loop {
            for w in self.open_words(first_word, last_word + 1) {
                let allowed = self.range_mask(w, first, last);
                // A plain load first keeps the scan over full words tight (no summary marking).
                if !self.words[w].load(Ordering::Relaxed) & allowed == 0 {
                    continue;
                }
                match self.claim_backing_off(w, allowed, Some(&mut *backoff)) {
                    Claim::Took(n) => return Some(n),
                    Claim::Nothing => {}
                    Claim::Lost => continue 'search,
                }
            }
            return None;
        }
    }

    /// A free number at or after `from`, wrapping to 0: the numbers just after `from` first, so a
    /// number freed just before `from` comes back last. Uses the summaries, then a full scan.
    /// `backoff` as for [`Bits::allocate_lowest_in`]: every cyclic allocate starts at one cursor;
    /// after a race lost (and waited on) it starts again at `from()`, read anew, so that the
    /// numbers the winner freed meanwhile behind the cursor do not come back first.
    pub fn allocate_cyclic(&self, from: impl Fn() -> u64, backoff: &mut Backoff) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        let (w, after) = loop {
            let from = from() % self.max;
            let w = (from / 64) as usize;
            let after = self.range_mask(w, from, self.max - 1);
            match self.claim_backing_off(w, after, Some(&mut *backoff)) {
                Claim::Took(n) => return Some(n),
                Claim::Nothing => break (w, after),
                Claim::Lost => {}
            }
        };
        self.guided_search(w)
            .map(|(n, _)| n)
            .or_else(|| self.claim_masked(w, self.usable(w) & !after))
            .or_else(|| self.full_scan(w).map(|(n, _)| n))
    }

    /// The first allocated number in `first..last` (exclusive), if any.
    fn first_allocated(&self, first: u64, last: u64) -> Option<u64> {
        ((first / 64) as usize..=((last - 1) / 64) as usize).find_map(|w| {
            let taken = self.words[w].load(Ordering::Relaxed) & self.range_mask(w, first, last - 1);
            (taken != 0).then(|| w as u64 * 64 + taken.trailing_zeros() as u64)
        })
    }

    /// Claims `count` consecutive numbers starting at a multiple of `align`, all or nothing: the
    /// lowest such run found free. Returns its first number.
    ///
    /// The run is claimed word by word in order; if a word turns out taken, the words already
    /// claimed are released again. Those bits were set (held by this call) the whole time, so no
    /// other caller ever obtains a number inside a block it did not get, and a failed attempt
    /// leaves nothing allocated. `None` means no aligned run was free when the search passed it.
    pub fn allocate_block(&self, count: u64, align: u64) -> Option<u64> {
        debug_assert!(count >= 1 && align >= 1);
        let mut start = 0u64;
        loop {
            // The first aligned start at or after the next free number: where a run can begin.
            let free = self.next_free(start)?;
            let candidate = match self.run_in_word(free, count, align) {
                Some(Ok(candidate)) => candidate,
                Some(Err(next)) => {
                    start = next;
                    continue;
                }
                None => free.checked_next_multiple_of(align)?,
            };
            if candidate.checked_add(count)? > self.max {
                return None;
            }
            let busy = match self.first_allocated(candidate, candidate + count) {
                Some(busy) => busy,
                None => match self.claim_run(candidate, count) {
                    Ok(()) => return Some(candidate),
                    Err(busy) => busy,
                },
            };
            start = busy + 1;
        }
    }

    /// For a block of at most 64 numbers aligned to a power of two up to 64, the word-parallel
    /// search of the word holding `free` (the first free number from where the search is):
    /// `Ok` with the first aligned start from `free` on whose run is free inside the word or
    /// runs on from the word's free top into the next word, or `Err` with where to search next
    /// if the word has none. `None` for other blocks, which are searched number by number.
    fn run_in_word(&self, free: u64, count: u64, align: u64) -> Option<Result<u64, u64>> {
        if count > 64 || align > 64 || !align.is_power_of_two() {
            return None;
        }
        let w = (free / 64) as usize;
        let base = w as u64 * 64;
        let available =
            !self.words[w].load(Ordering::Relaxed) & self.usable(w) & !low_bits(free % 64);
        // Bit p set when the `count` numbers from p on are all available (and inside the word).
        let (mut runs, mut length) = (available, 1);
        while length < count {
            let shift = length.min(count - length);
            runs &= runs >> shift;
            length += shift;
        }
        // Bit p set when p is a multiple of `align` (the word starts at one).
        let aligned = (u64::MAX as u128 / ((1u128 << align) - 1)) as u64;
        if runs & aligned != 0 {
            return Some(Ok(base + (runs & aligned).trailing_zeros() as u64));
        }
        // A run from the free top of this word into the next one, checked number by number.
        let top = available.leading_ones() as u64;
        let start = (64 - top).next_multiple_of(align);
        Some(if top > 0 && start < 64 {
            Ok(base + start)
        } else {
            Err(base + 64)
        })
    }

    /// The lowest number at or after `from` (below `max`) that is free, skipping the groups
    /// whose count says full.
    fn next_free(&self, from: u64) -> Option<u64> {
        let first = (from / 64) as usize;
        self.open_words(first, self.searched).find_map(|w| {
            let mut free = !self.words[w].load(Ordering::Relaxed) & self.usable(w);
            if w == first {
                free &= !low_bits(from % 64);
            }
            (free != 0).then(|| w as u64 * 64 + free.trailing_zeros() as u64)
        })
    }

    /// Sets the bits `first..first + count`, word by word; on finding one taken, clears what it
    /// set and returns the taken number. With holder records, the records are claimed first,
    /// number by number, and the bits set after.
    fn claim_run(&self, first: u64, count: u64) -> std::result::Result<(), u64> {
        let last = first + count - 1;
        if let Some(holders) = self.holders {
            for n in first..=last {
                if !self.take_holder(holders, n) {
                    for taken in first..n {
                        self.drop_holder(taken, self.me);
                    }
                    return Err(n);
                }
            }
            for w in (first / 64) as usize..=(last / 64) as usize {
                self.set_bits(w, self.range_mask(w, first, last));
            }
            return Ok(());
        }
        let words = (first / 64) as usize..=(last / 64) as usize;
        for w in words.clone() {
            let mask = self.range_mask(w, first, last);
            let mut current = self.words[w].load(Ordering::Relaxed);
            loop {
                let taken = current & mask;
                if taken != 0 {
                    self.release_run(first, (w as u64 * 64).max(first) - first);
                    return Err(w as u64 * 64 + taken.trailing_zeros() as u64);
                }
                match self.words[w].compare_exchange_weak(
                    current,
                    current | mask,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.count_if_filled(w, current, mask);
                        break;
                    }
                    Err(actual) => current = actual,
                }
            }
        }
        Ok(())
    }

    /// Clears the bits `first..first + count`, all set by the caller, and the summary bits of the
    /// words that were full.
    fn release_run(&self, first: u64, count: u64) {
        if count == 0 {
            return;
        }
        let last = first + count - 1;
        for w in (first / 64) as usize..=(last / 64) as usize {
            self.release_word(w, self.range_mask(w, first, last));
        }
    }

    /// Frees `count` numbers from `first`. Every one must be allocated: otherwise
    /// `NotAllocated` names the first that is not, and nothing changes.
    pub fn free_block(&self, first: u64, count: u64) -> Result<()> {
        self.check_range(first)?;
        self.check_range(first.saturating_add(count).saturating_sub(1))?;
        let last = first + count - 1;
        for w in (first / 64) as usize..=(last / 64) as usize {
            let mask = self.range_mask(w, first, last);
            let missing = !self.words[w].load(Ordering::Acquire) & mask;
            if missing != 0 {
                return Err(Error::NotAllocated(
                    w as u64 * 64 + missing.trailing_zeros() as u64,
                ));
            }
        }
        self.release_run(first, count);
        Ok(())
    }

    /// Sets word `w`'s level-1 bit (and its level-1 word's level-2 bit when all 64 are full),
    /// undoing each if a re-read shows a number was freed meanwhile.
    #[cold]
    fn mark_full(&self, w: usize) {
        let (l1_index, l1_bit) = (w / 64, 1u64 << (w % 64));
        if self.l1[l1_index].load(Ordering::Relaxed) & l1_bit != 0 {
            return;
        }
        let before = self.l1[l1_index].fetch_or(l1_bit, Ordering::AcqRel);
        // The fence orders the mark before the re-read, as the freer's fence orders its free
        // before its read of the mark: of two such threads, one sees the other (Dekker).
        fence(Ordering::SeqCst);
        let existing = self.existing(w);
        if self.words[w].load(Ordering::Acquire) & existing != existing {
            self.l1[l1_index].fetch_and(!l1_bit, Ordering::AcqRel);
            return;
        }
        let l1_existing = mask_below(self.words.len() as u64, l1_index);
        if (before | l1_bit) & l1_existing == l1_existing {
            let (l2_index, l2_bit) = (l1_index / 64, 1u64 << (l1_index % 64));
            self.l2[l2_index].fetch_or(l2_bit, Ordering::AcqRel);
            fence(Ordering::SeqCst);
            if self.l1[l1_index].load(Ordering::Acquire) & l1_existing != l1_existing {
                self.l2[l2_index].fetch_and(!l2_bit, Ordering::AcqRel);
            }
        }
    }

    /// Clears word `w`'s summary bits if set: it has a free number (or is about to). Called after
    /// the write that freed it; the fence pairs with the one in `mark_full`.
    fn mark_open(&self, w: usize) {
        fence(Ordering::SeqCst);
        let (l1_index, l1_bit) = (w / 64, 1u64 << (w % 64));
        if self.l1[l1_index].load(Ordering::Acquire) & l1_bit != 0 {
            self.l1[l1_index].fetch_and(!l1_bit, Ordering::AcqRel);
            // Dekker one level up: `mark_full` marks level 2, fences, then re-reads level 1; we
            // clear level 1, fence, then read level 2. Without this fence neither need see the
            // other, and a level-2 bit could stay set over a level-1 word with a clear bit.
            // (If we cleared no level-1 bit, no level-2 mark can follow ours: a marker re-reads
            // level 1 after marking it, and sees our free or our clear.)
            fence(Ordering::SeqCst);
        }
        let (l2_index, l2_bit) = (l1_index / 64, 1u64 << (l1_index % 64));
        if self.l2[l2_index].load(Ordering::Acquire) & l2_bit != 0 {
            self.l2[l2_index].fetch_and(!l2_bit, Ordering::AcqRel);
        }
    }

    /// Frees every number (of the whole region) whose record names a slot for which
    /// `swept(slot)` is true, and returns how many numbers it made free. The caller holds the
    /// lock of every such slot (see [`crate::holder`]), so no holder of them lives or can start.
    ///
    /// Each record is first taken over (compare-and-swap to the slot's [`SWEEPING`] record), so a
    /// third party's free of the same number, which clears only the record it read before, cannot
    /// clear it twice; then the bit is cleared, then the record. A record whose bit was already
    /// clear is a holder that stopped mid-claim or mid-free: it is freed and counted too, since
    /// the number could not be handed out before. If the caller dies halfway, the records left
    /// name the same slot (generation [`SWEEPING`]), and whoever takes the slot's lock next
    /// finishes the job.
    pub fn sweep(&self, swept: impl Fn(usize) -> bool) -> u64 {
        let Some(holders) = self.holders else {
            return 0;
        };
        let mut freed = 0;
        for (n, entry) in holders.iter().enumerate().take(self.capacity as usize) {
            let value = entry.load(Ordering::Relaxed);
            if value == 0 || !swept(record_slot(value)) {
                continue;
            }
            let sweeping = record(record_slot(value), SWEEPING);
            if value != sweeping
                && entry
                    .compare_exchange(value, sweeping, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                continue; // freed by a third party meanwhile
            }
            let (w, bit) = (n / 64, 1u64 << (n % 64));
            let before = self.clear_bits(w, bit);
            entry.store(0, Ordering::Release);
            freed += 1;
            if before & bit != 0 && before & self.existing(w) == self.existing(w) {
                self.mark_open(w);
            }
        }
        freed
    }

    /// Frees the allocated numbers whose record is `holder`'s (a live holder ending: nobody else
    /// writes its records, but a third party may be freeing one), the way [`Bits::sweep`] frees
    /// them; returns how many. Reads the bitmap, and the records of the numbers in use only: a
    /// record of `holder` whose bit is clear (left by a double free that raced a reclaim) stays
    /// until a sweep of its slot.
    pub fn sweep_held(&self, holder: u32) -> u64 {
        let Some(holders) = self.holders else {
            return 0;
        };
        let sweeping = record(record_slot(holder), SWEEPING);
        let mut freed = 0;
        for (w, word) in self.words.iter().enumerate() {
            for bit in ones(word.load(Ordering::Relaxed) & self.existing(w)) {
                let n = w * 64 + bit as usize;
                if holders[n]
                    .compare_exchange(holder, sweeping, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                let before = self.clear_bits(w, 1u64 << bit);
                holders[n].store(0, Ordering::Release);
                freed += 1;
                if before & self.existing(w) == self.existing(w) {
                    self.mark_open(w);
                }
            }
        }
        freed
    }

    /// Whether some allocated number's record is `holder`'s. Reads the bitmap, and the records
    /// of the numbers in use only.
    pub fn any_held_by(&self, holder: u32) -> bool {
        let Some(holders) = self.holders else {
            return false;
        };
        self.words.iter().enumerate().any(|(w, word)| {
            ones(word.load(Ordering::Relaxed) & self.existing(w))
                .any(|bit| holders[w * 64 + bit as usize].load(Ordering::Relaxed) == holder)
        })
    }

    /// The record of `n` (also while it is being claimed), if the region keeps holders and
    /// someone holds it.
    pub fn record_of_number(&self, n: u64) -> Result<Option<u32>> {
        self.check_range(n)?;
        Ok(self.holders.and_then(|holders| {
            let value = holders[n as usize].load(Ordering::Acquire);
            (value != 0).then_some(value)
        }))
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
        let w = (n / 64) as usize;
        let bit = 1u64 << (n % 64);
        let expected = self.record_of(n);
        let before = self.clear_bits(w, bit);
        if before & bit == 0 {
            return Err(Error::NotAllocated(n));
        }
        self.drop_holder(n, expected);
        // Only a word that was full can have its summary bit set (but for a crash's leftovers,
        // which pass 2 repairs).
        if before & self.existing(w) == self.existing(w) {
            self.mark_open(w);
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
        self.words[..self.searched]
            .iter()
            .enumerate()
            .map(|(w, word)| (word.load(Ordering::Relaxed) & self.usable(w)).count_ones() as u64)
            .sum()
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use crate::backoff::Contention;
    pub(crate) use crate::testing::Memory;

    impl Bits<'_> {
        /// [`Bits::allocate_lowest_in`] by a caller of its own.
        pub(crate) fn lowest_in(&self, first: u64, last: u64) -> Option<u64> {
            self.allocate_lowest_in(first, last, &mut Contention::default().call())
        }

        /// [`Bits::allocate_cyclic`] by a caller of its own.
        pub(crate) fn cyclic_from(&self, from: u64) -> Option<u64> {
            self.allocate_cyclic(|| from, &mut Contention::default().call())
        }
    }

    /// The record of the live holder the tests' views write.
    pub(crate) const ME: u32 = record(1, 1);
    /// The record of a holder whose slot (2) a test sweeps, as if it had died.
    pub(crate) const DEAD: u32 = record(2, 5);

    impl Memory {
        /// With holder records, as regions are by default.
        pub(crate) fn new(size: u64) -> Memory {
            Memory::with(size, true)
        }

        pub(crate) fn bits(&self, max: u64) -> Bits<'_> {
            self.bits_as(max, ME)
        }

        /// Sets `n`'s bit as an allocation does, counting its word full if that filled it.
        fn set_bit(&self, n: usize) {
            let before = self.words[n / 64].fetch_or(1 << (n % 64), Ordering::SeqCst);
            self.bits(self.capacity)
                .count_if_filled(n / 64, before, 1 << (n % 64));
        }

        /// Marks `n` as held by someone else (this process's identity, so it counts as alive).
        pub(crate) fn hold(&self, n: usize) {
            self.set_bit(n);
            if let Some(holders) = &self.holders {
                holders[n].store(ME, Ordering::SeqCst);
            }
        }

        /// Marks `n` as held by `holder` (bit and record), as a process that then died leaves it.
        pub(crate) fn hold_as(&self, n: usize, holder: u32) {
            self.set_bit(n);
            self.holders.as_ref().unwrap()[n].store(holder, Ordering::SeqCst);
        }

        /// Checks that every set bit has a holder record (with holders).
        pub(crate) fn assert_holders_consistent(&self) {
            let Some(holders) = &self.holders else {
                return;
            };
            for (n, record) in holders.iter().enumerate().take(self.capacity as usize) {
                let set = self.words[n / 64].load(Ordering::Relaxed) & (1 << (n % 64)) != 0;
                let holder = record.load(Ordering::Relaxed);
                assert_eq!(
                    set,
                    holder != 0,
                    "number {n}: bit {set}, holder {holder:#x}"
                );
            }
        }

        /// Checks that every set summary bit is right: what it covers is full (a full word
        /// may be unmarked until a search meets it), and that each full count is exact (as it
        /// is when nobody is in the middle of a call).
        pub(crate) fn assert_summaries_sound(&self) {
            self.assert_holders_consistent();
            let bits = self.bits(self.capacity);
            for (i, count) in self.counts.iter().enumerate() {
                let full = (i * 64..self.words.len().min(i * 64 + 64))
                    .filter(|&w| {
                        let existing = bits.existing(w);
                        self.words[w].load(Ordering::Relaxed) & existing == existing
                    })
                    .count() as u32;
                assert_eq!(
                    count.load(Ordering::Relaxed),
                    full,
                    "full count of group {i}"
                );
            }
            for w in 0..self.words.len() {
                let existing = bits.existing(w);
                let full = self.words[w].load(Ordering::Relaxed) & existing == existing;
                let marked = self.l1[w / 64].load(Ordering::Relaxed) & (1 << (w % 64)) != 0;
                assert!(
                    full || !marked,
                    "level-1 bit of word {w} set, but it has a free number"
                );
            }
            for i in 0..self.l1.len() {
                let existing = mask_below(self.words.len() as u64, i);
                let full = self.l1[i].load(Ordering::Relaxed) & existing == existing;
                let marked = self.l2[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0;
                assert!(
                    full || !marked,
                    "level-2 bit of level-1 word {i} set, but not all full"
                );
            }
        }
    }

    #[test]
    fn hands_out_every_number_once_then_reports_full() {
        for (size, max) in [
            (1u64, 1u64),
            (8, 63),
            (8, 64),
            (9, 65),
            (32, 200),
            (32, 256),
            (1024, 8192),
        ] {
            let memory = Memory::new(size);
            let bits = memory.bits(max);
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
            if max == memory.capacity {
                memory.assert_summaries_sound();
            }
        }
    }

    #[test]
    fn bits_beyond_max_are_ignored() {
        let memory = Memory::new(8);
        memory.words[0].store(u64::MAX << 10, Ordering::Relaxed);
        let bits = memory.bits(10);
        assert_eq!(bits.count(), 0);
        assert_eq!(bits.allocate_from(0).map(|(n, _)| n), Some(0));
    }

    #[test]
    fn double_free_and_range_are_errors() {
        let memory = Memory::new(8);
        let bits = memory.bits(64);
        assert!(matches!(bits.free(3), Err(Error::NotAllocated(3))));
        assert!(matches!(bits.free(64), Err(Error::OutOfRange(_))));
        assert!(matches!(bits.is_allocated(64), Err(Error::OutOfRange(_))));
        let (n, _) = bits.allocate_from(0).unwrap();
        bits.free(n).unwrap();
        assert!(matches!(bits.free(n), Err(Error::NotAllocated(_))));
        assert_eq!(bits.count(), 0);
    }

    #[test]
    fn the_one_free_number_is_found_from_anywhere_through_the_summaries() {
        // 2^20 numbers: 16,384 words, 256 level-1 words, 4 level-2 words.
        let memory = Memory::new(1 << 17);
        let bits = memory.bits(memory.capacity);
        while bits.allocate_from(0).is_some() {}
        memory.assert_summaries_sound();
        for free in [0u64, 777_777, (1 << 20) - 1] {
            bits.free(free).unwrap();
            memory.assert_summaries_sound();
            for start in [0, 5_000, 16_383] {
                assert_eq!(
                    bits.guided_search(start)
                        .map(|(n, _)| n)
                        .or_else(|| bits.claim(start)),
                    Some(free)
                );
                bits.free(free).unwrap();
            }
            bits.allocate_from(0).unwrap();
        }
    }

    #[test]
    fn a_summary_left_wrong_by_a_crash_costs_a_search_not_a_number() {
        let memory = Memory::new(1 << 12); // 32,768 numbers
        let bits = memory.bits(memory.capacity);
        while bits.allocate_from(0).is_some() {}
        // A process frees 12,345 and dies before touching the summary bits: they still say full.
        // (Its group's full count went down first, as every free does.)
        memory.counts[12_345 / 64 / 64].fetch_sub(1, Ordering::SeqCst);
        memory.words[12_345 / 64].fetch_and(!(1 << (12_345 % 64)), Ordering::SeqCst);
        if let Some(holders) = &memory.holders {
            holders[12_345].store(0, Ordering::SeqCst);
        }
        assert_eq!(
            bits.guided_search(0),
            None,
            "the summaries hide it from pass 1"
        );
        assert_eq!(
            bits.allocate_from(0).map(|(n, _)| n),
            Some(12_345),
            "pass 2 finds it"
        );
        // Freed again normally: and pass 2 repaired the summaries on the way.
        bits.free(12_345).unwrap();
        memory.assert_summaries_sound();
        assert_eq!(bits.guided_search(0).map(|(n, _)| n), Some(12_345));
    }

    #[test]
    fn threads_never_share_a_number_and_leave_the_summaries_sound() {
        let memory = Arc::new(Memory::new(64)); // 512 numbers in 8 words
        let held = Arc::new(Memory::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (memory, held) = (memory.clone(), held.clone());
                std::thread::spawn(move || {
                    let bits = memory.bits(500);
                    let mut mine = Vec::new();
                    for round in 0..40_000 {
                        if let Some((n, _)) = bits.allocate_from(t + round % 8) {
                            // A second bitmap records holders: a double claim would find it set.
                            let bit = 1u64 << (n % 64);
                            let before =
                                held.words[(n / 64) as usize].fetch_or(bit, Ordering::SeqCst);
                            assert_eq!(before & bit, 0, "{n} held by two threads");
                            mine.push(n);
                        }
                        // Hold many at times, so words fill and empty and summaries flip.
                        let keep = if (round / 1000) % 2 == 0 { 150 } else { 5 };
                        while mine.len() > keep || (round % 3 == 0 && !mine.is_empty()) {
                            let n = mine.swap_remove(round % mine.len());
                            held.words[(n / 64) as usize]
                                .fetch_and(!(1 << (n % 64)), Ordering::SeqCst);
                            bits.free(n).unwrap();
                            if mine.len() <= keep {
                                break;
                            }
                        }
                    }
                    for n in mine {
                        held.words[(n / 64) as usize].fetch_and(!(1 << (n % 64)), Ordering::SeqCst);
                        bits.free(n).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(memory.bits(500).count(), 0);
        memory.assert_summaries_sound();
    }

    #[test]
    fn lowest_and_ranges_give_the_lowest_free_number() {
        let memory = Memory::new(32); // 256 numbers
        let bits = memory.bits(256);
        for expected in 0..70 {
            assert_eq!(bits.lowest_in(0, 255), Some(expected));
        }
        bits.free(5).unwrap();
        bits.free(66).unwrap();
        assert_eq!(bits.lowest_in(0, 255), Some(5));
        assert_eq!(bits.lowest_in(60, 200), Some(66));
        assert_eq!(bits.lowest_in(60, 200), Some(70));
        for expected in 200..=210 {
            assert_eq!(bits.lowest_in(200, 210), Some(expected));
        }
        assert_eq!(bits.lowest_in(200, 210), None);
        assert_eq!(bits.lowest_in(255, 255), Some(255));
        assert_eq!(bits.lowest_in(255, 255), None);
    }

    #[test]
    fn cyclic_continues_after_the_cursor_and_wraps() {
        let memory = Memory::new(16); // 128 numbers
        let bits = memory.bits(100);
        assert_eq!(bits.cyclic_from(98), Some(98));
        assert_eq!(bits.cyclic_from(99), Some(99));
        assert_eq!(bits.cyclic_from(100), Some(0), "wraps at max");
        assert_eq!(bits.cyclic_from(0), Some(1));
        bits.free(0).unwrap();
        // Freed 0 comes back only after every number after the cursor.
        let mut from = 2;
        for expected in 2..98 {
            assert_eq!(bits.cyclic_from(from), Some(expected));
            from = expected + 1;
        }
        assert_eq!(bits.cyclic_from(from), Some(0));
        assert_eq!(bits.cyclic_from(from), None);
    }

    #[test]
    fn blocks_are_aligned_runs_all_or_nothing() {
        let memory = Memory::new(64); // 512 numbers
        let bits = memory.bits(500);
        assert_eq!(bits.allocate_block(10, 1), Some(0));
        assert_eq!(bits.allocate_block(4, 8), Some(16));
        assert_eq!(bits.allocate_block(100, 64), Some(64), "spans two words");
        bits.free(3).unwrap();
        assert_eq!(
            bits.allocate_block(2, 1),
            Some(10),
            "a hole of one does not fit two"
        );
        assert_eq!(bits.allocate_block(1, 1), Some(3));
        assert_eq!(
            bits.allocate_block(400, 1),
            None,
            "no run that long is free"
        );
        assert_eq!(
            bits.allocate_block(336, 1),
            Some(164),
            "but the rest of the bitmap is"
        );
        assert_eq!(bits.count(), 10 + 4 + 100 + 2 + 336);
        // Free a block: every number must be allocated, or nothing changes.
        assert!(matches!(
            bits.free_block(60, 10),
            Err(Error::NotAllocated(60))
        ));
        assert!(bits.is_allocated(64).unwrap());
        bits.free_block(64, 100).unwrap();
        assert!(!bits.is_allocated(64).unwrap() && !bits.is_allocated(163).unwrap());
        assert!(matches!(
            bits.free_block(490, 20),
            Err(Error::OutOfRange(_))
        ));
        memory.assert_summaries_sound();
    }

    #[test]
    fn a_block_that_meets_a_taken_number_releases_what_it_claimed() {
        let memory = Memory::new(32);
        let bits = memory.bits(256);
        memory.hold(129); // number 129 is taken by someone
        assert_eq!(bits.claim_run(0, 140), Err(129));
        assert_eq!(
            bits.count(),
            1,
            "the words claimed before the conflict were released"
        );
        assert_eq!(
            bits.allocate_block(129, 1),
            Some(0),
            "0..=128 are all free again"
        );
    }

    #[test]
    fn threads_taking_blocks_and_numbers_never_overlap() {
        let memory = Arc::new(Memory::new(128)); // 1024 numbers
        let held = Arc::new(Memory::new(128));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (memory, held) = (memory.clone(), held.clone());
                std::thread::spawn(move || {
                    let bits = memory.bits(1024);
                    let shadow = held.bits(1024);
                    let mut mine: Vec<(u64, u64)> = Vec::new();
                    for round in 0..5_000u64 {
                        let count = [1, 3, 64, 70, 130][(round as usize + t) % 5];
                        let align = [1, 4, 64][(round as usize) % 3];
                        if let Some(first) = bits.allocate_block(count, align) {
                            assert_eq!(first % align, 0);
                            for n in first..first + count {
                                // The shadow bitmap would see an overlap as a failed set.
                                let bit = 1u64 << (n % 64);
                                let before =
                                    held.words[(n / 64) as usize].fetch_or(bit, Ordering::SeqCst);
                                assert_eq!(before & bit, 0, "{n} in two blocks");
                            }
                            mine.push((first, count));
                        }
                        while mine.len() > 3 {
                            let (first, count) = mine.swap_remove(round as usize % mine.len());
                            shadow.free_block(first, count).unwrap();
                            bits.free_block(first, count).unwrap();
                        }
                    }
                    for (first, count) in mine {
                        shadow.free_block(first, count).unwrap();
                        bits.free_block(first, count).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(memory.bits(1024).count(), 0);
        memory.assert_summaries_sound();
    }

    #[test]
    fn a_dead_holders_half_done_claims_never_make_lowest_or_cyclic_wait() {
        let memory = Memory::new(16); // 128 numbers
        let bits = memory.bits(128);
        // Stopped between the record and the bit: records of a dead holder over free bits,
        // passed by every call until a sweep. Only a race lost to a live caller may wait.
        for n in 0..8 {
            memory.holders.as_ref().unwrap()[n].store(DEAD, Ordering::SeqCst);
        }
        let contention = Contention::default();
        for expected in 8..40 {
            let lowest = bits.allocate_lowest_in(0, 127, &mut contention.call());
            assert_eq!(lowest, Some(expected));
        }
        for expected in 40..72 {
            let cyclic = bits.allocate_cyclic(|| 0, &mut contention.call());
            assert_eq!(cyclic, Some(expected));
        }
        assert_eq!(contention.doublings(), 0, "never a wait");
    }

    #[test]
    fn frees_of_other_numbers_of_the_word_never_make_lowest_or_cyclic_wait() {
        // Without holder records a claim is the word's compare-and-swap, which also fails when
        // another number of the word is freed meanwhile: no race lost, so no wait. One thread
        // allocates, the other frees what it is handed: nobody else ever claims.
        let memory = Memory::with(512, false); // 4,096 numbers
        for lowest in [true, false] {
            let bits = memory.bits(4096);
            let (hand, take) = std::sync::mpsc::sync_channel::<u64>(32);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for n in take {
                        bits.free(n).unwrap();
                    }
                });
                let contention = Contention::default();
                for _ in 0..200_000 {
                    let n = if lowest {
                        bits.allocate_lowest_in(0, 4095, &mut contention.call())
                    } else {
                        bits.allocate_cyclic(|| 0, &mut contention.call())
                    };
                    assert_eq!(contention.doublings(), 0, "a wait with no race lost");
                    hand.send(n.unwrap()).unwrap();
                }
                drop(hand);
            });
        }
    }

    #[test]
    fn a_sweep_frees_the_swept_slots_numbers_only_and_counts_half_done_claims() {
        let memory = Memory::new(16); // 128 numbers
        let bits = memory.bits(128);
        let mine: Vec<u64> = (0..10).map(|_| bits.allocate_from(0).unwrap().0).collect();
        for n in 50..80 {
            memory.hold_as(n, DEAD);
        }
        // Stopped mid-allocation: record written, bit not yet set.
        memory.holders.as_ref().unwrap()[100].store(DEAD, Ordering::SeqCst);
        // Another live holder's numbers.
        memory.hold_as(90, record(3, 1));
        assert_eq!(bits.record_of_number(60).unwrap(), Some(DEAD));
        assert_eq!(bits.record_of_number(mine[0]).unwrap(), Some(ME));
        assert_eq!(bits.record_of_number(120).unwrap(), None);
        assert_eq!(
            bits.sweep(|slot| slot == 2),
            31,
            "the 30 numbers in use and the half-done claim"
        );
        assert_eq!(bits.count(), 11);
        for n in mine.iter().copied().chain([90]) {
            assert!(
                bits.is_allocated(n).unwrap(),
                "a live holder's number was swept"
            );
        }
        assert_eq!(bits.record_of_number(100).unwrap(), None);
        assert_eq!(bits.sweep(|slot| slot == 2), 0);
        memory.assert_summaries_sound();
        // Everything else can be allocated again, 100 included.
        let again: BTreeSet<u64> =
            std::iter::from_fn(|| bits.allocate_from(0).map(|(n, _)| n)).collect();
        assert_eq!(again.len(), 117);
        assert!(again.contains(&100) && again.contains(&50));
    }

    #[test]
    fn third_party_frees_racing_a_sweep_free_each_number_once() {
        let memory = Arc::new(Memory::new(2048)); // 16,384 numbers
        for n in 0..10_000 {
            memory.hold_as(n, DEAD);
        }
        let sweeper = {
            let memory = memory.clone();
            std::thread::spawn(move || memory.bits(16_384).sweep(|slot| slot == 2))
        };
        let freers: Vec<_> = (0..3u64)
            .map(|t| {
                let memory = memory.clone();
                std::thread::spawn(move || {
                    let bits = memory.bits(16_384);
                    (t..10_000)
                        .step_by(3)
                        .filter(|&n| bits.free(n).is_ok())
                        .count() as u64
                })
            })
            .collect();
        let swept = sweeper.join().unwrap();
        let freed: u64 = freers.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(swept + freed >= 10_000, "swept {swept} + freed {freed}");
        assert_eq!(memory.bits(16_384).count(), 0);
        memory.assert_summaries_sound();
        let bits = memory.bits(16_384);
        let again = std::iter::from_fn(|| bits.allocate_from(0)).count();
        assert_eq!(again, 16_384, "no number lost");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(usize),
        Free(u64),
        Lowest(u64, u64),
        Block(u64, u64),
        FreeBlock(u64, u64),
        FreeMany(Vec<u64>),
    }

    proptest! {
        /// Any sequence of operations agrees with a set model and keeps the summaries sound.
        #[test]
        fn agrees_with_a_set(
            holders in any::<bool>(),
            size in 1u64..700,
            ops in proptest::collection::vec(
                prop_oneof![
                    (0usize..100).prop_map(Op::Allocate),
                    (0u64..5700).prop_map(Op::Free),
                    (0u64..5700, 0u64..300).prop_map(|(a, len)| Op::Lowest(a, a + len)),
                    (
                        1u64..140,
                        proptest::sample::select(vec![1u64, 2, 3, 4, 8, 16, 32, 64, 128])
                    )
                        .prop_map(|(count, align)| Op::Block(count, align)),
                    (0u64..5700, 1u64..140).prop_map(|(first, count)| Op::FreeBlock(first, count)),
                    proptest::collection::vec(0u64..5700, 0..70).prop_map(Op::FreeMany),
                ],
                0..600,
            ),
        ) {
            let memory = Memory::with(size, holders);
            let max = memory.capacity;
            let bits = memory.bits(max);
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
                    Op::Lowest(first, last) => {
                        if last >= max {
                            continue;
                        }
                        let expected = (first..=last).find(|n| !model.contains(n));
                        prop_assert_eq!(bits.lowest_in(first, last), expected);
                        if let Some(n) = expected {
                            model.insert(n);
                        }
                    }
                    Op::Block(count, align) => {
                        // The lowest aligned run of `count` free numbers, if any.
                        let expected = (0..max)
                            .step_by(align as usize)
                            .take_while(|s| s + count <= max)
                            .find(|s| (*s..s + count).all(|n| !model.contains(&n)));
                        prop_assert_eq!(bits.allocate_block(count, align), expected);
                        if let Some(s) = expected {
                            model.extend(s..s + count);
                        }
                    }
                    Op::FreeMany(numbers) => {
                        let result = bits.free_many(&numbers);
                        let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
                        if numbers.iter().any(|&n| n >= max) {
                            prop_assert!(result.is_err());
                        } else if distinct.len() == numbers.len() && distinct.is_subset(&model) {
                            prop_assert!(result.is_ok());
                            for n in &numbers {
                                model.remove(n);
                            }
                        } else {
                            prop_assert!(matches!(result, Err(Error::NotAllocated(_))));
                        }
                    }
                    Op::FreeBlock(first, count) => {
                        let result = bits.free_block(first, count);
                        if first + count > max {
                            prop_assert!(matches!(result, Err(Error::OutOfRange(_))));
                        } else if (first..first + count).all(|n| model.contains(&n)) {
                            prop_assert!(result.is_ok());
                            for n in first..first + count {
                                model.remove(&n);
                            }
                        } else {
                            prop_assert!(matches!(result, Err(Error::NotAllocated(_))));
                        }
                    }
                }
                prop_assert_eq!(bits.count(), model.len() as u64);
            }
            memory.assert_summaries_sound();
        }
    }
}
