//! A commit's hashing pass: every branch the commit built, children before parents, eight at a
//! time.
//!
//! # Why a pass of its own
//! A branch's hash is BLAKE3 of its encoding ([`trie::encode_branch`]): up to thirteen 64-byte
//! blocks, compressed one after another, about 700 ns for a full branch on this project's
//! machines. Computed as each branch is built, one message at a time, hashing took a third of a
//! commit at 25M keys. BLAKE3 can compress eight equal-length messages at once in the lanes of
//! AVX2 registers (`blake3::platform::Platform::hash_many`), at about a fifth of the time per
//! message. So a commit builds its branches *fresh* (unhashed), and this pass hashes them once
//! the tree is built: grouped by height (a branch's fresh children are all lower), then by
//! encoded length, and each group in batches.
//!
//! # When, and from what
//! A subtree built from fewer than 256 writes is hashed on its thread right after it is built
//! (`trie::hash_chunk`), together with the sibling subtrees built beside it on the same thread,
//! up to 256 writes in all; the few branches above such subtrees are hashed when the commit's
//! tree is complete. A branch inside a small subtree *stages* its encoding while it is copied
//! ([`stage`]): its unchanged children's hashes are in cache then, because the copy has just
//! read each child's handle. For each fresh child the entry keeps a [`Patch`]: where the
//! child's hash goes and the child's own entry. The entry also holds the branch ([`hold`]).
//! So the pass reads the stage alone: it walks the entries from the subtrees' tops, hashes
//! them level by level, patches each parent's encoding from its children's new hashes, and
//! writes each hash into its branch through the held handle. It never loads a branch or its
//! parent again; at 50M keys a chunk's branches have left the cache by the time it is hashed,
//! and finding the fresh children through the branches (each parent's handles, then each
//! child's head) took 7% of all samples of the load (perf, 2026-11-25). A branch with a fresh
//! child that is not staged on this thread is not staged either, and is hashed from its
//! children, read from memory.

//! # Determinism
//! The hash of a branch depends on its children's pieces alone; the grouping only changes how
//! many messages go through the compression function together, never what they are. The pass
//! gives the same hashes as hashing each branch alone ([`trie::branch_hash_of`]), on any thread
//! count; the tests check both.
//!
//! # The interface used
//! `hash_many` is public in the `blake3` crate but hidden from its documentation and outside its
//! semver promise, so the workspace pins `blake3` to one exact version, and the tests compare
//! every message length against `blake3::hash`.

use crate::branch::Branch;
use crate::trie::{self, Hash32, Node, Piece, BRANCH_ENCODING_MAX};
use blake3::platform::Platform;
use blake3::IncrementCounter;
use rayon::prelude::*;
use smallvec::SmallVec;
use std::cell::RefCell;

/// BLAKE3's initialization vector: the key of plain (unkeyed) hashing.
const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
/// BLAKE3's domain flags: the first and last block of a chunk, and the root of the tree. A
/// message under 1 KiB is one chunk, and that chunk is the root.
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const ROOT: u8 = 8;
/// Encodings a thread's stage holds at most (about 2.3 MiB): a subtree of fewer than 256 writes
/// builds far fewer branches unless its keys are very long; past this, branches are built
/// unstaged and the pass reads their children instead.
const STAGE_MAX: usize = 4096;
/// Messages gathered per call: enough to fill the widest SIMD lanes several times over, few
/// enough that their encodings (36 KiB at most) stay in the first-level cache.
const BATCH: usize = 64;

/// Where a fresh branch's encoding waits in its thread's stage, written while the branch was
/// built, when its children's hashes were in cache; its fresh children's hashes are zeros until
/// the pass patches them in, from the stage itself ([`Patch`]).
struct Staged {
    /// The branch's address ([`Branch::addr`]), checked before the encoding is used.
    owner: usize,
    /// The branch, held until the pass has hashed it ([`hold`]), so the pass writes its hash
    /// without reaching it through its parent, whose lines have left the cache by then.
    branch: Option<Branch>,
    /// Where the encoding starts in [`Stage::bytes`].
    at: usize,
    /// The 64-byte blocks of the encoding.
    blocks: u8,
    /// 0 without fresh children, else one more than the highest of theirs.
    height: u8,
    /// Its fresh children's patches: `Stage::patches[patches.0..patches.1]`.
    patches: (u32, u32),
}

/// A fresh child's place in a staged encoding: where its hash goes, and the child's own
/// staged entry, hashed first.
#[derive(Clone, Copy)]
struct Patch {
    offset: u16,
    child: u16,
}

/// The encodings staged on one thread since its last hashing pass: their places, their bytes
/// back to back, each written once, where the branch's copy puts it, and their fresh
/// children's patches.
#[derive(Default)]
struct Stage {
    entries: Vec<Staged>,
    bytes: Vec<u8>,
    patches: Vec<Patch>,
}

thread_local! {
    /// This thread's stage. A subtree staged here is hashed on this thread right after it is
    /// built (no rayon join lies between), and an entry that is missing or names another branch
    /// is simply not used: the pass then reads the children's hashes itself. The entries of a
    /// build that failed part way are never reached from a pass's tops; they, and the branches
    /// they hold, stay until this thread's next pass empties the stage.
    static STAGE: RefCell<Stage> = RefCell::default();
}

/// Writes a branch's encoding, child by child, while the branch is copied; or nothing, when it
/// is not staged.
pub(crate) struct Encoder<'a> {
    stage: Option<Staging<'a>>,
    children: u32,
}

/// What an [`Encoder`] that stages writes into: the stage's bytes and patches, and where this
/// encoding starts.
struct Staging<'a> {
    entries: &'a [Staged],
    bytes: &'a mut Vec<u8>,
    patches: &'a mut Vec<Patch>,
    at: usize,
    height: u8,
    /// Every fresh child is staged on this thread: if not, neither is this branch.
    complete: bool,
}

impl Encoder<'_> {
    /// An encoder that writes nothing: for branches hashed from their children later.
    pub(crate) fn off() -> Encoder<'static> {
        Encoder {
            stage: None,
            children: 0,
        }
    }

    /// Appends the piece of a child whose hash (or record) is known.
    #[inline]
    pub(crate) fn child(&mut self, piece: Piece) {
        if let Some(staging) = &mut self.stage {
            self.children += 1;
            staging.bytes.extend_from_slice(piece.bytes());
        }
    }

    /// Appends the piece of a child node: its hash, or, for a fresh branch, a place for it
    /// ([`Encoder::fresh_child`]). An encoder that stages nothing reads nothing of the node.
    #[inline]
    pub(crate) fn node(&mut self, node: &Node) {
        if self.stage.is_none() {
            return;
        }
        match node {
            Node::Branch(_, b) if b.is_fresh() => self.fresh_child(b),
            _ => self.child(Piece::Hash(node.hash())),
        }
    }

    /// Appends a place for the hash of `child`, a fresh branch, to be patched in by the pass
    /// from the child's own staged entry.
    #[inline]
    fn fresh_child(&mut self, child: &Branch) {
        let Some(staging) = &mut self.stage else {
            return;
        };
        self.children += 1;
        let offset = staging.bytes.len() - staging.at;
        staging.bytes.extend_from_slice(&[0; 32]);
        match entry_of(child, staging.entries) {
            Some(index) => {
                let height = staging.entries[index].height;
                staging.height = staging.height.max(height + 1);
                staging.patches.push(Patch {
                    offset: u16::try_from(offset).expect("an encoding is under 1 KiB"),
                    child: u16::try_from(index).expect("STAGE_MAX fits in u16"),
                });
            }
            None => staging.complete = false,
        }
    }
}

/// Stages the encoding of the branch being built at `owner` ([`Builder::addr`]), split on
/// `pos` over `mask` (inline slots: `inline_mask`): `write` gives the [`Encoder`] each child's
/// piece in slot order. Returns the number to build it with (1 + the entry's index; see
/// [`BranchHead::staged`]), or 0 when the branch is not staged: the stage is full
/// ([`STAGE_MAX`]), or a fresh child is not staged on this thread.
///
/// [`Builder::addr`]: crate::branch::Builder::addr
/// [`BranchHead::staged`]: crate::branch::BranchHead::staged
pub(crate) fn stage(
    pos: u16,
    mask: u32,
    inline_mask: u32,
    owner: usize,
    write: impl FnOnce(&mut Encoder),
) -> u16 {
    STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        if stage.entries.len() >= STAGE_MAX {
            write(&mut Encoder::off());
            return 0;
        }
        let Stage {
            entries,
            bytes,
            patches,
        } = &mut *stage;
        let (at, first_patch) = (bytes.len(), patches.len());
        bytes.reserve(BRANCH_ENCODING_MAX);
        bytes.extend_from_slice(&trie::branch_header(pos, mask, inline_mask));
        let mut encoder = Encoder {
            stage: Some(Staging {
                entries,
                bytes,
                patches,
                at,
                height: 0,
                complete: true,
            }),
            children: 0,
        };
        write(&mut encoder);
        let children = encoder.children;
        let Some(Staging {
            height, complete, ..
        }) = encoder.stage
        else {
            unreachable!("a staging encoder stays staging")
        };
        assert_eq!(
            children,
            mask.count_ones(),
            "a piece for every child of the mask"
        );
        if !complete {
            bytes.truncate(at);
            patches.truncate(first_patch);
            return 0;
        }
        let len = (bytes.len() - at).next_multiple_of(64);
        bytes.resize(at + len, 0);
        entries.push(Staged {
            owner,
            branch: None,
            at,
            blocks: u8::try_from(len / 64).expect("at most 13 blocks"),
            height,
            patches: (first_patch as u32, patches.len() as u32),
        });
        u16::try_from(entries.len()).expect("STAGE_MAX fits in u16")
    })
}

/// Keeps `branch`, just built with the number [`stage`] gave it, in its entry until the pass.
pub(crate) fn hold(branch: &Branch) {
    STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        if let Some(index) = entry_of(branch, &stage.entries) {
            stage.entries[index].branch = Some(branch.clone());
        }
    });
}

/// The index of `b`'s staged entry in `entries`, if this thread holds it.
fn entry_of(b: &Branch, entries: &[Staged]) -> Option<usize> {
    let index = usize::from(b.staged).checked_sub(1)?;
    entries
        .get(index)
        .filter(|e| e.owner == b.addr())
        .map(|_| index)
}

/// Hashes every fresh branch under `root`, the tree a commit just built. With `parallel`, the
/// root's fresh subtrees are hashed on the rayon pool.
pub(crate) fn hash_fresh(root: &Node, parallel: bool) {
    let Node::Branch(_, top) = root else {
        return;
    };
    if !top.is_fresh() {
        return;
    }
    if parallel {
        let subtrees = fresh_children(top);
        if subtrees.len() > 1 {
            subtrees
                .par_iter()
                .with_max_len(1)
                .for_each(|b| hash_subtree(b));
        } else {
            subtrees.iter().for_each(|b| hash_subtree(b));
        }
    }
    hash_subtree(top);
}

/// The fresh branches among `b`'s child nodes, found by loading every child.
fn fresh_children(b: &Branch) -> SmallVec<[&Branch; 17]> {
    b.nodes()
        .iter()
        .filter_map(|node| match node {
            Node::Branch(_, child) if child.is_fresh() => Some(child),
            _ => None,
        })
        .collect()
}

/// Hashes the fresh branches under and including `top`, lowest first, then empties this
/// thread's stage.
fn hash_subtree(top: &Branch) {
    hash_subtrees([top]);
}

/// Hashes every fresh subtree among `tops`, a group of sibling subtrees just built on this
/// thread, together: each level of all of them at once, so that more equal-length encodings
/// fill the SIMD lanes of each call ([`hash_group`]).
pub(crate) fn hash_fresh_subtrees<'a>(tops: impl IntoIterator<Item = &'a Node>) {
    hash_subtrees(tops.into_iter().filter_map(|node| match node {
        Node::Branch(_, b) if b.is_fresh() => Some(b),
        _ => None,
    }));
}

/// A fresh branch for the pass to hash: staged on this thread (by its entry's index), or
/// built unstaged, hashed from its children.
#[derive(Clone, Copy)]
enum Item<'a> {
    Staged(usize),
    Built(&'a Branch),
}

/// Hashes the fresh branches under and including each of `tops`, lowest first, then empties
/// this thread's stage.
fn hash_subtrees<'a>(tops: impl IntoIterator<Item = &'a Branch>) {
    STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        let mut levels: Vec<Vec<Item>> = Vec::new();
        for top in tops {
            collect(top, &stage, &mut levels);
        }
        let mut hashes = vec![[0u8; 32]; stage.entries.len()];
        let platform = Platform::detect();
        for level in &levels {
            hash_level(platform, level, &stage, &mut hashes);
        }
        stage.entries.clear();
        stage.bytes.clear();
        stage.patches.clear();
    });
}

/// Adds `b` and its fresh descendants to `levels` by height (0: no fresh child); returns `b`'s.
fn collect<'a>(b: &'a Branch, stage: &Stage, levels: &mut Vec<Vec<Item<'a>>>) -> usize {
    if let Some(index) = entry_of(b, &stage.entries) {
        return collect_staged(index, stage, levels);
    }
    let height = fresh_children(b)
        .into_iter()
        .map(|child| collect(child, stage, levels) + 1)
        .max()
        .unwrap_or(0);
    add(levels, height, Item::Built(b));
    height
}

/// Adds the staged entry `index` and its fresh descendants, all staged too, to `levels`,
/// reading the stage alone; returns the entry's height.
fn collect_staged(index: usize, stage: &Stage, levels: &mut Vec<Vec<Item<'_>>>) -> usize {
    let entry = &stage.entries[index];
    for patch in stage.patches_of(entry) {
        collect_staged(usize::from(patch.child), stage, levels);
    }
    let height = usize::from(entry.height);
    add(levels, height, Item::Staged(index));
    height
}

/// Puts `item` in `levels[height]`.
fn add<'a>(levels: &mut Vec<Vec<Item<'a>>>, height: usize, item: Item<'a>) {
    if levels.len() <= height {
        levels.resize_with(height + 1, Vec::new);
    }
    levels[height].push(item);
}

impl Stage {
    /// The patches of `entry`'s fresh children.
    fn patches_of(&self, entry: &Staged) -> &[Patch] {
        &self.patches[entry.patches.0 as usize..entry.patches.1 as usize]
    }

    /// The 64-byte blocks of `item`'s encoding.
    fn blocks(&self, item: Item) -> usize {
        match item {
            Item::Staged(index) => usize::from(self.entries[index].blocks),
            Item::Built(b) => b.encoding_len().div_ceil(64),
        }
    }
}

/// Hashes branches whose fresh children are all hashed, grouped by encoded length; a staged
/// branch's hash also goes into `hashes`, at its entry's index, for its parent's encoding.
fn hash_level(platform: Platform, level: &[Item], stage: &Stage, hashes: &mut [Hash32]) {
    // Index `blocks`: branches whose encoding is that many 64-byte blocks (1 to 13).
    let mut by_blocks: [Vec<Item>; 14] = Default::default();
    for &item in level {
        by_blocks[stage.blocks(item)].push(item);
    }
    for (blocks, group) in by_blocks.iter().enumerate() {
        let hash = match blocks {
            _ if group.is_empty() => continue,
            1 => hash_group::<64>,
            2 => hash_group::<128>,
            3 => hash_group::<192>,
            4 => hash_group::<256>,
            5 => hash_group::<320>,
            6 => hash_group::<384>,
            7 => hash_group::<448>,
            8 => hash_group::<512>,
            9 => hash_group::<576>,
            10 => hash_group::<640>,
            11 => hash_group::<704>,
            12 => hash_group::<768>,
            13 => hash_group::<832>,
            _ => unreachable!("a branch has two to 17 children"),
        };
        hash(platform, group, stage, hashes);
    }
}

/// Writes `item`'s encoding into `buf`: its staged one with its fresh children's hashes
/// patched in from `hashes`, or one read from all its children.
fn encode(item: Item, stage: &Stage, hashes: &[Hash32], buf: &mut [u8]) {
    match item {
        Item::Staged(index) => {
            let entry = &stage.entries[index];
            buf.copy_from_slice(&stage.bytes[entry.at..entry.at + buf.len()]);
            for patch in stage.patches_of(entry) {
                let at = usize::from(patch.offset);
                buf[at..at + 32].copy_from_slice(&hashes[usize::from(patch.child)]);
            }
        }
        Item::Built(b) => {
            let pieces = b.slots().map(|(_, c)| c.piece());
            trie::encode_branch(b.pos, b.mask, b.inline_mask, pieces, buf);
        }
    }
}

thread_local! {
    /// Where a batch's encodings are assembled, kept from batch to batch: allocating it per
    /// group took fresh pages that the kernel had to zero (perf, 10M-key inserts: 5% of all
    /// samples).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hashes `group`, whose encodings are all `N` bytes, `BATCH` at a time.
fn hash_group<const N: usize>(
    platform: Platform,
    group: &[Item],
    stage: &Stage,
    hashes: &mut [Hash32],
) {
    const { assert!(N.is_multiple_of(64) && N <= BRANCH_ENCODING_MAX) };
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let need = N * BATCH.min(group.len());
        if scratch.len() < need {
            scratch.resize(need, 0);
        }
        let mut out = [0u8; 32 * BATCH];
        for batch in group.chunks(BATCH) {
            let encodings = &mut scratch[..N * batch.len()];
            for (&item, buf) in batch.iter().zip(encodings.chunks_exact_mut(N)) {
                encode(item, stage, hashes, buf);
            }
            let inputs: SmallVec<[&[u8; N]; BATCH]> = encodings
                .chunks_exact(N)
                .map(|chunk| chunk.try_into().expect("N-byte chunks"))
                .collect();
            let out = &mut out[..32 * batch.len()];
            let flags_end = CHUNK_END | ROOT;
            platform.hash_many(
                &inputs,
                &IV,
                0,
                IncrementCounter::No,
                0,
                CHUNK_START,
                flags_end,
                out,
            );
            for (&item, hash) in batch.iter().zip(out.chunks_exact(32)) {
                let hash: Hash32 = hash.try_into().expect("32-byte chunks");
                match item {
                    Item::Staged(index) => {
                        hashes[index] = hash;
                        let held = stage.entries[index].branch.as_ref();
                        held.expect("a staged branch is held").set_hash(hash);
                    }
                    Item::Built(b) => b.set_hash(hash),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::branch::Parts;
    use crate::trie::{branch_hash_of, Inline};
    use crate::Bytes;

    /// A fresh branch at position `pos` of `n` inline leaves with 2-byte keys and values of
    /// `value_len` bytes.
    fn fresh(pos: u16, n: usize, value_len: usize) -> Branch {
        let value = vec![7; value_len];
        let leaves: Vec<Inline> = (0..n)
            .map(|i| Inline::new(&[i as u8, pos as u8], &value).expect("small"))
            .collect();
        let mask = (1u32 << n) - 1;
        let parts = Parts {
            hash: None,
            staged: 0,
            loc: 0,
            pos,
            mask,
            inline_mask: mask,
            class: leaves.iter().map(|l| l.as_ref().class()).max().unwrap_or(0),
            prefix: Bytes::new(),
        };
        Branch::new(parts, [], leaves.iter().map(Inline::as_ref))
    }

    /// A branch at `pos` over `children` (slot `i` holds the `i`th), built as a commit builds
    /// one, hashed per `hashing`.
    fn built(pos: u16, children: Vec<trie::Child>, hashing: trie::Hashing) -> Node {
        let slots = children.into_iter().enumerate().collect();
        Branch::from_slots(pos, Bytes::new(), slots, 0, hashing).into_node()
    }

    fn leaf(key: u8) -> trie::Child {
        trie::Child::Inline(Inline::new(&[key], &[key; 8]).expect("small"))
    }

    /// Every branch under `node` is hashed, and its hash is that of its children's pieces.
    fn assert_hashed(node: &Node) {
        let Node::Branch(_, b) = node else {
            return;
        };
        assert!(!b.is_fresh());
        b.nodes().iter().for_each(assert_hashed);
        let pieces = b.slots().map(|(_, c)| c.piece());
        assert_eq!(
            *b.hash(),
            branch_hash_of(b.pos, b.mask, b.inline_mask, pieces)
        );
    }

    /// Three levels of fresh branches, staged as a small subtree's are, hash to the reference
    /// from the stage alone; a branch over a fresh child built unstaged is not staged itself,
    /// and is hashed from its children; afterwards the stage is empty and holds no branch.
    #[test]
    fn staged_subtrees_hash_from_the_stage_and_unstaged_children_unstage_their_parents() {
        use trie::Hashing::{Later, Stage};
        for bottom in [Stage, Later] {
            let low = built(4, vec![leaf(1), leaf(2), leaf(3)], bottom);
            let other = built(4, vec![leaf(4), leaf(5)], Stage);
            let mid = built(2, vec![trie::Child::Node(low), leaf(6)], Stage);
            let top = built(
                0,
                vec![trie::Child::Node(mid), trie::Child::Node(other), leaf(7)],
                Stage,
            );
            let Node::Branch(_, b) = &top else {
                unreachable!("a branch")
            };
            let mid_staged = match &b.nodes()[0] {
                Node::Branch(_, mid) => mid.staged != 0,
                _ => unreachable!("a branch"),
            };
            assert_eq!(mid_staged, matches!(bottom, Stage));
            assert_eq!(b.staged != 0, matches!(bottom, Stage));
            hash_fresh_subtrees([&top]);
            assert_hashed(&top);
            assert_eq!(b.strong_count(), 1, "the stage let go of the branch");
            STAGE.with(|stage| {
                let stage = stage.borrow();
                assert!(stage.entries.is_empty() && stage.bytes.is_empty());
                assert!(stage.patches.is_empty());
            });
        }
    }

    /// At every encoded length, and for batches of one to more than `BATCH`, the batched hashes
    /// equal BLAKE3 of each encoding alone.
    #[test]
    fn batched_hashes_equal_blake3_of_each_encoding_at_every_length() {
        let mut blocks_seen = [false; 14];
        for (n, value_len) in (2..=17usize).flat_map(|n| [0, 8, 20, 44].map(|v| (n, v))) {
            for count in [1, 7, 8, 9, BATCH + 3] {
                let branches: Vec<Branch> =
                    (0..count).map(|i| fresh(i as u16, n, value_len)).collect();
                let items: Vec<Item> = branches.iter().map(Item::Built).collect();
                blocks_seen[Stage::default().blocks(items[0])] = true;
                hash_level(Platform::detect(), &items, &Stage::default(), &mut []);
                for b in &branches {
                    assert!(!b.is_fresh());
                    let pieces = || b.slots().map(|(_, c)| c.piece());
                    let alone = branch_hash_of(b.pos, b.mask, b.inline_mask, pieces());
                    let mut buf = [0u8; BRANCH_ENCODING_MAX];
                    let len = trie::encode_branch(b.pos, b.mask, b.inline_mask, pieces(), &mut buf);
                    assert_eq!(len % 64, 0);
                    assert_eq!(*b.hash(), alone, "{n} children, batch of {count}");
                    assert_eq!(alone, *blake3::hash(&buf[..len]).as_bytes());
                    assert_eq!(len, b.encoding_len().next_multiple_of(64));
                }
            }
        }
        assert_eq!(
            blocks_seen[1..],
            [true; 13],
            "every encoded length from 1 to 13 blocks"
        );
    }

    /// The portable compression gives the same hashes as the machine's widest.
    #[test]
    fn every_platform_gives_the_same_hashes() {
        let wide: Vec<Branch> = (0..20).map(|i| fresh(i, 16, 8)).collect();
        let narrow: Vec<Branch> = (0..20).map(|i| fresh(i, 16, 8)).collect();
        let none = Stage::default();
        hash_level(
            Platform::detect(),
            &wide.iter().map(Item::Built).collect::<Vec<_>>(),
            &none,
            &mut [],
        );
        hash_level(
            Platform::portable(),
            &narrow.iter().map(Item::Built).collect::<Vec<_>>(),
            &none,
            &mut [],
        );
        for (a, b) in wide.iter().zip(&narrow) {
            assert_eq!(a.hash(), b.hash());
        }
    }
}
