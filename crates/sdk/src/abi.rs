//! The host functions a contract may import, with their WASM signatures.
//!
//! Pointers and lengths are `i32` offsets into the contract's memory. The VM links exactly these
//! and refuses, at deploy, a module that imports anything else. Every host function checks its
//! inputs (bounds, lengths) and charges gas by the documented schedule; a bad input fails the call,
//! never the node.

/// The import module name under which the node provides every host function.
pub const HOST_MODULE: &str = "peregrine";

/// A WASM value type used by the host functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
}

/// One host function's name and signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFn {
    /// The import name.
    pub name: &'static str,
    /// Parameter types.
    pub params: &'static [ValType],
    /// Result types.
    pub results: &'static [ValType],
}

use ValType::{I32, I64};

const fn host(
    name: &'static str,
    params: &'static [ValType],
    results: &'static [ValType],
) -> HostFn {
    HostFn {
        name,
        params,
        results,
    }
}

/// Every host function, in a fixed order.
pub const HOST_FUNCTIONS: [HostFn; 17] = [
    // () -> length of the call's arguments.
    host("args_len", &[], &[I32]),
    // (out) copies the arguments to `out`.
    host("args_read", &[I32], &[]),
    // (key, key_len, out, out_cap) -> value length, or -1 if absent; copies at most out_cap bytes.
    host("storage_read", &[I32, I32, I32, I32], &[I32]),
    // (key, key_len, value, value_len)
    host("storage_write", &[I32, I32, I32, I32], &[]),
    // (key, key_len)
    host("storage_remove", &[I32, I32], &[]),
    // (out) writes the 20-byte address of the account or contract that made this call.
    host("caller", &[I32], &[]),
    // (out) writes this contract's 20-byte address.
    host("self_address", &[I32], &[]),
    // () -> the height of the block being executed.
    host("block_height", &[], &[I64]),
    // () -> the block's timestamp in milliseconds since the Unix epoch.
    host("block_time_ms", &[], &[I64]),
    // (topic, topic_len, data, data_len) appends an event to the receipt.
    host("emit", &[I32, I32, I32, I32], &[]),
    // (data, len, out) writes the 32-byte BLAKE3 hash of data.
    host("blake3", &[I32, I32, I32], &[]),
    // (public_key, signature, message, message_len) -> 1 if valid (ZIP215), else 0.
    host("ed25519_verify", &[I32, I32, I32, I32], &[I32]),
    // (address, method, method_len, args, args_len) -> 0 if the callee succeeded, else 1.
    host("call", &[I32, I32, I32, I32, I32], &[I32]),
    // () -> length of the last callee's return data (or failure message).
    host("return_len", &[], &[I32]),
    // (out) copies the last callee's return data.
    host("return_read", &[I32], &[]),
    // (data, len) sets this call's return data.
    host("set_return", &[I32, I32], &[]),
    // (message, len) fails this call with a message; its writes are reverted.
    host("abort", &[I32, I32], &[]),
];

/// The host function called `name`, if there is one.
pub fn host_function(name: &str) -> Option<&'static HostFn> {
    HOST_FUNCTIONS.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, f) in HOST_FUNCTIONS.iter().enumerate() {
            assert!(HOST_FUNCTIONS[i + 1..].iter().all(|g| g.name != f.name));
            assert_eq!(host_function(f.name), Some(f));
        }
        assert_eq!(host_function("fd_write"), None);
    }
}
