//! The example fungible token.
//!
//! Storage layout (the native fast path in the node reads and writes exactly these keys):
//! - `b"s"`: total supply, `u128` little-endian; present once initialised;
//! - `b"b" ++ owner`: balance of `owner`, `u128` little-endian; absent means zero;
//! - `b"a" ++ owner ++ spender`: what `spender` may still move from `owner`'s balance.
//!
//! Events: `Transfer` with data `from ++ to ++ amount` (the zero address as `from` when minted)
//! and `Approval` with data `owner ++ spender ++ amount`. Every method aborts with a short reason
//! on bad arguments, a missing balance or allowance, or an overflow; an aborted call changes
//! nothing.
#![no_std]

extern crate alloc;

use peregrine_sdk::codec::Args;
use peregrine_sdk::env::{abort, caller_address, event, ret, with_args};
use peregrine_sdk::storage::{get_u128, set_u128};
use peregrine_sdk::Address;

const SUPPLY: &[u8] = b"s";

fn balance_key(owner: &Address) -> [u8; 21] {
    let mut key = [0u8; 21];
    key[0] = b'b';
    key[1..].copy_from_slice(owner);
    key
}

fn allowance_key(owner: &Address, spender: &Address) -> [u8; 41] {
    let mut key = [0u8; 41];
    key[0] = b'a';
    key[1..21].copy_from_slice(owner);
    key[21..].copy_from_slice(spender);
    key
}

fn balance(owner: &Address) -> u128 {
    get_u128(&balance_key(owner)).unwrap_or(0)
}

/// Reads the arguments with `f`, aborting on anything short, malformed or trailing.
fn args<T>(f: impl FnOnce(&mut Args<'_>) -> Result<T, peregrine_sdk::codec::ArgsError>) -> T {
    with_args(|a| {
        let value = f(a).unwrap_or_else(|_| abort("bad arguments"));
        if a.clone().finish().is_err() {
            abort("bad arguments");
        }
        value
    })
}

fn transfer_event(from: &Address, to: &Address, amount: u128) {
    let mut data = [0u8; 56];
    data[..20].copy_from_slice(from);
    data[20..40].copy_from_slice(to);
    data[40..].copy_from_slice(&amount.to_le_bytes());
    event(b"Transfer", &data);
}

/// Moves `amount` from `from` to `to`; the same account on both sides is allowed and changes
/// nothing but still needs the balance.
fn move_balance(from: &Address, to: &Address, amount: u128) {
    let have = balance(from);
    if have < amount {
        abort("insufficient balance");
    }
    if from != to {
        let credited = balance(to)
            .checked_add(amount)
            .unwrap_or_else(|| abort("overflow"));
        set_u128(&balance_key(from), have - amount);
        set_u128(&balance_key(to), credited);
    }
    transfer_event(from, to, amount);
}

/// `init(supply: u128)`: mints `supply` to the caller, once.
#[no_mangle]
pub extern "C" fn init() {
    let supply = args(|a| a.u128());
    if get_u128(SUPPLY).is_some() {
        abort("already initialised");
    }
    let owner = caller_address();
    set_u128(SUPPLY, supply);
    set_u128(&balance_key(&owner), supply);
    transfer_event(&[0u8; 20], &owner, supply);
}

/// `transfer(to: address, amount: u128)`.
#[no_mangle]
pub extern "C" fn transfer() {
    let (to, amount) = args(|a| Ok((a.address()?, a.u128()?)));
    move_balance(&caller_address(), &to, amount);
}

/// `balance_of(owner: address) -> u128`.
#[no_mangle]
pub extern "C" fn balance_of() {
    let owner = args(|a| a.address());
    ret(&balance(&owner).to_le_bytes());
}

/// `total_supply() -> u128`.
#[no_mangle]
pub extern "C" fn total_supply() {
    args(|_| Ok(()));
    ret(&get_u128(SUPPLY).unwrap_or(0).to_le_bytes());
}

/// `approve(spender: address, amount: u128)`: sets what `spender` may move from the caller.
#[no_mangle]
pub extern "C" fn approve() {
    let (spender, amount) = args(|a| Ok((a.address()?, a.u128()?)));
    let owner = caller_address();
    set_u128(&allowance_key(&owner, &spender), amount);
    let mut data = [0u8; 56];
    data[..20].copy_from_slice(&owner);
    data[20..40].copy_from_slice(&spender);
    data[40..].copy_from_slice(&amount.to_le_bytes());
    event(b"Approval", &data);
}

/// `allowance(owner: address, spender: address) -> u128`.
#[no_mangle]
pub extern "C" fn allowance() {
    let (owner, spender) = args(|a| Ok((a.address()?, a.address()?)));
    let left = get_u128(&allowance_key(&owner, &spender)).unwrap_or(0);
    ret(&left.to_le_bytes());
}

/// `transfer_from(from: address, to: address, amount: u128)`: spends the caller's allowance.
#[no_mangle]
pub extern "C" fn transfer_from() {
    let (from, to, amount) = args(|a| Ok((a.address()?, a.address()?, a.u128()?)));
    let key = allowance_key(&from, &caller_address());
    let allowed = get_u128(&key).unwrap_or(0);
    if allowed < amount {
        abort("insufficient allowance");
    }
    set_u128(&key, allowed - amount);
    move_balance(&from, &to, amount);
}
