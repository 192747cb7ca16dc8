//! Scheduling: which transactions of a block may run at the same time.
//!
//! Each transaction's access set is derived from its payload and its declared access list (see
//! `docs/ACCESS.md`): a transfer writes its sender and its recipient; a deploy writes its sender
//! and the address it creates; a call writes its sender and reads or writes each declared
//! (address, key prefix). Two accesses conflict when they name the same address with overlapping
//! prefixes (one starts the other; the empty prefix is the whole address) and one of them writes.
//! So token transfers between different holders, declared by their balance keys, run in
//! parallel, while a whole-account access still conflicts with everything at that address.
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
//! A call with an empty access list declares nothing, so it may touch any contract: it runs
//! alone, in a level after every earlier transaction and before every later one. A call with a non-empty list is held to it by the VM (an undeclared access fails
//! the transaction), so it is scheduled like any other transaction. A deployment writes its
//! sender and the address it creates (its code is stored under its hash, which only ever holds
//! that code, so deployments of the same code never disagree).

use foldhash::{HashMap, HashMapExt};
use peregrine_types::{AccessMode, Address, Block, Payload, SignedTransaction};
use smallvec::SmallVec;
use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::ops::Bound;

/// The levels of a block: transaction indices, each level in increasing index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Indices of the transactions in each level.
    pub levels: Vec<Vec<u32>>,
}

/// A transaction's accesses; a transfer's two fit inline.
pub type AccessSet<'a> = SmallVec<[(Address, &'a [u8], AccessMode); 4]>;

/// What a transaction touches: addresses with a storage key prefix (empty: the whole account or
/// contract), and whether it may write them.
pub fn access_set(tx: &SignedTransaction) -> AccessSet<'_> {
    let body = tx.tx();
    let whole: &[u8] = &[];
    let mut set = AccessSet::new();
    set.push((tx.sender(), whole, AccessMode::Write));
    match &body.payload {
        Payload::Transfer { to, .. } => set.push((*to, whole, AccessMode::Write)),
        Payload::Deploy { .. } => set.push((body.deployed_address(), whole, AccessMode::Write)),
        Payload::Call { .. } => set.extend(
            body.access
                .iter()
                .map(|e| (e.address, e.prefix.as_slice(), e.mode)),
        ),
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

impl Seen {
    fn join(self, other: Seen) -> Seen {
        Seen {
            written: self.written.max(other.written),
            read: self.read.max(other.read),
        }
    }

    /// The lowest level an access in `mode` may take after these.
    fn after(self, mode: AccessMode) -> u32 {
        match mode {
            AccessMode::Read => self.written,
            AccessMode::Write => self.written.max(self.read),
        }
    }

    fn record(&mut self, mode: AccessMode, level: u32) {
        match mode {
            AccessMode::Read => self.read = self.read.max(level + 1),
            AccessMode::Write => self.written = self.written.max(level + 1),
        }
    }
}

/// Earlier accesses to one address. Two prefixes overlap when one starts the other; the empty
/// prefix (the whole address) overlaps everything. Most addresses (accounts) only ever see
/// whole-address accesses, so the prefix bookkeeping is boxed and absent until needed: the
/// record stays three words, and a block's worth of them stays in cache.
#[derive(Default)]
struct AddressSeen {
    /// Every access to the address: what a whole-address access must follow.
    all: Seen,
    /// Whole-address accesses: what every access must follow.
    whole: Seen,
    /// Accesses by non-empty prefix, once there is one.
    prefixes: Option<Box<PrefixSeen>>,
}

/// A declared key prefix. Up to 32 bytes (a token balance key is 21) it is stored inline, so a
/// new prefix allocates nothing.
type Prefix = SmallVec<[u8; 32]>;

/// Accesses to one address by non-empty key prefix.
#[derive(Default)]
struct PrefixSeen {
    /// The accesses by prefix, for exact lookups.
    exact: HashMap<Prefix, Seen>,
    /// The same prefixes in order, for finding the longer prefixes a lookup starts. Built the
    /// first time a lookup needs it and kept up to date from then on: blocks whose prefixes all
    /// have one length (token balances) never need it.
    ordered: OnceCell<BTreeSet<Prefix>>,
    /// Bit `n - 1` is set when a prefix of length `n` (at most 128, as decoded transactions
    /// allow) is recorded, so a lookup only tries the lengths in use; longer ones are always
    /// tried.
    lengths: u128,
    /// The longest prefix recorded: when it is no longer than a lookup's, only an exact match
    /// can be a prefix the lookup starts.
    longest: usize,
}

impl AddressSeen {
    /// Earlier accesses overlapping `prefix`.
    fn overlapping(&self, prefix: &[u8]) -> Seen {
        if prefix.is_empty() {
            return self.all;
        }
        match &self.prefixes {
            None => self.whole,
            Some(prefixes) => prefixes.overlapping(prefix, self.whole),
        }
    }

    fn record(&mut self, prefix: &[u8], mode: AccessMode, level: u32) {
        self.all.record(mode, level);
        if prefix.is_empty() {
            self.whole.record(mode, level);
        } else {
            self.prefixes
                .get_or_insert_with(Box::default)
                .record(prefix, mode, level);
        }
    }
}

impl PrefixSeen {
    /// `whole` joined with the earlier accesses overlapping the non-empty `prefix`.
    fn overlapping(&self, prefix: &[u8], whole: Seen) -> Seen {
        // Shorter prefixes that start `prefix` (one lookup per length in use), then longer ones
        // it starts.
        let shorter = (1..prefix.len())
            .filter(|n| *n > 128 || self.lengths & (1u128 << (n - 1)) != 0)
            .filter_map(|n| self.exact.get(&prefix[..n]));
        let acc = shorter.fold(whole, |acc, seen| acc.join(*seen));
        if self.longest <= prefix.len() {
            return self.exact.get(prefix).map_or(acc, |seen| acc.join(*seen));
        }
        let ordered = self
            .ordered
            .get_or_init(|| self.exact.keys().cloned().collect());
        ordered
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|key| key.starts_with(prefix))
            .filter_map(|key| self.exact.get(key))
            .fold(acc, |acc, seen| acc.join(*seen))
    }

    fn record(&mut self, prefix: &[u8], mode: AccessMode, level: u32) {
        if prefix.len() <= 128 {
            self.lengths |= 1u128 << (prefix.len() - 1);
        }
        self.longest = self.longest.max(prefix.len());
        let seen = self
            .exact
            .entry(Prefix::from_slice(prefix))
            .or_insert_with(|| {
                if let Some(ordered) = self.ordered.get_mut() {
                    ordered.insert(Prefix::from_slice(prefix));
                }
                Seen::default()
            });
        seen.record(mode, level);
    }
}

/// A call with an empty access list declares nothing, so it may touch anything.
fn is_undeclared_call(tx: &SignedTransaction) -> bool {
    matches!(tx.tx().payload, Payload::Call { .. }) && tx.tx().access.is_empty()
}

/// Computes the levels of `block` for fee sink `fee_sink`.
pub fn schedule(block: &Block, fee_sink: &Address) -> Schedule {
    let mut addresses = Addresses::with_capacity(2 * block.txs.len());
    let mut levels: Vec<Vec<u32>> = Vec::new();
    // No transaction may be placed below the last barrier's level.
    let mut floor = 0u32;
    for (index, tx) in block.txs.iter().enumerate() {
        let set = access_set(tx);
        // One hash lookup per access: the level is computed and recorded through the slots.
        let slots: SmallVec<[u32; 4]> = set.iter().map(|(a, _, _)| addresses.slot(a)).collect();
        let barrier = is_undeclared_call(tx) || set.iter().any(|(a, _, _)| a == fee_sink);
        let level = if barrier {
            levels.len() as u32
        } else {
            let after = set.iter().zip(&slots).map(|((_, prefix, mode), &slot)| {
                addresses.seen[slot as usize]
                    .overlapping(prefix)
                    .after(*mode)
            });
            after.max().unwrap_or(0).max(floor)
        };
        if barrier {
            // An undeclared call may have touched anything: nothing after it shares its level.
            floor = if is_undeclared_call(tx) {
                level + 1
            } else {
                level
            };
        }
        for ((_, prefix, mode), slot) in set.iter().zip(slots) {
            addresses.seen[slot as usize].record(prefix, *mode, level);
        }
        if levels.len() <= level as usize {
            levels.push(Vec::new());
        }
        levels[level as usize].push(index as u32);
    }
    Schedule { levels }
}

/// Every address a block touches, numbered in order of first access, with its earlier accesses.
struct Addresses {
    slots: HashMap<Address, u32>,
    seen: Vec<AddressSeen>,
}

impl Addresses {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: HashMap::with_capacity(capacity),
            seen: Vec::with_capacity(capacity),
        }
    }

    /// The slot of `address`, new and empty on its first access.
    fn slot(&mut self, address: &Address) -> u32 {
        let next = self.seen.len() as u32;
        let slot = *self.slots.entry(*address).or_insert(next);
        if slot == next {
            self.seen.push(AddressSeen::default());
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_types::{AccessEntry, Hash, PublicKey, SecretKey, Transaction};

    const SINK: Address = Address([0xfe; 20]);

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed([i; 32])
    }

    fn signed(from: u8, payload: Payload, access: Vec<AccessEntry>) -> SignedTransaction {
        let k = key(from);
        Transaction {
            chain_id: 1,
            sender: k.public_key(),
            nonce: 0,
            fee: 1,
            payload,
            access,
        }
        .sign(&k)
    }

    fn pay(from: u8, to: Address) -> SignedTransaction {
        signed(from, Payload::Transfer { to, amount: 1 }, vec![])
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

    const TOKEN: Address = Address([0x70; 20]);

    /// A call to the token from `from`, declaring `(prefix, write)` entries on it.
    fn call(from: u8, entries: &[(&[u8], bool)]) -> SignedTransaction {
        let access = entries
            .iter()
            .map(|(prefix, write)| AccessEntry {
                address: TOKEN,
                prefix: prefix.to_vec(),
                mode: if *write {
                    AccessMode::Write
                } else {
                    AccessMode::Read
                },
            })
            .collect();
        let payload = Payload::Call {
            contract: TOKEN,
            method: b"transfer".to_vec(),
            args: vec![],
        };
        signed(from, payload, access)
    }

    #[test]
    fn declared_keys_conflict_only_where_prefixes_overlap() {
        let got = levels(vec![
            call(0, &[(b"b1", true), (b"b2", true)]),
            call(1, &[(b"b3", true), (b"b4", true)]),
            // Reads b1: after 0, beside 1.
            call(2, &[(b"b1", false)]),
            // Another reader of b1 beside 2; b is a prefix of every balance: after all writers.
            call(3, &[(b"b1", false), (b"s", false)]),
            call(4, &[(b"b", true)]),
            // The whole contract: after every writer before it; a reader of a longer key after
            // b3 and b (both start it) shares its level.
            call(5, &[(b"", false)]),
            call(6, &[(b"b3x", false)]),
        ]);
        assert_eq!(got, vec![vec![0, 1], vec![2, 3], vec![4], vec![5, 6]]);
    }

    /// The ordered index of prefixes is built by the first lookup that needs it; prefixes
    /// recorded after that must be found by later lookups too.
    #[test]
    fn prefixes_recorded_after_a_range_lookup_are_still_found() {
        let got = levels(vec![
            call(0, &[(b"k1", true)]),
            // Shorter than every recorded prefix: a range lookup, which builds the index.
            call(1, &[(b"k", true)]),
            // Overlaps nothing so far.
            call(2, &[(b"m2", true)]),
            // A range lookup that must find m2, recorded after the index was built.
            call(3, &[(b"m", true)]),
        ]);
        assert_eq!(got, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn an_undeclared_call_runs_alone() {
        let got = levels(vec![pay(0, addr(1)), call(2, &[]), pay(3, addr(4))]);
        assert_eq!(got, vec![vec![0], vec![1], vec![2]]);
    }
}
