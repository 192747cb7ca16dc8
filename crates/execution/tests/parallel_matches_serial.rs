//! Property: parallel execution at 1, 2 and 8 threads is bit-identical to serial execution, over
//! random blocks with conflict rates from none to everything-on-one-account.

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

const ACCOUNTS: u8 = 24;
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

fn random_payload(rng: &mut ChaCha8Rng, to: Address) -> Payload {
    match rng.gen_range(0..10) {
        0 => Payload::Call {
            contract: to,
            method: b"m".to_vec(),
            args: vec![],
        },
        1 => Payload::Deploy { code: vec![0; 4] },
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
    let access = random_access(rng, hot);
    let fee = rng.gen_range(0..6);
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
    (dir, db, root)
}

fn dump(db: &Db, rev: RevisionId) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let snapshot = db.snapshot(rev).expect("snapshot");
    snapshot
        .range::<std::ops::RangeFull>(..)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn executors() -> Vec<Box<dyn BlockExecutor>> {
    vec![
        Box::new(SerialExecutor::new(sink())),
        Box::new(ParallelExecutor::new(sink(), 1).expect("pool")),
        Box::new(ParallelExecutor::new(sink(), 2).expect("pool")),
        Box::new(ParallelExecutor::new(sink(), 8).expect("pool")),
    ]
}

fn check_case(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hot = [1, 2, 10, ACCOUNTS][rng.gen_range(0..4)];
    let executors = executors();
    let (_dir, db, root) = genesis();
    let mut heads = vec![root; executors.len()];
    let mut nonces = vec![0u64; ACCOUNTS as usize];
    for height in 1..=BLOCKS {
        // Sometimes large enough that levels really run on the pool.
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
        for (i, output) in outputs.iter().enumerate().skip(1) {
            let at = format!("seed {seed} height {height} executor {i}");
            assert_eq!(output.receipts, reference.receipts, "{at}");
            assert_eq!(output.state_root, reference.state_root, "{at}");
            assert_eq!(
                dump(&db, output.revision),
                dump(&db, reference.revision),
                "{at}"
            );
        }
        heads = outputs.iter().map(|o| o.revision).collect();
    }
}

#[test]
fn parallel_execution_is_bit_identical_to_serial() {
    let cases: u64 = std::env::var("PEREGRINE_EXEC_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    for seed in 0..cases {
        check_case(seed);
    }
}
