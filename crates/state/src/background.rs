//! One background thread for the work that need not delay the writer: freeing pruned revisions.
//!
//! Finalizing drops the revisions it prunes, and with them every node no surviving revision
//! shares: tens of thousands per 10,000-transfer block, which took as long as the commit itself
//! when freed inline.
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

    /// Waits until every job queued before this call has run.
    pub fn settle(&self) {
        let (done, finished) = bounded::<()>(1);
        self.run(move || {
            let _ = done.send(());
        });
        // A job that ran here, or a thread that has stopped, has already sent or dropped `done`.
        let _ = finished.recv();
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

#[cfg(test)]
mod tests {
    use super::Background;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Sets its flag when dropped, after a pause that a racing check would lose.
    struct Slow(Arc<AtomicBool>);

    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(50));
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn settle_waits_for_the_jobs_queued_before_it() {
        let background = Background::start().expect("start");
        let freed = Arc::new(AtomicBool::new(false));
        background.drop_later(Slow(freed.clone()));
        background.settle();
        assert!(freed.load(Ordering::SeqCst));
    }
}
