//! Define keys, addresses, transactions, blocks and receipts, and their one canonical binary encoding.
//!
//! Everything Peregrine signs, hashes or stores is defined here and encoded with [`codec`]:
//! fixed-size little-endian integers, bounded length prefixes, one-byte enum tags, and no trailing
//! bytes. Each type's tests freeze a conformance vector, so an accidental format change fails CI.
//!
//! ```
//! use peregrine_types::{Address, Payload, SecretKey, SignedTransaction, Transaction, Encode};
//! let key = SecretKey::from_seed([1; 32]);
//! let tx = Transaction {
//!     chain_id: 1,
//!     sender: key.public_key(),
//!     nonce: 0,
//!     fee: 1,
//!     payload: Payload::Transfer { to: Address([2; 20]), amount: 5 },
//!     access: vec![],
//! }
//! .sign(&key);
//! let decoded = SignedTransaction::from_bytes(&tx.encode()).unwrap();
//! assert_eq!(decoded.hash(), tx.hash());
//! assert!(decoded.verify_signature().is_ok());
//! ```

pub mod block;
pub mod codec;
pub mod crypto;
pub mod receipt;
pub mod sigcheck;
pub mod tx;

pub use block::{Block, BlockError, BlockHeader, EXECUTION_LAG, MAX_BLOCK_TXS};
pub use codec::{decode_exact, Decode, DecodeError, Encode};
pub use crypto::{Address, Hash, PublicKey, SecretKey, Signature, SignatureError};
pub use receipt::{Account, Receipt, TxStatus};
pub use tx::{AccessEntry, AccessMode, Payload, SignedTransaction, Transaction, MAX_TX_BYTES};

/// The layout of state keys shared by execution, the mempool and the RPC.
pub mod keys {
    use crate::crypto::Address;

    /// The key under which execution records the height of the last executed block, so a node
    /// that restarts knows which blocks its durable state already includes.
    pub const META_HEIGHT: &[u8] = b"m.height";

    /// Prefix of account records (balance and nonce).
    pub const ACCOUNT_PREFIX: u8 = b'a';

    /// The state key of an account record: the prefix byte then the 20-byte address.
    pub fn account(address: &Address) -> Vec<u8> {
        let mut key = Vec::with_capacity(21);
        key.push(ACCOUNT_PREFIX);
        key.extend_from_slice(&address.0);
        key
    }
}
