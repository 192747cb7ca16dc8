//! Run contracts: the WASM engine, the host API, gas, the module cache and the native fast paths.
//!
//! Today this crate holds the gas schedule that every execution path charges from, so that the
//! native transfer, the WASM engine and its native fast paths all price work from one table, and
//! [`meter`]: gas and call-depth metering written into the contract's own bytecode, per
//! straight-line segment, so gas cannot depend on the engine. The WASM engine (wasmtime with
//! Cranelift, a module cache keyed by code hash) comes next, behind the same schedule.

mod host;
pub mod meter;
pub mod native;
pub mod wasm;

/// Gas charged for one native transfer: a fixed price, independent of any engine, so receipts are
/// identical on every node and every version.
pub const GAS_NATIVE_TRANSFER: u64 = 1_000;

/// Gas charged for a transaction whose payload kind the node cannot execute yet: the cost of
/// decoding and rejecting it.
pub const GAS_UNSUPPORTED: u64 = 500;
