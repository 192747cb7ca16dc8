//! The chain: block log, state database, executor and mempool behind consensus's [`Ledger`].
//!
//! Blocks execute on the parallel executor with one worker per core; its results are identical to
//! the serial reference by construction and by test, so the thread count never affects state.
//!
//! Blocks execute early, as soon as they are stored, on forks of the state ([`crate::speculate`]).
//! Consensus hands finalized blocks over in height order; the chain takes the block's early
//! result when it was computed on the previous finalized revision, and executes the block there
//! otherwise. The block log records the finalization (receipts and state commitment), and then
//! the state database finalizes the new revision, dropping the forks that lost. Readers (the RPC)
//! use snapshots: the last [`RETAINED_HEIGHTS`] finalized states stay readable by height, and
//! reading never blocks execution.

use crate::genesis::Genesis;
use crate::metrics::Metrics;
use crate::speculate::{Final, Speculator};
use crate::store::{BlockStore, StoreError};
use parking_lot::{Mutex, RwLock};
use peregrine_consensus::{Ledger, LedgerError};
use peregrine_execution::{BlockExecutor, BlockOutput, ParallelExecutor};
use peregrine_mempool::{Admission, AdmissionConfig, Mempool, MempoolConfig};
use peregrine_rpc::HeaderView;
use peregrine_state::{Db, RevisionId, Snapshot};
use peregrine_types::{Account, Block, Hash, Receipt, SignedTransaction};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// How many recent finalized states stay readable by height. Older heights answer "not
/// retained"; the bound keeps memory proportional to recent churn, not to history.
pub const RETAINED_HEIGHTS: usize = 256;
/// The most transactions a proposal takes from the mempool.
pub const MAX_TXS_PER_BLOCK: usize = 10_000;
/// New-head notifications buffered for slow subscribers before they start missing some.
const HEADS_CHANNEL: usize = 256;

/// Why the chain could not open or advance.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The block log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state database failed.
    #[error("state: {0}")]
    State(#[from] peregrine_state::Error),
    /// Execution failed.
    #[error("execution: {0}")]
    Exec(#[from] peregrine_execution::ExecError),
    /// The contract engine could not start.
    #[error("contract engine: {0}")]
    Vm(String),
    /// Durable data contradicts itself.
    #[error("inconsistent data directory: {0}")]
    Inconsistent(String),
    /// A background thread could not start.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

struct Head {
    /// The finalized block and its revision.
    at: Final,
    recent: VecDeque<(u64, Snapshot)>,
}

/// The node's chain.
pub struct Chain {
    /// First, so its thread stops before anything it uses is dropped.
    speculator: Speculator,
    chain_id: u64,
    genesis: Block,
    db: Arc<Db>,
    vm: peregrine_vm::Vm,
    executor: Arc<dyn BlockExecutor>,
    mempool: Arc<Mempool>,
    admission: Admission,
    store: Mutex<BlockStore>,
    head: RwLock<Head>,
    highest_known: Mutex<u64>,
    heads: broadcast::Sender<HeaderView>,
    metrics: Arc<Metrics>,
}

fn state_height(snapshot: &Snapshot) -> Option<u64> {
    let bytes = snapshot.get(peregrine_types::keys::META_HEIGHT)?;
    Some(u64::from_le_bytes(bytes.as_slice().try_into().ok()?))
}

impl Chain {
    /// Opens the chain in `datadir`, creating it from `genesis` on first start, and recovers
    /// whatever the block log finalized beyond the durable state.
    pub fn open(
        datadir: &Path,
        genesis: &Genesis,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ChainError> {
        let db = Arc::new(Db::open(&datadir.join("state"))?);
        let mut snapshot = db.snapshot(db.finalized())?;
        if state_height(&snapshot).is_none() {
            let allocation = genesis.allocation().map_err(ChainError::Inconsistent)?;
            let revision = peregrine_execution::apply_genesis(&db, &allocation)?;
            snapshot = db.snapshot(revision)?;
            info!(accounts = allocation.len(), "created genesis state");
        }
        let mut store = BlockStore::open(&datadir.join("blocks.log"))?;
        let genesis_block = match store.finalized(0) {
            Some(entry) => genesis.block(entry.state_root),
            None => {
                // The state is still at genesis here: the log is written before the state moves.
                let block = genesis.block(snapshot.commitment());
                store.put_finalized(&block, snapshot.commitment(), &[])?;
                block
            }
        };
        if store.finalized(0).map(|f| f.hash) != Some(genesis_block.hash()) {
            return Err(ChainError::Inconsistent(
                "the block log does not start from this genesis".into(),
            ));
        }
        let head = Head {
            at: Final {
                height: 0,
                hash: genesis_block.hash(),
                revision: db.finalized(),
            },
            recent: VecDeque::new(),
        };
        let mempool = Arc::new(Mempool::new(
            MempoolConfig::new(genesis.chain_id),
            snapshot.clone(),
        ));
        let vm = peregrine_execution::contracts::node_vm(peregrine_vm::VmConfig {
            cache_dir: Some(datadir.join("modules")),
            ..Default::default()
        })
        .map_err(|e| ChainError::Vm(e.to_string()))?;
        let executor: Arc<dyn BlockExecutor> = Arc::new(ParallelExecutor::new(
            crate::genesis::FEE_SINK,
            0,
            vm.clone(),
        )?);
        let speculator =
            Speculator::start(db.clone(), executor.clone(), head.at).map_err(|source| {
                ChainError::Thread {
                    what: "speculation",
                    source,
                }
            })?;
        let chain = Self {
            speculator,
            chain_id: genesis.chain_id,
            genesis: genesis_block,
            head: RwLock::new(head),
            db,
            vm,
            executor,
            mempool: mempool.clone(),
            admission: Admission::start(mempool, AdmissionConfig::default()),
            store: Mutex::new(store),
            highest_known: Mutex::new(0),
            heads: broadcast::channel(HEADS_CHANNEL).0,
            metrics,
        };
        chain.recover(state_height(&snapshot).unwrap_or(0))?;
        Ok(chain)
    }

    /// Re-executes blocks the log finalized beyond the durable state (a crash between the two).
    fn recover(&self, state_height: u64) -> Result<(), ChainError> {
        let log_height = self.store.lock().finalized_height().unwrap_or(0);
        let entry = self.store.lock().finalized(state_height).ok_or_else(|| {
            ChainError::Inconsistent(format!(
                "state is at height {state_height} but the block log only at {log_height}"
            ))
        })?;
        let revision = self.db.finalized();
        let head = Head {
            at: Final {
                height: state_height,
                hash: entry.hash,
                revision,
            },
            recent: VecDeque::new(),
        };
        self.speculator.finalized(head.at);
        let at = head.at;
        *self.head.write() = head;
        self.remember(at, self.db.snapshot(revision)?);
        for height in state_height + 1..=log_height {
            let entry = self
                .store
                .lock()
                .finalized(height)
                .expect("height within the log");
            let block = self.store.lock().block(&entry.hash)?.ok_or_else(|| {
                ChainError::Inconsistent(format!("finalized block at height {height} is missing"))
            })?;
            let started = Instant::now();
            let out = self.execute(self.head.read().at.revision, &block)?;
            if out.state_root != entry.state_root {
                return Err(ChainError::Inconsistent(format!(
                    "re-executing height {height} gives a different state"
                )));
            }
            self.advance(&block, &out, started)?;
            info!(height, "recovered finalized block from the block log");
        }
        *self.highest_known.lock() = log_height;
        Ok(())
    }

    /// Makes `at` the finalized head with `snapshot` its state.
    fn remember(&self, at: Final, snapshot: Snapshot) {
        let mut head = self.head.write();
        head.at = at;
        head.recent.push_back((at.height, snapshot));
        while head.recent.len() > RETAINED_HEIGHTS {
            head.recent.pop_front();
        }
    }

    /// Executes `block` on `parent`.
    fn execute(&self, parent: RevisionId, block: &Block) -> Result<BlockOutput, ChainError> {
        Ok(self.executor.execute(&self.db, parent, block)?)
    }

    /// Finalizes the executed block's state and makes it the head.
    fn advance(
        &self,
        block: &Block,
        out: &BlockOutput,
        started: Instant,
    ) -> Result<Snapshot, ChainError> {
        self.db.finalize(out.revision)?;
        let snapshot = self.db.snapshot(out.revision)?;
        let at = Final {
            height: block.header.height,
            hash: block.hash(),
            revision: out.revision,
        };
        // The new head and its state become visible together, in one step.
        self.remember(at, snapshot.clone());
        self.speculator.finalized(at);
        self.metrics
            .record_block(block.txs.len(), started.elapsed());
        Ok(snapshot)
    }

    fn finalize_block(&self, block: &Block) -> Result<(), ChainError> {
        let Final {
            height,
            hash,
            revision,
        } = self.head.read().at;
        if block.header.height != height + 1 || block.header.parent != hash {
            return Err(ChainError::Inconsistent(format!(
                "block {} at height {} does not extend the finalized head {hash} at {height}",
                block.hash(),
                block.header.height
            )));
        }
        let started = Instant::now();
        let out = match self.speculator.take(&block.hash(), revision) {
            Some(out) => out,
            None => self.execute(revision, block)?,
        };
        // The log records the finalization before the state moves (see the store's docs).
        self.store
            .lock()
            .put_finalized(block, out.state_root, &out.receipts)?;
        let snapshot = self.advance(block, &out, started)?;
        self.mempool
            .on_executed(block.header.height, &block.txs, &snapshot);
        let _ = self.heads.send(HeaderView::of(block, Some(out.state_root)));
        Ok(())
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The genesis block.
    pub fn genesis(&self) -> &Block {
        &self.genesis
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Subscribes to newly finalized headers.
    pub fn subscribe_heads(&self) -> broadcast::Receiver<HeaderView> {
        self.heads.subscribe()
    }

    /// The admission pipeline every submission path (RPC, binary ingest) goes through.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The latest executed (here: finalized) height and its state.
    pub fn latest(&self) -> (u64, Snapshot) {
        let head = self.head.read();
        let (height, snapshot) = head
            .recent
            .back()
            .expect("the head state is always retained");
        (*height, snapshot.clone())
    }

    /// The state after `height`, if retained.
    pub fn state_at(&self, height: u64) -> Option<Snapshot> {
        let head = self.head.read();
        head.recent
            .iter()
            .find(|(h, _)| *h == height)
            .map(|(_, s)| s.clone())
    }

    /// An account at a state.
    pub fn account(
        snapshot: &Snapshot,
        address: &peregrine_types::Address,
    ) -> Result<Account, ChainError> {
        Account::from_record(
            snapshot
                .get(&peregrine_types::keys::account(address))
                .as_deref(),
        )
        .map_err(|e| ChainError::Inconsistent(format!("account {address}: {e}")))
    }

    /// Runs `request` read-only on `snapshot` (the state after `height`); nothing is kept.
    pub fn view_call(
        &self,
        height: u64,
        snapshot: Snapshot,
        request: &peregrine_rpc::CallRequest,
        args: Vec<u8>,
    ) -> peregrine_vm::Outcome {
        let max = peregrine_types::gas::MAX_TX_GAS;
        let ctx = peregrine_vm::CallContext {
            caller: request
                .caller
                .unwrap_or(peregrine_types::Address([0; 20]))
                .0,
            contract: request.contract.0,
            height,
            time_ms: self
                .block_at(height)
                .ok()
                .flatten()
                .map_or(0, |(block, _)| block.header.timestamp_ms),
            args,
            gas_limit: request.gas.unwrap_or(max).min(max),
        };
        let world = peregrine_execution::contracts::snapshot_world(snapshot);
        self.vm.call(&request.method, ctx, world)
    }

    /// The finalized height.
    pub fn finalized_height(&self) -> u64 {
        self.head.read().at.height
    }

    /// Finalized blocks whose early, speculative execution was used.
    pub fn speculative_hits(&self) -> u64 {
        self.speculator.hits()
    }

    /// The highest block height this node has seen, final or not.
    pub fn highest_known(&self) -> u64 {
        *self.highest_known.lock()
    }

    /// A finalized block by height, with its post-state commitment.
    ///
    /// The block log records a block before the state moves to it (see the store's docs); a block
    /// is visible here, and its transactions through [`Chain::included_tx`], only once the state
    /// has, so a reader who sees a transaction included also sees its effects.
    pub fn block_at(&self, height: u64) -> Result<Option<(Block, Hash)>, ChainError> {
        if height > self.finalized_height() {
            return Ok(None);
        }
        let store = self.store.lock();
        let Some(entry) = store.finalized(height) else {
            return Ok(None);
        };
        Ok(store.block(&entry.hash)?.map(|b| (b, entry.state_root)))
    }

    /// A finalized block by hash, with its post-state commitment.
    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<(Block, Hash)>, ChainError> {
        let Some(block) = self.store.lock().block(hash)? else {
            return Ok(None);
        };
        match self.block_at(block.header.height)? {
            Some((finalized, root)) if finalized.hash() == *hash => Ok(Some((finalized, root))),
            _ => Ok(None),
        }
    }

    /// An included transaction with its receipt.
    pub fn included_tx(
        &self,
        hash: &Hash,
    ) -> Result<Option<(SignedTransaction, Receipt)>, ChainError> {
        let Some((height, index)) = self.store.lock().locate_tx(hash) else {
            return Ok(None);
        };
        let Some((block, _)) = self.block_at(height)? else {
            return Ok(None);
        };
        let receipts = self.store.lock().receipts(height)?;
        let tx = block.txs.get(index as usize).cloned();
        Ok(tx.zip(receipts.get(index as usize).cloned()))
    }

    /// The state commitment after the finalized head.
    pub fn state_root(&self) -> Hash {
        self.latest().1.commitment()
    }

    /// The finalized head's hash.
    pub fn finalized_hash(&self) -> Hash {
        self.head.read().at.hash
    }
}

impl Ledger for Chain {
    fn block(&self, hash: &Hash) -> Option<Block> {
        match self.store.lock().block(hash) {
            Ok(block) => block,
            Err(err) => {
                warn!(%err, "reading a block failed");
                None
            }
        }
    }

    fn store_block(&self, block: &Block) -> Result<(), LedgerError> {
        self.store
            .lock()
            .put_block(block)
            .map_err(|e| LedgerError(e.to_string()))?;
        {
            let mut highest = self.highest_known.lock();
            *highest = (*highest).max(block.header.height);
        }
        self.speculator.offer(block);
        Ok(())
    }

    fn exec_root(&self, height: u64) -> Option<Hash> {
        if height > self.finalized_height() {
            return None;
        }
        self.store.lock().finalized(height).map(|f| f.state_root)
    }

    fn select_txs(&self, height: u64) -> Vec<SignedTransaction> {
        let max_bytes = peregrine_types::block::MAX_BLOCK_BYTES - 64 * 1024;
        self.mempool.select(height, MAX_TXS_PER_BLOCK, max_bytes)
    }

    fn is_verified(&self, hash: &Hash) -> bool {
        self.mempool.verified().contains(hash)
    }

    fn finalized_height(&self) -> u64 {
        Chain::finalized_height(self)
    }

    fn finalize(&self, block: &Block) -> Result<(), LedgerError> {
        self.finalize_block(block)
            .map_err(|e| LedgerError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;
    use crate::genesis::{dev_key, Genesis, DEV_BALANCE};
    use peregrine_consensus::Ledger;
    use peregrine_types::{Block, Hash, Payload, PublicKey, Transaction};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn open(dir: &tempfile::TempDir) -> Chain {
        Chain::open(
            dir.path(),
            &Genesis::dev(4, DEV_BALANCE, 1_000),
            Arc::default(),
        )
        .expect("open chain")
    }

    /// A child of `parent` in which development account `from` sends `amount` to account 3.
    fn child(chain: &Chain, parent: &Block, from: u32, nonce: u64, amount: u128) -> Block {
        let key = dev_key(from);
        let tx = Transaction {
            chain_id: chain.chain_id(),
            sender: key.public_key(),
            nonce,
            fee: 100_000,
            payload: Payload::Transfer {
                to: dev_key(3).public_key().address(),
                amount,
            },
            access: vec![],
        }
        .sign(&key);
        Block::new(
            parent.header.height + 1,
            parent.hash(),
            parent.header.timestamp_ms + 1,
            PublicKey::default(),
            Hash::default(),
            vec![tx],
        )
    }

    fn wait_for_result(chain: &Chain, block: &Block) {
        let started = Instant::now();
        while !chain.speculator.has_result(&block.hash()) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "block {} was never executed early",
                block.header.height
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The state commitment after finalizing `blocks` on a fresh chain that never saw them
    /// early: the reference the speculative path must match.
    fn reference_root(blocks: &[&Block]) -> Hash {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = open(&dir);
        for block in blocks {
            Ledger::finalize(&chain, block).expect("finalize");
        }
        assert_eq!(chain.speculative_hits(), 0);
        chain.state_root()
    }

    #[test]
    fn stored_blocks_execute_early_and_finalize_to_the_same_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = open(&dir);
        let b1 = child(&chain, chain.genesis(), 0, 0, 5);
        let b2 = child(&chain, &b1, 1, 0, 7);
        chain.store_block(&b1).expect("store");
        chain.store_block(&b2).expect("store");
        // The second executes on the first's early result: a chain of forks.
        wait_for_result(&chain, &b2);
        Ledger::finalize(&chain, &b1).expect("finalize");
        Ledger::finalize(&chain, &b2).expect("finalize");
        assert_eq!(chain.speculative_hits(), 2);
        assert_eq!(chain.state_root(), reference_root(&[&b1, &b2]));
        assert_eq!(chain.db.retained(), vec![chain.head.read().at.revision]);
    }

    #[test]
    fn the_losing_fork_is_dropped_and_the_winner_is_not_executed_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = open(&dir);
        let genesis = chain.genesis().clone();
        let loser = child(&chain, &genesis, 0, 0, 5);
        let winner = child(&chain, &genesis, 1, 0, 9);
        let on_loser = child(&chain, &loser, 2, 0, 1);
        for block in [&loser, &winner, &on_loser] {
            chain.store_block(block).expect("store");
        }
        for block in [&loser, &winner, &on_loser] {
            wait_for_result(&chain, block);
        }
        Ledger::finalize(&chain, &winner).expect("finalize");
        assert_eq!(chain.speculative_hits(), 1);
        assert_eq!(chain.state_root(), reference_root(&[&winner]));
        // The loser and the block built on it are gone, from the results and from the state.
        assert!(!chain.speculator.has_result(&loser.hash()));
        assert!(!chain.speculator.has_result(&on_loser.hash()));
        chain.db.settle().expect("settle");
        assert_eq!(chain.db.retained(), vec![chain.head.read().at.revision]);
        // A block on the winner is still executed early, on the new head.
        let next = child(&chain, &winner, 0, 0, 3);
        chain.store_block(&next).expect("store");
        wait_for_result(&chain, &next);
        Ledger::finalize(&chain, &next).expect("finalize");
        assert_eq!(chain.speculative_hits(), 2);
        assert_eq!(chain.state_root(), reference_root(&[&winner, &next]));
    }

    #[test]
    fn blocks_out_of_reach_are_not_executed_early_and_a_stray_finalization_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = open(&dir);
        let genesis = chain.genesis().clone();
        let mut stranger = genesis.clone();
        stranger.header.timestamp_ms += 7;
        let orphan = child(&chain, &stranger, 0, 0, 5);
        let mut far = child(&chain, &genesis, 0, 0, 5);
        far.header.height = 1 + crate::speculate::MAX_AHEAD + 1;
        let good = child(&chain, &genesis, 1, 0, 2);
        for block in [&orphan, &far, &good] {
            chain.store_block(block).expect("store");
        }
        // One thread takes offers in order: once the good block has a result, the others were
        // seen and passed over.
        wait_for_result(&chain, &good);
        assert!(!chain.speculator.has_result(&orphan.hash()));
        assert!(!chain.speculator.has_result(&far.hash()));

        let root = chain.state_root();
        let error = Ledger::finalize(&chain, &orphan).expect_err("does not extend the head");
        assert!(
            error.0.contains("does not extend the finalized head"),
            "{error}"
        );
        assert_eq!((chain.finalized_height(), chain.state_root()), (0, root));
        Ledger::finalize(&chain, &good).expect("finalize");
        assert_eq!(chain.speculative_hits(), 1);
    }

    #[test]
    fn a_block_is_visible_only_once_the_state_has_moved_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = open(&dir);
        let block = child(&chain, chain.genesis(), 0, 0, 5);
        let tx = block.txs[0].hash();
        let sender = dev_key(0).public_key().address();
        let out = chain
            .execute(chain.head.read().at.revision, &block)
            .expect("execute");
        // The log records the block first; until the state follows, readers see neither.
        chain
            .store
            .lock()
            .put_finalized(&block, out.state_root, &out.receipts)
            .expect("log");
        assert!(chain.block_at(1).expect("read").is_none());
        assert!(chain.included_tx(&tx).expect("read").is_none());
        assert_eq!(
            Chain::account(&chain.latest().1, &sender)
                .expect("account")
                .nonce,
            0
        );
        chain
            .advance(&block, &out, Instant::now())
            .expect("advance");
        assert_eq!(
            chain.block_at(1).expect("read").map(|(b, _)| b.hash()),
            Some(block.hash())
        );
        assert!(chain.included_tx(&tx).expect("read").is_some());
        let (height, state) = chain.latest();
        assert_eq!(
            (
                height,
                Chain::account(&state, &sender).expect("account").nonce
            ),
            (1, 1)
        );
    }
}
