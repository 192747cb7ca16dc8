//! One background thread for the work that need not delay the writer: hashing committed tries
//! and freeing pruned revisions.
//!
//! - **Hashing.** `commit` builds the new trie without hashes; the background thread computes
//!   them (spreading the top levels over the rayon pool) while the writer goes on to the next
//!   block. The next commit first makes sure its parent's hashes are done, helping if they are
//!   not, so hashing lags the writer by at most one block and every figure includes it.
//! - **Freeing.** Finalizing drops the revisions it prunes, and with them every node no surviving
//!   revision shares: tens of thousands per 10,000-transfer block, which took as long as the
//!   commit itself when freed inline.
//!
//! The queue is bounded: when the thread falls behind, the caller runs the job itself.

use crate::Error;
use crossbeam_channel::{bounded, Sender, TrySendError};
use std::thread::JoinHandle;

/// Jobs waiting, at most.
const QUEUE: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// The background thread.
pub struct Background {
    queue: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts the thread.
    pub fn start() -> Result<Self, Error> {
        let (queue, rx) = bounded::<Job>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("state-background".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .map_err(|source| Error::Io {
                context: "start the state background thread",
                source,
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `job` on the background thread, or here if its queue is full.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let Some(queue) = &self.queue else {
            return job();
        };
        match queue.try_send(Box::new(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job(),
        }
    }

    /// Frees `value` on the background thread.
    pub fn drop_later(&self, value: impl Send + 'static) {
        self.run(move || drop(value));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
