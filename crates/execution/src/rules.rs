//! The per-transaction rules, shared by every executor so they cannot drift apart.
//!
//! [`apply_tx`] reads and writes accounts and contract state through a [`Ledger`] and returns
//! the fee the transaction paid *without* crediting it: the caller credits the fee sink. The
//! serial executor credits it right away; the parallel one credits fees as ordered deltas when
//! it merges results in block order, which is why a hot fee sink does not serialise the block.
//!
//! # Contract transactions
//! The fee is the gas budget (see `peregrine_types::gas`): the sender must afford the whole fee,
//! is charged the fee of the gas actually used, and keeps the rest.
//! - **Deploy** costs `DEPLOY_BASE_GAS + DEPLOY_BYTE_GAS` per byte. The VM validates and
//!   compiles the code (and caches the result); the contract record and the code are written,
//!   and the receipt's output is the new contract's address. Code the VM refuses fails with
//!   `InvalidCode` and the refusal as output.
//! - **Call** runs the method with the sender as caller. On success the call tree's storage
//!   writes are applied, the events and return data go into the receipt. On failure nothing but
//!   the fee and nonce changes, and the receipt carries the failure and its message. A call with
//!   a non-empty access list may touch only what it declares (`docs/ACCESS.md`); one with an
//!   empty list may touch anything and is scheduled alone.

use crate::contracts::BlockWorld;
use crate::ExecError;
use peregrine_types::gas::fee_for_gas;
use peregrine_types::receipt::MAX_OUTPUT_BYTES;
use peregrine_types::{
    keys, Account, Address, Failure, LogEvent, Payload, SignedTransaction, TxStatus,
};
use peregrine_vm::{Access, CallContext, CallFailure, Outcome as CallOutcome, Vm, Writes};
use peregrine_vm::{DEPLOY_BASE_GAS, DEPLOY_BYTE_GAS, GAS_NATIVE_TRANSFER};
use std::sync::Arc;

/// Where a transaction reads and writes state.
pub trait Ledger {
    /// The account's current state (the empty account if it has none).
    fn get(&mut self, address: &Address) -> Result<Account, ExecError>;
    /// Replaces the account's state.
    fn set(&mut self, address: Address, account: Account);
    /// Contract state as calls see it now.
    fn world(&self) -> BlockWorld;
    /// Writes (or, with `None`, deletes) a contract record, code or storage key.
    fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>);
}

/// The block a transaction runs in, and the VM that runs contracts.
#[derive(Clone, Copy)]
pub struct TxEnv<'a> {
    /// The block height.
    pub height: u64,
    /// The block timestamp.
    pub time_ms: u64,
    /// The contract engine.
    pub vm: &'a Vm,
}

/// What one transaction did, before its fee is credited to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The receipt status.
    pub status: TxStatus,
    /// The fee charged (0 when skipped).
    pub fee: u64,
    /// Gas used.
    pub gas: u64,
    /// Return data, a deployed address, or a failure message.
    pub output: Vec<u8>,
    /// Events of a successful contract transaction.
    pub events: Vec<LogEvent>,
}

impl Outcome {
    fn skipped(status: TxStatus) -> Self {
        Self::plain(status, 0, 0)
    }

    fn plain(status: TxStatus, fee: u64, gas: u64) -> Self {
        Self {
            status,
            fee,
            gas,
            output: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// Applies one transaction's effects.
pub fn apply_tx(
    ledger: &mut impl Ledger,
    env: TxEnv<'_>,
    tx: &SignedTransaction,
) -> Result<Outcome, ExecError> {
    let body = tx.tx();
    let sender = tx.sender();
    let mut account = ledger.get(&sender)?;
    if body.nonce != account.nonce {
        let expected = account.nonce;
        return Ok(Outcome::skipped(TxStatus::SkippedBadNonce { expected }));
    }
    let fee = u128::from(body.fee);
    if account.balance < fee {
        return Ok(Outcome::skipped(TxStatus::SkippedFeeUnpayable));
    }
    account.balance -= fee;
    account.nonce += 1;
    match &body.payload {
        Payload::Transfer { to, amount } if account.balance >= *amount => {
            account.balance -= amount;
            ledger.set(sender, account);
            // Read the recipient after writing the sender, so a self-transfer sees its own debit.
            let mut recipient = ledger.get(to)?;
            // Cannot overflow: value is conserved and the genesis supply fits in a u128.
            recipient.balance += amount;
            ledger.set(*to, recipient);
            Ok(Outcome::plain(
                TxStatus::Success,
                body.fee,
                GAS_NATIVE_TRANSFER,
            ))
        }
        Payload::Transfer { .. } => {
            ledger.set(sender, account);
            let status = TxStatus::FailedInsufficientBalance;
            Ok(Outcome::plain(status, body.fee, GAS_NATIVE_TRANSFER))
        }
        Payload::Deploy { code } => {
            let mut outcome = deploy(ledger, env, tx, code);
            refund(ledger, sender, account, body.fee, &mut outcome);
            Ok(outcome)
        }
        Payload::Call {
            contract,
            method,
            args,
        } => {
            let mut outcome = call(ledger, env, tx, *contract, method, args);
            refund(ledger, sender, account, body.fee, &mut outcome);
            Ok(outcome)
        }
    }
}

/// Charges the fee of the gas used and gives the sender back the rest of `fee`.
fn refund(
    ledger: &mut impl Ledger,
    sender: Address,
    mut account: Account,
    fee: u64,
    outcome: &mut Outcome,
) {
    let charged = fee_for_gas(outcome.gas, fee);
    account.balance += u128::from(fee - charged);
    ledger.set(sender, account);
    outcome.fee = charged;
}

fn failed(failure: Failure, gas: u64, message: String) -> Outcome {
    let mut output = message.into_bytes();
    output.truncate(MAX_OUTPUT_BYTES as usize);
    Outcome {
        output,
        ..Outcome::plain(TxStatus::FailedContract(failure), 0, gas)
    }
}

fn deploy(
    ledger: &mut impl Ledger,
    env: TxEnv<'_>,
    tx: &SignedTransaction,
    code: &[u8],
) -> Outcome {
    let limit = tx.tx().gas_limit();
    let gas = DEPLOY_BASE_GAS.saturating_add(DEPLOY_BYTE_GAS.saturating_mul(code.len() as u64));
    if gas > limit {
        return failed(Failure::OutOfGas, limit, String::new());
    }
    let code_hash = match env.vm.install(code) {
        Ok(hash) => hash,
        Err(refused) => return failed(Failure::InvalidCode, gas, refused.message()),
    };
    let address = tx.tx().deployed_address();
    use peregrine_vm::World as _;
    if ledger.world().code(&code_hash).is_none() {
        ledger.put_raw(keys::code(&code_hash), Some(code.to_vec()));
    }
    ledger.put_raw(keys::contract(&address), Some(code_hash.to_vec()));
    Outcome {
        output: address.0.to_vec(),
        ..Outcome::plain(TxStatus::Success, 0, gas)
    }
}

fn call(
    ledger: &mut impl Ledger,
    env: TxEnv<'_>,
    tx: &SignedTransaction,
    contract: Address,
    method: &[u8],
    args: &[u8],
) -> Outcome {
    let Ok(method) = std::str::from_utf8(method) else {
        return failed(Failure::NoMethod, 0, "method name is not UTF-8".into());
    };
    let ctx = CallContext {
        caller: tx.sender().0,
        contract: contract.0,
        height: env.height,
        time_ms: env.time_ms,
        args: args.to_vec(),
        gas_limit: tx.tx().gas_limit(),
    };
    let world = Arc::new(ledger.world());
    let result = match declared(tx) {
        Some(access) => env.vm.call_declared(method, ctx, world, access),
        None => env.vm.call(method, ctx, world),
    };
    let CallOutcome {
        result,
        gas_used,
        events,
        writes,
    } = result;
    match result {
        Ok(data) => {
            apply_writes(ledger, writes);
            let events = events
                .into_iter()
                .map(|e| LogEvent {
                    contract: Address(e.contract),
                    topic: e.topic,
                    data: e.data,
                })
                .collect();
            Outcome {
                output: data,
                events,
                ..Outcome::plain(TxStatus::Success, 0, gas_used)
            }
        }
        Err(failure) => failed(failure_kind(&failure), gas_used, failure.message()),
    }
}

/// The access a call declared, or `None` for an empty list, which declares nothing and may touch
/// anything (such a call is scheduled alone: see [`crate::schedule`]).
fn declared(tx: &SignedTransaction) -> Option<Arc<Access>> {
    let entries = &tx.tx().access;
    if entries.is_empty() {
        return None;
    }
    let access = entries.iter().fold(Access::new(), |access, e| {
        let write = e.mode == peregrine_types::AccessMode::Write;
        access.allow(e.address.0, e.prefix.clone(), write)
    });
    Some(Arc::new(access))
}

fn apply_writes(ledger: &mut impl Ledger, writes: Writes) {
    for (contract, entries) in writes {
        let contract = Address(contract);
        for (key, value) in entries {
            ledger.put_raw(keys::storage(&contract, &key), value);
        }
    }
}

/// The receipt's failure kind of a call failure.
pub fn failure_kind(failure: &CallFailure) -> Failure {
    match failure {
        CallFailure::OutOfGas => Failure::OutOfGas,
        CallFailure::StackOverflow => Failure::StackOverflow,
        CallFailure::Aborted(_) => Failure::Aborted,
        CallFailure::Trap(_) => Failure::Trap,
        CallFailure::Limit(_) => Failure::Limit,
        CallFailure::NoMethod(_) => Failure::NoMethod,
        CallFailure::NoContract => Failure::NoContract,
        CallFailure::Code(_) => Failure::InvalidCode,
        CallFailure::Undeclared(_) => Failure::Undeclared,
    }
}

/// Credits `fee` to the sink. A zero fee writes nothing, so it never creates an empty record.
pub fn credit_fee(ledger: &mut impl Ledger, sink: &Address, fee: u128) -> Result<(), ExecError> {
    if fee == 0 {
        return Ok(());
    }
    let mut account = ledger.get(sink)?;
    account.balance += fee;
    ledger.set(*sink, account);
    Ok(())
}
