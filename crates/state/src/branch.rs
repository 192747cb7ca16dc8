//! A branch node's memory: one reference-counted allocation sized to what the branch holds.
//!
//! # Layout
//! `[BranchHead][links][child nodes, by rank][inline leaves, by rank]`: the fixed part
//! (reference count, hash, location, `pos`, slot masks, prefix: 104 bytes), then, in a branch
//! with child nodes, its lending links (24 bytes, "Lending" below), then one [`Node`] handle
//! (16 bytes) for each slot that holds a node of its own, then one inline leaf's record for each
//! slot that holds a leaf inline, both in slot order. A slot's entry is found by its rank among
//! the slots of its kind, so empty slots cost nothing.
//!
//! # Strides
//! Every inline leaf of a branch takes the same number of bytes, its *stride*: the smallest of
//! 16, 24, 32 and 48 that holds the longest record the branch was built with, so a leaf's place
//! still follows from its rank. An 8-byte key with an 8-byte value (an 18-byte record) takes 24
//! bytes instead of 48; a bottom branch of sixteen of them copies 8 lines instead of 14. The
//! stride's class is two bits of the [`Shape`], so a lookup still computes a leaf's address
//! before the branch arrives. It is layout only: the commitment covers records, not strides.
//!
//! # Why not a fixed array of 17 child slots
//! Most branches sit at the bottom of the trie and hold only inline leaves: with a fixed
//! 17-slot array each of them carried 272 bytes of empty child handles, more than three of its
//! leaves (80 bytes each then). Sized to fit, a bottom branch of four leaves took 432 bytes
//! instead of 712, so more of the trie stays in memory, and a commit copies, and a free
//! releases, fewer lines:
//! `memory_profile` at 4M random keys went from 1,030 to 606 MiB, and `commit_profile` at 25M
//! keys from 65–71 to 59–62 ms per commit of 10,000 transfers (2026-11-22).
//!
//! # Reading without the header
//! A parent's handle to a branch carries its [`Shape`]: `pos` and both slot masks. From it a lookup
//! computes the address of the entry it wants (node or inline leaf) before the branch's first
//! line arrives, so a level costs one cache miss, not two.
//!
//! # Building in place
//! A commit copies a branch in one pass over its slots: a [`Builder`] allocates the branch sized
//! by its masks, writes the fixed part, and takes each child handle and inline leaf straight into
//! place, so there is no intermediate list of children to collect and copy again. At 4M keys
//! this took the instructions of a commit from 222M to 188M per block of 10,000 transfers
//! (`callgrind`, 2026-11-23).
//!
//! # Lending
//! A commit copies each branch on a written path and keeps most of its children: before
//! 2026-11-24 the copy counted a new reference to each kept child, and freeing the original,
//! once its revision was pruned, took that count back. Both touched every kept child (with
//! random keys, a cache miss each), and the two cancel out. Now the first copy a commit makes
//! of a branch is its *heir*: it holds the children it keeps without counting them (their
//! `borrowed` slots), on the original's counts; the original, its *lender*, points to it. When
//! the lender is freed ([`hand_over`]), the heir takes over the counts of the children it
//! borrowed, and the lender decrements only the rest. If the heir goes first (an abandoned
//! fork), the lender can lend again. A copy's borrowed children that its lender had itself
//! borrowed stay borrowed, from the lender's own lender, so a chain of copies freed in any
//! order hands each count on exactly once. A second copy of the same branch (another fork)
//! counts its children as before. Every free of a branch with child nodes (only those lend or
//! borrow) holds one lock ([`FREEING`]), so a lender or heir is never freed while its neighbour
//! hands over; a commit only ever sets the heir of a branch that has none, which no free
//! changes.
//!
//! # Safety
//! A [`Builder`], then the [`Branch`] it finishes into, is the only owner of the raw allocation;
//! a builder dropped half-built releases exactly the children it was given. A `Shape` is only
//! ever made from the branch it is stored beside ([`Branch::shape`]), and every unchecked access
//! is bounded by counts that the constructor wrote and the masks agree with. This is the state
//! crate's only `unsafe` code: a fixed-size node type would waste the memory this module exists
//! to save.
#![allow(unsafe_code)]

use crate::recycle;
use crate::trie::{Hash32, InlineRef, Node};
use crate::Bytes;
use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::ptr::{self, NonNull};
use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Slots per branch: 16 nibbles and the terminator.
pub(crate) const SLOTS: usize = 17;

/// A branch's fixed part. Laid out in field order: the reference count and the hash share the
/// first line, which copying a branch's parent loads anyway.
#[repr(C)]
pub struct BranchHead {
    count: AtomicUsize,
    /// From the children's hashes: given when the branch is built, or, for a *fresh* branch
    /// (built by a commit), written once by that commit's hashing pass ([`Branch::set_hash`]).
    hash: UnsafeCell<Hash32>,
    /// Where the node file holds this node; 0 until a checkpoint writes it.
    pub(crate) loc: AtomicU64,
    /// The nibble position this branch splits on.
    pub(crate) pos: u16,
    n_nodes: u8,
    n_leaves: u8,
    /// Built by a commit and not hashed yet.
    fresh: AtomicBool,
    /// Bytes each inline leaf takes: one of [`STRIDES`].
    stride: u8,
    /// Where this fresh branch's encoding waits to be hashed (`crate::hashing`): 1 + its index
    /// in the building thread's stage, or 0.
    pub(crate) staged: u16,
    /// Bit `s` is set when slot `s` holds a child.
    pub(crate) mask: u32,
    /// Bit `s` is set when slot `s` holds an inline leaf.
    pub(crate) inline_mask: u32,
    /// The first `ceil(pos / 2)` bytes of every key below.
    pub(crate) prefix: Bytes,
}

const HEAD_BYTES: usize = std::mem::size_of::<BranchHead>();
/// Where the hash ends in a branch's head.
const HASH_END: usize = std::mem::offset_of!(BranchHead, hash) + std::mem::size_of::<Hash32>();
// 104 bytes where the prefix's `SmallVec` uses its `union` feature (this crate turns it on).
const _: () = assert!(HEAD_BYTES <= 104);

/// A branch's lending links ("Lending", above), right after its head. Only a branch with
/// child nodes has them, as only such a branch lends or borrows: the bottom branches, which
/// hold only inline leaves and are most of the trie, do not pay for them.
#[repr(C)]
struct Links {
    /// The branch that holds some of this one's child handles on this one's counts, or null.
    heir: AtomicPtr<BranchHead>,
    /// The branch on whose counts this one holds the child handles in `borrowed`, or null.
    lender: AtomicPtr<BranchHead>,
    /// Slots whose child handle this branch holds without a count of its own.
    borrowed: AtomicU32,
}

const LINK_BYTES: usize = std::mem::size_of::<Links>();
const _: () = assert!(LINK_BYTES.is_multiple_of(std::mem::align_of::<Node>()));

/// Bytes of links a branch with `n_nodes` child nodes has.
fn link_bytes(n_nodes: usize) -> usize {
    if n_nodes == 0 {
        0
    } else {
        LINK_BYTES
    }
}

/// The links of the branch at `head`, if it has child nodes.
///
/// # Safety
/// `head` is a branch whose head is written, and it outlives the reference.
unsafe fn links<'a>(head: NonNull<BranchHead>) -> Option<&'a Links> {
    // SAFETY: the head is written; `layout` puts the links right after it when there are
    // child nodes, and `Builder::new` writes them.
    unsafe {
        let has_nodes = head.as_ref().n_nodes > 0;
        has_nodes.then(|| &*((head.as_ptr() as *const u8).add(HEAD_BYTES) as *const Links))
    }
}
const _: () = assert!(HEAD_BYTES.is_multiple_of(std::mem::align_of::<Node>()));
const _: () = assert!(std::mem::size_of::<Node>() == 16);

/// Bytes an inline leaf takes in a branch, by stride class: each a multiple of 8, so every
/// leaf stays word-aligned, the largest the longest record ([`crate::trie::INLINE_RECORD`]).
pub(crate) const STRIDES: [usize; 4] = [SHORT, MEDIUM, LONG, LONGEST];
/// The strides by name, for `match` arms that copy a constant number of bytes.
pub(crate) const SHORT: usize = 16;
pub(crate) const MEDIUM: usize = 24;
pub(crate) const LONG: usize = 32;
pub(crate) const LONGEST: usize = 48;
const _: () = assert!(LONGEST == crate::trie::INLINE_RECORD);

/// The stride of class `class`: [`STRIDES`], by shifts rather than a load.
#[inline]
pub(crate) fn stride_of(class: u8) -> usize {
    const PACKED: u32 = STRIDES[0] as u32
        | (STRIDES[1] as u32) << 8
        | (STRIDES[2] as u32) << 16
        | (STRIDES[3] as u32) << 24;
    (PACKED >> (8 * (class & 3))) as usize & 0xff
}

/// The class of the smallest stride that holds a record of `len` bytes.
#[inline]
pub(crate) fn stride_class(len: usize) -> u8 {
    debug_assert!(len <= LONGEST);
    match len {
        l if l <= SHORT => 0,
        l if l <= MEDIUM => 1,
        l if l <= LONG => 2,
        _ => 3,
    }
}

/// What a branch's parent keeps beside the pointer: `pos` (12 bits: keys are at most 1 KiB, so
/// positions are at most 2,048), the masks of node and inline slots (17 bits each) and the
/// stride class of its inline leaves (2 bits), packed in six bytes that fit in the handle enum's
/// padding.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(2))]
pub struct Shape([u16; 3]);

impl Shape {
    fn new(pos: u16, node_mask: u32, inline_mask: u32, class: u8) -> Shape {
        assert!(pos < 1 << 12, "a nibble position past 4,095");
        debug_assert!(usize::from(class) < STRIDES.len());
        let bits = u64::from(inline_mask)
            | u64::from(node_mask) << 17
            | u64::from(pos) << 34
            | u64::from(class) << 46;
        Shape([bits as u16, (bits >> 16) as u16, (bits >> 32) as u16])
    }

    #[inline]
    fn bits(self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 16 | u64::from(self.0[2]) << 32
    }

    /// The nibble position the branch splits on.
    #[inline]
    pub(crate) fn pos(self) -> usize {
        ((self.bits() >> 34) & 0xfff) as usize
    }

    /// Bytes each inline leaf takes in the branch.
    #[inline]
    pub(crate) fn stride(self) -> usize {
        stride_of((self.bits() >> 46) as u8)
    }

    /// Bit `s` is set when slot `s` holds an inline leaf.
    #[inline]
    pub(crate) fn inline_mask(self) -> u32 {
        (self.bits() & 0x1_ffff) as u32
    }

    /// Bit `s` is set when slot `s` holds a node of its own.
    #[inline]
    pub(crate) fn node_mask(self) -> u32 {
        ((self.bits() >> 17) & 0x1_ffff) as u32
    }
}

/// The index of slot `slot` among the slots set in `mask` below it.
#[inline]
pub(crate) fn rank(mask: u32, slot: usize) -> usize {
    (mask & ((1u32 << slot) - 1)).count_ones() as usize
}

/// What a new branch is, apart from its children.
pub(crate) struct Parts {
    /// `None` for a fresh branch, whose commit hashes it later.
    pub hash: Option<Hash32>,
    /// See [`BranchHead::staged`].
    pub staged: u16,
    pub loc: u64,
    pub pos: u16,
    pub mask: u32,
    pub inline_mask: u32,
    /// The stride class of the inline leaves: at least that of the longest record
    /// ([`stride_class`]).
    pub class: u8,
    pub prefix: Bytes,
}

/// A shared handle to a branch.
pub struct Branch(NonNull<BranchHead>);

// SAFETY: a branch is immutable once built except for its atomics and the one write of a fresh
// branch's hash (see `set_hash`), and everything it holds (nodes, inline leaves, the prefix) is
// itself `Send + Sync`.
unsafe impl Send for Branch {}
// SAFETY: as for `Send`: shared access only reads, or goes through atomics; a fresh branch is
// not shared yet.
unsafe impl Sync for Branch {}

/// Where the child handles of the branch allocated at `head` start, if it has any: right after
/// its fixed part and links.
fn nodes_at(head: NonNull<BranchHead>) -> *mut Node {
    (head.as_ptr() as *mut u8).wrapping_add(HEAD_BYTES + LINK_BYTES) as *mut Node
}

/// Where the inline leaves of that branch start: right after its `n_nodes` child handles, or
/// its fixed part if it has none.
fn leaves_at(head: NonNull<BranchHead>, n_nodes: usize) -> *mut u8 {
    let offset = HEAD_BYTES + link_bytes(n_nodes) + n_nodes * std::mem::size_of::<Node>();
    // SAFETY: `layout` puts the leaves there, inside the allocation.
    unsafe { (head.as_ptr() as *mut u8).add(offset) }
}

/// A branch's allocation: its size rounded up to a whole size class, so that a freed block
/// fits any branch of its class ([`crate::recycle`]).
fn layout(n_nodes: usize, n_leaves: usize, stride: usize) -> Layout {
    let nodes = link_bytes(n_nodes) + n_nodes * std::mem::size_of::<Node>();
    let bytes = recycle::rounded(HEAD_BYTES + nodes + n_leaves * stride);
    Layout::from_size_align(bytes, std::mem::align_of::<BranchHead>()).expect("a branch layout")
}

const _: () = assert!(std::mem::align_of::<BranchHead>() == recycle::ALIGN);

/// Returns a branch's memory: to this thread's recycler, or else to the allocator.
///
/// # Safety
/// `head` was allocated with `layout` and nothing reads or writes it any more.
unsafe fn release(head: NonNull<BranchHead>, layout: Layout) {
    if let Some(block) = recycle::give(head.cast(), layout.size()) {
        // SAFETY: as the caller promises.
        unsafe { alloc::dealloc(block.as_ptr(), layout) };
    }
}

impl Branch {
    /// A branch of `parts` holding `nodes` (its node slots' contents, in slot order) and
    /// `leaves` (its inline slots' contents, in slot order); the masks must say which is where.
    pub(crate) fn new<'a>(
        parts: Parts,
        nodes: impl IntoIterator<Item = Node>,
        leaves: impl IntoIterator<Item = InlineRef<'a>>,
    ) -> Branch {
        let mut builder = Builder::new(parts);
        for node in nodes {
            builder.push_node(node);
        }
        for leaf in leaves {
            builder.push_leaf(leaf);
        }
        builder.finish()
    }

    /// What the parent keeps beside the pointer.
    pub(crate) fn shape(&self) -> Shape {
        let node_mask = self.mask & !self.inline_mask;
        Shape::new(self.pos, node_mask, self.inline_mask, self.class())
    }

    /// The stride class of the inline leaves ([`STRIDES`]).
    pub(crate) fn class(&self) -> u8 {
        stride_class(self.stride())
    }

    /// Bytes each inline leaf takes.
    #[inline]
    pub(crate) fn stride(&self) -> usize {
        usize::from(self.stride)
    }

    fn nodes_ptr(&self) -> *const Node {
        nodes_at(self.0)
    }

    fn leaves_ptr(&self, n_nodes: usize) -> *const u8 {
        leaves_at(self.0, n_nodes)
    }

    /// The child nodes, in slot order.
    pub(crate) fn nodes(&self) -> &[Node] {
        // SAFETY: `n_nodes` handles were written at `nodes_ptr` and live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.nodes_ptr(), usize::from(self.n_nodes)) }
    }

    /// The inline leaves' stored bytes: `n_leaves` records of one stride each.
    pub(crate) fn leaf_bytes(&self) -> &[u8] {
        let n_nodes = usize::from(self.n_nodes);
        let len = usize::from(self.n_leaves) * self.stride();
        // SAFETY: `n_leaves` leaves of this stride were written, padding included, after the
        // nodes, and live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.leaves_ptr(n_nodes), len) }
    }

    /// The inline leaves, in slot order.
    pub(crate) fn leaves(&self) -> impl ExactSizeIterator<Item = InlineRef<'_>> {
        self.leaf_bytes()
            .chunks_exact(self.stride())
            .map(InlineRef::stored)
    }

    /// The inline leaf of rank `i` among the inline slots.
    #[inline]
    pub(crate) fn leaf(&self, i: usize) -> InlineRef<'_> {
        let stride = self.stride();
        InlineRef::stored(&self.leaf_bytes()[i * stride..][..stride])
    }

    /// The node in `slot`, if it holds one: addressed from the shape the parent keeps, without
    /// waiting for this branch's header.
    #[inline]
    pub(crate) fn node_in(&self, shape: Shape, slot: usize) -> Option<&Node> {
        let mask = shape.node_mask();
        if mask & (1 << slot) == 0 {
            return None;
        }
        debug_assert!(shape == self.shape());
        // SAFETY: `shape` is this branch's (a handle is only built with its branch's shape), so
        // the rank is below the number of node handles written.
        Some(unsafe { &*self.nodes_ptr().add(rank(mask, slot)) })
    }

    /// The inline leaf in `slot`, if it holds one: addressed from the shape the parent keeps.
    #[inline]
    pub(crate) fn leaf_in(&self, shape: Shape, slot: usize) -> Option<InlineRef<'_>> {
        let mask = shape.inline_mask();
        if mask & (1 << slot) == 0 {
            return None;
        }
        debug_assert!(shape == self.shape());
        let n_nodes = shape.node_mask().count_ones() as usize;
        let stride = shape.stride();
        // SAFETY: as in `node_in`, the counts and the stride come from this branch's own head,
        // so the leaf is one of the `n_leaves` written.
        let stored = unsafe {
            let at = self.leaves_ptr(n_nodes).add(rank(mask, slot) * stride);
            std::slice::from_raw_parts(at, stride)
        };
        Some(InlineRef::stored(stored))
    }

    /// The inline leaf holding `key` in this bucket ([`crate::bucket`]), if any: a scan of its
    /// records, which are in key order, addressed from the shape the parent keeps.
    #[inline]
    pub(crate) fn bucket_leaf(&self, shape: Shape, key: &[u8]) -> Option<InlineRef<'_>> {
        debug_assert!(shape == self.shape() && shape.node_mask() == 0);
        let n = shape.inline_mask().count_ones() as usize;
        let stride = shape.stride();
        let start = self.leaves_ptr(0);
        for i in 0..n {
            // SAFETY: as in `leaf_in`: a bucket has no child nodes, and `n` leaves of this
            // stride were written.
            let stored = unsafe { std::slice::from_raw_parts(start.add(i * stride), stride) };
            let leaf = InlineRef::stored(stored);
            match crate::trie::key_order(leaf.entry().0, key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Some(leaf),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// The hash. Never asked of a fresh branch: a commit hashes what it built before anything
    /// else sees it.
    #[inline]
    pub(crate) fn hash(&self) -> &Hash32 {
        debug_assert!(!self.is_fresh(), "the hash of a branch not hashed yet");
        // SAFETY: the hash is only written while the branch is fresh (`set_hash`), and then
        // only by the commit that built it, before any reader can reach it.
        unsafe { &*self.hash.get() }
    }

    /// Whether a commit built this branch and has not hashed it yet.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::Relaxed)
    }

    /// Records the hash of a fresh branch, once.
    ///
    /// # Panics
    /// If the branch is not fresh: a hashed branch may be shared, and its hash never changes.
    pub(crate) fn set_hash(&self, hash: Hash32) {
        assert!(self.is_fresh(), "a branch is hashed once");
        // Its parent's handle, or its commit's, and the hashing stage's ([`crate::hashing`]).
        debug_assert!(self.strong_count() <= 2);
        // SAFETY: a fresh branch was built by the commit now hashing it and is reachable only
        // from that commit's new tree, which no snapshot holds yet; each fresh branch is hashed
        // by one thread, and the commit's hand-off of the tree (a join, then publication under
        // a lock) orders this write before every read.
        unsafe { *self.hash.get() = hash };
        self.fresh.store(false, Ordering::Relaxed);
    }

    /// Records that this new branch holds the handles in the `borrowed` slots on `lender`'s
    /// counts, and makes it `lender`'s heir. Should `lender` have an heir already, which no
    /// commit leads to (only a commit sets an heir where there was none, and one commit copies a
    /// branch once), the handles are counted instead.
    fn link(&self, lender: NonNull<BranchHead>, borrowed: u32) {
        let own = self.links().expect("a branch that borrows has child nodes");
        own.lender.store(lender.as_ptr(), Ordering::Relaxed);
        own.borrowed.store(borrowed, Ordering::Relaxed);
        // SAFETY: the lender is alive: the commit copying it holds the tree it is in; it lent
        // child nodes, so it has links.
        let lender = unsafe { links(lender) }.expect("a lender has child nodes");
        let linked = lender.heir.compare_exchange(
            ptr::null_mut(),
            self.0.as_ptr(),
            Ordering::Release,
            Ordering::Relaxed,
        );
        if linked.is_ok() {
            return;
        }
        for (slot, node) in self.node_slots() {
            if borrowed & (1 << slot) != 0 {
                std::mem::forget(node.clone());
            }
        }
        own.lender.store(ptr::null_mut(), Ordering::Relaxed);
        own.borrowed.store(0, Ordering::Relaxed);
    }

    /// This branch's lending links, if it has child nodes.
    fn links(&self) -> Option<&Links> {
        // SAFETY: a live branch, which outlives the reference.
        unsafe { links(self.0) }
    }

    /// Whether a copy of this branch holds some of its children on its counts: a further copy
    /// counts the children it keeps.
    fn has_heir(&self) -> bool {
        self.links()
            .is_some_and(|links| !links.heir.load(Ordering::Acquire).is_null())
    }

    /// How many handles point to this branch.
    pub(crate) fn strong_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether this is the only handle to the branch: dropping it frees the branch.
    pub(crate) fn is_unique(&self) -> bool {
        self.count.load(Ordering::Acquire) == 1
    }

    /// Asks for every line of this branch to be loaded, without waiting: its size follows from
    /// `shape`, the one its parent's handle keeps, so the head need not have arrived.
    #[inline]
    pub(crate) fn prefetch_body(&self, shape: Shape) {
        let n_nodes = shape.node_mask().count_ones() as usize;
        let n_leaves = shape.inline_mask().count_ones() as usize;
        let bytes = layout(n_nodes, n_leaves, shape.stride()).size();
        prefetch_lines(self.0.as_ptr() as *const u8, bytes, prefetch_read);
    }

    /// Asks for the lines holding this branch's reference count and hash to be loaded: one, or
    /// two where the allocation starts late in a line.
    #[inline]
    pub(crate) fn prefetch_head(&self) {
        let start = self.0.as_ptr() as *const u8;
        prefetch_read(start);
        prefetch_read(start.wrapping_add(HASH_END - 1));
    }

    /// The allocation's address: this branch's identity while it lives.
    pub(crate) fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    pub(crate) fn ptr_eq(&self, other: &Branch) -> bool {
        self.0 == other.0
    }
}

/// A branch being built: its allocation and fixed part are written, and its children go
/// straight into place, in slot order, node handles and inline leaves each in their own run. A
/// commit copies a branch in one pass over its slots this way, with no intermediate lists.
pub(crate) struct Builder {
    head: NonNull<BranchHead>,
    nodes: usize,
    leaves: usize,
    /// The branch this one is a copy of, when it may borrow that branch's handles: it has no
    /// heir yet.
    lender: Option<NonNull<BranchHead>>,
    /// Slots of the handles pushed uncounted ([`Builder::push_kept`]).
    borrowed_slots: u32,
}

impl Builder {
    /// Allocates a branch of `parts`, sized by its masks, with no children yet.
    pub(crate) fn new(parts: Parts) -> Builder {
        assert!(parts.mask >> SLOTS == 0 && parts.inline_mask & !parts.mask == 0);
        let n_nodes = (parts.mask & !parts.inline_mask).count_ones() as usize;
        let n_leaves = parts.inline_mask.count_ones() as usize;
        let stride = stride_of(parts.class);
        let layout = layout(n_nodes, n_leaves, stride);
        // SAFETY: the layout is non-zero, and the head is written at its start.
        unsafe {
            let raw = recycle::take(layout.size())
                .map_or_else(|| alloc::alloc(layout), |block| block.as_ptr())
                as *mut BranchHead;
            let Some(head) = NonNull::new(raw) else {
                alloc::handle_alloc_error(layout)
            };
            raw.write(BranchHead {
                count: AtomicUsize::new(1),
                hash: UnsafeCell::new(parts.hash.unwrap_or_default()),
                loc: AtomicU64::new(parts.loc),
                pos: parts.pos,
                n_nodes: n_nodes as u8,
                n_leaves: n_leaves as u8,
                fresh: AtomicBool::new(parts.hash.is_none()),
                stride: stride as u8,
                staged: parts.staged,
                mask: parts.mask,
                inline_mask: parts.inline_mask,
                prefix: parts.prefix,
            });
            if n_nodes > 0 {
                (raw as *mut u8)
                    .add(HEAD_BYTES)
                    .cast::<Links>()
                    .write(Links {
                        heir: AtomicPtr::new(ptr::null_mut()),
                        lender: AtomicPtr::new(ptr::null_mut()),
                        borrowed: AtomicU32::new(0),
                    });
            }
            Builder {
                head,
                nodes: 0,
                leaves: 0,
                lender: None,
                borrowed_slots: 0,
            }
        }
    }

    fn head(&self) -> &BranchHead {
        // SAFETY: the head was written by `new` and lives until `finish` or drop.
        unsafe { self.head.as_ref() }
    }

    fn nodes_ptr(&self) -> *mut Node {
        nodes_at(self.head)
    }

    fn leaves_ptr(&self) -> *mut u8 {
        leaves_at(self.head, usize::from(self.head().n_nodes))
    }

    /// The new branch's address, which it keeps ([`Branch::addr`]).
    pub(crate) fn addr(&self) -> usize {
        self.head.as_ptr() as usize
    }

    /// Appends the next child node.
    #[inline]
    pub(crate) fn push_node(&mut self, node: Node) {
        assert!(
            self.nodes < usize::from(self.head().n_nodes),
            "a node past the mask"
        );
        // SAFETY: within the node handles' run, at a place not written yet.
        unsafe { self.nodes_ptr().add(self.nodes).write(node) };
        self.nodes += 1;
    }

    /// Makes this branch a copy of `original` that borrows the handles it keeps from it
    /// ([`Builder::push_kept`]), if `original` has lent to no other copy yet.
    pub(crate) fn copy_of(&mut self, original: &Branch) {
        if original.links().is_some() && !original.has_heir() {
            self.lender = Some(original.0);
        }
    }

    /// Appends the next child node, `slot`'s handle in the original ([`Builder::copy_of`]):
    /// uncounted if this copy borrows, counted otherwise.
    #[inline]
    pub(crate) fn push_kept(&mut self, slot: usize, node: &Node) {
        if self.lender.is_none() {
            return self.push_node(node.clone());
        }
        self.borrowed_slots |= 1 << slot;
        // SAFETY: a bitwise copy without a count: the lender's count stands for it until the
        // lender is freed and hands it over (`hand_over`), and nothing drops it meanwhile.
        self.push_node(unsafe { ptr::read(node) });
    }

    /// Appends the next inline leaf: its record, and zeros to the stride.
    #[inline]
    pub(crate) fn push_leaf(&mut self, leaf: InlineRef<'_>) {
        let head = self.head();
        let stride = usize::from(head.stride);
        assert!(
            self.leaves < usize::from(head.n_leaves),
            "a leaf past the mask"
        );
        assert!(
            leaf.record().len() <= stride,
            "a leaf longer than the stride"
        );
        // A stored leaf's padding is zeros, so copying its bytes up to the stride copies the
        // record and zeros.
        let stored = leaf.bytes();
        // SAFETY: within the inline leaves' run, at a place not written yet, `stride` bytes in
        // all; each fixed-size copy reads `stride` bytes of `stored`, which has at least that.
        unsafe {
            let at = self.leaves_ptr().add(self.leaves * stride);
            let from = stored.as_ptr();
            match stride {
                _ if stored.len() < stride => {
                    ptr::copy_nonoverlapping(from, at, stored.len());
                    ptr::write_bytes(at.add(stored.len()), 0, stride - stored.len());
                }
                // Constant sizes, so each copy is a few register moves, not a call.
                SHORT => ptr::copy_nonoverlapping(from, at, SHORT),
                MEDIUM => ptr::copy_nonoverlapping(from, at, MEDIUM),
                LONG => ptr::copy_nonoverlapping(from, at, LONG),
                _ => ptr::copy_nonoverlapping(from, at, LONGEST),
            }
        }
        self.leaves += 1;
    }

    /// Records where the branch's encoding is staged ([`BranchHead::staged`]).
    pub(crate) fn set_staged(&mut self, staged: u16) {
        // SAFETY: the branch is not shared until `finish`.
        unsafe { (*self.head.as_ptr()).staged = staged };
    }

    /// The branch, once every child its masks name has been pushed.
    pub(crate) fn finish(self) -> Branch {
        let head = self.head();
        assert!(
            self.nodes == usize::from(head.n_nodes) && self.leaves == usize::from(head.n_leaves),
            "a branch built with fewer children than its masks name"
        );
        let branch = Branch(self.head);
        let (lender, borrowed) = (self.lender, self.borrowed_slots);
        std::mem::forget(self);
        if let Some(lender) = lender.filter(|_| borrowed != 0) {
            branch.link(lender, borrowed);
        }
        branch
    }
}

impl Drop for Builder {
    /// A branch abandoned half-built (a panic while copying) drops what it was given.
    fn drop(&mut self) {
        let head = self.head();
        let stride = usize::from(head.stride);
        let layout = layout(
            usize::from(head.n_nodes),
            usize::from(head.n_leaves),
            stride,
        );
        let borrowed = ranks_of(head, self.borrowed_slots);
        // SAFETY: the first `self.nodes` handles were written and those not borrowed are owned
        // by nothing else; the head is dropped once and the memory returned with its layout.
        unsafe {
            for rank in 0..self.nodes {
                if borrowed & (1 << rank) == 0 {
                    ptr::drop_in_place(self.nodes_ptr().add(rank));
                }
            }
            ptr::drop_in_place(self.head.as_ptr());
            release(self.head, layout);
        }
    }
}

impl std::ops::Deref for Branch {
    type Target = BranchHead;

    fn deref(&self) -> &BranchHead {
        // SAFETY: the head lives as long as any handle.
        unsafe { self.0.as_ref() }
    }
}

impl Clone for Branch {
    fn clone(&self) -> Branch {
        if self.count.fetch_add(1, Ordering::Relaxed) > isize::MAX as usize {
            std::process::abort();
        }
        Branch(self.0)
    }
}

impl Drop for Branch {
    /// The last handle frees the branch, and with it every branch below that it held the last
    /// handle to: breadth first, in a loop ([`Dead`]), so the memory latency of one branch
    /// overlaps the work on others. Inline leaves need nothing.
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let raw = self.0;
        if DEAD.try_with(|dead| dead.release(raw)).is_err() {
            // This thread's queue is gone (the thread is exiting): free the tree recursively.
            let _freeing = FREEING.lock();
            // SAFETY: this was the last handle, so nothing else can reach the allocation.
            unsafe { free(raw) };
        }
    }
}

/// How far apart, in queued branches, the steps of fetching ahead are ([`Dead::fetch_ahead`]):
/// enough misses in flight to cover the memory's latency, not so many that they evict each
/// other.
const AHEAD: usize = 4;

/// The branches whose last handle this thread has dropped and whose children it has not
/// released yet.
///
/// # Why a queue
/// Freeing a pruned revision's tree walks every branch the revision alone held: for each, its
/// children's reference counts are decremented, and most children are shared with newer
/// revisions, so each is a cache miss that frees nothing. Freed recursively, one branch's misses
/// overlap each other but not the next branch's, which waits for its parent's. Queued, the
/// loop fetches the lines of the branches a few places ahead while it frees the first one.
struct Dead {
    /// Whether this thread is draining the queue: a branch whose count reaches zero then
    /// joins the queue instead of being freed in place.
    draining: Cell<bool>,
    queue: RefCell<VecDeque<NonNull<BranchHead>>>,
}

thread_local! {
    static DEAD: Dead = const {
        Dead { draining: Cell::new(false), queue: RefCell::new(VecDeque::new()) }
    };
}

/// Queue entries kept allocated between drains; freeing a whole large tree may need many more.
const QUEUE_KEPT: usize = 1 << 16;

impl Dead {
    /// Frees `raw`, whose count has reached zero, then every branch that freeing it lets go,
    /// unless this thread is already draining, in which case `raw` waits its turn.
    fn release(&self, raw: NonNull<BranchHead>) {
        if self.draining.get() {
            self.queue.borrow_mut().push_back(raw);
            return;
        }
        // SAFETY: `raw`'s count reached zero: nothing else holds it.
        if unsafe { raw.as_ref() }.n_nodes == 0 {
            // A branch without child nodes (a bucket, or a bottom branch of inline leaves) has
            // no lending links and no handles to drop: freeing it touches no other branch, so
            // it needs no `FREEING`. A commit drops such branches of its own, built and then
            // gathered into a bucket, and would otherwise wait for the background thread to
            // finish freeing a pruned tree under the lock, idle if that thread is preempted.
            // SAFETY: as above; `free` reads no link and drops no handle of a branch without
            // child nodes, which is all the lock guards.
            unsafe { free(raw) };
            return;
        }
        self.draining.set(true);
        // Reset on the way out, even by a panic; anything left queued is freed by the next drain.
        let _draining = Draining(&self.draining);
        let _freeing = FREEING.lock();
        let mut next = Some(raw);
        while let Some(branch) = next {
            self.fetch_ahead();
            // SAFETY: a queued branch's count reached zero and nothing else holds it; each is
            // queued once and freed once. Its children's drops queue any branch they free.
            // This thread holds `FREEING`.
            unsafe { free(branch) };
            next = self.queue.borrow_mut().pop_front();
        }
        // The commit threads may use the blocks freed here.
        recycle::share();
        let mut queue = self.queue.borrow_mut();
        if queue.capacity() > QUEUE_KEPT {
            queue.shrink_to(QUEUE_KEPT);
        }
    }

    /// Fetches ahead in three steps, each `AHEAD` branches after the one before: the head and
    /// links of the branch `3 * AHEAD` places ahead; the child handles of the one `2 * AHEAD`
    /// ahead (its head says how many) and its heir's head and borrowed slots; and the reference counts
    /// of the children that the one `AHEAD` ahead will release (those neither it nor its heir
    /// borrowed).
    fn fetch_ahead(&self) {
        let queue = self.queue.borrow();
        if let Some(&far) = queue.get(3 * AHEAD) {
            // The head and, if the branch has child nodes, its links: up to three lines.
            let start = far.as_ptr() as *const u8;
            for offset in [0, 64, HEAD_BYTES + LINK_BYTES - 1] {
                prefetch_write(start.wrapping_add(offset));
            }
        }
        if let Some(&mid) = queue.get(2 * AHEAD) {
            // SAFETY: a queued branch is alive until freed, and its handles with it.
            let head = unsafe { mid.as_ref() };
            let handles = nodes_at(mid) as *const u8;
            for offset in (0..usize::from(head.n_nodes) * std::mem::size_of::<Node>()).step_by(64) {
                prefetch_write(handles.wrapping_add(offset));
            }
            // SAFETY: as above.
            let heir =
                unsafe { links(mid) }.map_or(ptr::null_mut(), |l| l.heir.load(Ordering::Relaxed));
            if !heir.is_null() {
                // The heir's child count (whether it has links), then its borrowed slots.
                let count = std::mem::offset_of!(BranchHead, n_nodes);
                let borrowed = HEAD_BYTES + std::mem::offset_of!(Links, borrowed);
                for offset in [count, borrowed] {
                    prefetch_write((heir as *const u8).wrapping_add(offset));
                }
            }
        }
        if let Some(&near) = queue.get(AHEAD) {
            // SAFETY: as above; the draining thread holds `FREEING`.
            let head = unsafe { near.as_ref() };
            // SAFETY: as above.
            let dropped = ranks_of(head, !unsafe { kept_slots(near) });
            for rank in crate::trie::set_bits(dropped) {
                // SAFETY: as above.
                prefetch_write(unsafe { &*nodes_at(near).add(rank) }.addr());
            }
        }
    }
}

/// Marks a thread's drain over when dropped.
struct Draining<'a>(&'a Cell<bool>);

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Asks, with `prefetch` ([`prefetch_read`] or [`prefetch_write`]), for every line of the
/// `bytes` (at least one) from `start`: the last one too, where they do not start on a line's
/// boundary.
#[inline]
pub(crate) fn prefetch_lines(start: *const u8, bytes: usize, prefetch: fn(*const u8)) {
    for offset in (0..bytes).step_by(64) {
        prefetch(start.wrapping_add(offset));
    }
    prefetch(start.wrapping_add(bytes - 1));
}

/// Asks for the line at `at` to be loaded for writing, without waiting for it.
#[inline]
pub(crate) fn prefetch_write(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing, and faults on no address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        _mm_prefetch::<_MM_HINT_ET0>(at as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Asks for the line at `at` to be loaded for reading, without waiting for it.
#[inline]
pub(crate) fn prefetch_read(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing, and faults on no address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Every free of a branch with child nodes holds this lock: handing a branch's handles over
/// ([`hand_over`]) reads and writes its heir and lender, which nothing may free meanwhile. A
/// branch without child nodes has neither, and is freed without it ([`Dead::release`]).
/// Reentrant, because a thread that is exiting frees the branches below a branch in place,
/// recursively.
static FREEING: parking_lot::ReentrantMutex<()> = parking_lot::ReentrantMutex::new(());

/// The slots of the branch at `head` whose handles freeing it must not drop: those it
/// borrowed, and those its heir borrowed from it, which the heir takes over.
///
/// # Safety
/// `head` is a live branch, and the caller holds [`FREEING`], so its heir, if any, is alive.
unsafe fn kept_slots(head: NonNull<BranchHead>) -> u32 {
    // SAFETY: as the caller promises; a linked branch is alive, as freeing it unlinks it,
    // under `FREEING`, and it has child nodes, so links.
    unsafe {
        let Some(own) = links(head) else {
            return 0;
        };
        let borrowed = own.borrowed.load(Ordering::Relaxed);
        match NonNull::new(own.heir.load(Ordering::Acquire)).and_then(|heir| links(heir)) {
            Some(heir) => borrowed | heir.borrowed.load(Ordering::Relaxed),
            None => borrowed,
        }
    }
}

/// Takes the branch at `head`, about to be freed, out of its lender's and heir's chain: the
/// handles it held on its own counts that its heir borrowed become the heir's, and the heir's
/// other borrowed handles, which this branch had borrowed too, are now borrowed from this
/// branch's lender. Returns the slots whose handles the freed branch must not drop
/// ([`kept_slots`]).
///
/// # Safety
/// As for [`kept_slots`]; and nothing else holds the branch.
unsafe fn hand_over(head: NonNull<BranchHead>) -> u32 {
    // SAFETY: as the caller promises; linked branches are alive and have links.
    unsafe {
        let Some(own) = links(head) else {
            return 0;
        };
        let (heir, lender) = (
            own.heir.load(Ordering::Acquire),
            own.lender.load(Ordering::Relaxed),
        );
        let borrowed = own.borrowed.load(Ordering::Relaxed);
        let mut kept = borrowed;
        let mut successor = ptr::null_mut();
        if let Some(heir_links) = NonNull::new(heir).and_then(|heir| links(heir)) {
            let heir_borrowed = heir_links.borrowed.load(Ordering::Relaxed);
            kept |= heir_borrowed;
            let left = heir_borrowed & borrowed;
            heir_links.borrowed.store(left, Ordering::Relaxed);
            let heir_lender = if left == 0 { ptr::null_mut() } else { lender };
            heir_links.lender.store(heir_lender, Ordering::Relaxed);
            if left != 0 {
                successor = heir;
            }
        }
        if let Some(lender) = NonNull::new(lender).and_then(|lender| links(lender)) {
            lender.heir.store(successor, Ordering::Release);
        }
        kept
    }
}

/// Frees a branch whose count has reached zero: hands over what its heir borrowed, drops its
/// other child handles (which queue, or free, any branch they held last) and its head, and
/// returns its memory.
///
/// # Safety
/// `raw` is a branch that nothing else holds or will reach again, and the caller holds
/// [`FREEING`] unless the branch has no child nodes.
unsafe fn free(raw: NonNull<BranchHead>) {
    // SAFETY: the caller owns the branch; its counts were written by its builder.
    unsafe {
        let head = raw.as_ref();
        let (n_nodes, n_leaves) = (usize::from(head.n_nodes), usize::from(head.n_leaves));
        let layout = layout(n_nodes, n_leaves, usize::from(head.stride));
        let dropped = ranks_of(head, !hand_over(raw));
        let nodes = &*ptr::slice_from_raw_parts(nodes_at(raw), n_nodes);
        crate::trie::warm(crate::trie::set_bits(dropped).map(|rank| &nodes[rank]));
        for rank in crate::trie::set_bits(dropped) {
            ptr::drop_in_place(nodes_at(raw).add(rank));
        }
        ptr::drop_in_place(raw.as_ptr());
        release(raw, layout);
    }
}

/// The ranks, among `head`'s child handles, of those in the slots of `slots`.
fn ranks_of(head: &BranchHead, slots: u32) -> u32 {
    crate::trie::set_bits(head.mask & !head.inline_mask)
        .enumerate()
        .filter(|&(_, slot)| slots & (1 << slot) != 0)
        .fold(0, |ranks, (rank, _)| ranks | 1 << rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trie::Inline;

    #[test]
    fn a_shape_keeps_its_position_masks_and_stride_at_their_limits() {
        let cases = [
            (0, 0, 0, 0),
            (2048, 0x1_5555, 0xaaaa, 1),
            (4095, 0x1_ffff, 0, 3),
            (4095, 0, 0x1_ffff, 2),
        ];
        for (pos, nodes, inline, class) in cases {
            let shape = Shape::new(pos, nodes, inline, class);
            assert_eq!(shape.pos(), usize::from(pos));
            assert_eq!(shape.node_mask(), nodes);
            assert_eq!(shape.inline_mask(), inline);
            assert_eq!(shape.stride(), STRIDES[usize::from(class)]);
        }
    }

    #[test]
    fn a_stride_holds_its_longest_record_and_no_more() {
        for (class, &stride) in STRIDES.iter().enumerate() {
            assert_eq!(stride_of(class as u8), stride);
            assert_eq!(stride_class(stride), class as u8);
        }
        for len in 2..=STRIDES[3] {
            let stride = STRIDES[usize::from(stride_class(len))];
            assert!(len <= stride, "{len} bytes in a {stride}-byte stride");
            let smaller = STRIDES.iter().filter(|&&s| s < stride).max();
            assert!(
                smaller.is_none_or(|&s| len > s),
                "{len} fits a smaller stride"
            );
        }
    }

    /// Branches of inline leaves with records of every length class, mixed: each finds every
    /// leaf by slot, with its padding zeroed, and takes the stride of its longest record.
    #[test]
    fn a_branch_stores_inline_leaves_at_the_stride_of_its_longest() {
        let value = |len: usize| vec![len as u8; len];
        for longest in [0usize, 8, 14, 20, 22, 28, 30, 44] {
            let leaves: Vec<Inline> = (0..5u8)
                .map(|i| Inline::new(&[i], &value(longest.min(usize::from(i) * 11))))
                .chain([Inline::new(&[9], &value(longest))])
                .map(|leaf| leaf.expect("fits inline"))
                .collect();
            let class = leaves.iter().map(|l| l.as_ref().class()).max().unwrap_or(0);
            let mask = 0b10_1010_1010_1010;
            let inline_mask = 0b10_1010_1010_1010 & !(1 << 3);
            let node = Node::leaf(b"n", &[1; 64]);
            let mut parts = parts(mask | 1 << 3, inline_mask);
            parts.class = class;
            let branch = Branch::new(parts, [node], leaves.iter().map(Inline::as_ref));
            let shape = branch.shape();
            assert_eq!(
                shape.stride(),
                STRIDES[usize::from(stride_class(3 + longest))]
            );
            let size = layout(1, leaves.len(), shape.stride()).size();
            assert_eq!(
                size,
                recycle::rounded(HEAD_BYTES + LINK_BYTES + 16 + leaves.len() * shape.stride())
            );
            let slots = set_bits_of(inline_mask);
            for (leaf, slot) in leaves.iter().zip(slots) {
                let stored = branch.leaf_in(shape, slot).expect("an inline leaf");
                assert_eq!(stored.entry(), leaf.entry());
                assert!(stored.bytes()[stored.record().len()..]
                    .iter()
                    .all(|&b| b == 0));
            }
            assert!(branch.node_in(shape, 3).is_some());
        }
    }

    fn set_bits_of(mask: u32) -> impl Iterator<Item = usize> {
        (0..SLOTS).filter(move |s| mask & (1 << s) != 0)
    }

    #[test]
    fn a_branch_finds_entries_by_slot_and_releases_its_children_once() {
        let (a, b) = (Node::leaf(b"a", &[1; 64]), Node::leaf(b"b", &[2; 64]));
        let inline = Inline::new(b"c", b"3").expect("fits inline");
        let parts = Parts {
            hash: Some([9; 32]),
            staged: 0,
            loc: 0,
            pos: 0,
            mask: 1 << 2 | 1 << 5 | 1 << 16,
            inline_mask: 1 << 5,
            class: 0,
            prefix: Bytes::new(),
        };
        let branch = Branch::new(parts, [a.clone(), b.clone()], [inline.as_ref()]);
        let shape = branch.shape();
        assert!(branch.node_in(shape, 2).is_some_and(|n| n.ptr_eq(&a)));
        assert!(branch.node_in(shape, 16).is_some_and(|n| n.ptr_eq(&b)));
        assert!(branch.node_in(shape, 5).is_none() && branch.node_in(shape, 3).is_none());
        let leaf = branch.leaf_in(shape, 5).expect("the inline leaf");
        assert_eq!(leaf.entry(), (&b"c"[..], &b"3"[..]));
        assert!(branch.leaf_in(shape, 2).is_none());
        assert_eq!((a.strong_count(), b.strong_count()), (2, 2));
        let copy = branch.clone();
        assert_eq!(branch.strong_count(), 2);
        drop(branch);
        assert_eq!((a.strong_count(), copy.strong_count()), (2, 1));
        drop(copy);
        assert_eq!((a.strong_count(), b.strong_count()), (1, 1));
    }

    fn parts(mask: u32, inline_mask: u32) -> Parts {
        Parts {
            hash: None,
            staged: 0,
            loc: 0,
            pos: 0,
            mask,
            inline_mask,
            class: 0,
            prefix: Bytes::new(),
        }
    }

    /// A branch over `children`, all of them nodes in slots `0..children.len()`.
    fn over(children: Vec<Node>) -> Node {
        let mask = (1u32 << children.len()) - 1;
        let branch = Branch::new(parts(mask, 0), children, []);
        Node::Branch(branch.shape(), branch)
    }

    /// A copy of `original` (node children only, in slots `0..`) that keeps the children in
    /// `kept` slots and takes `new` for the others, the way a commit's copy does.
    fn copy(original: &Branch, kept: u32, mut new: impl FnMut() -> Node) -> Branch {
        let mut builder = Builder::new(parts(original.mask, 0));
        builder.copy_of(original);
        for (slot, node) in original.node_slots() {
            match kept & (1 << slot) != 0 {
                true => builder.push_kept(slot, node),
                false => builder.push_node(new()),
            }
        }
        builder.finish()
    }

    fn counts(nodes: &[Node]) -> Vec<usize> {
        nodes.iter().map(Node::strong_count).collect()
    }

    /// Leaves to be children, and a branch over them: each leaf counted by the test and the
    /// branch.
    fn lender(n: usize) -> (Vec<Node>, Branch) {
        let leaves: Vec<Node> = (0..n as u8).map(|i| Node::leaf(&[i], b"v")).collect();
        let branch = Branch::new(parts((1 << n) - 1, 0), leaves.iter().cloned(), []);
        (leaves, branch)
    }

    #[test]
    fn a_copy_borrows_its_kept_children_and_takes_them_over_when_the_original_is_freed() {
        let (leaves, original) = lender(3);
        let copy = copy(&original, 0b011, || Node::leaf(b"new", b"v"));
        assert_eq!(
            counts(&leaves),
            [2, 2, 2],
            "kept children are not counted again"
        );
        drop(original);
        assert_eq!(counts(&leaves), [2, 2, 1], "the replaced child is released");
        let borrowed = copy.links().map(|l| l.borrowed.load(Ordering::Relaxed));
        assert_eq!(borrowed, Some(0), "the copy owns them now");
        drop(copy);
        assert_eq!(counts(&leaves), [1, 1, 1]);
    }

    #[test]
    fn a_copy_freed_first_leaves_its_original_free_to_lend_again() {
        let (leaves, original) = lender(2);
        let first = copy(&original, 0b11, || unreachable!());
        drop(first);
        assert_eq!(counts(&leaves), [2, 2], "a borrowed child is not released");
        assert!(!original.has_heir());
        let second = copy(&original, 0b01, || Node::leaf(b"new", b"v"));
        assert_eq!(counts(&leaves), [2, 2]);
        drop(original);
        assert_eq!(counts(&leaves), [2, 1]);
        drop(second);
        assert_eq!(counts(&leaves), [1, 1]);
    }

    #[test]
    fn a_second_copy_of_one_original_counts_its_children() {
        let (leaves, original) = lender(2);
        let first = copy(&original, 0b11, || unreachable!());
        let fork = copy(&original, 0b11, || unreachable!());
        assert_eq!(counts(&leaves), [3, 3], "only the first copy borrows");
        drop(original);
        drop(first);
        assert_eq!(counts(&leaves), [2, 2]);
        drop(fork);
        assert_eq!(counts(&leaves), [1, 1]);
    }

    #[test]
    fn freeing_the_middle_of_a_chain_of_copies_passes_its_loans_on() {
        let (leaves, original) = lender(3);
        let middle = copy(&original, 0b111, || unreachable!());
        let last = copy(&middle, 0b011, || Node::leaf(b"new", b"v"));
        assert_eq!(counts(&leaves), [2, 2, 2]);
        drop(middle);
        assert_eq!(counts(&leaves), [2, 2, 2], "the middle copy owned nothing");
        let lender = last.links().map(|l| l.lender.load(Ordering::Relaxed));
        let heir = original.links().map(|l| l.heir.load(Ordering::Relaxed));
        assert_eq!(
            (lender, heir),
            (Some(original.0.as_ptr()), Some(last.0.as_ptr()))
        );
        drop(original);
        assert_eq!(counts(&leaves), [2, 2, 1]);
        drop(last);
        assert_eq!(counts(&leaves), [1, 1, 1]);
    }

    #[test]
    fn a_copy_abandoned_half_built_releases_only_what_it_counted() {
        let (leaves, original) = lender(3);
        let mut builder = Builder::new(parts(original.mask, 0));
        builder.copy_of(&original);
        builder.push_kept(0, &original.nodes()[0]);
        builder.push_node(Node::leaf(b"new", b"v"));
        drop(builder);
        assert_eq!(counts(&leaves), [2, 2, 2]);
        assert!(!original.has_heir());
        drop(original);
        assert_eq!(counts(&leaves), [1, 1, 1]);
    }

    #[test]
    fn freeing_a_tree_releases_every_child_once_and_keeps_what_is_shared() {
        let leaves: Vec<Node> = (0..16 * 16 * 4u32)
            .map(|i| Node::leaf(&i.to_be_bytes(), &[7; 64]))
            .collect();
        let bottoms: Vec<Node> = leaves.chunks(4).map(|c| over(c.to_vec())).collect();
        let middles: Vec<Node> = bottoms.chunks(16).map(|c| over(c.to_vec())).collect();
        let kept = middles[3].clone();
        let root = over(middles);
        drop(bottoms);
        assert!(leaves.iter().all(|leaf| leaf.strong_count() == 2));
        drop(root);
        let held: Vec<usize> = leaves.iter().map(Node::strong_count).collect();
        let under_kept = 3 * 16 * 4..4 * 16 * 4;
        for (i, count) in held.iter().enumerate() {
            assert_eq!(
                *count,
                if under_kept.contains(&i) { 2 } else { 1 },
                "leaf {i}"
            );
        }
        drop(kept);
        assert!(leaves.iter().all(|leaf| leaf.strong_count() == 1));
    }

    #[test]
    fn freeing_a_deep_chain_of_branches_does_not_recurse() {
        let leaf = Node::leaf(b"bottom", &[1; 64]);
        let mut chain = leaf.clone();
        for _ in 0..200_000 {
            chain = over(vec![chain]);
        }
        drop(chain);
        assert_eq!(leaf.strong_count(), 1);
    }

    #[test]
    fn a_branch_abandoned_half_built_releases_what_it_was_given() {
        let node = Node::leaf(b"a", &[1; 64]);
        let mut builder = Builder::new(parts(0b111, 0b100));
        builder.push_node(node.clone());
        assert_eq!(node.strong_count(), 2);
        drop(builder);
        assert_eq!(node.strong_count(), 1);
    }

    #[test]
    #[should_panic(expected = "fewer children than its masks name")]
    fn a_branch_cannot_be_finished_with_children_missing() {
        let mut builder = Builder::new(parts(0b11, 0b11));
        builder.push_leaf(Inline::new(b"a", b"1").expect("fits inline").as_ref());
        builder.finish();
    }

    #[test]
    #[should_panic(expected = "a node past the mask")]
    fn a_branch_takes_no_more_nodes_than_its_mask_names() {
        let mut builder = Builder::new(parts(0b11, 0b10));
        builder.push_node(Node::leaf(b"a", b"1"));
        builder.push_node(Node::leaf(b"b", b"2"));
    }

    #[test]
    fn a_branch_of_inline_leaves_has_no_room_for_child_nodes() {
        let four_leaves = layout(0, 4, STRIDES[3]).size();
        assert_eq!(
            four_leaves,
            recycle::rounded(HEAD_BYTES + 4 * std::mem::size_of::<Inline>())
        );
        assert!(four_leaves <= 432);
        assert!(layout(0, 16, STRIDES[1]).size() <= 8 * 64);
    }

    #[test]
    #[should_panic(expected = "a leaf longer than the stride")]
    fn a_branch_takes_no_leaf_longer_than_its_stride() {
        let mut builder = Builder::new(parts(0b1, 0b1));
        builder.push_leaf(Inline::new(b"key", &[1; 20]).expect("fits inline").as_ref());
    }
}
