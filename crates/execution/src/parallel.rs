//! The parallel executor: levels from [`crate::schedule`] run on a thread pool, results merged in
//! block order, so state, receipts and commitment are bit-identical to [`crate::SerialExecutor`]
//! for any thread count.
//!
//! Each transaction of a level runs against a read-only view (the parent revision plus the
//! block's writes up to the previous level) and records its own writes. After the level, writes
//! are merged in block order and each fee is credited to the sink as a delta. Levels too small to
//! be worth a fork-join run inline on the calling thread, so a fully contended block costs about
//! what serial execution does.

use crate::rules::{apply_tx, credit_fee, Accounts, Outcome};
use crate::schedule::schedule;
use crate::{read_account, BlockExecutor, BlockOutput, ExecError};
use peregrine_state::{Db, RevisionId, Snapshot};
use peregrine_types::{Account, Address, Block, Encode, SignedTransaction};
use rayon::prelude::*;
use std::collections::HashMap;

/// Levels with fewer transactions than this run inline: below it, a fork-join costs more than it
/// saves (a native transfer executes in about a microsecond).
const MIN_PARALLEL_LEVEL: usize = 64;

/// Executes the levels of a block on a pool of worker threads.
pub struct ParallelExecutor {
    fee_sink: Address,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for ParallelExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ParallelExecutor({} threads)",
            self.pool.current_num_threads()
        )
    }
}

impl ParallelExecutor {
    /// An executor with `threads` workers (0: one per core) paying fees to `fee_sink`.
    pub fn new(fee_sink: Address, threads: usize) -> Result<Self, ExecError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("exec-{i}"))
            .build()
            .map_err(|e| ExecError::ThreadPool(e.to_string()))?;
        Ok(Self { fee_sink, pool })
    }

    /// Worker threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

/// The block's writes so far, over the parent revision.
struct Overlay<'a> {
    parent: &'a Snapshot,
    written: HashMap<Address, Account>,
}

impl Overlay<'_> {
    fn get(&self, address: &Address) -> Result<Account, ExecError> {
        match self.written.get(address) {
            Some(account) => Ok(*account),
            None => read_account(|key| self.parent.get(key).map(<[u8]>::to_vec), address),
        }
    }
}

impl Accounts for Overlay<'_> {
    fn get(&mut self, address: &Address) -> Result<Account, ExecError> {
        Overlay::get(self, address)
    }

    fn set(&mut self, address: Address, account: Account) {
        self.written.insert(address, account);
    }
}

/// One transaction's view: its own writes over the shared overlay.
struct TxView<'a, 'b> {
    base: &'a Overlay<'b>,
    writes: Vec<(Address, Account)>,
}

impl Accounts for TxView<'_, '_> {
    fn get(&mut self, address: &Address) -> Result<Account, ExecError> {
        match self.writes.iter().rev().find(|(a, _)| a == address) {
            Some((_, account)) => Ok(*account),
            None => self.base.get(address),
        }
    }

    fn set(&mut self, address: Address, account: Account) {
        self.writes.push((address, account));
    }
}

type TxResult = Result<(Outcome, Vec<(Address, Account)>), ExecError>;

fn run_tx(base: &Overlay<'_>, tx: &SignedTransaction) -> TxResult {
    let mut view = TxView {
        base,
        writes: Vec::with_capacity(2),
    };
    let outcome = apply_tx(&mut view, tx)?;
    Ok((outcome, view.writes))
}

impl ParallelExecutor {
    /// The block's account writes as sorted state key/value pairs, encoded on the pool.
    fn encode_sorted(&self, written: HashMap<Address, Account>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut accounts: Vec<(Address, Account)> = written.into_iter().collect();
        self.pool.install(|| {
            // Account keys are a fixed prefix then the address, so address order is key order.
            accounts.par_sort_unstable_by_key(|(address, _)| *address);
            accounts
                .par_iter()
                .map(|(address, account)| {
                    (peregrine_types::keys::account(address), account.encode())
                })
                .collect()
        })
    }

    fn run_level(&self, overlay: &Overlay<'_>, block: &Block, level: &[u32]) -> Vec<TxResult> {
        let run = |&i: &u32| run_tx(overlay, &block.txs[i as usize]);
        if level.len() < MIN_PARALLEL_LEVEL || self.threads() == 1 {
            level.iter().map(run).collect()
        } else {
            self.pool.install(|| level.par_iter().map(run).collect())
        }
    }
}

impl BlockExecutor for ParallelExecutor {
    fn execute(
        &self,
        db: &Db,
        parent: RevisionId,
        block: &Block,
    ) -> Result<BlockOutput, ExecError> {
        let snapshot = db.snapshot(parent)?;
        let mut overlay = Overlay {
            parent: &snapshot,
            written: HashMap::new(),
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; block.txs.len()];
        for level in schedule(block, &self.fee_sink).levels {
            let results = self.run_level(&overlay, block, &level);
            // Merge in block order: each transaction's writes, then its fee as a delta.
            for (&index, result) in level.iter().zip(results) {
                let (outcome, writes) = result?;
                overlay.written.extend(writes);
                credit_fee(&mut overlay, &self.fee_sink, outcome.fee)?;
                outcomes[index as usize] = Some(outcome);
            }
        }
        let receipts = block
            .txs
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(index, (tx, outcome))| {
                let outcome = outcome.expect("every transaction is in exactly one level");
                crate::receipt(block, index, tx, &outcome)
            })
            .collect();
        let mut ws = db.begin(parent)?;
        ws.put_sorted(self.encode_sorted(overlay.written))?;
        // The commit runs on this executor's pool, so its thread count holds throughout; on one
        // thread the sequential commit avoids the extra parent lookups that overlapping needs.
        crate::seal(db, ws, block, receipts, |ws| {
            if self.threads() == 1 {
                db.commit_sequential(ws)
            } else {
                self.pool.install(|| db.commit(ws))
            }
        })
    }
}
