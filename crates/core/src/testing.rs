//! A test fixture shared by the unit tests and the loom models (`tests/loom.rs`): a region's
//! sections in ordinary memory, over the atomics the algorithm uses (loom's under `--cfg loom`).
//! Not part of the API.

use crate::bits::{Bits, Parts};
use crate::header::Header;
use crate::queue::{Caller, Queue, QueueParts};
use crate::sync::{AtomicU32, AtomicU64};

/// A bitmap with its summaries, full counts and (optionally) holder records, laid out as in a
/// region of `size` bytes.
pub struct Memory {
    pub words: Vec<AtomicU64>,
    pub l1: Vec<AtomicU64>,
    pub l2: Vec<AtomicU64>,
    pub counts: Vec<AtomicU32>,
    pub holders: Option<Vec<AtomicU32>>,
    /// The bitmap's capacity: 8 numbers per byte.
    pub capacity: u64,
}

impl Memory {
    /// The sections of a region of `size` bytes, all zero (empty), with or without holder records.
    pub fn with(size: u64, holders: bool) -> Memory {
        let h = Header::new(size, holders);
        let zeroed = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Memory {
            words: zeroed(h.words()),
            l1: zeroed(h.l1_words()),
            l2: zeroed(h.l2_words()),
            counts: (0..h.l1_words()).map(|_| AtomicU32::new(0)).collect(),
            holders: holders.then(|| {
                (0..h.bitmap_capacity())
                    .map(|_| AtomicU32::new(0))
                    .collect()
            }),
            capacity: h.bitmap_capacity(),
        }
    }

    /// The holder records (the fixture must have them).
    pub fn records(&self) -> &[AtomicU32] {
        self.holders
            .as_deref()
            .expect("a fixture with holder records")
    }

    /// A view of the numbers `0..max` that writes the record `me` for what it claims.
    pub fn bits_as(&self, max: u64, me: u32) -> Bits<'_> {
        let parts = Parts {
            words: &self.words,
            l1: &self.l1,
            l2: &self.l2,
            counts: &self.counts,
            holders: self.holders.as_deref(),
        };
        Bits::new(parts, me, self.capacity, max)
    }
}

/// A queue's sections (see [`crate::queue`]), all zero as in a new region: every number queued,
/// 0 first.
pub struct QueueMemory {
    pub head: AtomicU64,
    pub tail: AtomicU64,
    pub passed: AtomicU64,
    pub settled: AtomicU64,
    pub states: Vec<AtomicU64>,
    pub ring: Vec<AtomicU64>,
    /// What a queue keeps per handle in a region, shared here by every caller.
    pub caller: Caller,
}

impl QueueMemory {
    pub fn new(capacity: usize) -> QueueMemory {
        let zeroed = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        QueueMemory {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            states: zeroed(capacity),
            ring: zeroed(Queue::ring_len(capacity as u64)),
            caller: Caller::default(),
        }
    }

    /// Takes a number for `me` (a shortcut for the models).
    pub fn allocate(&self, me: u32) -> Option<u64> {
        self.queue().allocate(me, &self.caller)
    }

    pub fn queue(&self) -> Queue<'_> {
        Queue::new(QueueParts {
            head: &self.head,
            tail: &self.tail,
            passed: &self.passed,
            settled: &self.settled,
            states: &self.states,
            ring: &self.ring,
        })
    }

    /// Takes every number left (as holder 9) and checks that each of `expected` comes back once.
    pub fn assert_all_come_back(&self, expected: &[u64]) {
        let queue = self.queue();
        let mut all: Vec<u64> = std::iter::from_fn(|| queue.allocate(9, &self.caller)).collect();
        all.sort_unstable();
        assert_eq!(all, expected, "every number, once");
    }
}
