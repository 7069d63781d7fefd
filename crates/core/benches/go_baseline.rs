//! The Go original's `ConcurrentBitmap` algorithm, ported to Rust for a same-compiler baseline:
//! 32-bit blocks, bits tried one by one from the most significant, a per-handle hint that starts
//! at block 0 in every process, and `Free` as a compare-and-swap loop that accepts double frees.
//! Written from the algorithm's description; only for comparison in benchmarks.

use std::sync::atomic::{AtomicU32, Ordering};

pub struct GoBitmap<'a> {
    blocks: &'a [AtomicU32],
    hint: AtomicU32,
}

impl<'a> GoBitmap<'a> {
    pub fn new(blocks: &'a [AtomicU32]) -> GoBitmap<'a> {
        GoBitmap {
            blocks,
            hint: AtomicU32::new(0),
        }
    }

    pub fn allocate(&self) -> Option<u64> {
        let size = self.blocks.len() as u32;
        let mut i = self.hint.load(Ordering::SeqCst) % size;
        for _ in 0..=size {
            if i >= size {
                i %= size;
            }
            let block_ref = &self.blocks[i as usize];
            let mut block = block_ref.load(Ordering::SeqCst);
            'retry: loop {
                if block == u32::MAX {
                    break 'retry;
                }
                let mut mask = 0x8000_0000u32;
                let mut offset = 0u64;
                while mask != 0 {
                    let set = block | mask;
                    if set != block {
                        match block_ref.compare_exchange(
                            block,
                            set,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(_) => {
                                self.hint.store(i, Ordering::SeqCst);
                                return Some(i as u64 * 32 + offset);
                            }
                            Err(_) => {
                                block = block_ref.load(Ordering::SeqCst);
                                continue 'retry;
                            }
                        }
                    }
                    mask >>= 1;
                    offset += 1;
                }
                break;
            }
            i += 1;
        }
        None
    }

    pub fn free(&self, n: u64) {
        let block_ref = &self.blocks[(n >> 5) as usize];
        let mask = 0x8000_0000u32 >> (n % 32);
        let mut block = block_ref.load(Ordering::SeqCst);
        loop {
            let cleared = block & !mask;
            if cleared == block {
                return; // already free: accepted silently, as in Go
            }
            match block_ref.compare_exchange(block, cleared, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return,
                Err(actual) => block = actual,
            }
        }
    }
}
