//! One connection's send queue: the bounded hand-off between senders (BEAM scheduler threads
//! calling the NIF) and the connection's writer task, and the writer itself.
//!
//! A sender takes a short mutex, appends, and wakes the writer; it never waits for the socket.
//! The writer ([`write_batches`]) swaps out everything queued in one go, so under load one
//! wake-up and one `write` carry many messages. The queue is bounded in bytes: a sender that
//! would exceed the bound gets [`SendError::QueueFull`] at once instead of growing memory
//! without limit.
//!
//! On a monotonic channel, a message replaces a queued older one with the same
//! [`MonotonicKey`] (see `partisan_core::channel`); the replaced message is never written and
//! its bytes leave the budget at once.
//!
//! Small messages are not queued one by one: the sender appends each one's frame to a buffer of
//! frames at the end of the queue, so a stream of small messages costs no allocation per
//! message on either side, and nothing a sender allocated is freed by the writer's thread (both
//! showed in a profile of a 10-byte stream: the sending scheduler spent 15 % of its time in
//! `malloc`'s slow path, its freed blocks going to the writer's cache). The buffers go back to
//! the queue once written.
//!
//! When the link is quiet — queue empty, writer idle, no direct write in the last
//! [`DIRECT_GAP`] — a small message does not wait for the writer at all: the sender writes the
//! frame itself with one non-blocking write, which saves waking the writer thread (the largest
//! part of a round trip's latency). Under a stream of messages the gap rule sends the rest
//! through the writer, which batches many frames per syscall. It happens under the queue's lock
//! and only while the writer is not writing, so frames never interleave; what the socket does
//! not take is queued for the writer, in order. The queue holds the socket (an `Arc` shared with
//! the reader and the writer), so the descriptor a sender writes to stays open for as long as
//! the sender can reach the queue; a closed queue is never written to.
//!
//! ```ignore
//! let queue = Arc::new(LinkQueue::new(socket.clone(), 64 << 20, max_frame, replaced));
//! tokio::spawn({ let queue = queue.clone(); async move { write_batches(&queue).await } });
//! queue.push(Outgoing::Message { dest, payload }, None)?; // from any thread
//! queue.close(); // the writer writes what was accepted, then returns
//! ```

use crate::lock::MutexExt;
use crate::SendError;
use bytes::{Bytes, BytesMut};
use partisan_core::channel::{MonotonicKey, MonotonicQueue};
use crate::stream::WriteSide;
use partisan_core::compress::Packer;
use partisan_core::frame::{encode_message_header, encode_sequenced_header, message_frame_len, Dest, LENGTH_PREFIX, SEQUENCED_HEADER};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A message's encoded term: one buffer, or pieces written back to back. The NIF sends a term
/// holding large binaries as pieces that reference the VM's binaries instead of copies of them
/// (as Distributed Erlang's output queue does), so a 1 MiB binary is never copied in user space
/// on its way to the socket.
#[derive(Debug, Clone)]
pub enum Payload {
    One(Bytes),
    /// At least two pieces, with their total length.
    Gathered { parts: Vec<Bytes>, len: usize },
}

impl Payload {
    /// A payload of `parts` (one buffer for a single piece).
    pub fn gathered(mut parts: Vec<Bytes>) -> Payload {
        if parts.len() == 1 {
            return Payload::One(parts.pop().expect("one part"));
        }
        let len = parts.iter().map(Bytes::len).sum();
        Payload::Gathered { parts, len }
    }

    pub fn len(&self) -> usize {
        match self {
            Payload::One(b) => b.len(),
            Payload::Gathered { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Bytes] {
        match self {
            Payload::One(b) => std::slice::from_ref(b),
            Payload::Gathered { parts, .. } => parts,
        }
    }

    /// The payload in one buffer (a copy for a gathered one).
    pub fn contiguous(&self) -> Bytes {
        match self {
            Payload::One(b) => b.clone(),
            Payload::Gathered { parts, len } => {
                let mut out = BytesMut::with_capacity(*len);
                parts.iter().for_each(|p| out.extend_from_slice(p));
                out.freeze()
            }
        }
    }
}

impl partisan_core::ack::AckPayload for Payload {
    fn encoded_len(&self) -> usize {
        self.len()
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload::One(bytes)
    }
}

/// One item for the wire.
#[derive(Debug)]
pub enum Outgoing {
    Message { dest: Dest, payload: Payload },
    /// A message sent with `ack` (see `partisan_core::ack`). Not lost when the link closes: the
    /// sender's outbox keeps it until it is acknowledged.
    Sequenced { incarnation: u64, seq: u64, base: u64, dest: Dest, payload: Payload },
    /// An already encoded frame (control frames).
    Frame(Bytes),
    /// The bytes of a frame a sender wrote in part (see [`LinkQueue::try_direct`]).
    Rest(Payload),
}

impl Outgoing {
    /// What the item counts against the queue's byte budget.
    fn budget_len(&self) -> usize {
        let dest_budget = |dest: &Dest, payload_len: usize| {
            payload_len
                + 16
                + match dest {
                    Dest::Pid(b) => b.len(),
                    Dest::Name(n) => n.len(),
                    Dest::PidId { .. } | Dest::Reply { .. } => 8,
                }
        };
        match self {
            Outgoing::Message { dest, payload } => dest_budget(dest, payload.len()),
            Outgoing::Sequenced { dest, payload, .. } => SEQUENCED_HEADER + dest_budget(dest, payload.len()),
            Outgoing::Frame(b) => b.len(),
            Outgoing::Rest(rest) => rest.len(),
        }
    }

    /// The frame's length as its length prefix states it (what the receiver checks).
    fn frame_len(&self) -> usize {
        match self {
            Outgoing::Message { dest, payload } => message_frame_len(dest, payload.len()),
            Outgoing::Sequenced { dest, payload, .. } => SEQUENCED_HEADER + message_frame_len(dest, payload.len()),
            Outgoing::Frame(b) => b.len().saturating_sub(LENGTH_PREFIX),
            Outgoing::Rest(rest) => rest.len(),
        }
    }

    /// Appends the frame's header (all of it for an encoded frame); returns the pieces of the
    /// payload that follow it, if any.
    fn encode_header(&self, out: &mut BytesMut) -> Option<&[Bytes]> {
        match self {
            Outgoing::Message { dest, payload } => {
                encode_message_header(dest, payload.len(), out);
                Some(payload.parts())
            }
            Outgoing::Sequenced { incarnation, seq, base, dest, payload } => {
                encode_sequenced_header(*incarnation, *seq, *base, dest, payload.len(), out);
                Some(payload.parts())
            }
            Outgoing::Frame(bytes) => {
                out.extend_from_slice(bytes);
                None
            }
            Outgoing::Rest(rest) => Some(rest.parts()),
        }
    }

    fn is_sequenced(&self) -> bool {
        matches!(self, Outgoing::Sequenced { .. })
    }
}

/// Messages with payloads at most this large are appended to a buffer of frames at the end of
/// the queue (see [`Queued::Frames`]).
const COALESCE_MAX: usize = 4 * 1024;
/// A buffer of frames takes frames while it holds less than this; the writer copies it into its
/// batch.
const FRAMES_BYTES: usize = 16 * 1024;
/// At most this many written buffers of frames are kept for reuse.
const SPARE_FRAMES: usize = 4;

/// Messages at most this large may be written directly by the sender when no direct write
/// happened in the last [`DIRECT_GAP`].
const DIRECT_MAX: usize = 16 * 1024;
/// A sender writes directly only if no direct write happened this recently on the link: a
/// request-reply exchange (one message per round trip) qualifies, a stream goes to the writer.
pub const DIRECT_GAP: Duration = Duration::from_micros(50);
/// Larger messages, up to this size, are written directly by the sender whenever the link is
/// quiet (batching them would save nothing): the scheduler pays the kernel's copy, as
/// Distributed Erlang's does, and the message leaves without waking the writer. Bounded so
/// that a send returns well within a millisecond (loopback takes 256 KiB in ~100 µs here).
const DIRECT_LARGE_MAX: usize = 256 * 1024;
/// The writer writes its batch out once it holds this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// The writer gives its worker thread back to the runtime after writing this much in one go
/// (see [`crate::stream::yield_after`]).
const WRITE_SLICE: usize = 512 * 1024;
/// Payloads at least this large are written from their own buffer instead of being copied into
/// the batch.
const COPY_LIMIT: usize = 16 * 1024;

thread_local! {
    static FRAME: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(DIRECT_MAX + 512));
}

/// What the queue holds, in order.
#[derive(Debug)]
enum Queued {
    Item(Outgoing),
    /// The frames of `count` small messages, back to back.
    Frames { bytes: BytesMut, count: usize },
}

impl Queued {
    /// The messages it stands for.
    fn count(&self) -> usize {
        match self {
            Queued::Item(_) => 1,
            Queued::Frames { count, .. } => *count,
        }
    }

    /// What it counts against the queue's byte budget.
    fn budget_len(&self) -> usize {
        match self {
            Queued::Item(item) => item.budget_len(),
            Queued::Frames { bytes, .. } => bytes.len(),
        }
    }

    fn is_sequenced(&self) -> bool {
        matches!(self, Queued::Item(item) if item.is_sequenced())
    }
}

#[derive(Debug, Default)]
struct Inner {
    fifo: VecDeque<Queued>,
    /// Written buffers of frames, cleared, for reuse.
    spare: Vec<BytesMut>,
    monotonic: MonotonicQueue<Outgoing>,
    /// Budget taken by the queued items and by those the writer holds.
    bytes: usize,
    closed: bool,
    /// Items the writer took and has not reported written.
    inflight: usize,
    /// Of the queued and in-flight items, the sequenced ones (not lost when the link dies).
    sequenced: usize,
    /// The writer took items and is writing them.
    writer_busy: bool,
    last_direct: Option<Instant>,
}

impl Inner {
    fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.monotonic.is_empty()
    }

    /// Messages queued (not yet taken by the writer).
    fn queued(&self) -> usize {
        self.fifo.iter().map(Queued::count).sum::<usize>() + self.monotonic.len()
    }

    /// Appends a small message's frame to the buffer of frames at the end of the queue (a new
    /// one if the last item is not one or is full); returns the bytes it takes.
    fn append_frame(&mut self, dest: &Dest, payload: &[u8]) -> usize {
        let frame_len = LENGTH_PREFIX + message_frame_len(dest, payload.len());
        let fits = matches!(self.fifo.back(), Some(Queued::Frames { bytes, .. }) if bytes.len() + frame_len <= FRAMES_BYTES);
        if !fits {
            let bytes = self.spare.pop().unwrap_or_else(|| BytesMut::with_capacity(FRAMES_BYTES));
            self.fifo.push_back(Queued::Frames { bytes, count: 0 });
        }
        let Some(Queued::Frames { bytes, count }) = self.fifo.back_mut() else { unreachable!("a buffer of frames was just pushed") };
        encode_message_header(dest, payload.len(), bytes);
        bytes.extend_from_slice(payload);
        *count += 1;
        frame_len
    }
}

/// One connection's send queue.
#[derive(Debug)]
pub struct LinkQueue {
    inner: Mutex<Inner>,
    wake: Notify,
    max_bytes: usize,
    /// Monotonic messages superseded before they were written (the node's counter).
    replaced: Arc<AtomicU64>,
    /// The connection's socket, for direct writes by senders; holding it keeps it open.
    socket: Arc<TcpStream>,
    /// The largest frame the peer accepts (it said so in the handshake).
    max_frame: usize,
    direct_gap: Duration,
    /// Senders may write to the socket themselves (plain TCP; a TLS link has one writer).
    direct: bool,
    /// Payloads at least this large are compressed by the writer at this zstd level (the
    /// channel's `compression`).
    compress_from: Option<(usize, i32)>,
}

impl LinkQueue {
    pub fn new(socket: Arc<TcpStream>, max_bytes: usize, max_frame: usize, replaced: Arc<AtomicU64>) -> Self {
        LinkQueue {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            max_bytes,
            replaced,
            socket,
            max_frame,
            direct_gap: DIRECT_GAP,
            direct: true,
            compress_from: None,
        }
    }

    /// The same queue with every frame written by the writer task: a TLS link's encryption
    /// state belongs to its writer (see [`crate::stream`]).
    pub fn without_direct_writes(mut self) -> Self {
        self.direct = false;
        self
    }

    /// The same queue with message payloads of at least `threshold` bytes compressed by the
    /// writer at zstd `level` (on the runtime's threads; see [`partisan_core::compress`]).
    pub fn with_compression(mut self, threshold: usize, level: i32) -> Self {
        self.compress_from = Some((threshold, level));
        self
    }

    /// The same queue with another [`DIRECT_GAP`] (tests pick one no scheduling delay reaches).
    #[cfg(test)]
    fn with_direct_gap(mut self, gap: Duration) -> Self {
        self.direct_gap = gap;
        self
    }

    /// Bytes of the budget in use.
    #[cfg(test)]
    fn budget_used(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock_unpoisoned()
    }

    /// Writes a message straight to the socket when nothing is queued or being written (a
    /// small one only if no direct write happened in the last [`DIRECT_GAP`]). Returns the item
    /// back when it must be queued instead, or the bytes the socket did not take when it took
    /// part of the frame.
    fn try_direct(&self, inner: &mut Inner, item: Outgoing) -> Result<(), Outgoing> {
        let len = match &item {
            Outgoing::Message { payload, .. } | Outgoing::Sequenced { payload, .. } => payload.len(),
            _ => return Err(item),
        };
        // A payload the writer would compress is left to it: compression never runs on the
        // sender's (scheduler) thread.
        let compressible = matches!(item, Outgoing::Message { .. }) && self.compresses(len);
        if !self.direct || compressible || inner.writer_busy || !inner.is_empty() || len > DIRECT_LARGE_MAX {
            return Err(item);
        }
        let small = len <= DIRECT_MAX;
        if small {
            let now = Instant::now();
            if inner.last_direct.is_some_and(|t| now.duration_since(t) < self.direct_gap) {
                return Err(item);
            }
            inner.last_direct = Some(now);
        }
        // None: nothing written; Some(None): all of it; Some(Some(rest)): all but `rest`.
        let written = FRAME.with(|frame| {
            let mut frame = frame.borrow_mut();
            frame.clear();
            let parts = item.encode_header(&mut frame).unwrap_or_default();
            // Non-blocking: a full socket buffer (or an error the writer will meet too) sends
            // the frame through the writer instead. A small frame goes in one buffer, a large
            // payload from where it is.
            let (result, parts) = if small {
                parts.iter().for_each(|part| frame.extend_from_slice(part));
                (self.socket.try_write(&frame), &[][..])
            } else {
                let slices: Vec<io::IoSlice> = std::iter::once(&frame[..]).chain(parts.iter().map(|p| &p[..])).map(io::IoSlice::new).collect();
                (self.socket.try_write_vectored(&slices), parts)
            };
            // What was to be written: the frame buffer, then the parts written from where they are.
            let total = frame.len() + parts.iter().map(Bytes::len).sum::<usize>();
            match result {
                Ok(n) if n == total => Some(None),
                Ok(n) if n > 0 => Some(Some(unwritten_rest(&frame, parts, n))),
                _ => None,
            }
        });
        match written {
            Some(None) => Ok(()),
            Some(Some(rest)) => Err(Outgoing::Rest(rest)),
            None => Err(item),
        }
    }

    /// Queues one item; `monotonic` gives the key under which it supersedes older items.
    pub fn push(&self, item: Outgoing, monotonic: Option<MonotonicKey>) -> Result<(), SendError> {
        let size = item.frame_len();
        if size > self.max_frame {
            // The peer would close the link on it: refused here, where the sender learns of it.
            return Err(SendError::MessageTooLarge { size, max: self.max_frame });
        }
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(SendError::NotConnected);
            }
            // An item larger than the whole bound still goes through on an empty queue, so the
            // maximum message size is set by max_frame_size, not by the queue bound. A sequenced
            // item is bounded by its outbox (`max_unacked_bytes`) instead: refused here, it and
            // every later one of its stream would wait for the next retransmission (measured:
            // 64 senders of 1 MiB with `ack` stalled for a second at a time).
            let len = item.budget_len();
            if !item.is_sequenced() && inner.bytes > 0 && inner.bytes + len > self.max_bytes {
                return Err(SendError::QueueFull);
            }
            let item = match monotonic {
                None => match self.try_direct(&mut inner, item) {
                    Ok(()) => return Ok(()),
                    Err(rest) => rest,
                },
                Some(_) => item,
            };
            // The writer needs waking only if it waits: it has taken nothing, and nothing queued
            // woke it yet. A busy writer looks at the queue again before it waits.
            let wake = !inner.writer_busy && inner.is_empty();
            match monotonic {
                Some(key) => {
                    inner.bytes += item.budget_len();
                    if let Some(old) = inner.monotonic.push(key, item) {
                        inner.bytes -= old.budget_len();
                        self.replaced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => match item {
                    Outgoing::Message { dest, payload: Payload::One(payload) } if payload.len() <= COALESCE_MAX && !self.compresses(payload.len()) => {
                        inner.bytes += inner.append_frame(&dest, &payload);
                    }
                    item => {
                        inner.bytes += item.budget_len();
                        inner.sequenced += usize::from(item.is_sequenced());
                        inner.fifo.push_back(Queued::Item(item));
                    }
                },
            }
            if !wake {
                return Ok(());
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Whether the writer compresses a message payload of `len` bytes.
    fn compresses(&self, len: usize) -> bool {
        self.compress_from.is_some_and(|(threshold, _)| len >= threshold)
    }

    /// Waits for items and takes all of them, oldest first. `None` once the queue is closed and
    /// drained.
    async fn take_all(&self, out: &mut Vec<Queued>) -> Option<()> {
        loop {
            {
                let mut inner = self.lock();
                if !inner.is_empty() {
                    inner.writer_busy = true;
                    inner.inflight += inner.queued();
                    out.extend(inner.fifo.drain(..));
                    while let Some(item) = inner.monotonic.pop() {
                        out.push(Queued::Item(item));
                    }
                    return Some(());
                }
                inner.writer_busy = false;
                if inner.closed {
                    return None;
                }
            }
            self.wake.notified().await;
        }
    }

    /// The writer wrote `w.items` of those it took (`w.sequenced` of them sequenced), taking
    /// `w.bytes` of the budget; `w.spare` are written buffers of frames to reuse.
    fn written(&self, mut w: Written) {
        let mut inner = self.lock();
        while inner.spare.len() < SPARE_FRAMES {
            let Some(mut bytes) = w.spare.pop() else { break };
            bytes.clear();
            inner.spare.push(bytes);
        }
        debug_assert!(inner.inflight >= w.items && inner.bytes >= w.bytes, "accounting: {inner:?}, {w:?}");
        inner.inflight = inner.inflight.saturating_sub(w.items);
        inner.bytes = inner.bytes.saturating_sub(w.bytes);
        inner.sequenced = inner.sequenced.saturating_sub(w.sequenced);
    }

    /// Items accepted by `push` and not yet written: queued, or taken by the writer and not
    /// reported written.
    pub fn unwritten(&self) -> usize {
        let inner = self.lock();
        inner.queued() + inner.inflight
    }

    /// Stops accepting items; the writer writes what was accepted, then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The link is dead: stops accepting items, drops what is queued, shuts the socket down and
    /// returns how many accepted items will never be written (queued ones and those the writer
    /// holds), sequenced ones aside (their outbox still holds them). Calling it again returns 0.
    pub fn abort(&self) -> usize {
        let lost = {
            let mut inner = self.lock();
            inner.closed = true;
            let lost = (inner.queued() + inner.inflight).saturating_sub(inner.sequenced);
            inner.sequenced = 0;
            inner.fifo.clear();
            while inner.monotonic.pop().is_some() {}
            inner.inflight = 0;
            inner.bytes = 0;
            lost
        };
        // The reader and the queue's other holders may keep the descriptor a while longer; the
        // peer learns now that the link is gone.
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Both);
        self.wake.notify_one();
        lost
    }
}

/// What follows the first `n` bytes of `head` and then `parts`: a copy of the rest of `head`,
/// and the rest of `parts` by reference.
fn unwritten_rest(head: &[u8], parts: &[Bytes], n: usize) -> Payload {
    let mut rest = Vec::with_capacity(parts.len() + 1);
    if n < head.len() {
        rest.push(Bytes::copy_from_slice(&head[n..]));
    }
    let mut skip = n.saturating_sub(head.len());
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
        } else {
            rest.push(part.slice(skip..));
            skip = 0;
        }
    }
    Payload::gathered(rest)
}

/// What the writer reports written.
#[derive(Debug, Default)]
struct Written {
    items: usize,
    sequenced: usize,
    bytes: usize,
    /// Buffers of frames it is done with.
    spare: Vec<BytesMut>,
}

impl Written {
    fn add(&mut self, item: &Queued) {
        self.items += item.count();
        self.sequenced += usize::from(item.is_sequenced());
        self.bytes += item.budget_len();
    }
}

/// The writer of a connection: writes what the queue hands over, batching frames into few
/// syscalls, until the queue is closed and drained (then it shuts the socket's write side down,
/// so the peer reads everything and then EOF) or a write fails.
///
/// Small frames are copied into one buffer; the payloads of large ones (and the pieces of a
/// gathered payload) are written from where they are. One vectored write carries up to
/// [`BATCH_BYTES`] of both, so a stream of 64 KiB messages costs a few writes per batch, not one
/// per message.
pub(crate) async fn write_batches(queue: &LinkQueue, socket: &mut WriteSide) -> io::Result<()> {
    let mut packer = queue.compress_from.map(|(threshold, level)| (threshold, Packer::new(level)));
    let mut items = Vec::with_capacity(256);
    let mut batch = Batch { copied: BytesMut::with_capacity(BATCH_BYTES), pieces: Vec::new(), referenced: 0 };
    let mut written_since_yield = 0;
    while queue.take_all(&mut items).await.is_some() {
        // Items and budget in `batch`, not yet reported.
        let mut batched = Written::default();
        let mut result = Ok(());
        for queued in items.drain(..) {
            if result.is_err() {
                continue; // the rest is dropped with the queue (abort counts it)
            }
            batched.add(&queued);
            match queued {
                Queued::Frames { bytes, .. } => {
                    batch.copied.extend_from_slice(&bytes);
                    batched.spare.push(bytes);
                }
                Queued::Item(item) => {
                    // Plain messages above the threshold go compressed (an acked message's frame
                    // carries its sequence header, and goes as it is).
                    let compressed = match (&item, packer.as_mut()) {
                        (Outgoing::Message { dest, payload }, Some((threshold, packer))) if payload.len() >= *threshold => {
                            packer.encode_message(dest, &payload.contiguous(), &mut batch.copied)
                        }
                        _ => false,
                    };
                    if !compressed {
                        match item.encode_header(&mut batch.copied) {
                            None => {}
                            Some(parts) if parts.iter().map(Bytes::len).sum::<usize>() < COPY_LIMIT => {
                                parts.iter().for_each(|p| batch.copied.extend_from_slice(p))
                            }
                            Some(parts) => batch.reference(parts),
                        }
                    }
                }
            }
            if batch.is_full() {
                written_since_yield += batch.len();
                result = batch.write(socket).await;
                if result.is_ok() {
                    queue.written(std::mem::take(&mut batched));
                }
                crate::stream::yield_after(&mut written_since_yield, WRITE_SLICE).await;
            }
        }
        if result.is_ok() {
            written_since_yield += batch.len();
            result = batch.write(socket).await;
        }
        result?;
        queue.written(batched);
        crate::stream::yield_after(&mut written_since_yield, WRITE_SLICE).await;
    }
    socket.shutdown().await
}

/// Frames on their way into one vectored write: copied bytes, and pieces written from their own
/// buffers.
struct Batch {
    /// Copied bytes not yet placed in `pieces` (they follow its last piece).
    copied: BytesMut,
    pieces: Vec<Bytes>,
    /// Bytes in `pieces`.
    referenced: usize,
}

impl Batch {
    /// Appends what was copied so far, then `parts` by reference.
    fn reference(&mut self, parts: &[Bytes]) {
        if !self.copied.is_empty() {
            let copied = self.copied.split().freeze();
            self.referenced += copied.len();
            self.pieces.push(copied);
        }
        self.referenced += parts.iter().map(Bytes::len).sum::<usize>();
        self.pieces.extend(parts.iter().cloned());
    }

    /// Bytes in the batch.
    fn len(&self) -> usize {
        self.copied.len() + self.referenced
    }

    fn is_full(&self) -> bool {
        self.len() >= BATCH_BYTES || self.pieces.len() + 1 >= MAX_IOVECS
    }

    /// Writes everything and empties the batch.
    async fn write(&mut self, socket: &mut WriteSide) -> io::Result<()> {
        let result = if self.pieces.is_empty() {
            if self.copied.is_empty() {
                return Ok(());
            }
            socket.write_all(&self.copied).await
        } else {
            let slices: Vec<&[u8]> = self.pieces.iter().map(|p| &p[..]).chain(std::iter::once(&self.copied[..])).collect();
            socket.write_gathered(&slices).await
        };
        self.copied.clear();
        self.pieces.clear();
        self.referenced = 0;
        result
    }
}

/// At most this many pieces go into one vectored write (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 64;

/// Writes `pieces` one after the other to a plain socket with vectored writes (one syscall for
/// all of them when the socket takes them).
pub(crate) async fn write_gathered(socket: &TcpStream, pieces: &[&[u8]]) -> io::Result<()> {
    let pieces: Vec<&[u8]> = pieces.iter().copied().filter(|p| !p.is_empty()).collect();
    // The first unwritten piece and how much of it is written.
    let (mut first, mut offset) = (0, 0);
    while first < pieces.len() {
        let slices: Vec<io::IoSlice> = std::iter::once(&pieces[first][offset..])
            .chain(pieces[first + 1..].iter().copied())
            .take(MAX_IOVECS)
            .map(io::IoSlice::new)
            .collect();
        let mut n = write_some(socket, |s| s.try_write_vectored(&slices)).await?;
        while n > 0 {
            let rest = pieces[first].len() - offset;
            if n < rest {
                offset += n;
                n = 0;
            } else {
                n -= rest;
                first += 1;
                offset = 0;
            }
        }
    }
    Ok(())
}

/// Writes all of `bytes` to a plain socket.
pub(crate) async fn write_slice(socket: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        done += write_some(socket, |s| s.try_write(&bytes[done..])).await?;
    }
    Ok(())
}

/// One non-blocking write once the socket is writable; a write of 0 bytes is an error. Polls
/// readiness as `AsyncWrite` does, so the writer takes part in tokio's cooperative budget.
async fn write_some(socket: &TcpStream, mut write: impl FnMut(&TcpStream) -> io::Result<usize>) -> io::Result<usize> {
    std::future::poll_fn(|cx| loop {
        std::task::ready!(socket.poll_write_ready(cx))?;
        match write(socket) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    })
    .await
}

#[cfg(test)]
mod tests;
