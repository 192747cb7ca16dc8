//! Scouting a commit's paths before it copies them.
//!
//! A commit copies every branch on a written path, and a copy reads the whole branch and the
//! hash of each child it keeps. In a trie much bigger than the caches each of those is a cache
//! miss, and a descent meets them one level at a time: a level's address is known only once the
//! level above has arrived, so one write's misses cannot overlap. Before a commit applies a
//! group of at most [`SCOUT_WRITES`] writes, it therefore walks their paths once with
//! prefetches alone, a level of every write in turn, as [`crate::trie::fill`] does for reads:
//! each round asks for the next level of every path at once, so the misses of different writes
//! overlap, and the descent that follows finds its branches, and the hashes of the children it
//! keeps, in cache. A scout reads only what earlier rounds fetched (the handles of branches it
//! has reached); it writes nothing and never loads a node from disk.

use crate::trie::{nibble, Branch, Change, Node};
use smallvec::SmallVec;

/// Most writes a commit scouts together: the paths of many more would not all stay in the
/// cache until the descent reaches them, and a bigger group is split by nibble first.
pub(crate) const SCOUT_WRITES: usize = 128;

/// Prefetches what applying `writes` (sorted by key) under `node` will read: each branch on a
/// written path, whole, and the line holding each of its children's hash. The paths go first,
/// as each round waits for the level the round before fetched; the children's hashes, which
/// no round waits for, follow in a second walk over branches by then in cache.
pub(crate) fn scout(node: &Node, writes: &[Change]) {
    if let Node::Branch(shape, b) = node {
        b.prefetch_body(*shape);
    }
    walk(node, writes, |_, child| {
        if let Some(Node::Branch(shape, child)) = child {
            child.prefetch_body(*shape);
        }
    });
    let mut last = 0;
    walk(node, writes, |b, _| {
        // Writes stay in key order, so those that share a branch come together.
        if b.addr() != last {
            last = b.addr();
            b.nodes().iter().for_each(Node::prefetch_head);
        }
    });
}

/// Walks the paths of `writes` under `node` a level of every write at a time, calling
/// `visit` once with each branch on a path and the child a write goes down to next (the same
/// child, for neighbouring writes that share it, comes again).
fn walk<'a>(
    node: &'a Node,
    writes: &'a [Change],
    mut visit: impl FnMut(&'a Branch, Option<&'a Node>),
) {
    let mut walking: SmallVec<[(&[u8], &Node); SCOUT_WRITES]> = writes
        .iter()
        .map(|(key, _)| (key.as_slice(), node))
        .collect();
    let mut next: SmallVec<[(&[u8], &Node); SCOUT_WRITES]> = SmallVec::new();
    while !walking.is_empty() {
        for &(key, node) in &walking {
            let Node::Branch(shape, b) = node else {
                continue;
            };
            let child = b.node_in(*shape, nibble(key, shape.pos()));
            visit(b, child);
            if let Some(child @ Node::Branch(..)) = child {
                next.push((key, child));
            }
        }
        std::mem::swap(&mut walking, &mut next);
        next.clear();
    }
}
