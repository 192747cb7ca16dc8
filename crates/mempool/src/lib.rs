//! Admit transactions in parallel and hand fee-ordered batches to the block proposer.
//!
//! # Interface
//! - [`Mempool::submit`] admits one transaction against a read-only state [`Snapshot`] (the latest
//!   executed state) and returns its hash or a typed [`Rejection`].
//! - [`Mempool::select`] hands the proposer a fee-ordered batch in which each sender's
//!   transactions are consecutive nonces; selected transactions are marked as proposed at a height.
//! - [`Mempool::on_executed`] removes what a block included, releases what a lost proposal held,
//!   and drops what the new state made invalid.
//!
//! # Admission order
//! Cheap, stateless checks first (chain id, fee floor), then the signature (outside the pool's
//! lock, so concurrent submitters verify in parallel), then the state checks and insertion under
//! the lock. A transaction's nonce must be the sender's next one (state nonce plus the sender's
//! pending count): nonce gaps are refused, not held. A pending transaction may be replaced by one
//! with the same nonce and a fee at least [`REPLACE_BUMP_PERCENT`] higher, until it is proposed.
//!
//! # Bounds
//! The pool holds at most `max_txs` transactions and `max_bytes` bytes, and at most
//! `max_per_sender` per sender; when full it refuses new transactions (typed `PoolFull`).

mod pool;
#[cfg(test)]
mod tests;

pub use pool::Rejection;

use parking_lot::Mutex;
use peregrine_state::Snapshot;
use peregrine_types::sigcheck::VerifiedCache;
use peregrine_types::{Hash, SignedTransaction};
use pool::Pool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl MempoolConfig {
    /// The default limits for `chain_id`: 100,000 transactions, 256 MiB, 1,024 per sender (enough
    /// for a load generator to keep a sender busy across several blocks), fee floor 1.
    pub fn new(chain_id: u64) -> Self {
        Self {
            chain_id,
            min_fee: 1,
            max_txs: 100_000,
            max_bytes: 256 << 20,
            max_per_sender: 1_024,
        }
    }
}

/// Counters of admission outcomes, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    admitted: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Transactions admitted so far.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Rejections so far, by reason code.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().clone()
    }
}

/// The transaction pool.
pub struct Mempool {
    config: MempoolConfig,
    pool: Mutex<Pool>,
    stats: Stats,
    verified: VerifiedCache,
}

impl Mempool {
    /// An empty pool.
    pub fn new(config: MempoolConfig) -> Self {
        Self {
            pool: Mutex::new(Pool::default()),
            config,
            stats: Stats::default(),
            verified: VerifiedCache::default(),
        }
    }

    /// Admission counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
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
    /// its highest pending transaction, or `state_nonce` when it has none pending.
    pub fn next_nonce(&self, sender: &peregrine_types::Address, state_nonce: u64) -> u64 {
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

    /// Decodes and admits raw transaction bytes.
    pub fn submit_bytes(&self, bytes: &[u8], state: &Snapshot) -> Result<Hash, Rejection> {
        match SignedTransaction::from_bytes(bytes) {
            Ok(tx) => self.submit(tx, state),
            Err(error) => self.count(Err(Rejection::Malformed(error))),
        }
    }

    /// Admits one transaction, checked against `state` and the pending pool.
    pub fn submit(&self, tx: SignedTransaction, state: &Snapshot) -> Result<Hash, Rejection> {
        let result = self.check_stateless(&tx).and_then(|()| {
            tx.verify_signature().map_err(|_| Rejection::BadSignature)?;
            self.verified.insert(tx.hash());
            self.pool.lock().insert(tx, state, &self.config)
        });
        self.count(result)
    }

    fn check_stateless(&self, tx: &SignedTransaction) -> Result<(), Rejection> {
        let body = tx.tx();
        if body.chain_id != self.config.chain_id {
            return Err(Rejection::WrongChain {
                expected: self.config.chain_id,
                got: body.chain_id,
            });
        }
        if body.fee < self.config.min_fee {
            return Err(Rejection::FeeTooLow {
                min: self.config.min_fee,
                got: body.fee,
            });
        }
        Ok(())
    }

    fn count(&self, result: Result<Hash, Rejection>) -> Result<Hash, Rejection> {
        match &result {
            Ok(_) => {
                self.stats.admitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(rejection) => {
                *self
                    .stats
                    .rejected
                    .lock()
                    .entry(rejection.code())
                    .or_default() += 1;
            }
        }
        result
    }

    /// Picks up to `max_txs` transactions and `max_bytes` bytes for a block at `height`, highest
    /// fee first, each sender's in nonce order, and marks them proposed at `height`.
    pub fn select(&self, height: u64, max_txs: usize, max_bytes: usize) -> Vec<SignedTransaction> {
        self.pool.lock().select(height, max_txs, max_bytes)
    }

    /// Updates the pool after the block at `height` was executed: removes `included`, releases
    /// transactions proposed at or below `height` that it did not include, and drops transactions
    /// the new `state` makes invalid.
    pub fn on_executed(&self, height: u64, included: &[Hash], state: &Snapshot) {
        self.pool.lock().on_executed(height, included, state);
    }
}
