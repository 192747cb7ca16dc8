//! What happened to each transaction of a load run, folded into one row per second.
//!
//! Events are counted in the second they happened: offered when sent, accepted or rejected when
//! answered, included at the block's timestamp, finalized when the client saw the block final.
//! Latencies are grouped by the second the transaction was sent, so each row pairs an offered
//! load with the latency that load produced.

use crate::plot::{Chart, Series};
use crate::report::percentile;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One transaction's fate; times in seconds since the run's start.
#[derive(Debug, Clone, Default)]
pub struct TxTrace {
    /// When it was written to the node.
    pub sent: Option<f64>,
    /// When the node answered, and the rejection reason if any.
    pub answered: Option<(f64, Option<String>)>,
    /// The including block's timestamp.
    pub included: Option<f64>,
    /// When the client saw the including block final.
    pub finalized: Option<f64>,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Seconds since the start.
    pub second: u64,
    /// Transactions sent.
    pub offered: u64,
    /// Admitted.
    pub accepted: u64,
    /// Rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Included in blocks stamped in this second.
    pub included: u64,
    /// Seen final.
    pub finalized: u64,
    /// Submission to inclusion, p50/p90/p99 in ms, of transactions sent in this second.
    pub inclusion_ms: [f64; 3],
    /// Submission to finality, p50/p90/p99 in ms.
    pub finality_ms: [f64; 3],
}

fn bucket(rows: &mut BTreeMap<u64, Row>, at: f64) -> &mut Row {
    let second = at.max(0.0).floor() as u64;
    rows.entry(second).or_insert_with(|| empty(second))
}

fn empty(second: u64) -> Row {
    Row {
        second,
        inclusion_ms: [f64::NAN; 3],
        finality_ms: [f64::NAN; 3],
        ..Row::default()
    }
}

fn quantiles(mut values: Vec<f64>) -> [f64; 3] {
    if values.is_empty() {
        return [f64::NAN; 3];
    }
    [50.0, 90.0, 99.0].map(|p| percentile(&mut values, p))
}

/// Folds traces into rows, one per second from 0 to the last event, none missing.
pub fn rows(traces: &[TxTrace]) -> Vec<Row> {
    let mut rows = BTreeMap::new();
    let mut latencies: BTreeMap<u64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for t in traces {
        let Some(sent) = t.sent else { continue };
        bucket(&mut rows, sent).offered += 1;
        match &t.answered {
            Some((at, None)) => bucket(&mut rows, *at).accepted += 1,
            Some((at, Some(reason))) => {
                *bucket(&mut rows, *at)
                    .rejected
                    .entry(reason.clone())
                    .or_default() += 1;
            }
            None => {}
        }
        let lat = latencies.entry(sent.floor() as u64).or_default();
        if let Some(at) = t.included {
            bucket(&mut rows, at).included += 1;
            lat.0.push(((at - sent) * 1e3).max(0.0));
        }
        if let Some(at) = t.finalized {
            bucket(&mut rows, at).finalized += 1;
            lat.1.push(((at - sent) * 1e3).max(0.0));
        }
    }
    for (second, (inclusion, finality)) in latencies {
        let row = bucket(&mut rows, second as f64);
        row.inclusion_ms = quantiles(inclusion);
        row.finality_ms = quantiles(finality);
    }
    let last = rows.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|s| rows.remove(&s).unwrap_or_else(|| empty(s)))
        .collect()
}

/// The rows as CSV, with one column per rejection reason seen.
pub fn csv(rows: &[Row]) -> String {
    let reasons: Vec<String> = {
        let mut all: Vec<String> = rows
            .iter()
            .flat_map(|r| r.rejected.keys().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let mut out = String::from("second,offered,accepted,rejected");
    for reason in &reasons {
        let _ = write!(out, ",rejected_{reason}");
    }
    out.push_str(",included,finalized,inclusion_p50_ms,inclusion_p90_ms,inclusion_p99_ms");
    out.push_str(",finality_p50_ms,finality_p90_ms,finality_p99_ms\n");
    for r in rows {
        let rejected: u64 = r.rejected.values().sum();
        let _ = write!(out, "{},{},{},{rejected}", r.second, r.offered, r.accepted);
        for reason in &reasons {
            let _ = write!(out, ",{}", r.rejected.get(reason).copied().unwrap_or(0));
        }
        let _ = write!(out, ",{},{}", r.included, r.finalized);
        for v in r.inclusion_ms.iter().chain(&r.finality_ms) {
            if v.is_finite() {
                let _ = write!(out, ",{v:.1}");
            } else {
                out.push(',');
            }
        }
        out.push('\n');
    }
    out
}

/// The knee: the offered rate of the first second `s` from which the node stays behind, that is
/// where `done` (accepted, or finalized) summed over seconds `s + lag .. s + lag + window` falls
/// below 90% of what was offered over `s .. s + window`. `lag` allows for work that completes a
/// little later than it was offered (finality follows submission by about a block).
/// `None` if the node kept up throughout the judged windows.
pub fn knee(rows: &[Row], window: usize, lag: usize, done: impl Fn(&Row) -> u64) -> Option<f64> {
    let window = window.max(1);
    let last = rows.iter().rposition(|r| r.offered > 0)?;
    // Only windows whose completions end before the last second of offered load are judged: the
    // seconds after it hold only the tail of the run, whose completions a one-second bucket
    // cannot line up with what was offered. A node that falls behind only in its last few
    // seconds of load is therefore not reported.
    let starts = (0..=last).take_while(|s| s + lag + window <= last);
    starts.into_iter().find_map(|start| {
        let offered: u64 = rows[start..start + window].iter().map(|r| r.offered).sum();
        let completed: u64 = rows[start + lag..start + lag + window]
            .iter()
            .map(&done)
            .sum();
        (offered > 0 && (completed as f64) < 0.9 * offered as f64)
            .then(|| rows[start].offered as f64)
    })
}

/// Two charts: rates over time, and finality latency against offered load.
pub fn charts(rows: &[Row], title: &str) -> Vec<Chart> {
    let over_time = |name: &str, f: &dyn Fn(&Row) -> u64| Series {
        name: name.into(),
        points: rows
            .iter()
            .map(|r| (r.second as f64, f(r) as f64))
            .collect(),
    };
    let rates = Chart {
        title: format!("{title}: throughput over time"),
        x_label: "seconds since start".into(),
        y_label: "transactions per second".into(),
        series: vec![
            over_time("offered", &|r| r.offered),
            over_time("accepted", &|r| r.accepted),
            over_time("finalized", &|r| r.finalized),
        ],
    };
    // Seconds that offered almost nothing (the tail of the last second) say nothing about load.
    let floor = (rows.iter().map(|r| r.offered).max().unwrap_or(0) / 100).max(10);
    let mut by_load: Vec<&Row> = rows.iter().filter(|r| r.offered >= floor).collect();
    by_load.sort_by_key(|r| r.offered);
    let against_load = |name: &str, i: usize, f: &dyn Fn(&Row) -> [f64; 3]| Series {
        name: name.into(),
        points: by_load
            .iter()
            .map(|r| (r.offered as f64, f(r)[i]))
            .collect(),
    };
    let latency = Chart {
        title: format!("{title}: latency against offered load"),
        x_label: "offered transactions per second".into(),
        y_label: "milliseconds".into(),
        series: vec![
            against_load("finality p50", 0, &|r| r.finality_ms),
            against_load("finality p99", 2, &|r| r.finality_ms),
            against_load("inclusion p50", 0, &|r| r.inclusion_ms),
        ],
    };
    vec![rates, latency]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(sent: f64, reason: Option<&str>, final_at: Option<f64>) -> TxTrace {
        TxTrace {
            sent: Some(sent),
            answered: Some((sent + 0.01, reason.map(str::to_string))),
            included: final_at.map(|f| f - 0.1),
            finalized: final_at,
        }
    }

    #[test]
    fn rows_count_each_event_in_its_own_second() {
        let traces = vec![
            trace(0.2, None, Some(1.5)),
            trace(0.5, Some("bad_signature"), None),
            trace(2.1, None, Some(2.6)),
            TxTrace::default(),
        ];
        let rows = rows(&traces);
        assert_eq!(rows.len(), 3, "seconds 0 to 2, none missing");
        assert_eq!((rows[0].offered, rows[0].accepted), (2, 1));
        assert_eq!(rows[0].rejected["bad_signature"], 1);
        assert_eq!((rows[1].included, rows[1].finalized), (1, 1));
        assert_eq!(rows[0].finality_ms[0], 1300.0);
        assert!(
            rows[1].finality_ms[0].is_nan(),
            "nothing was sent in second 1"
        );
        let text = csv(&rows);
        assert!(text
            .lines()
            .next()
            .expect("header")
            .contains("rejected_bad_signature"));
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn the_knee_is_where_finality_falls_behind() {
        let row = |second, offered, finalized| Row {
            second,
            offered,
            finalized,
            ..Row::default()
        };
        let finalized = |r: &Row| r.finalized;
        let kept_up = vec![
            row(0, 100, 100),
            row(1, 200, 200),
            row(2, 400, 390),
            row(3, 1, 11),
        ];
        assert_eq!(knee(&kept_up, 2, 0, finalized), None);
        let fell_behind = vec![
            row(0, 100, 100),
            row(1, 200, 200),
            row(2, 400, 250),
            row(3, 800, 260),
            row(4, 1, 300),
        ];
        assert_eq!(knee(&fell_behind, 1, 0, finalized), Some(400.0));
        // One second late but complete is keeping up when a lag of one second is allowed.
        let late = vec![
            row(0, 100, 0),
            row(1, 200, 100),
            row(2, 50, 200),
            row(3, 1, 50),
        ];
        assert_eq!(knee(&late, 1, 1, finalized), None);
        assert_eq!(knee(&late, 1, 0, finalized), Some(100.0));
        // The tail after the last full second of load is not judged: there, a lag of a whole
        // second finds only the little that was left to finalize.
        let tail = vec![
            row(0, 100, 80),
            row(1, 100, 100),
            row(2, 100, 100),
            row(3, 1, 21),
        ];
        assert_eq!(knee(&tail, 1, 1, finalized), None);
    }
}
