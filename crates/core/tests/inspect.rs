//! Tools' view of regions: opening one without knowing its size, tags, inspecting and listing.

use std::sync::Arc;

use numballoc_core::inspect::{inspect, list};
use numballoc_core::{Allocator, ConcurrentBitmap, Error, OpenOptions, Region};

mod common;

use common::Scratch;

#[test]
fn open_existing_reads_the_size_from_the_header() {
    let name = Scratch::new("existing");
    let created = Region::open(&name.0, 37, &OpenOptions::default()).unwrap();
    let opened = Region::open_existing(&name.0, &OpenOptions::default()).unwrap();
    assert_eq!((opened.size(), opened.capacity()), (37, 296));
    assert!(opened.tracks_holders());
    let a = ConcurrentBitmap::new(Arc::new(created), 0);
    let b = ConcurrentBitmap::new(Arc::new(opened), 0);
    let n = a.allocate().unwrap();
    assert!(b.is_allocated(n).unwrap());
}

#[test]
fn open_existing_never_creates() {
    let name = Scratch::new("missing");
    let err = Region::open_existing(&name.0, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ENOENT");
    assert!(!std::path::Path::new("/dev/shm").join(&name.0).exists());
}

#[test]
fn open_existing_refuses_a_region_whose_creator_never_finished() {
    let name = Scratch::new("unfinished");
    std::fs::write(std::path::Path::new("/dev/shm").join(&name.0), []).unwrap();
    let err = Region::open_existing(&name.0, &OpenOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_INCOMPATIBLE_REGION", "{err}");
    // Opening it with a size completes it, as before.
    Region::open(&name.0, 8, &OpenOptions::default()).unwrap();
}

#[test]
fn tags_are_written_at_creation_and_checked_by_openers_that_ask() {
    let name = Scratch::new("tag");
    let tagged = |tag| OpenOptions {
        tag,
        ..OpenOptions::default()
    };
    let first = Region::open(&name.0, 8, &tagged(Some(0xabc))).unwrap();
    assert_eq!(first.tag(), 0xabc);
    assert_eq!(
        Region::open(&name.0, 8, &tagged(None)).unwrap().tag(),
        0xabc
    );
    assert_eq!(
        Region::open_existing(&name.0, &tagged(Some(0xabc)))
            .unwrap()
            .tag(),
        0xabc
    );
    let err = Region::open(&name.0, 8, &tagged(Some(0xabd))).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TagMismatch {
                existing: 0xabc,
                requested: 0xabd,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "ERR_TAG_MISMATCH");
    assert!(err.to_string().contains("0xabc"), "{err}");
}

#[test]
fn inspect_counts_cells_and_holders_alive_and_dead() {
    let name = Scratch::new("report");
    let region = Arc::new(Region::open(&name.0, 32, &OpenOptions::default()).unwrap()); // 256
    let bitmap = ConcurrentBitmap::with_policy(region.clone(), 0, numballoc_core::Policy::Lowest);
    for _ in 0..70 {
        bitmap.allocate().unwrap(); // 0..70, held by this live process
    }
    // Two numbers held by a holder that no longer exists.
    common::plant_dead_holder(&region, 4001, &[200, 255], true);

    let report = inspect(&name.0, None, 4).unwrap();
    assert_eq!(report.path, format!("/{}", name.0));
    assert_eq!((report.header.size, report.header.capacity), (32, 256));
    assert_eq!(report.in_use, 72);
    assert_eq!(report.cell_size, 64);
    assert_eq!(report.cells, vec![64, 6, 0, 2]);
    assert_eq!(report.held_by_dead(), 2);
    assert_eq!(report.holders.len(), 2);
    assert_eq!(
        (
            report.holders[0].holder.pid,
            report.holders[0].alive,
            report.holders[0].count
        ),
        (std::process::id(), true, 70)
    );
    assert_eq!(
        (report.holders[1].alive, report.holders[1].count),
        (false, 2)
    );

    // Cells that do not align with words, and more cells asked for than numbers exist.
    let report = inspect(&name.0, None, 10).unwrap();
    assert_eq!(report.cell_size, 26);
    assert_eq!(report.cells.len(), 10);
    assert_eq!(report.cells[..3], [26, 26, 18]);
    assert_eq!(report.cells.iter().sum::<u64>(), 72);
    assert_eq!(inspect(&name.0, None, 10_000).unwrap().cells.len(), 256);

    // Inspection changed nothing: the dead holder's numbers are still there until reclaimed.
    assert_eq!(bitmap.count(), 72);
    assert_eq!(bitmap.reclaim().unwrap(), 2);
    assert_eq!(inspect(&name.0, None, 4).unwrap().held_by_dead(), 0);
}

#[test]
fn inspect_reports_missing_and_foreign_objects_with_their_codes() {
    let name = Scratch::new("foreign");
    assert_eq!(inspect(&name.0, None, 8).unwrap_err().code(), "ENOENT");
    std::fs::write(
        std::path::Path::new("/dev/shm").join(&name.0),
        b"not a numballoc region, just some bytes that are long enough to hold a header......................................................",
    )
    .unwrap();
    assert_eq!(
        inspect(&name.0, None, 8).unwrap_err().code(),
        "ERR_INCOMPATIBLE_REGION"
    );
    assert_eq!(
        inspect("bad/name", None, 8).unwrap_err().code(),
        "ERR_INVALID_NAME"
    );
}

#[test]
fn list_finds_regions_and_skips_other_files() {
    let dir = std::env::temp_dir().join(format!("numballoc-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = Scratch::new("b-region");
    a.1 = Some(dir.clone());
    let mut b = Scratch::new("a-region");
    b.1 = Some(dir.clone());
    let options = OpenOptions {
        directory: Some(dir.clone()),
        ..OpenOptions::default()
    };
    Region::open(&a.0, 8, &options).unwrap();
    Region::open(&b.0, 8, &options).unwrap();
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    assert_eq!(list(Some(&dir)).unwrap(), vec![b.0.clone(), a.0.clone()]);
    drop((a, b));
    std::fs::remove_dir_all(&dir).unwrap();

    // Shared memory too, among whatever else this machine keeps there.
    let shm = Scratch::new("listed");
    Region::open(&shm.0, 8, &OpenOptions::default()).unwrap();
    assert!(list(None).unwrap().contains(&shm.0));
}
