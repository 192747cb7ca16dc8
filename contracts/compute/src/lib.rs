//! Pure computation with no host calls in the loop: what gas metering costs shows here.
#![no_std]

extern crate alloc;

use peregrine_sdk::env::{abort, ret, with_args};

/// `mix(rounds: u64) -> u64`: `rounds` rounds of a 64-bit mixing function.
#[no_mangle]
pub extern "C" fn mix() {
    let rounds = with_args(|a| a.u64()).unwrap_or_else(|_| abort("bad arguments"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..rounds {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9).wrapping_add(i);
        x ^= x >> 27;
    }
    ret(&x.to_le_bytes());
}
