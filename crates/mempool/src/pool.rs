//! The pool's data, owned by the one committer: per-sender nonce queues, a hash index and a fee
//! index.
//!
//! Invariants, checked by [`Pool::check_invariants`] in tests:
//! - `by_hash` and `by_fee` index exactly the entries of `senders`;
//! - `bytes` is the sum of the entries' encoded sizes, and each queue's `cost` the sum of its
//!   entries' fees plus amounts;
//! - the published [`PendingIndex`] agrees with every queue;
//! - every nonce in a queue lies in `base .. base + max_nonce_ahead`, where `base` is the sender's
//!   nonce in the pool's state.
//!
//! A queue may have gaps: a transaction whose nonce is ahead of the sender's next one is held, and
//! becomes selectable once the gap before it fills. Only the run of consecutive nonces starting
//! at `base` is ever offered to a block.

use crate::filter::{PendingIndex, SeenFilter, Summary};
use crate::{MempoolConfig, Rejection, REPLACE_BUMP_PERCENT};
use peregrine_state::Snapshot;
use peregrine_types::{Account, Address, Hash, Payload, SignedTransaction};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

/// How many of the cheapest entries eviction looks at before giving up, so a full pool answers a
/// flood of cheap transactions in bounded time.
const EVICTION_SCAN_MAX: usize = 64;

/// What a transaction can take from its sender's balance at most: fee plus amount.
pub(crate) fn cost(tx: &SignedTransaction) -> u128 {
    let amount = match tx.tx().payload {
        Payload::Transfer { amount, .. } => amount,
        Payload::Deploy { .. } | Payload::Call { .. } => 0,
    };
    u128::from(tx.tx().fee).saturating_add(amount)
}

/// The sender's account in `state`.
pub(crate) fn account_of(state: &Snapshot, sender: &Address) -> Result<Account, Rejection> {
    Account::from_record(
        state
            .get(&peregrine_types::keys::account(sender))
            .as_deref(),
    )
    .map_err(|_| Rejection::CorruptState)
}

struct Entry {
    tx: SignedTransaction,
    proposed_at: Option<u64>,
}

#[derive(Default)]
struct Queue {
    base: u64,
    txs: BTreeMap<u64, Entry>,
    cost: u128,
}

/// Counters the pool keeps besides admission outcomes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PoolCounters {
    pub evicted: u64,
    pub dropped: u64,
}

pub(crate) struct Pool {
    senders: HashMap<Address, Queue, RandomState>,
    by_hash: HashMap<Hash, (Address, u64), RandomState>,
    by_fee: BTreeSet<(u64, Hash)>,
    /// Heights of open proposals and the senders they took from.
    proposed: BTreeMap<u64, Vec<Address>>,
    bytes: usize,
    pub(crate) state: Snapshot,
    pub(crate) counters: PoolCounters,
    index: Arc<PendingIndex>,
    seen: Arc<SeenFilter>,
}

impl Pool {
    pub(crate) fn new(state: Snapshot, index: Arc<PendingIndex>, seen: Arc<SeenFilter>) -> Self {
        Self {
            senders: HashMap::default(),
            by_hash: HashMap::default(),
            by_fee: BTreeSet::new(),
            proposed: BTreeMap::new(),
            bytes: 0,
            state,
            counters: PoolCounters::default(),
            index,
            seen,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// One past the end of the sender's consecutive run of pending nonces from `state_nonce`.
    pub(crate) fn next_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let mut next = state_nonce;
        if let Some(queue) = self.senders.get(sender) {
            while queue.txs.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    pub(crate) fn get(&self, hash: &Hash) -> Option<SignedTransaction> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        let entry = self.senders.get(sender)?.txs.get(nonce)?;
        Some(entry.tx.clone())
    }

    pub(crate) fn contains(&self, hash: &Hash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Inserts `tx` after the exact checks, given the sender's `account` in the pool's state.
    pub(crate) fn insert(
        &mut self,
        tx: SignedTransaction,
        account: Account,
        config: &MempoolConfig,
    ) -> Result<Hash, Rejection> {
        if self.by_hash.contains_key(&tx.hash()) {
            return Err(Rejection::Duplicate);
        }
        let sender = tx.sender();
        let nonce = tx.tx().nonce;
        check_nonce(nonce, account.nonce, config)?;
        let queue = self.senders.get(&sender);
        let replaced = queue.and_then(|q| q.txs.get(&nonce));
        if let Some(old) = replaced {
            check_replacement(old, &tx)?;
        }
        let pending_cost = queue.map_or(0, |q| q.cost) - replaced.map_or(0, |e| cost(&e.tx));
        let needed = pending_cost.saturating_add(cost(&tx));
        if needed > account.balance {
            return Err(Rejection::InsufficientBalance {
                needed,
                available: account.balance,
            });
        }
        if replaced.is_none() {
            let pending = queue.map_or(0, |q| q.txs.len());
            if pending >= config.max_per_sender {
                return Err(Rejection::SenderFull {
                    cap: config.max_per_sender,
                });
            }
            self.make_room(&tx, config)?;
        }
        Ok(self.put(sender, account.nonce, tx))
    }

    /// Evicts the cheapest transactions (and each victim's later nonces, which could no longer
    /// run) until `tx` fits, if `tx` pays more than each victim.
    fn make_room(
        &mut self,
        tx: &SignedTransaction,
        config: &MempoolConfig,
    ) -> Result<(), Rejection> {
        let sender = tx.sender();
        while self.len() >= config.max_txs || self.bytes + tx.encoded_len() > config.max_bytes {
            let victim = self
                .by_fee
                .iter()
                .take(EVICTION_SCAN_MAX)
                .map(|(fee, hash)| (*fee, self.by_hash[hash]))
                .find(|(_, (owner, nonce))| *owner != sender && !self.is_proposed(owner, *nonce));
            match victim {
                Some((fee, (owner, nonce))) if fee < tx.tx().fee => {
                    let removed = self.remove_from(&owner, nonce);
                    self.counters.evicted += removed as u64;
                }
                _ => return Err(Rejection::PoolFull),
            }
        }
        Ok(())
    }

    fn is_proposed(&self, sender: &Address, nonce: u64) -> bool {
        self.senders
            .get(sender)
            .and_then(|q| q.txs.get(&nonce))
            .is_some_and(|e| e.proposed_at.is_some())
    }

    fn put(&mut self, sender: Address, base: u64, tx: SignedTransaction) -> Hash {
        let hash = tx.hash();
        let nonce = tx.tx().nonce;
        self.bytes += tx.encoded_len();
        self.by_hash.insert(hash, (sender, nonce));
        self.by_fee.insert((tx.tx().fee, hash));
        let queue = self.senders.entry(sender).or_default();
        queue.base = base;
        queue.cost = queue.cost.saturating_add(cost(&tx));
        let entry = Entry {
            tx,
            proposed_at: None,
        };
        if let Some(old) = queue.txs.insert(nonce, entry) {
            queue.cost -= cost(&old.tx);
            self.bytes -= old.tx.encoded_len();
            let old_hash = old.tx.hash();
            self.by_hash.remove(&old_hash);
            self.by_fee.remove(&(old.tx.tx().fee, old_hash));
            self.seen.forget(&old_hash);
        }
        self.publish(&sender);
        hash
    }

    fn publish(&self, sender: &Address) {
        let summary = self
            .senders
            .get(sender)
            .map_or(Summary::default(), |q| Summary {
                len: q.txs.len(),
                cost: q.cost,
                highest: q.txs.keys().next_back().copied().unwrap_or_default(),
            });
        self.index.set(*sender, summary);
    }

    /// Removes the sender's entries from `nonce` on; returns how many.
    fn remove_from(&mut self, sender: &Address, nonce: u64) -> usize {
        let Some(queue) = self.senders.get_mut(sender) else {
            return 0;
        };
        let tail = queue.txs.split_off(&nonce);
        for entry in tail.values() {
            queue.cost -= cost(&entry.tx);
        }
        let removed = tail.len();
        for entry in tail.into_values() {
            self.unindex(&entry.tx);
            self.seen.forget(&entry.tx.hash());
        }
        self.tidy(sender);
        removed
    }

    fn unindex(&mut self, tx: &SignedTransaction) {
        let hash = tx.hash();
        self.bytes -= tx.encoded_len();
        self.by_hash.remove(&hash);
        self.by_fee.remove(&(tx.tx().fee, hash));
    }

    fn tidy(&mut self, sender: &Address) {
        if self.senders.get(sender).is_some_and(|q| q.txs.is_empty()) {
            self.senders.remove(sender);
        }
        self.publish(sender);
    }

    pub(crate) fn select(
        &mut self,
        height: u64,
        max_txs: usize,
        max_bytes: usize,
    ) -> Vec<SignedTransaction> {
        // Each sender offers its lowest unproposed nonce of the consecutive run from its base; the
        // heap orders offers by fee, then by hash so that ties break the same way on every run.
        let mut heap = BinaryHeap::new();
        for (sender, queue) in &self.senders {
            let mut nonce = queue.base;
            while let Some(entry) = queue.txs.get(&nonce) {
                if entry.proposed_at.is_none() {
                    heap.push(offer(entry, *sender, nonce));
                    break;
                }
                nonce += 1;
            }
        }
        let mut chosen = Vec::new();
        let mut bytes = 0usize;
        let mut gas = 0u64;
        while let Some((_, _, sender, nonce)) = heap.pop() {
            if chosen.len() >= max_txs {
                break;
            }
            let queue = self
                .senders
                .get_mut(&sender)
                .expect("offers name held senders");
            let entry = queue.txs.get_mut(&nonce).expect("offers name held nonces");
            let tx_gas = entry.tx.tx().gas_limit();
            if bytes + entry.tx.encoded_len() > max_bytes
                || gas + tx_gas > peregrine_types::gas::BLOCK_GAS_LIMIT
            {
                continue;
            }
            bytes += entry.tx.encoded_len();
            gas += tx_gas;
            entry.proposed_at = Some(height);
            chosen.push(entry.tx.clone());
            if let Some(next) = queue.txs.get(&(nonce + 1)) {
                heap.push(offer(next, sender, nonce + 1));
            }
        }
        let senders = chosen.iter().map(SignedTransaction::sender).collect();
        self.proposed
            .entry(height)
            .or_default()
            .extend::<Vec<_>>(senders);
        chosen
    }

    /// After the block at `height` executed into `state`: removes what it included, releases
    /// proposals at or below `height`, and re-checks every sender the block or those proposals
    /// touched. Other senders' balances and nonces did not change, since only a sender's own
    /// transactions lower its balance or move its nonce.
    pub(crate) fn on_executed(
        &mut self,
        height: u64,
        included: &[SignedTransaction],
        state: Snapshot,
    ) {
        self.state = state;
        let mut touched: BTreeSet<Address> = BTreeSet::new();
        for tx in included {
            let hash = tx.hash();
            if let Some((sender, nonce)) = self.by_hash.get(&hash).copied() {
                self.remove_one(&sender, nonce);
            }
            touched.insert(tx.sender());
        }
        let open = self.proposed.split_off(&(height + 1));
        for (_, senders) in std::mem::replace(&mut self.proposed, open) {
            touched.extend(senders);
        }
        for sender in touched {
            self.recheck(&sender, height);
        }
    }

    fn remove_one(&mut self, sender: &Address, nonce: u64) {
        let Some(queue) = self.senders.get_mut(sender) else {
            return;
        };
        if let Some(entry) = queue.txs.remove(&nonce) {
            queue.cost -= cost(&entry.tx);
            self.unindex(&entry.tx);
        }
        self.tidy(sender);
    }

    /// Releases lost proposals, drops used nonces, and drops the tail the balance no longer covers.
    fn recheck(&mut self, sender: &Address, height: u64) {
        let account = account_of(&self.state, sender).unwrap_or_default();
        let Some(queue) = self.senders.get_mut(sender) else {
            return;
        };
        queue.base = account.nonce;
        let mut stale: Vec<u64> = queue.txs.range(..account.nonce).map(|(n, _)| *n).collect();
        let mut spent: u128 = 0;
        let mut unaffordable = None;
        for (nonce, entry) in queue.txs.range_mut(account.nonce..) {
            if entry.proposed_at.is_some_and(|at| at <= height) {
                entry.proposed_at = None;
            }
            spent = spent.saturating_add(cost(&entry.tx));
            if spent > account.balance && unaffordable.is_none() {
                unaffordable = Some(*nonce);
            }
        }
        if let Some(nonce) = unaffordable {
            self.counters.dropped += self.remove_from(sender, nonce) as u64;
        }
        stale.reverse();
        for nonce in stale {
            self.counters.dropped += 1;
            self.remove_dropped(sender, nonce);
        }
    }

    fn remove_dropped(&mut self, sender: &Address, nonce: u64) {
        if let Some(entry) = self.senders.get(sender).and_then(|q| q.txs.get(&nonce)) {
            self.seen.forget(&entry.tx.hash());
        }
        self.remove_one(sender, nonce);
    }

    /// Panics if an invariant in the module docs does not hold.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self, config: &MempoolConfig) {
        let mut bytes = 0;
        let mut count = 0;
        for (sender, queue) in &self.senders {
            assert!(!queue.txs.is_empty(), "empty queues are removed");
            let total: u128 = queue.txs.values().map(|e| cost(&e.tx)).sum();
            assert_eq!(queue.cost, total, "queue cost");
            let summary = self.index.get(sender);
            let highest = queue.txs.keys().next_back().copied();
            assert_eq!(
                (summary.len, summary.cost, Some(summary.highest)),
                (queue.txs.len(), total, highest)
            );
            for (nonce, entry) in &queue.txs {
                let hash = entry.tx.hash();
                assert_eq!(self.by_hash.get(&hash), Some(&(*sender, *nonce)));
                assert!(self.by_fee.contains(&(entry.tx.tx().fee, hash)));
                assert!(*nonce >= queue.base && *nonce < queue.base + config.max_nonce_ahead);
                bytes += entry.tx.encoded_len();
                count += 1;
            }
        }
        assert_eq!((self.by_hash.len(), self.by_fee.len()), (count, count));
        assert_eq!(self.bytes, bytes);
    }
}

fn offer(
    entry: &Entry,
    sender: Address,
    nonce: u64,
) -> (u64, std::cmp::Reverse<Hash>, Address, u64) {
    (
        entry.tx.tx().fee,
        std::cmp::Reverse(entry.tx.hash()),
        sender,
        nonce,
    )
}

/// The nonce must be unused and within the window the pool holds for a sender.
pub(crate) fn check_nonce(
    nonce: u64,
    state_nonce: u64,
    config: &MempoolConfig,
) -> Result<(), Rejection> {
    if nonce < state_nonce {
        return Err(Rejection::NonceTooLow {
            expected: state_nonce,
            got: nonce,
        });
    }
    let limit = state_nonce.saturating_add(config.max_nonce_ahead);
    if nonce >= limit {
        return Err(Rejection::NonceTooFar { limit, got: nonce });
    }
    Ok(())
}

fn check_replacement(old: &Entry, new: &SignedTransaction) -> Result<(), Rejection> {
    if old.proposed_at.is_some() {
        return Err(Rejection::NonceInFlight {
            nonce: new.tx().nonce,
        });
    }
    let old_fee = old.tx.tx().fee;
    let bump = old_fee
        .saturating_mul(REPLACE_BUMP_PERCENT)
        .div_ceil(100)
        .max(1);
    let min = old_fee.saturating_add(bump);
    if new.tx().fee < min {
        return Err(Rejection::ReplacementUnderpriced {
            min,
            got: new.tx().fee,
        });
    }
    Ok(())
}
