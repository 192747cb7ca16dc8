//! `peregrine bench mempool`: admission alone, in process, against the signature ceiling.
//!
//! The same pre-signed transfers (`senders` accounts, `per_sender` consecutive nonces each) are
//! measured three ways in every repeat, interleaved so a noisy moment hits all alike:
//! - `verify-N`: the raw ceiling, one ed25519 batch verification per 64 transactions on N
//!   threads, over transactions already decoded: no admission work at all;
//! - `admission-N`: the whole pipeline with N validation workers (decode, cheap checks, claims,
//!   batch verification, state checks, the committer), from raw bytes to every answer, into a
//!   fresh pool each time so nothing is remembered between runs.
//!
//! A second scenario feeds packets that fail the cheap checks (truncated bytes and transactions
//! for another chain) to measure what a bad packet costs.

use crate::report::{median, Report};
use crate::{load_key, BenchError};
use peregrine_execution::{apply_genesis, GenesisAccount};
use peregrine_mempool::{Admission, AdmissionConfig, Mempool, MempoolConfig, PipelineStats};
use peregrine_state::{Db, Snapshot};
use peregrine_types::sigcheck::invalid_signatures;
use peregrine_types::{Address, Encode, Payload, SecretKey, SignedTransaction, Transaction};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CHAIN_ID: u64 = 1;
/// Transactions per submission, as the binary ingest path gathers them.
const SUBMIT_BATCH: usize = 1_024;
/// Transactions per batch verification in the ceiling, as in one admission unit.
const VERIFY_CHUNK: usize = 64;

/// Options of the admission benchmark.
#[derive(Debug, Clone)]
pub struct MempoolOptions {
    /// Distinct senders.
    pub senders: u32,
    /// Consecutive nonces per sender.
    pub per_sender: u32,
    /// Timed runs per configuration.
    pub repeats: u32,
    /// Worker (and verification thread) counts to measure.
    pub workers: Vec<usize>,
}

fn sign_all(options: &MempoolOptions) -> Vec<SignedTransaction> {
    let keys: Vec<SecretKey> = (0..options.senders).map(load_key).collect();
    let to = Address([0x11; 20]);
    let sign = |key: &SecretKey, nonce: u64| {
        Transaction {
            chain_id: CHAIN_ID,
            sender: key.public_key(),
            nonce,
            fee: 1,
            payload: Payload::Transfer { to, amount: 1 },
            access: vec![],
        }
        .sign(key)
    };
    // Nonce-major order: each submission batch spreads over many senders, as real traffic does.
    let work: Vec<(usize, u64)> = (0..u64::from(options.per_sender))
        .flat_map(|n| (0..keys.len()).map(move |k| (k, n)))
        .collect();
    crate::parallel_map(&work, |&(k, n)| sign(&keys[k], n))
}

fn genesis(options: &MempoolOptions) -> Result<(tempfile::TempDir, Snapshot), BenchError> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let allocation: Vec<GenesisAccount> = (0..options.senders)
        .map(|i| GenesisAccount {
            address: load_key(i).public_key().address(),
            balance: 1_000_000_000,
        })
        .collect();
    let revision = apply_genesis(&db, &allocation)?;
    let snapshot = db.snapshot(revision)?;
    Ok((dir, snapshot))
}

/// The raw verification ceiling on `threads` threads, in transactions per second.
fn verify_ceiling(txs: &[SignedTransaction], threads: usize) -> Result<f64, BenchError> {
    let next = AtomicUsize::new(0);
    let bad = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let at = next.fetch_add(VERIFY_CHUNK, Ordering::Relaxed);
                if at >= txs.len() {
                    return;
                }
                let chunk: Vec<&SignedTransaction> =
                    txs[at..(at + VERIFY_CHUNK).min(txs.len())].iter().collect();
                bad.fetch_add(invalid_signatures(&chunk).len(), Ordering::Relaxed);
            });
        }
    });
    let rate = txs.len() as f64 / started.elapsed().as_secs_f64();
    match bad.load(Ordering::Relaxed) {
        0 => Ok(rate),
        n => Err(BenchError::Load(format!("{n} signatures failed to verify"))),
    }
}

/// One admission run: packets per second, how many were admitted, and the pipeline's counters.
struct Run {
    rate: f64,
    admitted: usize,
    stats: PipelineStats,
}

/// Admits `raw` through a fresh pipeline with `workers` workers.
fn admit(state: &Snapshot, raw: &[Vec<u8>], workers: usize, per_sender: u32) -> Run {
    let config = MempoolConfig {
        max_txs: raw.len() + 1,
        max_bytes: usize::MAX,
        max_per_sender: per_sender as usize + 1,
        ..MempoolConfig::new(CHAIN_ID)
    };
    let mempool = Arc::new(Mempool::new(config, state.clone()));
    let pipeline = AdmissionConfig {
        workers,
        max_in_flight: raw.len(),
    };
    let admission = Admission::start(mempool, pipeline);
    let batches: Vec<Vec<Vec<u8>>> = raw.chunks(SUBMIT_BATCH).map(<[_]>::to_vec).collect();
    let started = Instant::now();
    let pending: Vec<_> = batches.into_iter().map(|b| admission.submit(b)).collect();
    let admitted = pending
        .into_iter()
        .map(|p| p.wait().iter().filter(|r| r.is_ok()).count())
        .sum();
    let rate = raw.len() as f64 / started.elapsed().as_secs_f64();
    Run {
        rate,
        admitted,
        stats: admission.stats(),
    }
}

/// Packets that fail the cheap checks: alternately truncated and for another chain.
fn bad_packets(txs: &[SignedTransaction]) -> Vec<Vec<u8>> {
    txs.iter()
        .enumerate()
        .map(|(i, tx)| {
            let mut bytes = tx.encode();
            if i % 2 == 0 {
                bytes.truncate(bytes.len() / 2);
            } else {
                // The chain id is the first field of the body: the decoder still accepts it.
                bytes[0] ^= 0xff;
            }
            bytes
        })
        .collect()
}

/// Runs the benchmark and returns its figures.
pub fn run(
    options: &MempoolOptions,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let mut report = Report::new(command);
    let total = options.senders as usize * options.per_sender as usize;
    progress(&format!(
        "signing {total} transfers from {} senders",
        options.senders
    ));
    let (_dir, state) = genesis(options)?;
    let txs = sign_all(options);
    let raw: Vec<Vec<u8>> = txs.iter().map(Encode::encode).collect();
    let bad = bad_packets(&txs);
    let configs = options.workers.len();
    let mut verify = vec![Vec::new(); configs];
    let mut admission = vec![Vec::new(); configs];
    let mut garbage = Vec::new();
    let mut deferred = vec![0u64; configs];
    for repeat in 0..options.repeats {
        for (i, &n) in options.workers.iter().enumerate() {
            verify[i].push(verify_ceiling(&txs, n)?);
            let run = admit(&state, &raw, n, options.per_sender);
            if run.admitted != total {
                let missing = total - run.admitted;
                let message = format!("{missing} valid transfers refused");
                return Err(BenchError::Load(message));
            }
            admission[i].push(run.rate);
            deferred[i] += run.stats.deferred;
        }
        let workers = options.workers.iter().copied().max().unwrap_or(1);
        let run = admit(&state, &bad, workers, options.per_sender);
        if run.admitted != 0 {
            let message = format!("{} bad packets admitted", run.admitted);
            return Err(BenchError::Load(message));
        }
        garbage.push(run.rate);
        progress(&format!(
            "repeat {} of {} done",
            repeat + 1,
            options.repeats
        ));
    }
    record(
        &mut report,
        options,
        &mut verify,
        &mut admission,
        &mut garbage,
    );
    for (i, &n) in options.workers.iter().enumerate() {
        let per_run = deferred[i] as f64 / f64::from(options.repeats.max(1));
        let engine = format!("admission-{n}");
        report.push(
            "mempool",
            "valid-transfers",
            &engine,
            "deferred_per_run",
            per_run,
            "txs",
        );
    }
    Ok(report)
}

fn record(
    report: &mut Report,
    options: &MempoolOptions,
    verify: &mut [Vec<f64>],
    admission: &mut [Vec<f64>],
    garbage: &mut [f64],
) {
    let scenario = "valid-transfers";
    let metric = "tx_per_s_median";
    for (i, &n) in options.workers.iter().enumerate() {
        let ceiling = median(&mut verify[i]);
        let rate = median(&mut admission[i]);
        report.push(
            "mempool",
            scenario,
            &format!("verify-{n}"),
            metric,
            ceiling,
            "tx/s",
        );
        let engine = format!("admission-{n}");
        report.push("mempool", scenario, &engine, metric, rate, "tx/s");
        report.push(
            "mempool",
            scenario,
            &engine,
            "vs_verify_ceiling",
            rate / ceiling,
            "x",
        );
    }
    let first = options.workers.first().copied().unwrap_or(1);
    let base = report.value(scenario, &format!("admission-{first}"), metric);
    for &n in options.workers.iter().skip(1) {
        let engine = format!("admission-{n}");
        if let (Some(base), Some(rate)) = (base, report.value(scenario, &engine, metric)) {
            report.push(
                "mempool",
                scenario,
                &engine,
                &format!("speedup_vs_{first}_worker"),
                rate / base,
                "x",
            );
        }
    }
    let workers = options.workers.iter().copied().max().unwrap_or(1);
    let rate = median(garbage);
    let engine = format!("admission-{workers}");
    report.push(
        "mempool",
        "bad-packets",
        &engine,
        "packets_per_s_median",
        rate,
        "packets/s",
    );
    report.push(
        "mempool",
        "bad-packets",
        &engine,
        "us_per_packet",
        1e6 / rate,
        "us",
    );
}
