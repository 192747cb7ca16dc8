//! Benchmark figures: one record per configuration and metric, printable and machine-readable.

use serde::Serialize;
use std::path::Path;

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The benchmark (`exec`, ...).
    pub bench: String,
    /// The workload (e.g. `low-contention`).
    pub scenario: String,
    /// The engine or configuration measured (e.g. `parallel-2`).
    pub engine: String,
    /// What was measured (e.g. `tx_per_s_median`).
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Its unit (e.g. `tx/s`).
    pub unit: String,
}

/// Everything one benchmark run measured, with the context needed to compare runs.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line that produced the figures.
    pub command: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// Logical CPUs seen.
    pub cpus: usize,
    /// Whether this binary was built with optimizations.
    pub optimized: bool,
    /// The figures.
    pub records: Vec<Record>,
}

impl Report {
    /// An empty report for `command`.
    pub fn new(command: String) -> Self {
        let started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self {
            command,
            started_unix_s,
            cpus,
            optimized: !cfg!(debug_assertions),
            records: Vec::new(),
        }
    }

    /// Adds a figure.
    pub fn push(
        &mut self,
        bench: &str,
        scenario: &str,
        engine: &str,
        metric: &str,
        value: f64,
        unit: &str,
    ) {
        self.records.push(Record {
            bench: bench.into(),
            scenario: scenario.into(),
            engine: engine.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
        });
    }

    /// The value of one figure, if measured.
    pub fn value(&self, scenario: &str, engine: &str, metric: &str) -> Option<f64> {
        let found = self
            .records
            .iter()
            .find(|r| r.scenario == scenario && r.engine == engine && r.metric == metric);
        found.map(|r| r.value)
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }
}

/// The median of `values` (which it sorts); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `p`-th percentile of `values` by nearest rank (which it sorts); 0 for none.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&mut v), 3.0);
        assert_eq!(percentile(&mut v, 100.0), 5.0);
        assert_eq!(percentile(&mut v, 1.0), 1.0);
        assert_eq!(median(&mut []), 0.0);
    }
}
