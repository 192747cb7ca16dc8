//! Generate load and reproduce every benchmark, with reports and plots.
//!
//! Load is signed before any clock starts, so a benchmark measures the system, not the client's
//! signing speed. [`presign_transfers`] produces, for a set of senders, consecutive-nonce transfers
//! in round-robin sender order: the shape an open-loop load generator replays.
//!
//! Benchmarks: [`exec`] (`peregrine bench exec`). Every benchmark returns a [`report::Report`]
//! that prints as a table and writes as JSON (`--json <file>`), one record per engine,
//! scenario and metric, with units.

pub mod exec;
pub mod report;

use peregrine_types::{Address, Payload, SecretKey, SignedTransaction, Transaction};

/// Deterministic sender keys for load generation, distinct from the devnet's dev accounts.
pub fn load_key(index: u32) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&index.to_le_bytes());
    seed[4..12].copy_from_slice(b"pg-load!");
    SecretKey::from_seed(seed)
}

/// `per_sender` transfers from each of `senders` (nonces starting at `first_nonce`), interleaved
/// round-robin across senders, each moving `amount` to a recipient derived from its position.
pub fn presign_transfers(
    chain_id: u64,
    senders: &[SecretKey],
    first_nonce: u64,
    per_sender: u64,
    fee: u64,
    amount: u128,
) -> Vec<SignedTransaction> {
    let mut txs = Vec::with_capacity(senders.len() * per_sender as usize);
    for round in 0..per_sender {
        for (i, key) in senders.iter().enumerate() {
            let mut to = [0u8; 20];
            to[..8].copy_from_slice(&(round * senders.len() as u64 + i as u64).to_le_bytes());
            let tx = Transaction {
                chain_id,
                sender: key.public_key(),
                nonce: first_nonce + round,
                fee,
                payload: Payload::Transfer {
                    to: Address(to),
                    amount,
                },
                access: vec![],
            };
            txs.push(tx.sign(key));
        }
    }
    txs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_load_is_valid_and_nonce_ordered() {
        let keys: Vec<SecretKey> = (0..3).map(load_key).collect();
        let txs = presign_transfers(7, &keys, 5, 4, 1, 10);
        assert_eq!(txs.len(), 12);
        assert!(txs
            .iter()
            .all(|tx| tx.verify_signature().is_ok() && tx.tx().chain_id == 7));
        for key in &keys {
            let nonces: Vec<u64> = txs
                .iter()
                .filter(|t| t.tx().sender == key.public_key())
                .map(|t| t.tx().nonce)
                .collect();
            assert_eq!(nonces, vec![5, 6, 7, 8]);
        }
        assert_ne!(load_key(0).public_key(), load_key(1).public_key());
    }
}
