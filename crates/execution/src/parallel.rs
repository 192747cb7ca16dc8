//! The parallel executor: levels from [`crate::schedule`] run on a thread pool, results merged in
//! block order, so state, receipts and commitment are bit-identical to [`crate::SerialExecutor`]
//! for any thread count.
//!
//! Each transaction of a level runs against a read-only view (the parent revision plus the
//! block's writes up to the previous level) and records its own writes. After the level, writes
//! are merged in block order and the level's fees are credited to the sink as one delta. Levels
//! too small to be worth a fork-join run inline on the calling thread, so a fully contended block
//! costs about what serial execution does.
//!
//! Merging is mostly an append: only the few accounts that a later level or the fee credit reads
//! back go into a lookup table, and every other account is written exactly once. At the end both
//! are sorted together on the pool and handed to the state commit as one sorted run, so the
//! serial part of a block is little more than scheduling and the appends.

use crate::contracts::{BlockWorld, RawWrites};
use crate::rules::{apply_tx, credit_fee, Ledger, Outcome, TxEnv};
use crate::schedule::{access_set, schedule};
use crate::serial::execute_in_order;
use crate::{read_account, BlockExecutor, BlockOutput, ExecError};
use foldhash::{HashMap, HashMapExt, HashSet};
use peregrine_state::{Bytes, Db, RevisionId, Snapshot, WriteSet};
use peregrine_types::{keys, Account, Address, Block, Payload, SignedTransaction};
use peregrine_vm::Vm;
use rayon::prelude::*;
use smallvec::SmallVec;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Levels with fewer transactions than this run inline: below it, a fork-join costs more than it
/// saves (a native transfer executes in about a microsecond).
const MIN_PARALLEL_LEVEL: usize = 64;

/// A block where one sender has at least (CHAIN_FRACTION - 1) / CHAIN_FRACTION of the
/// transactions has almost nothing to run side by side, and runs serially.
const CHAIN_FRACTION: usize = 10;

/// Whether `block` has nothing to gain from levels, judged from its senders alone (far cheaper
/// than scheduling). Transactions of one sender always conflict (nonce and balance), so
/// - when one sender has nearly all of the transactions, nearly every level holds one; and
/// - a level holds at most one transaction per sender, so with fewer senders than
///   [`MIN_PARALLEL_LEVEL`] every level would run inline on the calling thread anyway.
///
/// Blocks too small for either to matter take the levels, so that small blocks exercise them.
pub(crate) fn runs_in_order(block: &Block) -> bool {
    let n = block.txs.len();
    if n < MIN_PARALLEL_LEVEL {
        return false;
    }
    let mut counts: HashMap<Address, usize> = HashMap::new();
    let top = block.txs.iter().fold(0, |top, tx| {
        let count = counts.entry(tx.sender()).or_default();
        *count += 1;
        top.max(*count)
    });
    top * CHAIN_FRACTION >= n * (CHAIN_FRACTION - 1) || counts.len() < MIN_PARALLEL_LEVEL
}

/// Executes the levels of a block on a pool of worker threads.
pub struct ParallelExecutor {
    fee_sink: Address,
    pool: rayon::ThreadPool,
    vm: Vm,
}

impl std::fmt::Debug for ParallelExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ParallelExecutor({} threads)",
            self.pool.current_num_threads()
        )
    }
}

impl ParallelExecutor {
    /// An executor with `threads` workers (0: one per core) running contracts on `vm` and paying
    /// fees to `fee_sink`.
    pub fn new(fee_sink: Address, threads: usize, vm: Vm) -> Result<Self, ExecError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("exec-{i}"))
            .build()
            .map_err(|e| ExecError::ThreadPool(e.to_string()))?;
        Ok(Self { fee_sink, pool, vm })
    }

    /// Worker threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

/// The block's writes so far, over the parent revision.
struct Overlay<'a> {
    parent: &'a Snapshot,
    /// The latest write of each account that anything may still read back (see [`Tracked`]).
    written: HashMap<Address, Account>,
    tracked: Tracked,
    /// The writes of every other account: each is written once in the block (two writes of one
    /// account conflict, so they are in different levels, and then the later level tracks it).
    once: Vec<(Address, Account)>,
    raw: Arc<RawWrites>,
}

/// Which accounts the overlay keeps in its lookup table.
///
/// A transaction reads only accounts in its access set (its sender, and a transfer's
/// recipient), the merge reads the fee sink, and transactions of one level never read each
/// other's writes. So only the fee sink and the accounts touched by transactions past the
/// first level are ever read back; at low contention that is a few hundred of the block's
/// twenty thousand writes, and the rest need no hashing at all.
enum Tracked {
    /// Every account: when later levels hold a large share of the block, tracking all of them
    /// costs less than finding out which ones.
    All,
    /// Only these.
    Only(HashSet<Address>),
}

/// Later levels holding more than 1 / LATER_SHARE of a block's transactions make [`Tracked::All`]
/// the cheaper choice.
const LATER_SHARE: usize = 8;

impl Tracked {
    fn new(block: &Block, levels: &[Vec<u32>], fee_sink: &Address) -> Self {
        let later_txs: usize = levels.iter().skip(1).map(Vec::len).sum();
        if later_txs * LATER_SHARE > block.txs.len() {
            return Self::All;
        }
        let later = levels.iter().skip(1).flatten();
        let mut set: HashSet<Address> = later
            .flat_map(|&i| access_set(&block.txs[i as usize]))
            .map(|(address, _, _)| address)
            .collect();
        set.insert(*fee_sink);
        Self::Only(set)
    }

    fn contains(&self, address: &Address) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(address),
        }
    }

    /// How many accounts the lookup table should expect.
    fn expected(&self, writes: usize) -> usize {
        match self {
            Self::All => writes,
            Self::Only(set) => set.len(),
        }
    }
}

impl Overlay<'_> {
    fn get(&self, address: &Address) -> Result<Account, ExecError> {
        match self.written.get(address) {
            Some(account) => Ok(*account),
            None => read_account(|key| self.parent.get(key), address),
        }
    }

    fn world(&self) -> BlockWorld {
        BlockWorld {
            parent: self.parent.clone(),
            raw: self.raw.clone(),
        }
    }
}

impl Ledger for Overlay<'_> {
    fn get(&mut self, address: &Address) -> Result<Account, ExecError> {
        Overlay::get(self, address)
    }

    fn set(&mut self, address: Address, account: Account) {
        if self.tracked.contains(&address) {
            self.written.insert(address, account);
        } else {
            self.once.push((address, account));
        }
    }

    fn world(&self) -> BlockWorld {
        Overlay::world(self)
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        Arc::make_mut(&mut self.raw).insert(key, value);
    }
}

/// An address as two integers that compare as its bytes do: cheaper to sort by than 20 bytes.
fn address_order(address: &Address) -> (u128, u32) {
    let (high, low) = address.0.split_at(16);
    (
        u128::from_be_bytes(high.try_into().expect("16 bytes")),
        u32::from_be_bytes(low.try_into().expect("4 bytes")),
    )
}

/// The accounts a transaction reads (its sender, and a transfer's recipient) as the parent
/// revision holds them: read for every transaction at once, on the pool, while the block is
/// scheduled. A record that does not decode is left out, so the error surfaces only if the
/// transaction really reads it, as in serial execution.
type Prefetched = SmallVec<[(Address, Account); 2]>;

/// Transactions whose accounts one read-ahead step reads together: their lookups walk the trie
/// at once ([`Snapshot::get_many`]), so their cache misses overlap.
const PREFETCH_BATCH: usize = 16;

/// Reads ahead the accounts of `txs`, in order: those [`Recent`] holds from it, the rest from
/// `parent` in one batch.
fn prefetch(parent: &Snapshot, recent: &mut Recent, txs: &[SignedTransaction]) -> Vec<Prefetched> {
    let wanted: Vec<SmallVec<[Address; 2]>> = txs.iter().map(reads_of).collect();
    let addresses: Vec<Address> = wanted.iter().flatten().copied().collect();
    let mut accounts: Vec<Option<Account>> = addresses.iter().map(|a| recent.get(a)).collect();
    let missing: Vec<usize> = (0..addresses.len())
        .filter(|&i| accounts[i].is_none())
        .collect();
    let keys: Vec<[u8; 21]> = missing
        .iter()
        .map(|&i| keys::account_key(&addresses[i]))
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
    for (&i, record) in missing.iter().zip(parent.get_many(&refs)) {
        if let Ok(account) = read_account(|_| record, &addresses[i]) {
            accounts[i] = Some(account);
            recent.put(addresses[i], account);
        }
    }
    let mut read = addresses.into_iter().zip(accounts);
    wanted
        .iter()
        .map(|of_tx| {
            let of_tx = read.by_ref().take(of_tx.len());
            of_tx
                .filter_map(|(address, account)| Some((address, account?)))
                .collect()
        })
        .collect()
}

/// The accounts a transaction reads: its sender, and a transfer's recipient.
fn reads_of(tx: &SignedTransaction) -> SmallVec<[Address; 2]> {
    let mut addresses = SmallVec::new();
    addresses.push(tx.sender());
    if let Payload::Transfer { to, .. } = &tx.tx().payload {
        addresses.push(*to);
    }
    addresses
}

/// Slots of [`Recent`]: enough for the hot accounts of a contended block.
const RECENT_SLOTS: usize = 64;

/// The parent-state accounts one worker read ahead last, by a hash of the address. In a contended
/// block the same few accounts recur, and a repeat then costs one comparison instead of a walk
/// down the trie; in an uncontended one a miss costs one comparison more.
struct Recent {
    slots: [Option<(Address, Account)>; RECENT_SLOTS],
    hasher: foldhash::fast::RandomState,
}

impl Recent {
    fn new() -> Self {
        Self {
            slots: [None; RECENT_SLOTS],
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn slot(&self, address: &Address) -> usize {
        self.hasher.hash_one(address) as usize % RECENT_SLOTS
    }

    fn get(&self, address: &Address) -> Option<Account> {
        match &self.slots[self.slot(address)] {
            Some((a, account)) if a == address => Some(*account),
            _ => None,
        }
    }

    fn put(&mut self, address: Address, account: Account) {
        let slot = self.slot(&address);
        self.slots[slot] = Some((address, account));
    }
}

/// One transaction's view: its own writes over the shared overlay.
struct TxView<'a, 'b> {
    base: &'a Overlay<'b>,
    prefetched: &'a Prefetched,
    writes: Writes,
}

/// One transaction's writes: accounts (a transfer's two inline), and contract state.
#[derive(Default)]
struct Writes {
    accounts: SmallVec<[(Address, Account); 2]>,
    raw: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Ledger for TxView<'_, '_> {
    fn get(&mut self, address: &Address) -> Result<Account, ExecError> {
        match self
            .writes
            .accounts
            .iter()
            .rev()
            .find(|(a, _)| a == address)
        {
            Some((_, account)) => Ok(*account),
            // An earlier level's write, then the parent's state read ahead.
            None => match self.base.written.get(address) {
                Some(account) => Ok(*account),
                None => match self.prefetched.iter().find(|(a, _)| a == address) {
                    Some((_, account)) => Ok(*account),
                    None => self.base.get(address),
                },
            },
        }
    }

    fn set(&mut self, address: Address, account: Account) {
        self.writes.accounts.push((address, account));
    }

    /// A contract transaction touches only contracts no other transaction of its level touches
    /// (or runs alone, see [`crate::schedule`]), so the state at the level's start is the state
    /// it must see.
    fn world(&self) -> BlockWorld {
        self.base.world()
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.writes.raw.push((key, value));
    }
}

type TxResult = Result<(Outcome, Writes), ExecError>;

fn run_tx(
    base: &Overlay<'_>,
    prefetched: &Prefetched,
    env: TxEnv<'_>,
    tx: &SignedTransaction,
) -> TxResult {
    let mut view = TxView {
        base,
        prefetched,
        writes: Writes::default(),
    };
    let outcome = apply_tx(&mut view, env, tx)?;
    Ok((outcome, view.writes))
}

impl ParallelExecutor {
    /// The block's final account states as sorted state key/value pairs: the accounts written
    /// once and the final states of the tracked ones (no account is in both), sorted and encoded
    /// on the pool.
    fn encode_sorted(&self, overlay: &mut Overlay<'_>) -> Vec<(Bytes, Bytes)> {
        let mut accounts = std::mem::take(&mut overlay.once);
        accounts.extend(overlay.written.drain());
        self.pool.install(|| {
            // Unique addresses, so an unstable sort is deterministic. Account keys are a fixed
            // prefix then the address, so address order is key order.
            accounts.par_sort_unstable_by_key(|(address, _)| address_order(address));
            accounts
                .par_iter()
                .map(|(address, account)| {
                    (
                        Bytes::from_slice(&keys::account_key(address)),
                        Bytes::from_slice(&account.to_record()),
                    )
                })
                .collect()
        })
    }

    /// Commits the block's writes. The state database builds the trie on its committer thread,
    /// over rayon's global pool; on one thread the sequential build avoids the extra parent
    /// lookups that overlapping needs.
    fn commit(&self, db: &Db, ws: WriteSet) -> Result<RevisionId, peregrine_state::Error> {
        if self.threads() == 1 {
            db.commit_sequential(ws)
        } else {
            db.commit(ws)
        }
    }

    fn run_level(
        &self,
        overlay: &Overlay<'_>,
        prefetched: &[Prefetched],
        block: &Block,
        level: &[u32],
    ) -> Vec<TxResult> {
        let env = TxEnv {
            height: block.header.height,
            time_ms: block.header.timestamp_ms,
            vm: &self.vm,
        };
        let run = |&i: &u32| {
            let i = i as usize;
            run_tx(overlay, &prefetched[i], env, &block.txs[i])
        };
        if level.len() < MIN_PARALLEL_LEVEL || self.threads() == 1 {
            level.iter().map(run).collect()
        } else {
            self.pool.install(|| level.par_iter().map(run).collect())
        }
    }
}

impl BlockExecutor for ParallelExecutor {
    fn execute(
        &self,
        db: &Db,
        parent: RevisionId,
        block: &Block,
    ) -> Result<BlockOutput, ExecError> {
        if runs_in_order(block) {
            // The levels would run inline, mostly one transaction at a time, and the serial path
            // does that with less bookkeeping, with identical results by construction.
            return execute_in_order(&self.fee_sink, &self.vm, db, parent, block, |ws| {
                self.commit(db, ws)
            });
        }
        let snapshot = db.snapshot(parent)?;
        // Scheduling is serial; reading the accounts every transaction needs is not, and runs
        // beside it.
        let (levels, prefetched) = self.pool.install(|| {
            rayon::join(
                || schedule(block, &self.fee_sink).levels,
                || {
                    let batches = block.txs.par_chunks(PREFETCH_BATCH);
                    let batches = batches.with_min_len(MIN_PARALLEL_LEVEL / PREFETCH_BATCH);
                    batches
                        .map_init(Recent::new, |recent, txs| prefetch(&snapshot, recent, txs))
                        .flatten_iter()
                        .collect::<Vec<_>>()
                },
            )
        });
        let tracked = Tracked::new(block, &levels, &self.fee_sink);
        let mut overlay = Overlay {
            parent: &snapshot,
            written: HashMap::with_capacity(tracked.expected(2 * block.txs.len())),
            tracked,
            once: Vec::with_capacity(2 * block.txs.len()),
            raw: Arc::default(),
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; block.txs.len()];
        for level in levels {
            let results = self.run_level(&overlay, &prefetched, block, &level);
            // Merge in block order: each transaction's writes, then the level's fees as a delta.
            let mut fees = 0u128;
            for (&index, result) in level.iter().zip(results) {
                let (outcome, writes) = result?;
                let accounts = &writes.accounts;
                for (i, (address, account)) in accounts.iter().enumerate() {
                    // A self-transfer writes its account twice: the last write is its state.
                    if accounts[i + 1..].iter().all(|(a, _)| a != address) {
                        overlay.set(*address, *account);
                    }
                }
                if !writes.raw.is_empty() {
                    Arc::make_mut(&mut overlay.raw).extend(writes.raw);
                }
                fees += u128::from(outcome.fee);
                outcomes[index as usize] = Some(outcome);
            }
            // Only a transaction that names the fee sink reads or writes it, and such a barrier
            // opens a new level (see `crate::schedule`): it runs first in its level, its writes
            // merge first, and adding the level's fees after them gives the sink what crediting
            // them one by one would.
            credit_fee(&mut overlay, &self.fee_sink, fees)?;
        }
        let receipts = block
            .txs
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(index, (tx, outcome))| {
                let outcome = outcome.expect("every transaction is in exactly one level");
                crate::receipt(block, index, tx, outcome)
            })
            .collect();
        let mut ws = db.begin(parent)?;
        let raw = std::mem::take(&mut overlay.raw);
        ws.put_sorted(self.encode_sorted(&mut overlay))?;
        crate::put_raw_writes(&mut ws, raw)?;
        crate::seal(db, ws, block, receipts, |ws| self.commit(db, ws))
    }
}
