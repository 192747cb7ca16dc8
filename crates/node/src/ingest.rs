//! Serves the binary submission path (`peregrine_rpc::ingest`) into the admission pipeline.
//!
//! One thread accepts connections. Each connection has a reader thread, which gathers the frames
//! already received (up to [`BATCH_TXS`]) into one submission, and a writer thread, which waits
//! for each submission's answers and writes them in order. Between the two, at most
//! [`PENDING_BATCHES`] submissions wait: a client that writes faster than admission answers is
//! slowed by TCP, and one that never reads stalls only itself. Shed transactions are answered
//! `overloaded`.

use crate::chain::Chain;
use parking_lot::Mutex;
use peregrine_mempool::Pending;
use peregrine_rpc::ingest::{read_frame, write_answer};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{debug, warn};

/// Connections served at once; more are closed on accept.
pub const MAX_INGEST_CONNECTIONS: usize = 64;
/// Most transactions gathered into one submission: a few admission units, one answer flush.
pub const BATCH_TXS: usize = 1_024;
/// Submissions of one connection waiting for their answers.
pub const PENDING_BATCHES: usize = 64;
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

enum Reply {
    Batch(Pending),
    Oversized,
}

/// Open connections by peer address, so stopping can close them.
type Open = Mutex<Vec<(SocketAddr, TcpStream)>>;

/// The running listener. Dropping it closes the listener and every connection.
pub struct IngestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<Open>,
    accept: Option<JoinHandle<()>>,
}

impl IngestServer {
    /// Binds `addr` and serves submissions into `chain`'s admission pipeline.
    pub fn start(addr: SocketAddr, chain: Arc<Chain>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Open> = Arc::default();
        let (thread_stop, thread_open) = (stop.clone(), open.clone());
        let accept = std::thread::Builder::new()
            .name("ingest-accept".into())
            .spawn(move || accept_loop(&listener, &chain, &thread_stop, &thread_open))?;
        Ok(Self {
            addr,
            stop,
            open,
            accept: Some(accept),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for (_, stream) in self.open.lock().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, chain: &Arc<Chain>, stop: &AtomicBool, open: &Arc<Open>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if active.load(Ordering::Acquire) >= MAX_INGEST_CONNECTIONS {
                    warn!(%peer, "ingest connection refused: too many connections");
                    continue;
                }
                if let Err(err) = serve(stream, chain.clone(), active.clone(), open) {
                    warn!(%peer, %err, "ingest connection failed to start");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(err) => {
                warn!(%err, "ingest accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn serve(
    stream: TcpStream,
    chain: Arc<Chain>,
    active: Arc<AtomicUsize>,
    open: &Arc<Open>,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    open.lock().push((peer, stream.try_clone()?));
    let open = open.clone();
    let (replies, pending) = sync_channel::<Reply>(PENDING_BATCHES);
    let writer_stream = stream.try_clone()?;
    active.fetch_add(1, Ordering::AcqRel);
    std::thread::Builder::new()
        .name("ingest-write".into())
        .spawn(move || {
            if let Err(err) = write_answers(writer_stream, &pending) {
                debug!(%err, "ingest connection closed while answering");
            }
            open.lock().retain(|(p, _)| *p != peer);
            active.fetch_sub(1, Ordering::AcqRel);
        })?;
    std::thread::Builder::new()
        .name("ingest-read".into())
        .spawn(move || read_submissions(stream, &chain, &replies))?;
    Ok(())
}

/// Gathers the frames already received into submissions until the stream ends or breaks.
fn read_submissions(
    stream: TcpStream,
    chain: &Chain,
    replies: &std::sync::mpsc::SyncSender<Reply>,
) {
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    loop {
        let mut batch = Vec::new();
        let mut end = None;
        while batch.len() < BATCH_TXS {
            match read_frame(&mut reader) {
                Ok(Some(tx)) => batch.push(tx),
                Ok(None) => end = Some(None),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    end = Some(Some(Reply::Oversized))
                }
                Err(_) => end = Some(None),
            }
            if end.is_some() || reader.buffer().is_empty() {
                break;
            }
        }
        if !batch.is_empty()
            && replies
                .send(Reply::Batch(chain.admission().submit(batch)))
                .is_err()
        {
            return;
        }
        if let Some(last) = end {
            if let Some(reply) = last {
                let _ = replies.send(reply);
            }
            return;
        }
    }
}

fn write_answers(stream: TcpStream, pending: &Receiver<Reply>) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(1 << 16, stream);
    for reply in pending {
        match reply {
            Reply::Batch(batch) => {
                for result in batch.wait() {
                    let answer = result.as_ref().map(|h| *h).map_err(|r| r.code());
                    write_answer(&mut writer, &answer)?;
                }
            }
            Reply::Oversized => {
                write_answer(&mut writer, &Err("oversized"))?;
                writer.flush()?;
                return writer.get_ref().shutdown(Shutdown::Both);
            }
        }
        writer.flush()?;
    }
    writer.flush()
}
