//! Holds numbers of a shared region in the ways a process can outlive its first thread or its
//! parent: a plain Rust program the Node tests drive to check that a live holder's numbers are
//! never reclaimed.
//!
//! Usage: holder NAME SIZE COUNT MODE. Takes COUNT numbers, prints `numbers N,N,...`, and then by
//! MODE:
//! - `plain`: waits for stdin to close, then exits normally (giving its numbers back).
//! - `leader-exits`: the main thread exits (`pthread_exit`) while another thread keeps the
//!   process running until stdin closes.
//! - `fork`: forks without exec. The child takes COUNT numbers of its own, sharing its parent's
//!   holder, prints `child numbers N,...`, and waits for stdin to close; the parent ends
//!   normally at once (dropping its region, returning from `main`).
//! - `fork-own`: as `fork`, but the child first takes a holder of its own: it drops the region it
//!   inherited and opens the region again in a new scope. Its parent's numbers then come back
//!   when the parent exits, and the child's stay.
//! - `register-churn`: after the first numbers, forever: open the region as a new holder (a new
//!   scope: a slot taken, dead holders reclaimed), take COUNT numbers, end (the slot given back
//!   with its numbers). For torture: killed at any moment, it must leave nothing behind that a
//!   reclaim does not clean up, and take nothing from a live holder.
//! - `queue-churn`: as `register-churn` on a queue region of SIZE numbers (made by
//!   `ConcurrentQueue.open`), taking and freeing numbers as it goes. While it holds `n`, the
//!   file `$NUMBALLOC_WITNESS/n` holds its pid (created exclusively; a file left by a dead
//!   holder is taken over); a file of a live process means two live holders at once: it prints
//!   `overlap N PID` and exits with status 3.

use std::io::{BufRead, Write};
use std::sync::Arc;

use numballoc_core::{
    Allocator, ConcurrentBitmap, ConcurrentQueue, HolderScope, OpenOptions, Region,
};

fn take(bitmap: &ConcurrentBitmap, count: u64) -> String {
    let numbers: Vec<String> = (0..count)
        .map_while(|_| bitmap.allocate().ok())
        .map(|n| n.to_string())
        .collect();
    numbers.join(",")
}

fn wait_for_stdin_to_close() {
    for _ in std::io::stdin().lock().lines().map_while(Result::ok) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, size, count, mode] = args.as_slice() else {
        return Err(
            "usage: holder NAME SIZE COUNT plain|leader-exits|fork|fork-own|register-churn".into(),
        );
    };
    let (size, count): (u64, u64) = (size.parse()?, count.parse()?);
    if mode == "queue-churn" {
        return queue_churn(name, size, count);
    }
    let region = Arc::new(Region::open(name, size, &OpenOptions::default())?);
    let bitmap = ConcurrentBitmap::new(region, 0);
    println!("numbers {}", take(&bitmap, count));
    std::io::stdout().flush()?;
    match mode.as_str() {
        "plain" => wait_for_stdin_to_close(),
        "leader-exits" => {
            std::thread::spawn(move || {
                wait_for_stdin_to_close();
                drop(bitmap);
                std::process::exit(0);
            });
            // The exit system call itself, which ends only the calling thread (exit(3) and
            // pthread_exit would run the process's or the thread's clean-up first).
            // SAFETY: this thread owns nothing the other one needs.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!("the main thread has exited");
        }
        "fork" | "fork-own" => {
            // SAFETY: this process has one thread here, so the child may run any code.
            match unsafe { libc::fork() } {
                -1 => return Err(std::io::Error::last_os_error().into()),
                0 => {
                    let bitmap = if mode == "fork-own" {
                        drop(bitmap); // lets go of the parent's holder slot
                        let options = OpenOptions {
                            scope: Some(HolderScope::new(false)),
                            ..OpenOptions::default()
                        };
                        ConcurrentBitmap::new(Arc::new(Region::open(name, size, &options)?), 0)
                    } else {
                        bitmap
                    };
                    println!("child numbers {}", take(&bitmap, count));
                    std::io::stdout().flush()?;
                    wait_for_stdin_to_close();
                }
                // The parent ends at once, normally: its region is dropped, which gives back
                // nothing, since the child shares its holder.
                _ => drop(bitmap),
            }
        }
        "register-churn" => loop {
            let options = OpenOptions {
                scope: Some(HolderScope::new(false)),
                ..OpenOptions::default()
            };
            let holder = ConcurrentBitmap::new(Arc::new(Region::open(name, size, &options)?), 0);
            for _ in 0..count {
                let _ = holder.try_allocate();
            }
        },
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(())
}

/// Whether `pid` can still touch a region: not a zombie, and with its memory (a killed process
/// gives up its memory, then its descriptors and so its holder lock, while /proc still lists it).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
        return true;
    };
    let fields: Vec<&str> = after.split(' ').collect();
    let zombie = fields
        .first()
        .is_some_and(|state| state.starts_with(['Z', 'X']));
    let vsize: u64 = fields.get(23 - 3).and_then(|v| v.parse().ok()).unwrap_or(1);
    !zombie && vsize > 0
}

fn queue_churn(name: &str, capacity: u64, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::ErrorKind;
    let witness = std::path::PathBuf::from(std::env::var("NUMBALLOC_WITNESS")?);
    let me = std::process::id();
    let hold = |n: u64| -> std::io::Result<()> {
        let file = witness.join(n.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
        {
            Ok(mut f) => f.write_all(me.to_string().as_bytes()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let previous: u32 = std::fs::read_to_string(&file)?.parse().unwrap_or(0);
                if previous != 0 && previous != me && alive(previous) {
                    println!("overlap {n} {previous}");
                    std::process::exit(3);
                }
                std::fs::write(&file, me.to_string())
            }
            Err(e) => Err(e),
        }
    };
    println!("numbers ");
    std::io::stdout().flush()?;
    loop {
        let options = OpenOptions {
            scope: Some(HolderScope::new(false)),
            ..OpenOptions::default()
        };
        let queue = ConcurrentQueue::open(name, capacity, &options)?;
        let mut held = Vec::new();
        for _ in 0..count {
            if let Some(n) = queue.try_allocate() {
                hold(n)?;
                held.push(n);
            }
            if held.len() > 1 {
                let n = held.remove(0);
                std::fs::remove_file(witness.join(n.to_string()))?;
                queue.free(n)?;
            }
        }
        for n in held {
            std::fs::remove_file(witness.join(n.to_string()))?;
            queue.free(n)?;
        }
    }
}
