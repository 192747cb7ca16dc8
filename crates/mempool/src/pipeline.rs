//! The admission pipeline: N validation workers and one committer (see the crate docs).
//!
//! Work moves in units of at most [`UNIT_TXS`] transactions: a batch is split into units on
//! submission, each worker validates a whole unit (one batch signature verification, one claim
//! per sender), and the committer inserts a whole unit under one acquisition of the pool's lock.
//! Every queue is bounded; what does not fit is answered `overloaded` at once.

use crate::check::{self, Checked};
use crate::filter::Summary;
use crate::{Mempool, Rejection};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use futures::channel::oneshot;
use parking_lot::Mutex;
use peregrine_types::sigcheck::invalid_signatures;
use peregrine_types::{Address, Hash, SignedTransaction};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

/// Transactions per unit of work: large enough that batch verification pays off and the pool's
/// lock is taken rarely, small enough that one batch spreads over every worker.
pub const UNIT_TXS: usize = 64;

/// Times a transaction may be sent to the try-later queue before it proceeds without a claim.
pub const MAX_DEFERRALS: u8 = 4;

/// Transactions the try-later queue holds; beyond it, conflicting transactions are shed.
pub const TRY_LATER_MAX: usize = 65_536;

/// Units waiting for a worker.
const INGEST_UNITS: usize = 4_096;

/// Validated units waiting for the committer. Small: a full queue stalls the workers, which is
/// the back-pressure that keeps the committer from falling behind.
const COMMIT_UNITS: usize = 16;

/// Units of retried transactions waiting for a worker.
const RETRY_UNITS: usize = 64;

/// How long an idle worker waits for new work before it looks at the try-later queue itself.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// Results of one submission, in submission order.
pub type Results = Vec<Result<Hash, Rejection>>;

/// The pipeline's shape.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Validation workers; 0 means one per core.
    pub workers: usize,
    /// Most transactions in the pipeline at once; beyond it, submissions are shed.
    pub max_in_flight: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            max_in_flight: 131_072,
        }
    }
}

/// Counters of the pipeline's own decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Transactions sent to the try-later queue by the conflict pre-filter.
    pub deferred: u64,
    /// Transactions that reached the deferral bound and went on unclaimed.
    pub fallback: u64,
    /// Transactions shed because a queue was full.
    pub shed: u64,
    /// Units validated.
    pub units: u64,
}

#[derive(Default)]
struct Counters {
    deferred: AtomicU64,
    fallback: AtomicU64,
    shed: AtomicU64,
    units: AtomicU64,
}

/// One submission's answers, filled in as its transactions finish.
struct Job {
    results: Mutex<Vec<Option<Result<Hash, Rejection>>>>,
    remaining: AtomicUsize,
    reply: Mutex<Option<oneshot::Sender<Results>>>,
}

enum Raw {
    Bytes(Vec<u8>),
    Tx(Box<SignedTransaction>),
}

struct Item {
    raw: Raw,
    job: Arc<Job>,
    index: usize,
    deferrals: u8,
}

struct Unit {
    items: Vec<Item>,
}

struct Validated {
    unit: u64,
    claims: Vec<usize>,
    items: Vec<(Item, Checked)>,
}

struct Shared {
    mempool: Arc<Mempool>,
    try_later: Mutex<VecDeque<Item>>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    next_unit: AtomicU64,
    counters: Counters,
}

/// A running admission pipeline over a [`Mempool`]. Dropping it stops the threads; transactions
/// still queued are answered `overloaded`.
pub struct Admission {
    shared: Arc<Shared>,
    ingest: Option<Sender<Unit>>,
    workers: Vec<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
    worker_count: usize,
}

/// The answers to one submission: a future, or [`Pending::wait`] from synchronous code.
pub struct Pending {
    rx: oneshot::Receiver<Results>,
    len: usize,
}

impl Future for Pending {
    type Output = Results;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Results> {
        let len = self.len;
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| vec![Err(Rejection::Overloaded); len]))
    }
}

impl Pending {
    /// Blocks until every transaction of the submission has its answer.
    pub fn wait(self) -> Results {
        futures::executor::block_on(self)
    }
}

impl Admission {
    /// Starts the workers and the committer.
    pub fn start(mempool: Arc<Mempool>, config: AdmissionConfig) -> Self {
        let worker_count = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let shared = Arc::new(Shared {
            mempool,
            try_later: Mutex::new(VecDeque::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: config.max_in_flight.max(1),
            next_unit: AtomicU64::new(1),
            counters: Counters::default(),
        });
        let (ingest_tx, ingest_rx) = bounded::<Unit>(INGEST_UNITS);
        let (commit_tx, commit_rx) = bounded::<Validated>(COMMIT_UNITS);
        let (retry_tx, retry_rx) = bounded::<Unit>(RETRY_UNITS);
        let workers = (0..worker_count)
            .map(|i| {
                let (shared, ingest, retry) = (shared.clone(), ingest_rx.clone(), retry_rx.clone());
                let commit = commit_tx.clone();
                spawn(format!("admit-{i}"), move || {
                    shared.work(&ingest, &retry, &commit)
                })
            })
            .collect();
        let committer_shared = shared.clone();
        let committer = spawn("admit-commit".into(), move || {
            committer_shared.commit_loop(&commit_rx, &retry_tx)
        });
        Self {
            shared,
            ingest: Some(ingest_tx),
            workers,
            committer: Some(committer),
            worker_count,
        }
    }

    /// The number of validation workers.
    pub fn workers(&self) -> usize {
        self.worker_count
    }

    /// The pool this pipeline admits into.
    pub fn mempool(&self) -> &Arc<Mempool> {
        &self.shared.mempool
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.shared.counters;
        PipelineStats {
            deferred: c.deferred.load(Ordering::Relaxed),
            fallback: c.fallback.load(Ordering::Relaxed),
            shed: c.shed.load(Ordering::Relaxed),
            units: c.units.load(Ordering::Relaxed),
        }
    }

    /// Transactions in the pipeline now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Submits raw transactions; answers arrive in the same order.
    pub fn submit(&self, raw: Vec<Vec<u8>>) -> Pending {
        self.submit_raw(raw.into_iter().map(Raw::Bytes).collect())
    }

    /// Submits decoded transactions (for example those of a discarded block); signatures this
    /// node verified before are not verified again.
    pub fn submit_txs(&self, txs: Vec<SignedTransaction>) -> Pending {
        self.submit_raw(txs.into_iter().map(|tx| Raw::Tx(Box::new(tx))).collect())
    }

    fn submit_raw(&self, raw: Vec<Raw>) -> Pending {
        let (reply, rx) = oneshot::channel();
        let len = raw.len();
        let job = Arc::new(Job {
            results: Mutex::new(vec![None; len]),
            remaining: AtomicUsize::new(len),
            reply: Mutex::new(Some(reply)),
        });
        if len == 0 {
            job.send();
            return Pending { rx, len };
        }
        let shared = &self.shared;
        let admitted = shared.in_flight.fetch_add(len, Ordering::AcqRel) + len;
        let overfull = admitted > shared.max_in_flight;
        let mut items = raw.into_iter().enumerate().map(|(index, raw)| Item {
            raw,
            job: job.clone(),
            index,
            deferrals: 0,
        });
        loop {
            let unit: Vec<Item> = items.by_ref().take(UNIT_TXS).collect();
            if unit.is_empty() {
                break;
            }
            match (&self.ingest, overfull) {
                (Some(ingest), false) => {
                    if let Err(err) = ingest.try_send(Unit { items: unit }) {
                        let unit = match err {
                            TrySendError::Full(u) | TrySendError::Disconnected(u) => u,
                        };
                        shared.shed(unit.items);
                    }
                }
                _ => shared.shed(unit),
            }
        }
        Pending { rx, len }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.ingest = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        let left: Vec<Item> = self.shared.try_later.lock().drain(..).collect();
        self.shared.shed(left);
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawning an admission thread")
}

impl Job {
    fn send(&self) {
        let results = self
            .results
            .lock()
            .iter_mut()
            .map(|r| r.take().unwrap_or(Err(Rejection::Overloaded)))
            .collect();
        if let Some(reply) = self.reply.lock().take() {
            let _ = reply.send(results);
        }
    }
}

impl Shared {
    /// Records a transaction's answer; the last answer of a submission sends them all.
    fn finish(&self, item: &Item, result: Result<Hash, Rejection>) {
        self.mempool.stats.record(&result);
        item.job.results.lock()[item.index] = Some(result);
        if item.job.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let len = item.job.results.lock().len();
            self.in_flight.fetch_sub(len, Ordering::AcqRel);
            item.job.send();
        }
    }

    fn shed(&self, items: Vec<Item>) {
        self.counters
            .shed
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        for item in &items {
            self.finish(item, Err(Rejection::Overloaded));
        }
    }

    fn work(&self, ingest: &Receiver<Unit>, retry: &Receiver<Unit>, commit: &Sender<Validated>) {
        loop {
            let unit = match retry.try_recv() {
                Ok(unit) => unit,
                Err(_) => match ingest.recv_timeout(IDLE_POLL) {
                    Ok(unit) => unit,
                    Err(RecvTimeoutError::Timeout) => match self.take_try_later() {
                        Some(unit) => unit,
                        None => continue,
                    },
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            if let Some(validated) = self.validate(unit) {
                if let Err(err) = commit.send(validated) {
                    self.release(&err.0.claims, err.0.unit);
                    let items = err.0.items.into_iter().map(|(item, _)| item).collect();
                    self.shed(items);
                    return;
                }
            }
        }
    }

    fn take_try_later(&self) -> Option<Unit> {
        let mut queue = self.try_later.lock();
        let take = queue.len().min(UNIT_TXS);
        (take > 0).then(|| Unit {
            items: queue.drain(..take).collect(),
        })
    }

    /// Steps 1 to 4 for one unit; `None` when nothing in it is left for the committer.
    fn validate(&self, unit: Unit) -> Option<Validated> {
        let id = self.next_unit.fetch_add(1, Ordering::Relaxed);
        self.counters.units.fetch_add(1, Ordering::Relaxed);
        let (ready, claims) = self.screen(unit, id);
        let ready = self.verify(ready);
        let items = self.check_state(ready);
        if items.is_empty() {
            self.release(&claims, id);
            return None;
        }
        Some(Validated {
            unit: id,
            claims,
            items,
        })
    }

    /// Cheap checks and sender claims; defers transactions whose sender another unit owns.
    fn screen(&self, unit: Unit, id: u64) -> (Vec<(Item, SignedTransaction)>, Vec<usize>) {
        let mut ready = Vec::with_capacity(unit.items.len());
        let mut claims = Vec::new();
        for mut item in unit.items {
            let raw = std::mem::replace(&mut item.raw, Raw::Bytes(Vec::new()));
            let tx = match raw {
                Raw::Bytes(bytes) => check::decode(&bytes),
                Raw::Tx(tx) => Ok(*tx),
            };
            let tx = match tx.and_then(|tx| self.mempool.cheap_checks(&tx).map(|()| tx)) {
                Ok(tx) => tx,
                Err(rejection) => {
                    self.finish(&item, Err(rejection));
                    continue;
                }
            };
            match self.mempool.claims.claim(&tx.sender(), id) {
                Some(slot) => {
                    claims.push(slot);
                    ready.push((item, tx));
                }
                None if item.deferrals < MAX_DEFERRALS => self.defer(item, tx),
                None => {
                    self.counters.fallback.fetch_add(1, Ordering::Relaxed);
                    ready.push((item, tx));
                }
            }
        }
        claims.sort_unstable();
        claims.dedup();
        (ready, claims)
    }

    fn defer(&self, mut item: Item, tx: SignedTransaction) {
        item.raw = Raw::Tx(Box::new(tx));
        item.deferrals += 1;
        let mut queue = self.try_later.lock();
        if queue.len() < TRY_LATER_MAX {
            queue.push_back(item);
            drop(queue);
            self.counters.deferred.fetch_add(1, Ordering::Relaxed);
        } else {
            drop(queue);
            self.shed(vec![item]);
        }
    }

    /// One batch verification over the transactions not verified before.
    fn verify(&self, ready: Vec<(Item, SignedTransaction)>) -> Vec<(Item, SignedTransaction)> {
        let verified = &self.mempool.verified;
        let known = verified.contains_many(ready.iter().map(|(_, tx)| tx.hash()));
        let unknown: Vec<usize> = (0..ready.len()).filter(|&i| !known[i]).collect();
        let refs: Vec<&SignedTransaction> = unknown.iter().map(|&i| &ready[i].1).collect();
        let mut bad: Vec<bool> = vec![false; ready.len()];
        for i in invalid_signatures(&refs) {
            bad[unknown[i]] = true;
        }
        let fresh: Vec<Hash> = unknown
            .iter()
            .filter(|&&i| !bad[i])
            .map(|&i| ready[i].1.hash())
            .collect();
        verified.insert_many(&fresh);
        let mut out = Vec::with_capacity(ready.len());
        for (i, (item, tx)) in ready.into_iter().enumerate() {
            if bad[i] {
                self.finish(&item, Err(Rejection::BadSignature));
            } else {
                out.push((item, tx));
            }
        }
        out
    }

    /// Nonce and balance against the latest state and the pool's published totals, counting the
    /// unit's own earlier transactions of the same sender.
    fn check_state(&self, ready: Vec<(Item, SignedTransaction)>) -> Vec<(Item, Checked)> {
        let state = self.mempool.state();
        let config = &self.mempool.config;
        let mut local: HashMap<Address, Summary, std::collections::hash_map::RandomState> =
            HashMap::default();
        let mut out = Vec::with_capacity(ready.len());
        for (item, tx) in ready {
            let sender = tx.sender();
            let pending = local
                .entry(sender)
                .or_insert_with(|| self.mempool.index.get(&sender));
            match check::against_state(tx, &state, *pending, config) {
                Ok(checked) => {
                    check::add_pending(pending, &checked.tx);
                    out.push((item, checked));
                }
                Err(rejection) => self.finish(&item, Err(rejection)),
            }
        }
        out
    }

    fn release(&self, claims: &[usize], unit: u64) {
        self.mempool.claims.release(claims, unit);
    }

    /// Step 6: insert each validated unit under one acquisition of the pool's lock.
    fn commit_loop(&self, commit: &Receiver<Validated>, retry: &Sender<Unit>) {
        for validated in commit {
            let results: Vec<(Item, Result<Hash, Rejection>)> = {
                let mut pool = self.mempool.pool.lock();
                validated
                    .items
                    .into_iter()
                    .map(|(item, checked)| {
                        let result = self.mempool.commit(&mut pool, checked);
                        (item, result)
                    })
                    .collect()
            };
            self.release(&validated.claims, validated.unit);
            for (item, result) in results {
                self.finish(&item, result);
            }
            self.flush_try_later(retry);
        }
    }

    /// Claims were just released: hand the deferred transactions back to the workers.
    fn flush_try_later(&self, retry: &Sender<Unit>) {
        while let Some(unit) = self.take_try_later() {
            if let Err(err) = retry.try_send(unit) {
                let unit = match err {
                    TrySendError::Full(u) | TrySendError::Disconnected(u) => u,
                };
                let mut queue = self.try_later.lock();
                for item in unit.items.into_iter().rev() {
                    queue.push_front(item);
                }
                return;
            }
        }
    }
}
