//! Rewrites random keys of a fixed key set block after block and prints the node files' total size
//! as checkpoints accumulate, with compaction (the default) or without it (`append`):
//! `cargo run --release --example node_file_growth -p peregrine-state -- [keys] [blocks] [append]`.
//!
//! Checkpoints come every 4 MiB of log here (64 MiB by default), so that a short run shows many.

mod support;
use peregrine_state::{Db, Options, RevisionId};
use std::path::Path;
use std::time::Instant;
use support::mix;

#[global_allocator]
static ALLOCATOR: peregrine_alloc::Allocator = peregrine_alloc::Allocator;

const WRITES_PER_BLOCK: u64 = 10_000;

/// The total size of the node files in `dir`, and how many there are.
fn node_files(dir: &Path) -> (u64, usize) {
    std::fs::read_dir(dir)
        .expect("list the state directory")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.nodes"))
        .fold((0, 0), |(bytes, n), e| {
            (bytes + e.metadata().map_or(0, |m| m.len()), n + 1)
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (keys, blocks) = (arg(1, 1_000_000), arg(2, 300));
    let append = args.get(3).is_some_and(|a| a == "append");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        checkpoint_bytes: 4 << 20,
        compact_min_bytes: if append { u64::MAX } else { 64 << 20 },
        ..Options::default()
    };
    let db = Db::open_with(dir.path(), options).expect("open");
    let mut head = db.finalized();
    let started = Instant::now();
    for b in 0..keys.div_ceil(WRITES_PER_BLOCK) {
        let range = b * WRITES_PER_BLOCK..((b + 1) * WRITES_PER_BLOCK).min(keys);
        head = block(&db, head, range.map(|key| (key, 0)));
    }
    println!(
        "block  node files  bytes  seconds  ({keys} keys, compaction: {})",
        !append
    );
    let mut next = 0u64;
    for b in 1..=blocks {
        let writes = (0..WRITES_PER_BLOCK).map(|i| (mix(next + i) % keys, b));
        head = block(&db, head, writes);
        next += WRITES_PER_BLOCK;
        if b % 25 == 0 || b == blocks {
            db.settle().expect("settle");
            let (bytes, files) = node_files(dir.path());
            let secs = started.elapsed().as_secs_f64();
            println!("{b:5}  {files:10}  {bytes:>12}  {secs:7.1}");
        }
    }
}

/// Commits and finalizes one block of `(key, value)` writes on `head`.
fn block(db: &Db, head: RevisionId, writes: impl Iterator<Item = (u64, u64)>) -> RevisionId {
    let mut ws = db.begin(head).expect("begin");
    for (key, value) in writes {
        ws.put(key.to_be_bytes().to_vec(), value.to_le_bytes().to_vec())
            .expect("put");
    }
    let rev = db.commit(ws).expect("commit");
    db.finalize(rev).expect("finalize");
    rev
}
