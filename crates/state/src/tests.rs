//! Model-based tests: every operation is mirrored in a `BTreeMap` per revision.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn assert_matches(db: &Db, rev: RevisionId, model: &Model) {
    let snapshot = db.snapshot(rev).expect("retained");
    let got: Model = snapshot
        .range::<std::ops::RangeFull>(..)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(&got, model, "revision {rev:?} differs from the model");
    let mut lthash = LtHash::default();
    for (k, v) in model {
        lthash.insert(k, v);
    }
    assert_eq!(
        snapshot.commitment(),
        lthash.digest(),
        "incremental commitment drifted"
    );
}

fn random_writes(
    rng: &mut ChaCha8Rng,
    db: &Db,
    parent: RevisionId,
    model: &Model,
) -> (RevisionId, Model) {
    let mut ws = db.begin(parent).expect("begin");
    let mut next = model.clone();
    for _ in 0..rng.gen_range(0..20) {
        let key = vec![rng.gen_range(0..32u8)];
        if rng.gen_bool(0.25) {
            ws.delete(key.clone()).expect("delete");
            next.remove(&key);
        } else {
            let value = vec![rng.gen(); rng.gen_range(0..4)];
            ws.put(key.clone(), value.clone()).expect("put");
            next.insert(key, value);
        }
        let probe = vec![rng.gen_range(0..32u8)];
        assert_eq!(ws.get(&probe), next.get(&probe).map(Vec::as_slice));
    }
    (db.commit(ws).expect("commit"), next)
}

/// Random commits on random retained revisions (forks), random finalizations and reopens.
#[test]
fn random_forks_finalize_and_reopen_match_the_model() {
    let iterations: u64 = std::env::var("PEREGRINE_STATE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for seed in 0..4u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(dir.path()).expect("open");
        let mut models: BTreeMap<RevisionId, Model> =
            BTreeMap::from([(db.finalized(), Model::new())]);
        for _ in 0..iterations {
            let live: Vec<RevisionId> = db.retained();
            let parent = live[rng.gen_range(0..live.len())];
            match rng.gen_range(0..10) {
                0..=6 => {
                    let (rev, model) = random_writes(&mut rng, &db, parent, &models[&parent]);
                    models.insert(rev, model);
                }
                7..=8 => {
                    db.finalize(parent).expect("finalize a descendant");
                    models.retain(|id, _| db.retained().contains(id));
                }
                _ => {
                    let finalized = db.finalized();
                    drop(db);
                    db = Db::open(dir.path()).expect("reopen");
                    assert_eq!(db.finalized(), finalized);
                    models.retain(|id, _| *id == finalized);
                }
            }
            for (rev, model) in &models {
                assert_matches(&db, *rev, model);
            }
        }
    }
}

#[test]
fn finalize_drops_other_forks_and_keeps_later_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let root = db.finalized();
    let mut a = db.begin(root).expect("begin");
    a.put(b"x".to_vec(), b"a".to_vec()).expect("put");
    let a = db.commit(a).expect("commit");
    let mut b = db.begin(root).expect("begin");
    b.put(b"x".to_vec(), b"b".to_vec()).expect("put");
    let b = db.commit(b).expect("commit");
    let a2 = db.commit(db.begin(a).expect("begin")).expect("commit");
    db.finalize(a).expect("finalize");
    assert!(matches!(db.snapshot(b), Err(Error::UnknownRevision(_))));
    assert!(matches!(db.snapshot(root), Err(Error::UnknownRevision(_))));
    assert_eq!(db.snapshot(a2).expect("kept").get(b"x"), Some(&b"a"[..]));
    assert!(matches!(db.finalize(b), Err(Error::UnknownRevision(_))));
}

#[test]
fn snapshots_are_immutable_and_readable_across_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(dir.path()).expect("open"));
    let mut ws = db.begin(db.finalized()).expect("begin");
    ws.put(b"k".to_vec(), 1u64.to_le_bytes().to_vec())
        .expect("put");
    let first = db.commit(ws).expect("commit");
    let snapshot = db.snapshot(first).expect("snapshot");
    let reader = std::thread::spawn(move || {
        (0..1000).all(|_| snapshot.get(b"k") == Some(&1u64.to_le_bytes()[..]))
    });
    let mut head = first;
    for i in 2..200u64 {
        let mut ws = db.begin(head).expect("begin");
        ws.put(b"k".to_vec(), i.to_le_bytes().to_vec())
            .expect("put");
        head = db.commit(ws).expect("commit");
        db.finalize(head).expect("finalize");
    }
    assert!(reader.join().expect("reader thread"));
}

#[test]
fn oversized_keys_and_values_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    assert!(matches!(
        ws.put(vec![0; MAX_KEY_BYTES as usize + 1], vec![]),
        Err(Error::TooLarge { what: "key", .. })
    ));
    assert!(ws.is_empty());
}
