//! Helpers shared by the integration tests.

use std::sync::atomic::Ordering;

use numballoc_core::holder::{record, slot_entry};
use numballoc_core::{destroy, Region};

/// A region name no other test or run uses, destroyed when dropped (even if the test panics):
/// in POSIX shared memory, or in the directory `.1` when a test sets one.
pub struct Scratch(pub String, pub Option<std::path::PathBuf>);

impl Scratch {
    #[allow(dead_code)]
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::AtomicU32;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        Scratch(
            format!("numballoc-rs-{tag}-{}-{seq}", std::process::id()),
            None,
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if destroy(&self.0, self.1.as_deref()).is_err() {
            // Not a region (destroy leaves those alone): a test put it there.
            let dir = self.1.clone().unwrap_or_else(|| "/dev/shm".into());
            let _ = std::fs::remove_file(dir.join(&self.0));
        }
    }
}

/// Leaves `numbers` of `region` as a holder in `slot` that died would: the slot marked taken with
/// nobody holding its lock, a record naming it for each number, and (if `bits`) their bits set.
/// Returns the record it wrote.
#[allow(dead_code)]
pub fn plant_dead_holder(region: &Region, slot: usize, numbers: &[u64], bits: bool) -> u32 {
    let generation = 3;
    region.holder_slots()[slot].store(slot_entry(true, generation, 999_999), Ordering::SeqCst);
    let value = record(slot, generation);
    for &n in numbers {
        region.holder_records().unwrap()[n as usize].store(value, Ordering::SeqCst);
        if bits {
            region.words()[(n / 64) as usize].fetch_or(1 << (n % 64), Ordering::SeqCst);
        }
    }
    value
}
