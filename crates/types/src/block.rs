//! Blocks: a header that commits to its transactions, its parent, and an earlier state.
//!
//! Execution is decoupled from ordering: a block at height `h` carries the state commitment of
//! height `h - EXECUTION_LAG` (its *execution receipt*), which every node checks against its own.
//! Ordering therefore never waits for the execution of the block being ordered.

use crate::codec::{put_list, Decode, DecodeError, Encode, Reader};
use crate::crypto::{hash_tagged, merkle_root, Hash, PublicKey};
use crate::tx::SignedTransaction;

/// How many heights the execution receipt in a header trails the header's own height.
pub const EXECUTION_LAG: u64 = 2;
/// The most transactions one block may carry; bounds block execution time and memory.
pub const MAX_BLOCK_TXS: u32 = 20_000;
/// The most encoded bytes one block may have.
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;

const BLOCK_HASH_DOMAIN: &str = "peregrine v1 block header";

/// A block header. Its hash is the block's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// Distance from genesis (genesis is 0).
    pub height: u64,
    /// Hash of the parent header (all zero for genesis).
    pub parent: Hash,
    /// Milliseconds since the Unix epoch, strictly increasing along a chain.
    pub timestamp_ms: u64,
    /// The validator that proposed the block.
    pub proposer: PublicKey,
    /// Merkle root of the transaction hashes, in block order.
    pub tx_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
    /// The height whose state commitment [`Self::exec_root`] is (`height - EXECUTION_LAG`,
    /// saturating at genesis).
    pub exec_height: u64,
    /// The state commitment after executing block `exec_height`.
    pub exec_root: Hash,
}

impl BlockHeader {
    /// The header hash: the block's identity.
    pub fn hash(&self) -> Hash {
        hash_tagged(BLOCK_HASH_DOMAIN, &[&self.encode()])
    }
}

impl Encode for BlockHeader {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.height.to_le_bytes());
        self.parent.encode_to(out);
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        self.proposer.encode_to(out);
        self.tx_root.encode_to(out);
        out.extend_from_slice(&self.tx_count.to_le_bytes());
        out.extend_from_slice(&self.exec_height.to_le_bytes());
        self.exec_root.encode_to(out);
    }
}

impl Decode for BlockHeader {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            height: reader.u64()?,
            parent: Hash::decode_from(reader)?,
            timestamp_ms: reader.u64()?,
            proposer: PublicKey::decode_from(reader)?,
            tx_root: Hash::decode_from(reader)?,
            tx_count: reader.u32()?,
            exec_height: reader.u64()?,
            exec_root: Hash::decode_from(reader)?,
        })
    }
}

/// The execution-receipt height a block at `height` must carry.
pub fn exec_height_for(height: u64) -> u64 {
    height.saturating_sub(EXECUTION_LAG)
}

/// A header and its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions, in execution order.
    pub txs: Vec<SignedTransaction>,
}

/// Why a decoded block is not internally consistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The bytes did not decode.
    #[error("malformed block: {0}")]
    Malformed(#[from] DecodeError),
    /// The header's transaction count or root does not match the body.
    #[error("transaction root or count does not match the body")]
    TxRootMismatch,
    /// The transactions together may use more gas than a block allows.
    #[error("transactions declare {declared} gas, over the block limit of {limit}")]
    GasOverLimit {
        /// The sum of the transactions' gas limits.
        declared: u64,
        /// [`crate::gas::BLOCK_GAS_LIMIT`].
        limit: u64,
    },
    /// The header's execution height is not `height - EXECUTION_LAG`.
    #[error("execution receipt height {got} should be {expected}")]
    WrongExecHeight {
        /// What the header says.
        got: u64,
        /// What it must be.
        expected: u64,
    },
}

impl Block {
    /// Assembles a block, computing the transaction root and count.
    pub fn new(
        height: u64,
        parent: Hash,
        timestamp_ms: u64,
        proposer: PublicKey,
        exec_root: Hash,
        txs: Vec<SignedTransaction>,
    ) -> Self {
        let tx_count = u32::try_from(txs.len()).expect("blocks are bounded by MAX_BLOCK_TXS");
        let header = BlockHeader {
            height,
            parent,
            timestamp_ms,
            proposer,
            tx_root: Self::tx_root_of(&txs),
            tx_count,
            exec_height: exec_height_for(height),
            exec_root,
        };
        Self { header, txs }
    }

    /// The Merkle root of the transaction hashes.
    pub fn tx_root_of(txs: &[SignedTransaction]) -> Hash {
        let hashes: Vec<Hash> = txs.iter().map(SignedTransaction::hash).collect();
        merkle_root(&hashes)
    }

    /// The gas the transactions may use together (the sum of their limits).
    pub fn declared_gas(&self) -> u64 {
        self.txs.iter().map(|tx| tx.tx().gas_limit()).sum()
    }

    /// The block hash (the header hash).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Decodes a block and checks that its header matches its body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlockError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLong {
                what: "block",
                len: bytes.len() as u64,
                max: MAX_BLOCK_BYTES as u64,
            }
            .into());
        }
        let block: Block = crate::codec::decode_exact(bytes)?;
        block.check_body()?;
        Ok(block)
    }

    /// Checks the header's transaction root, count and execution height against the body.
    pub fn check_body(&self) -> Result<(), BlockError> {
        if self.header.tx_count as usize != self.txs.len()
            || self.header.tx_root != Self::tx_root_of(&self.txs)
        {
            return Err(BlockError::TxRootMismatch);
        }
        let declared = self.declared_gas();
        if declared > crate::gas::BLOCK_GAS_LIMIT {
            return Err(BlockError::GasOverLimit {
                declared,
                limit: crate::gas::BLOCK_GAS_LIMIT,
            });
        }
        let expected = exec_height_for(self.header.height);
        if self.header.exec_height != expected {
            return Err(BlockError::WrongExecHeight {
                got: self.header.exec_height,
                expected,
            });
        }
        Ok(())
    }
}

impl Encode for Block {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.header.encode_to(out);
        put_list(out, &self.txs);
    }
}

impl Decode for Block {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            header: BlockHeader::decode_from(reader)?,
            txs: reader.list("block transactions", MAX_BLOCK_TXS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Address, SecretKey};
    use crate::tx::{Payload, Transaction};

    fn block() -> Block {
        let key = SecretKey::from_seed([3; 32]);
        let tx = Transaction {
            chain_id: 1,
            sender: key.public_key(),
            nonce: 0,
            fee: 1,
            payload: Payload::Transfer {
                to: Address([1; 20]),
                amount: 2,
            },
            access: vec![],
        }
        .sign(&key);
        Block::new(
            5,
            Hash([4; 32]),
            1_000,
            key.public_key(),
            Hash([6; 32]),
            vec![tx],
        )
    }

    #[test]
    fn round_trip_and_conformance() {
        let block = block();
        let back = Block::from_bytes(&block.encode()).expect("decodes");
        assert_eq!(back, block);
        assert_eq!(back.header.exec_height, 3);
        // Frozen: the header hash of this exact block.
        assert_eq!(
            block.hash().to_string(),
            "0xa21cd7f1071a94c306c19d71f1788c9fe31f85852ddaeb118b9f0254418b6dba"
        );
    }

    #[test]
    fn body_must_match_header() {
        let mut block = block();
        block.txs.clear();
        let bytes = block.encode();
        assert_eq!(Block::from_bytes(&bytes), Err(BlockError::TxRootMismatch));
    }

    #[test]
    fn exec_height_must_lag_by_the_constant() {
        let mut block = block();
        block.header.exec_height = 4;
        assert_eq!(
            Block::from_bytes(&block.encode()),
            Err(BlockError::WrongExecHeight {
                got: 4,
                expected: 3
            })
        );
    }

    #[test]
    fn declared_gas_is_bounded() {
        use crate::gas::{BLOCK_GAS_LIMIT, MAX_TX_GAS};
        let key = SecretKey::from_seed([3; 32]);
        let call = |nonce| {
            Transaction {
                chain_id: 1,
                sender: key.public_key(),
                nonce,
                fee: u64::MAX,
                payload: Payload::Call {
                    contract: Address([1; 20]),
                    method: b"m".to_vec(),
                    args: vec![],
                },
                access: vec![],
            }
            .sign(&key)
        };
        let fits = BLOCK_GAS_LIMIT / MAX_TX_GAS;
        let mut txs: Vec<_> = (0..fits).map(call).collect();
        let at =
            |txs: Vec<_>| Block::new(5, Hash([4; 32]), 1, key.public_key(), Hash([6; 32]), txs);
        assert!(Block::from_bytes(&at(txs.clone()).encode()).is_ok());
        txs.push(call(fits));
        assert_eq!(
            Block::from_bytes(&at(txs).encode()),
            Err(BlockError::GasOverLimit {
                declared: (fits + 1) * MAX_TX_GAS,
                limit: BLOCK_GAS_LIMIT
            })
        );
    }
}
