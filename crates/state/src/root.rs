//! The root file: which checkpoint of the node file the database restarts from.
//!
//! `state.root` is one [`crate::frame`] holding the checkpointed revision, its root node's
//! location and hash (location 0: the empty state), its key count, the node file generation it
//! points into, and that generation's base: its size and key count when it was last written
//! whole, from which the checkpointer judges when to compact ([`crate::nodes`]). Roots written
//! before generations existed end after the hash, and read as generation 0 with no base.
//!
//! The root is replaced atomically: written to a temporary file, synced, renamed over the old
//! one, and the directory synced. A crash leaves either the old root or the new one,
//! and both point at nodes that were synced before the root was written.

use crate::trie::Hash32;
use crate::Error;
use peregrine_types::codec::Reader;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

const ROOT_FILE: &str = "state.root";
const ROOT_TMP: &str = "state.root.tmp";

/// A durable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    /// The revision the checkpoint holds.
    pub revision: u64,
    /// The root node's location in the node file (0: the empty state).
    pub loc: u64,
    /// The root node's hash.
    pub hash: Hash32,
    /// Number of keys.
    pub count: u64,
    /// The node file generation the root points into.
    pub generation: u64,
    /// The generation's size in bytes when it was last written whole (0: unknown).
    pub base_bytes: u64,
    /// The key count then.
    pub base_count: u64,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The checkpoint in `dir`, if one was ever written.
pub fn read(dir: &Path) -> Result<Option<Root>, Error> {
    let bytes = match fs::read(dir.join(ROOT_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                context: "read state root",
                source: e,
            })
        }
    };
    // Renamed into place only after a full write and sync: damage is corruption, not a torn write.
    let corrupt = Error::Corrupt {
        what: "state root fails its checksum",
    };
    let payload = crate::frame::read(&mut bytes.as_slice(), 1024).ok_or(corrupt)?;
    let mut reader = Reader::new(&payload);
    let mut field = || {
        reader.u64().map_err(|_| Error::Corrupt {
            what: "state root cut short",
        })
    };
    let (revision, loc, count) = (field()?, field()?, field()?);
    let hash: Hash32 =
        payload
            .get(24..56)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Corrupt {
                what: "state root cut short",
            })?;
    let (generation, base_bytes, base_count) = match payload.get(56..) {
        Some([]) => (0, 0, 0),
        Some(rest) if rest.len() == 24 => {
            let word = |i: usize| u64::from_le_bytes(rest[i..i + 8].try_into().expect("8 bytes"));
            (word(0), word(8), word(16))
        }
        _ => {
            return Err(Error::Corrupt {
                what: "state root of an unknown length",
            })
        }
    };
    Ok(Some(Root {
        revision,
        loc,
        hash,
        count,
        generation,
        base_bytes,
        base_count,
    }))
}

/// Installs `root` as the checkpoint in `dir`.
pub fn write(dir: &Path, root: &Root) -> Result<(), Error> {
    let mut payload = Vec::with_capacity(80);
    payload.extend_from_slice(&root.revision.to_le_bytes());
    payload.extend_from_slice(&root.loc.to_le_bytes());
    payload.extend_from_slice(&root.count.to_le_bytes());
    payload.extend_from_slice(&root.hash);
    for word in [root.generation, root.base_bytes, root.base_count] {
        payload.extend_from_slice(&word.to_le_bytes());
    }
    let tmp = dir.join(ROOT_TMP);
    let mut file = File::create(&tmp).map_err(io("create state root"))?;
    file.write_all(&crate::frame::encode(&payload))
        .map_err(io("write state root"))?;
    file.sync_all().map_err(io("fsync state root"))?;
    fs::rename(&tmp, dir.join(ROOT_FILE)).map_err(io("install state root"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync state directory"))
}
