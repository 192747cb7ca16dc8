//! The copy-on-write Merkle radix trie that every revision is a root of.
//!
//! # Shape
//! Keys are read as nibbles (half-bytes). A key's nibble at position `i` is encoded as `1 + nibble`,
//! and every key ends with a terminator nibble `0`, so a key that is a prefix of another sorts and
//! branches first. A [`Kind::Branch`] splits on the nibble at position `pos`, the first position
//! where its keys differ, into up to 17 children (slot 0: the key that ends exactly there). A
//! [`Kind::Leaf`] holds a whole key and its value. The trie is path-compressed: a branch has at
//! least two children, so its depth is bounded by the number of keys and by the key length, and the
//! shape is a function of the key set alone, whatever the order of writes.
//!
//! # Sharing
//! Nodes are immutable and reference-counted. A commit copies only the nodes on the paths it
//! changes and shares every other subtree with its parent revision, so a revision, a fork and a
//! snapshot are one pointer, and no reader ever waits for the writer.
//!
//! # Commitment
//! Each node carries its BLAKE3 hash. A branch's is computed when the branch is built, bottom-up,
//! right after its children were read to copy them; a leaf's when its parent is built:
//! - leaf: `H(0x00 ‖ key length u16 LE ‖ key ‖ value)`;
//! - branch: `H(0x01 ‖ pos u16 LE ‖ slot mask u32 LE ‖ child hashes in slot order)`;
//! - the empty state: `H("peregrine v2 empty state")`.
//!
//! A revision's state commitment is its root's hash, updated in O(changed keys × depth). Inclusion
//! proofs are the branch nodes on a key's path with their siblings' hashes; the leaf binds the
//! whole key, so a verifier checks the key's nibble at each `pos` against the slot taken.
//!
//! # On disk
//! A [`Kind::Stub`] stands for a node that lives only in the node file: it has the node's hash and
//! location, and is loaded on demand (see [`crate::nodes`]). Loaded nodes are not cached in the
//! trie: the trie stays immutable, and the operating system's page cache keeps the hot pages.

use crate::nodes::NodeFile;
use crate::{Bytes, Error};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

/// A node hash.
pub type Hash32 = [u8; 32];

/// A key and its new value (`None`: deleted).
pub type Change = (Bytes, Option<Bytes>);

/// Writes below which a commit's subtrees are applied on one thread: splitting smaller batches
/// costs more in scheduling than it saves.
const PARALLEL_MIN_WRITES: usize = 2048;

/// A trie node: a cheap, cloneable handle to an immutable leaf, branch or stub.
#[derive(Clone)]
pub enum Node {
    /// A key and its value.
    Leaf(Arc<Leaf>),
    /// A split on one nibble, with the branch's `pos` beside the pointer (in what would be the
    /// enum's padding), so a lookup picks the child's slot before the branch is loaded and pays
    /// one cache miss per level instead of two.
    Branch(u16, Arc<Branch>),
    /// A node that is only in the node file.
    Stub(Arc<Stub>),
}

// A child slot is a tag, a branch's `pos` and a pointer in two words: the trie's memory and the
// read path's one-miss-per-level both depend on it.
const _: () = assert!(std::mem::size_of::<Option<Node>>() == 16);

/// A key and its value, stored together: `data[..key_len]` is the key. Laid out in field order,
/// so the hash sits right after the reference counts, in the line that `warm` loads.
#[repr(C)]
pub struct Leaf {
    hash: OnceLock<Hash32>,
    /// Where the node file holds this node; 0 until a checkpoint writes it.
    pub(crate) loc: AtomicU64,
    pub(crate) data: SmallVec<[u8; 48]>,
    pub(crate) key_len: u16,
}

/// A split on the nibble at `pos`.
///
/// The children sit inline, indexed by slot: finding a child is one load from the branch itself,
/// which the processor can issue together with the load of the branch's header. Laid out in
/// field order, so the hash sits right after the reference counts, in the line `warm` loads.
#[repr(C)]
pub struct Branch {
    /// Computed when the branch is built, from its children's: building is bottom-up, and the
    /// children were just read to copy them, so their hashes are in cache.
    hash: Hash32,
    /// Where the node file holds this node; 0 until a checkpoint writes it.
    pub(crate) loc: AtomicU64,
    /// The nibble position this branch splits on.
    pub(crate) pos: u16,
    /// Bit `s` is set when slot `s` holds a child.
    pub(crate) mask: u32,
    /// The first `ceil(pos / 2)` bytes of every key below.
    pub(crate) prefix: Bytes,
    /// The children by slot.
    pub(crate) children: [Option<Node>; 17],
}

/// A node that lives only in the node file, at `loc`.
pub struct Stub {
    hash: Hash32,
    loc: u64,
}

impl Leaf {
    /// The key and the value.
    pub(crate) fn entry(&self) -> (&[u8], &[u8]) {
        self.data.split_at(self.key_len as usize)
    }
}

impl Drop for Branch {
    /// Freeing a branch decrements every child's reference count: warm them all first, as a copy
    /// does, so the misses overlap instead of queueing behind one locked instruction each.
    fn drop(&mut self) {
        warm(self);
    }
}

impl Branch {
    /// The children in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().flatten()
    }

    /// A copy with other children (same slots) and the same hash and location: for trimming
    /// and loading, which change where nodes live, never what they hold.
    fn with_children(&self, children: [Option<Node>; 17]) -> Arc<Branch> {
        Arc::new(Branch {
            hash: self.hash,
            loc: AtomicU64::new(self.loc.load(AtomicOrdering::Acquire)),
            pos: self.pos,
            mask: self.mask,
            prefix: self.prefix.clone(),
            children,
        })
    }
}

impl Node {
    pub(crate) fn leaf(key: &[u8], value: &[u8]) -> Node {
        let mut data = SmallVec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Node::Leaf(Arc::new(Leaf {
            hash: OnceLock::new(),
            loc: AtomicU64::new(0),
            data,
            key_len: key.len() as u16,
        }))
    }

    pub(crate) fn branch(pos: usize, prefix: &[u8], slots: Vec<(usize, Node)>) -> Node {
        let mut mask = 0u32;
        let mut children: [Option<Node>; 17] = Default::default();
        for (slot, child) in slots {
            mask |= 1 << slot;
            children[slot] = Some(child);
        }
        Node::new_branch(pos, prefix, mask, children)
    }

    /// A new, hashed, unpersisted branch.
    fn new_branch(pos: usize, prefix: &[u8], mask: u32, children: [Option<Node>; 17]) -> Node {
        let hash = branch_hash(pos as u16, mask, children.iter().flatten());
        Node::Branch(
            pos as u16,
            Arc::new(Branch {
                hash,
                loc: AtomicU64::new(0),
                pos: pos as u16,
                mask,
                prefix: Bytes::from_slice(&prefix[..pos.div_ceil(2)]),
                children,
            }),
        )
    }

    /// The canonical subtree over `children` at a split on `pos`: none, the single child, or a
    /// branch.
    pub(crate) fn from_children(
        pos: usize,
        prefix: &[u8],
        mut children: [Option<Node>; 17],
    ) -> Option<Node> {
        let mask = children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .fold(0u32, |mask, (slot, _)| mask | 1 << slot);
        match mask.count_ones() {
            0 => None,
            1 => children[mask.trailing_zeros() as usize].take(),
            _ => Some(Node::new_branch(pos, prefix, mask, children)),
        }
    }

    pub(crate) fn decoded_leaf(data: &[u8], key_len: u16, loc: u64) -> Node {
        let (key, value) = data.split_at(key_len as usize);
        Node::Leaf(Arc::new(Leaf {
            hash: OnceLock::from(leaf_hash(key, value)),
            loc: AtomicU64::new(loc),
            data: SmallVec::from_slice(data),
            key_len,
        }))
    }

    pub(crate) fn decoded_branch(
        pos: u16,
        mask: u32,
        prefix: Bytes,
        children: [Option<Node>; 17],
        loc: u64,
    ) -> Node {
        let hash = branch_hash(pos, mask, children.iter().flatten());
        Node::Branch(
            pos,
            Arc::new(Branch {
                hash,
                loc: AtomicU64::new(loc),
                pos,
                mask,
                prefix,
                children,
            }),
        )
    }

    pub(crate) fn stub(hash: Hash32, loc: u64) -> Node {
        Node::Stub(Arc::new(Stub { hash, loc }))
    }

    /// The node's hash. A leaf's is computed on first use (in practice, when its parent is
    /// built); a branch's when it is built.
    pub fn hash(&self) -> &Hash32 {
        match self {
            Node::Leaf(leaf) => leaf.hash.get_or_init(|| {
                let (key, value) = leaf.entry();
                leaf_hash(key, value)
            }),
            Node::Branch(_, b) => &b.hash,
            Node::Stub(stub) => &stub.hash,
        }
    }

    /// Where the node file holds this node; 0 if it is not there yet.
    pub(crate) fn location(&self) -> u64 {
        match self {
            Node::Leaf(leaf) => leaf.loc.load(AtomicOrdering::Acquire),
            Node::Branch(_, b) => b.loc.load(AtomicOrdering::Acquire),
            Node::Stub(stub) => stub.loc,
        }
    }

    /// Records that the node file holds this node at `loc`.
    pub(crate) fn set_location(&self, loc: u64) {
        match self {
            Node::Leaf(leaf) => leaf.loc.store(loc, AtomicOrdering::Release),
            Node::Branch(_, b) => b.loc.store(loc, AtomicOrdering::Release),
            Node::Stub(_) => {}
        }
    }

    /// Reads the reference count: a plain load that brings the node's first line into cache.
    fn touch(&self) -> usize {
        match self {
            Node::Leaf(leaf) => Arc::strong_count(leaf),
            Node::Branch(_, b) => Arc::strong_count(b),
            Node::Stub(stub) => Arc::strong_count(stub),
        }
    }

    fn ptr_eq(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Leaf(a), Node::Leaf(b)) => Arc::ptr_eq(a, b),
            (Node::Branch(_, a), Node::Branch(_, b)) => Arc::ptr_eq(a, b),
            (Node::Stub(a), Node::Stub(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The hash of a leaf.
pub fn leaf_hash(key: &[u8], value: &[u8]) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0]);
    hasher.update(&(key.len() as u16).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    *hasher.finalize().as_bytes()
}

/// The hash of a branch from its children, in slot order.
pub fn branch_hash<'a>(pos: u16, mask: u32, children: impl Iterator<Item = &'a Node>) -> Hash32 {
    branch_hash_of(pos, mask, children.map(Node::hash))
}

/// The hash of a branch from its children's hashes, in slot order (at most 17).
pub fn branch_hash_of<'a>(
    pos: u16,
    mask: u32,
    child_hashes: impl Iterator<Item = &'a Hash32>,
) -> Hash32 {
    let mut buf = [0u8; 7 + 17 * 32];
    buf[0] = 1;
    buf[1..3].copy_from_slice(&pos.to_le_bytes());
    buf[3..7].copy_from_slice(&mask.to_le_bytes());
    let mut len = 7;
    for hash in child_hashes.take(17) {
        buf[len..len + 32].copy_from_slice(hash);
        len += 32;
    }
    *blake3::hash(&buf[..len]).as_bytes()
}

/// The commitment of the empty state.
pub fn empty_hash() -> Hash32 {
    *blake3::hash(b"peregrine v2 empty state").as_bytes()
}

/// The nibble of `key` at `i`: `1 + nibble`, or 0 past the key's end.
#[inline]
pub(crate) fn nibble(key: &[u8], i: usize) -> usize {
    match key.get(i / 2) {
        None => 0,
        Some(b) if i.is_multiple_of(2) => 1 + (b >> 4) as usize,
        Some(b) => 1 + (b & 15) as usize,
    }
}

/// The number of leading nibbles `a` and `b` share (terminators included); equal keys share all.
pub(crate) fn common_nibbles(a: &[u8], b: &[u8]) -> usize {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => 2 * i + usize::from(a[i] >> 4 == b[i] >> 4),
        None if a.len() == b.len() => usize::MAX,
        None => 2 * a.len().min(b.len()),
    }
}

/// A key and value borrowed from a write set or a leaf.
type Entry<'a> = (&'a [u8], &'a [u8]);

/// Where nodes are loaded from, and whether commits may spread over the rayon pool.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub file: &'a NodeFile,
    pub parallel: bool,
}

/// The value under `key`.
pub(crate) fn get(mut node: &Node, key: &[u8], file: &NodeFile) -> Result<Option<Bytes>, Error> {
    loop {
        match node {
            Node::Leaf(leaf) => {
                let (k, v) = leaf.entry();
                return Ok((k == key).then(|| Bytes::from_slice(v)));
            }
            Node::Branch(pos, b) => match &b.children[nibble(key, *pos as usize)] {
                Some(child) => node = child,
                None => return Ok(None),
            },
            Node::Stub(stub) => {
                let loaded = file.load(stub.loc, &stub.hash)?;
                return get(&loaded, key, file);
            }
        }
    }
}

/// `node` itself, or the node its stub stands for.
pub(crate) fn resolve(node: &Node, file: &NodeFile) -> Result<Node, Error> {
    match node {
        Node::Stub(stub) => file.load(stub.loc, &stub.hash),
        _ => Ok(node.clone()),
    }
}

/// A subtree and the change in its key count.
type Applied = (Option<Node>, i64);

/// Applies `writes` (sorted by key, unique, non-empty) to the subtree at `node`.
pub(crate) fn apply(ctx: Ctx, node: Option<&Node>, writes: &[Change]) -> Result<Applied, Error> {
    let Some(node) = node else {
        let puts: Vec<Entry> = writes
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
            .collect();
        let added = puts.len() as i64;
        return Ok((build(ctx, &puts), added));
    };
    match node {
        Node::Leaf(leaf) => Ok(apply_leaf(ctx, node, leaf, writes)),
        Node::Branch(_, b) => {
            let pos = b.pos as usize;
            let (first, last) = (&writes[0].0, &writes[writes.len() - 1].0);
            // Sorted writes: every write shares at least what the first and last share.
            let split = pos
                .min(common_nibbles(first, &b.prefix))
                .min(common_nibbles(last, &b.prefix));
            if split == pos {
                apply_branch(ctx, b, writes)
            } else {
                split_above(ctx, node.clone(), split, &b.prefix, writes)
            }
        }
        Node::Stub(stub) => {
            let loaded = ctx.file.load(stub.loc, &stub.hash)?;
            apply(ctx, Some(&loaded), writes)
        }
    }
}

fn apply_leaf(ctx: Ctx, node: &Node, leaf: &Leaf, writes: &[Change]) -> Applied {
    let (key, value) = leaf.entry();
    if let [(k, new)] = writes {
        if k.as_slice() == key {
            return match new {
                Some(new) if new.as_slice() == value => (Some(node.clone()), 0),
                Some(new) => (Some(Node::leaf(key, new)), 0),
                None => (None, -1),
            };
        }
        // The common insert: one new key beside this leaf, under a new two-way branch.
        return match new {
            None => (Some(node.clone()), 0),
            Some(new) => {
                let pos = common_nibbles(key, k);
                let fresh = Node::leaf(k, new);
                let (old_slot, new_slot) = (nibble(key, pos), nibble(k, pos));
                let mut children: [Option<Node>; 17] = Default::default();
                children[old_slot] = Some(node.clone());
                children[new_slot] = Some(fresh);
                (Node::from_children(pos, key, children), 1)
            }
        };
    }
    let mut merged: Vec<Entry> = Vec::with_capacity(writes.len() + 1);
    let mut leaf_pending = true;
    for (k, new) in writes {
        if leaf_pending && key <= k.as_slice() {
            leaf_pending = false;
            if key < k.as_slice() {
                merged.push((key, value));
            }
        }
        if let Some(new) = new {
            merged.push((k, new));
        }
    }
    if leaf_pending {
        merged.push((key, value));
    }
    let added = merged.len() as i64 - 1;
    (build(ctx, &merged), added)
}

/// Writes that all share the branch's prefix: grouped by the nibble at `pos`.
fn apply_branch(ctx: Ctx, b: &Branch, writes: &[Change]) -> Result<Applied, Error> {
    let pos = b.pos as usize;
    warm(b);
    let mut children = b.children.clone();
    let mut added = 0;
    if let [(key, _)] = writes {
        // The common deep case: one write, one child to rebuild.
        let slot = nibble(key, pos);
        let (child, delta) = apply(ctx, b.children[slot].as_ref(), writes)?;
        children[slot] = child;
        added = delta;
    } else {
        let groups = group_by_nibble(writes, pos);
        let results = run_groups(ctx, writes.len(), &groups, |slot, group| {
            apply(ctx, b.children[slot].as_ref(), group)
        })?;
        for (slot, (child, delta)) in results {
            added += delta;
            children[slot] = child;
        }
    }
    Ok((Node::from_children(pos, &b.prefix, children), added))
}

/// Reads every child once with plain, independent loads, so their cache misses overlap. The
/// reference-count increments that follow are locked instructions, which the processor does not
/// overlap: without this, copying a branch paid one full memory latency per untouched sibling.
fn warm(b: &Branch) {
    let touched = b.iter().fold(0usize, |acc, child| acc ^ child.touch());
    std::hint::black_box(touched);
}

/// Writes that leave the branch's prefix before `pos`: a new split at `split` above it.
fn split_above(
    ctx: Ctx,
    node: Node,
    split: usize,
    prefix: &[u8],
    writes: &[Change],
) -> Result<Applied, Error> {
    let old_slot = nibble(prefix, split);
    let groups = group_by_nibble(writes, split);
    let results = run_groups(ctx, writes.len(), &groups, |slot, group| {
        apply(ctx, (slot == old_slot).then_some(&node), group)
    })?;
    let mut children: [Option<Node>; 17] = Default::default();
    children[old_slot] = Some(node.clone());
    let mut added = 0;
    for (slot, (child, delta)) in results {
        added += delta;
        children[slot] = child;
    }
    Ok((Node::from_children(split, prefix, children), added))
}

/// Runs `f` on each group, on the rayon pool when the batch is big enough.
fn run_groups<'w>(
    ctx: Ctx,
    total: usize,
    groups: &[(usize, &'w [Change])],
    f: impl Fn(usize, &'w [Change]) -> Result<Applied, Error> + Sync,
) -> Result<Vec<(usize, Applied)>, Error> {
    if ctx.parallel && total >= PARALLEL_MIN_WRITES && groups.len() > 1 {
        groups
            .par_iter()
            .map(|&(slot, group)| f(slot, group).map(|r| (slot, r)))
            .collect()
    } else {
        groups
            .iter()
            .map(|&(slot, group)| f(slot, group).map(|r| (slot, r)))
            .collect()
    }
}

/// Splits sorted writes into runs with the same nibble at `pos`.
fn group_by_nibble(writes: &[Change], pos: usize) -> SmallVec<[(usize, &[Change]); 17]> {
    let mut groups = SmallVec::new();
    let mut start = 0;
    while start < writes.len() {
        let slot = nibble(&writes[start].0, pos);
        let len = writes[start..].partition_point(|(k, _)| nibble(k, pos) == slot);
        groups.push((slot, &writes[start..start + len]));
        start += len;
    }
    groups
}

/// The subtree holding exactly `entries` (sorted by key, unique).
pub(crate) fn build(ctx: Ctx, entries: &[Entry]) -> Option<Node> {
    match entries {
        [] => None,
        [(k, v)] => Some(Node::leaf(k, v)),
        _ => {
            let first = entries[0].0;
            let pos = common_nibbles(first, entries[entries.len() - 1].0);
            let mut groups: SmallVec<[(usize, &[Entry]); 17]> = SmallVec::new();
            let mut start = 0;
            while start < entries.len() {
                let slot = nibble(entries[start].0, pos);
                let len = entries[start..].partition_point(|(k, _)| nibble(k, pos) == slot);
                groups.push((slot, &entries[start..start + len]));
                start += len;
            }
            let child = |&(slot, group): &(usize, &[Entry])| {
                (slot, build(ctx, group).expect("a non-empty group"))
            };
            let slots: Vec<(usize, Node)> = if ctx.parallel && entries.len() >= PARALLEL_MIN_WRITES
            {
                groups.par_iter().map(child).collect()
            } else {
                groups.iter().map(child).collect()
            };
            Some(Node::branch(pos, first, slots))
        }
    }
}

/// The tree under `node` with every persisted node at depth `keep` or deeper replaced by a stub,
/// so it no longer holds those nodes in memory. Unpersisted nodes stay resident.
pub(crate) fn trim(node: &Node, depth: usize, keep: usize) -> Node {
    let loc = node.location();
    if depth >= keep && loc != 0 {
        return match node {
            Node::Stub(_) => node.clone(),
            _ => Node::stub(*node.hash(), loc),
        };
    }
    let Node::Branch(_, b) = node else {
        return node.clone();
    };
    let trimmed = b
        .children
        .clone()
        .map(|c| c.map(|c| trim(&c, depth + 1, keep)));
    let same = trimmed
        .iter()
        .zip(b.children.iter())
        .all(|(a, c)| match (a, c) {
            (Some(a), Some(c)) => a.ptr_eq(c),
            _ => true,
        });
    if same {
        return node.clone();
    }
    Node::Branch(b.pos, b.with_children(trimmed))
}

/// Loads the node at a location, checked against its hash.
pub(crate) type Loader<'a> = dyn Fn(u64, &Hash32) -> Result<Node, Error> + 'a;

/// The tree under `node` with stubs loaded down to depth `keep`.
pub(crate) fn preload(
    node: &Node,
    depth: usize,
    keep: usize,
    load: &Loader,
) -> Result<Node, Error> {
    if depth >= keep {
        return Ok(node.clone());
    }
    let node = match node {
        Node::Stub(stub) => load(stub.loc, &stub.hash)?,
        _ => node.clone(),
    };
    let Node::Branch(_, b) = &node else {
        return Ok(node);
    };
    let mut loaded: [Option<Node>; 17] = Default::default();
    for (slot, child) in b.children.iter().enumerate() {
        if let Some(child) = child {
            loaded[slot] = Some(preload(child, depth + 1, keep, load)?);
        }
    }
    Ok(Node::Branch(b.pos, b.with_children(loaded)))
}

/// Ordered iteration over the leaves in a key range.
pub struct Iter {
    file: Arc<NodeFile>,
    /// Branches being walked, with the next slot to visit and whether the lower bound can still
    /// cut into them.
    stack: Vec<(Arc<Branch>, usize, bool)>,
    /// The next node to enter, and whether the lower bound can cut into it.
    next: Option<(Node, bool)>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
}

impl Iter {
    pub(crate) fn new(
        root: Option<Node>,
        file: Arc<NodeFile>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Self {
        Self {
            file,
            stack: Vec::new(),
            next: root.map(|r| (r, true)),
            start,
            end,
        }
    }

    fn before_start(&self, key: &[u8]) -> bool {
        match &self.start {
            Bound::Unbounded => false,
            Bound::Included(s) => key < s.as_slice(),
            Bound::Excluded(s) => key <= s.as_slice(),
        }
    }

    fn after_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Unbounded => false,
            Bound::Included(e) => key > e.as_slice(),
            Bound::Excluded(e) => key >= e.as_slice(),
        }
    }

    /// How the keys under slot `slot` of a branch compare with the lower bound's nibbles.
    fn slot_vs_start(&self, pos: usize, prefix: &[u8], slot: usize) -> Ordering {
        let start = match &self.start {
            Bound::Unbounded => return Ordering::Greater,
            Bound::Included(s) | Bound::Excluded(s) => s,
        };
        for i in 0..pos {
            match nibble(prefix, i).cmp(&nibble(start, i)) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        slot.cmp(&nibble(start, pos))
    }

    fn step(&mut self) -> Result<Option<(Bytes, Bytes)>, Error> {
        loop {
            if let Some((node, bounded)) = self.next.take() {
                match resolve(&node, &self.file)? {
                    Node::Leaf(leaf) => {
                        let (k, v) = leaf.entry();
                        if self.after_end(k) {
                            self.stack.clear();
                            return Ok(None);
                        }
                        if bounded && self.before_start(k) {
                            continue;
                        }
                        return Ok(Some((Bytes::from_slice(k), Bytes::from_slice(v))));
                    }
                    Node::Branch(_, b) => self.stack.push((b, 0, bounded)),
                    Node::Stub(_) => unreachable!("resolved above"),
                }
                continue;
            }
            let Some((b, slot, bounded)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(found) = (*slot..17).find(|s| b.children[*s].is_some()) else {
                self.stack.pop();
                continue;
            };
            *slot = found + 1;
            let child = b.children[found].clone().expect("found a child");
            let still_bounded = *bounded && {
                let b = b.clone();
                match self.slot_vs_start(b.pos as usize, &b.prefix, found) {
                    Ordering::Less => continue,
                    Ordering::Equal => true,
                    Ordering::Greater => false,
                }
            };
            self.next = Some((child, still_bounded));
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}
