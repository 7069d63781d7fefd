//! The region on real shared memory and real files: creation, validation, destroy, failures.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use numballoc_core::{destroy, Allocator, ConcurrentBitmap, Error, OpenOptions, Region};

mod common;

use common::Scratch;

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// What another program may do to a region in use: cut its file to `len` bytes.
fn cut_short(name: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn creates_opens_and_shares_numbers() {
    let name = Scratch::new("share");
    let a = Arc::new(Region::open(&name.0, 16, &OpenOptions::default()).unwrap());
    let b = Arc::new(Region::open(&name.0, 16, &OpenOptions::default()).unwrap());
    assert_eq!((a.size(), a.capacity()), (16, 128));
    let (x, y) = (ConcurrentBitmap::new(a, 0), ConcurrentBitmap::new(b, 0));
    let mut all: Vec<u64> = (0..64).map(|_| x.allocate().unwrap()).collect();
    all.extend((0..64).map(|_| y.allocate().unwrap()));
    assert!(matches!(x.allocate(), Err(Error::NoFreeNumber)));
    all.sort_unstable();
    assert_eq!(all, (0..128).collect::<Vec<_>>());
    assert_eq!(y.count(), 128);
    x.free(5).unwrap();
    assert!(!y.is_allocated(5).unwrap());
    assert_eq!(y.allocate().unwrap(), 5);
}

#[test]
fn opening_releases_the_creation_lock_while_the_region_stays_mapped() {
    use std::os::unix::io::AsRawFd;
    let name = Scratch::new("lock");
    let _mapped = Region::open(&name.0, 8, &OpenOptions::default()).unwrap();
    // A later opener that finds the object uninitialised takes this lock: it must be free.
    let other = std::fs::File::open(shm_path(&name.0)).unwrap();
    // SAFETY: a valid descriptor.
    let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "the creator still holds the initialisation lock");
}

#[test]
fn go_max_semantics() {
    let name = Scratch::new("max");
    let region = Arc::new(Region::open(&name.0, 4, &OpenOptions::default()).unwrap());
    assert_eq!(ConcurrentBitmap::new(region.clone(), 0).max(), 32);
    assert_eq!(ConcurrentBitmap::new(region.clone(), 10).max(), 10);
    assert_eq!(ConcurrentBitmap::new(region, 1000).max(), 32);
}

#[test]
fn blocks_are_a_copy_in_go_layout() {
    let name = Scratch::new("blocks");
    let region = Arc::new(Region::open(&name.0, 12, &OpenOptions::default()).unwrap());
    let bitmap = ConcurrentBitmap::new(region.clone(), 0);
    while bitmap.try_allocate().is_some() {}
    for n in (0..96).filter(|&n| n != 33 && n != 95) {
        bitmap.free(n).unwrap();
    }
    // Number n is bit n % 32 of block n / 32, as in Go's Blocks().
    assert_eq!(region.blocks(), vec![0, 1 << 1, 1 << 31]);
}

#[test]
fn size_mismatch_names_both_sizes() {
    let name = Scratch::new("mismatch");
    let _a = Region::open(&name.0, 16, &OpenOptions::default()).unwrap();
    let err = Region::open(&name.0, 32, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_SIZE_MISMATCH");
    let text = err.to_string();
    assert!(text.contains("16") && text.contains("32"), "{text}");
}

#[test]
fn create_false_on_a_missing_region_is_enoent() {
    let name = Scratch::new("nocreate");
    let options = OpenOptions {
        create: false,
        ..OpenOptions::default()
    };
    let err = Region::open(&name.0, 8, &options).unwrap_err();
    assert_eq!(err.code(), "ENOENT");
    assert_eq!(err.syscall(), Some("shm_open"));
    assert!(!shm_path(&name.0).exists());
}

#[test]
fn new_regions_have_the_requested_mode() {
    let name = Scratch::new("mode");
    let _r = Region::open(&name.0, 8, &OpenOptions::default()).unwrap();
    let mode = std::fs::metadata(shm_path(&name.0))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let other = Scratch::new("mode");
    let options = OpenOptions {
        mode: 0o644,
        ..OpenOptions::default()
    };
    let _r = Region::open(&other.0, 8, &options).unwrap();
    let mode = std::fs::metadata(shm_path(&other.0))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn garbage_truncated_and_foreign_files_are_incompatible() {
    let dir = std::env::temp_dir().join(format!("numballoc-rs-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = OpenOptions {
        directory: Some(dir.clone()),
        ..OpenOptions::default()
    };
    // Random-looking bytes.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
        .collect();
    std::fs::write(dir.join("garbage"), &garbage).unwrap();
    // A short file with non-zero bytes.
    std::fs::write(dir.join("short"), b"hello").unwrap();
    // A real region cut short.
    let real = Region::open("cut", 1024, &options).unwrap();
    drop(real);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cut"))
        .unwrap();
    file.set_len(100).unwrap();
    // A real region of a future format version.
    drop(Region::open("future", 8, &options).unwrap());
    let mut bytes = std::fs::read(dir.join("future")).unwrap();
    bytes[8] = 99;
    std::fs::write(dir.join("future"), &bytes).unwrap();

    for (name, size) in [("garbage", 8), ("short", 8), ("cut", 1024), ("future", 8)] {
        let before = std::fs::read(dir.join(name)).unwrap();
        let err = Region::open(name, size, &options).unwrap_err();
        assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "{name}: {err}");
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            before,
            "{name} was modified"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_or_zeroed_object_left_by_a_dead_creator_is_completed() {
    let name = Scratch::new("orphan");
    // What a creator killed right after creating (empty) or mid-way (zeroed, no magic) leaves.
    std::fs::write(shm_path(&name.0), b"").unwrap();
    let r = Region::open(&name.0, 8, &OpenOptions::default()).unwrap();
    assert_eq!(r.capacity(), 64);
    drop(r);
    destroy(&name.0, None).unwrap();
    std::fs::write(shm_path(&name.0), vec![0u8; 200]).unwrap();
    let r = Arc::new(Region::open(&name.0, 16, &OpenOptions::default()).unwrap());
    assert_eq!(ConcurrentBitmap::new(r, 0).count(), 0);
}

/// Bytes of `name`'s file that the filesystem has allocated.
fn allocated(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(shm_path(name)).unwrap().blocks() * 512
}

#[test]
fn a_sparse_copy_is_reserved_when_opened_and_never_read_before() {
    let name = Scratch::new("sparse");
    // Without holder records: a copy's holders hold no lock on it, so opening it would reclaim
    // their numbers, and this test looks at the numbers.
    let options = OpenOptions {
        holders: false,
        ..OpenOptions::default()
    };
    let original = Arc::new(Region::open(&name.0, 1 << 20, &options).unwrap());
    let bitmap = ConcurrentBitmap::new(original.clone(), 0);
    let taken: Vec<u64> = (0..100).map(|_| bitmap.allocate().unwrap()).collect();
    let bytes = std::fs::read(shm_path(&name.0)).unwrap();
    let len = bytes.len() as u64;
    drop((bitmap, original));
    // The copy `cp --sparse=always` makes: pages of zeros left as holes.
    let copy = Scratch::new("sparse-copy");
    let file = std::fs::File::create(shm_path(&copy.0)).unwrap();
    file.set_len(len).unwrap();
    for (page, data) in bytes.chunks(4096).enumerate() {
        if data.iter().any(|&b| b != 0) {
            std::os::unix::fs::FileExt::write_all_at(&file, data, page as u64 * 4096).unwrap();
        }
    }
    assert!(allocated(&copy.0) < len / 2, "the copy has holes");

    // Reading it would allocate a page per hole: refused, and nothing allocated.
    let err = numballoc_core::inspect::inspect(&copy.0, None, 0).unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "{err}");
    assert!(err.to_string().contains("not all reserved"), "{err}");
    assert!(allocated(&copy.0) < len / 2);
    // An opener that asked for another region is told so, and reserves nothing.
    let err = Region::open(&copy.0, 1 << 19, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_SIZE_MISMATCH", "{err}");
    assert!(allocated(&copy.0) < len / 2);
    // Opening it for use reserves the holes, as creating it did; then it reads as the original.
    let region = Arc::new(Region::open_existing(&copy.0, &OpenOptions::default()).unwrap());
    assert!(allocated(&copy.0) >= len);
    let bitmap = ConcurrentBitmap::new(region, 0);
    assert!(taken.iter().all(|&n| bitmap.is_allocated(n).unwrap()));
    assert_eq!(bitmap.count(), 100);
    let report = numballoc_core::inspect::inspect(&copy.0, None, 0).unwrap();
    assert_eq!(report.in_use, 100);

    // Data written past the region makes up, in allocated blocks, for the holes inside it: the
    // holes are still found.
    let padded = Scratch::new("sparse-padded");
    let file = std::fs::File::create(shm_path(&padded.0)).unwrap();
    file.set_len(len).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes[..4096], 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![1u8; len as usize], len).unwrap();
    assert!(allocated(&padded.0) >= len);
    let err = numballoc_core::inspect::inspect(&padded.0, None, 0).unwrap_err();
    assert!(err.to_string().contains("not all reserved"), "{err}");
}

#[test]
fn a_region_whose_file_grew_a_sparse_tail_opens_without_reserving_the_tail_then_reads() {
    let name = Scratch::new("tail");
    drop(Region::open(&name.0, 4096, &OpenOptions::default()).unwrap());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&name.0))
        .unwrap();
    let len = file.metadata().unwrap().len();
    // Far more than /dev/shm holds: reserving it would be ENOSPC for every opener.
    file.set_len(len + (1 << 36)).unwrap();
    // A reader cannot tell reserved pages never written from holes once the blocks fall short
    // of the file: it refuses, and says what to do.
    let err = numballoc_core::inspect::inspect(&name.0, None, 0).unwrap_err();
    assert!(
        err.to_string().contains("opening it for use reserves it"),
        "{err}"
    );
    let region = Arc::new(Region::open_existing(&name.0, &OpenOptions::default()).unwrap());
    assert!(
        allocated(&name.0) < len + (1 << 20),
        "the tail was not reserved"
    );
    let bitmap = ConcurrentBitmap::new(region, 0);
    bitmap.free(bitmap.allocate().unwrap()).unwrap();
    let report = numballoc_core::inspect::inspect(&name.0, None, 0);
    assert_eq!(report.map(|r| r.in_use).map_err(|e| e.to_string()), Ok(0));
}

#[test]
fn a_sparse_file_with_the_magic_and_no_header_is_refused_before_anything_is_reserved() {
    let name = Scratch::new("magic-only");
    let file = std::fs::File::create(shm_path(&name.0)).unwrap();
    file.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"NUMBALOC", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xee; 184], 8).unwrap();
    let err = Region::open_existing(&name.0, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "{err}");
    assert!(
        allocated(&name.0) < 1 << 20,
        "reserved before it was known to be a region"
    );
}

#[test]
fn an_object_whose_filesystem_cannot_seek_data_is_read_not_looped_over() {
    // procfs answers SEEK_DATA with EINVAL, and says its files are empty.
    let proc = std::path::Path::new("/proc/self");
    assert!(destroy("status", Some(proc)).is_err());
    let options = OpenOptions {
        directory: Some(proc.into()),
        ..OpenOptions::default()
    };
    assert!(Region::open("status", 8, &options).is_err());
}

#[test]
fn a_huge_sparse_object_under_a_region_name_is_checked_by_its_data_only() {
    // A terabyte of holes, which anyone who may write /dev/shm can make in an instant: reading it
    // all before saying what it is would hold the creation lock for minutes.
    let name = Scratch::new("huge-zero");
    std::fs::File::create(shm_path(&name.0))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let err = Region::open_existing(&name.0, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "unfinished: {err}");
    // Completing it checks that it is all zeros, then makes a region at its start.
    let region = Region::open(&name.0, 8, &OpenOptions::default()).unwrap();
    assert_eq!(region.capacity(), 64);
    drop(region);
    // And one with a byte of data far out is foreign, found without reading the holes before it.
    let garbage = Scratch::new("huge-garbage");
    let file = std::fs::File::create(shm_path(&garbage.0)).unwrap();
    file.set_len(1 << 40).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"x", (1 << 40) - 4096).unwrap();
    let err = Region::open(&garbage.0, 8, &OpenOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a numballoc region"), "{err}");
    assert!(!destroy(&garbage.0, None).is_ok_and(|removed| removed));
}

#[test]
fn destroy_while_open_keeps_the_mapping_and_the_next_open_is_fresh() {
    let name = Scratch::new("destroy");
    let old = ConcurrentBitmap::new(
        Arc::new(Region::open(&name.0, 8, &OpenOptions::default()).unwrap()),
        0,
    );
    let n = old.allocate().unwrap();
    assert!(destroy(&name.0, None).unwrap());
    assert!(!destroy(&name.0, None).unwrap());
    assert!(old.is_allocated(n).unwrap());
    old.free(n).unwrap();
    old.allocate().unwrap();
    let new = ConcurrentBitmap::new(
        Arc::new(Region::open(&name.0, 8, &OpenOptions::default()).unwrap()),
        0,
    );
    assert_eq!(new.count(), 0);
    assert_eq!(old.count(), 1);
}

#[test]
fn a_region_too_large_for_dev_shm_is_enospc_at_open() {
    let name = Scratch::new("enospc");
    // 512 GiB of bitmap: larger than any /dev/shm this runs on.
    let err = Region::open(&name.0, 1 << 39, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ENOSPC", "{err}");
    assert_eq!(err.syscall(), Some("posix_fallocate"));
    assert!(
        !shm_path(&name.0).exists(),
        "a failed creation left the object behind"
    );
}

#[test]
fn bad_names_and_sizes_are_refused() {
    for name in [
        "",
        ".",
        "..",
        "a/b",
        "sp ace",
        "nul\0",
        &"x".repeat(256),
        "é",
    ] {
        let err = Region::open(name, 8, &OpenOptions::default()).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_NAME", "{name:?}");
    }
    for size in [0, (1 << 40) + 1, u64::MAX] {
        let err = Region::open("numballoc-rs-size", size, &OpenOptions::default()).unwrap_err();
        assert_eq!(err.code(), "ERR_OUT_OF_RANGE");
    }
}

#[test]
fn batches_are_all_or_nothing_for_every_policy() {
    use numballoc_core::Policy;
    for policy in [Policy::Any, Policy::Lowest, Policy::Cyclic] {
        let name = Scratch::new("many");
        let region = Arc::new(Region::open(&name.0, 64, &OpenOptions::default()).unwrap());
        let bitmap = ConcurrentBitmap::with_policy(region, 500, policy);
        let first = bitmap.try_allocate_many(300).unwrap();
        let second = bitmap.try_allocate_many(200).unwrap();
        let mut all: Vec<u64> = first.iter().chain(&second).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..500).collect::<Vec<_>>(), "{policy:?}");
        assert_eq!(bitmap.try_allocate_many(1), None);
        bitmap.free_many(&first[..100]).unwrap();
        assert_eq!(bitmap.try_allocate_many(101), None, "{policy:?}");
        assert_eq!(bitmap.count(), 400, "a failed batch allocates nothing");
        assert!(matches!(
            bitmap.free_many(&[first[0], second[0]]),
            Err(Error::NotAllocated(n)) if n == first[0]
        ));
        assert_eq!(bitmap.count(), 400, "a refused free_many frees nothing");
        assert_eq!(bitmap.try_allocate_many(100).unwrap().len(), 100);
    }
}

#[test]
fn a_full_region_reclaims_dead_holders_before_giving_up() {
    let name = Scratch::new("reclaimfull");
    let region = Arc::new(Region::open(&name.0, 8, &OpenOptions::default()).unwrap());
    assert!(region.tracks_holders());
    let mut bitmap = ConcurrentBitmap::new(region.clone(), 0);
    let taken: Vec<u64> = (0..64).map(|_| bitmap.allocate().unwrap()).collect();
    // A holder that died holds 10 of them.
    let dead = common::plant_dead_holder(&region, 4000, &taken[..10], true);
    assert_eq!(bitmap.holder_of(taken[0]).unwrap().unwrap().slot, 4000);
    assert_ne!(dead, region.holder_record());
    bitmap.set_reclaim_when_full(false);
    assert!(matches!(bitmap.allocate(), Err(Error::NoFreeNumber)));
    bitmap.set_reclaim_when_full(true);
    let n = bitmap.allocate().unwrap();
    assert!(taken[..10].contains(&n));
    assert_eq!(
        bitmap.count(),
        55,
        "nine reclaimed numbers free, one taken again"
    );
    let me = bitmap.holder_of(n).unwrap().unwrap();
    assert_eq!(me.pid, std::process::id());
    let freed = *taken[..10].iter().find(|&&x| x != n).unwrap();
    assert!(bitmap.holds(n) && bitmap.holds(taken[20]) && !bitmap.holds(freed));
    assert_eq!(bitmap.reclaim().unwrap(), 0, "reclaimed once, not again");
}

#[test]
fn reclaim_counts_a_half_done_claim_and_never_takes_a_live_holders_number() {
    let name = Scratch::new("halfdone");
    let region = Arc::new(Region::open(&name.0, 1, &OpenOptions::default()).unwrap()); // 8
    let bitmap = ConcurrentBitmap::new(region.clone(), 0);
    let mine: Vec<u64> = (0..6).map(|_| bitmap.allocate().unwrap()).collect();
    let rest: Vec<u64> = (0..8).filter(|n| !mine.contains(n)).collect();
    // A holder died mid-claim on both remaining numbers: records written, bits not set.
    common::plant_dead_holder(&region, 77, &rest, false);
    assert_eq!(bitmap.reclaim().unwrap(), 2, "both half-done claims count");
    // A second region handle in its own scope is another, live holder.
    let other = Arc::new(
        Region::open(
            &name.0,
            1,
            &OpenOptions {
                scope: Some(numballoc_core::HolderScope::new(false)),
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    assert_ne!(other.holder_record(), region.holder_record());
    let theirs = ConcurrentBitmap::new(other.clone(), 0);
    let t = theirs.allocate().unwrap();
    assert_eq!(bitmap.reclaim().unwrap(), 0);
    assert_eq!(theirs.reclaim().unwrap(), 0);
    assert!(theirs.holds(t) && !bitmap.holds(t));
    // Dropping the other holder's last region gives its slot and numbers back.
    drop(theirs);
    drop(other);
    assert!(!bitmap.is_allocated(t).unwrap());
    assert_eq!(bitmap.count(), 6);
}

#[test]
fn regions_without_holders_work_and_reclaim_nothing() {
    let name = Scratch::new("noholders");
    let options = OpenOptions {
        holders: false,
        ..OpenOptions::default()
    };
    let region = Arc::new(Region::open(&name.0, 8, &options).unwrap());
    assert!(!region.tracks_holders());
    // Opening it again with holders on keeps the region's choice.
    let again = Region::open(&name.0, 8, &OpenOptions::default()).unwrap();
    assert!(!again.tracks_holders());
    let bitmap = ConcurrentBitmap::new(region, 0);
    let n = bitmap.allocate().unwrap();
    assert_eq!(bitmap.holder_of(n).unwrap(), None);
    assert_eq!(bitmap.reclaim().unwrap(), 0);
    bitmap.free(n).unwrap();
}

#[test]
fn the_cyclic_cursor_never_moves_backwards_under_contention() {
    use numballoc_core::Policy;
    use std::sync::atomic::{AtomicBool, Ordering};
    let name = Scratch::new("cursor");
    let region = Arc::new(Region::open(&name.0, 1 << 12, &OpenOptions::default()).unwrap());
    let max = region.capacity();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (region, stop) = (region.clone(), stop.clone());
            std::thread::spawn(move || {
                let bitmap = ConcurrentBitmap::with_policy(region, 0, Policy::Cyclic);
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    held.push_back(bitmap.allocate().unwrap());
                    if held.len() > 100 {
                        bitmap.free(held.pop_front().unwrap()).unwrap();
                    }
                }
            })
        })
        .collect();
    // A watcher, as a third process would: every change it sees must be a step forwards (the
    // cursor counts positions: the next number is `cursor % max`), and a small one.
    let (mut changes, mut backwards) = (0, 0);
    let mut last = region.cursor().load(Ordering::Relaxed);
    // Until it has seen enough (not for a fixed time: on a loaded machine the watcher may get
    // little of a short window); the deadline only keeps a broken cursor from hanging the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while (changes <= 100 || last <= max) && std::time::Instant::now() < deadline {
        let now = region.cursor().load(Ordering::Relaxed);
        if now != last {
            changes += 1;
            if now < last {
                backwards += 1;
            }
            last = now;
        }
    }
    assert!(last > max, "the cursor went round ({last} positions)");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(changes > 100, "only {changes} changes seen");
    assert_eq!(
        backwards, 0,
        "{backwards} of {changes} changes went backwards"
    );
}

#[test]
fn a_region_cut_short_while_in_use_is_refused_where_it_can_be_seen_not_a_crash() {
    let name = Scratch::new("cut");
    let region = Arc::new(Region::open(&name.0, 64, &OpenOptions::default()).unwrap());
    let bitmap = ConcurrentBitmap::new(region.clone(), 0);
    let n = bitmap.allocate().unwrap();
    common::plant_dead_holder(&region, 4002, &[100, 101], true);
    // Another program cuts the file to its header.
    cut_short(&name.0, 200);
    let err = bitmap.reclaim().unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION");
    assert!(err.to_string().contains("cut to 200 bytes"), "{err}");
    let err = Region::open(&name.0, 64, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "{err}");
    // Ending the holder does not sweep what it cannot read: no SIGBUS here.
    let _ = n;
    drop(bitmap);
    drop(region);
}

#[test]
fn a_scope_dropped_while_its_regions_are_open_keeps_their_slots_until_they_close() {
    use numballoc_core::holder::{entry_in_use, record_slot};
    use numballoc_core::HolderScope;
    use std::sync::atomic::Ordering;
    let name = Scratch::new("keepscope");
    // The scope is a temporary: dropped as soon as the region is open.
    let options = OpenOptions {
        scope: Some(HolderScope::new(true)),
        ..OpenOptions::default()
    };
    let region = Arc::new(Region::open(&name.0, 8, &options).unwrap());
    drop(options);
    let slot = record_slot(region.holder_record());
    assert!(entry_in_use(
        region.holder_slots()[slot].load(Ordering::SeqCst)
    ));
    let bitmap = ConcurrentBitmap::new(region.clone(), 0);
    let mine: Vec<u64> = (0..4).map(|_| bitmap.allocate().unwrap()).collect();
    // Another holder neither takes the slot nor reclaims its numbers.
    let other = Arc::new(
        Region::open(
            &name.0,
            8,
            &OpenOptions {
                scope: Some(HolderScope::new(false)),
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    assert_ne!(record_slot(other.holder_record()), slot);
    assert_eq!(other.reclaim().unwrap(), 0);
    for n in &mine {
        assert!(bitmap.holds(*n));
    }
    // Closing the last region of the scope gives the slot and its numbers back.
    drop(bitmap);
    drop(region);
    let check = ConcurrentBitmap::new(other, 0);
    assert_eq!(check.count(), 0);
}

/// A queue region whose counts say more are held than its states do (a head written here at its
/// offset, as a copy taken mid-use or a stray write could leave it) says "none free" while numbers wait;
/// `Region::reclaim` (what `reclaimShared` and `numballoc reclaim` run) puts it right.
#[test]
fn reclaim_puts_right_a_queue_count_above_its_states() {
    use numballoc_core::ConcurrentQueue;
    use std::os::unix::fs::FileExt;
    let name = Scratch::new("recount");
    let queue = ConcurrentQueue::open(&name.0, 4, &OpenOptions::default()).unwrap();
    let all: Vec<u64> = (0..4).map(|_| queue.allocate().unwrap()).collect();
    assert_eq!(
        queue.try_allocate(),
        None,
        "full: the head moves to the tail"
    );
    queue.free(all[1]).unwrap();
    queue.free(all[3]).unwrap();
    // A head moved over the two freed numbers' positions as if both had been claimed from the
    // ring: the count says all four are held.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&name.0))
        .unwrap();
    let word = |offset: u64| {
        let mut bytes = [0; 8];
        file.read_exact_at(&mut bytes, offset).unwrap();
        u64::from_le_bytes(bytes)
    };
    let (head, tail) = (word(192), word(256));
    file.write_all_at(&(head + 2).to_le_bytes(), 192).unwrap();
    assert_eq!(tail + 4, head + 2, "the head is at the tail");
    assert_eq!(queue.try_allocate(), None, "the count hides them");
    queue.region().reclaim().unwrap();
    let mut back: Vec<u64> = std::iter::from_fn(|| queue.try_allocate()).collect();
    back.sort_unstable();
    assert_eq!(back, [all[1], all[3]]);
}

/// A queue region without holder records, cut short under an open handle: `reclaim` (which
/// reads every state to check the queue's count) refuses it instead of touching the pages cut
/// off (a `SIGBUS` would kill the test process).
#[test]
fn reclaim_of_a_queue_region_without_holders_cut_short_is_refused_not_a_crash() {
    use numballoc_core::ConcurrentQueue;
    let name = Scratch::new("cutqueue");
    let options = OpenOptions {
        holders: false,
        ..OpenOptions::default()
    };
    let queue = ConcurrentQueue::open(&name.0, 1 << 16, &options).unwrap();
    cut_short(&name.0, 4096);
    let err = queue.region().reclaim().unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "{err}");
}
