//! The block log: every block this node proposed or received, and every finalization.
//!
//! One append-only file of checksummed frames ([`peregrine_state::frame`]). A frame's payload is
//! either `[0][block]` (a block, stored before it is voted on, so a restarted validator can still
//! build on what it voted for) or `[1][height][hash][state root][receipts]` (a finalization, with
//! the receipts and post-state commitment of its execution). Both are synced before the call
//! returns. Memory holds only indexes (hash to offset, height to finalization, transaction to
//! position); block bodies and receipts are read back from the file on demand.
//!
//! The finalization record of a height is written *before* the state database finalizes that
//! height, so after a crash the log is never behind the state: the node re-executes whatever the
//! log has finalized beyond the state (see `Chain::open`).

use peregrine_state::frame;
use peregrine_types::codec::{put_list, Reader};
use peregrine_types::{Block, Decode, Encode, Hash, Receipt};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const TAG_BLOCK: u8 = 0;
const TAG_FINALIZED: u8 = 1;
/// Largest frame accepted on replay: a maximal block, or a maximal block's receipts.
const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Why the block log failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("block log: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The failure.
        source: std::io::Error,
    },
    /// A record that passed its checksum does not decode, or contradicts the log.
    #[error("block log is corrupt: {0}")]
    Corrupt(String),
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// One finalized height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalized {
    /// The block hash.
    pub hash: Hash,
    /// The state commitment after executing it.
    pub state_root: Hash,
    /// Offset of the finalization frame.
    offset: u64,
}

/// The block log and its in-memory indexes.
pub struct BlockStore {
    file: File,
    len: u64,
    blocks: HashMap<Hash, u64>,
    finalized: Vec<Finalized>,
    txs: HashMap<Hash, (u64, u32)>,
}

impl BlockStore {
    /// Opens the log at `path` and replays it. A new log is empty: the caller records genesis as
    /// the finalization of height 0.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("open"))?;
        let mut store = Self {
            file,
            len: 0,
            blocks: HashMap::new(),
            finalized: Vec::new(),
            txs: HashMap::new(),
        };
        store.replay()?;
        Ok(store)
    }

    fn replay(&mut self) -> Result<(), StoreError> {
        let mut reader = BufReader::new(self.file.try_clone().map_err(io("clone handle"))?);
        let mut offset = 0u64;
        while let Some(payload) = frame::read(&mut reader, MAX_FRAME_BYTES) {
            self.index(offset, &payload)?;
            offset += frame::FRAME_OVERHEAD + payload.len() as u64;
        }
        // Cut a torn tail: it was never acknowledged.
        self.file
            .set_len(offset)
            .map_err(io("truncate torn tail"))?;
        self.file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        self.len = offset;
        Ok(())
    }

    fn index(&mut self, offset: u64, payload: &[u8]) -> Result<(), StoreError> {
        match payload.first() {
            Some(&TAG_BLOCK) => {
                let block = Block::from_bytes(&payload[1..])
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                self.blocks.insert(block.hash(), offset);
            }
            Some(&TAG_FINALIZED) => {
                let (height, entry, _) = decode_finalized(&payload[1..])?;
                if height != self.finalized.len() as u64 {
                    return Err(StoreError::Corrupt(format!(
                        "finalization of height {height} out of order"
                    )));
                }
                self.index_finalized(Finalized { offset, ..entry }, height)?;
            }
            _ => return Err(StoreError::Corrupt("unknown record tag".into())),
        }
        Ok(())
    }

    fn index_finalized(&mut self, entry: Finalized, height: u64) -> Result<(), StoreError> {
        let block = self.block(&entry.hash)?.ok_or_else(|| {
            StoreError::Corrupt(format!("finalized block {} was never stored", entry.hash))
        })?;
        for (index, tx) in block.txs.iter().enumerate() {
            self.txs.insert(tx.hash(), (height, index as u32));
        }
        self.finalized.push(entry);
        Ok(())
    }

    fn append(&mut self, payload: &[u8]) -> Result<u64, StoreError> {
        let offset = self.len;
        let framed = frame::encode(payload);
        self.file.write_all(&framed).map_err(io("append"))?;
        self.file.sync_data().map_err(io("fsync"))?;
        self.len += framed.len() as u64;
        Ok(offset)
    }

    fn read_payload(&self, offset: u64) -> Result<Vec<u8>, StoreError> {
        let mut head = [0u8; frame::FRAME_OVERHEAD as usize];
        self.file
            .read_exact_at(&mut head, offset)
            .map_err(io("read frame"))?;
        let mut framed = head.to_vec();
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        framed.resize(head.len() + len as usize, 0);
        self.file
            .read_exact_at(&mut framed[head.len()..], offset + frame::FRAME_OVERHEAD)
            .map_err(io("read frame"))?;
        frame::read(&mut &framed[..], MAX_FRAME_BYTES)
            .ok_or_else(|| StoreError::Corrupt(format!("frame at {offset} fails its checksum")))
    }

    /// Stores a block (idempotent) and syncs.
    pub fn put_block(&mut self, block: &Block) -> Result<(), StoreError> {
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return Ok(());
        }
        let mut payload = vec![TAG_BLOCK];
        block.encode_to(&mut payload);
        let offset = self.append(&payload)?;
        self.blocks.insert(hash, offset);
        Ok(())
    }

    /// A stored block by hash.
    pub fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        let Some(&offset) = self.blocks.get(hash) else {
            return Ok(None);
        };
        let payload = self.read_payload(offset)?;
        Block::from_bytes(&payload[1..])
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Records the finalization of the next height and syncs.
    pub fn put_finalized(
        &mut self,
        block: &Block,
        state_root: Hash,
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        let height = block.header.height;
        if height != self.finalized.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "finalizing height {height} out of order"
            )));
        }
        self.put_block(block)?;
        let mut payload = vec![TAG_FINALIZED];
        payload.extend_from_slice(&height.to_le_bytes());
        block.hash().encode_to(&mut payload);
        state_root.encode_to(&mut payload);
        put_list(&mut payload, receipts);
        let offset = self.append(&payload)?;
        self.index_finalized(
            Finalized {
                hash: block.hash(),
                state_root,
                offset,
            },
            height,
        )
    }

    /// The highest finalized height, or `None` for a new log.
    pub fn finalized_height(&self) -> Option<u64> {
        (self.finalized.len() as u64).checked_sub(1)
    }

    /// The finalization of `height`.
    pub fn finalized(&self, height: u64) -> Option<Finalized> {
        self.finalized.get(usize::try_from(height).ok()?).copied()
    }

    /// The receipts of the finalized block at `height`.
    pub fn receipts(&self, height: u64) -> Result<Vec<Receipt>, StoreError> {
        let Some(entry) = self.finalized(height) else {
            return Ok(Vec::new());
        };
        let payload = self.read_payload(entry.offset)?;
        Ok(decode_finalized(&payload[1..])?.2)
    }

    /// Where an included transaction is: its block height and index.
    pub fn locate_tx(&self, hash: &Hash) -> Option<(u64, u32)> {
        self.txs.get(hash).copied()
    }
}

fn decode_finalized(bytes: &[u8]) -> Result<(u64, Finalized, Vec<Receipt>), StoreError> {
    let corrupt = |e: peregrine_types::DecodeError| StoreError::Corrupt(e.to_string());
    let mut reader = Reader::new(bytes);
    let height = reader.u64().map_err(corrupt)?;
    let hash = Hash::decode_from(&mut reader).map_err(corrupt)?;
    let state_root = Hash::decode_from(&mut reader).map_err(corrupt)?;
    let receipts = reader
        .list("receipts", peregrine_types::MAX_BLOCK_TXS)
        .map_err(corrupt)?;
    reader.finish().map_err(corrupt)?;
    Ok((
        height,
        Finalized {
            hash,
            state_root,
            offset: 0,
        },
        receipts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_types::{PublicKey, TxStatus};

    fn block(height: u64, parent: Hash) -> Block {
        Block::new(
            height,
            parent,
            height,
            PublicKey::default(),
            Hash::default(),
            vec![],
        )
    }

    #[test]
    fn reopen_restores_indexes_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blocks.log");
        let genesis = block(0, Hash::default());
        let one = block(1, genesis.hash());
        let receipt = Receipt {
            tx_hash: Hash([5; 32]),
            height: 1,
            index: 0,
            status: TxStatus::Success,
            fee_paid: 1,
            gas_used: 2,
            output: b"returned".to_vec(),
            events: vec![peregrine_types::LogEvent {
                contract: peregrine_types::Address([3; 20]),
                topic: b"Transfer".to_vec(),
                data: vec![4; 56],
            }],
        };
        {
            let mut store = BlockStore::open(&path).expect("open");
            assert_eq!(store.finalized_height(), None);
            store
                .put_finalized(&genesis, Hash([1; 32]), &[])
                .expect("genesis");
            store
                .put_finalized(&one, Hash([2; 32]), std::slice::from_ref(&receipt))
                .expect("one");
            store.put_block(&block(2, one.hash())).expect("pending");
            assert!(matches!(
                store.put_finalized(&block(5, one.hash()), Hash::default(), &[]),
                Err(StoreError::Corrupt(_))
            ));
        }
        let len = std::fs::metadata(&path).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 1)
            .expect("tear");
        let store = BlockStore::open(&path).expect("reopen");
        assert_eq!(store.finalized_height(), Some(1));
        assert_eq!(
            store.finalized(1).map(|f| f.state_root),
            Some(Hash([2; 32]))
        );
        assert_eq!(store.receipts(1).expect("receipts"), vec![receipt]);
        assert_eq!(store.block(&one.hash()).expect("read"), Some(one));
        assert_eq!(
            store
                .block(&block(2, Hash::default()).hash())
                .expect("read"),
            None,
            "torn record is gone"
        );
    }
}
