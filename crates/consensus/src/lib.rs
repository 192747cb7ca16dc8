//! Order blocks across validators with commonware: simplex BFT, p2p, block dissemination, sync.
//!
//! # Data flow
//! ```text
//!   simplex engine ──propose──▶ Application ──select_txs / exec_root──▶ Ledger (node)
//!        │        ──verify───▶ Application ──block / exec_root────────▶ Ledger
//!        │        ──broadcast─▶ Application ──block bytes──▶ p2p "blocks" channel ──▶ peers
//!        └──report(Finalization)─▶ finalizer thread ──finalize(block), in height order──▶ Ledger
//! ```
//! The node implements [`Ledger`]: block storage, the mempool and execution. This crate decides
//! what a valid block is ([`rules`]) and when it is final; it never executes anything itself.
//!
//! # Devnet: one validator
//! The devnet runs the very same path with a validator set of one: simplex's quorum of a single
//! participant is that participant, so each view notarizes and finalizes on the leader's own votes.
//! Votes, certificates and blocks go through commonware's authenticated p2p network (bound on
//! loopback), which simply has no other peer to deliver them to.
//!
//! # Invariants
//! - [`Ledger::finalize`] is called exactly once per height, in increasing height order, with the
//!   finalized chain's blocks; replayed finalizations at or below the finalized height are ignored.
//! - A block is voted for only if [`rules::validate`] accepts it against this node's own execution
//!   receipt, so a validator never follows a chain whose receipts differ from its own state.

pub mod application;
pub mod rules;

use application::{hash_of, Application};
use commonware_codec::DecodeExt;
use commonware_consensus::simplex::{
    config::{Config as EngineConfig, Floor, ForwardPolicy, SkipBudget, SkipPolicy},
    elector::RoundRobin,
    Engine,
};
use commonware_consensus::types::{Epoch, ViewDelta};
use commonware_cryptography::{ChaCha20Poly1305, Sha256};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager, Receiver};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Quota, Spawner, Supervisor};
use commonware_stream::{cups, sake};
use commonware_utils::{ordered, NZDuration, NZUsize, TryFromIterator, NZU16, NZU32};
use peregrine_types::{Block, Hash, SignedTransaction};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tracing::{error, info, warn};

/// The digest simplex orders: a block hash.
pub type Digest = commonware_cryptography::blake3::Digest;
/// A validator's public key.
pub type PublicKey = commonware_cryptography::ed25519::PublicKey;
/// A validator's private key.
pub type PrivateKey = commonware_cryptography::ed25519::PrivateKey;
/// The vote and certificate signing scheme (ed25519 multi-signatures).
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;

/// p2p channel for votes.
const CHANNEL_VOTES: u64 = 0;
/// p2p channel for certificates.
const CHANNEL_CERTIFICATES: u64 = 1;
/// p2p channel for fetching missing certificates.
const CHANNEL_RESOLVER: u64 = 2;
/// p2p channel for block bodies.
const CHANNEL_BLOCKS: u64 = 3;
/// Largest p2p message: a full block plus framing.
const MAX_MESSAGE_BYTES: u32 = peregrine_types::block::MAX_BLOCK_BYTES as u32 + 1024;
/// Finalization notices queued for the finalizer thread; bounded, and safe to overflow because a
/// later finalization implies every earlier one.
const FINALIZED_QUEUE: usize = 1024;
/// How often an idle finalizer checks whether it should stop.
const FINALIZER_POLL: Duration = Duration::from_millis(50);
/// Engine mailbox sizes.
const MAILBOX: usize = 1024;

/// Why a ledger operation failed.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LedgerError(pub String);

/// What consensus needs from the node: blocks, execution receipts, transactions, finalization.
pub trait Ledger: Send + Sync + 'static {
    /// Any block this node knows, final or not, by hash.
    fn block(&self, hash: &Hash) -> Option<Block>;
    /// Stores a block this node proposed or received, so it can be verified, relayed and finalized.
    fn store_block(&self, block: &Block) -> Result<(), LedgerError>;
    /// This node's state commitment after executing `height`, once it has executed it.
    fn exec_root(&self, height: u64) -> Option<Hash>;
    /// Transactions for a block at `height`, from the mempool.
    fn select_txs(&self, height: u64) -> Vec<SignedTransaction>;
    /// Whether this node already verified the signature of transaction `hash` (at admission).
    fn is_verified(&self, hash: &Hash) -> bool;
    /// The height of the last finalized block.
    fn finalized_height(&self) -> u64;
    /// Executes and durably records a finalized block. Called once per height, in order.
    fn finalize(&self, block: &Block) -> Result<(), LedgerError>;
}

/// Everything a validator needs to join consensus.
pub struct ValidatorConfig {
    /// The chain id; also separates the signing namespaces of different chains.
    pub chain_id: u64,
    /// This validator's key.
    pub signer: PrivateKey,
    /// The validator set with p2p addresses (including this validator).
    pub validators: Vec<(PublicKey, SocketAddr)>,
    /// Where this validator's p2p listener binds.
    pub p2p_listen: SocketAddr,
    /// The least time between a block and its parent.
    pub block_time: Duration,
    /// The genesis block's hash (view 0 of simplex).
    pub genesis: Hash,
    /// This validator's address in the node's own terms (the block proposer field).
    pub proposer: peregrine_types::PublicKey,
}

/// Why consensus could not start.
#[derive(Debug, Error)]
pub enum ConsensusError {
    /// The validator set is empty, has duplicates, or does not contain this validator.
    #[error("invalid validator set: {0}")]
    ValidatorSet(&'static str),
    /// The finalizer thread could not start.
    #[error("cannot start the finalizer thread: {0}")]
    Thread(std::io::Error),
}

/// Decodes a validator private key from its 32-byte seed.
pub fn private_key_from_seed(seed: [u8; 32]) -> Option<PrivateKey> {
    PrivateKey::decode(seed.to_vec()).ok()
}

fn namespace(chain_id: u64) -> Vec<u8> {
    let mut ns = b"peregrine-consensus-".to_vec();
    ns.extend_from_slice(&chain_id.to_le_bytes());
    ns
}

/// A running validator's finalizer thread. The engine, p2p and relay tasks belong to the runtime
/// context they were started on, and stop with it.
pub struct Validator {
    stop: Arc<AtomicBool>,
    finalizer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Validator {
    /// Stops the finalizer after the block it is executing, if any, so shutdown never cuts a
    /// finalization in half.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(finalizer) = self.finalizer.take() {
            let _ = finalizer.join();
        }
    }
}

/// Starts p2p, the simplex engine, the block relay and the finalizer for one validator.
pub fn start_validator<L: Ledger>(
    context: commonware_runtime::tokio::Context,
    config: ValidatorConfig,
    ledger: Arc<L>,
) -> Result<Validator, ConsensusError> {
    let namespace = namespace(config.chain_id);
    let participants =
        ordered::Set::try_from_iter(config.validators.iter().map(|(k, _)| k.clone()))
            .map_err(|_| ConsensusError::ValidatorSet("duplicate validator keys"))?;
    let scheme = Scheme::signer(&namespace, participants, config.signer.clone()).ok_or(
        ConsensusError::ValidatorSet("this node's key is not in the validator set"),
    )?;

    let (mut network, mut oracle) = start_network(&context, &config, &namespace);
    let peers: ordered::Map<PublicKey, Address> = ordered::Map::try_from_iter(
        config
            .validators
            .iter()
            .map(|(key, addr)| (key.clone(), Address::from(*addr))),
    )
    .map_err(|_| ConsensusError::ValidatorSet("duplicate validator keys"))?;
    oracle.track(0, peers);

    let quota = Quota::per_second(NZU32!(10_000));
    let votes = network.register(CHANNEL_VOTES, quota);
    let certificates = network.register(CHANNEL_CERTIFICATES, quota);
    let resolver = network.register(CHANNEL_RESOLVER, quota);
    let (blocks_out, blocks_in) = network.register(CHANNEL_BLOCKS, quota);
    network.start();

    let (finalized_tx, finalized_rx) = std::sync::mpsc::sync_channel(FINALIZED_QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let finalizer = spawn_finalizer(ledger.clone(), finalized_rx, stop.clone())?;
    spawn_block_receiver(&context, ledger.clone(), blocks_in);

    let app = Application {
        context: Arc::new(context.child("application")),
        ledger,
        chain_id: config.chain_id,
        block_time: config.block_time,
        proposer: config.proposer,
        blocks_out,
        finalized: finalized_tx,
    };
    let engine_config = engine_config(scheme, oracle, app, &config);
    let engine = Engine::new(context.child("engine"), engine_config);
    info!(validators = config.validators.len(), p2p = %config.p2p_listen, "consensus started");
    engine.start(votes, certificates, resolver);
    Ok(Validator {
        stop,
        finalizer: Some(finalizer),
    })
}

/// The application as simplex's automaton, relay and reporter.
type App<L> = Application<
    commonware_runtime::tokio::Context,
    L,
    lookup::Sender<PublicKey, commonware_runtime::tokio::Context>,
>;

/// Simplex's configuration type for this node.
type SimplexConfig<L> = EngineConfig<
    Scheme,
    RoundRobin<Sha256>,
    lookup::Oracle<PublicKey>,
    Digest,
    App<L>,
    App<L>,
    App<L>,
    Sequential,
>;

/// Simplex's configuration for this validator.
fn engine_config<L: Ledger>(
    scheme: Scheme,
    oracle: lookup::Oracle<PublicKey>,
    app: App<L>,
    config: &ValidatorConfig,
) -> SimplexConfig<L> {
    EngineConfig {
        scheme,
        elector: RoundRobin::<Sha256>::default(),
        blocker: oracle,
        automaton: app.clone(),
        relay: app.clone(),
        reporter: app,
        track_historical_votes: false,
        strategy: Sequential,
        partition: "simplex".to_string(),
        mailbox_size: NZUsize!(MAILBOX),
        epoch: Epoch::new(0),
        floor: Floor::Genesis(application::digest_of(config.genesis)),
        replay_buffer: NZUsize!(1 << 20),
        write_buffer: NZUsize!(1 << 20),
        page_cache: CacheRef::new(NZU16!(4096), NZUsize!(256)),
        // The leader timeout must exceed the block time plus the wait for an execution receipt.
        leader_timeout: config.block_time + Duration::from_secs(1),
        certification_timeout: config.block_time + Duration::from_secs(2),
        timeout_retry: Duration::from_secs(5),
        view_retention: ViewDelta::new(64),
        skip: SkipPolicy::Enabled {
            timeout: config.block_time + Duration::from_secs(10),
            budget: SkipBudget::Participants,
        },
        fetch_timeout: NZDuration!(Duration::from_secs(2)),
        fetch_retry_delay: Duration::from_millis(200),
        forward: ForwardPolicy::Disabled,
    }
}

/// The authenticated p2p network: lookup-based peer discovery with an encrypted handshake.
type P2p = lookup::Network<
    commonware_runtime::tokio::Context,
    cups::Cups<sake::Sake<PrivateKey>, ChaCha20Poly1305>,
>;

fn start_network(
    context: &commonware_runtime::tokio::Context,
    config: &ValidatorConfig,
    namespace: &[u8],
) -> (P2p, lookup::Oracle<PublicKey>) {
    let handshake = cups::Cups::<_, ChaCha20Poly1305>::new(
        sake::Sake {
            signer: config.signer.clone(),
            synchrony_bound: Duration::from_secs(5),
            max_handshake_age: Duration::from_secs(10),
            version: sake::Version::V1,
        },
        cups::Version::V1,
    );
    let max_peers = NZUsize!(config.validators.len().max(1));
    let p2p = lookup::Config::local(
        handshake,
        namespace,
        config.p2p_listen,
        max_peers,
        MAX_MESSAGE_BYTES,
        NZUsize!(MAILBOX),
    );
    lookup::Network::new(context.child("p2p"), p2p)
}

fn spawn_finalizer<L: Ledger>(
    ledger: Arc<L>,
    notices: std::sync::mpsc::Receiver<Digest>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, ConsensusError> {
    // Execution is CPU-bound, so finalization runs on its own thread, off the async runtime.
    std::thread::Builder::new()
        .name("finalizer".into())
        .spawn(move || loop {
            match notices.recv_timeout(FINALIZER_POLL) {
                Ok(digest) => {
                    if let Err(err) = finalize_chain(&*ledger, hash_of(&digest)) {
                        error!(%err, "finalization failed; retrying on the next certificate");
                    }
                }
                Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
                Err(_) => return,
            }
        })
        .map_err(ConsensusError::Thread)
}

/// Finalizes `head` and every ancestor above the finalized height, oldest first.
pub fn finalize_chain<L: Ledger + ?Sized>(ledger: &L, head: Hash) -> Result<(), LedgerError> {
    let floor = ledger.finalized_height();
    let mut chain = Vec::new();
    let mut cursor = head;
    loop {
        let block = ledger
            .block(&cursor)
            .ok_or_else(|| LedgerError(format!("finalized block {cursor} is unknown")))?;
        if block.header.height <= floor {
            break;
        }
        cursor = block.header.parent;
        chain.push(block);
    }
    for block in chain.iter().rev() {
        ledger.finalize(block)?;
    }
    Ok(())
}

fn spawn_block_receiver<L: Ledger>(
    context: &commonware_runtime::tokio::Context,
    ledger: Arc<L>,
    mut blocks_in: impl Receiver<PublicKey = PublicKey>,
) {
    context.child("blocks").spawn(move |_| async move {
        while let Ok((peer, bytes)) = blocks_in.recv().await {
            match Block::from_bytes(bytes.as_ref()) {
                Ok(block) => {
                    if let Err(err) = ledger.store_block(&block) {
                        warn!(%err, "could not store relayed block");
                    }
                }
                Err(err) => warn!(?peer, %err, "peer sent a malformed block"),
            }
        }
    });
}
