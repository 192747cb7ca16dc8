//! `peregrine bench ...`: reproduce the benchmarks recorded in docs/BENCHMARKS.md.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use peregrine_bench::exec::ExecOptions;
use peregrine_bench::mempool::MempoolOptions;
use peregrine_bench::report::Report;
use std::path::PathBuf;

/// Benchmarks (measurements, never tests).
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Block execution: serial vs parallel at low, high and full contention.
    Exec(ExecArgs),
    /// Admission alone, in process: 1 and 2 workers against the signature-verification ceiling.
    Mempool(MempoolArgs),
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
                let (accounts, repeats) = if args.quick {
                    (100_000, 3)
                } else {
                    (args.accounts, args.repeats)
                };
                let options = ExecOptions {
                    accounts,
                    block_txs: args.block_txs,
                    repeats,
                    threads: args.threads,
                };
                let report = peregrine_bench::exec::run(&options, command, progress)?;
                (report, args.json)
            }
            BenchCommand::Mempool(args) => {
                let (senders, repeats) = if args.quick {
                    (4_096, 2)
                } else {
                    (args.senders, args.repeats)
                };
                let options = MempoolOptions {
                    senders,
                    per_sender: args.per_sender,
                    repeats,
                    workers: args.workers,
                };
                let report = peregrine_bench::mempool::run(&options, command, progress)?;
                (report, args.json)
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
