use super::*;
use peregrine_types::{Payload, SecretKey, Transaction, TxStatus};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SINK: Address = Address([0xfe; 20]);

fn vm() -> peregrine_vm::Vm {
    peregrine_vm::Vm::new().expect("vm")
}

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

fn transfer(
    from: u8,
    nonce: u64,
    fee: u64,
    to: Address,
    amount: u128,
) -> peregrine_types::SignedTransaction {
    let key = key(from);
    Transaction {
        chain_id: 1,
        sender: key.public_key(),
        nonce,
        fee,
        payload: Payload::Transfer { to, amount },
        access: vec![],
    }
    .sign(&key)
}

fn setup(balances: &[u128]) -> (tempfile::TempDir, Db, RevisionId) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let accounts: Vec<GenesisAccount> = balances
        .iter()
        .enumerate()
        .map(|(i, &balance)| GenesisAccount {
            address: key(i as u8).public_key().address(),
            balance,
        })
        .collect();
    let root = apply_genesis(&db, &accounts).expect("genesis");
    (dir, db, root)
}

fn block(height: u64, txs: Vec<peregrine_types::SignedTransaction>) -> Block {
    Block::new(
        height,
        Hash::default(),
        height,
        key(0).public_key(),
        Hash::default(),
        txs,
    )
}

fn account(db: &Db, rev: RevisionId, i: u8) -> Account {
    let snapshot = db.snapshot(rev).expect("snapshot");
    read_account(|k| snapshot.get(k), &key(i).public_key().address()).expect("account")
}

#[test]
fn every_outcome_has_its_receipt_and_effect() {
    let (_dir, db, root) = setup(&[100, 0, 5]);
    let a1 = key(1).public_key().address();
    let txs = vec![
        transfer(0, 0, 2, a1, 10),                           // success
        transfer(0, 0, 2, a1, 10),                           // replayed nonce
        transfer(0, 5, 2, a1, 10),                           // nonce gap
        transfer(0, 1, 2, a1, 1_000),                        // fee paid, amount not covered
        transfer(1, 0, 11, a1, 0),                           // fee not payable (balance 10)
        transfer(2, 0, 1, key(2).public_key().address(), 4), // self-transfer
        {
            let k = key(0);
            Transaction {
                chain_id: 1,
                sender: k.public_key(),
                nonce: 2,
                fee: 1,
                payload: Payload::Deploy { code: vec![0] },
                access: vec![],
            }
            .sign(&k)
        },
    ];
    let out = SerialExecutor::new(SINK, vm())
        .execute(&db, root, &block(1, txs))
        .expect("execute");
    let statuses: Vec<TxStatus> = out.receipts.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![
            TxStatus::Success,
            TxStatus::SkippedBadNonce { expected: 1 },
            TxStatus::SkippedBadNonce { expected: 1 },
            TxStatus::FailedInsufficientBalance,
            TxStatus::SkippedFeeUnpayable,
            TxStatus::Success,
            TxStatus::FailedContract(peregrine_types::Failure::OutOfGas),
        ]
    );
    assert_eq!(
        account(&db, out.revision, 0),
        Account {
            balance: 100 - 2 - 10 - 2 - 1,
            nonce: 3
        }
    );
    assert_eq!(
        account(&db, out.revision, 1),
        Account {
            balance: 10,
            nonce: 0
        }
    );
    assert_eq!(
        account(&db, out.revision, 2),
        Account {
            balance: 4,
            nonce: 1
        }
    );
    assert_eq!(out.receipts[1].fee_paid, 0);
    let gas: Vec<u64> = out.receipts.iter().map(|r| r.gas_used).collect();
    // The deployment's fee of 1 buys 1,000 gas, less than deploying costs: all of it is used.
    let transfer = peregrine_vm::GAS_NATIVE_TRANSFER;
    assert_eq!(gas, vec![transfer, 0, 0, transfer, 0, transfer, 1_000]);
    assert_eq!(
        total_supply(&db.snapshot(out.revision).expect("snapshot")),
        105
    );
}

#[test]
fn random_blocks_conserve_supply_and_are_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let balances = [1_000u128, 500, 0, 77, 1];
    let (_d1, db1, mut rev1) = setup(&balances);
    let (_d2, db2, mut rev2) = setup(&balances);
    let mut nonces = [0u64; 5];
    for height in 1..30 {
        let txs: Vec<_> = (0..rng.gen_range(0..40))
            .map(|_| {
                let from = rng.gen_range(0..5u8);
                let nonce = if rng.gen_bool(0.8) {
                    nonces[from as usize]
                } else {
                    rng.gen_range(0..5)
                };
                nonces[from as usize] = nonces[from as usize].max(nonce + 1);
                transfer(
                    from,
                    nonce,
                    rng.gen_range(0..5),
                    key(rng.gen_range(0..6)).public_key().address(),
                    rng.gen_range(0..300),
                )
            })
            .collect();
        let b = block(height, txs);
        let o1 = SerialExecutor::new(SINK, vm())
            .execute(&db1, rev1, &b)
            .expect("execute");
        let o2 = SerialExecutor::new(SINK, vm())
            .execute(&db2, rev2, &b)
            .expect("execute");
        assert_eq!(o1.state_root, o2.state_root);
        assert_eq!(o1.receipts, o2.receipts);
        assert_eq!(
            total_supply(&db1.snapshot(o1.revision).expect("snapshot")),
            1_578
        );
        rev1 = o1.revision;
        rev2 = o2.revision;
        // The local nonce guesses may drift from the chain; resync them to stay mostly valid.
        for i in 0..5u8 {
            nonces[i as usize] = account(&db1, rev1, i).nonce;
        }
    }
}

#[test]
fn genesis_supply_overflow_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let accounts = [
        GenesisAccount {
            address: Address([1; 20]),
            balance: u128::MAX,
        },
        GenesisAccount {
            address: Address([2; 20]),
            balance: 1,
        },
    ];
    assert!(matches!(
        apply_genesis(&db, &accounts),
        Err(ExecError::SupplyOverflow)
    ));
}

/// Executes `b` serially and on a two-thread parallel executor, each on its own genesis of
/// `balances`; returns both outputs and the parallel side's database.
fn serial_and_parallel(
    balances: &[u128],
    b: &Block,
) -> (BlockOutput, BlockOutput, (tempfile::TempDir, Db)) {
    let (_d1, db1, rev1) = setup(balances);
    let (d2, db2, rev2) = setup(balances);
    let serial = SerialExecutor::new(SINK, vm())
        .execute(&db1, rev1, b)
        .expect("serial");
    let parallel = ParallelExecutor::new(SINK, 2, vm())
        .expect("pool")
        .execute(&db2, rev2, b)
        .expect("parallel");
    (serial, parallel, (d2, db2))
}

/// A block where one sender has nearly every transaction, or with fewer senders than a level
/// needs to run on the pool, takes the parallel executor's serial path; a block with many
/// senders takes the levels. All must match the serial executor.
#[test]
fn chain_shaped_and_spread_blocks_match_serial_in_parallel() {
    let balances = [1_000_000u128; 100];
    let cases = [
        ("one sender", 1u8, true),
        ("ten senders", 10, true),
        ("100 senders", 100, false),
    ];
    for (name, senders, in_order) in cases {
        let mut nonces = [0u64; 100];
        let txs: Vec<_> = (0..200u64)
            .map(|i| {
                let from = (i % u64::from(senders)) as u8;
                let nonce = nonces[from as usize];
                nonces[from as usize] += 1;
                // Recipients are distinct and send nothing, so with 100 senders the block is two
                // levels of 100, which run on the pool.
                let mut to = [7u8; 20];
                to[..8].copy_from_slice(&i.to_le_bytes());
                transfer(from, nonce, 1, Address(to), 3)
            })
            .collect();
        let b = block(1, txs);
        assert_eq!(parallel::runs_in_order(&b), in_order, "{name}");
        let (serial, parallel, _) = serial_and_parallel(&balances, &b);
        assert_eq!(serial.state_root, parallel.state_root, "{name}");
        assert_eq!(serial.receipts, parallel.receipts, "{name}");
    }
}

/// A self-transfer writes its account twice in one transaction. Alone in its level and touched
/// by no later level, it is merged as an account written once: the second write must be the one
/// committed. A later level that re-reads an account it wrote must see that write too.
#[test]
fn self_transfers_and_rewritten_accounts_match_serial_in_parallel() {
    let balances = [1_000u128, 1_000, 1_000, 1_000];
    let a = |i: u8| key(i).public_key().address();
    let txs = vec![
        transfer(0, 0, 2, a(0), 100), // self-transfer, level 0, never touched again
        transfer(1, 0, 1, a(2), 10),  // level 0
        transfer(2, 0, 1, a(3), 5),   // reads what the previous one wrote: level 1
        transfer(1, 1, 1, a(1), 7),   // another self-transfer of a rewritten account: level 1
    ];
    let (serial, parallel, (_dir, db2)) = serial_and_parallel(&balances, &block(1, txs));
    assert_eq!(serial.receipts, parallel.receipts);
    assert_eq!(serial.state_root, parallel.state_root);
    assert_eq!(account(&db2, parallel.revision, 0).balance, 998);
    assert_eq!(account(&db2, parallel.revision, 0).nonce, 1);
    assert_eq!(account(&db2, parallel.revision, 1).nonce, 2);
}
