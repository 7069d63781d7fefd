//! Model checking of the allocate / free / reclaim protocol with loom: every interleaving of 2-3
//! threads running the same `Bits` code as production, over loom's atomics; and of the queue
//! algorithm (`queue_*`, issue #13).
//!
//! RUSTFLAGS="--cfg loom" cargo test -p numballoc-core --test loom --release
//! (`npm run test:loom`; part of `npm test`)
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use numballoc_core::backoff::Contention;
use numballoc_core::holder::record;
use numballoc_core::testing::{Memory, QueueMemory};
use numballoc_core::Bits;

/// The record of the live holder every view here writes.
const ME: u32 = record(1, 1);
/// The record of a holder that stopped (its slot, 2, is swept).
const DEAD: u32 = record(2, 1);
/// The record of another live holder, which frees numbers it did not take.
const THIRD: u32 = record(3, 1);

/// What the models do with the shared fixture ([`Memory`]: a region's sections in ordinary memory).
trait Fixture {
    /// 8 numbers in one word, with holders: small, so every interleaving can be explored.
    fn one_word() -> Memory;
    /// A bitmap of `size` bytes, with holders.
    fn with_size(size: u64) -> Memory;
    /// A view of every number, writing this test's live holder's record.
    fn bits(&self) -> Bits<'_>;
    /// A view of another live holder, whose record is `me`.
    fn bits_of(&self, me: u32) -> Bits<'_>;
    /// Marks every number but `free` as held by `holder` (bit and record).
    fn fill_except(&self, free: &[u64], holder: u32);
    /// Never a nameless bit: every allocated number has a record (so no second claimer can take
    /// it, whatever else happened).
    fn assert_no_nameless_bit(&self);
    /// Every number is consistent: allocated with a record, or free without one.
    fn assert_consistent(&self);
}

impl Fixture for Memory {
    fn one_word() -> Memory {
        Memory::with_size(1)
    }

    fn with_size(size: u64) -> Memory {
        Memory::with(size, true)
    }

    fn bits(&self) -> Bits<'_> {
        self.bits_of(ME)
    }

    fn bits_of(&self, me: u32) -> Bits<'_> {
        self.bits_as(self.capacity, me)
    }

    fn fill_except(&self, free: &[u64], holder: u32) {
        for n in 0..self.capacity {
            if !free.contains(&n) {
                self.words[0].fetch_or(1 << n, Ordering::Relaxed);
                self.records()[n as usize].store(holder, Ordering::Relaxed);
            }
        }
    }

    fn assert_no_nameless_bit(&self) {
        for n in 0..self.capacity as usize {
            let set = self.words[0].load(Ordering::Relaxed) & (1 << n) != 0;
            let record = self.records()[n].load(Ordering::Relaxed);
            assert!(!set || record != 0, "number {n}: bit set, no record");
        }
    }

    fn assert_consistent(&self) {
        for n in 0..self.capacity as usize {
            let set = self.words[0].load(Ordering::Relaxed) & (1 << n) != 0;
            let record = self.records()[n].load(Ordering::Relaxed);
            assert_eq!(
                set,
                record != 0,
                "number {n}: bit {set}, record {record:#x}"
            );
        }
    }
}

/// Every interleaving with at most 3 preemptions (loom's usual bound: most bugs need 2).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn two_allocators_never_get_the_same_number() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        memory.fill_except(&[2, 6], ME);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let memory = memory.clone();
                thread::spawn(move || memory.bits().allocate_from(0).map(|(n, _)| n))
            })
            .collect();
        let mut got: Vec<u64> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![2, 6], "both free numbers, one each");
        assert_eq!(memory.bits().allocate_from(0), None);
    });
}

/// The states a holder that stopped forever can leave number 7 in, at each step of a claim
/// (record taken, bit not set; both) or of a free (bit cleared, record not yet).
const STOPPED: [(bool, &str); 2] = [(true, "holding it"), (false, "mid-claim or mid-free")];

#[test]
fn a_stopped_holders_number_is_swept_once_while_others_allocate_and_free() {
    for (bit_set, state) in STOPPED {
        model(move || {
            let memory = Arc::new(Memory::one_word());
            // 7 is the stopped holder's; 3 is free; the rest are held by the live holder.
            memory.fill_except(&[7, 3], ME);
            memory.records()[7].store(DEAD, Ordering::Relaxed);
            if bit_set {
                memory.words[0].fetch_or(1 << 7, Ordering::Relaxed);
            }
            let sweeper = {
                let memory = memory.clone();
                thread::spawn(move || memory.bits().sweep(|slot| slot == 2))
            };
            let allocator = {
                let memory = memory.clone();
                thread::spawn(move || memory.bits().allocate_from(0).map(|(n, _)| n))
            };
            // A third party frees 7 too (anyone may free any number it was given).
            let freer = {
                let memory = memory.clone();
                thread::spawn(move || memory.bits_of(THIRD).free(7).is_ok())
            };
            let swept = sweeper.join().unwrap();
            let freed = freer.join().unwrap();
            let got = allocator
                .join()
                .unwrap()
                .expect("3 was free the whole time");
            assert!(swept <= 1, "{state}: swept {swept}");
            assert!(
                swept == 1 || freed,
                "{state}: 7 was neither swept nor freed"
            );
            assert!(bit_set || !freed, "{state}: a clear bit cannot be freed");
            assert!(got == 3 || got == 7, "{state}: got {got}");
            memory.assert_consistent();
            // The one still free comes next; then the region is full.
            let next = memory.bits().allocate_from(0).map(|(n, _)| n).unwrap();
            assert_eq!(got + next, 10, "{state}");
            assert_eq!(memory.bits().allocate_from(0), None);
            memory.assert_consistent();
        });
    }
}

/// The record the next holder of the stopped holder's slot writes: the same slot, the next
/// generation. (With the same generation, loom finds a delayed free clearing this holder's record
/// under a set bit, so that a second claimer could take 7 too.)
const NEXT_IN_SLOT: u32 = record(2, 2);

#[test]
fn a_delayed_free_never_clears_a_record_of_the_slots_next_holder() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        // 7 is held by the stopped holder in slot 2; every other number by the live holder.
        memory.fill_except(&[], ME);
        memory.records()[7].store(DEAD, Ordering::Relaxed);
        // A third party frees 7, while slot 2 is swept and its next holder takes 7 again.
        let freer = {
            let memory = memory.clone();
            thread::spawn(move || memory.bits_of(THIRD).free(7).is_ok())
        };
        let next_holder = {
            let memory = memory.clone();
            thread::spawn(move || {
                memory.bits().sweep(|slot| slot == 2);
                memory
                    .bits_of(NEXT_IN_SLOT)
                    .allocate_from(0)
                    .map(|(n, _)| n)
            })
        };
        let _ = freer.join().unwrap();
        let got = next_holder.join().unwrap();
        // The free and the sweep are two frees of one number: if the free lands after 7 was
        // taken again, it may clear the new holder's bit, never leave a bit without a record.
        memory.assert_no_nameless_bit();
        if got == Some(7) && memory.words[0].load(Ordering::Relaxed) & (1 << 7) != 0 {
            assert_eq!(memory.records()[7].load(Ordering::Relaxed), NEXT_IN_SLOT);
        }
    });
}

/// Frees 5 while another thread searches from word 0, which finds the word full (and marks the
/// summaries) or finds 5 free (and takes it); returns what the search got.
fn free_5_racing_a_search(memory: &Arc<Memory>) -> Option<u64> {
    let freer = {
        let memory = memory.clone();
        thread::spawn(move || memory.bits().free(5).unwrap())
    };
    let searcher = {
        let memory = memory.clone();
        thread::spawn(move || memory.bits().allocate_from(0).map(|(n, _)| n))
    };
    freer.join().unwrap();
    searcher.join().unwrap()
}

#[test]
fn a_free_racing_a_search_leaves_no_wrong_full_mark() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        memory.fill_except(&[], ME);
        let got = free_5_racing_a_search(&memory);
        let word = memory.words[0].load(Ordering::Relaxed);
        let marked_full = memory.l1[0].load(Ordering::Relaxed) & 1 != 0;
        match got {
            Some(n) => assert_eq!(n, 5),
            None => {
                assert_eq!(word & (1 << 5), 0, "5 is free once both are done");
                assert!(!marked_full, "the word is marked full while 5 is free");
            }
        }
    });
}

#[test]
fn a_free_racing_a_search_leaves_no_wrong_level_2_mark() {
    // A search over 64 words takes many more steps: a larger branch budget.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.max_branches = 100_000;
    builder.check(|| {
        // 64 full words: one level-1 word, which a search that finds word 0 full completes,
        // and so marks level 2 too.
        let memory = Arc::new(Memory::with_size(512));
        for w in 0..64 {
            memory.words[w].store(u64::MAX, Ordering::Relaxed);
        }
        for n in 0..memory.capacity as usize {
            memory.records()[n].store(ME, Ordering::Relaxed);
        }
        memory.l1[0].store(!1u64, Ordering::Relaxed); // every word but 0 marked full
        let got = free_5_racing_a_search(&memory);
        let five_free = memory.words[0].load(Ordering::Relaxed) & (1 << 5) == 0;
        let l1_full = memory.l1[0].load(Ordering::Relaxed) == u64::MAX;
        let l2_marked = memory.l2[0].load(Ordering::Relaxed) & 1 != 0;
        assert!(got.is_none() || got == Some(5));
        assert_eq!(
            five_free,
            got.is_none(),
            "5 is free exactly when the search found nothing"
        );
        if five_free {
            assert!(!l1_full, "level 1 says word 0 is full while 5 is free");
            assert!(
                !l2_marked,
                "level 2 says its words are full while 5 is free"
            );
        }
    });
}

#[test]
fn a_live_holder_claiming_and_freeing_while_a_dead_one_is_swept_keeps_what_it_holds() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        // 7 is the stopped holder's; 3 and 5 are free; the rest are the live holder's.
        memory.fill_except(&[3, 5, 7], ME);
        memory.records()[7].store(DEAD, Ordering::Relaxed);
        memory.words[0].fetch_or(1 << 7, Ordering::Relaxed);
        let live = {
            let memory = memory.clone();
            thread::spawn(move || {
                let bits = memory.bits();
                let (kept, _) = bits.allocate_from(0).unwrap();
                let (freed, _) = bits.allocate_from(0).unwrap();
                bits.free(freed).unwrap();
                kept
            })
        };
        let sweeper = {
            let memory = memory.clone();
            thread::spawn(move || memory.bits_of(THIRD).sweep(|slot| slot == 2))
        };
        let kept = live.join().unwrap();
        assert_eq!(sweeper.join().unwrap(), 1, "7 was swept, once");
        let word = memory.words[0].load(Ordering::Relaxed);
        assert!(
            word & (1 << kept) != 0,
            "the live holder's {kept} was taken from it"
        );
        assert_eq!(memory.records()[kept as usize].load(Ordering::Relaxed), ME);
        memory.assert_consistent();
        // Exactly two of 3, 5, 7 are free now: the live holder kept one.
        assert_eq!((!word & 0b1010_1000).count_ones(), 2);
    });
}

#[test]
fn a_block_and_a_single_allocation_never_share_a_number() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        // Free: 2, 3 (an aligned pair) and 6.
        memory.fill_except(&[2, 3, 6], ME);
        let block = {
            let memory = memory.clone();
            thread::spawn(move || memory.bits().allocate_block(2, 2))
        };
        let single = {
            let memory = memory.clone();
            thread::spawn(move || memory.bits_of(THIRD).allocate_from(0).map(|(n, _)| n))
        };
        let block = block.join().unwrap();
        let single = single
            .join()
            .unwrap()
            .expect("a number was free throughout");
        if let Some(first) = block {
            assert_eq!(first, 2);
            assert!(single != 2 && single != 3, "{single} is also in the block");
        } else {
            assert!(
                single == 2 || single == 3,
                "the block failed only because {single} was taken"
            );
        }
        memory.assert_consistent();
    });
}

/// How far a second holder gets with number 6 while number 5, freed before the search began,
/// stays free: all the way (it frees 6 and takes it back), or it stops forever after the first
/// step of a free (the full count lowered, the bit still set) or of a claim that fills the word
/// (the bit set, the count not yet raised).
#[derive(Clone, Copy, Debug)]
enum Six {
    FreesAndRetakes,
    StopsAfterUncounting,
    StopsBeforeCounting,
}

#[test]
fn a_full_count_never_hides_a_number_free_for_the_whole_search() {
    for six in [
        Six::FreesAndRetakes,
        Six::StopsAfterUncounting,
        Six::StopsBeforeCounting,
    ] {
        model(move || {
            // One word, so one group of one word: its count is 1 exactly when it is full.
            let memory = Arc::new(Memory::one_word());
            memory.fill_except(&[], ME);
            memory.counts[0].store(1, Ordering::Relaxed);
            if let Six::StopsBeforeCounting = six {
                memory.bits().free(6).unwrap();
            }
            let freed = Arc::new(AtomicU32::new(0));
            let five = {
                let (memory, freed) = (memory.clone(), freed.clone());
                thread::spawn(move || {
                    memory.bits().free(5).unwrap();
                    freed.store(1, Ordering::Release);
                })
            };
            let other = {
                let memory = memory.clone();
                thread::spawn(move || match six {
                    Six::FreesAndRetakes => {
                        memory.bits().free(6).unwrap();
                        assert_eq!(
                            memory.bits().allocate_lowest_in(
                                6,
                                7,
                                &mut Contention::default().call()
                            ),
                            Some(6)
                        );
                    }
                    Six::StopsAfterUncounting => {
                        memory.counts[0].fetch_sub(1, Ordering::Relaxed);
                    }
                    Six::StopsBeforeCounting => {
                        memory.records()[6].store(ME, Ordering::Relaxed);
                        memory.words[0].fetch_or(1 << 6, Ordering::AcqRel);
                    }
                })
            };
            // 5 was freed before this search began and nobody else takes it: the lowest free
            // number is 5 or below, and the count must not say the word is full.
            if freed.load(Ordering::Acquire) == 1 {
                let got = memory
                    .bits()
                    .allocate_lowest_in(0, 7, &mut Contention::default().call());
                assert!(got.is_some_and(|n| n <= 5), "{six:?}: got {got:?}");
            }
            five.join().unwrap();
            other.join().unwrap();
            let full = memory.words[0].load(Ordering::Relaxed) == 0xFF;
            let count = memory.counts[0].load(Ordering::Relaxed);
            match six {
                Six::FreesAndRetakes => assert_eq!(count, full as u32, "the count is exact"),
                // A stopped step leaves the count short (below zero: wrapped), never over.
                _ => assert!(
                    count <= full as u32 || count == u32::MAX,
                    "{six:?}: count {count}, full {full}"
                ),
            }
        });
    }
}

/// Two live threads (holders 1 and 2) each ask for a number, and with `give_back` free it at
/// once; returns what each got.
fn two_askers(memory: &Arc<QueueMemory>, give_back: bool) -> Vec<Option<u64>> {
    let threads: Vec<_> = (1..=2u32)
        .map(|me| {
            let memory = memory.clone();
            thread::spawn(move || {
                let got = memory.allocate(me);
                if let (true, Some(n)) = (give_back, got) {
                    memory.queue().free(n).unwrap();
                }
                got
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A queue of one number, 0, held by `holder`, and a thread that frees it: for the models of
/// what races that free.
fn one_number_being_freed(holder: u32) -> (Arc<QueueMemory>, thread::JoinHandle<()>) {
    let memory = Arc::new(QueueMemory::new(1));
    assert_eq!(memory.allocate(holder), Some(0));
    let freer = {
        let memory = memory.clone();
        thread::spawn(move || memory.queue().free(0).unwrap())
    };
    (memory, freer)
}

/// Two threads each take a number and give it back: never the same number at once, none lost.
#[test]
fn queue_two_threads_never_hold_the_same_number() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(2));
        let held: Arc<Vec<loom::sync::atomic::AtomicBool>> = Arc::new(
            (0..2)
                .map(|_| loom::sync::atomic::AtomicBool::new(false))
                .collect(),
        );
        let threads: Vec<_> = (1..=2u32)
            .map(|me| {
                let (memory, held) = (memory.clone(), held.clone());
                thread::spawn(move || {
                    let queue = memory.queue();
                    let n = memory.allocate(me).expect("two numbers for two threads");
                    assert!(!held[n as usize].swap(true, Ordering::AcqRel), "{n} twice");
                    held[n as usize].store(false, Ordering::Release);
                    queue.free(n).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        memory.assert_all_come_back(&[0, 1]);
    });
}

/// One number, held by one thread that frees it while another asks for it: the asker gets it,
/// or finds it held at some moment of its call; either way it is not lost.
#[test]
fn queue_a_free_racing_an_allocate_on_an_empty_queue() {
    model(|| {
        let (memory, freer) = one_number_being_freed(1);
        let got = memory.allocate(2);
        freer.join().unwrap();
        match got {
            Some(n) => {
                assert_eq!(n, 0);
                assert_eq!(memory.allocate(3), None);
            }
            None => memory.assert_all_come_back(&[0]),
        }
    });
}

/// The states a participant that stopped forever can leave behind, each step of its operation:
/// number 0 queued behind the head, which counted its position passed (as when its enqueuer
/// stopped before its slot and a dequeuer passed the position); an enqueuer after its ticket (a
/// hole; its number stays held by it, for a sweep: not modelled here); an enqueuer after
/// queuing its number, before writing the slot; a dequeuer that claimed 0 from the ring and
/// stopped before moving the head (0 stays held by it, for a sweep); a dequeuer that counted
/// position 0 passed and stopped before moving the head over it. Two live threads then take and
/// give back numbers: they never share one, and every number but the stopped holder's comes
/// back.
#[test]
fn queue_a_stopped_participant_strands_no_number() {
    for stop in 0..5 {
        model(move || {
            let memory = Arc::new(QueueMemory::new(3));
            let queue = memory.queue();
            let held_by_dead = match stop {
                0 => {
                    pass_a_position(&memory);
                    None
                }
                3 => {
                    let claimed = memory.states[0].compare_exchange(
                        0,
                        1 << 63 | 7,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    assert!(claimed.is_ok());
                    Some(0)
                }
                4 => {
                    memory.passed.fetch_add(1, Ordering::AcqRel);
                    None
                }
                1 => {
                    let n = memory.allocate(7).unwrap();
                    memory.tail.fetch_add(1, Ordering::AcqRel);
                    Some(n)
                }
                _ => {
                    let n = memory.allocate(7).unwrap();
                    assert!(queue.free_stopping_before_the_slot(n).is_some());
                    None
                }
            };
            let got = two_askers(&memory, true);
            assert!(
                got.iter().all(Option::is_some),
                "numbers were free for both: {got:?}"
            );
            // The live threads may both pass a position and race to move the head over it: the
            // count stays at or below the truth (short, or wrapped below zero, after a stop).
            let (count, held) = settled_and_held(&memory);
            assert!(
                count <= held || count > u64::MAX / 2,
                "stop {stop}: {count} > {held}"
            );
            let expected: Vec<u64> = (0..3).filter(|&n| Some(n) != held_by_dead).collect();
            memory.assert_all_come_back(&expected);
            let (count, held) = settled_and_held(&memory);
            assert!(
                count <= held || count > u64::MAX / 2,
                "stop {stop}: {count} > {held}"
            );
        });
    }
}

/// Two participants stopped for good: number 1 stranded behind the head (its position counted
/// passed, its slot still showing it), and a free of number 0 stopped in the middle of
/// re-ticketing (a dequeuer passed its position; it took a new ticket but never moved the state
/// to it: a hole, and 0 queued under a passed position no slot shows). Two live threads never share a number,
/// get one each, and both stranded numbers come back.
#[test]
fn queue_a_free_stopped_mid_reticket_strands_no_number() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(2));
        let queue = memory.queue();
        let n = memory.allocate(7).unwrap();
        let ticket = queue.free_stopping_before_the_slot(n).unwrap();
        assert_eq!(pass_a_position(&memory), 1);
        assert_eq!(queue.finish_taking(ticket, 8), None, "the slot is passed");
        pass_a_position(&memory);
        memory.tail.fetch_add(1, Ordering::AcqRel); // the new ticket, never used
        let got = two_askers(&memory, true);
        assert!(
            got.iter().all(Option::is_some),
            "two numbers were free: {got:?}"
        );
        memory.assert_all_come_back(&[0, 1]);
    });
}

/// A dequeuer read the head, 0, and is slow to look at position 0, whose slot shows number 0;
/// another thread takes it meanwhile, from the ring or by a scan of the states. Exactly one of
/// them gets it.
#[test]
fn queue_a_slow_dequeuer_and_an_empty_queue_scan_take_one_number_once() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(1));
        let position = memory.head.load(Ordering::Acquire);
        let slow = {
            let memory = memory.clone();
            thread::spawn(move || memory.queue().finish_taking(position, 1))
        };
        let other = memory.allocate(2);
        let slow = slow.join().unwrap();
        assert_eq!(
            [slow, other].iter().flatten().count(),
            1,
            "slow {slow:?}, other {other:?}"
        );
        memory.queue().free(0).unwrap();
        memory.assert_all_come_back(&[0]);
    });
}

/// One number, two threads asking: one gets it. The other may reach its position late, after
/// the first took the number through a scan of the states: the claim on the state word (from
/// the exact state each read) keeps both from taking it.
#[test]
fn queue_one_number_two_askers_one_gets_it() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(1));
        let got = two_askers(&memory, false);
        assert_eq!(
            got.iter().flatten().count(),
            1,
            "exactly one holder: {got:?}"
        );
        memory.queue().free(0).unwrap();
        memory.assert_all_come_back(&[0]);
    });
}

/// A holder ended holding number 0; a sweep for it races another holder's free of the same
/// number: two frees, so exactly one of them queues it, and it comes back once.
#[test]
fn queue_a_sweep_racing_a_free_queues_the_number_once() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(2));
        assert_eq!(memory.allocate(7), Some(0));
        let sweeper = {
            let memory = memory.clone();
            thread::spawn(move || memory.queue().sweep(|holder| holder == 7))
        };
        let freed = memory.queue().free(0).is_ok();
        let swept = sweeper.join().unwrap();
        assert_eq!(u64::from(freed) + swept, 1, "freed {freed}, swept {swept}");
        memory.assert_all_come_back(&[0, 1]);
    });
}

/// What a second participant does with number 1 while number 0, freed before the call and
/// stranded (its dequeuer stopped after taking its position, so the queue looks empty), stays
/// free: it frees 1 and takes a number back; it stops forever after a free's first step (its
/// ticket taken, 1 still held); or it takes 1 and stops before counting the claim.
#[derive(Clone, Copy, Debug)]
enum One {
    FreesAndRetakes,
    StopsAfterItsTicket,
    StopsBeforeCounting,
}

/// Settled tickets less the tail let an allocate on an empty-looking queue say "full" without
/// reading the states: it must never do so while a number stays free for the whole call, and
/// the difference must never end above the number of held states.
#[test]
fn queue_settled_tickets_never_hide_a_number_free_for_the_whole_call() {
    for one in [
        One::FreesAndRetakes,
        One::StopsAfterItsTicket,
        One::StopsBeforeCounting,
    ] {
        model(move || {
            let memory = Arc::new(QueueMemory::new(2));
            assert_eq!(memory.allocate(ME), Some(0));
            assert_eq!(memory.allocate(ME), Some(1));
            memory.queue().free(0).unwrap();
            if let One::StopsBeforeCounting = one {
                memory.queue().free(1).unwrap();
            }
            // 0 stranded: the head counted its position passed.
            pass_a_position(&memory);
            let other = {
                let memory = memory.clone();
                thread::spawn(move || match one {
                    One::FreesAndRetakes => {
                        memory.queue().free(1).unwrap();
                        memory.allocate(THIRD)
                    }
                    One::StopsAfterItsTicket => {
                        memory.tail.fetch_add(1, Ordering::AcqRel);
                        None
                    }
                    One::StopsBeforeCounting => {
                        // A claim of 1 from the ring at its position (1), the head never moved
                        // over it.
                        let state = memory.states[1].load(Ordering::Acquire);
                        let held = 1 << 63 | THIRD as u64;
                        let took = state >> 63 == 0
                            && memory.states[1]
                                .compare_exchange(state, held, Ordering::AcqRel, Ordering::Relaxed)
                                .is_ok();
                        took.then_some(1)
                    }
                })
            };
            let got = memory.allocate(ME);
            let other = other.join().unwrap();
            // Only the other participant can take 0 from under this call.
            assert!(
                got.is_some() || other == Some(0),
                "{one:?}: 0 stayed free, yet got {got:?} (other {other:?})"
            );
            let (count, held) = settled_and_held(&memory);
            match one {
                One::FreesAndRetakes => assert_eq!(count, held, "the count is exact"),
                // A stopped step leaves it short (maybe wrapped below zero), never over.
                _ => assert!(
                    count <= held || count > u64::MAX / 2,
                    "{one:?}: count {count}, held {held}"
                ),
            }
        });
    }
}

/// Settled tickets less the tail, and the held states: equal when nobody is mid-call.
fn settled_and_held(memory: &QueueMemory) -> (u64, u64) {
    (memory.queue().counted(), memory.queue().held())
}

/// Moves the head over one position, counted passed first, as a dequeuer does over a position
/// whose number never came: returns the position. Its number, if queued there, is stranded.
fn pass_a_position(memory: &QueueMemory) -> u64 {
    memory.passed.fetch_add(1, Ordering::AcqRel);
    memory.head.fetch_add(1, Ordering::AcqRel)
}

/// Two frees of 1 race (one of them may take a ticket that then carries nothing) while an
/// allocate runs with 0 stranded and free for its whole call: the allocate gets a number, and
/// the settled count ends exact.
#[test]
fn queue_racing_double_frees_leave_the_settled_count_exact() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(2));
        assert_eq!(memory.allocate(ME), Some(0));
        assert_eq!(memory.allocate(ME), Some(1));
        memory.queue().free(0).unwrap();
        pass_a_position(&memory); // 0 stranded behind the head
        let frees: Vec<_> = (0..2)
            .map(|_| {
                let memory = memory.clone();
                thread::spawn(move || memory.queue().free(1).is_ok())
            })
            .collect();
        let got = memory.allocate(THIRD);
        let freed: usize = frees.into_iter().map(|t| t.join().unwrap() as usize).sum();
        // Twice only if the allocate took 1 between the two frees.
        assert!(
            freed == 1 || (freed == 2 && got == Some(1)),
            "{freed} {got:?}"
        );
        assert!(got.is_some(), "0 was free for the whole call");
        let (count, held) = settled_and_held(&memory);
        assert_eq!(count, held, "exact");
    });
}

/// A free races an allocate of its only number (the dequeuer may pass the position first and
/// the free re-ticket): the count is exact afterwards, and exactly one of two allocates gets it.
#[test]
fn queue_a_free_racing_an_allocate_leaves_the_settled_count_exact() {
    model(|| {
        let (memory, freer) = one_number_being_freed(ME);
        let got = memory.allocate(THIRD);
        freer.join().unwrap();
        let (count, held) = settled_and_held(&memory);
        assert_eq!(count, held, "exact (got {got:?})");
        let again = memory.allocate(THIRD);
        assert!(got.is_some() ^ again.is_some());
        let (count, held) = settled_and_held(&memory);
        assert_eq!(count, held, "exact after");
    });
}

/// A sweep of a dead holder's number races a free of it and an allocate: one of the two queues
/// it, and the count ends exact.
#[test]
fn queue_a_sweep_racing_a_free_and_an_allocate_leaves_the_settled_count_exact() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(2));
        assert_eq!(memory.allocate(7), Some(0));
        assert_eq!(memory.allocate(ME), Some(1));
        let sweeper = {
            let memory = memory.clone();
            thread::spawn(move || memory.queue().sweep(|holder| holder == 7))
        };
        let freed = memory.queue().free(0).is_ok();
        memory.allocate(THIRD);
        let swept = sweeper.join().unwrap();
        assert_eq!(u64::from(freed) + swept, 1);
        let (count, held) = settled_and_held(&memory);
        assert_eq!(count, held, "exact");
    });
}

/// Two frees of the only number lost its state word (their tickets carry nothing), so an
/// allocate passes a lap of positions, takes the words for disagreeing, and takes the number
/// from its state while the free that won writes its slot: the pass marks the slot passed
/// first (the free then finds it taken) or finds the number there (the head counts it when it
/// moves over it). Either way the claim is counted once: the count ends exact.
#[test]
fn queue_a_pass_over_the_states_racing_a_free_counts_its_claim_once() {
    model(|| {
        let memory = Arc::new(QueueMemory::new(1));
        assert_eq!(memory.allocate(ME), Some(0));
        memory.queue().ticket_for_nothing();
        memory.queue().ticket_for_nothing();
        let freer = {
            let memory = memory.clone();
            thread::spawn(move || memory.queue().free(0).unwrap())
        };
        let got = memory.allocate(THIRD);
        freer.join().unwrap();
        let again = memory.allocate(9);
        assert!(got.is_some() ^ again.is_some(), "{got:?} {again:?}");
        assert_eq!(memory.allocate(9), None, "and the head moves to the tail");
        let (count, held) = settled_and_held(&memory);
        assert_eq!((count, held), (1, 1), "exact");
    });
}

/// A recount racing a free of the only number: it may see the state queued, and must then see
/// the free's ticket too (or lower nothing); a sound count is never lowered.
#[test]
fn queue_a_recount_racing_a_free_never_lowers_a_sound_count() {
    model(|| {
        let (memory, freer) = one_number_being_freed(ME);
        let lowered = memory.queue().recount();
        freer.join().unwrap();
        assert_eq!(lowered, 0);
        let (count, held) = settled_and_held(&memory);
        assert_eq!(count, held, "exact");
    });
}
