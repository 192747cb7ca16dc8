//! Durability: a finalized transfer survives `kill -9` of the real `peregrine dev` process.

mod common;

use common::{balance, hex_of, transfer, wait_included};
use peregrine_node::genesis::dev_key;
use peregrine_rpc::PeregrineApiClient;
use peregrine_types::SecretKey;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `peregrine dev` on ephemeral ports and returns the process and its RPC URL.
fn spawn_dev(datadir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args([
            "dev",
            "--rpc.addr",
            "127.0.0.1:0",
            "--p2p.addr",
            "127.0.0.1:0",
            "--ingest.addr",
            "127.0.0.1:0",
            "--block-time",
            "50ms",
        ])
        .args(["--status-interval", "0", "--accounts", "2", "--datadir"])
        .arg(datadir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peregrine dev");
    let stdout = child.stdout.take().expect("piped stdout");
    let (found_tx, found_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("RPC listening on ") {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = found_tx.send(url);
            }
        }
    });
    let url = found_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("node printed its RPC address");
    (child, url)
}

#[tokio::test]
async fn finalized_transfer_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let to = SecretKey::from_seed([42; 32]).public_key().address();
    let key = dev_key(1);

    let (mut child, url) = spawn_dev(dir.path());
    let client = peregrine_rpc::http_client(&url).expect("client");
    let tx = transfer(&key, 0, 3, to, 777);
    client
        .send_raw_transaction(hex_of(&tx))
        .await
        .expect("admitted");
    let receipt = wait_included(&client, tx.hash(), Duration::from_secs(60)).await;
    let finalized = client.status().await.expect("status").finalized_height;
    assert!(finalized >= receipt.height);
    // SIGKILL: no shutdown path runs.
    child.kill().expect("kill -9");
    child.wait().expect("reaped");

    let (mut child, url) = spawn_dev(dir.path());
    let client = peregrine_rpc::http_client(&url).expect("client");
    assert_eq!(balance(&client, to).await, 777);
    assert_eq!(
        client
            .get_account(key.public_key().address(), None)
            .await
            .expect("rpc")
            .nonce,
        1
    );
    let lookup = client
        .get_transaction(tx.hash())
        .await
        .expect("rpc")
        .expect("still known");
    assert_eq!(lookup.receipt.expect("receipt").height, receipt.height);
    let status = client.status().await.expect("status");
    assert!(
        status.finalized_height >= finalized,
        "the chain never goes back"
    );

    // The chain keeps going after the restart: a second transfer finalizes too.
    let next = transfer(&key, 1, 3, to, 1);
    client
        .send_raw_transaction(hex_of(&next))
        .await
        .expect("admitted after restart");
    wait_included(&client, next.hash(), Duration::from_secs(60)).await;
    assert_eq!(balance(&client, to).await, 778);
    child.kill().expect("kill");
    child.wait().expect("reaped");
}
