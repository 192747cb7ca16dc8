//! Times random point reads of a loaded trie, one key at a time and in batches through
//! `Snapshot::get_many`, which walks a batch's paths together:
//! `cargo run --release --example read_profile -p peregrine-state -- [keys] [reads]`.
//!
//! The trie holds `keys` random 8-byte keys, as `bench state`'s workload 1 loads them; every
//! read asks for a present key, and each round checks that all of them were found.

mod support;
use peregrine_state::{Db, Snapshot};
use std::time::Instant;
use support::mix;

#[global_allocator]
static ALLOCATOR: peregrine_alloc::Allocator = peregrine_alloc::Allocator;

/// Reads `keys` in batches of `batch` (1: one `get` each) and returns reads per second.
fn reads_per_s(snapshot: &Snapshot, keys: &[[u8; 8]], batch: usize) -> f64 {
    let started = Instant::now();
    let found = if batch == 1 {
        keys.iter()
            .filter(|k| snapshot.get(&k[..]).is_some())
            .count()
    } else {
        keys.chunks(batch)
            .map(|chunk| {
                let refs: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
                snapshot.get_many(&refs).iter().flatten().count()
            })
            .sum()
    };
    let rate = keys.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(found, keys.len(), "a loaded key was not found");
    rate
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000_000);
    let reads = args.get(1).copied().unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (mix(i).to_be_bytes().to_vec(), i.to_le_bytes().to_vec()))
        .collect();
    pairs.sort();
    ws.put_sorted(pairs).expect("load");
    let head = db.commit(ws).expect("commit");
    db.finalize(head).expect("finalize");
    db.settle().expect("settle");
    let snapshot = db.snapshot(head).expect("snapshot");
    let keys: Vec<[u8; 8]> = (0..reads)
        .map(|r| mix(mix(r ^ 0x5eed) % n.max(1)).to_be_bytes())
        .collect();
    for round in 1..=2 {
        let line: Vec<String> = [1, 2, 8, 64]
            .iter()
            .map(|&batch| {
                format!(
                    "batch {batch}: {:.0}/s",
                    reads_per_s(&snapshot, &keys, batch)
                )
            })
            .collect();
        println!("{n} keys, round {round}: {}", line.join(", "));
    }
}
