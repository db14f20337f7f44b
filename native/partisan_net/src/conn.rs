//! Sockets: listening, dialing, the handshake, and the reader and writer of a connection.
//!
//! Until the handshake accepts a peer, its bytes go through a decoder capped at
//! [`HANDSHAKE_MAX_FRAME`] and reach only the handshake parser; a timeout bounds how long a silent
//! peer may hold a socket, and [`Pending`] bounds how many may do so at once (in all and per
//! source address): a connection beyond the bounds is reset as soon as it is accepted. A peer
//! that fails is counted and disconnected; the listener goes on. Warnings a remote peer can
//! trigger at will are rate-limited ([`crate::LogLimit`]); the counters keep the exact numbers.

use crate::queue::{write_batches, LinkQueue};
use crate::stream::{self, ReadSide, SharedTcp, WriteSide};
use crate::lock::MutexExt;
use crate::routes::LinkTx;
use crate::acks::count_not_delivered;
use crate::queue::Outgoing;
use crate::{Cmd, Cmds, Direction, DropReason, Event, Shared, StartError};
use partisan_core::ack::{Inbound, Verdict};
use partisan_core::ping::{Liveness, PingAction};
use bytes::{BufMut, BytesMut};
use partisan_core::frame::{Decoder, Frame, FrameError, LENGTH_PREFIX, NONCE_LEN};
use partisan_core::handshake::{ClientHandshake, HandshakeError, ServerHandshake};
use partisan_core::overlay::LinkId;
use rand::RngCore;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// Handshake frames are small; anything larger before authentication is hostile.
const HANDSHAKE_MAX_FRAME: usize = 4096;
/// Message payloads at least this large are compressed on a channel with `compression` (below,
/// zstd's frame overhead and the per-message call cost more than they save).
pub const COMPRESS_FROM: usize = 1024;

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

/// Handshakes in progress: at most `max_pending_handshakes` in all and
/// `max_pending_handshakes_per_addr` per source address.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<PendingInner>,
}

#[derive(Debug, Default)]
struct PendingInner {
    total: usize,
    peak: usize,
    per_addr: HashMap<IpAddr, usize>,
}

impl Pending {
    /// Counts one more handshake from `ip`, unless that would exceed a bound.
    fn try_admit(&self, ip: IpAddr, max_total: usize, max_per_addr: usize) -> bool {
        let mut p = self.inner.lock_unpoisoned();
        let from_ip = p.per_addr.get(&ip).copied().unwrap_or(0);
        if p.total >= max_total || from_ip >= max_per_addr {
            return false;
        }
        p.total += 1;
        p.peak = p.peak.max(p.total);
        p.per_addr.insert(ip, from_ip + 1);
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut p = self.inner.lock_unpoisoned();
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.per_addr.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                p.per_addr.remove(&ip);
            }
        }
    }

    /// Handshakes in progress now, and the most there ever were at once.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let p = self.inner.lock_unpoisoned();
        (p.total, p.peak)
    }
}

/// One admitted handshake; releases its place when dropped (however the handshake ends).
struct Permit {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.pending.release(self.ip);
    }
}

/// Why a handshake frame could not be read.
enum ReadError {
    /// Closed, reset or failed.
    Closed,
    Frame(FrameError),
    /// The TLS handshake failed (the peer's certificate, its protocol, or it is not TLS).
    Tls(std::io::Error),
}

/// Reads until one whole handshake frame is buffered. The buffer grows by at most `chunk` per
/// read. (Authenticated frames are read by [`read_loop`].)
///
/// A plain connection's socket is shared (the reader, the writer and the send queue's direct
/// writes), so its reads use tokio's readiness API; a TLS connection reads its own half.
async fn read_frame(socket: &mut ReadSide, buf: &mut BytesMut, dec: &mut Decoder, chunk: usize) -> Result<Frame, ReadError> {
    loop {
        if let Some(frame) = dec.decode(buf).map_err(ReadError::Frame)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < chunk / 16 + 1 {
            buf.reserve(chunk);
        }
        match socket.read_some(buf).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {}
            Err(_) => return Err(ReadError::Closed),
        }
    }
}

/// Read size of authenticated connections.
const READ_CHUNK: usize = 64 * 1024;
/// A reader gives its worker thread back to the runtime after reading this much without a
/// pause (see [`crate::stream::yield_after`]).
const READ_SLICE: usize = 256 * 1024;
/// Read size during the handshake (its frames are small).
const HANDSHAKE_CHUNK: usize = 512;

/// Reads larger than this turn a reader's polling off (see [`Spin`]).
const SPIN_READ_MAX: usize = 4096;

/// Whether a reader that found its socket empty polls it itself for `read_spin` (off by
/// default; 100 µs is a good value) before it waits to be woken.
///
/// Waking a sleeping reader thread is the largest part of a small message's trip here: `perf
/// sched` on a ping-pong showed each one-way trip waking two sleeping threads (the reader, then
/// through `enif_send` the receiving process's scheduler), and a wake-up on an idle vCPU taking
/// 20-25 µs before the thread ran, where Distributed Erlang's scheduler sleeps in the poll set
/// that holds its socket and wakes once. A reader that polls for a while, as the BEAM's
/// schedulers spin before they sleep (`+sbwt`), keeps its CPU awake and takes the next frame
/// without a wake-up (the 10 B round trip's p50 went from 70-120 µs to 55-74 µs; disterl's
/// 70-74 µs). It is off by default because the polling takes CPU that other work on the node may
/// need: with a 1 MiB bulk stream on another channel of the same two nodes, pings polled with
/// 100 µs halved the bulk stream (1.8 vs 3.5 GB/s; their p50 101 vs 185 µs).
///
/// It polls only while small reads (at most [`SPIN_READ_MAX`] bytes) have been coming within
/// twice `read_spin` of the reader finding the socket empty, as in a request-reply exchange. A
/// longer wait turns it off until a wait is short again, so a quiet link sleeps at once; and a
/// stream of large reads never polls: measured, a polling reader took the CPU its own stream's
/// sender needed (64 KiB messages: 1.3-3.4x the CPU per message).
#[derive(Debug)]
pub(crate) struct Spin {
    /// `read_spin`.
    time: std::time::Duration,
    worth_it: bool,
}

impl Spin {
    pub(crate) fn new(time: std::time::Duration) -> Self {
        Spin { time, worth_it: false }
    }
}

/// One non-blocking `recv` straight on the descriptor: tokio's readiness cache learns of new
/// data only from its driver, which a polling reader does not wait for.
fn recv_now(socket: &TcpStream, buf: &mut impl BufMut) -> std::io::Result<usize> {
    let chunk = buf.chunk_mut();
    // SAFETY: the chunk is `len` writable bytes; `recv` initialises the first `n` it reports.
    let uninit = unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(), chunk.len()) };
    let n = socket2::SockRef::from(socket).recv(uninit)?;
    // SAFETY: `recv` filled `n` bytes of the chunk.
    unsafe { buf.advance_mut(n) };
    Ok(n)
}

/// Polls `socket` with [`recv_now`] until data (or an error, or the end of the stream) comes,
/// yielding the CPU to other threads between polls, for at most `limit` from `since`; `None`:
/// nothing came, the caller waits to be woken.
fn poll_recv(socket: &TcpStream, buf: &mut impl BufMut, since: std::time::Instant, limit: std::time::Duration) -> Option<std::io::Result<usize>> {
    while since.elapsed() < limit {
        std::thread::yield_now();
        match recv_now(socket, buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            result => return Some(result),
        }
    }
    None
}

/// [`read_some`], polling the socket for up to `read_spin` first when `spin` says it pays
/// (yielding the CPU to other threads between polls), and learning from how long the data took.
pub(crate) async fn read_some_spinning(socket: &TcpStream, buf: &mut impl BufMut, spin: &mut Spin) -> std::io::Result<usize> {
    // Off (the default): the plain read, with no clock reads on the way.
    if spin.time.is_zero() || !buf.has_remaining_mut() {
        return read_some(socket, buf).await;
    }
    match socket.try_read_buf(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        result => return result,
    }
    let empty_at = std::time::Instant::now();
    if spin.worth_it {
        if let Some(result) = poll_recv(socket, buf, empty_at, spin.time) {
            spin.worth_it = matches!(result, Ok(n) if n <= SPIN_READ_MAX);
            return result;
        }
    }
    let result = read_some(socket, buf).await;
    // Twice the spin: a wait that outlasted a spin by a wake-up's latency would have been
    // caught by the spin had it gone on; a single slow round trip does not turn it off.
    spin.worth_it = empty_at.elapsed() < 2 * spin.time && matches!(result, Ok(n) if n <= SPIN_READ_MAX);
    result
}

/// How long a reader in the middle of a large frame polls for the rest before it waits to be
/// woken (see [`read_rest`]).
const FRAME_REST_SPIN: std::time::Duration = std::time::Duration::from_micros(20);
/// After a poll for the rest of a frame found nothing, this many waits skip the polling.
const FRAME_REST_BACKOFF: u8 = 8;

/// Whether a reader polls for the rest of a large frame (see [`read_rest`]): it does until a
/// poll finds nothing, then skips [`FRAME_REST_BACKOFF`] waits. On loopback or a fast network
/// the rest is nearly always there within the poll; on a slow link (a 100 Mbit/s WAN hands a
/// frame over in 1.5 KB segments ~100 µs apart) polling would cost CPU for nothing, and at most
/// one wait in nine polls.
#[derive(Debug, Default)]
pub(crate) struct RestPoll {
    skip: u8,
}

/// [`read_some`] for the rest of a large frame: polls the socket for up to [`FRAME_REST_SPIN`]
/// first, while that pays ([`RestPoll`]). The sender wrote the frame in one go and loopback (or
/// the NIC) hands it over in pieces, the next one microseconds after the first: a reader that
/// slept between them would be woken once per piece (each wake-up a context switch or two, and
/// on an idle vCPU tens of microseconds).
pub(crate) async fn read_rest(socket: &TcpStream, buf: &mut impl BufMut, poll: &mut RestPoll) -> std::io::Result<usize> {
    match socket.try_read_buf(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        result => return result,
    }
    if poll.skip > 0 {
        poll.skip -= 1;
        return read_some(socket, buf).await;
    }
    if let Some(result) = poll_recv(socket, buf, std::time::Instant::now(), FRAME_REST_SPIN) {
        return result;
    }
    poll.skip = FRAME_REST_BACKOFF;
    read_some(socket, buf).await
}

/// One non-blocking read once the socket is readable. Polls readiness as `AsyncRead` does, so
/// the reader takes part in tokio's cooperative budget.
pub(crate) async fn read_some(socket: &TcpStream, buf: &mut impl BufMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| loop {
        std::task::ready!(socket.poll_read_ready(cx))?;
        match socket.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return std::task::Poll::Ready(result),
        }
    })
    .await
}

/// Writes one frame outside a send queue: handshake frames, and the acks and pongs a reader
/// sends back on an accepted link.
async fn write_frame(socket: &mut WriteSide, frame: &Frame) -> std::io::Result<()> {
    socket.write_all(&frame.to_bytes()).await
}

/// The reason a TLS handshake failed, for the log (rustls' error, or the I/O error).
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// Whether a failed TLS handshake is the peer going away (not counted as a refusal).
fn tls_closed(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
}

fn shutdown_write(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cmds: Cmds) {
    let cfg = &shared.cfg;
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                if shared.pending.try_admit(peer.ip(), cfg.max_pending_handshakes, cfg.max_pending_handshakes_per_addr) {
                    let permit = Permit { shared: shared.clone(), ip: peer.ip() };
                    tokio::spawn(serve_inbound(stream, peer, permit, shared.clone(), cmds.clone()));
                } else {
                    // Reset at once (no FIN handshake, no TIME_WAIT): the descriptor is free
                    // again before the next accept.
                    shared.stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
                    drop(stream);
                    if let Some(suppressed) = shared.log_limits.refused.allow(&shared.stats) {
                        let (pending, _) = shared.pending.counts();
                        warn!(%peer, pending, suppressed, "too many pending handshakes: connection refused (the counter handshakes_refused has the total)");
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                if let Some(suppressed) = shared.log_limits.accept.allow(&shared.stats) {
                    warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_inbound(stream: TcpStream, peer: SocketAddr, permit: Permit, shared: Arc<Shared>, cmds: Cmds) {
    tune(&stream);
    let stream = Arc::new(stream);
    let mut buf = BytesMut::with_capacity(HANDSHAKE_CHUNK);
    let mut dec = Decoder::new(HANDSHAKE_MAX_FRAME);
    let max_frame = u32::try_from(shared.cfg.max_frame_size).unwrap_or(u32::MAX);
    let hs = ServerHandshake::new(&shared.name, &shared.cfg.cookie, max_frame, nonce());
    let tls = shared.tls();
    let mut sides = None;
    // TLS first (the peer's certificate is checked before any of its bytes reaches the frame
    // decoder), then the cookie challenge inside it; one timeout covers both.
    let handshake = async {
        let pair = match &tls {
            None => stream::plain(&stream),
            Some(ctx) => {
                let session = ctx.acceptor.accept(SharedTcp(stream.clone())).await.map_err(ReadError::Tls)?;
                stream::tls(session.into())
            }
        };
        let sides = sides.insert(pair);
        write_frame(&mut sides.1, &hs.challenge()).await.map_err(|_| ReadError::Closed)?;
        let frame = read_frame(&mut sides.0, &mut buf, &mut dec, HANDSHAKE_CHUNK).await?;
        Ok(hs.on_hello(frame, |c, i| shared.channels.serves(c, i)))
    };
    let inbound_failed = |what: &str, error: &dyn std::fmt::Display| {
        if let Some(suppressed) = shared.log_limits.inbound.allow(&shared.stats) {
            warn!(%peer, %error, suppressed, "{what}; connection closed (counters auth_failures, bad_frames, handshake_timeouts have the totals)");
        }
    };
    let result = tokio::time::timeout(shared.cfg.handshake_timeout, handshake).await;
    let (hello, accept) = match result {
        Ok(Ok(Ok(accepted))) => accepted,
        Ok(Ok(Err(e))) => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            shared.report_auth_failure(Direction::Inbound, peer.ip().to_string(), handshake_reason(&e));
            inbound_failed("handshake refused", &e);
            if let (Some(f), Some((_, wr))) = (e.refusal(), sides.as_mut()) {
                let _ = write_frame(wr, &f).await;
                let _ = wr.shutdown().await;
            }
            shutdown_write(&stream);
            return;
        }
        Ok(Err(ReadError::Tls(e))) if !tls_closed(&e) => {
            shared.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            shared.report_auth_failure(Direction::Inbound, peer.ip().to_string(), "tls");
            inbound_failed("TLS handshake failed (counter tls_failures)", &tls_reason(&e));
            return;
        }
        Ok(Err(ReadError::Frame(e))) => {
            shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            shared.report_auth_failure(Direction::Inbound, peer.ip().to_string(), "bad_frame");
            inbound_failed("garbage before authentication", &e);
            return;
        }
        Ok(Err(_)) => return, // closed or reset during the handshake
        Err(_) => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            shared.stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            shared.report_auth_failure(Direction::Inbound, peer.ip().to_string(), "timeout");
            inbound_failed("handshake timed out", &"no proof in time");
            return;
        }
    };
    drop(permit);
    if shared.is_blocked(&hello.node) {
        debug!(%peer, node = %hello.node, "inbound connection from a partitioned node closed");
        return;
    }
    let Some((mut rd, mut wr)) = sides else { return };
    if write_frame(&mut wr, &accept).await.is_err() {
        return;
    }
    debug!(%peer, node = %hello.node, channel = %hello.channel, conn = hello.conn_index, tls = tls.is_some(), "inbound connection accepted");
    dec = Decoder::new(shared.cfg.max_frame_size).with_pool(shared.frame_pool.clone());
    // On an accepted link only the reader writes (acks and pongs; the dialer sends on it); the
    // connection stays open until the peer closes it, which ends the read loop.
    let Some(channel) = shared.channels.index_of(&hello.channel) else { return };
    let side = Side::Accepted { channel, conn: hello.conn_index };
    read_loop(&mut rd, Some(&mut wr), &mut buf, &mut dec, &hello.node, side, &shared, &cmds).await;
}

/// Why a connection's reader stopped.
enum Ended {
    /// The peer closed the connection.
    Closed,
    Io(std::io::Error),
    /// The peer sent something that is not a frame it may send.
    BadFrame,
}

impl Ended {
    /// The reason reported in [`Event::ConnectionDown`].
    fn reason(&self) -> &'static str {
        match self {
            Ended::Closed => "closed",
            Ended::Io(e) => match e.kind() {
                std::io::ErrorKind::ConnectionReset => "connection_reset",
                std::io::ErrorKind::TimedOut => "timed_out",
                _ => "io_error",
            },
            Ended::BadFrame => "bad_frame",
        }
    }
}

/// The `reason` of a failed handshake in [`Event::AuthFailed`].
fn handshake_reason(e: &HandshakeError) -> &'static str {
    match e {
        HandshakeError::VersionMismatch { .. } => "version_mismatch",
        HandshakeError::BadProof => "bad_proof",
        HandshakeError::UnexpectedFrame { .. } => "unexpected_frame",
        HandshakeError::Refused(_) => "refused",
        HandshakeError::UnknownChannel { .. } => "unknown_channel",
        HandshakeError::EmptyNodeName => "empty_node_name",
    }
}

/// Which end of a link a reader serves.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// A link this node dialed (it sends on it): acks and pongs come back on it.
    Dialed(&'a LinkId),
    /// A link the peer dialed: its messages arrive here; acks and pongs go back on it.
    Accepted { channel: usize, conn: u16 },
}

/// Dispatches frames from an authenticated peer until the connection ends. Every read counts as
/// hearing from the peer (`connection_ping`). On an accepted link, sequenced messages are
/// delivered once and in order, and one cumulative ack answers each batch of frames read.
/// `wr` is the write side of an accepted link (acks and pongs go back on it); `None` on a
/// dialed link, whose writer owns it.
#[allow(clippy::too_many_arguments)]
async fn read_loop(
    socket: &mut ReadSide,
    mut wr: Option<&mut WriteSide>,
    buf: &mut BytesMut,
    dec: &mut Decoder,
    from: &str,
    side: Side<'_>,
    shared: &Shared,
    cmds: &Cmds,
) -> Ended {
    let bad_frame = |what: &str, error: &dyn std::fmt::Display| {
        shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = shared.log_limits.frames.allow(&shared.stats) {
            warn!(from, %error, suppressed, "{what}");
        }
    };
    let heard = shared.heard(from);
    // The inbound stream of this link, once a sequenced message arrived, and whether it owes
    // an ack.
    let mut stream: Option<Arc<Mutex<Inbound>>> = None;
    let mut ack_due = false;
    let mut read_since_yield = 0;
    let mut spin = Spin::new(shared.cfg.read_spin);
    let mut rest_poll = RestPoll::default();
    loop {
        let frame = match dec.decode(buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // Everything read is handled: one ack for the batch, then read more.
                if std::mem::take(&mut ack_due) {
                    if let Some((incarnation, seq)) = stream.as_ref().and_then(|s| s.lock_unpoisoned().take_ack()) {
                        // A failed write ends the read below; the sender resends what was not acked.
                        if let Some(wr) = wr.as_deref_mut() {
                            let _ = write_frame(wr, &Frame::Ack { incarnation, seq }).await;
                        }
                    }
                }
                let read = if let Some(mut own) = dec.own_buffer() {
                    socket.read_rest(&mut own, &mut rest_poll).await
                } else if dec.prefix_only(buf) {
                    let missing = LENGTH_PREFIX - buf.len();
                    socket.read_some(&mut (&mut *buf).limit(missing)).await
                } else {
                    if buf.capacity() - buf.len() < READ_CHUNK / 16 + 1 {
                        buf.reserve(READ_CHUNK);
                    }
                    socket.read_some_spinning(buf, &mut spin).await
                };
                match read {
                    Ok(0) => return Ended::Closed,
                    Ok(n) => {
                        heard.store(shared.now_ms(), Ordering::Relaxed);
                        read_since_yield += n;
                    }
                    Err(e) => return Ended::Io(e),
                }
                crate::stream::yield_after(&mut read_since_yield, READ_SLICE).await;
                continue;
            }
            Err(e) => {
                bad_frame("bad frame; connection closed", &e);
                return Ended::BadFrame;
            }
        };
        match (frame, side) {
            (Frame::Message { dest, payload }, _) => {
                shared.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                shared.deliver(from, &dest, payload);
            }
            (Frame::Sequenced { incarnation, seq, base, dest, payload }, Side::Accepted { channel, conn }) => {
                let stream = stream.get_or_insert_with(|| shared.acks.inbound(from, channel, conn));
                // Held while delivering: a replaced connection of this link still being read
                // cannot deliver between the verdict and the delivery.
                let mut st = stream.lock_unpoisoned();
                match st.receive(incarnation, seq, base) {
                    Verdict::Deliver => {
                        shared.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                        shared.deliver(from, &dest, payload);
                    }
                    Verdict::Duplicate => count_not_delivered(&shared.stats, true),
                    Verdict::Early | Verdict::Stale => count_not_delivered(&shared.stats, false),
                }
                ack_due = true;
            }
            (Frame::Ack { incarnation, seq }, Side::Dialed(link)) => shared.acks.on_ack(link, incarnation, seq),
            (Frame::Ping { seq }, Side::Accepted { .. }) => {
                if let Some(wr) = wr.as_deref_mut() {
                    let _ = write_frame(wr, &Frame::Pong { seq }).await;
                }
            }
            (Frame::Pong { .. }, Side::Dialed(_)) => {}
            // For the node (overlay, Plumtree, relaying). Waits for room in the driver's bounded
            // input: a peer flooding such frames slows down its own connection, not the node.
            (frame @ (Frame::Control { .. } | Frame::Broadcast { .. } | Frame::Relay { .. }), _) => {
                let _ = cmds.peer.send(Cmd::Frame { from: from.to_owned(), frame }).await;
            }
            (other, _) => {
                bad_frame("frame not allowed on this end of a link; connection closed", &format!("{other:?}"));
                return Ended::BadFrame;
            }
        }
    }
}

/// Dials one link. Reports `LinkUp` with the registered queue, or `LinkDown`.
pub(crate) async fn dial(link: LinkId, addrs: Vec<SocketAddr>, conn_id: u64, shared: Arc<Shared>, cmds: Cmds) {
    let stopping = shared.stopping.load(Ordering::Relaxed);
    let addrs = if shared.is_blocked(&link.node) || stopping { vec![] } else { addrs };
    for addr in addrs {
        shared.stats.dial_attempts.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => match client_handshake(Arc::new(stream), addr, &link, &shared).await {
                Ok((socket, rd, wr, buf, max_frame)) => {
                    shared.stats.connections_dialed.fetch_add(1, Ordering::Relaxed);
                    let tx = start_link(link.clone(), conn_id, socket, rd, wr, buf, max_frame, shared, cmds.clone());
                    let _ = cmds.life.send(Cmd::LinkUp { link, tx });
                    return;
                }
                Err(e) => {
                    if let Some(suppressed) = shared.log_limits.outbound.allow(&shared.stats) {
                        warn!(node = %link.node, %addr, error = %e, suppressed, "handshake failed");
                    }
                }
            },
            Ok(Err(e)) => debug!(node = %link.node, %addr, error = %e, "connect failed"),
            Err(_) => debug!(node = %link.node, %addr, "connect timed out"),
        }
    }
    let _ = cmds.life.send(Cmd::LinkDown { link, conn_id });
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("connection closed, reset or timed out during the handshake")]
    Io,
    #[error("bad frame during the handshake: {0}")]
    Frame(FrameError),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// The client side of the handshake; returns what was read past it and the largest frame the
/// peer accepts.
#[allow(clippy::type_complexity)]
async fn client_handshake(
    socket: Arc<TcpStream>,
    addr: SocketAddr,
    link: &LinkId,
    shared: &Shared,
) -> Result<(Arc<TcpStream>, ReadSide, WriteSide, BytesMut, usize), DialError> {
    tune(&socket);
    let channel = &shared.channels.get(link.channel).name;
    let hs = ClientHandshake::new(&shared.name, &link.node, channel, link.conn, &shared.cfg.cookie, nonce());
    let mut buf = BytesMut::with_capacity(8192);
    let tls = shared.tls();
    let exchange = async {
        // TLS first: the listener's certificate is checked before the cookie exchange.
        let (mut rd, mut wr) = match &tls {
            None => stream::plain(&socket),
            Some(ctx) => match ctx.connector.connect(ctx.server_name(addr.ip()), SharedTcp(socket.clone())).await {
                Ok(session) => stream::tls(session.into()),
                Err(e) if tls_closed(&e) => return Err(DialError::Io),
                Err(e) => {
                    shared.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                    shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    shared.report_auth_failure(Direction::Outbound, link.node.clone(), "tls");
                    return Err(DialError::Tls(tls_reason(&e)));
                }
            },
        };
        let mut dec = Decoder::new(HANDSHAKE_MAX_FRAME);
        let mut read = async |rd: &mut ReadSide, buf: &mut BytesMut| {
            read_frame(rd, buf, &mut dec, HANDSHAKE_CHUNK).await.map_err(|e| match e {
                ReadError::Frame(f) => DialError::Frame(f),
                _ => DialError::Io,
            })
        };
        let challenge = read(&mut rd, &mut buf).await?;
        let fail = |e: HandshakeError| {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            shared.report_auth_failure(Direction::Outbound, link.node.clone(), handshake_reason(&e));
            e
        };
        let (hs, hello) = hs.on_challenge(challenge).map_err(fail)?;
        write_frame(&mut wr, &hello).await.map_err(|_| DialError::Io)?;
        let accept = read(&mut rd, &mut buf).await?;
        let max_frame = hs.on_accept(accept).map_err(fail)?;
        Ok::<_, DialError>((rd, wr, max_frame as usize))
    };
    match tokio::time::timeout(shared.cfg.handshake_timeout, exchange).await {
        Ok(Ok((rd, wr, max_frame))) => Ok((socket, rd, wr, buf, max_frame)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DialError::Io),
    }
}

/// Starts the reader and writer of a dialed, authenticated link; returns its queue for the
/// driver to register.
#[allow(clippy::too_many_arguments)]
fn start_link(
    link: LinkId,
    conn_id: u64,
    socket: Arc<TcpStream>,
    mut rd: ReadSide,
    wr: WriteSide,
    mut buf: BytesMut,
    max_frame: usize,
    shared: Arc<Shared>,
    cmds: Cmds,
) -> LinkTx {
    let mut queue = LinkQueue::new(socket, shared.cfg.max_queue_bytes, max_frame, shared.stats.replaced_monotonic.clone());
    if !wr.allows_direct_writes() {
        queue = queue.without_direct_writes();
    }
    let channel = shared.channels.get(link.channel).name.clone();
    if let Some(level) = shared.cfg.compression_level(&channel) {
        queue = queue.with_compression(COMPRESS_FROM, level);
    }
    let queue = Arc::new(queue);
    shared.sink.event(Event::ConnectionUp { node: link.node.clone(), channel: channel.clone(), conn: link.conn });
    // Made here, not in the task: a task aborted before it first runs still drops it.
    let down = LinkDownOnDrop { link: link.clone(), conn_id, cmds: cmds.clone(), shared: shared.clone(), channel, reason: Default::default() };
    let reason = down.reason.clone();
    let reader = {
        let (link, shared, cmds, queue) = (link.clone(), shared.clone(), cmds.clone(), queue.clone());
        tokio::spawn(async move {
            // Reports the link down however this task ends: EOF, error, abort or panic.
            let down = down;
            // The peer sends nothing on a link it accepted but may (pings); EOF means it is gone.
            let mut dec = Decoder::new(shared.cfg.max_frame_size).with_pool(shared.frame_pool.clone());
            let ended = read_loop(&mut rd, None, &mut buf, &mut dec, &link.node, Side::Dialed(&link), &shared, &cmds).await;
            if let Ended::Io(e) = &ended {
                debug!(node = %link.node, error = %e, "link read failed");
            }
            down.set_reason(ended.reason());
            // The peer closed or reset the link (this task is aborted instead when we close it):
            // what is still queued would go into a dead socket. Dropped and counted.
            count_undelivered(&shared, &link, queue.abort());
        })
    };
    let mut tasks = vec![reader.abort_handle()];
    if shared.cfg.connection_ping.enabled {
        tasks.push(tokio::spawn(ping_loop(link.clone(), queue.clone(), reason.clone(), shared.clone())).abort_handle());
    }
    shared.writers.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(write_loop(link, conn_id, queue.clone(), wr, tasks, reason, shared, cmds));
    LinkTx { conn_id, queue }
}

fn count_undelivered(shared: &Shared, link: &LinkId, lost: usize) {
    if lost == 0 {
        return;
    }
    shared.stats.undelivered_on_close.fetch_add(lost as u64, Ordering::Relaxed);
    shared.report_drop(DropReason::UndeliveredOnClose, Some(&link.node), Some(link.channel), lost as u64);
    if let Some(suppressed) = shared.log_limits.frames.allow(&shared.stats) {
        info!(node = %link.node, lost, suppressed, "link closed with messages not written (counter undelivered_on_close)");
    }
}

/// Why a dialed connection ended; the first of its reader and writer to know sets it.
type DownReason = Arc<Mutex<Option<&'static str>>>;

fn set_reason(cell: &DownReason, reason: &'static str) {
    cell.lock_unpoisoned().get_or_insert(reason);
}

struct LinkDownOnDrop {
    link: LinkId,
    conn_id: u64,
    cmds: Cmds,
    shared: Arc<Shared>,
    channel: String,
    reason: DownReason,
}

impl LinkDownOnDrop {
    fn set_reason(&self, reason: &'static str) {
        set_reason(&self.reason, reason);
    }
}

impl Drop for LinkDownOnDrop {
    fn drop(&mut self) {
        // A node that stops reports nothing more (its events process is going away too).
        if !self.shared.stopping.load(Ordering::Relaxed) {
            // Without a word from the reader or the writer: a panic or the runtime going away.
            let reason = self.reason.lock_unpoisoned().take().unwrap_or("local_close");
            let (node, channel) = (self.link.node.clone(), std::mem::take(&mut self.channel));
            // Before the driver hears of it, so it arrives before the node's down event.
            self.shared.sink.event(Event::ConnectionDown { node, channel, conn: self.link.conn, reason });
        }
        // A down for a link the driver already replaced or removed is ignored by its conn_id.
        let _ = self.cmds.life.send(Cmd::LinkDown { link: self.link.clone(), conn_id: self.conn_id });
    }
}

/// Counts a writer out when it ends, and wakes a stop waiting for the writers.
struct WriterGuard(Arc<Shared>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.writers.fetch_sub(1, Ordering::SeqCst);
        self.0.writer_done.notify_waiters();
    }
}

/// Runs the link's writer until the queue is closed (everything accepted is written, then the
/// write side shuts down) or a write fails (the link is down: what it held is counted lost).
/// Then ends the link's other tasks (its reader, and its pinger).
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    link: LinkId,
    conn_id: u64,
    queue: Arc<LinkQueue>,
    mut wr: WriteSide,
    tasks: Vec<tokio::task::AbortHandle>,
    reason: DownReason,
    shared: Arc<Shared>,
    cmds: Cmds,
) {
    let _guard = WriterGuard(shared.clone());
    let result = write_batches(&queue, &mut wr).await;
    // Set before the reader is aborted: its drop reports the reason.
    set_reason(&reason, if result.is_err() { "write_failed" } else { "local_close" });
    for task in &tasks {
        task.abort();
    }
    if let Err(error) = result {
        info!(node = %link.node, channel = link.channel, conn = link.conn, %error, "link write failed");
        count_undelivered(&shared, &link, queue.abort());
        let _ = cmds.life.send(Cmd::LinkDown { link, conn_id });
    }
}

/// `connection_ping` for one dialed link: pings when the peer has been silent for
/// `idle_timeout`, and closes the link (reason `ping_timeout`) when `max_attempts` pings went
/// unanswered (see `partisan_core::ping`). Ends with the link (its writer aborts it).
async fn ping_loop(link: LinkId, queue: Arc<LinkQueue>, reason: DownReason, shared: Arc<Shared>) {
    let heard = shared.heard(&link.node);
    let mut liveness = Liveness::new(shared.cfg.connection_ping, shared.now_ms());
    loop {
        liveness.heard(heard.load(Ordering::Relaxed));
        match liveness.poll(shared.now_ms()) {
            PingAction::Wait(until) => {
                let at = shared.epoch + std::time::Duration::from_millis(until);
                tokio::time::sleep_until(at.into()).await;
            }
            PingAction::Ping(seq) => {
                // A full queue (a peer that stopped reading) loses the ping: it counts as unanswered.
                let _ = queue.push(Outgoing::Frame(Frame::Ping { seq }.to_bytes()), None);
                shared.stats.pings_sent.fetch_add(1, Ordering::Relaxed);
            }
            PingAction::Dead => {
                shared.stats.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                let bound = shared.cfg.connection_ping.detection_bound();
                warn!(node = %link.node, channel = link.channel, conn = link.conn, bound_ms = bound, "peer answered no ping; link closed (connection_ping)");
                set_reason(&reason, "ping_timeout");
                // Shuts the socket down: the writer and the reader end, and the link is reported
                // down (and redialed).
                count_undelivered(&shared, &link, queue.abort());
                return;
            }
        }
    }
}

pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod read_rest_tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (dialed, accepted)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rest_of_a_frame_is_read_whether_it_comes_at_once_or_long_after_the_polling() {
        let (mut tx, rx) = pair().await;
        let mut buf = BytesMut::with_capacity(64);
        tx.write_all(b"now").await.unwrap();
        // Already there, or within the polling.
        let mut poll = RestPoll::default();
        let n = read_rest(&rx, &mut buf, &mut poll).await.unwrap();
        assert_eq!(&buf[..n], b"now");
        // Long after the polling gave up: the reader waits to be woken.
        let mut poll = RestPoll::default();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.write_all(b"later").await.unwrap();
            tx
        });
        buf.clear();
        let n = read_rest(&rx, &mut buf, &mut poll).await.unwrap();
        assert_eq!(&buf[..n], b"later");
        assert_eq!(poll.skip, FRAME_REST_BACKOFF, "a poll that found nothing backs off");
        // And the end of the stream is seen as such.
        drop(writer.await.unwrap());
        buf.clear();
        assert_eq!(read_rest(&rx, &mut buf, &mut poll).await.unwrap(), 0);
    }
}
