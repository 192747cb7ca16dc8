//! `peregrine bench state`: the state database against its peers, in one harness and one run.
//!
//! Every engine ([`engines`]) gets a fresh directory and the same operations, generated from the
//! same seeds; durable engines make every block durable with one fsync (Peregrine: `commit` then
//! `finalize`). Workloads:
//! 1. random 8-byte keys and values inserted in blocks of 10,000, at each requested key count:
//!    inserts/s over the whole load, then random reads of existing keys from the latest state;
//!    for durable engines also the bytes written to storage per logical byte inserted (16 a
//!    key, over the load and the settling after it), and the time to reopen the loaded
//!    directory and answer a first read. Engines take turns at each key count (all of them at
//!    1M keys, then all at 10M), so two engines compared ran minutes apart, not a whole run
//!    apart on a host whose speed drifts; with `rounds` above one each key count is run that
//!    many times per engine, a different engine first each round, and the medians reported;
//! 2. transfers: `accounts` balances loaded first (not timed), then blocks of 10,000 transfers,
//!    each reading two random balances and writing both;
//! 3. workload 2 while a reader thread reads random balances (Peregrine: four blocks behind the
//!    head; peers: their latest committed state): both throughputs;
//! 5. Peregrine's latencies: snapshot open, fork (begin on an old revision), commit (until the
//!    revision is readable, and until its state root is built), finalize.
//!
//! 4. beyond RAM ([`beyond`], run alone with `--beyond-ram`): a dataset larger than a memory cap
//!    that a cgroup enforces.
//!
//! Before each timed phase that follows another phase (the reads, the transfers, the transfers
//! with a reader), every engine settles ([`engines::Engine::settle`]): it finishes the background
//! work the phase before started (Peregrine: a checkpoint and frees; fjall: flushes and
//! compactions), so a phase is not charged for its predecessor's work. How long a load's
//! settling takes is reported beside it (`settle_after_load_s`): work the load left behind,
//! which its inserts/s does not include. Work a timed phase starts
//! itself stays in its own time: a timed load or run of transfers ends with
//! [`engines::Engine::finish`] (Peregrine: the tries of its pipelined commits built), inside the
//! clock.

pub mod beyond;
pub mod engines;

use crate::plot::{Chart, Series};
use crate::report::{median, percentile, Report};
use crate::{mix, BenchError};
use engines::Engine;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Operations per block.
pub const BLOCK_OPS: usize = 10_000;
/// Accounts written per loading block of workload 2 (not timed).
const LOAD_BLOCK: usize = 100_000;

/// Options of the state benchmark.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Engines to run, by name.
    pub engines: Vec<String>,
    /// Key counts of workload 1.
    pub keys: Vec<u64>,
    /// Random reads measured after each load of workload 1.
    pub reads: u64,
    /// Accounts of workloads 2 and 3.
    pub accounts: u64,
    /// Timed blocks of workloads 2 and 3.
    pub blocks: u32,
    /// Rounds of workload 1: each runs every engine at every key count once; figures are the
    /// medians over rounds.
    pub rounds: u32,
    /// Where the SVG plot goes.
    pub plot: Option<std::path::PathBuf>,
    /// Run only workload 4, beyond RAM, with these options.
    pub beyond: Option<beyond::BeyondOptions>,
}

fn fresh(name: &str) -> Result<(tempfile::TempDir, Box<dyn Engine>), BenchError> {
    fresh_capped(name, None)
}

fn fresh_capped(
    name: &str,
    memory: Option<u64>,
) -> Result<(tempfile::TempDir, Box<dyn Engine>), BenchError> {
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let engine = engines::open_capped(name, dir.path(), memory)?;
    Ok((dir, engine))
}

/// Bytes this process has caused to be written to storage so far.
fn device_bytes_written() -> Result<u64, BenchError> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BenchError::Load("no write_bytes in /proc/self/io".into()))
}

/// Reopens a durable engine's directory after workload 1 loaded `n` keys into it, as a node
/// restarting would: seconds from the open to the first read answered, that read checked (the
/// old handle is closed first, untimed; the files are in the page cache). `None` for
/// `BTreeMap`, which keeps nothing.
fn reopen_seconds(
    dir: &std::path::Path,
    engine: Box<dyn Engine>,
    n: u64,
) -> Result<Option<f64>, BenchError> {
    let name = engine.name();
    drop(engine);
    if name == "btreemap" {
        return Ok(None);
    }
    let started = Instant::now();
    let mut engine = engines::open_capped(name, dir, None)?;
    let i = n.saturating_sub(1);
    if engine.get(&mix(i).to_be_bytes())? != Some(i.to_le_bytes()) {
        return Err(BenchError::Load(format!("{name}: key {i} lost on reopen")));
    }
    Ok(Some(started.elapsed().as_secs_f64()))
}

/// One run of workload 1 at some key count for one engine.
struct Sample {
    inserts: f64,
    /// Seconds of background work the load left, finished outside its clock.
    settle: f64,
    reads: f64,
    /// Durable engines: bytes written to storage per logical byte, and seconds to reopen.
    durable: Option<(f64, f64)>,
}

/// Workload 1 at `n` keys for engine `name`, once, from a fresh directory; prints the figures
/// with `label`.
fn workload_one(
    name: &str,
    n: u64,
    reads: u64,
    label: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Sample, BenchError> {
    let (dir, mut engine) = fresh(name)?;
    let before = device_bytes_written()?;
    let Load {
        inserts,
        settle,
        reads,
        ..
    } = inserts_within(engine.as_mut(), n, reads, None)?;
    let written = device_bytes_written()?.saturating_sub(before);
    let per_logical = written as f64 / (n.max(1) * 16) as f64;
    let durable = reopen_seconds(dir.path(), engine, n)?.map(|reopen| (per_logical, reopen));
    let durable_text = match durable {
        Some((per_logical, reopen)) => {
            format!(", {per_logical:.1} device B/B, reopen {reopen:.2} s")
        }
        None => String::new(),
    };
    progress(&format!(
        "random {n:>11} keys {name:>10}{label}: {inserts:>10.0} inserts/s {reads:>10.0} reads/s, settle {settle:.2} s{durable_text}"
    ));
    Ok(Sample {
        inserts,
        settle,
        reads,
        durable,
    })
}

/// Records an engine's workload 1 figures at `n` keys into `report`: the medians of `samples`
/// (one per round), and with several rounds their least and greatest inserts and reads per
/// second. Returns the median inserts/s.
fn record_workload_one(report: &mut Report, name: &str, n: u64, samples: &[Sample]) -> f64 {
    let scenario = format!("random-{n}");
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let mut values: Vec<f64> = samples.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(&mut values))
    };
    let inserts = med(&|s| Some(s.inserts)).unwrap_or(0.0);
    let reads = med(&|s| Some(s.reads)).unwrap_or(0.0);
    report.push("state", &scenario, name, "inserts_per_s", inserts, "ops/s");
    report.push("state", &scenario, name, "reads_per_s", reads, "ops/s");
    if samples.len() > 1 {
        let spread = |values: &mut dyn Iterator<Item = f64>| {
            values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)))
        };
        for (metric, (low, high)) in [
            (
                "inserts_per_s",
                spread(&mut samples.iter().map(|s| s.inserts)),
            ),
            ("reads_per_s", spread(&mut samples.iter().map(|s| s.reads))),
        ] {
            let min = format!("{metric}_min");
            report.push("state", &scenario, name, &min, low, "ops/s");
            let max = format!("{metric}_max");
            report.push("state", &scenario, name, &max, high, "ops/s");
        }
    }
    if let Some(per_logical) = med(&|s| s.durable.map(|d| d.0)) {
        let metric = "device_bytes_per_logical_byte";
        report.push("state", &scenario, name, metric, per_logical, "x");
    }
    if let Some(reopen) = med(&|s| s.durable.map(|d| d.1)) {
        report.push("state", &scenario, name, "reopen_s", reopen, "s");
    }
    let settle = med(&|s| Some(s.settle)).unwrap_or(0.0);
    report.push("state", &scenario, name, "settle_after_load_s", settle, "s");
    inserts
}

/// Workload 1 for every engine at every key count, `rounds` times: at each key count every
/// engine runs once per round, a different engine first each round, so that engines compared
/// with each other ran minutes apart at most, whatever the host's speed did over the whole run.
/// Returns each engine's median inserts/s per key count, for the plot.
fn workload_one_rounds(
    report: &mut Report,
    options: &StateOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Series>, BenchError> {
    let engines = &options.engines;
    let rounds = options.rounds.max(1) as usize;
    let mut curves: Vec<Series> = engines
        .iter()
        .map(|name| Series {
            name: name.clone(),
            points: Vec::new(),
        })
        .collect();
    for &n in &options.keys {
        let mut samples: Vec<Vec<Sample>> = engines.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            let label = if rounds > 1 {
                format!(" (round {} of {rounds})", round + 1)
            } else {
                String::new()
            };
            for k in 0..engines.len() {
                let e = (k + round) % engines.len();
                let sample = workload_one(&engines[e], n, options.reads, &label, progress)?;
                samples[e].push(sample);
            }
        }
        for (e, name) in engines.iter().enumerate() {
            let inserts = record_workload_one(report, name, n, &samples[e]);
            if rounds > 1 {
                progress(&format!(
                    "random {n:>11} keys {name:>10}: median of {rounds}: {inserts:>10.0} inserts/s"
                ));
            }
            curves[e].points.push((n as f64, inserts));
        }
    }
    Ok(curves)
}

/// What a load of random keys measured.
pub(crate) struct Load {
    /// Keys inserted.
    pub keys: u64,
    /// Keys inserted per second, from the first block until the last is durable and readable.
    pub inserts: f64,
    /// Seconds the engine then took to finish the background work the load left (checkpoints,
    /// frees; flushes, compactions), outside the clock of `inserts`.
    pub settle: f64,
    /// Random reads of inserted keys per second, after the settling.
    pub reads: f64,
}

/// Inserts up to `n` random keys in blocks (stopping early once `limit` has passed), lets the
/// engine settle, then reads random inserted keys back.
fn inserts_within(
    engine: &mut dyn Engine,
    n: u64,
    reads: u64,
    limit: Option<Duration>,
) -> Result<Load, BenchError> {
    let started = Instant::now();
    let mut next = 0u64;
    while next < n && limit.is_none_or(|limit| started.elapsed() < limit) {
        let end = (next + BLOCK_OPS as u64).min(n);
        engine.block(&mut |block| {
            for i in next..end {
                block.put(&mix(i).to_be_bytes(), &i.to_le_bytes())?;
            }
            Ok(())
        })?;
        next = end;
    }
    engine.finish()?;
    let inserts = next as f64 / started.elapsed().as_secs_f64();
    let settling = Instant::now();
    engine.settle()?;
    let settle = settling.elapsed().as_secs_f64();
    let started = Instant::now();
    for r in 0..reads {
        let i = mix(r ^ 0x5eed) % next.max(1);
        if engine.get(&mix(i).to_be_bytes())? != Some(i.to_le_bytes()) {
            return Err(BenchError::Load(format!("{}: key {i} lost", engine.name())));
        }
    }
    Ok(Load {
        keys: next,
        inserts,
        settle,
        reads: reads as f64 / started.elapsed().as_secs_f64(),
    })
}

fn account_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// Loads `accounts` balances of 1,000,000 each (not timed).
fn load_accounts(engine: &mut dyn Engine, accounts: u64) -> Result<(), BenchError> {
    let mut next = 0u64;
    while next < accounts {
        let end = (next + LOAD_BLOCK as u64).min(accounts);
        engine.block(&mut |block| {
            for i in next..end {
                block.put(&account_key(i), &1_000_000u64.to_le_bytes())?;
            }
            Ok(())
        })?;
        next = end;
    }
    Ok(())
}

/// Workload 2: `blocks` blocks of transfers; returns transfers/s per block.
fn transfers(
    engine: &mut dyn Engine,
    accounts: u64,
    blocks: u32,
    seed: u64,
) -> Result<Vec<f64>, BenchError> {
    let mut rates = Vec::with_capacity(blocks as usize);
    for b in 0..u64::from(blocks) {
        let started = Instant::now();
        engine.block(&mut |block| {
            for t in 0..BLOCK_OPS as u64 {
                let r = mix(seed ^ (b << 32) ^ t);
                let (from, to) = (r % accounts, mix(r) % accounts);
                let balance = |v: Option<[u8; 8]>| v.map_or(0, u64::from_le_bytes);
                let (a, c) = block.get_pair(&account_key(from), &account_key(to))?;
                let (a, c) = (balance(a), balance(c));
                if from != to && a > 0 {
                    block.put(&account_key(from), &(a - 1).to_le_bytes())?;
                    block.put(&account_key(to), &(c + 1).to_le_bytes())?;
                }
            }
            Ok(())
        })?;
        if b + 1 == u64::from(blocks) {
            // The last block is charged for whatever the engine still owes on all of them.
            engine.finish()?;
        }
        rates.push(BLOCK_OPS as f64 / started.elapsed().as_secs_f64());
    }
    Ok(rates)
}

/// Workload 3: workload 2 with a reader thread; returns (writer transfers/s, reader reads/s).
fn transfers_with_reader(
    engine: &mut dyn Engine,
    accounts: u64,
    blocks: u32,
) -> Result<Option<(f64, f64)>, BenchError> {
    let Some(mut reader) = engine.reader() else {
        return Ok(None);
    };
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let started = Instant::now();
    let (writer, read_result) = std::thread::scope(|scope| {
        let handle = scope.spawn(|| -> Result<(), BenchError> {
            let mut r = 0u64;
            while !stop.load(Ordering::Relaxed) {
                reader(&account_key(mix(r) % accounts))?;
                r += 1;
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        let writer = transfers(engine, accounts, blocks, 0xfeed);
        stop.store(true, Ordering::Relaxed);
        let read_result = handle
            .join()
            .unwrap_or_else(|_| Err(BenchError::Load("reader panicked".into())));
        (writer, read_result)
    });
    let elapsed = started.elapsed().as_secs_f64();
    read_result?;
    let mut rates = writer?;
    Ok(Some((
        median(&mut rates),
        reads.load(Ordering::Relaxed) as f64 / elapsed,
    )))
}

/// Workload 5: Peregrine's operation latencies in microseconds, as (name, samples).
fn latencies(accounts: u64, blocks: u32) -> Result<Vec<(&'static str, Vec<f64>)>, BenchError> {
    let dir = tempfile::tempdir()?;
    let db = peregrine_state::Db::open(dir.path())?;
    let mut ws = db.begin(db.finalized())?;
    let pairs = (0..accounts.min(1_000_000))
        .map(|i| (account_key(i).to_vec(), 1u64.to_le_bytes().to_vec()))
        .collect();
    ws.put_sorted(pairs)?;
    let mut head = db.commit(ws)?;
    db.finalize(head)?;
    // The load's trie is built before the clock starts, not inside the first commit's wait.
    db.snapshot(head)?.commitment();
    let mut samples: [(&str, Vec<f64>); 5] = [
        ("snapshot_open_us", Vec::new()),
        ("fork_create_us", Vec::new()),
        ("commit_us", Vec::new()),
        ("commit_to_root_us", Vec::new()),
        ("finalize_us", Vec::new()),
    ];
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    for b in 0..u64::from(blocks) {
        let t = Instant::now();
        let snapshot = db.snapshot(head)?;
        samples[0].1.push(us(t));
        let t = Instant::now();
        let fork = db.begin(head)?;
        samples[1].1.push(us(t));
        drop((snapshot, fork));
        let mut ws = db.begin(head)?;
        for t in 0..BLOCK_OPS as u64 {
            ws.put(
                account_key(mix(b << 32 ^ t) % accounts).to_vec(),
                b.to_le_bytes().to_vec(),
            )?;
        }
        // `commit` returns once the revision is readable; its trie, and so its state root, is
        // built on the committer thread, waited for here.
        let t = Instant::now();
        head = db.commit(ws)?;
        samples[2].1.push(us(t));
        db.snapshot(head)?.commitment();
        samples[3].1.push(us(t));
        let t = Instant::now();
        db.finalize(head)?;
        samples[4].1.push(us(t));
    }
    Ok(samples.into_iter().collect())
}

/// Runs the workloads for every engine and returns the figures.
pub fn run(
    options: &StateOptions,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let mut report = Report::new(command);
    if let Some(beyond) = &options.beyond {
        beyond::run(&mut report, &options.engines, beyond, progress)?;
        return Ok(report);
    }
    let curves = workload_one_rounds(&mut report, options, progress)?;
    for name in &options.engines {
        transfer_workloads(&mut report, options, name, progress)?;
    }
    if options.engines.iter().any(|e| e == "peregrine") {
        for (metric, mut samples) in latencies(options.accounts, options.blocks.max(20))? {
            let (p50, p99) = (
                percentile(&mut samples, 50.0),
                percentile(&mut samples, 99.0),
            );
            progress(&format!("peregrine {metric}: p50 {p50:.1} p99 {p99:.1}"));
            let base = metric.trim_end_matches("_us");
            report.push(
                "state",
                "latency",
                "peregrine",
                &format!("{base}_p50_us"),
                p50,
                "us",
            );
            report.push(
                "state",
                "latency",
                "peregrine",
                &format!("{base}_p99_us"),
                p99,
                "us",
            );
        }
    }
    add_ratios(&mut report, options);
    if let Some(path) = &options.plot {
        let chart = Chart {
            title: "peregrine bench state: random 8-byte inserts, blocks of 10,000".into(),
            x_label: "keys".into(),
            y_label: "inserts per second".into(),
            series: curves,
        };
        std::fs::write(path, crate::plot::svg(&[chart]))?;
        progress(&format!("plot written to {}", path.display()));
    }
    Ok(report)
}

fn transfer_workloads(
    report: &mut Report,
    options: &StateOptions,
    name: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let (_dir, mut engine) = fresh(name)?;
    progress(&format!(
        "loading {} accounts into {name}",
        options.accounts
    ));
    load_accounts(engine.as_mut(), options.accounts)?;
    engine.settle()?;
    let mut rates = transfers(engine.as_mut(), options.accounts, options.blocks, 7)?;
    let rate = median(&mut rates);
    progress(&format!("transfers {name:>10}: {rate:>10.0} transfers/s"));
    report.push(
        "state",
        "transfers",
        name,
        "transfers_per_s_median",
        rate,
        "tx/s",
    );
    engine.settle()?;
    if let Some((writer, reads)) =
        transfers_with_reader(engine.as_mut(), options.accounts, options.blocks)?
    {
        progress(&format!("with reader {name:>8}: writer {writer:>10.0} transfers/s, reader {reads:>10.0} reads/s"));
        report.push(
            "state",
            "transfers-with-reader",
            name,
            "writer_transfers_per_s_median",
            writer,
            "tx/s",
        );
        report.push(
            "state",
            "transfers-with-reader",
            name,
            "reader_reads_per_s",
            reads,
            "ops/s",
        );
        report.push(
            "state",
            "transfers-with-reader",
            name,
            "writer_vs_alone",
            writer / rate,
            "x",
        );
    }
    Ok(())
}

/// Peregrine against the best durable peer and against `BTreeMap`, per workload.
fn add_ratios(report: &mut Report, options: &StateOptions) {
    let peers = ["redb", "lmdb", "fjall"];
    let mut rows: Vec<(String, &str)> = options
        .keys
        .iter()
        .flat_map(|n| {
            let scenario = format!("random-{n}");
            [
                (scenario.clone(), "inserts_per_s"),
                (scenario, "reads_per_s"),
            ]
        })
        .collect();
    rows.push(("transfers".into(), "transfers_per_s_median"));
    for (scenario, metric) in rows {
        let Some(ours) = report.value(&scenario, "peregrine", metric) else {
            continue;
        };
        let best = peers
            .iter()
            .filter_map(|p| report.value(&scenario, p, metric))
            .fold(None, |best: Option<f64>, v| {
                Some(best.map_or(v, |b| b.max(v)))
            });
        if let Some(best) = best {
            report.push(
                "state",
                &scenario,
                "peregrine",
                &format!("{metric}_vs_best_durable_peer"),
                ours / best,
                "x",
            );
        }
        if let Some(btree) = report.value(&scenario, "btreemap", metric) {
            report.push(
                "state",
                &scenario,
                "peregrine",
                &format!("{metric}_vs_btreemap"),
                ours / btree,
                "x",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds of workload 1 run every engine once per round at each key count, a different
    /// engine first each round, and record medians between the least and greatest figures.
    #[test]
    fn rounds_take_turns_and_record_medians() {
        let options = StateOptions {
            engines: vec!["btreemap".into(), "peregrine".into(), "fjall".into()],
            keys: vec![2_000],
            reads: 100,
            accounts: 100,
            blocks: 1,
            rounds: 3,
            plot: None,
            beyond: None,
        };
        let mut report = Report::new("test".into());
        let mut lines = Vec::new();
        let curves = workload_one_rounds(&mut report, &options, &mut |line| {
            lines.push(line.to_string())
        })
        .expect("rounds");
        let first_of_round = |round: usize| {
            let line = lines
                .iter()
                .find(|l| l.contains(&format!("(round {round} of 3)")))
                .expect("a line per round");
            options
                .engines
                .iter()
                .find(|e| line.contains(&format!(" {e} (round")))
                .cloned()
        };
        let firsts: Vec<_> = (1..=3).map(first_of_round).collect();
        assert_eq!(
            firsts,
            ["btreemap", "peregrine", "fjall"].map(|e| Some(e.to_string()))
        );
        for name in &options.engines {
            let value = |metric| report.value("random-2000", name, metric).expect(metric);
            let (low, median, high) = (
                value("inserts_per_s_min"),
                value("inserts_per_s"),
                value("inserts_per_s_max"),
            );
            assert!(
                low <= median && median <= high,
                "{name}: {low} {median} {high}"
            );
            assert!(report
                .value("random-2000", name, "settle_after_load_s")
                .is_some());
        }
        assert_eq!(curves.len(), 3);
        assert!(curves.iter().all(|c| c.points.len() == 1));
    }

    /// Every engine stores what it is given and ends the transfer workload with the same
    /// balances, so the figures compare engines doing the same work.
    #[test]
    fn every_engine_does_the_same_work() {
        let accounts = 500u64;
        let mut finals = Vec::new();
        for name in engines::ENGINES {
            let (_dir, mut engine) = fresh(name).expect("open");
            inserts_within(engine.as_mut(), 3_000, 500, None).expect("inserts read back");
            let (_dir, mut engine) = fresh(name).expect("open");
            load_accounts(engine.as_mut(), accounts).expect("load");
            transfers(engine.as_mut(), accounts, 2, 7).expect("transfers");
            let balances: Vec<u64> = (0..accounts)
                .map(|i| {
                    let v = engine.get(&account_key(i)).expect("get");
                    u64::from_le_bytes(v.expect("every account exists"))
                })
                .collect();
            assert_eq!(balances.iter().sum::<u64>(), accounts * 1_000_000, "{name}");
            finals.push((name, balances));
        }
        for (name, balances) in &finals[1..] {
            assert!(
                balances == &finals[0].1,
                "{name} differs from {}",
                finals[0].0
            );
        }
    }
}
