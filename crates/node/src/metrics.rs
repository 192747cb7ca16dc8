//! Metrics in the Prometheus text format, served over plain HTTP on `--metrics <addr>`.

use crate::chain::Chain;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

/// Largest HTTP request head the metrics endpoint reads; anything longer is answered and closed.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// How long a metrics client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters the chain updates as it executes.
#[derive(Debug, Default)]
pub struct Metrics {
    blocks_executed: AtomicU64,
    txs_executed: AtomicU64,
    exec_micros_total: AtomicU64,
    exec_micros_last: AtomicU64,
}

impl Metrics {
    /// Records one executed block.
    pub fn record_block(&self, txs: usize, elapsed: Duration) {
        let micros = elapsed.as_micros() as u64;
        self.blocks_executed.fetch_add(1, Ordering::Relaxed);
        self.txs_executed.fetch_add(txs as u64, Ordering::Relaxed);
        self.exec_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.exec_micros_last.store(micros, Ordering::Relaxed);
    }

    /// Transactions executed since start.
    pub fn txs_executed(&self) -> u64 {
        self.txs_executed.load(Ordering::Relaxed)
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Renders every metric of `chain` in the Prometheus text format.
pub fn render(chain: &Chain) -> String {
    let mut out = String::new();
    render_chain(&mut out, chain);
    render_mempool(&mut out, chain);
    render_execution(&mut out, chain.metrics());
    out
}

fn render_chain(out: &mut String, chain: &Chain) {
    let help = "Highest block seen, final or not.";
    metric(
        out,
        "peregrine_head_height",
        "gauge",
        help,
        chain.highest_known(),
    );
    let help = "Highest finalized and executed block.";
    metric(
        out,
        "peregrine_finalized_height",
        "gauge",
        help,
        chain.finalized_height(),
    );
    let help = "Finalized blocks whose early, speculative execution was used.";
    metric(
        out,
        "peregrine_blocks_speculated_total",
        "counter",
        help,
        chain.speculative_hits(),
    );
}

fn render_mempool(out: &mut String, chain: &Chain) {
    let stats = chain.mempool().stats();
    let help = "Transactions in the mempool.";
    metric(
        out,
        "peregrine_mempool_size",
        "gauge",
        help,
        chain.mempool().len(),
    );
    let help = "Transactions admitted to the mempool.";
    metric(
        out,
        "peregrine_txs_admitted_total",
        "counter",
        help,
        stats.admitted(),
    );
    let name = "peregrine_txs_rejected_total";
    let _ = writeln!(
        out,
        "# HELP {name} Transactions refused, by reason.\n# TYPE {name} counter"
    );
    for (reason, count) in stats.rejected() {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
    render_admission(out, chain);
}

fn render_admission(out: &mut String, chain: &Chain) {
    let pipeline = chain.admission().stats();
    let pool = chain.mempool().pool_stats();
    let figures = [
        (
            "peregrine_admission_in_flight",
            "gauge",
            "Transactions inside the admission pipeline.",
            chain.admission().in_flight() as u64,
        ),
        (
            "peregrine_admission_deferred_total",
            "counter",
            "Transactions sent to the try-later queue by the conflict pre-filter.",
            pipeline.deferred,
        ),
        (
            "peregrine_admission_shed_total",
            "counter",
            "Transactions shed unchecked because admission was saturated.",
            pipeline.shed,
        ),
        (
            "peregrine_mempool_bytes",
            "gauge",
            "Encoded bytes held by the mempool.",
            pool.bytes as u64,
        ),
        (
            "peregrine_mempool_evicted_total",
            "counter",
            "Transactions evicted for better-paying ones.",
            pool.evicted,
        ),
        (
            "peregrine_mempool_dropped_total",
            "counter",
            "Transactions dropped after a block made them invalid.",
            pool.dropped,
        ),
    ];
    for (name, kind, help, value) in figures {
        metric(out, name, kind, help, value);
    }
}

fn render_execution(out: &mut String, m: &Metrics) {
    let blocks = m.blocks_executed.load(Ordering::Relaxed);
    metric(
        out,
        "peregrine_blocks_executed_total",
        "counter",
        "Blocks executed.",
        blocks,
    );
    let help = "Transactions executed.";
    metric(
        out,
        "peregrine_txs_executed_total",
        "counter",
        help,
        m.txs_executed(),
    );
    let total = m.exec_micros_total.load(Ordering::Relaxed) as f64 / 1e6;
    let help = "Time spent executing and finalizing blocks.";
    metric(
        out,
        "peregrine_block_execution_seconds_total",
        "counter",
        help,
        total,
    );
    let last = m.exec_micros_last.load(Ordering::Relaxed) as f64 / 1e6;
    let help = "Execution and finalization time of the last block.";
    metric(
        out,
        "peregrine_block_execution_seconds_last",
        "gauge",
        help,
        last,
    );
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, chain: Arc<Chain>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let chain = chain.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n")
                    && head.len() < MAX_REQUEST_HEAD_BYTES
                {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            });
            if read.await.is_err() {
                return;
            }
            let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET / ") {
                let body = render(&chain);
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            if let Err(err) = stream.write_all(response.as_bytes()).await {
                warn!(%err, "metrics response failed");
            }
        });
    }
}
