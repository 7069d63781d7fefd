//! Read-only views of regions, for tools: which regions exist, and what one holds.
//!
//! Nothing here writes to a region or needs write permission: a region is mapped read-only and
//! read with relaxed atomic loads. A report is a snapshot: each word is read atomically, the
//! whole is not, so counts taken while processes allocate are approximate by those allocations.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::header::{Header, Kind, MAGIC};
use crate::holder::{probe, record_slot, Liveness};
use crate::region::{map_initialised, unfinished, validate_name, Location, MapAccess, Mapping};
use crate::Holder;

/// What one region holds, as [`inspect`] found it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The region's name.
    pub name: String,
    /// Where it lives: `/name` for POSIX shared memory, else the file's path.
    pub path: String,
    /// Its header: size, capacity, whether it keeps holder records, its tag.
    pub header: Header,
    /// Numbers allocated (bits set).
    pub in_use: u64,
    /// Each holder named by a holder record, with how many numbers it holds, most first.
    /// Empty for a region without holder records.
    pub holders: Vec<HolderUsage>,
    /// Numbers allocated in each run of `cell_size` consecutive numbers, from 0 up: a coarse
    /// picture of where the allocated numbers are. The last cell may be shorter.
    pub cells: Vec<u64>,
    /// How many numbers each cell covers.
    pub cell_size: u64,
    /// What waits in a queue region (`None` for a bitmap).
    pub queue: Option<QueueReport>,
}

/// What waits in a queue region, as [`inspect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// How many numbers wait.
    pub waiting: u64,
    /// The first of them, the next to be handed out first (at most [`QUEUE_SHOWN`]).
    pub next: Vec<u64>,
    /// How many of them are stranded: queued under a position the head has passed (the free
    /// that queued them stopped or stalled mid-call). Allocators take them directly.
    pub stranded: u64,
}

/// How many waiting numbers a [`QueueReport`] lists.
pub const QUEUE_SHOWN: usize = 16;

/// One holder named by holder records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderUsage {
    /// The holder: its slot, generation, and the pid that took the slot.
    pub holder: Holder,
    /// Whether it is still running: the kernel holds its slot's lock, or that could not be
    /// checked (a dead holder's numbers are what `reclaim` frees).
    pub alive: bool,
    /// How many numbers it holds.
    pub count: u64,
}

impl Report {
    /// Numbers held by processes that are no longer running.
    pub fn held_by_dead(&self) -> u64 {
        self.holders
            .iter()
            .filter(|h| !h.alive)
            .map(|h| h.count)
            .sum()
    }
}

/// Reads the region `name` (in `directory`, or POSIX shared memory) without changing it, and
/// summarises its occupancy in about `cells` cells (at least 1, at most one per number).
///
/// Errors: `InvalidName`; `Os` (`ENOENT`, `EACCES`, ...); `IncompatibleRegion` for an object
/// that is not a finished numballoc region of this format version.
pub fn inspect(name: &str, directory: Option<&Path>, cells: usize) -> Result<Report> {
    let location = Location::new(name, directory)?;
    let file = location.open(libc::O_RDONLY, 0)?;
    // Without the creation lock a region being created looks the same as an abandoned one;
    // a read-only look does not wait for a creator.
    let Some((map, header)) = map_initialised(&file, &location, name, MapAccess::ReadOnly)? else {
        return Err(unfinished(name));
    };
    let mapping = Mapping::new(map, header, file);
    let capacity = header.capacity;
    let cell_size = capacity.div_ceil(cells.max(1) as u64).max(1);
    let mut counts = vec![0u64; capacity.div_ceil(cell_size) as usize];
    let mut in_use = 0;
    let mut per_holder: HashMap<u32, u64> = HashMap::new();
    let mut queue = None;
    match header.kind {
        Kind::Bitmap => {
            in_use = count_bits(&mapping, capacity, cell_size, &mut counts);
            for record in mapping
                .records()
                .into_iter()
                .flatten()
                .take(capacity as usize)
            {
                let value = record.load(Ordering::Relaxed);
                if value != 0 {
                    *per_holder.entry(value).or_default() += 1;
                }
            }
        }
        Kind::Queue => {
            let view = mapping.queue();
            for n in 0..capacity {
                if let Some(record) = view.holder_of(n)? {
                    in_use += 1;
                    counts[(n / cell_size) as usize] += 1;
                    if header.holders {
                        *per_holder.entry(record).or_default() += 1;
                    }
                }
            }
            let snapshot = view.snapshot(QUEUE_SHOWN);
            queue = Some(QueueReport {
                waiting: snapshot.waiting,
                next: snapshot.next,
                stranded: snapshot.stranded,
            });
        }
    }
    let mut holders = Vec::new();
    if header.holders {
        let slots = mapping.slots();
        holders = per_holder
            .into_iter()
            .map(|(value, count)| {
                let slot = record_slot(value);
                let holder = Holder::from_record(value, slots[slot].load(Ordering::Relaxed));
                // Through our own read-only description, which holds no lock: a holder's lock
                // shows. A probe that fails cannot tell, and a holder nobody can tell of lives.
                let alive = probe(mapping.file(), mapping.lock_offset(slot)) != Liveness::Gone;
                HolderUsage {
                    holder,
                    alive,
                    count,
                }
            })
            .collect();
        holders.sort_by_key(|h| {
            (
                std::cmp::Reverse(h.count),
                h.holder.slot,
                h.holder.generation,
            )
        });
    }
    Ok(Report {
        name: name.to_owned(),
        path: location.shown().to_owned(),
        header,
        in_use,
        holders,
        cells: counts,
        cell_size,
        queue,
    })
}

/// Counts a bitmap region's numbers in use, in total and per cell.
fn count_bits(mapping: &Mapping, capacity: u64, cell_size: u64, counts: &mut [u64]) -> u64 {
    let mut in_use = 0;
    let words = mapping.words();
    for (i, word) in words
        .iter()
        .enumerate()
        .take(capacity.div_ceil(64) as usize)
    {
        let mut bits = word.load(Ordering::Relaxed);
        let first = i as u64 * 64;
        if capacity - first < 64 {
            bits &= (1u64 << (capacity - first)) - 1; // bits past the capacity are never numbers
        }
        in_use += u64::from(bits.count_ones());
        if cell_size.is_multiple_of(64) {
            counts[(first / cell_size) as usize] += u64::from(bits.count_ones());
        } else {
            for bit in crate::bits::ones(bits) {
                counts[((first + u64::from(bit)) / cell_size) as usize] += 1;
            }
        }
    }
    in_use
}

/// The names of the numballoc regions in `directory`, or in POSIX shared memory (`/dev/shm`, on
/// Linux only: other systems cannot list it), sorted. A region is an object whose first bytes
/// are numballoc's magic number; objects this process may not read are left out.
pub fn list(directory: Option<&Path>) -> Result<Vec<String>> {
    let dir = match directory {
        Some(dir) => dir,
        None if cfg!(target_os = "linux") => Path::new("/dev/shm"),
        None => {
            return Err(Error::os(
                "opendir",
                "POSIX shared memory",
                std::io::Error::from_raw_os_error(libc::ENOTSUP),
            ))
        }
    };
    // As every call that names a region in a directory says it (the OS would say nothing useful).
    if dir.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::InvalidName(format!(
            "directory {} contains a NUL byte",
            dir.display()
        )));
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::os("opendir", &dir.display().to_string(), e))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| validate_name(name).is_ok() && starts_with_magic(name, directory))
        .collect();
    names.sort();
    Ok(names)
}

fn starts_with_magic(name: &str, directory: Option<&Path>) -> bool {
    let Ok(location) = Location::new(name, directory) else {
        return false;
    };
    // O_NONBLOCK: a FIFO someone left in the directory must not hang the listing.
    let Ok(file) = location.open(libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let mut head = [0u8; 8];
    meta.is_file()
        && std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).is_ok()
        && head == MAGIC
}
