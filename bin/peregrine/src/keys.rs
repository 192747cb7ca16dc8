//! Key files: a JSON object with the hex secret seed, the public key and the address.

use anyhow::{bail, Context as _};
use clap::Subcommand;
use peregrine_types::{Address, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Key file management.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a new random key and write it to a key file (mode 0600).
    New {
        /// Where to write the key file.
        #[arg(long, default_value = "peregrine.key")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Show the public key and address of a key file.
    Show {
        /// The key file.
        #[arg(long = "key-file", default_value = "peregrine.key")]
        key_file: PathBuf,
    },
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    address: Address,
    public_key: PublicKey,
    secret: String,
}

/// Reads a key file.
pub fn load(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text)
        .with_context(|| format!("parsing key file {}", path.display()))?;
    let seed =
        peregrine_types::crypto::parse_hex_array::<32>(&file.secret).context("key file secret")?;
    let key = SecretKey::from_seed(seed);
    if key.public_key() != file.public_key || key.public_key().address() != file.address {
        bail!(
            "key file {} is inconsistent: its secret does not match its public key",
            path.display()
        );
    }
    Ok(key)
}

impl KeysCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            KeysCommand::New { out, force } => {
                let key = SecretKey::generate();
                let file = KeyFile {
                    address: key.public_key().address(),
                    public_key: key.public_key(),
                    secret: hex::encode(key.seed()),
                };
                let mut options = std::fs::OpenOptions::new();
                options.write(true).mode(0o600);
                if force {
                    options.create(true).truncate(true)
                } else {
                    options.create_new(true)
                };
                let mut handle = options.open(&out).with_context(|| {
                    format!("creating {} (use --force to overwrite)", out.display())
                })?;
                handle.write_all(serde_json::to_string_pretty(&file)?.as_bytes())?;
                println!(
                    "wrote {}\naddress    {}\npublic key {}",
                    out.display(),
                    file.address,
                    file.public_key
                );
            }
            KeysCommand::Show { key_file } => {
                let key = load(&key_file)?;
                println!(
                    "address    {}\npublic key {}",
                    key.public_key().address(),
                    key.public_key()
                );
            }
        }
        Ok(())
    }
}
