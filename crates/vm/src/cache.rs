//! The module cache: compiled contracts by code hash, in memory with a byte bound and on disk.
//!
//! Compiling a contract takes milliseconds; a call takes microseconds. A contract is therefore
//! compiled once, when it is deployed, and kept:
//! - **In memory**, as a pre-linked [`Contract`], up to a bound on compiled-code bytes. Beyond
//!   it the least recently used contracts are dropped (calls still holding one keep it alive).
//! - **On disk**, when a directory is configured: the serialized module, so a restarted node
//!   loads instead of recompiling. A file is named by a hash of the code hash *and* of everything
//!   the compiled form depends on (the metering version, the wasmtime version and the engine's
//!   compatibility hash), so a change of any of them is a miss, never a wrong module. Each file
//!   ends with the BLAKE3 hash of its contents and is written to a temporary name then renamed,
//!   so a torn or corrupted file is detected and recompiled, never loaded.
//!
//! A miss in both compiles from the code stored in state (the caller supplies it).

use crate::wasm::{Contract, DeployError, Vm};
use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::{Engine, Module};

/// Bumped whenever metering changes what a code hash compiles to.
const METER_VERSION: u32 = 1;

/// What the cache has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from memory.
    pub memory_hits: u64,
    /// Loads served from disk.
    pub disk_hits: u64,
    /// Loads that compiled.
    pub compiled: u64,
    /// Contracts dropped from memory by the byte bound.
    pub evicted: u64,
    /// Contracts in memory now.
    pub entries: u64,
    /// Compiled-code bytes in memory now.
    pub bytes: u64,
}

struct Entry {
    contract: Arc<Contract>,
    bytes: usize,
    last_used: u64,
}

struct State {
    entries: HashMap<[u8; 32], Entry>,
    clock: u64,
    stats: CacheStats,
}

pub(crate) struct ModuleCache {
    bound: usize,
    dir: Option<PathBuf>,
    /// Hash of everything besides the code that the compiled form depends on.
    flavour: [u8; 32],
    state: Mutex<State>,
}

/// A stable digest of the engine's compatibility hash: `std::hash::Hash` feeds it bytes.
struct Digest(blake3::Hasher);

impl Hasher for Digest {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn flavour(engine: &Engine) -> [u8; 32] {
    let mut digest = Digest(blake3::Hasher::new());
    digest.write(b"peregrine module cache");
    digest.write(&METER_VERSION.to_le_bytes());
    digest.write(env!("CARGO_PKG_VERSION").as_bytes());
    engine.precompile_compatibility_hash().hash(&mut digest);
    *digest.0.finalize().as_bytes()
}

impl ModuleCache {
    pub(crate) fn new(
        engine: &Engine,
        bound: usize,
        dir: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            bound,
            dir,
            flavour: flavour(engine),
            state: Mutex::new(State {
                entries: HashMap::new(),
                clock: 0,
                stats: CacheStats::default(),
            }),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let state = self.state.lock();
        let mut stats = state.stats;
        stats.entries = state.entries.len() as u64;
        stats.bytes = state.entries.values().map(|e| e.bytes as u64).sum();
        stats
    }

    fn memory_get(&self, code_hash: &[u8; 32]) -> Option<Arc<Contract>> {
        let mut state = self.state.lock();
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(code_hash)?;
        entry.last_used = now;
        let contract = entry.contract.clone();
        state.stats.memory_hits += 1;
        Some(contract)
    }

    pub(crate) fn get_or_compile(
        &self,
        vm: &Vm,
        code_hash: &[u8; 32],
        code: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Arc<Contract>, DeployError> {
        if let Some(contract) = self.memory_get(code_hash) {
            return Ok(contract);
        }
        // Two threads missing at once both compile; the results are identical, so the second
        // insert only refreshes the entry.
        let (contract, from_disk) = match self.disk_get(vm, code_hash) {
            Some(contract) => (contract, true),
            None => {
                let code = code().ok_or_else(|| {
                    DeployError::Compile("the code of a deployed contract is missing".into())
                })?;
                let contract = vm.deploy(&code)?;
                self.disk_put(code_hash, &contract);
                (contract, false)
            }
        };
        let contract = Arc::new(contract);
        self.insert(code_hash, contract.clone(), from_disk);
        Ok(contract)
    }

    fn insert(&self, code_hash: &[u8; 32], contract: Arc<Contract>, from_disk: bool) {
        let bytes = contract.image_bytes().max(1);
        let mut state = self.state.lock();
        if from_disk {
            state.stats.disk_hits += 1;
        } else {
            state.stats.compiled += 1;
        }
        state.clock += 1;
        let last_used = state.clock;
        let entry = Entry {
            contract,
            bytes,
            last_used,
        };
        state.entries.insert(*code_hash, entry);
        let mut total: usize = state.entries.values().map(|e| e.bytes).sum();
        while total > self.bound && state.entries.len() > 1 {
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(hash, e)| (*hash, e.bytes));
            let Some((hash, size)) = oldest else { break };
            state.entries.remove(&hash);
            state.stats.evicted += 1;
            total -= size;
        }
    }

    fn path(&self, code_hash: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.flavour);
        hasher.update(code_hash);
        Some(dir.join(format!("{}.cwasm", hasher.finalize().to_hex())))
    }

    fn disk_get(&self, vm: &Vm, code_hash: &[u8; 32]) -> Option<Contract> {
        let path = self.path(code_hash)?;
        let bytes = std::fs::read(&path).ok()?;
        let module = verified_module(vm.engine(), &bytes);
        if module.is_none() {
            // Torn, corrupted or from another build: recompile and overwrite it.
            let _ = std::fs::remove_file(&path);
        }
        vm.prelink(&module?).ok()
    }

    /// Best effort: a failure to write only costs a recompilation after a restart.
    fn disk_put(&self, code_hash: &[u8; 32], contract: &Contract) {
        let Some(path) = self.path(code_hash) else {
            return;
        };
        let Ok(mut bytes) = contract.module().serialize() else {
            return;
        };
        let sum = *blake3::hash(&bytes).as_bytes();
        bytes.extend_from_slice(&sum);
        let _ = write_atomically(&path, &bytes);
    }
}

/// The module in `bytes`, if its trailing checksum matches.
fn verified_module(engine: &Engine, bytes: &[u8]) -> Option<Module> {
    let split = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(split);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    deserialize(engine, body)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, body: &[u8]) -> Option<Module> {
    // SAFETY: wasmtime requires the bytes to come from `Module::serialize` of a compatible
    // engine. They do: only this cache writes these files, under a name that hashes the
    // engine's compatibility hash, and the checksum above rules out torn or altered contents.
    unsafe { Module::deserialize(engine, body) }.ok()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
