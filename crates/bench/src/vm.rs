//! `peregrine bench vm`: the token's `transfer` through three engines on the same state backend.
//!
//! 1. `compile-per-call`: validate, meter, compile and instantiate for every call (no cache);
//! 2. `cached`: the module compiled once (`Contract`, pre-linked), a fresh instance per call;
//! 3. `native`: the native fast path, identical outcomes by differential test.
//!
//! Every engine runs the same transfers between `accounts` funded accounts, reading and writing
//! through a `peregrine_state` write set (committed every 10,000 calls), and every call's outcome
//! is applied, so state access is part of the figure. Also measured: gas metering's cost on a
//! compute-heavy contract (metered against unmetered), and the latency of a call that only
//! instantiates (a missing method) and of a read-only `balance_of` (three host calls).

use crate::report::{median, percentile, Report};
use crate::{vm_error, BenchError};
use parking_lot::Mutex;
use peregrine_sdk::codec::ArgsBuilder;
use peregrine_state::{Db, RevisionId, WriteSet};
use peregrine_vm::native::{NativeContract, NativeToken};
use peregrine_vm::wasm::{CallContext, Contract, Outcome, StorageView, Vm, World};
use std::sync::Arc;
use std::time::Instant;

/// Calls per committed write set.
const COMMIT_EVERY: u32 = 10_000;
/// Gas limit of every call.
const GAS_LIMIT: u64 = 10_000_000;

/// Options of the VM benchmark.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Funded token holders.
    pub accounts: u32,
    /// Transfers per engine (compile-per-call runs a fiftieth of them).
    pub calls: u32,
    /// Rounds of the compute contract's loop.
    pub compute_rounds: u64,
    /// Timed runs of the compute contract per configuration.
    pub repeats: u32,
}

fn contract_code(name: &str) -> Result<Vec<u8>, BenchError> {
    let path = format!(
        "{}/../../contracts/{name}/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).map_err(|e| BenchError::Load(format!("{path}: {e}")))
}

/// The token's storage inside the state database, behind one write set shared with the calls.
#[derive(Clone)]
struct Live(Arc<Mutex<WriteSet>>);

/// The token's storage keys live under this prefix in the state.
fn state_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'c');
    k.extend_from_slice(key);
    k
}

impl StorageView for Live {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().get(&state_key(key)).map(|v| v.to_vec())
    }
}

/// One contract's storage: the benchmark's calls never leave the token.
impl World for Live {
    fn storage(&self, _contract: &[u8; 20], key: &[u8]) -> Option<Vec<u8>> {
        StorageView::get(self, key)
    }

    fn code_hash(&self, _contract: &[u8; 20]) -> Option<[u8; 32]> {
        None
    }

    fn code(&self, _code_hash: &[u8; 32]) -> Option<Vec<u8>> {
        None
    }
}

struct Backend {
    db: Db,
    _dir: tempfile::TempDir,
    live: Live,
    genesis: RevisionId,
}

fn holder(i: u32) -> [u8; 20] {
    let mut a = [0u8; 20];
    a[..4].copy_from_slice(&i.to_le_bytes());
    a
}

impl Backend {
    fn new(accounts: u32) -> Result<Self, BenchError> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let mut ws = db.begin(db.finalized())?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..accounts)
            .map(|i| {
                let mut key = vec![b'b'];
                key.extend_from_slice(&holder(i));
                (state_key(&key), 1_000_000_000u128.to_le_bytes().to_vec())
            })
            .collect();
        pairs.sort();
        ws.put_sorted(pairs)?;
        let genesis = db.commit(ws)?;
        let live = Live(Arc::new(Mutex::new(db.begin(genesis)?)));
        Ok(Self {
            db,
            _dir: dir,
            live,
            genesis,
        })
    }

    /// Starts over from the funded genesis, so every engine sees the same state.
    fn reset(&mut self) -> Result<(), BenchError> {
        *self.live.0.lock() = self.db.begin(self.genesis)?;
        Ok(())
    }

    fn apply(&self, outcome: &Outcome) -> Result<(), BenchError> {
        if outcome.result.is_err() {
            return Err(BenchError::Load(format!(
                "transfer failed: {:?}",
                outcome.result
            )));
        }
        let mut ws = self.live.0.lock();
        for (key, value) in outcome.writes.values().flatten() {
            match value {
                Some(v) => ws.put(state_key(key), v.clone())?,
                None => ws.delete(state_key(key))?,
            }
        }
        Ok(())
    }

    fn commit(&self) -> Result<(), BenchError> {
        let mut ws = self.live.0.lock();
        let parent = ws.parent();
        let done = std::mem::replace(&mut *ws, self.db.begin(parent)?);
        let revision = self.db.commit(done)?;
        *ws = self.db.begin(revision)?;
        Ok(())
    }
}

fn transfer_ctx(i: u32, accounts: u32) -> CallContext {
    let from = i % accounts;
    let to = (i.wrapping_mul(7).wrapping_add(3)) % accounts;
    CallContext {
        caller: holder(from),
        contract: [0xcc; 20],
        height: 1,
        time_ms: 0,
        args: ArgsBuilder::new().address(&holder(to)).u128(1).build(),
        gas_limit: GAS_LIMIT,
    }
}

enum Engine<'a> {
    CompilePerCall(&'a Vm, &'a [u8]),
    Cached(&'a Vm, &'a Contract),
    Native(&'a NativeToken),
}

impl Engine<'_> {
    fn transfer(&self, ctx: CallContext, live: &Live) -> Result<Outcome, BenchError> {
        match self {
            Engine::CompilePerCall(vm, code) => {
                let contract = vm.deploy(code).map_err(vm_error)?;
                Ok(vm.call_compiled(&contract, "transfer", ctx, Arc::new(live.clone())))
            }
            Engine::Cached(vm, contract) => {
                Ok(vm.call_compiled(contract, "transfer", ctx, Arc::new(live.clone())))
            }
            Engine::Native(native) => native
                .call("transfer", &ctx, live)
                .ok_or_else(|| BenchError::Load("the native path bailed out".into())),
        }
    }
}

/// Runs `calls` transfers; returns each call's microseconds (state access included).
fn run_transfers(
    engine: &Engine<'_>,
    backend: &mut Backend,
    calls: u32,
    accounts: u32,
) -> Result<(Vec<f64>, f64), BenchError> {
    backend.reset()?;
    let mut samples = Vec::with_capacity(calls as usize);
    let started = Instant::now();
    for i in 0..calls {
        let t = Instant::now();
        let outcome = engine.transfer(transfer_ctx(i, accounts), &backend.live)?;
        backend.apply(&outcome)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        if (i + 1) % COMMIT_EVERY == 0 {
            backend.commit()?;
        }
    }
    let rate = f64::from(calls) / started.elapsed().as_secs_f64();
    Ok((samples, rate))
}

/// Median microseconds of `repeats` calls of `method` with `args`.
fn time_calls(
    vm: &Vm,
    contract: &Contract,
    method: &str,
    args: &[u8],
    live: &Live,
    repeats: u32,
) -> f64 {
    let mut samples: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let ctx = CallContext {
                caller: holder(0),
                contract: [0xcc; 20],
                height: 1,
                time_ms: 0,
                args: args.to_vec(),
                gas_limit: u64::MAX / 4,
            };
            let t = Instant::now();
            let _ = vm.call_compiled(contract, method, ctx, Arc::new(live.clone()));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(&mut samples)
}

/// Runs the benchmark and returns its figures.
pub fn run(
    options: &VmOptions,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let mut report = Report::new(command);
    let vm = Vm::new().map_err(vm_error)?;
    let token_code = contract_code("token")?;
    let token = vm.deploy(&token_code).map_err(vm_error)?;
    let native = NativeToken::calibrate(&vm, &token).map_err(vm_error)?;
    let mut backend = Backend::new(options.accounts)?;
    let engines = [
        (
            "compile-per-call",
            Engine::CompilePerCall(&vm, &token_code),
            (options.calls / 50).max(1),
        ),
        ("cached", Engine::Cached(&vm, &token), options.calls),
        ("native", Engine::Native(&native), options.calls),
    ];
    for (name, engine, calls) in &engines {
        let (mut samples, rate) = run_transfers(engine, &mut backend, *calls, options.accounts)?;
        let (p50, p99) = (
            percentile(&mut samples, 50.0),
            percentile(&mut samples, 99.0),
        );
        progress(&format!(
            "{name:>17}: {rate:>10.0} transfers/s, p50 {p50:.2} us, p99 {p99:.2} us"
        ));
        report.push(
            "vm",
            "token-transfer",
            name,
            "transfers_per_s",
            rate,
            "tx/s",
        );
        report.push("vm", "token-transfer", name, "call_p50_us", p50, "us");
        report.push("vm", "token-transfer", name, "call_p99_us", p99, "us");
    }
    metering_cost(&mut report, options, &vm, progress)?;
    let live = backend.live.clone();
    let query = ArgsBuilder::new().address(&holder(0)).build();
    let instantiate = time_calls(&vm, &token, "no_such_method", &[], &live, 2_000);
    let read = time_calls(&vm, &token, "balance_of", &query, &live, 2_000);
    progress(&format!(
        "instantiate-only call {instantiate:.2} us, balance_of {read:.2} us"
    ));
    report.push(
        "vm",
        "calls",
        "cached",
        "instantiate_only_p50_us",
        instantiate,
        "us",
    );
    report.push("vm", "calls", "cached", "balance_of_p50_us", read, "us");
    Ok(report)
}

fn metering_cost(
    report: &mut Report,
    options: &VmOptions,
    vm: &Vm,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let code = contract_code("compute")?;
    let metered = vm.deploy(&code).map_err(vm_error)?;
    let unmetered = vm.deploy_unmetered(&code).map_err(vm_error)?;
    let live = Backend::new(1)?.live;
    let args = ArgsBuilder::new().u64(options.compute_rounds).build();
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..options.repeats.max(1) {
        on.push(time_calls(vm, &metered, "mix", &args, &live, 1));
        off.push(time_calls(vm, &unmetered, "mix", &args, &live, 1));
    }
    let (on, off) = (median(&mut on), median(&mut off));
    let overhead = on / off - 1.0;
    progress(&format!(
        "compute: metered {on:.0} us, unmetered {off:.0} us, overhead {:.1}%",
        overhead * 100.0
    ));
    report.push("vm", "compute", "metered", "call_p50_us", on, "us");
    report.push("vm", "compute", "unmetered", "call_p50_us", off, "us");
    report.push(
        "vm",
        "compute",
        "metered",
        "metering_overhead",
        overhead,
        "fraction",
    );
    Ok(())
}
