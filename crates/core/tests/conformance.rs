//! The conformance suite every allocator kind passes, through the [`Allocator`] trait alone:
//! uniqueness across threads and processes, exhaustion, double free, bad input, holders, and
//! reclaim after SIGKILL. Each test runs for every kind in [`KINDS`]; a new kind joins the list.
//! What only one kind promises (a bitmap's policies, a queue's order) is tested with that kind.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::Scratch;
use numballoc_core::{Allocator, ConcurrentBitmap, ConcurrentQueue, Error, OpenOptions, Region};

/// Every kind of allocator, by the name the child processes are told.
const KINDS: [&str; 2] = ["bitmap", "queue"];
/// The numbers each test's allocator hands out.
const CAPACITY: u64 = 256;

type Shared = Box<dyn Allocator + Send + Sync>;

/// The allocator of kind `kind` over the region `name` of [`CAPACITY`] numbers, created if need be.
fn open(kind: &str, name: &str, options: &OpenOptions) -> Result<Shared, Error> {
    Ok(match kind {
        "bitmap" => {
            let region = Region::open(name, CAPACITY / 8, options)?;
            Box::new(ConcurrentBitmap::new(Arc::new(region), 0))
        }
        "queue" => Box::new(ConcurrentQueue::open(name, CAPACITY, options)?),
        other => panic!("no kind {other}"),
    })
}

fn open_default(kind: &str, name: &str) -> Shared {
    open(kind, name, &OpenOptions::default()).unwrap()
}

#[test]
fn every_number_once_then_full_then_errors_for_bad_frees() {
    for kind in KINDS {
        let scratch = Scratch::new(&format!("conf-full-{kind}"));
        let a = open_default(kind, &scratch.0);
        assert_eq!(a.max(), CAPACITY, "{kind}");
        let got: BTreeSet<u64> = (0..CAPACITY).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got, (0..CAPACITY).collect(), "{kind}: every number once");
        assert!(matches!(a.allocate(), Err(Error::NoFreeNumber)), "{kind}");
        assert_eq!(a.try_allocate(), None, "{kind}");
        assert_eq!(a.count(), CAPACITY, "{kind}");
        a.free(7).unwrap();
        assert!(!a.is_allocated(7).unwrap(), "{kind}");
        assert!(
            matches!(a.free(7), Err(Error::NotAllocated(7))),
            "{kind}: double free"
        );
        assert!(
            matches!(a.free(CAPACITY), Err(Error::OutOfRange(_))),
            "{kind}"
        );
        assert!(matches!(
            a.is_allocated(CAPACITY),
            Err(Error::OutOfRange(_))
        ));
        assert!(matches!(a.holder_of(u64::MAX), Err(Error::OutOfRange(_))));
        assert_eq!(a.allocate().unwrap(), 7, "{kind}: the one free number");
        let holder = a.holder_of(7).unwrap().expect("a holder");
        assert_eq!(holder.pid, std::process::id(), "{kind}");
        assert_eq!(a.count(), CAPACITY, "{kind}");
    }
}

#[test]
fn opening_one_kind_as_another_is_a_kind_mismatch_naming_both() {
    for (kind, other) in [("bitmap", "queue"), ("queue", "bitmap")] {
        let scratch = Scratch::new(&format!("conf-kind-{kind}"));
        let _first = open_default(kind, &scratch.0);
        let Err(error) = open(other, &scratch.0, &OpenOptions::default()) else {
            panic!("{kind} opened as a {other}");
        };
        assert_eq!(error.code(), "ERR_KIND_MISMATCH", "{error}");
        let text = error.to_string();
        assert!(
            text.contains(&format!("holds a {kind}")) && text.contains(other),
            "{text}"
        );
        let any = Region::open_existing(&scratch.0, &OpenOptions::default()).unwrap();
        assert_eq!(any.kind().name(), kind);
        // What only a bitmap has is empty (never a panic) in a queue region.
        assert_eq!(any.blocks().is_empty(), kind == "queue");
        assert_eq!(any.words().is_empty(), kind == "queue");
    }
}

#[test]
fn threads_churning_never_share_a_number() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for kind in KINDS {
        let scratch = Scratch::new(&format!("conf-threads-{kind}"));
        let a = open_default(kind, &scratch.0);
        let witness: Vec<AtomicBool> = (0..CAPACITY).map(|_| AtomicBool::new(false)).collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (a, witness) = (&a, &witness);
                scope.spawn(move || {
                    for _ in 0..5_000 {
                        let held: Vec<u64> = (0..16).filter_map(|_| a.try_allocate()).collect();
                        for &n in &held {
                            assert!(
                                !witness[n as usize].swap(true, Ordering::AcqRel),
                                "{n} twice"
                            );
                        }
                        for n in held {
                            witness[n as usize].store(false, Ordering::Release);
                            a.free(n).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(a.count(), 0, "{kind}: every number back");
    }
}

const CHILD_ENV: &str = "NUMBALLOC_CONFORMANCE_CHILD";

/// The child, when run by a test below: opens `kind:name`, takes `count` numbers (or all it can
/// get), prints them, and waits for its stdin to close (or to be killed).
#[test]
fn conformance_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(':');
    let (kind, name, count) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    let a = open_default(kind, name);
    let mine: Vec<String> = std::iter::from_fn(|| a.try_allocate())
        .take(count as usize)
        .map(|n| n.to_string())
        .collect();
    println!("NUMBERS {}", mine.join(","));
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// Starts a child that takes `count` numbers of `kind:name`; returns it and the numbers.
fn child(kind: &str, name: &str, count: u64) -> (std::process::Child, Vec<u64>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "conformance_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{kind}:{name}:{count}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(|line| line.ok())
        .find_map(|line| Some(line.split_once("NUMBERS ")?.1.to_owned()))
        .expect("the child printed its numbers");
    // Read what the child's test harness prints after, so it never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let numbers = line
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|n| n.parse().unwrap())
        .collect();
    (child, numbers)
}

#[test]
fn processes_exhausting_one_region_share_every_number_exactly_once() {
    for kind in KINDS {
        let scratch = Scratch::new(&format!("conf-procs-{kind}"));
        let children: Vec<_> = (0..4).map(|_| child(kind, &scratch.0, u64::MAX)).collect();
        let mut seen = BTreeSet::new();
        for (_, numbers) in &children {
            for &n in numbers {
                assert!(seen.insert(n), "{kind}: {n} handed to two processes");
            }
        }
        assert_eq!(seen, (0..CAPACITY).collect(), "{kind}");
        for (mut process, _) in children {
            drop(process.stdin.take());
            assert!(process.wait().unwrap().success(), "{kind}");
        }
        // The children ended normally: their numbers went back with their holders.
        assert_eq!(open_default(kind, &scratch.0).count(), 0, "{kind}");
    }
}

#[test]
fn numbers_of_a_sigkilled_holder_come_back_through_reclaim_and_by_themselves() {
    for kind in KINDS {
        let scratch = Scratch::new(&format!("conf-kill-{kind}"));
        let a = open_default(kind, &scratch.0);
        let mine: Vec<u64> = (0..CAPACITY - 10).map(|_| a.allocate().unwrap()).collect();
        let (mut victim, taken) = child(kind, &scratch.0, 10);
        assert_eq!(taken.len(), 10, "{kind}");
        assert_eq!(a.try_allocate(), None, "{kind}: full while the child lives");
        assert_eq!(a.holder_of(taken[0]).unwrap().unwrap().pid, victim.id());
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        assert_eq!(a.reclaim().unwrap(), 10, "{kind}");
        assert_eq!(a.reclaim().unwrap(), 0, "{kind}: nothing twice");
        let back: BTreeSet<u64> = (0..10).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(back, taken.iter().copied().collect(), "{kind}");
        // And without anyone calling reclaim: a full allocator reclaims before saying so.
        for n in back {
            a.free(n).unwrap();
        }
        let (mut victim, taken) = child(kind, &scratch.0, 10);
        victim.kill().unwrap();
        victim.wait().unwrap();
        let again: BTreeSet<u64> = (0..10).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(again, taken.iter().copied().collect(), "{kind}");
        assert_eq!(a.count(), CAPACITY, "{kind}");
        drop(mine);
    }
}

#[test]
fn bad_capacities_are_out_of_range() {
    let scratch = Scratch::new("conf-bad");
    for capacity in [0, numballoc_core::header::MAX_QUEUE_CAPACITY + 1, u64::MAX] {
        let error =
            ConcurrentQueue::open(&scratch.0, capacity, &OpenOptions::default()).unwrap_err();
        assert_eq!(error.code(), "ERR_OUT_OF_RANGE", "{capacity}: {error}");
    }
    let _q = ConcurrentQueue::open(&scratch.0, 5, &OpenOptions::default()).unwrap();
    let error = ConcurrentQueue::open(&scratch.0, 6, &OpenOptions::default()).unwrap_err();
    assert_eq!(error.code(), "ERR_SIZE_MISMATCH", "{error}");
}

/// The queue's own promise, across handles of one region: a new queue hands out 0, 1, 2, ...,
/// and numbers come back in the order they were freed.
#[test]
fn a_queue_region_hands_numbers_back_in_the_order_they_were_freed() {
    let scratch = Scratch::new("conf-order");
    let a = ConcurrentQueue::open(&scratch.0, 8, &OpenOptions::default()).unwrap();
    let b = ConcurrentQueue::open(&scratch.0, 8, &OpenOptions::default()).unwrap();
    let first: Vec<u64> = (0..8)
        .map(|i| if i % 2 == 0 { &a } else { &b }.allocate().unwrap())
        .collect();
    assert_eq!(first, (0..8).collect::<Vec<_>>());
    for n in [5, 1, 7, 0] {
        b.free(n).unwrap();
    }
    assert_eq!(a.waiting(10), [5, 1, 7, 0]);
    let again: Vec<u64> = (0..4).map(|_| a.allocate().unwrap()).collect();
    assert_eq!(again, [5, 1, 7, 0]);
}
