//! The state commitment: a lattice (additive) multiset hash over every key/value pair.
//!
//! Each pair `(k, v)` is expanded by BLAKE3 in XOF mode into [`LANES`] 16-bit lanes; the state's
//! accumulator is the lane-wise sum (mod 2^16) of every live pair's expansion. Inserting a pair adds
//! its expansion, removing it subtracts it, so a revision's commitment is computed from its parent's
//! in O(changed keys), independent of the total state size, and the same set of pairs always gives
//! the same accumulator whatever the order of writes. The published commitment is the BLAKE3 hash of
//! the accumulator. With 1024 lanes of 16 bits the construction is the "LtHash" of Bellare and
//! Micciancio as parameterised in published deployments, whose security rests on lattice problems
//! rather than on the (broken) plain additive hash.
//!
//! Inclusion proofs are out of scope for this construction; the design keeps them open by keeping
//! the commitment behind [`crate::Snapshot::commitment`], so a Merkle-trie commitment can replace it
//! without changing callers.

use peregrine_types::Hash;

/// Number of 16-bit lanes in the accumulator.
pub const LANES: usize = 1024;
const ELEMENT_DOMAIN: &str = "peregrine v1 state element";
const DIGEST_DOMAIN: &str = "peregrine v1 state commitment";

/// The running accumulator of a state.
#[derive(Clone, PartialEq, Eq)]
pub struct LtHash(Box<[u16; LANES]>);

impl Default for LtHash {
    fn default() -> Self {
        Self(Box::new([0u16; LANES]))
    }
}

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({})", self.digest())
    }
}

fn expand(key: &[u8], value: &[u8]) -> [u16; LANES] {
    let mut hasher = blake3::Hasher::new_derive_key(ELEMENT_DOMAIN);
    // Length-prefix the key so (k, v) pairs with the same concatenation never collide.
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    let mut bytes = [0u8; LANES * 2];
    hasher.finalize_xof().fill(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, chunk) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
    }
    lanes
}

impl LtHash {
    /// Adds the pair `(key, value)` to the set.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        for (acc, lane) in self.0.iter_mut().zip(expand(key, value)) {
            *acc = acc.wrapping_add(lane);
        }
    }

    /// Removes the pair `(key, value)` from the set.
    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        for (acc, lane) in self.0.iter_mut().zip(expand(key, value)) {
            *acc = acc.wrapping_sub(lane);
        }
    }

    /// Adds every pair of `other` (lane-wise sum): the commitment of the union of two sets.
    pub fn add(&mut self, other: &LtHash) {
        for (acc, lane) in self.0.iter_mut().zip(other.0.iter()) {
            *acc = acc.wrapping_add(*lane);
        }
    }

    /// The 32-byte commitment.
    pub fn digest(&self) -> Hash {
        let mut hasher = blake3::Hasher::new_derive_key(DIGEST_DOMAIN);
        for lane in self.0.iter() {
            hasher.update(&lane.to_le_bytes());
        }
        Hash(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_invertible() {
        let mut a = LtHash::default();
        a.insert(b"x", b"1");
        a.insert(b"y", b"2");
        let mut b = LtHash::default();
        b.insert(b"y", b"2");
        b.insert(b"x", b"1");
        assert_eq!(a.digest(), b.digest());
        b.remove(b"y", b"2");
        b.remove(b"x", b"1");
        assert_eq!(b, LtHash::default());
    }

    #[test]
    fn key_value_boundary_matters() {
        let mut a = LtHash::default();
        a.insert(b"ab", b"c");
        let mut b = LtHash::default();
        b.insert(b"a", b"bc");
        assert_ne!(a.digest(), b.digest());
    }
}
