//! The devnet in process, driven through its JSON-RPC API as a user would.

mod common;

use common::{balance, hex_of, transfer, transfer_on, wait_included, CHAIN_ID};
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::ClientError;
use jsonrpsee::rpc_params;
use peregrine_node::genesis::{dev_key, DEV_BALANCE, FEE_SINK};
use peregrine_node::{NodeConfig, RunningNode};
use peregrine_rpc::{codes, BlockTag, HeaderView, PeregrineApiClient};
use peregrine_types::{Address, Encode, SecretKey};
use std::time::Duration;

const ACCOUNTS: u32 = 4;

fn start(dir: &std::path::Path) -> RunningNode {
    let config = NodeConfig {
        rpc_addr: "127.0.0.1:0".parse().expect("addr"),
        p2p_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        block_time: Duration::from_millis(50),
        dev_accounts: ACCOUNTS,
        status_interval: None,
        ..NodeConfig::dev(dir.to_path_buf())
    };
    peregrine_node::start(config).expect("node starts")
}

fn recipient(i: u8) -> Address {
    SecretKey::from_seed([100 + i; 32]).public_key().address()
}

#[tokio::test]
async fn transfers_from_several_accounts_finalize_with_receipts_and_conserve_supply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client =
        peregrine_rpc::http_client(&format!("http://{}", node.rpc_addr())).expect("client");
    let ws = peregrine_rpc::ws_client(&format!("ws://{}", node.rpc_addr()))
        .await
        .expect("ws client");
    let mut heads = ws
        .subscribe::<HeaderView, _>(
            "peregrine_subscribeNewHeads",
            rpc_params![],
            "peregrine_unsubscribeNewHeads",
        )
        .await
        .expect("subscribe");

    // Three transfers from each of three senders, submitted in one batch and singly.
    let mut batch = Vec::new();
    let mut hashes = Vec::new();
    for sender in 0..3u32 {
        for nonce in 0..3u64 {
            let tx = transfer(
                &dev_key(sender),
                nonce,
                2,
                recipient(sender as u8),
                1_000 + u128::from(nonce),
            );
            hashes.push(tx.hash());
            if sender == 0 {
                assert_eq!(
                    client
                        .send_raw_transaction(hex_of(&tx))
                        .await
                        .expect("admitted"),
                    tx.hash()
                );
            } else {
                batch.push(hex_of(&tx));
            }
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

    for hash in &hashes {
        let receipt = wait_included(&client, *hash, Duration::from_secs(30)).await;
        assert_eq!(receipt.status, "success");
        assert_eq!(receipt.fee_paid, 2);
    }
    for sender in 0..3u32 {
        let account = client
            .get_account(dev_key(sender).public_key().address(), None)
            .await
            .expect("rpc");
        assert_eq!(account.nonce, 3);
        assert_eq!(account.balance, (DEV_BALANCE - 3 * 2 - 3_003).to_string());
        assert_eq!(balance(&client, recipient(sender as u8)).await, 3_003);
    }
    assert_eq!(balance(&client, FEE_SINK).await, 18);

    // Supply: every account the chain knows, summed inside the node, equals the genesis supply.
    let (_, state) = node.chain().latest();
    assert_eq!(
        peregrine_execution::total_supply(&state),
        u128::from(ACCOUNTS) * DEV_BALANCE
    );

    // Blocks, finalized history and the head stream agree.
    let status = client.status().await.expect("status");
    assert_eq!(status.chain_id, CHAIN_ID);
    let block = client
        .get_block_by_height(status.finalized_height)
        .await
        .expect("rpc")
        .expect("finalized block");
    assert_eq!(
        client
            .get_block_by_hash(block.header.hash)
            .await
            .expect("rpc"),
        Some(block.clone())
    );
    let head = tokio::time::timeout(Duration::from_secs(10), heads.next())
        .await
        .expect("a head arrives");
    assert!(head.expect("stream open").expect("valid head").height >= 1);
    let old = client
        .get_account(recipient(0), Some(BlockTag::Height(1)))
        .await
        .expect("height 1 retained");
    assert_eq!(old.height, 1);

    let metrics = reqwest_metrics(node.metrics_addr().expect("metrics bound")).await;
    assert!(metrics.contains("peregrine_finalized_height "), "{metrics}");
    assert!(
        metrics.contains("peregrine_txs_admitted_total 9"),
        "{metrics}"
    );
    node.stop().expect("clean stop");
}

/// Fetches the metrics page with a bare HTTP/1.1 request.
async fn reqwest_metrics(addr: std::net::SocketAddr) -> String {
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

fn error_of(result: Result<impl std::fmt::Debug, ClientError>) -> (i32, String) {
    match result {
        Err(ClientError::Call(err)) => {
            let reason = err
                .data()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
                .and_then(|v| v["reason"].as_str().map(str::to_string))
                .unwrap_or_default();
            (err.code(), reason)
        }
        other => panic!("expected a call error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client =
        peregrine_rpc::http_client(&format!("http://{}", node.rpc_addr())).expect("client");
    let key = dev_key(0);
    let me = key.public_key().address();
    // One good transfer first, so there is a used nonce to replay.
    let first = transfer(&key, 0, 1, recipient(9), 10);
    client
        .send_raw_transaction(hex_of(&first))
        .await
        .expect("admitted");
    wait_included(&client, first.hash(), Duration::from_secs(30)).await;
    let before = client.get_account(me, None).await.expect("rpc");

    let send = |tx: String| {
        let client = client.clone();
        async move { client.send_raw_transaction(tx).await }
    };
    let good = transfer(&key, 1, 1, recipient(9), 10).encode();
    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    let pauper = SecretKey::from_seed([77; 32]);
    let cases: Vec<(String, i32, &str)> = vec![
        ("0xzz".into(), codes::TX_MALFORMED, "invalid_hex"),
        (
            hex::encode(&good[..good.len() - 3]),
            codes::TX_MALFORMED,
            "malformed",
        ),
        (hex::encode(&trailing), codes::TX_MALFORMED, "malformed"),
        (
            "00".repeat(peregrine_types::MAX_TX_BYTES + 1),
            codes::TX_MALFORMED,
            "oversized",
        ),
        (hex::encode(&bad_sig), codes::TX_REJECTED, "bad_signature"),
        (
            hex_of(&transfer_on(CHAIN_ID + 1, &key, 1, 1, recipient(9), 10)),
            codes::TX_REJECTED,
            "wrong_chain",
        ),
        (
            hex_of(&transfer(&key, 0, 1, recipient(9), 10)),
            codes::TX_REJECTED,
            "nonce_too_low",
        ),
        (
            hex_of(&transfer(&key, 5, 1, recipient(9), 10)),
            codes::TX_REJECTED,
            "nonce_gap",
        ),
        (
            hex_of(&transfer(&key, 1, 1, recipient(9), DEV_BALANCE)),
            codes::TX_REJECTED,
            "insufficient_balance",
        ),
        (
            hex_of(&transfer(&pauper, 0, 1, recipient(9), 0)),
            codes::TX_REJECTED,
            "insufficient_balance",
        ),
        (
            hex_of(&transfer(&key, 1, 0, recipient(9), 1)),
            codes::TX_REJECTED,
            "fee_too_low",
        ),
    ];
    for (tx, code, reason) in cases {
        assert_eq!(
            error_of(send(tx).await),
            (code, reason.to_string()),
            "case {reason}"
        );
    }
    let unknown: Result<serde_json::Value, _> = client
        .request("peregrine_noSuchMethod", rpc_params![])
        .await;
    assert_eq!(error_of(unknown).0, -32601);
    let wrong_params: Result<serde_json::Value, _> = client
        .request("peregrine_getAccount", rpc_params![42])
        .await;
    assert_eq!(error_of(wrong_params).0, -32602);
    let too_many = vec![hex_of(&first); peregrine_rpc::MAX_BATCH_TXS + 1];
    assert_eq!(
        error_of(client.send_raw_transaction_batch(too_many).await),
        (codes::BATCH_TOO_LARGE, "batch_too_large".into())
    );
    let unretained = client
        .get_account(me, Some(BlockTag::Height(1_000_000)))
        .await;
    assert_eq!(
        error_of(unretained),
        (codes::STATE_UNAVAILABLE, "height_not_retained".into())
    );

    // Nothing changed: same account, empty mempool, and blocks kept coming.
    let status = client.status().await.expect("status");
    assert_eq!(status.mempool_size, 0);
    let after = client.get_account(me, None).await.expect("rpc");
    assert_eq!((after.balance, after.nonce), (before.balance, before.nonce));
    assert_eq!(
        peregrine_execution::total_supply(&node.chain().latest().1),
        u128::from(ACCOUNTS) * DEV_BALANCE
    );
    node.stop().expect("clean stop");
}
