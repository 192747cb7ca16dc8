//! Write contracts in Rust for `wasm32-unknown-unknown` (no_std).
//!
//! The SDK and the VM share one ABI: the module name under which the node provides host functions,
//! and the names of the exports a contract must provide. They are defined here, in a `no_std`
//! crate the node can depend on too, so the two sides cannot drift apart. The contract-writing
//! API (entry points, typed storage, events, cross-contract calls) lands with the contracts issue.
#![no_std]

/// The import module name under which the node provides every host function.
pub const HOST_MODULE: &str = "peregrine";

/// The export a contract provides for each call; the method and arguments are read from the host.
pub const CALL_EXPORT: &str = "call";
