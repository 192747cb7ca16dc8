//! Lock-light tables the admission workers consult without taking the pool's lock.
//!
//! All three are indexed by a salted hash (the standard library's SipHash with random keys,
//! built to resist collision attacks), so a remote party cannot choose inputs that land on one
//! slot or shard. Admission is bound by signature checks, so the hash's cost does not show:
//! `bench mempool` admitted as many transactions per second with SipHash as with foldhash
//! (2026-11-24), which is faster but does not claim to resist an attacker who sees timings:
//! - [`SeenFilter`]: recently admitted transaction hashes, for the cheap duplicate check;
//! - [`ClaimTable`]: which in-flight unit of work owns a sender, the conflict pre-filter;
//! - [`PendingIndex`]: per-sender totals of the pool, published by the committer.

use parking_lot::{Mutex, RwLock};
use peregrine_types::{Address, Hash};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of the seen filter: a few blocks' worth of transactions, 33 bytes each (about 8.6 MiB).
pub const SEEN_SLOTS: usize = 1 << 18;

/// Slots of the claim table. Far more than the senders in flight at once (workers times the unit
/// size), so an innocent collision, which only defers a transaction, is rare.
pub const CLAIM_SLOTS: usize = 1 << 18;

/// Shards of the pending index: enough that workers reading and the committer writing seldom
/// meet on one lock.
const PENDING_SHARDS: usize = 64;

fn slot(salt: &RandomState, bytes: &[u8], slots: usize) -> usize {
    (salt.hash_one(bytes) % slots as u64) as usize
}

/// A direct-mapped table of recently admitted transaction hashes.
///
/// A hit compares the whole hash, so it is exact: a hit is certainly a duplicate. A miss means
/// "not admitted recently, or overwritten since"; the pool's exact hash index and the nonce rules
/// catch what a miss lets through. A hash is forgotten when the pool drops its transaction for a
/// reason other than inclusion, so the same bytes may be submitted again later.
pub struct SeenFilter {
    salt: RandomState,
    slots: Vec<Mutex<Hash>>,
}

impl Default for SeenFilter {
    fn default() -> Self {
        Self {
            salt: RandomState::default(),
            slots: (0..SEEN_SLOTS)
                .map(|_| Mutex::new(Hash::default()))
                .collect(),
        }
    }
}

impl SeenFilter {
    fn slot(&self, hash: &Hash) -> &Mutex<Hash> {
        &self.slots[slot(&self.salt, &hash.0, SEEN_SLOTS)]
    }

    /// Whether `hash` was admitted recently.
    pub fn contains(&self, hash: &Hash) -> bool {
        *self.slot(hash).lock() == *hash
    }

    /// Records an admitted hash, overwriting whatever shared its slot.
    pub fn insert(&self, hash: Hash) {
        *self.slot(&hash).lock() = hash;
    }

    /// Forgets `hash` if it is still recorded.
    pub fn forget(&self, hash: &Hash) {
        let mut slot = self.slot(hash).lock();
        if *slot == *hash {
            *slot = Hash::default();
        }
    }
}

/// Which unit of in-flight work owns each sender: the conflict pre-filter.
///
/// A worker claims the slot of every sender in its unit before checking state. A transaction whose
/// sender's slot is owned by another unit would race that unit's state checks, so it goes to the
/// try-later queue instead. Slots are salted, so nobody can aim collisions; an innocent collision
/// only defers, and after a bounded number of deferrals a transaction proceeds unclaimed and the
/// committer's exact checks decide (the exact fallback), so nothing waits forever.
pub struct ClaimTable {
    salt: RandomState,
    slots: Vec<AtomicU64>,
}

impl Default for ClaimTable {
    fn default() -> Self {
        Self {
            salt: RandomState::default(),
            slots: (0..CLAIM_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl ClaimTable {
    /// Claims `sender`'s slot for `unit` (never 0). Returns the slot if it is now owned by `unit`.
    pub fn claim(&self, sender: &Address, unit: u64) -> Option<usize> {
        let index = slot(&self.salt, &sender.0, CLAIM_SLOTS);
        match self.slots[index].compare_exchange(0, unit, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(index),
            Err(owner) if owner == unit => Some(index),
            Err(_) => None,
        }
    }

    /// Releases the slots `unit` owns.
    pub fn release(&self, slots: &[usize], unit: u64) {
        for &index in slots {
            let _ =
                self.slots[index].compare_exchange(unit, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// What the pool holds for one sender, as the workers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Transactions pending.
    pub len: usize,
    /// Their fees plus amounts.
    pub cost: u128,
    /// The highest pending nonce (meaningless when `len` is 0).
    pub highest: u64,
}

/// Per-sender totals of the pool, sharded, so workers check balances without the pool's lock.
pub struct PendingIndex {
    salt: RandomState,
    shards: Vec<RwLock<HashMap<Address, Summary, RandomState>>>,
}

impl Default for PendingIndex {
    fn default() -> Self {
        Self {
            salt: RandomState::default(),
            shards: (0..PENDING_SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl PendingIndex {
    fn shard(&self, sender: &Address) -> &RwLock<HashMap<Address, Summary, RandomState>> {
        &self.shards[slot(&self.salt, &sender.0, PENDING_SHARDS)]
    }

    /// The sender's totals (zero when it has nothing pending).
    pub fn get(&self, sender: &Address) -> Summary {
        self.shard(sender)
            .read()
            .get(sender)
            .copied()
            .unwrap_or_default()
    }

    /// Publishes the sender's totals; an empty summary removes the sender.
    pub fn set(&self, sender: Address, summary: Summary) {
        let mut shard = self.shard(&sender).write();
        if summary.len == 0 {
            shard.remove(&sender);
        } else {
            shard.insert(sender, summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_filter_is_exact_and_forgets() {
        let filter = SeenFilter::default();
        let a = Hash([1; 32]);
        assert!(!filter.contains(&a));
        filter.insert(a);
        assert!(filter.contains(&a));
        assert!(!filter.contains(&Hash([2; 32])));
        filter.forget(&a);
        assert!(!filter.contains(&a));
    }

    #[test]
    fn a_claimed_sender_is_refused_to_other_units_until_released() {
        let table = ClaimTable::default();
        let sender = Address([5; 20]);
        let slot = table.claim(&sender, 1).expect("free");
        assert_eq!(
            table.claim(&sender, 1),
            Some(slot),
            "a unit may claim twice"
        );
        assert_eq!(table.claim(&sender, 2), None);
        table.release(&[slot], 2);
        assert_eq!(table.claim(&sender, 2), None, "only the owner releases");
        table.release(&[slot], 1);
        assert_eq!(table.claim(&sender, 2), Some(slot));
    }

    #[test]
    fn pending_index_drops_empty_senders() {
        let index = PendingIndex::default();
        let sender = Address([3; 20]);
        index.set(
            sender,
            Summary {
                len: 2,
                cost: 30,
                highest: 4,
            },
        );
        assert_eq!(
            index.get(&sender),
            Summary {
                len: 2,
                cost: 30,
                highest: 4
            }
        );
        index.set(sender, Summary::default());
        assert_eq!(index.get(&sender), Summary::default());
    }
}
