use super::*;
use peregrine_state::Db;
use peregrine_types::{Account, Address, Encode, Payload, SecretKey, Transaction};

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

fn tx(from: u8, nonce: u64, fee: u64, amount: u128) -> SignedTransaction {
    let k = key(from);
    Transaction {
        chain_id: 9,
        sender: k.public_key(),
        nonce,
        fee,
        payload: Payload::Transfer {
            to: Address([7; 20]),
            amount,
        },
        access: vec![],
    }
    .sign(&k)
}

/// A state where sender `i` has `balances[i]` and nonce `nonces[i]`.
fn state(balances: &[u128], nonces: &[u64]) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    for (i, (&balance, &nonce)) in balances.iter().zip(nonces).enumerate() {
        let address = key(i as u8).public_key().address();
        ws.put(
            peregrine_types::keys::account(&address),
            Account { balance, nonce }.encode(),
        )
        .expect("put");
    }
    let rev = db.commit(ws).expect("commit");
    (dir, db.snapshot(rev).expect("snapshot"))
}

fn pool() -> Mempool {
    Mempool::new(MempoolConfig {
        max_txs: 8,
        max_per_sender: 4,
        ..MempoolConfig::new(9)
    })
}

#[test]
fn bad_input_gets_typed_rejections_and_leaves_the_pool_alone() {
    let (_d, snap) = state(&[100, 0], &[3, 0]);
    let pool = pool();
    let mut bad_sig = tx(0, 3, 1, 1).encode();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(
        pool.submit_bytes(&bad_sig, &snap),
        Err(Rejection::BadSignature)
    );
    assert!(matches!(
        pool.submit_bytes(&[1, 2, 3], &snap),
        Err(Rejection::Malformed(_))
    ));
    let k = key(0);
    let other_chain = Transaction {
        chain_id: 8,
        sender: k.public_key(),
        nonce: 3,
        fee: 1,
        payload: Payload::Deploy { code: vec![] },
        access: vec![],
    }
    .sign(&k);
    assert_eq!(
        pool.submit(other_chain, &snap),
        Err(Rejection::WrongChain {
            expected: 9,
            got: 8
        })
    );
    assert_eq!(
        pool.submit(tx(0, 3, 0, 1), &snap),
        Err(Rejection::FeeTooLow { min: 1, got: 0 })
    );
    assert_eq!(
        pool.submit(tx(0, 2, 1, 1), &snap),
        Err(Rejection::NonceTooLow {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        pool.submit(tx(0, 5, 1, 1), &snap),
        Err(Rejection::NonceGap {
            expected: 3,
            got: 5
        })
    );
    assert_eq!(
        pool.submit(tx(0, 3, 1, 100), &snap),
        Err(Rejection::InsufficientBalance {
            needed: 101,
            available: 100
        })
    );
    assert_eq!(
        pool.submit(tx(1, 0, 1, 0), &snap),
        Err(Rejection::InsufficientBalance {
            needed: 1,
            available: 0
        })
    );
    assert!(pool.is_empty());
    assert_eq!(pool.stats().admitted(), 0);
    assert_eq!(pool.stats().rejected().values().sum::<u64>(), 8);
}

#[test]
fn next_nonce_counts_pending_transactions() {
    let (_d, snap) = state(&[1_000], &[4]);
    let pool = pool();
    let me = key(0).public_key().address();
    assert_eq!(pool.next_nonce(&me, 4), 4);
    pool.submit(tx(0, 4, 1, 1), &snap).expect("first");
    pool.submit(tx(0, 5, 1, 1), &snap).expect("second");
    assert_eq!(pool.next_nonce(&me, 4), 6);
    // A state that already moved past the pending ones wins.
    assert_eq!(pool.next_nonce(&me, 9), 9);
}

#[test]
fn pending_costs_accumulate_and_duplicates_are_refused() {
    let (_d, snap) = state(&[30], &[0]);
    let pool = pool();
    pool.submit(tx(0, 0, 5, 5), &snap).expect("first");
    assert_eq!(
        pool.submit(tx(0, 0, 5, 5), &snap),
        Err(Rejection::Duplicate)
    );
    pool.submit(tx(0, 1, 5, 5), &snap).expect("second");
    assert_eq!(
        pool.submit(tx(0, 2, 5, 6), &snap),
        Err(Rejection::InsufficientBalance {
            needed: 31,
            available: 30
        })
    );
}

#[test]
fn replacement_needs_a_fee_bump_and_not_yet_proposed() {
    let (_d, snap) = state(&[1_000], &[0]);
    let pool = pool();
    pool.submit(tx(0, 0, 100, 1), &snap).expect("original");
    assert_eq!(
        pool.submit(tx(0, 0, 109, 1), &snap),
        Err(Rejection::ReplacementUnderpriced { min: 110, got: 109 })
    );
    let replacement = pool.submit(tx(0, 0, 110, 1), &snap).expect("replacement");
    assert_eq!(pool.len(), 1);
    assert!(pool.contains(&replacement));
    assert_eq!(pool.select(1, 10, 1 << 20).len(), 1);
    assert_eq!(
        pool.submit(tx(0, 0, 500, 1), &snap),
        Err(Rejection::NonceInFlight { nonce: 0 })
    );
}

#[test]
fn caps_bound_the_pool() {
    let (_d, snap) = state(&[1_000, 1_000, 1_000], &[0, 0, 0]);
    let pool = pool();
    for n in 0..4 {
        pool.submit(tx(0, n, 1, 1), &snap)
            .expect("within sender cap");
    }
    assert_eq!(
        pool.submit(tx(0, 4, 1, 1), &snap),
        Err(Rejection::SenderFull { cap: 4 })
    );
    for n in 0..4 {
        pool.submit(tx(1, n, 1, 1), &snap).expect("within pool cap");
    }
    assert_eq!(pool.submit(tx(2, 0, 1, 1), &snap), Err(Rejection::PoolFull));
}

#[test]
fn selection_is_fee_ordered_and_nonce_consecutive() {
    let (_d, snap) = state(&[1_000, 1_000], &[0, 0]);
    let pool = pool();
    pool.submit(tx(0, 0, 1, 1), &snap).expect("a0");
    pool.submit(tx(0, 1, 50, 1), &snap).expect("a1");
    pool.submit(tx(1, 0, 10, 1), &snap).expect("b0");
    let picked: Vec<(u8, u64)> = pool
        .select(1, 10, 1 << 20)
        .iter()
        .map(|t| {
            (
                if t.tx().sender == key(0).public_key() {
                    0
                } else {
                    1
                },
                t.tx().nonce,
            )
        })
        .collect();
    // b0 (fee 10) beats a0 (fee 1); a1 (fee 50) can only follow a0.
    assert_eq!(picked, vec![(1, 0), (0, 0), (0, 1)]);
    assert!(
        pool.select(2, 10, 1 << 20).is_empty(),
        "proposed transactions are not offered twice"
    );
}

#[test]
fn execution_removes_included_and_releases_lost_proposals() {
    let (_d, snap) = state(&[1_000, 1_000], &[0, 0]);
    let pool = pool();
    let a0 = pool.submit(tx(0, 0, 1, 1), &snap).expect("a0");
    pool.submit(tx(1, 0, 1, 1), &snap).expect("b0");
    assert_eq!(pool.select(1, 10, 1 << 20).len(), 2);
    // Block 1 as finalized included only a0 (the proposal holding b0 was lost).
    let (_d2, after) = state(&[998, 1_000], &[1, 0]);
    pool.on_executed(1, &[a0], &after);
    assert_eq!(pool.len(), 1);
    let again = pool.select(2, 10, 1 << 20);
    assert_eq!(
        again.len(),
        1,
        "b0 returns to the pool after its proposal was lost"
    );
    assert_eq!(again[0].tx().sender, key(1).public_key());
}
