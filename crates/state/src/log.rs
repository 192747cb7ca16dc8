//! The write-ahead log: every finalized revision's changes, one fsync per finalize.
//!
//! Each finalized revision is one record, a checksummed [`crate::frame`] whose payload is
//! `[revision u64][count u32]` and `count` entries `[key][tag][value]` (tag 0: delete, 1: put,
//! byte strings length-prefixed). Finalizing appends every newly final revision and syncs the file
//! once. On open, each file is read until its first record that is truncated or fails its
//! checksum, and cut there: such a record was never acknowledged as durable.
//!
//! The log is two files used in turn, `state.wal.0` and `state.wal.1`, so it never grows without
//! bound and no file is ever created after the database is (creating one would need a directory
//! sync). Records are appended to the active file. Once a checkpoint (see [`crate::root`]) covers
//! every record of the other file, and the active one is large enough, the other file is emptied
//! and becomes the active one. Replay reads both, skips records the checkpoint covers, and applies
//! the rest in revision order.

use crate::{Bytes, Error};
use peregrine_types::codec::{put_bytes, Reader};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub use crate::trie::Change;

/// Largest key or value stored, in bytes; bounds what replay will allocate for one entry.
pub const MAX_KEY_BYTES: u32 = 1024;
/// Largest value stored, in bytes.
pub const MAX_VALUE_BYTES: u32 = 1024 * 1024;
/// Largest log record replay accepts, in bytes (one finalized revision's changes).
const MAX_RECORD_BYTES: u32 = 1 << 30;
const WAL_FILES: [&str; 2] = ["state.wal.0", "state.wal.1"];

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

/// A record's revision and changes; the changes of a revision at or below `covered` (which a
/// checkpoint holds, and replay skips) are not decoded: after a bulk load they are millions.
fn decode_payload(payload: &[u8], covered: u64) -> Option<(u64, Vec<Change>)> {
    let mut reader = Reader::new(payload);
    let revision = reader.u64().ok()?;
    if revision <= covered {
        return Some((revision, Vec::new()));
    }
    let count = reader.u32().ok()?;
    let mut changes = Vec::new();
    for _ in 0..count {
        let key = reader.bytes("key", MAX_KEY_BYTES).ok()?;
        let value = match reader.u8().ok()? {
            0 => None,
            1 => Some(reader.bytes("value", MAX_VALUE_BYTES).ok()?),
            _ => return None,
        };
        changes.push((Bytes::from_vec(key), value.map(Bytes::from_vec)));
    }
    reader.finish().ok()?;
    Some((revision, changes))
}

/// Reads the next intact record, or `None` at the end or at the first damaged record.
fn read_record(reader: &mut impl Read, covered: u64) -> Option<(u64, Vec<Change>, u64)> {
    let payload = crate::frame::read(reader, MAX_RECORD_BYTES)?;
    let (revision, changes) = decode_payload(&payload, covered)?;
    Some((
        revision,
        changes,
        crate::frame::FRAME_OVERHEAD + payload.len() as u64,
    ))
}

/// One finalized revision's changes, as replayed.
pub type Record = (u64, Vec<Change>);

/// The pair of log files.
pub struct Wal {
    files: [File; 2],
    /// Bytes in each file.
    bytes: [u64; 2],
    /// Newest revision in each file (0: none).
    newest: [u64; 2],
    active: usize,
}

/// Consecutive `records` (in revision order) merged into batches of about `max_changes` changes:
/// each batch is one list sorted by key, each key once with its last change, labelled with its
/// last revision. Replay needs only the last finalized state, not every revision on the way, and
/// one merge of a batch into the trie copies each branch it touches once.
pub fn replay_batches(records: Vec<Record>, max_changes: usize) -> Vec<Record> {
    let mut batches: Vec<Record> = Vec::new();
    for (revision, changes) in records {
        match batches.last_mut() {
            Some((last, batch)) if batch.len() + changes.len() <= max_changes => {
                *last = revision;
                batch.extend(changes);
            }
            _ => batches.push((revision, changes)),
        }
    }
    for (_, batch) in &mut batches {
        // A stable sort keeps each key's changes in revision order; keep the last of each run.
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        batch.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
    }
    batches
}

/// Opens one log file, reads its intact records (those at or below `covered` without their
/// changes) and cuts a torn tail.
fn open_file(dir: &Path, name: &str, covered: u64) -> Result<(File, Vec<Record>, u64), Error> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(name))
        .map_err(io("open state log"))?;
    let mut records = Vec::new();
    let mut good_bytes = 0u64;
    {
        let mut reader = BufReader::new(&mut file);
        while let Some((rev, changes, len)) = read_record(&mut reader, covered) {
            good_bytes += len;
            records.push((rev, changes));
        }
    }
    file.set_len(good_bytes)
        .map_err(io("truncate torn state log tail"))?;
    file.seek(SeekFrom::End(0)).map_err(io("seek state log"))?;
    Ok((file, records, good_bytes))
}

impl Wal {
    /// Opens (creating if needed) both files in `dir`; returns the records newer than
    /// `checkpoint`, in revision order.
    pub fn open(dir: &Path, checkpoint: u64) -> Result<(Self, Vec<Record>), Error> {
        let (f0, r0, b0) = open_file(dir, WAL_FILES[0], checkpoint)?;
        let (f1, r1, b1) = open_file(dir, WAL_FILES[1], checkpoint)?;
        let newest = |r: &[Record]| r.iter().map(|(rev, _)| *rev).max().unwrap_or(0);
        let newest = [newest(&r0), newest(&r1)];
        let active = usize::from(newest[1] > newest[0]);
        let mut records: Vec<Record> = r0
            .into_iter()
            .chain(r1)
            .filter(|(rev, _)| *rev > checkpoint)
            .collect();
        records.sort_by_key(|(rev, _)| *rev);
        records.dedup_by_key(|(rev, _)| *rev);
        let wal = Self {
            files: [f0, f1],
            bytes: [b0, b1],
            newest,
            active,
        };
        Ok((wal, records))
    }

    /// Bytes in the active file.
    pub fn active_bytes(&self) -> u64 {
        self.bytes[self.active]
    }

    /// Appends one record per finalized revision, in order, to the active file, then syncs it;
    /// returns the bytes appended.
    pub fn append(&mut self, revisions: &[(u64, &[Change])]) -> Result<u64, Error> {
        let active = self.active;
        let mut writer = BufWriter::new(&mut self.files[active]);
        let mut appended = 0;
        for (revision, changes) in revisions {
            let record = encode_record(*revision, changes);
            writer.write_all(&record).map_err(io("append state log"))?;
            appended += record.len() as u64;
            self.newest[active] = self.newest[active].max(*revision);
        }
        writer.flush().map_err(io("flush state log"))?;
        drop(writer);
        self.bytes[active] += appended;
        self.files[active]
            .sync_data()
            .map_err(io("fsync state log"))?;
        Ok(appended)
    }

    /// Switches files once the active one holds `threshold` bytes and `checkpoint` covers the other.
    pub fn switch_if_due(&mut self, threshold: u64, checkpoint: u64) -> Result<(), Error> {
        if self.active_bytes() >= threshold {
            self.switch_if_covered(checkpoint)?;
        }
        Ok(())
    }

    /// Makes the other file the active one, emptied, if `checkpoint` covers all it holds.
    /// The emptying need not be durable: records it would lose are all covered anyway.
    pub fn switch_if_covered(&mut self, checkpoint: u64) -> Result<bool, Error> {
        let other = 1 - self.active;
        if self.newest[other] > checkpoint {
            return Ok(false);
        }
        let file = &mut self.files[other];
        file.set_len(0).map_err(io("empty state log"))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io("seek state log"))?;
        self.bytes[other] = 0;
        self.newest[other] = 0;
        self.active = other;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8]) -> Vec<Change> {
        vec![(Bytes::from_slice(key), Some(Bytes::from_slice(b"v")))]
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path(), 0).expect("open");
            wal.append(&[(1, &put(b"a")[..])]).expect("append");
            wal.append(&[(2, &put(b"b")[..])]).expect("append");
        }
        let path = dir.path().join(WAL_FILES[0]);
        let len = std::fs::metadata(&path).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 3)
            .expect("cut");
        let (_, records) = Wal::open(dir.path(), 0).expect("reopen");
        assert_eq!(records, vec![(1, put(b"a"))]);
    }

    #[test]
    fn switching_keeps_uncovered_records_and_replay_skips_covered_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path(), 0).expect("open");
            wal.append(&[(1, &put(b"a")[..]), (2, &put(b"b")[..])])
                .expect("append");
            // The other file is empty: switching is always allowed.
            assert!(wal.switch_if_covered(0).expect("switch"));
            wal.append(&[(3, &put(b"c")[..])]).expect("append");
            // Revisions 1 and 2 are in the other file and not covered by a checkpoint at 1.
            assert!(!wal.switch_if_covered(1).expect("no switch"));
            assert!(wal.switch_if_covered(2).expect("switch"));
            wal.append(&[(4, &put(b"d")[..])]).expect("append");
        }
        let (_, records) = Wal::open(dir.path(), 2).expect("reopen");
        let revisions: Vec<u64> = records.iter().map(|(rev, _)| *rev).collect();
        assert_eq!(revisions, vec![3, 4]);
    }

    fn change(key: &[u8], value: Option<&[u8]>) -> Change {
        (Bytes::from_slice(key), value.map(Bytes::from_slice))
    }

    #[test]
    fn replay_batches_keep_each_keys_last_change_in_key_order() {
        let records = vec![
            (1, vec![change(b"b", Some(b"1")), change(b"d", Some(b"1"))]),
            (2, vec![change(b"a", Some(b"2")), change(b"b", None)]),
            (3, vec![change(b"b", Some(b"3")), change(b"d", None)]),
            (4, vec![]),
            (5, vec![change(b"c", Some(b"5")), change(b"e", Some(b"5"))]),
        ];
        let expected = vec![
            change(b"a", Some(b"2")),
            change(b"b", Some(b"3")),
            change(b"d", None),
        ];
        // Six changes fit in a batch: records 1 to 4 merge, record 5 would make eight.
        let batches = replay_batches(records.clone(), 6);
        assert_eq!(batches, vec![(4, expected), (5, records[4].1.clone())]);
        // Unbounded, everything merges into one.
        let all = replay_batches(records, usize::MAX);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, 5);
        let keys: Vec<&[u8]> = all[0].1.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"a"[..], b"b", b"c", b"d", b"e"]);
        assert_eq!(all[0].1[1], change(b"b", Some(b"3")));
        assert_eq!(all[0].1[3], change(b"d", None));
    }

    #[test]
    fn a_record_bigger_than_a_batch_is_a_batch_of_its_own() {
        let big: Vec<Change> = (0u8..5).map(|k| change(&[k], Some(b"v"))).collect();
        let records = vec![(1, put(b"z")), (2, big.clone()), (3, put(b"y"))];
        let batches = replay_batches(records, 2);
        assert_eq!(batches, vec![(1, put(b"z")), (2, big), (3, put(b"y"))]);
    }
}
