//! Admit transactions in parallel and hand fee-ordered batches to the block proposer.
//!
//! # The admission pipeline ([`Admission`])
//! ```text
//! submit(batch of raw txs) --bounded ingest queue (shed when full: `overloaded`)-->
//!   N workers, per unit of up to UNIT_TXS transactions:
//!     1. cheap checks: size + decode, chain id, fee floor, seen filter (salted, exact on a hit)
//!     2. conflict pre-filter: claim each sender in a salted table; a sender owned by another
//!        unit in flight sends the transaction to the try-later queue (bounded re-queues)
//!     3. one ed25519 batch verification (ZIP215); on failure, each is checked to name the bad
//!     4. nonce and balance against a read-only snapshot plus the pool's published per-sender
//!        totals, without the pool's lock
//!   --bounded commit queue--> 1 committer: exact checks and insertion under the pool's lock,
//!     once per unit; releases the unit's claims; answers the client.
//! ```
//! The same checks, run one after another in the caller's thread, are [`Mempool::submit`].
//!
//! # The pool
//! Per-sender nonce queues (gaps are held until filled, within `max_nonce_ahead` of the state
//! nonce), a global fee order for block building ([`Mempool::select`]), replace-by-fee for a
//! pending nonce with a [`REPLACE_BUMP_PERCENT`] bump, and count, byte and per-sender bounds; when
//! full, a better-paying transaction evicts the cheapest. After each block,
//! [`Mempool::on_executed`] removes what it included, returns what lost proposals held (a
//! discarded fork) to the pool, and re-checks the senders it touched against the new state.

mod check;
mod filter;
mod pipeline;
mod pool;
mod rejection;
#[cfg(test)]
mod tests;

pub use filter::{CLAIM_SLOTS, SEEN_SLOTS};
pub use pipeline::{Admission, AdmissionConfig, Pending, PipelineStats};
pub use rejection::Rejection;

use check::Checked;
use filter::{ClaimTable, PendingIndex, SeenFilter};
use parking_lot::{Mutex, RwLock};
use peregrine_state::Snapshot;
use peregrine_types::sigcheck::VerifiedCache;
use peregrine_types::{Address, Hash, SignedTransaction};
use pool::Pool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A replacement must pay at least this many percent more fee than the transaction it replaces,
/// so replacing cannot be used to make every node re-gossip a transaction for free.
pub const REPLACE_BUMP_PERCENT: u64 = 10;

/// Limits and policy of the pool.
#[derive(Debug, Clone)]
pub struct MempoolConfig {
    /// The only chain id accepted.
    pub chain_id: u64,
    /// The lowest fee accepted.
    pub min_fee: u64,
    /// Most transactions held.
    pub max_txs: usize,
    /// Most encoded bytes held.
    pub max_bytes: usize,
    /// Most transactions held per sender.
    pub max_per_sender: usize,
    /// How far past its state nonce a sender's held nonces may run, gaps included.
    pub max_nonce_ahead: u64,
}

impl MempoolConfig {
    /// The default limits for `chain_id`: 100,000 transactions, 256 MiB, 1,024 per sender (enough
    /// for a load generator to keep a sender busy across several blocks), nonces up to 4,096 ahead,
    /// fee floor 1.
    pub fn new(chain_id: u64) -> Self {
        Self {
            chain_id,
            min_fee: 1,
            max_txs: 100_000,
            max_bytes: 256 << 20,
            max_per_sender: 1_024,
            max_nonce_ahead: 4_096,
        }
    }
}

/// Counters of admission outcomes, for metrics.
#[derive(Debug)]
pub struct Stats {
    admitted: AtomicU64,
    rejected: [AtomicU64; Rejection::CODES.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            admitted: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Stats {
    /// Transactions admitted so far.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Rejections so far, by reason code, every code listed.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        Rejection::CODES
            .iter()
            .zip(&self.rejected)
            .map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn record(&self, result: &Result<Hash, Rejection>) {
        match result {
            Ok(_) => self.admitted.fetch_add(1, Ordering::Relaxed),
            Err(rejection) => {
                let index = Rejection::CODES
                    .iter()
                    .position(|c| *c == rejection.code())
                    .expect("every code is listed");
                self.rejected[index].fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Pool-side counters: transactions evicted for better-paying ones, and dropped after a block
/// made them invalid.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Transactions held.
    pub txs: usize,
    /// Their encoded bytes.
    pub bytes: usize,
    /// Evicted so far.
    pub evicted: u64,
    /// Dropped after blocks so far.
    pub dropped: u64,
}

/// The transaction pool and the state its admission checks read.
pub struct Mempool {
    config: MempoolConfig,
    pool: Mutex<Pool>,
    latest: RwLock<Snapshot>,
    index: Arc<PendingIndex>,
    seen: Arc<SeenFilter>,
    claims: ClaimTable,
    stats: Stats,
    verified: VerifiedCache,
}

impl Mempool {
    /// An empty pool whose admission checks read `state` until the first block executes.
    pub fn new(config: MempoolConfig, state: Snapshot) -> Self {
        let index = Arc::new(PendingIndex::default());
        let seen = Arc::new(SeenFilter::default());
        Self {
            pool: Mutex::new(Pool::new(state.clone(), index.clone(), seen.clone())),
            latest: RwLock::new(state),
            index,
            seen,
            claims: ClaimTable::default(),
            config,
            stats: Stats::default(),
            verified: VerifiedCache::default(),
        }
    }

    /// The pool's limits and policy.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// Admission counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Size and eviction counters of the pool.
    pub fn pool_stats(&self) -> PoolStats {
        let pool = self.pool.lock();
        PoolStats {
            txs: pool.len(),
            bytes: pool.bytes(),
            evicted: pool.counters.evicted,
            dropped: pool.counters.dropped,
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.pool.lock().len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the pool holds the transaction.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.pool.lock().contains(hash)
    }

    /// The next nonce `sender` can use, given its nonce `state_nonce` in the latest state: one past
    /// the consecutive run of its pending transactions from `state_nonce`.
    pub fn next_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        self.pool.lock().next_nonce(sender, state_nonce)
    }

    /// A pending transaction by hash.
    pub fn get(&self, hash: &Hash) -> Option<SignedTransaction> {
        self.pool.lock().get(hash)
    }

    /// Hashes of transactions whose signatures this pool verified (bounded), so block
    /// verification need not check them again.
    pub fn verified(&self) -> &VerifiedCache {
        &self.verified
    }

    /// The lowest fee admitted.
    pub fn min_fee(&self) -> u64 {
        self.config.min_fee
    }

    /// The state admission checks read: the latest executed block's.
    pub fn state(&self) -> Snapshot {
        self.latest.read().clone()
    }

    /// Decodes and admits raw transaction bytes in the caller's thread.
    pub fn submit_bytes(&self, bytes: &[u8]) -> Result<Hash, Rejection> {
        let result = check::decode(bytes).and_then(|tx| self.admit_one(tx));
        self.stats.record(&result);
        result
    }

    /// Admits one transaction in the caller's thread: the pipeline's checks, one after another.
    pub fn submit(&self, tx: SignedTransaction) -> Result<Hash, Rejection> {
        let result = self.admit_one(tx);
        self.stats.record(&result);
        result
    }

    fn admit_one(&self, tx: SignedTransaction) -> Result<Hash, Rejection> {
        self.cheap_checks(&tx)?;
        if !self.verified.contains(&tx.hash()) {
            tx.verify_signature().map_err(|_| Rejection::BadSignature)?;
            self.verified.insert(tx.hash());
        }
        let pending = self.index.get(&tx.sender());
        let checked = check::against_state(tx, &self.state(), pending, &self.config)?;
        self.commit(&mut self.pool.lock(), checked)
    }

    /// Size, decoding, chain id, fee floor and the seen filter: about a microsecond.
    fn cheap_checks(&self, tx: &SignedTransaction) -> Result<(), Rejection> {
        check::stateless(tx, &self.config)?;
        if self.seen.contains(&tx.hash()) {
            return Err(Rejection::Duplicate);
        }
        Ok(())
    }

    /// The committer's step for one transaction: exact checks and insertion.
    fn commit(&self, pool: &mut Pool, checked: Checked) -> Result<Hash, Rejection> {
        let account = if checked.state == pool.state.id() {
            checked.account
        } else {
            pool::account_of(&pool.state, &checked.tx.sender())?
        };
        let hash = pool.insert(checked.tx, account, &self.config)?;
        self.seen.insert(hash);
        Ok(hash)
    }

    /// Picks up to `max_txs` transactions and `max_bytes` bytes for a block at `height`, highest
    /// fee first, each sender's in nonce order, and marks them proposed at `height`.
    pub fn select(&self, height: u64, max_txs: usize, max_bytes: usize) -> Vec<SignedTransaction> {
        self.pool.lock().select(height, max_txs, max_bytes)
    }

    /// Updates the pool after the block at `height` was executed into `state`: removes
    /// `included`, returns transactions proposed at or below `height` that it did not include to
    /// the pool, drops what the new state makes invalid, and points admission at `state`.
    pub fn on_executed(&self, height: u64, included: &[SignedTransaction], state: &Snapshot) {
        let mut pool = self.pool.lock();
        pool.on_executed(height, included, state.clone());
        *self.latest.write() = state.clone();
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        self.pool.lock().check_invariants(&self.config);
    }
}
