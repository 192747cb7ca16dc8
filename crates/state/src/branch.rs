//! A branch node's memory: one reference-counted allocation sized to what the branch holds.
//!
//! # Layout
//! `[BranchHead][Links][child nodes, by rank][inline leaves, by rank]`: the fixed part (reference
//! count, hash, location, `pos`, slot masks, prefix: at most 112 bytes); then, only in a branch
//! with child nodes, its [`Links`] (24 bytes, see below); then one [`Node`] handle (16 bytes) for
//! each slot that holds a node of its own, then one [`Inline`] leaf (80 bytes) for each slot that
//! holds a leaf inline, both in slot order. A slot's entry is found by its rank among the slots of
//! its kind, so empty slots cost nothing.
//!
//! # Inherited children
//! A commit copies every branch on the paths it changes, and most of a copied branch's child
//! nodes are the same as the old branch's. Counting one more reference on each of them, and one
//! fewer when the old branch is freed, loads every one of those children twice, and on a 25M-key
//! trie that was about a quarter of all CPU (`docs/BENCHMARKS.md`, "Where a write's time goes").
//! So the first copy of a branch (its *heir*) takes the children it shares with the old branch
//! (its *testator*) without counting them: the testator's counts cover both, and the heir's
//! `inherited` mask names those slots. Whichever of the two dies first settles the estate:
//! - the testator, dying, hands each inherited count over to its heir instead of releasing it;
//! - the heir, dying first, releases only the children it owns, and its own heir (if any) now
//!   inherits from the testator whatever the dying heir had inherited, and owns what the dying
//!   heir owned.
//!
//! So every child pointer is covered by exactly one count, held by the oldest living branch on
//! its chain of copies, and freeing a branch loads only the children it releases. A second copy
//! of the same branch (a fork) counts references as before. Links change only when a branch
//! dies, under one lock ([`ESTATES`]); the writer only ever sets a testator's empty heir slot,
//! with a compare-and-swap, while it holds the testator alive.
//!
//! # Why not a fixed array of 17 child slots
//! Most branches sit at the bottom of the trie and hold only inline leaves: with a fixed
//! 17-slot array each of them carried 272 bytes of empty child handles, more than three of its
//! leaves. Sized to fit, a bottom branch of four leaves takes 432 bytes instead of 712, so more of
//! the trie stays in memory, and a commit copies, and a free releases, fewer lines:
//! `memory_profile` at 4M random keys went from 1,030 to 606 MiB, and `commit_profile` at 25M
//! keys from 65–71 to 59–62 ms per commit of 10,000 transfers (2026-11-22).
//!
//! # Reading without the header
//! A parent's handle to a branch carries its [`Shape`]: `pos` and both slot masks. From it a lookup
//! computes the address of the entry it wants (node or inline leaf) before the branch's first
//! line arrives, so a level costs one cache miss, not two.
//!
//! # Safety
//! [`Branch`] is the only owner of the raw allocation. A `Shape` is only ever made from the branch
//! it is stored beside ([`Branch::shape`]), and every unchecked access is bounded by counts that
//! the constructor wrote and the masks agree with. This is the state crate's only `unsafe` code:
//! a fixed-size node type would waste the memory this module exists to save.
#![allow(unsafe_code)]

use crate::trie::{Hash32, Inline, Node};
use crate::Bytes;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
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
// 104 or 112 bytes: the prefix's `SmallVec` is 8 bytes smaller where its `union` feature is on.
const _: () = assert!(HEAD_BYTES <= 112);
const _: () = assert!(HEAD_BYTES.is_multiple_of(std::mem::align_of::<Node>()));
const _: () = assert!(std::mem::size_of::<Node>() == 16);
const _: () = assert!(std::mem::align_of::<Inline>() <= std::mem::align_of::<Node>());

/// Who a branch with child nodes inherits from and leaves to ("Inherited children" above).
#[repr(C)]
struct Links {
    /// The branch whose counts cover this branch's `inherited` slots, or null.
    testator: AtomicPtr<BranchHead>,
    /// The copy of this branch that inherits from it, or null.
    heir: AtomicPtr<BranchHead>,
    /// Slots whose child this branch holds without a count of its own.
    inherited: AtomicU32,
}

/// Bytes the links take, in a branch with child nodes.
const LINK_BYTES: usize = std::mem::size_of::<Links>();
const _: () = assert!(LINK_BYTES.is_multiple_of(std::mem::align_of::<Node>()));

/// Held while a dying branch settles its estate with its testator and heir.
static ESTATES: Mutex<()> = Mutex::new(());

/// What a branch's parent keeps beside the pointer: `pos` (12 bits: keys are at most 1 KiB, so
/// positions are at most 2,048) and the masks of node and inline slots (17 bits each), packed in
/// six bytes that fit in the handle enum's padding.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(2))]
pub struct Shape([u16; 3]);

impl Shape {
    fn new(pos: u16, node_mask: u32, inline_mask: u32) -> Shape {
        assert!(pos < 1 << 12, "a nibble position past 4,095");
        let bits = u64::from(inline_mask) | u64::from(node_mask) << 17 | u64::from(pos) << 34;
        Shape([bits as u16, (bits >> 16) as u16, (bits >> 32) as u16])
    }

    #[inline]
    fn bits(self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 16 | u64::from(self.0[2]) << 32
    }

    /// The nibble position the branch splits on.
    #[inline]
    pub(crate) fn pos(self) -> usize {
        (self.bits() >> 34) as usize
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

/// Bytes before the first child node: the head, and the links if there are child nodes.
#[inline]
fn nodes_offset(n_nodes: usize) -> usize {
    HEAD_BYTES + if n_nodes > 0 { LINK_BYTES } else { 0 }
}

fn layout(n_nodes: usize, n_leaves: usize) -> Layout {
    let bytes = nodes_offset(n_nodes)
        + n_nodes * std::mem::size_of::<Node>()
        + n_leaves * std::mem::size_of::<Inline>();
    Layout::from_size_align(bytes, std::mem::align_of::<BranchHead>()).expect("a branch layout")
}

impl Branch {
    /// A branch of `parts` holding `nodes` (its node slots' contents, in slot order) and the
    /// inline leaves in `leaf_runs` (its inline slots' contents, in slot order, as runs that are
    /// copied straight into the new allocation); the masks must say which is where.
    pub(crate) fn new(
        parts: Parts,
        nodes: impl IntoIterator<Item = Node>,
        leaf_runs: &[&[Inline]],
    ) -> Branch {
        let mut nodes: SmallVec<[Node; SLOTS]> = nodes.into_iter().collect();
        let branch = Self::allocate(parts, nodes.len(), leaf_runs);
        // SAFETY: `allocate` left room for exactly `nodes.len()` handles; they are moved in, and
        // `nodes`' length is cleared so they are not dropped twice.
        unsafe {
            ptr::copy_nonoverlapping(nodes.as_ptr(), branch.nodes_ptr() as *mut Node, nodes.len());
            nodes.set_len(0);
        }
        crate::hashing::own(&branch);
        branch
    }

    /// A copy of this branch with other contents: as [`Branch::new`], with `nodes` borrowed.
    /// The children it shares with this branch (the same node in the same slot) are inherited
    /// if this is this branch's first copy, and counted otherwise ("Inherited children" above).
    pub(crate) fn copy<'a>(
        &self,
        parts: Parts,
        nodes: impl IntoIterator<Item = &'a Node>,
        leaf_runs: &[&[Inline]],
    ) -> Branch {
        assert_eq!(parts.pos, self.pos, "a copy splits where its original does");
        let nodes: SmallVec<[&Node; SLOTS]> = nodes.into_iter().collect();
        let node_mask = parts.mask & !parts.inline_mask;
        let old = self.shape();
        let shared = crate::trie::set_bits(node_mask)
            .zip(&nodes)
            .filter(|(slot, node)| self.node_in(old, *slot).is_some_and(|o| o.ptr_eq(node)))
            .fold(0u32, |mask, (slot, _)| mask | 1 << slot);
        let branch = Self::allocate(parts, nodes.len(), leaf_runs);
        let at = branch.nodes_ptr() as *mut Node;
        for (i, (slot, node)) in crate::trie::set_bits(node_mask).zip(&nodes).enumerate() {
            // SAFETY: `allocate` left room for `nodes.len()` handles. A shared child is copied
            // without a count of its own: `bequeath` either records that this branch's counts
            // cover it, or counts it.
            unsafe {
                let handle = if shared & (1 << slot) != 0 {
                    ptr::read(*node)
                } else {
                    (*node).clone()
                };
                at.add(i).write(handle);
            }
        }
        if shared != 0 {
            self.bequeath(&branch, shared);
        }
        crate::hashing::own(&branch);
        branch
    }

    /// Makes `heir` this branch's heir for the children in `shared` slots, which it holds
    /// without counts, or, if this branch has an heir already, counts them.
    fn bequeath(&self, heir: &Branch, shared: u32) {
        let links = heir.links();
        links.inherited.store(shared, Ordering::Relaxed);
        links.testator.store(self.0.as_ptr(), Ordering::Relaxed);
        let claimed = self.links().heir.compare_exchange(
            ptr::null_mut(),
            heir.0.as_ptr(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if claimed.is_err() {
            links.inherited.store(0, Ordering::Relaxed);
            links.testator.store(ptr::null_mut(), Ordering::Relaxed);
            crate::trie::warm(heir.nodes());
            for (slot, node) in heir.node_slots_raw() {
                if shared & (1 << slot) != 0 {
                    std::mem::forget(node.clone());
                }
            }
        }
    }

    /// Allocates a branch of `parts` with no links, room for `n_nodes` child handles (left
    /// unwritten), and the inline leaves of `leaf_runs`.
    fn allocate(parts: Parts, n_nodes: usize, leaf_runs: &[&[Inline]]) -> Branch {
        assert!(parts.mask >> SLOTS == 0 && parts.inline_mask & !parts.mask == 0);
        assert_eq!(
            n_nodes,
            (parts.mask & !parts.inline_mask).count_ones() as usize
        );
        let n_leaves: usize = leaf_runs.iter().map(|run| run.len()).sum();
        assert_eq!(n_leaves, parts.inline_mask.count_ones() as usize);
        let layout = layout(n_nodes, n_leaves);
        // SAFETY: the layout is non-zero; the head, the links (if there are child nodes) and
        // the leaves (`n_leaves` in all, run after run) are written within it at the offsets
        // the accessors read. The caller writes the `n_nodes` handles before any use.
        unsafe {
            let raw = alloc::alloc(layout) as *mut BranchHead;
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
                        testator: AtomicPtr::new(ptr::null_mut()),
                        heir: AtomicPtr::new(ptr::null_mut()),
                        inherited: AtomicU32::new(0),
                    });
            }
            let branch = Branch(head);
            let mut leaves_at = branch.leaves_ptr(n_nodes) as *mut Inline;
            for run in leaf_runs {
                ptr::copy_nonoverlapping(run.as_ptr(), leaves_at, run.len());
                leaves_at = leaves_at.add(run.len());
            }
            #[cfg(test)]
            live::born();
            branch
        }
    }

    /// The links of a branch with child nodes.
    fn links(&self) -> &Links {
        debug_assert!(self.n_nodes > 0, "only a branch with child nodes has links");
        // SAFETY: as `links_at`, for a live branch.
        unsafe { links_at(self.0.as_ptr()) }
    }

    /// The node slots whose counts this dying branch releases: every one it owns, except those
    /// its heir inherits, which pass to the heir. Settles the links with its testator and heir.
    fn settle(&self) -> u32 {
        let node_mask = self.mask & !self.inline_mask;
        let links = self.links();
        // Null links stay null in a dying branch: only a copy sets an empty heir slot, and it
        // holds the branch alive; every other change to a link is made by the death of the
        // branch that link points to, under `ESTATES`.
        if links.testator.load(Ordering::Acquire).is_null()
            && links.heir.load(Ordering::Acquire).is_null()
        {
            return node_mask;
        }
        let _estates = ESTATES.lock();
        let testator = links.testator.load(Ordering::Relaxed);
        let heir = links.heir.load(Ordering::Relaxed);
        let owned = node_mask & !links.inherited.load(Ordering::Relaxed);
        // SAFETY: a linked branch settles under `ESTATES` before it is freed, and clears the
        // links that point to it; so, under the lock, both links point to live branches with
        // child nodes.
        let (testator_links, heir_links) = unsafe {
            (
                (!testator.is_null()).then(|| links_at(testator)),
                (!heir.is_null()).then(|| links_at(heir)),
            )
        };
        let mut handed = 0;
        let mut next_heir = ptr::null_mut();
        if let Some(heir_links) = heir_links {
            let inherits = heir_links.inherited.load(Ordering::Relaxed);
            handed = inherits & owned;
            let still = inherits & !owned;
            debug_assert!(still == 0 || testator_links.is_some());
            heir_links.inherited.store(still, Ordering::Relaxed);
            let from = if still == 0 {
                ptr::null_mut()
            } else {
                testator
            };
            heir_links.testator.store(from, Ordering::Relaxed);
            if still != 0 {
                next_heir = heir;
            }
        }
        if let Some(testator_links) = testator_links {
            debug_assert_eq!(testator_links.heir.load(Ordering::Relaxed), self.0.as_ptr());
            testator_links.heir.store(next_heir, Ordering::Release);
        }
        owned & !handed
    }

    /// What the parent keeps beside the pointer.
    pub(crate) fn shape(&self) -> Shape {
        Shape::new(self.pos, self.mask & !self.inline_mask, self.inline_mask)
    }

    /// Where the child handles start. Only meaningful in a branch with child nodes: one
    /// without has no links to skip, and no handles to read.
    fn nodes_ptr(&self) -> *const Node {
        // SAFETY: the node handles start right after the head and the links.
        unsafe { (self.0.as_ptr() as *const u8).add(HEAD_BYTES + LINK_BYTES) as *const Node }
    }

    fn leaves_ptr(&self, n_nodes: usize) -> *const Inline {
        let offset = nodes_offset(n_nodes) + n_nodes * std::mem::size_of::<Node>();
        // SAFETY: the inline leaves start right after the node handles, inside the allocation.
        unsafe { (self.0.as_ptr() as *const u8).add(offset) as *const Inline }
    }

    /// The node slots and their handles, in slot order.
    fn node_slots_raw(&self) -> impl Iterator<Item = (usize, &Node)> {
        crate::trie::set_bits(self.mask & !self.inline_mask).zip(self.nodes())
    }

    /// The child nodes, in slot order.
    pub(crate) fn nodes(&self) -> &[Node] {
        if self.n_nodes == 0 {
            return &[];
        }
        // SAFETY: `n_nodes` handles were written at `nodes_ptr` and live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.nodes_ptr(), usize::from(self.n_nodes)) }
    }

    /// The inline leaves, in slot order.
    pub(crate) fn leaves(&self) -> &[Inline] {
        let n_nodes = usize::from(self.n_nodes);
        // SAFETY: `n_leaves` leaves were written after the nodes and live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.leaves_ptr(n_nodes), usize::from(self.n_leaves)) }
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
    pub(crate) fn leaf_in(&self, shape: Shape, slot: usize) -> Option<&Inline> {
        let mask = shape.inline_mask();
        if mask & (1 << slot) == 0 {
            return None;
        }
        debug_assert!(shape == self.shape());
        let n_nodes = shape.node_mask().count_ones() as usize;
        // SAFETY: as in `node_in`, the counts come from this branch's own masks.
        Some(unsafe { &*self.leaves_ptr(n_nodes).add(rank(mask, slot)) })
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
        debug_assert!(self.is_unique());
        // SAFETY: a fresh branch was built by the commit now hashing it and is reachable only
        // from that commit's new tree, which no snapshot holds yet; each fresh branch is hashed
        // by one thread, and the commit's hand-off of the tree (a join, then publication under
        // a lock) orders this write before every read.
        unsafe { *self.hash.get() = hash };
        self.fresh.store(false, Ordering::Relaxed);
    }

    /// How many handles point to this branch.
    pub(crate) fn strong_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether this is the only handle to the branch: dropping it frees the branch.
    pub(crate) fn is_unique(&self) -> bool {
        self.count.load(Ordering::Acquire) == 1
    }

    /// The allocation's address: this branch's identity while it lives.
    pub(crate) fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    pub(crate) fn ptr_eq(&self, other: &Branch) -> bool {
        self.0 == other.0
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
    /// The last handle frees the branch and releases the children it owns and does not leave
    /// to an heir. Their reference counts are read first with plain, independent loads, so the
    /// misses overlap instead of queueing behind one locked decrement each; inline leaves need
    /// nothing.
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let (n_nodes, n_leaves) = (usize::from(self.n_nodes), usize::from(self.n_leaves));
        let release = if n_nodes > 0 { self.settle() } else { 0 };
        let node_mask = self.mask & !self.inline_mask;
        let released = || {
            crate::trie::set_bits(node_mask)
                .enumerate()
                .filter(move |(_, slot)| release & (1 << slot) != 0)
                .map(|(i, _)| i)
        };
        let touched = released().fold(0usize, |acc, i| acc ^ self.nodes()[i].touch());
        std::hint::black_box(touched);
        let raw = self.0.as_ptr();
        // SAFETY: this was the last handle, so nothing else can reach the allocation, and the
        // estate is settled, so no testator or heir points to it; each released node and the
        // head are dropped once, then the memory is returned with its own layout.
        unsafe {
            let nodes = self.nodes_ptr() as *mut Node;
            for i in released() {
                ptr::drop_in_place(nodes.add(i));
            }
            ptr::drop_in_place(raw);
            alloc::dealloc(raw as *mut u8, layout(n_nodes, n_leaves));
        }
        #[cfg(test)]
        live::died();
    }
}

/// The links of the branch at `head`.
///
/// # Safety
/// `head` must point to a live branch with child nodes.
unsafe fn links_at<'a>(head: *const BranchHead) -> &'a Links {
    &*((head as *const u8).add(HEAD_BYTES) as *const Links)
}

/// Branches alive on this thread's count, for tests that check nothing leaks or is freed twice.
#[cfg(test)]
pub(crate) mod live {
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    pub(super) fn born() {
        LIVE.with(|live| live.set(live.get() + 1));
    }

    pub(super) fn died() {
        LIVE.with(|live| live.set(live.get() - 1));
    }

    /// Branches built on this thread, less those freed on it.
    pub(crate) fn count() -> isize {
        LIVE.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_keeps_its_position_and_masks_at_their_limits() {
        for (pos, nodes, inline) in [(0, 0, 0), (2048, 0x1_5555, 0xaaaa), (4095, 0x1_ffff, 0)] {
            let shape = Shape::new(pos, nodes, inline);
            assert_eq!(shape.pos(), usize::from(pos));
            assert_eq!(shape.node_mask(), nodes);
            assert_eq!(shape.inline_mask(), inline);
        }
        let shape = Shape::new(7, 0, 0x1_ffff);
        assert_eq!(
            (shape.pos(), shape.node_mask(), shape.inline_mask()),
            (7, 0, 0x1_ffff)
        );
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
            prefix: Bytes::new(),
        };
        let branch = Branch::new(parts, [a.clone(), b.clone()], &[&[inline]]);
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

    #[test]
    fn a_branch_of_inline_leaves_has_no_room_for_child_nodes() {
        let four_leaves = layout(0, 4).size();
        assert_eq!(four_leaves, HEAD_BYTES + 4 * std::mem::size_of::<Inline>());
        assert!(four_leaves <= 432);
    }

    /// A branch over `nodes` in slots 1, 2, ... and one inline leaf in slot 0.
    fn over(nodes: &[Node]) -> Branch {
        let inline = Inline::new(b"", b"v").expect("fits inline");
        let node_mask = ((1u32 << nodes.len()) - 1) << 1;
        let parts = Parts {
            hash: Some([0; 32]),
            staged: 0,
            loc: 0,
            pos: 0,
            mask: node_mask | 1,
            inline_mask: 1,
            prefix: Bytes::new(),
        };
        Branch::new(parts, nodes.iter().cloned(), &[&[inline]])
    }

    /// A copy of `b` with the node in `slot` replaced by `node`.
    fn copy_with(b: &Branch, slot: usize, node: &Node) -> Branch {
        let nodes: Vec<&Node> = b
            .node_slots_raw()
            .map(|(s, n)| if s == slot { node } else { n })
            .collect();
        let parts = Parts {
            hash: Some([0; 32]),
            staged: 0,
            loc: 0,
            pos: b.pos,
            mask: b.mask,
            inline_mask: b.inline_mask,
            prefix: Bytes::new(),
        };
        b.copy(parts, nodes, &[b.leaves()])
    }

    fn leaves(n: u8) -> Vec<Node> {
        (0..n).map(|i| Node::leaf(&[i], &[i; 64])).collect()
    }

    fn counts(nodes: &[Node]) -> Vec<usize> {
        nodes.iter().map(Node::strong_count).collect()
    }

    /// The first copy inherits the shared children without counting them; whichever of the two
    /// dies first, every child ends with the count it started with.
    #[test]
    fn a_first_copy_inherits_shared_children_in_either_order_of_death() {
        for testator_dies_first in [true, false] {
            let kids = leaves(3);
            let new = Node::leaf(b"new", &[9; 64]);
            let old = over(&kids);
            assert_eq!(counts(&kids), [2, 2, 2]);
            let heir = copy_with(&old, 2, &new);
            assert_eq!(counts(&kids), [2, 2, 2], "shared children are not counted");
            assert_eq!(new.strong_count(), 2);
            if testator_dies_first {
                drop(old);
                assert_eq!(counts(&kids), [2, 1, 2], "the replaced child is released");
                assert!(heir
                    .node_in(heir.shape(), 1)
                    .is_some_and(|n| n.ptr_eq(&kids[0])));
                drop(heir);
            } else {
                drop(heir);
                assert_eq!(counts(&kids), [2, 2, 2]);
                assert_eq!(new.strong_count(), 1);
                drop(old);
            }
            assert_eq!(counts(&kids), [1, 1, 1]);
            assert_eq!(new.strong_count(), 1);
        }
    }

    /// In a chain of copies, the middle one dying first passes what it owns to its heir and
    /// leaves its heir inheriting the rest from its own testator.
    #[test]
    fn a_middle_copy_dying_first_joins_its_testator_and_heir() {
        let kids = leaves(4);
        let (x, y) = (Node::leaf(b"x", &[7; 64]), Node::leaf(b"y", &[8; 64]));
        let first = over(&kids);
        let middle = copy_with(&first, 1, &x);
        let last = copy_with(&middle, 2, &y);
        assert_eq!(counts(&kids), [2, 2, 2, 2]);
        assert_eq!((x.strong_count(), y.strong_count()), (2, 2));
        drop(middle);
        assert_eq!(x.strong_count(), 2, "x passes to the last copy");
        assert_eq!(counts(&kids), [2, 2, 2, 2]);
        drop(first);
        assert_eq!(
            counts(&kids),
            [1, 1, 2, 2],
            "the first copy's replaced children go"
        );
        drop(last);
        assert_eq!(counts(&kids), [1, 1, 1, 1]);
        assert_eq!((x.strong_count(), y.strong_count()), (1, 1));
    }

    /// A second copy of the same branch (a fork) counts its shared children.
    #[test]
    fn a_second_copy_counts_its_shared_children() {
        let kids = leaves(2);
        let (x, y) = (Node::leaf(b"x", &[7; 64]), Node::leaf(b"y", &[8; 64]));
        let old = over(&kids);
        let heir = copy_with(&old, 1, &x);
        let fork = copy_with(&old, 1, &y);
        assert_eq!(counts(&kids), [2, 3]);
        drop(old);
        assert_eq!(counts(&kids), [1, 3]);
        drop(fork);
        drop(heir);
        assert_eq!(counts(&kids), [1, 1]);
    }

    /// Random commits on random revisions of a trie (forks, chains of copies) and random
    /// drops: every revision reads as its model, keeps the model's commitment, and once all
    /// are dropped, every branch built has been freed once.
    #[test]
    fn random_forks_and_drops_free_every_branch_once() {
        use crate::trie::{self, Ctx};
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeMap;
        type Model = BTreeMap<Vec<u8>, Vec<u8>>;
        let ctx = Ctx { parallel: false };
        let start = live::count();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut revisions: Vec<(Option<Node>, Model)> = vec![(None, Model::new())];
        for round in 0..400 {
            let (root, model) = revisions[rng.gen_range(0..revisions.len())].clone();
            let mut model = model;
            let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for _ in 0..rng.gen_range(1..40) {
                let key = vec![
                    rng.gen_range(0..4u8) * 17,
                    rng.gen_range(0..16u8),
                    rng.gen(),
                ];
                let value = rng
                    .gen_bool(0.8)
                    .then(|| vec![rng.gen(); rng.gen_range(1..60)]);
                writes.insert(key, value);
            }
            for (k, v) in &writes {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
            let changes: Vec<trie::Change> = writes
                .into_iter()
                .map(|(k, v)| (Bytes::from_vec(k), v.map(Bytes::from_vec)))
                .collect();
            let (root, _) = trie::apply(ctx, root.as_ref(), &changes).expect("apply");
            revisions.push((root, model));
            if revisions.len() > 6 || rng.gen_bool(0.3) {
                revisions.remove(rng.gen_range(0..revisions.len()));
            }
            if round % 20 == 0 {
                revisions.iter().for_each(check);
            }
        }
        revisions.iter().for_each(check);
        drop(revisions);
        assert_eq!(
            live::count(),
            start,
            "branches built and freed on this thread"
        );

        fn check((root, model): &(Option<Node>, Model)) {
            for (k, v) in model {
                let got = root.as_ref().map(|r| trie::get(r, k).expect("in memory"));
                assert_eq!(got.flatten().as_deref(), Some(&v[..]));
            }
            let entries: Vec<(Bytes, Option<Bytes>)> = model
                .iter()
                .map(|(k, v)| (Bytes::from_slice(k), Some(Bytes::from_slice(v))))
                .collect();
            let rebuilt = if entries.is_empty() {
                None
            } else {
                trie::apply(Ctx { parallel: false }, None, &entries)
                    .expect("build")
                    .0
            };
            let hash = |n: &Option<Node>| n.as_ref().map(|n| *n.hash());
            assert_eq!(hash(root), hash(&rebuilt), "the commitment of the model");
        }
    }
}
