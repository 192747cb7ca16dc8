//! The pipelined commit: revisions built off the writer's thread.
//!
//! [`crate::Db::commit`] sorts a write set and hands it to the committer thread, which merges it
//! into the parent's trie and hashes the new nodes while the writer goes on with the next
//! block. Until its trie is built, a revision is a [`Pending`]: its sorted changes over its
//! parent's snapshot. Reads look the key up in the changes (a binary search over the keys'
//! first eight bytes) and fall through to the parent, itself built or pending; everything that
//! needs the trie itself (its commitment, proofs, ranges, the key count, a checkpoint) waits
//! for the build. Finalize needs only the changes, which the log records, so a block can be
//! durable before its trie exists.
//!
//! # Why
//! On the transfer workload a block cost about 130 ms of CPU (writer 25, commit workers 80,
//! background frees 25) against 85 ms of wall time on two cores: while the writer executed a
//! block, the commit workers idled, and while they merged, the writer waited. The design keeps
//! one root per block and its commitment (the execution receipt that carries a block's state
//! root travels in a later header, see `DESIGN.md`); it only lets the next block start before
//! the root is ready.
//!
//! # Order
//! The committer builds jobs in the order they were queued, and a revision is only published
//! (so that a write set can begin on it) after its job is queued. So a parent's job always
//! precedes its children's, and the committer never waits on work queued behind it.
//!
//! # Failure
//! A build that fails (an I/O error loading a node that is only on disk) poisons the database
//! for writes, and reads of that revision report [`Error::CommitFailed`]. A panic while building
//! is caught and reported the same way, so no reader waits forever.

use crate::background::Handoff;
use crate::changes::Changes;
use crate::prefixes::Prefixes;
use crate::recycle::Recycler;
use crate::trie::{self, Ctx, Node};
use crate::{free_tree, key_prefix, Bytes, Error, Poison, Snapshot};
use crossbeam_channel::{bounded, Sender};
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;

/// A built trie: its root and its key count.
pub(crate) type Tree = (Option<Node>, u64);

/// Jobs that may wait for the committer besides the one it builds. The writer runs at most
/// four blocks ahead of the last built root, so a read passes at most four pending layers.
/// With one job waiting (until late on 2026-11-24) the writer and the pool took turns waiting for
/// each other, a fifth of the two cores idle during a 10M-key load (`docs/STATE.md`).
const QUEUE: usize = 3;

/// A committed revision whose trie the committer has not built yet.
pub(crate) struct Pending {
    /// Sorted by key, unique; shared with the revision's log record.
    changes: Arc<Changes>,
    /// `key_prefix` of each change, in the same order: the search runs over these eight-byte
    /// numbers, in a tenth of the memory of the changes themselves.
    prefixes: Prefixes,
    /// The parent, until the trie is built; then dropped, so that a chain of revisions does not
    /// keep every ancestor alive.
    below: RwLock<Option<Snapshot>>,
    built: OnceLock<Result<Tree, String>>,
    lock: Mutex<()>,
    done: Condvar,
    /// Where a trie this revision alone holds is freed.
    freer: Handoff,
}

impl Pending {
    /// `changes` (sorted by key, unique) over `below`.
    pub(crate) fn new(changes: Arc<Changes>, below: Snapshot) -> Pending {
        let prefixes = Prefixes::new(changes.iter().map(|(key, _)| key_prefix(key)).collect());
        Pending {
            changes,
            prefixes,
            freer: below.freer.clone(),
            below: RwLock::new(Some(below)),
            built: OnceLock::new(),
            lock: Mutex::new(()),
            done: Condvar::new(),
        }
    }

    /// The built trie, or the reason the build failed; `None` while the committer works.
    pub(crate) fn built(&self) -> Option<&Result<Tree, String>> {
        self.built.get()
    }

    /// The built trie, or the reason the build failed, waiting for the committer if needed.
    pub(crate) fn wait(&self) -> &Result<Tree, String> {
        loop {
            if let Some(built) = self.built.get() {
                return built;
            }
            let mut guard = self.lock.lock();
            // `finish` sets the result before it takes the lock to notify, so a result not
            // seen here, under the lock, cannot be notified before this thread waits.
            if self.built.get().is_none() {
                self.done.wait(&mut guard);
            }
        }
    }

    /// The built trie and its key count, waiting for the committer if needed.
    pub(crate) fn tree(&self) -> Result<(Option<&Node>, u64), Error> {
        as_tree(self.wait())
    }

    /// The value under `key` in this revision.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        if let Some(built) = self.built.get() {
            return get_built(built, key);
        }
        if let Some(value) = self.find(key) {
            return Ok(value.clone());
        }
        // Read under the lock rather than clone the parent: a clone and its drop are two more
        // locked instructions on a shared count, on every read that falls through.
        if let Some(below) = &*self.below.read() {
            return below.try_get(key);
        }
        // Built, or about to be: the parent is dropped just before the result is set.
        get_built(self.wait(), key)
    }

    /// Answers the keys whose entries in `out` are `None`, as [`Pending::get`] answers one:
    /// from this revision's changes, then all the rest together from the parent or the trie.
    pub(crate) fn fill(
        &self,
        keys: &[&[u8]],
        out: &mut [Option<Option<Bytes>>],
    ) -> Result<(), Error> {
        if let Some(built) = self.built.get() {
            return fill_built(built, keys, out);
        }
        for (key, answer) in keys.iter().zip(out.iter_mut()) {
            if answer.is_none() {
                *answer = self.find(key).cloned();
            }
        }
        if let Some(below) = &*self.below.read() {
            return below.fill(keys, out);
        }
        fill_built(self.wait(), keys, out)
    }

    /// This revision's own change of `key`, if it has one (`Some(None)`: deleted).
    fn find(&self, key: &[u8]) -> Option<&Option<Bytes>> {
        let prefix = key_prefix(key);
        let start = self.prefixes.first(prefix)?;
        self.prefixes
            .from(start)
            .iter()
            .take_while(|&&p| p == prefix)
            .zip(&self.changes[start..])
            .find(|(_, (k, _))| k.as_slice() == key)
            .map(|(_, (_, value))| value)
    }

    /// Drops the parent, records the build's result and lets waiters go. The parent goes first,
    /// so that whatever it held alone is on its way to the background thread by the time anyone
    /// sees the result (a reader that finds neither waits for the result).
    fn finish(&self, result: Result<Tree, String>) {
        let below = self.below.write().take();
        drop(below);
        // Only the committer finishes a revision, once.
        let _ = self.built.set(result);
        drop(self.lock.lock());
        self.done.notify_all();
    }
}

impl Drop for Pending {
    /// The trie of a revision dropped before anything else took it is freed in the background,
    /// as a snapshot's is.
    fn drop(&mut self) {
        if let Some(Ok((root, _))) = self.built.take() {
            free_tree(&self.freer, root);
        }
    }
}

/// A build's result as the trie it built, or the error that reports the failed build.
fn as_tree(built: &Result<Tree, String>) -> Result<(Option<&Node>, u64), Error> {
    match built {
        Ok((root, count)) => Ok((root.as_ref(), *count)),
        Err(reason) => Err(Error::CommitFailed(reason.clone())),
    }
}

/// Reads `key` from a built trie, or reports the failed build.
fn get_built(built: &Result<Tree, String>, key: &[u8]) -> Result<Option<Bytes>, Error> {
    match as_tree(built)?.0 {
        None => Ok(None),
        Some(root) => trie::get(root, key),
    }
}

/// [`get_built`] for the keys of `out` not answered yet.
fn fill_built(
    built: &Result<Tree, String>,
    keys: &[&[u8]],
    out: &mut [Option<Option<Bytes>>],
) -> Result<(), Error> {
    trie::fill(as_tree(built)?.0, keys, out)
}

/// One revision to build.
struct Job {
    pending: Arc<Pending>,
    parallel: bool,
}

/// The committer thread, its queue, and the pool that builds large commits.
pub(crate) struct Committer {
    queue: Option<Sender<Job>>,
    pool: Arc<rayon::ThreadPool>,
    thread: Option<JoinHandle<()>>,
    /// The last revision queued, for [`Committer::settle`].
    last: Mutex<Weak<Pending>>,
    /// Held by a test to stop builds from starting, so that revisions stay pending.
    #[cfg(test)]
    pub(crate) gate: Arc<Mutex<()>>,
}

impl Committer {
    /// Starts the committer thread and a pool of `threads` (0: one per core) for large
    /// commits; a failed build sets `poison`.
    /// Its workers build branches from, and free them into, `recycler`.
    pub(crate) fn start(
        poison: Arc<Poison>,
        threads: usize,
        recycler: &Arc<Recycler>,
    ) -> Result<Committer, Error> {
        let recycler = recycler.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("state-commit-{i}"))
            .start_handler(move |_| crate::recycle::join(&recycler))
            .build()
            .map(Arc::new)
            .map_err(|e| Error::Io {
                context: "start the state commit pool",
                source: std::io::Error::other(e),
            })?;
        let (queue, jobs) = bounded::<Job>(QUEUE);
        #[cfg(test)]
        let gate = Arc::new(Mutex::new(()));
        #[cfg(test)]
        let held = gate.clone();
        let workers = pool.clone();
        let thread = std::thread::Builder::new()
            .name("state-committer".into())
            .spawn(move || {
                for job in jobs {
                    #[cfg(test)]
                    drop(held.lock());
                    let result = build(&job, &workers);
                    if let Err(reason) = &result {
                        poison.set(format!("building a committed revision failed: {reason}"));
                    }
                    job.pending.finish(result);
                }
            })
            .map_err(|source| Error::Io {
                context: "start the state committer thread",
                source,
            })?;
        Ok(Committer {
            queue: Some(queue),
            pool,
            thread: Some(thread),
            last: Mutex::new(Weak::new()),
            #[cfg(test)]
            gate,
        })
    }

    /// Queues `pending` to be built, waiting while the queue is full.
    pub(crate) fn submit(&self, pending: Arc<Pending>, parallel: bool) {
        // Held while sending, so that `last` names the job queued last even when two threads
        // commit at once.
        let mut last = self.last.lock();
        *last = Arc::downgrade(&pending);
        let queue = self
            .queue
            .as_ref()
            .expect("the queue lives as long as the committer");
        let job = Job { pending, parallel };
        if let Err(unsent) = queue.send(job) {
            // The thread is gone (it only ends when the queue closes); build here instead.
            let job = unsent.into_inner();
            job.pending.finish(build(&job, &self.pool));
        }
    }

    /// Waits until every revision queued so far is built.
    pub(crate) fn settle(&self) {
        let last = self.last.lock().upgrade();
        if let Some(last) = last {
            last.wait();
        }
    }
}

impl Drop for Committer {
    /// Builds what is queued, then stops the thread.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Builds one revision: merges its changes into the parent's trie, on `pool` if the job may
/// go parallel. A panic is reported as a failure, so that readers waiting for the revision are
/// let go.
fn build(job: &Job, pool: &rayon::ThreadPool) -> Result<Tree, String> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let parent = job
            .pending
            .below
            .read()
            .clone()
            .expect("a pending revision keeps its parent until it is built");
        let (root, count) = parent.tree().map_err(|e| e.to_string())?;
        let changes = &job.pending.changes;
        if changes.is_empty() {
            return Ok((root.cloned(), count));
        }
        let ctx = Ctx::new(job.parallel);
        let apply = || trie::apply(ctx, root, changes);
        let applied = if job.parallel {
            pool.install(apply)
        } else {
            apply()
        };
        let (root, added) = applied.map_err(|e| e.to_string())?;
        Ok((root, count.saturating_add_signed(added)))
    }));
    attempt.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        Err(format!("the committer panicked: {what}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Db, RevisionId, View};

    /// A database holding `pairs` in a built revision, and that revision's snapshot.
    fn parent_of(pairs: &[(&[u8], &[u8])]) -> (tempfile::TempDir, Db, Snapshot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let mut ws = db.begin(db.finalized()).expect("begin");
        for (key, value) in pairs {
            ws.put_slice(key, value).expect("put");
        }
        let rev = db.commit(ws).expect("commit");
        db.settle().expect("settle");
        let snapshot = db.snapshot(rev).expect("snapshot");
        (dir, db, snapshot)
    }

    fn change(key: &[u8], value: Option<&[u8]>) -> crate::log::Change {
        (Bytes::from_slice(key), value.map(Bytes::from_slice))
    }

    fn read(pending: &Pending, key: &[u8]) -> Option<Vec<u8>> {
        pending.get(key).expect("read").map(|v| v.to_vec())
    }

    #[test]
    fn a_pending_revision_reads_its_changes_over_its_parent_then_its_trie() {
        // `[0]` and `[0, 0]` share their eight-byte prefix: the search must compare whole keys.
        let (_dir, _db, parent) =
            parent_of(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (&[0], b"z")]);
        let changes = vec![
            change(&[0, 0], Some(b"y")),
            change(b"b", Some(b"20")),
            change(b"c", None),
            change(b"d", Some(b"4")),
        ];
        let pending = Arc::new(Pending::new(Arc::new(Changes::own(changes)), parent));
        let expect = |pending: &Pending| {
            assert_eq!(read(pending, b"a").as_deref(), Some(&b"1"[..]));
            assert_eq!(read(pending, b"b").as_deref(), Some(&b"20"[..]));
            assert_eq!(read(pending, b"c"), None);
            assert_eq!(read(pending, b"d").as_deref(), Some(&b"4"[..]));
            assert_eq!(read(pending, &[0]).as_deref(), Some(&b"z"[..]));
            assert_eq!(read(pending, &[0, 0]).as_deref(), Some(&b"y"[..]));
            assert_eq!(read(pending, b"e"), None);
        };
        expect(&pending);
        assert!(pending.built().is_none(), "nothing built it yet");

        let job = Job {
            pending: pending.clone(),
            parallel: false,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        pending.finish(build(&job, &pool));
        assert!(pending.below.read().is_none(), "the parent is let go");
        let Some(Ok((Some(_), count))) = pending.built() else {
            panic!("a built trie");
        };
        assert_eq!(*count, 5);
        expect(&pending);
    }

    #[test]
    fn a_failed_build_reaches_readers_and_waiters() {
        let (_dir, _db, parent) = parent_of(&[(b"a", b"1")]);
        let pending = Arc::new(Pending::new(
            Arc::new(Changes::own(vec![change(b"b", None)])),
            parent,
        ));
        let waiter = {
            let pending = pending.clone();
            std::thread::spawn(move || pending.wait().clone().map(|(_, count)| count))
        };
        pending.finish(Err("the disk is gone".into()));
        let waited = waiter.join().expect("join");
        assert_eq!(waited, Err("the disk is gone".to_string()));
        assert!(matches!(pending.get(b"a"), Err(Error::CommitFailed(_))));

        let snapshot = Snapshot {
            id: RevisionId(9),
            view: View::Pending(pending),
            freer: Handoff::default(),
        };
        assert!(matches!(
            snapshot.try_get(b"a"),
            Err(Error::CommitFailed(_))
        ));
        assert!(matches!(snapshot.prove(b"a"), Err(Error::CommitFailed(_))));
        let range: Vec<_> = snapshot.try_range::<std::ops::RangeFull>(..).collect();
        assert!(matches!(range.as_slice(), [Err(Error::CommitFailed(_))]));
    }

    #[test]
    fn a_panic_in_the_committer_fails_the_revision_and_poisons_writes() {
        let (_dir, _db, parent) = parent_of(&[(b"a", b"1")]);
        let pending = Arc::new(Pending::new(
            Arc::new(Changes::own(vec![change(b"b", None)])),
            parent,
        ));
        // A revision without its parent cannot be built: the build panics.
        drop(pending.below.write().take());
        let poison = Arc::new(Poison::default());
        let committer = Committer::start(poison.clone(), 1, &Recycler::new()).expect("start");
        committer.submit(pending.clone(), true);
        committer.settle();
        let Some(Err(reason)) = pending.built() else {
            panic!("the build failed");
        };
        assert!(reason.contains("panicked"), "{reason}");
        assert!(matches!(poison.check(), Err(Error::Poisoned(_))));
    }
}
