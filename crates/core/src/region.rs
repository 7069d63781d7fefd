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
//! A half-written region is recognised by its magic number still being zero; nothing else that was
//! written before it is trusted, and it is rewritten from scratch.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::header::{Header, HEADER_LEN, MAGIC_WORD, MAX_SIZE};

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
    /// Permission bits of a region this call creates (default `0o600`). Applied exactly, not
    /// filtered through the process umask, so `0o666` really shares a region between users.
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
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            mode: 0o600,
            directory: None,
            holders: true,
            tag: None,
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
        let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
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

/// A mapped region: the header and the bitmap words every process shares.
///
/// The mapping stays valid until the `Region` is dropped, even if the region is destroyed
/// (unlinked) meanwhile.
pub struct Region {
    map: MmapRaw,
    name: String,
    header: Header,
    /// The sections' (offset, words), computed once: `bits()` is on every allocation's path.
    /// Bitmap, summary level 1, summary level 2, holder records (0 words without).
    sections: [(usize, usize); 4],
    /// This process as a holder, read once.
    me: crate::Holder,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("size", &self.header.size)
            .finish()
    }
}

impl Region {
    /// Creates the region `name` with a bitmap of `size` bytes (`size * 8` numbers), or opens it
    /// if it exists. See the module documentation for the creation protocol.
    ///
    /// Errors: `InvalidName`, `OutOfRange` (size), `SizeMismatch` (exists with another size),
    /// `IncompatibleRegion` (not a numballoc region of this version, corrupt or truncated), and
    /// `Os` (`ENOENT` with `create: false`, `EACCES`, `ENOSPC` when its storage cannot be
    /// reserved, ...).
    pub fn open(name: &str, size: u64, options: &OpenOptions) -> Result<Region> {
        validate_size(size)?;
        Region::open_with(name, Some(size), options)
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

    fn open_with(name: &str, size: Option<u64>, options: &OpenOptions) -> Result<Region> {
        let location = Location::new(name, options.directory.as_deref())?;
        let expect = Expect {
            size,
            tag: options.tag,
        };
        // Each pass either returns or saw the object destroyed under it; give up after many.
        for _ in 0..1000 {
            let (file, created) = open_or_create(&location, options)?;
            if !created {
                if let Some(region) = attach(&file, &location, name, &expect)? {
                    return Ok(region);
                }
            }
            let _lock = ExclusiveLock::take(&file, &location)?;
            if fstat(&file, &location)?.st_nlink == 0 {
                continue; // destroyed while we waited for the lock: open the new one
            }
            if let Some(region) = attach(&file, &location, name, &expect)? {
                return Ok(region);
            }
            let Some(size) = size else {
                return Err(unfinished(name));
            };
            let header = Header::new(size, options.holders).with_tag(options.tag.unwrap_or(0));
            return initialise(&file, &location, name, header, created);
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

    /// The bitmap size in bytes (Go's `Memory.Size()`).
    pub fn size(&self) -> u64 {
        self.header.size
    }

    /// How many numbers the bitmap holds: `size * 8`.
    pub fn capacity(&self) -> u64 {
        self.header.capacity()
    }

    /// The application tag written when the region was created (0 if none).
    pub fn tag(&self) -> u64 {
        self.header.tag
    }

    fn new(map: MmapRaw, name: &str, header: Header) -> Region {
        Region {
            map,
            name: name.to_owned(),
            header,
            sections: header.sections(),
            me: crate::Holder::current(),
        }
    }

    /// The bitmap as 64-bit words: number `n` is bit `n % 64` of word `n / 64`.
    pub fn words(&self) -> &[AtomicU64] {
        self.section(0)
    }

    /// Whether the region records who holds each number.
    pub fn tracks_holders(&self) -> bool {
        self.header.holders
    }

    /// The holder records, one per number (see [`crate::Holder`]), if the region keeps them.
    pub fn holders(&self) -> Option<&[AtomicU64]> {
        self.header.holders.then(|| self.section(3))
    }

    /// The shared cursor of the cyclic policy (header offset 120).
    pub fn cursor(&self) -> &AtomicU64 {
        // SAFETY: inside the header, 8-byte aligned, accessed only atomically.
        unsafe { &*(self.map.as_ptr().add(crate::header::CURSOR_OFFSET) as *const AtomicU64) }
    }

    /// Capacity, bitmap and summaries, ready for the allocator.
    #[inline]
    pub fn bits(&self, max: u64) -> crate::Bits<'_> {
        crate::Bits::with_holder(
            self.section(0),
            self.section(1),
            self.section(2),
            self.holders(),
            self.me,
            self.capacity(),
            max,
        )
    }

    #[inline]
    fn section(&self, index: usize) -> &[AtomicU64] {
        let (offset, words) = self.sections[index];
        // SAFETY: the mapping is at least `region_len` bytes (checked when attaching) and page
        // aligned; every section lies inside it at a multiple of 8 (FORMAT.md), so it is 8-byte
        // aligned; it lives as long as `self`; every access to it is atomic.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(offset) as *const AtomicU64, words)
        }
    }

    /// How many 32-bit blocks [`Region::copy_blocks`] writes: enough to cover `size` bytes.
    pub fn block_count(&self) -> usize {
        self.header.size.div_ceil(4) as usize
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
pub fn destroy(name: &str, directory: Option<&Path>) -> Result<bool> {
    let location = Location::new(name, directory)?;
    match location.unlink() {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::os(location.unlink_syscall(), location.shown(), e)),
    }
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

/// What an opener asks of an existing region: `None` accepts whatever it has.
struct Expect {
    size: Option<u64>,
    tag: Option<u64>,
}

/// Maps an initialised region, or returns `None` if it is not initialised yet (magic still zero).
fn attach(file: &File, location: &Location, name: &str, expect: &Expect) -> Result<Option<Region>> {
    let Some((map, header)) = map_initialised(file, location, name, MapAccess::ReadWrite)? else {
        return Ok(None);
    };
    if let Some(requested) = expect.size.filter(|&size| size != header.size) {
        return Err(Error::SizeMismatch {
            name: name.to_owned(),
            existing: header.size,
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
    Ok(Some(Region::new(map, name, header)))
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
    let len = fstat(file, location)?.st_size as u64;
    if len < HEADER_LEN as u64 {
        // Too short to hold a header: unfinished if the magic bytes it has are zero, else foreign.
        let mut head = vec![0u8; len.min(8) as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::os("read", location.shown(), e))?;
        return if head.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(incompatible(
                name,
                format!("{len} bytes long, shorter than the {HEADER_LEN}-byte header"),
            ))
        };
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

/// Initialises a region under the exclusive lock: reserve zeroed storage, write the header, and
/// publish it by storing the magic number last.
fn initialise(
    file: &File,
    location: &Location,
    name: &str,
    header: Header,
    created: bool,
) -> Result<Region> {
    let fd = file.as_raw_fd();
    let len = header.region_len();
    // Drop whatever a creator that died left behind, so the bitmap starts all zero.
    // SAFETY: a valid descriptor.
    if unsafe { libc::ftruncate(fd, 0) } != 0 {
        return Err(Error::last_os("ftruncate", location.shown()));
    }
    if let Err(e) = reserve(fd, len) {
        // Leave no region behind that a later opener would try to use.
        // SAFETY: a valid descriptor.
        unsafe { libc::ftruncate(fd, 0) };
        if created {
            let _ = location.unlink();
        }
        return Err(Error::os(RESERVE_SYSCALL, location.shown(), e));
    }
    let map = map(file, len, location, MapAccess::ReadWrite)?;
    let bytes = header.encode();
    // SAFETY: the mapping is `len >= HEADER_LEN` bytes; nobody reads the fields before the
    // magic is published below, and every other writer would need the lock we hold.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr().add(8),
            map.as_mut_ptr().add(8),
            HEADER_LEN - 8,
        );
        let magic = &*(map.as_ptr() as *const AtomicU64);
        // Release: publishes the fields above (and the zeroed bitmap) to every Acquire load.
        magic.store(MAGIC_WORD, Ordering::Release);
    }
    Ok(Region::new(map, name, header))
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

/// Sets the object's length. Without `posix_fallocate` storage is not reserved up front.
#[cfg(not(target_os = "linux"))]
fn reserve(fd: libc::c_int, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::ftruncate(fd, len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
