//! Assemble a node from the parts: config, genesis, data directory, lifecycle, metrics.
//!
//! # Data directory
//! ```text
//! <datadir>/genesis.json     the chain's genesis (chain id, timestamp, prefunded accounts)
//! <datadir>/validator.key    this validator's ed25519 seed (hex)
//! <datadir>/blocks.log       block log: proposed/received blocks and finalizations (receipts)
//! <datadir>/state/           the state database (log + checkpoint of finalized revisions)
//! <datadir>/consensus/       simplex's journal (votes, certificates), via commonware-runtime
//! ```
//! Starting again with the same directory continues the chain: the state recovers its last
//! finalized revision, the block log re-executes anything finalized after it, and simplex replays
//! its journal.
//!
//! # Threads
//! A commonware tokio runtime runs consensus, p2p, the JSON-RPC server (HTTP and WebSocket on one
//! port) and the metrics endpoint; block execution runs on the consensus finalizer's own thread.
//! Admission runs on its own pipeline threads (one validation worker per core and a committer),
//! fed by the RPC and by the binary submission listener ([`ingest`]).
//!
//! ```no_run
//! let node = peregrine_node::start(peregrine_node::NodeConfig::dev("/tmp/peregrine".into())).unwrap();
//! println!("RPC on {}", node.rpc_addr());
//! node.stop().unwrap();
//! ```

pub mod chain;
pub mod genesis;
pub mod ingest;
pub mod metrics;
pub mod rpc;
mod speculate;
pub mod store;

use chain::Chain;
use commonware_runtime::{Runner as _, Spawner as _, Supervisor as _};
use genesis::Genesis;
use peregrine_types::SecretKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::info;

/// The default p2p address of `peregrine dev`.
pub const DEFAULT_P2P_ADDR: &str = "127.0.0.1:8646";
/// The default block time of `peregrine dev`.
pub const DEFAULT_BLOCK_TIME: Duration = Duration::from_millis(200);
/// How long shutdown waits for tasks to finish.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory.
    pub datadir: PathBuf,
    /// Where the JSON-RPC server (HTTP and WebSocket) listens.
    pub rpc_addr: SocketAddr,
    /// Where the p2p listener binds.
    pub p2p_addr: SocketAddr,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the binary transaction submission listener binds, if anywhere.
    pub ingest_addr: Option<SocketAddr>,
    /// The least time between blocks.
    pub block_time: Duration,
    /// Development accounts in a new genesis.
    pub dev_accounts: u32,
    /// Balance of each development account in a new genesis.
    pub dev_balance: u128,
    /// How often to log a status line, if at all.
    pub status_interval: Option<Duration>,
}

impl NodeConfig {
    /// The `peregrine dev` defaults, in `datadir`.
    pub fn dev(datadir: PathBuf) -> Self {
        Self {
            datadir,
            rpc_addr: peregrine_rpc::DEFAULT_RPC_ADDR
                .parse()
                .expect("valid default"),
            p2p_addr: DEFAULT_P2P_ADDR.parse().expect("valid default"),
            metrics_addr: None,
            ingest_addr: Some(
                peregrine_rpc::ingest::DEFAULT_INGEST_ADDR
                    .parse()
                    .expect("valid default"),
            ),
            block_time: DEFAULT_BLOCK_TIME,
            dev_accounts: 10,
            dev_balance: genesis::DEV_BALANCE,
            status_interval: Some(Duration::from_secs(2)),
        }
    }
}

/// Why a node could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The data directory could not be used.
    #[error("data directory {path}: {source}")]
    Datadir {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The genesis is unusable.
    #[error(transparent)]
    Genesis(#[from] genesis::GenesisError),
    /// The chain could not open.
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// RPC or metrics.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// Consensus could not start.
    #[error(transparent)]
    Consensus(#[from] peregrine_consensus::ConsensusError),
    /// The validator key file is unusable.
    #[error("validator key {path}: {reason}")]
    ValidatorKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node's thread ended unexpectedly.
    #[error("node thread failed: {0}")]
    Thread(String),
}

fn datadir_error(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Datadir {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the validator key from the data directory, creating a fresh one on first start.
fn validator_key(datadir: &Path) -> Result<SecretKey, NodeError> {
    let path = datadir.join("validator.key");
    let invalid = |reason: String| NodeError::ValidatorKey {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let seed = peregrine_types::crypto::parse_hex_array::<32>(text.trim())
                .map_err(|e| invalid(e.to_string()))?;
            Ok(SecretKey::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            std::fs::write(&path, hex::encode(key.seed())).map_err(|e| invalid(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Loads the genesis of `datadir`, or writes a development genesis there on first start.
pub fn load_or_create_genesis(config: &NodeConfig) -> Result<Genesis, NodeError> {
    std::fs::create_dir_all(&config.datadir).map_err(datadir_error(&config.datadir))?;
    if let Some(genesis) = Genesis::load(&config.datadir)? {
        return Ok(genesis);
    }
    let genesis = Genesis::dev(config.dev_accounts, config.dev_balance, now_ms());
    genesis.store(&config.datadir)?;
    Ok(genesis)
}

/// A node running on its own threads.
pub struct RunningNode {
    rpc_addr: SocketAddr,
    ingest: Option<ingest::IngestServer>,
    metrics_addr: Option<SocketAddr>,
    chain: Arc<Chain>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningNode {
    /// The bound RPC address.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The bound binary submission address, if serving it.
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        self.ingest.as_ref().map(ingest::IngestServer::local_addr)
    }

    /// The bound metrics address, if serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The chain, for in-process inspection.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Stops the node and waits for its threads.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), NodeError> {
        self.ingest = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    fn join(&mut self) -> Result<(), NodeError> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| NodeError::Thread("node thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Bound {
    rpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

/// Opens the data directory and starts a single-validator node on its own threads.
pub fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let genesis = load_or_create_genesis(&config)?;
    let key = validator_key(&config.datadir)?;
    let chain = Arc::new(Chain::open(&config.datadir, &genesis, Arc::default())?);
    let ingest = match config.ingest_addr {
        Some(addr) => Some(
            ingest::IngestServer::start(addr, chain.clone()).map_err(|source| NodeError::Bind {
                what: "binary ingest",
                addr,
                source,
            })?,
        ),
        None => None,
    };
    let consensus_dir = config.datadir.join("consensus");
    std::fs::create_dir_all(&consensus_dir).map_err(datadir_error(&consensus_dir))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Bound, NodeError>>();
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread_chain = chain.clone();
    let thread = std::thread::Builder::new()
        .name("node".into())
        .spawn(move || run_runtime(config, consensus_dir, key, thread_chain, ready_tx, stop_rx))
        .map_err(|e| NodeError::Thread(e.to_string()))?;
    let bound = ready_rx
        .recv()
        .map_err(|_| NodeError::Thread("node thread exited during startup".into()))??;
    if let Some(ingest) = &ingest {
        info!(addr = %ingest.local_addr(), "serving binary transaction submission");
    }
    Ok(RunningNode {
        rpc_addr: bound.rpc_addr,
        ingest,
        metrics_addr: bound.metrics_addr,
        chain,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn run_runtime(
    config: NodeConfig,
    consensus_dir: PathBuf,
    key: SecretKey,
    chain: Arc<Chain>,
    ready: std::sync::mpsc::Sender<Result<Bound, NodeError>>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = commonware_runtime::tokio::Config::new()
        .with_storage_directory(consensus_dir)
        .with_worker_threads(2);
    commonware_runtime::tokio::Runner::new(runtime).start(|context| async move {
        let services = match start_services(&config, &chain).await {
            Ok(services) => services,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let validator =
            match start_consensus(context.child("consensus"), &config, key, chain.clone()) {
                Ok(validator) => validator,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
        let _ = ready.send(Ok(Bound {
            rpc_addr: services.rpc_addr,
            metrics_addr: services.metrics_addr,
        }));
        let status = config
            .status_interval
            .map(|every| tokio::spawn(status_line(chain.clone(), every)));
        let _ = stop.await;
        info!("shutting down");
        if let Some(status) = status {
            status.abort();
        }
        let _ = services.rpc.stop();
        if let Some(metrics) = services.metrics {
            metrics.abort();
        }
        let _ = context.stop(0, Some(SHUTDOWN_TIMEOUT)).await;
        drop(validator);
    });
}

struct Services {
    rpc_addr: SocketAddr,
    rpc: jsonrpsee::server::ServerHandle,
    metrics_addr: Option<SocketAddr>,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

async fn start_services(config: &NodeConfig, chain: &Arc<Chain>) -> Result<Services, NodeError> {
    let bind = |what, addr| move |source| NodeError::Bind { what, addr, source };
    let server_config = jsonrpsee::server::ServerConfig::builder()
        .max_request_body_size(peregrine_rpc::MAX_REQUEST_BYTES)
        .max_connections(peregrine_rpc::MAX_CONNECTIONS)
        .max_subscriptions_per_connection(peregrine_rpc::MAX_SUBSCRIPTIONS_PER_CONNECTION)
        .build();
    let server = jsonrpsee::server::Server::builder()
        .set_config(server_config)
        .build(config.rpc_addr)
        .await
        .map_err(bind("rpc", config.rpc_addr))?;
    let rpc_addr = server.local_addr().map_err(bind("rpc", config.rpc_addr))?;
    use peregrine_rpc::PeregrineApiServer as _;
    let rpc = server.start(rpc::RpcServer::new(chain.clone()).into_rpc());
    let (metrics_addr, metrics) = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind("metrics", addr))?;
            let bound = listener.local_addr().map_err(bind("metrics", addr))?;
            (
                Some(bound),
                Some(tokio::spawn(metrics::serve(listener, chain.clone()))),
            )
        }
        None => (None, None),
    };
    info!(%rpc_addr, ?metrics_addr, "serving JSON-RPC (HTTP and WebSocket)");
    Ok(Services {
        rpc_addr,
        rpc,
        metrics_addr,
        metrics,
    })
}

fn start_consensus(
    context: commonware_runtime::tokio::Context,
    config: &NodeConfig,
    key: SecretKey,
    chain: Arc<Chain>,
) -> Result<peregrine_consensus::Validator, NodeError> {
    let invalid = |reason: &str| NodeError::ValidatorKey {
        path: config.datadir.join("validator.key"),
        reason: reason.into(),
    };
    let signer = peregrine_consensus::private_key_from_seed(key.seed())
        .ok_or_else(|| invalid("not an ed25519 seed"))?;
    use commonware_cryptography::Signer as _;
    let validator = peregrine_consensus::ValidatorConfig {
        chain_id: chain.chain_id(),
        validators: vec![(signer.public_key(), config.p2p_addr)],
        signer,
        p2p_listen: config.p2p_addr,
        block_time: config.block_time,
        genesis: chain.genesis().hash(),
        proposer: key.public_key(),
    };
    Ok(peregrine_consensus::start_validator(
        context, validator, chain,
    )?)
}

async fn status_line(chain: Arc<Chain>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    let mut last_txs = chain.metrics().txs_executed();
    loop {
        ticker.tick().await;
        let txs = chain.metrics().txs_executed();
        let rate = (txs - last_txs) as f64 / every.as_secs_f64();
        last_txs = txs;
        info!(
            "height {} | finalized {} | mempool {} | {:.1} tx/s",
            chain.highest_known().max(chain.finalized_height()),
            chain.finalized_height(),
            chain.mempool().len(),
            rate
        );
    }
}
