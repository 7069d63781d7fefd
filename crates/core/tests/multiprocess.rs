//! Real processes on one region: the test binary re-runs itself as the children.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;

use numballoc_core::{destroy, Allocator, ConcurrentBitmap, OpenOptions, Region};

const CHILD_ENV: &str = "NUMBALLOC_CHILD_REGION";
const DYING_CREATOR_ENV: &str = "NUMBALLOC_DYING_CREATOR";
const SIZE: u64 = 64; // 512 numbers

/// The child: open the region (racing the others to create it), take numbers until it is full,
/// print them. Does nothing when run as an ordinary test.
#[test]
fn child_exhausts_region() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let region = Arc::new(Region::open(&name, SIZE, &OpenOptions::default()).unwrap());
    let bitmap = ConcurrentBitmap::new(region, 0);
    let mut mine = Vec::new();
    while let Ok(n) = bitmap.allocate() {
        mine.push(n.to_string());
    }
    println!("NUMBERS {}", mine.join(","));
    // Hold them until every sibling is done: a holder that ends gives its numbers back, and a
    // sibling would rightly take them again.
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// The child: a creator caught mid-initialisation. It creates the object, takes the lock, sizes it
/// and writes part of a header (no magic), says so, and waits to be killed.
#[test]
fn child_dying_creator() {
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    let Ok(name) = std::env::var(DYING_CREATOR_ENV) else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    // SAFETY: a valid descriptor.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    let header = numballoc_core::header::Header::new(999, true);
    file.set_len(header.region_len()).unwrap();
    // What a creator leaves when killed after writing the header, before the magic number.
    file.write_all(&[0; 8]).unwrap();
    file.write_all(&header.encode()[8..]).unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn a_creator_killed_mid_initialisation_is_completed_by_the_next_opener() {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().unwrap();
    let name = format!("numballoc-rs-dying-{}", std::process::id());
    let _cleanup = DestroyOnDrop(&name);
    let mut creator = Command::new(&exe)
        .args([
            "--exact",
            "child_dying_creator",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DYING_CREATOR_ENV, &name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(creator.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("LOCKED")));
    // This opener finds the region unfinished and waits for the creator's lock...
    let opener = {
        let name = name.clone();
        std::thread::spawn(move || Region::open(&name, SIZE, &OpenOptions::default()))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !opener.is_finished(),
        "the opener did not wait for the creator"
    );
    // ...which SIGKILL releases: the opener then initialises the region itself.
    creator.kill().unwrap();
    creator.wait().unwrap();
    let region = Arc::new(opener.join().unwrap().expect("the region was completed"));
    assert_eq!(region.size(), SIZE);
    let bitmap = ConcurrentBitmap::new(region, 0);
    assert_eq!(bitmap.count(), 0);
    assert!(bitmap.allocate().is_ok());
}

#[test]
fn processes_racing_to_create_one_region_share_every_number_exactly_once() {
    let exe = std::env::current_exe().unwrap();
    for round in 0..25 {
        let name = format!("numballoc-rs-race-{}-{round}", std::process::id());
        let _cleanup = DestroyOnDrop(&name);
        let mut children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "child_exhausts_region",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_ENV, &name)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut seen = BTreeSet::new();
        let mut lines = Vec::new();
        for child in &mut children {
            use std::io::BufRead;
            let stdout = std::io::BufReader::new(child.stdout.as_mut().unwrap());
            // libtest may print its own "test ... " prefix on the same line.
            let line = stdout
                .lines()
                .map_while(|line| line.ok())
                .find_map(|line| Some(line.split_once("NUMBERS ")?.1.to_owned()))
                .unwrap_or_else(|| panic!("a child printed no numbers in round {round}"));
            lines.push(line);
        }
        for mut child in children {
            drop(child.stdin.take());
            assert!(
                child.wait().unwrap().success(),
                "a child failed in round {round}"
            );
        }
        for line in lines {
            for n in line.split(',').filter(|s| !s.is_empty()) {
                let n: u64 = n.parse().unwrap();
                assert!(
                    seen.insert(n),
                    "{n} handed to two processes in round {round}"
                );
            }
        }
        assert_eq!(seen, (0..SIZE * 8).collect(), "round {round}");
        // The children ended normally, so they gave every number back.
        let region = Arc::new(Region::open(&name, SIZE, &OpenOptions::default()).unwrap());
        assert_eq!(ConcurrentBitmap::new(region, 0).count(), 0);
    }
}

const CHURN_ENV: &str = "NUMBALLOC_CHURN_REGION";
/// Three groups of 4,096 numbers: the full counts of the first two move all the time below.
const CHURN_SIZE: u64 = 3 * 4096 / 8;
/// The number the checker keeps free: in the second group, whose other words fill and unfill.
const KEPT_FREE: u64 = 4096 + 1000;

const CHURN_INDEX_ENV: &str = "NUMBALLOC_CHURN_INDEX";

/// The child: takes its half of the first two groups' numbers (the even or the odd ones, all
/// but `KEPT_FREE`), says READY, then for a while frees one of them at random and takes it back,
/// so words fill and unfill and their groups' full counts go up and down. It frees only numbers
/// it holds; one the checker took meanwhile comes back when the checker gives it back.
#[test]
fn child_churns() {
    use std::io::Write;
    let (Ok(name), Ok(index)) = (std::env::var(CHURN_ENV), std::env::var(CHURN_INDEX_ENV)) else {
        return;
    };
    let index: u64 = index.parse().unwrap();
    let region = Arc::new(Region::open(&name, CHURN_SIZE, &OpenOptions::default()).unwrap());
    let bitmap = ConcurrentBitmap::new(region, 0);
    let mine: Vec<u64> = (index..2 * 4096)
        .step_by(2)
        .filter(|&n| n != KEPT_FREE)
        .collect();
    let take_back = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while bitmap.try_allocate_in(n, n).unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "{n} never came back");
            std::hint::spin_loop();
        }
    };
    for &n in &mine {
        take_back(n);
    }
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut seed = std::process::id() as u64 | 1;
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = mine[(seed % mine.len() as u64) as usize];
        bitmap.free(n).unwrap();
        take_back(n);
    }
    println!("CHURNED");
}

#[test]
fn lowest_never_passes_a_number_free_for_the_whole_call_while_other_processes_churn_its_group() {
    use numballoc_core::Policy;
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().unwrap();
    let name = format!("numballoc-rs-churn-{}", std::process::id());
    let _cleanup = DestroyOnDrop(&name);
    let region = Arc::new(Region::open(&name, CHURN_SIZE, &OpenOptions::default()).unwrap());
    let mut bitmap = ConcurrentBitmap::with_policy(region, 0, Policy::Lowest);
    bitmap.set_reclaim_when_full(false);
    while bitmap.try_allocate().is_some() {}
    // The churners' numbers: theirs to take.
    let theirs: Vec<u64> = (0..2 * 4096).filter(|&n| n != KEPT_FREE).collect();
    bitmap.free_many(&theirs).unwrap();
    let mut churners: Vec<_> = (0..2)
        .map(|index| {
            Command::new(&exe)
                .args(["--exact", "child_churns", "--nocapture", "--test-threads=1"])
                .env(CHURN_ENV, &name)
                .env(CHURN_INDEX_ENV, index.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs: Vec<_> = churners
        .iter_mut()
        .map(|churner| BufReader::new(churner.stdout.take().unwrap()).lines())
        .collect();
    for lines in &mut outputs {
        assert!(lines.any(|line| line.unwrap().contains("READY")));
    }
    let mut calls = 0u64;
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        bitmap.free(KEPT_FREE).unwrap();
        // KEPT_FREE is free before each call and only this loop takes it: every call must hand
        // out it or a number below it (a churner's, kept until KEPT_FREE comes, then given back).
        let mut taken = Vec::new();
        loop {
            calls += 1;
            let got = bitmap.try_allocate();
            assert!(
                got.is_some_and(|n| n <= KEPT_FREE),
                "lowest gave {got:?} while {KEPT_FREE} was free"
            );
            if got == Some(KEPT_FREE) {
                break;
            }
            taken.extend(got);
        }
        bitmap.free_many(&taken).unwrap();
    }
    for (mut churner, lines) in churners.into_iter().zip(outputs) {
        assert!(churner.wait().unwrap().success());
        assert!(lines
            .map_while(|line| line.ok())
            .any(|line| line.contains("CHURNED")));
    }
    assert!(calls > 1000, "only {calls} calls");
}

/// Destroys the region when the round ends, passed or failed.
struct DestroyOnDrop<'a>(&'a str);

impl Drop for DestroyOnDrop<'_> {
    fn drop(&mut self) {
        let _ = destroy(self.0, None);
    }
}
