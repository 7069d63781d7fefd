//! The per-thread table of native handles that JavaScript refers to by integer id.
//!
//! Each JS thread (the main thread, each worker) has its own table, as it has its own objects.
//! An id is freed only by `remove`, which lib/regions.js calls from a `FinalizationRegistry` once the JS
//! object holding the id is unreachable, so an id that JavaScript can still pass always names the
//! handle it was given for. A stale or made-up id finds nothing or a handle of the wrong kind:
//! an error, never undefined behaviour.

use std::cell::RefCell;
use std::rc::Rc;

use numballoc_core::{ConcurrentBitmap, ConcurrentQueue};

use crate::slot::Slot;
use crate::RegionSlot;

/// The id of a handle, as JavaScript holds it.
pub type HandleId = u32;

/// What an id refers to.
#[derive(Clone)]
pub enum Handle {
    Memory(Rc<RegionSlot>),
    Bitmap(Rc<Slot<ConcurrentBitmap>>),
    Queue(Rc<Slot<ConcurrentQueue>>),
}

struct Table {
    slots: Vec<Option<Handle>>,
    free: Vec<HandleId>,
}

thread_local! {
    // `const`: no lazy-initialisation check on every access from the hot path.
    static TABLE: RefCell<Table> = const {
        RefCell::new(Table {
            slots: Vec::new(),
            free: Vec::new(),
        })
    };
}

/// Stores a handle and returns its new id.
pub fn insert(handle: Handle) -> HandleId {
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        match table.free.pop() {
            Some(id) => {
                table.slots[id as usize] = Some(handle);
                id
            }
            None => {
                table.slots.push(Some(handle));
                (table.slots.len() - 1) as HandleId
            }
        }
    })
}

/// The handle an id refers to, if any.
pub fn get(id: HandleId) -> Option<Handle> {
    TABLE.with(|table| table.borrow().slots.get(id as usize)?.clone())
}

/// Frees an id. Dropping the handle may unmap its region, if nothing else holds it.
pub fn remove(id: HandleId) {
    let removed = TABLE.with(|table| {
        let mut table = table.borrow_mut();
        let removed = table.slots.get_mut(id as usize).and_then(Option::take);
        if removed.is_some() {
            table.free.push(id);
        }
        removed
    });
    // Dropped outside the borrow: a handle's drop never re-enters the table, but keep it simple.
    drop(removed);
}
