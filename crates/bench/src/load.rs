//! `peregrine bench load`: an open-loop load generator against a running node.
//!
//! 1. Funds `accounts` fresh accounts (keys derived from a run seed, so every run starts from
//!    nonce 0) from a funder key, in waves the funder's per-sender pool limit allows.
//! 2. Signs every transfer of the whole run before the clock starts.
//! 3. Sends each transaction at its scheduled time over the binary submission path, whatever
//!    the node answers (open loop: a slow node does not lower the offered load), while a reader
//!    thread collects the answers and a tracker thread follows finalized blocks over JSON-RPC.
//! 4. Folds everything into one row per second ([`crate::timeline`]), writes a CSV and an SVG
//!    plot, and reports totals, the knee and latency percentiles.

use crate::report::{percentile, Report};
use crate::timeline::{self, TxTrace};
use crate::BenchError;
use parking_lot::Mutex;
use peregrine_rpc::{ingest, BlockTag, PeregrineApiClient};
use peregrine_types::crypto::hash_tagged;
use peregrine_types::{Encode, Hash, Payload, SecretKey, SignedTransaction, Transaction};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The most transfers the funder has in flight at once: below the pool's per-sender cap.
const FUNDING_WAVE: usize = 1_000;
/// How long to wait for a funding wave to finalize.
const FUNDING_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the tracker asks for newly finalized blocks.
const TRACK_POLL: Duration = Duration::from_millis(50);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Seconds of the sliding window the knee is judged over: several blocks, so that one block
/// landing in the next second does not look like falling behind.
const KNEE_WINDOW_S: usize = 3;

/// When transactions are offered.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// `rate` transactions per second for `seconds`.
    Constant {
        /// Transactions per second.
        rate: f64,
        /// Duration.
        seconds: f64,
    },
    /// An exponential ramp from `from` to `to` transactions per second over `seconds`.
    Ramp {
        /// Starting rate.
        from: f64,
        /// Final rate.
        to: f64,
        /// Duration.
        seconds: f64,
    },
}

impl Schedule {
    /// The send time of every transaction, in seconds since the start.
    pub fn times(&self) -> Vec<f64> {
        match *self {
            Schedule::Constant { rate, seconds } => {
                let n = (rate * seconds).floor() as usize;
                (0..n).map(|i| i as f64 / rate).collect()
            }
            Schedule::Ramp { from, to, seconds } => {
                // rate(t) = from * k^(t/T) with k = to/from; the i-th send is where the integral
                // of the rate reaches i: t(i) = T/ln k * ln(1 + i ln k / (from T)).
                let ln_k = (to / from).ln();
                if ln_k.abs() < 1e-9 {
                    return Schedule::Constant {
                        rate: from,
                        seconds,
                    }
                    .times();
                }
                let total = from * seconds / ln_k * ((to / from) - 1.0);
                (0..total.floor() as usize)
                    .map(|i| seconds / ln_k * (1.0 + i as f64 * ln_k / (from * seconds)).ln())
                    .collect()
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Schedule::Constant { .. } => "constant",
            Schedule::Ramp { .. } => "ramp",
        }
    }
}

/// Options of a load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The node's JSON-RPC URL (HTTP).
    pub rpc: String,
    /// The node's binary submission address.
    pub ingest: SocketAddr,
    /// The funded key that pays for the load accounts.
    pub funder: SecretKey,
    /// Load accounts (senders).
    pub accounts: u32,
    /// When transactions are offered.
    pub schedule: Schedule,
    /// Most seconds to wait after the last send for the accepted transactions to finalize.
    pub drain_s: u64,
    /// Where the CSV and SVG go.
    pub out: PathBuf,
    /// Seed of the run's account keys; runs with different seeds use different accounts.
    pub seed: u64,
}

fn load_account(seed: u64, index: u32) -> SecretKey {
    let derived = hash_tagged(
        "peregrine/bench/load-account",
        &[&seed.to_le_bytes(), &index.to_le_bytes()],
    );
    SecretKey::from_seed(derived.0)
}

struct Chain {
    id: u64,
    fee: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn rpc_error(what: &str) -> impl Fn(jsonrpsee::core::ClientError) -> BenchError + '_ {
    move |e| BenchError::Load(format!("{what}: {e}"))
}

fn transfer(
    chain: &Chain,
    from: &SecretKey,
    nonce: u64,
    to: &SecretKey,
    amount: u128,
) -> SignedTransaction {
    Transaction {
        chain_id: chain.id,
        sender: from.public_key(),
        nonce,
        fee: chain.fee,
        payload: Payload::Transfer {
            to: to.public_key().address(),
            amount,
        },
        access: vec![],
    }
    .sign(from)
}

/// Sends `txs` over one connection and fails unless every one is admitted.
fn send_all(addr: SocketAddr, txs: &[SignedTransaction]) -> Result<(), BenchError> {
    let (mut tx_half, mut rx_half) = ingest::connect(addr)?;
    for tx in txs {
        tx_half.send(&tx.encode())?;
    }
    tx_half.flush()?;
    for tx in txs {
        if let Err(reason) = rx_half.recv()? {
            let hash = tx.hash();
            return Err(BenchError::Load(format!(
                "funding transfer {hash} refused: {reason}"
            )));
        }
    }
    Ok(())
}

/// Funds each account with `amounts[i]`, in waves, waiting for each wave to finalize.
fn fund(
    options: &LoadOptions,
    chain: &Chain,
    accounts: &[SecretKey],
    amounts: &[u128],
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let rt = runtime()?;
    let client = peregrine_rpc::http_client(&options.rpc).map_err(rpc_error("connecting"))?;
    let funder = options.funder.public_key().address();
    let account = |tag| rt.block_on(client.get_account(funder, Some(tag)));
    let mut nonce = account(BlockTag::Pending)
        .map_err(rpc_error("funder account"))?
        .nonce;
    for (wave, chunk) in accounts.chunks(FUNDING_WAVE).enumerate() {
        progress(&format!(
            "funding accounts: wave {} ({} transfers)",
            wave + 1,
            chunk.len()
        ));
        let offset = wave * FUNDING_WAVE;
        let txs: Vec<SignedTransaction> = chunk
            .iter()
            .enumerate()
            .map(|(i, key)| {
                transfer(
                    chain,
                    &options.funder,
                    nonce + i as u64,
                    key,
                    amounts[offset + i],
                )
            })
            .collect();
        send_all(options.ingest, &txs)?;
        nonce += txs.len() as u64;
        let deadline = Instant::now() + FUNDING_TIMEOUT;
        while account(BlockTag::Latest)
            .map_err(rpc_error("funder account"))?
            .nonce
            < nonce
        {
            if Instant::now() > deadline {
                return Err(BenchError::Load("funding did not finalize in time".into()));
            }
            std::thread::sleep(TRACK_POLL);
        }
    }
    Ok(())
}

/// Every transfer of the run, signed on every core: transaction `i` is sent by account
/// `i % accounts` with the next nonce of that account.
fn sign_load(chain: &Chain, accounts: &[SecretKey], total: usize) -> Vec<(Hash, Vec<u8>)> {
    let n = accounts.len();
    let indices: Vec<usize> = (0..total).collect();
    crate::parallel_map(&indices, |&i| {
        let tx = transfer(
            chain,
            &accounts[i % n],
            (i / n) as u64,
            &accounts[(i * 7 + 1) % n],
            1,
        );
        (tx.hash(), tx.encode())
    })
}

/// Shared between the sending thread, the answer reader and the finality tracker.
struct Progress {
    answered: AtomicUsize,
    finalized: AtomicUsize,
    accepted: AtomicUsize,
    stop: AtomicBool,
}

/// Follows finalized blocks from `from_height` on, stamping the run's transactions.
fn track(
    rpc: &str,
    from_height: u64,
    index: &HashMap<Hash, usize>,
    traces: &Mutex<Vec<TxTrace>>,
    clock: (Instant, u64),
    progress: &Progress,
) -> Result<(), BenchError> {
    let rt = runtime()?;
    let client = peregrine_rpc::http_client(rpc).map_err(rpc_error("connecting"))?;
    let mut next = from_height + 1;
    while !progress.stop.load(Ordering::Acquire) {
        let status = rt.block_on(client.status()).map_err(rpc_error("status"))?;
        let seen = clock.0.elapsed().as_secs_f64();
        while next <= status.finalized_height {
            let block = rt
                .block_on(client.get_block_by_height(next))
                .map_err(rpc_error("block"))?;
            let Some(block) = block else { break };
            let stamped = (block.header.timestamp_ms as f64 - clock.1 as f64) / 1e3;
            let mut traces = traces.lock();
            for i in block.transactions.iter().filter_map(|h| index.get(h)) {
                traces[*i].included = Some(stamped);
                traces[*i].finalized = Some(seen);
                progress.finalized.fetch_add(1, Ordering::Relaxed);
            }
            next += 1;
        }
        std::thread::sleep(TRACK_POLL);
    }
    Ok(())
}

fn read_answers(
    mut rx: ingest::IngestReceiver,
    total: usize,
    traces: &Mutex<Vec<TxTrace>>,
    start: Instant,
    progress: &Progress,
) -> Result<(), BenchError> {
    for i in 0..total {
        let answer = rx.recv()?;
        let at = start.elapsed().as_secs_f64();
        if answer.is_ok() {
            progress.accepted.fetch_add(1, Ordering::Relaxed);
        }
        traces.lock()[i].answered = Some((at, answer.err()));
        progress.answered.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn bar(done: f64, total: f64) -> String {
    let filled = ((done / total.max(1e-9)).clamp(0.0, 1.0) * 30.0) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(30 - filled))
}

/// Writes every transaction at its scheduled time; returns the actual send times.
fn send_on_schedule(
    mut tx_half: ingest::IngestSender,
    times: &[f64],
    load: &[(Hash, Vec<u8>)],
    start: Instant,
    progress: &Progress,
) -> Result<Vec<f64>, BenchError> {
    let mut sent = Vec::with_capacity(times.len());
    let end = times.last().copied().unwrap_or(0.0);
    let mut shown = Instant::now();
    while sent.len() < times.len() {
        let now = start.elapsed().as_secs_f64();
        let due = times[sent.len()..].partition_point(|&t| t <= now);
        for (_, bytes) in &load[sent.len()..sent.len() + due] {
            tx_half.send(bytes)?;
        }
        if due > 0 {
            tx_half.flush()?;
            let at = start.elapsed().as_secs_f64();
            sent.extend(std::iter::repeat_n(at, due));
        } else {
            let wait = (times[sent.len()] - now).clamp(0.0, 0.001);
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        if shown.elapsed() >= PROGRESS_EVERY {
            shown = Instant::now();
            let line = format!(
                "{} {now:>5.1}/{end:.0}s sent {} answered {} finalized {}",
                bar(now, end),
                sent.len(),
                progress.answered.load(Ordering::Relaxed),
                progress.finalized.load(Ordering::Relaxed)
            );
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{line}");
            let _ = err.flush();
        }
    }
    Ok(sent)
}

/// Runs the load and returns the report; the CSV and SVG are written to `options.out`.
pub fn run(
    options: &LoadOptions,
    command: String,
    progress_line: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let rt = runtime()?;
    let client = peregrine_rpc::http_client(&options.rpc).map_err(rpc_error("connecting"))?;
    let status = rt.block_on(client.status()).map_err(rpc_error("status"))?;
    let chain = Chain {
        id: status.chain_id,
        fee: status.min_fee,
    };
    let times = options.schedule.times();
    let total = times.len();
    let accounts: Vec<SecretKey> = (0..options.accounts.max(1))
        .map(|i| load_account(options.seed, i))
        .collect();
    let n = accounts.len();
    let amounts: Vec<u128> = (0..n)
        .map(|i| (total / n + 2) as u128 * u128::from(chain.fee + 1) + 1_000 + i as u128 % 2)
        .collect();
    fund(options, &chain, &accounts, &amounts, progress_line)?;
    progress_line(&format!("signing {total} transfers"));
    let load = sign_load(&chain, &accounts, total);
    let index: HashMap<Hash, usize> = load.iter().enumerate().map(|(i, (h, _))| (*h, i)).collect();
    let from_height = rt
        .block_on(client.status())
        .map_err(rpc_error("status"))?
        .finalized_height;
    progress_line(&format!(
        "offering {total} transfers ({})",
        options.schedule.name()
    ));
    let traces = Mutex::new(vec![TxTrace::default(); total]);
    let progress = Progress {
        answered: AtomicUsize::new(0),
        finalized: AtomicUsize::new(0),
        accepted: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    let (tx_half, rx_half) = ingest::connect(options.ingest)?;
    let start = Instant::now();
    let start_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sent = std::thread::scope(|scope| -> Result<Vec<f64>, BenchError> {
        let tracker = scope.spawn(|| {
            track(
                &options.rpc,
                from_height,
                &index,
                &traces,
                (start, start_unix_ms),
                &progress,
            )
        });
        let reader = scope.spawn(|| read_answers(rx_half, total, &traces, start, &progress));
        let sent = send_on_schedule(tx_half, &times, &load, start, &progress);
        let answered = reader
            .join()
            .map_err(|_| BenchError::Load("answer reader panicked".into()))?;
        drain(options, &progress);
        progress.stop.store(true, Ordering::Release);
        let tracked = tracker
            .join()
            .map_err(|_| BenchError::Load("tracker panicked".into()))?;
        answered?;
        tracked?;
        sent
    })?;
    eprintln!();
    let mut traces = traces.into_inner();
    for (trace, at) in traces.iter_mut().zip(sent) {
        trace.sent = Some(at);
    }
    finish(options, command, &traces, progress_line)
}

/// Waits until every accepted transaction is final, or the drain time is over.
fn drain(options: &LoadOptions, progress: &Progress) {
    let deadline = Instant::now() + Duration::from_secs(options.drain_s);
    while progress.finalized.load(Ordering::Relaxed) < progress.accepted.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        std::thread::sleep(TRACK_POLL);
    }
}

fn finish(
    options: &LoadOptions,
    command: String,
    traces: &[TxTrace],
    progress_line: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let rows = timeline::rows(traces);
    std::fs::create_dir_all(&options.out)?;
    let name = options.schedule.name();
    let csv_path = options.out.join(format!("load-{name}.csv"));
    let svg_path = options.out.join(format!("load-{name}.svg"));
    std::fs::write(&csv_path, timeline::csv(&rows))?;
    std::fs::write(
        &svg_path,
        crate::plot::svg(&timeline::charts(
            &rows,
            &format!("peregrine bench load ({name})"),
        )),
    )?;
    progress_line(&format!(
        "wrote {} and {}",
        csv_path.display(),
        svg_path.display()
    ));
    let mut report = Report::new(command);
    let mut push = |metric: &str, value: f64, unit: &str| {
        report.push("load", name, "devnet", metric, value, unit)
    };
    let count = |f: &dyn Fn(&TxTrace) -> bool| traces.iter().filter(|t| f(t)).count() as f64;
    push("offered_total", count(&|t| t.sent.is_some()), "txs");
    push(
        "accepted_total",
        count(&|t| matches!(t.answered, Some((_, None)))),
        "txs",
    );
    push(
        "rejected_total",
        count(&|t| matches!(t.answered, Some((_, Some(_))))),
        "txs",
    );
    push("finalized_total", count(&|t| t.finalized.is_some()), "txs");
    let peak = |f: &dyn Fn(&timeline::Row) -> u64| rows.iter().map(f).max().unwrap_or(0) as f64;
    push("peak_offered_tx_per_s", peak(&|r| r.offered), "tx/s");
    push("peak_accepted_tx_per_s", peak(&|r| r.accepted), "tx/s");
    push("peak_finalized_tx_per_s", peak(&|r| r.finalized), "tx/s");
    if let Some(knee) = timeline::knee(&rows, KNEE_WINDOW_S, 0, |r| r.accepted) {
        push("knee_accepted_offered_tx_per_s", knee, "tx/s");
    }
    if let Some(knee) = timeline::knee(&rows, KNEE_WINDOW_S, 1, |r| r.finalized) {
        push("knee_finalized_offered_tx_per_s", knee, "tx/s");
    }
    let latency = |f: &dyn Fn(&TxTrace) -> Option<f64>| -> Vec<f64> {
        traces
            .iter()
            .filter_map(|t| Some((f(t)? - t.sent?) * 1e3))
            .collect()
    };
    for (what, mut values) in [
        ("inclusion", latency(&|t| t.included)),
        ("finality", latency(&|t| t.finalized)),
    ] {
        for p in [50.0, 90.0, 99.0] {
            push(
                &format!("{what}_p{p:.0}_ms"),
                percentile(&mut values, p),
                "ms",
            );
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_offer_the_promised_load() {
        let constant = Schedule::Constant {
            rate: 100.0,
            seconds: 3.0,
        }
        .times();
        assert_eq!(constant.len(), 300);
        assert!(constant.windows(2).all(|w| w[0] <= w[1]));
        let ramp = Schedule::Ramp {
            from: 100.0,
            to: 1_000.0,
            seconds: 10.0,
        }
        .times();
        // The integral of 100 * 10^(t/10) over 10 s is 900 / ln 10 * 10, about 3,909.
        assert!((3_900..=3_910).contains(&ramp.len()), "{}", ramp.len());
        let first_second = ramp.iter().filter(|&&t| t < 1.0).count();
        let last_second = ramp.iter().filter(|&&t| t >= 9.0).count();
        assert!((100..=125).contains(&first_second), "{first_second}");
        assert!((800..=1_000).contains(&last_second), "{last_second}");
        assert!(ramp.last().is_some_and(|&t| t <= 10.0));
    }
}
