//! Genesis: the chain's first state and block, and the deterministic development accounts.

use peregrine_execution::GenesisAccount;
use peregrine_types::{Address, Block, Hash, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The chain id of `peregrine dev`.
pub const DEV_CHAIN_ID: u64 = 1337;
/// The default balance of each development account.
pub const DEV_BALANCE: u128 = 1_000_000_000_000;
/// The fee sink: fees are paid here, so value is moved, never destroyed.
pub const FEE_SINK: Address = Address([0xfe; 20]);
/// The file in the data directory that holds the genesis.
pub const GENESIS_FILE: &str = "genesis.json";

/// What a chain starts from. Stored as JSON in the data directory on first start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The chain id.
    pub chain_id: u64,
    /// Timestamp of the genesis block, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Prefunded accounts: address and balance (decimal string).
    pub accounts: Vec<(Address, String)>,
}

/// Why a genesis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The genesis file could not be read or written.
    #[error("genesis file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The genesis file is not valid.
    #[error("genesis file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The secret key of development account `index`: derived from a fixed, public seed, so every
/// devnet has the same accounts. Never use these keys for anything of value.
pub fn dev_key(index: u32) -> SecretKey {
    let seed = blake3::derive_key("peregrine v1 development account", &index.to_le_bytes());
    SecretKey::from_seed(seed)
}

impl Genesis {
    /// A development genesis with `accounts` prefunded development accounts.
    pub fn dev(accounts: u32, balance: u128, timestamp_ms: u64) -> Self {
        let accounts = (0..accounts)
            .map(|i| (dev_key(i).public_key().address(), balance.to_string()))
            .collect();
        Self {
            chain_id: DEV_CHAIN_ID,
            timestamp_ms,
            accounts,
        }
    }

    /// The allocation, parsed.
    pub fn allocation(&self) -> Result<Vec<GenesisAccount>, String> {
        self.accounts
            .iter()
            .map(|(address, balance)| {
                let balance = balance
                    .parse()
                    .map_err(|_| format!("balance {balance:?} of {address}"))?;
                Ok(GenesisAccount {
                    address: *address,
                    balance,
                })
            })
            .collect()
    }

    /// The genesis block, given the commitment of the genesis state.
    pub fn block(&self, state_root: Hash) -> Block {
        Block::new(
            0,
            Hash::default(),
            self.timestamp_ms,
            PublicKey::default(),
            state_root,
            vec![],
        )
    }

    /// Loads the genesis stored in `datadir`, if any.
    pub fn load(datadir: &Path) -> Result<Option<Self>, GenesisError> {
        let path = datadir.join(GENESIS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(GenesisError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let genesis: Self = serde_json::from_str(&text).map_err(|e| GenesisError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        genesis
            .allocation()
            .map_err(|reason| GenesisError::Invalid {
                path: path.display().to_string(),
                reason,
            })?;
        Ok(Some(genesis))
    }

    /// Writes the genesis to `datadir`.
    pub fn store(&self, datadir: &Path) -> Result<(), GenesisError> {
        let path = datadir.join(GENESIS_FILE);
        let text = serde_json::to_string_pretty(self).expect("genesis serializes");
        std::fs::write(&path, text).map_err(|source| GenesisError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}
