//! Helpers shared by the integration tests.
#![allow(dead_code)]

use jsonrpsee::http_client::HttpClient;
use peregrine_rpc::{PeregrineApiClient, TxLocation};
use peregrine_types::{Address, Encode, Hash, Payload, SecretKey, SignedTransaction, Transaction};
use std::time::{Duration, Instant};

/// The chain id of `peregrine dev`.
pub const CHAIN_ID: u64 = peregrine_node::genesis::DEV_CHAIN_ID;

/// A signed transfer.
pub fn transfer(
    key: &SecretKey,
    nonce: u64,
    fee: u64,
    to: Address,
    amount: u128,
) -> SignedTransaction {
    transfer_on(CHAIN_ID, key, nonce, fee, to, amount)
}

/// A signed transfer on `chain_id`.
pub fn transfer_on(
    chain_id: u64,
    key: &SecretKey,
    nonce: u64,
    fee: u64,
    to: Address,
    amount: u128,
) -> SignedTransaction {
    Transaction {
        chain_id,
        sender: key.public_key(),
        nonce,
        fee,
        payload: Payload::Transfer { to, amount },
        access: vec![],
    }
    .sign(key)
}

/// Hex of a transaction's canonical encoding.
pub fn hex_of(tx: &SignedTransaction) -> String {
    format!("0x{}", hex::encode(tx.encode()))
}

/// Waits until `hash` is in a finalized block; panics after `limit`.
pub async fn wait_included(
    client: &HttpClient,
    hash: Hash,
    limit: Duration,
) -> peregrine_rpc::ReceiptView {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(lookup) = client.get_transaction(hash).await.expect("rpc") {
            if lookup.status == TxLocation::Included {
                return lookup.receipt.expect("included transactions have receipts");
            }
        }
        assert!(
            Instant::now() < deadline,
            "transaction {hash} not finalized within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An account's balance.
pub async fn balance(client: &HttpClient, address: Address) -> u128 {
    client
        .get_account(address, None)
        .await
        .expect("rpc")
        .balance
        .parse()
        .expect("decimal balance")
}
