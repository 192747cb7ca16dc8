//! Generate load and reproduce every benchmark, with reports and plots.
//!
//! Load is signed before any clock starts, so a benchmark measures the system, not the client's
//! signing speed; [`load_key`] gives the deterministic sender keys the load is signed with.
//!
//! Benchmarks: [`exec`] (`peregrine bench exec`), [`mempool`] (`peregrine bench mempool`), [`state`]
//! (`peregrine bench state`), [`vm`] (`peregrine bench vm`), [`load`]
//! (`peregrine bench load`, with [`timeline`] and [`plot`] for its CSV and SVG). Every benchmark returns a [`report::Report`]
//! that prints as a table and writes as JSON (`--json <file>`), one record per engine,
//! scenario and metric, with units.

pub mod exec;
pub mod load;
pub mod mempool;
pub mod plot;
pub mod report;
pub mod state;
pub mod timeline;
pub mod vm;

use peregrine_types::SecretKey;
use thiserror::Error;

/// Why the benchmark failed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// Execution failed.
    #[error("execution: {0}")]
    Exec(#[from] peregrine_execution::ExecError),
    /// The state database failed.
    #[error("state: {0}")]
    State(#[from] peregrine_state::Error),
    /// A temporary directory could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// The node under load misbehaved or could not be reached.
    #[error("load: {0}")]
    Load(String),
    /// Two engines disagreed: a correctness bug, never a measurement.
    #[error("{scenario}: engine {engine} produced a different state root than serial")]
    Divergence {
        /// The scenario.
        scenario: String,
        /// The engine that differed.
        engine: String,
    },
}

/// A contract engine that could not start or load a contract, as a benchmark error.
pub(crate) fn vm_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Load(format!("vm: {e}"))
}

/// splitmix64: a cheap deterministic sequence, so every engine and run sees the same keys.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic sender keys for load generation, distinct from the devnet's dev accounts.
pub fn load_key(index: u32) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&index.to_le_bytes());
    seed[4..12].copy_from_slice(b"pg-load!");
    SecretKey::from_seed(seed)
}

/// Maps `f` over `items` on every core, keeping order.
pub(crate) fn parallel_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<U>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
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
