//! The copy-on-write Merkle radix trie that every revision is a root of.
//!
//! # Shape
//! Keys are read as nibbles (half-bytes). A key's nibble at position `i` is encoded as `1 + nibble`,
//! and every key ends with a terminator nibble `0`, so a key that is a prefix of another sorts and
//! branches first. A [`Node::Branch`] splits on the nibble at position `pos`, the first position
//! where its keys differ, into up to 17 children (slot 0: the key that ends exactly there). A leaf
//! holds a whole key and its value. The trie is path-compressed: a branch has at least two
//! children, so its depth is bounded by the number of keys and by the key length, and the shape is
//! a function of the key set alone, whatever the order of writes.
//!
//! # Buckets
//! A subtree of 3 to 17 keys that all fit inline, two of which would share a slot of their
//! split, is a bucket ([`crate::bucket`]): a branch at position [`BUCKET`] whose slots hold
//! the keys' records in key order, so a write at the bottom copies one node where a split
//! would have made two.
//!
//! # Inline leaves
//! A leaf whose key and value fit in `INLINE_BYTES` (46) lives inside its parent branch, in the same
//! allocation, after the branch's fixed part, as a record ([`Inline`]) padded to the branch's
//! stride (16 to 48 bytes, see [`crate::branch`]): it has no allocation, reference count, hash or
//! cache miss of its own. Copying a branch copies its inline leaves with the branch, and freeing
//! one touches none of them, so the bottom level of the trie (where most leaves hang) costs no
//! child loads to copy or free. The parent's handle carries the
//! mask of inline slots, so a lookup computes the address of the leaf it wants before the branch
//! arrives. Bigger leaves, and a lone key at the root, are [`Node::Leaf`]s. Which leaves are
//! inline is a function of their sizes alone, so it is part of the commitment: the branch's hash
//! covers an inline leaf's record where it covers another child's hash.
//!
//! # Sharing
//! Nodes are immutable and reference-counted. A commit copies only the nodes on the paths it
//! changes and shares every other subtree with its parent revision, so a revision, a fork and a
//! snapshot are one pointer, and no reader ever waits for the writer.
//!
//! # Commitment
//! Each branch and leaf node carries its BLAKE3 hash (an inline leaf has none). A branch's is
//! computed by the commit that builds it ([`crate::hashing`]); a leaf node's when first asked:
//! - leaf node: `H(0x00 ‖ key length u16 LE ‖ key ‖ value)`;
//! - branch: `H(0x01 ‖ pos u16 LE ‖ slot mask u32 LE ‖ inline mask u32 LE ‖ pieces ‖ zeros)`,
//!   a piece per child in slot order: a node's hash, or an inline leaf's record (`key length u8
//!   ‖ key and value length u8 ‖ key ‖ value`, [`Inline`]); zeros to a multiple of 64 bytes
//!   ([`encode_branch`]); a bucket of `n` keys is encoded as a branch at `pos` 4095 with both
//!   masks `2^n - 1` and its records in key order;
//! - the empty state: `H("peregrine v3 empty state")`.
//!
//! A revision's state commitment is its root's hash, updated in O(changed keys × depth). Inclusion
//! proofs are the branch nodes on a key's path with their siblings' pieces; the leaf binds the
//! whole key, so a verifier checks the key's nibble at each `pos` against the slot taken.
//!
//! # On disk
//! A [`Node::Stub`] stands for a node that lives only in the node file: it has the node's hash and
//! location, and is loaded on demand (see [`crate::nodes`]). Loaded nodes are not cached in the
//! trie: the trie stays immutable, and the operating system's page cache keeps the hot pages.

pub use crate::branch::Branch;
use crate::branch::{rank, Builder, Parts, Shape, SLOTS};
use crate::bucket::{self, BUCKET, BUCKET_KEYS};
use crate::hashing::Encoder;
use crate::nodes::GenFile;
use crate::{Bytes, Error};
use parking_lot::Mutex;
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
    /// A key and its value, too big to live inline in a branch (or alone at the root).
    Leaf(Arc<Leaf>),
    /// A split on one nibble. The branch's [`Shape`] (`pos` and slot masks) sits beside the
    /// pointer, in what would be the enum's padding, so a lookup picks the child's slot, and the
    /// address of the entry it wants, before the branch is loaded: one cache miss per level.
    Branch(Shape, Branch),
    /// A node that is only in the node file.
    Stub(Arc<Stub>),
}

// A child slot is a tag, a branch's `pos` and inline mask, and a pointer in two words: the
// trie's memory and the read path's one-miss-per-level both depend on it.
const _: () = assert!(std::mem::size_of::<Option<Node>>() == 16);

/// Key and value bytes an [`Inline`] leaf holds at most: account keys (21 bytes) with their
/// records (24) fit.
pub(crate) const INLINE_BYTES: usize = 46;

/// Bytes an inline leaf takes in its branch: its record, `key length u8 ‖ key and value length
/// u8 ‖ key ‖ value`, zero-padded to a fixed size, so a leaf's place follows from its rank.
pub(crate) const INLINE_RECORD: usize = 2 + INLINE_BYTES;

/// A leaf that lives inside its parent branch: no allocation, reference count, hash or cache
/// miss of its own. It is its record, `key length u8 ‖ key and value length u8 ‖ key ‖ value`;
/// the record without padding is what the branch's hash covers in its slot ([`Piece`]). This
/// owned form, for a leaf on its way into a branch, pads it to 48 bytes; a branch stores it
/// padded to its own stride ([`crate::branch`], "Strides"), and lends it as an [`InlineRef`].
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Inline([u8; INLINE_RECORD]);

const _: () = assert!(std::mem::size_of::<Inline>() == 48);

/// An inline leaf as a branch stores it: its record, then zeros to the branch's stride.
#[derive(Clone, Copy)]
pub struct InlineRef<'a>(&'a [u8]);

impl<'a> InlineRef<'a> {
    /// The leaf stored in `bytes`: a record, then zero padding.
    pub(crate) fn stored(bytes: &'a [u8]) -> InlineRef<'a> {
        debug_assert!(bytes.len() >= 2 && bytes.len() >= 2 + usize::from(bytes[1]));
        InlineRef(bytes)
    }

    /// The key and the value.
    pub(crate) fn entry(self) -> (&'a [u8], &'a [u8]) {
        self.0[2..2 + usize::from(self.0[1])].split_at(usize::from(self.0[0]))
    }

    /// The record, as the parent's hash covers it: without the padding.
    pub(crate) fn record(self) -> &'a [u8] {
        &self.0[..2 + usize::from(self.0[1])]
    }

    /// The record and its padding.
    pub(crate) fn bytes(self) -> &'a [u8] {
        self.0
    }

    /// The stride class a branch needs to hold this leaf.
    pub(crate) fn class(self) -> u8 {
        crate::branch::stride_class(self.record().len())
    }

    /// The leaf, owned.
    #[inline]
    pub(crate) fn to_inline(self) -> Inline {
        let mut record = [0u8; INLINE_RECORD];
        // The stored length is a stride (or 48): constant-size copies, not a call.
        use crate::branch::{LONG, MEDIUM, SHORT};
        match self.0.len() {
            SHORT => record[..SHORT].copy_from_slice(&self.0[..SHORT]),
            MEDIUM => record[..MEDIUM].copy_from_slice(&self.0[..MEDIUM]),
            LONG => record[..LONG].copy_from_slice(&self.0[..LONG]),
            INLINE_RECORD => record.copy_from_slice(&self.0[..INLINE_RECORD]),
            _ => {
                let record_len = self.record().len();
                record[..record_len].copy_from_slice(self.record());
            }
        }
        Inline(record)
    }
}

impl Inline {
    /// The leaf for `key` and `value`, if they fit inline.
    pub(crate) fn new(key: &[u8], value: &[u8]) -> Option<Inline> {
        let len = key.len() + value.len();
        if len > INLINE_BYTES {
            return None;
        }
        let mut record = [0u8; INLINE_RECORD];
        record[0] = key.len() as u8;
        record[1] = len as u8;
        record[2..2 + key.len()].copy_from_slice(key);
        record[2 + key.len()..2 + len].copy_from_slice(value);
        Some(Inline(record))
    }

    /// The leaf, lent as a branch lends its own.
    pub(crate) fn as_ref(&self) -> InlineRef<'_> {
        InlineRef(&self.0)
    }

    /// The key and the value.
    pub(crate) fn entry(&self) -> (&[u8], &[u8]) {
        self.as_ref().entry()
    }

    /// The record, as the parent's hash covers it: without the padding.
    pub(crate) fn record(&self) -> &[u8] {
        self.as_ref().record()
    }
}

/// What a child gives its parent branch's encoding: a node's hash, or an inline leaf's record.
#[derive(Clone, Copy)]
pub enum Piece<'a> {
    /// A node of its own: its hash.
    Hash(&'a Hash32),
    /// A leaf inline in the branch: its record.
    Inline(&'a [u8]),
}

impl Piece<'_> {
    /// The bytes the piece adds to the encoding.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Hash(hash) => &hash[..],
            Piece::Inline(record) => &record[..],
        }
    }
}

/// The positions of the bits set in `mask`, lowest first.
pub(crate) fn set_bits(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let bit = (mask != 0).then(|| mask.trailing_zeros() as usize)?;
        mask &= mask - 1;
        Some(bit)
    })
}

/// What a branch slot holds, owned: a node, or a leaf inline.
#[derive(Clone)]
pub(crate) enum Child {
    Node(Node),
    Inline(Inline),
}

/// What a branch slot holds, borrowed.
#[derive(Clone, Copy)]
pub(crate) enum Slot<'a> {
    Node(&'a Node),
    Inline(InlineRef<'a>),
}

impl Child {
    /// A leaf: inline when it fits.
    pub(crate) fn leaf(key: &[u8], value: &[u8]) -> Child {
        match Inline::new(key, value) {
            Some(inline) => Child::Inline(inline),
            None => Child::Node(Node::leaf(key, value)),
        }
    }

    /// What the child gives its parent's encoding.
    pub(crate) fn piece(&self) -> Piece<'_> {
        match self {
            Child::Node(node) => Piece::Hash(node.hash()),
            Child::Inline(leaf) => Piece::Inline(leaf.record()),
        }
    }

    /// A leaf node as its parent holds it: inline when it fits, as [`Child::leaf`] builds it. A
    /// lone key at the root is a leaf node; once a branch takes it in, it must be inline, since
    /// the branch's hash covers an inline leaf's record and not its hash.
    fn of_leaf_node(node: &Node, (key, value): Entry) -> Child {
        match Inline::new(key, value) {
            Some(inline) => Child::Inline(inline),
            None => Child::Node(node.clone()),
        }
    }

    /// The child as a node of its own: an inline leaf becomes a shared leaf.
    pub(crate) fn into_node(self) -> Node {
        match self {
            Child::Node(node) => node,
            Child::Inline(leaf) => {
                let (key, value) = leaf.entry();
                Node::leaf(key, value)
            }
        }
    }
}

/// Occupied slots and their contents, in slot order.
pub(crate) type Slots = SmallVec<[(usize, Child); 4]>;

impl<'a> Slot<'a> {
    pub(crate) fn owned(self) -> Child {
        match self {
            Slot::Node(node) => Child::Node(node.clone()),
            Slot::Inline(leaf) => Child::Inline(leaf.to_inline()),
        }
    }

    /// What the slot gives its branch's encoding.
    pub(crate) fn piece(self) -> Piece<'a> {
        match self {
            Slot::Node(node) => Piece::Hash(node.hash()),
            Slot::Inline(leaf) => Piece::Inline(leaf.record()),
        }
    }
}

impl Child {
    /// The child, borrowed as a slot of a branch holds it.
    pub(crate) fn as_slot(&self) -> Slot<'_> {
        match self {
            Child::Node(node) => Slot::Node(node),
            Child::Inline(leaf) => Slot::Inline(leaf.as_ref()),
        }
    }
}

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

/// A node that lives only in the node file. It holds the file generation it points into open:
/// a compaction may move it to a newer one ([`crate::nodes`]).
pub struct Stub {
    hash: Hash32,
    place: Mutex<(u64, Arc<GenFile>)>,
}

impl Stub {
    /// The node's hash, which its parent holds.
    pub(crate) fn hash(&self) -> &Hash32 {
        &self.hash
    }

    /// Where the node is: its location and the file generation.
    pub(crate) fn place(&self) -> (u64, Arc<GenFile>) {
        self.place.lock().clone()
    }

    /// Loads the node, checked against its hash.
    pub(crate) fn load(&self) -> Result<Node, Error> {
        let (loc, file) = self.place();
        file.load(loc, &self.hash)
    }
}

impl Leaf {
    /// The key and the value.
    pub(crate) fn entry(&self) -> (&[u8], &[u8]) {
        self.data.split_at(self.key_len as usize)
    }
}

impl Branch {
    /// A new branch over `slots` (at least two, in slot order): hashed, or fresh for its
    /// commit to hash ([`crate::hashing`]).
    pub(crate) fn from_slots(
        pos: u16,
        prefix: Bytes,
        slots: Slots,
        loc: u64,
        hashing: Hashing,
    ) -> Branch {
        let (mut mask, mut inline_mask, mut class) = (0u32, 0u32, 0u8);
        for (slot, child) in &slots {
            mask |= 1 << slot;
            if let Child::Inline(leaf) = child {
                inline_mask |= 1 << slot;
                class = class.max(leaf.as_ref().class());
            }
        }
        let hash = match hashing {
            Hashing::Now => Some(branch_hash_of(
                pos,
                mask,
                inline_mask,
                slots.iter().map(|(_, c)| c.piece()),
            )),
            Hashing::Later | Hashing::Stage => None,
        };
        let parts = Parts {
            hash,
            staged: 0,
            loc,
            pos,
            mask,
            inline_mask,
            class,
            prefix,
        };
        build_with(parts, hashing, |builder, encoder| {
            for (_, child) in slots {
                put_child(builder, encoder, child);
            }
        })
    }

    /// This branch with `changes` applied (new contents by slot, in slot order, each slot at
    /// most once): nothing, the one remaining child, or a new, fresh branch. One pass over the
    /// slots writes the new branch's child handles, its inline leaves and its staged encoding
    /// straight into place: unchanged children from this branch, changed ones moved in.
    fn edit(
        &self,
        mut changes: SmallVec<[(usize, Option<Child>); 4]>,
        writes: usize,
    ) -> Option<Child> {
        let (mut mask, mut inline_mask, mut changed) = (self.mask, self.inline_mask, 0u32);
        let mut class = 0;
        for (slot, child) in &changes {
            let bit = 1u32 << slot;
            changed |= bit;
            mask &= !bit;
            inline_mask &= !bit;
            match child {
                None => {}
                Some(Child::Node(_)) => mask |= bit,
                Some(Child::Inline(leaf)) => {
                    mask |= bit;
                    inline_mask |= bit;
                    class = class.max(leaf.as_ref().class());
                }
            }
        }
        match mask.count_ones() {
            0 => return None,
            1 => return Some(self.only_child(changes, mask)),
            _ => {}
        }
        let parts = Parts {
            hash: None,
            staged: 0,
            loc: 0,
            pos: self.pos,
            mask,
            inline_mask,
            class: class.max(self.kept_class(changed)),
            prefix: self.prefix.clone(),
        };
        let old_nodes = self.nodes();
        let branch = build_with(parts, Hashing::fresh(writes), |builder, encoder| {
            builder.copy_of(self);
            let (mut nodes, mut leaves, mut next) = (0, 0, 0);
            // Every slot that was, is, or was written to (a delete of a missing key included).
            for slot in set_bits(self.mask | mask | changed) {
                let bit = 1u32 << slot;
                let was_inline = self.inline_mask & bit != 0;
                if changed & bit != 0 {
                    match self.mask & bit != 0 {
                        true if was_inline => leaves += 1,
                        true => nodes += 1,
                        false => {}
                    }
                    if let Some(child) = changes[next].1.take() {
                        put_child(builder, encoder, child);
                    }
                    next += 1;
                } else if was_inline {
                    let leaf = self.leaf(leaves);
                    leaves += 1;
                    encoder.child(Piece::Inline(leaf.record()));
                    builder.push_leaf(leaf);
                } else {
                    let node = &old_nodes[nodes];
                    nodes += 1;
                    encoder.node(node);
                    builder.push_kept(slot, node);
                }
            }
        });
        Some(Child::Node(branch.into_node()))
    }

    /// The stride class the inline leaves this branch keeps need when the slots in `changed`
    /// are rewritten: that of the longest of them.
    fn kept_class(&self, changed: u32) -> u8 {
        let kept = self.inline_mask & !changed;
        if kept == self.inline_mask {
            return self.class();
        }
        let (mut class, mut i) = (0, 0);
        for slot in set_bits(self.inline_mask) {
            if kept & (1 << slot) != 0 {
                class = class.max(self.leaf(i).class());
            }
            i += 1;
        }
        class
    }

    /// The one child left in `mask` once `changes` are applied: moved out of `changes`, or
    /// copied from this branch.
    fn only_child(&self, changes: SmallVec<[(usize, Option<Child>); 4]>, mask: u32) -> Child {
        let slot = mask.trailing_zeros() as usize;
        for (s, child) in changes {
            if s == slot {
                return child.expect("an occupied slot");
            }
        }
        self.slot(slot).expect("an occupied slot").owned()
    }

    /// The handle a parent holds.
    pub(crate) fn into_node(self) -> Node {
        Node::Branch(self.shape(), self)
    }

    /// What slot `slot` holds.
    #[inline]
    pub(crate) fn slot(&self, slot: usize) -> Option<Slot<'_>> {
        let bit = 1u32 << slot;
        if self.inline_mask & bit != 0 {
            Some(Slot::Inline(self.leaf(rank(self.inline_mask, slot))))
        } else if self.mask & bit != 0 {
            let node_mask = self.mask & !self.inline_mask;
            Some(Slot::Node(&self.nodes()[rank(node_mask, slot)]))
        } else {
            None
        }
    }

    /// Every occupied slot, in slot order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (usize, Slot<'_>)> {
        (0..SLOTS).filter_map(move |s| self.slot(s).map(|c| (s, c)))
    }

    /// The slots that hold child nodes, in slot order, with those nodes.
    pub(crate) fn node_slots(&self) -> impl Iterator<Item = (usize, &Node)> {
        let node_mask = self.mask & !self.inline_mask;
        (0..SLOTS)
            .filter(move |s| node_mask & (1 << s) != 0)
            .zip(self.nodes())
    }

    /// A copy with other child nodes (same slots, in slot order), the same inline leaves, hash
    /// and location: for trimming and loading, which change where nodes live, never what they
    /// hold.
    fn with_nodes(&self, nodes: impl IntoIterator<Item = Node>) -> Branch {
        let parts = Parts {
            hash: Some(*self.hash()),
            staged: 0,
            loc: self.loc.load(AtomicOrdering::Acquire),
            pos: self.pos,
            mask: self.mask,
            inline_mask: self.inline_mask,
            class: self.class(),
            prefix: self.prefix.clone(),
        };
        Branch::new(parts, nodes, self.leaves())
    }
}

/// Builds a branch of `parts`, letting `fill` push its children in slot order and, for a staged
/// branch, write their hashes into its encoding at the same time.
pub(crate) fn build_with(
    parts: Parts,
    hashing: Hashing,
    fill: impl FnOnce(&mut Builder, &mut Encoder),
) -> Branch {
    let (pos, mask, inline_mask) = (parts.pos, parts.mask, parts.inline_mask);
    let mut builder = Builder::new(parts);
    match hashing {
        Hashing::Stage => {
            let owner = builder.addr();
            let staged = crate::hashing::stage(pos, mask, inline_mask, owner, |encoder| {
                fill(&mut builder, encoder);
            });
            builder.set_staged(staged);
            let branch = builder.finish();
            if staged != 0 {
                crate::hashing::hold(&branch);
            }
            branch
        }
        Hashing::Now | Hashing::Later => {
            fill(&mut builder, &mut Encoder::off());
            builder.finish()
        }
    }
}

/// Moves `child` into the branch being built, in the next slot its masks name, and its piece
/// into the encoding.
fn put_child(builder: &mut Builder, encoder: &mut Encoder, child: Child) {
    match child {
        Child::Node(node) => {
            encoder.node(&node);
            builder.push_node(node);
        }
        Child::Inline(leaf) => {
            encoder.child(Piece::Inline(leaf.record()));
            builder.push_leaf(leaf.as_ref());
        }
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

    /// The canonical subtree over `slots` (in slot order) at a split on `pos`: none, the single
    /// child, a bucket if all their keys fit one ([`crate::bucket`]), or a new branch.
    pub(crate) fn from_children(
        pos: usize,
        prefix: &[u8],
        mut slots: Slots,
        writes: usize,
    ) -> Result<Option<Child>, Error> {
        match slots.len() {
            0 => Ok(None),
            1 => Ok(slots.pop().map(|(_, child)| child)),
            _ => {
                let children: SmallVec<[Slot; SLOTS]> =
                    slots.iter().map(|(_, child)| child.as_slot()).collect();
                if let Some(bucket) = bucket::gather(&children, writes)? {
                    return Ok(Some(bucket));
                }
                drop(children);
                let prefix = Bytes::from_slice(&prefix[..pos.div_ceil(2)]);
                let hashing = Hashing::fresh(writes);
                let branch = Branch::from_slots(pos as u16, prefix, slots, 0, hashing);
                Ok(Some(Child::Node(branch.into_node())))
            }
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

    pub(crate) fn decoded_branch(pos: u16, prefix: Bytes, slots: Slots, loc: u64) -> Node {
        Branch::from_slots(pos, prefix, slots, loc, Hashing::Now).into_node()
    }

    pub(crate) fn stub(hash: Hash32, loc: u64, file: Arc<GenFile>) -> Node {
        Node::Stub(Arc::new(Stub {
            hash,
            place: Mutex::new((loc, file)),
        }))
    }

    /// The node's hash. A leaf's is computed on first use (in practice, when its parent is
    /// built); a branch's by the commit that built it, before the commit returns
    /// ([`crate::hashing`]).
    pub fn hash(&self) -> &Hash32 {
        match self {
            Node::Leaf(leaf) => leaf.hash.get_or_init(|| {
                let (key, value) = leaf.entry();
                leaf_hash(key, value)
            }),
            Node::Branch(_, b) => b.hash(),
            Node::Stub(stub) => &stub.hash,
        }
    }

    /// Where the node file holds this node; 0 if it is not there yet.
    pub(crate) fn location(&self) -> u64 {
        match self {
            Node::Leaf(leaf) => leaf.loc.load(AtomicOrdering::Acquire),
            Node::Branch(_, b) => b.loc.load(AtomicOrdering::Acquire),
            Node::Stub(stub) => stub.place.lock().0,
        }
    }

    /// Records that `file` holds this node at `loc`.
    pub(crate) fn set_location(&self, loc: u64, file: &Arc<GenFile>) {
        match self {
            Node::Leaf(leaf) => leaf.loc.store(loc, AtomicOrdering::Release),
            Node::Branch(_, b) => b.loc.store(loc, AtomicOrdering::Release),
            Node::Stub(stub) => *stub.place.lock() = (loc, file.clone()),
        }
    }

    /// How many handles point to this node.
    #[cfg(test)]
    pub(crate) fn strong_count(&self) -> usize {
        self.touch()
    }

    /// Reads the reference count: a plain load that brings the node's first line into cache.
    fn touch(&self) -> usize {
        match self {
            Node::Leaf(leaf) => Arc::strong_count(leaf),
            Node::Branch(_, b) => b.strong_count(),
            Node::Stub(stub) => Arc::strong_count(stub),
        }
    }

    /// Asks for the line holding this node's reference count (and a branch's hash) to be
    /// loaded, without waiting for it.
    pub(crate) fn prefetch_head(&self) {
        match self {
            Node::Branch(_, b) => b.prefetch_head(),
            _ => crate::branch::prefetch_read(self.addr()),
        }
    }

    /// Where the node lives in memory (its reference count is on that line or the one before),
    /// to prefetch.
    pub(crate) fn addr(&self) -> *const u8 {
        match self {
            Node::Leaf(leaf) => Arc::as_ptr(leaf) as *const u8,
            Node::Branch(_, b) => b.addr() as *const u8,
            Node::Stub(stub) => Arc::as_ptr(stub) as *const u8,
        }
    }

    pub(crate) fn ptr_eq(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Leaf(a), Node::Leaf(b)) => Arc::ptr_eq(a, b),
            (Node::Branch(_, a), Node::Branch(_, b)) => a.ptr_eq(b),
            (Node::Stub(a), Node::Stub(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The hash of a leaf.
pub fn leaf_hash(key: &[u8], value: &[u8]) -> Hash32 {
    // Most leaves are small: one contiguous input costs one `blake3::hash` call instead of four
    // `update`s, about half the instructions of a one-block hash.
    const SMALL: usize = 128;
    let len = 3 + key.len() + value.len();
    if len <= SMALL {
        let mut buf = [0u8; SMALL];
        buf[1..3].copy_from_slice(&(key.len() as u16).to_le_bytes());
        buf[3..3 + key.len()].copy_from_slice(key);
        buf[3 + key.len()..len].copy_from_slice(value);
        return *blake3::hash(&buf[..len]).as_bytes();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0]);
    hasher.update(&(key.len() as u16).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    *hasher.finalize().as_bytes()
}

/// Bytes of a branch encoding's header: the tag, `pos`, the slot mask and the inline mask.
pub(crate) const BRANCH_HEADER: usize = 11;

/// Bytes of the longest branch encoding, padded: `11 + 17 * 48 = 827`, to a multiple of 64.
pub(crate) const BRANCH_ENCODING_MAX: usize = 832;

impl Branch {
    /// The unpadded length of this branch's encoding: where a piece past the last slot would
    /// start.
    pub(crate) fn encoding_len(&self) -> usize {
        self.piece_offset(SLOTS)
    }

    /// Where the piece of the child in `slot` (up to [`SLOTS`]) starts in this branch's
    /// encoding.
    pub(crate) fn piece_offset(&self, slot: usize) -> usize {
        let below = self.mask & ((1u32 << slot) - 1);
        let nodes = (below & !self.inline_mask).count_ones() as usize;
        let inline = (below & self.inline_mask).count_ones() as usize;
        let records: usize = self.leaves().take(inline).map(|l| l.record().len()).sum();
        BRANCH_HEADER + 32 * nodes + records
    }
}

/// The first bytes of a branch's encoding ([`encode_branch`]).
pub(crate) fn branch_header(pos: u16, mask: u32, inline_mask: u32) -> [u8; BRANCH_HEADER] {
    let mut header = [0u8; BRANCH_HEADER];
    header[0] = 1;
    header[1..3].copy_from_slice(&pos.to_le_bytes());
    header[3..7].copy_from_slice(&mask.to_le_bytes());
    header[7..11].copy_from_slice(&inline_mask.to_le_bytes());
    header
}

/// Writes the encoding of a branch into `buf` and returns its length: `1`, `pos` (`u16`, little
/// endian), the slot mask and the inline mask (`u32`, little endian), each child's piece in
/// slot order (at most 17: a node's hash, or an inline leaf's record), then zeros up to a
/// multiple of 64 bytes (BLAKE3's block), so that branches whose encodings take the same number
/// of blocks hash as equal-length messages, several at once ([`crate::hashing`]). The padding
/// costs no compression: BLAKE3 pads a last partial block anyway.
pub(crate) fn encode_branch<'a>(
    pos: u16,
    mask: u32,
    inline_mask: u32,
    pieces: impl Iterator<Item = Piece<'a>>,
    buf: &mut [u8],
) -> usize {
    buf[..BRANCH_HEADER].copy_from_slice(&branch_header(pos, mask, inline_mask));
    let mut len = BRANCH_HEADER;
    for piece in pieces.take(17) {
        let bytes = piece.bytes();
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    }
    let padded = len.next_multiple_of(64);
    buf[len..padded].fill(0);
    padded
}

/// The hash of a branch from its children's pieces, in slot order (at most 17): BLAKE3 of its
/// encoding ([`encode_branch`]).
pub fn branch_hash_of<'a>(
    pos: u16,
    mask: u32,
    inline_mask: u32,
    pieces: impl Iterator<Item = Piece<'a>>,
) -> Hash32 {
    let mut buf = [0u8; BRANCH_ENCODING_MAX];
    let len = encode_branch(pos, mask, inline_mask, pieces, &mut buf);
    *blake3::hash(&buf[..len]).as_bytes()
}

/// The commitment of the empty state.
pub fn empty_hash() -> Hash32 {
    *blake3::hash(b"peregrine v3 empty state").as_bytes()
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

/// `a` against `b` in key order. Most keys differ in their first eight bytes, which compare as
/// one integer here, without a call to `memcmp`: a bucket's scan compares a key per record.
#[inline]
pub(crate) fn key_order(a: &[u8], b: &[u8]) -> Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
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
pub(crate) type Entry<'a> = (&'a [u8], &'a [u8]);

/// How a commit runs: whether it may spread over the rayon pool.
#[derive(Clone, Copy)]
pub(crate) struct Ctx {
    pub parallel: bool,
    /// Whether the writes being applied were scouted above ([`crate::scout`]).
    pub scouted: bool,
}

impl Ctx {
    /// A commit's context before its descent starts.
    pub(crate) fn new(parallel: bool) -> Ctx {
        Ctx {
            parallel,
            scouted: false,
        }
    }

    /// The context for applying `writes` under `node`: once the writes are few enough for
    /// their paths to stay in cache, they are scouted, once.
    fn scouting(self, node: &Node, writes: &[Change]) -> Ctx {
        if self.scouted || writes.len() < 2 || writes.len() > crate::scout::SCOUT_WRITES {
            return self;
        }
        crate::scout::scout(node, writes);
        Ctx {
            scouted: true,
            ..self
        }
    }
}

/// The value under `key`.
pub(crate) fn get(mut node: &Node, key: &[u8]) -> Result<Option<Bytes>, Error> {
    loop {
        match step(node, key) {
            Step::Leaf(entry) => return Ok(value_if(entry, key)),
            Step::Absent => return Ok(None),
            Step::Down(child) => node = child,
            Step::Stub(stub) => return get(&stub.load()?, key),
        }
    }
}

/// Where a lookup goes from one node.
enum Step<'a> {
    /// To this leaf's entry: the value, if the key is the one looked up.
    Leaf((&'a [u8], &'a [u8])),
    /// Nowhere: the key is absent.
    Absent,
    /// On to this child.
    Down(&'a Node),
    /// The node is only on disk.
    Stub(&'a Stub),
}

/// One level of a lookup of `key` at `node`. The addresses come from the handle's shape, so the
/// loads issue before the branch's header arrives.
#[inline(always)]
fn step<'a>(node: &'a Node, key: &[u8]) -> Step<'a> {
    match node {
        Node::Leaf(leaf) => Step::Leaf(leaf.entry()),
        Node::Branch(shape, b) if shape.pos() == usize::from(BUCKET) => {
            match b.bucket_leaf(*shape, key) {
                Some(leaf) => Step::Leaf(leaf.entry()),
                None => Step::Absent,
            }
        }
        Node::Branch(shape, b) => {
            let slot = nibble(key, shape.pos());
            if let Some(leaf) = b.leaf_in(*shape, slot) {
                return Step::Leaf(leaf.entry());
            }
            match b.node_in(*shape, slot) {
                Some(child) => {
                    // A bucket is scanned record by record: ask for all its lines at once.
                    if let Node::Branch(shape, bucket) = child {
                        if shape.pos() == usize::from(BUCKET) {
                            bucket.prefetch_body(*shape);
                        }
                    }
                    Step::Down(child)
                }
                None => Step::Absent,
            }
        }
        Node::Stub(stub) => Step::Stub(stub),
    }
}

/// Lookups [`fill`] walks in step.
const WALK: usize = 16;

/// Answers every key whose entry in `out` is `None` (the others were answered above this
/// trie) from the trie at `root` (`None`: the empty trie). The lookups go down together, a
/// level of each in turn, so the cache misses of different keys overlap instead of waiting one
/// key after another: a lookup in a big trie is a chain of misses, each level's address known
/// only once the level above has arrived.
pub(crate) fn fill(
    root: Option<&Node>,
    keys: &[&[u8]],
    out: &mut [Option<Option<Bytes>>],
) -> Result<(), Error> {
    let Some(root) = root else {
        // The empty trie: every key not answered above is absent.
        out.iter_mut().for_each(|answer| {
            answer.get_or_insert(None);
        });
        return Ok(());
    };
    let mut walking: SmallVec<[(usize, &Node); WALK]> = SmallVec::new();
    for i in 0..keys.len() {
        if out[i].is_none() {
            walking.push((i, root));
        }
        if walking.len() == WALK || i + 1 == keys.len() {
            walk(&mut walking, keys, out)?;
        }
    }
    Ok(())
}

/// Takes each lookup in `walking` one level down per round until all are answered.
fn walk(
    walking: &mut SmallVec<[(usize, &Node); WALK]>,
    keys: &[&[u8]],
    out: &mut [Option<Option<Bytes>>],
) -> Result<(), Error> {
    while !walking.is_empty() {
        let mut j = 0;
        while j < walking.len() {
            let (i, node) = walking[j];
            let answer = match step(node, keys[i]) {
                Step::Down(child) => {
                    walking[j].1 = child;
                    j += 1;
                    continue;
                }
                Step::Leaf(entry) => value_if(entry, keys[i]),
                Step::Absent => None,
                Step::Stub(stub) => get(&stub.load()?, keys[i])?,
            };
            out[i] = Some(answer);
            walking.swap_remove(j);
        }
    }
    Ok(())
}

fn value_if((k, v): (&[u8], &[u8]), key: &[u8]) -> Option<Bytes> {
    (k == key).then(|| Bytes::from_slice(v))
}

/// `node` itself, or the node its stub stands for.
pub(crate) fn resolve(node: &Node) -> Result<Node, Error> {
    match node {
        Node::Stub(stub) => stub.load(),
        _ => Ok(node.clone()),
    }
}

/// Writes under which a commit hashes a subtree as soon as it is built ([`hash_chunk`]).
const HASH_BATCH_WRITES: usize = 256;

/// When a new branch is hashed.
#[derive(Clone, Copy)]
pub(crate) enum Hashing {
    /// As it is built (a branch read back from disk, whose hash is checked).
    Now,
    /// By its commit's hashing pass, which reads its children's hashes then.
    Later,
    /// By its commit's hashing pass, from an encoding written now, while its children's hashes
    /// are in cache ([`crate::hashing::stage`]): in subtrees that are hashed right after they
    /// are built.
    Stage,
}

impl Hashing {
    /// How a commit hashes a branch it builds from `writes` writes.
    pub(crate) fn fresh(writes: usize) -> Hashing {
        if writes < HASH_BATCH_WRITES {
            Hashing::Stage
        } else {
            Hashing::Later
        }
    }
}

/// A subtree and the change in its key count.
pub(crate) type Applied = (Option<Child>, i64);

/// Applies `writes` (sorted by key, unique, non-empty) to the tree at `root`: the new root and
/// the change in the key count.
pub(crate) fn apply(
    ctx: Ctx,
    root: Option<&Node>,
    writes: &[Change],
) -> Result<(Option<Node>, i64), Error> {
    let (root, added) = apply_node(ctx, root, writes)?;
    let root = root.map(Child::into_node);
    if let Some(root) = &root {
        let parallel = ctx.parallel && writes.len() >= PARALLEL_MIN_WRITES;
        crate::hashing::hash_fresh(root, parallel);
    }
    Ok((root, added))
}

/// Applies `writes` to the subtree in one slot.
fn apply_slot(ctx: Ctx, slot: Option<Slot>, writes: &[Change]) -> Result<Applied, Error> {
    match slot {
        None => apply_node(ctx, None, writes),
        Some(Slot::Node(node)) => apply_node(ctx, Some(node), writes),
        Some(Slot::Inline(leaf)) => {
            apply_leaf(ctx, Child::Inline(leaf.to_inline()), leaf.entry(), writes)
        }
    }
}

/// Applies `writes` to the subtree at `node`.
fn apply_node(ctx: Ctx, node: Option<&Node>, writes: &[Change]) -> Result<Applied, Error> {
    let Some(node) = node else {
        if let [(key, value)] = writes {
            // The common insert into an empty slot: one leaf, and no list to gather it in.
            let leaf = value.as_deref().map(|v| Child::leaf(key, v));
            let added = i64::from(leaf.is_some());
            return Ok((leaf, added));
        }
        let puts: Vec<Entry> = writes
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
            .collect();
        let added = puts.len() as i64;
        return Ok((build(ctx, &puts)?, added));
    };
    match node {
        Node::Leaf(leaf) => apply_leaf(
            ctx,
            Child::of_leaf_node(node, leaf.entry()),
            leaf.entry(),
            writes,
        ),
        Node::Branch(_, b) if b.pos == BUCKET => bucket::apply(ctx, b, writes),
        Node::Branch(_, b) => {
            let ctx = ctx.scouting(node, writes);
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
            let loaded = stub.load()?;
            apply_node(ctx, Some(&loaded), writes)
        }
    }
}

/// Applies `writes` to a one-key subtree: `leaf`, which holds `key` and `value`.
fn apply_leaf(
    ctx: Ctx,
    leaf: Child,
    (key, value): Entry,
    writes: &[Change],
) -> Result<Applied, Error> {
    if let [(k, new)] = writes {
        if k.as_slice() == key {
            return Ok(match new {
                Some(new) if new.as_slice() == value => (Some(leaf), 0),
                Some(new) => (Some(Child::leaf(key, new)), 0),
                None => (None, -1),
            });
        }
        // The common insert: one new key beside this leaf, under a new two-way branch (two keys
        // differ where they split, so they never make a bucket; the parent may gather them).
        return Ok(match new {
            None => (Some(leaf), 0),
            Some(new) => {
                let pos = common_nibbles(key, k);
                let old = (nibble(key, pos), leaf.clone());
                let new = (nibble(k, pos), Child::leaf(k, new));
                let slots = if old.0 < new.0 {
                    [old, new]
                } else {
                    [new, old]
                };
                (
                    Node::from_children(pos, key, Slots::from_iter(slots), 1)?,
                    1,
                )
            }
        });
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
    Ok((build(ctx, &merged)?, added))
}

/// Writes that all share the branch's prefix: grouped by the nibble at `pos`.
fn apply_branch(ctx: Ctx, b: &Branch, writes: &[Change]) -> Result<Applied, Error> {
    let pos = b.pos as usize;
    warm(b.nodes());
    warm_leaves(b);
    let mut changes: SmallVec<[(usize, Option<Child>); 4]> = SmallVec::new();
    let mut added = 0;
    if let [(key, _)] = writes {
        // The common deep case: one write, one child to rebuild.
        let slot = nibble(key, pos);
        let (child, delta) = apply_slot(ctx, b.slot(slot), writes)?;
        changes.push((slot, child));
        added = delta;
    } else {
        let groups = group_by_nibble(writes, pos);
        let results = run_groups(ctx, writes.len(), &groups, |slot, group| {
            apply_slot(ctx, b.slot(slot), group)
        })?;
        for (slot, (child, delta)) in results {
            added += delta;
            changes.push((slot, child));
        }
    }
    if let Some(bucket) = gathered(b, &changes, writes.len())? {
        return Ok((Some(bucket), added));
    }
    Ok((b.edit(changes, writes.len()), added))
}

/// The bucket branch `b` becomes once `changes` are applied, if its keys now make one: a
/// second key in a slot of a flat branch, a delete, or a value shrunk to fit inline can bring
/// a branch's subtree to that. The masks rule out almost every branch before any child is
/// looked at.
fn gathered(
    b: &Branch,
    changes: &[(usize, Option<Child>)],
    writes: usize,
) -> Result<Option<Child>, Error> {
    let (mut inline, mut nodes) = (b.inline_mask, b.mask & !b.inline_mask);
    for (slot, child) in changes {
        let bit = 1u32 << slot;
        inline &= !bit;
        nodes &= !bit;
        match child {
            Some(Child::Inline(_)) => inline |= bit,
            Some(Child::Node(_)) => nodes |= bit,
            None => {}
        }
    }
    let least = inline.count_ones() + 2 * nodes.count_ones();
    if nodes == 0 || (inline | nodes).count_ones() < 2 || least as usize > BUCKET_KEYS {
        return Ok(None);
    }
    let slots: SmallVec<[Slot; SLOTS]> = set_bits(inline | nodes)
        .map(
            |slot| match changes.iter().find(|(changed, _)| *changed == slot) {
                Some((_, child)) => child.as_ref().expect("an occupied slot").as_slot(),
                None => b.slot(slot).expect("an occupied slot"),
            },
        )
        .collect();
    bucket::gather(&slots, writes)
}

/// Reads every child node once with plain, independent loads, so their cache misses overlap.
/// A copy then reads each kept child's hash for its encoding; a copy that counts its children
/// (one that cannot borrow them: `branch`, "Lending") and a free that releases them follow with
/// locked instructions, which the processor does not overlap: without this, each paid one full
/// memory latency per child.
pub(crate) fn warm<'a>(nodes: impl IntoIterator<Item = &'a Node>) {
    let touched = nodes
        .into_iter()
        .fold(0usize, |acc, child| acc ^ child.touch());
    std::hint::black_box(touched);
}

/// Reads every inline leaf's record with independent loads, for the same reason: the copy of the
/// leaves and the new branch's encoding follow.
fn warm_leaves(b: &Branch) {
    let touched = b
        .leaf_bytes()
        .iter()
        .step_by(64)
        .fold(0u8, |acc, byte| acc ^ byte);
    let last = b.leaf_bytes().last().copied().unwrap_or(0);
    std::hint::black_box(touched ^ last);
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
        apply_node(ctx, (slot == old_slot).then_some(&node), group)
    })?;
    let mut slots = Slots::new();
    let mut old = Some(Child::Node(node.clone()));
    let mut added = 0;
    for (slot, (child, delta)) in results {
        added += delta;
        if slot == old_slot {
            old = None;
        } else if slot > old_slot {
            if let Some(old) = old.take() {
                slots.push((old_slot, old));
            }
        }
        if let Some(child) = child {
            slots.push((slot, child));
        }
    }
    if let Some(old) = old {
        slots.push((old_slot, old));
    }
    Ok((
        Node::from_children(split, prefix, slots, writes.len())?,
        added,
    ))
}

/// Runs `f` on each group of writes, on the rayon pool when the batch is big enough
/// ([`in_chunks`]).
fn run_groups<'w>(
    ctx: Ctx,
    total: usize,
    groups: &[Group<'w, Change>],
    f: impl Fn(usize, &'w [Change]) -> Result<Applied, Error> + Sync,
) -> Result<SmallVec<[(usize, Applied); 4]>, Error> {
    in_chunks(ctx, total, groups, f, |(child, _)| child.as_ref())
}

/// Runs `f` on each group, on the rayon pool when the batch is big enough. Under a parent of
/// at least [`HASH_BATCH_WRITES`] writes, consecutive groups of fewer are run together in
/// chunks of up to that many writes, on one thread, and each chunk's new subtrees (`child` of
/// each result) are hashed together right after it is built ([`hash_chunk`]).
fn in_chunks<'w, T: Sync, R: Send>(
    ctx: Ctx,
    total: usize,
    groups: &[Group<'w, T>],
    f: impl Fn(usize, &'w [T]) -> Result<R, Error> + Sync,
    child: impl Fn(&R) -> Option<&Child> + Sync,
) -> Result<SmallVec<[(usize, R); 4]>, Error> {
    let run = |chunk: &[Group<'w, T>]| {
        let results = chunk
            .iter()
            .map(|&(slot, group)| Ok((slot, f(slot, group)?)))
            .collect::<Result<SmallVec<[(usize, R); 4]>, Error>>()?;
        let children = results.iter().map(|(_, result)| child(result));
        hash_chunk(total, chunk, children);
        Ok(results)
    };
    let chunks = hash_chunks(total, groups);
    if ctx.parallel && total >= PARALLEL_MIN_WRITES && chunks.len() > 1 {
        let results: Result<Vec<_>, Error> =
            chunks.par_iter().with_max_len(1).map(|c| run(c)).collect();
        Ok(results?.into_iter().flatten().collect())
    } else {
        let mut all = SmallVec::new();
        for chunk in chunks {
            all.extend(run(chunk)?);
        }
        Ok(all)
    }
}

/// A run of sorted writes (or entries) with one nibble at a branch's position, and that
/// nibble's slot.
type Group<'w, T> = (usize, &'w [T]);

/// `groups` cut into runs of consecutive groups: under a parent of at least
/// [`HASH_BATCH_WRITES`] writes, groups of fewer writes together up to that many, and each
/// bigger group alone; under a smaller parent, one run of them all.
fn hash_chunks<'g, 'w, T>(
    total: usize,
    groups: &'g [Group<'w, T>],
) -> SmallVec<[&'g [Group<'w, T>]; 17]> {
    if total < HASH_BATCH_WRITES {
        return SmallVec::from_iter([groups]);
    }
    let mut chunks = SmallVec::new();
    let (mut start, mut writes) = (0, 0);
    for (i, (_, group)) in groups.iter().enumerate() {
        let small = group.len() < HASH_BATCH_WRITES;
        if i > start && (!small || writes + group.len() > HASH_BATCH_WRITES) {
            chunks.push(&groups[start..i]);
            (start, writes) = (i, 0);
        }
        writes += group.len();
        if !small {
            chunks.push(&groups[start..=i]);
            (start, writes) = (i + 1, 0);
        }
    }
    if start < groups.len() {
        chunks.push(&groups[start..]);
    }
    chunks
}

/// Hashes the fresh subtrees a chunk of groups built from fewer than [`HASH_BATCH_WRITES`]
/// writes each (`children`, one per group, in order), under a parent built from more, right
/// after building them: their nodes and their children's hashes are still in cache, where a
/// pass over the whole tree at the end of the commit would load every one of them again from
/// memory. Several small subtrees hashed together fill the hash's SIMD lanes better than each
/// alone.
fn hash_chunk<'c, T>(
    parent_writes: usize,
    chunk: &[Group<'_, T>],
    children: impl Iterator<Item = Option<&'c Child>>,
) {
    if parent_writes < HASH_BATCH_WRITES {
        return;
    }
    let small = chunk
        .iter()
        .zip(children)
        .filter_map(|((_, group), child)| match child {
            Some(Child::Node(node)) if group.len() < HASH_BATCH_WRITES => Some(node),
            _ => None,
        });
    crate::hashing::hash_fresh_subtrees(small);
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
pub(crate) fn build(ctx: Ctx, entries: &[Entry]) -> Result<Option<Child>, Error> {
    match entries {
        [] => Ok(None),
        [(k, v)] => Ok(Some(Child::leaf(k, v))),
        _ => {
            if let Some(bucket) = bucket::of_entries(entries, entries.len()) {
                return Ok(Some(bucket));
            }
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
            let build_group =
                |_, group: &[Entry]| Ok(build(ctx, group)?.expect("a non-empty group"));
            let slots: Slots = in_chunks(ctx, entries.len(), &groups, build_group, |c| Some(c))?;
            Node::from_children(pos, first, slots, entries.len())
        }
    }
}

/// The tree under `node` with every node at depth `keep` or deeper that `file` holds replaced
/// by a stub, so it no longer holds those nodes in memory. Nodes not in `file` (unpersisted, or
/// in an older generation that the next checkpoint copies) stay resident.
pub(crate) fn trim(node: &Node, depth: usize, keep: usize, file: &Arc<GenFile>) -> Node {
    let loc = node.location();
    if depth >= keep && file.holds(loc) {
        return match node {
            Node::Stub(_) => node.clone(),
            _ => Node::stub(*node.hash(), loc, file.clone()),
        };
    }
    let Node::Branch(_, b) = node else {
        return node.clone();
    };
    let trimmed: SmallVec<[Node; SLOTS]> = b
        .nodes()
        .iter()
        .map(|c| trim(c, depth + 1, keep, file))
        .collect();
    if trimmed.iter().zip(b.nodes()).all(|(a, c)| a.ptr_eq(c)) {
        return node.clone();
    }
    b.with_nodes(trimmed).into_node()
}

/// Loads the node a stub stands for, checked against its hash.
pub(crate) type Loader<'a> = dyn Fn(&Stub) -> Result<Node, Error> + Sync + 'a;

/// Levels of a preload whose children load in parallel: below them, 256 subtrees share the pool.
const PARALLEL_PRELOAD_LEVELS: usize = 2;

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
        Node::Stub(stub) => load(stub)?,
        _ => node.clone(),
    };
    let Node::Branch(_, b) = &node else {
        return Ok(node);
    };
    let children = b.nodes();
    let child = |c: &Node| preload(c, depth + 1, keep, load);
    let loaded: SmallVec<[Node; SLOTS]> = if depth < PARALLEL_PRELOAD_LEVELS {
        let loaded: Result<Vec<Node>, Error> = children.par_iter().map(child).collect();
        SmallVec::from_vec(loaded?)
    } else {
        children.iter().map(child).collect::<Result<_, _>>()?
    };
    Ok(b.with_nodes(loaded).into_node())
}

/// Ordered iteration over the leaves in a key range.
pub struct Iter {
    /// Branches being walked, with the next slot to visit and whether the lower bound can still
    /// cut into them.
    stack: Vec<(Branch, usize, bool)>,
    /// The next node to enter, and whether the lower bound can cut into it.
    next: Option<(Node, bool)>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// An error to yield before anything else: the tree could not be had at all.
    failed: Option<Error>,
}

/// What the iterator does with a leaf it reaches.
enum Reached {
    /// The leaf is in range: yield it.
    Yield((Bytes, Bytes)),
    /// The leaf is below the range: go on.
    Skip,
    /// The leaf is past the range: stop.
    Done,
}

impl Iter {
    pub(crate) fn new(root: Option<Node>, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        Self {
            stack: Vec::new(),
            next: root.map(|r| (r, true)),
            start,
            end,
            failed: None,
        }
    }

    /// An iterator that yields `error`, then nothing.
    pub(crate) fn failed(error: Error) -> Self {
        Self {
            failed: Some(error),
            ..Self::new(None, Bound::Unbounded, Bound::Unbounded)
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
            // A bucket's slots are in key order, not by a nibble: each key is compared.
            _ if pos == usize::from(BUCKET) => return Ordering::Equal,
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

    fn reach(&self, (k, v): Entry, bounded: bool) -> Reached {
        if self.after_end(k) {
            Reached::Done
        } else if bounded && self.before_start(k) {
            Reached::Skip
        } else {
            Reached::Yield((Bytes::from_slice(k), Bytes::from_slice(v)))
        }
    }

    fn step(&mut self) -> Result<Option<(Bytes, Bytes)>, Error> {
        loop {
            let reached = if let Some((node, bounded)) = self.next.take() {
                match resolve(&node)? {
                    Node::Leaf(leaf) => self.reach(leaf.entry(), bounded),
                    Node::Branch(_, b) => {
                        self.stack.push((b, 0, bounded));
                        continue;
                    }
                    Node::Stub(_) => unreachable!("resolved above"),
                }
            } else {
                let Some((b, slot, _)) = self.stack.last_mut() else {
                    return Ok(None);
                };
                let Some(found) = (*slot..17).find(|s| b.mask & (1 << s) != 0) else {
                    self.stack.pop();
                    continue;
                };
                *slot = found + 1;
                let (b, _, bounded) = self.stack.last().expect("the branch just visited");
                let still_bounded = *bounded
                    && match self.slot_vs_start(b.pos as usize, &b.prefix, found) {
                        Ordering::Less => continue,
                        Ordering::Equal => true,
                        Ordering::Greater => false,
                    };
                match b.slot(found).expect("a slot in the mask") {
                    Slot::Inline(leaf) => self.reach(leaf.entry(), still_bounded),
                    Slot::Node(child) => {
                        self.next = Some((child.clone(), still_bounded));
                        continue;
                    }
                }
            };
            match reached {
                Reached::Yield(entry) => return Ok(Some(entry)),
                Reached::Skip => continue,
                Reached::Done => {
                    self.stack.clear();
                    return Ok(None);
                }
            }
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.failed.take() {
            return Some(Err(error));
        }
        self.step().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups of the given sizes, each of distinct four-byte keys.
    fn groups_of(sizes: &[usize]) -> (Vec<Change>, Vec<(usize, std::ops::Range<usize>)>) {
        let mut changes = Vec::new();
        let mut ranges = Vec::new();
        for (slot, &n) in sizes.iter().enumerate() {
            let start = changes.len();
            changes.extend((0..n).map(|i| (Bytes::from_slice(&(i as u32).to_be_bytes()), None)));
            ranges.push((slot, start..changes.len()));
        }
        (changes, ranges)
    }

    /// Chunks cover the groups in order, each at most `HASH_BATCH_WRITES` strong unless it is
    /// one bigger group alone; under a small parent there is one chunk.
    #[test]
    fn hash_chunks_cover_the_groups_in_order_within_the_batch() {
        let cases: [&[usize]; 5] = [
            &[39; 16],
            &[300, 10, 10, 500, 255, 1, 256],
            &[100, 100, 100, 56],
            &[3, 4, 5],
            &[256],
        ];
        for sizes in cases {
            let (changes, ranges) = groups_of(sizes);
            let groups: Vec<(usize, &[Change])> = ranges
                .iter()
                .map(|(slot, r)| (*slot, &changes[r.clone()]))
                .collect();
            let total = changes.len();
            let chunks = hash_chunks(total, &groups);
            let flat: Vec<usize> = chunks.iter().flat_map(|c| c.iter().map(|g| g.0)).collect();
            assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>(), "{sizes:?}");
            if total < HASH_BATCH_WRITES {
                assert_eq!(chunks.len(), 1, "{sizes:?}");
                continue;
            }
            for chunk in &chunks {
                let writes: usize = chunk.iter().map(|g| g.1.len()).sum();
                let big = chunk.iter().any(|g| g.1.len() >= HASH_BATCH_WRITES);
                assert!(!chunk.is_empty());
                assert!(
                    writes <= HASH_BATCH_WRITES || (big && chunk.len() == 1),
                    "{sizes:?}"
                );
            }
        }
        let (changes, ranges) = groups_of(&[39; 16]);
        let groups: Vec<(usize, &[Change])> = ranges
            .iter()
            .map(|(s, r)| (*s, &changes[r.clone()]))
            .collect();
        assert_eq!(
            hash_chunks(changes.len(), &groups).len(),
            3,
            "six, six and four"
        );
    }
}
