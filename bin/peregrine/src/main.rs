//! The command line: `dev` runs a local chain; `tx`, `query` and `keys` talk to a node's RPC;
//! `bench` reproduces the benchmarks.

mod args;
mod bench;
mod client;
mod keys;

use anyhow::Context as _;

/// mimalloc (through `peregrine-alloc`): the state trie allocates and frees a node per changed
/// key on every commit, and glibc's allocator spent a fifth of a transfer block in malloc and free
/// (perf, `bench state`).
#[global_allocator]
static ALLOCATOR: peregrine_alloc::Allocator = peregrine_alloc::Allocator;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Peregrine: a programmable blockchain node built for throughput.
#[derive(Parser)]
#[command(name = "peregrine", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local single-validator development chain with prefunded accounts.
    Dev(DevArgs),
    /// Sign and send transactions.
    #[command(subcommand)]
    Tx(client::TxCommand),
    /// Read chain state, blocks and transactions.
    #[command(subcommand)]
    Query(client::QueryCommand),
    /// Create and inspect key files.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run a benchmark (see docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(clap::Args)]
struct DevArgs {
    /// Data directory; reusing it continues the chain where it stopped.
    #[arg(long, default_value = ".peregrine/dev")]
    datadir: PathBuf,
    /// Number of prefunded development accounts (only when creating a new chain).
    #[arg(long, default_value_t = 10)]
    accounts: u32,
    /// Balance of each development account (only when creating a new chain).
    #[arg(long, default_value_t = peregrine_node::genesis::DEV_BALANCE)]
    balance: u128,
    /// Least time between blocks, e.g. `200ms` or `1s`.
    #[arg(long = "block-time", default_value = "200ms", value_parser = parse_duration)]
    block_time: Duration,
    /// JSON-RPC listen address (HTTP and WebSocket on one port).
    #[arg(long = "rpc.addr", default_value = peregrine_rpc::DEFAULT_RPC_ADDR)]
    rpc_addr: SocketAddr,
    /// p2p listen address of the validator.
    #[arg(long = "p2p.addr", default_value = peregrine_node::DEFAULT_P2P_ADDR)]
    p2p_addr: SocketAddr,
    /// Binary transaction submission listen address (length-prefixed raw transactions over TCP).
    #[arg(long = "ingest.addr", default_value = peregrine_rpc::ingest::DEFAULT_INGEST_ADDR)]
    ingest_addr: SocketAddr,
    /// Serve Prometheus metrics at this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Seconds between status lines (0: none).
    #[arg(long = "status-interval", default_value_t = 2)]
    status_interval: u64,
}

/// Parses `250ms`, `2s` or a bare number of milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "ms"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        _ => Err(format!("invalid duration unit in {text:?}: use ms or s")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,commonware=warn,jsonrpsee=warn,fjall=warn,lsm_tree=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Dev(args) => run_dev(args),
        Command::Tx(command) => client::runtime()?.block_on(command.run()),
        Command::Query(command) => client::runtime()?.block_on(command.run()),
        Command::Keys(command) => command.run(),
        Command::Bench(command) => command.run(),
    }
}

fn print_dev_accounts(genesis: &peregrine_node::genesis::Genesis) {
    println!("================================================================================");
    println!("  DEVELOPMENT ONLY: these keys are public. Never use them for anything of value.");
    println!("================================================================================");
    for (index, (address, balance)) in genesis.accounts.iter().enumerate() {
        let key = peregrine_node::genesis::dev_key(index as u32);
        if key.public_key().address() != *address {
            continue;
        }
        println!("  [{index}] {address}  balance {balance}");
        println!("      secret {}", hex::encode(key.seed()));
    }
    println!("================================================================================");
}

fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let config = peregrine_node::NodeConfig {
        datadir: args.datadir,
        rpc_addr: args.rpc_addr,
        p2p_addr: args.p2p_addr,
        metrics_addr: args.metrics,
        ingest_addr: Some(args.ingest_addr),
        block_time: args.block_time,
        dev_accounts: args.accounts,
        dev_balance: args.balance,
        status_interval: (args.status_interval > 0)
            .then(|| Duration::from_secs(args.status_interval)),
    };
    let genesis =
        peregrine_node::load_or_create_genesis(&config).context("preparing the data directory")?;
    print_dev_accounts(&genesis);
    let node = peregrine_node::start(config.clone()).context("starting the node")?;
    println!(
        "chain id {} | data directory {}",
        genesis.chain_id,
        config.datadir.display()
    );
    println!(
        "RPC listening on http://{} (WebSocket: ws://{})",
        node.rpc_addr(),
        node.rpc_addr()
    );
    if let Some(ingest) = node.ingest_addr() {
        println!("binary transaction submission on {ingest}");
    }
    if let Some(metrics) = node.metrics_addr() {
        println!("metrics on http://{metrics}/metrics");
    }
    client::runtime()?.block_on(wait_for_signal())?;
    node.stop().context("stopping the node")?;
    println!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
