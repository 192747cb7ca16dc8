//! The engines of `peregrine bench state`, each behind the same small interface.
//!
//! A block is written through [`BlockWriter`] (reads see the block's own earlier writes) and then
//! committed. A transfer reads its two balances with one [`BlockWriter::get_pair`]: an engine
//! with a batched read uses it (Peregrine's `WriteSet::get_array`, whose two lookups walk the
//! trie together), the others (`BTreeMap`, redb, LMDB and fjall have none) read one key after the
//! other; a durable engine makes the block durable with one fsync at commit, which for
//! Peregrine is `commit` followed by `finalize`. [`Engine::reader`] hands a thread a view for
//! random reads while the writer goes on: Peregrine's is the snapshot of the block four behind
//! the head (the engine keeps every revision readable), the peers' are their latest committed
//! state (none of them can open an older one), and `BTreeMap` has none.

use crate::BenchError;
use parking_lot::Mutex;
use peregrine_state::{Db, RevisionId, Snapshot};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

/// Page/block cache given to each durable peer, so that they are not starved of memory.
pub const PEER_CACHE_BYTES: usize = 4 << 30;
/// Address space reserved for LMDB's map (sparse: only what is written takes disk).
const LMDB_MAP_BYTES: usize = 256 << 30;
/// How far behind the head Peregrine's reader reads.
pub const READER_LAG: usize = 4;

/// Reads and writes of one block.
pub trait BlockWriter {
    /// The value of `key`, counting this block's earlier writes.
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError>;
    /// The values of `a` and `b`, as two [`BlockWriter::get`]s would give them.
    fn get_pair(&mut self, a: &[u8], b: &[u8]) -> Result<Pair, BenchError> {
        Ok((self.get(a)?, self.get(b)?))
    }
    /// Writes `key`.
    fn put(&mut self, key: &[u8], value: &[u8; 8]) -> Result<(), BenchError>;
}

/// Two values read together.
pub type Pair = (Option<[u8; 8]>, Option<[u8; 8]>);

/// A view a reader thread can read from.
pub type Reader = Box<dyn FnMut(&[u8]) -> Result<Option<[u8; 8]>, BenchError> + Send>;

/// One engine under test.
pub trait Engine {
    /// Its name in reports.
    fn name(&self) -> &'static str;
    /// Writes one block with `f`, then commits it (durably, if the engine is durable).
    fn block(
        &mut self,
        f: &mut dyn FnMut(&mut dyn BlockWriter) -> Result<(), BenchError>,
    ) -> Result<(), BenchError>;
    /// Reads `key` from the latest committed state.
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError>;
    /// A view for a concurrent reader, if the engine has one.
    fn reader(&self) -> Option<Reader>;
    /// Waits until every block written so far is complete (Peregrine: its trie built, so its
    /// state root is known), so that a timed phase ends with all of its own work done.
    fn finish(&mut self) -> Result<(), BenchError> {
        Ok(())
    }
    /// Waits for the background work that earlier blocks started (checkpoints, flushes,
    /// compactions), so that an untimed load is not paid for in the timed phase after it.
    fn settle(&mut self) -> Result<(), BenchError> {
        Ok(())
    }
}

fn value8(bytes: &[u8]) -> Result<[u8; 8], BenchError> {
    bytes
        .try_into()
        .map_err(|_| BenchError::Load(format!("stored value of {} bytes", bytes.len())))
}

fn peer(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> BenchError {
    move |e| BenchError::Load(format!("{what}: {e}"))
}

/// The in-memory speed reference: no versions, no durability.
#[derive(Default)]
pub struct BTree {
    map: BTreeMap<[u8; 8], [u8; 8]>,
}

fn key8(key: &[u8]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k.copy_from_slice(&key[..8]);
    k
}

impl BlockWriter for BTree {
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        Ok(self.map.get(&key8(key)).copied())
    }

    fn put(&mut self, key: &[u8], value: &[u8; 8]) -> Result<(), BenchError> {
        self.map.insert(key8(key), *value);
        Ok(())
    }
}

impl Engine for BTree {
    fn name(&self) -> &'static str {
        "btreemap"
    }

    fn block(
        &mut self,
        f: &mut dyn FnMut(&mut dyn BlockWriter) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        f(self)
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        Ok(self.map.get(&key8(key)).copied())
    }

    fn reader(&self) -> Option<Reader> {
        None
    }
}

/// Peregrine's state database: a revision per block, finalized (one fsync) every block.
pub struct Peregrine {
    db: Db,
    head: RevisionId,
    recent: Arc<Mutex<VecDeque<Snapshot>>>,
}

impl Peregrine {
    /// Opens a fresh database in `dir`, with `memory` as its memory budget if given.
    pub fn open(dir: &Path, memory: Option<u64>) -> Result<Self, BenchError> {
        let mut options = peregrine_state::Options::default();
        if let Some(memory) = memory {
            options.memory_budget = memory;
        }
        let db = Db::open_with(dir, options)?;
        let head = db.finalized();
        let recent = Arc::new(Mutex::new(VecDeque::from([db.snapshot(head)?])));
        Ok(Self { db, head, recent })
    }
}

struct PeregrineBlock(peregrine_state::WriteSet);

impl BlockWriter for PeregrineBlock {
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        self.0.get(key).as_deref().map(value8).transpose()
    }

    fn get_pair(&mut self, a: &[u8], b: &[u8]) -> Result<Pair, BenchError> {
        let [va, vb] = self.0.get_array([a, b]);
        Ok((
            va.as_deref().map(value8).transpose()?,
            vb.as_deref().map(value8).transpose()?,
        ))
    }

    fn put(&mut self, key: &[u8], value: &[u8; 8]) -> Result<(), BenchError> {
        Ok(self.0.put_slice(key, value)?)
    }
}

impl Engine for Peregrine {
    fn name(&self) -> &'static str {
        "peregrine"
    }

    fn block(
        &mut self,
        f: &mut dyn FnMut(&mut dyn BlockWriter) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let mut block = PeregrineBlock(self.db.begin(self.head)?);
        f(&mut block)?;
        let revision = self.db.commit(block.0)?;
        self.db.finalize(revision)?;
        self.head = revision;
        let mut recent = self.recent.lock();
        recent.push_back(self.db.snapshot(revision)?);
        if recent.len() > READER_LAG + 1 {
            recent.pop_front();
        }
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        // The head's snapshot is kept, as a node keeps its latest state for readers.
        let recent = self.recent.lock();
        let head = recent
            .back()
            .ok_or_else(|| BenchError::Load("no head".into()))?;
        head.get(key).as_deref().map(value8).transpose()
    }

    fn reader(&self) -> Option<Reader> {
        let recent = self.recent.clone();
        Some(Box::new(move |key| {
            // The oldest kept snapshot is READER_LAG blocks behind the head.
            let snapshot = recent.lock().front().cloned();
            match snapshot {
                Some(s) => s.get(key).as_deref().map(value8).transpose(),
                None => Ok(None),
            }
        }))
    }

    fn finish(&mut self) -> Result<(), BenchError> {
        // The committer builds in order, so the head's root comes last.
        self.db.snapshot(self.head)?.commitment();
        Ok(())
    }

    fn settle(&mut self) -> Result<(), BenchError> {
        Ok(self.db.settle()?)
    }
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("state");

/// redb, a copy-on-write B-tree; each commit is durable (fsync).
pub struct Redb {
    db: Arc<redb::Database>,
}

impl Redb {
    /// Creates a fresh database file in `dir` with a `cache`-byte cache.
    pub fn open(dir: &Path, cache: usize) -> Result<Self, BenchError> {
        let db = redb::Database::builder()
            .set_cache_size(cache)
            .create(dir.join("redb"))
            .map_err(|e| peer("redb open")(&e))?;
        Ok(Self { db: Arc::new(db) })
    }
}

struct RedbBlock<'t>(redb::Table<'t, &'static [u8], &'static [u8]>);

impl BlockWriter for RedbBlock<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        use redb::ReadableTable as _;
        let found = self.0.get(key).map_err(|e| peer("redb get")(&e))?;
        found.map(|v| value8(v.value())).transpose()
    }

    fn put(&mut self, key: &[u8], value: &[u8; 8]) -> Result<(), BenchError> {
        self.0
            .insert(key, &value[..])
            .map_err(|e| peer("redb put")(&e))?;
        Ok(())
    }
}

fn redb_get(db: &redb::Database, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
    use redb::ReadableDatabase as _;
    let txn = db.begin_read().map_err(|e| peer("redb read")(&e))?;
    let table = match txn.open_table(REDB_TABLE) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(peer("redb table")(&e)),
    };
    let found = table.get(key).map_err(|e| peer("redb get")(&e))?;
    found.map(|v| value8(v.value())).transpose()
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn block(
        &mut self,
        f: &mut dyn FnMut(&mut dyn BlockWriter) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let txn = self.db.begin_write().map_err(|e| peer("redb write")(&e))?;
        {
            let table = txn
                .open_table(REDB_TABLE)
                .map_err(|e| peer("redb table")(&e))?;
            f(&mut RedbBlock(table))?;
        }
        txn.commit().map_err(|e| peer("redb commit")(&e))
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        redb_get(&self.db, key)
    }

    fn reader(&self) -> Option<Reader> {
        let db = self.db.clone();
        Some(Box::new(move |key| redb_get(&db, key)))
    }
}

/// LMDB through heed: a copy-on-write B-tree in one memory map; each commit is durable (fsync).
pub struct Lmdb {
    env: heed::Env<heed::WithoutTls>,
    table: heed::Database<heed::types::Bytes, heed::types::Bytes>,
}

impl Lmdb {
    /// Creates a fresh environment in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BenchError> {
        let path = dir.join("lmdb");
        std::fs::create_dir_all(&path)?;
        let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(LMDB_MAP_BYTES).max_dbs(1);
        // SAFETY: heed requires that one environment path is not opened twice in this process
        // and that the memory map is not modified from outside; `path` is a fresh directory
        // inside a temporary directory this benchmark alone created.
        #[allow(unsafe_code)]
        let env = unsafe { options.open(&path) }.map_err(|e| peer("lmdb open")(&e))?;
        let mut txn = env.write_txn().map_err(|e| peer("lmdb txn")(&e))?;
        let table = env
            .create_database(&mut txn, None)
            .map_err(|e| peer("lmdb db")(&e))?;
        txn.commit().map_err(|e| peer("lmdb commit")(&e))?;
        Ok(Self { env, table })
    }
}

struct LmdbBlock<'e> {
    txn: heed::RwTxn<'e>,
    table: heed::Database<heed::types::Bytes, heed::types::Bytes>,
}

impl BlockWriter for LmdbBlock<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        let found = self
            .table
            .get(&self.txn, key)
            .map_err(|e| peer("lmdb get")(&e))?;
        found.map(value8).transpose()
    }

    fn put(&mut self, key: &[u8], value: &[u8; 8]) -> Result<(), BenchError> {
        self.table
            .put(&mut self.txn, key, value)
            .map_err(|e| peer("lmdb put")(&e))
    }
}

fn lmdb_get(
    env: &heed::Env<heed::WithoutTls>,
    table: heed::Database<heed::types::Bytes, heed::types::Bytes>,
    key: &[u8],
) -> Result<Option<[u8; 8]>, BenchError> {
    let txn = env.read_txn().map_err(|e| peer("lmdb read")(&e))?;
    let found = table.get(&txn, key).map_err(|e| peer("lmdb get")(&e))?;
    found.map(value8).transpose()
}

impl Engine for Lmdb {
    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn block(
        &mut self,
        f: &mut dyn FnMut(&mut dyn BlockWriter) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let txn = self.env.write_txn().map_err(|e| peer("lmdb txn")(&e))?;
        let mut block = LmdbBlock {
            txn,
            table: self.table,
        };
        f(&mut block)?;
        block.txn.commit().map_err(|e| peer("lmdb commit")(&e))
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        lmdb_get(&self.env, self.table, key)
    }

    fn reader(&self) -> Option<Reader> {
        let (env, table) = (self.env.clone(), self.table);
        Some(Box::new(move |key| lmdb_get(&env, table, key)))
    }
}

/// fjall, a log-structured merge tree; each block is one write batch synced to its journal.
pub struct Fjall {
    db: fjall::Database,
    tree: fjall::Keyspace,
}

impl Fjall {
    /// Creates a fresh database in `dir` with a `cache`-byte block cache.
    pub fn open(dir: &Path, cache: usize) -> Result<Self, BenchError> {
        let db = fjall::Database::builder(dir.join("fjall"))
            .cache_size(cache as u64)
            .open()
            .map_err(|e| peer("fjall open")(&e))?;
        let tree = db
            .keyspace("state", fjall::KeyspaceCreateOptions::default)
            .map_err(|e| peer("fjall keyspace")(&e))?;
        Ok(Self { db, tree })
    }
}

/// fjall's batches cannot be read back, so the block keeps its own writes in an overlay.
struct FjallBlock<'a> {
    tree: &'a fjall::Keyspace,
    batch: fjall::OwnedWriteBatch,
    overlay: HashMap<[u8; 8], [u8; 8]>,
}

fn fjall_get(tree: &fjall::Keyspace, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
    let found = tree.get(key).map_err(|e| peer("fjall get")(&e))?;
    found.map(|v| value8(&v)).transpose()
}

impl BlockWriter for FjallBlock<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        match self.overlay.get(&key8(key)) {
            Some(v) => Ok(Some(*v)),
            None => fjall_get(self.tree, key),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8; 8]) -> Result<(), BenchError> {
        self.overlay.insert(key8(key), *value);
        self.batch.insert(self.tree, key.to_vec(), value.to_vec());
        Ok(())
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn block(
        &mut self,
        f: &mut dyn FnMut(&mut dyn BlockWriter) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let mut block = FjallBlock {
            tree: &self.tree,
            batch: self
                .db
                .batch()
                .durability(Some(fjall::PersistMode::SyncAll)),
            overlay: HashMap::new(),
        };
        f(&mut block)?;
        block.batch.commit().map_err(|e| peer("fjall commit")(&e))
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<[u8; 8]>, BenchError> {
        fjall_get(&self.tree, key)
    }

    fn reader(&self) -> Option<Reader> {
        let tree = self.tree.clone();
        Some(Box::new(move |key| fjall_get(&tree, key)))
    }

    fn settle(&mut self) -> Result<(), BenchError> {
        while self.db.outstanding_flushes() > 0 || self.db.active_compactions() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }
}

/// Opens the engine called `name` in `dir`.
pub fn open(name: &str, dir: &Path) -> Result<Box<dyn Engine>, BenchError> {
    open_capped(name, dir, None)
}

/// Opens engine `name` in `dir`; with `memory`, the engine's cache (Peregrine: its memory
/// budget) is that many bytes instead of the default.
pub fn open_capped(
    name: &str,
    dir: &Path,
    memory: Option<u64>,
) -> Result<Box<dyn Engine>, BenchError> {
    let cache = memory.map_or(PEER_CACHE_BYTES, |m| m as usize);
    Ok(match name {
        "btreemap" => Box::new(BTree::default()),
        "peregrine" => Box::new(Peregrine::open(dir, memory)?),
        "redb" => Box::new(Redb::open(dir, cache)?),
        "lmdb" => Box::new(Lmdb::open(dir)?),
        "fjall" => Box::new(Fjall::open(dir, cache)?),
        other => return Err(BenchError::Load(format!("unknown engine {other}"))),
    })
}

/// Every engine, the reference first.
pub const ENGINES: [&str; 5] = ["btreemap", "peregrine", "redb", "lmdb", "fjall"];
