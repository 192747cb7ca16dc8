use super::*;
use peregrine_state::Db;
use peregrine_types::{Account, Address, Encode, Payload, SecretKey, Transaction};
use rand::seq::SliceRandom;
use rand::SeedableRng;

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

fn config() -> MempoolConfig {
    MempoolConfig {
        max_txs: 8,
        max_per_sender: 4,
        max_nonce_ahead: 6,
        ..MempoolConfig::new(9)
    }
}

fn pool(snap: &Snapshot) -> Mempool {
    Mempool::new(config(), snap.clone())
}

fn sender_of(tx: &SignedTransaction) -> u8 {
    (0..=255u8)
        .find(|i| key(*i).public_key() == tx.tx().sender)
        .expect("a test key")
}

fn flip_last_byte(tx: &SignedTransaction) -> Vec<u8> {
    let mut bytes = tx.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes
}

#[test]
fn bad_input_gets_typed_rejections_and_leaves_the_pool_alone() {
    let (_d, snap) = state(&[100, 0], &[3, 0]);
    let pool = pool(&snap);
    let bad_sig = flip_last_byte(&tx(0, 3, 1, 1));
    assert_eq!(pool.submit_bytes(&bad_sig), Err(Rejection::BadSignature));
    assert!(matches!(
        pool.submit_bytes(&[1, 2, 3]),
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
        pool.submit(other_chain),
        Err(Rejection::WrongChain {
            expected: 9,
            got: 8
        })
    );
    let cases = [
        (tx(0, 3, 0, 1), Rejection::FeeTooLow { min: 1, got: 0 }),
        (
            tx(0, 2, 1, 1),
            Rejection::NonceTooLow {
                expected: 3,
                got: 2,
            },
        ),
        (tx(0, 9, 1, 1), Rejection::NonceTooFar { limit: 9, got: 9 }),
        (
            tx(0, 3, 1, 100),
            Rejection::InsufficientBalance {
                needed: 101,
                available: 100,
            },
        ),
        (
            tx(1, 0, 1, 0),
            Rejection::InsufficientBalance {
                needed: 1,
                available: 0,
            },
        ),
    ];
    for (tx, rejection) in cases {
        assert_eq!(pool.submit(tx), Err(rejection));
    }
    assert!(pool.is_empty());
    assert_eq!(pool.stats().admitted(), 0);
    assert_eq!(pool.stats().rejected().values().sum::<u64>(), 8);
    assert_eq!(pool.stats().rejected()["bad_signature"], 1);
    pool.check_invariants();
}

#[test]
fn nonce_gaps_are_held_then_released() {
    let (_d, snap) = state(&[1_000], &[4]);
    let pool = pool(&snap);
    let me = key(0).public_key().address();
    pool.submit(tx(0, 6, 1, 1)).expect("held behind a gap");
    assert_eq!(pool.next_nonce(&me, 4), 4, "a gap is not a usable run");
    assert!(pool.select(1, 10, 1 << 20).is_empty(), "held, not offered");
    pool.submit(tx(0, 4, 1, 1)).expect("first");
    assert_eq!(pool.select(2, 10, 1 << 20).len(), 1, "only the run from 4");
    pool.submit(tx(0, 5, 1, 1)).expect("fills the gap");
    assert_eq!(pool.next_nonce(&me, 4), 7);
    let nonces: Vec<u64> = pool
        .select(3, 10, 1 << 20)
        .iter()
        .map(|t| t.tx().nonce)
        .collect();
    assert_eq!(nonces, vec![5, 6], "the gap filled releases what was held");
    // A state that already moved past the pending ones wins.
    assert_eq!(pool.next_nonce(&me, 9), 9);
    pool.check_invariants();
}

#[test]
fn pending_costs_accumulate_and_duplicates_are_refused() {
    let (_d, snap) = state(&[30], &[0]);
    let pool = pool(&snap);
    pool.submit(tx(0, 0, 5, 5)).expect("first");
    assert_eq!(pool.submit(tx(0, 0, 5, 5)), Err(Rejection::Duplicate));
    pool.submit(tx(0, 1, 5, 5)).expect("second");
    assert_eq!(
        pool.submit(tx(0, 2, 5, 6)),
        Err(Rejection::InsufficientBalance {
            needed: 31,
            available: 30
        })
    );
    pool.check_invariants();
}

#[test]
fn replacement_needs_a_fee_bump_and_not_yet_proposed() {
    let (_d, snap) = state(&[1_000], &[0]);
    let pool = pool(&snap);
    let original = pool.submit(tx(0, 0, 100, 1)).expect("original");
    assert_eq!(
        pool.submit(tx(0, 0, 109, 1)),
        Err(Rejection::ReplacementUnderpriced { min: 110, got: 109 })
    );
    let replacement = pool.submit(tx(0, 0, 110, 1)).expect("replacement");
    assert_eq!(pool.len(), 1);
    assert!(pool.contains(&replacement) && !pool.contains(&original));
    assert_eq!(pool.select(1, 10, 1 << 20).len(), 1);
    assert_eq!(
        pool.submit(tx(0, 0, 500, 1)),
        Err(Rejection::NonceInFlight { nonce: 0 })
    );
    pool.check_invariants();
}

#[test]
fn sender_cap_and_pool_cap_bound_the_pool() {
    let (_d, snap) = state(&[1_000, 1_000, 1_000], &[0, 0, 0]);
    let pool = pool(&snap);
    for n in 0..4 {
        pool.submit(tx(0, n, 1, 1)).expect("within sender cap");
    }
    assert_eq!(
        pool.submit(tx(0, 4, 1, 1)),
        Err(Rejection::SenderFull { cap: 4 })
    );
    assert_eq!(
        pool.submit(tx(0, 6, 1, 1)),
        Err(Rejection::NonceTooFar { limit: 6, got: 6 })
    );
    for n in 0..4 {
        pool.submit(tx(1, n, 1, 1)).expect("within pool cap");
    }
    assert_eq!(pool.submit(tx(2, 0, 1, 1)), Err(Rejection::PoolFull));
    assert_eq!(pool.len(), 8);
    pool.check_invariants();
}

#[test]
fn a_full_pool_evicts_the_cheapest_for_a_better_fee() {
    let (_d, snap) = state(&[1_000, 1_000, 1_000], &[0, 0, 0]);
    let pool = pool(&snap);
    for n in 0..4 {
        pool.submit(tx(0, n, 3, 1)).expect("sender 0");
        pool.submit(tx(1, n, 2 + n, 1)).expect("sender 1");
    }
    // The cheapest is sender 1's nonce 0 (fee 2): evicting it also evicts its later nonces,
    // which could no longer run, and frees four places.
    let rich = pool.submit(tx(2, 0, 10, 1)).expect("evicts");
    assert!(pool.contains(&rich));
    assert_eq!(pool.len(), 5);
    assert_eq!(pool.pool_stats().evicted, 4);
    assert_eq!(
        pool.submit(tx(1, 0, 2, 1)),
        Ok(tx(1, 0, 2, 1).hash()),
        "evicted may return"
    );
    pool.check_invariants();
}

#[test]
fn selection_is_fee_ordered_and_nonce_consecutive() {
    let (_d, snap) = state(&[1_000, 1_000], &[0, 0]);
    let pool = pool(&snap);
    pool.submit(tx(0, 0, 1, 1)).expect("a0");
    pool.submit(tx(0, 1, 50, 1)).expect("a1");
    pool.submit(tx(1, 0, 10, 1)).expect("b0");
    let picked: Vec<(u8, u64)> = pool
        .select(1, 10, 1 << 20)
        .iter()
        .map(|t| (sender_of(t), t.tx().nonce))
        .collect();
    // b0 (fee 10) beats a0 (fee 1); a1 (fee 50) can only follow a0.
    assert_eq!(picked, vec![(1, 0), (0, 0), (0, 1)]);
    assert!(
        pool.select(2, 10, 1 << 20).is_empty(),
        "proposed transactions are not offered twice"
    );
}

#[test]
fn selection_stays_within_the_block_gas_limit() {
    use peregrine_types::gas::{BLOCK_GAS_LIMIT, MAX_TX_GAS};
    let fits = (BLOCK_GAS_LIMIT / MAX_TX_GAS) as u8;
    let senders = fits + 2;
    let balances = vec![u128::MAX / 1024; senders as usize];
    let (_d, snap) = state(&balances, &vec![0; senders as usize]);
    let pool = Mempool::new(
        MempoolConfig {
            max_txs: 64,
            ..config()
        },
        snap,
    );
    for from in 0..senders {
        let k = key(from);
        let call = Transaction {
            chain_id: 9,
            sender: k.public_key(),
            nonce: 0,
            fee: MAX_TX_GAS,
            payload: Payload::Call {
                contract: Address([1; 20]),
                method: b"m".to_vec(),
                args: vec![],
            },
            access: vec![],
        };
        pool.submit(call.sign(&k)).expect("admitted");
    }
    let picked = pool.select(1, 100, 1 << 24);
    assert_eq!(picked.len(), fits as usize, "each call may use the maximum");
    let block_gas: u64 = picked.iter().map(|t| t.tx().gas_limit()).sum();
    assert!(block_gas <= BLOCK_GAS_LIMIT);
    assert_eq!(pool.select(2, 100, 1 << 24).len(), 2, "the rest wait");
}

#[test]
fn execution_removes_included_and_returns_a_discarded_fork() {
    let (_d, snap) = state(&[1_000, 1_000], &[0, 0]);
    let pool = pool(&snap);
    let a0 = tx(0, 0, 1, 1);
    pool.submit(a0.clone()).expect("a0");
    pool.submit(tx(1, 0, 1, 1)).expect("b0");
    assert_eq!(pool.select(1, 10, 1 << 20).len(), 2);
    // Block 1 as finalized included only a0: the fork whose block held b0 was discarded.
    let (_d2, after) = state(&[998, 1_000], &[1, 0]);
    pool.on_executed(1, std::slice::from_ref(&a0), &after);
    assert_eq!(pool.len(), 1);
    assert!(!pool.contains(&a0.hash()), "removed after inclusion");
    let again = pool.select(2, 10, 1 << 20);
    assert_eq!(again.len(), 1, "b0 returns to the pool");
    assert_eq!(sender_of(&again[0]), 1);
    assert_eq!(
        pool.submit(a0),
        Err(Rejection::Duplicate),
        "a replay is cheap"
    );
    pool.check_invariants();
}

#[test]
fn a_block_from_elsewhere_drops_stale_and_unaffordable_transactions() {
    let (_d, snap) = state(&[100], &[0]);
    let pool = pool(&snap);
    pool.submit(tx(0, 0, 1, 10)).expect("n0");
    pool.submit(tx(0, 1, 1, 10)).expect("n1");
    pool.submit(tx(0, 2, 1, 10)).expect("n2");
    // Another proposer's block spent nonce 0 differently and most of the balance.
    let (_d2, after) = state(&[15], &[1]);
    pool.on_executed(1, &[tx(0, 0, 2, 83)], &after);
    let nonces: Vec<u64> = pool
        .select(2, 10, 1 << 20)
        .iter()
        .map(|t| t.tx().nonce)
        .collect();
    assert_eq!(nonces, vec![1], "nonce 0 is used and 15 pays for one more");
    assert_eq!(pool.pool_stats().dropped, 2);
    pool.submit(tx(0, 2, 1, 1))
        .expect("a dropped nonce can be used again");
    pool.check_invariants();
}

fn pipeline(snap: &Snapshot, config: MempoolConfig, workers: usize) -> Admission {
    let mempool = Arc::new(Mempool::new(config, snap.clone()));
    let config = AdmissionConfig {
        workers,
        ..AdmissionConfig::default()
    };
    Admission::start(mempool, config)
}

#[test]
fn a_double_spend_in_one_batch_admits_one() {
    let (_d, snap) = state(&[1_000], &[0]);
    let admission = pipeline(&snap, config(), 2);
    let same_fee = admission
        .submit(vec![tx(0, 0, 5, 1).encode(), tx(0, 0, 5, 2).encode()])
        .wait();
    assert!(same_fee[0].is_ok());
    assert_eq!(
        same_fee[1],
        Err(Rejection::ReplacementUnderpriced { min: 6, got: 5 })
    );
    let bumped = admission
        .submit(vec![tx(0, 1, 5, 1).encode(), tx(0, 1, 9, 2).encode()])
        .wait();
    assert!(bumped.iter().all(Result::is_ok), "{bumped:?}");
    let held: Vec<u64> = admission
        .mempool()
        .select(1, 10, 1 << 20)
        .iter()
        .map(|t| t.tx().fee)
        .collect();
    assert_eq!(held, vec![5, 9], "the higher fee replaced nonce 1");
    admission.mempool().check_invariants();
}

#[test]
fn garbage_does_not_stop_valid_transactions() {
    let senders = 20u8;
    let (_d, snap) = state(
        &vec![1_000_000; senders as usize],
        &vec![0; senders as usize],
    );
    let config = MempoolConfig {
        max_per_sender: 64,
        max_nonce_ahead: 64,
        ..MempoolConfig::new(9)
    };
    let admission = pipeline(&snap, config, 2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut batch = Vec::new();
    let mut valid = Vec::new();
    for nonce in 0..16 {
        for s in 0..senders {
            let good = tx(s, nonce, 1, 1);
            valid.push(good.hash());
            batch.push(good.encode());
            batch.push(flip_last_byte(&good));
            batch.push(vec![0xff; 40]);
            batch.push(tx(s, nonce, 1, 1).encode());
        }
    }
    batch.shuffle(&mut rng);
    let results = admission.submit(batch).wait();
    let admitted: std::collections::HashSet<Hash> = results.iter().flatten().copied().collect();
    assert_eq!(admitted.len(), valid.len());
    assert!(valid.iter().all(|h| admitted.contains(h)));
    let rejected = admission.mempool().stats().rejected();
    assert_eq!(rejected["bad_signature"], valid.len() as u64);
    assert_eq!(rejected["malformed"], valid.len() as u64);
    assert_eq!(rejected["duplicate"], valid.len() as u64);
    let selected = admission.mempool().select(1, 100_000, 1 << 30);
    assert_eq!(selected.len(), valid.len(), "every nonce run is complete");
    admission.mempool().check_invariants();
}

#[test]
fn the_pipeline_sheds_what_does_not_fit_and_says_so() {
    let (_d, snap) = state(&[1_000], &[0]);
    let mempool = Arc::new(Mempool::new(config(), snap.clone()));
    let admission = Admission::start(
        mempool,
        AdmissionConfig {
            workers: 1,
            max_in_flight: 2,
        },
    );
    let results = admission
        .submit((0..3).map(|n| tx(0, n, 1, 1).encode()).collect())
        .wait();
    assert_eq!(results, vec![Err(Rejection::Overloaded); 3]);
    assert_eq!(admission.stats().shed, 3);
    assert_eq!(admission.in_flight(), 0);
    let ok = admission.submit(vec![tx(0, 0, 1, 1).encode()]).wait();
    assert!(
        ok[0].is_ok(),
        "a later submission within bounds is admitted"
    );
}

#[test]
fn readmitted_transactions_of_a_discarded_block_return() {
    let (_d, snap) = state(&[1_000, 1_000], &[0, 0]);
    let admission = pipeline(&snap, config(), 1);
    let block = vec![tx(0, 0, 1, 1), tx(1, 0, 1, 1), tx(0, 1, 1, 1)];
    let results = admission.submit_txs(block.clone()).wait();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let back = admission.mempool().select(1, 10, 1 << 20);
    assert_eq!(back.len(), 3);
}

#[test]
fn one_sender_spread_over_many_concurrent_units_is_admitted_whole() {
    // Every transaction is its own submission, so the two workers validate units of the same
    // sender at once: the conflict pre-filter defers one of each pair to the try-later queue, and
    // whatever the interleaving, every nonce ends up admitted exactly once.
    let (_d, snap) = state(&[1_000_000], &[0]);
    let config = MempoolConfig {
        max_per_sender: 256,
        max_nonce_ahead: 256,
        ..MempoolConfig::new(9)
    };
    let admission = pipeline(&snap, config, 2);
    let mut nonces: Vec<u64> = (0..200).collect();
    nonces.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    let pending: Vec<Pending> = nonces
        .iter()
        .map(|&n| admission.submit(vec![tx(0, n, 1, 1).encode()]))
        .collect();
    for answer in pending.into_iter().map(Pending::wait) {
        assert!(answer[0].is_ok(), "{answer:?}");
    }
    let stats = admission.stats();
    assert_eq!(stats.shed, 0);
    assert!(stats.fallback <= stats.deferred);
    let selected = admission.mempool().select(1, 1_000, 1 << 30);
    let got: Vec<u64> = selected.iter().map(|t| t.tx().nonce).collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    admission.mempool().check_invariants();
}
