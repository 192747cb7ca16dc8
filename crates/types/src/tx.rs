//! Transactions: what a sender signs, and the limits every decoder enforces.
//!
//! A transaction names its chain, its sender's public key, a per-sender nonce (transactions from
//! one sender apply in nonce order, each exactly once), a fee, a payload and an access list. The
//! signature covers the domain tag [`TX_SIGNING_DOMAIN`] followed by the canonical encoding of the
//! unsigned transaction; the transaction hash covers the signed encoding.

use crate::codec::{put_bytes, put_list, Decode, DecodeError, Encode, Reader};
use crate::crypto::{hash_tagged, Address, Hash, PublicKey, SecretKey, Signature, SignatureError};

/// The largest encoded signed transaction accepted anywhere (RPC, mempool, block), in bytes.
/// Large enough for a contract deployment of [`MAX_CODE_BYTES`] plus its envelope.
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// The largest contract code a deployment may carry, in bytes.
pub const MAX_CODE_BYTES: u32 = 120 * 1024;
/// The largest method name of a contract call, in bytes.
pub const MAX_METHOD_BYTES: u32 = 64;
/// The largest argument blob of a contract call, in bytes.
pub const MAX_ARGS_BYTES: u32 = 16 * 1024;
/// The most entries an access list may have; bounded so scheduling cost per transaction is bounded.
pub const MAX_ACCESS_ENTRIES: u32 = 64;
/// The longest storage key or prefix an access entry may name, in bytes.
pub const MAX_ACCESS_KEY_BYTES: u32 = 128;

/// Domain tag prepended to the unsigned encoding before signing.
pub const TX_SIGNING_DOMAIN: &[u8] = b"peregrine v1 transaction";
const TX_HASH_DOMAIN: &str = "peregrine v1 transaction hash";

const CONTRACT_ADDRESS_DOMAIN: &str = "peregrine v1 contract address";

/// The address of the contract that `deployer` creates with its transaction of nonce `nonce`.
pub fn contract_address(deployer: &Address, nonce: u64) -> Address {
    let hash = hash_tagged(
        CONTRACT_ADDRESS_DOMAIN,
        &[&deployer.0, &nonce.to_le_bytes()],
    );
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash.0[..20]);
    Address(address)
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Move `amount` from the sender to `to`.
    Transfer {
        /// The recipient.
        to: Address,
        /// The amount moved.
        amount: u128,
    },
    /// Deploy WASM contract code.
    Deploy {
        /// The module bytes.
        code: Vec<u8>,
    },
    /// Call a method of a deployed contract.
    Call {
        /// The contract address.
        contract: Address,
        /// The method name.
        method: Vec<u8>,
        /// The encoded arguments.
        args: Vec<u8>,
    },
}

impl Payload {
    /// A short name for logs and the RPC.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Transfer { .. } => "transfer",
            Payload::Deploy { .. } => "deploy",
            Payload::Call { .. } => "call",
        }
    }
}

impl Encode for Payload {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Transfer { to, amount } => {
                out.push(0);
                to.encode_to(out);
                out.extend_from_slice(&amount.to_le_bytes());
            }
            Payload::Deploy { code } => {
                out.push(1);
                put_bytes(out, code);
            }
            Payload::Call {
                contract,
                method,
                args,
            } => {
                out.push(2);
                contract.encode_to(out);
                put_bytes(out, method);
                put_bytes(out, args);
            }
        }
    }
}

impl Decode for Payload {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8()? {
            0 => Ok(Payload::Transfer {
                to: Address::decode_from(reader)?,
                amount: reader.u128()?,
            }),
            1 => Ok(Payload::Deploy {
                code: reader.bytes("deploy code", MAX_CODE_BYTES)?,
            }),
            2 => Ok(Payload::Call {
                contract: Address::decode_from(reader)?,
                method: reader.bytes("call method", MAX_METHOD_BYTES)?,
                args: reader.bytes("call args", MAX_ARGS_BYTES)?,
            }),
            tag => Err(DecodeError::UnknownTag {
                what: "payload",
                tag,
            }),
        }
    }
}

/// Whether an access entry is read or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessMode {
    /// The transaction only reads.
    Read,
    /// The transaction may read and write.
    Write,
}

/// One declared access: an account or contract, and a storage key prefix within it
/// (empty: the whole account). The parallel executor schedules by these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// The account or contract touched.
    pub address: Address,
    /// The storage key prefix touched; empty means all of the account.
    pub prefix: Vec<u8>,
    /// Read or write.
    pub mode: AccessMode,
}

impl Encode for AccessEntry {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.address.encode_to(out);
        put_bytes(out, &self.prefix);
        out.push(match self.mode {
            AccessMode::Read => 0,
            AccessMode::Write => 1,
        });
    }
}

impl Decode for AccessEntry {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let address = Address::decode_from(reader)?;
        let prefix = reader.bytes("access prefix", MAX_ACCESS_KEY_BYTES)?;
        let mode = match reader.u8()? {
            0 => AccessMode::Read,
            1 => AccessMode::Write,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "access mode",
                    tag,
                })
            }
        };
        Ok(Self {
            address,
            prefix,
            mode,
        })
    }
}

/// An unsigned transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The chain this transaction is valid on; guards against replay across chains.
    pub chain_id: u64,
    /// The sender's public key; the sender's address is derived from it.
    pub sender: PublicKey,
    /// The sender's transaction counter: the first transaction has nonce 0.
    pub nonce: u64,
    /// The fee paid to the chain's fee sink, whatever the outcome.
    pub fee: u64,
    /// What the transaction does.
    pub payload: Payload,
    /// What the transaction declares it touches, beyond what its payload implies.
    pub access: Vec<AccessEntry>,
}

impl Transaction {
    /// The sender's address.
    pub fn sender_address(&self) -> Address {
        self.sender.address()
    }

    /// The most gas this transaction may use (see [`crate::gas`]).
    pub fn gas_limit(&self) -> u64 {
        let is_contract = !matches!(self.payload, Payload::Transfer { .. });
        crate::gas::tx_gas_limit(is_contract, self.fee)
    }

    /// The address a deployment with this sender and nonce creates: a tagged hash of both, so
    /// it is known before the deployment executes and never collides with an earlier one.
    pub fn deployed_address(&self) -> Address {
        contract_address(&self.sender_address(), self.nonce)
    }

    /// The exact bytes a sender signs.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut out = TX_SIGNING_DOMAIN.to_vec();
        self.encode_to(&mut out);
        out
    }

    /// Signs the transaction with `key`. The key must match `self.sender`.
    pub fn sign(self, key: &SecretKey) -> SignedTransaction {
        debug_assert_eq!(
            key.public_key(),
            self.sender,
            "signing key must match the sender"
        );
        let signature = key.sign(&self.signing_message());
        SignedTransaction::new(self, signature)
    }
}

impl Encode for Transaction {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chain_id.to_le_bytes());
        self.sender.encode_to(out);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&self.fee.to_le_bytes());
        self.payload.encode_to(out);
        put_list(out, &self.access);
    }
}

impl Decode for Transaction {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            chain_id: reader.u64()?,
            sender: PublicKey::decode_from(reader)?,
            nonce: reader.u64()?,
            fee: reader.u64()?,
            payload: Payload::decode_from(reader)?,
            access: reader.list("access list", MAX_ACCESS_ENTRIES)?,
        })
    }
}

/// A signed transaction with its hash computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    tx: Transaction,
    signature: Signature,
    hash: Hash,
    sender: Address,
    encoded_len: u32,
}

impl SignedTransaction {
    /// Pairs a transaction with its signature (not verified here; see [`Self::verify_signature`]).
    pub fn new(tx: Transaction, signature: Signature) -> Self {
        let mut bytes = Vec::new();
        tx.encode_to(&mut bytes);
        signature.encode_to(&mut bytes);
        Self::with_encoding(tx, signature, &bytes)
    }

    fn with_encoding(tx: Transaction, signature: Signature, encoded: &[u8]) -> Self {
        let encoded_len = u32::try_from(encoded.len()).expect("transactions are bounded in size");
        Self {
            hash: hash_tagged(TX_HASH_DOMAIN, &[encoded]),
            sender: tx.sender_address(),
            tx,
            signature,
            encoded_len,
        }
    }

    /// Decodes one signed transaction from exactly `bytes`, enforcing [`MAX_TX_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLong {
                what: "transaction",
                len: bytes.len() as u64,
                max: MAX_TX_BYTES as u64,
            });
        }
        let mut reader = Reader::new(bytes);
        let tx = Transaction::decode_from(&mut reader)?;
        let signature = Signature::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(Self::with_encoding(tx, signature, bytes))
    }

    /// The unsigned transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The sender's address, derived once when the transaction was built or decoded.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The transaction hash (over the signed encoding).
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Size of the canonical encoding in bytes.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len as usize
    }

    /// Verifies the signature against the sender key (ZIP215 rules).
    pub fn verify_signature(&self) -> Result<(), SignatureError> {
        self.tx
            .sender
            .verify(&self.tx.signing_message(), &self.signature)
    }
}

impl Encode for SignedTransaction {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.tx.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for SignedTransaction {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = reader.remaining();
        let tx = Transaction::decode_from(reader)?;
        let signature = Signature::decode_from(reader)?;
        let len = start - reader.remaining();
        if len > MAX_TX_BYTES {
            return Err(DecodeError::TooLong {
                what: "transaction",
                len: len as u64,
                max: MAX_TX_BYTES as u64,
            });
        }
        Ok(Self::new(tx, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_exact;

    fn sample(payload: Payload) -> SignedTransaction {
        let key = SecretKey::from_seed([1; 32]);
        Transaction {
            chain_id: 7,
            sender: key.public_key(),
            nonce: 3,
            fee: 10,
            payload,
            access: vec![AccessEntry {
                address: Address([9; 20]),
                prefix: b"bal".to_vec(),
                mode: AccessMode::Write,
            }],
        }
        .sign(&key)
    }

    fn transfer() -> SignedTransaction {
        sample(Payload::Transfer {
            to: Address([2; 20]),
            amount: 5,
        })
    }

    #[test]
    fn round_trips_every_payload() {
        for payload in [
            Payload::Transfer {
                to: Address([2; 20]),
                amount: u128::MAX,
            },
            Payload::Deploy {
                code: vec![0, 97, 115, 109],
            },
            Payload::Call {
                contract: Address([3; 20]),
                method: b"transfer".to_vec(),
                args: vec![1, 2],
            },
        ] {
            let tx = sample(payload);
            let bytes = tx.encode();
            let back = SignedTransaction::from_bytes(&bytes).expect("decodes");
            assert_eq!(back, tx);
            assert_eq!(decode_exact::<SignedTransaction>(&bytes), Ok(tx));
        }
    }

    #[test]
    fn conformance_vector() {
        // Frozen: the hash of this exact transaction. A change here breaks every signed transaction.
        let tx = transfer();
        assert_eq!(tx.encoded_len(), 189);
        assert_eq!(
            tx.hash().to_string(),
            "0xfc1ce9fa59a6736b2fd3d3f6f6c8b9949e4eea22d63fd55ae0dd54ffe10dff9b"
        );
    }

    #[test]
    fn truncated_trailing_and_tampered_bytes_are_rejected() {
        let bytes = transfer().encode();
        assert!(matches!(
            SignedTransaction::from_bytes(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SignedTransaction::from_bytes(&long),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        let mut tampered = bytes.clone();
        tampered[50] ^= 1; // inside the nonce
        let tampered = SignedTransaction::from_bytes(&tampered).expect("still well-formed");
        assert_eq!(tampered.verify_signature(), Err(SignatureError::Invalid));
        assert_eq!(transfer().verify_signature(), Ok(()));
    }

    #[test]
    fn oversized_transaction_is_rejected_before_decoding() {
        let bytes = vec![0u8; MAX_TX_BYTES + 1];
        assert!(matches!(
            SignedTransaction::from_bytes(&bytes),
            Err(DecodeError::TooLong {
                what: "transaction",
                ..
            })
        ));
    }

    #[test]
    fn unknown_payload_tag_is_rejected() {
        let mut bytes = transfer().encode();
        bytes[8 + 32 + 8 + 8] = 9;
        assert!(matches!(
            SignedTransaction::from_bytes(&bytes),
            Err(DecodeError::UnknownTag {
                what: "payload",
                tag: 9
            })
        ));
    }
}
