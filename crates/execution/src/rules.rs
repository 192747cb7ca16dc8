//! The per-transaction rules, shared by every executor so they cannot drift apart.
//!
//! [`apply_tx`] reads and writes accounts through an [`Accounts`] view and returns the fee the
//! transaction paid *without* crediting it: the caller credits the fee sink. The serial executor
//! credits it right away; the parallel one credits fees as ordered deltas when it merges results
//! in block order, which is why a hot fee sink does not serialise the whole block.

use crate::ExecError;
use peregrine_types::{Account, Address, Payload, SignedTransaction, TxStatus};
use peregrine_vm::{GAS_NATIVE_TRANSFER, GAS_UNSUPPORTED};

/// Where a transaction reads and writes accounts.
pub trait Accounts {
    /// The account's current state (the empty account if it has none).
    fn get(&mut self, address: &Address) -> Result<Account, ExecError>;
    /// Replaces the account's state.
    fn set(&mut self, address: Address, account: Account);
}

/// What one transaction did, before its fee is credited to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The receipt status.
    pub status: TxStatus,
    /// The fee charged (0 when skipped).
    pub fee: u64,
    /// Gas used.
    pub gas: u64,
}

/// Applies one transaction's effects on its sender and recipient.
pub fn apply_tx(
    accounts: &mut impl Accounts,
    tx: &SignedTransaction,
) -> Result<Outcome, ExecError> {
    let body = tx.tx();
    let sender = tx.sender();
    let mut account = accounts.get(&sender)?;
    if body.nonce != account.nonce {
        let status = TxStatus::SkippedBadNonce {
            expected: account.nonce,
        };
        return Ok(Outcome {
            status,
            fee: 0,
            gas: 0,
        });
    }
    let fee = u128::from(body.fee);
    if account.balance < fee {
        return Ok(Outcome {
            status: TxStatus::SkippedFeeUnpayable,
            fee: 0,
            gas: 0,
        });
    }
    account.balance -= fee;
    account.nonce += 1;
    let (status, gas) = match &body.payload {
        Payload::Transfer { to, amount } if account.balance >= *amount => {
            account.balance -= amount;
            accounts.set(sender, account);
            // Read the recipient after writing the sender, so a self-transfer sees its own debit.
            let mut recipient = accounts.get(to)?;
            // Cannot overflow: value is conserved and the genesis supply fits in a u128.
            recipient.balance += amount;
            accounts.set(*to, recipient);
            (TxStatus::Success, GAS_NATIVE_TRANSFER)
        }
        Payload::Transfer { .. } => {
            accounts.set(sender, account);
            (TxStatus::FailedInsufficientBalance, GAS_NATIVE_TRANSFER)
        }
        Payload::Deploy { .. } | Payload::Call { .. } => {
            accounts.set(sender, account);
            (TxStatus::FailedUnsupported, GAS_UNSUPPORTED)
        }
    };
    Ok(Outcome {
        status,
        fee: body.fee,
        gas,
    })
}

/// Credits `fee` to the sink. A zero fee writes nothing, so it never creates an empty record.
pub fn credit_fee(accounts: &mut impl Accounts, sink: &Address, fee: u64) -> Result<(), ExecError> {
    if fee == 0 {
        return Ok(());
    }
    let mut account = accounts.get(sink)?;
    account.balance += u128::from(fee);
    accounts.set(*sink, account);
    Ok(())
}
