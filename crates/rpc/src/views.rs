//! JSON shapes of the API. Amounts are decimal strings (JSON numbers cannot hold a `u128`).

use peregrine_types::{
    Address, Block, Hash, LogEvent, Payload, PublicKey, Receipt, SignedTransaction, TxStatus,
};
use serde::{Deserialize, Serialize};

/// Which state to read: the latest executed, the finalized one, the pending one, or a height.
///
/// In JSON: `"latest"`, `"finalized"`, `"pending"`, or a height as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockTag {
    /// The latest executed state.
    #[default]
    Latest,
    /// The finalized state.
    Finalized,
    /// The latest state plus this node's mempool: the nonce is the next one the sender can use.
    Pending,
    /// The state after the block at this height.
    Height(u64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BlockTagJson {
    Name(String),
    Height(u64),
}

impl Serialize for BlockTag {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockTag::Latest => BlockTagJson::Name("latest".into()),
            BlockTag::Finalized => BlockTagJson::Name("finalized".into()),
            BlockTag::Pending => BlockTagJson::Name("pending".into()),
            BlockTag::Height(h) => BlockTagJson::Height(*h),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BlockTag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match BlockTagJson::deserialize(deserializer)? {
            BlockTagJson::Height(h) => Ok(BlockTag::Height(h)),
            BlockTagJson::Name(name) => match name.as_str() {
                "latest" => Ok(BlockTag::Latest),
                "finalized" => Ok(BlockTag::Finalized),
                "pending" => Ok(BlockTag::Pending),
                other => other
                    .parse()
                    .map(BlockTag::Height)
                    .map_err(|_| serde::de::Error::custom(format!("unknown block tag {other:?}"))),
            },
        }
    }
}

/// An account's balance and next nonce at some height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account.
    pub address: Address,
    /// Balance as a decimal string.
    pub balance: String,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    /// The height the values were read at.
    pub height: u64,
}

/// A block header with its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderView {
    /// The block hash.
    pub hash: Hash,
    /// Height.
    pub height: u64,
    /// Parent hash.
    pub parent: Hash,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Proposer key.
    pub proposer: PublicKey,
    /// Merkle root of the transaction hashes.
    pub tx_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
    /// Height of the execution receipt carried.
    pub exec_height: u64,
    /// State commitment after `exec_height`.
    pub exec_root: Hash,
    /// This node's state commitment after executing this block, once executed.
    pub state_root: Option<Hash>,
}

impl HeaderView {
    /// The view of `block`'s header, with this node's post-state commitment if known.
    pub fn of(block: &Block, state_root: Option<Hash>) -> Self {
        let h = &block.header;
        Self {
            hash: block.hash(),
            height: h.height,
            parent: h.parent,
            timestamp_ms: h.timestamp_ms,
            proposer: h.proposer,
            tx_root: h.tx_root,
            tx_count: h.tx_count,
            exec_height: h.exec_height,
            exec_root: h.exec_root,
            state_root,
        }
    }
}

/// A block: header and transaction hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    /// The header.
    pub header: HeaderView,
    /// The transactions' hashes, in order.
    pub transactions: Vec<Hash>,
}

/// A transaction's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionView {
    /// Its hash.
    pub hash: Hash,
    /// Chain id.
    pub chain_id: u64,
    /// Sender address.
    pub from: Address,
    /// Sender nonce.
    pub nonce: u64,
    /// Fee.
    pub fee: u64,
    /// `transfer`, `deploy` or `call`.
    pub kind: String,
    /// Recipient of a transfer, or the contract of a call.
    pub to: Option<Address>,
    /// Amount of a transfer, as a decimal string.
    pub amount: Option<String>,
    /// The method of a call.
    pub method: Option<String>,
    /// The address a deployment creates (whether or not it succeeds).
    pub deploys: Option<Address>,
}

impl TransactionView {
    /// The view of `tx`.
    pub fn of(tx: &SignedTransaction) -> Self {
        let body = tx.tx();
        let (to, amount) = match &body.payload {
            Payload::Transfer { to, amount } => (Some(*to), Some(amount.to_string())),
            Payload::Call { contract, .. } => (Some(*contract), None),
            Payload::Deploy { .. } => (None, None),
        };
        let method = match &body.payload {
            Payload::Call { method, .. } => Some(String::from_utf8_lossy(method).into_owned()),
            _ => None,
        };
        let deploys =
            matches!(body.payload, Payload::Deploy { .. }).then(|| body.deployed_address());
        Self {
            hash: tx.hash(),
            chain_id: body.chain_id,
            from: tx.sender(),
            nonce: body.nonce,
            fee: body.fee,
            kind: body.payload.kind().to_string(),
            to,
            amount,
            method,
            deploys,
        }
    }
}

/// The outcome of an included transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptView {
    /// The transaction.
    pub tx_hash: Hash,
    /// Height of the including block.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// `success`, `failed_*` or `skipped_*`.
    pub status: String,
    /// For `skipped_bad_nonce`: the nonce the account expected.
    pub expected_nonce: Option<u64>,
    /// Fee charged.
    pub fee_paid: u64,
    /// Gas used.
    pub gas_used: u64,
    /// For `failed_contract`: why (`out_of_gas`, `aborted`, `trap`, ...).
    pub failure: Option<String>,
    /// For a failed contract transaction: its message (the abort message, or what was refused).
    pub message: Option<String>,
    /// For a successful deploy: the new contract's address.
    pub contract_address: Option<Address>,
    /// A successful call's return data, `0x`-prefixed hex (empty: `0x`).
    pub output: String,
    /// The events of a successful contract transaction, in order.
    pub events: Vec<EventView>,
}

/// An event a contract emitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// The emitting contract.
    pub contract: Address,
    /// The topic, as text (lossy UTF-8).
    pub topic: String,
    /// The data, `0x`-prefixed hex.
    pub data: String,
}

impl EventView {
    /// The view of `event`.
    pub fn of(event: &LogEvent) -> Self {
        Self {
            contract: event.contract,
            topic: String::from_utf8_lossy(&event.topic).into_owned(),
            data: to_hex(&event.data),
        }
    }
}

/// What a read-only call asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The contract.
    pub contract: Address,
    /// The method.
    pub method: String,
    /// The encoded arguments, hex (optionally `0x`-prefixed); empty for none.
    #[serde(default)]
    pub args: String,
    /// The caller the contract sees (default: the zero address).
    pub caller: Option<Address>,
    /// The gas limit (default and maximum: the per-transaction maximum).
    pub gas: Option<u64>,
}

/// What a read-only call returned. Nothing it wrote is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// `success` or `failed`.
    pub status: String,
    /// When failed: why (`out_of_gas`, `aborted`, `no_contract`, ...).
    pub failure: Option<String>,
    /// When failed: the message.
    pub message: Option<String>,
    /// The return data, `0x`-prefixed hex.
    pub output: String,
    /// Gas used.
    pub gas_used: u64,
    /// The events the call would emit.
    pub events: Vec<EventView>,
}

impl ReceiptView {
    /// The view of `receipt`; `is_deploy` says whether its transaction was a deployment (whose
    /// output is the new contract's address).
    pub fn of(receipt: &Receipt, is_deploy: bool) -> Self {
        let expected_nonce = match receipt.status {
            TxStatus::SkippedBadNonce { expected } => Some(expected),
            _ => None,
        };
        let failure = match receipt.status {
            TxStatus::FailedContract(failure) => Some(failure),
            _ => None,
        };
        let message = failure.map(|_| String::from_utf8_lossy(&receipt.output).into_owned());
        let contract_address = match (&receipt.status, <[u8; 20]>::try_from(&receipt.output[..])) {
            (TxStatus::Success, Ok(address)) if is_deploy => Some(Address(address)),
            _ => None,
        };
        let output = if failure.is_some() || contract_address.is_some() {
            "0x".to_string()
        } else {
            to_hex(&receipt.output)
        };
        Self {
            tx_hash: receipt.tx_hash,
            height: receipt.height,
            index: receipt.index,
            status: receipt.status.name().to_string(),
            expected_nonce,
            fee_paid: receipt.fee_paid,
            gas_used: receipt.gas_used,
            failure: failure.map(|f| f.name().to_string()),
            message,
            contract_address,
            output,
            events: receipt.events.iter().map(EventView::of).collect(),
        }
    }
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxLocation {
    /// Admitted, waiting in the mempool.
    Pending,
    /// In a finalized block; see the receipt.
    Included,
}

/// A transaction, where it is, and its receipt once included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLookup {
    /// Pending or included.
    pub status: TxLocation,
    /// The transaction.
    pub transaction: TransactionView,
    /// The receipt, once included.
    pub receipt: Option<ReceiptView>,
}

/// The result of one transaction in a batch submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The hash, when admitted.
    pub hash: Option<Hash>,
    /// The rejection code (see docs/RPC.md), when rejected.
    pub error: Option<String>,
    /// A human-readable reason, when rejected.
    pub message: Option<String>,
}

/// The node's view of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// The chain id transactions must carry.
    pub chain_id: u64,
    /// Hash of the genesis block.
    pub genesis: Hash,
    /// Highest block known (proposed or received), final or not.
    pub head_height: u64,
    /// Highest finalized and executed block.
    pub finalized_height: u64,
    /// Its hash.
    pub finalized_hash: Hash,
    /// State commitment after it.
    pub state_root: Hash,
    /// Transactions in the mempool.
    pub mempool_size: u64,
    /// The minimum fee the mempool admits.
    pub min_fee: u64,
}

/// A Merkle proof of an account record (or of its absence) against a state commitment; see
/// `docs/STATE.md`. Byte strings are `0x`-prefixed hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofView {
    /// The account.
    pub address: Address,
    /// The height of the state proved.
    pub height: u64,
    /// That state's commitment: what the proof verifies against.
    pub state_root: Hash,
    /// The state key proved.
    pub key: String,
    /// The branches on the key's path, from the root down.
    pub steps: Vec<ProofStepView>,
    /// Where the path ends.
    pub end: ProofEndView,
}

/// One branch of a [`ProofView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofStepView {
    /// The nibble position the branch splits on.
    pub pos: u16,
    /// Its slot mask.
    pub mask: u32,
    /// Its inline mask: the slots that hold a leaf inline.
    pub inline_mask: u32,
    /// Its children in the other slots, in slot order.
    pub siblings: Vec<SiblingView>,
}

/// A child beside a [`ProofView`]'s path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SiblingView {
    /// A node of its own: its hash.
    Hash {
        /// The node's hash.
        hash: Hash,
    },
    /// A leaf held inline by the branch, whose record the branch's hash covers.
    Leaf {
        /// The leaf's key.
        key: String,
        /// The leaf's value.
        value: String,
    },
}

/// Where a [`ProofView`]'s path ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ProofEndView {
    /// The state is empty.
    EmptyState,
    /// No child in the key's slot: the key is absent.
    NoChild,
    /// The leaf below the path: the key's record, or another key's (the key is absent).
    Leaf {
        /// The leaf's key.
        key: String,
        /// The leaf's value.
        value: String,
    },
}

impl ProofView {
    /// The view of `proof` for `address`'s record `key` in the state at `height`.
    pub fn new(
        address: Address,
        height: u64,
        state_root: Hash,
        key: &[u8],
        proof: &peregrine_state::proof::Proof,
    ) -> Self {
        use peregrine_state::proof::End;
        let steps = proof
            .steps
            .iter()
            .map(|step| ProofStepView {
                pos: step.pos,
                mask: step.mask,
                inline_mask: step.inline_mask,
                siblings: step.siblings.iter().map(SiblingView::new).collect(),
            })
            .collect();
        let end = match &proof.end {
            End::EmptyTrie => ProofEndView::EmptyState,
            End::NoChild => ProofEndView::NoChild,
            End::Leaf { key, value } => ProofEndView::Leaf {
                key: to_hex(key),
                value: to_hex(value),
            },
        };
        Self {
            address,
            height,
            state_root,
            key: to_hex(key),
            steps,
            end,
        }
    }

    /// Checks the proof against its own `state_root` and returns the account record it proves
    /// (`None`: no record). The caller decides whether it trusts that root, e.g. by comparing it
    /// with the execution receipt a later block carries.
    pub fn verify(&self) -> Result<Option<Vec<u8>>, String> {
        use peregrine_state::proof::{End, Proof, Sibling, Step};
        let key = from_hex(&self.key)?;
        let end = match &self.end {
            ProofEndView::EmptyState => End::EmptyTrie,
            ProofEndView::NoChild => End::NoChild,
            ProofEndView::Leaf { key, value } => End::Leaf {
                key: from_hex(key)?,
                value: from_hex(value)?,
            },
        };
        let steps = self
            .steps
            .iter()
            .map(|step| {
                let siblings = step.siblings.iter().map(|sibling| match sibling {
                    SiblingView::Hash { hash } => Ok(Sibling::Hash(hash.0)),
                    SiblingView::Leaf { key, value } => Ok(Sibling::Leaf {
                        key: from_hex(key)?,
                        value: from_hex(value)?,
                    }),
                });
                Ok(Step {
                    pos: step.pos,
                    mask: step.mask,
                    inline_mask: step.inline_mask,
                    siblings: siblings.collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<_, String>>()?;
        Proof { steps, end }
            .verify(&self.state_root.0, &key)
            .map_err(|e| e.to_string())
    }
}

impl SiblingView {
    fn new(sibling: &peregrine_state::proof::Sibling) -> Self {
        use peregrine_state::proof::Sibling;
        match sibling {
            Sibling::Hash(hash) => SiblingView::Hash { hash: Hash(*hash) },
            Sibling::Leaf { key, value } => SiblingView::Leaf {
                key: to_hex(key),
                value: to_hex(value),
            },
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text.trim_start_matches("0x")).map_err(|e| format!("bad hex {text:?}: {e}"))
}
