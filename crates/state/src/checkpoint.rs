//! The background checkpointer: writes finalized tries to the node file off the finalize path.
//!
//! One thread takes one job at a time (the channel holds one), so a checkpoint never competes with
//! another and the finalize path never waits on one: it starts a job when the log has grown enough
//! and none is running, and collects the outcome on a later finalize. A failed checkpoint is
//! reported once and poisons the database; the log still holds everything finalized.
//!
//! # When to compact
//! A checkpoint appends the nodes that changed since the last one, so the node file grows with
//! history. The checkpointer knows the current generation's *base*: its size and key count when
//! it was last written whole. It estimates the live tree's size as the base scaled by the key
//! count, and compacts (writes the whole tree into a new generation, [`crate::nodes`]) instead of
//! appending once the file is more than [`COMPACT_FACTOR`] times that estimate and at least
//! [`crate::Options::compact_min_bytes`] long. The file so stays within a constant factor of the
//! live data, and so does the time to reopen, which reads it.

use crate::nodes::{Compacted, NodeFile};
use crate::recycle::Recycler;
use crate::root::{self, Root};
use crate::trie::{empty_hash, Node};
use crate::Error;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A node file more than this many times its estimated live size is compacted.
pub const COMPACT_FACTOR: u64 = 2;

/// The current generation's size and what the checkpointer knows of its live share.
#[derive(Debug, Clone, Copy)]
pub struct FileState {
    /// Where the file's checkpointed bytes end.
    pub end: u64,
    /// The generation's size when it was last written whole (0: unknown).
    pub base_bytes: u64,
    /// The key count then.
    pub base_count: u64,
    /// Files below this size are never compacted.
    pub compact_min_bytes: u64,
}

impl FileState {
    /// The live tree's estimated size on disk at `count` keys: the base scaled by the key count
    /// (0 while unknown).
    pub fn live_bytes(&self, count: u64) -> u64 {
        let live = match self.base_count {
            0 => u128::from(self.base_bytes),
            base_count => {
                u128::from(self.base_bytes) * u128::from(count.max(1)) / u128::from(base_count)
            }
        };
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    /// Whether a checkpoint of a tree of `count` keys should compact rather than append.
    pub fn compaction_due(&self, count: u64) -> bool {
        if self.base_bytes == 0 {
            // Unknown until the next append records it.
            return false;
        }
        let live = u128::from(self.live_bytes(count));
        self.end >= self.compact_min_bytes
            && u128::from(self.end) > u128::from(COMPACT_FACTOR) * live
    }
}

/// A finished checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Checkpointed {
    /// The revision it made durable in the node file.
    pub revision: u64,
    /// The live tree's estimated size on disk after it ([`FileState::live_bytes`]).
    pub live_bytes: u64,
}

/// What a checkpoint job ends with: the checkpoint, or the error that stopped it.
pub type Outcome = Result<Checkpointed, String>;

struct Job {
    revision: u64,
    root: Option<Node>,
    count: u64,
}

/// The checkpointer thread and the outcome of its last job.
pub struct Checkpointer {
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<Outcome>,
    busy: Mutex<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the database in `dir`; the node file's checkpointed bytes end at
    /// `end`.
    /// The trees it trims free their branches into `recycler`.
    pub fn start_thread(
        dir: &Path,
        file: Arc<NodeFile>,
        state: FileState,
        recycler: &Arc<Recycler>,
    ) -> Result<Self, Error> {
        let (jobs, job_rx) = bounded::<Job>(1);
        let (outcome_tx, outcomes) = bounded(1);
        let dir = dir.to_path_buf();
        let recycler = recycler.clone();
        let thread = std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || {
                crate::recycle::join(&recycler);
                drop(recycler);
                run(&dir, &file, state, &job_rx, &outcome_tx)
            })
            .map_err(|source| Error::Io {
                context: "start the state checkpointer",
                source,
            })?;
        Ok(Self {
            jobs: Some(jobs),
            outcomes,
            busy: Mutex::new(false),
            thread: Some(thread),
        })
    }

    /// Whether a checkpoint is running or its outcome is not collected yet.
    pub fn busy(&self) -> bool {
        *self.busy.lock()
    }

    /// Starts checkpointing `root` as `revision`. The caller checks [`Checkpointer::busy`] first.
    pub fn start(&self, revision: u64, root: Option<Node>, count: u64) {
        let mut busy = self.busy.lock();
        debug_assert!(!*busy, "one checkpoint at a time");
        let sent = self.jobs.as_ref().is_some_and(|jobs| {
            jobs.send(Job {
                revision,
                root,
                count,
            })
            .is_ok()
        });
        *busy = sent;
    }

    /// The finished checkpoint or its error, if one has finished since the last call.
    pub fn finished(&self) -> Option<Outcome> {
        let mut busy = self.busy.lock();
        if !*busy {
            return None;
        }
        let outcome = self.outcomes.try_recv().ok()?;
        *busy = false;
        Some(outcome)
    }

    /// Waits for the running checkpoint, if any, and returns it or its error.
    pub fn wait(&self) -> Option<Outcome> {
        let mut busy = self.busy.lock();
        if !*busy {
            return None;
        }
        *busy = false;
        Some(
            self.outcomes
                .recv()
                .unwrap_or_else(|_| Err("the checkpointer stopped".into())),
        )
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    dir: &Path,
    file: &NodeFile,
    mut state: FileState,
    jobs: &Receiver<Job>,
    outcomes: &Sender<Outcome>,
) {
    for job in jobs {
        let outcome = write(dir, file, &mut state, &job)
            .map(|revision| Checkpointed {
                revision,
                live_bytes: state.live_bytes(job.count),
            })
            .map_err(|e| e.to_string());
        if outcomes.send(outcome).is_err() {
            return;
        }
    }
}

/// Checkpoints `job`'s tree: appended to the current generation, or compacted into a new one.
fn write(dir: &Path, file: &NodeFile, state: &mut FileState, job: &Job) -> Result<u64, Error> {
    let Some(root) = &job.root else {
        return install_root(dir, state, job, 0, empty_hash(), file.current().number());
    };
    if state.compaction_due(job.count) {
        let compacted: Compacted = file.compact(root)?;
        *state = FileState {
            end: compacted.end,
            base_bytes: compacted.end,
            base_count: job.count,
            ..*state
        };
        install_root(
            dir,
            state,
            job,
            compacted.loc,
            *root.hash(),
            compacted.number(),
        )?;
        file.install(compacted)?;
        return Ok(job.revision);
    }
    let (loc, end) = file.write_tree(root, state.end)?;
    state.end = end;
    if state.base_bytes == 0 {
        // The first checkpoint of a generation that had none: everything it holds is live.
        (state.base_bytes, state.base_count) = (end, job.count);
    }
    install_root(dir, state, job, loc, *root.hash(), file.current().number())
}

/// Names the checkpoint in the root file.
fn install_root(
    dir: &Path,
    state: &FileState,
    job: &Job,
    loc: u64,
    hash: crate::trie::Hash32,
    generation: u64,
) -> Result<u64, Error> {
    root::write(
        dir,
        &Root {
            revision: job.revision,
            loc,
            hash,
            count: job.count,
            generation,
            base_bytes: state.base_bytes,
            base_count: state.base_count,
        },
    )?;
    Ok(job.revision)
}
