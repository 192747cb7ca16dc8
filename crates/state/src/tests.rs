//! Model-based tests: every operation is mirrored in a `BTreeMap` per revision.

use super::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::ops::Bound;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
/// A put (`Some`) or a delete (`None`).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// The documented commitment, computed from scratch over sorted pairs: an independent check of
/// the incremental one.
fn reference_commitment(entries: &[(&Vec<u8>, &Vec<u8>)]) -> trie::Hash32 {
    match entries {
        [] => trie::empty_hash(),
        [(k, v)] => trie::leaf_hash(k, v),
        _ if entries.len() <= 17
            && entries.iter().all(|(k, v)| k.len() + v.len() <= 46)
            && shares_a_slot(entries) =>
        {
            // A bucket: a branch at position 0xfff whose slots hold the records in key order.
            let mask = (1u32 << entries.len()) - 1;
            let mut encoding = vec![1u8];
            encoding.extend_from_slice(&0xfffu16.to_le_bytes());
            encoding.extend_from_slice(&mask.to_le_bytes());
            encoding.extend_from_slice(&mask.to_le_bytes());
            for (k, v) in entries {
                encoding.extend_from_slice(&inline_record(k, v));
            }
            encoding.resize(encoding.len().next_multiple_of(64), 0);
            *blake3::hash(&encoding).as_bytes()
        }
        _ => {
            let pos = trie::common_nibbles(entries[0].0, entries[entries.len() - 1].0);
            let (mut mask, mut inline_mask) = (0u32, 0u32);
            let mut pieces: Vec<Vec<u8>> = Vec::new();
            let mut start = 0;
            while start < entries.len() {
                let slot = trie::nibble(entries[start].0, pos);
                let len = entries[start..].partition_point(|(k, _)| trie::nibble(k, pos) == slot);
                mask |= 1 << slot;
                pieces.push(match &entries[start..start + len] {
                    [(k, v)] if k.len() + v.len() <= 46 => {
                        inline_mask |= 1 << slot;
                        inline_record(k, v)
                    }
                    group => reference_commitment(group).to_vec(),
                });
                start += len;
            }
            let mut encoding = vec![1u8];
            encoding.extend_from_slice(&(pos as u16).to_le_bytes());
            encoding.extend_from_slice(&mask.to_le_bytes());
            encoding.extend_from_slice(&inline_mask.to_le_bytes());
            pieces
                .iter()
                .for_each(|piece| encoding.extend_from_slice(piece));
            encoding.resize(encoding.len().next_multiple_of(64), 0);
            *blake3::hash(&encoding).as_bytes()
        }
    }
}

/// Whether two of `entries` (sorted) have the same nibble where the first and last differ.
fn shares_a_slot(entries: &[(&Vec<u8>, &Vec<u8>)]) -> bool {
    let pos = trie::common_nibbles(entries[0].0, entries[entries.len() - 1].0);
    entries
        .windows(2)
        .any(|w| trie::nibble(w[0].0, pos) == trie::nibble(w[1].0, pos))
}

/// An inline leaf's record, as documented: key length, key and value length, key, value.
fn inline_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut record = vec![key.len() as u8, (key.len() + value.len()) as u8];
    record.extend_from_slice(key);
    record.extend_from_slice(value);
    record
}

fn assert_matches(db: &Db, rev: RevisionId, model: &Model, rng: &mut ChaCha8Rng) {
    let snapshot = db.snapshot(rev).expect("retained");
    // Point reads first: they need no built trie, so a revision just committed is often still
    // pending here, and they go through its changes to its parent's.
    let step = model.len() / 64 + 1;
    for (key, value) in model.iter().step_by(step) {
        assert_eq!(
            snapshot.get(key).as_deref(),
            Some(value.as_slice()),
            "{rev:?}"
        );
    }
    let probe = random_key(rng);
    assert_eq!(
        snapshot.get(&probe).map(|v| v.to_vec()),
        model.get(&probe).cloned()
    );
    let keys = mixed_keys(model, rng);
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    assert_reads_many(&snapshot.get_many(&refs), &keys, model);
    let got: Model = snapshot
        .range::<std::ops::RangeFull>(..)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(&got, model, "revision {rev:?} differs from the model");
    assert_eq!(snapshot.len(), model.len(), "key count of {rev:?}");
    let entries: Vec<(&Vec<u8>, &Vec<u8>)> = model.iter().collect();
    assert_eq!(
        snapshot.commitment().0,
        reference_commitment(&entries),
        "incremental commitment drifted"
    );
    for _ in 0..4 {
        let (a, b) = (random_key(rng), random_key(rng));
        let bounds = match rng.gen_range(0..3) {
            0 => (Bound::Included(a), Bound::Excluded(b)),
            1 => (Bound::Excluded(a), Bound::Included(b)),
            _ => (Bound::Included(a), Bound::Unbounded),
        };
        let got: Vec<(Vec<u8>, Vec<u8>)> = snapshot
            .range::<(Bound<&[u8]>, Bound<&[u8]>)>((
                bounds.0.as_ref().map(Vec::as_slice),
                bounds.1.as_ref().map(Vec::as_slice),
            ))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = if matches!(
            (&bounds.0, &bounds.1),
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b
        ) {
            Vec::new()
        } else {
            model
                .range::<Vec<u8>, _>(bounds.clone())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(got, want, "range {bounds:?} of {rev:?}");
        let probe = random_key(rng);
        assert_eq!(
            snapshot.get(&probe).map(|v| v.to_vec()),
            model.get(&probe).cloned()
        );
        assert_proof(&snapshot, &probe, model);
    }
    if let Some(present) = model.keys().nth(rng.gen_range(0..model.len().max(1))) {
        assert_proof(&snapshot, present, model);
    }
}

/// Keys to read at once: some of the model's, some random (mostly absent), in random order,
/// more than `trie::fill` walks together, with a repeat.
fn mixed_keys(model: &Model, rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..12).map(|_| random_key(rng)).collect();
    if !model.is_empty() {
        let picks = (0..12).map(|_| rng.gen_range(0..model.len()));
        keys.extend(picks.filter_map(|i| model.keys().nth(i).cloned()));
    }
    keys.push(keys[0].clone());
    keys.shuffle(rng);
    keys
}

/// `got`, read for `keys` at once, answers each as the model does.
fn assert_reads_many(got: &[Option<Bytes>], keys: &[Vec<u8>], model: &Model) {
    assert_eq!(got.len(), keys.len());
    for (key, value) in keys.iter().zip(got) {
        assert_eq!(
            value.as_deref(),
            model.get(key).map(Vec::as_slice),
            "get_many of {key:?}"
        );
    }
}

/// The proof for `key` verifies against the revision's commitment to the model's answer, and
/// not for a different key's answer.
fn assert_proof(snapshot: &Snapshot, key: &[u8], model: &Model) {
    let commitment = snapshot.commitment().0;
    let proof = snapshot.prove(key).expect("prove");
    assert_eq!(
        proof.verify(&commitment, key),
        Ok(model.get(key).cloned()),
        "proof of {key:?}"
    );
    let mut other = key.to_vec();
    other.push(0x5a);
    if let Ok(Some(value)) = proof.verify(&commitment, &other) {
        assert_eq!(
            model.get(&other),
            Some(&value),
            "a proof vouched for another key"
        );
    }
}

/// Keys from a tiny alphabet with lengths 0 to 3: prefixes of each other, shared nibbles and
/// empty keys, so every shape of the trie appears.
fn random_key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    const ALPHABET: [u8; 5] = [0x00, 0x01, 0x10, 0x11, 0xff];
    let len = rng.gen_range(0..4);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect()
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
        let key = random_key(rng);
        let written = key.clone();
        if rng.gen_bool(0.25) {
            ws.delete(key.clone()).expect("delete");
            next.remove(&key);
        } else {
            // Up to 56 bytes: some leaves live inline in their branch, some on their own.
            let value = vec![rng.gen(); rng.gen_range(0..57)];
            ws.put(key.clone(), value.clone()).expect("put");
            next.insert(key, value);
        }
        let probe = random_key(rng);
        assert_eq!(
            ws.get(&probe).map(|v| v.to_vec()),
            next.get(&probe).cloned()
        );
        // A transfer's read of two accounts: this block's write and any other key.
        let pair = [probe.as_slice(), written.as_slice()];
        assert_eq!(
            ws.get_array(pair).map(|v| v.map(|v| v.to_vec())),
            pair.map(|k| next.get(k).cloned())
        );
    }
    // This block's own writes and deletes answer first, the parent's revisions the rest.
    let mut keys = mixed_keys(&next, rng);
    keys.extend(model.keys().take(3).cloned());
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    assert_reads_many(&ws.get_many(&refs), &keys, &next);
    (db.commit(ws).expect("commit"), next)
}

/// Even seeds keep everything in memory; odd seeds checkpoint on every finalize and hold nothing
/// below the root in memory, so reads, commits and reopens go through the node file.
fn options_for(seed: u64) -> Options {
    if seed.is_multiple_of(2) {
        Options::default()
    } else {
        Options {
            commit_threads: 1,
            ..on_disk()
        }
    }
}

/// Options that checkpoint at every finalize, keep nothing below the root in memory and compact
/// at any size: every node a test reads after a checkpoint comes back from the node file.
fn on_disk() -> Options {
    Options {
        checkpoint_bytes: 1,
        memory_budget: 0,
        compact_min_bytes: 0,
        ..Options::default()
    }
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
        let mut db = Db::open_with(dir.path(), options_for(seed)).expect("open");
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
                    db = Db::open_with(dir.path(), options_for(seed)).expect("reopen");
                    assert_eq!(db.finalized(), finalized);
                    models.retain(|id, _| *id == finalized);
                }
            }
            for (rev, model) in &models {
                assert_matches(&db, *rev, model, &mut rng);
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
    assert_eq!(
        db.snapshot(a2).expect("kept").get(b"x").as_deref(),
        Some(&b"a"[..])
    );
    assert!(matches!(db.finalize(b), Err(Error::UnknownRevision(_))));
}

#[test]
fn discard_drops_a_fork_and_its_descendants_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let root = db.finalized();
    let child = |parent, value: &[u8]| {
        let mut ws = db.begin(parent).expect("begin");
        ws.put(b"x".to_vec(), value.to_vec()).expect("put");
        db.commit(ws).expect("commit")
    };
    let a = child(root, b"a");
    let a2 = child(a, b"a2");
    let b = child(root, b"b");
    let b2 = child(b, b"b2");
    let held = db.snapshot(b2).expect("snapshot");
    db.discard(b).expect("discard");
    assert_eq!(db.retained(), vec![root, a, a2]);
    assert!(matches!(db.snapshot(b2), Err(Error::UnknownRevision(_))));
    assert_eq!(held.get(b"x").as_deref(), Some(&b"b2"[..]));
    assert!(matches!(db.discard(b), Err(Error::UnknownRevision(_))));
    assert!(matches!(db.discard(root), Err(Error::DiscardFinalized(_))));
    db.finalize(a2).expect("finalize the surviving fork");
    assert_eq!(
        db.snapshot(a2).expect("kept").get(b"x").as_deref(),
        Some(&b"a2"[..])
    );
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
        (0..1000).all(|_| snapshot.get(b"k").as_deref() == Some(&1u64.to_le_bytes()[..]))
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

/// The last snapshot of a pruned revision frees its tree through the background thread (which
/// `settle` waits for), stays readable until then, and still frees cleanly once the database is
/// gone.
#[test]
fn last_snapshots_of_pruned_revisions_free_their_trees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let commit_keys = |parent, value: u8| {
        let mut ws = db.begin(parent).expect("begin");
        for i in 0..3_000u32 {
            ws.put(i.to_be_bytes().to_vec(), vec![value]).expect("put");
        }
        db.commit(ws).expect("commit")
    };
    let first = commit_keys(db.finalized(), 1);
    let (early, late) = (
        db.snapshot(first).expect("a"),
        db.snapshot(first).expect("b"),
    );
    let Ok((Some(Node::Branch(_, root)), _)) = early.tree() else {
        panic!("3,000 keys make a branch root");
    };
    // A node only the first tree holds: its count falls to one when that tree is freed.
    let child = root.nodes().first().expect("a child node").clone();
    assert_eq!(child.strong_count(), 2);
    let second = commit_keys(first, 2);
    db.finalize(second).expect("finalize");
    // Another thread lets go first; the tree lives on in the other snapshot.
    std::thread::spawn(move || drop(early))
        .join()
        .expect("join");
    assert_eq!(late.get(&7u32.to_be_bytes()).as_deref(), Some(&[1u8][..]));
    drop(late);
    db.settle().expect("settle");
    assert_eq!(child.strong_count(), 1, "the pruned tree was freed");

    let third = commit_keys(second, 3);
    let kept = db.snapshot(third).expect("snapshot");
    drop(db);
    assert_eq!(kept.get(&7u32.to_be_bytes()).as_deref(), Some(&[3u8][..]));
    drop(kept);
}

/// `settle` waits for the checkpoint a finalize started: once it returns, the root file names
/// the finalized revision.
#[test]
fn settle_waits_for_a_running_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        checkpoint_bytes: 1,
        ..Options::default()
    };
    let db = Db::open_with(dir.path(), options).expect("open");
    let pairs = (0..200_000u32).map(|i| (i.to_be_bytes().to_vec(), vec![1u8; 8]));
    load_and_checkpoint(&db, dir.path(), pairs.collect());
}

/// Loads `pairs` (sorted) in one block, finalizes it, waits for the checkpoint it starts and
/// checks that the root file names it: the revision and the root file.
fn load_and_checkpoint(
    db: &Db,
    dir: &Path,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> (RevisionId, crate::root::Root) {
    let mut ws = db.begin(db.finalized()).expect("begin");
    ws.put_sorted(pairs).expect("load");
    let rev = db.commit(ws).expect("commit");
    db.finalize(rev).expect("finalize");
    db.settle().expect("settle");
    let root = crate::root::read(dir)
        .expect("read root file")
        .expect("a checkpoint was written");
    assert_eq!(root.revision, rev.0);
    (rev, root)
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

/// Every part of a proof is bound: changing any of it makes it fail.
#[test]
fn tampered_proofs_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    for i in 0..2_000u32 {
        ws.put((i * 7).to_be_bytes().to_vec(), i.to_le_bytes().to_vec())
            .expect("put");
    }
    let snapshot = db
        .snapshot(db.commit(ws).expect("commit"))
        .expect("snapshot");
    let commitment = snapshot.commitment().0;
    let present = 700u32.to_be_bytes();
    let absent = 701u32.to_be_bytes();
    let proof = snapshot.prove(&present).expect("prove");
    assert_eq!(
        proof.verify(&commitment, &present),
        Ok(Some(100u32.to_le_bytes().to_vec()))
    );
    assert_eq!(
        snapshot
            .prove(&absent)
            .expect("prove")
            .verify(&commitment, &absent),
        Ok(None)
    );

    let mut wrong_value = proof.clone();
    if let proof::End::Leaf { value, .. } = &mut wrong_value.end {
        value[0] ^= 1;
    }
    let mut wrong_mask = proof.clone();
    wrong_mask.steps[0].mask ^= 1 << 16;
    let mut dropped_leaf = proof.clone();
    dropped_leaf.end = proof::End::NoChild;
    let mut tampered = vec![wrong_value, wrong_mask, dropped_leaf];
    let (mut hashes, mut leaves) = (0, 0);
    for (i, step) in proof.steps.iter().enumerate() {
        for j in 0..step.siblings.len() {
            let mut wrong = proof.clone();
            match &mut wrong.steps[i].siblings[j] {
                proof::Sibling::Hash(hash) => {
                    hashes += 1;
                    hash[5] ^= 1;
                }
                proof::Sibling::Leaf { value, .. } => {
                    leaves += 1;
                    value[0] ^= 1;
                }
            }
            tampered.push(wrong);
        }
        // A child called inline that is not, or a leaf called a node.
        let mut wrong_kind = proof.clone();
        wrong_kind.steps[i].inline_mask ^= 1 << step.mask.trailing_zeros();
        tampered.push(wrong_kind);
    }
    assert!(
        hashes > 0 && leaves > 0,
        "siblings of both kinds tampered with"
    );
    // An inline sibling too long to be inline cannot be part of any trie.
    let mut too_long = proof.clone();
    let step = proof.steps.len() - 1;
    let leaf = too_long.steps[step]
        .siblings
        .iter_mut()
        .find_map(|s| match s {
            proof::Sibling::Leaf { value, .. } => Some(value),
            proof::Sibling::Hash(_) => None,
        })
        .expect("the bottom branch holds inline leaves");
    leaf.resize(60, 0);
    assert_eq!(
        too_long.verify(&commitment, &present),
        Err(proof::ProofError::Malformed(
            "an inline leaf too long to be inline"
        ))
    );
    for tampered in tampered {
        assert!(
            tampered.verify(&commitment, &present).is_err(),
            "{tampered:?}"
        );
    }
    // A proof of one key says nothing of a key on another path.
    assert!(proof.verify(&commitment, &absent).is_err());
    let mut other_root = commitment;
    other_root[0] ^= 1;
    assert_eq!(
        proof.verify(&other_root, &present),
        Err(proof::ProofError::Mismatch)
    );
}

/// A lone key is a leaf node at the root; once a second key arrives, the branch above them
/// must hold it inline (its record, not its hash, is what the branch's hash covers), whether
/// the lone leaf was built in memory, left by a delete, or read back from the node file.
#[test]
fn a_lone_key_joins_its_first_branch_inline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = |i: u8| (vec![i; 8], vec![i; 8]);
    let big = |i: u8| (vec![i; 30], vec![i; 30]);
    let steps: [&[Write]; 6] = [
        &[(small(1).0, Some(small(1).1))],
        &[(small(2).0, Some(small(2).1))],
        &[(small(2).0, None)],
        &[(big(3).0, Some(big(3).1))],
        &[(small(1).0, None)],
        &[(small(4).0, Some(small(4).1))],
    ];
    let mut model = Model::new();
    let mut head = RevisionId(0);
    for (round, writes) in steps.iter().enumerate() {
        // Each round reopens first, so the lone leaf comes back from the node file.
        let db = Db::open_with(dir.path(), on_disk()).expect("open");
        if round > 0 {
            assert_eq!(db.finalized(), head);
        }
        let mut ws = db.begin(db.finalized()).expect("begin");
        for (key, value) in writes.iter() {
            match value {
                Some(value) => ws.put(key.clone(), value.clone()).expect("put"),
                None => ws.delete(key.clone()).expect("delete"),
            }
            match value {
                Some(value) => model.insert(key.clone(), value.clone()),
                None => model.remove(key),
            };
        }
        head = db.commit(ws).expect("commit");
        db.finalize(head).expect("finalize");
        db.settle().expect("settle");
        let entries: Vec<(&Vec<u8>, &Vec<u8>)> = model.iter().collect();
        let snapshot = db.snapshot(head).expect("snapshot");
        assert_eq!(
            snapshot.commitment().0,
            reference_commitment(&entries),
            "round {round}"
        );
        for (key, value) in &model {
            let proof = snapshot.prove(key).expect("prove");
            assert_eq!(
                proof.verify(&snapshot.commitment().0, key),
                Ok(Some(value.clone()))
            );
        }
    }
}

#[test]
fn proofs_read_nodes_back_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path(), on_disk()).expect("open");
    let mut head = db.finalized();
    for block in 0..4u32 {
        let mut ws = db.begin(head).expect("begin");
        for i in 0..500u32 {
            ws.put(
                (block * 500 + i).to_be_bytes().to_vec(),
                vec![block as u8; 9],
            )
            .expect("put");
        }
        head = db.commit(ws).expect("commit");
        db.finalize(head).expect("finalize");
    }
    drop(db);
    let db = Db::open_with(dir.path(), on_disk()).expect("reopen");
    let snapshot = db.snapshot(db.finalized()).expect("snapshot");
    let commitment = snapshot.commitment().0;
    for i in [0u32, 777, 1_999, 2_000] {
        let key = i.to_be_bytes();
        let want = (i < 2_000).then(|| vec![(i / 500) as u8; 9]);
        let proof = snapshot.prove(&key).expect("prove");
        assert_eq!(proof.verify(&commitment, &key), Ok(want), "key {i}");
    }
}

/// Damage anywhere in the node file (one byte changed, at positions spread over the file) is
/// caught on the way down from the root: opening fails with a typed corruption error, or a read
/// of a key below the damage does, and every read that succeeds gives the key's true value. A
/// block committed on the damaged tree fails with a typed error or gives exactly the state and
/// commitment it gives on an undamaged one: no damage, a branch's prefix included, misplaces a
/// write.
#[test]
fn a_damaged_node_file_gives_typed_errors_never_wrong_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = 3_000u32;
    let value = |i: u32| i.to_le_bytes().repeat(3);
    {
        // One block and one checkpoint: every record in the node file is a live node, so every
        // byte changed below is one the tree depends on.
        let db = Db::open_with(dir.path(), on_disk()).expect("open");
        let mut ws = db.begin(db.finalized()).expect("begin");
        for i in 0..keys {
            ws.put(i.to_be_bytes().repeat(2), value(i)).expect("put");
        }
        let head = db.commit(ws).expect("commit");
        db.finalize(head).expect("finalize");
        db.settle().expect("settle");
    }
    // One more block, and the state and commitment it must give, from an undamaged database.
    let later: Vec<(u32, Vec<u8>)> = (0..keys + 300)
        .step_by(7)
        .map(|i| (i, vec![i as u8; 5]))
        .collect();
    let mut expected: std::collections::BTreeMap<u32, Vec<u8>> =
        (0..keys).map(|i| (i, value(i))).collect();
    expected.extend(later.iter().cloned());
    let reference = {
        let fresh = tempfile::tempdir().expect("tempdir");
        let db = Db::open(fresh.path()).expect("open");
        let mut ws = db.begin(db.finalized()).expect("begin");
        for (i, value) in &expected {
            ws.put(i.to_be_bytes().repeat(2), value.clone())
                .expect("put");
        }
        db.snapshot(db.commit(ws).expect("commit"))
            .expect("snapshot")
            .commitment()
    };
    let original = std::fs::read(dir.path().join("state.nodes")).expect("node file");
    let (mut refused, mut failed_reads, mut failed_commits) = (0, 0, 0);
    let spread = (8..original.len()).step_by(original.len() / 41);
    for at in spread.chain(crate::nodes::prefix_offsets(&original).take(20)) {
        let damaged = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, damaged.path().join(path.file_name().expect("name")))
                .expect("copy");
        }
        let mut bytes = original.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(damaged.path().join("state.nodes"), bytes).expect("damage");
        let db = match Db::open_with(damaged.path(), on_disk()) {
            Ok(db) => db,
            Err(Error::Corrupt { .. }) => {
                refused += 1;
                continue;
            }
            Err(other) => panic!("byte {at}: not a corruption error: {other}"),
        };
        let snapshot = db.snapshot(db.finalized()).expect("snapshot");
        for i in 0..keys {
            match snapshot.try_get(&i.to_be_bytes().repeat(2)) {
                Ok(found) => assert_eq!(found.as_deref(), Some(&value(i)[..]), "byte {at}"),
                Err(Error::Corrupt { .. }) => failed_reads += 1,
                Err(other) => panic!("byte {at}, key {i}: not a corruption error: {other}"),
            }
        }
        // A commit on the damaged tree either fails with a typed error or builds exactly the
        // state (and so the commitment) the same writes build on an undamaged one.
        let mut ws = db.begin(db.finalized()).expect("begin");
        for &(key, ref value) in &later {
            ws.put(key.to_be_bytes().repeat(2), value.clone())
                .expect("put");
        }
        // The build runs behind the commit; when it has already failed, the commit says so.
        let rev = match db.commit(ws) {
            Ok(rev) => rev,
            Err(Error::Poisoned(_)) => {
                failed_commits += 1;
                continue;
            }
            Err(other) => panic!("byte {at}: not a corruption error: {other}"),
        };
        let snapshot = db.snapshot(rev).expect("snapshot");
        let built = (0..keys + 300).try_for_each(|i| {
            let want = expected.get(&i).map(|v| &v[..]);
            let found = snapshot.try_get(&i.to_be_bytes().repeat(2))?;
            assert_eq!(found.as_deref(), want, "byte {at}, key {i} after a commit");
            Ok::<(), Error>(())
        });
        match built {
            Ok(()) => assert_eq!(snapshot.commitment(), reference, "byte {at}"),
            Err(Error::Corrupt { .. } | Error::CommitFailed(_) | Error::Poisoned(_)) => {
                failed_commits += 1
            }
            Err(other) => panic!("byte {at}: not a corruption error: {other}"),
        }
    }
    assert!(refused + failed_reads > 0, "no damage was ever detected");
    assert!(failed_commits > 0, "no commit ever met the damage");
}

#[test]
fn a_node_file_of_another_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("state.nodes"), b"PGNODES1").expect("write");
    let error = Db::open(dir.path()).err().expect("refused");
    assert!(
        error.to_string().contains("another format version"),
        "{error}"
    );
    std::fs::write(dir.path().join("state.nodes"), b"NOTNODES").expect("write");
    let error = Db::open(dir.path()).err().expect("refused");
    assert!(error.to_string().contains("wrong header"), "{error}");
}

#[test]
fn a_write_set_starts_empty_after_another_was_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let base = db.finalized();
    let mut ws = db.begin(base).expect("begin");
    ws.put(b"a".to_vec(), b"1".to_vec()).expect("put");
    ws.delete(b"b".to_vec()).expect("delete");
    let first = db.commit(ws).expect("commit");
    // A fork of the same parent: none of the first block's writes may show through.
    let fork = db.begin(base).expect("begin");
    assert_eq!(fork.get(b"a"), None);
    let second = db.commit(fork).expect("commit");
    assert_eq!(db.snapshot(second).expect("snapshot").get(b"a"), None);
    assert_eq!(
        db.snapshot(first).expect("snapshot").get(b"a").as_deref(),
        Some(&b"1"[..])
    );
}

/// The node files in `dir`, by name.
fn node_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.nodes"))
        .collect();
    names.sort();
    names
}

/// Rewriting the same keys block after block: compaction keeps the node file within a small
/// factor of the live tree (appending alone grows it with every checkpoint), one node file is
/// left, a snapshot taken before the compactions still reads its nodes from the unlinked older
/// file, and the state reopens intact.
#[test]
fn compaction_bounds_the_node_file_and_keeps_old_snapshots_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(dir.path(), on_disk()).expect("open");
    let write_block = |head: RevisionId, block: u32| {
        let mut ws = db.begin(head).expect("begin");
        for i in 0..500u32 {
            ws.put(i.to_be_bytes().to_vec(), block.to_le_bytes().repeat(4))
                .expect("put");
        }
        let rev = db.commit(ws).expect("commit");
        db.finalize(rev).expect("finalize");
        db.settle().expect("settle");
        rev
    };
    let first = write_block(db.finalized(), 0);
    // Nothing below the root is in memory: this snapshot reads through stubs into generation 0.
    let old = db.snapshot(first).expect("snapshot");
    assert_eq!(node_files(dir.path()), ["state.nodes"]);
    let one_block = std::fs::metadata(dir.path().join("state.nodes"))
        .expect("first file")
        .len();
    let mut head = first;
    for block in 1..40 {
        head = write_block(head, block);
    }
    let files = node_files(dir.path());
    assert_eq!(files.len(), 1, "one node file left: {files:?}");
    assert_ne!(
        files[0], "state.nodes",
        "the file was compacted at least once"
    );
    let size = std::fs::metadata(dir.path().join(&files[0]))
        .expect("stat")
        .len();
    assert!(
        size <= 3 * one_block,
        "the node file ({size} bytes) stays within a small factor of one tree ({one_block})"
    );
    for i in [0u32, 250, 499] {
        assert_eq!(
            old.get(&i.to_be_bytes()).as_deref(),
            Some(&0u32.to_le_bytes().repeat(4)[..]),
            "the old snapshot reads its own revision"
        );
    }
    let expected = db.snapshot(head).expect("head").commitment();
    drop(old);
    drop(db);
    let db = Db::open_with(dir.path(), on_disk()).expect("reopen");
    let snapshot = db.snapshot(db.finalized()).expect("snapshot");
    assert_eq!(snapshot.commitment(), expected);
    assert_eq!(
        snapshot.get(&7u32.to_be_bytes()).as_deref(),
        Some(&39u32.to_le_bytes().repeat(4)[..])
    );
}

/// A compaction cut short by a crash leaves a node file the root does not name; opening removes
/// it and reads the one the root names.
#[test]
fn opening_removes_node_files_the_root_does_not_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        checkpoint_bytes: 1,
        ..Options::default()
    };
    let db = Db::open_with(dir.path(), options.clone()).expect("open");
    let mut ws = db.begin(db.finalized()).expect("begin");
    ws.put(b"k".to_vec(), b"v".to_vec()).expect("put");
    let rev = db.commit(ws).expect("commit");
    db.finalize(rev).expect("finalize");
    db.settle().expect("settle");
    drop(db);
    std::fs::write(dir.path().join("state.nodes.1"), b"half a compaction").expect("stray");
    let db = Db::open_with(dir.path(), options).expect("reopen");
    assert_eq!(node_files(dir.path()), ["state.nodes"]);
    let snapshot = db.snapshot(db.finalized()).expect("snapshot");
    assert_eq!(snapshot.get(b"k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_commit_orders_keys_that_tie_on_their_first_eight_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let stems: [&[u8]; 4] = [b"", b"\0", b"abcdefgh", b"abcdefg\0"];
    let mut changes: Vec<Change> = (0..2_000)
        .map(|i| {
            let stem = stems[i % stems.len()];
            let tail: Vec<u8> = (0..rng.gen_range(0..4))
                .map(|_| rng.gen_range(0..3))
                .collect();
            let key = Bytes::from_iter(stem.iter().chain(&tail).copied());
            (key, Some(Bytes::from_slice(&(i as u64).to_le_bytes())))
        })
        .collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    changes.dedup_by(|a, b| a.0 == b.0);
    let mut shuffled = changes.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.gen_range(0..=i));
    }
    let mut sorted = Vec::new();
    changes::sort_into(&mut shuffled, &mut Vec::new(), &mut sorted);
    assert_eq!(sorted, changes);
}

#[test]
fn a_leaf_hash_is_blake3_of_its_documented_encoding_at_every_size() {
    for key_len in [0usize, 1, 8, 60, 125, 126, 300] {
        for value_len in [0usize, 1, 3, 64, 200] {
            let key = vec![0xab; key_len];
            let value = vec![0x5c; value_len];
            let mut encoding = vec![0u8];
            encoding.extend_from_slice(&(key_len as u16).to_le_bytes());
            encoding.extend_from_slice(&key);
            encoding.extend_from_slice(&value);
            let expected = *blake3::hash(&encoding).as_bytes();
            assert_eq!(
                trie::leaf_hash(&key, &value),
                expected,
                "{key_len}+{value_len}"
            );
        }
    }
}

/// One block of `n` random writes, three in ten to existing keys, a tenth of them deletes, values
/// of 8 to 60 bytes: leaves inline and separate, and subtrees of every size rebuilt.
fn big_block(rng: &mut ChaCha8Rng, model: &Model, n: usize) -> (Vec<Write>, Model) {
    let mut next = model.clone();
    let mut writes = Vec::with_capacity(n);
    let existing: Vec<&Vec<u8>> = model.keys().collect();
    for _ in 0..n {
        // Random 8-byte keys fill branches (16 children); 21-byte keys from a small alphabet
        // make long shared prefixes and narrow branches.
        let key: Vec<u8> = if !existing.is_empty() && rng.gen_bool(0.3) {
            existing[rng.gen_range(0..existing.len())].clone()
        } else if rng.gen_bool(0.5) {
            rng.gen::<[u8; 8]>().to_vec()
        } else {
            (0..21)
                .map(|_| rng.gen_range(0..4) * 0x40 + rng.gen_range(0..2))
                .collect()
        };
        if rng.gen_bool(0.1) {
            next.remove(&key);
            writes.push((key, None));
        } else {
            let value = vec![rng.gen(); rng.gen_range(8..61)];
            next.insert(key.clone(), value.clone());
            writes.push((key, Some(value)));
        }
    }
    (writes, next)
}

/// Commits of thousands of writes take the parallel path and hash subtrees in batches; on one
/// thread, on four, and with `commit_sequential` they give the same revision and the documented
/// commitment.
#[test]
fn big_commits_match_the_reference_commitment_on_any_thread_count() {
    // One database per way of building: the committer alone, and pools of one and four.
    let ways = [(1, false), (1, true), (4, true)];
    let dirs: Vec<tempfile::TempDir> = ways
        .iter()
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let dbs: Vec<Db> = ways
        .iter()
        .zip(&dirs)
        .map(|(&(threads, _), dir)| {
            let options = Options {
                commit_threads: threads,
                ..Options::default()
            };
            Db::open_with(dir.path(), options).expect("open")
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut heads: Vec<RevisionId> = dbs.iter().map(Db::finalized).collect();
    let mut model = Model::new();
    for n in [20_000, 5_000, 300, 5_000] {
        let (writes, next) = big_block(&mut rng, &model, n);
        let entries: Vec<(&Vec<u8>, &Vec<u8>)> = next.iter().collect();
        let expected = reference_commitment(&entries);
        for ((db, head), &(threads, parallel)) in dbs.iter().zip(&mut heads).zip(&ways) {
            let mut ws = db.begin(*head).expect("begin");
            for (key, value) in &writes {
                match value {
                    Some(value) => ws.put(key.clone(), value.clone()).expect("put"),
                    None => ws.delete(key.clone()).expect("delete"),
                }
            }
            *head = if parallel {
                db.commit(ws)
            } else {
                db.commit_sequential(ws)
            }
            .expect("commit");
            let snapshot = db.snapshot(*head).expect("retained");
            let how = format!("{n} writes, {threads} threads, parallel {parallel}");
            assert_eq!(snapshot.commitment().0, expected, "{how}");
            assert_eq!(snapshot.len(), next.len(), "{how}");
        }
        model = next;
    }
    for (db, head) in dbs.iter().zip(heads) {
        assert_matches(db, head, &model, &mut rng);
    }
}

/// Revisions the committer has not built yet read like the model: through their own changes,
/// then their parent's, itself pending; a write set on one reads through both; finalize makes
/// them durable before they are built; once built they read the same and commit to the same
/// root as a trie built from scratch.
#[test]
fn pending_revisions_read_through_their_changes_to_their_parents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).expect("open");
    let key = |i: u32| i.to_be_bytes().to_vec();
    let mut model = Model::new();
    let mut ws = db.begin(db.finalized()).expect("begin");
    for i in 0..1_000 {
        ws.put(key(i), vec![1]).expect("put");
        model.insert(key(i), vec![1]);
    }
    let base = db.commit(ws).expect("commit");
    db.settle().expect("settle");

    // Builds wait at the gate: the first revision is taken and held, the second queued.
    let gate = db.committer.gate.clone();
    let held = gate.lock();
    let block = |parent: RevisionId, model: &mut Model, step: u32, value: u8| {
        let mut ws = db.begin(parent).expect("begin");
        for i in (0..1_100).step_by(step as usize) {
            assert_eq!(
                ws.get(&key(i)).as_deref(),
                model.get(&key(i)).map(Vec::as_slice)
            );
            if i % 3 == 0 {
                ws.delete(key(i)).expect("delete");
                model.remove(&key(i));
            } else {
                ws.put(key(i), vec![value]).expect("put");
                model.insert(key(i), vec![value]);
            }
        }
        db.commit(ws).expect("commit")
    };
    let mut model_a = model.clone();
    let a = block(base, &mut model_a, 2, 2);
    let mut model_b = model_a.clone();
    let b = block(a, &mut model_b, 5, 3);
    let reads_like = |snapshot: &Snapshot, model: &Model| {
        let keys: Vec<Vec<u8>> = (0..1_200).map(key).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        assert_reads_many(&snapshot.get_many(&refs), &keys, model);
        for i in 0..1_200 {
            let got = snapshot.get(&key(i));
            let rev = snapshot.id();
            assert_eq!(
                got.as_deref(),
                model.get(&key(i)).map(Vec::as_slice),
                "{rev:?} {i}"
            );
        }
    };
    let snapshots = [
        (db.snapshot(a).expect("a"), &model_a),
        (db.snapshot(b).expect("b"), &model_b),
    ];
    for (snapshot, model) in &snapshots {
        reads_like(snapshot, model);
        assert!(
            matches!(&snapshot.view, View::Pending(p) if p.built().is_none()),
            "{:?} is still pending",
            snapshot.id()
        );
    }
    db.finalize(b).expect("finalize before the build");

    drop(held);
    for (snapshot, model) in &snapshots {
        reads_like(snapshot, model);
        let entries: Vec<(&Vec<u8>, &Vec<u8>)> = model.iter().collect();
        assert_eq!(snapshot.commitment().0, reference_commitment(&entries));
        assert_eq!(snapshot.len(), model.len());
    }
    drop(db);
    let db = Db::open(dir.path()).expect("reopen");
    assert_eq!(db.finalized(), b);
    assert_matches(&db, b, &model_b, &mut ChaCha8Rng::seed_from_u64(5));
}

/// A copy of a branch takes the stride its leaves need after the edit: it grows with a longer
/// record and shrinks once the longest is gone, and every leaf reads back either way.
#[test]
fn a_copied_branch_takes_the_stride_of_the_leaves_it_keeps() {
    let ctx = Ctx::new(false);
    let put = |key: u8, len: usize| {
        let value = Bytes::from_slice(&vec![key; len]);
        (Bytes::from_slice(&[key]), Some(value))
    };
    let stride = |root: &Option<Node>| match root {
        Some(Node::Branch(shape, b)) => {
            assert_eq!(shape.stride(), b.stride());
            b.stride()
        }
        _ => panic!("one branch over the keys"),
    };
    // One-byte keys 0x10 to 0x13 share their first nibble: one branch, four inline leaves.
    let writes = [put(0x10, 4), put(0x11, 4), put(0x12, 4), put(0x13, 40)];
    let mut root = trie::apply(ctx, None, &writes).expect("apply").0;
    // Records are 2 + key + value bytes: 7 for the short values, 43 for the long one.
    for (change, expected) in [(put(0x13, 4), 16), (put(0x11, 20), 24), (put(0x11, 4), 16)] {
        let key = change.0.clone();
        let value = change.1.clone();
        root = trie::apply(ctx, root.as_ref(), &[change]).expect("apply").0;
        assert_eq!(stride(&root), expected, "after writing {key:?}");
        let node = root.as_ref().expect("a root");
        assert_eq!(trie::get(node, &key).expect("get"), value);
        assert_eq!(
            trie::get(node, &[0x10]).expect("get").as_deref(),
            Some(&[0x10; 4][..])
        );
    }
    let deleted = (Bytes::from_slice(&[0x12]), None);
    let grown = put(0x13, 28);
    root = trie::apply(ctx, root.as_ref(), &[deleted, grown])
        .expect("apply")
        .0;
    assert_eq!(stride(&root), 32);
}

/// The log between checkpoints grows with the live tree: after a checkpoint whose node file
/// holds `live` bytes, the next starts at the first finalize that brings the log past `live`
/// bytes (`checkpoint_live_percent: 100`), or at every finalize with the growth turned off.
#[test]
fn the_checkpoint_interval_grows_with_the_live_tree() {
    // A block of 100 rewrites of 4-byte keys with 8-byte values is one log record of exactly
    // 36 (frame) + 12 (revision, count) + 100 * 21 (lengths, key, tag, value) bytes.
    const RECORD_BYTES: u64 = 36 + 12 + 100 * 21;
    for percent in [0, 100] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options {
            checkpoint_bytes: 1,
            checkpoint_live_percent: percent,
            ..Options::default()
        };
        let db = Db::open_with(dir.path(), options).expect("open");
        let value = |block: u64| block.to_le_bytes().to_vec();
        let pairs = (0..5_000u32).map(|i| (i.to_be_bytes().to_vec(), value(0)));
        let (loaded, root) = load_and_checkpoint(&db, dir.path(), pairs.collect());
        let live = root.base_bytes;
        let expected = if percent == 0 {
            1
        } else {
            live.div_ceil(RECORD_BYTES)
        };
        let mut blocks = 0;
        let checkpointed = loop {
            blocks += 1;
            let mut ws = db.begin(db.finalized()).expect("begin");
            for i in 0..100u32 {
                let key = (i * 37 + blocks as u32).to_be_bytes().to_vec();
                ws.put(key, value(blocks)).expect("put");
            }
            let rev = db.commit(ws).expect("commit");
            db.finalize(rev).expect("finalize");
            db.settle().expect("settle");
            let root = crate::root::read(dir.path())
                .expect("root")
                .expect("a root");
            if root.revision != loaded.0 {
                break rev;
            }
            assert!(blocks < expected, "no checkpoint after {blocks} blocks");
        };
        assert_eq!(blocks, expected, "live {live} bytes, growth {percent}%");
        let root = crate::root::read(dir.path())
            .expect("root")
            .expect("a root");
        assert_eq!(root.revision, checkpointed.0);
    }
}

/// A subtree of 3 to 17 small keys, two of which share a slot of their split, is one bucket
/// (keys that do not share one make a flat branch): an 18th key splits it, a delete gathers
/// it back, a value too long to be inline splits it and one shrunk to fit gathers it again,
/// and keys deleted in one child of a branch gather the whole branch into a bucket. At every
/// step the shape matches the documented commitment, and lookups, ranges and proofs (of keys
/// present, and of keys absent between the bucket's) agree with the model.
#[test]
fn a_bucket_splits_past_its_limit_and_gathers_back() {
    let ctx = Ctx::new(false);
    // Keys 0xab 0xcd i: all under one path; i = 0x10.. and 0x20.. differ at the fifth nibble.
    let key = |i: u8| vec![0xab, 0xcd, i];
    let mut model = Model::new();
    let mut root: Option<Node> = None;
    let is_bucket = |root: &Option<Node>| bucket::is_bucket(root.as_ref().expect("a root"));
    let apply = |root: &mut Option<Node>, writes: Vec<Write>, model: &mut Model| {
        let changes: Vec<trie::Change> = writes
            .iter()
            .map(|(k, v)| (Bytes::from_slice(k), v.as_deref().map(Bytes::from_slice)))
            .collect();
        for (k, v) in writes {
            match v {
                Some(v) => model.insert(k, v),
                None => model.remove(&k),
            };
        }
        *root = trie::apply(ctx, root.as_ref(), &changes).expect("apply").0;
        let node = root.as_ref().expect("a root");
        let entries: Vec<(&Vec<u8>, &Vec<u8>)> = model.iter().collect();
        assert_eq!(*node.hash(), reference_commitment(&entries));
        for probe in 0..=0x30u8 {
            let got = trie::get(node, &key(probe))
                .expect("get")
                .map(|v| v.to_vec());
            assert_eq!(got, model.get(&key(probe)).cloned(), "key {probe:#x}");
            let proof = proof::prove(Some(node), &key(probe)).expect("prove");
            assert_eq!(
                proof.verify(node.hash(), &key(probe)),
                Ok(model.get(&key(probe)).cloned()),
                "proof of {probe:#x}"
            );
        }
        let (start, end) = (key(0x13), key(0x22));
        let range = trie::Iter::new(
            Some(node.clone()),
            Bound::Excluded(start.clone()),
            Bound::Included(end.clone()),
        );
        let got: Vec<Vec<u8>> = range.map(|e| e.expect("entry").0.to_vec()).collect();
        let expected: Vec<Vec<u8>> = model
            .range((Bound::Excluded(start), Bound::Included(end)))
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(got, expected);
    };
    // One key at a time: 0x10 to 0x1f take a slot each of a flat branch; 0x20 moves the
    // split a nibble up, where the sixteen share a slot: seventeen keys, one bucket.
    for i in 0x10..0x21u8 {
        apply(&mut root, vec![(key(i), Some(vec![i; 8]))], &mut model);
        assert_eq!(is_bucket(&root), model.len() == 17, "{} keys", model.len());
    }
    assert_eq!(model.len(), 17);
    apply(&mut root, vec![(key(0x21), Some(vec![1; 8]))], &mut model);
    assert!(!is_bucket(&root), "18 keys split");
    apply(&mut root, vec![(key(0x15), None)], &mut model);
    assert!(is_bucket(&root), "17 keys gather");
    apply(&mut root, vec![(key(0x16), Some(vec![2; 60]))], &mut model);
    assert!(!is_bucket(&root), "a long value splits");
    apply(&mut root, vec![(key(0x16), Some(vec![3; 8]))], &mut model);
    assert!(is_bucket(&root), "a shrunk value gathers");
    // Eighteen keys again, then deletes only under the 0x1_ nibble: the root branch's child
    // there shrinks, and the branch gathers its two children into one bucket.
    apply(&mut root, vec![(key(0x15), Some(vec![4; 8]))], &mut model);
    assert!(!is_bucket(&root));
    apply(
        &mut root,
        vec![(key(0x10), None), (key(0x11), None)],
        &mut model,
    );
    assert!(is_bucket(&root), "16 keys gather");
    // One key's value replaced in place, the shortest record becoming the longest: still one
    // bucket, the stride grown.
    apply(&mut root, vec![(key(0x17), Some(vec![5; 20]))], &mut model);
    assert!(is_bucket(&root), "a replaced value keeps the bucket");
    // A bucket's proof: its records out of order, one left out, or the key's own record moved
    // among the siblings to claim it absent, all fail.
    let node = root.as_ref().expect("a root");
    let present = key(0x16);
    let proof = proof::prove(Some(node), &present).expect("prove");
    let last = proof.steps.len() - 1;
    assert_eq!(proof.steps[last].pos, 0xfff);
    let mut swapped = proof.clone();
    swapped.steps[last].siblings.swap(0, 1);
    let mut dropped = proof.clone();
    dropped.steps[last].siblings.pop();
    let mut hidden = proof.clone();
    let proof::End::Leaf { key: k, value } = proof.end.clone() else {
        panic!("a present key's proof ends at its leaf");
    };
    let at = hidden.steps[last]
        .siblings
        .partition_point(|s| matches!(s, proof::Sibling::Leaf { key, .. } if *key < k));
    hidden.steps[last]
        .siblings
        .insert(at, proof::Sibling::Leaf { key: k, value });
    hidden.end = proof::End::NoChild;
    for tampered in [swapped, dropped, hidden] {
        assert!(
            tampered.verify(node.hash(), &present).is_err(),
            "{tampered:?}"
        );
    }
    // Deletes down to one key: a leaf node at the root.
    let deletes: Vec<Write> = model.keys().skip(1).map(|k| (k.clone(), None)).collect();
    apply(&mut root, deletes, &mut model);
    assert!(matches!(root, Some(Node::Leaf(_))));
}

/// The bucket scan's key order is the byte order, at every length around its eight-byte fast
/// path.
#[test]
fn key_order_is_byte_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..20_000 {
        let a: Vec<u8> = (0..rng.gen_range(0..12))
            .map(|_| rng.gen_range(0..3))
            .collect();
        let b: Vec<u8> = (0..rng.gen_range(0..12))
            .map(|_| rng.gen_range(0..3))
            .collect();
        assert_eq!(trie::key_order(&a, &b), a.cmp(&b), "{a:?} {b:?}");
    }
}
