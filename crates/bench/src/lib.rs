//! Generate load and reproduce every benchmark, with reports and plots.
//!
//! Load is signed before any clock starts, so a benchmark measures the system, not the client's
//! signing speed; [`load_key`] gives the deterministic sender keys the load is signed with.
//!
//! Benchmarks: [`exec`] (`peregrine bench exec`). Every benchmark returns a [`report::Report`]
//! that prints as a table and writes as JSON (`--json <file>`), one record per engine,
//! scenario and metric, with units.

pub mod exec;
pub mod report;

use peregrine_types::SecretKey;

/// Deterministic sender keys for load generation, distinct from the devnet's dev accounts.
pub fn load_key(index: u32) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&index.to_le_bytes());
    seed[4..12].copy_from_slice(b"pg-load!");
    SecretKey::from_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_keys_are_distinct_and_deterministic() {
        assert_ne!(load_key(0).public_key(), load_key(1).public_key());
        assert_eq!(load_key(7).public_key(), load_key(7).public_key());
    }
}
