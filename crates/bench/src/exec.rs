//! `peregrine bench exec`: block execution throughput, serial against parallel, by contention.
//!
//! Each scenario builds one block of pre-signed transactions on a genesis of `accounts` funded
//! accounts, then executes it `repeats` times with each engine (engines interleaved within each
//! repeat), every time from the same genesis revision (a fork per run), timing `execute` end to
//! end: scheduling, running, merging and the state commit (which computes the new state
//! commitment). All engines must produce the same state root, or the run fails.
//!
//! Scenarios: native transfers at low contention (each from its own sender to a uniformly random
//! account), high contention (ten hot accounts) and full contention (one sender); and token
//! contract transfers, each from its own holder to a random account and declaring the two
//! balance keys, through the native fast path (`token-native`) and through WASM alone
//! (`token-wasm`). The two token scenarios must end in the same state root.

use crate::report::{median, percentile, Report};
use crate::{load_key, mix, vm_error, BenchError};
use peregrine_execution::{
    apply_genesis, BlockExecutor, GenesisAccount, ParallelExecutor, SerialExecutor,
};
use peregrine_state::{Db, RevisionId};
use peregrine_types::{
    AccessEntry, AccessMode, Address, Block, Hash, Payload, PublicKey, SecretKey,
    SignedTransaction, Transaction,
};
use std::time::Instant;

const FEE_SINK: Address = Address([0xfe; 20]);
const CHAIN_ID: u64 = 1;

/// Options of the execution benchmark.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Funded accounts in the genesis (recipients are drawn uniformly from them).
    pub accounts: u32,
    /// Transactions per block.
    pub block_txs: u32,
    /// Timed executions per engine and scenario.
    pub repeats: u32,
    /// Thread counts of the parallel engine to measure.
    pub threads: Vec<usize>,
    /// Scenarios to run by name; empty: all of [`SCENARIOS`].
    pub scenarios: Vec<String>,
}

/// Every scenario, in the order they run.
pub const SCENARIOS: [&str; 5] = [
    "low-contention",
    "high-contention",
    "full-contention",
    "token-native",
    "token-wasm",
];

/// A recipient address for account index `i` (only senders need keys).
fn account(i: u32) -> Address {
    let mut bytes = [0u8; 20];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes[4..8].copy_from_slice(b"acct");
    Address(bytes)
}

fn transfer(key: &SecretKey, nonce: u64, to: Address) -> SignedTransaction {
    let payload = Payload::Transfer { to, amount: 1 };
    Transaction {
        chain_id: CHAIN_ID,
        sender: key.public_key(),
        nonce,
        fee: 1,
        payload,
        access: vec![],
    }
    .sign(key)
}

/// The scenarios: name, senders, and how recipients are chosen.
fn scenario_txs(
    name: &str,
    options: &ExecOptions,
    senders: &[SecretKey],
) -> Vec<SignedTransaction> {
    let n = options.block_txs as usize;
    match name {
        // Every transaction from its own sender to a uniformly random account.
        "low-contention" => (0..n)
            .map(|i| {
                transfer(
                    &senders[i],
                    0,
                    account((mix(i as u64) % u64::from(options.accounts)) as u32),
                )
            })
            .collect(),
        // Ten hot accounts send to each other.
        "high-contention" => (0..n)
            .map(|i| {
                let to = senders[(mix(i as u64) % 10) as usize]
                    .public_key()
                    .address();
                transfer(&senders[i % 10], (i / 10) as u64, to)
            })
            .collect(),
        "token-native" | "token-wasm" => (0..n)
            .map(|i| {
                let to = account((mix(i as u64) % u64::from(options.accounts)) as u32);
                token_transfer(&senders[i], to)
            })
            .collect(),
        // One account sends everything.
        _ => (0..n as u64)
            .map(|nonce| transfer(&senders[0], nonce, account(nonce as u32)))
            .collect(),
    }
}

/// Where the genesis places the token contract.
const TOKEN: Address = Address([0x70; 20]);
/// The fee of a token transfer: a budget of 50,000 gas.
const TOKEN_FEE: u64 = 50;

fn balance_key(owner: &Address) -> Vec<u8> {
    [&b"b"[..], &owner.0].concat()
}

/// A token transfer of 1 from `key`'s holder to `to`, declaring both balances.
fn token_transfer(key: &SecretKey, to: Address) -> SignedTransaction {
    let from = key.public_key().address();
    let entry = |owner: &Address| AccessEntry {
        address: TOKEN,
        prefix: balance_key(owner),
        mode: AccessMode::Write,
    };
    let payload = Payload::Call {
        contract: TOKEN,
        method: b"transfer".to_vec(),
        args: peregrine_sdk::codec::ArgsBuilder::new()
            .address(&to.0)
            .u128(1)
            .build(),
    };
    Transaction {
        chain_id: CHAIN_ID,
        sender: key.public_key(),
        nonce: 0,
        fee: TOKEN_FEE,
        payload,
        access: vec![entry(&from), entry(&to)],
    }
    .sign(key)
}

/// Deploys the committed token at [`TOKEN`] with a balance for every sender.
fn with_token(
    db: &Db,
    parent: RevisionId,
    senders: &[SecretKey],
) -> Result<RevisionId, BenchError> {
    use peregrine_types::keys;
    let code = peregrine_execution::contracts::TOKEN_CODE;
    let hash = *blake3::hash(code).as_bytes();
    let mut ws = db.begin(parent)?;
    ws.put(keys::code(&hash), code.to_vec())?;
    ws.put(keys::contract(&TOKEN), hash.to_vec())?;
    let mut balances: Vec<(Vec<u8>, Vec<u8>)> = senders
        .iter()
        .map(|k| {
            let key = keys::storage(&TOKEN, &balance_key(&k.public_key().address()));
            (key, 1_000_000u128.to_le_bytes().to_vec())
        })
        .collect();
    balances.sort();
    for (key, value) in balances {
        ws.put(key, value)?;
    }
    Ok(db.commit(ws)?)
}

fn genesis(
    db: &Db,
    options: &ExecOptions,
    senders: &[SecretKey],
) -> Result<RevisionId, BenchError> {
    let funded = senders
        .iter()
        .map(|k| k.public_key().address())
        .chain((0..options.accounts).map(account));
    let allocation: Vec<GenesisAccount> = funded
        .map(|address| GenesisAccount {
            address,
            balance: 1_000_000_000,
        })
        .collect();
    let root = apply_genesis(db, &allocation)?;
    with_token(db, root, senders)
}

/// Engines under test, by name.
type Engines = Vec<(String, Box<dyn BlockExecutor>)>;

/// The engines, running contracts on `vm`.
fn engines(options: &ExecOptions, vm: &peregrine_vm::Vm) -> Result<Engines, BenchError> {
    let serial = SerialExecutor::new(FEE_SINK, vm.clone());
    let mut engines: Engines = vec![("serial".into(), Box::new(serial))];
    for &threads in &options.threads {
        engines.push((
            format!("parallel-{threads}"),
            Box::new(ParallelExecutor::new(FEE_SINK, threads, vm.clone())?),
        ));
    }
    Ok(engines)
}

/// Executes `block` on `parent` `repeats` times with every engine, interleaving engines within
/// each repeat so that a noisy moment on a shared machine hits all of them alike. Returns each
/// engine's per-run tx/s and the state root, and fails if any engine's state root differs from
/// the first engine's.
fn measure(
    db: &Db,
    parent: RevisionId,
    block: &Block,
    engines: &Engines,
    repeats: u32,
    scenario: &str,
) -> Result<(Vec<Vec<f64>>, Option<Hash>), BenchError> {
    let mut rates = vec![Vec::new(); engines.len()];
    let mut reference = None;
    for _ in 0..repeats {
        for (i, (name, engine)) in engines.iter().enumerate() {
            db.settle()?;
            let started = Instant::now();
            let out = engine.execute(db, parent, block)?;
            rates[i].push(block.txs.len() as f64 / started.elapsed().as_secs_f64());
            // A node keeps one post-block state per block: free this one, as a node would
            // once its fork is settled, rather than let every run's state pile up.
            db.discard(out.revision)?;
            if *reference.get_or_insert(out.state_root) != out.state_root {
                return Err(BenchError::Divergence {
                    scenario: scenario.into(),
                    engine: name.clone(),
                });
            }
        }
    }
    Ok((rates, reference))
}

/// Fails unless every transaction of `block` succeeds: a benchmark of failures measures nothing.
fn all_succeed(
    db: &Db,
    parent: RevisionId,
    block: &Block,
    engines: &Engines,
    scenario: &str,
) -> Result<(), BenchError> {
    let Some((_, engine)) = engines.first() else {
        return Ok(());
    };
    let out = engine.execute(db, parent, block)?;
    db.discard(out.revision)?;
    match out.receipts.iter().find(|r| !r.status.is_success()) {
        Some(receipt) => Err(BenchError::Load(format!(
            "{scenario}: transaction {} ended {} ({})",
            receipt.index,
            receipt.status.name(),
            String::from_utf8_lossy(&receipt.output)
        ))),
        None => Ok(()),
    }
}

/// Runs every scenario with every engine and returns the figures.
pub fn run(
    options: &ExecOptions,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let mut report = Report::new(command);
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    progress(&format!(
        "signing {} transfers and funding {} accounts",
        options.block_txs, options.accounts
    ));
    let senders: Vec<SecretKey> = (0..options.block_txs).map(load_key).collect();
    let parent = genesis(&db, options, &senders)?;
    let wasm_only = engines(options, &peregrine_vm::Vm::new().map_err(vm_error)?)?;
    let native = peregrine_execution::contracts::node_vm(Default::default()).map_err(vm_error)?;
    let with_native = engines(options, &native)?;
    let mut token_roots = Vec::new();
    if let Some(unknown) = options
        .scenarios
        .iter()
        .find(|s| !SCENARIOS.contains(&s.as_str()))
    {
        return Err(BenchError::Load(format!("unknown scenario {unknown}")));
    }
    let chosen =
        |s: &&str| options.scenarios.is_empty() || options.scenarios.iter().any(|c| c == s);
    for scenario in SCENARIOS.iter().copied().filter(chosen) {
        let engines = if scenario == "token-wasm" {
            &wasm_only
        } else {
            &with_native
        };
        let txs = scenario_txs(scenario, options, &senders);
        let block = Block::new(
            1,
            Hash::default(),
            1,
            PublicKey::default(),
            Hash::default(),
            txs,
        );
        all_succeed(&db, parent, &block, engines, scenario)?;
        let (rates, root) = measure(&db, parent, &block, engines, options.repeats, scenario)?;
        if scenario.starts_with("token") {
            token_roots.push(root);
        }
        for ((name, _), mut rates) in engines.iter().zip(rates) {
            let p50 = median(&mut rates);
            report.push("exec", scenario, name, "tx_per_s_median", p50, "tx/s");
            report.push(
                "exec",
                scenario,
                name,
                "tx_per_s_min",
                percentile(&mut rates, 0.0),
                "tx/s",
            );
            progress(&format!(
                "{scenario:>16} {name:>12} {p50:>12.0} tx/s (median of {})",
                options.repeats
            ));
        }
        add_speedups(&mut report, scenario, options);
    }
    if token_roots.windows(2).any(|w| w[0] != w[1]) {
        return Err(BenchError::Divergence {
            scenario: "token-wasm".into(),
            engine: "the native fast path".into(),
        });
    }
    Ok(report)
}

fn add_speedups(report: &mut Report, scenario: &str, options: &ExecOptions) {
    let metric = "tx_per_s_median";
    let serial = report.value(scenario, "serial", metric);
    let one = report.value(scenario, "parallel-1", metric);
    for &threads in &options.threads {
        let engine = format!("parallel-{threads}");
        let Some(rate) = report.value(scenario, &engine, metric) else {
            continue;
        };
        if let Some(serial) = serial {
            report.push(
                "exec",
                scenario,
                &engine,
                "speedup_vs_serial",
                rate / serial,
                "x",
            );
        }
        if let Some(one) = one {
            report.push(
                "exec",
                scenario,
                &engine,
                "speedup_vs_1_thread",
                rate / one,
                "x",
            );
        }
    }
}
