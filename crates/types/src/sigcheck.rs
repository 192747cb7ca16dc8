//! Signature checks for many transactions: batch verification and a cache of verified hashes.
//!
//! A block's transactions were, almost always, already verified when this node admitted them to
//! its mempool. [`VerifiedCache`] remembers those hashes (bounded, oldest forgotten first), and
//! [`verify_batch`] checks the rest with one ed25519 batch verification. Because signatures follow
//! ZIP215 rules, a batch accepts exactly what one-by-one verification accepts; when a batch fails,
//! each transaction is checked alone to name the first bad one, so the answer is deterministic.

use crate::crypto::Hash;
use crate::tx::SignedTransaction;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// How many verified transaction hashes the cache remembers: several full blocks' worth.
pub const VERIFIED_CACHE_CAPACITY: usize = 262_144;

/// A bounded set of transaction hashes whose signatures verified.
#[derive(Debug, Default)]
pub struct VerifiedCache {
    inner: Mutex<(HashSet<Hash>, VecDeque<Hash>)>,
}

impl VerifiedCache {
    /// Remembers that `hash` verified, forgetting the oldest entry when full.
    pub fn insert(&self, hash: Hash) {
        self.insert_many(&[hash]);
    }

    /// Remembers that every hash in `hashes` verified, under one acquisition of the lock.
    pub fn insert_many(&self, hashes: &[Hash]) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        for &hash in hashes {
            if set.insert(hash) {
                order.push_back(hash);
                if order.len() > VERIFIED_CACHE_CAPACITY {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
        }
    }

    /// For each hash, whether it is known to have verified, under one acquisition of the lock.
    pub fn contains_many(&self, hashes: impl IntoIterator<Item = Hash>) -> Vec<bool> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        hashes.into_iter().map(|h| guard.0.contains(&h)).collect()
    }

    /// Whether `hash` is known to have verified.
    pub fn contains(&self, hash: &Hash) -> bool {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.contains(hash)
    }
}

/// Verifies all signatures at once; on failure returns the index of the first invalid one.
pub fn verify_batch(txs: &[&SignedTransaction]) -> Result<(), usize> {
    match invalid_signatures(txs).first() {
        None => Ok(()),
        Some(&index) => Err(index),
    }
}

/// The indices, ascending, of the transactions whose signatures do not verify: one batch
/// verification, and only when it fails, one check per transaction. Under ZIP215 the batch and
/// the single checks agree, so the answer does not depend on the batch's random coefficients.
pub fn invalid_signatures(txs: &[&SignedTransaction]) -> Vec<usize> {
    let messages: Vec<Vec<u8>> = txs.iter().map(|tx| tx.tx().signing_message()).collect();
    let mut batch = ed25519_consensus::batch::Verifier::new();
    for (tx, message) in txs.iter().zip(&messages) {
        let key = ed25519_consensus::VerificationKeyBytes::from(tx.tx().sender.0);
        batch.queue((
            key,
            ed25519_consensus::Signature::from(tx.signature().0),
            message,
        ));
    }
    if batch.verify(rand::rngs::OsRng).is_ok() {
        return Vec::new();
    }
    let bad: Vec<usize> = (0..txs.len())
        .filter(|&i| txs[i].verify_signature().is_err())
        .collect();
    // Unreachable under ZIP215 (batch and single agree); blame the first rather than accept.
    if bad.is_empty() {
        return vec![0];
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, Encode, Payload, SecretKey, Transaction};

    fn tx(i: u8) -> SignedTransaction {
        let key = SecretKey::from_seed([i; 32]);
        let payload = Payload::Transfer {
            to: Address::default(),
            amount: 1,
        };
        Transaction {
            chain_id: 1,
            sender: key.public_key(),
            nonce: 0,
            fee: 1,
            payload,
            access: vec![],
        }
        .sign(&key)
    }

    #[test]
    fn batch_finds_the_first_bad_signature() {
        let good: Vec<SignedTransaction> = (0..5).map(tx).collect();
        assert_eq!(verify_batch(&good.iter().collect::<Vec<_>>()), Ok(()));
        let mut bytes = good[3].encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let bad = SignedTransaction::from_bytes(&bytes).expect("well-formed");
        let mixed = vec![&good[0], &good[1], &good[2], &bad, &good[4]];
        assert_eq!(verify_batch(&mixed), Err(3));
        let twice = vec![&bad, &good[0], &bad];
        assert_eq!(invalid_signatures(&twice), vec![0, 2]);
    }

    #[test]
    fn cache_is_bounded() {
        let cache = VerifiedCache::default();
        for i in 0..(VERIFIED_CACHE_CAPACITY + 1) as u64 {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&i.to_le_bytes());
            cache.insert(Hash(bytes));
        }
        assert!(
            !cache.contains(&Hash([0; 32])),
            "the oldest entry was forgotten"
        );
        let mut last = [0u8; 32];
        last[..8].copy_from_slice(&(VERIFIED_CACHE_CAPACITY as u64).to_le_bytes());
        assert!(cache.contains(&Hash(last)));
    }
}
