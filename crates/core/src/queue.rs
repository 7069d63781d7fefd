//! A first-in first-out allocator of the numbers `0..capacity` (issue #13), as an algorithm over
//! memory it is given, like [`crate::Bits`]. Not yet reachable from a region: this is the
//! algorithm and its models, the region kind, holders and binding come next.
//!
//! # Design
//! A state word per number is the truth: `HELD(holder)` or `QUEUED(ticket)`, and only a
//! compare-and-swap on it moves a number. The ring of slots is a hint of where each queued
//! number waits: `free` takes a ticket `t` from the tail counter (fetch-and-add), sets the
//! number's state to `QUEUED(t)`, then writes the number into slot `t mod R` tagged with `t`.
//! `allocate` claims the next position `h` from the head counter (a compare-and-swap that never
//! passes the tail) and takes the number in slot `h mod R` only by moving its state from
//! `QUEUED(h)` to `HELD(me)`. Tickets are 63-bit and never reused, so a stale slot (a number
//! re-ticketed since) names a ticket its state no longer has, and the claim fails harmlessly.
//!
//! A position whose number is not there yet (its enqueuer is slow, or stopped for good) is
//! marked skipped by the dequeuer that reached it; an enqueuer that finds its position skipped
//! takes a new ticket. A number left `QUEUED(t)` with `t` behind the head (its dequeuer or its
//! enqueuer stopped between two steps) is stranded: [`Queue::recover`] re-tickets it, and
//! `allocate` recovers before it reports empty, so "empty" means every number was held at some
//! moment. A holder that stops while a number is `HELD` by it leaves it to [`Queue::sweep`], told
//! which holders ended (in a region, its holder slots will say, as for the bitmap).
//!
//! # Order, and what a review found (not yet mended)
//! Numbers are meant to come back in the order of their tickets (the tail increments of their
//! `free` calls). That does not hold yet: a slow dequeuer or enqueuer of position `p` can mark
//! or overwrite the slot of position `p + R` (slots are written whatever their tag), which
//! strands a number freed later; a stranded number waits until the queue looks empty (recovery
//! runs only then), so under steady load it can wait forever; and an adversarial schedule of a
//! re-ticketing `free` and a recovering `allocate` livelocks. No number goes to two holders and
//! none is lost for good. The fixes proposed: compare tags by age (never write over a later
//! one, treat a later one as skipped), recover a budget of numbers on skips too, and bound the
//! re-tickets of one `free`. Tags are 32 bits: rings beyond 2^31 slots would alias.
//!
//! # Memory orderings
//! - The state compare-and-swaps are `AcqRel`: taking a number acquires what its last holder
//!   did before freeing it; queuing it releases that.
//! - A slot is written (`AcqRel` compare-and-swap) after the state names its ticket, and read
//!   with `Acquire`, so a dequeuer that sees the number in the slot sees the state `QUEUED(t)`.
//! - Head and tail are `AcqRel` read-modify-writes; their loads `Acquire`.

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering};

/// A state with this bit set is `HELD`, its low 32 bits the holder's record.
const HELD: u64 = 1 << 63;
/// A slot's value when a dequeuer passed its position before the number came.
const SKIPPED: u32 = u32::MAX;

fn queued(ticket: u64) -> u64 {
    // + 1: an all-zero word is no state (memory not yet initialized).
    ticket + 1
}

fn ticket_of(state: u64) -> Option<u64> {
    (state != 0 && state & HELD == 0).then(|| state - 1)
}

fn slot(tag: u64, value: u32) -> u64 {
    (tag & 0xffff_ffff) << 32 | value as u64
}

fn split(slot: u64) -> (u64, u32) {
    (slot >> 32, slot as u32)
}

/// The shared memory a [`Queue`] works on.
#[derive(Clone, Copy)]
pub struct QueueParts<'a> {
    /// Positions handed to dequeuers so far.
    pub head: &'a AtomicU64,
    /// Tickets handed to enqueuers so far.
    pub tail: &'a AtomicU64,
    /// One state word per number.
    pub states: &'a [AtomicU64],
    /// The ring: a power of two of slots, at least twice the capacity.
    pub ring: &'a [AtomicU64],
}

/// The queue algorithm over [`QueueParts`]; no state of its own.
#[derive(Clone, Copy)]
pub struct Queue<'a> {
    parts: QueueParts<'a>,
    mask: u64,
}

impl<'a> Queue<'a> {
    /// A view of a queue of `parts.states.len()` numbers.
    pub fn new(parts: QueueParts<'a>) -> Queue<'a> {
        let capacity = parts.states.len();
        assert!(
            parts.ring.len().is_power_of_two() && parts.ring.len() >= 2 * capacity,
            "the ring must be a power of two of at least twice the capacity"
        );
        assert!(capacity < SKIPPED as usize, "capacity too large");
        Queue {
            parts,
            mask: parts.ring.len() as u64 - 1,
        }
    }

    /// The ring a queue of `capacity` numbers needs, in slots.
    pub fn ring_len(capacity: usize) -> usize {
        (2 * capacity).next_power_of_two()
    }

    /// Queues every number, 0 first: for a new queue, before anyone else uses it.
    pub fn initialize(&self) {
        let capacity = self.parts.states.len() as u64;
        for n in 0..capacity {
            self.parts.states[n as usize].store(queued(n), Ordering::Relaxed);
            self.parts.ring[(n & self.mask) as usize]
                .store(slot(n, n as u32 + 1), Ordering::Relaxed);
        }
        self.parts.head.store(0, Ordering::Relaxed);
        self.parts.tail.store(capacity, Ordering::Release);
    }

    /// The number at the head of the queue (see "Order" above for what that means today), now
    /// held by `me`; None if every number was held at some moment of the call.
    pub fn allocate(&self, me: u32) -> Option<u64> {
        loop {
            let head = self.parts.head.load(Ordering::Acquire);
            let tail = self.parts.tail.load(Ordering::Acquire);
            if head >= tail {
                // Empty, unless numbers are stranded behind the head.
                if self.recover() == 0 && self.parts.tail.load(Ordering::Acquire) <= head {
                    return None;
                }
                continue;
            }
            if self
                .parts
                .head
                .compare_exchange(head, head + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if let Some(n) = self.take_at(head, me) {
                return Some(n);
            }
        }
    }

    /// Takes the number at position `position`, which this call owns; None if it is not there
    /// (the position is then marked skipped, so that its enqueuer takes another).
    fn take_at(&self, position: u64, me: u32) -> Option<u64> {
        let cell = &self.parts.ring[(position & self.mask) as usize];
        let tag = position & 0xffff_ffff;
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let (found, value) = split(current);
            if found == tag && value != 0 && value != SKIPPED {
                let n = (value - 1) as usize;
                if n >= self.parts.states.len() {
                    return None;
                }
                // The claim: only if the number still waits under this very ticket.
                return self.parts.states[n]
                    .compare_exchange(
                        queued(position),
                        HELD | me as u64,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                    .then_some(n as u64);
            }
            match cell.compare_exchange(
                current,
                slot(position, SKIPPED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return None,
                Err(actual) => current = actual,
            }
        }
    }

    /// Queues `n`, which must be held (by anyone).
    pub fn free(&self, n: u64) -> Result<()> {
        let state = self.state(n)?;
        let current = state.load(Ordering::Acquire);
        if current & HELD == 0 {
            return Err(Error::NotAllocated(n));
        }
        if !self.queue_from(n, current) {
            // Another free of `n` (or a sweep) won.
            return Err(Error::NotAllocated(n));
        }
        Ok(())
    }

    /// Queues `n` if its state is still `held`: whether it did. A ticket taken for nothing (the
    /// state moved meanwhile) is a hole that dequeuers skip.
    fn queue_from(&self, n: u64, held: u64) -> bool {
        let ticket = self.parts.tail.fetch_add(1, Ordering::AcqRel);
        if self.parts.states[n as usize]
            .compare_exchange(held, queued(ticket), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.publish(n, ticket);
        true
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

    /// Writes `n`, queued under `ticket`, into its slot; if a dequeuer passed the position
    /// first, re-tickets it behind the tail, unless someone else (a recovery) already did.
    fn publish(&self, n: u64, mut ticket: u64) {
        loop {
            let cell = &self.parts.ring[(ticket & self.mask) as usize];
            let mut current = cell.load(Ordering::Acquire);
            let skipped = loop {
                let (found, value) = split(current);
                if found == ticket & 0xffff_ffff && value == SKIPPED {
                    break true;
                }
                match cell.compare_exchange(
                    current,
                    slot(ticket, n as u32 + 1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break false,
                    Err(actual) => current = actual,
                }
            };
            if !skipped {
                return;
            }
            let next = self.parts.tail.fetch_add(1, Ordering::AcqRel);
            if self.parts.states[n as usize]
                .compare_exchange(
                    queued(ticket),
                    queued(next),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                return;
            }
            ticket = next;
        }
    }

    /// Re-queues the numbers stranded behind the head (queued under a ticket no dequeuer will
    /// take any more); returns how many.
    pub fn recover(&self) -> u64 {
        let head = self.parts.head.load(Ordering::Acquire);
        let mut moved = 0;
        for (n, state) in self.parts.states.iter().enumerate() {
            let current = state.load(Ordering::Acquire);
            let Some(ticket) = ticket_of(current) else {
                continue;
            };
            if ticket >= head {
                continue;
            }
            let next = self.parts.tail.fetch_add(1, Ordering::AcqRel);
            if state
                .compare_exchange(current, queued(next), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.publish(n as u64, next);
                moved += 1;
            }
        }
        moved
    }

    /// Whether `n` is held, and by whom.
    pub fn holder_of(&self, n: u64) -> Result<Option<u32>> {
        let current = self.state(n)?.load(Ordering::Acquire);
        Ok((current & HELD != 0).then_some(current as u32))
    }

    fn state(&self, n: u64) -> Result<&AtomicU64> {
        self.parts.states.get(n as usize).ok_or_else(|| {
            Error::OutOfRange(format!(
                "number {n} is outside [0, {})",
                self.parts.states.len()
            ))
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::QueueMemory as Memory;

    #[test]
    fn hands_out_in_order_then_in_the_order_freed() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        let got: Vec<u64> = (0..4).map(|_| queue.allocate(1).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(queue.allocate(1), None);
        for n in [2, 0, 3, 1] {
            queue.free(n).unwrap();
        }
        let again: Vec<u64> = (0..4).map(|_| queue.allocate(1).unwrap()).collect();
        assert_eq!(again, [2, 0, 3, 1]);
        assert!(matches!(queue.free(9), Err(Error::OutOfRange(_))));
        queue.free(3).unwrap();
        assert!(matches!(queue.free(3), Err(Error::NotAllocated(3))));
        assert_eq!(queue.allocate(1), Some(3));
        assert_eq!(queue.allocate(1), None);
    }

    #[test]
    fn a_sweep_queues_what_ended_holders_held_and_nothing_else() {
        let memory = Memory::new(4);
        let queue = memory.queue();
        let held: Vec<u64> = [5, 6, 5, 6]
            .iter()
            .map(|&me| queue.allocate(me).unwrap())
            .collect();
        assert_eq!(held, [0, 1, 2, 3]);
        assert_eq!(queue.sweep(|holder| holder == 5), 2);
        assert_eq!(queue.holder_of(1).unwrap(), Some(6));
        assert_eq!(queue.holder_of(0).unwrap(), None);
        assert_eq!(queue.sweep(|holder| holder == 5), 0, "nothing twice");
        assert_eq!([queue.allocate(7), queue.allocate(7)], [Some(0), Some(2)]);
        assert_eq!(queue.allocate(7), None);
    }

    #[test]
    fn many_rounds_wrap_the_ring() {
        let memory = Memory::new(3);
        let queue = memory.queue();
        for round in 0..1000u64 {
            let n = queue.allocate(7).unwrap();
            assert_eq!(n, round % 3);
            queue.free(n).unwrap();
        }
    }

    #[test]
    fn a_dequeuer_that_stopped_after_claiming_its_position_strands_nothing() {
        let memory = Memory::new(2);
        let queue = memory.queue();
        // A dequeuer took position 0 and stopped before its claim: 0 stays queued behind the head.
        memory.head.store(1, Ordering::Relaxed);
        assert_eq!(queue.allocate(1), Some(1));
        assert_eq!(
            queue.allocate(1),
            Some(0),
            "recovered before reporting empty"
        );
        assert_eq!(queue.allocate(1), None);
    }

    #[test]
    fn an_enqueuer_that_stopped_before_writing_its_slot_strands_nothing() {
        let memory = Memory::new(2);
        let queue = memory.queue();
        let a = queue.allocate(1).unwrap();
        assert_eq!(queue.allocate(1), Some(1));
        // A free of `a` took ticket 2 and set the state, then stopped before writing the slot.
        let ticket = memory.tail.fetch_add(1, Ordering::Relaxed);
        memory.states[a as usize].store(queued(ticket), Ordering::Relaxed);
        assert_eq!(queue.allocate(1), Some(a));
        assert_eq!(queue.allocate(1), None);
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
                            if let Some(n) = queue.allocate(me) {
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
}
