//! The numbers one allocator handle holds, so that `close({ release: true })` can give them back.
//!
//! A plain bitmap in this process's memory, one bit per number below the allocator's `max`:
//! only this handle (on this JS thread) writes it, so no atomics; keeping it costs a load and a
//! store per allocate or free.

use std::cell::Cell;

use numballoc_core::ones;

pub struct Held {
    words: Box<[Cell<u64>]>,
}

impl Held {
    pub fn new(max: u64) -> Held {
        Held {
            words: (0..max.div_ceil(64)).map(|_| Cell::new(0)).collect(),
        }
    }

    #[inline]
    fn update(&self, n: u64, set: bool) {
        if let Some(word) = self.words.get((n / 64) as usize) {
            let bit = 1u64 << (n % 64);
            word.set(if set {
                word.get() | bit
            } else {
                word.get() & !bit
            });
        }
    }

    /// Whether `n` is held.
    pub fn contains(&self, n: u64) -> bool {
        self.words
            .get((n / 64) as usize)
            .is_some_and(|word| word.get() & (1u64 << (n % 64)) != 0)
    }

    #[inline]
    pub fn insert(&self, n: u64) {
        self.update(n, true);
    }

    #[inline]
    pub fn remove(&self, n: u64) {
        self.update(n, false);
    }

    pub fn insert_run(&self, first: u64, count: u64) {
        (first..first + count).for_each(|n| self.insert(n));
    }

    pub fn remove_run(&self, first: u64, count: u64) {
        (first..first + count).for_each(|n| self.remove(n));
    }

    /// Every number held, and forgets them.
    pub fn take_all(&self) -> Vec<u64> {
        let mut numbers = Vec::new();
        for (w, word) in self.words.iter().enumerate() {
            numbers.extend(ones(word.replace(0)).map(|bit| w as u64 * 64 + bit as u64));
        }
        numbers
    }
}
