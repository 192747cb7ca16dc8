//! Genesis: the initial allocation of balances, written as the first revision.

use crate::ExecError;
use peregrine_state::{Db, RevisionId};
use peregrine_types::{Account, Address, Encode};

/// One prefunded account of the genesis allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenesisAccount {
    /// The account.
    pub address: Address,
    /// Its starting balance.
    pub balance: u128,
}

/// Writes the genesis allocation on top of `parent` (an empty database's root), commits and
/// finalizes it, and returns the genesis revision.
pub fn apply_genesis(db: &Db, accounts: &[GenesisAccount]) -> Result<RevisionId, ExecError> {
    let mut supply: u128 = 0;
    for account in accounts {
        supply = supply
            .checked_add(account.balance)
            .ok_or(ExecError::SupplyOverflow)?;
    }
    let mut ws = db.begin(db.finalized())?;
    for account in accounts {
        let record = Account {
            balance: account.balance,
            nonce: 0,
        };
        ws.put(
            peregrine_types::keys::account(&account.address),
            record.encode(),
        )?;
    }
    ws.put(
        peregrine_types::keys::META_HEIGHT.to_vec(),
        0u64.to_le_bytes().to_vec(),
    )?;
    let revision = db.commit(ws)?;
    db.finalize(revision)?;
    Ok(revision)
}
