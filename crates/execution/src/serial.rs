//! The serial executor: the reference semantics every faster executor must reproduce exactly.

use crate::{read_account, BlockExecutor, BlockOutput, ExecError};
use peregrine_state::{Db, RevisionId, WriteSet};
use peregrine_types::{
    Account, Address, Block, Encode, Payload, Receipt, SignedTransaction, TxStatus,
};
use peregrine_vm::{GAS_NATIVE_TRANSFER, GAS_UNSUPPORTED};

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

fn load(ws: &WriteSet, address: &Address) -> Result<Account, ExecError> {
    read_account(|key| ws.get(key).map(<[u8]>::to_vec), address)
}

fn store(ws: &mut WriteSet, address: &Address, account: Account) -> Result<(), ExecError> {
    ws.put(peregrine_types::keys::account(address), account.encode())?;
    Ok(())
}

impl SerialExecutor {
    fn apply(
        &self,
        ws: &mut WriteSet,
        tx: &SignedTransaction,
    ) -> Result<(TxStatus, u64, u64), ExecError> {
        let body = tx.tx();
        let sender = body.sender_address();
        let mut account = load(ws, &sender)?;
        if body.nonce != account.nonce {
            return Ok((
                TxStatus::SkippedBadNonce {
                    expected: account.nonce,
                },
                0,
                0,
            ));
        }
        let fee = u128::from(body.fee);
        if account.balance < fee {
            return Ok((TxStatus::SkippedFeeUnpayable, 0, 0));
        }
        account.balance -= fee;
        account.nonce += 1;
        let (status, gas) = match &body.payload {
            Payload::Transfer { to, amount } if account.balance >= *amount => {
                account.balance -= amount;
                store(ws, &sender, account)?;
                // Read the recipient after writing the sender, so a self-transfer sees its own debit.
                let mut recipient = load(ws, to)?;
                recipient.balance += amount;
                store(ws, to, recipient)?;
                (TxStatus::Success, GAS_NATIVE_TRANSFER)
            }
            Payload::Transfer { .. } => {
                store(ws, &sender, account)?;
                (TxStatus::FailedInsufficientBalance, GAS_NATIVE_TRANSFER)
            }
            Payload::Deploy { .. } | Payload::Call { .. } => {
                store(ws, &sender, account)?;
                (TxStatus::FailedUnsupported, GAS_UNSUPPORTED)
            }
        };
        let mut sink = load(ws, &self.fee_sink)?;
        sink.balance += fee;
        store(ws, &self.fee_sink, sink)?;
        Ok((status, body.fee, gas))
    }
}

impl BlockExecutor for SerialExecutor {
    fn execute(
        &self,
        db: &Db,
        parent: RevisionId,
        block: &Block,
    ) -> Result<BlockOutput, ExecError> {
        let mut ws = db.begin(parent)?;
        let mut receipts = Vec::with_capacity(block.txs.len());
        for (index, tx) in block.txs.iter().enumerate() {
            let (status, fee_paid, gas_used) = self.apply(&mut ws, tx)?;
            receipts.push(Receipt {
                tx_hash: tx.hash(),
                height: block.header.height,
                index: index as u32,
                status,
                fee_paid,
                gas_used,
            });
        }
        let height = block.header.height.to_le_bytes().to_vec();
        ws.put(peregrine_types::keys::META_HEIGHT.to_vec(), height)?;
        let revision = db.commit(ws)?;
        let state_root = db.snapshot(revision)?.commitment();
        Ok(BlockOutput {
            revision,
            receipts,
            state_root,
        })
    }
}
