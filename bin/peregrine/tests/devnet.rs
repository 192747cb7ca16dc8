//! The devnet in process, driven through its JSON-RPC API as a user would.

mod common;

use common::{balance, hex_of, transfer, transfer_on, wait_included, CHAIN_ID};
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClient;
use peregrine_node::genesis::{dev_key, DEV_BALANCE, FEE_SINK};
use peregrine_node::{NodeConfig, RunningNode};
use peregrine_rpc::{codes, BlockTag, HeaderView, PeregrineApiClient};
use peregrine_types::{Address, Encode, Hash, SecretKey, SignedTransaction};
use std::time::Duration;

const ACCOUNTS: u32 = 4;
const SENDERS: u32 = 3;
const PER_SENDER: u64 = 3;
const FEE: u64 = 2;
const FINALITY_LIMIT: Duration = Duration::from_secs(30);

fn start(dir: &std::path::Path) -> RunningNode {
    let config = NodeConfig {
        rpc_addr: "127.0.0.1:0".parse().expect("addr"),
        p2p_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ingest_addr: Some("127.0.0.1:0".parse().expect("addr")),
        block_time: Duration::from_millis(50),
        dev_accounts: ACCOUNTS,
        status_interval: None,
        ..NodeConfig::dev(dir.to_path_buf())
    };
    peregrine_node::start(config).expect("node starts")
}

fn http(node: &RunningNode) -> HttpClient {
    peregrine_rpc::http_client(&format!("http://{}", node.rpc_addr())).expect("client")
}

fn recipient(i: u8) -> Address {
    SecretKey::from_seed([100 + i; 32]).public_key().address()
}

fn supply(node: &RunningNode) -> u128 {
    peregrine_execution::total_supply(&node.chain().latest().1)
}

/// A WebSocket client and its new-heads subscription; the client must outlive the subscription.
async fn subscribe_heads(node: &RunningNode) -> (WsClient, Subscription<HeaderView>) {
    let url = format!("ws://{}", node.rpc_addr());
    let ws = peregrine_rpc::ws_client(&url).await.expect("ws client");
    let (sub, unsub) = (
        "peregrine_subscribeNewHeads",
        "peregrine_unsubscribeNewHeads",
    );
    let heads = ws
        .subscribe(sub, rpc_params![], unsub)
        .await
        .expect("subscribe");
    (ws, heads)
}

/// Transfers from each sender: sender 0's one by one, the others' in one batch.
async fn submit_transfers(client: &HttpClient) -> Vec<Hash> {
    let txs: Vec<(u32, SignedTransaction)> = (0..SENDERS)
        .flat_map(|s| (0..PER_SENDER).map(move |n| (s, n)))
        .map(|(s, n)| {
            (
                s,
                transfer(
                    &dev_key(s),
                    n,
                    FEE,
                    recipient(s as u8),
                    1_000 + u128::from(n),
                ),
            )
        })
        .collect();
    let mut batch = Vec::new();
    for (sender, tx) in &txs {
        if *sender == 0 {
            let hash = client
                .send_raw_transaction(hex_of(tx))
                .await
                .expect("admitted");
            assert_eq!(hash, tx.hash());
        } else {
            batch.push(hex_of(tx));
        }
    }
    let results = client
        .send_raw_transaction_batch(batch)
        .await
        .expect("batch");
    assert!(
        results
            .iter()
            .all(|r| r.hash.is_some() && r.error.is_none()),
        "{results:?}"
    );
    txs.iter().map(|(_, tx)| tx.hash()).collect()
}

async fn check_balances(client: &HttpClient) {
    let sent: u128 = (0..PER_SENDER).map(|n| 1_000 + u128::from(n)).sum();
    for sender in 0..SENDERS {
        let account = client
            .get_account(dev_key(sender).public_key().address(), None)
            .await;
        let account = account.expect("rpc");
        assert_eq!(account.nonce, PER_SENDER);
        let spent = u128::from(PER_SENDER * FEE) + sent;
        assert_eq!(account.balance, (DEV_BALANCE - spent).to_string());
        assert_eq!(balance(client, recipient(sender as u8)).await, sent);
    }
    let fees = u128::from(u64::from(SENDERS) * PER_SENDER * FEE);
    assert_eq!(balance(client, FEE_SINK).await, fees);
}

/// Proofs of a funded and an untouched account verify against the commitment the block at that
/// height names, and against no other.
async fn check_proofs(client: &HttpClient) {
    let height = client.status().await.expect("status").finalized_height;
    let block = client.get_block_by_height(height).await.expect("rpc");
    let root = block.expect("finalized block").header.state_root;
    let at = Some(BlockTag::Height(height));
    let sender = dev_key(0).public_key().address();
    let proof = client.get_proof(sender, at).await.expect("rpc");
    assert_eq!(Some(proof.state_root), root);
    let record = proof
        .verify()
        .expect("verifies")
        .expect("a funded account has a record");
    let account = peregrine_types::Account::from_record(Some(&record)).expect("decodes");
    let view = client.get_account(sender, at).await.expect("rpc");
    assert_eq!(
        (account.balance.to_string(), account.nonce),
        (view.balance, view.nonce)
    );
    let nobody = Address([0x42; 20]);
    let absent = client.get_proof(nobody, at).await.expect("rpc");
    assert_eq!(absent.verify(), Ok(None));
    let mut forged = proof;
    forged.state_root.0[0] ^= 1;
    assert!(forged.verify().is_err());
}

async fn check_history(client: &HttpClient, heads: &mut Subscription<HeaderView>) {
    let status = client.status().await.expect("status");
    assert_eq!(status.chain_id, CHAIN_ID);
    let block = client
        .get_block_by_height(status.finalized_height)
        .await
        .expect("rpc");
    let block = block.expect("finalized block");
    let by_hash = client
        .get_block_by_hash(block.header.hash)
        .await
        .expect("rpc");
    assert_eq!(by_hash, Some(block));
    let head = tokio::time::timeout(Duration::from_secs(10), heads.next()).await;
    let head = head
        .expect("a head arrives")
        .expect("stream open")
        .expect("valid head");
    assert!(head.height >= 1);
    let old = client
        .get_account(recipient(0), Some(BlockTag::Height(1)))
        .await;
    assert_eq!(old.expect("height 1 retained").height, 1);
}

/// Fetches the metrics page with a bare HTTP/1.1 request.
async fn fetch_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    body
}

#[tokio::test]
async fn transfers_from_several_accounts_finalize_with_receipts_and_conserve_supply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client = http(&node);
    let (_ws, mut heads) = subscribe_heads(&node).await;
    for hash in submit_transfers(&client).await {
        let receipt = wait_included(&client, hash, FINALITY_LIMIT).await;
        assert_eq!(
            (receipt.status.as_str(), receipt.fee_paid),
            ("success", FEE)
        );
    }
    check_balances(&client).await;
    check_proofs(&client).await;
    // Supply: every account the chain knows, summed inside the node, equals the genesis supply.
    assert_eq!(supply(&node), u128::from(ACCOUNTS) * DEV_BALANCE);
    check_history(&client, &mut heads).await;
    let metrics = fetch_metrics(node.metrics_addr().expect("metrics bound")).await;
    assert!(metrics.contains("peregrine_finalized_height "), "{metrics}");
    let admitted = format!(
        "peregrine_txs_admitted_total {}",
        u64::from(SENDERS) * PER_SENDER
    );
    assert!(metrics.contains(&admitted), "{metrics}");
    assert!(
        metrics.contains("peregrine_admission_shed_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("peregrine_txs_rejected_total{reason=\"overloaded\"} 0"),
        "every reason is listed, even at zero: {metrics}"
    );
    node.stop().expect("clean stop");
}

/// The code and `data.reason` of a JSON-RPC error.
fn error_of(result: Result<impl std::fmt::Debug, ClientError>) -> (i32, String) {
    match result {
        Err(ClientError::Call(err)) => {
            let data = err
                .data()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok());
            let reason = data.and_then(|v| v["reason"].as_str().map(str::to_string));
            (err.code(), reason.unwrap_or_default())
        }
        other => panic!("expected a call error, got {other:?}"),
    }
}

/// Invalid submissions from dev account 0 (whose next nonce is 1), each with its expected error.
fn bad_transactions() -> Vec<(String, i32, &'static str)> {
    let key = dev_key(0);
    let to = recipient(9);
    let good = transfer(&key, 1, 1, to, 10).encode();
    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    let pauper = SecretKey::from_seed([77; 32]);
    let (malformed, rejected) = (codes::TX_MALFORMED, codes::TX_REJECTED);
    vec![
        ("0xzz".into(), malformed, "invalid_hex"),
        (hex::encode(&good[..good.len() - 3]), malformed, "malformed"),
        (hex::encode(&trailing), malformed, "malformed"),
        (
            "00".repeat(peregrine_types::MAX_TX_BYTES + 1),
            malformed,
            "oversized",
        ),
        (hex::encode(&bad_sig), rejected, "bad_signature"),
        (
            hex_of(&transfer_on(CHAIN_ID + 1, &key, 1, 1, to, 10)),
            rejected,
            "wrong_chain",
        ),
        // The first transfer again: a replay, caught by the seen filter.
        (hex_of(&transfer(&key, 0, 1, to, 10)), rejected, "duplicate"),
        (
            hex_of(&transfer(&key, 0, 1, to, 11)),
            rejected,
            "nonce_too_low",
        ),
        (
            hex_of(&transfer(&key, 1 + 4_096, 1, to, 10)),
            rejected,
            "nonce_too_far",
        ),
        (
            hex_of(&transfer(&key, 1, 1, to, DEV_BALANCE)),
            rejected,
            "insufficient_balance",
        ),
        (
            hex_of(&transfer(&pauper, 0, 1, to, 0)),
            rejected,
            "insufficient_balance",
        ),
        (
            hex_of(&transfer(&key, 1, 0, to, 1)),
            rejected,
            "fee_too_low",
        ),
    ]
}

/// Protocol-level errors: unknown method, wrong params, oversized batch, unretained height.
async fn check_protocol_errors(client: &HttpClient, any_tx: &SignedTransaction) {
    let unknown: Result<serde_json::Value, _> = client
        .request("peregrine_noSuchMethod", rpc_params![])
        .await;
    assert_eq!(error_of(unknown).0, -32601);
    let wrong_params: Result<serde_json::Value, _> = client
        .request("peregrine_getAccount", rpc_params![42])
        .await;
    assert_eq!(error_of(wrong_params).0, -32602);
    let too_many = vec![hex_of(any_tx); peregrine_rpc::MAX_BATCH_TXS + 1];
    let batch = client.send_raw_transaction_batch(too_many).await;
    assert_eq!(
        error_of(batch),
        (codes::BATCH_TOO_LARGE, "batch_too_large".into())
    );
    let me = any_tx.tx().sender_address();
    let unretained = client
        .get_account(me, Some(BlockTag::Height(1_000_000)))
        .await;
    assert_eq!(
        error_of(unretained),
        (codes::STATE_UNAVAILABLE, "height_not_retained".into())
    );
    let unretained = client
        .get_proof(me, Some(BlockTag::Height(1_000_000)))
        .await;
    assert_eq!(
        error_of(unretained),
        (codes::STATE_UNAVAILABLE, "height_not_retained".into())
    );
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client = http(&node);
    // One good transfer first, so there is a used nonce to replay.
    let first = transfer(&dev_key(0), 0, 1, recipient(9), 10);
    client
        .send_raw_transaction(hex_of(&first))
        .await
        .expect("admitted");
    wait_included(&client, first.hash(), FINALITY_LIMIT).await;
    let me = first.tx().sender_address();
    let before = client.get_account(me, None).await.expect("rpc");

    for (tx, code, reason) in bad_transactions() {
        let result = client.send_raw_transaction(tx).await;
        assert_eq!(
            error_of(result),
            (code, reason.to_string()),
            "case {reason}"
        );
    }
    check_protocol_errors(&client, &first).await;

    // Nothing changed: same account, empty mempool, supply intact.
    assert_eq!(client.status().await.expect("status").mempool_size, 0);
    let after = client.get_account(me, None).await.expect("rpc");
    assert_eq!((after.balance, after.nonce), (before.balance, before.nonce));
    assert_eq!(supply(&node), u128::from(ACCOUNTS) * DEV_BALANCE);
    node.stop().expect("clean stop");
}

#[tokio::test]
async fn pending_nonce_lets_a_sender_submit_back_to_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client = http(&node);
    let key = dev_key(2);
    let me = key.public_key().address();
    let mut hashes = Vec::new();
    for _ in 0..3 {
        // What `peregrine tx transfer` does without --nonce: ask for the pending nonce, sign, send.
        let nonce = client
            .get_account(me, Some(BlockTag::Pending))
            .await
            .expect("rpc")
            .nonce;
        let tx = transfer(&key, nonce, 1, recipient(2), 5);
        hashes.push(
            client
                .send_raw_transaction(hex_of(&tx))
                .await
                .expect("admitted"),
        );
        let next = client
            .get_account(me, Some(BlockTag::Pending))
            .await
            .expect("rpc")
            .nonce;
        assert_eq!(
            next,
            nonce + 1,
            "the pending nonce counts what was just admitted"
        );
    }
    for hash in hashes {
        wait_included(&client, hash, FINALITY_LIMIT).await;
    }
    assert_eq!(client.get_account(me, None).await.expect("rpc").nonce, 3);
    node.stop().expect("clean stop");
}

#[tokio::test]
async fn the_binary_path_admits_answers_in_order_and_refuses_bad_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client = http(&node);
    let addr = node.ingest_addr().expect("ingest bound");
    let (mut tx_half, mut rx_half) = peregrine_rpc::ingest::connect(addr).expect("connect");
    // Nonces out of order: 1 is held until 0 arrives, then both are admitted.
    let key = dev_key(1);
    let good: Vec<SignedTransaction> = [1, 0, 2]
        .iter()
        .map(|&n| transfer(&key, n, 1, recipient(3), 5))
        .collect();
    let mut bad_sig = good[2].encode();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    for tx in &good {
        tx_half.send(&tx.encode()).expect("send");
    }
    tx_half.send(&bad_sig).expect("send");
    tx_half.send(&[0xde, 0xad]).expect("send");
    tx_half.send(&good[0].encode()).expect("send a duplicate");
    tx_half.flush().expect("flush");
    let answers: Vec<_> = (0..6).map(|_| rx_half.recv().expect("answer")).collect();
    let hashes: Vec<_> = good.iter().map(|t| Ok(t.hash())).collect();
    assert_eq!(answers[..3], hashes[..]);
    let reasons: Vec<_> = answers[3..]
        .iter()
        .map(|a| a.clone().expect_err("refused"))
        .collect();
    assert_eq!(reasons, ["bad_signature", "malformed", "duplicate"]);
    for tx in &good {
        wait_included(&client, tx.hash(), FINALITY_LIMIT).await;
    }
    // A frame longer than any transaction breaks the framing: answered, then disconnected.
    let oversized = (peregrine_types::MAX_TX_BYTES as u32 + 1).to_le_bytes();
    use std::io::Write as _;
    let mut raw = std::net::TcpStream::connect(addr).expect("connect");
    raw.write_all(&oversized).expect("write");
    let mut reader = std::io::BufReader::new(raw);
    let answer = peregrine_rpc::ingest::read_answer(&mut reader).expect("answer");
    assert_eq!(answer, Err("oversized".to_string()));
    let mut rest = Vec::new();
    use std::io::Read as _;
    assert_eq!(reader.read_to_end(&mut rest).expect("closed"), 0);
    node.stop().expect("clean stop");
}

#[test]
fn the_load_generator_runs_against_the_devnet_and_writes_its_csv_and_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let out = dir.path().join("bench-out");
    let options = peregrine_bench::load::LoadOptions {
        rpc: format!("http://{}", node.rpc_addr()),
        ingest: node.ingest_addr().expect("ingest bound"),
        funder: dev_key(2),
        accounts: 20,
        schedule: peregrine_bench::load::Schedule::Constant {
            rate: 200.0,
            seconds: 1.5,
        },
        drain_s: 30,
        out: out.clone(),
        seed: 7,
    };
    let report =
        peregrine_bench::load::run(&options, "test".into(), &mut |_| {}).expect("load runs");
    let value = |metric: &str| report.value("constant", "devnet", metric);
    assert_eq!(value("offered_total"), Some(300.0));
    assert_eq!(value("accepted_total"), Some(300.0));
    assert_eq!(value("finalized_total"), Some(300.0));
    let csv = std::fs::read_to_string(out.join("load-constant.csv")).expect("csv written");
    assert!(csv.starts_with("second,offered,accepted"));
    let offered: u64 = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(1)
                .expect("offered column")
                .parse::<u64>()
                .expect("count")
        })
        .sum();
    assert_eq!(offered, 300);
    let svg = std::fs::read_to_string(out.join("load-constant.svg")).expect("svg written");
    assert_eq!(svg.matches("<polyline").count(), 6);
    node.stop().expect("clean stop");
}
