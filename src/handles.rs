//! The per-thread table of native handles that JavaScript refers to by integer id.
//!
//! Each JS thread (the main thread, each worker) has its own table, as it has its own objects.
//! An id is freed only by `remove`, which lib/regions.js calls from a `FinalizationRegistry` once the JS
//! object holding the id is unreachable, so an id that JavaScript can still pass always names the
//! handle it was given for. A stale or made-up id finds nothing or a handle of the wrong kind:
//! an error, never undefined behaviour.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use numballoc_core::{ConcurrentBitmap, ConcurrentQueue};

use crate::slot::{AnySlot, ClosedHoldings, Slot};
use crate::RegionSlot;

/// The id of a handle, as JavaScript holds it.
pub type HandleId = u32;

/// What an id refers to.
#[derive(Clone)]
pub enum Handle {
    Memory(Rc<RegionSlot>),
    Bitmap(Rc<Slot<ConcurrentBitmap>>),
    Queue(Rc<Slot<ConcurrentQueue>>),
    /// An allocator that JavaScript closed. Its id stays taken while the JS object lives, but
    /// the allocator is gone, and with it (once no call in progress holds it) its reference to
    /// the region: a program that opens and closes allocators in a loop does not keep a
    /// mapping and a descriptor for each until the garbage collector runs. What it took and did
    /// not give back stays known to its siblings meanwhile.
    Closed {
        _holdings: Option<Rc<ClosedHoldings>>,
    },
}

impl Handle {
    /// The allocator this handle is, if it is one.
    pub fn allocator(&self) -> Option<&dyn AnySlot> {
        match self {
            Handle::Bitmap(slot) => Some(&**slot),
            Handle::Queue(slot) => Some(&**slot),
            Handle::Memory(_) | Handle::Closed { .. } => None,
        }
    }
}

struct Entries {
    slots: Vec<Option<Handle>>,
    free: Vec<HandleId>,
}

/// A JS thread's table: the thread-local owns it, and so drops every handle when the thread ends.
struct Table(Rc<RefCell<Entries>>);

thread_local! {
    static TABLE: Table = Table(Rc::new(RefCell::new(Entries {
        slots: Vec::new(),
        free: Vec::new(),
    })));
}

/// This thread's table as the hot path keeps it (`src/hot.rs`): an addon reaches a thread-local
/// through a function call on every access, which the hot path would pay twice a pair. Weak, so
/// that the handles still go when the thread ends.
pub struct TableRef(Weak<RefCell<Entries>>);

impl TableRef {
    pub fn current() -> TableRef {
        TABLE.with(|table| TableRef(Rc::downgrade(&table.0)))
    }

    /// The handle `id` refers to, if any (none once the thread's table is gone). A copy, not a
    /// borrow: what the caller does with it (an error it makes can run a setter of the user's)
    /// may change the table.
    #[inline]
    pub fn get(&self, id: HandleId) -> Option<Handle> {
        let table = self.0.upgrade()?;
        let entries = table.try_borrow().ok()?;
        entries.slots.get(id as usize)?.clone()
    }
}

/// Stores a handle and returns its new id.
pub fn insert(handle: Handle) -> HandleId {
    TABLE.with(|table| {
        let mut table = table.0.borrow_mut();
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
    TABLE.with(|table| table.0.borrow().slots.get(id as usize)?.clone())
}

/// Marks a closed allocator's id [`Handle::Closed`], keeping what it still holds and dropping
/// this table's reference to the allocator.
pub fn close(id: HandleId, holdings: Option<Rc<ClosedHoldings>>) {
    let closed = TABLE.with(|table| {
        let mut table = table.0.borrow_mut();
        let entry = table.slots.get_mut(id as usize)?;
        entry.as_ref()?.allocator()?;
        entry.replace(Handle::Closed {
            _holdings: holdings,
        })
    });
    // Dropped outside the borrow, as in `remove`.
    drop(closed);
}

/// Frees an id. Dropping the handle may unmap its region, if nothing else holds it.
pub fn remove(id: HandleId) {
    let removed = TABLE.with(|table| {
        let mut table = table.0.borrow_mut();
        let removed = table.slots.get_mut(id as usize).and_then(Option::take);
        if removed.is_some() {
            table.free.push(id);
        }
        removed
    });
    // Dropped outside the borrow: a handle's drop never re-enters the table, but keep it simple.
    drop(removed);
}
