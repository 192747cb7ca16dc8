//! The host functions, wrapped in safe Rust (only on `wasm32` with the `contract` feature).
//!
//! Every wrapper passes pointers into buffers it owns for the duration of the call; the host
//! checks every pointer and length against the module's memory, so a mistake here fails the call
//! instead of corrupting anything.
#![allow(unsafe_code)]

use crate::codec::Args;
use crate::Address;
use alloc::vec;
use alloc::vec::Vec;

#[link(wasm_import_module = "peregrine")]
extern "C" {
    fn args_len() -> i32;
    fn args_read(out: i32);
    pub(crate) fn storage_read(key: i32, key_len: i32, out: i32, out_cap: i32) -> i32;
    pub(crate) fn storage_write(key: i32, key_len: i32, value: i32, value_len: i32);
    pub(crate) fn storage_remove(key: i32, key_len: i32);
    fn caller(out: i32);
    fn self_address(out: i32);
    fn block_height() -> i64;
    fn block_time_ms() -> i64;
    fn emit(topic: i32, topic_len: i32, data: i32, data_len: i32);
    fn blake3(data: i32, len: i32, out: i32);
    fn ed25519_verify(key: i32, signature: i32, message: i32, message_len: i32) -> i32;
    fn call(address: i32, method: i32, method_len: i32, args: i32, args_len: i32) -> i32;
    fn return_len() -> i32;
    fn return_read(out: i32);
    fn set_return(data: i32, len: i32);
    #[link_name = "abort"]
    fn host_abort(message: i32, len: i32);
}

pub(crate) fn ptr(bytes: &[u8]) -> i32 {
    bytes.as_ptr() as i32
}

pub(crate) fn len(bytes: &[u8]) -> i32 {
    bytes.len() as i32
}

/// The call's raw arguments.
pub fn args_bytes() -> Vec<u8> {
    // SAFETY: the buffer is exactly as long as the host says the arguments are.
    unsafe {
        let mut out = vec![0u8; args_len().max(0) as usize];
        args_read(out.as_mut_ptr() as i32);
        out
    }
}

/// Runs `f` over a reader of the call's arguments.
pub fn with_args<T>(f: impl FnOnce(&mut Args<'_>) -> T) -> T {
    let bytes = args_bytes();
    f(&mut Args::new(&bytes))
}

/// The account or contract that made this call.
pub fn caller_address() -> Address {
    let mut out = [0u8; 20];
    // SAFETY: `out` has room for the 20 bytes the host writes.
    unsafe { caller(out.as_mut_ptr() as i32) };
    out
}

/// This contract's address.
pub fn own_address() -> Address {
    let mut out = [0u8; 20];
    // SAFETY: `out` has room for the 20 bytes the host writes.
    unsafe { self_address(out.as_mut_ptr() as i32) };
    out
}

/// The height of the block being executed.
pub fn height() -> u64 {
    // SAFETY: no memory is passed.
    unsafe { block_height() as u64 }
}

/// The block's timestamp, milliseconds since the Unix epoch.
pub fn time_ms() -> u64 {
    // SAFETY: no memory is passed.
    unsafe { block_time_ms() as u64 }
}

/// Appends an event to the receipt.
pub fn event(topic: &[u8], data: &[u8]) {
    // SAFETY: both slices live across the call.
    unsafe { emit(ptr(topic), len(topic), ptr(data), len(data)) }
}

/// The BLAKE3 hash of `data`.
pub fn hash(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SAFETY: `data` lives across the call and `out` has room for 32 bytes.
    unsafe { blake3(ptr(data), len(data), out.as_mut_ptr() as i32) };
    out
}

/// Whether `signature` is a valid ed25519 (ZIP215) signature of `message` by `key`.
pub fn verify(key: &[u8; 32], signature: &[u8; 64], message: &[u8]) -> bool {
    // SAFETY: the key, signature and message live across the call.
    unsafe { ed25519_verify(ptr(key), ptr(signature), ptr(message), len(message)) == 1 }
}

fn last_return() -> Vec<u8> {
    // SAFETY: the buffer is exactly as long as the host says the return data is.
    unsafe {
        let mut out = vec![0u8; return_len().max(0) as usize];
        return_read(out.as_mut_ptr() as i32);
        out
    }
}

/// Calls `method` of the contract at `address`: its return data, or its failure message.
pub fn call_contract(address: &Address, method: &str, args: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
    // SAFETY: the address, method and arguments live across the call.
    let status = unsafe {
        call(
            ptr(address),
            ptr(method.as_bytes()),
            len(method.as_bytes()),
            ptr(args),
            len(args),
        )
    };
    let data = last_return();
    if status == 0 {
        Ok(data)
    } else {
        Err(data)
    }
}

/// Sets this call's return data.
pub fn ret(data: &[u8]) {
    // SAFETY: `data` lives across the call; the host copies it.
    unsafe { set_return(ptr(data), len(data)) }
}

/// Fails this call with `message`; its writes are reverted and the gas used is still charged.
pub fn abort(message: &str) -> ! {
    // SAFETY: the message lives across the call; the host never returns from `abort`.
    unsafe { host_abort(ptr(message.as_bytes()), len(message.as_bytes())) };
    core::arch::wasm32::unreachable()
}
