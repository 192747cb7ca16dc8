//! What the profiling examples share.

/// A 64-bit mixer (murmur3's finalizer): spreads `0, 1, 2, ...` into keys that look random and
/// never collide, so the examples load and probe the same keys on every run.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}
