//! The one error type of the core, with the stable codes the Node binding exposes as `error.code`.

use std::fmt;
use std::io;

/// Everything that can go wrong in the core. Each variant has a stable [`Error::code`].
#[derive(Debug)]
pub enum Error {
    /// Every number below the allocator's `max` is in use.
    NoFreeNumber,
    /// `free(n)` of a number that is not allocated (a double free).
    NotAllocated(u64),
    /// A number, size or capacity outside its allowed range.
    OutOfRange(String),
    /// A region name that is empty, too long, `.`/`..`, or has characters other than
    /// letters, digits, `.`, `_` and `-`.
    InvalidName(String),
    /// The region exists with another size than the one asked for.
    SizeMismatch {
        name: String,
        existing: u64,
        requested: u64,
    },
    /// The region exists with another capacity than the one asked for.
    CapacityMismatch {
        name: String,
        existing: u64,
        requested: u64,
    },
    /// A region opened as private belongs to another user or grants permissions to others.
    NotPrivate {
        name: String,
        path: String,
        owner: u32,
        mode: u32,
    },
    /// Every holder slot of the region is taken by a live holder.
    TooManyHolders { name: String, slots: usize },
    /// The region exists with another application tag than the one asked for.
    TagMismatch {
        name: String,
        existing: u64,
        requested: u64,
    },
    /// The region holds another kind of allocator than the one asked for (a bitmap opened as a
    /// queue, or the reverse).
    KindMismatch {
        name: String,
        existing: crate::header::Kind,
        requested: crate::header::Kind,
    },
    /// The object is not a numballoc region of this format version, or is corrupt or truncated.
    IncompatibleRegion { name: String, reason: String },
    /// An operating-system call failed.
    Os {
        syscall: &'static str,
        path: String,
        source: io::Error,
    },
}

impl Error {
    /// The stable code: `ERR_*` for numballoc's own errors, the errno name (`ENOENT`, `EACCES`,
    /// `ENOSPC`, ...) for operating-system failures.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoFreeNumber => "ERR_NO_FREE_NUMBER",
            Error::NotAllocated(_) => "ERR_NOT_ALLOCATED",
            Error::OutOfRange(_) => "ERR_OUT_OF_RANGE",
            Error::InvalidName(_) => "ERR_INVALID_NAME",
            Error::SizeMismatch { .. } | Error::CapacityMismatch { .. } => "ERR_SIZE_MISMATCH",
            Error::TooManyHolders { .. } => "ERR_TOO_MANY_HOLDERS",
            Error::NotPrivate { .. } => "ERR_REGION_NOT_PRIVATE",
            Error::TagMismatch { .. } => "ERR_TAG_MISMATCH",
            Error::KindMismatch { .. } => "ERR_KIND_MISMATCH",
            Error::IncompatibleRegion { .. } => "ERR_INCOMPATIBLE_REGION",
            Error::Os { source, .. } => source.raw_os_error().map_or("UNKNOWN", errno_name),
        }
    }

    /// For operating-system failures: the failing call (`shm_open`, `posix_fallocate`, ...).
    pub fn syscall(&self) -> Option<&'static str> {
        match self {
            Error::Os { syscall, .. } => Some(syscall),
            _ => None,
        }
    }

    /// For operating-system failures: the raw `errno`.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// For operating-system failures: the path of the object the call was about.
    pub fn path(&self) -> Option<&str> {
        match self {
            Error::Os { path, .. } => Some(path),
            _ => None,
        }
    }

    /// An operating-system failure of `syscall` about `path`: also for a binding's own calls.
    pub fn os(syscall: &'static str, path: &str, source: io::Error) -> Error {
        Error::Os {
            syscall,
            path: path.to_owned(),
            source,
        }
    }

    // Used by the region code, which is not built under loom.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn last_os(syscall: &'static str, path: &str) -> Error {
        Error::os(syscall, path, io::Error::last_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The Go original's message for ErrNoFreeNumber, kept word for word.
            Error::NoFreeNumber => f.write_str("could not allocate a free number"),
            Error::NotAllocated(n) => write!(f, "number {n} is not allocated"),
            Error::OutOfRange(msg) | Error::InvalidName(msg) => f.write_str(msg),
            Error::SizeMismatch {
                name,
                existing,
                requested,
            } => write!(
                f,
                "region '{name}' exists with size {existing} bytes, not the {requested} bytes requested"
            ),
            Error::CapacityMismatch {
                name,
                existing,
                requested,
            } => write!(
                f,
                "region '{name}' exists with capacity {existing}, not the {requested} requested"
            ),
            Error::NotPrivate {
                name,
                path,
                owner,
                mode,
            } => {
                // SAFETY: geteuid has no preconditions.
                let me = unsafe { libc::geteuid() };
                let problem = if *owner != me {
                    format!("belongs to uid {owner}, not to this user (uid {me})")
                } else if mode & 0o077 != 0 {
                    format!("has mode {mode:#o}, which lets other users use it")
                } else {
                    "has another name (a hard link) besides this one".to_owned()
                };
                let file = if path.starts_with('/') && !path[1..].contains('/') {
                    format!("/dev/shm{path}")
                } else {
                    path.clone()
                };
                write!(
                    f,
                    "region '{name}' ({path}) {problem}: refusing it, as another user could have made it, fill it or watch it; remove the file ({file}) if it is not yours"
                )
            }
            Error::TooManyHolders { name, slots } => write!(
                f,
                "region '{name}' has no free holder slot: all {slots} are held by live holders"
            ),
            Error::TagMismatch {
                name,
                existing,
                requested,
            } => write!(
                f,
                "region '{name}' exists with tag {existing:#x}, not the {requested:#x} requested"
            ),
            Error::KindMismatch {
                name,
                existing,
                requested,
            } => write!(
                f,
                "region '{name}' holds a {}, not the {} requested",
                existing.name(),
                requested.name()
            ),
            Error::IncompatibleRegion { name, reason } => {
                write!(f, "'{name}' is not a compatible numballoc region: {reason}")
            }
            Error::Os {
                syscall,
                path,
                source,
            } => {
                // Node's shape: "ENOENT: no such file or directory, open '/dev/shm/x'".
                let mut text = source.to_string();
                if let Some(at) = text.find(" (os error") {
                    text.truncate(at);
                }
                write!(f, "{}: {}, {syscall} '{path}'", self.code(), text.to_lowercase())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The symbolic name of an errno value, as Node's `util.getSystemErrorName` gives it.
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENXIO => "ENXIO",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EDQUOT => "EDQUOT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        _ => "UNKNOWN",
    }
}

/// The result type of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
