//! Scheduling: which transactions of a block may run at the same time.
//!
//! Each transaction's access set is derived from its payload and its declared access list (see
//! `docs/ACCESS.md`): a transfer writes its sender and its recipient; a deploy or call writes its
//! sender and reads or writes each declared address. Conflicts are tracked per address, which is
//! coarser than per key prefix and therefore never misses a conflict.
//!
//! Transactions are placed in *levels* in block order: a transaction's level is one more than the
//! highest level of any earlier transaction it conflicts with (read-after-write, write-after-write,
//! write-after-read). Transactions in one level touch disjoint state, so they can run in any order
//! or at once; levels run one after another. The schedule depends only on the block, never on the
//! thread count, so results cannot depend on it either.
//!
//! The fee sink is credited by every transaction, but as a commutative delta merged in block order,
//! so ordinary transactions do not conflict through it. A transaction that names the fee sink
//! itself (as sender, recipient or declared access) must see every earlier fee: it is a *barrier*,
//! placed in a level after all earlier transactions, and no later transaction is placed before it.
//!
//! Deploys and calls are barriers too, for now: a call may touch any contract's storage (a
//! callee's included), and until the VM enforces declared access lists at its host calls, only a
//! barrier guarantees that parallel execution cannot differ from serial. Native transfers after
//! a barrier may still share its level.

use peregrine_types::{AccessMode, Address, Block, Payload, SignedTransaction};
use std::collections::HashMap;

/// The levels of a block: transaction indices, each level in increasing index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Indices of the transactions in each level.
    pub levels: Vec<Vec<u32>>,
}

/// The addresses a transaction touches, with whether it may write them.
pub fn access_set(tx: &SignedTransaction) -> Vec<(Address, AccessMode)> {
    let body = tx.tx();
    let mut set = vec![(tx.sender(), AccessMode::Write)];
    match &body.payload {
        Payload::Transfer { to, .. } => set.push((*to, AccessMode::Write)),
        Payload::Deploy { .. } | Payload::Call { .. } => {
            set.extend(body.access.iter().map(|entry| (entry.address, entry.mode)));
        }
    }
    set
}

#[derive(Default, Clone, Copy)]
struct Seen {
    /// Highest level (plus one) of an earlier writer; 0 when none.
    written: u32,
    /// Highest level (plus one) of an earlier reader; 0 when none.
    read: u32,
}

/// Computes the levels of `block` for fee sink `fee_sink`.
pub fn schedule(block: &Block, fee_sink: &Address) -> Schedule {
    let mut seen: HashMap<Address, Seen> = HashMap::new();
    let mut levels: Vec<Vec<u32>> = Vec::new();
    // No transaction may be placed below the last barrier's level.
    let mut floor = 0u32;
    for (index, tx) in block.txs.iter().enumerate() {
        let set = access_set(tx);
        let is_contract = !matches!(tx.tx().payload, Payload::Transfer { .. });
        let barrier = is_contract || set.iter().any(|(address, _)| address == fee_sink);
        let level = if barrier {
            levels.len() as u32
        } else {
            let after = set.iter().map(|(address, mode)| {
                let s = seen.get(address).copied().unwrap_or_default();
                match mode {
                    AccessMode::Read => s.written,
                    AccessMode::Write => s.written.max(s.read),
                }
            });
            after.max().unwrap_or(0).max(floor)
        };
        if barrier {
            floor = level;
        }
        for (address, mode) in set {
            let entry = seen.entry(address).or_default();
            match mode {
                AccessMode::Read => entry.read = entry.read.max(level + 1),
                AccessMode::Write => entry.written = entry.written.max(level + 1),
            }
        }
        if levels.len() <= level as usize {
            levels.push(Vec::new());
        }
        levels[level as usize].push(index as u32);
    }
    Schedule { levels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_types::{Hash, PublicKey, SecretKey, Transaction};

    const SINK: Address = Address([0xfe; 20]);

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed([i; 32])
    }

    fn pay(from: u8, to: Address) -> SignedTransaction {
        let k = key(from);
        let payload = Payload::Transfer { to, amount: 1 };
        Transaction {
            chain_id: 1,
            sender: k.public_key(),
            nonce: 0,
            fee: 1,
            payload,
            access: vec![],
        }
        .sign(&k)
    }

    fn addr(i: u8) -> Address {
        key(i).public_key().address()
    }

    fn levels(txs: Vec<SignedTransaction>) -> Vec<Vec<u32>> {
        let block = Block::new(
            1,
            Hash::default(),
            1,
            PublicKey::default(),
            Hash::default(),
            txs,
        );
        schedule(&block, &SINK).levels
    }

    #[test]
    fn independent_transfers_share_a_level_and_conflicts_follow() {
        // 0->1 and 2->3 are independent; 1->4 reads what 0->1 wrote; 5->6 is independent again.
        let got = levels(vec![
            pay(0, addr(1)),
            pay(2, addr(3)),
            pay(1, addr(4)),
            pay(5, addr(6)),
        ]);
        assert_eq!(got, vec![vec![0, 1, 3], vec![2]]);
    }

    #[test]
    fn one_hot_account_serialises_everything() {
        let got = levels((0..4).map(|i| pay(i, addr(9))).collect());
        assert_eq!(got, vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn touching_the_fee_sink_is_a_barrier() {
        let got = levels(vec![pay(0, addr(1)), pay(2, SINK), pay(3, addr(4))]);
        assert_eq!(got, vec![vec![0], vec![1, 2]]);
    }
}
