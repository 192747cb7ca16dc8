//! Readers at head-4 while the writer commits and finalizes: every read sees exactly the revision
//! it opened, whatever the writer does meanwhile, including checkpoints that drop persisted nodes
//! from memory (so readers also load nodes from the node file while it grows).

use parking_lot::Mutex;
use peregrine_state::{Db, Options, Snapshot};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const ACCOUNTS: u64 = 2_000;
const START_BALANCE: u64 = 1_000;
const LAG: usize = 4;

fn account(i: u64) -> Vec<u8> {
    format!("acct-{i:05}").into_bytes()
}

fn read_u64(snapshot: &Snapshot, key: &[u8]) -> u64 {
    snapshot.get(key).map_or(0, |v| {
        u64::from_le_bytes(v.as_slice().try_into().expect("8 bytes"))
    })
}

/// A reader's checks on one snapshot: the height it was published with, and conservation of
/// the total balance over a full ordered scan.
fn check(snapshot: &Snapshot, height: u64) {
    assert_eq!(
        read_u64(snapshot, b"height"),
        height,
        "height of a lagging snapshot"
    );
    let total: u64 = snapshot
        .range::<(Bound<&[u8]>, Bound<&[u8]>)>((
            Bound::Included(b"acct-"),
            Bound::Excluded(b"acct."),
        ))
        .map(|(_, v)| u64::from_le_bytes(v.as_slice().try_into().expect("8 bytes")))
        .sum();
    assert_eq!(total, ACCOUNTS * START_BALANCE, "balances not conserved");
}

#[test]
fn readers_at_head_minus_four_see_stable_revisions_while_the_writer_commits() {
    let blocks: u64 = std::env::var("PEREGRINE_STATE_CONCURRENCY_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        checkpoint_bytes: 16 << 10,
        memory_budget: 64 << 10,
        compact_min_bytes: 0,
        ..Options::default()
    };
    let db = Db::open_with(dir.path(), options).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    for i in 0..ACCOUNTS {
        ws.put(account(i), START_BALANCE.to_le_bytes().to_vec())
            .expect("put");
    }
    ws.put(b"height".to_vec(), 0u64.to_le_bytes().to_vec())
        .expect("put");
    let mut head = db.commit(ws).expect("commit");
    db.finalize(head).expect("finalize");
    let published: Arc<Mutex<VecDeque<(u64, Snapshot)>>> =
        Arc::new(Mutex::new(VecDeque::from([(
            0,
            db.snapshot(head).expect("snapshot"),
        )])));
    let stop = AtomicBool::new(false);
    let checks = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let oldest = published.lock().front().cloned();
                    if let Some((height, snapshot)) = oldest {
                        check(&snapshot, height);
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for height in 1..=blocks {
            let mut ws = db.begin(head).expect("begin");
            for _ in 0..50 {
                let (from, to) = (rng.gen_range(0..ACCOUNTS), rng.gen_range(0..ACCOUNTS));
                let amount = rng.gen_range(0..10);
                let balance = |ws: &peregrine_state::WriteSet, i| {
                    ws.get(&account(i)).map_or(0, |v| {
                        u64::from_le_bytes(v.as_slice().try_into().expect("8"))
                    })
                };
                let (a, b) = (balance(&ws, from), balance(&ws, to));
                if from != to && a >= amount {
                    ws.put(account(from), (a - amount).to_le_bytes().to_vec())
                        .expect("put");
                    ws.put(account(to), (b + amount).to_le_bytes().to_vec())
                        .expect("put");
                }
            }
            ws.put(b"height".to_vec(), height.to_le_bytes().to_vec())
                .expect("put");
            head = db.commit(ws).expect("commit");
            db.finalize(head).expect("finalize");
            let mut published = published.lock();
            published.push_back((height, db.snapshot(head).expect("snapshot")));
            if published.len() > LAG + 1 {
                published.pop_front();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(checks.load(Ordering::Relaxed) > 0, "the readers never ran");
    let (height, snapshot) = published.lock().back().cloned().expect("head");
    check(&snapshot, height);
}
