//! One background thread for the work that need not delay the writer: freeing pruned revisions.
//!
//! Finalizing drops the revisions it prunes, and with them every node no surviving revision
//! shares: tens of thousands per 10,000-transfer block, which took as long as the commit itself
//! when freed inline.
//!
//! The queue is bounded: when the thread falls behind, the caller runs the job itself.
//!
//! Snapshots hold a [`Handoff`] to the same queue, so the thread that drops the last snapshot of
//! a pruned revision (a reader, an RPC worker, the writer) does not pay for freeing its tree
//! either. The handoff is weak: it never keeps the thread alive, and once the database is gone it
//! frees in place.

use crate::recycle::Recycler;
use crate::Error;
use crossbeam_channel::{bounded, Sender, TrySendError};
use std::cell::Cell;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

/// Jobs waiting, at most.
const QUEUE: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// The background thread.
pub struct Background {
    queue: Option<Arc<Sender<Job>>>,
    thread: Option<JoinHandle<()>>,
}

/// A weak way into the background queue, for snapshots.
#[derive(Clone, Default)]
pub struct Handoff(Weak<Sender<Job>>);

impl Handoff {
    /// Frees `value` on the background thread if the database is still open and its queue has
    /// room, else here.
    pub fn drop_later(&self, value: impl Send + 'static) {
        match self.0.upgrade() {
            Some(queue) => send_or_run(&queue, Box::new(move || drop(value))),
            None => drop(value),
        }
    }
}

thread_local! {
    /// Whether this thread is a database's background thread.
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

/// Queues `job`, or runs it here when the queue is full or this is a background thread
/// already: a job that hands work on (a pruned revision whose snapshot held the last handle
/// to its tree) must not queue it behind a [`Background::settle`] that is waiting for it.
fn send_or_run(queue: &Sender<Job>, job: Job) {
    if BACKGROUND.with(Cell::get) {
        return job();
    }
    match queue.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job(),
    }
}

impl Background {
    /// Starts the thread; the branches it frees go to `recycler`.
    pub fn start(recycler: &Arc<Recycler>) -> Result<Self, Error> {
        let (queue, rx) = bounded::<Job>(QUEUE);
        let recycler = recycler.clone();
        let thread = std::thread::Builder::new()
            .name("state-background".into())
            .spawn(move || {
                BACKGROUND.with(|background| background.set(true));
                crate::recycle::join(&recycler);
                drop(recycler);
                rx.into_iter().for_each(|job| job());
            })
            .map_err(|source| Error::Io {
                context: "start the state background thread",
                source,
            })?;
        Ok(Self {
            queue: Some(Arc::new(queue)),
            thread: Some(thread),
        })
    }

    /// A handoff to this thread's queue.
    pub fn handoff(&self) -> Handoff {
        Handoff(self.queue.as_ref().map_or_else(Weak::new, Arc::downgrade))
    }

    /// Runs `job` on the background thread, or here if its queue is full.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let Some(queue) = &self.queue else {
            return job();
        };
        send_or_run(queue, Box::new(job));
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
        // A handoff upgraded at this moment holds the sender for the length of one send, so the
        // thread ends right after that job.
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
        let background = Background::start(&crate::recycle::Recycler::new()).expect("start");
        let freed = Arc::new(AtomicBool::new(false));
        background.drop_later(Slow(freed.clone()));
        background.settle();
        assert!(freed.load(Ordering::SeqCst));
    }

    /// A job that hands more work to the background (as dropping a pruned revision does when it
    /// held the last handle to its tree) has it done before a `settle` queued meanwhile returns.
    #[test]
    fn work_handed_on_by_a_background_job_is_done_before_settle_returns() {
        let background = Background::start(&crate::recycle::Recycler::new()).expect("start");
        let freed = Arc::new(AtomicBool::new(false));
        let handoff = background.handoff();
        let (started, wait_started) = crossbeam_channel::bounded::<()>(1);
        let (go, wait_go) = crossbeam_channel::bounded::<()>(1);
        let slow = Slow(freed.clone());
        background.run(move || {
            let _ = started.send(());
            let _ = wait_go.recv();
            handoff.drop_later(slow);
        });
        wait_started.recv().expect("the job started");
        // `settle` queues its marker while the job runs; the job then hands its work on.
        let settling = std::thread::spawn(move || {
            background.settle();
            background
        });
        std::thread::sleep(Duration::from_millis(20));
        go.send(()).expect("the job waits");
        let _background = settling.join().expect("settle");
        assert!(
            freed.load(Ordering::SeqCst),
            "settle returned before the handed-on work"
        );
    }
}
