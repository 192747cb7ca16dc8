//! Inserts random keys under a memory budget and prints the resident set size as it goes, to
//! check that the trie stays near its budget:
//! `cargo run --release --example memory_profile -p peregrine-state -- [keys] [budget MiB]`.

mod support;
use peregrine_state::{Db, Options};
use std::time::Instant;
use support::mix;

#[global_allocator]
static ALLOCATOR: peregrine_alloc::Allocator = peregrine_alloc::Allocator;

fn rss_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (pages * 4096) >> 20
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let budget_mib: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        memory_budget: budget_mib << 20,
        ..Options::default()
    };
    let db = Db::open_with(dir.path(), options).expect("open");
    let mut head = db.finalized();
    let started = Instant::now();
    let blocks = keys / 10_000;
    for b in 0..blocks {
        let mut ws = db.begin(head).expect("begin");
        for t in 0..10_000u64 {
            let i = b * 10_000 + t;
            ws.put_slice(&mix(i).to_be_bytes(), &i.to_le_bytes())
                .expect("put");
        }
        head = db.commit(ws).expect("commit");
        db.finalize(head).expect("finalize");
        if b % (blocks / 20).max(1) == 0 {
            println!(
                "{:>6.1} s: {:>9} keys, rss {:>6} MiB",
                started.elapsed().as_secs_f64(),
                (b + 1) * 10_000,
                rss_mib()
            );
        }
    }
    println!(
        "{keys} keys in {:.1} s, rss {} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );
}
