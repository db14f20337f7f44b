//! Sockets: listening, dialing, the handshake, and the reader and writer of a connection.
//!
//! Until the handshake accepts a peer, its bytes go through a decoder capped at
//! [`HANDSHAKE_MAX_FRAME`] and reach only the handshake parser; a timeout bounds how long a silent
//! peer may hold a socket. A peer that fails is counted and disconnected; the listener goes on.

use crate::queue::{LinkQueue, Outgoing};
use crate::{Cmd, LinkTx, Shared, StartError};
use bytes::{Bytes, BytesMut};
use partisan_core::frame::{encode_message_header, Decoder, Frame, FrameError, NONCE_LEN};
use partisan_core::handshake::{ClientHandshake, HandshakeError, ServerHandshake, ServerStep};
use partisan_core::membership::LinkId;
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

/// Handshake frames are small; anything larger before authentication is hostile.
const HANDSHAKE_MAX_FRAME: usize = 4096;
/// Payloads at least this large are written from their own buffer instead of being copied into
/// the batch buffer.
const COPY_LIMIT: usize = 16 * 1024;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Listen { addr, source };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    // A peer that vanishes without a FIN or RST (power loss, cable) is declared dead by the
    // kernel after ~25 s of silence instead of the default two hours.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(10))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

enum ReadError {
    Closed,
    Io(std::io::Error),
    Frame(FrameError),
}

/// Reads until one whole frame is buffered.
async fn read_frame(r: &mut OwnedReadHalf, buf: &mut BytesMut, dec: &mut Decoder) -> Result<Frame, ReadError> {
    loop {
        if let Some(frame) = dec.decode(buf).map_err(ReadError::Frame)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(buf).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

async fn write_frame(w: &mut OwnedWriteHalf, frame: &Frame) -> std::io::Result<()> {
    w.write_all(&frame.to_bytes()).await
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cmds: UnboundedSender<Cmd>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_inbound(stream, peer, shared.clone(), cmds.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_inbound(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, cmds: UnboundedSender<Cmd>) {
    tune(&stream);
    let (mut r, mut w) = stream.into_split();
    let mut buf = BytesMut::with_capacity(8192);
    let mut dec = Decoder::new(HANDSHAKE_MAX_FRAME);
    let mut hs = ServerHandshake::new(&shared.name, &shared.cfg.cookie, nonce());
    let handshake = async {
        loop {
            let frame = read_frame(&mut r, &mut buf, &mut dec).await?;
            match hs.on_frame(frame, |c, i| shared.channels.serves(c, i)) {
                Ok(ServerStep::Reply(f)) => write_frame(&mut w, &f).await.map_err(ReadError::Io)?,
                Ok(ServerStep::Accepted(hello)) => return Ok(Ok(hello)),
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    let hello = match tokio::time::timeout(shared.cfg.handshake_timeout, handshake).await {
        Ok(Ok(Ok(hello))) => hello,
        Ok(Ok(Err(e))) => {
            refuse(&shared, &mut w, peer, e).await;
            return;
        }
        Ok(Err(ReadError::Frame(e))) => {
            shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, error = %e, "garbage before authentication; connection closed");
            return;
        }
        Ok(Err(_)) => return, // closed or reset during the handshake
        Err(_) => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, "handshake timed out; connection closed");
            return;
        }
    };
    if shared.is_blocked(&hello.node) {
        debug!(%peer, node = %hello.node, "inbound connection from a partitioned node closed");
        return;
    }
    debug!(%peer, node = %hello.node, channel = %hello.channel, conn = hello.conn_index, "inbound connection accepted");
    dec = Decoder::new(shared.cfg.max_frame_size);
    // Keep the write half open: dropping it would half-close the socket and the dialer would
    // take that for a dead link.
    let _w = w;
    read_loop(&mut r, &mut buf, &mut dec, &hello.node, &shared, &cmds).await;
}

async fn refuse(shared: &Shared, w: &mut OwnedWriteHalf, peer: SocketAddr, e: HandshakeError) {
    shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
    warn!(%peer, error = %e, "handshake refused; connection closed");
    if let Some(f) = e.refusal() {
        let _ = write_frame(w, &f).await;
    }
    let _ = w.shutdown().await;
}

/// Dispatches frames from an authenticated peer until the connection ends.
async fn read_loop(
    r: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    dec: &mut Decoder,
    from: &str,
    shared: &Shared,
    cmds: &UnboundedSender<Cmd>,
) -> Option<std::io::Error> {
    loop {
        match read_frame(r, buf, dec).await {
            Ok(Frame::Message { dest, payload }) => {
                shared.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                shared.deliver(from, &dest, payload);
            }
            Ok(Frame::Relay { origin, id, hops, target, dest, payload }) => {
                shared.relay(from, crate::Relayed { origin, id, hops, target, dest, payload });
            }
            Ok(Frame::Control { body }) => {
                let _ = cmds.send(Cmd::Control { from: from.to_owned(), body });
            }
            Ok(Frame::Broadcast { body }) => {
                let _ = cmds.send(Cmd::Broadcast { from: from.to_owned(), body });
            }
            Ok(Frame::Ping { .. } | Frame::Pong { .. }) => {}
            Ok(other) => {
                shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                warn!(from, ?other, "handshake frame after authentication; connection closed");
                return None;
            }
            Err(ReadError::Closed) => return None,
            Err(ReadError::Io(e)) => return Some(e),
            Err(ReadError::Frame(e)) => {
                shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                warn!(from, error = %e, "bad frame; connection closed");
                return None;
            }
        }
    }
}

/// Dials one link. Reports `LinkUp` with the registered queue, or `LinkDown`.
pub(crate) async fn dial(link: LinkId, addrs: Vec<SocketAddr>, conn_id: u64, shared: Arc<Shared>, cmds: UnboundedSender<Cmd>) {
    let addrs = if shared.is_blocked(&link.node) { vec![] } else { addrs };
    for addr in addrs {
        match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => match client_handshake(stream, &link, &shared).await {
                Ok((r, w, buf)) => {
                    shared.stats.connections_dialed.fetch_add(1, Ordering::Relaxed);
                    start_link(link, conn_id, r, w, buf, shared, cmds);
                    return;
                }
                Err(e) => warn!(node = %link.node, %addr, error = %e, "handshake failed"),
            },
            Ok(Err(e)) => debug!(node = %link.node, %addr, error = %e, "connect failed"),
            Err(_) => debug!(node = %link.node, %addr, "connect timed out"),
        }
    }
    let _ = cmds.send(Cmd::LinkDown { link, conn_id });
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("expected node {expected} but {found} answered")]
    WrongNode { expected: String, found: String },
    #[error("connection closed, reset or timed out during the handshake")]
    Io,
    #[error("bad frame during the handshake: {0}")]
    Frame(FrameError),
}

async fn client_handshake(stream: TcpStream, link: &LinkId, shared: &Shared) -> Result<(OwnedReadHalf, OwnedWriteHalf, BytesMut), DialError> {
    tune(&stream);
    let (mut r, mut w) = stream.into_split();
    let channel = &shared.channels.get(link.channel).name;
    let (hs, hello) = ClientHandshake::start(&shared.name, channel, link.conn, &shared.cfg.cookie, nonce());
    let mut buf = BytesMut::with_capacity(8192);
    let exchange = async {
        write_frame(&mut w, &hello).await.map_err(|_| DialError::Io)?;
        let mut dec = Decoder::new(HANDSHAKE_MAX_FRAME);
        let frame = read_frame(&mut r, &mut buf, &mut dec).await.map_err(|e| match e {
            ReadError::Frame(f) => DialError::Frame(f),
            _ => DialError::Io,
        })?;
        let (proof, server) = match hs.on_frame(frame) {
            Ok(ok) => ok,
            Err(e) => {
                shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(f) = e.refusal() {
                    let _ = write_frame(&mut w, &f).await;
                }
                return Err(e.into());
            }
        };
        if server != link.node {
            return Err(DialError::WrongNode { expected: link.node.clone(), found: server });
        }
        write_frame(&mut w, &proof).await.map_err(|_| DialError::Io)
    };
    match tokio::time::timeout(shared.cfg.handshake_timeout, exchange).await {
        Ok(Ok(())) => Ok((r, w, buf)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DialError::Io),
    }
}

fn start_link(link: LinkId, conn_id: u64, mut r: OwnedReadHalf, w: OwnedWriteHalf, mut buf: BytesMut, shared: Arc<Shared>, cmds: UnboundedSender<Cmd>) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(w.as_ref());
    let queue = Arc::new(LinkQueue::new(shared.cfg.max_queue_bytes, shared.stats.replaced_monotonic.clone(), fd));
    let reader = {
        let (link, shared, cmds) = (link.clone(), shared.clone(), cmds.clone());
        tokio::spawn(async move {
            // Reports the link down however this task ends: EOF, error, abort or panic.
            let _down = LinkDownOnDrop { link: link.clone(), conn_id, cmds: cmds.clone() };
            // The peer sends nothing on a link it accepted but may (pings); EOF means it is gone.
            let mut dec = Decoder::new(shared.cfg.max_frame_size);
            if let Some(e) = read_loop(&mut r, &mut buf, &mut dec, &link.node, &shared, &cmds).await {
                debug!(node = %link.node, error = %e, "link read failed");
            }
        })
    };
    tokio::spawn(write_loop(link.clone(), conn_id, w, queue.clone(), reader.abort_handle(), cmds.clone()));
    let _ = cmds.send(Cmd::LinkUp { link, tx: LinkTx { conn_id, queue } });
}

struct LinkDownOnDrop {
    link: LinkId,
    conn_id: u64,
    cmds: UnboundedSender<Cmd>,
}

impl Drop for LinkDownOnDrop {
    fn drop(&mut self) {
        // A down for a link the driver already replaced or removed is ignored by its conn_id.
        let _ = self.cmds.send(Cmd::LinkDown { link: self.link.clone(), conn_id: self.conn_id });
    }
}

/// Writes batches until the queue is closed (then flushes and closes the socket) or a write fails.
async fn write_loop(link: LinkId, conn_id: u64, mut w: OwnedWriteHalf, queue: Arc<LinkQueue>, reader: tokio::task::AbortHandle, cmds: UnboundedSender<Cmd>) {
    let mut items = Vec::with_capacity(256);
    let mut batch = BytesMut::with_capacity(256 * 1024);
    while queue.take_all(&mut items).await.is_some() {
        let mut released = 0;
        let mut ok = true;
        for item in items.drain(..) {
            released += LinkQueue::wire_len(&item);
            if !ok {
                continue;
            }
            match item {
                Outgoing::Frame(bytes) => batch.extend_from_slice(&bytes),
                Outgoing::Message { dest, payload } => {
                    encode_message_header(&dest, payload.len(), &mut batch);
                    if payload.len() < COPY_LIMIT {
                        batch.extend_from_slice(&payload);
                    } else {
                        ok = write_with(&mut w, &mut batch, &payload).await;
                    }
                }
            }
            if batch.len() >= 256 * 1024 {
                ok = ok && write_all(&mut w, &mut batch).await;
            }
        }
        ok = ok && write_all(&mut w, &mut batch).await;
        queue.release(released);
        if !ok {
            info!(node = %link.node, channel = link.channel, conn = link.conn, "link write failed");
            // Closed before the socket is dropped: no sender may write to its descriptor after.
            queue.close();
            reader.abort();
            let _ = cmds.send(Cmd::LinkDown { link, conn_id });
            return;
        }
    }
    // Closed by the driver (leave, removal): everything queued before the close went out.
    let _ = w.shutdown().await;
    reader.abort();
}

/// Writes the batch and then `payload` with vectored writes (one syscall for both when the
/// socket takes them), and empties the batch.
async fn write_with(w: &mut OwnedWriteHalf, batch: &mut BytesMut, payload: &[u8]) -> bool {
    let (mut head, mut body) = (0, 0);
    while head < batch.len() || body < payload.len() {
        let slices = [std::io::IoSlice::new(&batch[head..]), std::io::IoSlice::new(&payload[body..])];
        match w.write_vectored(&slices).await {
            Ok(0) | Err(_) => return false,
            Ok(mut n) => {
                let from_head = n.min(batch.len() - head);
                head += from_head;
                n -= from_head;
                body += n;
            }
        }
    }
    batch.clear();
    true
}

async fn write_all(w: &mut OwnedWriteHalf, batch: &mut BytesMut) -> bool {
    if batch.is_empty() {
        return true;
    }
    let ok = w.write_all(batch).await.is_ok();
    batch.clear();
    ok
}

pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// A control frame ready for a queue.
pub(crate) fn control_frame(body: Bytes) -> Outgoing {
    Outgoing::Frame(Frame::Control { body }.to_bytes())
}
