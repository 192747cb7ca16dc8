//! Contract arguments on the command line: typed values, encoded the way the SDK decodes them.
//!
//! Each argument is `type:value`, in order: `u64:5`, `u128:1000`, `address:0x…` (20 bytes),
//! `bytes:0x…` (length-prefixed), `str:text` (UTF-8, length-prefixed). `0x…` alone is raw bytes
//! appended as they are, for arguments built elsewhere. Return values decode with `--returns`.

use anyhow::{bail, Context as _};
use peregrine_sdk::codec::ArgsBuilder;
use peregrine_types::{AccessEntry, AccessMode, Address};

fn hex_bytes(text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text.strip_prefix("0x").unwrap_or(text)).with_context(|| format!("hex {text:?}"))
}

/// Encodes `args` (see the module documentation).
pub fn encode(args: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut builder = ArgsBuilder::new();
    for arg in args {
        if arg.starts_with("0x") && !arg.contains(':') {
            raw.extend(builder.build());
            builder = ArgsBuilder::new();
            raw.extend(hex_bytes(arg)?);
            continue;
        }
        let Some((kind, value)) = arg.split_once(':') else {
            bail!("argument {arg:?}: expected type:value, e.g. u128:1000 or address:0x…");
        };
        builder = match kind {
            "u64" => builder.u64(value.parse().with_context(|| format!("u64 {value:?}"))?),
            "u128" => builder.u128(value.parse().with_context(|| format!("u128 {value:?}"))?),
            "address" => {
                let address: Address = value
                    .parse()
                    .with_context(|| format!("address {value:?}"))?;
                builder.address(&address.0)
            }
            "bytes" => builder.bytes(&hex_bytes(value)?),
            "str" => builder.bytes(value.as_bytes()),
            other => {
                bail!("argument {arg:?}: unknown type {other:?} (u64, u128, address, bytes, str)")
            }
        };
    }
    raw.extend(builder.build());
    Ok(raw)
}

/// Parses `--access` entries: `ADDRESS[:PREFIX][:r|w]`, the prefix in hex (with or without
/// `0x`; empty or absent: the whole contract), the mode `w` (default) or `r`.
pub fn access(entries: &[String]) -> anyhow::Result<Vec<AccessEntry>> {
    entries.iter().map(|entry| access_entry(entry)).collect()
}

fn access_entry(entry: &str) -> anyhow::Result<AccessEntry> {
    let mut parts = entry.split(':');
    let address: Address = parts
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("--access {entry:?}: address"))?;
    let prefix = match parts.next() {
        Some(prefix) => hex_bytes(prefix)?,
        None => Vec::new(),
    };
    let mode = match parts.next() {
        None | Some("w") => AccessMode::Write,
        Some("r") => AccessMode::Read,
        Some(other) => bail!("--access {entry:?}: mode {other:?} is neither r nor w"),
    };
    if parts.next().is_some() {
        bail!("--access {entry:?}: expected ADDRESS[:PREFIX][:r|w]");
    }
    Ok(AccessEntry {
        address,
        prefix,
        mode,
    })
}

/// Decodes return data as `kind` (`u64`, `u128`, `address`, `str` or `hex`).
pub fn decode(kind: &str, data: &[u8]) -> anyhow::Result<String> {
    let exact = |n: usize| {
        if data.len() == n {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{} bytes returned, {kind} has {n}",
                data.len()
            ))
        }
    };
    Ok(match kind {
        "u64" => {
            exact(8)?;
            u64::from_le_bytes(data.try_into()?).to_string()
        }
        "u128" => {
            exact(16)?;
            u128::from_le_bytes(data.try_into()?).to_string()
        }
        "address" => {
            exact(20)?;
            Address(data.try_into()?).to_string()
        }
        "str" => String::from_utf8(data.to_vec()).context("not UTF-8")?,
        "hex" => format!("0x{}", hex::encode(data)),
        other => bail!("--returns {other:?}: expected u64, u128, address, str or hex"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_arguments_encode_like_the_sdk() {
        let to = Address([7; 20]);
        let args = [
            format!("address:{to}"),
            "u128:1000".to_string(),
            "str:hi".to_string(),
        ];
        let expected = ArgsBuilder::new()
            .address(&to.0)
            .u128(1_000)
            .bytes(b"hi")
            .build();
        assert_eq!(encode(&args).expect("encodes"), expected);
        assert!(encode(&["u128:-1".to_string()]).is_err());
        assert!(encode(&["float:1".to_string()]).is_err());
        assert!(encode(&["1000".to_string()]).is_err());
    }

    #[test]
    fn access_entries_parse() {
        let to = Address([7; 20]);
        let parsed = access(&[format!("{to}"), format!("{to}:0x62:r")]).expect("parses");
        assert_eq!(parsed[0].prefix, Vec::<u8>::new());
        assert_eq!(parsed[0].mode, AccessMode::Write);
        assert_eq!(
            (parsed[1].prefix.clone(), parsed[1].mode),
            (vec![0x62], AccessMode::Read)
        );
        assert!(access(&[format!("{to}:62:x")]).is_err());
        assert!(access(&["nope".to_string()]).is_err());
    }

    #[test]
    fn return_values_decode_by_type() {
        assert_eq!(decode("u128", &5u128.to_le_bytes()).expect("u128"), "5");
        assert!(decode("u128", &[1, 2]).is_err());
        assert_eq!(decode("hex", &[0xab]).expect("hex"), "0xab");
    }
}
