//! Contracts on the devnet through JSON-RPC, as the README tour does them: deploy the token, call
//! it, read receipts with gas and events, query it read-only; and a bad contract's failure.

mod common;

use common::{hex_of, wait_included};
use jsonrpsee::http_client::HttpClient;
use peregrine_node::genesis::dev_key;
use peregrine_node::{NodeConfig, RunningNode};
use peregrine_rpc::{CallRequest, PeregrineApiClient, ReceiptView};
use peregrine_sdk::codec::ArgsBuilder;
use peregrine_types::{Address, Payload, SecretKey, Transaction};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const FEE: u64 = 2_000;

fn start(dir: &std::path::Path) -> RunningNode {
    let config = NodeConfig {
        rpc_addr: "127.0.0.1:0".parse().expect("addr"),
        p2p_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: None,
        ingest_addr: None,
        block_time: Duration::from_millis(50),
        dev_accounts: 2,
        status_interval: None,
        ..NodeConfig::dev(dir.to_path_buf())
    };
    peregrine_node::start(config).expect("node starts")
}

fn code(path: &str) -> Vec<u8> {
    let path = format!("{}/../../contracts/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Signs `payload` from dev account 0 with `nonce`, submits it and waits for its receipt.
async fn send(client: &HttpClient, nonce: u64, payload: Payload) -> ReceiptView {
    let key = dev_key(0);
    let tx = Transaction {
        chain_id: common::CHAIN_ID,
        sender: key.public_key(),
        nonce,
        fee: FEE,
        payload,
        access: vec![],
    }
    .sign(&key);
    let hash = client
        .send_raw_transaction(hex_of(&tx))
        .await
        .expect("admitted");
    wait_included(client, hash, LIMIT).await
}

fn call(contract: Address, method: &str, args: Vec<u8>) -> Payload {
    Payload::Call {
        contract,
        method: method.as_bytes().to_vec(),
        args,
    }
}

async fn balance_of(client: &HttpClient, token: Address, owner: Address) -> u128 {
    let request = CallRequest {
        contract: token,
        method: "balance_of".into(),
        args: hex::encode(ArgsBuilder::new().address(&owner.0).build()),
        caller: None,
        gas: None,
    };
    let result = client.call(request, None).await.expect("call");
    assert_eq!(result.status, "success", "{result:?}");
    let bytes = hex::decode(result.output.trim_start_matches("0x")).expect("hex");
    u128::from_le_bytes(bytes.try_into().expect("16 bytes"))
}

#[tokio::test]
async fn the_token_is_deployed_called_and_queried_over_rpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let client = peregrine_rpc::http_client(&format!("http://{}", node.rpc_addr())).expect("rpc");

    let deployed = send(
        &client,
        0,
        Payload::Deploy {
            code: code("token/token.wasm"),
        },
    )
    .await;
    assert_eq!(deployed.status, "success", "{deployed:?}");
    let token = deployed.contract_address.expect("an address");
    assert!(deployed.fee_paid < FEE && deployed.gas_used > 0);

    let init = send(
        &client,
        1,
        call(token, "init", ArgsBuilder::new().u128(500).build()),
    )
    .await;
    assert_eq!(init.status, "success", "{init:?}");
    let friend = SecretKey::from_seed([9; 32]).public_key().address();
    let args = ArgsBuilder::new().address(&friend.0).u128(120).build();
    let sent = send(&client, 2, call(token, "transfer", args)).await;
    assert_eq!(sent.status, "success", "{sent:?}");
    assert_eq!(sent.events.len(), 1);
    assert_eq!(
        (sent.events[0].contract, sent.events[0].topic.as_str()),
        (token, "Transfer")
    );
    assert_eq!(balance_of(&client, token, friend).await, 120);
    let me = dev_key(0).public_key().address();
    assert_eq!(balance_of(&client, token, me).await, 380);

    let too_much = ArgsBuilder::new().address(&friend.0).u128(1_000).build();
    let refused = send(&client, 3, call(token, "transfer", too_much)).await;
    assert_eq!(refused.status, "failed_contract");
    assert_eq!(refused.failure.as_deref(), Some("aborted"));
    assert_eq!(refused.message.as_deref(), Some("insufficient balance"));
    assert!(refused.events.is_empty());
    assert_eq!(
        balance_of(&client, token, friend).await,
        120,
        "nothing moved"
    );

    let bad = send(
        &client,
        4,
        Payload::Deploy {
            code: code("bad/bad.wasm"),
        },
    )
    .await;
    let bad = bad.contract_address.expect("deployed");
    let spin = send(&client, 5, call(bad, "spin", vec![])).await;
    assert_eq!(spin.failure.as_deref(), Some("out_of_gas"));
    assert_eq!((spin.fee_paid, spin.gas_used), (FEE, FEE * 1_000));
    node.stop().expect("clean stop");
}
