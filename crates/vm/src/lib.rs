//! Run contracts: the WASM engine, the host API, gas, the module cache and the native fast paths.
//!
//! - [`wasm`]: the engine (wasmtime with Cranelift and a pooling allocator), deploy-time
//!   validation, calls with fresh memory, cross-contract calls, and the host gas schedule.
//! - [`meter`]: gas and call-depth metering written into the contract's own bytecode, per
//!   straight-line segment, so gas cannot depend on the engine's optimizer or version.
//! - `cache`: compiled modules by code hash, in memory with a byte bound and on disk.
//! - [`native`]: native implementations of hot contracts, with outcomes identical to WASM.
//!
//! The gas of native transfers and deployments is here too, so every execution path prices work
//! from one schedule. What a transaction may spend is in [`peregrine_types::gas`].

mod access;
mod cache;
mod host;
mod memory;
pub mod meter;
pub mod native;
pub mod wasm;

pub use access::Access;
pub use cache::CacheStats;
pub use memory::MemoryWorld;
pub use peregrine_types::gas::NATIVE_TRANSFER_GAS as GAS_NATIVE_TRANSFER;
pub use wasm::{
    CallContext, CallFailure, Contract, DeployError, Event, Outcome, StorageView, Vm, VmConfig,
    World, Writes,
};

/// Gas a deployment pays per byte of code: it is validated, compiled and stored by every node.
pub const DEPLOY_BYTE_GAS: u64 = 50;
/// Gas every deployment pays on top of its bytes.
pub const DEPLOY_BASE_GAS: u64 = 50_000;
