//! Contracts in the state database: where they live, and how a block's transactions see them.
//!
//! # State layout (see `peregrine_types::keys`)
//! - `c ++ address` → the 32-byte BLAKE3 hash of the contract's code;
//! - `k ++ code hash` → the code, stored once however many contracts share it;
//! - `s ++ address ++ key` → the contract's storage, one contiguous key range per contract.
//!
//! # What a call sees
//! A [`BlockWorld`]: the parent revision's snapshot, under the block's contract writes so far.
//! Both are owned (a snapshot clone and a shared map), so a world can travel into the VM's store
//! and nested calls. Executors apply a successful call's writes to the map after the call ends,
//! when they hold the only reference, so no copy is made.
//!
//! # The node's VM
//! [`node_vm`] builds the VM a node executes with: a module cache (in memory, and on disk under
//! the node's data directory) and the native token fast path, registered under the hash of the
//! committed token contract and calibrated against it at start-up.

use foldhash::{HashMap, HashMapExt};
use peregrine_state::Snapshot;
use peregrine_types::{keys, Address};
use peregrine_vm::native::NativeToken;
use peregrine_vm::{DeployError, Vm, VmConfig, World};
use std::sync::Arc;

/// The example token's committed code: calls to a contract with exactly this code run natively.
pub const TOKEN_CODE: &[u8] = include_bytes!("../../../contracts/token/token.wasm");

/// Contract records, code and storage written by a block so far (`None` deletes).
pub(crate) type RawWrites = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// The state a contract call sees: the parent revision under the block's writes so far.
pub struct BlockWorld {
    pub(crate) parent: Snapshot,
    pub(crate) raw: Arc<RawWrites>,
}

impl BlockWorld {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.raw.get(key) {
            Some(written) => written.clone(),
            None => self.parent.get(key).map(|v| v.to_vec()),
        }
    }
}

impl World for BlockWorld {
    fn storage(&self, contract: &[u8; 20], key: &[u8]) -> Option<Vec<u8>> {
        self.get(&keys::storage(&Address(*contract), key))
    }

    fn code_hash(&self, contract: &[u8; 20]) -> Option<[u8; 32]> {
        let record = self.get(&keys::contract(&Address(*contract)))?;
        record.try_into().ok()
    }

    fn code(&self, code_hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.get(&keys::code(code_hash))
    }
}

/// The world of a read-only call on `snapshot` (the RPC's `call`).
pub fn snapshot_world(snapshot: Snapshot) -> Arc<dyn World> {
    Arc::new(BlockWorld {
        parent: snapshot,
        raw: Arc::new(RawWrites::new()),
    })
}

/// The VM a node executes blocks with: the module cache described by `config`, and the native
/// token registered for [`TOKEN_CODE`].
pub fn node_vm(config: VmConfig) -> Result<Vm, DeployError> {
    let vm = Vm::with_config(config)?;
    let token = vm.deploy(TOKEN_CODE)?;
    let native = NativeToken::calibrate(&vm, &token).map_err(DeployError::Compile)?;
    vm.register_native(*blake3::hash(TOKEN_CODE).as_bytes(), Box::new(native));
    Ok(vm)
}
