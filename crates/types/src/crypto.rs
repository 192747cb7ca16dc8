//! Hashes, keys, addresses and signatures.
//!
//! Signatures are ed25519 with ZIP215 validation rules (`ed25519-consensus`): single and batch
//! verification accept exactly the same set of signatures, so two nodes that verify the same
//! transaction in different ways can never disagree. Hashes are BLAKE3, always with a domain tag
//! so that a hash of one kind of object can never be replayed as the hash of another.

use crate::codec::{Decode, DecodeError, Encode, Reader};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Why a hex string could not be parsed into a fixed-size value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseHexError {
    /// The string is not hexadecimal.
    #[error("not hex: {0}")]
    NotHex(String),
    /// The string decoded to the wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    WrongLength {
        /// The required length.
        expected: usize,
        /// The decoded length.
        got: usize,
    },
}

/// Parses `0x`-prefixed (or bare) hex into exactly `N` bytes.
pub fn parse_hex_array<const N: usize>(text: &str) -> Result<[u8; N], ParseHexError> {
    let raw = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(raw).map_err(|e| ParseHexError::NotHex(e.to_string()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| ParseHexError::WrongLength {
            expected: N,
            got: bytes.len(),
        })
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the value in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self([0u8; $len])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseHexError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hex_array(text).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Encode for $name {
            fn encode_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.0);
            }
        }

        impl Decode for $name {
            fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                reader.array().map(Self)
            }
        }
    };
}

fixed_bytes!(
    /// A BLAKE3 hash.
    Hash,
    32
);
fixed_bytes!(
    /// An account address: the first 20 bytes of the domain-tagged hash of a public key.
    Address,
    20
);
fixed_bytes!(
    /// An ed25519 public key.
    PublicKey,
    32
);
fixed_bytes!(
    /// An ed25519 signature.
    Signature,
    64
);

/// Hashes `parts` under a domain tag, so hashes of different kinds of object never collide.
pub fn hash_tagged(domain: &str, parts: &[&[u8]]) -> Hash {
    let mut hasher = blake3::Hasher::new_derive_key(domain);
    for part in parts {
        hasher.update(part);
    }
    Hash(*hasher.finalize().as_bytes())
}

const ADDRESS_DOMAIN: &str = "peregrine v1 address";
const MERKLE_LEAF_DOMAIN: &str = "peregrine v1 merkle leaf";
const MERKLE_NODE_DOMAIN: &str = "peregrine v1 merkle node";

/// The binary Merkle root of a list of hashes (the empty list has the all-zero root).
///
/// Leaves and inner nodes are hashed under different tags, and an odd node at the end of a level
/// is promoted unchanged, so the root commits to the exact list and supports inclusion proofs.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::default();
    }
    let mut level: Vec<Hash> = leaves
        .iter()
        .map(|leaf| hash_tagged(MERKLE_LEAF_DOMAIN, &[&leaf.0]))
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => hash_tagged(MERKLE_NODE_DOMAIN, &[&left.0, &right.0]),
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    level[0]
}

impl PublicKey {
    /// The address that this key controls.
    pub fn address(&self) -> Address {
        let hash = hash_tagged(ADDRESS_DOMAIN, &[&self.0]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash.0[..20]);
        Address(out)
    }

    /// Verifies `signature` over `message` with ZIP215 rules.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let key = ed25519_consensus::VerificationKey::try_from(self.0)
            .map_err(|_| SignatureError::MalformedKey)?;
        let signature = ed25519_consensus::Signature::from(signature.0);
        key.verify(&signature, message)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The public key bytes are not a valid curve point encoding.
    #[error("malformed public key")]
    MalformedKey,
    /// The signature does not verify under the key.
    #[error("invalid signature")]
    Invalid,
}

/// An ed25519 secret key. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct SecretKey(ed25519_consensus::SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        Self(ed25519_consensus::SigningKey::new(rand::rngs::OsRng))
    }

    /// The key whose 32-byte seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_consensus::SigningKey::from(seed))
    }

    /// The 32-byte seed, for writing to a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verification_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let key = SecretKey::from_seed([7; 32]);
        let signature = key.sign(b"hello");
        assert_eq!(key.public_key().verify(b"hello", &signature), Ok(()));
        assert_eq!(
            key.public_key().verify(b"hellO", &signature),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn address_conformance_vector() {
        // Frozen: changing the address derivation changes every account on every chain.
        let key = SecretKey::from_seed([0; 32]);
        assert_eq!(
            key.public_key().address().to_string(),
            "0x5523ed64e34f090abfa92208b9fbe2dc25f174ca"
        );
    }

    #[test]
    fn merkle_root_commits_to_order_and_length() {
        let a = hash_tagged("t", &[b"a"]);
        let b = hash_tagged("t", &[b"b"]);
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]));
        assert_ne!(merkle_root(&[a]), merkle_root(&[a, a]));
        assert_eq!(merkle_root(&[]), Hash::default());
    }

    #[test]
    fn hex_parsing_checks_length() {
        assert!(matches!(
            "0x0102".parse::<Address>(),
            Err(ParseHexError::WrongLength {
                expected: 20,
                got: 2
            })
        ));
        assert!(matches!(
            "0xzz".parse::<Hash>(),
            Err(ParseHexError::NotHex(_))
        ));
    }
}
