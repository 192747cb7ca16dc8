//! `peregrine bench ...`: reproduce the benchmarks recorded in docs/BENCHMARKS.md.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use peregrine_bench::exec::ExecOptions;
use peregrine_bench::load::{LoadOptions, Schedule};
use peregrine_bench::mempool::MempoolOptions;
use peregrine_bench::report::Report;
use peregrine_bench::state::beyond::BeyondOptions;
use peregrine_bench::state::StateOptions;
use peregrine_bench::vm::VmOptions;
use std::path::PathBuf;

/// Benchmarks (measurements, never tests).
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Block execution: serial vs parallel at low, high and full contention.
    Exec(ExecArgs),
    /// Admission alone, in process: 1 and 2 workers against the signature-verification ceiling.
    Mempool(MempoolArgs),
    /// The state database against BTreeMap, redb, LMDB and fjall: random inserts, transfers,
    /// transfers with a concurrent reader, and operation latencies.
    State(StateArgs),
    /// The token's transfer compiled per call, cached, and native; metering overhead.
    Vm(VmArgs),
    /// Open-loop load against a running node (constant rate or exponential ramp), with a CSV
    /// and an SVG plot of offered, accepted and finalized load and of latency.
    Load(LoadArgs),
}

#[derive(Args)]
pub struct VmArgs {
    /// Funded token holders.
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Transfers per engine (compiling per call runs a fiftieth of them).
    #[arg(long, default_value_t = 200_000)]
    calls: u32,
    /// Rounds of the compute contract's loop when measuring metering.
    #[arg(long = "compute-rounds", default_value_t = 5_000_000)]
    compute_rounds: u64,
    /// Timed runs of the compute contract per configuration.
    #[arg(long, default_value_t = 7)]
    repeats: u32,
    /// A quick run (20,000 transfers, 1,000,000 rounds, 3 repeats).
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl VmArgs {
    fn options(self) -> VmOptions {
        let (calls, compute_rounds, repeats) = if self.quick {
            (20_000, 1_000_000, 3)
        } else {
            (self.calls, self.compute_rounds, self.repeats)
        };
        VmOptions {
            accounts: self.accounts,
            calls,
            compute_rounds,
            repeats,
        }
    }
}

#[derive(Args)]
pub struct StateArgs {
    /// Engines, comma-separated (btreemap, peregrine, redb, lmdb, fjall).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "btreemap,peregrine,redb,lmdb,fjall"
    )]
    engines: Vec<String>,
    /// Key counts of the random-insert workload, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    keys: Vec<u64>,
    /// Random reads after each load.
    #[arg(long, default_value_t = 1_000_000)]
    reads: u64,
    /// Accounts of the transfer workloads.
    #[arg(long, default_value_t = 25_000_000)]
    accounts: u64,
    /// Timed blocks of 10,000 transfers.
    #[arg(long, default_value_t = 20)]
    blocks: u32,
    /// Rounds of the random-insert workload: in each, every engine loads each key count once,
    /// a different engine first each round; the figures are the medians over rounds.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// A quick run (100,000 keys, 1,000,000 accounts, 5 blocks) that finishes in about a minute.
    #[arg(long)]
    quick: bool,
    /// Write an SVG plot of insert throughput against key count here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only workload 4: insert this many random keys under a memory cap, then read them.
    #[arg(long = "beyond-ram")]
    beyond_ram: Option<u64>,
    /// The memory cap of `--beyond-ram`, in bytes (suffixes K, M, G); enforced by a cgroup
    /// where the machine allows it.
    #[arg(long = "memory-cap", default_value = "1G", value_parser = parse_bytes)]
    memory_cap: u64,
    /// Seconds each engine may spend inserting in `--beyond-ram`; one that runs out is measured
    /// on what it inserted.
    #[arg(long = "time-limit", default_value_t = 300)]
    time_limit: u64,
}

/// `123`, `64K`, `512M` or `2G` as bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        other => return Err(format!("unknown size unit {other}: use K, M or G")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|e| format!("{text:?} is not a size: {e}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}

impl StateArgs {
    fn options(self) -> StateOptions {
        let (keys, reads, accounts, blocks) = if self.quick {
            (vec![100_000], 100_000, 1_000_000, 5)
        } else {
            (self.keys, self.reads, self.accounts, self.blocks)
        };
        let beyond = self.beyond_ram.map(|keys| BeyondOptions {
            keys,
            memory_cap: self.memory_cap,
            reads,
            time_limit: std::time::Duration::from_secs(self.time_limit),
        });
        StateOptions {
            engines: self.engines,
            keys,
            reads,
            accounts,
            blocks,
            rounds: self.rounds,
            plot: self.plot,
            beyond,
        }
    }
}

#[derive(Args)]
pub struct LoadArgs {
    /// The node's JSON-RPC URL.
    #[arg(long, default_value = concat!("http://", "127.0.0.1:8645"))]
    rpc: String,
    /// The node's binary submission address.
    #[arg(long, default_value = peregrine_rpc::ingest::DEFAULT_INGEST_ADDR)]
    ingest: std::net::SocketAddr,
    /// Pay for the load accounts from development account N of `peregrine dev`.
    #[arg(long = "dev-account", default_value_t = 0)]
    dev_account: u32,
    /// Pay for the load accounts from the key in this file instead.
    #[arg(long = "key-file")]
    key_file: Option<PathBuf>,
    /// Load accounts (senders), funded before the clock starts.
    #[arg(long, default_value_t = 2_000)]
    accounts: u32,
    /// Offer a constant rate, in transactions per second.
    #[arg(long, conflicts_with = "ramp")]
    rate: Option<f64>,
    /// Offer an exponential ramp FROM:TO transactions per second over the duration.
    #[arg(long, value_parser = parse_ramp)]
    ramp: Option<(f64, f64)>,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Most seconds to wait afterwards for accepted transactions to finalize.
    #[arg(long, default_value_t = 30)]
    drain: u64,
    /// Directory for the CSV and SVG.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Seed of the load accounts (default: the current time, so each run uses fresh accounts).
    #[arg(long)]
    seed: Option<u64>,
    /// A quick run: 10 seconds at 2,000 transactions per second from 200 accounts.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_ramp(text: &str) -> Result<(f64, f64), String> {
    let (from, to) = text
        .split_once(':')
        .ok_or_else(|| format!("expected FROM:TO, got {text:?}"))?;
    let parse = |v: &str| match v.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("invalid rate {v:?}")),
    };
    Ok((parse(from)?, parse(to)?))
}

impl ExecArgs {
    fn options(self) -> ExecOptions {
        let (accounts, repeats) = if self.quick {
            (100_000, 3)
        } else {
            (self.accounts, self.repeats)
        };
        ExecOptions {
            accounts,
            block_txs: self.block_txs,
            repeats,
            threads: self.threads,
            scenarios: self.scenarios,
        }
    }
}

impl MempoolArgs {
    fn options(self) -> MempoolOptions {
        let (senders, repeats) = if self.quick {
            (4_096, 2)
        } else {
            (self.senders, self.repeats)
        };
        MempoolOptions {
            senders,
            per_sender: self.per_sender,
            repeats,
            workers: self.workers,
        }
    }
}

impl LoadArgs {
    fn options(self) -> anyhow::Result<LoadOptions> {
        let funder = match &self.key_file {
            Some(path) => crate::keys::load(path)?,
            None => peregrine_node::genesis::dev_key(self.dev_account),
        };
        let (accounts, seconds) = if self.quick {
            (200, 10.0)
        } else {
            (self.accounts, self.duration)
        };
        let schedule = match (self.quick, self.rate, self.ramp) {
            (true, _, _) => Schedule::Constant {
                rate: 2_000.0,
                seconds,
            },
            (false, _, Some((from, to))) => Schedule::Ramp { from, to, seconds },
            (false, Some(rate), None) if rate > 0.0 => Schedule::Constant { rate, seconds },
            _ => anyhow::bail!("pass --rate R, --ramp FROM:TO or --quick"),
        };
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(LoadOptions {
            rpc: self.rpc,
            ingest: self.ingest,
            funder,
            accounts,
            schedule,
            drain_s: self.drain,
            out: self.out,
            seed,
        })
    }
}

#[derive(Args)]
pub struct MempoolArgs {
    /// Distinct senders.
    #[arg(long, default_value_t = 16_384)]
    senders: u32,
    /// Consecutive nonces per sender.
    #[arg(long = "per-sender", default_value_t = 4)]
    per_sender: u32,
    /// Timed runs per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: u32,
    /// Worker counts, comma-separated; the first is the base of the speedup.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// A quick run (4,096 senders, 2 repeats) that finishes in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Funded accounts in the genesis; recipients are uniform over them.
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u32,
    /// Transactions per block.
    #[arg(long = "block-txs", default_value_t = 10_000)]
    block_txs: u32,
    /// Timed executions per engine and scenario (the median is reported).
    #[arg(long, default_value_t = 7)]
    repeats: u32,
    /// Thread counts of the parallel engine, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Only these scenarios, comma-separated (low-contention, high-contention,
    /// full-contention, token-native, token-wasm; default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// A quick run (100,000 accounts, 3 repeats) that finishes in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl BenchCommand {
    /// Runs the benchmark, prints its table and optionally writes JSON.
    pub fn run(self) -> anyhow::Result<()> {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let progress = &mut |line: &str| eprintln!("{line}");
        let (report, json) = match self {
            BenchCommand::Exec(args) => {
                let json = args.json.clone();
                let report = peregrine_bench::exec::run(&args.options(), command, progress)?;
                (report, json)
            }
            BenchCommand::Mempool(args) => {
                let json = args.json.clone();
                let report = peregrine_bench::mempool::run(&args.options(), command, progress)?;
                (report, json)
            }
            BenchCommand::State(args) => {
                let json = args.json.clone();
                let report = peregrine_bench::state::run(&args.options(), command, progress)?;
                (report, json)
            }
            BenchCommand::Vm(args) => {
                let json = args.json.clone();
                let report = peregrine_bench::vm::run(&args.options(), command, progress)?;
                (report, json)
            }
            BenchCommand::Load(args) => {
                let json = args.json.clone();
                let report = peregrine_bench::load::run(&args.options()?, command, progress)?;
                (report, json)
            }
        };
        print_table(&report);
        if let Some(path) = json {
            report
                .write_json(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("figures written to {}", path.display());
        }
        Ok(())
    }
}

fn print_table(report: &Report) {
    println!(
        "{:<16} {:<12} {:<22} {:>14}",
        "scenario", "engine", "metric", "value"
    );
    for r in &report.records {
        println!(
            "{:<16} {:<12} {:<22} {:>14.2} {}",
            r.scenario, r.engine, r.metric, r.value, r.unit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn memory_caps_parse_with_and_without_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("2T").is_err());
        assert!(parse_bytes("G").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }
}
