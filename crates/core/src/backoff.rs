//! Contention management: a caller that lost a race for a shared word waits a moment before it
//! goes on, and waits longer the more races it has lost lately.
//!
//! # Why
//! Some promises make every call write the same few cache lines: a first-in first-out queue's
//! calls all go through the number at its head. Two processes that call at full speed then hand
//! those lines back and forth between cores on every call, and each handoff costs more than a
//! whole call on lines a core keeps to itself. Measured on a 2-core machine (BENCHMARKS.md,
//! "Two against one"), two threads churning on one queue did a tenth to a third of what one did
//! alone. A caller that lost a race waits, and the winner meanwhile makes many calls on lines
//! it keeps: together they come close to what one caller does alone, which is the most callers
//! of one strict order can do.
//!
//! # What it costs, and what it does not
//! - A wait only follows a lost race: a caller that never meets another never waits.
//! - The first wait is [`FIRST_WAIT_NS`]; each race lost after it doubles the next wait, up to
//!   `FIRST_WAIT_NS << MAX_DOUBLINGS`. Every [`CALM_AFTER`] calls that lose no race halve it
//!   again: the next wait shrinks with the calls made since the last lost race, not with time,
//!   so a caller that seldom calls keeps a long next wait for a while, paid only if it loses
//!   another race.
//! - A race is lost when another caller took the very number this one was claiming (its bit,
//!   its holder record, its queue state) between this caller's read and its compare-and-swap.
//!   A change to another number of the same word, a weak compare-and-swap's spurious failure,
//!   or a record already taken before the claim (a dead holder's half-done claim looks the
//!   same) is no lost race. After a wait the search starts over from where its policy starts,
//!   with what changed meanwhile.
//! - A wait is timed by the clock, not counted in spin-loop hints (whose length differs by a
//!   factor of ten between processors), and yields the processor once it is longer than
//!   [`SPIN_NS`], so that a winner preempted on the same core can run.
//! - No caller ever waits *for* another (a wait ends by the clock, whatever the others do), so a
//!   participant that stops forever slows nobody down, and what a call returns does not depend
//!   on whether it waited: waiting is never needed for a promise. Under loom a wait does nothing.

use std::sync::atomic::{AtomicU32, Ordering};

/// The first wait after a lost race, in nanoseconds.
pub const FIRST_WAIT_NS: u64 = 500;
/// How many times the wait may double: the longest is `FIRST_WAIT_NS << MAX_DOUBLINGS`.
pub const MAX_DOUBLINGS: u32 = 7;
/// How many calls in a row without a lost race halve the wait.
pub const CALM_AFTER: u32 = 256;
/// Waits up to this long spin; longer ones yield the processor while they last.
pub const SPIN_NS: u64 = 4_000;

/// A caller's recent contention (one per handle): how many times its next wait doubles (high
/// half), and how many calls it has made since its last lost race (low half). `Relaxed` only: it
/// orders nothing, and a handle shared by threads at worst loses an update of it.
#[derive(Debug, Default)]
pub struct Contention(AtomicU32);

impl Contention {
    /// The contention of one call: waits on a lost race, and calms its caller down at the end of
    /// a call that lost none.
    #[inline]
    pub fn call(&self) -> Backoff<'_> {
        Backoff {
            contention: self,
            lost: false,
        }
    }

    /// How many times the next wait doubles.
    pub fn doublings(&self) -> u32 {
        self.0.load(Ordering::Relaxed) >> 16
    }

    #[cold]
    #[inline(never)]
    fn lost_race(&self) {
        let doublings = self.doublings();
        wait(FIRST_WAIT_NS << doublings);
        self.0
            .store((doublings + 1).min(MAX_DOUBLINGS) << 16, Ordering::Relaxed);
    }

    #[inline]
    fn calm(&self) {
        let now = self.0.load(Ordering::Relaxed);
        if now != 0 {
            self.calm_down(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn calm_down(&self, now: u32) {
        let (doublings, calm) = (now >> 16, (now & 0xffff) + 1);
        let next = if calm >= CALM_AFTER {
            doublings.saturating_sub(1) << 16
        } else {
            doublings << 16 | calm
        };
        self.0.store(next, Ordering::Relaxed);
    }
}

/// One call's side of [`Contention`]: [`Backoff::lost_race`] after each race the call lost;
/// when it is dropped, a call that lost none counts as calm.
pub struct Backoff<'c> {
    contention: &'c Contention,
    lost: bool,
}

impl Backoff<'_> {
    /// Waits after a lost race (see the module's doc), and makes the caller's next wait longer.
    pub fn lost_race(&mut self) {
        self.lost = true;
        self.contention.lost_race();
    }
}

impl Drop for Backoff<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.lost {
            self.contention.calm();
        }
    }
}

/// Waits `ns` nanoseconds by the clock: spinning for short waits, yielding for long ones.
#[cfg(not(loom))]
fn wait(ns: u64) {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let until = Duration::from_nanos(ns);
    while start.elapsed() < until {
        if ns > SPIN_NS {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Under loom a wait is nothing: time is not modelled, and a wait changes no outcome.
#[cfg(loom)]
fn wait(_ns: u64) {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_caller_that_never_loses_a_race_never_waits_and_keeps_no_contention() {
        let contention = Contention::default();
        for _ in 0..1000 {
            drop(contention.call());
        }
        assert_eq!(contention.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn each_lost_race_doubles_the_next_wait_up_to_the_cap() {
        let contention = Contention::default();
        for expected in 1..=MAX_DOUBLINGS + 3 {
            let mut call = contention.call();
            let start = Instant::now();
            call.lost_race();
            // At least the wait it was due (by the clock, never less); the upper side is the
            // scheduler's, not checked.
            let due = FIRST_WAIT_NS << (expected - 1).min(MAX_DOUBLINGS);
            assert!(start.elapsed() >= Duration::from_nanos(due));
            assert_eq!(contention.doublings(), expected.min(MAX_DOUBLINGS));
        }
    }

    #[test]
    fn calls_without_a_lost_race_halve_the_wait_one_step_per_calm_stretch() {
        let contention = Contention::default();
        for _ in 0..3 {
            contention.call().lost_race();
        }
        assert_eq!(contention.doublings(), 3);
        for _ in 0..CALM_AFTER - 1 {
            drop(contention.call());
        }
        assert_eq!(contention.doublings(), 3, "not before a whole calm stretch");
        drop(contention.call());
        assert_eq!(contention.doublings(), 2);
        for _ in 0..2 * CALM_AFTER {
            drop(contention.call());
        }
        assert_eq!(contention.0.load(Ordering::Relaxed), 0, "calm again");
        // A lost race in the middle of a calm stretch starts it over.
        contention.call().lost_race();
        for _ in 0..CALM_AFTER - 1 {
            drop(contention.call());
        }
        contention.call().lost_race();
        assert_eq!(contention.doublings(), 2);
    }
}
