//! Frees dropped revisions off the writer's path.
//!
//! Finalizing drops the revisions it prunes, and with them every trie node no surviving revision
//! shares: tens of thousands of nodes per 10,000-transfer block, which took as long as the commit
//! itself when freed inline. They are handed to one background thread instead. The queue is
//! bounded: when the thread falls behind, the caller frees inline, so memory stays bounded.

use crate::Error;
use crossbeam_channel::{bounded, Sender, TrySendError};
use std::thread::JoinHandle;

/// Something to free.
type Garbage = Box<dyn Send>;

/// Dropped values waiting to be freed, at most this many batches.
const QUEUE: usize = 16;

/// The background thread that frees what it is given.
pub struct Reclaimer {
    queue: Option<Sender<Garbage>>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts the thread.
    pub fn start() -> Result<Self, Error> {
        let (queue, rx) = bounded::<Garbage>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("state-reclaim".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .map_err(|source| Error::Io {
                context: "start the state reclaimer",
                source,
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Frees `value` on the background thread, or here if its queue is full.
    pub fn drop_later(&self, value: impl Send + 'static) {
        if let Some(queue) = &self.queue {
            match queue.try_send(Box::new(value)) {
                Ok(()) => {}
                Err(TrySendError::Full(value) | TrySendError::Disconnected(value)) => drop(value),
            }
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
