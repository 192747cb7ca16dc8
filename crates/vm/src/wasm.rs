//! The WASM engine: validate and compile at deploy, instantiate fresh for every call, meter in
//! bytecode ([`crate::meter`]), and serve the host functions of [`peregrine_sdk::abi`].
//!
//! # Deploy
//! [`Vm::deploy`] refuses code over [`MAX_CODE_BYTES`], modules the validator rejects under the
//! deterministic feature set (no threads, no SIMD, no tail calls, one memory), imports other than
//! the host functions with their exact signatures, a declared memory above [`MAX_MEMORY_PAGES`],
//! and modules without an exported `memory`. It then meters the module and compiles it once;
//! the result, a [`Contract`], is what calls run.
//!
//! # A call
//! A fresh store and instance (memory included) per call, built from a pre-linked
//! `InstancePre`. The host sets the gas global to the call's limit, invokes the method's export,
//! and reads what is left. The outcome is [`Outcome`]: success with return data, events and the
//! storage writes, or a failure (out of gas, stack overflow, trap, abort, a limit) whose writes
//! are discarded, with the gas used either way.
//!
//! # Host gas
//! Every call first pays [`CALL_BASE_GAS`] for its fresh instance.
//! Host functions charge on top of the bytecode's own metering, from the same gas global:
//! [`HOST_CALL_GAS`] per call plus a price per byte read, written, hashed or emitted (see the
//! constants). A host function checks every pointer and length against the module's memory;
//! a bad one fails the call, never the node.

use crate::access::Access;
use crate::cache::{CacheStats, ModuleCache};
use crate::meter::{self, DEPTH_GLOBAL, GAS_GLOBAL, OUT_OF_GAS, STACK_OVERFLOW};
use crate::native::{NativeContract, Registry};
use foldhash::HashMap;
use peregrine_sdk::abi::{host_function, ValType, HOST_MODULE};
use peregrine_sdk::MEMORY_EXPORT;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use thiserror::Error;
use wasmtime::{
    Caller, Engine, InstancePre, Linker, Module, ModuleExport, Store, StoreLimits, Val,
};

/// Largest contract code accepted, in bytes.
pub const MAX_CODE_BYTES: usize = 512 * 1024;
/// Most 64 KiB pages a contract's memory may have: 16 MiB.
pub const MAX_MEMORY_PAGES: u64 = 256;
/// Instances alive at once: up to [`MAX_CALL_STACK`] per executing thread.
const POOL_INSTANCES: u32 = 256;
/// Bytes of each pooled memory kept mapped between calls and zeroed with memset.
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;
/// Bytes of each pooled table kept mapped between calls.
const KEEP_RESIDENT_TABLE_BYTES: usize = 16 * 1024;
/// Most contracts on one call stack: a call that would go deeper fails (to its caller).
pub const MAX_CALL_STACK: usize = 8;
/// Largest return data, in bytes.
pub const MAX_RETURN_BYTES: usize = 64 * 1024;
/// Most events one call may emit, and the largest topic plus data of one event.
pub const MAX_EVENTS: usize = 256;
/// Largest event (topic plus data), in bytes.
pub const MAX_EVENT_BYTES: usize = 4 * 1024;
/// Largest storage key and value, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest storage value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Gas every call pays before it runs: instantiating the module with fresh memory.
pub const CALL_BASE_GAS: u64 = 5_000;
/// Gas for entering any host function.
pub const HOST_CALL_GAS: u64 = 100;
/// Gas per byte of key and value read from storage.
pub const STORAGE_READ_BYTE_GAS: u64 = 3;
/// Gas per byte of key and value written to storage (it is stored by every node).
pub const STORAGE_WRITE_BYTE_GAS: u64 = 30;
/// Gas per byte of event, argument or return data moved across the boundary.
pub const COPY_BYTE_GAS: u64 = 1;
/// Gas per byte hashed.
pub const HASH_BYTE_GAS: u64 = 1;
/// Gas for one ed25519 verification.
pub const ED25519_VERIFY_GAS: u64 = 20_000;

/// Why code could not be deployed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeployError {
    /// Larger than [`MAX_CODE_BYTES`].
    #[error("code is {0} bytes, over the limit")]
    TooLarge(usize),
    /// Not a valid module under the deterministic feature set.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// Imports something the host does not provide, or with another signature.
    #[error("import {module}.{name} is not a host function with that signature")]
    Import {
        /// The import module.
        module: String,
        /// The import name.
        name: String,
    },
    /// A host function this VM does not provide yet.
    #[error("host function {0} is not available in this version")]
    Unavailable(String),
    /// The memory's declared size exceeds the limit, or it is not exported as `memory`.
    #[error("memory: {0}")]
    Memory(String),
    /// Metering or compilation failed.
    #[error("compiling: {0}")]
    Compile(String),
}

impl DeployError {
    /// A description made only of this crate's own words (no parser or compiler text), so a
    /// failed deployment's receipt is the same on every node and version.
    pub fn message(&self) -> String {
        match self {
            DeployError::Invalid(_) => "invalid module".into(),
            DeployError::Compile(_) => "the module does not compile".into(),
            other => other.to_string(),
        }
    }
}

/// Why a call failed. The call's writes are discarded; its gas is charged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallFailure {
    /// The gas limit ran out.
    #[error("out of gas")]
    OutOfGas,
    /// Calls nested deeper than the limit.
    #[error("call depth limit exceeded")]
    StackOverflow,
    /// The contract aborted with a message.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The contract trapped (unreachable, bad memory access, division by zero, ...).
    #[error("trap: {0}")]
    Trap(String),
    /// A host function refused its input or a limit was exceeded.
    #[error("limit: {0}")]
    Limit(String),
    /// The method does not exist.
    #[error("no method {0}")]
    NoMethod(String),
    /// No contract is deployed at the address.
    #[error("no contract at the called address")]
    NoContract,
    /// The contract's stored code does not compile (it passed at deploy, so only a change of
    /// limits between versions can cause this).
    #[error("code: {0}")]
    Code(String),
    /// A storage access or call outside what the transaction declared: fails the transaction.
    #[error("undeclared access: {0}")]
    Undeclared(String),
}

impl CallFailure {
    /// What a caller or a receipt learns of the failure: the abort message itself, else a
    /// description made only of this crate's own words, so it is the same on every node.
    pub fn message(&self) -> String {
        match self {
            CallFailure::Aborted(message) => message.clone(),
            other => other.to_string(),
        }
    }
}

/// An event a call emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The contract that emitted it.
    pub contract: [u8; 20],
    /// The topic.
    pub topic: Vec<u8>,
    /// The data.
    pub data: Vec<u8>,
}

/// Storage writes of a call tree: per contract, per key, the new value (`None` deletes).
pub type Writes = BTreeMap<[u8; 20], BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Success with return data, or why it failed.
    pub result: Result<Vec<u8>, CallFailure>,
    /// Gas used, bytecode and host together, nested calls included.
    pub gas_used: u64,
    /// Events of the call and its successful callees, in emission order; empty on failure.
    pub events: Vec<Event>,
    /// Storage writes of the call and its successful callees; empty on failure.
    pub writes: Writes,
}

impl Outcome {
    fn failed(failure: CallFailure, gas_used: u64) -> Self {
        Self {
            result: Err(failure),
            gas_used,
            events: Vec::new(),
            writes: Writes::new(),
        }
    }
}

/// The chain as calls see it, before the call: contract storage and deployed code. The executor
/// provides it, layered over the block's earlier writes.
pub trait World: Send + Sync {
    /// The value under `key` in `contract`'s storage.
    fn storage(&self, contract: &[u8; 20], key: &[u8]) -> Option<Vec<u8>>;
    /// The code hash of the contract deployed at `contract`.
    fn code_hash(&self, contract: &[u8; 20]) -> Option<[u8; 32]>;
    /// The code whose hash is `code_hash`.
    fn code(&self, code_hash: &[u8; 32]) -> Option<Vec<u8>>;
}

/// One contract's storage as a native implementation reads it: its writes so far in this call
/// tree over the world.
pub trait StorageView {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

/// A contract's storage: the call tree's writes, then the world; remembers the keys read.
pub(crate) struct Layered<'a> {
    pub(crate) world: &'a dyn World,
    pub(crate) writes: &'a Writes,
    pub(crate) contract: [u8; 20],
    pub(crate) read: std::cell::RefCell<Vec<Vec<u8>>>,
}

impl StorageView for Layered<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.read.borrow_mut().push(key.to_vec());
        match self.writes.get(&self.contract).and_then(|w| w.get(key)) {
            Some(written) => written.clone(),
            None => self.world.storage(&self.contract, key),
        }
    }
}

/// What a call shares with the calls around it: the world, the tree's writes so far, and the
/// contracts on the call stack (this one last).
pub(crate) struct CallTree {
    pub(crate) world: Arc<dyn World>,
    pub(crate) writes: Writes,
    pub(crate) stack: Vec<[u8; 20]>,
    /// What the transaction declared; `None`: anything (see [`crate::Access`]).
    pub(crate) access: Option<Arc<Access>>,
}

impl CallTree {
    fn new(world: Arc<dyn World>, contract: [u8; 20], access: Option<Arc<Access>>) -> Self {
        Self {
            world,
            writes: Writes::new(),
            stack: vec![contract],
            access,
        }
    }
}

/// The refusal of calling `contract` without declaring it.
pub(crate) fn undeclared_call(contract: &[u8; 20]) -> CallFailure {
    CallFailure::Undeclared(format!("call to 0x{}", hex(contract)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who calls, in which block, with what.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The account or contract that made the call.
    pub caller: [u8; 20],
    /// The contract's address.
    pub contract: [u8; 20],
    /// The block height.
    pub height: u64,
    /// The block timestamp in milliseconds.
    pub time_ms: u64,
    /// The method's arguments.
    pub args: Vec<u8>,
    /// The gas limit.
    pub gas_limit: u64,
}

/// The state host functions work on during one call.
pub(crate) struct Host {
    pub(crate) ctx: CallContext,
    pub(crate) vm: Vm,
    pub(crate) world: Arc<dyn World>,
    /// Writes of the whole call tree so far: a callee starts from its caller's.
    pub(crate) writes: Writes,
    pub(crate) events: Vec<Event>,
    pub(crate) return_data: Vec<u8>,
    /// The last callee's return data or failure message.
    pub(crate) last_return: Vec<u8>,
    /// The contracts on the call stack, outermost first, this one last.
    pub(crate) stack: Vec<[u8; 20]>,
    /// What the transaction declared; `None`: anything.
    pub(crate) access: Option<Arc<Access>>,
    /// False only for [`Vm::deploy_unmetered`] modules: host functions then charge nothing.
    pub(crate) metered: bool,
    /// The instance's gas global and memory, found once per call rather than by name in every
    /// host function.
    pub(crate) gas: Option<wasmtime::Global>,
    pub(crate) memory: Option<wasmtime::Memory>,
    limits: StoreLimits,
}

/// A deployed contract: metered, compiled and pre-linked.
pub struct Contract {
    pre: InstancePre<Host>,
    metered: bool,
    exports: Exports,
}

/// The exports a call uses, resolved once per module rather than by name on every call.
struct Exports {
    gas: Option<ModuleExport>,
    depth: Option<ModuleExport>,
    memory: Option<ModuleExport>,
    /// Every `() -> ()` function export: the callable methods.
    methods: HashMap<String, ModuleExport>,
}

impl Exports {
    fn of(module: &Module) -> Self {
        let methods = module
            .exports()
            .filter(|e| {
                e.ty()
                    .func()
                    .is_some_and(|f| f.params().len() == 0 && f.results().len() == 0)
            })
            .filter_map(|e| Some((e.name().to_string(), module.get_export_index(e.name())?)))
            .collect();
        Self {
            gas: module.get_export_index(GAS_GLOBAL),
            depth: module.get_export_index(DEPTH_GLOBAL),
            memory: module.get_export_index(MEMORY_EXPORT),
            methods,
        }
    }
}

impl Contract {
    /// Bytes of compiled code this contract keeps in memory (what the module cache bounds).
    pub fn image_bytes(&self) -> usize {
        let range = self.pre.module().image_range();
        (range.end as usize).saturating_sub(range.start as usize)
    }

    pub(crate) fn module(&self) -> &Module {
        self.pre.module()
    }
}

/// Where compiled modules are kept.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Bytes of compiled code kept in memory; the least recently used are dropped beyond it.
    pub cache_bytes: usize,
    /// A directory for compiled modules, so a restart does not recompile; `None` keeps them in
    /// memory only.
    pub cache_dir: Option<PathBuf>,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 256 * 1024 * 1024,
            cache_dir: None,
        }
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<Host>,
    cache: ModuleCache,
    natives: RwLock<Registry>,
}

/// The engine, the host functions, the module cache and the native fast paths, shared by every
/// contract and every thread: cloning is cheap.
#[derive(Clone)]
pub struct Vm {
    inner: Arc<Inner>,
}

fn features() -> wasmparser::WasmFeatures {
    use wasmparser::WasmFeatures as F;
    let mut features = F::WASM2;
    features.remove(F::SIMD | F::RELAXED_SIMD | F::THREADS | F::TAIL_CALL | F::MULTI_MEMORY);
    features
}

fn engine() -> Result<Engine, DeployError> {
    let mut config = wasmtime::Config::new();
    config
        .cranelift_nan_canonicalization(true)
        .wasm_simd(false)
        .wasm_relaxed_simd(false)
        .wasm_tail_call(false)
        .wasm_multi_memory(false)
        // The bytecode's own depth limit decides; this only keeps the host safe.
        .max_wasm_stack(1 << 20)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling()));
    Engine::new(&config).map_err(|e| DeployError::Compile(e.to_string()))
}

/// Instances come from a pool of pre-reserved slots, so a call maps no memory and a finished
/// call's pages are reset, not unmapped: instantiation is the per-call cost that matters most.
fn pooling() -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_core_instances(POOL_INSTANCES)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES)
        .max_memories_per_module(1)
        .max_memory_size((MAX_MEMORY_PAGES * 65_536) as usize)
        .table_elements(65_536)
        // A finished call's first pages (stack, data, early heap) are zeroed with memset and
        // stay mapped, rather than being returned to the kernel and faulted in again by the
        // next call: page faults were the largest single cost of a small call.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
    pool
}

impl Vm {
    /// An engine with every host function linked and an in-memory module cache.
    pub fn new() -> Result<Self, DeployError> {
        Self::with_config(VmConfig::default())
    }

    /// An engine with every host function linked and the module cache `config` describes.
    pub fn with_config(config: VmConfig) -> Result<Self, DeployError> {
        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        crate::host::link(&mut linker).map_err(|e| DeployError::Compile(e.to_string()))?;
        let cache = ModuleCache::new(&engine, config.cache_bytes, config.cache_dir)
            .map_err(|e| DeployError::Compile(format!("module cache: {e}")))?;
        let inner = Inner {
            engine,
            linker,
            cache,
            natives: RwLock::new(Registry::default()),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs `native` instead of the WASM path for the code whose BLAKE3 hash is `code_hash`.
    pub fn register_native(&self, code_hash: [u8; 32], native: Box<dyn NativeContract>) {
        let mut natives = self
            .inner
            .natives
            .write()
            .unwrap_or_else(|e| e.into_inner());
        natives.register(code_hash, native);
    }

    /// The module cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Validates, meters and compiles `code`, without caching it.
    pub fn deploy(&self, code: &[u8]) -> Result<Contract, DeployError> {
        self.compile(code, true)
    }

    /// Validates, meters and compiles `code` once, and keeps the result in the module cache
    /// (memory and disk) under its code hash, which it returns. Deploy transactions use this.
    pub fn install(&self, code: &[u8]) -> Result<[u8; 32], DeployError> {
        let hash = *blake3::hash(code).as_bytes();
        self.load(&hash, || Some(code.to_vec()))?;
        Ok(hash)
    }

    /// The compiled contract for `code_hash`: from memory, else from disk, else compiled from
    /// the code `code` returns (and cached).
    pub fn load(
        &self,
        code_hash: &[u8; 32],
        code: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Arc<Contract>, DeployError> {
        self.inner.cache.get_or_compile(self, code_hash, code)
    }

    /// Validates and compiles `code` without metering, for measuring what metering costs
    /// (`peregrine bench vm`). Its calls report no gas and have no gas limit: never use it for
    /// anything a chain executes.
    pub fn deploy_unmetered(&self, code: &[u8]) -> Result<Contract, DeployError> {
        self.compile(code, false)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Pre-links a compiled (metered) module.
    pub(crate) fn prelink(&self, module: &Module) -> Result<Contract, DeployError> {
        let pre = self
            .inner
            .linker
            .instantiate_pre(module)
            .map_err(|e| DeployError::Compile(e.to_string()))?;
        Ok(Contract {
            pre,
            metered: true,
            exports: Exports::of(module),
        })
    }

    fn compile(&self, code: &[u8], metered: bool) -> Result<Contract, DeployError> {
        if code.len() > MAX_CODE_BYTES {
            return Err(DeployError::TooLarge(code.len()));
        }
        wasmparser::Validator::new_with_features(features())
            .validate_all(code)
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
        check_imports_and_memory(code)?;
        let compiled = if metered {
            meter::instrument(code).map_err(|e| DeployError::Compile(e.to_string()))?
        } else {
            code.to_vec()
        };
        let module = Module::new(&self.inner.engine, &compiled)
            .map_err(|e| DeployError::Compile(e.to_string()))?;
        let mut contract = self.prelink(&module)?;
        contract.metered = metered;
        Ok(contract)
    }

    /// Calls `method` of the contract deployed at `ctx.contract`, as `world` shows it: its
    /// native implementation if its code has one, else its cached, compiled WASM.
    pub fn call(&self, method: &str, ctx: CallContext, world: Arc<dyn World>) -> Outcome {
        let tree = CallTree::new(world, ctx.contract, None);
        self.call_in(method, ctx, tree)
    }

    /// [`Self::call`] limited to what `access` declares: a storage access or call outside it
    /// fails the whole call with [`CallFailure::Undeclared`], whichever contract made it.
    pub fn call_declared(
        &self,
        method: &str,
        ctx: CallContext,
        world: Arc<dyn World>,
        access: Arc<Access>,
    ) -> Outcome {
        if !access.may_call(&ctx.contract) {
            return Outcome::failed(undeclared_call(&ctx.contract), 0);
        }
        let tree = CallTree::new(world, ctx.contract, Some(access));
        self.call_in(method, ctx, tree)
    }

    /// Runs `method` of an already compiled `contract` with fresh memory (no native path):
    /// benchmarks and tests use it to measure and check the WASM path alone.
    pub fn call_compiled(
        &self,
        contract: &Contract,
        method: &str,
        ctx: CallContext,
        world: Arc<dyn World>,
    ) -> Outcome {
        let tree = CallTree::new(world, ctx.contract, None);
        self.run_call(contract, method, ctx, tree)
    }

    /// A call inside a call tree. On success the outcome's writes are all of the tree's; on
    /// failure they are empty.
    pub(crate) fn call_in(&self, method: &str, ctx: CallContext, tree: CallTree) -> Outcome {
        let world = &tree.world;
        let Some(code_hash) = world.code_hash(&ctx.contract) else {
            return Outcome::failed(CallFailure::NoContract, 0);
        };
        if let Some(outcome) = self.call_native(&code_hash, method, &ctx, &tree) {
            return outcome;
        }
        let contract = match self.load(&code_hash, || world.code(&code_hash)) {
            Ok(contract) => contract,
            Err(e) => return Outcome::failed(CallFailure::Code(e.message()), 0),
        };
        self.run_call(&contract, method, ctx, tree)
    }

    /// The native path's outcome, with its writes merged over the tree's, if it has one. A
    /// native outcome that read or wrote anything undeclared is dropped (it has no side effects
    /// yet), so the WASM path runs and fails at the very host call the promise forbids.
    fn call_native(
        &self,
        code_hash: &[u8; 32],
        method: &str,
        ctx: &CallContext,
        tree: &CallTree,
    ) -> Option<Outcome> {
        let natives = self.inner.natives.read().unwrap_or_else(|e| e.into_inner());
        let native = natives.get(code_hash)?;
        let view = Layered {
            world: &*tree.world,
            writes: &tree.writes,
            contract: ctx.contract,
            read: std::cell::RefCell::new(Vec::new()),
        };
        let mut outcome = native.call(method, ctx, &view)?;
        if let Some(access) = &tree.access {
            let contract = &ctx.contract;
            let reads_ok = view
                .read
                .borrow()
                .iter()
                .all(|k| access.may_read(contract, k));
            let writes_ok = outcome
                .writes
                .iter()
                .all(|(c, entries)| entries.keys().all(|k| access.may_write(c, k)));
            if !reads_ok || !writes_ok {
                return None;
            }
        }
        if outcome.result.is_ok() {
            let mut merged = tree.writes.clone();
            for (contract, entries) in std::mem::take(&mut outcome.writes) {
                merged.entry(contract).or_default().extend(entries);
            }
            outcome.writes = merged;
        }
        Some(outcome)
    }

    fn run_call(
        &self,
        contract: &Contract,
        method: &str,
        ctx: CallContext,
        tree: CallTree,
    ) -> Outcome {
        let CallTree {
            world,
            writes,
            stack,
            access,
        } = tree;
        let gas_limit = ctx.gas_limit.min(i64::MAX as u64);
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size((MAX_MEMORY_PAGES * 65_536) as usize)
            .instances(1)
            .tables(4)
            .table_elements(65_536)
            .build();
        let host = Host {
            ctx,
            vm: self.clone(),
            world,
            writes,
            events: Vec::new(),
            return_data: Vec::new(),
            last_return: Vec::new(),
            stack,
            access,
            metered: contract.metered,
            gas: None,
            memory: None,
            limits,
        };
        let mut store = Store::new(&self.inner.engine, host);
        store.limiter(|h| &mut h.limits);
        let (result, gas_used) = run(&mut store, contract, method, gas_limit);
        let host = store.into_data();
        match result {
            Ok(()) => Outcome {
                result: Ok(host.return_data),
                gas_used,
                events: host.events,
                writes: host.writes,
            },
            Err(failure) => Outcome::failed(failure, gas_used),
        }
    }
}

/// Instantiates and runs the method, turning every way it can end into a [`CallFailure`];
/// returns the gas used with it (all of it when the gas ran out).
fn run(
    store: &mut Store<Host>,
    contract: &Contract,
    method: &str,
    gas_limit: u64,
) -> (Result<(), CallFailure>, u64) {
    if gas_limit < CALL_BASE_GAS {
        return (Err(CallFailure::OutOfGas), gas_limit);
    }
    let (used, result) = run_metered(store, contract, method, gas_limit - CALL_BASE_GAS);
    (result, used + CALL_BASE_GAS)
}

/// Runs the method with `gas_limit` for its bytecode and host calls; returns the gas they used.
fn run_metered(
    store: &mut Store<Host>,
    contract: &Contract,
    method: &str,
    gas_limit: u64,
) -> (u64, Result<(), CallFailure>) {
    let instance = match contract.pre.instantiate(&mut *store) {
        Ok(instance) => instance,
        Err(_) => return (0, Err(CallFailure::Trap("instantiation failed".into()))),
    };
    let exports = &contract.exports;
    let export = |store: &mut Store<Host>, e: &Option<ModuleExport>| {
        e.as_ref()
            .and_then(|e| instance.get_module_export(&mut *store, e))
    };
    let gas = export(store, &exports.gas).and_then(|e| e.into_global());
    store.data_mut().gas = gas;
    store.data_mut().memory = export(store, &exports.memory).and_then(|e| e.into_memory());
    if let Some(gas) = gas {
        if gas.set(&mut *store, Val::I64(gas_limit as i64)).is_err() {
            return (
                0,
                Err(CallFailure::Trap("could not set the gas limit".into())),
            );
        }
    }
    let func = exports
        .methods
        .get(method)
        .and_then(|e| instance.get_module_export(&mut *store, e))
        .and_then(|e| e.into_func())
        .and_then(|f| f.typed::<(), ()>(&*store).ok());
    let Some(func) = func else {
        return (0, Err(CallFailure::NoMethod(method.into())));
    };
    let outcome = func.call(&mut *store, ());
    // An unmetered module (benchmarks only) reports no gas used.
    let left = gas.map_or(gas_limit as i64, |g| {
        g.get(&mut *store).i64().unwrap_or(OUT_OF_GAS)
    });
    let used = if left < 0 {
        gas_limit
    } else {
        gas_limit - left as u64
    };
    let depth = match &outcome {
        Ok(()) => 0,
        Err(_) => export(store, &exports.depth)
            .and_then(|e| e.into_global())
            .and_then(|g| g.get(&mut *store).i32())
            .unwrap_or(0),
    };
    (used, outcome.map_err(|e| classify(&e, left, depth)))
}

fn classify(error: &wasmtime::Error, left: i64, depth: i32) -> CallFailure {
    if let Some(failure) = error.downcast_ref::<CallFailure>() {
        return failure.clone();
    }
    if left == OUT_OF_GAS {
        return CallFailure::OutOfGas;
    }
    if depth == STACK_OVERFLOW {
        return CallFailure::StackOverflow;
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => CallFailure::Trap(trap_name(*trap).into()),
        None => CallFailure::Trap("the call could not run".into()),
    }
}

/// A stable name for a trap, independent of how the engine words it.
fn trap_name(trap: wasmtime::Trap) -> &'static str {
    use wasmtime::Trap as T;
    match trap {
        T::UnreachableCodeReached => "unreachable executed",
        T::MemoryOutOfBounds | T::HeapMisaligned => "memory access out of bounds",
        T::TableOutOfBounds => "table access out of bounds",
        T::IndirectCallToNull => "indirect call to null",
        T::BadSignature => "indirect call signature mismatch",
        T::IntegerOverflow => "integer overflow",
        T::IntegerDivisionByZero => "integer division by zero",
        T::BadConversionToInteger => "invalid conversion to integer",
        T::StackOverflow => "native stack exhausted",
        _ => "trap",
    }
}

fn val(t: wasmparser::ValType) -> Option<ValType> {
    match t {
        wasmparser::ValType::I32 => Some(ValType::I32),
        wasmparser::ValType::I64 => Some(ValType::I64),
        _ => None,
    }
}

/// Imports must be host functions with their exact signatures; memory bounded and exported.
fn check_imports_and_memory(code: &[u8]) -> Result<(), DeployError> {
    use wasmparser::{Parser, Payload, TypeRef};
    let invalid = |e: wasmparser::BinaryReaderError| DeployError::Invalid(e.to_string());
    let mut types = Vec::new();
    let mut memory_exported = false;
    for payload in Parser::new(0).parse_all(code) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    types.push(ty.map_err(invalid)?);
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    let refused = || DeployError::Import {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                    };
                    let TypeRef::Func(index) = import.ty else {
                        return Err(refused());
                    };
                    let f = host_function(import.name).filter(|_| import.module == HOST_MODULE);
                    let f = f.ok_or_else(refused)?;
                    let ty = types.get(index as usize).ok_or_else(refused)?;
                    let params: Option<Vec<_>> = ty.params().iter().map(|t| val(*t)).collect();
                    let results: Option<Vec<_>> = ty.results().iter().map(|t| val(*t)).collect();
                    if params.as_deref() != Some(f.params) || results.as_deref() != Some(f.results)
                    {
                        return Err(refused());
                    }
                    if !crate::host::AVAILABLE.contains(&f.name) {
                        return Err(DeployError::Unavailable(f.name.into()));
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    if memory.initial > MAX_MEMORY_PAGES
                        || memory.maximum.is_some_and(|m| m > MAX_MEMORY_PAGES)
                    {
                        return Err(DeployError::Memory(format!(
                            "declares more than {MAX_MEMORY_PAGES} pages"
                        )));
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    memory_exported |= export.name == MEMORY_EXPORT
                        && export.kind == wasmparser::ExternalKind::Memory;
                }
            }
            _ => {}
        }
    }
    if !memory_exported {
        return Err(DeployError::Memory("not exported as `memory`".into()));
    }
    Ok(())
}

/// The calling instance's memory.
pub(crate) fn memory(caller: &mut Caller<'_, Host>) -> Result<wasmtime::Memory, CallFailure> {
    caller
        .data()
        .memory
        .ok_or_else(|| CallFailure::Limit("no exported memory".into()))
}
