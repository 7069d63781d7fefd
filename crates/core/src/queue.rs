//! A first-in first-out allocator of the numbers `0..capacity` (issue #13), as an algorithm over
//! memory it is given, like [`crate::Bits`]; [`crate::ConcurrentQueue`] runs it over a region.
//!
//! # Design
//! A state word per number is the truth: `HELD(holder)` or `QUEUED(ticket)`, and only a
//! compare-and-swap on it moves a number. The ring of slots is a hint of where each queued
//! number waits: `free` takes a ticket `t` from the tail counter (fetch-and-add), sets the
//! number's state to `QUEUED(t)`, then writes the number into slot `t mod R`, tagged with the
//! lap `t / R`. `allocate` reads the positions from the head on, in order, and takes the first
//! number it finds still queued under its position `p` (slot `p mod R` shows it for lap
//! `p / R`) by moving its state from `QUEUED(p)` to `HELD(me)`: the claim comes first, and the
//! head follows. Tickets are 63-bit and never reused, so a stale slot (its number re-ticketed
//! since) names a ticket its state no longer has, and the claim fails harmlessly.
//!
//! # The head lags
//! Every position below the head is *settled*: claimed from the ring, or *passed* (its number
//! never came, or turned out to carry nothing). Positions at and above the head may be settled
//! too: an allocate moves the head over the positions it read only once it has read [`LAG`] of
//! them, or passed one, or found nothing, so most allocates execute one locked instruction (the
//! claim) where moving the head each time would be two. The price is a read of each position
//! claimed since the head last moved (its slot, then its number's state: both loads). Moving the
//! head is a compare-and-swap from the value the mover read; one that finds the head moved
//! part of the way moves it the rest. A claimed position stays claimed and a passed one passed,
//! so whoever moves the head over a position sees what everyone else would. Claimed positions
//! the head has not reached keep later laps out of their slots (below), so the lag is at most
//! a quarter of the ring, which is at least twice the capacity.
//!
//! Laps are compared by age (modulo 2^32): a participant never writes over a slot a later lap
//! has reached, and one whose position is 2^30 laps behind the head (stalled that long) writes
//! nothing, so the comparison never wraps. A dequeuer that finds a slot empty for its lap waits a
//! few reads for the enqueuer, then marks the position passed; an enqueuer that finds its
//! position passed (or a later lap in its slot) takes a new ticket, at most `RETICKETS` times. A
//! ticket that carries no number (a free that lost its state word to another free or a sweep, a
//! re-ticket whose number a scan took meanwhile) is marked passed at once, so no dequeuer waits
//! on it; one whose free was killed before its state word is not. If enough of them push the
//! tail a lap ahead of the head, an enqueuer refuses to write over an earlier lap's number whose
//! position the head has not reached yet, and takes another ticket instead.
//!
//! # Stranded numbers
//! A number is stranded when its state is `QUEUED(t)` but no slot will show it for `t`: its
//! enqueuer stopped, or gave up re-ticketing, before its slot showed it, and a dequeuer passed
//! the position. (A dequeuer cannot strand a number: it claims before the head moves, and a
//! dequeuer killed after its claim holds the number, which a sweep gives back.) Once the head is
//! past `t`, stranded numbers are taken directly from their state word, by a compare-and-swap
//! from the exact state read: one `allocate` in `SCAN_EVERY` looks at one state (a per-handle
//! cursor walks them all), one that passes a position looks at `MISS_SCAN` more, and one that
//! finds the queue empty looks at every state. A stranded number is older than every number
//! still in the ring, so taking it first keeps the order.
//!
//! # Saying "full" in constant time
//! Every ticket is settled once: by a claim of the number it carried from the ring, which the
//! head counts when it moves over the position; or by a claim of it by a scan, or by turning out
//! to carry nothing (its free lost the state to another free; its number was re-ticketed or
//! taken meanwhile), which a `settled` counter counts, each *after* it happened. The head moves
//! over passed positions too, so a `passed` counter counts those, each *before* the head moves
//! over it. The tickets neither claimed from the ring nor settled are then
//! `tail - (head - passed) - settled`, and every number queued has one of them: a number still
//! queued under `t` was not claimed from its slot (the head moved over `t` only as passed, if
//! at all), and nothing settled `t` yet. [`Queue::counted`] is the capacity less that, read
//! settled first, then the head, then passed, then the tail, so that every count read can only
//! make it smaller than the truth: it is never more than the numbers held. When it equals the
//! capacity every number was held when the tail was read, and an allocate that finds nothing
//! to take returns `None` at once (it has moved the head to the tail first); anything less sends
//! it to the pass over the states. No count is written on the usual path: a claim from the
//! ring is counted by the head's move, which is shared by [`LAG`] claims, and a free's ticket
//! is the tail's fetch-and-add it takes anyway. A participant that stops between a step and its
//! count (a free killed after its ticket; a dequeuer killed after counting a pass, before moving
//! the head) leaves the count short for good, which costs that pass, never a number. So can a
//! call that takes the words for disagreeing (below) when the number it takes from its state has
//! a slot it cannot mark passed, and a double free by two threads of one holder that takes the
//! number back in between (the late free then names an older ticket than its last claim).
//!
//! # Promises
//! - No number goes to two holders: only the compare-and-swap on its state hands it out.
//! - `allocate` returns `None` only when the counts said every number was held, or after a pass
//!   over every state word saw each one `HELD`: either way every number was held at some moment
//!   of the call.
//! - Order: if `free(a)` returned before `free(b)` was called, and both are still queued, `a`
//!   is handed out before `b`: an allocate reads the positions in order and moves on from `a`'s
//!   only once `a` is claimed. Unless `a` was stranded: a free that stopped between its ticket
//!   and its slot, or gave up after `RETICKETS` passed positions, leaves `a` to the scans; so
//!   does one that found the tail a lap ahead of the head (which takes more than `capacity`
//!   tickets that carry no number: racing double frees, frees killed mid-call), when a free a
//!   lap ahead writes over its slot. Meanwhile later numbers go out, and the scans hand out
//!   stranded numbers in the order they come across them (only the pass over every state goes
//!   oldest first). Overlapping frees come out in the order of their last tickets.
//!   `__test__/queue.test.js` checks this offline, from logs of processes on fewer cores than
//!   processes, where stalls are common.
//! - Lock-free, not wait-free: a participant stopped at any step blocks nobody (every loop either
//!   finishes or leaves the number it moves to the scans), and a call that retries does so
//!   because another made progress; one call has no bound on its retries.
//!
//! # Memory layout without initialisation
//! A region is all zeros when it is created, and zeros must be a new queue with `0, 1, 2, ...`
//! waiting in order. So a state stores `QUEUED(t)` as `t - n` (the first tickets are the
//! numbers themselves), the tail counter stores the tail less the capacity, and a slot stores
//! its number XOR its index (an all-zero slot below the capacity is its own number, at lap 0).
//!
//! # Memory orderings
//! - The state compare-and-swaps are `AcqRel`: taking a number acquires what its last holder
//!   did before freeing it; queuing it releases that.
//! - A slot is written (`AcqRel` compare-and-swap) after the state names its ticket, and read
//!   with `Acquire`, so a dequeuer that sees the number in the slot sees the state `QUEUED(t)`.
//! - Head and tail are `AcqRel` read-modify-writes; their loads `Acquire`. A head read late is
//!   smaller than the truth, which only makes a writer refuse more (an overrun it fears, an
//!   ancient position it misses for a while): never a write over a waiting number.
//! - The per-handle scan cursor is `Relaxed`: it only spreads the scans.
//! - `settled` is incremented with `Release` and read with `Acquire`, before the tail: a reader
//!   that sees a settlement counted then sees the ticket of every free it depended on (taken
//!   before that free's release of the state), so the count never takes a number its last free
//!   put back for held.
//! - `passed` is incremented (`Relaxed`) before the head's compare-and-swap, which releases it:
//!   a reader that acquires the head and then reads `passed` sees every pass below that head.
//!   A mover whose compare-and-swap failed takes its increment back; meanwhile the count is
//!   only shorter. The loom models `queue_settled_tickets_never_hide_a_number_free_for_the_whole_call`
//!   and `queue_a_stopped_participant_strands_no_number` check each stop.
//! - A claim from the ring reads the slot (`Acquire`, so it sees the state the free set before
//!   writing it), then the state (`Acquire`), and claims with an `AcqRel` compare-and-swap; a
//!   reader that finds the position claimed only moves on.
//!
//! # Contention
//! An allocate that lost the claim of a number to another caller waits a moment before it goes
//! on ([`crate::backoff`]): every allocate goes through the number at the head, so two callers
//! at full speed would otherwise hand its cache lines back and forth on every call. The wait is
//! bounded by the clock and waits for no one, so it changes no promise above.

use crate::backoff::{Backoff, Contention};
use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering};

/// A state with this bit set is `HELD`, its low 32 bits the holder's record.
const HELD: u64 = 1 << 63;
/// The largest capacity: numbers and slot indices stay below 2^31, so neither meets the passed mark.
pub const MAX_CAPACITY: u64 = 1 << 30;
/// A slot's entry when a dequeuer passed its position before the number came.
const PASSED: u32 = u32::MAX;
/// How many times a dequeuer reads an empty slot before it marks the position passed: its
/// enqueuer is most likely between its ticket and its write.
#[cfg(not(loom))]
const PATIENCE: u32 = 32;
#[cfg(loom)]
const PATIENCE: u32 = 1;
/// How many new tickets one `free` takes while dequeuers keep passing its positions, before it
/// leaves its number to the scans (without a bound, a free and an allocate can take turns
/// forever).
pub const RETICKETS: u32 = 8;
/// How many states an `allocate` that passed a position looks at for stranded numbers.
pub const MISS_SCAN: u32 = 8;
/// How many positions past the head an allocate may claim at before it moves the head on (fewer
/// in a small ring; see [`Queue::new`]): moving the head is a locked instruction on a line every
/// allocate reads, so it is done once for this many claims, and each allocate reads past the
/// positions claimed since (a slot and a state each).
#[cfg(not(loom))]
const LAG: u64 = 4;
#[cfg(loom)]
const LAG: u64 = 4;
/// The fewest positions an allocate passes, or moves the head over, before it takes the words
/// for disagreeing (see [`Queue::allocate`]): a ring of 2 or 4 slots is a lap of passes after a
/// few racing double frees, and the pass over the states that doubt leads to may claim a
/// number whose slot a free it raced cannot mark any more, which no count then includes (short
/// for good).
#[cfg(not(loom))]
const DOUBT: u64 = 64;
/// The models keep the laps' own thresholds, so that they reach the pass over the states.
#[cfg(loom)]
const DOUBT: u64 = 1;
/// How many positions one look ahead of the head covers before it moves the head over them.
const WINDOW: u64 = 64;
/// One `allocate` in this many looks at one state for stranded numbers, so they come back
/// under steady load (a power of two: the scan cursor counts calls in its low bits).
pub const SCAN_EVERY: u64 = 8;

/// A state word's value for `n` queued under `ticket`.
fn queued(n: u64, ticket: u64) -> u64 {
    // `ticket >= n` in a sound queue; a damaged region's tail can break that, and the state then
    // reads as held by a record no holder has: wrapping, never a panic.
    ticket.wrapping_sub(n)
}

/// The ticket `n` waits under, if its state is `QUEUED`.
fn ticket_of(n: u64, state: u64) -> Option<u64> {
    (state & HELD == 0).then(|| state.wrapping_add(n))
}

/// The numbers held by [`Queue::counts`]: every ticket is a number queued, or settled (by a
/// claim from the ring that the head moved over, or as [`QueueParts::settled`] counts), or
/// passed by the head and not settled yet (stranded, or on its way back); so the capacity less
/// the tickets neither claimed from the ring nor settled. The stored tail is the tail less the
/// capacity.
fn held_by_counts([settled, head, passed, stored_tail]: [u64; 4]) -> u64 {
    head.wrapping_sub(passed)
        .wrapping_add(settled)
        .wrapping_sub(stored_tail)
}

/// Whether lap `a` is later than lap `b` (modulo 2^32).
fn later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What a slot holds for its lap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Number(u64),
    Passed,
    Empty,
}

/// The shared memory a [`Queue`] works on.
#[derive(Clone, Copy)]
pub struct QueueParts<'a> {
    /// Every position below it is settled (claimed from the ring) or passed; it lags behind the
    /// claims (see "The head lags" above).
    pub head: &'a AtomicU64,
    /// Tickets handed to enqueuers so far, less the capacity.
    pub tail: &'a AtomicU64,
    /// Positions the head moved over that no claim from the ring settled, each counted before
    /// the head moved (see "Saying full in constant time" above).
    pub passed: &'a AtomicU64,
    /// Tickets settled another way than by a claim from the ring: claims by the scans, and
    /// tickets that carried nothing; each counted after it happened.
    pub settled: &'a AtomicU64,
    /// One state word per number.
    pub states: &'a [AtomicU64],
    /// The ring: [`Queue::ring_len`] slots.
    pub ring: &'a [AtomicU64],
}

/// The queue algorithm over [`QueueParts`]; no state of its own.
#[derive(Clone, Copy)]
pub struct Queue<'a> {
    parts: QueueParts<'a>,
    capacity: u64,
    mask: u64,
    order: u32,
    /// How far an allocate lets the head lag behind its claim before it moves it on.
    lag: u64,
}

/// What a queue keeps per caller (one per handle): where its scans of the states go on, and how
/// long it waits after losing a race ([`crate::backoff`]).
#[derive(Debug, Default)]
pub struct Caller {
    /// State `scan / SCAN_EVERY` is looked at next; the low bits count the calls.
    scan: AtomicU64,
    contention: Contention,
}

impl Caller {
    /// A caller whose scans start at number `start`.
    pub fn starting_at(start: u64) -> Caller {
        Caller {
            scan: AtomicU64::new(start.saturating_mul(SCAN_EVERY)),
            contention: Contention::default(),
        }
    }
}

impl<'a> Queue<'a> {
    /// A view of a queue of `parts.states.len()` numbers.
    pub fn new(parts: QueueParts<'a>) -> Queue<'a> {
        let capacity = parts.states.len() as u64;
        assert!(
            (1..=MAX_CAPACITY).contains(&capacity),
            "capacity outside 1..={MAX_CAPACITY}"
        );
        assert_eq!(
            parts.ring.len(),
            Queue::ring_len(capacity),
            "the ring must have ring_len(capacity) slots"
        );
        let len = parts.ring.len() as u64;
        Queue {
            parts,
            capacity,
            mask: len - 1,
            order: len.trailing_zeros(),
            // A quarter of the ring (half the capacity) at most: claimed positions the head has
            // not passed keep later laps out of their slots, and a lap is only twice the capacity.
            lag: LAG.min(len / 4).max(1),
        }
    }

    /// The slots a queue of `capacity` numbers needs: a power of two, at least twice the
    /// capacity, so a lap of the ring is longer than any queue.
    pub fn ring_len(capacity: u64) -> usize {
        (2 * capacity).next_power_of_two() as usize
    }

    fn tail(&self) -> u64 {
        // Wrapping here and below: a damaged region's counters must not panic the process.
        self.capacity
            .wrapping_add(self.parts.tail.load(Ordering::Acquire))
    }

    fn take_ticket(&self) -> u64 {
        self.capacity
            .wrapping_add(self.parts.tail.fetch_add(1, Ordering::AcqRel))
    }

    fn lap(&self, position: u64) -> u32 {
        (position >> self.order) as u32
    }

    fn cell(&self, position: u64) -> &AtomicU64 {
        &self.parts.ring[(position & self.mask) as usize]
    }

    /// A slot's word holding `value` (a number, or [`PASSED`]) for `position`.
    fn encode(&self, position: u64, value: u32) -> u64 {
        (self.lap(position) as u64) << 32 | (value ^ (position & self.mask) as u32) as u64
    }

    /// A slot's lap and entry, read at `position`'s index.
    fn decode(&self, word: u64, position: u64) -> (u32, Entry) {
        let value = word as u32 ^ (position & self.mask) as u32;
        let entry = match value {
            PASSED => Entry::Passed,
            n if (n as u64) < self.capacity => Entry::Number(n as u64),
            _ => Entry::Empty,
        };
        ((word >> 32) as u32, entry)
    }

    /// Moves `n` from exactly `state` to held by `me`, for a scan (not from the ring): whether
    /// this call did. Settled after.
    fn claim(&self, n: u64, state: u64, me: u32) -> bool {
        let claimed = self.claim_from_ring(n, state, me).is_ok();
        if claimed {
            self.settle();
        }
        claimed
    }

    /// Moves `n` from exactly `state` to held by `me`; else the state found (`Acquire`: a
    /// ticket it names was taken before, so a tail read after it includes it). A claim from the
    /// ring is not counted: the head counts it when it moves over its position.
    #[inline(always)]
    fn claim_from_ring(&self, n: u64, state: u64, me: u32) -> std::result::Result<u64, u64> {
        self.parts.states[n as usize].compare_exchange(
            state,
            HELD | me as u64,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
    }

    /// Counts a claim by a scan, or a ticket that carried nothing, after it happened.
    fn settle(&self) {
        self.parts.settled.fetch_add(1, Ordering::Release);
    }

    /// Whether the counts say every number is held: then every one was when the tail was read.
    fn counted_full(&self) -> bool {
        self.counted() == self.capacity
    }

    /// How many numbers the counts say are held (see "Saying full in constant time" above):
    /// never more than the truth, but in a damaged region. Less while the head lags behind
    /// claims from the ring, and for good after a participant stopped between a step and its
    /// count. Wrapping: stopped participants can leave it below zero.
    pub fn counted(&self) -> u64 {
        held_by_counts(self.counts())
    }

    /// The settled count, the head, the passed count and the stored tail, read in this order:
    /// each count read before what it is weighed against can only make [`Queue::counted`]
    /// smaller (a claim settled is from a ticket below the tail read after it; a position the
    /// head moved over was counted passed before it moved).
    fn counts(&self) -> [u64; 4] {
        [
            self.parts.settled.load(Ordering::Acquire),
            self.parts.head.load(Ordering::Acquire),
            self.parts.passed.load(Ordering::Acquire),
            self.parts.tail.load(Ordering::Acquire),
        ]
    }

    /// The number at the head of the queue (see "Promises" above), now held by `me`; None if
    /// every number was held at some moment of the call. `caller` is what the queue keeps per
    /// handle (any value will do).
    pub fn allocate(&self, me: u32, caller: &Caller) -> Option<u64> {
        let scan = &caller.scan;
        // One call in `SCAN_EVERY` looks at one state (the low bits of `scan` count the calls).
        let tick = scan.load(Ordering::Relaxed);
        if tick % SCAN_EVERY != SCAN_EVERY - 1 {
            scan.store(tick + 1, Ordering::Relaxed);
        } else {
            let head = self.parts.head.load(Ordering::Acquire);
            if let Some(n) = self.take_stranded(me, scan, 1, head) {
                return Some(n);
            }
        }
        // Positions this call moved the head over, and how many of them it passed. Two laps of
        // them, or a lap passed (and at least `DOUBT` either way), mean the words disagree (a
        // region copied while in use, or damaged): the call then looks at every state instead of
        // walking on, so it ends whatever the region holds. Only what this call moved the head
        // over counts: a call that was stalled while the ring went round reads a lap of later
        // laps, and another call moves the head over them first.
        let (mut misses, mut moved) = (0, 0);
        let mut backoff = caller.contention.call();
        let lap = self.mask + 1;
        loop {
            let disagree = misses > lap.max(DOUBT) || moved > (2 * lap).max(DOUBT);
            let head = self.parts.head.load(Ordering::Acquire);
            let tail = self.tail();
            // At most a window ahead (a lap at most): the passed positions are bits of one word.
            let end = tail.min(head.saturating_add(self.window()));
            let mut position = head;
            // Bit i: position `head + i` was passed, no claim from the ring settled it.
            let mut passed = 0u64;
            while position < end && !disagree {
                match self.look(position, me, tail, &mut backoff) {
                    At::Took(n) => {
                        if position + 1 - head >= self.lag || passed != 0 {
                            self.advance(head, position + 1, passed);
                        }
                        return Some(n);
                    }
                    At::Claimed => {}
                    At::Passed => passed |= 1 << (position - head),
                }
                position += 1;
            }
            // Nothing to take from the head to `position`: move the head over it, so that the
            // numbers stranded there are the scans' to take. If the head went back, look again
            // from where it is.
            if position > head {
                let Some((over, counted)) = self.advance(head, position, passed) else {
                    continue;
                };
                moved += over;
                misses += counted;
            }
            if passed != 0 {
                if let Some(n) = self.take_stranded(me, scan, MISS_SCAN, position) {
                    return Some(n);
                }
            }
            if position < tail && !disagree {
                continue; // the window ended before the tail
            }
            // Not when the words disagree: a damaged or copied region's counts prove nothing.
            if !disagree && self.counted_full() {
                return None;
            }
            match self.take_oldest(me, disagree) {
                Oldest::Took(n) => return Some(n),
                Oldest::InRing => continue,
                Oldest::AllHeld => return None,
            }
        }
    }

    /// How many positions an allocate looks at before it moves the head: never more than a lap
    /// (a later position would be the same slot), nor than the bits of a word.
    fn window(&self) -> u64 {
        WINDOW.min(self.mask + 1)
    }

    /// Moves the head from `start` to `to`, over positions the caller found claimed from the
    /// ring or passed (bit i of `passed` for `start + i`), counting the passed ones first.
    /// Returns how many positions this call moved the head over and how many of them it counted
    /// passed (none if another call moved it to `to` or past), or `None` if the head went back
    /// (a damaged region). If another call moved it part of the way, this one moves it the
    /// rest, counting only the passed positions left.
    fn advance(&self, start: u64, to: u64, passed: u64) -> Option<(u64, u64)> {
        let mut from = start;
        loop {
            let count = u64::from((passed >> (from - start)).count_ones());
            // Before the head moves: a reader that sees it moved sees the count (the
            // compare-and-swap releases it), so no passed position looks claimed to it.
            if count > 0 {
                self.parts.passed.fetch_add(count, Ordering::Relaxed);
            }
            match self
                .parts
                .head
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some((to - from, count)),
                Err(actual) => {
                    if count > 0 {
                        self.parts.passed.fetch_sub(count, Ordering::Relaxed);
                    }
                    if actual >= to {
                        return Some((0, 0));
                    }
                    if actual < from {
                        return None;
                    }
                    from = actual;
                }
            }
        }
    }

    /// What `position` holds for an allocate that reads ahead of the head: its number, taken
    /// now by `me`; a claim from the ring that settled it already; or a pass (its number never
    /// came, or a later lap is there). `tail` is one read before.
    #[inline(always)]
    fn look(&self, position: u64, me: u32, tail: u64, backoff: &mut Backoff) -> At {
        let (found, entry) = self.decode(self.cell(position).load(Ordering::Acquire), position);
        match entry {
            Entry::Number(n) if found == self.lap(position) => {
                self.take_queued_here(n, position, me, tail, backoff)
            }
            _ => self.look_further(position, me, tail, backoff),
        }
    }

    /// [`Queue::look`] at a slot that shows `n` for `position`'s lap: `n` if it is still queued
    /// under `position` and this call claims it.
    #[inline(always)]
    fn take_queued_here(
        &self,
        n: u64,
        position: u64,
        me: u32,
        tail: u64,
        backoff: &mut Backoff,
    ) -> At {
        // The exact 64-bit state `QUEUED(position)` (wrapping: a number above its position
        // cannot be queued under it, and the claim then fails). Read first: a claimed position
        // costs a load, not a locked instruction.
        let queued_here = position.wrapping_sub(n);
        let mut now = self.parts.states[n as usize].load(Ordering::Acquire);
        if now == queued_here {
            match self.claim_from_ring(n, queued_here, me) {
                Ok(_) => return At::Took(n),
                Err(actual) => {
                    now = actual;
                    // Another caller claimed it first (or moved it): let it go on alone a while.
                    backoff.lost_race();
                }
            }
        }
        self.after_queued_here(n, now, position, tail)
    }

    /// [`Queue::look`] at a slot that does not show a number for `position`'s lap. One still
    /// empty for this lap is waited on a few reads (its enqueuer is most likely between its
    /// ticket and its write), then marked passed, so that its enqueuer takes another ticket.
    #[cold]
    #[inline(never)]
    fn look_further(&self, position: u64, me: u32, tail: u64, backoff: &mut Backoff) -> At {
        let cell = self.cell(position);
        let lap = self.lap(position);
        let mut current = cell.load(Ordering::Acquire);
        let mut patience = PATIENCE;
        loop {
            let (found, entry) = self.decode(current, position);
            if later(found, lap) {
                return At::Passed;
            }
            if found == lap {
                match entry {
                    Entry::Number(n) => {
                        return self.take_queued_here(n, position, me, tail, backoff)
                    }
                    Entry::Passed => return At::Passed,
                    Entry::Empty => {}
                }
            }
            if patience > 0 {
                patience -= 1;
                std::hint::spin_loop();
                current = cell.load(Ordering::Acquire);
                continue;
            }
            // Marked passed by the one mechanism every write uses (`put`: never over a later
            // lap, never for an ancient position). If it was not, the number came meanwhile, or
            // a later lap, or the head is so far on that this call is stale: look once more.
            if self.put(position, PASSED) {
                return At::Passed;
            }
            current = cell.load(Ordering::Acquire);
            let (found, entry) = self.decode(current, position);
            if !(later(found, lap) || (found == lap && entry != Entry::Empty)) {
                // Still nothing for this lap: the position is ancient (the head is far on, and
                // the caller's move of it will fail), so there is nothing to wait for.
                return At::Passed;
            }
        }
    }

    /// What `position` is, for the head, once its slot showed `n` for its lap and `n`'s state
    /// (`state`, read after the slot) was no longer queued under it: claimed from the ring (held, or queued again under a
    /// later ticket), unless the state disagrees (queued under an earlier ticket, or one the tail
    /// has not reached: a damaged region, or one copied while in use), which counts as passed,
    /// so that the count does not take it for held. `tail` is one read before the state: a
    /// ticket below it needs no second read.
    fn after_queued_here(&self, n: u64, state: u64, position: u64, tail: u64) -> At {
        match ticket_of(n, state) {
            Some(ticket) if ticket <= position || (ticket >= tail && ticket >= self.tail()) => {
                At::Passed
            }
            _ => At::Claimed,
        }
    }

    /// Looks at `budget` states from the cursor `scan` and takes the first stranded number whose
    /// slot no longer shows it (a slow dequeuer may still be on its way to one it shows).
    fn take_stranded(&self, me: u32, scan: &AtomicU64, budget: u32, head: u64) -> Option<u64> {
        for _ in 0..budget {
            let at = scan.load(Ordering::Relaxed) / SCAN_EVERY;
            let n = if at >= self.capacity { 0 } else { at };
            scan.store((n + 1) * SCAN_EVERY, Ordering::Relaxed);
            let state = self.parts.states[n as usize].load(Ordering::Acquire);
            let Some(ticket) = ticket_of(n, state) else {
                continue;
            };
            if ticket >= head {
                continue;
            }
            let (lap, entry) = self.decode(self.cell(ticket).load(Ordering::Acquire), ticket);
            if lap == self.lap(ticket) && entry == Entry::Number(n) {
                continue;
            }
            if self.claim(n, state, me) {
                return Some(n);
            }
        }
        None
    }

    /// For a queue that looks empty: takes the oldest stranded number, or says whether a number
    /// waits in the ring (a free landed meanwhile) or every state was seen held. A state naming
    /// a ticket at or past the tail cannot be in the ring (the words disagree): it counts as
    /// stranded. With `any`, every queued number counts as stranded: the oldest is taken.
    fn take_oldest(&self, me: u32, any: bool) -> Oldest {
        let head = self.parts.head.load(Ordering::Acquire);
        let mut oldest: Option<(u64, u64, u64)> = None;
        let mut in_ring = false;
        for (n, state) in self.parts.states.iter().enumerate() {
            let state = state.load(Ordering::Acquire);
            let Some(ticket) = ticket_of(n as u64, state) else {
                continue;
            };
            // Read after the state: a ticket below it was taken before the state named it.
            if !any && ticket >= head && ticket < self.tail() {
                in_ring = true;
            } else if oldest.is_none_or(|(t, _, _)| ticket < t) {
                oldest = Some((ticket, n as u64, state));
            }
        }
        match oldest {
            Some((ticket, n, state)) if self.claim_oldest(n, ticket, state, me, head) => {
                Oldest::Took(n)
            }
            // Taken or moved meanwhile: someone made progress; look again.
            Some(_) => Oldest::InRing,
            None if in_ring => Oldest::InRing,
            None => Oldest::AllHeld,
        }
    }

    /// Claims `n`, queued under `ticket` as `state`, for [`Queue::take_oldest`], and counts the
    /// claim exactly when the head does not: settled if its position is passed (below `head`,
    /// read before the states, or marked passed now: its free then takes another ticket, which
    /// finds `n` taken), not if its slot shows `n` (the head counts that position as a claim
    /// from the ring when it moves over it). A slot the mark was refused for, still empty for
    /// the lap, might show `n` later: not settled either, which leaves the count short, never
    /// over.
    fn claim_oldest(&self, n: u64, ticket: u64, state: u64, me: u32, head: u64) -> bool {
        if ticket < head {
            return self.claim(n, state, me);
        }
        self.put(ticket, PASSED);
        let lap = self.lap(ticket);
        match self.decode(self.cell(ticket).load(Ordering::Acquire), ticket) {
            (found, Entry::Passed) if found == lap => self.claim(n, state, me),
            // A later lap: nobody writes this lap's entry any more, so the head passes it.
            (found, _) if later(found, lap) => self.claim(n, state, me),
            _ => self.claim_from_ring(n, state, me).is_ok(),
        }
    }

    /// Queues `n`, which must be held (by anyone).
    pub fn free(&self, n: u64) -> Result<()> {
        let state = self.state(n)?;
        let current = state.load(Ordering::Acquire);
        if current & HELD == 0 || !self.queue_from(n, current) {
            // Not held, or another free of `n` (or a sweep) won.
            return Err(Error::NotAllocated(n));
        }
        Ok(())
    }

    /// Queues `n` if its state is still `held`: whether it did.
    fn queue_from(&self, n: u64, held: u64) -> bool {
        match self.enter(n, held) {
            Some(ticket) => {
                self.publish(n, ticket);
                true
            }
            None => false,
        }
    }

    /// The first steps of queuing `n`: a ticket, then the state `QUEUED(ticket)` if the state is
    /// still `held`. A ticket taken for nothing is settled, and a position dequeuers pass.
    fn enter(&self, n: u64, held: u64) -> Option<u64> {
        let ticket = self.take_ticket();
        match self.parts.states[n as usize].compare_exchange(
            held,
            queued(n, ticket),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => Some(ticket),
            Err(_) => {
                self.settle();
                // A ticket for nothing: marked passed now, so its dequeuer need not wait on it.
                self.put(ticket, PASSED);
                None
            }
        }
    }

    /// A free of `n` that stops for good before writing its slot (a killed process), for the
    /// models: returns its ticket. Not for use.
    #[doc(hidden)]
    pub fn free_stopping_before_the_slot(&self, n: u64) -> Option<u64> {
        let held = self.parts.states[n as usize].load(Ordering::Acquire);
        (held & HELD != 0).then(|| self.enter(n, held)).flatten()
    }

    /// A free that lost the state word to another free after taking its ticket, for the models:
    /// its ticket carries nothing (settled, its position marked passed). Not for use.
    #[doc(hidden)]
    pub fn ticket_for_nothing(&self) {
        let ticket = self.take_ticket();
        self.settle();
        self.put(ticket, PASSED);
    }

    /// The rest of an `allocate` that read the head and paused before it looked at `position`
    /// (a slow dequeuer), for the models: the number it takes there. Not for use.
    #[doc(hidden)]
    pub fn finish_taking(&self, position: u64, me: u32) -> Option<u64> {
        match self.look(position, me, self.tail(), &mut Contention::default().call()) {
            At::Took(n) => Some(n),
            At::Claimed | At::Passed => None,
        }
    }

    /// Writes `n`, queued under `ticket`, into its slot; if a dequeuer passed the position
    /// first, re-tickets it behind the tail (at most `RETICKETS` times), unless its state moved
    /// meanwhile (a scan took it).
    fn publish(&self, n: u64, mut ticket: u64) {
        for attempt in 0..=RETICKETS {
            if self.write(n, ticket) || attempt == RETICKETS {
                return; // written, or stranded for the scans
            }
            let next = self.take_ticket();
            if self.parts.states[n as usize]
                .compare_exchange(
                    queued(n, ticket),
                    queued(n, next),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                // Taken meanwhile (a scan, whose claim settled `ticket`): a ticket for nothing.
                self.settle();
                self.put(next, PASSED);
                return;
            }
            self.settle(); // `ticket` carries nothing now
            ticket = next;
        }
    }

    /// Writes `n` into the slot of `ticket`, unless a dequeuer passed it, a later lap is there,
    /// or the ring is overrun (see [`Queue::put`]).
    fn write(&self, n: u64, ticket: u64) -> bool {
        self.put(ticket, n as u32)
    }

    /// Writes `value` (a number, or [`PASSED`]) into the slot of `ticket`; whether it did. Not
    /// over a later lap, nor over this lap's entry (a dequeuer passed it), nor over an earlier
    /// lap's number whose position the head has not reached (the tail ran a lap ahead of the
    /// head, over tickets that carry no number: that number still waits there), nor for a
    /// ticket so far behind the head that its lap could read as a later one's.
    fn put(&self, ticket: u64, value: u32) -> bool {
        let cell = self.cell(ticket);
        let lap = self.lap(ticket);
        let mut current = cell.load(Ordering::Acquire);
        let mut head = None;
        loop {
            let (found, entry) = self.decode(current, ticket);
            if later(found, lap) || (found == lap && entry != Entry::Empty) {
                return false;
            }
            let head = *head.get_or_insert_with(|| self.parts.head.load(Ordering::Acquire));
            if self.ancient(ticket, head) {
                return false;
            }
            if matches!(entry, Entry::Number(_)) && found != lap {
                let behind = (lap.wrapping_sub(found) as u64) << self.order;
                if ticket.checked_sub(behind).is_some_and(|old| old >= head) {
                    return false;
                }
            }
            match cell.compare_exchange(
                current,
                self.encode(ticket, value),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether `position` is so far behind `head` (2^30 laps) that laps, compared modulo 2^32,
    /// could take its lap for a later one: a participant stalled that long writes nothing.
    fn ancient(&self, position: u64, head: u64) -> bool {
        head.saturating_sub(position) >= (self.mask + 1) << 30
    }

    /// Queues every number held by a holder that `gone` says has ended (given the holder's
    /// record); returns how many. A free racing the sweep for the same number is one of two
    /// frees: whichever moves the state first queues it, once.
    pub fn sweep(&self, gone: impl Fn(u32) -> bool) -> u64 {
        let mut freed = 0;
        for (n, state) in self.parts.states.iter().enumerate() {
            let current = state.load(Ordering::Acquire);
            if current & HELD != 0 && gone(current as u32) && self.queue_from(n as u64, current) {
                freed += 1;
            }
        }
        freed
    }

    /// Lowers the settled count to what a pass over the states finds held, if it says more (a
    /// damaged region, or one copied while in use, whose count would otherwise say "full" while
    /// numbers wait); returns by how much. Only when nothing was settled and no ticket taken
    /// during the pass (then no claim or free moved between the count and the states, and the
    /// difference is damage), and by a compare-and-swap from the settled value read first, so a
    /// recount never leaves a sound count short; with calls under way it changes nothing. (Two
    /// recounts of a damaged count at once, with claims between them, can lower it below the
    /// truth: short, which costs the pass, never a number.)
    pub fn recount(&self) -> u64 {
        let [settled, head, passed, tail] = self.counts();
        let counted = held_by_counts([settled, head, passed, tail]);
        let held = self.held();
        // The pass's loads are Relaxed: a state seen queued by a free must bring that free's
        // ticket (taken before it released the state) into the tail read below.
        crate::sync::fence(Ordering::Acquire);
        if self.parts.tail.load(Ordering::Acquire) != tail || self.head() != head {
            return 0;
        }
        // A count that wrapped below zero (stopped participants, or the head lagging behind
        // its claims) is short already. One above the capacity but not wrapped is damage too:
        // it can never say "full" again unless lowered.
        if counted <= held || counted > u64::MAX / 2 {
            return 0;
        }
        let excess = counted - held;
        match self.parts.settled.compare_exchange(
            settled,
            settled.wrapping_sub(excess),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => excess,
            Err(_) => 0,
        }
    }

    /// Whether `n` is held, and the holder's record.
    pub fn holder_of(&self, n: u64) -> Result<Option<u32>> {
        let current = self.state(n)?.load(Ordering::Acquire);
        Ok((current & HELD != 0).then_some(current as u32))
    }

    /// Whether some number is held with the record `record`.
    pub fn any_held_by(&self, record: u32) -> bool {
        self.parts
            .states
            .iter()
            .any(|s| s.load(Ordering::Relaxed) == HELD | record as u64)
    }

    /// How many numbers are held: a pass over the states, each read atomically.
    pub fn held(&self) -> u64 {
        let held = |s: &AtomicU64| s.load(Ordering::Relaxed) & HELD != 0;
        self.parts.states.iter().filter(|s| held(s)).count() as u64
    }

    /// The first `limit` numbers waiting, oldest ticket first (stranded ones included): a
    /// snapshot of each state, not of the whole. See [`Queue::snapshot`].
    pub fn waiting(&self, limit: usize) -> Vec<u64> {
        self.snapshot(limit).next
    }

    /// How many numbers wait, how many of them are stranded (queued under a position the head
    /// has passed: the free that queued them stopped or stalled mid-call), and
    /// the first `limit` of them, oldest ticket first. One pass over the states; memory and
    /// sorting in `limit`, not in the capacity.
    pub fn snapshot(&self, limit: usize) -> Snapshot {
        use std::collections::BinaryHeap;
        let head = self.head();
        let (mut waiting, mut stranded) = (0, 0);
        // The `limit` smallest tickets so far, the largest on top to be pushed out.
        let mut first: BinaryHeap<(u64, u64)> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        for n in 0..self.capacity {
            let state = self.parts.states[n as usize].load(Ordering::Relaxed);
            let Some(ticket) = ticket_of(n, state) else {
                continue;
            };
            waiting += 1;
            stranded += u64::from(ticket < head);
            if limit > 0 && (first.len() < limit || first.peek().is_some_and(|&(t, _)| ticket < t))
            {
                first.push((ticket, n));
                if first.len() > limit {
                    first.pop();
                }
            }
        }
        Snapshot {
            waiting,
            stranded,
            next: first
                .into_sorted_vec()
                .into_iter()
                .map(|(_, n)| n)
                .collect(),
        }
    }

    /// The head: every position below it is settled or passed (positions above it may be too).
    pub fn head(&self) -> u64 {
        self.parts.head.load(Ordering::Acquire)
    }

    fn state(&self, n: u64) -> Result<&AtomicU64> {
        self.parts.states.get(n as usize).ok_or_else(|| {
            Error::OutOfRange(format!("number {n} is outside [0, {})", self.capacity))
        })
    }
}

/// What waits in a queue, as [`Queue::snapshot`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// How many numbers wait.
    pub waiting: u64,
    /// How many of them are queued under a position the head has passed.
    pub stranded: u64,
    /// The first of them, the next to be handed out first.
    pub next: Vec<u64>,
}

/// What [`Queue::look`] found at a position.
enum At {
    Took(u64),
    Claimed,
    Passed,
}

/// What [`Queue::take_oldest`] found.
enum Oldest {
    Took(u64),
    InRing,
    AllHeld,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::QueueMemory as Memory;

    #[test]
    fn hands_out_in_order_then_in_the_order_freed() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        let got: Vec<u64> = (0..4)
            .map(|_| queue.allocate(1, &memory.caller).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(queue.allocate(1, &memory.caller), None);
        for n in [2, 0, 3, 1] {
            queue.free(n).unwrap();
        }
        let again: Vec<u64> = (0..4)
            .map(|_| queue.allocate(1, &memory.caller).unwrap())
            .collect();
        assert_eq!(again, [2, 0, 3, 1]);
        assert!(matches!(queue.free(9), Err(Error::OutOfRange(_))));
        queue.free(3).unwrap();
        assert!(matches!(queue.free(3), Err(Error::NotAllocated(3))));
        assert_eq!(queue.allocate(1, &memory.caller), Some(3));
        assert_eq!(queue.allocate(1, &memory.caller), None);
    }

    #[test]
    fn a_sweep_queues_what_ended_holders_held_and_nothing_else() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        let held: Vec<u64> = [5, 6, 5, 6]
            .iter()
            .map(|&me| queue.allocate(me, &memory.caller).unwrap())
            .collect();
        assert_eq!(held, [0, 1, 2, 3]);
        assert_eq!(queue.sweep(|holder| holder == 5), 2);
        assert_eq!(queue.holder_of(1).unwrap(), Some(6));
        assert_eq!(queue.holder_of(0).unwrap(), None);
        assert_eq!(queue.sweep(|holder| holder == 5), 0, "nothing twice");
        assert_eq!(
            [
                queue.allocate(7, &memory.caller),
                queue.allocate(7, &memory.caller)
            ],
            [Some(0), Some(2)]
        );
        assert_eq!(queue.allocate(7, &memory.caller), None);
    }

    #[test]
    fn a_number_a_dead_dequeuer_claimed_at_the_head_never_makes_an_allocate_wait() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        // Claimed from the ring by a holder that died before the head moved: every call reads
        // it at the head until the head moves over it. Only a race lost to a live caller waits.
        memory.states[0].store(HELD | 5, Ordering::SeqCst);
        let caller = Caller::default();
        assert_eq!(queue.allocate(7, &caller), Some(1));
        assert_eq!(queue.allocate(7, &caller), Some(2));
        queue.free(1).unwrap();
        assert_eq!(queue.allocate(7, &caller), Some(3));
        assert_eq!(queue.allocate(7, &caller), Some(1));
        assert_eq!(caller.contention.doublings(), 0, "never a wait");
    }

    #[test]
    fn many_rounds_wrap_the_ring() {
        let memory = Memory::new(3);
        let queue = memory.queue();
        for round in 0..1000u64 {
            let n = queue.allocate(7, &memory.caller).unwrap();
            assert_eq!(n, round % 3);
            queue.free(n).unwrap();
        }
    }

    #[test]
    fn a_dequeuer_that_stopped_after_claiming_its_position_strands_nothing() {
        let memory = Memory::new(2);
        let queue = memory.queue();
        // The head moved over position 0 and counted it passed, but 0 was never claimed: it
        // stays queued behind the head (as if its enqueuer had stopped before its slot).
        memory.passed.store(1, Ordering::Relaxed);
        memory.head.store(1, Ordering::Relaxed);
        assert_eq!(queue.allocate(1, &memory.caller), Some(1));
        assert_eq!(
            queue.allocate(1, &memory.caller),
            Some(0),
            "recovered before reporting empty"
        );
        assert_eq!(queue.allocate(1, &memory.caller), None);
    }

    #[test]
    fn an_enqueuer_that_stopped_before_writing_its_slot_strands_nothing() {
        let memory = Memory::new(2);
        let queue = memory.queue();
        let a = queue.allocate(1, &memory.caller).unwrap();
        assert_eq!(queue.allocate(1, &memory.caller), Some(1));
        // A free of `a` took ticket 2 and set the state, then stopped before writing the slot.
        assert_eq!(queue.free_stopping_before_the_slot(a), Some(2));
        assert_eq!(queue.allocate(1, &memory.caller), Some(a));
        assert_eq!(queue.allocate(1, &memory.caller), None);
    }

    #[test]
    fn threads_never_share_a_number_and_lose_none() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let memory = Memory::new(64);
        let taken = AtomicUsize::new(0);
        let owned: Vec<AtomicBool> = (0..64).map(|_| AtomicBool::new(false)).collect();
        std::thread::scope(|scope| {
            for me in 1..=4u32 {
                let (memory, owned, taken) = (&memory, &owned, &taken);
                scope.spawn(move || {
                    let queue = memory.queue();
                    for _ in 0..20_000 {
                        let mut held = Vec::new();
                        for _ in 0..8 {
                            if let Some(n) = queue.allocate(me, &memory.caller) {
                                assert!(
                                    !owned[n as usize].swap(true, Ordering::AcqRel),
                                    "{n} twice"
                                );
                                taken.fetch_add(1, Ordering::Relaxed);
                                held.push(n);
                            }
                        }
                        for n in held {
                            owned[n as usize].store(false, Ordering::Release);
                            queue.free(n).unwrap();
                        }
                    }
                });
            }
        });
        // Four threads holding at most 32 of 64 numbers: every allocation succeeded.
        assert_eq!(taken.load(Ordering::Relaxed), 4 * 20_000 * 8);
        memory.assert_all_come_back(&(0..64).collect::<Vec<_>>());
    }

    #[test]
    fn settled_tickets_count_the_held_numbers_after_churn_and_say_full_only_when_full() {
        let memory = Memory::new(16);
        // The numbers held, when nobody is mid-call and the head has caught up.
        let counted = || memory.queue().counted();
        let failed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for me in 1..=4u32 {
                let (memory, failed) = (&memory, &failed);
                scope.spawn(move || {
                    let queue = memory.queue();
                    for _ in 0..5_000 {
                        // More than the capacity, so every round ends with "none free"
                        // whether or not the threads overlap (a loaded machine runs them one by
                        // one).
                        let held: Vec<u64> = (0..20)
                            .filter_map(|_| queue.allocate(me, &memory.caller))
                            .collect();
                        failed.fetch_add(20 - held.len(), Ordering::Relaxed);
                        for n in held {
                            queue.free(n).unwrap();
                        }
                    }
                });
            }
        });
        assert!(
            failed.load(Ordering::Relaxed) > 0,
            "20 wanted of 16 a round: some failed"
        );
        // Nobody holds any: the count says none, or less (below zero, wrapped) while the head
        // lags behind the last claims.
        assert!(counted() == 0 || counted() > u64::MAX / 2, "{}", counted());
        let queue = memory.queue();
        let all: Vec<u64> = std::iter::from_fn(|| queue.allocate(9, &memory.caller)).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(counted(), 16);
        queue.free(all[3]).unwrap();
        assert_eq!(queue.allocate(9, &memory.caller), Some(all[3]));
        // A claimer that stopped before counting leaves the count short: "full" is then found
        // by the pass over the states, and a number freed is still found.
        memory.settled.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(queue.allocate(9, &memory.caller), None);
        queue.free(all[5]).unwrap();
        assert_eq!(queue.allocate(9, &memory.caller), Some(all[5]));
        // The head lags behind that claim until an allocate moves it on (this one, to the tail).
        assert_eq!(queue.allocate(9, &memory.caller), None);
        assert_eq!(counted(), 15);
        memory.settled.fetch_add(1, Ordering::Relaxed); // the stopped claimer's one, back
                                                        // Two threads free every number at once: each is freed once, and the frees that lose
                                                        // the race (some after taking a ticket, which then carries nothing) count nothing.
        let freed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for &n in &all {
                        if memory.queue().free(n).is_ok() {
                            freed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(freed.load(Ordering::Relaxed), 16);
        assert_eq!(counted(), 0);
    }

    #[test]
    fn a_settled_count_above_the_states_is_lowered_by_a_recount() {
        // A head that says four claims were made from the ring, and states that say all four
        // numbers wait (a region copied mid-use copies the head after the states): the count
        // says all four are held.
        let memory = Memory::new(4);
        memory.head.store(4, Ordering::Relaxed);
        let queue = memory.queue();
        assert_eq!(queue.snapshot(0).waiting, 4);
        // The count says "full"; a recount (reclaim() does one) finds them.
        assert_eq!(queue.allocate(9, &memory.caller), None);
        assert_eq!(queue.recount(), 4);
        let mut got: Vec<u64> = std::iter::from_fn(|| queue.allocate(9, &memory.caller)).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3], "every waiting number comes out");
        assert_eq!(queue.recount(), 0, "and the count is right again");
    }

    /// A head far past what the states say were claimed (damage) makes the count exceed the
    /// capacity: "full" in constant time is then gone for good unless a recount lowers it.
    #[test]
    fn a_count_above_the_capacity_is_lowered_by_a_recount() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        assert_eq!(queue.allocate(1, &memory.caller), Some(0));
        memory.head.store(100, Ordering::Relaxed);
        memory.tail.store(50, Ordering::Relaxed); // the tail (54) behind the head
        assert!(queue.counted() > 4);
        assert!(queue.recount() > 0);
        assert_eq!(queue.counted(), queue.held());
        let mut got: Vec<u64> = std::iter::from_fn(|| queue.allocate(2, &memory.caller)).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3], "every waiting number comes out");
        assert_eq!(queue.counted(), 4, "and the count says full");
    }

    #[test]
    fn recounts_while_threads_churn_never_leave_a_sound_count_short() {
        let memory = Memory::new(64);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let lowered = std::thread::scope(|scope| {
            for me in 1..=2u32 {
                let (memory, stop) = (&memory, &stop);
                scope.spawn(move || {
                    let queue = memory.queue();
                    while !stop.load(Ordering::Relaxed) {
                        let n = queue.allocate(me, &memory.caller).unwrap();
                        queue.free(n).unwrap();
                    }
                });
            }
            let lowered: u64 = (0..2_000).map(|_| memory.queue().recount()).sum();
            stop.store(true, Ordering::Relaxed);
            lowered
        });
        assert_eq!(lowered, 0, "a sound count is never lowered");
        // The head may lag behind the last claims: the count is exact once an allocate has
        // moved it to the tail.
        let queue = memory.queue();
        let all = std::iter::from_fn(|| queue.allocate(9, &memory.caller)).count();
        assert_eq!((all, queue.counted()), (64, 64));
    }

    #[test]
    fn a_dequeuer_a_lap_behind_does_not_break_the_order() {
        let memory = Memory::new(3);
        let queue = memory.queue();
        let slow = memory.head.fetch_add(1, Ordering::AcqRel); // takes position 0, pauses
        assert_eq!(queue.allocate(1, &memory.caller), Some(1));
        assert_eq!(queue.allocate(1, &memory.caller), Some(2));
        for _ in 3..8 {
            queue.free(1).unwrap();
            assert_eq!(queue.allocate(1, &memory.caller), Some(1));
        }
        queue.free(1).unwrap(); // a lap later: position 8, the slow dequeuer's slot
        assert_eq!(queue.finish_taking(slow, 2), None);
        queue.free(2).unwrap();
        // 0 (stranded by the slow dequeuer: the oldest) may come first, by a scan; 1 before 2.
        let got: Vec<u64> = (0..3)
            .map(|_| queue.allocate(1, &memory.caller).unwrap())
            .collect();
        let at = |n| got.iter().position(|&m| m == n).unwrap();
        assert!(at(1) < at(2), "1 was freed before 2: {got:?}");
    }

    #[test]
    fn a_number_a_stopped_dequeuer_stranded_comes_back_under_steady_load() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        memory.head.fetch_add(1, Ordering::AcqRel); // took position 0 and was killed
        let seen: Vec<u64> = (0..64)
            .map(|_| {
                let n = queue.allocate(1, &memory.caller).unwrap();
                queue.free(n).unwrap();
                n
            })
            .collect();
        assert!(seen.contains(&0), "0 never came back: {seen:?}");
    }

    #[test]
    fn a_free_whose_positions_are_always_passed_gives_up_and_its_number_comes_back() {
        let memory = Memory::new(2);
        let queue = memory.queue();
        assert_eq!(queue.allocate(1, &memory.caller), Some(0));
        assert_eq!(queue.allocate(1, &memory.caller), Some(1));
        // Every position the free of 0 will take, passed before it writes (as dequeuers that
        // keep arriving first would): tickets 2 ..= 2 + RETICKETS.
        for position in 2..=2 + RETICKETS as u64 {
            queue
                .cell(position)
                .store(queue.encode(position, PASSED), Ordering::Relaxed);
        }
        memory.head.store(3 + RETICKETS as u64, Ordering::Relaxed);
        queue.free(0).unwrap();
        assert_eq!(
            memory.tail.load(Ordering::Relaxed),
            1 + RETICKETS as u64,
            "bounded"
        );
        assert_eq!(queue.waiting(usize::MAX), [0]);
        assert_eq!(
            queue.allocate(2, &memory.caller),
            Some(0),
            "stranded, then taken"
        );
        assert_eq!(queue.holder_of(0).unwrap(), Some(2));
    }

    #[test]
    fn an_enqueuer_passed_once_takes_a_new_ticket_behind_the_frees_after_it() {
        let memory = Memory::new(3);
        let queue = memory.queue();
        for n in 0..3 {
            assert_eq!(queue.allocate(1, &memory.caller), Some(n));
        }
        // A free of 2 took ticket 3 and set the state, then paused; a dequeuer passed position 3.
        assert_eq!(queue.free_stopping_before_the_slot(2), Some(3));
        memory.head.fetch_add(1, Ordering::AcqRel);
        assert_eq!(queue.finish_taking(3, 1), None);
        queue.free(0).unwrap(); // ticket 4
        queue.publish(2, 3); // the paused free goes on: passed, so it takes ticket 5
        queue.free(1).unwrap(); // ticket 6
        assert_eq!(queue.waiting(usize::MAX), [0, 2, 1]);
        for n in [0, 2] {
            assert_eq!(queue.allocate(1, &memory.caller), Some(n));
        }
        assert_eq!(queue.allocate(1, &memory.caller), Some(1));
    }

    /// Found by a review: tickets that carry no number (frees that lost the race for their state word,
    /// or were SIGKILLed between their fetch-and-add and their state CAS) push the tail more
    /// than a lap ahead of the head; the enqueuer a lap ahead then writes over a number that is
    /// still waiting for its (not yet arrived, not stalled) dequeuer.
    #[test]
    fn tickets_carrying_no_number_never_let_a_free_write_over_a_waiting_number() {
        let memory = Memory::new(16); // ring of 32
        let queue = memory.queue();
        for n in 0..16 {
            assert_eq!(queue.allocate(1, &memory.caller), Some(n));
        }
        // free(0) returns: ticket 16, slot 16 at lap 0. Then 1..=14 are freed: tickets 17..=30.
        for n in 0..15 {
            queue.free(n).unwrap();
        }
        // 18 racing frees of 15 (or frees killed after their fetch-and-add): all read HELD, the
        // first 17 to take a ticket lose the state CAS to the last one.
        let held = memory.states[15].load(Ordering::Acquire);
        let losers: Vec<u64> = (0..17).map(|_| queue.take_ticket()).collect(); // 31..=47
        assert_eq!(queue.enter(15, held), Some(48)); // 48 = 16 + 32: slot 16, lap 1
        for ticket in losers {
            // each loser's CAS fails: its ticket carries nothing
            assert!(memory.states[15]
                .compare_exchange(
                    held,
                    queued(15, ticket),
                    Ordering::AcqRel,
                    Ordering::Relaxed
                )
                .is_err());
        }
        queue.publish(15, 48); // writes over 0, still waiting at position 16 (head is 16)
        assert_eq!(memory.head.load(Ordering::Relaxed), 16);
        let got: Vec<u64> = (0..16)
            .map(|_| queue.allocate(2, &memory.caller).unwrap())
            .collect();
        assert_eq!(
            got,
            (0..16).collect::<Vec<_>>(),
            "free(0) returned before free(1) was called; nobody stalled"
        );
    }

    /// Found by a review: laps are 32-bit and compared by age, so a dequeuer that stalls (SIGSTOP)
    /// for 2^31 + 1 laps of the ring (2^36 positions at capacity 16) sees the current lap as an
    /// earlier one, marks its long-gone position passed over a live number, and that slot then
    /// looks "a lap ahead" to everyone for the next 2^31 laps.
    #[test]
    fn a_dequeuer_stalled_for_2_pow_31_laps_writes_nothing() {
        let memory = Memory::new(16); // ring of 32, order 5
        let queue = memory.queue();
        let slow = memory.head.fetch_add(1, Ordering::AcqRel); // position 0, lap 0; SIGSTOPped
                                                               // ... 2^36 positions of ordinary traffic later (fast-forwarded): every number held, the
                                                               // queue empty, each slot showing what its position of the last lap left there.
        let now: u64 = ((1u64 << 31) + 1) << 5; // lap 2^31 + 1, slot 0
        for position in now - 32..now {
            queue.cell(position).store(
                queue.encode(position, (position % 16) as u32),
                Ordering::Relaxed,
            );
        }
        for state in &memory.states {
            state.store(HELD | 1, Ordering::Relaxed);
        }
        memory.head.store(now, Ordering::Relaxed);
        memory.tail.store(now - 16, Ordering::Relaxed);
        memory.caller.scan.store(5, Ordering::Relaxed); // keep the scans off 3 for this call
        queue.free(3).unwrap(); // ticket `now`, slot 0
        queue.free(4).unwrap(); // ticket `now + 1`, slot 1
        assert_eq!(queue.finish_taking(slow, 9), None); // resumes: overwrites 3 with PASSED at lap 0
        assert_eq!(
            queue.allocate(2, &memory.caller),
            Some(3),
            "free(3) returned before free(4) was called; the stalled dequeuer was not moving 3"
        );
    }

    /// Found by a review: the same stall for exactly 2^32 laps makes the laps equal, and the
    /// dequeuer computes `queued(3, 0)`: a debug-build panic (`ticket >= n`), a wrapped value in
    /// release.
    #[test]
    fn a_dequeuer_stalled_exactly_2_pow_32_laps_claims_nothing_and_does_not_panic() {
        let memory = Memory::new(16);
        let queue = memory.queue();
        let slow = memory.head.fetch_add(1, Ordering::AcqRel); // position 0, SIGSTOPped
        let now: u64 = 1u64 << 37; // lap 2^32: slot 0, lap word 0
        for state in &memory.states {
            state.store(HELD | 1, Ordering::Relaxed);
        }
        for position in now - 32..now {
            queue.cell(position).store(
                queue.encode(position, (position % 16) as u32),
                Ordering::Relaxed,
            );
        }
        memory.head.store(now, Ordering::Relaxed);
        memory.tail.store(now - 16, Ordering::Relaxed);
        queue.free(3).unwrap(); // ticket `now`, slot 0, same 32-bit lap as position 0
        let result = std::panic::catch_unwind(|| queue.finish_taking(slow, 9));
        assert!(result.is_ok(), "panicked");
    }

    /// Found by a review: a region whose words disagree (a state naming a ticket past the tail,
    /// as a copy taken while processes churn can have) made `allocate` spin forever. Every call
    /// must end, handing out what is queued, then saying none is free.
    #[test]
    fn a_state_naming_a_ticket_past_the_tail_is_handed_out_not_spun_on() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        memory.states[0].store(100, Ordering::Relaxed); // queued under ticket 100; the tail is 4
        let mut got: Vec<u64> = std::iter::from_fn(|| queue.allocate(1, &memory.caller)).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
    }

    /// Found by a review: a garbage tail far ahead of the head made `allocate` walk (and pass)
    /// every position up to it. A call that misses a whole lap of positions looks at every
    /// state instead, and ends.
    #[test]
    fn a_tail_far_ahead_of_the_head_does_not_make_allocate_walk_to_it() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        memory.tail.store(1 << 40, Ordering::Relaxed);
        let mut got: Vec<u64> = std::iter::from_fn(|| queue.allocate(1, &memory.caller)).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
        assert!(memory.head.load(Ordering::Relaxed) < 100, "bounded walk");
        queue.free(2).unwrap();
        assert_eq!(queue.allocate(1, &memory.caller), Some(2));
    }

    /// A xorshift generator: the same numbers for the same seed, so a failure reproduces.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// A free's state step for number 0, by hand: from `held` to queued under `ticket`; whether
    /// it moved the state.
    fn queue_from_held(memory: &Memory, held: u64, ticket: u64) -> bool {
        memory.states[0]
            .compare_exchange(held, queued(0, ticket), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Three frees of 0 race on a queue of one number: two lose the state word after taking
    /// tickets 1 and 2 (tickets for nothing: settled, marked passed); the winner's ticket is 3.
    /// Returns the queue with 0 queued under 3, in its slot.
    fn three_racing_frees_of_the_one_number(memory: &Memory) -> Queue<'_> {
        let queue = memory.queue();
        assert_eq!(queue.allocate(1, &memory.caller), Some(0));
        let held = memory.states[0].load(Ordering::Acquire);
        let (t1, t2) = (queue.take_ticket(), queue.take_ticket());
        queue.free(0).unwrap();
        for t in [t1, t2] {
            assert!(
                !queue_from_held(memory, held, t),
                "the winner moved the state"
            );
            queue.settle();
            queue.put(t, PASSED);
        }
        queue
    }

    /// Found by a review of format v8: an allocate that passed a lap of positions takes the
    /// oldest number from its state, and counted that claim settled although the number was
    /// still in its slot, which the head then counted as a claim from the ring too: the count
    /// said more were held than were, for good.
    #[test]
    fn a_claim_by_the_pass_over_the_states_is_counted_once() {
        let memory = Memory::new(1);
        let queue = three_racing_frees_of_the_one_number(&memory);
        assert_eq!(queue.counted(), 0);
        assert_eq!(queue.allocate(2, &memory.caller), Some(0));
        assert_eq!(
            queue.allocate(3, &memory.caller),
            None,
            "the head moves over 3"
        );
        assert_eq!((queue.counted(), queue.held()), (1, 1));
    }

    /// The same over-count made "full" a lie: a free of 0 takes ticket 4 and pauses before its
    /// state; an allocate passes position 4; the free then queues 0 under 4, and a whole call
    /// runs while 0 waits: it must get 0, not `None`.
    #[test]
    fn a_number_queued_for_the_whole_call_is_handed_out_after_racing_frees() {
        let memory = Memory::new(1);
        let queue = three_racing_frees_of_the_one_number(&memory);
        assert_eq!(queue.allocate(2, &memory.caller), Some(0));
        assert_eq!(queue.allocate(3, &memory.caller), None);
        let held = memory.states[0].load(Ordering::Acquire);
        let ticket = queue.take_ticket();
        assert_eq!(
            queue.allocate(4, &memory.caller),
            None,
            "0 is held by 2 still"
        );
        assert!(queue_from_held(&memory, held, ticket));
        memory.caller.scan.store(0, Ordering::Relaxed); // not the call that looks at one state
        assert_eq!(
            queue.allocate(5, &memory.caller),
            Some(0),
            "0 waited for the whole call"
        );
    }

    /// Three threads on two cores churn on a queue of each `capacity` (every allocate frees what
    /// it took), one call in `nothing_every` instead a ticket that carries nothing (the loser of
    /// a racing double free; 0: none). Nobody stops, so afterwards, with the head moved to the
    /// tail, every ticket is counted once and the count is the states' exactly.
    fn churn_leaves_the_count_exact(capacities: &[usize], nothing_every: u64) {
        for &capacity in capacities {
            let memory = Memory::new(capacity);
            std::thread::scope(|scope| {
                for me in 1..=3u32 {
                    let memory = &memory;
                    scope.spawn(move || {
                        let queue = memory.queue();
                        let caller = Caller::starting_at(me as u64);
                        let mut next = xorshift(me as u64 * 0x9E37_79B9);
                        for _ in 0..300_000 {
                            if nothing_every > 0 && next().is_multiple_of(nothing_every) {
                                queue.ticket_for_nothing();
                            } else if let Some(n) = queue.allocate(me, &caller) {
                                queue.free(n).unwrap();
                            }
                        }
                    });
                }
            });
            let queue = memory.queue();
            let all = std::iter::from_fn(|| queue.allocate(9, &memory.caller)).count();
            assert_eq!(all, capacity);
            let (counted, held) = (queue.counted(), queue.held());
            assert_eq!(counted, held, "capacity {capacity}");
        }
    }

    /// Plain churn on small queues. Found by a review of format v8 (counts above the states).
    #[test]
    fn churn_on_small_queues_leaves_the_count_exact() {
        churn_leaves_the_count_exact(&[1, 2, 3, 4, 8, 16, 32], 0);
    }

    /// Churn mixed with tickets that carry nothing. Found by a review of format v8: on a ring
    /// of 2 or 4 slots two passes in one call made it doubt the words, and its pass over the
    /// states then claimed a number no count would ever include (short for good: "full" was
    /// never constant-time again).
    #[test]
    fn churn_with_tickets_for_nothing_leaves_the_count_exact() {
        churn_leaves_the_count_exact(&[1, 2, 4], 10);
    }

    /// One thread, random frees and allocates, capacities 1 to 70: exactly first in, first out,
    /// `None` only when every number is held, and the count never above the states.
    #[test]
    fn one_thread_is_exactly_first_in_first_out() {
        let mut next = xorshift(0xDEAD_BEEF_1234_5678u64);
        for capacity in 1..=70usize {
            let memory = Memory::new(capacity);
            let queue = memory.queue();
            let mut model: std::collections::VecDeque<u64> = (0..capacity as u64).collect();
            let mut held: Vec<u64> = Vec::new();
            for step in 0..5_000 {
                if held.is_empty() || (next().is_multiple_of(2) && !model.is_empty()) {
                    let got = queue.allocate(1, &memory.caller);
                    assert_eq!(got, model.pop_front(), "capacity {capacity} step {step}");
                    held.extend(got);
                } else {
                    let n = held.swap_remove((next() % held.len() as u64) as usize);
                    queue.free(n).unwrap();
                    model.push_back(n);
                }
                let counted = queue.counted();
                assert!(
                    counted <= queue.held() || counted > u64::MAX / 2,
                    "{counted}"
                );
            }
        }
    }

    /// Whatever the region's words hold (a damaged or half-copied queue), every call ends,
    /// nothing panics, and no number is handed out twice.
    #[test]
    fn random_words_never_hang_panic_or_hand_a_number_out_twice() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
            for round in 0..500 {
                let memory = Memory::new(1 + (round % 9) as usize);
                // Small values often (near the real ones), any 64 bits sometimes.
                let mut word = || match next() % 6 {
                    0 => next(),
                    1 => next() % 64,
                    2 => HELD | (next() % 8),
                    3 => u64::MAX - next() % 64,
                    4 => (next() % 64).wrapping_neg(),
                    _ => (next() % 64) | ((next() % 64) << 32),
                };
                for counter in [&memory.head, &memory.tail, &memory.passed, &memory.settled] {
                    counter.store(word(), Ordering::Relaxed);
                }
                memory
                    .states
                    .iter()
                    .for_each(|s| s.store(word(), Ordering::Relaxed));
                memory
                    .ring
                    .iter()
                    .for_each(|s| s.store(word(), Ordering::Relaxed));
                let queue = memory.queue();
                let mut got = Vec::new();
                while let Some(n) = queue.allocate(99, &memory.caller) {
                    assert!(!got.contains(&n), "round {round}: {n} twice");
                    got.push(n);
                    assert!(got.len() <= memory.states.len());
                }
                for n in got {
                    queue.free(n).unwrap();
                }
                queue.sweep(|_| true);
                let _ = (queue.waiting(usize::MAX), queue.held(), queue.recount());
                let _ = (queue.counted(), queue.snapshot(3));
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("every call ends");
    }

    #[test]
    fn a_snapshot_counts_what_waits_and_lists_the_oldest_first_within_its_limit() {
        let memory = Memory::new(6);
        let queue = memory.queue();
        for _ in 0..6 {
            queue.allocate(1, &memory.caller).unwrap();
        }
        assert_eq!(
            queue.allocate(1, &memory.caller),
            None,
            "the head moves to the tail"
        );
        for n in [4, 1, 5, 0] {
            queue.free(n).unwrap();
        }
        // The head moved over 4's position counting it passed: 4 is stranded.
        memory.passed.fetch_add(1, Ordering::AcqRel);
        memory.head.fetch_add(1, Ordering::AcqRel);
        let snapshot = queue.snapshot(2);
        assert_eq!(
            snapshot,
            Snapshot {
                waiting: 4,
                stranded: 1,
                next: vec![4, 1]
            }
        );
        assert_eq!(queue.snapshot(0).next, Vec::<u64>::new());
        assert_eq!(queue.waiting(usize::MAX), [4, 1, 5, 0]);
    }

    #[test]
    fn a_reticket_that_finds_its_number_taken_marks_its_new_ticket_passed() {
        let memory = Memory::new(2);
        let queue = memory.queue();
        let n = queue.allocate(1, &memory.caller).unwrap();
        assert_eq!(queue.allocate(1, &memory.caller), Some(1));
        // A free of n takes ticket 2 and pauses before its slot; a dequeuer passes position 2.
        let ticket = queue.free_stopping_before_the_slot(n).unwrap();
        memory.head.fetch_add(1, Ordering::AcqRel);
        assert_eq!(queue.finish_taking(ticket, 2), None);
        // Meanwhile a scan takes n from its state word.
        let state = memory.states[n as usize].load(Ordering::Acquire);
        assert!(queue.claim(n, state, 3));
        // The free goes on: passed, so it takes ticket 3, finds n taken, and marks 3 passed.
        queue.publish(n, ticket);
        let next = ticket + 1;
        let (lap, entry) = queue.decode(queue.cell(next).load(Ordering::Acquire), next);
        assert_eq!((lap, entry), (queue.lap(next), Entry::Passed));
    }
}
