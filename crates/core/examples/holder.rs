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

use std::io::{BufRead, Write};
use std::sync::Arc;

use numballoc_core::{Allocator, ConcurrentBitmap, HolderScope, OpenOptions, Region};

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
