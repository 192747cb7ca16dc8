//! Merkle proofs that a key holds a value, or holds none, in a revision of known commitment.
//!
//! A proof is the key's path from the root (see `docs/STATE.md` for the hashes):
//! - one [`Step`] per branch on the path: its `pos`, its slot and inline masks, and its other
//!   children in slot order: a node's hash, or an inline leaf's key and value;
//! - then an [`End`]: the leaf the path reaches, or no child in the key's slot, or an empty trie.
//!
//! A verifier recomputes the root from the bottom: the leaf's piece (its record if the last
//! branch holds it inline, else its hash; or nothing), then each branch's hash with the running
//! piece placed in the slot the key's nibble at `pos` selects.
//! Every key in the trie whose nibbles at those positions match the queried key's lies below the
//! path, so the path's end settles the question:
//! - a leaf with the queried key proves its value;
//! - a leaf with another key proves absence (a subtree holding one key is that leaf);
//! - an empty slot proves absence.
//!
//! A bucket ([`crate::bucket`]) at the end of a path is a step like a branch's, at `pos`
//! [`BUCKET`], whose siblings are all its other keys' records in key order: the verifier puts
//! the queried key's record among them by key (inclusion), or checks that it is none of them
//! (absence: a bucket holds its whole subtree).
//!
//! Branch hashes do not cover the nibbles a branch skips (its prefix), and need not: inclusion
//! is bound by the leaf, whose hash or record covers the whole key, and absence follows from the
//! slots alone.

use crate::bucket::BUCKET;
use crate::trie::{self, branch_hash_of, empty_hash, leaf_hash, nibble, Hash32, Inline};
use crate::trie::{Node, Piece, Slot};
use crate::Error;

/// One branch on a key's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The nibble position the branch splits on.
    pub pos: u16,
    /// Bit `s` is set when slot `s` holds a child.
    pub mask: u32,
    /// Bit `s` is set when slot `s` holds a leaf inline.
    pub inline_mask: u32,
    /// The children in the other slots, in slot order.
    pub siblings: Vec<Sibling>,
}

/// A child of a branch on the path, beside the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sibling {
    /// A node of its own (a branch, or a leaf too big to be inline): its hash.
    Hash(Hash32),
    /// A leaf inline in the branch, whose record the branch's hash covers.
    Leaf {
        /// The leaf's key.
        key: Vec<u8>,
        /// The leaf's value.
        value: Vec<u8>,
    },
}

/// Where a key's path ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The state is empty; there are no steps.
    EmptyTrie,
    /// The last branch has no child in the key's slot: the key is absent.
    NoChild,
    /// The one leaf below the path: the key itself, or another key (the key is absent).
    Leaf {
        /// The leaf's key.
        key: Vec<u8>,
        /// The leaf's value.
        value: Vec<u8>,
    },
}

/// A proof of a key's value (or absence) in one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The branches from the root down.
    pub steps: Vec<Step>,
    /// Where the path ends.
    pub end: End,
}

/// Why a proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof is well formed but does not lead to the commitment.
    #[error("the proof does not match the state commitment")]
    Mismatch,
    /// The proof cannot be a path of any trie.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
}

/// Slots of a branch.
const SLOTS: u32 = 17;

/// What the path gives the branch above it: a node's hash, or the record of a leaf that the
/// last branch holds inline.
enum Below {
    Hash(Hash32),
    Inline(Inline),
}

impl Below {
    fn piece(&self) -> Piece<'_> {
        match self {
            Below::Hash(hash) => Piece::Hash(hash),
            Below::Inline(leaf) => Piece::Inline(leaf.record()),
        }
    }
}

impl Proof {
    /// Checks the proof for `key` against `commitment`: the key's value, or `None` if the proof
    /// shows it absent.
    pub fn verify(&self, commitment: &Hash32, key: &[u8]) -> Result<Option<Vec<u8>>, ProofError> {
        if self.steps.windows(2).any(|w| w[0].pos >= w[1].pos) {
            return Err(ProofError::Malformed("branch positions must increase"));
        }
        let in_bucket = self.steps.last().is_some_and(|s| s.pos == BUCKET);
        if in_bucket && matches!(&self.end, End::Leaf { key: k, .. } if k != key) {
            return Err(ProofError::Malformed(
                "a bucket's leaf must be the key's own",
            ));
        }
        let (mut below, found) = match &self.end {
            End::EmptyTrie if self.steps.is_empty() => {
                return (*commitment == empty_hash())
                    .then_some(None)
                    .ok_or(ProofError::Mismatch);
            }
            End::EmptyTrie => return Err(ProofError::Malformed("an empty trie has no branches")),
            End::NoChild if self.steps.is_empty() => {
                return Err(ProofError::Malformed("an empty slot needs a branch"));
            }
            End::NoChild => (None, None),
            End::Leaf { key: k, value } => {
                let same_path = self
                    .steps
                    .iter()
                    .all(|s| nibble(k, usize::from(s.pos)) == nibble(key, usize::from(s.pos)));
                if !same_path {
                    return Err(ProofError::Malformed("the leaf is not on the key's path"));
                }
                (
                    Some(self.leaf(k, value)?),
                    (k == key).then(|| value.clone()),
                )
            }
        };
        for step in self.steps.iter().rev() {
            let piece = below.as_ref().map(Below::piece);
            let hash = match step.pos {
                BUCKET => bucket_hash(step, key, piece)?,
                _ => step_hash(step, key, piece)?,
            };
            below = Some(Below::Hash(hash));
        }
        match below {
            Some(Below::Hash(root)) if root == *commitment => Ok(found),
            _ => Err(ProofError::Mismatch),
        }
    }

    /// The piece of the leaf `key`, `value` at the path's end: inline in the last branch if
    /// that branch's inline mask says so, else a leaf node (also the lone key at the root).
    fn leaf(&self, key: &[u8], value: &[u8]) -> Result<Below, ProofError> {
        let inline = self
            .steps
            .last()
            .is_some_and(|s| s.inline_mask & (1 << nibble(key, usize::from(s.pos))) != 0);
        if !inline {
            return Ok(Below::Hash(leaf_hash(key, value)));
        }
        Inline::new(key, value)
            .map(Below::Inline)
            .ok_or(ProofError::Malformed(
                "an inline leaf too long to be inline",
            ))
    }
}

/// The hash of the bucket `step` with `below` (the key's record, or `None` for a key it does
/// not hold) among its siblings, in key order.
fn bucket_hash(step: &Step, key: &[u8], below: Option<Piece>) -> Result<Hash32, ProofError> {
    let n = step.siblings.len() + usize::from(below.is_some());
    if !(3..=SLOTS as usize).contains(&n)
        || step.mask != (1 << n) - 1
        || step.inline_mask != step.mask
    {
        return Err(ProofError::Malformed(
            "a bucket holds 3 to 17 keys, all inline",
        ));
    }
    let mut records = Vec::with_capacity(n);
    for sibling in &step.siblings {
        let Sibling::Leaf { key, value } = sibling else {
            return Err(ProofError::Malformed("a bucket holds only inline leaves"));
        };
        let leaf = Inline::new(key, value).ok_or(ProofError::Malformed(
            "an inline leaf too long to be inline",
        ))?;
        records.push((key.as_slice(), leaf));
    }
    if records.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(ProofError::Malformed("a bucket's keys are in order"));
    }
    let at = records.partition_point(|(k, _)| *k < key);
    if records.get(at).is_some_and(|(k, _)| *k == key) {
        // The key is among the siblings: a proof of its absence, or a second copy of it.
        return Err(ProofError::Mismatch);
    }
    let pieces: Vec<Piece> = records[..at]
        .iter()
        .map(|(_, leaf)| Piece::Inline(leaf.record()))
        .chain(below)
        .chain(
            records[at..]
                .iter()
                .map(|(_, leaf)| Piece::Inline(leaf.record())),
        )
        .collect();
    Ok(branch_hash_of(
        step.pos,
        step.mask,
        step.inline_mask,
        pieces.into_iter(),
    ))
}

/// The hash of `step`'s branch with `below` (the path's piece; `None` at an empty slot) in the
/// slot of `key`'s nibble.
fn step_hash(step: &Step, key: &[u8], below: Option<Piece>) -> Result<Hash32, ProofError> {
    let slot = nibble(key, usize::from(step.pos));
    let bit = 1u32 << slot;
    if step.mask >> SLOTS != 0 || step.mask.count_ones() < 2 || step.inline_mask & !step.mask != 0 {
        return Err(ProofError::Malformed("a branch has two to 17 children"));
    }
    let below_inline = matches!(below, Some(Piece::Inline(_)));
    if (step.mask & bit != 0) != below.is_some() || (step.inline_mask & bit != 0) != below_inline {
        return Err(ProofError::Mismatch);
    }
    let others = step.mask.count_ones() as usize - usize::from(below.is_some());
    if step.siblings.len() != others {
        return Err(ProofError::Malformed("sibling count differs from the mask"));
    }
    let slots = (0..SLOTS as usize).filter(|s| step.mask & (1 << s) != 0 && *s != slot);
    let siblings = slots
        .zip(&step.siblings)
        .map(
            |(s, sibling)| match (sibling, step.inline_mask & (1 << s) != 0) {
                (Sibling::Hash(hash), false) => Ok(Below::Hash(*hash)),
                (Sibling::Leaf { key, value }, true) => Inline::new(key, value)
                    .map(Below::Inline)
                    .ok_or(ProofError::Malformed(
                        "an inline leaf too long to be inline",
                    )),
                _ => Err(ProofError::Malformed(
                    "a sibling of the wrong kind for its slot",
                )),
            },
        )
        .collect::<Result<Vec<Below>, ProofError>>()?;
    let mut siblings = siblings.iter().map(Below::piece);
    let pieces = (0..SLOTS as usize)
        .filter(|s| step.mask & (1 << s) != 0)
        .filter_map(|s| if s == slot { below } else { siblings.next() });
    Ok(branch_hash_of(
        step.pos,
        step.mask,
        step.inline_mask,
        pieces,
    ))
}

/// The proof for `key` in the trie at `root`, loading on-disk nodes from `file`.
pub(crate) fn prove(root: Option<&Node>, key: &[u8]) -> Result<Proof, Error> {
    let Some(root) = root else {
        return Ok(Proof {
            steps: Vec::new(),
            end: End::EmptyTrie,
        });
    };
    let mut node = trie::resolve(root)?;
    let mut steps = Vec::new();
    loop {
        let next = match &node {
            Node::Leaf(leaf) => return Ok(leaf_proof(steps, leaf.entry())),
            Node::Branch(_, b) if b.pos == BUCKET => return Ok(bucket_proof(steps, b, key)),
            Node::Branch(_, b) => {
                let slot = nibble(key, usize::from(b.pos));
                let siblings = b
                    .slots()
                    .filter(|(s, _)| *s != slot)
                    .map(|(_, child)| sibling(child))
                    .collect();
                steps.push(Step {
                    pos: b.pos,
                    mask: b.mask,
                    inline_mask: b.inline_mask,
                    siblings,
                });
                match b.slot(slot) {
                    Some(Slot::Node(child)) => trie::resolve(child)?,
                    Some(Slot::Inline(leaf)) => return Ok(leaf_proof(steps, leaf.entry())),
                    None => {
                        return Ok(Proof {
                            steps,
                            end: End::NoChild,
                        })
                    }
                }
            }
            Node::Stub(_) => trie::resolve(&node)?,
        };
        node = next;
    }
}

/// A proof whose path ends in the bucket `b`: every record but `key`'s is a sibling.
fn bucket_proof(mut steps: Vec<Step>, b: &trie::Branch, key: &[u8]) -> Proof {
    let mut end = End::NoChild;
    let mut siblings = Vec::with_capacity(b.leaves().len());
    for leaf in b.leaves() {
        let (k, value) = leaf.entry();
        if k == key {
            end = End::Leaf {
                key: k.to_vec(),
                value: value.to_vec(),
            };
        } else {
            siblings.push(sibling(Slot::Inline(leaf)));
        }
    }
    steps.push(Step {
        pos: b.pos,
        mask: b.mask,
        inline_mask: b.inline_mask,
        siblings,
    });
    Proof { steps, end }
}

/// What a proof shows of a child beside the path.
fn sibling(child: Slot) -> Sibling {
    match child {
        Slot::Node(node) => Sibling::Hash(*node.hash()),
        Slot::Inline(leaf) => {
            let (key, value) = leaf.entry();
            Sibling::Leaf {
                key: key.to_vec(),
                value: value.to_vec(),
            }
        }
    }
}

/// A proof whose path ends at the leaf holding `key` and `value`.
fn leaf_proof(steps: Vec<Step>, (key, value): (&[u8], &[u8])) -> Proof {
    let end = End::Leaf {
        key: key.to_vec(),
        value: value.to_vec(),
    };
    Proof { steps, end }
}
