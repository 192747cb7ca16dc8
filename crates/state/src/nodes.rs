//! The node file: trie nodes written by checkpoints, read back on demand.
//!
//! `state.nodes` starts with an 8-byte magic, then holds records `[len u32 LE][payload]`, appended
//! and never rewritten. A node's location is the offset of its record (so 0 never is one).
//! Payloads:
//! - leaf: `0x01 ‖ key length u16 ‖ key ‖ value`;
//! - branch: `0x02 ‖ pos u16 ‖ mask u32 ‖ inline mask u32 ‖ prefix length u16 ‖ prefix`, then
//!   per occupied slot, in slot order:
//!   - an inline leaf: `key length u8 ‖ value length u8 ‖ key ‖ value`;
//!   - a child node: `location u64 ‖ hash [32]`.
//!
//! Inline leaves are stored in their branch's record, without their hashes: loading the branch
//! recomputes them, and the branch's own hash check covers them.
//!
//! Records carry no checksum of their own: every node is reached from its parent, which holds the
//! child's hash, and a loaded node is rehashed and compared with it, so damage anywhere is caught
//! on the way down from a root whose hash the root file ([`crate::root`]) protects.
//!
//! A checkpoint writes, children first, every node of one finalized tree that is not in the file
//! yet, syncs once, and only then records the new locations in the nodes, so a location is never
//! visible before its bytes are readable.

use crate::trie::{Child, Hash32, Inline, Node, Slot, Slots};
use crate::{Bytes, Error};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"PGNODES2";
const NODES_FILE: &str = "state.nodes";
/// Bytes read speculatively per load: a whole branch or a small leaf in one system call.
const FIRST_READ: usize = 1024;
/// Largest record accepted: a leaf with a maximal key and value, with room to spare.
const MAX_RECORD: usize = 2 << 20;

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { what }
}

/// The node file, shared by every snapshot that may need to load a node.
pub struct NodeFile {
    file: File,
}

impl NodeFile {
    /// Opens (creating if needed) the node file in `dir`; returns it and its length.
    pub fn open(dir: &Path) -> Result<(Self, u64), Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(NODES_FILE))
            .map_err(io("open state node file"))?;
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
        Ok((Self { file }, len))
    }

    /// Loads the node at `loc` and checks it against the hash its parent holds.
    pub fn load(&self, loc: u64, expected: &Hash32) -> Result<Node, Error> {
        let mut buf = vec![0u8; FIRST_READ];
        let read = read_some(&self.file, &mut buf, loc)?;
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
                .read_exact_at(&mut buf[read..], loc + read as u64)
                .map_err(io("read state node"))?;
        }
        check(decode(&buf[4..4 + len], loc)?, expected)
    }

    /// `root`'s tree with nodes loaded down to `depth`. When the whole file fits in `budget`, it
    /// is read once, sequentially, instead of one read per node.
    pub fn preload(&self, root: &Node, depth: usize, budget: u64) -> Result<Node, Error> {
        let len = self
            .file
            .metadata()
            .map_err(io("stat state node file"))?
            .len();
        if len > budget {
            return crate::trie::preload(root, 0, depth, &|loc, hash| self.load(loc, hash));
        }
        let mut image = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut image, 0)
            .map_err(io("read state node file"))?;
        crate::trie::preload(root, 0, depth, &|loc, hash| {
            let record = image
                .get(loc as usize..)
                .filter(|r| r.len() >= 4)
                .ok_or(corrupt("node location past the end of the file"))?;
            let len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as usize;
            let payload = record
                .get(4..4 + len)
                .ok_or(corrupt("node record cut short"))?;
            check(decode(payload, loc)?, hash)
        })
    }

    /// Appends every unpersisted node of `root`'s tree at `end`, syncs, then records their
    /// locations. Returns the root's location and the new end of the file.
    pub fn write_tree(&self, root: &Node, end: u64) -> Result<(u64, u64), Error> {
        let mut writer = Appender {
            out: BufWriter::with_capacity(
                1 << 20,
                FileAt {
                    file: &self.file,
                    at: end,
                },
            ),
            offset: end,
            written: Vec::new(),
        };
        let root_loc = writer.persist(root)?;
        let Appender {
            out,
            offset,
            written,
        } = writer;
        out.into_inner().map_err(|e| Error::Io {
            context: "write state nodes",
            source: e.into_error(),
        })?;
        self.file.sync_data().map_err(io("fsync state node file"))?;
        for (node, loc) in written {
            node.set_location(loc);
        }
        Ok((root_loc, offset))
    }
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

struct Appender<'a> {
    out: BufWriter<FileAt<'a>>,
    offset: u64,
    written: Vec<(Node, u64)>,
}

impl Appender<'_> {
    /// Writes `node`'s unpersisted subtree, children first; returns its location.
    fn persist(&mut self, node: &Node) -> Result<u64, Error> {
        let loc = node.location();
        if loc != 0 {
            return Ok(loc);
        }
        let len = match node {
            Node::Stub(_) => unreachable!("a stub always has a location"),
            Node::Leaf(leaf) => {
                let len = 1 + 2 + leaf.data.len();
                self.record(len, &[&[1], &leaf.key_len.to_le_bytes(), &leaf.data])?;
                len
            }
            Node::Branch(_, b) => {
                // Read every child node's location first, with independent loads, so the misses
                // overlap; then write the children that are not in the file yet.
                let mut locs: [u64; 17] = [0; 17];
                for (slot, child) in b.node_slots() {
                    locs[slot] = child.location();
                }
                for (slot, child) in b.node_slots() {
                    if locs[slot] == 0 {
                        locs[slot] = self.persist(child)?;
                    }
                }
                let slots_len: usize = b
                    .slots()
                    .map(|(_, child)| match child {
                        Slot::Node(_) => 8 + 32,
                        Slot::Inline(leaf) => 2 + leaf.entry().0.len() + leaf.entry().1.len(),
                    })
                    .sum();
                let len = 1 + 2 + 4 + 4 + 2 + b.prefix.len() + slots_len;
                let prefix_len = (b.prefix.len() as u16).to_le_bytes();
                let header: [&[u8]; 6] = [
                    &[2],
                    &b.pos.to_le_bytes(),
                    &b.mask.to_le_bytes(),
                    &b.inline_mask.to_le_bytes(),
                    &prefix_len,
                    &b.prefix,
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
        let loc = self.offset;
        self.offset += 4 + len as u64;
        self.written.push((node.clone(), loc));
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

fn decode(payload: &[u8], loc: u64) -> Result<Node, Error> {
    let mut cur = Cursor(payload);
    match cur.take(1)?[0] {
        1 => {
            let key_len = cur.u16()?;
            if cur.0.len() < key_len as usize {
                return Err(corrupt("leaf key longer than its record"));
            }
            Ok(Node::decoded_leaf(cur.0, key_len, loc))
        }
        2 => {
            let pos = cur.u16()?;
            let mask = cur.u32()?;
            let inline_mask = cur.u32()?;
            let prefix_len = cur.u16()? as usize;
            let prefix = Bytes::from_slice(cur.take(prefix_len)?);
            if mask >> 17 != 0 || mask.count_ones() < 2 || inline_mask & !mask != 0 {
                return Err(corrupt("branch with an invalid slot mask"));
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
                    slots.push((slot, Child::Node(Node::stub(hash, loc))));
                }
            }
            if !cur.0.is_empty() {
                return Err(corrupt("branch record has trailing bytes"));
            }
            Ok(Node::decoded_branch(pos, prefix, &slots, loc))
        }
        _ => Err(corrupt("node record of unknown kind")),
    }
}
