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
pub mod gas;
pub mod receipt;
pub mod sigcheck;
pub mod tx;

pub use block::{Block, BlockError, BlockHeader, EXECUTION_LAG, MAX_BLOCK_TXS};
pub use codec::{decode_exact, Decode, DecodeError, Encode};
pub use crypto::{Address, Hash, PublicKey, SecretKey, Signature, SignatureError};
pub use receipt::{Account, Failure, LogEvent, Receipt, TxStatus};
pub use tx::{
    contract_address, AccessEntry, AccessMode, Payload, SignedTransaction, Transaction,
    MAX_TX_BYTES,
};

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
        account_key(address).to_vec()
    }

    /// [`account`] as an array, for callers that must not allocate.
    pub fn account_key(address: &Address) -> [u8; 21] {
        let mut key = [0u8; 21];
        key[0] = ACCOUNT_PREFIX;
        key[1..].copy_from_slice(&address.0);
        key
    }

    /// Prefix of contract records: the BLAKE3 hash of the contract's code.
    pub const CONTRACT_PREFIX: u8 = b'c';
    /// Prefix of contract code, stored once per distinct code hash.
    pub const CODE_PREFIX: u8 = b'k';
    /// Prefix of contract storage.
    pub const STORAGE_PREFIX: u8 = b's';

    /// The state key of a contract record: the prefix byte then the contract's address.
    pub fn contract(address: &Address) -> Vec<u8> {
        let mut key = Vec::with_capacity(21);
        key.push(CONTRACT_PREFIX);
        key.extend_from_slice(&address.0);
        key
    }

    /// The state key of the code whose BLAKE3 hash is `code_hash`.
    pub fn code(code_hash: &[u8; 32]) -> Vec<u8> {
        let mut key = Vec::with_capacity(33);
        key.push(CODE_PREFIX);
        key.extend_from_slice(code_hash);
        key
    }

    /// The state key of entry `key` of a contract's storage: the prefix byte, the contract's
    /// address, then the contract's own key. A contract's storage is one contiguous key range.
    pub fn storage(contract: &Address, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + key.len());
        out.push(STORAGE_PREFIX);
        out.extend_from_slice(&contract.0);
        out.extend_from_slice(key);
        out
    }
}
