//! The serial executor: the reference semantics every faster executor must reproduce exactly.

use crate::contracts::{BlockWorld, RawWrites};
use crate::rules::{apply_tx, credit_fee, Ledger, TxEnv};
use crate::{read_account, BlockExecutor, BlockOutput, ExecError};
use peregrine_state::{Db, RevisionId, Snapshot, WriteSet};
use peregrine_types::{Account, Address, Block};
use peregrine_vm::Vm;
use std::sync::Arc;

/// Executes a block's transactions one after another.
#[derive(Clone)]
pub struct SerialExecutor {
    fee_sink: Address,
    vm: Vm,
}

impl std::fmt::Debug for SerialExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SerialExecutor")
    }
}

impl SerialExecutor {
    /// An executor that runs contracts on `vm` and pays fees to `fee_sink`.
    pub fn new(fee_sink: Address, vm: Vm) -> Self {
        Self { fee_sink, vm }
    }
}

/// Accounts read from and written to a write set directly; contract state kept apart, where
/// calls can see it.
struct SerialLedger {
    ws: WriteSet,
    parent: Snapshot,
    raw: Arc<RawWrites>,
    error: Option<peregrine_state::Error>,
}

impl Ledger for SerialLedger {
    fn get(&mut self, address: &Address) -> Result<Account, ExecError> {
        read_account(|key| self.ws.get(key), address)
    }

    fn set(&mut self, address: Address, account: Account) {
        // Account keys and records are far below the write set's size bounds; keep the first
        // error anyway and report it after the transaction.
        if let Err(error) = self.ws.put_slice(
            &peregrine_types::keys::account_key(&address),
            &account.to_record(),
        ) {
            self.error.get_or_insert(error);
        }
    }

    fn world(&self) -> BlockWorld {
        BlockWorld {
            parent: self.parent.clone(),
            raw: self.raw.clone(),
        }
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        Arc::make_mut(&mut self.raw).insert(key, value);
    }
}

impl BlockExecutor for SerialExecutor {
    fn execute(
        &self,
        db: &Db,
        parent: RevisionId,
        block: &Block,
    ) -> Result<BlockOutput, ExecError> {
        execute_in_order(&self.fee_sink, &self.vm, db, parent, block, |ws| {
            db.commit_sequential(ws)
        })
    }
}

/// Runs `block`'s transactions one after another, in block order, on a write set over `parent`,
/// and seals it with `commit`: the reference semantics every executor must reproduce.
pub(crate) fn execute_in_order(
    fee_sink: &Address,
    vm: &Vm,
    db: &Db,
    parent: RevisionId,
    block: &Block,
    commit: impl FnOnce(WriteSet) -> Result<RevisionId, peregrine_state::Error>,
) -> Result<BlockOutput, ExecError> {
    let mut ledger = SerialLedger {
        ws: db.begin(parent)?,
        parent: db.snapshot(parent)?,
        raw: Arc::default(),
        error: None,
    };
    let env = TxEnv {
        height: block.header.height,
        time_ms: block.header.timestamp_ms,
        vm,
    };
    let mut receipts = Vec::with_capacity(block.txs.len());
    for (index, tx) in block.txs.iter().enumerate() {
        let outcome = apply_tx(&mut ledger, env, tx)?;
        credit_fee(&mut ledger, fee_sink, u128::from(outcome.fee))?;
        if let Some(error) = ledger.error.take() {
            return Err(error.into());
        }
        receipts.push(crate::receipt(block, index, tx, outcome));
    }
    let mut ws = ledger.ws;
    crate::put_raw_writes(&mut ws, ledger.raw)?;
    crate::seal(db, ws, block, receipts, commit)
}
