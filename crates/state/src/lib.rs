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
//! # Design
//! - **Revisions are roots of one copy-on-write Merkle radix trie** (`trie`). A write set is an
//!   in-memory buffer; `commit` merges it into the parent's trie in one sorted pass, copying only the
//!   changed paths and hashing only the new nodes, so the state commitment of every revision costs
//!   O(changed keys × depth). Snapshots and forks are a pointer copy.
//! - **The merge runs on a committer thread** (`pending`): `commit` sorts the write set, queues
//!   it and returns; until the trie is built, the revision reads through its sorted changes to
//!   its parent, and what needs the trie itself (commitment, proofs, ranges) waits for it. The
//!   next block's execution overlaps the previous block's merge and hashing.
//! - **Finalize appends the newly final revisions' changes to a write-ahead log** ([`log`]) and
//!   syncs it once. Nothing else is written on the finalize path.
//! - **A background checkpointer writes finalized tries to the node file** ([`nodes`]): only the
//!   nodes not written before, children first, then one sync and an atomically replaced root file
//!   ([`root`]). The log's older file is recycled once a checkpoint covers it. Once the node file
//!   exceeds twice its estimated live size, a checkpoint compacts instead: it writes the whole tree
//!   into a new file generation and retires the old file (modules `checkpoint` and [`nodes`]).
//! - **Beyond memory**: nodes in the node file can be dropped from memory and stand in the trie as
//!   stubs, loaded on demand through the operating system's page cache. When the estimated resident
//!   size exceeds [`Options::memory_budget`], each completed checkpoint replaces the persisted nodes
//!   below a depth that fits the budget by stubs.
//! - **Reopening** loads the checkpointed trie (up to the budget) and replays the log records the
//!   checkpoint does not cover: its time grows with the live data and the log, never with history.
//!
//! # Invariants
//! - A snapshot never changes, whatever is committed or finalized later; a pending one reads the
//!   same before and after its trie is built.
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
//! assert_eq!(db.snapshot(rev).unwrap().get(b"k").as_deref(), Some(&b"v"[..]));
//! ```

pub mod frame;
pub mod log;
pub mod nodes;
pub mod proof;
pub mod root;
pub(crate) mod trie;

mod background;
mod branch;
mod bucket;
mod changes;
mod checkpoint;
mod hashing;
mod pending;
mod prefixes;
mod recycle;
mod scout;

use background::{Background, Handoff};
use changes::{Changes, Spares};
use checkpoint::{Checkpointer, FileState};
use log::{Change, Wal, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use nodes::NodeFile;
use parking_lot::{Mutex, RwLock};
use pending::{Committer, Pending};
use peregrine_types::Hash;
use std::collections::HashMap;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use thiserror::Error;
use trie::{Ctx, Node};

/// A stored key or value, as read. Up to 32 bytes live inline (account keys are 21 bytes, account
/// records 24), so a read allocates nothing.
pub type Bytes = smallvec::SmallVec<[u8; 32]>;

/// The identity of a revision; ids increase with every commit and survive reopening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId(pub u64);

/// Tuning of a database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Log bytes after which the next finalize starts a checkpoint (and may recycle a log file),
    /// at least. The interval grows with the live data (`checkpoint_live_percent`) and shrinks
    /// under a small memory budget: see [`Options::checkpoint_threshold`].
    pub checkpoint_bytes: u64,
    /// How much log, as a percentage of the live tree's estimated size in the node file, may
    /// accumulate before a checkpoint, where that is more than `checkpoint_bytes`; 0 keeps the
    /// interval at `checkpoint_bytes`. With random keys a checkpoint rewrites nearly the whole
    /// tree whatever its interval, so a fixed interval writes the tree once per fixed amount of
    /// log, ever more often relative to the data as it grows; an interval proportional to the
    /// tree bounds the device bytes written per logical byte, and the log replayed on reopen stays
    /// proportional to the live data.
    pub checkpoint_live_percent: u64,
    /// Resident trie size the database aims to stay under; beyond it, persisted nodes are
    /// dropped from memory after each checkpoint and read from the node file when needed.
    pub memory_budget: u64,
    /// Node files smaller than this are never compacted; larger ones are once they exceed twice
    /// their estimated live size (see `docs/STATE.md`, "On disk").
    pub compact_min_bytes: u64,
    /// Threads that build a large commit's trie, in a pool the database owns; 0: one per core.
    /// The trie is a function of its keys alone, so this changes the speed, never the result.
    pub commit_threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            checkpoint_bytes: 64 << 20,
            checkpoint_live_percent: 100,
            memory_budget: default_memory_budget(),
            compact_min_bytes: 64 << 20,
            commit_threads: 0,
        }
    }
}

impl Options {
    /// The log bytes that start a checkpoint when the live tree takes about `live_bytes` in the
    /// node file: `checkpoint_bytes`, or `checkpoint_live_percent` of `live_bytes` if that is
    /// more, and less when the memory budget is small. Nodes built since the last checkpoint
    /// cannot be dropped from memory, and with random keys they take up to about twenty times the
    /// log bytes that describe them (a new leaf and a copied branch per change), so
    /// checkpointing every budget / 64 log bytes keeps them within about a third of the budget.
    pub fn checkpoint_threshold(&self, live_bytes: u64) -> u64 {
        let grown = live_bytes.saturating_mul(self.checkpoint_live_percent) / 100;
        self.checkpoint_bytes
            .max(grown)
            .min(self.memory_budget / 64)
    }
}

/// Half of the machine's memory, or 4 GiB where that cannot be read.
fn default_memory_budget() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    total_kib.map_or(4 << 30, |kib| kib * 1024 / 2)
}

/// Changes replayed in one merge into the trie on reopen, at most (one record may hold more).
/// Applying a batch copies each touched branch once, where applying its records one by one
/// copied the top of the trie once per record; see [`log::replay_batches`].
const REPLAY_BATCH_CHANGES: usize = 1 << 22;

/// Estimated resident bytes per key of a fully loaded trie (leaf, its share of branches):
/// `memory_profile` measured 118 at 4M random keys and 112 at 20M (159 and 177 while inline
/// leaves kept their own hashes).
const RESIDENT_BYTES_PER_KEY: u64 = 120;
/// Estimated resident bytes per branch node above the bottom level (16 child nodes).
const RESIDENT_BYTES_PER_BRANCH: u64 = 400;

/// The trie depth to keep in memory for `keys` keys under `budget` (`usize::MAX`: all of it).
/// The settled trie gets a quarter of the budget once it no longer fits whole; the rest is for
/// the nodes built since the last checkpoint (see [`Options::checkpoint_threshold`]).
fn resident_depth(keys: u64, budget: u64) -> usize {
    if keys.saturating_mul(RESIDENT_BYTES_PER_KEY) <= budget {
        return usize::MAX;
    }
    let budget = budget / 4;
    let mut total = 0u64;
    let mut level = 1u64;
    for depth in 0.. {
        total = total.saturating_add(level.min(keys).saturating_mul(RESIDENT_BYTES_PER_BRANCH));
        if total > budget || level >= keys {
            return depth.max(1);
        }
        level = level.saturating_mul(16);
    }
    unreachable!("the loop returns")
}

/// Errors of the state database.
#[derive(Debug, Error)]
pub enum Error {
    /// The revision is not retained (never existed, or dropped by finalization).
    #[error("revision {0:?} is not retained")]
    UnknownRevision(RevisionId),
    /// `discard` was asked for the finalized revision, which only a later finalize replaces.
    #[error("revision {0:?} is the finalized revision and cannot be discarded")]
    DiscardFinalized(RevisionId),
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
    /// Building the trie of a committed revision failed (see `pending`), so it cannot be read.
    #[error("the revision's trie could not be built: {0}")]
    CommitFailed(String),
}

/// Why the database refuses writes, once it does: set by the first failure, on any thread.
#[derive(Default)]
struct Poison(OnceLock<String>);

impl Poison {
    /// Refuses writes from now on; the first reason given is kept.
    fn set(&self, reason: String) {
        let _ = self.0.set(reason);
    }

    fn check(&self) -> Result<(), Error> {
        match self.0.get() {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }
}

/// A read-only view of one revision. Cheap to clone; share it across threads freely.
#[derive(Clone)]
pub struct Snapshot {
    id: RevisionId,
    view: View,
    /// Where the last reference to a pruned revision's tree is freed.
    freer: Handoff,
}

/// What a snapshot reads.
#[derive(Clone)]
enum View {
    /// A built trie (its root, `None` when empty) and its key count.
    Built(Option<Node>, u64),
    /// A revision the committer may not have built yet ([`pending`]).
    Pending(Arc<Pending>),
}

impl Drop for Snapshot {
    /// The last snapshot of a pruned revision owns every node that revision alone held: tens of
    /// thousands per block. They are freed on the background thread, not on the thread that
    /// happened to let go last. (A pending revision's trie is handed over by `Pending` itself.)
    fn drop(&mut self) {
        if let View::Built(root, _) = &mut self.view {
            free_tree(&self.freer, root.take());
        }
    }
}

/// The panic of the reads that do not return errors ([`Snapshot::get`] and its kin): a node
/// cannot execute blocks without its state.
fn read_failed<T>(error: Error) -> T {
    panic!("state read failed: {error}")
}

/// Drops `root`: on the background thread if this is the last handle to a branch (a whole
/// tree to free), here otherwise (only a count to decrement). Nothing can take a new reference
/// to a root while its last handle is the one being dropped.
fn free_tree(freer: &Handoff, root: Option<Node>) {
    if matches!(&root, Some(Node::Branch(_, branch)) if branch.is_unique()) {
        freer.drop_later(root);
    }
}

impl Snapshot {
    /// The revision this snapshot reads.
    pub fn id(&self) -> RevisionId {
        self.id
    }

    /// The value under `key`.
    ///
    /// # Panics
    /// If a node that is only on disk cannot be read back (an I/O error, or damage its hash
    /// detects): a node cannot execute blocks without its state. [`Snapshot::try_get`] returns
    /// the error instead.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.try_get(key).unwrap_or_else(read_failed)
    }

    /// The value under `key`, or the error reading it from disk.
    pub fn try_get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        match &self.view {
            View::Built(None, _) => Ok(None),
            View::Built(Some(root), _) => trie::get(root, key),
            View::Pending(pending) => pending.get(key),
        }
    }

    /// The values under `keys`, in order, as [`Snapshot::get`] would give them one by one. The
    /// lookups walk the trie together, so their cache misses overlap: a caller that knows which
    /// keys it will read (a transfer's two accounts, a block's access lists) reads them faster
    /// this way than one after the other.
    ///
    /// # Panics
    /// As [`Snapshot::get`]. [`Snapshot::try_get_many`] returns the error instead.
    pub fn get_many(&self, keys: &[&[u8]]) -> Vec<Option<Bytes>> {
        self.try_get_many(keys).unwrap_or_else(read_failed)
    }

    /// [`Snapshot::get_many`], or the error reading a node from disk.
    pub fn try_get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>, Error> {
        let mut out = vec![None; keys.len()];
        self.fill(keys, &mut out)?;
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    /// Answers the keys whose entries in `out` are `None` (`Some(None)`: absent).
    fn fill(&self, keys: &[&[u8]], out: &mut [Option<Option<Bytes>>]) -> Result<(), Error> {
        match &self.view {
            View::Built(root, _) => trie::fill(root.as_ref(), keys, out),
            View::Pending(pending) => pending.fill(keys, out),
        }
    }

    /// The built trie and its key count, waiting for the committer if this revision is still
    /// being built.
    fn tree(&self) -> Result<(Option<&Node>, u64), Error> {
        match &self.view {
            View::Built(root, count) => Ok((root.as_ref(), *count)),
            View::Pending(pending) => pending.tree(),
        }
    }

    /// [`Snapshot::tree`], for the accessors that panic on a failure, as [`Snapshot::get`] does.
    fn built_tree(&self) -> (Option<&Node>, u64) {
        self.tree().unwrap_or_else(read_failed)
    }

    /// A Merkle proof of `key`'s value, or of its absence, against [`Snapshot::commitment`]
    /// (see [`proof`]).
    pub fn prove(&self, key: &[u8]) -> Result<proof::Proof, Error> {
        proof::prove(self.tree()?.0, key)
    }

    /// Pairs with keys in `range`, in key order.
    ///
    /// # Panics
    /// As [`Snapshot::get`]; [`Snapshot::try_range`] returns errors instead.
    pub fn range<R: RangeBounds<[u8]>>(&self, range: R) -> impl Iterator<Item = (Bytes, Bytes)> {
        self.try_range(range)
            .map(|item| item.unwrap_or_else(read_failed))
    }

    /// Pairs with keys in `range`, in key order, or the error reading them from disk.
    pub fn try_range<R: RangeBounds<[u8]>>(&self, range: R) -> trie::Iter {
        let (start, end) = (
            range.start_bound().map(<[u8]>::to_vec),
            range.end_bound().map(<[u8]>::to_vec),
        );
        match self.tree() {
            Ok((root, _)) => trie::Iter::new(root.cloned(), start, end),
            Err(error) => trie::Iter::failed(error),
        }
    }

    /// Number of keys.
    ///
    /// # Panics
    /// As [`Snapshot::get`]: if the revision's trie could not be built.
    pub fn len(&self) -> usize {
        self.built_tree().1 as usize
    }

    /// Whether the revision holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state commitment of this revision: the trie's root hash (see `docs/STATE.md`, "The
    /// state commitment"). Waits for the committer if the revision is still being built.
    ///
    /// # Panics
    /// As [`Snapshot::get`]: if the revision's trie could not be built.
    pub fn commitment(&self) -> Hash {
        let root = self.built_tree().0;
        Hash(root.map_or_else(trie::empty_hash, |r| *r.hash()))
    }
}

/// Uncommitted changes on top of a parent revision. Reads see the writes made so far.
///
/// Writes go to a hash map (no ordering work per write) and are sorted once, at commit; a bulk
/// load through [`WriteSet::put_sorted`] is kept as the sorted run it already is.
pub struct WriteSet {
    parent: Snapshot,
    writes: WriteMap,
    /// Sorted, unique pairs from `put_sorted`; `writes` overrides them.
    bulk: Vec<Change>,
}

impl WriteSet {
    /// The revision this write set builds on.
    pub fn parent(&self) -> RevisionId {
        self.parent.id
    }

    /// The value under `key`, including this write set's own writes.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.own(key).unwrap_or_else(|| self.parent.get(key))
    }

    /// This write set's own write of `key`, if it made one (`Some(None)`: deleted).
    fn own(&self, key: &[u8]) -> Option<Option<Bytes>> {
        if let Some(value) = self.writes.get(key) {
            return Some(value.clone());
        }
        let found = self.bulk.binary_search_by(|(k, _)| k.as_slice().cmp(key));
        found.ok().map(|i| self.bulk[i].1.clone())
    }

    /// The values under `keys`, in order, including this write set's own writes: what
    /// [`WriteSet::get`] would give for each, with the parent's lookups walked together
    /// ([`Snapshot::get_many`]).
    ///
    /// # Panics
    /// As [`Snapshot::get`].
    pub fn get_many(&self, keys: &[&[u8]]) -> Vec<Option<Bytes>> {
        let mut out = vec![None; keys.len()];
        self.answer(keys, &mut out);
        out.into_iter().map(Option::flatten).collect()
    }

    /// [`WriteSet::get_many`] for a fixed number of keys, without allocating: a transfer reads
    /// its two accounts this way.
    ///
    /// # Panics
    /// As [`Snapshot::get`].
    pub fn get_array<const N: usize>(&self, keys: [&[u8]; N]) -> [Option<Bytes>; N] {
        let mut out = [const { None }; N];
        self.answer(&keys, &mut out);
        out.map(Option::flatten)
    }

    /// Answers each of `keys` into `out`: from this write set's own writes, then the rest from
    /// the parent, whose lookups walk the trie together.
    fn answer(&self, keys: &[&[u8]], out: &mut [Option<Option<Bytes>>]) {
        for (answer, key) in out.iter_mut().zip(keys) {
            *answer = self.own(key);
        }
        self.parent.fill(keys, out).unwrap_or_else(read_failed);
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        self.put_slice(&key, &value)
    }

    /// Sets `key` to `value`, copying both (keys and values up to 32 bytes without allocating).
    pub fn put_slice(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        check_len("key", key.len(), MAX_KEY_BYTES)?;
        check_len("value", value.len(), MAX_VALUE_BYTES)?;
        self.writes
            .insert(Bytes::from_slice(key), Some(Bytes::from_slice(value)));
        Ok(())
    }

    /// Sets many keys at once; `pairs` must be sorted by key with no duplicates. This is a bulk
    /// build, much cheaper than one `put` per key. Pairs already held as [`Bytes`] move in
    /// without a copy.
    pub fn put_sorted<K, V>(&mut self, pairs: Vec<(K, V)>) -> Result<(), Error>
    where
        K: AsRef<[u8]> + Into<Bytes>,
        V: AsRef<[u8]> + Into<Bytes>,
    {
        for (key, value) in &pairs {
            check_len("key", key.as_ref().len(), MAX_KEY_BYTES)?;
            check_len("value", value.as_ref().len(), MAX_VALUE_BYTES)?;
        }
        debug_assert!(
            pairs.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref()),
            "pairs must be sorted and unique"
        );
        let pairs: Vec<Change> = pairs
            .into_iter()
            .map(|(key, value)| (key.into(), Some(value.into())))
            .collect();
        if self.bulk.is_empty() {
            // Later single writes must still win over these.
            self.bulk = pairs;
            let shadowed: Vec<Bytes> = self
                .writes
                .keys()
                .filter(|k| self.bulk.binary_search_by(|(b, _)| b.cmp(k)).is_ok())
                .cloned()
                .collect();
            for key in shadowed {
                self.writes.remove(&key);
            }
            return Ok(());
        }
        for (key, value) in pairs {
            self.writes.insert(key, value);
        }
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), Error> {
        check_len("key", key.len(), MAX_KEY_BYTES)?;
        self.writes.insert(Bytes::from_vec(key), None);
        Ok(())
    }

    /// Number of distinct keys written so far.
    pub fn len(&self) -> usize {
        let shadowed = self
            .writes
            .keys()
            .filter(|k| self.bulk.binary_search_by(|(b, _)| b.cmp(k)).is_ok())
            .count();
        self.writes.len() + self.bulk.len() - shadowed
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.bulk.is_empty()
    }

    /// Every write, sorted by key, unique (single writes win over the bulk run), in a list
    /// from `spares`; and the emptied map of single writes, for reuse.
    fn into_changes(mut self, spares: &Arc<Spares>) -> (Snapshot, Changes, WriteMap) {
        let single = spares.sorted(self.writes.drain());
        if self.bulk.is_empty() {
            return (self.parent, single, self.writes);
        }
        let single = single.into_list();
        let mut merged = Vec::with_capacity(single.len() + self.bulk.len());
        let mut bulk = self.bulk.into_iter().peekable();
        for change in single {
            while let Some(b) = bulk.next_if(|b| b.0 < change.0) {
                merged.push(b);
            }
            bulk.next_if(|b| b.0 == change.0);
            merged.push(change);
        }
        merged.extend(bulk);
        (self.parent, Changes::own(merged), self.writes)
    }
}

/// A key's first eight bytes, zero-padded, as a big-endian number: ordered as the keys are,
/// with ties wherever eight bytes do not decide.
fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
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
    changes: Arc<Changes>,
}

struct Inner {
    revisions: HashMap<RevisionId, Revision>,
    finalized: RevisionId,
    next_id: u64,
}

impl Inner {
    fn snapshot(&self, rev: RevisionId) -> Result<Snapshot, Error> {
        self.revisions
            .get(&rev)
            .map(|revision| revision.snapshot.clone())
            .ok_or(Error::UnknownRevision(rev))
    }

    /// Replaces the views of revisions the committer has built by their tries, so that reads
    /// of snapshots taken from now on go straight to the trie.
    fn resolve_built(&mut self) {
        for revision in self.revisions.values_mut() {
            if let View::Pending(pending) = &revision.snapshot.view {
                if let Some(Ok((root, count))) = pending.built() {
                    revision.snapshot.view = View::Built(root.clone(), *count);
                }
            }
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

    /// Removes every revision that does not descend from (or equal) `root`, and returns them.
    fn prune_to(&mut self, root: RevisionId) -> Vec<Revision> {
        self.remove_where(root, false)
    }

    /// Removes `root` and every revision descending from it.
    fn remove_descendants(&mut self, root: RevisionId) -> Vec<Revision> {
        self.remove_where(root, true)
    }

    /// Removes the revisions that descend (or not) from `root`; `root` descends from itself.
    fn remove_where(&mut self, root: RevisionId, descending: bool) -> Vec<Revision> {
        let mut memo: HashMap<RevisionId, bool> = HashMap::from([(root, true)]);
        let ids: Vec<RevisionId> = self.revisions.keys().copied().collect();
        let doomed: Vec<RevisionId> = ids
            .into_iter()
            .filter(|&id| self.descends(id, root, &mut memo) == descending)
            .collect();
        doomed
            .iter()
            .filter_map(|id| self.revisions.remove(id))
            .collect()
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

/// The finalize path's state: the log and the checkpoint bookkeeping.
struct Durable {
    wal: Wal,
    /// Log bytes appended since the last checkpoint started.
    since_checkpoint: u64,
    /// The live tree's estimated size in the node file, as of the last checkpoint.
    live_bytes: u64,
    /// The revision of the last durable checkpoint.
    checkpoint: u64,
}

/// The versioned state database.
pub struct Db {
    inner: RwLock<Inner>,
    /// Builds committed revisions' tries ([`pending`]). Dropped before the background thread,
    /// which frees what the committer lets go of last.
    committer: Committer,
    poison: Arc<Poison>,
    durable: Mutex<Durable>,
    file: Arc<NodeFile>,
    checkpointer: Checkpointer,
    background: Background,
    options: Options,
    /// The emptied map of the last committed write set, for the next one: a block's map grows to
    /// megabytes, and a fresh one paid its growth in rehashes and page faults every block.
    spare_writes: Mutex<Option<WriteMap>>,
    /// Lists for the sorted changes of the next commits ([`changes`]).
    spares: Arc<Spares>,
}

/// A write set's own writes by key (`None`: deleted), hashed with foldhash (seeded per map).
/// `ahash` hashed a key in about 130 ns on this project's machines, whose AES instructions it
/// uses are slow there: `commit_profile 1000000 150 pool 10000 inserts` spent 4.1 to 4.2 ms
/// per block on its reads and writes with it, 2.2 to 2.5 ms with foldhash (2026-11-24). A
/// write set holds one block's writes, so keys chosen to collide cost at most that block.
type WriteMap = HashMap<Bytes, Option<Bytes>, foldhash::fast::RandomState>;

/// Entries a spare write map may have room for; a bigger one is dropped instead of kept.
const SPARE_WRITES_MAX: usize = 1 << 20;

impl Db {
    /// Opens the database in `dir` with default [`Options`], recovering the last finalized
    /// revision.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the database in `dir`, recovering the last finalized revision: the checkpointed trie,
    /// loaded up to the memory budget, then the log records the checkpoint does not cover.
    pub fn open_with(dir: &Path, options: Options) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: "create state directory",
            source,
        })?;
        let checkpoint = root::read(dir)?;
        let (file, nodes_end) = NodeFile::open(dir, checkpoint.map_or(0, |c| c.generation))?;
        let file = Arc::new(file);
        let (mut revision, mut count) = checkpoint.map_or((0, 0), |c| (c.revision, c.count));
        let mut tree = match checkpoint {
            Some(c) if c.loc != 0 => {
                let stub = file.stub(c.hash, c.loc);
                let depth = resident_depth(c.count, options.memory_budget);
                Some(file.preload(&stub, depth, options.memory_budget)?)
            }
            _ => None,
        };
        let (wal, records) = Wal::open(dir, revision)?;
        let ctx = Ctx::new(true);
        for (rev, changes) in log::replay_batches(records, REPLAY_BATCH_CHANGES) {
            if !changes.is_empty() {
                let (next, added) = trie::apply(ctx, tree.as_ref(), &changes)?;
                tree = next;
                count = count.saturating_add_signed(added);
            }
            revision = rev;
        }
        let id = RevisionId(revision);
        let recycler = recycle::Recycler::new();
        let background = Background::start(&recycler)?;
        let snapshot = Snapshot {
            id,
            view: View::Built(tree, count),
            freer: background.handoff(),
        };
        let root = Revision {
            snapshot,
            parent: None,
            changes: Arc::new(Changes::own(Vec::new())),
        };
        let inner = Inner {
            revisions: HashMap::from([(id, root)]),
            finalized: id,
            next_id: revision + 1,
        };
        let file_state = FileState {
            end: nodes_end,
            base_bytes: checkpoint.map_or(0, |c| c.base_bytes),
            base_count: checkpoint.map_or(0, |c| c.base_count),
            compact_min_bytes: options.compact_min_bytes,
        };
        let durable = Durable {
            since_checkpoint: wal.active_bytes(),
            live_bytes: file_state.live_bytes(count),
            wal,
            checkpoint: checkpoint.map_or(0, |c| c.revision),
        };
        let poison = Arc::new(Poison::default());
        Ok(Self {
            inner: RwLock::new(inner),
            committer: Committer::start(poison.clone(), options.commit_threads, &recycler)?,
            poison,
            durable: Mutex::new(durable),
            checkpointer: Checkpointer::start_thread(dir, file.clone(), file_state, &recycler)?,
            background,
            file,
            options,
            spare_writes: Mutex::new(None),
            spares: Arc::default(),
        })
    }

    /// Waits until the background work started so far is done: the tries of committed
    /// revisions, a running checkpoint (whose outcome is collected as a finalize would) and the
    /// freeing of pruned revisions. For benchmarks, so that one measurement does not pay for
    /// the previous one's work.
    pub fn settle(&self) -> Result<(), Error> {
        self.committer.settle();
        let collected = {
            let mut durable = self.durable.lock();
            // A checkpoint that a finalize left for later, its trie not built yet, starts now.
            self.advance_checkpoints(&mut durable)
                .and_then(|()| self.record_checkpoint(&mut durable, self.checkpointer.wait()))
        };
        self.background.settle();
        collected
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
        self.inner.read().snapshot(rev)
    }

    /// Opens a write set on top of `parent`.
    pub fn begin(&self, parent: RevisionId) -> Result<WriteSet, Error> {
        let parent = {
            let inner = self.inner.read();
            self.poison.check()?;
            inner.snapshot(parent)?
        };
        Ok(WriteSet {
            parent,
            writes: self.spare_writes.lock().take().unwrap_or_default(),
            bulk: Vec::new(),
        })
    }

    /// Freezes `ws` into a new revision and returns its id.
    ///
    /// The revision is readable at once; its trie is built on the committer thread while the
    /// caller goes on ([`pending`]), and [`Snapshot::commitment`] waits for it. Large commits
    /// spread over the database's commit pool ([`Options::commit_threads`]): disjoint subtrees
    /// are merged and hashed independently, and the trie is a function of its keys alone, so
    /// the result is the same on any number of threads. When three builds are already waiting
    /// besides the one being built, this waits for the oldest to finish.
    pub fn commit(&self, ws: WriteSet) -> Result<RevisionId, Error> {
        self.commit_with(ws, true)
    }

    /// [`Db::commit`], with the trie built by the committer thread alone, outside the pool.
    pub fn commit_sequential(&self, ws: WriteSet) -> Result<RevisionId, Error> {
        self.commit_with(ws, false)
    }

    fn commit_with(&self, ws: WriteSet, parallel: bool) -> Result<RevisionId, Error> {
        let (parent, changes, spare) = ws.into_changes(&self.spares);
        if spare.capacity() <= SPARE_WRITES_MAX {
            *self.spare_writes.lock() = Some(spare);
        }
        self.poison.check()?;
        let parent_id = parent.id;
        let changes = Arc::new(changes);
        let unchanged = match &parent.view {
            View::Built(root, count) if changes.is_empty() => {
                Some(View::Built(root.clone(), *count))
            }
            _ => None,
        };
        let view = unchanged.unwrap_or_else(|| {
            // Queued before it is published: a revision's job precedes its children's.
            let pending = Arc::new(Pending::new(changes.clone(), parent));
            self.committer.submit(pending.clone(), parallel);
            View::Pending(pending)
        });
        let mut inner = self.inner.write();
        self.poison.check()?;
        if !inner.revisions.contains_key(&parent_id) {
            return Err(Error::UnknownRevision(parent_id));
        }
        inner.resolve_built();
        let id = RevisionId(inner.next_id);
        inner.next_id += 1;
        let snapshot = Snapshot {
            id,
            view,
            freer: self.background.handoff(),
        };
        let revision = Revision {
            snapshot,
            parent: Some(parent_id),
            changes,
        };
        inner.revisions.insert(id, revision);
        Ok(id)
    }

    /// Makes `rev` durable (one fsync of the log) and drops every revision not descending from it.
    pub fn finalize(&self, rev: RevisionId) -> Result<(), Error> {
        let batch: Vec<(u64, Arc<Changes>)> = {
            let inner = self.inner.read();
            self.poison.check()?;
            let path = inner.path_from_finalized(rev)?;
            path.iter()
                .map(|id| (id.0, inner.revisions[id].changes.clone()))
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut durable = self.durable.lock();
        let records: Vec<(u64, &[Change])> = batch
            .iter()
            .map(|(id, changes)| (*id, &changes[..]))
            .collect();
        let covered = durable.checkpoint;
        let threshold = self.options.checkpoint_threshold(durable.live_bytes);
        let appended = durable
            .wal
            .switch_if_due(threshold, covered)
            .and_then(|()| durable.wal.append(&records));
        match appended {
            Ok(bytes) => durable.since_checkpoint += bytes,
            Err(error) => return Err(self.poison(error)),
        }
        let pruned = {
            let mut inner = self.inner.write();
            inner.finalized = rev;
            let pruned = inner.prune_to(rev);
            if let Some(root) = inner.revisions.get_mut(&rev) {
                root.parent = None;
            }
            pruned
        };
        self.background.drop_later(pruned);
        // `rev` is durable now. A failed checkpoint poisons the database, and the next write
        // reports it; this finalize did what it promised.
        let _ = self.advance_checkpoints(&mut durable);
        Ok(())
    }

    /// Drops `rev` and every revision descending from it: a fork the chain abandoned, or a
    /// speculative execution no longer needed. Their nodes are freed in the background; open
    /// snapshots of them stay readable until dropped.
    pub fn discard(&self, rev: RevisionId) -> Result<(), Error> {
        let dropped = {
            let mut inner = self.inner.write();
            if rev == inner.finalized {
                return Err(Error::DiscardFinalized(rev));
            }
            if !inner.revisions.contains_key(&rev) {
                return Err(Error::UnknownRevision(rev));
            }
            inner.remove_descendants(rev)
        };
        self.background.drop_later(dropped);
        Ok(())
    }

    /// Collects a finished checkpoint, then starts the next once enough log has accumulated.
    fn advance_checkpoints(&self, durable: &mut Durable) -> Result<(), Error> {
        self.collect_checkpoint(durable)?;
        if !self.checkpointer.busy()
            && durable.since_checkpoint >= self.options.checkpoint_threshold(durable.live_bytes)
        {
            self.launch_checkpoint(durable);
        }
        Ok(())
    }

    /// Takes a finished checkpoint's outcome, if any, and trims memory.
    fn collect_checkpoint(&self, durable: &mut Durable) -> Result<(), Error> {
        let outcome = self.checkpointer.finished();
        self.record_checkpoint(durable, outcome)
    }

    /// Records a checkpoint's outcome: trims memory after a success, poisons after a failure.
    fn record_checkpoint(
        &self,
        durable: &mut Durable,
        outcome: Option<checkpoint::Outcome>,
    ) -> Result<(), Error> {
        match outcome {
            None => Ok(()),
            Some(Ok(done)) => {
                durable.checkpoint = done.revision;
                durable.live_bytes = done.live_bytes;
                self.trim_to_budget();
                Ok(())
            }
            Some(Err(error)) => {
                let reason = format!("state checkpoint failed: {error}");
                self.poison.set(reason.clone());
                Err(Error::Poisoned(reason))
            }
        }
    }

    /// Starts a checkpoint of the finalized revision, unless its trie is still being built
    /// (then a later finalize starts it).
    fn launch_checkpoint(&self, durable: &mut Durable) {
        let (id, root, count) = {
            let mut inner = self.inner.write();
            inner.resolve_built();
            let id = inner.finalized;
            let View::Built(root, count) = &inner.revisions[&id].snapshot.view else {
                return;
            };
            (id, root.clone(), *count)
        };
        self.checkpointer.start(id.0, root, count);
        durable.since_checkpoint = 0;
    }

    /// Replaces persisted nodes of the finalized trie below the budget's depth by stubs.
    fn trim_to_budget(&self) {
        let (id, snapshot) = {
            let inner = self.inner.read();
            let id = inner.finalized;
            (id, inner.revisions[&id].snapshot.clone())
        };
        let Ok((Some(root), count)) = snapshot.tree() else {
            return;
        };
        let depth = resident_depth(count, self.options.memory_budget);
        if depth == usize::MAX {
            return;
        }
        let trimmed = View::Built(
            Some(trie::trim(root, 0, depth, &self.file.current())),
            count,
        );
        let untrimmed = self
            .inner
            .write()
            .revisions
            .get_mut(&id)
            .map(|revision| std::mem::replace(&mut revision.snapshot.view, trimmed));
        self.background.drop_later(untrimmed);
    }

    fn poison(&self, error: Error) -> Error {
        self.poison.set(error.to_string());
        error
    }
}

#[cfg(test)]
mod tests;
