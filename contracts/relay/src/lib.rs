//! A contract that calls other contracts: the example of cross-contract calls, and what the
//! tests use to check their rules (a failed callee's writes are reverted, reentrancy is refused,
//! the call stack is bounded).
//!
//! Storage: `b"n"`, a `u64` count of the forwards that succeeded; `b"e"`, the last callee
//! failure message that `try_forward` recorded.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use peregrine_sdk::codec::{Args, ArgsBuilder};
use peregrine_sdk::env::{abort, call_contract, own_address, ret, with_args};
use peregrine_sdk::storage::{get, set};
use peregrine_sdk::Address;

const COUNT: &[u8] = b"n";
const LAST_ERROR: &[u8] = b"e";

fn bad_args<T>(_: peregrine_sdk::codec::ArgsError) -> T {
    abort("bad arguments")
}

/// Reads `(token, to, amount)`.
fn transfer_args() -> (Address, Address, u128) {
    with_args(|a| {
        let parsed = (a.address(), a.address(), a.u128());
        match parsed {
            (Ok(token), Ok(to), Ok(amount)) => (token, to, amount),
            _ => abort("bad arguments"),
        }
    })
}

fn transfer(token: &Address, to: &Address, amount: u128) -> Result<Vec<u8>, Vec<u8>> {
    let args = ArgsBuilder::new().address(to).u128(amount).build();
    call_contract(token, "transfer", &args)
}

fn bump_count() {
    let count = get(COUNT).map_or(0, |v| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&v[..8.min(v.len())]);
        u64::from_le_bytes(bytes)
    });
    set(COUNT, &(count + 1).to_le_bytes());
}

/// `forward(token, to, amount)`: transfers `amount` of the relay's own `token` balance to `to`;
/// aborts with the token's message if the token refuses.
#[no_mangle]
pub extern "C" fn forward() {
    let (token, to, amount) = transfer_args();
    if let Err(message) = transfer(&token, &to, amount) {
        abort(core::str::from_utf8(&message).unwrap_or("callee failed"));
    }
    bump_count();
}

/// `try_forward(token, to, amount)`: like `forward`, but a refusal is recorded under `b"e"` and
/// the call succeeds, returning the message.
#[no_mangle]
pub extern "C" fn try_forward() {
    let (token, to, amount) = transfer_args();
    match transfer(&token, &to, amount) {
        Ok(_) => bump_count(),
        Err(message) => {
            set(LAST_ERROR, &message);
            ret(&message);
        }
    }
}

/// `forward_then_abort(token, to, amount)`: transfers, then aborts: nothing may remain.
#[no_mangle]
pub extern "C" fn forward_then_abort() {
    let (token, to, amount) = transfer_args();
    let _ = transfer(&token, &to, amount);
    bump_count();
    abort("changed my mind");
}

/// `reenter()`: calls itself; returns the refusal message.
#[no_mangle]
pub extern "C" fn reenter() {
    let me = own_address();
    match call_contract(&me, "reenter", &[]) {
        Ok(_) => abort("reentrancy was allowed"),
        Err(message) => ret(&message),
    }
}

/// `chain(addresses...)`: calls `chain` on the first address with the rest; with none left,
/// returns the depth marker `b"bottom"`. Returns the callee's result, or aborts with its message.
#[no_mangle]
pub extern "C" fn chain() {
    let rest = peregrine_sdk::env::args_bytes();
    if rest.is_empty() {
        ret(b"bottom");
        return;
    }
    let mut args = Args::new(&rest);
    let next = args.address().unwrap_or_else(bad_args);
    match call_contract(&next, "chain", &rest[20..]) {
        Ok(data) => ret(&data),
        Err(message) => abort(core::str::from_utf8(&message).unwrap_or("callee failed")),
    }
}
