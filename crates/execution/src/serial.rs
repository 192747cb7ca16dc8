//! The serial executor: the reference semantics every faster executor must reproduce exactly.

use crate::rules::{apply_tx, credit_fee, Accounts};
use crate::{read_account, BlockExecutor, BlockOutput, ExecError};
use peregrine_state::{Db, RevisionId, WriteSet};
use peregrine_types::{Account, Address, Block, Encode};

/// Executes a block's transactions one after another.
#[derive(Debug, Clone)]
pub struct SerialExecutor {
    fee_sink: Address,
}

impl SerialExecutor {
    /// An executor that pays fees to `fee_sink`.
    pub fn new(fee_sink: Address) -> Self {
        Self { fee_sink }
    }
}

/// Accounts read from and written to a write set directly.
struct WriteSetAccounts {
    ws: WriteSet,
    error: Option<peregrine_state::Error>,
}

impl Accounts for WriteSetAccounts {
    fn get(&mut self, address: &Address) -> Result<Account, ExecError> {
        read_account(|key| self.ws.get(key).map(<[u8]>::to_vec), address)
    }

    fn set(&mut self, address: Address, account: Account) {
        // Account keys and records are far below the write set's size bounds; keep the first
        // error anyway and report it after the transaction.
        if let Err(error) = self
            .ws
            .put(peregrine_types::keys::account(&address), account.encode())
        {
            self.error.get_or_insert(error);
        }
    }
}

impl BlockExecutor for SerialExecutor {
    fn execute(
        &self,
        db: &Db,
        parent: RevisionId,
        block: &Block,
    ) -> Result<BlockOutput, ExecError> {
        let mut accounts = WriteSetAccounts {
            ws: db.begin(parent)?,
            error: None,
        };
        let mut receipts = Vec::with_capacity(block.txs.len());
        for (index, tx) in block.txs.iter().enumerate() {
            let outcome = apply_tx(&mut accounts, tx)?;
            credit_fee(&mut accounts, &self.fee_sink, outcome.fee)?;
            if let Some(error) = accounts.error.take() {
                return Err(error.into());
            }
            receipts.push(crate::receipt(block, index, tx, &outcome));
        }
        crate::seal(db, accounts.ws, block, receipts, |ws| {
            db.commit_sequential(ws)
        })
    }
}
