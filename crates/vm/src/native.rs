//! Optimistic native functions: hot contracts run as Rust, with results identical to WASM.
//!
//! A [`Registry`] maps the BLAKE3 hash of a contract's exact code to a native implementation.
//! When a call targets such a contract, the native version runs first. It either produces the
//! very [`Outcome`] the WASM path would (same return data, events, writes and gas) or returns
//! `None` before doing anything, and the WASM path runs instead.
//!
//! # Gas
//! The WASM path's gas depends only on which way the code goes, never on the values: the token's
//! arithmetic is straight-line, its keys and values have fixed sizes, and host calls charge by
//! size. The native token therefore models the control flow ([`TransferPath`]) and takes each
//! path's gas from the WASM path itself: [`NativeToken::calibrate`] runs the committed module once
//! per path on a synthetic state at registration. A differential test runs random calls (valid,
//! missing balances, bad arguments, self-transfers, overflows) through both paths and requires
//! byte-identical outcomes.
//!
//! The native token handles the hot methods, `transfer` and `balance_of`, with well-formed
//! arguments; everything else (other methods, malformed arguments) falls back to WASM.

use crate::memory::MemoryWorld;
use crate::wasm::{CallContext, Contract, Event, Outcome, StorageView, Vm, Writes};
use foldhash::{HashMap, HashMapExt};
use peregrine_sdk::codec::{Args, ArgsBuilder};
use peregrine_sdk::Address;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A native implementation of one contract's code.
pub trait NativeContract: Send + Sync {
    /// The outcome the WASM path would produce, or `None` to let the WASM path run.
    fn call(&self, method: &str, ctx: &CallContext, state: &dyn StorageView) -> Option<Outcome>;
}

/// Native implementations by code hash.
#[derive(Default)]
pub struct Registry {
    by_code: HashMap<[u8; 32], Box<dyn NativeContract>>,
}

impl Registry {
    /// Registers `native` for the code whose BLAKE3 hash is `code_hash`.
    pub fn register(&mut self, code_hash: [u8; 32], native: Box<dyn NativeContract>) {
        self.by_code.insert(code_hash, native);
    }

    /// The native implementation of this exact code, if any.
    pub fn get(&self, code_hash: &[u8; 32]) -> Option<&dyn NativeContract> {
        self.by_code.get(code_hash).map(|b| b.as_ref())
    }
}

/// Which way a `transfer` goes, with whether the balances it reads exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferPath {
    /// The sender's balance does not cover the amount.
    Insufficient {
        /// Whether the sender has a stored balance.
        from_stored: bool,
    },
    /// Sender and recipient are the same account.
    ToSelf {
        /// Whether the sender has a stored balance.
        from_stored: bool,
    },
    /// The recipient's balance would overflow.
    Overflow,
    /// Balances move.
    Moved {
        /// Whether the sender has a stored balance (an amount of 0 needs none).
        from_stored: bool,
        /// Whether the recipient has a stored balance.
        to_stored: bool,
    },
}

/// Gas of each path, measured on the WASM path.
#[derive(Debug, Clone)]
pub struct NativeToken {
    transfer: HashMap<TransferPath, u64>,
    balance_of: [u64; 2],
}

fn balance_key(owner: &Address) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.push(b'b');
    key.extend_from_slice(owner);
    key
}

/// The stored balance (`Ok(None)` if absent); `Err` for a value the token never writes, whose
/// read would cost a different gas: the native path bails out on it.
fn stored_balance(state: &dyn StorageView, owner: &Address) -> Result<Option<u128>, ()> {
    match state.get(&balance_key(owner)) {
        None => Ok(None),
        Some(bytes) => Ok(Some(u128::from_le_bytes(bytes.try_into().map_err(|_| ())?))),
    }
}

const CALIBRATION_GAS: u64 = 10_000_000;
const CALIBRATION_CONTRACT: [u8; 20] = [0xcc; 20];

fn calibration_call(
    vm: &Vm,
    contract: &Contract,
    method: &str,
    args: Vec<u8>,
    state: &MemoryWorld,
) -> Result<u64, String> {
    let ctx = CallContext {
        caller: [1; 20],
        contract: CALIBRATION_CONTRACT,
        height: 0,
        time_ms: 0,
        args,
        gas_limit: CALIBRATION_GAS,
    };
    let outcome = vm.call_compiled(contract, method, ctx, Arc::new(state.clone()));
    match outcome.result {
        Ok(_) | Err(crate::wasm::CallFailure::Aborted(_)) => Ok(outcome.gas_used),
        Err(other) => Err(format!("calibrating {method}: {other}")),
    }
}

impl NativeToken {
    /// Measures every path's gas on `contract`, which must be the token's exact code.
    pub fn calibrate(vm: &Vm, contract: &Contract) -> Result<Self, String> {
        let (me, other) = ([1u8; 20], [2u8; 20]);
        let with = |balances: &[(Address, u128)]| {
            let mut state = MemoryWorld::new();
            for (owner, amount) in balances {
                let value = amount.to_le_bytes().to_vec();
                state.set(CALIBRATION_CONTRACT, balance_key(owner), value);
            }
            state
        };
        let send = |to: &Address, amount: u128| ArgsBuilder::new().address(to).u128(amount).build();
        let mut transfer = HashMap::new();
        let cases = [
            (
                TransferPath::Insufficient { from_stored: false },
                with(&[]),
                send(&other, 1),
            ),
            (
                TransferPath::Insufficient { from_stored: true },
                with(&[(me, 1)]),
                send(&other, 2),
            ),
            (
                TransferPath::ToSelf { from_stored: false },
                with(&[]),
                send(&me, 0),
            ),
            (
                TransferPath::ToSelf { from_stored: true },
                with(&[(me, 5)]),
                send(&me, 5),
            ),
            (
                TransferPath::Overflow,
                with(&[(me, 5), (other, u128::MAX)]),
                send(&other, 1),
            ),
        ];
        let moved = [(false, false), (false, true), (true, false), (true, true)];
        let moved = moved.into_iter().map(|(from_stored, to_stored)| {
            let mut balances = Vec::new();
            if from_stored {
                balances.push((me, 5));
            }
            if to_stored {
                balances.push((other, 5));
            }
            let amount = u128::from(from_stored);
            let path = TransferPath::Moved {
                from_stored,
                to_stored,
            };
            (path, with(&balances), send(&other, amount))
        });
        for (path, state, args) in cases.into_iter().chain(moved) {
            let gas = calibration_call(vm, contract, "transfer", args, &state)?;
            transfer.insert(path, gas);
        }
        let query = ArgsBuilder::new().address(&me).build();
        let balance_of = [
            calibration_call(vm, contract, "balance_of", query.clone(), &with(&[]))?,
            calibration_call(vm, contract, "balance_of", query, &with(&[(me, 1)]))?,
        ];
        Ok(Self {
            transfer,
            balance_of,
        })
    }

    fn outcome(&self, result: Result<Vec<u8>, String>, gas: u64) -> Outcome {
        Outcome {
            result: result.map_err(crate::wasm::CallFailure::Aborted),
            gas_used: gas,
            events: Vec::new(),
            writes: Writes::new(),
        }
    }

    fn transfer(&self, ctx: &CallContext, state: &dyn StorageView) -> Option<Outcome> {
        let mut args = Args::new(&ctx.args);
        let (to, amount) = (args.address().ok()?, args.u128().ok()?);
        args.finish().ok()?;
        let from = ctx.caller;
        let from_balance = stored_balance(state, &from).ok()?;
        let have = from_balance.unwrap_or(0);
        let from_stored = from_balance.is_some();
        if have < amount {
            let gas = self.gas(TransferPath::Insufficient { from_stored })?;
            return self.affordable(ctx, self.outcome(Err("insufficient balance".into()), gas));
        }
        let mut writes = BTreeMap::new();
        let path = if from == to {
            TransferPath::ToSelf { from_stored }
        } else {
            let to_balance = stored_balance(state, &to).ok()?;
            let Some(credited) = to_balance.unwrap_or(0).checked_add(amount) else {
                let gas = self.gas(TransferPath::Overflow)?;
                return self.affordable(ctx, self.outcome(Err("overflow".into()), gas));
            };
            writes.insert(
                balance_key(&from),
                Some((have - amount).to_le_bytes().to_vec()),
            );
            writes.insert(balance_key(&to), Some(credited.to_le_bytes().to_vec()));
            TransferPath::Moved {
                from_stored,
                to_stored: to_balance.is_some(),
            }
        };
        let mut data = Vec::with_capacity(56);
        data.extend_from_slice(&from);
        data.extend_from_slice(&to);
        data.extend_from_slice(&amount.to_le_bytes());
        let mut outcome = self.outcome(Ok(Vec::new()), self.gas(path)?);
        outcome.events.push(Event {
            contract: ctx.contract,
            topic: b"Transfer".to_vec(),
            data,
        });
        if !writes.is_empty() {
            outcome.writes.insert(ctx.contract, writes);
        }
        self.affordable(ctx, outcome)
    }

    fn gas(&self, path: TransferPath) -> Option<u64> {
        self.transfer.get(&path).copied()
    }

    /// Calls whose limit does not cover their gas run out of gas somewhere inside the WASM
    /// path; where exactly is the WASM path's business, so the native path bails out.
    fn affordable(&self, ctx: &CallContext, outcome: Outcome) -> Option<Outcome> {
        (outcome.gas_used <= ctx.gas_limit).then_some(outcome)
    }

    fn balance_of(&self, ctx: &CallContext, state: &dyn StorageView) -> Option<Outcome> {
        let mut args = Args::new(&ctx.args);
        let owner = args.address().ok()?;
        args.finish().ok()?;
        let stored = stored_balance(state, &owner).ok()?;
        let gas = self.balance_of[usize::from(stored.is_some())];
        let balance = stored.unwrap_or(0).to_le_bytes().to_vec();
        self.affordable(ctx, self.outcome(Ok(balance), gas))
    }
}

impl NativeContract for NativeToken {
    fn call(&self, method: &str, ctx: &CallContext, state: &dyn StorageView) -> Option<Outcome> {
        match method {
            "transfer" => self.transfer(ctx, state),
            "balance_of" => self.balance_of(ctx, state),
            _ => None,
        }
    }
}
