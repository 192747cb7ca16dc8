//! Execute a block: schedule by access lists, run in parallel, produce receipts and the state commitment.
//!
//! # Interface
//! A [`BlockExecutor`] takes the state database, the revision of the parent block and a block, and
//! returns the new revision, one receipt per transaction and the new state commitment. Callers
//! (the node) depend only on this trait, so the parallel scheduler of the execution issue slots in
//! behind it; [`SerialExecutor`] is the reference every faster executor must match bit for bit.
//!
//! # Rules of a transaction
//! 1. The nonce must equal the sender's account nonce, else the receipt is `SkippedBadNonce` and
//!    nothing changes.
//! 2. The sender must be able to pay the fee, else `SkippedFeeUnpayable` and nothing changes.
//! 3. The fee moves to the fee sink and the nonce advances.
//! 4. A transfer moves its amount if the balance (after the fee) covers it (`Success`), else
//!    `FailedInsufficientBalance`. A deploy or call runs on the VM ([`rules`], [`contracts`]):
//!    it pays only the fee of the gas it used, and a failure (`FailedContract`) changes nothing
//!    else.
//!
//! Value only moves, it is never created or destroyed, so total supply is conserved by every block.
//! Signatures are checked at admission and again by block verification in consensus; execution
//! itself assumes every transaction in an ordered block is signed.
//!
//! # Parallel execution
//! [`ParallelExecutor`] derives levels of non-conflicting transactions from their access sets
//! ([`schedule`]), runs each level on a worker pool, and merges results in block order, crediting
//! fees to the sink as ordered deltas. [`rules::apply_tx`] is the one definition of a
//! transaction's effect, used by both executors.

pub mod contracts;
pub mod genesis;
mod parallel;
pub mod rules;
pub mod schedule;
mod serial;

pub use genesis::{apply_genesis, GenesisAccount};
pub use parallel::ParallelExecutor;
pub use serial::SerialExecutor;

use peregrine_state::WriteSet;
use peregrine_state::{Db, RevisionId};
use peregrine_types::{Account, Address, Block, Hash, Receipt, SignedTransaction};
use thiserror::Error;

/// What one block's execution produced.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// The committed revision holding the post-block state.
    pub revision: RevisionId,
    /// One receipt per transaction, in block order.
    pub receipts: Vec<Receipt>,
    /// The state commitment of the post-block state.
    pub state_root: Hash,
}

/// Why a block could not be executed. Transactions never cause these: a bad transaction gets a
/// failing receipt; these are faults of the node's own storage.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The state database failed.
    #[error("state database: {0}")]
    State(#[from] peregrine_state::Error),
    /// A stored account record does not decode.
    #[error("corrupt account record for {address}: {source}")]
    CorruptAccount {
        /// The account.
        address: Address,
        /// The decode failure.
        source: peregrine_types::DecodeError,
    },
    /// The genesis balances add up to more than a `u128` can hold; since value is conserved,
    /// bounding the supply here is what rules out balance overflow in every later block.
    #[error("genesis balances overflow the total supply")]
    SupplyOverflow,
    /// The worker pool could not start.
    #[error("cannot start execution threads: {0}")]
    ThreadPool(String),
}

/// The receipt of transaction `index` of `block`.
pub(crate) fn receipt(
    block: &Block,
    index: usize,
    tx: &SignedTransaction,
    outcome: rules::Outcome,
) -> Receipt {
    Receipt {
        tx_hash: tx.hash(),
        height: block.header.height,
        index: index as u32,
        status: outcome.status,
        fee_paid: outcome.fee,
        gas_used: outcome.gas,
        output: outcome.output,
        events: outcome.events,
    }
}

/// Adds a block's contract writes to its write set.
pub(crate) fn put_raw_writes(
    ws: &mut WriteSet,
    raw: std::sync::Arc<contracts::RawWrites>,
) -> Result<(), peregrine_state::Error> {
    let raw = std::sync::Arc::try_unwrap(raw).unwrap_or_else(|shared| (*shared).clone());
    for (key, value) in raw {
        match value {
            Some(value) => ws.put(key, value)?,
            None => ws.delete(key)?,
        }
    }
    Ok(())
}

/// Finishes a block's write set: records the block's height (so a restarted node knows which
/// blocks its durable state includes), commits it with `commit`, and assembles the output.
pub(crate) fn seal(
    db: &Db,
    mut ws: WriteSet,
    block: &Block,
    receipts: Vec<Receipt>,
    commit: impl FnOnce(WriteSet) -> Result<RevisionId, peregrine_state::Error>,
) -> Result<BlockOutput, ExecError> {
    let height = block.header.height.to_le_bytes().to_vec();
    ws.put(peregrine_types::keys::META_HEIGHT.to_vec(), height)?;
    let revision = commit(ws)?;
    let state_root = db.snapshot(revision)?.commitment();
    Ok(BlockOutput {
        revision,
        receipts,
        state_root,
    })
}

/// Executes ordered blocks on top of a parent revision.
pub trait BlockExecutor: Send + Sync {
    /// Executes `block` on top of `parent` and commits the result as a new revision.
    fn execute(&self, db: &Db, parent: RevisionId, block: &Block)
        -> Result<BlockOutput, ExecError>;
}

/// Reads an account from any key/value source; a missing record is the empty account.
pub fn read_account(
    get: impl FnOnce(&[u8]) -> Option<peregrine_state::Bytes>,
    address: &Address,
) -> Result<Account, ExecError> {
    let record = get(&peregrine_types::keys::account_key(address));
    Account::from_record(record.as_deref()).map_err(|source| ExecError::CorruptAccount {
        address: *address,
        source,
    })
}

/// Sums the balances of every account in a snapshot: the total supply.
pub fn total_supply(snapshot: &peregrine_state::Snapshot) -> u128 {
    use std::ops::Bound;
    let start = [peregrine_types::keys::ACCOUNT_PREFIX];
    let end = [peregrine_types::keys::ACCOUNT_PREFIX + 1];
    snapshot
        .range((Bound::Included(&start[..]), Bound::Excluded(&end[..])))
        .filter_map(|(_, v)| peregrine_types::decode_exact::<Account>(&v).ok())
        .map(|account| account.balance)
        .sum()
}

#[cfg(test)]
mod tests;
