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
//! Each node carries its BLAKE3 hash, computed when the node is built:
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

/// A trie node: immutable once built, apart from the location it was persisted at.
///
/// `repr(C)` puts the hash right after the reference counts, on the same cache line, so warming
/// a child for its count increment also brings in its hash for the parent's rehash.
#[repr(C)]
pub struct Node {
    pub(crate) hash: OnceLock<Hash32>,
    /// Where the node file holds this node; 0 until a checkpoint writes it.
    pub(crate) loc: AtomicU64,
    pub(crate) kind: Kind,
}

/// What a node is.
pub enum Kind {
    /// A key and its value, stored together: `data[..key_len]` is the key.
    Leaf {
        /// Key then value.
        data: SmallVec<[u8; 48]>,
        /// Bytes of `data` that are the key.
        key_len: u16,
    },
    /// A split on the nibble at `pos`.
    Branch {
        /// The nibble position this branch splits on.
        pos: u16,
        /// Bit `s` is set when slot `s` holds a child.
        mask: u32,
        /// The first `ceil(pos / 2)` bytes of every key below.
        prefix: Bytes,
        /// The children, in slot order.
        children: Box<[Arc<Node>]>,
    },
    /// A node that is only in the node file, at `loc`.
    Stub,
}

impl Node {
    pub(crate) fn leaf(key: &[u8], value: &[u8]) -> Arc<Node> {
        let mut data = SmallVec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Arc::new(Node {
            hash: OnceLock::new(),
            loc: AtomicU64::new(0),
            kind: Kind::Leaf {
                data,
                key_len: key.len() as u16,
            },
        })
    }

    pub(crate) fn branch(pos: usize, prefix: &[u8], slots: Vec<(usize, Arc<Node>)>) -> Arc<Node> {
        let mut mask = 0u32;
        let mut children = Vec::with_capacity(slots.len());
        for (slot, child) in slots {
            mask |= 1 << slot;
            children.push(child);
        }
        let children = children.into_boxed_slice();
        Arc::new(Node {
            hash: OnceLock::new(),
            loc: AtomicU64::new(0),
            kind: Kind::Branch {
                pos: pos as u16,
                mask,
                prefix: Bytes::from_slice(&prefix[..pos.div_ceil(2)]),
                children,
            },
        })
    }

    pub(crate) fn stub(hash: Hash32, loc: u64) -> Arc<Node> {
        Arc::new(Node {
            hash: OnceLock::from(hash),
            loc: AtomicU64::new(loc),
            kind: Kind::Stub,
        })
    }

    /// The node's hash, computed (with its unhashed descendants') on first use.
    pub fn hash(&self) -> &Hash32 {
        self.hash.get_or_init(|| match &self.kind {
            Kind::Leaf { data, key_len } => {
                let (key, value) = data.split_at(*key_len as usize);
                leaf_hash(key, value)
            }
            Kind::Branch {
                pos,
                mask,
                children,
                ..
            } => branch_hash(*pos, *mask, children),
            Kind::Stub => unreachable!("a stub is built with its hash"),
        })
    }

    /// Computes every missing hash below and at this node, spreading the top `parallel_depth`
    /// levels over the rayon pool. Subtrees already hashed are skipped, so this costs
    /// O(nodes changed since they were last hashed).
    pub(crate) fn hash_tree(&self, parallel_depth: usize) -> &Hash32 {
        if let Some(hash) = self.hash.get() {
            return hash;
        }
        if let (Kind::Branch { children, .. }, true) = (&self.kind, parallel_depth > 0) {
            children
                .par_iter()
                .filter(|c| c.hash.get().is_none())
                .for_each(|c| {
                    c.hash_tree(parallel_depth - 1);
                });
        }
        self.hash()
    }

    pub(crate) fn location(&self) -> u64 {
        self.loc.load(AtomicOrdering::Acquire)
    }

    /// The key and value of a leaf.
    pub(crate) fn entry(&self) -> Option<(&[u8], &[u8])> {
        match &self.kind {
            Kind::Leaf { data, key_len } => Some(data.split_at(*key_len as usize)),
            _ => None,
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

/// The hash of a branch from its children's hashes.
pub fn branch_hash(pos: u16, mask: u32, children: &[Arc<Node>]) -> Hash32 {
    let mut buf = [0u8; 7 + 17 * 32];
    buf[0] = 1;
    buf[1..3].copy_from_slice(&pos.to_le_bytes());
    buf[3..7].copy_from_slice(&mask.to_le_bytes());
    for (i, child) in children.iter().enumerate() {
        buf[7 + 32 * i..7 + 32 * (i + 1)].copy_from_slice(child.hash());
    }
    *blake3::hash(&buf[..7 + 32 * children.len()]).as_bytes()
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

#[inline]
fn rank(mask: u32, slot: usize) -> usize {
    (mask & ((1u32 << slot) - 1)).count_ones() as usize
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
        match &node.kind {
            Kind::Leaf { data, key_len } => {
                let (k, v) = data.split_at(*key_len as usize);
                return Ok((k == key).then(|| Bytes::from_slice(v)));
            }
            Kind::Branch {
                pos,
                mask,
                children,
                ..
            } => {
                let slot = nibble(key, *pos as usize);
                if mask & (1 << slot) == 0 {
                    return Ok(None);
                }
                node = &children[rank(*mask, slot)];
            }
            Kind::Stub => {
                let loaded = file.load(node.location(), node.hash())?;
                return get(&loaded, key, file);
            }
        }
    }
}

/// `node` itself, or the node its stub stands for.
fn resolve(node: &Arc<Node>, file: &NodeFile) -> Result<Arc<Node>, Error> {
    match node.kind {
        Kind::Stub => file.load(node.location(), node.hash()),
        _ => Ok(node.clone()),
    }
}

/// A subtree and the change in its key count.
type Applied = (Option<Arc<Node>>, i64);

/// Applies `writes` (sorted by key, unique, non-empty) to the subtree at `node`.
pub(crate) fn apply(
    ctx: Ctx,
    node: Option<&Arc<Node>>,
    writes: &[Change],
) -> Result<Applied, Error> {
    let Some(node) = node else {
        let puts: Vec<(&[u8], &[u8])> = writes
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
            .collect();
        let added = puts.len() as i64;
        return Ok((build(ctx, &puts), added));
    };
    let node = resolve(node, ctx.file)?;
    match &node.kind {
        Kind::Leaf { .. } => Ok(apply_leaf(ctx, &node, writes)),
        Kind::Branch { pos, prefix, .. } => {
            let pos = *pos as usize;
            let (first, last) = (&writes[0].0, &writes[writes.len() - 1].0);
            // Sorted writes: every write shares at least what the first and last share.
            let split = pos
                .min(common_nibbles(first, prefix))
                .min(common_nibbles(last, prefix));
            if split == pos {
                apply_branch(ctx, &node, writes)
            } else {
                let prefix = prefix.clone();
                split_above(ctx, node, split, &prefix, writes)
            }
        }
        Kind::Stub => unreachable!("resolved above"),
    }
}

fn apply_leaf(ctx: Ctx, leaf: &Arc<Node>, writes: &[Change]) -> Applied {
    let (key, value) = leaf.entry().expect("a leaf");
    if let [(k, new)] = writes {
        if k.as_slice() == key {
            return match new {
                Some(new) if new.as_slice() == value => (Some(leaf.clone()), 0),
                Some(new) => (Some(Node::leaf(key, new)), 0),
                None => (None, -1),
            };
        }
    }
    let mut merged: Vec<(&[u8], &[u8])> = Vec::with_capacity(writes.len() + 1);
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
fn apply_branch(ctx: Ctx, node: &Arc<Node>, writes: &[Change]) -> Result<Applied, Error> {
    let Kind::Branch {
        pos,
        mask,
        prefix,
        children,
    } = &node.kind
    else {
        unreachable!("a branch");
    };
    let pos = *pos as usize;
    warm(children);
    let groups = group_by_nibble(writes, pos);
    let existing = |slot: usize| (mask & (1 << slot) != 0).then(|| &children[rank(*mask, slot)]);
    let results = run_groups(ctx, writes.len(), &groups, |slot, group| {
        apply(ctx, existing(slot), group)
    })?;
    let mut added = 0;
    let mut slots = Vec::with_capacity(17);
    let mut results = results.into_iter().peekable();
    for slot in 0..17 {
        match results.peek() {
            Some((s, _)) if *s == slot => {
                let (_, (child, delta)) = results.next().expect("peeked");
                added += delta;
                slots.extend(child.map(|c| (slot, c)));
            }
            _ => slots.extend(existing(slot).map(|c| (slot, c.clone()))),
        }
    }
    Ok((assemble(pos, prefix, slots), added))
}

/// Reads every child once with plain, independent loads, so their cache misses overlap. The
/// reference-count increments that follow are locked instructions, which the processor does not
/// overlap: without this, copying a branch paid one full memory latency per untouched sibling.
fn warm(children: &[Arc<Node>]) {
    let touched = children
        .iter()
        .fold(0usize, |acc, child| acc ^ Arc::strong_count(child));
    std::hint::black_box(touched);
}

/// Writes that leave the branch's prefix before `pos`: a new split at `split` above it.
fn split_above(
    ctx: Ctx,
    node: Arc<Node>,
    split: usize,
    prefix: &[u8],
    writes: &[Change],
) -> Result<Applied, Error> {
    let old_slot = nibble(prefix, split);
    let groups = group_by_nibble(writes, split);
    let results = run_groups(ctx, writes.len(), &groups, |slot, group| {
        apply(ctx, (slot == old_slot).then_some(&node), group)
    })?;
    let mut added = 0;
    let mut slots = Vec::with_capacity(groups.len() + 1);
    let mut old_pending = true;
    for (slot, (child, delta)) in results {
        if old_pending && old_slot < slot {
            slots.push((old_slot, node.clone()));
            old_pending = false;
        }
        old_pending &= slot != old_slot;
        added += delta;
        slots.extend(child.map(|c| (slot, c)));
    }
    if old_pending {
        slots.push((old_slot, node.clone()));
    }
    Ok((assemble(split, prefix, slots), added))
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

/// A canonical subtree from children at a split: none, the single child, or a branch.
fn assemble(pos: usize, prefix: &[u8], mut slots: Vec<(usize, Arc<Node>)>) -> Option<Arc<Node>> {
    match slots.len() {
        0 => None,
        1 => slots.pop().map(|(_, child)| child),
        _ => Some(Node::branch(pos, prefix, slots)),
    }
}

/// The subtree holding exactly `entries` (sorted by key, unique).
pub(crate) fn build(ctx: Ctx, entries: &[Entry]) -> Option<Arc<Node>> {
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
            let slots: Vec<(usize, Arc<Node>)> =
                if ctx.parallel && entries.len() >= PARALLEL_MIN_WRITES {
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
pub(crate) fn trim(node: &Arc<Node>, depth: usize, keep: usize) -> Arc<Node> {
    let loc = node.location();
    if depth >= keep && loc != 0 {
        return match node.kind {
            Kind::Stub => node.clone(),
            _ => Node::stub(*node.hash(), loc),
        };
    }
    let Kind::Branch {
        pos,
        mask,
        prefix,
        children,
    } = &node.kind
    else {
        return node.clone();
    };
    let trimmed: Vec<Arc<Node>> = children.iter().map(|c| trim(c, depth + 1, keep)).collect();
    if trimmed
        .iter()
        .zip(children.iter())
        .all(|(a, b)| Arc::ptr_eq(a, b))
    {
        return node.clone();
    }
    Arc::new(Node {
        hash: node.hash.clone(),
        loc: AtomicU64::new(loc),
        kind: Kind::Branch {
            pos: *pos,
            mask: *mask,
            prefix: prefix.clone(),
            children: trimmed.into_boxed_slice(),
        },
    })
}

/// Loads the node at a location, checked against its hash.
pub(crate) type Loader<'a> = dyn Fn(u64, &Hash32) -> Result<Arc<Node>, Error> + 'a;

/// The tree under `node` with stubs loaded down to depth `keep`.
pub(crate) fn preload(
    node: &Arc<Node>,
    depth: usize,
    keep: usize,
    load: &Loader,
) -> Result<Arc<Node>, Error> {
    if depth >= keep {
        return Ok(node.clone());
    }
    let node = match node.kind {
        Kind::Stub => load(node.location(), node.hash())?,
        _ => node.clone(),
    };
    let Kind::Branch {
        pos,
        mask,
        prefix,
        children,
    } = &node.kind
    else {
        return Ok(node);
    };
    let loaded = children
        .iter()
        .map(|c| preload(c, depth + 1, keep, load))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Node {
        hash: node.hash.clone(),
        loc: AtomicU64::new(node.location()),
        kind: Kind::Branch {
            pos: *pos,
            mask: *mask,
            prefix: prefix.clone(),
            children: loaded.into_boxed_slice(),
        },
    }))
}

/// Ordered iteration over the leaves in a key range.
pub struct Iter {
    file: Arc<NodeFile>,
    /// Branches being walked, with the next slot to visit and whether the lower bound can still
    /// cut into them.
    stack: Vec<(Arc<Node>, usize, bool)>,
    /// The next node to enter, and whether the lower bound can cut into it.
    next: Option<(Arc<Node>, bool)>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
}

impl Iter {
    pub(crate) fn new(
        root: Option<Arc<Node>>,
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
                let node = resolve(&node, &self.file)?;
                if let Some((k, v)) = node.entry() {
                    if self.after_end(k) {
                        self.stack.clear();
                        return Ok(None);
                    }
                    if bounded && self.before_start(k) {
                        continue;
                    }
                    return Ok(Some((Bytes::from_slice(k), Bytes::from_slice(v))));
                }
                self.stack.push((node, 0, bounded));
                continue;
            }
            let Some((node, slot, bounded)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Kind::Branch {
                pos,
                mask,
                prefix,
                children,
            } = &node.kind
            else {
                unreachable!("only branches are stacked");
            };
            let Some(found) = (*slot..17).find(|s| mask & (1 << s) != 0) else {
                self.stack.pop();
                continue;
            };
            *slot = found + 1;
            let (child, was_bounded) = (children[rank(*mask, found)].clone(), *bounded);
            let (pos, prefix) = (*pos as usize, prefix.clone());
            let still_bounded = if was_bounded {
                match self.slot_vs_start(pos, &prefix, found) {
                    Ordering::Less => continue,
                    Ordering::Equal => true,
                    Ordering::Greater => false,
                }
            } else {
                false
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
