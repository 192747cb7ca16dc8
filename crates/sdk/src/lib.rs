//! Write contracts in Rust for `wasm32-unknown-unknown` (no_std).
//!
//! # The ABI
//! A contract is a WASM module that exports its linear memory as `memory` and one function per
//! callable method, `() -> ()`, named as the method (`transfer`, `balance_of`, ...). A call
//! transaction names the method; the VM invokes that export. Everything else flows through host
//! functions imported from the module [`HOST_MODULE`], listed in [`abi`] with their signatures:
//! the call's arguments, storage, the caller and the contract's own address, block height and
//! time, events, BLAKE3, ed25519, calls to other contracts, return data and abort.
//!
//! These names are defined here, in a `no_std` crate the node depends on too, so the SDK and the
//! VM cannot drift apart.
//!
//! # Writing a contract
//! With the `contract` feature on a `wasm32` target, the SDK provides the host bindings
//! ([`env`], [`storage`]), a bump allocator (memory is fresh for every call, so nothing is ever
//! freed) and a panic handler that aborts the call with the panic's message. Arguments and return
//! values use the canonical little-endian encoding ([`codec`]), which is available on every
//! target, so clients and tests encode arguments with the same code.
//!
//! ```text
//! #[no_mangle]
//! pub extern "C" fn balance_of() {
//!     let mut args = peregrine_sdk::env::args();
//!     let owner = args.address().unwrap_or_else(|_| peregrine_sdk::env::abort("bad args"));
//!     let balance = peregrine_sdk::storage::get_u128(&balance_key(&owner)).unwrap_or(0);
//!     peregrine_sdk::env::ret(&balance.to_le_bytes());
//! }
//! ```
#![no_std]

extern crate alloc;

pub mod abi;
pub mod codec;

#[cfg(all(target_arch = "wasm32", feature = "contract"))]
pub mod env;
#[cfg(all(target_arch = "wasm32", feature = "contract"))]
mod runtime;
#[cfg(all(target_arch = "wasm32", feature = "contract"))]
pub mod storage;

pub use abi::HOST_MODULE;

/// The name under which a contract exports its linear memory.
pub const MEMORY_EXPORT: &str = "memory";

/// The method a deployment may call once to initialise the contract.
pub const INIT_METHOD: &str = "init";

/// Length of an address in bytes.
pub const ADDRESS_LEN: usize = 20;

/// A contract or account address.
pub type Address = [u8; ADDRESS_LEN];
