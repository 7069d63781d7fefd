//! The atomics the lock-free code uses: loom's under `--cfg loom`, so that its model checker
//! explores the interleavings of the very same code (`tests/loom.rs`); the standard library's
//! otherwise.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
