//! [`MemoryWorld`]: a whole chain's contracts and storage in memory, for tests, benchmarks and
//! tools that run contracts without a state database.

use crate::wasm::{StorageView, World, Writes};
use foldhash::HashMap;
use std::collections::BTreeMap;

/// Contracts, code and storage in ordinary maps.
#[derive(Debug, Clone, Default)]
pub struct MemoryWorld {
    storage: BTreeMap<([u8; 20], Vec<u8>), Vec<u8>>,
    contracts: HashMap<[u8; 20], [u8; 32]>,
    code: HashMap<[u8; 32], Vec<u8>>,
}

impl MemoryWorld {
    /// An empty world.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `code` at `address` (no validation: see [`crate::Vm::install`]); returns its hash.
    pub fn deploy(&mut self, address: [u8; 20], code: &[u8]) -> [u8; 32] {
        let hash = *blake3::hash(code).as_bytes();
        self.code.insert(hash, code.to_vec());
        self.contracts.insert(address, hash);
        hash
    }

    /// Applies a successful call's writes.
    pub fn apply(&mut self, writes: &Writes) {
        for (contract, entries) in writes {
            for (key, value) in entries {
                let key = (*contract, key.clone());
                match value {
                    Some(value) => self.storage.insert(key, value.clone()),
                    None => self.storage.remove(&key),
                };
            }
        }
    }

    /// Sets one storage entry directly.
    pub fn set(&mut self, contract: [u8; 20], key: Vec<u8>, value: Vec<u8>) {
        self.storage.insert((contract, key), value);
    }

    /// How many storage entries exist, across contracts.
    pub fn storage_len(&self) -> usize {
        self.storage.len()
    }

    /// One contract's storage, as native implementations read it.
    pub fn view(&self, contract: [u8; 20]) -> impl StorageView + '_ {
        View {
            world: self,
            contract,
        }
    }
}

struct View<'a> {
    world: &'a MemoryWorld,
    contract: [u8; 20],
}

impl StorageView for View<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.world.storage(&self.contract, key)
    }
}

impl World for MemoryWorld {
    fn storage(&self, contract: &[u8; 20], key: &[u8]) -> Option<Vec<u8>> {
        self.storage.get(&(*contract, key.to_vec())).cloned()
    }

    fn code_hash(&self, contract: &[u8; 20]) -> Option<[u8; 32]> {
        self.contracts.get(contract).copied()
    }

    fn code(&self, code_hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.code.get(code_hash).cloned()
    }
}
