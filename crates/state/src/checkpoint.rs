//! The background checkpointer: writes finalized tries to the node file off the finalize path.
//!
//! One thread takes one job at a time (the channel holds one), so a checkpoint never competes with
//! another and the finalize path never waits on one: it starts a job when the log has grown enough
//! and none is running, and collects the outcome on a later finalize. A failed checkpoint is
//! reported once and poisons the database; the log still holds everything finalized.

use crate::nodes::NodeFile;
use crate::root::{self, Root};
use crate::trie::{empty_hash, Node};
use crate::Error;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

struct Job {
    revision: u64,
    root: Option<Node>,
    count: u64,
}

/// The checkpointer thread and the outcome of its last job.
pub struct Checkpointer {
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<Result<u64, String>>,
    busy: Mutex<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the database in `dir`; the node file's checkpointed bytes end at
    /// `end`.
    pub fn start_thread(dir: &Path, file: Arc<NodeFile>, end: u64) -> Result<Self, Error> {
        let (jobs, job_rx) = bounded::<Job>(1);
        let (outcome_tx, outcomes) = bounded(1);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || run(&dir, &file, end, &job_rx, &outcome_tx))
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

    /// The finished checkpoint's revision or error, if one has finished since the last call.
    pub fn finished(&self) -> Option<Result<u64, String>> {
        let mut busy = self.busy.lock();
        if !*busy {
            return None;
        }
        let outcome = self.outcomes.try_recv().ok()?;
        *busy = false;
        Some(outcome)
    }

    /// Waits for the running checkpoint, if any, and returns its revision or error.
    pub fn wait(&self) -> Option<Result<u64, String>> {
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
    mut end: u64,
    jobs: &Receiver<Job>,
    outcomes: &Sender<Result<u64, String>>,
) {
    for job in jobs {
        let outcome = write(dir, file, &mut end, &job).map_err(|e| e.to_string());
        if outcomes.send(outcome).is_err() {
            return;
        }
    }
}

fn write(dir: &Path, file: &NodeFile, end: &mut u64, job: &Job) -> Result<u64, Error> {
    let (loc, hash) = match &job.root {
        Some(root) => {
            let (loc, new_end) = file.write_tree(root, *end)?;
            *end = new_end;
            (loc, *root.hash())
        }
        None => (0, empty_hash()),
    };
    root::write(
        dir,
        &Root {
            revision: job.revision,
            loc,
            hash,
            count: job.count,
        },
    )?;
    Ok(job.revision)
}
