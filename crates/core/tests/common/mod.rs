//! Helpers shared by the integration tests.

use std::sync::atomic::Ordering;

use numballoc_core::holder::{record, slot_entry};
use numballoc_core::Region;

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
