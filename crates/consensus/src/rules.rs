//! The rules a block must follow relative to its parent, checked before voting for it.

use peregrine_types::sigcheck::verify_batch;
use peregrine_types::{block::exec_height_for, Block, BlockError, Hash, SignedTransaction};
use thiserror::Error;

/// How far into the future a proposed timestamp may be, relative to the verifier's clock.
/// Bounds how much a proposer can skew chain time; generous enough for unsynchronised clocks.
pub const MAX_FUTURE_DRIFT_MS: u64 = 2_000;

/// Why a proposed block was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidBlock {
    /// The header does not match the body.
    #[error(transparent)]
    Body(#[from] BlockError),
    /// The block does not name the parent consensus built it on.
    #[error("parent {got} is not the expected {expected}")]
    WrongParent {
        /// What consensus says the parent is.
        expected: Hash,
        /// What the header says.
        got: Hash,
    },
    /// The height is not the parent's plus one.
    #[error("height {got} should be {expected}")]
    WrongHeight {
        /// Parent height plus one.
        expected: u64,
        /// The header's height.
        got: u64,
    },
    /// The timestamp does not increase, or is too far ahead of the verifier's clock.
    #[error("timestamp {got} outside ({parent}, {latest}]")]
    BadTimestamp {
        /// The parent's timestamp.
        parent: u64,
        /// The latest acceptable timestamp.
        latest: u64,
        /// The header's timestamp.
        got: u64,
    },
    /// The execution receipt differs from this node's own state commitment at that height.
    #[error("execution receipt at height {height} is {got}, this node computed {ours}")]
    ExecutionMismatch {
        /// The height of the receipt.
        height: u64,
        /// This node's commitment.
        ours: Hash,
        /// The header's.
        got: Hash,
    },
    /// A transaction is for another chain or has an invalid signature.
    #[error("transaction {index} is invalid: {reason}")]
    BadTransaction {
        /// Its index in the block.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Checks `block` against its `parent`, this node's execution receipt `our_exec_root` for the
/// block's execution height, and the verifier's clock `now_ms`. Signatures of transactions for
/// which `verified` answers true (checked at admission) are not checked again; the others are
/// checked in one batch.
pub fn validate(
    chain_id: u64,
    parent: &Block,
    block: &Block,
    our_exec_root: Hash,
    now_ms: u64,
    verified: &dyn Fn(&Hash) -> bool,
) -> Result<(), InvalidBlock> {
    block.check_body()?;
    let header = &block.header;
    if header.parent != parent.hash() {
        return Err(InvalidBlock::WrongParent {
            expected: parent.hash(),
            got: header.parent,
        });
    }
    let expected = parent.header.height + 1;
    if header.height != expected {
        return Err(InvalidBlock::WrongHeight {
            expected,
            got: header.height,
        });
    }
    let latest = now_ms + MAX_FUTURE_DRIFT_MS;
    if header.timestamp_ms <= parent.header.timestamp_ms || header.timestamp_ms > latest {
        return Err(InvalidBlock::BadTimestamp {
            parent: parent.header.timestamp_ms,
            latest,
            got: header.timestamp_ms,
        });
    }
    if header.exec_root != our_exec_root {
        return Err(InvalidBlock::ExecutionMismatch {
            height: exec_height_for(header.height),
            ours: our_exec_root,
            got: header.exec_root,
        });
    }
    if let Some(index) = block.txs.iter().position(|tx| tx.tx().chain_id != chain_id) {
        return Err(InvalidBlock::BadTransaction {
            index,
            reason: "wrong chain id",
        });
    }
    let unverified: Vec<(usize, &SignedTransaction)> = block
        .txs
        .iter()
        .enumerate()
        .filter(|(_, tx)| !verified(&tx.hash()))
        .collect();
    let txs: Vec<&SignedTransaction> = unverified.iter().map(|(_, tx)| *tx).collect();
    if let Err(position) = verify_batch(&txs) {
        let index = unverified[position].0;
        return Err(InvalidBlock::BadTransaction {
            index,
            reason: "invalid signature",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_types::{Address, Encode, Payload, PublicKey, SecretKey, Transaction};

    fn child(
        parent: &Block,
        ts: u64,
        exec_root: Hash,
        txs: Vec<peregrine_types::SignedTransaction>,
    ) -> Block {
        Block::new(
            parent.header.height + 1,
            parent.hash(),
            ts,
            PublicKey::default(),
            exec_root,
            txs,
        )
    }

    fn genesis() -> Block {
        Block::new(
            0,
            Hash::default(),
            1_000,
            PublicKey::default(),
            Hash([1; 32]),
            vec![],
        )
    }

    fn none(_: &Hash) -> bool {
        false
    }

    #[test]
    fn accepts_a_good_child_and_names_each_fault() {
        let g = genesis();
        let root = Hash([1; 32]);
        assert_eq!(
            validate(5, &g, &child(&g, 1_001, root, vec![]), root, 1_000, &none),
            Ok(())
        );
        assert!(matches!(
            validate(5, &g, &child(&g, 1_000, root, vec![]), root, 1_000, &none),
            Err(InvalidBlock::BadTimestamp { .. })
        ));
        assert!(matches!(
            validate(5, &g, &child(&g, 9_000, root, vec![]), root, 1_000, &none),
            Err(InvalidBlock::BadTimestamp { .. })
        ));
        assert!(matches!(
            validate(
                5,
                &g,
                &child(&g, 1_001, Hash([2; 32]), vec![]),
                root,
                1_000,
                &none
            ),
            Err(InvalidBlock::ExecutionMismatch { .. })
        ));
        let other = child(&g, 1_001, root, vec![]);
        assert!(matches!(
            validate(
                5,
                &other,
                &child(&g, 1_002, root, vec![]),
                root,
                1_000,
                &none
            ),
            Err(InvalidBlock::WrongParent { .. })
        ));
        let key = SecretKey::from_seed([4; 32]);
        let tx = Transaction {
            chain_id: 6,
            sender: key.public_key(),
            nonce: 0,
            fee: 1,
            payload: Payload::Transfer {
                to: Address::default(),
                amount: 1,
            },
            access: vec![],
        }
        .sign(&key);
        assert_eq!(
            validate(5, &g, &child(&g, 1_001, root, vec![tx]), root, 1_000, &none),
            Err(InvalidBlock::BadTransaction {
                index: 0,
                reason: "wrong chain id"
            })
        );
    }

    #[test]
    fn signatures_verified_at_admission_are_skipped_and_others_are_batch_checked() {
        let g = genesis();
        let root = Hash([1; 32]);
        let key = SecretKey::from_seed([4; 32]);
        let sign = |nonce| {
            let payload = Payload::Transfer {
                to: Address::default(),
                amount: 1,
            };
            Transaction {
                chain_id: 5,
                sender: key.public_key(),
                nonce,
                fee: 1,
                payload,
                access: vec![],
            }
            .sign(&key)
        };
        let good = sign(0);
        let mut bytes = sign(1).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = peregrine_types::SignedTransaction::from_bytes(&bytes).expect("well-formed");
        let block = child(&g, 1_001, root, vec![good, forged.clone()]);
        assert_eq!(
            validate(5, &g, &block, root, 1_000, &none),
            Err(InvalidBlock::BadTransaction {
                index: 1,
                reason: "invalid signature"
            })
        );
        // A hash the cache vouches for is not checked again (here, deliberately, a forged one).
        let cached = |h: &Hash| *h == forged.hash();
        assert_eq!(validate(5, &g, &block, root, 1_000, &cached), Ok(()));
    }
}
