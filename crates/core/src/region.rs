//! A named, fixed-size mapping shared by every process that opens it.
//!
//! # Creation protocol
//! Several processes may open a region that does not exist yet at the same instant. Exactly one of
//! them initialises it and nobody uses it half-written:
//! 1. Each opener opens the object with `O_CREAT` (the one whose `O_EXCL` open succeeds is the
//!    creator and sets the mode).
//! 2. Fast path: if the object is long enough and its magic number is set (an `Acquire` load that
//!    pairs with the initialiser's `Release` store), the header is complete: validate and map it.
//! 3. Otherwise take an exclusive `flock` on the object and look again. If it is still not
//!    initialised, initialise it under the lock: reserve its storage, write the header fields, and
//!    store the magic number last. The lock is dropped when the initialiser closes its descriptor
//!    *or dies*, so a region left empty or half-written by a creator that was killed is completed
//!    by the next opener instead of being refused forever.
//!
//! A half-written region is recognised precisely: its magic number is still zero, its header
//! bytes are either all zero or a valid header's, and every byte after the header is zero. It is
//! completed in place: its file is extended if it must be, never shrunk, since other processes
//! may have it mapped with the length they saw. Anything else is refused and never modified.
//!
//! # Holders
//! A process that opens a region which tracks holders takes a holder slot in it for its
//! [`HolderScope`] (see [`crate::holder`]), then reclaims the numbers of holders that are gone.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::header::{
    Header, Kind, Layout, Section, HEADER_LEN, MAGIC_WORD, MAX_QUEUE_CAPACITY, MAX_SIZE,
};
use crate::holder::{
    entry_generation, entry_in_use, entry_pid, next_generation, slot_entry, HolderScope, SLOTS,
};

/// The largest `mode` a region may be created with: permission bits only (no setuid, setgid or
/// sticky bit).
pub const MAX_MODE: u32 = 0o777;

/// The longest region name: the platform's limit on one path component (Linux `NAME_MAX`), or
/// on macOS the POSIX shared-memory name limit less its leading `/`.
#[cfg(target_os = "macos")]
pub const MAX_NAME_LEN: usize = 30;
/// The longest region name: the platform's limit on one path component (Linux `NAME_MAX`), or
/// on macOS the POSIX shared-memory name limit less its leading `/`.
#[cfg(not(target_os = "macos"))]
pub const MAX_NAME_LEN: usize = 255;

/// How a region is opened. The default creates a POSIX shared-memory object with mode `0o600`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the region when it does not exist (default `true`). With `false`, a missing region
    /// is an `ENOENT` error.
    pub create: bool,
    /// Permission bits of a region this call creates, `0..=0o777` (default `0o600`). Applied
    /// exactly, not filtered through the process umask, so `0o666` really shares a region
    /// between users. Readers should be writers too: a user who can read a region can take file
    /// locks on it, and so keep dead holders' numbers from coming back.
    pub mode: u32,
    /// Keep the region in a regular file in this directory instead of POSIX shared memory.
    pub directory: Option<PathBuf>,
    /// Record who holds each number, so numbers of dead processes can be reclaimed (default
    /// `true`; costs 8 bytes per number). Fixed when the region is created: opening an existing
    /// region keeps its choice.
    pub holders: bool,
    /// What the numbers stand for (see [`Header::tag`]): written when this call creates the
    /// region; when it exists, its tag must be this one (`TagMismatch`). `None` (the default)
    /// creates with tag 0 and accepts any.
    pub tag: Option<u64>,
    /// How many numbers the region is for, `1..=size * 8`: recorded when this call creates the
    /// region (allocators over it hand out `0..capacity`); when it exists, its capacity must be
    /// this one (`CapacityMismatch`). `None` (the default) creates with `size * 8` and accepts any.
    pub capacity: Option<u64>,
    /// Who holds the numbers taken through this region: `None` (the default) for
    /// [`HolderScope::process`].
    pub scope: Option<Arc<HolderScope>>,
    /// Reclaim the numbers of holders that are gone when the region is opened (default `true`).
    /// Off for a tool that reclaims by itself to report how many numbers came back.
    pub reclaim: bool,
    /// Refuse (`NotPrivate`) a region that another user owns or that grants any permission to
    /// group or others, before reading a byte of it (default `false`). For per-user regions in a
    /// directory everyone can write, such as `/dev/shm`: another user could create one there
    /// first, fill it, or watch it. A region this call creates has this user and `mode` (which
    /// must then grant nothing to group or others).
    pub private: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            mode: 0o600,
            directory: None,
            holders: true,
            tag: None,
            capacity: None,
            scope: None,
            reclaim: true,
            private: false,
        }
    }
}

/// Checks a region name: 1 to [`MAX_NAME_LEN`] letters, digits, `.`, `_` or `-`, and not `.`
/// or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let problem = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("is longer than {MAX_NAME_LEN} characters"))
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'".to_owned())
    } else if !name.chars().all(allowed) {
        Some("may only contain letters, digits, '.', '_' and '-'".to_owned())
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::InvalidName(format!(
            "invalid region name {name:?}: it {p}"
        ))),
        None => Ok(()),
    }
}

/// Checks a bitmap size in bytes: `1..=MAX_SIZE`.
pub fn validate_size(size: u64) -> Result<()> {
    if (1..=MAX_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(Error::OutOfRange(format!(
            "size must be an integer from 1 to {MAX_SIZE} bytes, got {size}"
        )))
    }
}

/// Where a region lives: a POSIX shared-memory object or a regular file.
pub(crate) enum Location {
    Shm { name: CString, shown: String },
    File { path: CString, shown: String },
}

impl Location {
    pub(crate) fn new(name: &str, directory: Option<&Path>) -> Result<Location> {
        validate_name(name)?;
        Ok(match directory {
            None => {
                let shown = format!("/{name}");
                Location::Shm {
                    name: CString::new(shown.clone()).expect("validated names have no NUL"),
                    shown,
                }
            }
            Some(dir) => {
                let path = dir.join(name);
                let shown = path.display().to_string();
                let path =
                    CString::new(path.into_os_string().into_encoded_bytes()).map_err(|_| {
                        Error::InvalidName(format!(
                            "directory {} contains a NUL byte",
                            dir.display()
                        ))
                    })?;
                Location::File { path, shown }
            }
        })
    }

    pub(crate) fn shown(&self) -> &str {
        match self {
            Location::Shm { shown, .. } | Location::File { shown, .. } => shown,
        }
    }

    pub(crate) fn open(&self, flags: libc::c_int, mode: u32) -> Result<File> {
        // O_NONBLOCK: opening a FIFO left under a region's name must not wait for a writer.
        let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let (fd, syscall) = match self {
            // SAFETY: a NUL-terminated name; shm_open has no other preconditions.
            Location::Shm { name, .. } => (
                unsafe { libc::shm_open(name.as_ptr(), flags, mode as libc::mode_t) },
                "shm_open",
            ),
            // SAFETY: a NUL-terminated path; the mode is passed as open(2)'s variadic argument.
            Location::File { path, .. } => (
                unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) },
                "open",
            ),
        };
        if fd < 0 {
            return Err(Error::last_os(syscall, self.shown()));
        }
        // SAFETY: fd is a descriptor we just opened and own.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn unlink(&self) -> io::Result<()> {
        // SAFETY: NUL-terminated names.
        let rc = match self {
            Location::Shm { name, .. } => unsafe { libc::shm_unlink(name.as_ptr()) },
            Location::File { path, .. } => unsafe { libc::unlink(path.as_ptr()) },
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn unlink_syscall(&self) -> &'static str {
        match self {
            Location::Shm { .. } => "shm_unlink",
            Location::File { .. } => "unlink",
        }
    }
}

/// A mapping of a region whose header is complete, with its sections, and a descriptor of its
/// file: the open file description that holds this mapping's holder lock, if it takes one.
pub(crate) struct Mapping {
    map: MmapRaw,
    header: Header,
    layout: Layout,
    file: File,
    /// The file's `(device, inode)`, read once: callers ask on every free of a number their
    /// handle did not take.
    identity: (u64, u64),
}

impl Mapping {
    pub(crate) fn new(map: MmapRaw, header: Header, file: File) -> Mapping {
        // SAFETY: a valid descriptor and a zeroed out-parameter of the right type; fstat of an
        // open descriptor cannot fail but on a bad descriptor, which this is not.
        let identity = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(file.as_raw_fd(), &mut st);
            (st.st_dev as u64, st.st_ino as u64)
        };
        Mapping {
            map,
            header,
            layout: header.layout(),
            file,
            identity,
        }
    }

    /// The descriptor of the region file this mapping was made from.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// `IncompatibleRegion` if another program has cut the file shorter than the region since it
    /// was mapped: touching the pages cut off would kill the process (`SIGBUS`). One `fstat`, so
    /// checked before the calls that touch every record, not on every allocation. A failed
    /// `fstat` tells nothing, and counts as intact.
    pub(crate) fn check_intact(&self, name: &str) -> Result<()> {
        // SAFETY: a valid descriptor and a zeroed out-parameter of the right type.
        let len = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(self.file.as_raw_fd(), &mut st) != 0 {
                return Ok(());
            }
            st.st_size as u64
        };
        let needed = self.header.region_len();
        if len < needed {
            return Err(incompatible(
                name,
                format!("it was cut to {len} bytes while in use, shorter than the {needed} bytes it needs (touching the rest would crash the process with SIGBUS)"),
            ));
        }
        Ok(())
    }

    /// A section as atomics of type `T`.
    ///
    /// # Safety
    /// `T` must be an atomic integer type whose size divides the section's offset and length.
    #[inline]
    unsafe fn section<T>(&self, section: Section) -> &[T] {
        // SAFETY: the mapping is at least `region_len` bytes (checked when attaching) and page
        // aligned; every section lies inside it at a multiple of 64 (FORMAT.md), so it is aligned
        // for T; it lives as long as `self`; every access to it is atomic.
        std::slice::from_raw_parts(
            self.map.as_ptr().add(section.offset as usize) as *const T,
            section.len as usize / std::mem::size_of::<T>(),
        )
    }

    /// A bitmap region's words (none in a queue region).
    pub(crate) fn words(&self) -> &[AtomicU64] {
        match self.layout {
            // SAFETY: a section of 64-bit words.
            Layout::Bitmap(s) => unsafe { self.section(s.bitmap) },
            Layout::Queue(_) => &[],
        }
    }

    /// The holder slot entries (empty without holders).
    pub(crate) fn slots(&self) -> &[AtomicU64] {
        // SAFETY: a section of 64-bit entries.
        unsafe { self.section(self.layout.slots()) }
    }

    /// A bitmap region's holder records, one per number, if it keeps them.
    pub(crate) fn records(&self) -> Option<&[AtomicU32]> {
        match self.layout {
            // SAFETY: a section of 32-bit records.
            Layout::Bitmap(s) if self.header.holders => Some(unsafe { self.section(s.records) }),
            _ => None,
        }
    }

    /// Where in the file the lock of holder slot `slot` is: its entry's first byte.
    pub(crate) fn lock_offset(&self, slot: usize) -> u64 {
        self.layout.slots().offset + 8 * slot as u64
    }

    /// The bitmap of a bitmap region. Panics for another kind: callers check the kind first.
    #[inline]
    fn bits(&self, max: u64, me: u32) -> crate::Bits<'_> {
        let Layout::Bitmap(s) = self.layout else {
            panic!("a {} region has no bitmap", self.header.kind.name());
        };
        // SAFETY: sections of 64-bit words (the summaries) and of 32-bit counts.
        let parts = unsafe {
            crate::bits::Parts {
                words: self.words(),
                l1: self.section(s.l1),
                l2: self.section(s.l2),
                counts: self.section(s.counts),
                holders: self.records(),
            }
        };
        crate::Bits::new(parts, me, self.header.bitmap_capacity(), max)
    }

    /// A view of every number, for sweeping records (which never claims, so writes no record).
    fn all_bits(&self) -> crate::Bits<'_> {
        self.bits(self.header.bitmap_capacity(), 0)
    }

    /// The queue of a queue region. Panics for another kind: callers check the kind first.
    pub(crate) fn queue(&self) -> crate::queue::Queue<'_> {
        let Layout::Queue(s) = self.layout else {
            panic!("a {} region has no queue", self.header.kind.name());
        };
        // SAFETY: the control section is two cache lines, each starting with a 64-bit counter
        // (the head's line has the settled and passed counts next); the states and the ring are sections of
        // 64-bit words.
        unsafe {
            let control: &[AtomicU64] = self.section(s.control);
            crate::queue::Queue::new(crate::queue::QueueParts {
                head: &control[0],
                tail: &control[8],
                settled: &control[1],
                passed: &control[2],
                states: self.section(s.states),
                ring: self.section(s.ring),
            })
        }
    }

    /// Frees every number whose holder record names a slot for which `swept(slot)` is true
    /// (whatever the kind); returns how many.
    fn sweep(&self, swept: impl Fn(usize) -> bool) -> u64 {
        match self.header.kind {
            Kind::Bitmap => self.all_bits().sweep(swept),
            Kind::Queue => self
                .queue()
                .sweep(|record| swept(crate::holder::record_slot(record))),
        }
    }

    /// Frees every number held with the record `record` (a live holder ending).
    fn sweep_held(&self, record: u32) -> u64 {
        match self.header.kind {
            Kind::Bitmap => self.all_bits().sweep_held(record),
            Kind::Queue => self.queue().sweep(|r| r == record),
        }
    }

    /// Whether some number is held with the record `record`.
    fn any_held_by(&self, record: u32) -> bool {
        match self.header.kind {
            Kind::Bitmap => self.all_bits().any_held_by(record),
            Kind::Queue => self.queue().any_held_by(record),
        }
    }

    /// The holder record of `n` (`None` if free, or if the region keeps no holders).
    /// `OutOfRange` unless `n` is below the region's room for numbers.
    fn record_of(&self, n: u64) -> Result<Option<u32>> {
        match self.header.kind {
            Kind::Bitmap => self.all_bits().record_of_number(n),
            Kind::Queue => Ok(self.queue().holder_of(n)?.filter(|_| self.header.holders)),
        }
    }
}

/// A holder slot taken by a [`HolderScope`] in one region: the lock that says it lives, and the
/// record its numbers carry. Given back, with every number still held through it, when dropped.
pub(crate) struct Registration {
    /// The mapping through whose open file description the slot's lock is held: the lock lasts
    /// as long as that description is referenced (its descriptor, or the mapping itself).
    mapping: Arc<Mapping>,
    name: String,
    slot: usize,
    generation: u32,
    /// The pid written in the slot entry, for display.
    pid: u32,
    /// The fork epoch the slot was taken at (`None` in an exec-only scope): after a fork, parent
    /// and child share the lock, and neither gives the slot back or reclaims through it.
    epoch: Option<u64>,
    released: AtomicBool,
    /// One reclaim at a time through this description: the kernel sees one lock owner for all of
    /// them, so it could not keep two of them out of the same dead slot.
    reclaiming: Mutex<()>,
}

impl Registration {
    /// Takes a free holder slot of `mapping` through its open file description.
    fn take(
        mapping: Arc<Mapping>,
        location: &Location,
        name: &str,
        epoch: Option<u64>,
    ) -> Result<Self> {
        mapping.check_intact(name)?;
        let file = &mapping.file;
        let pid = std::process::id();
        let slots = mapping.slots();
        // Slots nobody holds first; then slots whose holder is gone, cleaned up before use.
        for clean_only in [true, false] {
            for (slot, entry) in slots.iter().enumerate() {
                if clean_only && entry_in_use(entry.load(Ordering::Acquire)) {
                    continue;
                }
                let taken = crate::holder::try_lock(file, mapping.lock_offset(slot))
                    .map_err(|e| Error::os("fcntl", location.shown(), e))?;
                if !taken {
                    continue;
                }
                // The lock is ours: nobody else can be in this slot until we let it go.
                let before = entry.load(Ordering::Acquire);
                if entry_in_use(before) {
                    mapping.sweep(|s| s == slot);
                }
                let generation = next_generation(entry_generation(before));
                // Release: a reader that sees the entry sees the sweep before it.
                entry.store(slot_entry(true, generation, pid), Ordering::Release);
                return Ok(Registration {
                    name: name.to_owned(),
                    mapping,
                    slot,
                    generation,
                    pid,
                    epoch,
                    released: AtomicBool::new(false),
                    reclaiming: Mutex::new(()),
                });
            }
        }
        Err(Error::TooManyHolders {
            name: name.to_owned(),
            slots: SLOTS,
        })
    }

    /// The record this holder writes for the numbers it takes.
    pub(crate) fn record(&self) -> u32 {
        crate::holder::record(self.slot, self.generation)
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Whether no other process can share the slot's lock (no fork since it was taken).
    fn is_own(&self) -> bool {
        crate::holder::unshared(self.epoch)
    }

    /// Frees every number whose holder is gone; returns how many. See [`Region::reclaim`].
    fn reclaim(&self) -> Result<u64> {
        if !self.is_own() {
            return Ok(0); // a shared description: the other process may be reclaiming through it
        }
        let _one_at_a_time = self.reclaiming.lock().unwrap_or_else(|e| e.into_inner());
        // The slot table and the records are read below: not in a file cut short under us.
        self.mapping.check_intact(&self.name)?;
        let file = &self.mapping.file;
        let slots = self.mapping.slots();
        let mut gone = vec![false; SLOTS];
        let mut any = false;
        for (slot, entry) in slots.iter().enumerate() {
            if slot == self.slot || !entry_in_use(entry.load(Ordering::Acquire)) {
                continue;
            }
            // A try-lock that fails for any reason counts as alive.
            let taken = crate::holder::try_lock(file, self.mapping.lock_offset(slot));
            if !matches!(taken, Ok(true)) {
                continue;
            }
            if entry_in_use(entry.load(Ordering::Acquire)) {
                gone[slot] = true;
                any = true;
            } else {
                // Given back cleanly between our two looks.
                crate::holder::unlock(file, self.mapping.lock_offset(slot));
            }
        }
        if !any {
            return Ok(0);
        }
        let freed = self.mapping.sweep(|slot| gone[slot]);
        for (slot, _) in gone.iter().enumerate().filter(|(_, &g)| g) {
            let entry = slots[slot].load(Ordering::Acquire);
            slots[slot].store(
                slot_entry(false, entry_generation(entry), entry_pid(entry)),
                Ordering::Release,
            );
            crate::holder::unlock(file, self.mapping.lock_offset(slot));
        }
        Ok(freed)
    }

    /// Whether some allocated number's record names this holder: reads the bitmap, and the
    /// records of the numbers in use only.
    pub(crate) fn holds_any(&self) -> bool {
        self.mapping.check_intact(&self.name).is_err() || self.mapping.any_held_by(self.record())
    }

    /// Gives the slot back: frees every number still held through it, marks the slot free and
    /// lets its lock go. Idempotent; does nothing after a fork (the slot may be shared).
    pub(crate) fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) || !self.is_own() {
            return;
        }
        let _one_at_a_time = self.reclaiming.lock().unwrap_or_else(|e| e.into_inner());
        // A region cut short under us is left as it is (its numbers are out of reach anyway):
        // sweeping it would crash the process, at its exit as like as not.
        if self.mapping.check_intact(&self.name).is_ok() {
            self.mapping.sweep_held(self.record());
            self.mapping.slots()[self.slot].store(
                slot_entry(false, self.generation, self.pid),
                Ordering::Release,
            );
        }
        crate::holder::unlock(&self.mapping.file, self.mapping.lock_offset(self.slot));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("region", &self.name)
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .finish()
    }
}

/// A mapped region: the header and the bitmap words every process shares.
///
/// The mapping stays valid until the `Region` is dropped, even if the region is destroyed
/// (unlinked) meanwhile.
pub struct Region {
    mapping: Arc<Mapping>,
    name: String,
    /// This region's holder slot, for regions that track holders.
    registration: Option<Arc<Registration>>,
    /// The record written for the numbers taken through this region (0 without holders).
    me: u32,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("size", &self.mapping.header.size)
            .finish()
    }
}

impl Region {
    /// Creates the region `name` with a bitmap of `size` bytes (`size * 8` numbers), or opens it
    /// if it exists. See the module documentation for the creation protocol.
    ///
    /// In a region that tracks holders, the opener takes a holder slot for its scope (once per
    /// scope and region) and then reclaims the numbers of every holder that is gone.
    ///
    /// Errors: `InvalidName`, `OutOfRange` (size or capacity), `SizeMismatch` /
    /// `CapacityMismatch` (exists with another size or capacity), `IncompatibleRegion` (not a
    /// numballoc region of this version, another kind, corrupt, truncated, or not a regular
    /// file), `TooManyHolders`, and `Os` (`ENOENT` with `create: false`, `EACCES`, `ENOSPC`
    /// when its storage cannot be reserved, `EMFILE`, ...).
    pub fn open(name: &str, size: u64, options: &OpenOptions) -> Result<Region> {
        validate_size(size)?;
        if let Some(capacity) = options.capacity {
            if !(1..=size * 8).contains(&capacity) {
                return Err(Error::OutOfRange(format!(
                    "capacity must be an integer from 1 to {} (8 per byte of size {size}), got {capacity}",
                    size * 8
                )));
            }
        }
        Region::open_with(name, Some(Shape::Bitmap { size }), options)
    }

    /// Creates the region `name` holding a first-in first-out queue of `capacity` numbers (see
    /// [`crate::ConcurrentQueue`]), or opens it if it exists, as [`Region::open`] does a bitmap.
    /// `options.capacity`, if given, must be `capacity`.
    ///
    /// Errors: as [`Region::open`], and `KindMismatch` when the region holds a bitmap.
    pub fn open_queue(name: &str, capacity: u64, options: &OpenOptions) -> Result<Region> {
        if !(1..=MAX_QUEUE_CAPACITY).contains(&capacity)
            || options.capacity.is_some_and(|c| c != capacity)
        {
            return Err(Error::OutOfRange(format!(
                "a queue's capacity must be an integer from 1 to {MAX_QUEUE_CAPACITY}, got {capacity}"
            )));
        }
        Region::open_with(name, Some(Shape::Queue { capacity }), options)
    }

    /// Opens the existing region `name` whatever its size, which its header tells: for tools that
    /// inspect or repair regions they did not create. Never creates (`options.create` is
    /// ignored): a missing region is an `ENOENT` error, and one whose creator died before
    /// finishing its header is `IncompatibleRegion` (opening it with a size completes it).
    pub fn open_existing(name: &str, options: &OpenOptions) -> Result<Region> {
        let options = OpenOptions {
            create: false,
            ..options.clone()
        };
        Region::open_with(name, None, &options)
    }

    fn open_with(name: &str, shape: Option<Shape>, options: &OpenOptions) -> Result<Region> {
        let location = Location::new(name, options.directory.as_deref())?;
        if options.mode & !MAX_MODE != 0 {
            return Err(Error::OutOfRange(format!(
                "mode must be permission bits from 0 to 0o777, got {:#o}",
                options.mode
            )));
        }
        let expect = match shape {
            Some(Shape::Queue { capacity }) => Expect {
                kind: Some(Kind::Queue),
                size: None,
                capacity: Some(capacity),
                tag: options.tag,
            },
            Some(Shape::Bitmap { size }) => Expect {
                kind: Some(Kind::Bitmap),
                size: Some(size),
                capacity: options.capacity,
                tag: options.tag,
            },
            None => Expect {
                kind: None,
                size: None,
                capacity: options.capacity,
                tag: options.tag,
            },
        };
        if options.private && options.mode & 0o077 != 0 {
            return Err(Error::OutOfRange(format!(
                "a private region's mode grants nothing to group or others, got {:#o}",
                options.mode
            )));
        }
        // Each pass either returns or saw the object destroyed under it; give up after many.
        for _ in 0..1000 {
            let (file, created) = open_or_create(&location, options)?;
            if options.private {
                check_private(&file, &location, name)?;
            }
            if !created {
                if let Some(region) = attach(&file, &location, name, &expect)? {
                    return region.register(&file, &location, options);
                }
            }
            let region = {
                let _lock = ExclusiveLock::take(&file, &location)?;
                if fstat(&file, &location)?.st_nlink == 0 {
                    continue; // destroyed while we waited for the lock: open the new one
                }
                match attach(&file, &location, name, &expect)? {
                    Some(region) => region,
                    None => {
                        let header = match shape {
                            None => return Err(unfinished(name)),
                            Some(Shape::Queue { capacity }) => {
                                Header::queue(capacity, options.holders)
                            }
                            Some(Shape::Bitmap { size }) => {
                                let header = Header::new(size, options.holders);
                                match options.capacity {
                                    Some(capacity) => header.with_capacity(capacity),
                                    None => header,
                                }
                            }
                        };
                        let header = header.with_tag(options.tag.unwrap_or(0));
                        initialise(&file, &location, name, header, created)?
                    }
                }
            };
            return region.register(&file, &location, options);
        }
        Err(Error::os(
            "shm_open",
            location.shown(),
            io::Error::from_raw_os_error(libc::EAGAIN),
        ))
    }

    /// The region's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bitmap size in bytes (Go's `Memory.Size()`); a queue's capacity.
    pub fn size(&self) -> u64 {
        self.mapping.header.size
    }

    /// Which allocator the region holds.
    pub fn kind(&self) -> Kind {
        self.mapping.header.kind
    }

    /// `KindMismatch` unless the region holds `kind`: for code that opened a region of any kind
    /// ([`Region::open_existing`]) before building an allocator over it.
    pub fn expect_kind(&self, kind: Kind) -> Result<()> {
        if self.kind() == kind {
            Ok(())
        } else {
            Err(Error::KindMismatch {
                name: self.name.clone(),
                existing: self.kind(),
                requested: kind,
            })
        }
    }

    /// How many numbers the region was created for (`size * 8` unless its creator asked for
    /// fewer): allocators over it hand out `0..capacity`.
    pub fn capacity(&self) -> u64 {
        self.mapping.header.capacity
    }

    /// The application tag written when the region was created (0 if none).
    pub fn tag(&self) -> u64 {
        self.mapping.header.tag
    }

    /// The region file's identity, `(device, inode)`: the same for every `Region` of one region
    /// in one process (and never the same for two regions that exist at once).
    pub fn identity(&self) -> (u64, u64) {
        self.mapping.identity
    }

    fn new(map: MmapRaw, file: File, name: &str, header: Header) -> Region {
        Region {
            mapping: Arc::new(Mapping::new(map, header, file)),
            name: name.to_owned(),
            registration: None,
            me: 0,
        }
    }

    /// Takes this region's holder slot for the scope of `options` (the scope's existing one if it
    /// has one), then reclaims the numbers of holders that are gone.
    fn register(mut self, file: &File, location: &Location, options: &OpenOptions) -> Result<Self> {
        if !self.mapping.header.holders {
            return Ok(self);
        }
        let st = fstat(file, location)?;
        let scope = options.scope.as_ref().unwrap_or(HolderScope::process());
        let registration = scope.registration((st.st_dev as u64, st.st_ino as u64), || {
            Registration::take(self.mapping.clone(), location, &self.name, scope.epoch())
                .map(Arc::new)
        })?;
        self.me = registration.record();
        self.registration = Some(registration);
        if options.reclaim {
            // The holders only: opening must not read every state of a queue.
            self.reclaim_holders()?;
        }
        Ok(self)
    }

    /// The bitmap as 64-bit words: number `n` is bit `n % 64` of word `n / 64`.
    pub fn words(&self) -> &[AtomicU64] {
        self.mapping.words()
    }

    /// Whether the region records who holds each number.
    pub fn tracks_holders(&self) -> bool {
        self.mapping.header.holders
    }

    /// The holder records, one per number of the bitmap (see [`crate::holder`]), if the region
    /// keeps them. For tools and tests: the allocator is the way to change them.
    pub fn holder_records(&self) -> Option<&[AtomicU32]> {
        self.mapping.records()
    }

    /// The holder slot entries (see [`crate::holder`]); empty if the region keeps no holders.
    pub fn holder_slots(&self) -> &[AtomicU64] {
        self.mapping.slots()
    }

    /// The descriptor whose open file description holds this region's holder lock (`None` in a
    /// region without holders). A process that passes it to a child (as an inherited descriptor)
    /// shares its holder with the child: the lock, and so the numbers held, stay while either
    /// lives. For a wrapper that holds numbers for a command it runs (`numballoc run`).
    pub fn holder_fd(&self) -> Option<std::os::unix::io::RawFd> {
        self.registration
            .as_ref()
            .map(|registration| registration.mapping.file.as_raw_fd())
    }

    /// The record this region writes for the numbers taken through it: its holder's (0 in a
    /// region without holders).
    pub fn holder_record(&self) -> u32 {
        self.me
    }

    /// Who holds `n` (also while it is being claimed or freed), if the region keeps holders and
    /// someone does. `n` must be below the bitmap's `size * 8`.
    pub fn holder_of(&self, n: u64) -> Result<Option<crate::Holder>> {
        let record = self.mapping.record_of(n)?;
        Ok(record.map(|record| {
            let entry =
                self.holder_slots()[crate::holder::record_slot(record)].load(Ordering::Acquire);
            crate::Holder::from_record(record, entry)
        }))
    }

    /// Frees every number of the region whose holder is gone, and returns how many numbers it
    /// made free (including numbers a holder was in the middle of taking or freeing when it
    /// stopped). A holder is gone when the kernel no longer holds its slot's lock; a holder whose
    /// state cannot be told (the lock cannot be tried) counts as alive. Costs one `fcntl` per
    /// slot in use, and, only when a holder is gone, one pass over the holder records.
    ///
    /// `IncompatibleRegion` if another program cut the file short since it was opened (the
    /// records cannot be read without crashing the process).
    ///
    /// In a queue region it then puts right a count of held numbers that says more than the
    /// states (a region damaged or copied while in use, which would say "full" while numbers
    /// wait): a pass over every state, only when nothing moves during it
    /// ([`crate::queue::Queue::recount`]).
    pub fn reclaim(&self) -> Result<u64> {
        let freed = self.reclaim_holders()?;
        if self.kind() == Kind::Queue {
            // Every state is read: not in a file cut short under us (a region without holders
            // has not been checked above).
            self.mapping.check_intact(&self.name)?;
            self.queue().recount();
        }
        Ok(freed)
    }

    /// [`Region::reclaim`] without a queue's recount: what an allocator that found no free
    /// number does, in time that does not grow with the capacity.
    pub fn reclaim_holders(&self) -> Result<u64> {
        self.registration.as_ref().map_or(Ok(0), |r| r.reclaim())
    }

    /// The shared cursor of the cyclic policy.
    pub fn cursor(&self) -> &AtomicU64 {
        // SAFETY: inside the header, 8-byte aligned, accessed only atomically.
        unsafe {
            &*(self.mapping.map.as_ptr().add(crate::header::CURSOR_OFFSET) as *const AtomicU64)
        }
    }

    /// The queue of a queue region, ready for the allocator. Panics for another kind.
    pub fn queue(&self) -> crate::queue::Queue<'_> {
        self.mapping.queue()
    }

    /// Capacity, bitmap and summaries, ready for the allocator. Panics for another kind.
    #[inline]
    pub fn bits(&self, max: u64) -> crate::Bits<'_> {
        self.mapping.bits(max, self.me)
    }

    /// How many 32-bit blocks [`Region::copy_blocks`] writes: enough to cover `size` bytes of
    /// bitmap (none for a queue region, which has no bitmap).
    pub fn block_count(&self) -> usize {
        match self.kind() {
            Kind::Bitmap => self.mapping.header.size.div_ceil(4) as usize,
            Kind::Queue => 0,
        }
    }

    /// Copies the bitmap as 32-bit blocks (Go's `Memory.Blocks()`): number `n` is bit `n % 32` of
    /// block `n / 32`. A snapshot: each word is read atomically, the whole is not.
    pub fn copy_blocks(&self, out: &mut [u32]) {
        for (i, block) in out.iter_mut().take(self.block_count()).enumerate() {
            let word = self.words()[i / 2].load(Ordering::Relaxed);
            *block = (word >> (32 * (i % 2))) as u32;
        }
    }

    /// The bitmap as 32-bit blocks, copied. See [`Region::copy_blocks`].
    pub fn blocks(&self) -> Vec<u32> {
        let mut out = vec![0; self.block_count()];
        self.copy_blocks(&mut out);
        out
    }
}

/// Removes the region `name` (in `directory`, or POSIX shared memory). Returns whether it existed.
/// Processes that have it mapped keep working on their mapping; the next [`Region::open`] creates a
/// fresh, empty region.
///
/// Only a numballoc region is removed: a finished one, one cut short, or one whose creator
/// stopped before finishing it. Anything else under the name (a foreign file, a FIFO, a
/// directory, a symbolic link) is `IncompatibleRegion` and left where it is.
pub fn destroy(name: &str, directory: Option<&Path>) -> Result<bool> {
    let location = Location::new(name, directory)?;
    match location.open(libc::O_RDONLY, 0) {
        Ok(file) => check_removable(&file, &location, name)?,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(false),
        Err(e) if e.errno() == Some(libc::ELOOP) => {
            return Err(incompatible(name, "it is a symbolic link"))
        }
        // What cannot be looked at (EACCES, a socket's ENXIO) cannot be told a region: kept.
        Err(e) => return Err(e),
    }
    match location.unlink() {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::os(location.unlink_syscall(), location.shown(), e)),
    }
}

/// `IncompatibleRegion` unless the object is a numballoc region, finished, cut short or
/// unfinished: what `destroy` may remove.
fn check_removable(file: &File, location: &Location, name: &str) -> Result<()> {
    let st = fstat(file, location)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(incompatible(name, "not a regular file"));
    }
    let mut magic = [0u8; 8];
    let read = file.read_at(&mut magic, 0).unwrap_or(0);
    if read == 8 && magic == crate::header::MAGIC {
        return Ok(());
    }
    check_unfinished(file, location, name)
}

fn open_or_create(location: &Location, options: &OpenOptions) -> Result<(File, bool)> {
    loop {
        if options.create {
            match location.open(libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, options.mode) {
                Ok(file) => {
                    // The umask filtered the mode given to open; set exactly what was asked.
                    // SAFETY: a valid descriptor.
                    if unsafe { libc::fchmod(file.as_raw_fd(), options.mode as libc::mode_t) } != 0
                    {
                        return Err(Error::last_os("fchmod", location.shown()));
                    }
                    return Ok((file, true));
                }
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        match location.open(libc::O_RDWR, 0) {
            Ok(file) => return Ok((file, false)),
            // Destroyed between our two opens: try to create it again.
            Err(e) if options.create && e.errno() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `NotPrivate` unless the object belongs to this process's effective user and grants nothing to
/// group or others. Checked on the open descriptor, so what is checked is what is used.
fn check_private(file: &File, location: &Location, name: &str) -> Result<()> {
    let st = fstat(file, location)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mode = st.st_mode & 0o777;
    // One link only: a hard link planted under the name to a file of ours is not our region.
    if st.st_uid != me || mode & 0o077 != 0 || st.st_nlink != 1 {
        return Err(Error::NotPrivate {
            name: name.to_owned(),
            path: location.shown().to_owned(),
            owner: st.st_uid,
            mode,
        });
    }
    Ok(())
}

fn fstat(file: &File, location: &Location) -> Result<libc::stat> {
    // SAFETY: a valid descriptor and a zeroed out-parameter of the right type.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(file.as_raw_fd(), &mut st) != 0 {
            return Err(Error::last_os("fstat", location.shown()));
        }
        Ok(st)
    }
}

/// An exclusive `flock` on a region object, released on drop.
///
/// Released explicitly because closing the descriptor is not enough: the lock belongs to the open
/// file description, which every mapping made from it keeps alive until it is unmapped. A process
/// that dies releases it anyway, since its mappings and descriptors go with it.
struct ExclusiveLock<'a>(&'a File);

impl<'a> ExclusiveLock<'a> {
    fn take(file: &'a File, location: &Location) -> Result<ExclusiveLock<'a>> {
        loop {
            // SAFETY: a valid descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(ExclusiveLock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::os("flock", location.shown(), e));
            }
        }
    }
}

impl Drop for ExclusiveLock<'_> {
    fn drop(&mut self) {
        // SAFETY: a valid descriptor; unlocking cannot fail in a way we could act on.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn map(file: &File, len: u64, location: &Location, access: MapAccess) -> Result<MmapRaw> {
    let len = usize::try_from(len).map_err(|_| {
        Error::os(
            "mmap",
            location.shown(),
            io::Error::from_raw_os_error(libc::ENOMEM),
        )
    })?;
    let mut options = MmapOptions::new();
    options.len(len);
    match access {
        MapAccess::ReadWrite => options.map_raw(file),
        MapAccess::ReadOnly => options.map_raw_read_only(file),
    }
    .map_err(|e| Error::os("mmap", location.shown(), e))
}

/// A region whose magic number is still zero after its creation lock was free: its creator died
/// before finishing it. Opening it with a size completes it.
pub(crate) fn unfinished(name: &str) -> Error {
    incompatible(
        name,
        "its creator stopped before finishing it (open it with a size to complete it, or destroy it)",
    )
}

fn incompatible(name: &str, reason: impl Into<String>) -> Error {
    Error::IncompatibleRegion {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// What a region is created as, when the opener may create it.
#[derive(Clone, Copy)]
enum Shape {
    Bitmap { size: u64 },
    Queue { capacity: u64 },
}

/// What an opener asks of an existing region: `None` accepts whatever it has.
struct Expect {
    kind: Option<Kind>,
    size: Option<u64>,
    capacity: Option<u64>,
    tag: Option<u64>,
}

/// Maps an initialised region, or returns `None` if it is not initialised yet (magic still zero).
fn attach(file: &File, location: &Location, name: &str, expect: &Expect) -> Result<Option<Region>> {
    let Some((map, header)) = map_initialised(file, location, name, MapAccess::ReadWrite)? else {
        return Ok(None);
    };
    if let Some(requested) = expect.kind.filter(|&kind| kind != header.kind) {
        return Err(Error::KindMismatch {
            name: name.to_owned(),
            existing: header.kind,
            requested,
        });
    }
    if let Some(requested) = expect.size.filter(|&size| size != header.size) {
        return Err(Error::SizeMismatch {
            name: name.to_owned(),
            existing: header.size,
            requested,
        });
    }
    if let Some(requested) = expect.capacity.filter(|&c| c != header.capacity) {
        return Err(Error::CapacityMismatch {
            name: name.to_owned(),
            existing: header.capacity,
            requested,
        });
    }
    if let Some(requested) = expect.tag.filter(|&tag| tag != header.tag) {
        return Err(Error::TagMismatch {
            name: name.to_owned(),
            existing: header.tag,
            requested,
        });
    }
    // The region asked for: reserve its holes, if any, before anything touches them.
    if unreserved(file, &fstat(file, location)?, header.region_len()) {
        fill_holes(file, header.region_len())
            .map_err(|e| Error::os("fallocate", location.shown(), e))?;
    }
    let file = file
        .try_clone()
        .map_err(|e| Error::os("dup", location.shown(), e))?;
    Ok(Some(Region::new(map, file, name, header)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapAccess {
    ReadOnly,
    ReadWrite,
}

/// Maps a region whose header is complete and valid, or returns `None` if its magic number is
/// still zero (being created, or its creator died first).
pub(crate) fn map_initialised(
    file: &File,
    location: &Location,
    name: &str,
    access: MapAccess,
) -> Result<Option<(MmapRaw, Header)>> {
    let st = fstat(file, location)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(incompatible(name, "not a regular file"));
    }
    let len = st.st_size as u64;
    // The magic bytes are read, not mapped, first: a read of a hole costs no storage, where the
    // first touch of a mapped hole on tmpfs takes a page, and on a full one dies of SIGBUS.
    let mut bytes = [0u8; HEADER_LEN];
    let known = len.min(HEADER_LEN as u64) as usize;
    file.read_exact_at(&mut bytes[..known], 0)
        .map_err(|e| Error::os("read", location.shown(), e))?;
    let head = &bytes[..8.min(known)];
    if len < HEADER_LEN as u64 {
        // Too short to hold a header: unfinished if the magic bytes it has are zero, else foreign.
        return if head.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(incompatible(
                name,
                format!("{len} bytes long, shorter than the {HEADER_LEN}-byte header"),
            ))
        };
    }
    if head == [0; 8] {
        return Ok(None);
    }
    if head != crate::header::MAGIC {
        return Err(incompatible(name, "no numballoc magic number at offset 0"));
    }
    // Storage with holes in the region (a sparse copy, or a file made to look like a region)
    // would get its pages on first touch, reads included. A reader does not read such a region
    // at all; an opener reserves the holes once it knows the region is the one it asked for
    // (`attach`), before anything but the header's page is touched. Judged from the header as
    // read here; one that does not parse (torn by a creator on a weakly ordered machine, or
    // foreign) is left to the checks below, which read only its first page.
    if access == MapAccess::ReadOnly {
        if let Ok(header) = Header::parse(&bytes) {
            let region_len = header.region_len();
            if region_len <= len && unreserved(file, &st, region_len) {
                return Err(incompatible(
                    name,
                    "its storage is not all reserved (a sparse copy?), and reading it could fill the filesystem; opening it for use reserves it",
                ));
            }
        }
    }
    let map = map(file, len, location, access)?;
    // SAFETY: the mapping is page aligned and at least HEADER_LEN bytes long.
    let magic = unsafe { &*(map.as_ptr() as *const AtomicU64) };
    // Acquire pairs with the initialiser's Release store of the magic: once it is visible, so is
    // every header field and the zeroed bitmap written before it.
    let found = magic.load(Ordering::Acquire);
    if found == 0 {
        return Ok(None);
    }
    if found != MAGIC_WORD {
        return Err(incompatible(name, "no numballoc magic number at offset 0"));
    }
    let mut bytes = [0u8; HEADER_LEN];
    // SAFETY: in bounds; the header is immutable once the magic is published.
    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), bytes.as_mut_ptr(), HEADER_LEN) };
    let header = Header::parse(&bytes).map_err(|reason| incompatible(name, reason))?;
    if len < header.region_len() {
        return Err(incompatible(
            name,
            format!(
                "{len} bytes long, shorter than the {} bytes its header says",
                header.region_len()
            ),
        ));
    }
    Ok(Some((map, header)))
}

/// Whether `file` lives on tmpfs (where `/dev/shm` is) and may have holes in its first `len`
/// bytes. There a read of a mapped hole allocates a page, so on a full filesystem reading it is
/// a `SIGBUS`. Elsewhere a read of a hole maps zeros and allocates nothing (and filesystems that
/// compress count fewer blocks than they hold): nothing is judged there.
#[cfg(target_os = "linux")]
fn unreserved(file: &File, st: &libc::stat, len: u64) -> bool {
    // As `linux/magic.h` has it.
    const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
    // SAFETY: a valid descriptor and a zeroed out-parameter.
    let tmpfs = unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::fstatfs(file.as_raw_fd(), &mut fs) == 0 && fs.f_type as libc::c_long == TMPFS_MAGIC
    };
    // tmpfs counts every page it has allocated, reserved or written: blocks for the whole file
    // leave no hole anywhere.
    if !tmpfs || (st.st_blocks as u64).saturating_mul(512) >= st.st_size as u64 {
        return false;
    }
    // Else the region's part decides. SEEK_HOLE never misses a hole, though it may count pages
    // reserved and never written (so a reader of a region whose file grew past it may be
    // refused until an opener reserves the region again). Blocks allocated past the end of the
    // file (`fallocate --keep-size`) also pass the test above: such a planted file can still
    // make a reader on a full tmpfs die of SIGBUS.
    // SAFETY: a valid descriptor. Moving its offset is harmless: every read and write here
    // gives its own offset.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
    hole < 0 || (hole as u64) < len
}

#[cfg(not(target_os = "linux"))]
fn unreserved(_file: &File, _st: &libc::stat, _len: u64) -> bool {
    false
}

/// Allocates the holes among the first `len` bytes of a region others may be using. Only the
/// system call: where it is missing, glibc's `posix_fallocate` writes a zero byte into each
/// block it reads as zero, which would clear a bit another process sets in between. There,
/// and on systems without it, the holes stay (as they did before this check).
#[cfg(target_os = "linux")]
fn fill_holes(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: a valid descriptor; mode 0 allocates and never changes data already there.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(()),
            _ => return Err(error),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn fill_holes(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

/// The next extent of data in `file` at or after `at` and before `len`, as `start..end`;
/// `None` if only holes remain. Where the filesystem cannot tell, all of it is data.
fn data_extent(file: &File, at: u64, len: u64) -> Option<std::ops::Range<u64>> {
    if at >= len {
        return None;
    }
    let fd = file.as_raw_fd();
    let offset = |x: u64| libc::off_t::try_from(x).unwrap_or(libc::off_t::MAX);
    // SAFETY: a valid descriptor. Moving its offset is harmless: every read and write here
    // gives its own offset.
    let start = unsafe { libc::lseek(fd, offset(at), libc::SEEK_DATA) };
    if start < 0 {
        let only_holes = io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
        return (!only_holes).then_some(at..len);
    }
    let start = (start as u64).max(at);
    if start >= len {
        return None;
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, offset(start), libc::SEEK_HOLE) };
    let end = if end > start as libc::off_t {
        (end as u64).min(len)
    } else {
        len
    };
    Some(start..end)
}

/// Checks, under the exclusive lock, that an object whose magic number is zero is an unfinished
/// region and nothing else: its header bytes all zero or a valid header's (a creator that stopped
/// after writing them), and every byte after the header zero (nobody writes there before the
/// magic is published). Reads all of the object that is not a hole, which happens only when one is
/// repaired or removed.
fn check_unfinished(file: &File, location: &Location, name: &str) -> Result<()> {
    let len = fstat(file, location)?.st_size as u64;
    let header_end = len.min(HEADER_LEN as u64) as usize;
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head[..header_end], 0)
        .map_err(|e| Error::os("read", location.shown(), e))?;
    let zero = head.iter().all(|&b| b == 0);
    let mut with_magic = head;
    with_magic[..8].copy_from_slice(&crate::header::MAGIC);
    let a_header = head[..8].iter().all(|&b| b == 0)
        && header_end == HEADER_LEN
        && Header::parse(&with_magic).is_ok();
    if !zero && !a_header {
        return Err(foreign(name));
    }
    // Holes read as zeros, so only the data is read: an object made huge and sparse would
    // otherwise take minutes, with the creation lock held and every other opener waiting.
    let mut chunk = vec![0u8; (64 * 1024).min(len.max(1) as usize)];
    let mut at = HEADER_LEN as u64;
    while let Some(extent) = data_extent(file, at, len) {
        let mut pos = extent.start;
        while pos < extent.end {
            let want = chunk.len().min((extent.end - pos) as usize);
            file.read_exact_at(&mut chunk[..want], pos)
                .map_err(|e| Error::os("read", location.shown(), e))?;
            if chunk[..want].iter().any(|&b| b != 0) {
                return Err(foreign(name));
            }
            pos += want as u64;
        }
        at = extent.end;
    }
    Ok(())
}

fn foreign(name: &str) -> Error {
    incompatible(
        name,
        "it is not a numballoc region (no magic number, and not a region whose creator stopped before finishing it); it was left unchanged",
    )
}

/// Initialises a region under the exclusive lock: reserve zeroed storage, write the header, and
/// publish it by storing the magic number last. Never shrinks the object: others may have
/// mapped it with the length they saw, and would fault on the pages cut off.
fn initialise(
    file: &File,
    location: &Location,
    name: &str,
    header: Header,
    created: bool,
) -> Result<Region> {
    let fd = file.as_raw_fd();
    let len = header.region_len();
    if !created {
        check_unfinished(file, location, name)?;
    }
    if let Err(e) = reserve(fd, len) {
        // A region this call created and could not finish is removed; one it was repairing stays
        // unfinished (it may be mapped), for the next opener to try again.
        if created {
            let _ = location.unlink();
        }
        return Err(Error::os(RESERVE_SYSCALL, location.shown(), e));
    }
    // One write: a creator killed now leaves either no header or all of it, which is how an
    // unfinished region is told from a foreign file (`check_unfinished`).
    let bytes = header.encode();
    file.write_all_at(&bytes[8..], 8)
        .map_err(|e| Error::os("write", location.shown(), e))?;
    let map = map(file, len, location, MapAccess::ReadWrite)?;
    // SAFETY: the mapping is `len >= HEADER_LEN` bytes, page aligned; nobody reads the fields
    // before the magic is published, and every other writer would need the lock we hold.
    unsafe {
        let magic = &*(map.as_ptr() as *const AtomicU64);
        // Release: publishes the header written above (the write returned before this store)
        // and the zeroed sections to every Acquire load.
        magic.store(MAGIC_WORD, Ordering::Release);
    }
    let file = file
        .try_clone()
        .map_err(|e| Error::os("dup", location.shown(), e))?;
    Ok(Region::new(map, file, name, header))
}

#[cfg(target_os = "linux")]
const RESERVE_SYSCALL: &str = "posix_fallocate";
#[cfg(not(target_os = "linux"))]
const RESERVE_SYSCALL: &str = "ftruncate";

/// Sets the object's length and, where the platform allows, reserves its storage now, so that a
/// full `/dev/shm` is an `ENOSPC` error here rather than a `SIGBUS` on first touch.
#[cfg(target_os = "linux")]
fn reserve(fd: libc::c_int, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: a valid descriptor; posix_fallocate returns the error instead of setting errno.
        match unsafe { libc::posix_fallocate(fd, 0, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            err => return Err(io::Error::from_raw_os_error(err)),
        }
    }
}

/// Extends the object to `len` bytes if it is shorter. Without `posix_fallocate` storage is not
/// reserved up front.
#[cfg(not(target_os = "linux"))]
fn reserve(fd: libc::c_int, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: a valid descriptor and a zeroed out-parameter.
    let current = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st.st_size
    };
    // SAFETY: a valid descriptor.
    if current >= len || unsafe { libc::ftruncate(fd, len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
