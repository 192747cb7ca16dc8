//! Store versioned state: one root per block, forks, snapshots, finalization, durability, commitment.
//!
//! # Model
//! Every block is a *revision*: an immutable key/value map with an id. [`Db::begin`] opens a
//! [`WriteSet`] on any retained revision (so several children of one revision, i.e. forks, can exist
//! at once); [`Db::commit`] freezes it into a new revision. [`Db::snapshot`] returns a [`Snapshot`]
//! of any retained revision: `Send + Sync`, O(1) to open and clone, and readable from any thread
//! while the writer keeps committing. [`Db::finalize`] makes a revision durable with one `fsync`,
//! drops every revision that does not descend from it, and keeps the later, not yet final
//! revisions open.
//!
//! # Design (foundation version)
//! Each revision holds a persistent ordered map (`imbl::OrdMap`, a B-tree with reference-counted,
//! structurally shared nodes), so a commit copies only the paths it changes and a snapshot is a
//! pointer copy. Durability is an append-only log of finalized revisions' changes plus periodic
//! checkpoints (see [`log`]). The commitment is an LtHash over all pairs (see [`commitment`]),
//! updated in O(changed keys). This whole-state-in-memory design is the correctness reference; the
//! state database issue replaces the storage underneath this API with one that spills beyond RAM.
//!
//! # Invariants
//! - A snapshot never changes, whatever is committed or finalized later.
//! - After any crash, [`Db::open`] yields exactly the last finalized revision.
//! - After an I/O error the database refuses further writes ([`Error::Poisoned`]).
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let db = peregrine_state::Db::open(dir.path()).unwrap();
//! let mut ws = db.begin(db.finalized()).unwrap();
//! ws.put(b"k".to_vec(), b"v".to_vec()).unwrap();
//! let rev = db.commit(ws).unwrap();
//! db.finalize(rev).unwrap();
//! assert_eq!(db.snapshot(rev).unwrap().get(b"k"), Some(&b"v"[..]));
//! ```

pub mod commitment;
pub mod frame;
pub mod log;

use commitment::LtHash;
use log::{Change, Durable, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use parking_lot::{Mutex, RwLock};
use peregrine_types::Hash;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// A stored key or value. Up to 32 bytes live inline (account keys are 21 bytes, account records
/// 24), so copying a tree node on write is a memcpy rather than one allocation per entry.
pub type Bytes = smallvec::SmallVec<[u8; 32]>;

/// The persistent map each revision holds.
pub type Map = imbl::OrdMap<Bytes, Bytes>;

/// The identity of a revision; ids increase with every commit and survive reopening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId(pub u64);

/// Errors of the state database.
#[derive(Debug, Error)]
pub enum Error {
    /// The revision is not retained (never existed, or dropped by finalization).
    #[error("revision {0:?} is not retained")]
    UnknownRevision(RevisionId),
    /// `finalize` was asked for a revision that does not descend from the finalized one.
    #[error("revision {0:?} does not descend from the finalized revision {1:?}")]
    NotDescendant(RevisionId, RevisionId),
    /// A key or value exceeds the stored-size bounds.
    #[error("{what} of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Key or value.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: u32,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk failed its integrity check.
    #[error("corrupt state: {what}")]
    Corrupt {
        /// What was found.
        what: &'static str,
    },
    /// An earlier I/O error left the database refusing writes.
    #[error("state database refuses writes after an earlier I/O error: {0}")]
    Poisoned(String),
}

/// A read-only view of one revision. Cheap to clone; share it across threads freely.
#[derive(Clone)]
pub struct Snapshot {
    id: RevisionId,
    map: Map,
    lthash: Arc<LtHash>,
}

impl Snapshot {
    /// The revision this snapshot reads.
    pub fn id(&self) -> RevisionId {
        self.id
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Bytes::as_slice)
    }

    /// Pairs with keys in `range`, in key order.
    pub fn range<'a, R: RangeBounds<[u8]> + 'a>(
        &'a self,
        range: R,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.map
            .range::<R, [u8]>(range)
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the revision holds no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The state commitment of this revision.
    pub fn commitment(&self) -> Hash {
        self.lthash.digest()
    }
}

/// Uncommitted changes on top of a parent revision. Reads see the writes made so far.
pub struct WriteSet {
    parent: Snapshot,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl WriteSet {
    /// The revision this write set builds on.
    pub fn parent(&self) -> RevisionId {
        self.parent.id
    }

    /// The value under `key`, including this write set's own writes.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.writes.get(key) {
            Some(value) => value.as_deref(),
            None => self.parent.get(key),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        check_len("key", key.len(), MAX_KEY_BYTES)?;
        check_len("value", value.len(), MAX_VALUE_BYTES)?;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Sets many keys at once; `pairs` must be sorted by key with no duplicates. Into an empty
    /// write set this is a bulk build, much cheaper than one `put` per key.
    pub fn put_sorted(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), Error> {
        for (key, value) in &pairs {
            check_len("key", key.len(), MAX_KEY_BYTES)?;
            check_len("value", value.len(), MAX_VALUE_BYTES)?;
        }
        debug_assert!(
            pairs.windows(2).all(|w| w[0].0 < w[1].0),
            "pairs must be sorted and unique"
        );
        let pairs = pairs.into_iter().map(|(key, value)| (key, Some(value)));
        if self.writes.is_empty() {
            self.writes = pairs.collect();
        } else {
            self.writes.extend(pairs);
        }
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), Error> {
        check_len("key", key.len(), MAX_KEY_BYTES)?;
        self.writes.insert(key, None);
        Ok(())
    }

    /// Number of keys written so far.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Changed keys per unit of parallel work: large enough to amortise scheduling, small enough to
/// balance two cores on a 10,000-transaction block.
const COMMITMENT_CHUNK: usize = 512;

/// The parent's map with `writes` applied.
fn build_map(parent: &Map, writes: &[Change]) -> Map {
    let mut map = parent.clone();
    for (key, value) in writes {
        match value {
            Some(value) => map.insert(Bytes::from_slice(key), Bytes::from_slice(value)),
            None => map.remove(key.as_slice()),
        };
    }
    map
}

/// The commitment change `writes` make to `parent`, and which writes change anything at all.
fn commitment_delta(parent: &Snapshot, writes: &[Change], parallel: bool) -> (LtHash, Vec<bool>) {
    let chunk_delta = |chunk: &[Change]| {
        let mut delta = LtHash::default();
        let mut changed = Vec::with_capacity(chunk.len());
        for (key, new) in chunk {
            let old = parent.get(key);
            changed.push(old != new.as_deref());
            if old == new.as_deref() {
                continue;
            }
            if let Some(old) = old {
                delta.remove(key, old);
            }
            if let Some(new) = new {
                delta.insert(key, new);
            }
        }
        (delta, changed)
    };
    let parts: Vec<(LtHash, Vec<bool>)> = if parallel {
        writes
            .par_chunks(COMMITMENT_CHUNK)
            .map(chunk_delta)
            .collect()
    } else {
        writes.chunks(COMMITMENT_CHUNK).map(chunk_delta).collect()
    };
    let mut total = LtHash::default();
    let mut changed = Vec::with_capacity(writes.len());
    for (delta, flags) in parts {
        total.add(&delta);
        changed.extend(flags);
    }
    (total, changed)
}

fn check_len(what: &'static str, len: usize, max: u32) -> Result<(), Error> {
    if len > max as usize {
        return Err(Error::TooLarge { what, len, max });
    }
    Ok(())
}

struct Revision {
    snapshot: Snapshot,
    parent: Option<RevisionId>,
    changes: Arc<Vec<Change>>,
}

struct Inner {
    revisions: HashMap<RevisionId, Revision>,
    finalized: RevisionId,
    next_id: u64,
    poisoned: Option<String>,
}

impl Inner {
    fn check_writable(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// The revisions from just after the finalized one down to `rev`, oldest first.
    fn path_from_finalized(&self, rev: RevisionId) -> Result<Vec<RevisionId>, Error> {
        let mut path = Vec::new();
        let mut cursor = rev;
        while cursor != self.finalized {
            path.push(cursor);
            let revision = self
                .revisions
                .get(&cursor)
                .ok_or(Error::UnknownRevision(cursor))?;
            cursor = revision
                .parent
                .ok_or(Error::NotDescendant(rev, self.finalized))?;
        }
        path.reverse();
        Ok(path)
    }

    /// Drops every revision that does not descend from (or equal) `root`.
    fn prune_to(&mut self, root: RevisionId) {
        let mut keep: HashMap<RevisionId, bool> = HashMap::new();
        keep.insert(root, true);
        let ids: Vec<RevisionId> = self.revisions.keys().copied().collect();
        for id in ids {
            self.descends(id, root, &mut keep);
        }
        self.revisions
            .retain(|id, _| keep.get(id).copied().unwrap_or(false));
    }

    fn descends(
        &self,
        id: RevisionId,
        root: RevisionId,
        memo: &mut HashMap<RevisionId, bool>,
    ) -> bool {
        let mut chain = Vec::new();
        let mut cursor = Some(id);
        let answer = loop {
            match cursor {
                None => break false,
                Some(c) if c < root => break false,
                Some(c) => {
                    if let Some(&known) = memo.get(&c) {
                        break known;
                    }
                    chain.push(c);
                    cursor = self.revisions.get(&c).and_then(|r| r.parent);
                }
            }
        };
        for c in chain {
            memo.insert(c, answer);
        }
        answer
    }
}

/// The versioned state database.
pub struct Db {
    inner: RwLock<Inner>,
    durable: Mutex<Durable>,
}

impl Db {
    /// Opens the database in `dir`, recovering the last finalized revision.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let (durable, recovered) = Durable::open(dir)?;
        let mut lthash = LtHash::default();
        for (key, value) in recovered.map.iter() {
            lthash.insert(key, value);
        }
        let id = RevisionId(recovered.revision);
        let root = Revision {
            snapshot: Snapshot {
                id,
                map: recovered.map,
                lthash: Arc::new(lthash),
            },
            parent: None,
            changes: Arc::new(Vec::new()),
        };
        let inner = Inner {
            revisions: HashMap::from([(id, root)]),
            finalized: id,
            next_id: recovered.revision + 1,
            poisoned: None,
        };
        Ok(Self {
            inner: RwLock::new(inner),
            durable: Mutex::new(durable),
        })
    }

    /// The last finalized revision.
    pub fn finalized(&self) -> RevisionId {
        self.inner.read().finalized
    }

    /// Every retained revision, in id order.
    pub fn retained(&self) -> Vec<RevisionId> {
        let mut ids: Vec<RevisionId> = self.inner.read().revisions.keys().copied().collect();
        ids.sort();
        ids
    }

    /// A read-only view of `rev`.
    pub fn snapshot(&self, rev: RevisionId) -> Result<Snapshot, Error> {
        let inner = self.inner.read();
        let revision = inner
            .revisions
            .get(&rev)
            .ok_or(Error::UnknownRevision(rev))?;
        Ok(revision.snapshot.clone())
    }

    /// Opens a write set on top of `parent`.
    pub fn begin(&self, parent: RevisionId) -> Result<WriteSet, Error> {
        self.inner.read().check_writable()?;
        Ok(WriteSet {
            parent: self.snapshot(parent)?,
            writes: BTreeMap::new(),
        })
    }

    /// Freezes `ws` into a new revision and returns its id.
    ///
    /// The commitment update is spread over the current rayon pool (the caller's, inside
    /// `ThreadPool::install`): each changed key's contribution is independent and the sum is
    /// order-free, so the result is the same on any number of threads.
    pub fn commit(&self, ws: WriteSet) -> Result<RevisionId, Error> {
        self.commit_with(ws, true)
    }

    /// [`Db::commit`] on the calling thread alone: for executors that must stay single-threaded.
    pub fn commit_sequential(&self, ws: WriteSet) -> Result<RevisionId, Error> {
        self.commit_with(ws, false)
    }

    fn commit_with(&self, ws: WriteSet, parallel: bool) -> Result<RevisionId, Error> {
        let WriteSet { parent, writes } = ws;
        let writes: Vec<Change> = writes.into_iter().collect();
        // Old values come from the immutable parent, so the commitment delta (spread over the
        // pool) is computed while one thread builds the new map.
        let (map, (delta, changed)) = if parallel {
            rayon::join(
                || build_map(&parent.map, &writes),
                || commitment_delta(&parent, &writes, true),
            )
        } else {
            (
                build_map(&parent.map, &writes),
                commitment_delta(&parent, &writes, false),
            )
        };
        let changes: Vec<Change> = writes
            .into_iter()
            .zip(changed)
            .filter_map(|(write, changed)| changed.then_some(write))
            .collect();
        let mut lthash = (*parent.lthash).clone();
        lthash.add(&delta);
        let mut inner = self.inner.write();
        inner.check_writable()?;
        if !inner.revisions.contains_key(&parent.id) {
            return Err(Error::UnknownRevision(parent.id));
        }
        let id = RevisionId(inner.next_id);
        inner.next_id += 1;
        let snapshot = Snapshot {
            id,
            map,
            lthash: Arc::new(lthash),
        };
        let revision = Revision {
            snapshot,
            parent: Some(parent.id),
            changes: Arc::new(changes),
        };
        inner.revisions.insert(id, revision);
        Ok(id)
    }

    /// Makes `rev` durable (one fsync) and drops every revision not descending from it.
    pub fn finalize(&self, rev: RevisionId) -> Result<(), Error> {
        let (path, batch) = {
            let inner = self.inner.read();
            inner.check_writable()?;
            let path = inner.path_from_finalized(rev)?;
            let batch: Vec<(u64, Arc<Vec<Change>>)> = path
                .iter()
                .map(|id| (id.0, inner.revisions[id].changes.clone()))
                .collect();
            (path, batch)
        };
        if path.is_empty() {
            return Ok(());
        }
        let mut durable = self.durable.lock();
        let records: Vec<(u64, &[Change])> = batch
            .iter()
            .map(|(id, changes)| (*id, changes.as_slice()))
            .collect();
        if let Err(error) = durable.append(&records) {
            self.inner.write().poisoned = Some(error.to_string());
            return Err(error);
        }
        let snapshot = {
            let mut inner = self.inner.write();
            inner.finalized = rev;
            inner.prune_to(rev);
            if let Some(root) = inner.revisions.get_mut(&rev) {
                root.parent = None;
            }
            inner.revisions[&rev].snapshot.clone()
        };
        if durable.wants_compaction() {
            if let Err(error) = durable.compact(rev.0, &snapshot.map) {
                self.inner.write().poisoned = Some(error.to_string());
                return Err(error);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
