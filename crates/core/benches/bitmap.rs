//! Core benchmarks: `cargo bench -p numballoc-core` (BENCHMARKS.md has the figures).
//!
//! - `pair/<impl>/<log2 capacity>/<fill %>`: one allocate + free, in steady state, on a region
//!   filled at random to the given level (numballoc and the Go algorithm's port, same run).
//! - `one_free/<impl>/<log2 capacity>`: a fresh handle allocates the only free number (then
//!   frees it), the Go original's worst case; `empty/numballoc/...` is a fresh handle on an
//!   empty region, the reference the summary levels are measured against.
//! - `policy/<policy>/<fill>`: the pair by policy at 2^14 numbers; `dense-half` has numbers
//!   0..2^13 allocated (the case `lowest` scans), `random-50%` half of them at random.
//! - `holders/<with|without>`: the pair at 2^14, 50% fill, in a region with and without holder
//!   records (the other groups use the default, with).
//! - `contention/<impl>/<k>-threads`: k threads, each with its own handle on one region of 2^14
//!   numbers (as k processes would have), doing allocate + free pairs; time per pair, combined.
//!   The Go algorithm's handles all start searching at block 0.
//! - `block/<count>x<align>` and `many/<n>`: blocks and batches at 2^14, 50% random fill; `many`
//!   is per number.
//! - `holder/register/<log2>`: a new holder opens an existing region (takes a slot, reclaims
//!   nothing) and ends (gives the slot back, sweeping its records), with no number held.
//! - `holder/reclaim-live/<k>`: `reclaim()` with `k` other live holders and none gone: the
//!   cost of checking liveness (a try-lock per slot in use).
//! - `holder/full/<log2>`: a failed `try_allocate` on a full region whose holders all live,
//!   with reclaim-when-full on (a full scan, then a reclaim that finds nobody gone).
//! - `holder/create/<log2>`: creating a new region (and destroying it).
//! - `queue/pair/<log2>`: `ConcurrentQueue`'s allocate + free on a region of 2^11..2^24 numbers,
//!   half of them held; `queue/contention/<k>-threads`: k threads churning pairs on one queue of
//!   2^14, each with its own handle, as `contention/`; `queue/full/<log2>`: a failed allocate
//!   on a full queue (with reclaim-when-full on, nobody gone); `queue/floor/<k>-threads`: k
//!   threads doing nothing but a fetch-and-add on a shared head and one on a shared tail, the
//!   floor under any strict first-in first-out queue's 2-vs-1 figure.
//! - `floor/cas-and`: the bare floor of a pair: a compare-and-swap setting a bit of one word and
//!   an atomic AND clearing it, with nothing else.
//! - `scale/lowest-dense-half/<log2>`: the `lowest` pair with numbers `0..capacity/2` allocated.
//! - `scale/block64-one-run/<log2>`: `allocate_block(64, 64)` + `free_block` on a full region
//!   but for one free aligned word half-way in.
//! - `scale/full/<reclaim>/<log2>`: a failed `try_allocate` on a full region whose holders all
//!   live, with reclaim-when-full off and on.
//! - `contention/<policy>/<k>-threads`: as `contention/numballoc`, by policy.

mod go_baseline;

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use numballoc_core::{
    destroy, Allocator, ConcurrentBitmap, ConcurrentQueue, HolderScope, OpenOptions, Policy, Region,
};

use go_baseline::GoBitmap;

const CAPACITIES: [u32; 5] = [11, 14, 17, 20, 24];
const FILLS: [u32; 4] = [0, 50, 90, 99];

/// A deterministic pseudo-random sequence (xorshift64*), so both implementations get the same fill.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Which numbers are allocated at `fill` percent: the same set for every implementation.
fn filled(capacity: u64, fill: u32) -> Vec<bool> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ capacity ^ fill as u64);
    (0..capacity)
        .map(|_| rng.next() % 100 < fill as u64)
        .collect()
}

/// A region of `capacity` numbers in /dev/shm, removed when dropped.
struct BenchRegion {
    name: String,
    region: Arc<Region>,
}

impl BenchRegion {
    fn new(tag: &str, capacity: u64) -> BenchRegion {
        BenchRegion::with_holders(tag, capacity, true)
    }

    fn with_holders(tag: &str, capacity: u64, holders: bool) -> BenchRegion {
        let name = format!("numballoc-bench-{tag}-{}", std::process::id());
        let _ = destroy(&name, None);
        let options = OpenOptions {
            holders,
            ..OpenOptions::default()
        };
        let region = Arc::new(Region::open(&name, capacity / 8, &options).unwrap());
        BenchRegion { name, region }
    }

    /// Sets exactly the numbers `set` marks, through the allocator (so the summaries are right).
    fn fill(&self, set: &[bool]) {
        let bitmap = ConcurrentBitmap::new(self.region.clone(), 0);
        while bitmap.try_allocate().is_some() {}
        for (n, _) in set.iter().enumerate().filter(|(_, &allocated)| !allocated) {
            bitmap.free(n as u64).unwrap();
        }
    }
}

impl Drop for BenchRegion {
    fn drop(&mut self) {
        let _ = destroy(&self.name, None);
    }
}

fn go_blocks(set: &[bool]) -> Vec<AtomicU32> {
    set.chunks(32)
        .map(|chunk| {
            let bits = chunk
                .iter()
                .enumerate()
                .filter(|(_, &allocated)| allocated)
                .fold(0u32, |acc, (i, _)| acc | (0x8000_0000 >> i));
            AtomicU32::new(bits)
        })
        .collect()
}

/// A group with short warm-up and measurement: the suite covers many cases on a 2-core machine.
fn short_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_millis(600));
    group.sample_size(20);
    group
}

fn pair(c: &mut Criterion) {
    let mut group = short_group(c, "pair");
    for log2 in CAPACITIES {
        let capacity = 1u64 << log2;
        for fill in FILLS {
            let set = filled(capacity, fill);
            let region = BenchRegion::new("pair", capacity);
            region.fill(&set);
            let bitmap = ConcurrentBitmap::new(region.region.clone(), 0);
            let id = BenchmarkId::new(format!("numballoc/2^{log2}"), format!("{fill}%"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let n = bitmap.allocate().unwrap();
                    bitmap.free(black_box(n)).unwrap();
                })
            });
            let blocks = go_blocks(&set);
            let go = GoBitmap::new(&blocks);
            let id = BenchmarkId::new(format!("go/2^{log2}"), format!("{fill}%"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let n = go.allocate().unwrap();
                    go.free(black_box(n));
                })
            });
        }
    }
    group.finish();
}

fn one_free(c: &mut Criterion) {
    let mut group = short_group(c, "one_free");
    for log2 in CAPACITIES {
        let capacity = 1u64 << log2;
        // Everything allocated but one number three quarters of the way in.
        let free = capacity * 3 / 4 + 17;
        let set: Vec<bool> = (0..capacity).map(|n| n != free).collect();
        let region = BenchRegion::new("onefree", capacity);
        region.fill(&set);
        group.bench_function(BenchmarkId::new("numballoc", format!("2^{log2}")), |b| {
            b.iter(|| {
                let fresh = ConcurrentBitmap::new(region.region.clone(), 0);
                let n = fresh.allocate().unwrap();
                fresh.free(black_box(n)).unwrap();
            })
        });
        let blocks = go_blocks(&set);
        group.bench_function(BenchmarkId::new("go", format!("2^{log2}")), |b| {
            b.iter(|| {
                let fresh = GoBitmap::new(&blocks);
                let n = fresh.allocate().unwrap();
                fresh.free(black_box(n));
            })
        });
        let empty = BenchRegion::new("empty", capacity);
        // Touch every page once, as a region in use has been: a new region's first touch of a
        // page is a page fault, which would be measured here instead of the search.
        empty.fill(&vec![false; capacity as usize]);
        group.bench_function(
            BenchmarkId::new("empty/numballoc", format!("2^{log2}")),
            |b| {
                b.iter(|| {
                    let fresh = ConcurrentBitmap::new(empty.region.clone(), 0);
                    let n = fresh.allocate().unwrap();
                    fresh.free(black_box(n)).unwrap();
                })
            },
        );
    }
    group.finish();
}

fn policies_blocks_batches(c: &mut Criterion) {
    let mut group = short_group(c, "policy");
    let capacity = 1u64 << 14;
    let random = filled(capacity, 50);
    let dense: Vec<bool> = (0..capacity).map(|n| n < capacity / 2).collect();
    for (fill, set) in [("random-50%", &random), ("dense-half", &dense)] {
        let region = BenchRegion::new("policy", capacity);
        region.fill(set);
        for (label, policy) in [
            ("any", Policy::Any),
            ("lowest", Policy::Lowest),
            ("cyclic", Policy::Cyclic),
        ] {
            let bitmap = ConcurrentBitmap::with_policy(region.region.clone(), 0, policy);
            group.bench_function(BenchmarkId::new(label, fill), |b| {
                b.iter(|| {
                    let n = bitmap.allocate().unwrap();
                    bitmap.free(black_box(n)).unwrap();
                })
            });
        }
    }
    group.finish();

    let mut group = short_group(c, "extent");
    let region = BenchRegion::new("extent", capacity);
    region.fill(&random);
    let bitmap = ConcurrentBitmap::new(region.region.clone(), 0);
    for (count, align) in [(4u64, 1u64), (8, 8), (64, 64)] {
        if count == 64 {
            // Leave some whole free words for 64-blocks to find.
            for n in (capacity / 2)..(capacity / 2 + 64 * 4) {
                let _ = bitmap.free(n);
            }
        }
        group.bench_function(BenchmarkId::new("block", format!("{count}x{align}")), |b| {
            b.iter(|| {
                let first = bitmap.try_allocate_block(count, align).unwrap().unwrap();
                bitmap.free_block(black_box(first), count).unwrap();
            })
        });
    }
    for n in [1usize, 64] {
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("many", n), |b| {
            b.iter(|| {
                let numbers = bitmap.try_allocate_many(n).unwrap();
                bitmap.free_many(black_box(&numbers)).unwrap();
            })
        });
    }
    group.finish();
}

fn holders(c: &mut Criterion) {
    let mut group = short_group(c, "holders");
    let capacity = 1u64 << 14;
    let set = filled(capacity, 50);
    for (label, holders) in [("with", true), ("without", false)] {
        let region = BenchRegion::with_holders(label, capacity, holders);
        region.fill(&set);
        let bitmap = ConcurrentBitmap::new(region.region.clone(), 0);
        group.bench_function(label, |b| {
            b.iter(|| {
                let n = bitmap.allocate().unwrap();
                bitmap.free(black_box(n)).unwrap();
            })
        });
    }
    group.finish();
}

/// Runs `per_thread(iterations)` on `threads` threads at once; the wall time for all.
fn concurrently(threads: u64, iterations: u64, per_thread: impl Fn(u64) + Sync) -> Duration {
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| per_thread(iterations / threads));
        }
    });
    start.elapsed()
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("contention");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.sample_size(20);
    let capacity = 1u64 << 14;
    let region = BenchRegion::new("contention", capacity);
    let blocks = go_blocks(&vec![false; capacity as usize]);
    for threads in [1u64, 2] {
        for (label, policy) in [
            ("numballoc", Policy::Any),
            ("lowest", Policy::Lowest),
            ("cyclic", Policy::Cyclic),
        ] {
            group.bench_function(BenchmarkId::new(label, format!("{threads}-threads")), |b| {
                b.iter_custom(|iterations| {
                    concurrently(threads, iterations, |k| {
                        let bitmap =
                            ConcurrentBitmap::with_policy(region.region.clone(), 0, policy);
                        for _ in 0..k {
                            let n = bitmap.allocate().unwrap();
                            bitmap.free(black_box(n)).unwrap();
                        }
                    })
                })
            });
        }
        group.bench_function(BenchmarkId::new("go", format!("{threads}-threads")), |b| {
            b.iter_custom(|iterations| {
                concurrently(threads, iterations, |k| {
                    let go = GoBitmap::new(&blocks);
                    for _ in 0..k {
                        let n = go.allocate().unwrap();
                        go.free(black_box(n));
                    }
                })
            })
        });
    }
    group.finish();
}

/// Options that open a region as a holder of its own (a new scope: a new slot and lock).
fn own_holder() -> OpenOptions {
    OpenOptions {
        scope: Some(HolderScope::new(false)),
        ..OpenOptions::default()
    }
}

fn holder_lifecycle(c: &mut Criterion) {
    let mut group = short_group(c, "holder");
    for log2 in [14u32, 24] {
        let capacity = 1u64 << log2;
        let region = BenchRegion::new("register", capacity);
        group.bench_function(BenchmarkId::new("register", log2), |b| {
            b.iter(|| drop(Region::open(&region.name, capacity / 8, &own_holder()).unwrap()))
        });
    }
    let region = BenchRegion::new("reclaimlive", 1 << 14);
    let mut others = Vec::new();
    for k in [1usize, 16, 256] {
        while others.len() < k {
            others.push(Region::open(&region.name, (1 << 14) / 8, &own_holder()).unwrap());
        }
        group.bench_function(BenchmarkId::new("reclaim-live", k), |b| {
            b.iter(|| assert_eq!(region.region.reclaim().unwrap(), 0))
        });
    }
    drop(others);
    for log2 in [20u32, 24] {
        let capacity = 1u64 << log2;
        let region = BenchRegion::new("full", capacity);
        let bitmap = ConcurrentBitmap::new(region.region.clone(), 0);
        while bitmap.try_allocate_many(4096).is_some() {}
        while bitmap.try_allocate().is_some() {}
        group.bench_function(BenchmarkId::new("full", log2), |b| {
            b.iter(|| assert_eq!(bitmap.try_allocate(), None))
        });
    }
    for log2 in [14u32, 20, 24] {
        let name = format!("numballoc-bench-create-{}", std::process::id());
        group.bench_function(BenchmarkId::new("create", log2), |b| {
            b.iter(|| {
                let region = Region::open(&name, (1u64 << log2) / 8, &own_holder()).unwrap();
                destroy(&name, None).unwrap();
                drop(region);
            })
        });
    }
    group.finish();
}

fn floor(c: &mut Criterion) {
    let mut group = short_group(c, "floor");
    let word = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("cas-and", |b| {
        b.iter(|| {
            let current = word.load(std::sync::atomic::Ordering::Relaxed);
            let bit = (!current).trailing_zeros();
            let _ = word.compare_exchange(
                current,
                current | 1 << bit,
                std::sync::atomic::Ordering::Acquire,
                std::sync::atomic::Ordering::Relaxed,
            );
            word.fetch_and(!(1 << black_box(bit)), std::sync::atomic::Ordering::Release);
        })
    });
    group.finish();
}

fn scale(c: &mut Criterion) {
    let mut group = short_group(c, "scale");
    for log2 in [17u32, 20, 24] {
        let capacity = 1u64 << log2;
        let region = BenchRegion::new("lowest", capacity);
        let dense: Vec<bool> = (0..capacity).map(|n| n < capacity / 2).collect();
        region.fill(&dense);
        let bitmap = ConcurrentBitmap::with_policy(region.region.clone(), 0, Policy::Lowest);
        group.bench_function(BenchmarkId::new("lowest-dense-half", log2), |b| {
            b.iter(|| {
                let n = bitmap.allocate().unwrap();
                bitmap.free(black_box(n)).unwrap();
            })
        });
    }
    for log2 in [20u32, 24] {
        let capacity = 1u64 << log2;
        let region = BenchRegion::new("onerun", capacity);
        let run = capacity / 2;
        let set: Vec<bool> = (0..capacity)
            .map(|n| !(run..run + 64).contains(&n))
            .collect();
        region.fill(&set);
        let bitmap = ConcurrentBitmap::new(region.region.clone(), 0);
        group.bench_function(BenchmarkId::new("block64-one-run", log2), |b| {
            b.iter(|| {
                let first = bitmap.try_allocate_block(64, 64).unwrap().unwrap();
                bitmap.free_block(black_box(first), 64).unwrap();
            })
        });
    }
    for log2 in [20u32, 24] {
        let capacity = 1u64 << log2;
        let region = BenchRegion::new("full", capacity);
        let mut bitmap = ConcurrentBitmap::new(region.region.clone(), 0);
        while bitmap.try_allocate_many(4096).is_some() {}
        while bitmap.try_allocate().is_some() {}
        for (label, on) in [("reclaim-off", false), ("reclaim-on", true)] {
            bitmap.set_reclaim_when_full(on);
            group.bench_function(BenchmarkId::new(format!("full/{label}"), log2), |b| {
                b.iter(|| assert_eq!(bitmap.try_allocate(), None))
            });
        }
    }
    group.finish();
}

/// A queue region of `capacity` numbers in /dev/shm (with holders), removed when dropped.
fn queue_region(tag: &str, capacity: u64) -> (String, ConcurrentQueue) {
    let name = format!("numballoc-bench-{tag}-{}", std::process::id());
    let _ = destroy(&name, None);
    let queue = ConcurrentQueue::open(&name, capacity, &OpenOptions::default()).unwrap();
    (name, queue)
}

/// `ConcurrentQueue` on a region: its pair with half the numbers held, at 2^11..2^24, to set
/// beside `holders/with` (the bitmap's pair, same run); 1 and 2 threads churning pairs on one
/// queue of 2^14, each with its own handle (time per pair, combined), as in `contention/`.
fn queue(c: &mut Criterion) {
    let mut group = short_group(c, "queue");
    for log2 in [11u32, 14, 20, 24] {
        let (name, queue) = queue_region(&format!("queue-{log2}"), 1 << log2);
        for _ in 0..(1u64 << log2) / 2 {
            queue.allocate().unwrap();
        }
        group.bench_function(BenchmarkId::new("pair", log2), |b| {
            b.iter(|| {
                let n = queue.allocate().unwrap();
                queue.free(black_box(n)).unwrap();
            })
        });
        drop(queue);
        let _ = destroy(&name, None);
    }
    // A failed allocate on a full queue: it looks at every state before saying so.
    for log2 in [11u32, 14, 20] {
        let (name, queue) = queue_region(&format!("queue-full-{log2}"), 1 << log2);
        while queue.try_allocate().is_some() {}
        group.bench_function(BenchmarkId::new("full", log2), |b| {
            b.iter(|| assert_eq!(queue.try_allocate(), None))
        });
        drop(queue);
        let _ = destroy(&name, None);
    }
    let (name, first) = queue_region("queue-contention", 1 << 14);
    for threads in [1u64, 2] {
        group.bench_function(
            BenchmarkId::new("contention", format!("{threads}-threads")),
            |b| {
                b.iter_custom(|iterations| {
                    concurrently(threads, iterations, |k| {
                        let queue = ConcurrentQueue::new(first.region().clone()).unwrap();
                        for _ in 0..k {
                            let n = queue.allocate().unwrap();
                            queue.free(black_box(n)).unwrap();
                        }
                    })
                })
            },
        );
    }
    drop(first);
    let _ = destroy(&name, None);
    // The floor under any strict first-in first-out queue's 2-vs-1 figure: a pair that does
    // nothing but one fetch-and-add on a shared head and one on a shared tail (two cache lines),
    // which every allocate and every free must write in some form to be put in one order.
    let ends = [Line::default(), Line::default()];
    for threads in [1u64, 2] {
        group.bench_function(
            BenchmarkId::new("floor", format!("{threads}-threads")),
            |b| {
                b.iter_custom(|iterations| {
                    concurrently(threads, iterations, |k| {
                        for _ in 0..k {
                            black_box(ends[0].0.fetch_add(1, Ordering::AcqRel));
                            black_box(ends[1].0.fetch_add(1, Ordering::AcqRel));
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

/// A word alone on its cache line (and the next: the prefetcher fetches lines in pairs).
#[derive(Default)]
#[repr(align(128))]
struct Line(AtomicU64);

criterion_group!(
    benches,
    queue,
    pair,
    one_free,
    policies_blocks_batches,
    holders,
    contention,
    holder_lifecycle,
    floor,
    scale
);
criterion_main!(benches);
