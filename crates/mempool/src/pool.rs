//! The pool's data: per-sender nonce-ordered queues and a hash index.

use crate::{MempoolConfig, REPLACE_BUMP_PERCENT};
use peregrine_state::Snapshot;
use peregrine_types::{Account, Address, DecodeError, Hash, Payload, SignedTransaction};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use thiserror::Error;

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// The bytes are not a well-formed transaction (includes oversized input).
    #[error("malformed transaction: {0}")]
    Malformed(DecodeError),
    /// The transaction is for another chain.
    #[error("wrong chain id: expected {expected}, got {got}")]
    WrongChain {
        /// This chain's id.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The fee is below the floor.
    #[error("fee {got} is below the minimum {min}")]
    FeeTooLow {
        /// The floor.
        min: u64,
        /// The transaction's fee.
        got: u64,
    },
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// The pool already holds this exact transaction.
    #[error("transaction already in the pool")]
    Duplicate,
    /// The nonce was already used.
    #[error("nonce {got} already used: next is {expected}")]
    NonceTooLow {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce leaves a gap after the sender's pending transactions.
    #[error("nonce gap: next nonce is {expected}, got {got}")]
    NonceGap {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The transaction with this nonce was already proposed in a block and cannot be replaced.
    #[error("nonce {nonce} is already in a proposed block")]
    NonceInFlight {
        /// The nonce.
        nonce: u64,
    },
    /// The same nonce is pending with a fee the replacement does not beat by the required bump.
    #[error("replacement fee {got} is below the required {min}")]
    ReplacementUnderpriced {
        /// The least fee that would replace.
        min: u64,
        /// The offered fee.
        got: u64,
    },
    /// The balance does not cover this and the sender's pending transactions.
    #[error("insufficient balance: needs {needed}, has {available}")]
    InsufficientBalance {
        /// Fees and amounts of the pending transactions plus this one.
        needed: u128,
        /// The balance in the latest state.
        available: u128,
    },
    /// The sender has as many pending transactions as allowed.
    #[error("sender has {cap} pending transactions, the maximum")]
    SenderFull {
        /// The per-sender cap.
        cap: usize,
    },
    /// The pool is full.
    #[error("mempool is full")]
    PoolFull,
    /// The sender's account record in the state does not decode.
    #[error("sender account record is corrupt")]
    CorruptState,
}

impl Rejection {
    /// A stable snake_case code, used by metrics and the RPC.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::WrongChain { .. } => "wrong_chain",
            Rejection::FeeTooLow { .. } => "fee_too_low",
            Rejection::BadSignature => "bad_signature",
            Rejection::Duplicate => "duplicate",
            Rejection::NonceTooLow { .. } => "nonce_too_low",
            Rejection::NonceGap { .. } => "nonce_gap",
            Rejection::NonceInFlight { .. } => "nonce_in_flight",
            Rejection::ReplacementUnderpriced { .. } => "replacement_underpriced",
            Rejection::InsufficientBalance { .. } => "insufficient_balance",
            Rejection::SenderFull { .. } => "sender_full",
            Rejection::PoolFull => "pool_full",
            Rejection::CorruptState => "corrupt_state",
        }
    }
}

/// What a transaction can take from its sender's balance at most: fee plus amount.
fn cost(tx: &SignedTransaction) -> u128 {
    let amount = match tx.tx().payload {
        Payload::Transfer { amount, .. } => amount,
        Payload::Deploy { .. } | Payload::Call { .. } => 0,
    };
    u128::from(tx.tx().fee).saturating_add(amount)
}

struct Entry {
    tx: SignedTransaction,
    proposed_at: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Pool {
    senders: HashMap<Address, BTreeMap<u64, Entry>>,
    by_hash: HashMap<Hash, (Address, u64)>,
    bytes: usize,
}

fn account_of(state: &Snapshot, sender: &Address) -> Result<Account, Rejection> {
    Account::from_record(state.get(&peregrine_types::keys::account(sender)))
        .map_err(|_| Rejection::CorruptState)
}

impl Pool {
    pub(crate) fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub(crate) fn next_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let highest = self
            .senders
            .get(sender)
            .and_then(|queue| queue.keys().next_back());
        highest.map_or(state_nonce, |nonce| state_nonce.max(nonce + 1))
    }

    pub(crate) fn get(&self, hash: &Hash) -> Option<SignedTransaction> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.senders
            .get(sender)?
            .get(nonce)
            .map(|entry| entry.tx.clone())
    }

    pub(crate) fn contains(&self, hash: &Hash) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub(crate) fn insert(
        &mut self,
        tx: SignedTransaction,
        state: &Snapshot,
        config: &MempoolConfig,
    ) -> Result<Hash, Rejection> {
        if self.by_hash.contains_key(&tx.hash()) {
            return Err(Rejection::Duplicate);
        }
        let sender = tx.sender();
        let nonce = tx.tx().nonce;
        let account = account_of(state, &sender)?;
        if nonce < account.nonce {
            return Err(Rejection::NonceTooLow {
                expected: account.nonce,
                got: nonce,
            });
        }
        let queue = self.senders.get(&sender);
        let pending = queue.map_or(0, BTreeMap::len) as u64;
        let next = account.nonce + pending;
        let replaced = queue.and_then(|q| q.get(&nonce));
        if let Some(old) = replaced {
            check_replacement(old, &tx)?;
        } else if nonce > next {
            return Err(Rejection::NonceGap {
                expected: next,
                got: nonce,
            });
        }
        let pending_cost: u128 = queue
            .map(|q| {
                q.values()
                    .filter(|e| e.tx.tx().nonce != nonce)
                    .map(|e| cost(&e.tx))
                    .sum()
            })
            .unwrap_or(0);
        let needed = pending_cost.saturating_add(cost(&tx));
        if needed > account.balance {
            return Err(Rejection::InsufficientBalance {
                needed,
                available: account.balance,
            });
        }
        if replaced.is_none() {
            if pending as usize >= config.max_per_sender {
                return Err(Rejection::SenderFull {
                    cap: config.max_per_sender,
                });
            }
            if self.len() >= config.max_txs || self.bytes + tx.encoded_len() > config.max_bytes {
                return Err(Rejection::PoolFull);
            }
        }
        Ok(self.put(sender, tx))
    }

    fn put(&mut self, sender: Address, tx: SignedTransaction) -> Hash {
        let hash = tx.hash();
        let nonce = tx.tx().nonce;
        self.bytes += tx.encoded_len();
        self.by_hash.insert(hash, (sender, nonce));
        let entry = Entry {
            tx,
            proposed_at: None,
        };
        if let Some(old) = self.senders.entry(sender).or_default().insert(nonce, entry) {
            self.bytes -= old.tx.encoded_len();
            self.by_hash.remove(&old.tx.hash());
        }
        hash
    }

    pub(crate) fn select(
        &mut self,
        height: u64,
        max_txs: usize,
        max_bytes: usize,
    ) -> Vec<SignedTransaction> {
        // Each sender offers its lowest unproposed nonce; the heap orders offers by fee, then by
        // hash so that ties break the same way on every run.
        let mut heap = BinaryHeap::new();
        for (sender, queue) in &self.senders {
            if let Some((nonce, entry)) = queue.iter().find(|(_, e)| e.proposed_at.is_none()) {
                heap.push((
                    entry.tx.tx().fee,
                    std::cmp::Reverse(entry.tx.hash()),
                    *sender,
                    *nonce,
                ));
            }
        }
        let mut chosen = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, _, sender, nonce)) = heap.pop() {
            if chosen.len() >= max_txs {
                break;
            }
            let queue = self
                .senders
                .get_mut(&sender)
                .expect("heap holds only present senders");
            let entry = queue
                .get_mut(&nonce)
                .expect("heap holds only present nonces");
            if bytes + entry.tx.encoded_len() > max_bytes {
                continue;
            }
            bytes += entry.tx.encoded_len();
            entry.proposed_at = Some(height);
            chosen.push(entry.tx.clone());
            if let Some(next) = queue.get(&(nonce + 1)) {
                heap.push((
                    next.tx.tx().fee,
                    std::cmp::Reverse(next.tx.hash()),
                    sender,
                    nonce + 1,
                ));
            }
        }
        chosen
    }

    pub(crate) fn on_executed(&mut self, height: u64, included: &[Hash], state: &Snapshot) {
        for hash in included {
            if let Some((sender, nonce)) = self.by_hash.remove(hash) {
                self.remove_entry(&sender, nonce);
            }
        }
        let senders: Vec<Address> = self.senders.keys().copied().collect();
        for sender in senders {
            self.recheck_sender(&sender, height, state);
        }
    }

    fn remove_entry(&mut self, sender: &Address, nonce: u64) {
        if let Some(queue) = self.senders.get_mut(sender) {
            if let Some(entry) = queue.remove(&nonce) {
                self.bytes -= entry.tx.encoded_len();
                self.by_hash.remove(&entry.tx.hash());
            }
            if queue.is_empty() {
                self.senders.remove(sender);
            }
        }
    }

    /// Releases lost proposals, drops used nonces, and drops the tail the balance no longer covers.
    fn recheck_sender(&mut self, sender: &Address, height: u64, state: &Snapshot) {
        let account = account_of(state, sender).unwrap_or_default();
        let Some(queue) = self.senders.get_mut(sender) else {
            return;
        };
        let mut drop = Vec::new();
        let mut expected = account.nonce;
        let mut spent: u128 = 0;
        for (nonce, entry) in queue.iter_mut() {
            if entry.proposed_at.is_some_and(|at| at <= height) {
                entry.proposed_at = None;
            }
            spent = spent.saturating_add(cost(&entry.tx));
            if *nonce != expected || spent > account.balance {
                drop.push(*nonce);
            } else {
                expected += 1;
            }
        }
        for nonce in drop {
            self.remove_entry(sender, nonce);
        }
    }
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
