//! Buckets: the bottom of the trie, where a few keys share one sorted node.
//!
//! # Why
//! With random keys, most of a commit's work is copying the branches on each written path.
//! Below the level where branches are full, a 16-way split spreads a handful of keys over
//! mostly single-key slots, and the keys that share a slot get a small branch of their own one
//! level down: at 10M random keys a write copied 2.8 branches, 0.46 of them such two- or
//! three-key branches; at 1M keys, 1.9, of which 0.6. A *bucket* holds a subtree of up to
//! [`BUCKET_KEYS`] keys whole, in key order, so a write there copies one node where it copied
//! two, and a lookup ends one miss earlier.
//!
//! # Shape
//! A subtree is a bucket when it holds 3 to [`BUCKET_KEYS`] keys, every key and value fit
//! inline ([`crate::trie::INLINE_BYTES`]), and two of them would share a slot of the branch
//! that splits them; otherwise it splits as before. Keys that would each take a slot of their
//! own make a *flat* branch, all inline leaves: as compact as a bucket, and a lookup finds its
//! key by the nibble instead of scanning (dense keys, such as sequential account numbers,
//! fill bottom branches this way). The rule depends on the
//! key set alone, so the shape, and the commitment, still do not depend on the order of writes.
//! A write that grows a bucket past the limit (or stores a value too long to be inline) splits
//! it, and one that leaves its keys a slot each makes it flat; a second key in a flat branch's
//! slot, a delete, or a value shrunk to fit, that brings a branch's subtree within the rule
//! gathers it into a bucket ([`gather`]).
//!
//! # Representation
//! A bucket is a [`Branch`] whose `pos` is [`BUCKET`] (past any real position: keys are at most
//! 1 KiB, so positions stop at 2,048), whose slots `0..n` hold its `n` keys' inline records in
//! key order, every slot inline. It is built, copied, hashed (its encoding is a branch's: the
//! records in slot order), stored in the node file, recycled and freed as any branch is; only
//! finding a key in it differs: a scan of its sorted records ([`Branch::bucket_leaf`]).

use crate::branch::{Branch, Builder, Parts, SLOTS};
use crate::hashing::Encoder;
use crate::trie::{self, Change, Child, Ctx, Entry, Hashing, Inline, InlineRef, Node, Piece, Slot};
use crate::{Bytes, Error};
use smallvec::SmallVec;

/// The `pos` that marks a bucket.
pub(crate) const BUCKET: u16 = 0xfff;

/// Keys a bucket holds at most: one per slot.
pub(crate) const BUCKET_KEYS: usize = SLOTS;

/// A record on its way into a bucket: kept from a node, or new.
pub(crate) enum Record<'a> {
    Kept(InlineRef<'a>),
    New(Inline),
}

impl Record<'_> {
    fn as_ref(&self) -> InlineRef<'_> {
        match self {
            Record::Kept(leaf) => *leaf,
            Record::New(leaf) => leaf.as_ref(),
        }
    }
}

/// Records of one bucket.
pub(crate) type Records<'a> = SmallVec<[Record<'a>; BUCKET_KEYS]>;

/// A bucket over `records` (3 to [`BUCKET_KEYS`], sorted by key, unique), hashed as a commit
/// building it from `writes` writes hashes a branch.
pub(crate) fn new(records: &[Record], writes: usize) -> Child {
    debug_assert!((3..=BUCKET_KEYS).contains(&records.len()));
    debug_assert!(records
        .windows(2)
        .all(|w| w[0].as_ref().entry().0 < w[1].as_ref().entry().0));
    let class = records
        .iter()
        .map(|r| r.as_ref().class())
        .max()
        .unwrap_or(0);
    build(records.len(), class, writes, |filler| {
        records
            .iter()
            .for_each(|record| filler.push(record.as_ref()));
    })
}

/// A bucket of `n` records, whose stride class is `class` (that of the longest), which `fill`
/// pushes in key order; hashed as a commit building it from `writes` writes hashes a branch.
fn build(n: usize, class: u8, writes: usize, fill: impl FnOnce(&mut Filler)) -> Child {
    let mask = (1u32 << n) - 1;
    let parts = Parts {
        hash: None,
        staged: 0,
        loc: 0,
        pos: BUCKET,
        mask,
        inline_mask: mask,
        class,
        prefix: Bytes::new(),
    };
    let bucket = trie::build_with(parts, Hashing::fresh(writes), |builder, encoder| {
        fill(&mut Filler { builder, encoder });
    });
    Child::Node(bucket.into_node())
}

/// Puts records into a bucket being built and their pieces into its encoding, slot by slot.
struct Filler<'f, 'e> {
    builder: &'f mut Builder,
    encoder: &'f mut Encoder<'e>,
}

impl Filler<'_, '_> {
    fn push(&mut self, record: InlineRef) {
        self.encoder.child(Piece::Inline(record.record()));
        self.builder.push_leaf(record);
    }
}

/// Whether two of `keys` (sorted, unique, at least two) would share a slot of the branch that
/// splits them, at the first position where they differ. Keys that would not make a *flat*
/// branch instead: one inline leaf per slot, found by its nibble without a scan.
fn collide<'k>(mut keys: impl ExactSizeIterator<Item = &'k [u8]> + Clone) -> bool {
    let first = keys.clone().next().expect("two keys");
    let last = keys.clone().last().expect("two keys");
    let pos = trie::common_nibbles(first, last);
    let mut previous = trie::nibble(first, pos);
    keys.next();
    keys.any(|key| {
        let slot = trie::nibble(key, pos);
        std::mem::replace(&mut previous, slot) == slot
    })
}

/// The subtree over `entries` (sorted by key, unique) if it is a bucket: 3 to [`BUCKET_KEYS`]
/// of them, each small enough to be inline, two of them in one slot of the split.
pub(crate) fn of_entries(entries: &[Entry], writes: usize) -> Option<Child> {
    if !(3..=BUCKET_KEYS).contains(&entries.len()) || !collide(entries.iter().map(|e| e.0)) {
        return None;
    }
    let records: Option<Records> = entries
        .iter()
        .map(|(k, v)| Inline::new(k, v).map(Record::New))
        .collect();
    Some(new(&records?, writes))
}

/// Applies `writes` (sorted by key, unique, non-empty) to the bucket `b`: its keys and the
/// writes merged, as a bucket again when they fit one, else split.
pub(crate) fn apply(ctx: Ctx, b: &Branch, writes: &[Change]) -> Result<trie::Applied, Error> {
    if let [(key, Some(value))] = writes {
        if let Some(applied) = Inline::new(key, value).and_then(|leaf| put_one(b, key, &leaf)) {
            return Ok(applied);
        }
    }
    let old = b.leaves();
    let before = old.len() as i64;
    let mut records = Records::new();
    // Whether every record so far fits a bucket (a new value may be too long to be inline).
    let mut fits = true;
    let mut old = old.peekable();
    for (key, value) in writes {
        let before = |leaf: &InlineRef| trie::key_order(leaf.entry().0, key).is_lt();
        while let Some(leaf) = old.next_if(before) {
            records.push(Record::Kept(leaf));
        }
        old.next_if(|leaf| leaf.entry().0 == key.as_slice());
        if let Some(value) = value {
            match Inline::new(key, value) {
                Some(leaf) => records.push(Record::New(leaf)),
                None => {
                    fits = false;
                    break;
                }
            }
        }
        if records.len() + old.len() > BUCKET_KEYS {
            fits = false;
            break;
        }
    }
    records.extend(old.map(Record::Kept));
    let is_bucket = |records: &Records| {
        records.len() >= 3
            && records.len() <= BUCKET_KEYS
            && collide(records.iter().map(|r| r.as_ref().entry().0))
    };
    if fits && is_bucket(&records) {
        let added = records.len() as i64 - before;
        return Ok((Some(new(&records, writes.len())), added));
    }
    // Too many keys, a long value, keys a flat branch holds, or one key left (inline in the
    // parent): the general path.
    drop(records);
    let merged = merge(b, writes);
    let added = merged.len() as i64 - before;
    Ok((trie::build(ctx, &merged)?, added))
}

/// The common write: one key put into a bucket, which stays one unless it grows past the limit
/// (an insert keeps the keys that shared a slot together, where the new split is, and a
/// replace keeps the keys). The records go straight from this bucket into the new one.
fn put_one(b: &Branch, key: &[u8], leaf: &Inline) -> Option<trie::Applied> {
    let n = b.leaves().len();
    let at = b
        .leaves()
        .position(|old| trie::key_order(old.entry().0, key).is_ge())
        .unwrap_or(n);
    let replace = at < n && b.leaf(at).entry().0 == key;
    let m = if replace { n } else { n + 1 };
    if m > BUCKET_KEYS {
        return None;
    }
    let class = b
        .leaves()
        .enumerate()
        .filter(|&(i, _)| !(replace && i == at))
        .map(|(_, old)| old.class())
        .fold(leaf.as_ref().class(), u8::max);
    let bucket = build(m, class, 1, |filler| {
        for (i, old) in b.leaves().enumerate() {
            if i == at {
                filler.push(leaf.as_ref());
            }
            if !(replace && i == at) {
                filler.push(old);
            }
        }
        if at == n {
            filler.push(leaf.as_ref());
        }
    });
    Some((Some(bucket), i64::from(!replace)))
}

/// The bucket's entries with `writes` applied, in key order.
fn merge<'a>(b: &'a Branch, writes: &'a [Change]) -> Vec<Entry<'a>> {
    let mut merged = Vec::with_capacity(b.leaves().len() + writes.len());
    let mut old = b.leaves().map(|leaf| leaf.entry()).peekable();
    for (key, value) in writes {
        while let Some(entry) = old.next_if(|(k, _)| *k < key.as_slice()) {
            merged.push(entry);
        }
        old.next_if(|(k, _)| *k == key.as_slice());
        if let Some(value) = value {
            merged.push((key.as_slice(), value.as_slice()));
        }
    }
    merged.extend(old);
    merged
}

/// The bucket that the subtree over `slots` (a branch's contents, in slot order, at least
/// two) is, if its keys fit one: every child an inline leaf, a bucket or a flat branch, at
/// least one of them a node (else the branch is flat itself), and at most [`BUCKET_KEYS`] keys
/// in all. Counting needs no child loaded, except one only on disk.
pub(crate) fn gather(slots: &[Slot], writes: usize) -> Result<Option<Child>, Error> {
    // A node child holds at least two keys: most branches are ruled out by their masks alone.
    let (mut least, mut nodes) = (0, 0);
    for slot in slots {
        match slot {
            Slot::Inline(_) => least += 1,
            Slot::Node(_) => (least, nodes) = (least + 2, nodes + 1),
        }
    }
    if least > BUCKET_KEYS || nodes == 0 {
        return Ok(None);
    }
    let mut loaded: SmallVec<[Node; SLOTS]> = SmallVec::new();
    for slot in slots {
        match slot {
            Slot::Inline(_) => {}
            Slot::Node(node @ Node::Branch(..)) if all_inline(node) => {}
            Slot::Node(Node::Stub(stub)) => match stub.load()? {
                node if all_inline(&node) => loaded.push(node),
                _ => return Ok(None),
            },
            Slot::Node(_) => return Ok(None),
        }
    }
    let mut loaded_buckets = loaded.iter();
    let mut records = Records::new();
    for slot in slots {
        let bucket = match *slot {
            Slot::Inline(leaf) => {
                records.push(Record::Kept(leaf));
                continue;
            }
            Slot::Node(Node::Stub(_)) => loaded_buckets.next().expect("loaded above"),
            Slot::Node(node) => node,
        };
        let Node::Branch(_, b) = bucket else {
            unreachable!("checked above");
        };
        records.extend(b.leaves().map(Record::Kept));
    }
    Ok((records.len() <= BUCKET_KEYS).then(|| new(&records, writes)))
}

/// Whether `node` is a bucket (a stub is not looked into).
#[cfg(test)]
pub(crate) fn is_bucket(node: &Node) -> bool {
    matches!(node, Node::Branch(shape, _) if shape.pos() == usize::from(BUCKET))
}

/// Whether `node` is a bucket or a flat branch: a branch that holds only inline leaves, whose
/// records are in key order (a stub is not looked into).
fn all_inline(node: &Node) -> bool {
    matches!(node, Node::Branch(shape, _) if shape.node_mask() == 0)
}
