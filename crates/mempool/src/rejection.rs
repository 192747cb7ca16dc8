//! Why a transaction was not admitted: one typed reason per check, each with a stable code.

use peregrine_types::DecodeError;
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
    /// The nonce is further ahead of the sender's state nonce than the pool holds.
    #[error("nonce {got} is too far ahead: the pool holds nonces below {limit}")]
    NonceTooFar {
        /// The first nonce the pool does not hold.
        limit: u64,
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
    /// The pool is full and the fee does not beat the cheapest transaction it could evict.
    #[error("mempool is full")]
    PoolFull,
    /// Admission is saturated: the transaction was shed before any check. Retry later.
    #[error("admission queue is full; retry later")]
    Overloaded,
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
            Rejection::NonceTooFar { .. } => "nonce_too_far",
            Rejection::NonceInFlight { .. } => "nonce_in_flight",
            Rejection::ReplacementUnderpriced { .. } => "replacement_underpriced",
            Rejection::InsufficientBalance { .. } => "insufficient_balance",
            Rejection::SenderFull { .. } => "sender_full",
            Rejection::PoolFull => "pool_full",
            Rejection::Overloaded => "overloaded",
            Rejection::CorruptState => "corrupt_state",
        }
    }

    /// Every code, in declaration order, for metrics that list each reason even at zero.
    pub const CODES: [&'static str; 14] = [
        "malformed",
        "wrong_chain",
        "fee_too_low",
        "bad_signature",
        "duplicate",
        "nonce_too_low",
        "nonce_too_far",
        "nonce_in_flight",
        "replacement_underpriced",
        "insufficient_balance",
        "sender_full",
        "pool_full",
        "overloaded",
        "corrupt_state",
    ];
}
