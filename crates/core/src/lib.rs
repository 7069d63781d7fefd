//! numballoc's core: unique numbers across processes through a lock-free allocator in a named
//! shared-memory region: a bitmap ([`ConcurrentBitmap`]) or a first-in first-out queue
//! ([`ConcurrentQueue`]), both [`Allocator`]s. Pure Rust, no Node: a Rust program and a Node
//! program that open the same region share its numbers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use numballoc_core::{Allocator, ConcurrentBitmap, OpenOptions, Region};
//!
//! // 128 bytes of bitmap: numbers 0..1024, shared by every process that opens "ports".
//! let region = Arc::new(Region::open("ports", 128, &OpenOptions::default())?);
//! let ports = ConcurrentBitmap::new(region, 0);
//! let n = ports.allocate()?;
//! ports.free(n)?;
//! numballoc_core::destroy("ports", None)?;
//!
//! // Eight slots handed back oldest first: 0, 1, 2, ... from a new queue.
//! let slots = numballoc_core::ConcurrentQueue::open("slots", 8, &OpenOptions::default())?;
//! let slot = slots.allocate()?;
//! slots.free(slot)?;
//! numballoc_core::destroy("slots", None)?;
//! # Ok::<(), numballoc_core::Error>(())
//! ```

// Under `--cfg loom` only the algorithm is built: loom's atomics cannot live in a mapping.
#[cfg(not(loom))]
mod allocator;
pub mod backoff;
#[cfg(not(loom))]
mod bitmap;
mod bits;
#[cfg(not(loom))]
mod concurrent_queue;
mod error;
pub mod header;
pub mod holder;
#[cfg(not(loom))]
pub mod inspect;
/// The first-in first-out allocator's algorithm, over memory it is given ([`ConcurrentQueue`]
/// runs it over a region).
pub mod queue;
#[cfg(not(loom))]
mod region;
mod sync;
#[doc(hidden)]
pub mod testing;

#[cfg(not(loom))]
pub use allocator::Allocator;
#[cfg(not(loom))]
pub use bitmap::{ConcurrentBitmap, Policy};
pub use bits::{ones, Bits, Parts};
#[cfg(not(loom))]
pub use concurrent_queue::ConcurrentQueue;
pub use error::{Error, Result};
pub use holder::Holder;
#[cfg(not(loom))]
pub use holder::HolderScope;
#[cfg(not(loom))]
pub use region::{
    destroy, validate_name, validate_size, OpenOptions, Region, MAX_MODE, MAX_NAME_LEN,
};
