//! Model checking of the allocate / free / reclaim protocol with loom: every interleaving of 2-3
//! threads running the same `Bits` code as production, over loom's atomics.
//!
//! RUSTFLAGS="--cfg loom" cargo test -p numballoc-core --test loom --release
//! (`npm run test:loom`; part of `npm test`)
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use numballoc_core::header::Header;
use numballoc_core::{Bits, Holder};

/// A region's words in ordinary memory: bitmap, summaries and holder records.
struct Memory {
    words: Vec<AtomicU64>,
    l1: Vec<AtomicU64>,
    l2: Vec<AtomicU64>,
    holders: Vec<AtomicU64>,
    capacity: u64,
}

fn zeroed(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Memory {
    /// 8 numbers in one word, with holders: small, so every interleaving can be explored.
    fn one_word() -> Memory {
        let h = Header::new(1, true);
        Memory {
            words: zeroed(h.words()),
            l1: zeroed(h.l1_words()),
            l2: zeroed(h.l2_words()),
            holders: zeroed(h.capacity() as usize),
            capacity: h.capacity(),
        }
    }

    fn bits(&self) -> Bits<'_> {
        Bits::new(
            &self.words,
            &self.l1,
            &self.l2,
            Some(&self.holders),
            self.capacity,
            self.capacity,
        )
    }

    /// Marks every number but `free` as held by `holder` (bit and record).
    fn fill_except(&self, free: &[u64], holder: Holder) {
        for n in 0..self.capacity {
            if !free.contains(&n) {
                self.words[0].fetch_or(1 << n, Ordering::Relaxed);
                self.holders[n as usize].store(holder.0, Ordering::Relaxed);
            }
        }
    }
}

/// What a dead process's record looks like: this pid, another start time (PID reuse).
/// Every interleaving with at most 3 preemptions (loom's usual bound: most bugs need 2).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn dead() -> Holder {
    let me = Holder::current();
    Holder::new(me.pid(), me.start_ticks() + 1)
}

#[test]
fn two_allocators_never_get_the_same_number() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        memory.fill_except(&[2, 6], Holder::current());
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

#[test]
fn a_dead_holders_number_is_reclaimed_once_and_never_lost() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        // Number 7 is held by a dead process; 3 is free; the rest are held by this (live) one.
        memory.fill_except(&[7, 3], Holder::current());
        memory.words[0].fetch_or(1 << 7, Ordering::Relaxed);
        memory.holders[7].store(dead().0, Ordering::Relaxed);
        let reclaimers: Vec<_> = (0..2)
            .map(|_| {
                let memory = memory.clone();
                thread::spawn(move || memory.bits().reclaim())
            })
            .collect();
        let allocator = {
            let memory = memory.clone();
            thread::spawn(move || memory.bits().allocate_from(0).map(|(n, _)| n))
        };
        let freed: u64 = reclaimers.into_iter().map(|t| t.join().unwrap()).sum();
        let got = allocator
            .join()
            .unwrap()
            .expect("3 was free the whole time");
        assert_eq!(freed, 1, "7 is freed by exactly one reclaimer");
        assert!(got == 3 || got == 7);
        // The one still free comes next; then the region is full.
        let next = memory.bits().allocate_from(0).map(|(n, _)| n).unwrap();
        assert_eq!(got + next, 10);
        assert_eq!(memory.bits().allocate_from(0), None);
        for n in 0..memory.capacity as usize {
            let set = memory.words[0].load(Ordering::Relaxed) & (1 << n) != 0;
            let record = memory.holders[n].load(Ordering::Relaxed);
            assert!(
                set && record == Holder::current().0,
                "number {n}: bit {set}, record {record:#x}"
            );
        }
    });
}

#[test]
fn a_free_racing_a_search_leaves_no_wrong_full_mark() {
    model(|| {
        let memory = Arc::new(Memory::one_word());
        memory.fill_except(&[], Holder::current());
        let freer = {
            let memory = memory.clone();
            thread::spawn(move || memory.bits().free(5).unwrap())
        };
        let searcher = {
            let memory = memory.clone();
            // Finds the word full (and marks it) or finds 5 free (and takes it).
            thread::spawn(move || memory.bits().allocate_from(0).map(|(n, _)| n))
        };
        freer.join().unwrap();
        let got = searcher.join().unwrap();
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
