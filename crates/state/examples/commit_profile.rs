//! Times commits of random updates into a loaded trie, for profiling the commit path:
//! `cargo run --release --example commit_profile -p peregrine-state -- [keys] [blocks] [seq|pool]
//! [transfers per block] [inserts|pairs]`.
//!
//! By default the trie holds the keys `0..keys` (8-byte big-endian, as `bench state`'s accounts)
//! and each block makes transfers between them: two reads and two writes each. With `inserts`,
//! the trie holds `keys` random keys (as `bench state`'s workload 1) and each block inserts
//! twice the transfers' number of new random keys, with no reads. With `pairs`, each transfer
//! reads its two accounts with one `get_array`, as `bench state` does, instead of two `get`s.
//! After the blocks it prints the CPU time of each thread per block, the bytes written to storage
//! per logical byte written, and the time to reopen the database (its log replayed).

mod support;
use peregrine_state::Db;
use support::mix;

#[global_allocator]
static ALLOCATOR: peregrine_alloc::Allocator = peregrine_alloc::Allocator;
use std::time::Instant;

/// User and system clock ticks (10 ms) in a `/proc/.../stat` line: fields 14 and 15, counted
/// after the command name, which may hold spaces.
fn ticks(stat: &str) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum()
}

/// CPU seconds each thread of this process has used, by thread name (the commit pool's workers,
/// and any unnamed threads, summed under their names).
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let name = name.trim().trim_end_matches(|c: char| c.is_ascii_digit());
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        *by_name.entry(name.to_string()).or_insert(0.0) += ticks(&stat) / 100.0;
    }
    by_name
}

/// Bytes this process has caused to be written to storage so far (`/proc/self/io`).
fn device_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let blocks: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let sequential = args.get(3).is_some_and(|a| a == "seq");
    let per_block: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let inserts = args.get(5).is_some_and(|a| a == "inserts");
    let read_pairs = args.get(5).is_some_and(|a| a == "pairs");
    let loaded_key = |i: u64| if inserts { mix(i) } else { i };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..keys)
        .map(|i| {
            (
                loaded_key(i).to_be_bytes().to_vec(),
                1u64.to_le_bytes().to_vec(),
            )
        })
        .collect();
    pairs.sort();
    ws.put_sorted(pairs).expect("load");
    let mut head = db.commit(ws).expect("commit");
    db.finalize(head).expect("finalize");
    db.settle().expect("settle");
    let mut commit_s = 0.0;
    let mut write_s = 0.0;
    let mut finalize_s = 0.0;
    let cpu_before = cpu_by_thread();
    let device_before = device_bytes();
    for b in 0..blocks {
        let started = Instant::now();
        let mut ws = db.begin(head).expect("begin");
        for t in 0..per_block {
            if inserts {
                for new in [2 * t, 2 * t + 1] {
                    let key = mix(keys + 2 * per_block * b + new).to_be_bytes();
                    ws.put_slice(&key, &new.to_le_bytes()).expect("put");
                }
                continue;
            }
            let r = mix(b << 32 ^ t);
            let (from, to) = ((r % keys).to_be_bytes(), (mix(r) % keys).to_be_bytes());
            let (a, c) = if read_pairs {
                let [a, c] = ws.get_array([from.as_slice(), to.as_slice()]);
                (a, c)
            } else {
                (ws.get(&from), ws.get(&to))
            };
            let (a, c) = (
                a.map_or(0, |v| v.len() as u64),
                c.map_or(0, |v| v.len() as u64),
            );
            ws.put_slice(&from, &(a + b).to_le_bytes()).expect("put");
            ws.put_slice(&to, &(c + b).to_le_bytes()).expect("put");
        }
        write_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        head = if sequential {
            db.commit_sequential(ws)
        } else {
            db.commit(ws)
        }
        .expect("commit");
        // The trie is built on the committer thread; waiting for its root times the build
        // itself, with no overlap with the next block's reads.
        db.snapshot(head).expect("snapshot").commitment();
        commit_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        db.finalize(head).expect("finalize");
        finalize_s += started.elapsed().as_secs_f64();
    }
    // Settling counts the background frees of the last blocks in the CPU time.
    db.settle().expect("settle");
    let written = device_bytes() - device_before;
    let logical = blocks * per_block * 2 * 16;
    println!(
        "  device bytes written over the blocks and the settling after them: {written} ({:.1} per logical byte)",
        written as f64 / logical.max(1) as f64
    );
    let per_block_ms = |seconds: f64| seconds * 1e3 / blocks.max(1) as f64;
    let threads: Vec<(String, f64)> = cpu_by_thread()
        .into_iter()
        .map(|(name, after)| {
            let before = cpu_before.get(&name).copied().unwrap_or(0.0);
            (name, per_block_ms(after - before))
        })
        .filter(|(_, ms)| *ms > 0.0)
        .collect();
    let cpu_ms = threads.iter().fold(0.0, |sum, (_, ms)| sum + ms);
    println!(
        "{keys} keys, {per_block} {} per block: reads and writes {:.2} ms, commit {:.2} ms, finalize {:.2} ms, CPU {cpu_ms:.1} ms on all threads ({})",
        if inserts {
            "insert pairs"
        } else {
            "transfers"
        },
        per_block_ms(write_s),
        per_block_ms(commit_s),
        per_block_ms(finalize_s),
        if sequential {
            "one thread"
        } else {
            "commit pool"
        }
    );
    for (name, ms) in threads {
        println!("  CPU ms per block on {name}: {ms:.1}");
    }
    // A restart: the checkpointed trie loaded, then the log since that checkpoint replayed.
    let log_bytes: u64 = ["state.wal.0", "state.wal.1"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    drop(db);
    let started = Instant::now();
    let db = Db::open(dir.path()).expect("reopen");
    let reopen = started.elapsed().as_secs_f64();
    assert_eq!(db.finalized(), head, "reopened at the last finalized block");
    println!("  reopen {reopen:.2} s (log files {log_bytes} bytes)");
}
