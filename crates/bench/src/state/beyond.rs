//! Workload 4 of `peregrine bench state`: a dataset larger than a memory cap.
//!
//! The process first moves itself into a fresh memory cgroup whose limit is the cap (cgroup v2
//! `memory.max` where the memory controller is delegated, otherwise cgroup v1
//! `memory.limit_in_bytes`), so the engines' own memory and the page cache together must fit in
//! it. Each engine is also given half the cap: Peregrine as its memory budget, redb and fjall as
//! their cache size (LMDB has no cache of its own: it uses the page cache, which the cgroup
//! bounds); the other half is for everything else (the page cache, allocator slack). If no
//! cgroup can be made, the run says so and the caps are only the engines' own settings.
//!
//! For each engine: random 8-byte keys and values inserted in blocks of 10,000 (one fsync each),
//! then random reads of existing keys; inserts/s, reads/s, and the bytes the process caused to be
//! written to storage (`/proc/self/io` `write_bytes`) per logical byte inserted (16 per key).

use super::{device_bytes_written, fresh_capped, inserts_within};
use crate::report::Report;
use crate::BenchError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of workload 4.
#[derive(Debug, Clone)]
pub struct BeyondOptions {
    /// Keys inserted.
    pub keys: u64,
    /// The memory cap, in bytes.
    pub memory_cap: u64,
    /// Random reads after the load.
    pub reads: u64,
    /// Time each engine may spend inserting; an engine that runs out is measured on the keys
    /// it inserted.
    pub time_limit: Duration,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// Moves this process back to the root memory cgroup and removes `group`, the one it made.
fn leave_memory_cgroup(group: &Path) {
    let pid = std::process::id().to_string();
    if let Some(root) = group.parent() {
        let _ = write(&root.join("cgroup.procs"), &pid);
    }
    let _ = std::fs::remove_dir(group);
}

/// Moves this process into a new memory cgroup limited to `cap` bytes; returns the group's
/// directory and a description, or why no group could be made.
pub fn enter_memory_cgroup(cap: u64) -> Result<(PathBuf, String), String> {
    let name = format!("peregrine-bench-{}", std::process::id());
    let pid = std::process::id().to_string();
    let v2 = PathBuf::from("/sys/fs/cgroup");
    let v2_has_memory = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    let mut errors = Vec::new();
    if v2_has_memory {
        let group = v2.join(&name);
        match std::fs::create_dir(&group)
            .and_then(|()| write(&group.join("memory.max"), &cap.to_string()))
            .and_then(|()| write(&group.join("cgroup.procs"), &pid))
        {
            Ok(()) => {
                let how = format!("cgroup v2 memory.max = {cap} bytes ({})", group.display());
                return Ok((group, how));
            }
            Err(e) => errors.push(format!("cgroup v2: {e}")),
        }
    }
    let v1 = PathBuf::from("/sys/fs/cgroup/memory");
    let group = v1.join(&name);
    match std::fs::create_dir(&group)
        .and_then(|()| write(&group.join("memory.limit_in_bytes"), &cap.to_string()))
        .and_then(|()| write(&group.join("cgroup.procs"), &pid))
    {
        Ok(()) => {
            let how = format!(
                "cgroup v1 memory.limit_in_bytes = {cap} bytes ({})",
                group.display()
            );
            Ok((group, how))
        }
        Err(e) => {
            errors.push(format!("cgroup v1: {e}"));
            Err(errors.join("; "))
        }
    }
}

/// Runs workload 4 for every engine that can spill to disk.
pub fn run(
    report: &mut Report,
    engines: &[String],
    options: &BeyondOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let cap = options.memory_cap;
    let cgroup = enter_memory_cgroup(cap);
    match &cgroup {
        Ok((_, how)) => {
            progress(&format!("memory cap enforced: {how}"));
            report.push(
                "state",
                "beyond-ram",
                "all",
                "cgroup_memory_cap_bytes",
                cap as f64,
                "bytes",
            );
        }
        Err(why) => progress(&format!(
            "memory cap NOT enforced by a cgroup ({why}); engines are still told {cap} bytes"
        )),
    }
    let outcome = engines
        .iter()
        .filter(|e| e.as_str() != "btreemap")
        .try_for_each(|name| run_engine(report, name, options, progress));
    if let Ok((group, _)) = &cgroup {
        leave_memory_cgroup(group);
    }
    outcome
}

fn run_engine(
    report: &mut Report,
    name: &str,
    options: &BeyondOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let (_dir, mut engine) = fresh_capped(name, Some(options.memory_cap / 2))?;
    let before = device_bytes_written()?;
    let super::Load {
        keys,
        inserts,
        reads,
        ..
    } = inserts_within(
        engine.as_mut(),
        options.keys,
        options.reads,
        Some(options.time_limit),
    )?;
    let written = device_bytes_written()?.saturating_sub(before);
    let per_logical = written as f64 / (keys.max(1) * 16) as f64;
    progress(&format!(
        "beyond RAM {name:>10}: {keys} keys, {inserts:>10.0} inserts/s {reads:>10.0} reads/s, \
             {written} bytes written ({per_logical:.2} per logical byte)"
    ));
    let scenario = format!("beyond-ram-{}", options.keys);
    report.push(
        "state",
        &scenario,
        name,
        "keys_inserted",
        keys as f64,
        "keys",
    );
    report.push("state", &scenario, name, "inserts_per_s", inserts, "ops/s");
    report.push("state", &scenario, name, "reads_per_s", reads, "ops/s");
    report.push(
        "state",
        &scenario,
        name,
        "device_bytes_written",
        written as f64,
        "bytes",
    );
    report.push(
        "state",
        &scenario,
        name,
        "device_bytes_per_logical_byte",
        per_logical,
        "x",
    );
    Ok(())
}
