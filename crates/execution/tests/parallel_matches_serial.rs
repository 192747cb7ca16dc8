//! Property: parallel execution at 1, 2 and 8 threads is bit-identical to serial execution, over
//! random blocks with conflict rates from none to everything-on-one-account: native transfers,
//! token-contract calls (some running out of gas, some refused by the token, some to missing
//! methods or contracts; declaring nothing, exactly their keys, or too little), and deployments
//! of valid and invalid code.

use peregrine_execution::{
    apply_genesis, BlockExecutor, GenesisAccount, ParallelExecutor, SerialExecutor,
};
use peregrine_state::{Db, RevisionId};
use peregrine_types::{
    AccessEntry, AccessMode, Address, Block, Hash, Payload, PublicKey, SecretKey,
    SignedTransaction, Transaction,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const ACCOUNTS: u8 = 240;
const BLOCKS: u64 = 6;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

/// The fee sink is an ordinary keyed account here, so transactions can spend from it too.
fn sink() -> Address {
    key(0).public_key().address()
}

/// Picks an account among the `hot` first ones (1: one account; ACCOUNTS: uniform).
fn pick(rng: &mut ChaCha8Rng, hot: u8) -> u8 {
    rng.gen_range(0..hot)
}

/// Where the genesis of these tests places the token contract.
const TOKEN: Address = Address([0x70; 20]);

fn random_payload(rng: &mut ChaCha8Rng, to: Address) -> Payload {
    match rng.gen_range(0..10) {
        0..=2 => {
            let amount = rng.gen_range(0..1_500u128);
            let args = peregrine_sdk::codec::ArgsBuilder::new()
                .address(&to.0)
                .u128(amount)
                .build();
            let (contract, method) = match rng.gen_range(0..20) {
                0 => (to, "transfer"),
                1 => (TOKEN, "mint"),
                _ => (TOKEN, "transfer"),
            };
            Payload::Call {
                contract,
                method: method.as_bytes().to_vec(),
                args,
            }
        }
        3 if rng.gen_bool(0.5) => Payload::Deploy {
            code: peregrine_execution::contracts::TOKEN_CODE.to_vec(),
        },
        3 => Payload::Deploy { code: vec![0; 4] },
        _ => Payload::Transfer {
            to,
            amount: rng.gen_range(0..400),
        },
    }
}

fn random_access(rng: &mut ChaCha8Rng, hot: u8) -> Vec<AccessEntry> {
    (0..rng.gen_range(0..3))
        .map(|_| AccessEntry {
            address: key(pick(rng, hot)).public_key().address(),
            prefix: vec![],
            mode: if rng.gen_bool(0.5) {
                AccessMode::Read
            } else {
                AccessMode::Write
            },
        })
        .collect()
}

/// What a token transfer from `from` to `to` declares: nothing (it runs alone), exactly the two
/// balances (it runs beside transfers between other holders), or too little (it fails with an
/// undeclared access, in every executor alike).
fn token_access(rng: &mut ChaCha8Rng, from: Address, to: Address) -> Vec<AccessEntry> {
    let balance = |owner: Address, mode| AccessEntry {
        address: TOKEN,
        prefix: [&b"b"[..], &owner.0].concat(),
        mode,
    };
    match rng.gen_range(0..10) {
        0..=2 => vec![],
        3..=7 => vec![
            balance(from, AccessMode::Write),
            balance(to, AccessMode::Write),
        ],
        8 => vec![balance(from, AccessMode::Write)],
        _ => vec![
            balance(from, AccessMode::Write),
            balance(to, AccessMode::Read),
        ],
    }
}

/// Mostly valid transactions, some with stale or future nonces, some unaffordable.
fn random_tx(rng: &mut ChaCha8Rng, nonces: &mut [u64], hot: u8) -> SignedTransaction {
    let from = pick(rng, hot);
    let k = key(from);
    let nonce = if rng.gen_bool(0.9) {
        nonces[from as usize]
    } else {
        rng.gen_range(0..4)
    };
    nonces[from as usize] = nonces[from as usize].max(nonce + 1);
    let to = key(pick(rng, hot)).public_key().address();
    let payload = random_payload(rng, to);
    let access = match &payload {
        Payload::Call { contract, .. } if *contract == TOKEN => {
            token_access(rng, k.public_key().address(), to)
        }
        _ => random_access(rng, hot),
    };
    // Contract transactions buy gas with their fee: some too little, most enough.
    let fee = match payload {
        Payload::Transfer { .. } => rng.gen_range(0..6),
        _ => rng.gen_range(0..100),
    };
    Transaction {
        chain_id: 1,
        sender: k.public_key(),
        nonce,
        fee,
        payload,
        access,
    }
    .sign(&k)
}

fn genesis() -> (tempfile::TempDir, Db, RevisionId) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let accounts: Vec<GenesisAccount> = (0..ACCOUNTS)
        .map(|i| GenesisAccount {
            address: key(i).public_key().address(),
            balance: 1_000,
        })
        .collect();
    let root = apply_genesis(&db, &accounts).expect("genesis");
    let root = with_token(&db, root);
    (dir, db, root)
}

/// Places the token at [`TOKEN`], every account holding 1,000 of it.
fn with_token(db: &Db, root: RevisionId) -> RevisionId {
    use peregrine_types::keys;
    let code = peregrine_execution::contracts::TOKEN_CODE;
    let hash = *blake3::hash(code).as_bytes();
    let mut ws = db.begin(root).expect("begin");
    ws.put(keys::code(&hash), code.to_vec()).expect("code");
    ws.put(keys::contract(&TOKEN), hash.to_vec())
        .expect("record");
    for i in 0..ACCOUNTS {
        let mut key = vec![b'b'];
        key.extend_from_slice(&key_address(i).0);
        let value = 1_000u128.to_le_bytes().to_vec();
        ws.put(keys::storage(&TOKEN, &key), value).expect("balance");
    }
    db.commit(ws).expect("commit")
}

fn key_address(i: u8) -> Address {
    key(i).public_key().address()
}

/// The keys (hex) whose values differ between two states, for a readable failure.
fn differing_keys(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(hex::encode)
        .collect()
}

fn dump(db: &Db, rev: RevisionId) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let snapshot = db.snapshot(rev).expect("snapshot");
    snapshot
        .range::<std::ops::RangeFull>(..)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// Serial execution on the WASM path alone, against parallel execution with the native token.
fn executors() -> Vec<Box<dyn BlockExecutor>> {
    let wasm_only = peregrine_vm::Vm::new().expect("vm");
    let vm = peregrine_execution::contracts::node_vm(Default::default()).expect("vm");
    let parallel = |threads| ParallelExecutor::new(sink(), threads, vm.clone()).expect("pool");
    vec![
        Box::new(SerialExecutor::new(sink(), wasm_only)),
        Box::new(parallel(1)),
        Box::new(parallel(2)),
        Box::new(parallel(8)),
    ]
}

/// Runs one random chain; returns how many contract transactions succeeded.
fn check_case(seed: u64, executors: &[Box<dyn BlockExecutor>]) -> usize {
    let mut contract_receipts = 0;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hot = [1, 2, 10, ACCOUNTS][rng.gen_range(0..4)];
    let (_dir, db, root) = genesis();
    let mut heads = vec![root; executors.len()];
    let mut nonces = vec![0u64; ACCOUNTS as usize];
    for height in 1..=BLOCKS {
        // Sometimes large: with uniform senders such a block takes the levels, not the in-order
        // path (pool-sized levels are covered by the unit tests, as barriers keep these small).
        let len = if rng.gen_bool(0.3) {
            rng.gen_range(100..400)
        } else {
            rng.gen_range(0..40)
        };
        let txs = (0..len)
            .map(|_| random_tx(&mut rng, &mut nonces, hot))
            .collect();
        let block = Block::new(
            height,
            Hash::default(),
            height,
            PublicKey::default(),
            Hash::default(),
            txs,
        );
        let outputs: Vec<_> = executors
            .iter()
            .zip(&heads)
            .map(|(executor, head)| executor.execute(&db, *head, &block).expect("execute"))
            .collect();
        let reference = &outputs[0];
        contract_receipts += reference
            .receipts
            .iter()
            .zip(&block.txs)
            .filter(|(r, tx)| {
                r.status.is_success() && !matches!(tx.tx().payload, Payload::Transfer { .. })
            })
            .count();
        for (i, output) in outputs.iter().enumerate().skip(1) {
            let at = format!("seed {seed} height {height} executor {i}");
            assert_eq!(output.receipts, reference.receipts, "{at}");
            let (got, expected) = (dump(&db, output.revision), dump(&db, reference.revision));
            assert_eq!(
                differing_keys(&got, &expected),
                Vec::<String>::new(),
                "{at}"
            );
            assert_eq!(output.state_root, reference.state_root, "{at}");
        }
        heads = outputs.iter().map(|o| o.revision).collect();
    }
    contract_receipts
}

#[test]
fn parallel_execution_is_bit_identical_to_serial() {
    let cases: u64 = std::env::var("PEREGRINE_EXEC_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let executors = executors();
    let succeeded: usize = (0..cases).map(|seed| check_case(seed, &executors)).sum();
    assert!(succeeded > 0, "no contract transaction succeeded");
}
