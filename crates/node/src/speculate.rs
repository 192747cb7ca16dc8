//! Speculative execution: blocks that are ordered but not final yet run early, on forks of the
//! state.
//!
//! Every block the chain stores (its own proposals and its peers') is offered to one background
//! thread. The thread executes a block on its parent's state when that state is known: the
//! finalized head, or the speculative result of the parent, so a run of blocks executes ahead as
//! a chain of forks. Each result is a revision of the state database that nothing has finalized.
//!
//! When consensus finalizes a block, the chain takes its speculative result if it was computed
//! on the state the chain is actually at, and finalizes that revision instead of executing the
//! block again: execution has overlapped with voting. The state database's `finalize` drops every
//! revision that does not descend from the finalized one, so the results of abandoned forks are
//! freed with them, and their entries here are forgotten at the same time.
//!
//! Speculation is best effort and never changes what a block does: the result is the one the
//! same executor gives on the same parent, and anything not ready, computed on another parent, or
//! failed is simply executed again at finalization. The queue and the table of results are
//! bounded, and only blocks a few heights above the finalized head are taken.

use parking_lot::{Mutex, RwLock};
use peregrine_execution::{BlockExecutor, BlockOutput};
use peregrine_state::{Db, RevisionId};
use peregrine_types::{Block, Hash};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::debug;

/// Blocks waiting to be executed, at most; further offers are dropped.
const QUEUE: usize = 16;
/// Speculative results kept, at most.
const MAX_RESULTS: usize = 64;
/// How far above the finalized head a block may be and still be executed early.
pub(crate) const MAX_AHEAD: u64 = 8;

/// The finalized head, as the speculator needs it: which state a child of it executes on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Final {
    pub height: u64,
    pub hash: Hash,
    pub revision: RevisionId,
}

struct Speculated {
    height: u64,
    /// The block's parent.
    parent_hash: Hash,
    /// The revision the block was executed on.
    parent: RevisionId,
    out: BlockOutput,
}

type Results = Arc<Mutex<HashMap<Hash, Speculated>>>;

/// The speculation thread and its results.
pub(crate) struct Speculator {
    jobs: Option<SyncSender<Block>>,
    results: Results,
    finalized: Arc<RwLock<Final>>,
    hits: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl Speculator {
    /// Starts the thread, executing with `executor` on `db`.
    pub fn start(
        db: Arc<Db>,
        executor: Arc<dyn BlockExecutor>,
        finalized: Final,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel(QUEUE);
        let results = Results::default();
        let finalized = Arc::new(RwLock::new(finalized));
        let worker = Worker {
            db,
            executor,
            results: results.clone(),
            finalized: finalized.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("speculate".into())
            .spawn(move || worker.run(&rx))?;
        Ok(Self {
            jobs: Some(jobs),
            results,
            finalized,
            hits: AtomicU64::new(0),
            thread: Some(thread),
        })
    }

    /// Offers a block for early execution; dropped if it is out of reach or the queue is full.
    pub fn offer(&self, block: &Block) {
        let head = *self.finalized.read();
        let height = block.header.height;
        if height <= head.height || height > head.height + MAX_AHEAD {
            return;
        }
        if let Some(jobs) = &self.jobs {
            match jobs.try_send(block.clone()) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => debug!(height, "speculation queue full"),
            }
        }
    }

    /// The speculative result of `block` if it was executed on `parent`.
    pub fn take(&self, block: &Hash, parent: RevisionId) -> Option<BlockOutput> {
        let speculated = self.results.lock().remove(block)?;
        if speculated.parent != parent {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(speculated.out)
    }

    /// Records a new finalized head and forgets every result that does not descend from it: the
    /// state database has dropped their revisions with their forks.
    pub fn finalized(&self, head: Final) {
        *self.finalized.write() = head;
        let mut results = self.results.lock();
        let mut by_height: Vec<(u64, Hash, Hash)> = results
            .iter()
            .map(|(hash, s)| (s.height, *hash, s.parent_hash))
            .collect();
        by_height.sort_unstable();
        let mut live = std::collections::HashSet::from([head.hash]);
        for (_, hash, parent) in by_height {
            if live.contains(&parent) {
                live.insert(hash);
            } else {
                results.remove(&hash);
            }
        }
    }

    /// Finalized blocks whose speculative result was used.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Whether `block` has a speculative result waiting.
    #[cfg(test)]
    pub fn has_result(&self, block: &Hash) -> bool {
        self.results.lock().contains_key(block)
    }
}

impl Drop for Speculator {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    db: Arc<Db>,
    executor: Arc<dyn BlockExecutor>,
    results: Results,
    finalized: Arc<RwLock<Final>>,
}

impl Worker {
    fn run(&self, jobs: &Receiver<Block>) {
        for block in jobs {
            self.speculate(&block);
        }
    }

    /// The revision `block` executes on, if that state is known here.
    fn parent_revision(&self, block: &Block) -> Option<RevisionId> {
        let head = *self.finalized.read();
        if block.header.parent == head.hash {
            return Some(head.revision);
        }
        let results = self.results.lock();
        let parent = results.get(&block.header.parent)?;
        Some(parent.out.revision)
    }

    fn speculate(&self, block: &Block) {
        let hash = block.hash();
        let height = block.header.height;
        if self.results.lock().contains_key(&hash) {
            return;
        }
        let Some(parent) = self.parent_revision(block) else {
            debug!(height, %hash, "parent state unknown, not executing early");
            return;
        };
        let out = match self.executor.execute(&self.db, parent, block) {
            Ok(out) => out,
            Err(error) => {
                // The parent was pruned meanwhile, or the block cannot execute; finalization
                // will execute it (or never see it).
                debug!(height, %hash, %error, "speculative execution failed");
                return;
            }
        };
        let mut results = self.results.lock();
        let stale = height <= self.finalized.read().height;
        if stale || results.len() >= MAX_RESULTS {
            drop(results);
            // Already pruned, if its fork lost to a finalized block.
            let _ = self.db.discard(out.revision);
            return;
        }
        results.insert(
            hash,
            Speculated {
                height,
                parent_hash: block.header.parent,
                parent,
                out,
            },
        );
    }
}
