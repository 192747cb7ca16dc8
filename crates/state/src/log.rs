//! The durable side: a checkpoint file plus an append-only log of finalized revisions.
//!
//! Each finalized revision is one log record, a checksummed [`crate::frame`] whose payload is `[revision u64][count u32]` and `count` entries `[key][tag][value]` (tag 0: delete,
//! 1: put, byte strings length-prefixed). Finalizing appends every newly final revision and calls
//! `fsync` once. On open, records are replayed until the first one that is truncated or fails its
//! checksum; the file is cut there, because such a record was never acknowledged as durable.
//!
//! When the log outgrows the live data, a checkpoint of the whole finalized map is written to a
//! temporary file, synced, and renamed over `state.checkpoint`; then the log starts afresh. A crash
//! between the rename and the log reset leaves records the checkpoint already covers: replay skips
//! every record whose revision is not newer than the checkpoint's.

use crate::{Bytes, Error, Map};
use peregrine_types::codec::{put_bytes, Reader};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A key and its new value (`None`: deleted).
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// Largest key or value stored, in bytes; bounds what replay will allocate for one entry.
pub const MAX_KEY_BYTES: u32 = 1024;
/// Largest value stored, in bytes.
pub const MAX_VALUE_BYTES: u32 = 1024 * 1024;
/// Largest log record replay accepts, in bytes (one finalized revision's changes).
const MAX_RECORD_BYTES: u32 = 1 << 30;
/// Compact once the log is this many bytes larger than the last checkpoint (and at least this big).
const COMPACT_MIN_LOG_BYTES: u64 = 64 * 1024 * 1024;

const LOG_FILE: &str = "state.log";
const CHECKPOINT_FILE: &str = "state.checkpoint";
const CHECKPOINT_TMP: &str = "state.checkpoint.tmp";

/// The append-only log and checkpoint in one directory.
pub struct Durable {
    dir: PathBuf,
    log: File,
    log_bytes: u64,
    checkpoint_bytes: u64,
}

/// What reopening found on disk.
pub struct Recovered {
    /// The finalized state.
    pub map: Map,
    /// The finalized revision's id.
    pub revision: u64,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn encode_record(revision: u64, changes: &[Change]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&revision.to_le_bytes());
    payload.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for (key, value) in changes {
        put_bytes(&mut payload, key);
        match value {
            None => payload.push(0),
            Some(value) => {
                payload.push(1);
                put_bytes(&mut payload, value);
            }
        }
    }
    crate::frame::encode(&payload)
}

fn decode_payload(payload: &[u8]) -> Option<(u64, Vec<Change>)> {
    let mut reader = Reader::new(payload);
    let revision = reader.u64().ok()?;
    let count = reader.u32().ok()?;
    let mut changes = Vec::new();
    for _ in 0..count {
        let key = reader.bytes("key", MAX_KEY_BYTES).ok()?;
        let value = match reader.u8().ok()? {
            0 => None,
            1 => Some(reader.bytes("value", MAX_VALUE_BYTES).ok()?),
            _ => return None,
        };
        changes.push((key, value));
    }
    reader.finish().ok()?;
    Some((revision, changes))
}

/// Reads the next intact record, or `None` at the end or at the first damaged record.
fn read_record(reader: &mut impl Read) -> Option<(u64, Vec<Change>, u64)> {
    let payload = crate::frame::read(reader, MAX_RECORD_BYTES)?;
    let (revision, changes) = decode_payload(&payload)?;
    Some((
        revision,
        changes,
        crate::frame::FRAME_OVERHEAD + payload.len() as u64,
    ))
}

fn apply(map: &mut Map, changes: Vec<Change>) {
    for (key, value) in changes {
        match value {
            Some(value) => {
                map.insert(Bytes::from_vec(key), Bytes::from_vec(value));
            }
            None => {
                map.remove(key.as_slice());
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync state directory"))
}

impl Durable {
    /// Opens (creating if needed) the files in `dir` and replays them.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), Error> {
        fs::create_dir_all(dir).map_err(io("create state directory"))?;
        let (mut map, mut revision, checkpoint_bytes) = Self::load_checkpoint(dir)?;
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(dir.join(LOG_FILE))
            .map_err(io("open state log"))?;
        let mut good_bytes = 0u64;
        {
            let mut reader = BufReader::new(&mut log);
            while let Some((rev, changes, len)) = read_record(&mut reader) {
                good_bytes += len;
                if rev > revision {
                    apply(&mut map, changes);
                    revision = rev;
                }
            }
        }
        // Cut a torn tail so the next append starts on a record boundary.
        log.set_len(good_bytes)
            .map_err(io("truncate torn state log tail"))?;
        log.seek(SeekFrom::End(0)).map_err(io("seek state log"))?;
        let durable = Self {
            dir: dir.to_path_buf(),
            log,
            log_bytes: good_bytes,
            checkpoint_bytes,
        };
        Ok((durable, Recovered { map, revision }))
    }

    fn load_checkpoint(dir: &Path) -> Result<(Map, u64, u64), Error> {
        let path = dir.join(CHECKPOINT_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Map::new(), 0, 0)),
            Err(e) => {
                return Err(Error::Io {
                    context: "open state checkpoint",
                    source: e,
                })
            }
        };
        let size = file.metadata().map_err(io("stat state checkpoint"))?.len();
        let mut reader = BufReader::new(file);
        // The checkpoint was renamed into place only after a full write and sync, so damage here
        // is corruption, not a torn write: refuse to open rather than silently lose state.
        let (revision, changes, _) = read_record(&mut reader).ok_or(Error::Corrupt {
            what: "state checkpoint fails its checksum",
        })?;
        let mut map = Map::new();
        apply(&mut map, changes);
        Ok((map, revision, size))
    }

    /// Appends one record per finalized revision, in order, then syncs once.
    pub fn append(&mut self, revisions: &[(u64, &[Change])]) -> Result<(), Error> {
        let mut writer = BufWriter::new(&mut self.log);
        for (revision, changes) in revisions {
            let record = encode_record(*revision, changes);
            writer.write_all(&record).map_err(io("append state log"))?;
            self.log_bytes += record.len() as u64;
        }
        writer.flush().map_err(io("flush state log"))?;
        drop(writer);
        self.log.sync_data().map_err(io("fsync state log"))
    }

    /// Whether the log has grown enough, relative to the live data, to be worth compacting.
    pub fn wants_compaction(&self) -> bool {
        self.log_bytes >= COMPACT_MIN_LOG_BYTES && self.log_bytes > 2 * self.checkpoint_bytes
    }

    /// Writes the whole finalized `map` at `revision` as the new checkpoint and resets the log.
    pub fn compact(&mut self, revision: u64, map: &Map) -> Result<(), Error> {
        let changes: Vec<Change> = map
            .iter()
            .map(|(k, v)| (k.to_vec(), Some(v.to_vec())))
            .collect();
        let record = encode_record(revision, &changes);
        let tmp = self.dir.join(CHECKPOINT_TMP);
        let mut file = File::create(&tmp).map_err(io("create state checkpoint"))?;
        file.write_all(&record)
            .map_err(io("write state checkpoint"))?;
        file.sync_all().map_err(io("fsync state checkpoint"))?;
        fs::rename(&tmp, self.dir.join(CHECKPOINT_FILE)).map_err(io("install state checkpoint"))?;
        sync_dir(&self.dir)?;
        self.log.set_len(0).map_err(io("reset state log"))?;
        self.log.sync_all().map_err(io("fsync reset state log"))?;
        self.log_bytes = 0;
        self.checkpoint_bytes = record.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_cut_and_earlier_records_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut durable, _) = Durable::open(dir.path()).expect("open");
            durable
                .append(&[(1, &[(b"a".to_vec(), Some(b"1".to_vec()))][..])])
                .expect("append");
            durable
                .append(&[(2, &[(b"b".to_vec(), Some(b"2".to_vec()))][..])])
                .expect("append");
        }
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 3)
            .expect("cut");
        let (_, recovered) = Durable::open(dir.path()).expect("reopen");
        assert_eq!(recovered.revision, 1);
        assert_eq!(
            recovered.map.get(&b"a"[..]).map(|v| v.as_slice()),
            Some(&b"1"[..])
        );
        assert_eq!(recovered.map.get(&b"b"[..]), None);
    }

    #[test]
    fn checkpoint_then_replay_skips_covered_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut map = Map::new();
        map.insert(Bytes::from_slice(b"k"), Bytes::from_slice(b"v"));
        {
            let (mut durable, _) = Durable::open(dir.path()).expect("open");
            durable
                .append(&[(1, &[(b"k".to_vec(), Some(b"v".to_vec()))][..])])
                .expect("append");
            durable.compact(1, &map).expect("compact");
            durable
                .append(&[(2, &[(b"k".to_vec(), None)][..])])
                .expect("append");
        }
        let (_, recovered) = Durable::open(dir.path()).expect("reopen");
        assert_eq!(recovered.revision, 2);
        assert!(recovered.map.is_empty());
    }
}
