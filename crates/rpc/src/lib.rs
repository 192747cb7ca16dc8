//! Serve and call the JSON-RPC API.
//!
//! [`PeregrineApi`] is the one definition of the API: jsonrpsee derives from it both the server
//! trait the node implements (`PeregrineApiServer`) and the typed client the CLI and the load
//! generator use (`PeregrineApiClient`), so the two cannot drift. Every method is documented in
//! `docs/RPC.md`; every rejection carries one of the codes in [`codes`] and a machine-readable
//! reason in the error's `data`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use peregrine_rpc::{PeregrineApiClient, http_client};
//! let client = http_client("http://127.0.0.1:8645")?;
//! let status = client.status().await?;
//! println!("finalized height {}", status.finalized_height);
//! # Ok(()) }
//! ```

pub mod ingest;
pub mod views;

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;
use peregrine_types::{Address, Hash};
pub use views::*;

/// The largest JSON-RPC request body the server reads, in bytes: a full batch of the largest
/// transactions, hex-encoded, fits.
pub const MAX_REQUEST_BYTES: u32 = 8 * 1024 * 1024;
/// The most transactions one batch submission may carry.
pub const MAX_BATCH_TXS: usize = 1_000;
/// Concurrent connections the server accepts.
pub const MAX_CONNECTIONS: u32 = 256;
/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 16;
/// The default RPC address of `peregrine dev`.
pub const DEFAULT_RPC_ADDR: &str = "127.0.0.1:8645";

/// Application error codes, beyond JSON-RPC's standard ones (-32700 parse error, -32600 invalid
/// request, -32601 method not found, -32602 invalid params, -32603 internal error).
pub mod codes {
    /// The transaction bytes are not valid hex or not a well-formed transaction.
    pub const TX_MALFORMED: i32 = -32010;
    /// The mempool refused the transaction; `data.reason` names why.
    pub const TX_REJECTED: i32 = -32011;
    /// The requested height is not retained (or not yet reached).
    pub const STATE_UNAVAILABLE: i32 = -32012;
    /// A batch exceeds [`super::MAX_BATCH_TXS`].
    pub const BATCH_TOO_LARGE: i32 = -32013;
    /// Admission is saturated and shed the transaction before checking it; retry later.
    pub const OVERLOADED: i32 = -32014;
    /// A parameter is malformed (JSON-RPC's standard code).
    pub const INVALID_PARAMS: i32 = -32602;
}

/// Builds an error with a code, a message and a machine-readable `reason`.
pub fn error(code: i32, message: impl Into<String>, reason: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        code,
        message.into(),
        Some(serde_json::json!({ "reason": reason })),
    )
}

/// The Peregrine JSON-RPC API. Method names are prefixed `peregrine_`.
#[rpc(server, client, namespace = "peregrine")]
pub trait PeregrineApi {
    /// Submits one signed transaction, hex-encoded (optionally `0x`-prefixed); returns its hash.
    #[method(name = "sendRawTransaction")]
    async fn send_raw_transaction(&self, tx: String) -> RpcResult<Hash>;

    /// Submits up to [`MAX_BATCH_TXS`] transactions; returns one result per transaction.
    #[method(name = "sendRawTransactionBatch")]
    async fn send_raw_transaction_batch(&self, txs: Vec<String>) -> RpcResult<Vec<SubmitResult>>;

    /// An account's balance and nonce at `at` (default `"latest"`). With `"pending"`, the nonce
    /// also counts the sender's transactions waiting in this node's mempool.
    #[method(name = "getAccount")]
    async fn get_account(&self, address: Address, at: Option<BlockTag>) -> RpcResult<AccountView>;

    /// A Merkle proof of an account's record (or of its absence) in the state at `at` (default
    /// `"latest"`), against that state's commitment.
    #[method(name = "getProof")]
    async fn get_proof(&self, address: Address, at: Option<BlockTag>) -> RpcResult<ProofView>;

    /// A finalized block by height, or null.
    #[method(name = "getBlockByHeight")]
    async fn get_block_by_height(&self, height: u64) -> RpcResult<Option<BlockView>>;

    /// A finalized block by hash, or null.
    #[method(name = "getBlockByHash")]
    async fn get_block_by_hash(&self, hash: Hash) -> RpcResult<Option<BlockView>>;

    /// A transaction by hash (pending or included, with its receipt once included), or null.
    #[method(name = "getTransaction")]
    async fn get_transaction(&self, hash: Hash) -> RpcResult<Option<TxLookup>>;

    /// The receipt of an included transaction, or null.
    #[method(name = "getReceipt")]
    async fn get_receipt(&self, hash: Hash) -> RpcResult<Option<ReceiptView>>;

    /// Runs a contract method read-only on the state at `at` (default `"latest"`): what it
    /// returns and emits, with nothing kept. Bounded by the per-transaction gas maximum.
    #[method(name = "call")]
    async fn call(&self, request: CallRequest, at: Option<BlockTag>) -> RpcResult<CallResult>;

    /// The node's view of the chain.
    #[method(name = "status")]
    async fn status(&self) -> RpcResult<ChainStatus>;

    /// Streams each newly finalized block header (WebSocket only).
    #[subscription(name = "subscribeNewHeads" => "newHead", unsubscribe = "unsubscribeNewHeads", item = HeaderView)]
    async fn subscribe_new_heads(&self) -> SubscriptionResult;
}

/// An HTTP client for `url` with the request size bound of the server.
pub fn http_client(
    url: &str,
) -> Result<jsonrpsee::http_client::HttpClient, jsonrpsee::core::ClientError> {
    jsonrpsee::http_client::HttpClientBuilder::default()
        .max_request_size(MAX_REQUEST_BYTES)
        .build(url)
}

/// A WebSocket client for `url` (`ws://...`), for subscriptions.
pub async fn ws_client(
    url: &str,
) -> Result<jsonrpsee::ws_client::WsClient, jsonrpsee::core::ClientError> {
    jsonrpsee::ws_client::WsClientBuilder::default()
        .max_request_size(MAX_REQUEST_BYTES)
        .build(url)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_tags_parse_from_json() {
        let parse = |s: &str| serde_json::from_str::<BlockTag>(s);
        assert_eq!(parse("\"latest\"").ok(), Some(BlockTag::Latest));
        assert_eq!(parse("\"finalized\"").ok(), Some(BlockTag::Finalized));
        assert_eq!(parse("\"pending\"").ok(), Some(BlockTag::Pending));
        assert_eq!(parse("12").ok(), Some(BlockTag::Height(12)));
        assert_eq!(parse("\"12\"").ok(), Some(BlockTag::Height(12)));
        assert!(parse("\"earliest\"").is_err());
        assert!(parse("-1").is_err());
    }
}
