//! Takes numbers from a shared region and prints them, one per line: a plain Rust program sharing
//! a region with Node processes (used by the Node tests).
//!
//! Usage: take NAME SIZE COUNT. Prints "ready", waits for a line on stdin, then takes COUNT
//! numbers (or until the region is full) and prints them, then an empty line; holds them until
//! stdin closes, and ends normally, giving them back.

use std::io::BufRead;
use std::sync::Arc;

use numballoc_core::{ConcurrentBitmap, OpenOptions, Region};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, size, count] = args.as_slice() else {
        return Err("usage: take NAME SIZE COUNT".into());
    };
    let region = Arc::new(Region::open(name, size.parse()?, &OpenOptions::default())?);
    let bitmap = ConcurrentBitmap::new(region, 0);
    println!("ready");
    std::io::stdin().lock().lines().next();
    let taken: Vec<String> = (0..count.parse::<u64>()?)
        .map_while(|_| bitmap.try_allocate())
        .map(|n| n.to_string())
        .collect();
    println!("{}\n", taken.join("\n"));
    for _ in std::io::stdin().lock().lines() {}
    Ok(())
}
