//! The node file: trie nodes written by checkpoints, read back on demand, compacted now and then.
//!
//! A node file starts with an 8-byte magic, then holds records `[len u32 LE][payload]`, appended
//! and never rewritten. A node's location is the offset of its record (so 0 never is one), with
//! the file's generation tag (its number's low 16 bits) in the top 16 bits.
//! Payloads:
//! - leaf: `0x01 ‖ key length u16 ‖ key ‖ value`;
//! - branch: `0x02 ‖ pos u16 ‖ mask u32 ‖ inline mask u32 ‖ prefix length u16 ‖ prefix ‖ prefix
//!   check [4]`, then per occupied slot, in slot order:
//!   - an inline leaf: `key length u8 ‖ value length u8 ‖ key ‖ value`;
//!   - a child node: `location u64 ‖ hash [32]`.
//!
//! Inline leaves are stored in their branch's record, without their hashes: loading the branch
//! recomputes them, and the branch's own hash check covers them.
//!
//! Records carry no checksum of their own: every node is reached from its parent, which holds the
//! child's hash, and a loaded node is rehashed and compared with it, so damage anywhere is caught
//! on the way down from a root whose hash the root file ([`crate::root`]) protects. The one part
//! of a record its hash does not cover is a branch's prefix (the commitment needs no key bytes
//! above the leaves, which hold whole keys), yet a commit trusts it to decide where a write
//! leaves the branch; so the prefix carries a check of its own: the first four bytes of its
//! BLAKE3 hash (zeros for an empty prefix).
//!
//! A checkpoint writes, children first, every node of one finalized tree that is not in the file
//! yet, syncs once, and only then records the new locations in the nodes, so a location is never
//! visible before its bytes are readable.
//!
//! # Generations and compaction
//! Appending never reclaims the nodes that later checkpoints replaced, so now and then a
//! checkpoint **compacts** instead: it writes the whole finalized tree into a new file, generation
//! `n + 1` (`state.nodes.<n+1>`; generation 0 is `state.nodes`), syncs it, and only then names it
//! in the root file ([`crate::root`]). Then the old file is unlinked and every node of the tree
//! records its new location. A crash before the root names the new file leaves the old one in
//! charge; opening removes every node file the root does not name.
//!
//! Nodes in memory may still point into an older generation: stubs of snapshots taken before the
//! compaction, and nodes a commit loaded while it ran. A stub holds its file open (a
//! [`GenFile`] handle), so an unlinked generation stays readable until its last stub is dropped,
//! and its disk space is reclaimed then. A checkpoint treats a node located in any generation but
//! the current one as not yet written, and writes it again, so a durable tree only ever points
//! into its own file.

use crate::trie::{Child, Hash32, Inline, Node, Slot, Slots, Stub};
use crate::{Bytes, Error};
use parking_lot::{Mutex, RwLock};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version 3: branch hashes cover their encoding padded to a multiple of 64 bytes (2026-11-23),
/// so the hashes stored by version 2 no longer verify. Version 5: buckets ([`crate::bucket`],
/// 2026-11-24): a tree of version 4 has small branches where the shape now has buckets.
/// Version 6: a branch record checks its prefix (2026-11-24).
const MAGIC: &[u8; 8] = b"PGNODES6";
const NODES_FILE: &str = "state.nodes";
/// Bytes read speculatively per load: a whole branch or a small leaf in one system call.
const FIRST_READ: usize = 1024;
/// Largest record accepted: a leaf with a maximal key and value, with room to spare.
const MAX_RECORD: usize = 2 << 20;
/// A location's offset bits; the generation tag sits above them.
const OFFSET_BITS: u32 = 48;

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { what }
}

/// The file name of generation `number`.
fn file_name(number: u64) -> String {
    match number {
        0 => NODES_FILE.to_string(),
        n => format!("{NODES_FILE}.{n}"),
    }
}

/// One generation of the node file, open for as long as a node in memory may point into it.
pub struct GenFile {
    number: u64,
    file: File,
}

impl GenFile {
    /// Opens generation `number` in `dir`, creating it (with its header) if `create`; returns it
    /// and its length.
    fn open(dir: &Path, number: u64, create: bool) -> Result<(Self, u64), Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(dir.join(file_name(number)))
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => {
                    corrupt("the node file the state root names is missing")
                }
                _ => Error::Io {
                    context: "open state node file",
                    source,
                },
            })?;
        let mut len = file.metadata().map_err(io("stat state node file"))?.len();
        if len < MAGIC.len() as u64 {
            file.set_len(0).map_err(io("reset state node file"))?;
            file.write_all_at(MAGIC, 0)
                .map_err(io("write state node file header"))?;
            len = MAGIC.len() as u64;
        } else {
            let mut magic = [0u8; 8];
            file.read_exact_at(&mut magic, 0)
                .map_err(io("read state node file header"))?;
            if magic[..7] == MAGIC[..7] && magic != *MAGIC {
                return Err(corrupt(
                    "state node file is of another format version than this build reads \
                     (move the data directory away to start a new one)",
                ));
            }
            if &magic != MAGIC {
                return Err(corrupt("state node file has a wrong header"));
            }
        }
        Ok((Self { number, file }, len))
    }

    /// This generation's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    fn tag(&self) -> u64 {
        self.number & 0xFFFF
    }

    /// The location of the record at `offset` in this file.
    fn location(&self, offset: u64) -> u64 {
        self.tag() << OFFSET_BITS | offset
    }

    /// Whether `loc` is a location in this file.
    pub(crate) fn holds(&self, loc: u64) -> bool {
        loc != 0 && loc >> OFFSET_BITS == self.tag()
    }

    /// Loads the node at `loc` and checks it against the hash its parent holds.
    pub(crate) fn load(self: &Arc<Self>, loc: u64, expected: &Hash32) -> Result<Node, Error> {
        if !self.holds(loc) {
            return Err(corrupt(
                "node location in another generation of the node file",
            ));
        }
        let at = loc & ((1 << OFFSET_BITS) - 1);
        let mut buf = vec![0u8; FIRST_READ];
        let read = read_some(&self.file, &mut buf, at)?;
        if read < 4 {
            return Err(corrupt("node record cut short"));
        }
        let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD {
            return Err(corrupt("node record too long"));
        }
        if len + 4 > read {
            buf.resize(len + 4, 0);
            self.file
                .read_exact_at(&mut buf[read..], at + read as u64)
                .map_err(io("read state node"))?;
        }
        check(decode(&buf[4..4 + len], loc, self)?, expected)
    }

    /// `root`'s tree with nodes loaded down to `depth`. When the whole file fits in `budget`, it
    /// is read once, sequentially, instead of one read per node.
    fn preload(self: &Arc<Self>, root: &Node, depth: usize, budget: u64) -> Result<Node, Error> {
        let len = self
            .file
            .metadata()
            .map_err(io("stat state node file"))?
            .len();
        if len > budget {
            return crate::trie::preload(root, 0, depth, &|stub: &Stub| stub.load());
        }
        let mut image = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut image, 0)
            .map_err(io("read state node file"))?;
        crate::trie::preload(root, 0, depth, &|stub: &Stub| {
            let (loc, file) = stub.place();
            if file.number != self.number {
                return stub.load();
            }
            let at = (loc & ((1 << OFFSET_BITS) - 1)) as usize;
            let record = image
                .get(at..)
                .filter(|r| r.len() >= 4)
                .ok_or(corrupt("node location past the end of the file"))?;
            let len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as usize;
            let payload = record
                .get(4..4 + len)
                .ok_or(corrupt("node record cut short"))?;
            check(decode(payload, loc, self)?, stub.hash())
        })
    }
}

/// A compacted tree in a new generation file, synced but not yet in charge.
pub struct Compacted {
    file: Arc<GenFile>,
    /// The root's location.
    pub loc: u64,
    /// The new file's length.
    pub end: u64,
    written: Vec<(Node, u64)>,
}

impl Compacted {
    /// The new generation's number.
    pub fn number(&self) -> u64 {
        self.file.number
    }
}

/// The node file: its current generation, where checkpoints append.
pub struct NodeFile {
    dir: PathBuf,
    current: RwLock<Arc<GenFile>>,
    /// The memory of the last checkpoint's list of written nodes, for the next one: that list
    /// holds an entry for every node a checkpoint writes (about 1.5 million, 24 MB, at 10M random
    /// keys), and growing it afresh each time took fresh pages that the kernel zeroed (2% of all
    /// samples while loading 10M random keys).
    spare: Mutex<Vec<(&'static Node, u64)>>,
}

impl NodeFile {
    /// Opens generation `number` in `dir` (generation 0 is created if missing) and removes every
    /// other generation's file, left by a compaction a crash cut short or by one whose old file
    /// was not yet removed. Returns the file and its length.
    pub fn open(dir: &Path, number: u64) -> Result<(Self, u64), Error> {
        let (file, len) = GenFile::open(dir, number, number == 0)?;
        remove_other_generations(dir, number)?;
        let file = Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(file)),
            spare: Mutex::new(Vec::new()),
        };
        Ok((file, len))
    }

    /// The generation checkpoints append to.
    pub fn current(&self) -> Arc<GenFile> {
        self.current.read().clone()
    }

    /// A stub for the node at `loc` in the current generation.
    pub fn stub(&self, hash: Hash32, loc: u64) -> Node {
        Node::stub(hash, loc, self.current())
    }

    /// `root`'s tree with nodes loaded down to `depth`, read from the current generation.
    pub fn preload(&self, root: &Node, depth: usize, budget: u64) -> Result<Node, Error> {
        self.current().preload(root, depth, budget)
    }

    /// Appends every node of `root`'s tree that the current generation does not hold at `end`,
    /// syncs, then records their locations. Returns the root's location and the new end of the
    /// file.
    pub fn write_tree(&self, root: &Node, end: u64) -> Result<(u64, u64), Error> {
        let file = self.current();
        let spare = emptied(std::mem::take(&mut *self.spare.lock()));
        let written = write_tree(&file, root, end, spare)?;
        for &(node, loc) in &written.nodes {
            node.set_location(loc, &file);
        }
        *self.spare.lock() = emptied(written.nodes);
        Ok((written.loc, written.end))
    }

    /// Writes all of `root`'s tree into a new generation's file and syncs it and the directory.
    /// The current generation stays in charge until [`NodeFile::install`].
    pub fn compact(&self, root: &Node) -> Result<Compacted, Error> {
        let number = self.current.read().number + 1;
        let path = self.dir.join(file_name(number));
        // A leftover of a compaction that a crash or an error cut short.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io {
                    context: "remove a stale state node file",
                    source: e,
                })
            }
            _ => {}
        }
        let (file, len) = GenFile::open(&self.dir, number, true)?;
        let file = Arc::new(file);
        let Written { loc, end, nodes } = write_tree(&file, root, len, Vec::new())?;
        sync_dir(&self.dir)?;
        // Installed later, when the caller may no longer hold this tree: each node counted.
        let written = nodes.into_iter().map(|(n, loc)| (n.clone(), loc)).collect();
        Ok(Compacted {
            file,
            loc,
            end,
            written,
        })
    }

    /// Puts a compacted generation in charge, once the root file names it: checkpoints append to
    /// it, the tree's nodes record their new locations, and the old file is unlinked (stubs that
    /// still point into it keep it readable until they are dropped).
    pub fn install(&self, compacted: Compacted) -> Result<(), Error> {
        let Compacted { file, written, .. } = compacted;
        let old = std::mem::replace(&mut *self.current.write(), file.clone());
        for (node, loc) in written {
            node.set_location(loc, &file);
        }
        std::fs::remove_file(self.dir.join(file_name(old.number)))
            .map_err(io("remove the compacted state node file"))
    }
}

/// `list` emptied, its memory kept, as a list of node references of another lifetime: no
/// reference crosses over (collecting an emptied `Vec` through `map` reuses its allocation).
fn emptied<'b>(mut list: Vec<(&Node, u64)>) -> Vec<(&'b Node, u64)> {
    list.clear();
    list.into_iter()
        .map(|_| unreachable!("the list is empty"))
        .collect()
}

/// Removes every node file in `dir` but generation `keep`'s.
fn remove_other_generations(dir: &Path, keep: u64) -> Result<(), Error> {
    let keep = file_name(keep);
    let entries = std::fs::read_dir(dir).map_err(io("list state directory"))?;
    for entry in entries {
        let name = entry.map_err(io("list state directory"))?.file_name();
        let Some(name) = name.to_str() else { continue };
        let generation = name == NODES_FILE
            || name
                .strip_prefix(NODES_FILE)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if generation && name != keep {
            std::fs::remove_file(dir.join(name)).map_err(io("remove an old state node file"))?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync state directory"))
}

/// What [`write_tree`] wrote.
struct Written<'t> {
    /// The root's location.
    loc: u64,
    /// The new end of the file.
    end: u64,
    /// The written nodes of the tree with their locations, not yet recorded in them: borrowed
    /// from the tree, which the caller holds until they are recorded, so a checkpoint neither
    /// counts a reference to each new node nor gives it back.
    nodes: Vec<(&'t Node, u64)>,
}

/// Appends at `end` of `file` every node of `root`'s tree that `file` does not hold, and syncs.
/// `spare`: an empty list whose memory the written nodes' list reuses.
fn write_tree<'t>(
    file: &Arc<GenFile>,
    root: &'t Node,
    end: u64,
    spare: Vec<(&'t Node, u64)>,
) -> Result<Written<'t>, Error> {
    let mut writer = Appender {
        out: BufWriter::with_capacity(
            1 << 20,
            FileAt {
                file: &file.file,
                at: end,
            },
        ),
        target: file,
        offset: end,
        written: spare,
    };
    let root_loc = writer.persist(root)?;
    let Appender {
        out,
        offset,
        written,
        ..
    } = writer;
    out.into_inner().map_err(|e| Error::Io {
        context: "write state nodes",
        source: e.into_error(),
    })?;
    file.file.sync_data().map_err(io("fsync state node file"))?;
    Ok(Written {
        loc: root_loc,
        end: offset,
        nodes: written,
    })
}

fn check(node: Node, expected: &Hash32) -> Result<Node, Error> {
    if node.hash() != expected {
        return Err(corrupt("node does not match its hash"));
    }
    Ok(node)
}

fn read_some(file: &File, buf: &mut [u8], at: u64) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: "read state node",
                    source: e,
                })
            }
        }
    }
    Ok(filled)
}

/// A `Write` at a moving offset of a shared file.
struct FileAt<'a> {
    file: &'a File,
    at: u64,
}

impl Write for FileAt<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.at)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Appender<'a, 't> {
    out: BufWriter<FileAt<'a>>,
    /// The generation written to: a node located anywhere else is written again.
    target: &'a GenFile,
    offset: u64,
    /// The nodes of the tree written, to record their locations once synced.
    written: Vec<(&'t Node, u64)>,
}

impl<'t> Appender<'_, 't> {
    /// Writes the subtree of `node`, a node of the tree being written, where the target
    /// generation does not hold it, children first, and remembers each node it writes, to
    /// record its location once synced; returns its location.
    fn persist(&mut self, node: &'t Node) -> Result<u64, Error> {
        let loc = node.location();
        if self.target.holds(loc) {
            return Ok(loc);
        }
        let loc = match node {
            // A node of an older generation: copied through a temporary load.
            Node::Stub(stub) => self.copy(&stub.load()?)?,
            _ => self.put(node, |this, child| this.persist(child))?,
        };
        self.written.push((node, loc));
        Ok(loc)
    }

    /// Writes the subtree of `node`, loaded only to be copied, where the target generation does
    /// not hold it; nothing else refers to these nodes, so none is remembered.
    fn copy(&mut self, node: &Node) -> Result<u64, Error> {
        let loc = node.location();
        if self.target.holds(loc) {
            return Ok(loc);
        }
        match node {
            Node::Stub(stub) => self.copy(&stub.load()?),
            _ => self.put(node, |this, child| this.copy(child)),
        }
    }

    /// Writes `node`'s record (a leaf or a branch), its child nodes first through `child`, which
    /// returns where each is; returns the record's location.
    fn put<'n>(
        &mut self,
        node: &'n Node,
        mut child: impl FnMut(&mut Self, &'n Node) -> Result<u64, Error>,
    ) -> Result<u64, Error> {
        let len = match node {
            Node::Stub(_) => unreachable!("stubs are loaded before they are written"),
            Node::Leaf(leaf) => {
                let len = 1 + 2 + leaf.data.len();
                let kind = [LEAF_RECORD];
                self.record(len, &[&kind, &leaf.key_len.to_le_bytes(), &leaf.data])?;
                len
            }
            Node::Branch(_, b) => {
                // Read every child node's location first, with independent loads, so the misses
                // overlap; then write the children that are not in the file yet.
                let mut locs: [u64; 17] = [0; 17];
                for (slot, node) in b.node_slots() {
                    locs[slot] = node.location();
                }
                for (slot, node) in b.node_slots() {
                    if !self.target.holds(locs[slot]) {
                        locs[slot] = child(self, node)?;
                    }
                }
                let slots_len: usize = b
                    .slots()
                    .map(|(_, child)| match child {
                        Slot::Node(_) => 8 + 32,
                        Slot::Inline(leaf) => 2 + leaf.entry().0.len() + leaf.entry().1.len(),
                    })
                    .sum();
                let len = BRANCH_HEAD + b.prefix.len() + PREFIX_CHECK + slots_len;
                let prefix_len = (b.prefix.len() as u16).to_le_bytes();
                let header: [&[u8]; 7] = [
                    &[BRANCH_RECORD],
                    &b.pos.to_le_bytes(),
                    &b.mask.to_le_bytes(),
                    &b.inline_mask.to_le_bytes(),
                    &prefix_len,
                    &b.prefix,
                    &prefix_check(&b.prefix),
                ];
                self.record(len, &header)?;
                for (slot, child) in b.slots() {
                    match child {
                        Slot::Node(node) => {
                            self.write(&locs[slot].to_le_bytes())?;
                            self.write(node.hash())?;
                        }
                        Slot::Inline(leaf) => {
                            let (key, value) = leaf.entry();
                            self.write(&[key.len() as u8, value.len() as u8])?;
                            self.write(key)?;
                            self.write(value)?;
                        }
                    }
                }
                len
            }
        };
        let loc = self.target.location(self.offset);
        self.offset += 4 + len as u64;
        Ok(loc)
    }

    /// Starts a record of `len` payload bytes with `parts` (the rest follows through `write`).
    fn record(&mut self, len: usize, parts: &[&[u8]]) -> Result<(), Error> {
        self.write(&(len as u32).to_le_bytes())?;
        parts.iter().try_for_each(|part| self.write(part))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).map_err(io("write state nodes"))
    }
}

/// Bytes of a branch record before its prefix: kind, `pos`, both masks, the prefix's length.
const BRANCH_HEAD: usize = 1 + 2 + 4 + 4 + 2;

/// The first byte of a leaf node's record.
const LEAF_RECORD: u8 = 1;

/// The first byte of a branch's (or bucket's) record.
const BRANCH_RECORD: u8 = 2;
/// Bytes of a branch record's prefix check.
const PREFIX_CHECK: usize = 4;

/// Where the node file `file` holds the first byte of each non-empty branch prefix, for tests
/// that damage one.
#[cfg(test)]
pub(crate) fn prefix_offsets(file: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = MAGIC.len();
    std::iter::from_fn(move || {
        while at + 4 + BRANCH_HEAD < file.len() {
            let record = at + 4;
            let len = u32::from_le_bytes(file[at..record].try_into().expect("4 bytes")) as usize;
            at = record + len;
            let payload = &file[record..];
            let prefix_len =
                u16::from_le_bytes([payload[BRANCH_HEAD - 2], payload[BRANCH_HEAD - 1]]);
            if payload[0] == BRANCH_RECORD && prefix_len > 0 {
                return Some(record + BRANCH_HEAD);
            }
        }
        None
    })
}

/// The check a branch record keeps of its prefix: the first bytes of its BLAKE3 hash, or zeros
/// for an empty one (a bucket's, or the root's at position 0).
fn prefix_check(prefix: &[u8]) -> [u8; PREFIX_CHECK] {
    let mut check = [0; PREFIX_CHECK];
    if !prefix.is_empty() {
        check.copy_from_slice(&blake3::hash(prefix).as_bytes()[..PREFIX_CHECK]);
    }
    check
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(corrupt("node record cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// The node in `payload`, read from `file` at `loc`; its child nodes are stubs into `file`.
fn decode(payload: &[u8], loc: u64, file: &Arc<GenFile>) -> Result<Node, Error> {
    let mut cur = Cursor(payload);
    match cur.take(1)?[0] {
        LEAF_RECORD => {
            let key_len = cur.u16()?;
            if cur.0.len() < key_len as usize {
                return Err(corrupt("leaf key longer than its record"));
            }
            Ok(Node::decoded_leaf(cur.0, key_len, loc))
        }
        BRANCH_RECORD => {
            let pos = cur.u16()?;
            let mask = cur.u32()?;
            let inline_mask = cur.u32()?;
            let prefix_len = cur.u16()? as usize;
            let prefix = Bytes::from_slice(cur.take(prefix_len)?);
            if cur.take(PREFIX_CHECK)? != prefix_check(&prefix) {
                return Err(corrupt("branch prefix fails its check"));
            }
            if mask >> 17 != 0 || mask.count_ones() < 2 || inline_mask & !mask != 0 {
                return Err(corrupt("branch with an invalid slot mask"));
            }
            let bucket = pos == crate::bucket::BUCKET;
            if bucket && (inline_mask != mask || mask & (mask + 1) != 0 || prefix_len != 0) {
                return Err(corrupt("bucket with an invalid slot mask"));
            }
            if !bucket && prefix_len != usize::from(pos).div_ceil(2) {
                return Err(corrupt(
                    "branch prefix of another length than its position needs",
                ));
            }
            let mut slots = Slots::new();
            for slot in (0..17).filter(|s| mask & (1 << s) != 0) {
                if inline_mask & (1 << slot) != 0 {
                    let lens = cur.take(2)?;
                    let key = cur.take(usize::from(lens[0]))?;
                    let value = cur.take(usize::from(lens[1]))?;
                    let leaf = Inline::new(key, value).ok_or(corrupt("inline leaf too long"))?;
                    slots.push((slot, Child::Inline(leaf)));
                } else {
                    let loc = u64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes"));
                    let hash: Hash32 = cur.take(32)?.try_into().expect("32 bytes");
                    if !file.holds(loc) {
                        return Err(corrupt("child node located outside its parent's file"));
                    }
                    slots.push((slot, Child::Node(Node::stub(hash, loc, file.clone()))));
                }
            }
            if !cur.0.is_empty() {
                return Err(corrupt("branch record has trailing bytes"));
            }
            Ok(Node::decoded_branch(pos, prefix, slots, loc))
        }
        _ => Err(corrupt("node record of unknown kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::BUCKET;

    fn file() -> (tempfile::TempDir, Arc<GenFile>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (file, _) = GenFile::open(dir.path(), 0, true).expect("node file");
        (dir, Arc::new(file))
    }

    /// A branch record's payload: its header, then `slots` as written (each already encoded).
    fn branch(pos: u16, mask: u32, inline_mask: u32, prefix: &[u8], slots: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![BRANCH_RECORD];
        out.extend_from_slice(&pos.to_le_bytes());
        out.extend_from_slice(&mask.to_le_bytes());
        out.extend_from_slice(&inline_mask.to_le_bytes());
        out.extend_from_slice(&(prefix.len() as u16).to_le_bytes());
        out.extend_from_slice(prefix);
        out.extend_from_slice(&prefix_check(prefix));
        for slot in slots {
            out.extend_from_slice(slot);
        }
        out
    }

    fn inline(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![key.len() as u8, value.len() as u8];
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    fn child(loc: u64) -> Vec<u8> {
        let mut out = loc.to_le_bytes().to_vec();
        out.extend_from_slice(&[7; 32]);
        out
    }

    fn what(result: Result<Node, Error>) -> &'static str {
        match result {
            Err(Error::Corrupt { what }) => what,
            Err(other) => panic!("not a corruption error: {other}"),
            Ok(_) => panic!("a malformed record decoded"),
        }
    }

    /// Every way a record can be malformed is a typed corruption error naming what is wrong,
    /// never a panic and never a node: records that are cut short or run on, branches whose masks
    /// cannot be, whose prefix is not the `ceil(pos / 2)` bytes their position needs or fails its
    /// check, buckets (`pos` 4095) whose slots are not all inline and contiguous or that claim a
    /// prefix, inline leaves too long to be inline, children placed outside the file.
    #[test]
    fn malformed_node_records_are_typed_corruption() {
        let (_dir, file) = file();
        let here = file.location(8);
        let a = inline(b"key-a", b"1");
        let b = inline(b"key-b", b"2");
        let c = inline(b"key-c", b"3");
        let mut records: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "node record cut short"),
            (vec![9, 0, 0], "node record of unknown kind"),
            (
                vec![LEAF_RECORD, 5, 0, b'k'],
                "leaf key longer than its record",
            ),
            (vec![BRANCH_RECORD, 4, 0, 0b11], "node record cut short"),
            (
                branch(4, 0b1, 0b1, b"ab", std::slice::from_ref(&a)),
                "branch with an invalid slot mask",
            ),
            (
                branch(4, 1 << 17 | 0b11, 0b11, b"ab", &[a.clone(), b.clone()]),
                "branch with an invalid slot mask",
            ),
            (
                branch(4, 0b11, 0b111, b"ab", &[a.clone(), b.clone()]),
                "branch with an invalid slot mask",
            ),
            (
                branch(4, 0b11, 0b11, b"ab", std::slice::from_ref(&a)),
                "node record cut short",
            ),
            (
                branch(4, 0b11, 0b11, b"abc", &[a.clone(), b.clone()]),
                "branch prefix of another length than its position needs",
            ),
            (
                branch(5, 0b11, 0b11, b"ab", &[a.clone(), b.clone()]),
                "branch prefix of another length than its position needs",
            ),
            (
                branch(4, 0b11, 0b11, b"ab", &[a.clone(), b.clone(), vec![0]]),
                "branch record has trailing bytes",
            ),
            (
                branch(
                    4,
                    0b11,
                    0b11,
                    b"ab",
                    &[a.clone(), inline(&[b'k'; 40], &[1; 8])],
                ),
                "inline leaf too long",
            ),
            (
                branch(4, 0b11, 0b01, b"ab", &[a.clone(), child(1 << 60 | 8)]),
                "child node located outside its parent's file",
            ),
            (
                branch(4, 0b11, 0b01, b"ab", &[a.clone(), child(0)]),
                "child node located outside its parent's file",
            ),
            (
                branch(
                    BUCKET,
                    0b111,
                    0b011,
                    b"",
                    &[a.clone(), b.clone(), child(here)],
                ),
                "bucket with an invalid slot mask",
            ),
            (
                branch(
                    BUCKET,
                    0b1011,
                    0b1011,
                    b"",
                    &[a.clone(), b.clone(), c.clone()],
                ),
                "bucket with an invalid slot mask",
            ),
            (
                branch(
                    BUCKET,
                    0b111,
                    0b111,
                    b"k",
                    &[a.clone(), b.clone(), c.clone()],
                ),
                "bucket with an invalid slot mask",
            ),
        ];
        let mut moved = branch(4, 0b11, 0b11, b"ab", &[a.clone(), b.clone()]);
        moved[BRANCH_HEAD] ^= 1;
        records.push((moved, "branch prefix fails its check"));
        let mut unchecked = branch(
            BUCKET,
            0b111,
            0b111,
            b"",
            &[a.clone(), b.clone(), c.clone()],
        );
        unchecked[BRANCH_HEAD] = 1;
        records.push((unchecked, "branch prefix fails its check"));
        for (payload, expected) in records {
            assert_eq!(what(decode(&payload, here, &file)), expected, "{payload:?}");
        }
    }

    /// A well-formed record whose bytes are not the node its parent names (a bucket with its
    /// records out of key order, or too few of them to be one; a value changed) decodes, and
    /// the hash check that every load makes refuses it.
    #[test]
    fn a_record_that_is_not_the_named_node_fails_its_hash_check() {
        let (_dir, file) = file();
        let here = file.location(8);
        let (a, b, c) = (
            inline(b"key-a", b"1"),
            inline(b"key-b", b"2"),
            inline(b"key-c", b"3"),
        );
        let good = branch(
            BUCKET,
            0b111,
            0b111,
            b"",
            &[a.clone(), b.clone(), c.clone()],
        );
        let hash = *decode(&good, here, &file).expect("a bucket").hash();
        assert!(check(decode(&good, here, &file).expect("a bucket"), &hash).is_ok());
        let others = [
            branch(
                BUCKET,
                0b111,
                0b111,
                b"",
                &[b.clone(), a.clone(), c.clone()],
            ),
            branch(BUCKET, 0b11, 0b11, b"", &[a.clone(), b.clone()]),
            branch(BUCKET, 0b111, 0b111, b"", &[a, b, inline(b"key-c", b"4")]),
        ];
        for other in others {
            let node = decode(&other, here, &file).expect("well-formed");
            assert_eq!(what(check(node, &hash)), "node does not match its hash");
        }
    }
}
