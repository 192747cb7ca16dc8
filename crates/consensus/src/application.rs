//! The bridge between commonware's simplex engine and the node's [`Ledger`].
//!
//! Simplex orders opaque digests; here a digest is a block hash. The engine asks us to
//! - `propose`: build a block on a given parent from the mempool and return its hash;
//! - `verify`: check a block another leader proposed (we must have its bytes, from the relay);
//! - `broadcast` (relay): send a block we proposed to the other validators;
//! - `report`: tell us about votes and certificates; a finalization certificate finalizes the
//!   block and every not yet final ancestor, which the finalizer hands to the ledger in order.
//!
//! Each engine request is answered on a oneshot channel from a spawned task, so slow work (waiting
//! for the execution receipt a header must carry, or for block bytes from a peer) never stalls the
//! engine; dropping the sender tells the engine the request failed, and simplex then nullifies the
//! view, which is the protocol's own recovery path.

use crate::{Digest, Ledger, PublicKey};
use commonware_actor::Feedback;
use commonware_consensus::simplex::types::{Activity, Context};
use commonware_consensus::simplex::Plan;
use commonware_consensus::{Automaton, CertifiableAutomaton, Relay, Reporter};
use commonware_p2p::{Recipients, Sender};
use commonware_runtime::{Clock, IoBuf, Spawner, Supervisor};
use commonware_utils::channel::oneshot;
use peregrine_types::{block::exec_height_for, Block, Encode, Hash};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

/// How often a waiting task re-checks for the execution receipt or block bytes it needs.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How long propose and verify wait for what they need before giving up (and letting simplex
/// nullify the view). Shorter than the engine's leader timeout.
const WAIT_LIMIT: Duration = Duration::from_millis(800);

/// Converts a block hash into the engine's digest type.
pub fn digest_of(hash: Hash) -> Digest {
    commonware_cryptography::blake3::Digest(hash.0)
}

/// Converts an engine digest back into a block hash.
pub fn hash_of(digest: &Digest) -> Hash {
    Hash(digest.0)
}

fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The consensus application: automaton, relay and reporter in one cloneable handle.
pub struct Application<E, L, S> {
    pub(crate) context: Arc<E>,
    pub(crate) ledger: Arc<L>,
    pub(crate) chain_id: u64,
    pub(crate) block_time: Duration,
    pub(crate) proposer: peregrine_types::PublicKey,
    pub(crate) blocks_out: S,
    pub(crate) finalized: std::sync::mpsc::SyncSender<Digest>,
}

impl<E, L, S: Clone> Clone for Application<E, L, S> {
    fn clone(&self) -> Self {
        Self {
            context: self.context.clone(),
            ledger: self.ledger.clone(),
            chain_id: self.chain_id,
            block_time: self.block_time,
            proposer: self.proposer,
            blocks_out: self.blocks_out.clone(),
            finalized: self.finalized.clone(),
        }
    }
}

/// Polls `probe` until it yields a value or [`WAIT_LIMIT`] passes.
async fn wait_for<E: Clock, T>(context: &E, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = context.current() + WAIT_LIMIT;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if context.current() >= deadline {
            return None;
        }
        context.sleep(POLL_INTERVAL).await;
    }
}

impl<E, L, S> Application<E, L, S>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    L: Ledger,
    S: Sender<PublicKey = PublicKey>,
{
    async fn build(self, parent: Hash) -> Option<Digest> {
        let parent = wait_for(&*self.context, || self.ledger.block(&parent)).await?;
        let height = parent.header.height + 1;
        let exec_root = wait_for(&*self.context, || {
            self.ledger.exec_root(exec_height_for(height))
        })
        .await?;
        // Pace the chain: a block no sooner than `block_time` after its parent.
        let earliest = parent.header.timestamp_ms + self.block_time.as_millis() as u64;
        let now = unix_ms(self.context.current());
        if earliest > now {
            self.context
                .sleep(Duration::from_millis(earliest - now))
                .await;
        }
        let timestamp = unix_ms(self.context.current()).max(parent.header.timestamp_ms + 1);
        let txs = self.ledger.select_txs(height);
        let block = Block::new(
            height,
            parent.hash(),
            timestamp,
            self.proposer,
            exec_root,
            txs,
        );
        if let Err(error) = self.ledger.store_block(&block) {
            warn!(%error, height, "could not store proposed block");
            return None;
        }
        debug!(height, txs = block.txs.len(), hash = %block.hash(), "proposed");
        Some(digest_of(block.hash()))
    }

    async fn check(self, parent: Hash, digest: Digest) -> bool {
        let hash = hash_of(&digest);
        let Some(block) = wait_for(&*self.context, || self.ledger.block(&hash)).await else {
            warn!(%hash, "block to verify never arrived");
            return false;
        };
        let Some(parent) = self.ledger.block(&parent) else {
            warn!(%hash, "parent of block to verify is unknown");
            return false;
        };
        let exec_height = exec_height_for(block.header.height);
        let Some(ours) = wait_for(&*self.context, || self.ledger.exec_root(exec_height)).await
        else {
            warn!(%hash, exec_height, "own execution receipt not ready in time");
            return false;
        };
        let now = unix_ms(self.context.current());
        let verified = |hash: &Hash| self.ledger.is_verified(hash);
        match crate::rules::validate(self.chain_id, &parent, &block, ours, now, &verified) {
            Ok(()) => true,
            Err(error) => {
                warn!(%hash, %error, "refusing invalid block");
                false
            }
        }
    }
}

impl<E, L, S> Automaton for Application<E, L, S>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    L: Ledger,
    S: Sender<PublicKey = PublicKey>,
{
    type Context = Context<Digest, PublicKey>;
    type Digest = Digest;

    async fn propose(&mut self, context: Self::Context) -> oneshot::Receiver<Digest> {
        let (tx, rx) = oneshot::channel();
        let app = self.clone();
        let parent = hash_of(&context.parent.1);
        self.context.child("request").spawn(move |_| async move {
            if let Some(digest) = app.build(parent).await {
                let _ = tx.send(digest);
            }
        });
        rx
    }

    async fn verify(&mut self, context: Self::Context, payload: Digest) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let app = self.clone();
        let parent = hash_of(&context.parent.1);
        self.context.child("request").spawn(move |_| async move {
            let _ = tx.send(app.check(parent, payload).await);
        });
        rx
    }
}

impl<E, L, S> CertifiableAutomaton for Application<E, L, S>
where
    E: Clock + Spawner + Supervisor + Send + Sync + 'static,
    L: Ledger,
    S: Sender<PublicKey = PublicKey>,
{
}

impl<E, L, S> Relay for Application<E, L, S>
where
    E: Send + Sync + 'static,
    L: Ledger,
    S: Sender<PublicKey = PublicKey>,
{
    type Digest = Digest;
    type PublicKey = PublicKey;
    type Plan = Plan<PublicKey>;

    fn broadcast(&mut self, payload: Digest, plan: Plan<PublicKey>) -> Feedback {
        let recipients = match plan {
            Plan::Propose { .. } => Recipients::All,
            Plan::Forward { recipients, .. } => recipients,
            // We never stage term-start candidates (we do not implement `prepare`).
            Plan::Prepare { .. } => return Feedback::Ok,
        };
        let Some(block) = self.ledger.block(&hash_of(&payload)) else {
            return Feedback::Ok;
        };
        let _ = self
            .blocks_out
            .send(recipients, IoBuf::from(block.encode()), false);
        Feedback::Ok
    }
}

impl<E, L, S> Reporter for Application<E, L, S>
where
    E: Send + Sync + 'static,
    L: Ledger,
    S: Clone + Send + 'static,
{
    type Activity = Activity<crate::Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Activity::Finalization(finalization) = activity {
            // A full queue drops this notice safely: a later finalization finalizes every
            // ancestor too, so nothing is lost, only delayed.
            return match self.finalized.try_send(finalization.proposal.payload) {
                Ok(()) => Feedback::Ok,
                Err(_) => Feedback::Backoff,
            };
        }
        Feedback::Ok
    }
}
