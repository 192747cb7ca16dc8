//! The binary submission path: a length-prefixed stream of raw transactions over TCP.
//!
//! JSON-RPC costs hex, JSON and HTTP framing on every transaction; at tens of thousands of
//! transactions a second that is more work than admission itself. This path carries the
//! canonical bytes as they are, and answers every transaction, in order, on the same connection.
//!
//! ```text
//! client -> node, per transaction:  u32 LE length | length bytes (one encoded SignedTransaction)
//! node -> client, per transaction:  u8 status
//!     status 0 (admitted): 32-byte transaction hash
//!     status 1 (rejected): u8 n | n bytes of ASCII reason code (as in JSON-RPC `data.reason`)
//! ```
//! A length above [`MAX_TX_BYTES`] breaks the framing: the node answers it `oversized` and closes
//! the connection. A client may write ahead of the answers (pipelining); the node reads as fast
//! as admission accepts, so a client that never reads its answers is eventually stalled by TCP.
//! The reason `overloaded` means the node shed the transaction unchecked: send it again later.

use peregrine_types::{Hash, MAX_TX_BYTES};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The default address of the binary submission listener of `peregrine dev`.
pub const DEFAULT_INGEST_ADDR: &str = "127.0.0.1:8647";

/// Status byte of an admitted transaction.
pub const STATUS_ADMITTED: u8 = 0;
/// Status byte of a rejected transaction.
pub const STATUS_REJECTED: u8 = 1;

/// The node's answer to one transaction: its hash, or the rejection's reason code.
pub type Answer = Result<Hash, String>;

/// Reads one request frame. `Ok(None)` at a clean end of stream; `Err` of kind `InvalidData`
/// when the announced length is out of bounds.
pub fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_TX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_TX_BYTES}"),
        ));
    }
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

/// Writes one request frame.
pub fn write_frame(writer: &mut impl Write, tx: &[u8]) -> io::Result<()> {
    let len = u32::try_from(tx.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(tx)
}

/// Writes one answer.
pub fn write_answer(writer: &mut impl Write, answer: &Result<Hash, &str>) -> io::Result<()> {
    match answer {
        Ok(hash) => {
            writer.write_all(&[STATUS_ADMITTED])?;
            writer.write_all(&hash.0)
        }
        Err(reason) => {
            let reason = &reason.as_bytes()[..reason.len().min(255)];
            writer.write_all(&[STATUS_REJECTED, reason.len() as u8])?;
            writer.write_all(reason)
        }
    }
}

/// Reads one answer.
pub fn read_answer(reader: &mut impl Read) -> io::Result<Answer> {
    let mut status = [0u8; 1];
    reader.read_exact(&mut status)?;
    match status[0] {
        STATUS_ADMITTED => {
            let mut hash = [0u8; 32];
            reader.read_exact(&mut hash)?;
            Ok(Ok(Hash(hash)))
        }
        STATUS_REJECTED => {
            let mut len = [0u8; 1];
            reader.read_exact(&mut len)?;
            let mut reason = vec![0u8; len[0] as usize];
            reader.read_exact(&mut reason)?;
            Ok(Err(String::from_utf8_lossy(&reason).into_owned()))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown answer status {other}"),
        )),
    }
}

/// The writing half of a connection.
pub struct IngestSender {
    writer: BufWriter<TcpStream>,
}

/// The reading half of a connection.
pub struct IngestReceiver {
    reader: BufReader<TcpStream>,
}

/// Connects to a node's binary submission listener; the halves may live on different threads.
pub fn connect(addr: SocketAddr) -> io::Result<(IngestSender, IngestReceiver)> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let reader = BufReader::with_capacity(1 << 16, stream.try_clone()?);
    let writer = BufWriter::with_capacity(1 << 16, stream);
    Ok((IngestSender { writer }, IngestReceiver { reader }))
}

impl IngestSender {
    /// Queues one transaction; call [`IngestSender::flush`] to send what is queued.
    pub fn send(&mut self, tx: &[u8]) -> io::Result<()> {
        write_frame(&mut self.writer, tx)
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl IngestReceiver {
    /// The next answer, in submission order.
    pub fn recv(&mut self) -> io::Result<Answer> {
        read_answer(&mut self.reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_answers_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abc").expect("write");
        write_frame(&mut wire, b"").expect("write");
        let mut reader = &wire[..];
        assert_eq!(
            read_frame(&mut reader).expect("read"),
            Some(b"abc".to_vec())
        );
        assert_eq!(read_frame(&mut reader).expect("read"), Some(vec![]));
        assert_eq!(read_frame(&mut reader).expect("end"), None);

        let mut wire = Vec::new();
        write_answer(&mut wire, &Ok(Hash([7; 32]))).expect("write");
        write_answer(&mut wire, &Err("bad_signature")).expect("write");
        let mut reader = &wire[..];
        assert_eq!(read_answer(&mut reader).expect("read"), Ok(Hash([7; 32])));
        assert_eq!(
            read_answer(&mut reader).expect("read"),
            Err("bad_signature".to_string())
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_before_reading_it() {
        let wire = (MAX_TX_BYTES as u32 + 1).to_le_bytes();
        let err = read_frame(&mut &wire[..]).expect_err("oversized");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let torn = [3u8, 0, 0, 0, 1];
        assert!(
            read_frame(&mut &torn[..]).is_err(),
            "a torn frame is an error"
        );
    }
}
