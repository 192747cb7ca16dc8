//! Deliberately bad methods. Each must end its call with a failure receipt (out of gas, a trap,
//! a limit) and leave the node and the state untouched. They write to storage first, so a test
//! can check that the failed call's writes were reverted.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use peregrine_sdk::env::{abort, ret};
use peregrine_sdk::storage::set;

fn mark() {
    set(b"touched", b"yes");
}

/// Loops forever: only gas metering can stop it.
#[no_mangle]
pub extern "C" fn spin() {
    mark();
    let mut x: u64 = 0;
    loop {
        x = core::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocates without end: the memory-page limit must stop it.
#[no_mangle]
pub extern "C" fn memory_bomb() {
    mark();
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(core::hint::black_box(alloc::vec![1u8; 1 << 20]));
    }
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point of this method
fn depth(n: u64) -> u64 {
    // The black box keeps the compiler from turning the recursion into a loop.
    core::hint::black_box(depth(core::hint::black_box(n + 1)) + 1)
}

/// Recurses without end: the deterministic stack-depth limit must stop it.
#[no_mangle]
pub extern "C" fn recurse() {
    mark();
    let _ = depth(0);
}

/// Traps (an unreachable instruction).
#[no_mangle]
pub extern "C" fn trap() {
    mark();
    core::arch::wasm32::unreachable()
}

/// Returns 1 MiB: the return-data limit must refuse it.
#[no_mangle]
pub extern "C" fn big_return() {
    mark();
    let data = alloc::vec![7u8; 1 << 20];
    ret(&data);
}

/// Aborts with a message after writing.
#[no_mangle]
pub extern "C" fn give_up() {
    mark();
    abort("gave up on purpose");
}
