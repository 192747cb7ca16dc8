//! The node's implementation of the JSON-RPC API defined in `peregrine-rpc`.

use crate::chain::Chain;
use jsonrpsee::core::{async_trait, RpcResult, SubscriptionResult};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::PendingSubscriptionSink;
use peregrine_mempool::Rejection;
use peregrine_rpc::{
    codes, error, AccountView, BlockTag, BlockView, CallRequest, CallResult, ChainStatus,
    EventView, HeaderView, PeregrineApiServer, ProofView, ReceiptView, SubmitResult,
    TransactionView, TxLocation, TxLookup, MAX_BATCH_TXS,
};
use peregrine_state::Snapshot;
use peregrine_types::{Address, Block, Hash, SignedTransaction, MAX_TX_BYTES};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Serves the API from a chain.
pub struct RpcServer {
    chain: Arc<Chain>,
}

impl RpcServer {
    /// The state `at` names, with its height.
    fn state(&self, at: Option<BlockTag>) -> Result<(u64, Snapshot), ErrorObjectOwned> {
        match at.unwrap_or_default() {
            BlockTag::Latest | BlockTag::Finalized | BlockTag::Pending => Ok(self.chain.latest()),
            BlockTag::Height(height) => {
                let snapshot = self.chain.state_at(height).ok_or_else(|| {
                    let message = format!(
                        "state at height {height} is not retained (finalized: {})",
                        self.chain.finalized_height()
                    );
                    error(codes::STATE_UNAVAILABLE, message, "height_not_retained")
                })?;
                Ok((height, snapshot))
            }
        }
    }

    /// A server over `chain`.
    pub fn new(chain: Arc<Chain>) -> Self {
        Self { chain }
    }

    /// Admits hex-encoded transactions through the pipeline, answering each in order.
    async fn submit_hex(&self, txs: &[String]) -> Vec<Result<Hash, ErrorObjectOwned>> {
        let decoded: Vec<Result<Vec<u8>, ErrorObjectOwned>> =
            txs.iter().map(|tx| decode_hex(tx)).collect();
        let raw: Vec<Vec<u8>> = decoded.iter().flatten().cloned().collect();
        let mut admitted = self.chain.admission().submit(raw).await.into_iter();
        decoded
            .into_iter()
            .map(|d| {
                d.and_then(|_| {
                    admitted
                        .next()
                        .unwrap_or(Err(Rejection::Overloaded))
                        .map_err(rejection_error)
                })
            })
            .collect()
    }
}

fn decode_hex(tx: &str) -> Result<Vec<u8>, ErrorObjectOwned> {
    let raw = tx.strip_prefix("0x").unwrap_or(tx);
    // Hex doubles the size: refuse before decoding anything that cannot be a valid transaction.
    if raw.len() > 2 * MAX_TX_BYTES {
        return Err(error(
            codes::TX_MALFORMED,
            format!("transaction exceeds {MAX_TX_BYTES} bytes"),
            "oversized",
        ));
    }
    hex::decode(raw).map_err(|e| {
        error(
            codes::TX_MALFORMED,
            format!("invalid hex: {e}"),
            "invalid_hex",
        )
    })
}

fn rejection_error(rejection: Rejection) -> ErrorObjectOwned {
    let code = match rejection {
        Rejection::Malformed(_) => codes::TX_MALFORMED,
        Rejection::Overloaded => codes::OVERLOADED,
        _ => codes::TX_REJECTED,
    };
    error(code, rejection.to_string(), rejection.code())
}

fn receipt_view(tx: &SignedTransaction, receipt: &peregrine_types::Receipt) -> ReceiptView {
    let is_deploy = matches!(tx.tx().payload, peregrine_types::Payload::Deploy { .. });
    ReceiptView::of(receipt, is_deploy)
}

fn call_result(outcome: peregrine_vm::Outcome) -> CallResult {
    let events = outcome.events.iter().map(|e| {
        EventView::of(&peregrine_types::LogEvent {
            contract: Address(e.contract),
            topic: e.topic.clone(),
            data: e.data.clone(),
        })
    });
    let events = events.collect();
    match outcome.result {
        Ok(data) => CallResult {
            status: "success".into(),
            failure: None,
            message: None,
            output: format!("0x{}", hex::encode(data)),
            gas_used: outcome.gas_used,
            events,
        },
        Err(failure) => CallResult {
            status: "failed".into(),
            failure: Some(
                peregrine_execution::rules::failure_kind(&failure)
                    .name()
                    .into(),
            ),
            message: Some(failure.message()),
            output: "0x".into(),
            gas_used: outcome.gas_used,
            events,
        },
    }
}

fn internal(err: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32603, err.to_string(), None::<()>)
}

fn block_view(block: &Block, state_root: Hash) -> BlockView {
    BlockView {
        header: HeaderView::of(block, Some(state_root)),
        transactions: block.txs.iter().map(SignedTransaction::hash).collect(),
    }
}

#[async_trait]
impl PeregrineApiServer for RpcServer {
    async fn send_raw_transaction(&self, tx: String) -> RpcResult<Hash> {
        let mut results = self.submit_hex(&[tx]).await;
        results
            .pop()
            .unwrap_or(Err(rejection_error(Rejection::Overloaded)))
    }

    async fn send_raw_transaction_batch(&self, txs: Vec<String>) -> RpcResult<Vec<SubmitResult>> {
        if txs.len() > MAX_BATCH_TXS {
            let message = format!(
                "batch of {} exceeds {MAX_BATCH_TXS} transactions",
                txs.len()
            );
            return Err(error(codes::BATCH_TOO_LARGE, message, "batch_too_large"));
        }
        Ok(self
            .submit_hex(&txs)
            .await
            .into_iter()
            .map(|result| match result {
                Ok(hash) => SubmitResult {
                    hash: Some(hash),
                    error: None,
                    message: None,
                },
                Err(err) => {
                    let reason = err
                        .data()
                        .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok());
                    let reason = reason.and_then(|v| v["reason"].as_str().map(str::to_string));
                    SubmitResult {
                        hash: None,
                        error: reason,
                        message: Some(err.message().to_string()),
                    }
                }
            })
            .collect())
    }

    async fn get_account(&self, address: Address, at: Option<BlockTag>) -> RpcResult<AccountView> {
        let (height, snapshot) = self.state(at)?;
        let mut account = Chain::account(&snapshot, &address).map_err(internal)?;
        if at == Some(BlockTag::Pending) {
            account.nonce = self.chain.mempool().next_nonce(&address, account.nonce);
        }
        Ok(AccountView {
            address,
            balance: account.balance.to_string(),
            nonce: account.nonce,
            height,
        })
    }

    async fn get_proof(&self, address: Address, at: Option<BlockTag>) -> RpcResult<ProofView> {
        let (height, snapshot) = self.state(at)?;
        let key = peregrine_types::keys::account(&address);
        let proof = snapshot.prove(&key).map_err(internal)?;
        Ok(ProofView::new(
            address,
            height,
            snapshot.commitment(),
            &key,
            &proof,
        ))
    }

    async fn get_block_by_height(&self, height: u64) -> RpcResult<Option<BlockView>> {
        let found = self.chain.block_at(height).map_err(internal)?;
        Ok(found.map(|(block, root)| block_view(&block, root)))
    }

    async fn get_block_by_hash(&self, hash: Hash) -> RpcResult<Option<BlockView>> {
        let found = self.chain.block_by_hash(&hash).map_err(internal)?;
        Ok(found.map(|(block, root)| block_view(&block, root)))
    }

    async fn get_transaction(&self, hash: Hash) -> RpcResult<Option<TxLookup>> {
        if let Some((tx, receipt)) = self.chain.included_tx(&hash).map_err(internal)? {
            return Ok(Some(TxLookup {
                status: TxLocation::Included,
                transaction: TransactionView::of(&tx),
                receipt: Some(receipt_view(&tx, &receipt)),
            }));
        }
        Ok(self.chain.mempool().get(&hash).map(|tx| TxLookup {
            status: TxLocation::Pending,
            transaction: TransactionView::of(&tx),
            receipt: None,
        }))
    }

    async fn get_receipt(&self, hash: Hash) -> RpcResult<Option<ReceiptView>> {
        let found = self.chain.included_tx(&hash).map_err(internal)?;
        Ok(found.map(|(tx, receipt)| receipt_view(&tx, &receipt)))
    }

    async fn call(&self, request: CallRequest, at: Option<BlockTag>) -> RpcResult<CallResult> {
        let (height, snapshot) = self.state(at)?;
        let args = hex::decode(request.args.strip_prefix("0x").unwrap_or(&request.args))
            .map_err(|e| error(codes::INVALID_PARAMS, format!("args: {e}"), "invalid_hex"))?;
        if args.len() > peregrine_types::tx::MAX_ARGS_BYTES as usize {
            let message = format!("args exceed {} bytes", peregrine_types::tx::MAX_ARGS_BYTES);
            return Err(error(codes::INVALID_PARAMS, message, "oversized"));
        }
        let chain = self.chain.clone();
        // A call runs for up to the per-transaction gas maximum: off the async workers.
        let outcome =
            tokio::task::spawn_blocking(move || chain.view_call(height, snapshot, &request, args))
                .await
                .map_err(internal)?;
        Ok(call_result(outcome))
    }

    async fn status(&self) -> RpcResult<ChainStatus> {
        Ok(ChainStatus {
            chain_id: self.chain.chain_id(),
            genesis: self.chain.genesis().hash(),
            head_height: self
                .chain
                .highest_known()
                .max(self.chain.finalized_height()),
            finalized_height: self.chain.finalized_height(),
            finalized_hash: self.chain.finalized_hash(),
            state_root: self.chain.state_root(),
            mempool_size: self.chain.mempool().len() as u64,
            min_fee: self.chain.mempool().min_fee(),
        })
    }

    async fn subscribe_new_heads(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        let sink = pending.accept().await?;
        let mut heads = self.chain.subscribe_heads();
        loop {
            match heads.recv().await {
                Ok(head) => {
                    let message = serde_json::value::to_raw_value(&head)?;
                    if sink.send(message).await.is_err() {
                        return Ok(());
                    }
                }
                // A slow subscriber skips what it missed and continues with the newest heads.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}
