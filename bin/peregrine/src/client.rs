//! `peregrine tx` and `peregrine query`: RPC client commands.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use peregrine_rpc::{BlockTag, CallRequest, PeregrineApiClient, ProofView, TxLocation};
use peregrine_types::{
    AccessEntry, Account, Address, Encode, Hash, Payload, SecretKey, Transaction,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long `--wait` waits for a transaction to be finalized.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `--wait` polls.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// A single-threaded runtime for client commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[derive(Args)]
pub struct RpcArg {
    /// The node's JSON-RPC URL.
    #[arg(long, global = true, default_value = concat!("http://", "127.0.0.1:8645"))]
    rpc: String,
}

fn client(rpc: &RpcArg) -> anyhow::Result<jsonrpsee::http_client::HttpClient> {
    peregrine_rpc::http_client(&rpc.rpc).with_context(|| format!("connecting to {}", rpc.rpc))
}

/// Which key signs.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Signer {
    /// Sign with development account N of `peregrine dev`.
    #[arg(long = "dev-account")]
    dev_account: Option<u32>,
    /// Sign with the key in this key file.
    #[arg(long = "key-file")]
    key_file: Option<PathBuf>,
}

impl Signer {
    fn key(&self) -> anyhow::Result<SecretKey> {
        match (&self.dev_account, &self.key_file) {
            (Some(index), _) => Ok(peregrine_node::genesis::dev_key(*index)),
            (None, Some(path)) => crate::keys::load(path),
            (None, None) => bail!("pass --dev-account or --key-file"),
        }
    }
}

/// What every transaction command takes.
#[derive(Args)]
pub struct TxOptions {
    #[command(flatten)]
    signer: Signer,
    /// The fee. A transfer pays all of it (default: the node's minimum); a deploy or call buys
    /// up to 1,000 gas per unit and pays only for the gas it uses (default: 2,000).
    #[arg(long)]
    fee: Option<u64>,
    /// The nonce (default: the next one, counting this sender's transactions in the mempool).
    #[arg(long)]
    nonce: Option<u64>,
    /// Wait until the transaction is finalized and print its receipt.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    rpc: RpcArg,
}

/// The default fee of a contract transaction: a budget of two million gas.
const DEFAULT_CONTRACT_FEE: u64 = 2_000;

/// Transaction commands.
#[derive(Subcommand)]
pub enum TxCommand {
    /// Transfer value to an address.
    Transfer {
        /// The recipient address.
        #[arg(long)]
        to: Address,
        /// The amount.
        #[arg(long)]
        amount: u128,
        #[command(flatten)]
        options: TxOptions,
    },
    /// Deploy a contract's `.wasm` file; prints the address it will have.
    Deploy {
        /// The contract's WASM module.
        file: PathBuf,
        #[command(flatten)]
        options: TxOptions,
    },
    /// Call a method of a deployed contract.
    Call {
        /// The contract's address.
        contract: Address,
        /// The method.
        method: String,
        /// Arguments, each `type:value`: u64:5, u128:1000, address:0x…, bytes:0x…, str:text.
        args: Vec<String>,
        /// Declare an access, `ADDRESS[:PREFIX_HEX][:r|w]` (repeatable). A call that declares
        /// runs in parallel with others and fails if it touches anything else; one that declares
        /// nothing runs alone (docs/ACCESS.md).
        #[arg(long = "access")]
        access: Vec<String>,
        #[command(flatten)]
        options: TxOptions,
    },
}

impl TxCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        let (payload, access, options) = match self {
            TxCommand::Transfer {
                to,
                amount,
                options,
            } => (Payload::Transfer { to, amount }, vec![], options),
            TxCommand::Deploy { file, options } => {
                let code =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                (Payload::Deploy { code }, vec![], options)
            }
            TxCommand::Call {
                contract,
                method,
                args,
                access,
                options,
            } => {
                let args = crate::args::encode(&args)?;
                let method = method.into_bytes();
                let payload = Payload::Call {
                    contract,
                    method,
                    args,
                };
                (payload, crate::args::access(&access)?, options)
            }
        };
        submit(payload, access, options).await
    }
}

/// Signs `payload` with the options' key, submits it, and waits for its receipt if asked.
async fn submit(
    payload: Payload,
    access: Vec<AccessEntry>,
    options: TxOptions,
) -> anyhow::Result<()> {
    let client = client(&options.rpc)?;
    let key = options.signer.key()?;
    let status = client.status().await.context("reading chain status")?;
    let nonce = match options.nonce {
        Some(nonce) => nonce,
        None => {
            let pending = Some(BlockTag::Pending);
            let address = key.public_key().address();
            client.get_account(address, pending).await?.nonce
        }
    };
    let default_fee = match payload {
        Payload::Transfer { .. } => status.min_fee,
        _ => DEFAULT_CONTRACT_FEE.max(status.min_fee),
    };
    let tx = Transaction {
        chain_id: status.chain_id,
        sender: key.public_key(),
        nonce,
        fee: options.fee.unwrap_or(default_fee),
        payload,
        access,
    };
    let deploys = matches!(tx.payload, Payload::Deploy { .. }).then(|| tx.deployed_address());
    let tx = tx.sign(&key);
    let hash = client
        .send_raw_transaction(hex::encode(tx.encode()))
        .await
        .context("submitting")?;
    println!("submitted {hash}");
    if let Some(address) = deploys {
        println!("contract address {address}");
    }
    if options.wait {
        wait_for_receipt(&client, hash).await?;
    }
    Ok(())
}

async fn wait_for_receipt(
    client: &jsonrpsee::http_client::HttpClient,
    hash: Hash,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(lookup) = client.get_transaction(hash).await? {
            if lookup.status == TxLocation::Included {
                println!("{}", serde_json::to_string_pretty(&lookup.receipt)?);
                return Ok(());
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    bail!("transaction {hash} not finalized within {WAIT_TIMEOUT:?}")
}

/// Query commands.
#[derive(Subcommand)]
pub enum QueryCommand {
    /// An account's balance and nonce.
    Account {
        /// The address.
        address: Address,
        /// `latest`, `finalized`, `pending` or a height.
        #[arg(long, default_value = "latest")]
        at: String,
        #[command(flatten)]
        rpc: RpcArg,
    },
    /// An account with a Merkle proof, checked here against the state commitment the node
    /// names: prints the proved balance and nonce, or fails if the proof does not verify.
    Proof {
        /// The address.
        address: Address,
        /// `latest`, `finalized` or a height.
        #[arg(long, default_value = "latest")]
        at: String,
        /// Also print the proof itself.
        #[arg(long)]
        show: bool,
        #[command(flatten)]
        rpc: RpcArg,
    },
    /// A finalized block by height or hash.
    Block {
        /// A height, or a `0x`-prefixed block hash.
        id: String,
        #[command(flatten)]
        rpc: RpcArg,
    },
    /// A transaction and its receipt.
    Tx {
        /// The transaction hash.
        hash: Hash,
        #[command(flatten)]
        rpc: RpcArg,
    },
    /// The node's chain status.
    Status {
        #[command(flatten)]
        rpc: RpcArg,
    },
    /// Run a contract method read-only on the latest state (nothing is kept).
    Call {
        /// The contract's address.
        contract: Address,
        /// The method.
        method: String,
        /// Arguments, each `type:value`: u64:5, u128:1000, address:0x…, bytes:0x…, str:text.
        args: Vec<String>,
        /// Decode the return data as u64, u128, address, str or hex (default: print the result).
        #[arg(long)]
        returns: Option<String>,
        /// The caller the contract sees.
        #[arg(long)]
        caller: Option<Address>,
        /// `latest`, `finalized` or a height.
        #[arg(long, default_value = "latest")]
        at: String,
        #[command(flatten)]
        rpc: RpcArg,
    },
}

/// The account a proof proves, once it verifies against its state root.
fn verified_account(proof: &ProofView) -> anyhow::Result<serde_json::Value> {
    let record = proof
        .verify()
        .map_err(|e| anyhow::anyhow!("the proof for {} does not verify: {e}", proof.address))?;
    let account = Account::from_record(record.as_deref())
        .map_err(|e| anyhow::anyhow!("the proved record does not decode: {e}"))?;
    Ok(serde_json::json!({
        "address": proof.address,
        "height": proof.height,
        "stateRoot": proof.state_root,
        "verified": true,
        "balance": account.balance.to_string(),
        "nonce": account.nonce,
    }))
}

fn parse_tag(text: &str) -> anyhow::Result<BlockTag> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|e| anyhow::anyhow!("--at: {e}"))
}

fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

impl QueryCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            QueryCommand::Account { address, at, rpc } => print(
                &client(&rpc)?
                    .get_account(address, Some(parse_tag(&at)?))
                    .await?,
            ),
            QueryCommand::Proof {
                address,
                at,
                show,
                rpc,
            } => {
                let proof = client(&rpc)?
                    .get_proof(address, Some(parse_tag(&at)?))
                    .await?;
                if show {
                    print(&proof)?;
                }
                print(&verified_account(&proof)?)
            }
            QueryCommand::Block { id, rpc } => {
                let client = client(&rpc)?;
                let block = if id.starts_with("0x") {
                    client
                        .get_block_by_hash(id.parse().context("block hash")?)
                        .await?
                } else {
                    client
                        .get_block_by_height(id.parse().context("block height")?)
                        .await?
                };
                match block {
                    Some(block) => print(&block),
                    None => bail!("no finalized block {id}"),
                }
            }
            QueryCommand::Tx { hash, rpc } => match client(&rpc)?.get_transaction(hash).await? {
                Some(lookup) => print(&lookup),
                None => bail!("unknown transaction {hash}"),
            },
            QueryCommand::Status { rpc } => print(&client(&rpc)?.status().await?),
            QueryCommand::Call {
                contract,
                method,
                args,
                returns,
                caller,
                at,
                rpc,
            } => {
                let request = CallRequest {
                    contract,
                    method,
                    args: hex::encode(crate::args::encode(&args)?),
                    caller,
                    gas: None,
                };
                let result = client(&rpc)?.call(request, Some(parse_tag(&at)?)).await?;
                match returns {
                    Some(kind) if result.status == "success" => {
                        let data = hex::decode(result.output.trim_start_matches("0x"))?;
                        println!("{}", crate::args::decode(&kind, &data)?);
                        Ok(())
                    }
                    _ => print(&result),
                }
            }
        }
    }
}
