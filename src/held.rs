//! The numbers one allocator handle holds, so that `close({ release: true })` can give them back.
//!
//! A plain bitmap in this process's memory, one bit per number below the allocator's `max`:
//! only this handle (on this JS thread) writes it, so no atomics; keeping it costs a load and a
//! store per allocate or free.

use std::alloc::Layout;
use std::cell::Cell;

use numballoc_core::ones;

pub struct Held {
    words: Box<[Cell<u64>]>,
}

impl Held {
    /// Bookkeeping for numbers `0..max`, or `ENOMEM` if the process cannot have it: a region's
    /// header may claim up to `MAX_SIZE` bytes, far more than the memory of most machines, and
    /// a failed allocation must be an error, not an abort of the process.
    pub fn new(max: u64) -> std::io::Result<Held> {
        let no_memory = || std::io::Error::from_raw_os_error(libc::ENOMEM);
        let len = usize::try_from(max.div_ceil(64)).map_err(|_| no_memory())?;
        if len == 0 {
            return Ok(Held {
                words: Box::new([]),
            });
        }
        let layout = Layout::array::<Cell<u64>>(len).map_err(|_| no_memory())?;
        // Zeroed by the allocator: large arrays come as untouched pages, so a handle on a big
        // region costs memory only where its numbers lie.
        // SAFETY: `layout` has a non-zero size.
        let words = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Cell<u64>;
        if words.is_null() {
            return Err(no_memory());
        }
        // SAFETY: `len` zeroed (so initialised) `Cell<u64>`s, allocated by the global allocator
        // with the layout a `Box<[Cell<u64>]>` of that length frees with.
        Ok(Held {
            words: unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(words, len)) },
        })
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

    /// Forgets `n`; whether it was held.
    #[inline]
    pub fn remove(&self, n: u64) -> bool {
        self.words.get((n / 64) as usize).is_some_and(|word| {
            let bit = 1u64 << (n % 64);
            let was = word.get();
            word.set(was & !bit);
            was & bit != 0
        })
    }

    pub fn insert_run(&self, first: u64, count: u64) {
        (first..first + count).for_each(|n| self.insert(n));
    }

    /// Every number held, in order.
    pub fn numbers(&self) -> Vec<u64> {
        let mut numbers = Vec::new();
        for (w, word) in self.words.iter().enumerate() {
            numbers.extend(ones(word.get()).map(|bit| w as u64 * 64 + bit as u64));
        }
        numbers
    }

    /// Every number held, and forgets them.
    pub fn take_all(&self) -> Vec<u64> {
        let numbers = self.numbers();
        self.words.iter().for_each(|word| word.set(0));
        numbers
    }
}

#[cfg(test)]
mod tests {
    use super::Held;

    #[test]
    fn bookkeeping_the_process_cannot_have_is_an_error_not_an_abort() {
        // More than any address space: the allocation fails whatever the overcommit policy.
        // Through `black_box`: an optimised build may otherwise drop an allocation nobody uses
        // and take it for a success.
        let error = std::hint::black_box(Held::new(u64::MAX))
            .err()
            .expect("no memory for 2^64 numbers");
        assert_eq!(error.raw_os_error(), Some(libc::ENOMEM));
        let held = Held::new(1000).unwrap();
        held.insert(999);
        assert!(held.contains(999) && !held.contains(998));
        assert_eq!(held.take_all(), vec![999]);
        assert!(Held::new(0).unwrap().take_all().is_empty());
    }
}
