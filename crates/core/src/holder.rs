//! Who holds a number, and whether they still live: holder slots that the kernel vouches for.
//!
//! # Identity
//! A region that tracks holders has a table of [`SLOTS`] holder slots. A holder (by default a
//! process; see [`HolderScope`]) takes one slot and holds an open-file-description lock
//! (`F_OFD_SETLK`, a write lock) on that slot's first byte of the region file, for as long as it
//! lives. The kernel drops such a lock exactly when the last reference to the open file
//! description goes: when the holder closed it, or died, whatever its pid, pid namespace, time
//! namespace or `/proc` mount. So a slot's owner is alive exactly when its lock is held:
//! - checking costs no `/proc` read and no new descriptor (a try-lock through a descriptor the
//!   checker already has), so neither `hidepid` nor a full descriptor table can fool it;
//! - a pid that was reused, or a pid in another namespace, means nothing here;
//! - a process whose main thread exited while other threads run keeps its descriptors, so its
//!   lock;
//! - a child forked without exec shares its parent's descriptors, so the lock stays while either
//!   runs: its numbers never come back while one of them could still use them (see
//!   [`HolderScope`], "Fork without exec"). Such a child takes an identity of its own by opening
//!   regions with a new [`HolderScope`].
//!
//! Whoever takes a slot's lock with a try-lock knows its previous owner is gone *and* keeps
//! everyone else out of the slot while it cleans up after it: that is how reclaim works
//! ([`crate::Region::reclaim`]). A try-lock that fails for any other reason than "held" is not
//! evidence of death: the slot counts as alive.
//!
//! # Records
//! Each number has a 32-bit record: 0 when nobody holds it, else the holder's slot (low 12 bits)
//! and the slot's *generation* (high 20 bits), which grows each time the slot is taken. The
//! generation is what lets anyone free a number: a free that was delayed cannot clear the record
//! of the next holder of the same slot, whose generation differs. Generation [`SWEEPING`] is
//! reserved: a record taken over by the process that holds that slot's lock while it frees it.
//!
//! # Slot entries
//! Each slot has a 64-bit entry, written only by whoever holds the slot's lock: bit 63 set while
//! the slot is taken, the generation in bits 32..52, and the pid of the process that took it (as
//! that process sees itself: for display only; it proves nothing) in bits 0..32.

#[cfg(not(loom))]
use std::collections::HashMap;
#[cfg(not(loom))]
use std::fs::File;
#[cfg(not(loom))]
use std::io;
#[cfg(not(loom))]
use std::os::unix::io::AsRawFd;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Holder slots in a region that tracks holders: how many holders (processes, or scopes) can hold
/// numbers of one region at once.
pub const SLOTS: usize = 4096;
const SLOT_BITS: u32 = 12;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// The largest generation; it is never a holder's: records naming it are being swept.
pub const SWEEPING: u32 = (1 << (32 - SLOT_BITS)) - 1;
const IN_USE: u64 = 1 << 63;
const GENERATION_SHIFT: u32 = 32;

/// A record value naming `slot` and `generation` (never 0: generations start at 1).
pub const fn record(slot: usize, generation: u32) -> u32 {
    (generation << SLOT_BITS) | slot as u32
}

/// The slot a non-zero record names.
pub const fn record_slot(record: u32) -> usize {
    (record & SLOT_MASK) as usize
}

/// The generation a record names.
pub const fn record_generation(record: u32) -> u32 {
    record >> SLOT_BITS
}

/// A slot entry: taken (or not), its generation, and a pid for display.
pub const fn slot_entry(in_use: bool, generation: u32, pid: u32) -> u64 {
    (if in_use { IN_USE } else { 0 }) | ((generation as u64) << GENERATION_SHIFT) | pid as u64
}

/// Whether a slot entry says the slot is taken.
pub const fn entry_in_use(entry: u64) -> bool {
    entry & IN_USE != 0
}

/// The generation of a slot entry.
pub const fn entry_generation(entry: u64) -> u32 {
    ((entry & !IN_USE) >> GENERATION_SHIFT) as u32
}

/// The pid of a slot entry.
pub const fn entry_pid(entry: u64) -> u32 {
    entry as u32
}

/// The generation after `generation`: 1 ..= SWEEPING - 1, wrapping.
// Used by the region code, which is not built under loom.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn next_generation(generation: u32) -> u32 {
    generation % (SWEEPING - 1) + 1
}

/// Who holds a number, as its record and the slot table say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The holder slot.
    pub slot: usize,
    /// The slot's generation when the number was taken.
    pub generation: u32,
    /// The pid of the process that took the slot, as that process saw itself (in a pid
    /// namespace, its pid there); 0 when the slot has been taken again since. For display only.
    pub pid: u32,
}

impl Holder {
    /// The holder a non-zero record names, with the pid from the slot table entry.
    pub fn from_record(record: u32, entry: u64) -> Holder {
        let generation = record_generation(record);
        let current = entry_generation(entry) == generation;
        Holder {
            slot: record_slot(record),
            generation,
            pid: if current { entry_pid(entry) } else { 0 },
        }
    }
}

#[cfg(not(loom))]
/// What a lock probe found: a held lock (its owner lives), no lock (its owner is gone), or that
/// it cannot tell, which every caller treats as alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Alive,
    Gone,
    Unknown,
}

#[cfg(not(loom))]
mod locks {
    use super::*;
    /// The byte range of the lock of the slot whose entry is at `offset` in the region file.
    fn flock_at(kind: libc::c_short, offset: u64) -> libc::flock {
        // SAFETY: flock is plain data; zero is a valid value for every field.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = offset as libc::off_t;
        lock.l_len = 1;
        lock
    }

    #[cfg(target_os = "linux")]
    fn fcntl_lock(file: &File, command: libc::c_int, lock: &mut libc::flock) -> io::Result<()> {
        loop {
            // SAFETY: a valid descriptor and a valid, initialised flock.
            if unsafe { libc::fcntl(file.as_raw_fd(), command, lock as *mut libc::flock) } == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// Open-file-description locks are Linux's. Elsewhere every lock call fails (`ENOTSUP`), so a
    /// region with holders cannot be opened, and a probe cannot tell (untested).
    #[cfg(not(target_os = "linux"))]
    fn fcntl_lock(_file: &File, _command: libc::c_int, _lock: &mut libc::flock) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }

    #[cfg(target_os = "linux")]
    const OFD_SETLK: libc::c_int = libc::F_OFD_SETLK;
    #[cfg(target_os = "linux")]
    const OFD_GETLK: libc::c_int = libc::F_OFD_GETLK;
    #[cfg(not(target_os = "linux"))]
    const OFD_SETLK: libc::c_int = 0;
    #[cfg(not(target_os = "linux"))]
    const OFD_GETLK: libc::c_int = 0;

    /// Tries to take the slot lock at `offset` through `file`'s open file description: `Ok(true)`
    /// if taken (whoever held it is gone), `Ok(false)` if someone else holds it.
    pub(crate) fn try_lock(file: &File, offset: u64) -> io::Result<bool> {
        let mut lock = flock_at(libc::F_WRLCK as libc::c_short, offset);
        match fcntl_lock(file, OFD_SETLK, &mut lock) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Releases the slot lock at `offset` held through `file`'s open file description.
    pub(crate) fn unlock(file: &File, offset: u64) {
        let mut lock = flock_at(libc::F_UNLCK as libc::c_short, offset);
        // Nothing to do on failure: the lock goes with the description anyway.
        let _ = fcntl_lock(file, OFD_SETLK, &mut lock);
    }

    /// Whether someone holds the slot lock at `offset`, without taking it: for read-only views. A
    /// lock held through `file`'s own description does not show.
    pub(crate) fn probe(file: &File, offset: u64) -> Liveness {
        let mut lock = flock_at(libc::F_WRLCK as libc::c_short, offset);
        match fcntl_lock(file, OFD_GETLK, &mut lock) {
            Ok(()) if lock.l_type == libc::F_UNLCK as libc::c_short => Liveness::Gone,
            Ok(()) => Liveness::Alive,
            Err(_) => Liveness::Unknown,
        }
    }

    /// Who counts as one holder: every region opened with one scope in one process shares one holder
    /// slot per region, and the numbers taken through any of them belong to it.
    ///
    /// By default ([`HolderScope::process`]) the scope is the process, and a region's slot is given
    /// back, with every number still held through it, when the last [`crate::Region`] of that region
    /// opened in the scope is dropped (or when the process ends, by the kernel). A scope of its own
    /// suits a part of a program whose numbers should come back when it ends, such as a JavaScript
    /// worker thread, or a child forked without exec that wants an identity apart from its parent's.
    /// A scope made with `keep: true` keeps its slots until [`HolderScope::end`] (or, for slots no
    /// region uses and through which nothing is held, [`HolderScope::release_unused`]).
    ///
    /// # Fork without exec
    /// A child forked without exec inherits its parent's descriptors and mappings, so the two
    /// share every slot lock taken before the fork: they are one holder. Neither gives such a
    /// slot back or reclaims through it any more (a slot given back by one would be taken from
    /// the other, and two sweeps through one lock could run at once); its numbers come back when
    /// both have ended, and others reclaim them. Regions opened after the fork, or in a new scope,
    /// take slots of their own. A scope made with [`HolderScope::exec_only`] ignores forks: for
    /// runtimes whose forked children always exec at once (Node's `child_process`).
    #[derive(Debug)]
    pub struct HolderScope {
        keep: bool,
        exec_only: bool,
        registrations: Mutex<HashMap<(u64, u64), Weak<crate::region::Registration>>>,
        kept: Mutex<Vec<Arc<crate::region::Registration>>>,
    }

    /// Grows in the parent and in the child of every `fork` (a `pthread_atfork` handler): a slot
    /// taken at an older epoch may be shared with another process.
    static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

    extern "C" fn forked() {
        // Async-signal-safe, as an atfork handler must be.
        FORK_EPOCH.fetch_add(1, Ordering::AcqRel);
    }

    /// The current fork epoch, with the atfork handler installed first.
    pub(crate) fn fork_epoch() -> u64 {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            // SAFETY: registers plain functions that touch one atomic.
            unsafe { libc::pthread_atfork(None, Some(forked), Some(forked)) };
        });
        FORK_EPOCH.load(Ordering::Acquire)
    }

    /// Whether a slot taken at `epoch` (`None`: in an exec-only scope) is this process's alone.
    pub(crate) fn unshared(epoch: Option<u64>) -> bool {
        epoch.is_none_or(|epoch| epoch == FORK_EPOCH.load(Ordering::Acquire))
    }

    impl HolderScope {
        fn make(keep: bool, exec_only: bool) -> Arc<HolderScope> {
            Arc::new(HolderScope {
                keep,
                exec_only,
                registrations: Mutex::default(),
                kept: Mutex::default(),
            })
        }

        /// A new scope. With `keep`, slots (and so the numbers held) stay until
        /// [`HolderScope::end`], not only while a region is open.
        pub fn new(keep: bool) -> Arc<HolderScope> {
            HolderScope::make(keep, false)
        }

        /// A new scope whose process never uses what a forked child inherits: every fork it makes
        /// execs at once (or exits). Its slots stay its own across forks.
        pub fn exec_only(keep: bool) -> Arc<HolderScope> {
            HolderScope::make(keep, true)
        }

        /// The process's scope, used when [`crate::OpenOptions::scope`] is `None`.
        pub fn process() -> &'static Arc<HolderScope> {
            static PROCESS: OnceLock<Arc<HolderScope>> = OnceLock::new();
            PROCESS.get_or_init(|| HolderScope::new(false))
        }

        /// The fork epoch a new slot of this scope is taken at (`None`: forks do not matter).
        pub(crate) fn epoch(&self) -> Option<u64> {
            (!self.exec_only).then(fork_epoch)
        }

        /// The registration of the region file with identity `key`, or a new one from `register`.
        pub(crate) fn registration(
            &self,
            key: (u64, u64),
            register: impl FnOnce() -> crate::Result<Arc<crate::region::Registration>>,
        ) -> crate::Result<Arc<crate::region::Registration>> {
            let mut registrations = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = registrations.get(&key).and_then(Weak::upgrade) {
                if !existing.is_released() {
                    return Ok(existing);
                }
            }
            let registration = register()?;
            registrations.retain(|_, weak| weak.strong_count() > 0);
            registrations.insert(key, Arc::downgrade(&registration));
            if self.keep {
                let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.push(registration.clone());
            }
            Ok(registration)
        }

        /// Gives back the slots of this scope that no open region uses and through which no
        /// number is held any more (a scope made with `keep` keeps its slots otherwise). Reads the
        /// bitmap, and the records of the numbers in use, of each such region.
        pub fn release_unused(&self) {
            // The map's lock first, as `registration` takes it: no region can pick up a slot
            // while it is being given back.
            let _registrations = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.retain(|registration| {
                let unused = Arc::strong_count(registration) == 1 && !registration.holds_any();
                if unused {
                    registration.release();
                }
                !unused
            });
        }

        /// Ends this holder now: gives back every slot of the scope with every number still held
        /// through it, even through regions that are still open. Only for when nothing will use
        /// those regions again, such as a runtime thread that is ending: a region used afterwards
        /// would hand out numbers under a slot that is free.
        pub fn end(&self) {
            let registrations: Vec<_> = {
                let map = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
                map.values().filter_map(Weak::upgrade).collect()
            };
            for registration in &registrations {
                registration.release();
            }
            self.kept.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

#[cfg(not(loom))]
pub use locks::HolderScope;
#[cfg(not(loom))]
pub(crate) use locks::{probe, try_lock, unlock, unshared};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_entries_pack_and_unpack() {
        let r = record(4095, SWEEPING - 1);
        assert_eq!((record_slot(r), record_generation(r)), (4095, SWEEPING - 1));
        assert_ne!(record(0, 1), 0);
        let e = slot_entry(true, 77, 4_194_303);
        assert!(entry_in_use(e));
        assert_eq!((entry_generation(e), entry_pid(e)), (77, 4_194_303));
        assert!(!entry_in_use(slot_entry(false, 77, 1)));
        assert_eq!(next_generation(0), 1);
        assert_eq!(
            next_generation(SWEEPING - 1),
            1,
            "wraps before the reserved one"
        );
        let h = Holder::from_record(record(3, 9), slot_entry(true, 9, 42));
        assert_eq!((h.slot, h.generation, h.pid), (3, 9, 42));
        assert_eq!(
            Holder::from_record(record(3, 8), slot_entry(true, 9, 42)).pid,
            0
        );
    }
}
