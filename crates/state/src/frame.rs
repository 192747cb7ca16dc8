//! Checksummed, length-prefixed records for append-only files.
//!
//! A frame is `[len u32 LE][blake3(payload): 32][payload]`. A reader stops at the first frame that
//! is truncated, too long or fails its checksum: in an append-only file that can only be a torn
//! final write, which was never acknowledged, so the caller cuts the file there.

use std::io::Read;

/// Bytes of framing before each payload.
pub const FRAME_OVERHEAD: u64 = 36;

/// Frames `payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frames are bounded far below 4 GiB");
    let mut frame = Vec::with_capacity(payload.len() + FRAME_OVERHEAD as usize);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(blake3::hash(payload).as_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads the next intact frame's payload, or `None` at the end or at a damaged frame.
pub fn read(reader: &mut impl Read, max_len: u32) -> Option<Vec<u8>> {
    let mut head = [0u8; FRAME_OVERHEAD as usize];
    reader.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len > max_len {
        return None;
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).ok()?;
    (blake3::hash(&payload).as_bytes() == &head[4..]).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let frame = encode(b"hello");
        assert_eq!(read(&mut &frame[..], 100), Some(b"hello".to_vec()));
        assert_eq!(read(&mut &frame[..frame.len() - 1], 100), None);
        assert_eq!(read(&mut &frame[..], 4), None);
        let mut flipped = frame.clone();
        flipped[40] ^= 1;
        assert_eq!(read(&mut &flipped[..], 100), None);
    }
}
