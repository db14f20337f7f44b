//! The bounded hand-off between senders (BEAM scheduler threads calling the NIF) and one
//! connection's writer task.
//!
//! A sender takes a short mutex, appends, and wakes the writer; it never waits for the socket.
//! The writer swaps out everything queued in one go, so under load one wake-up and one `write`
//! carry many messages. The queue is bounded in bytes: a sender that would exceed the bound gets
//! [`SendError::QueueFull`] at once instead of growing memory without limit.
//!
//! On a monotonic channel, a message replaces a queued older one with the same
//! [`MonotonicKey`] (see `partisan_core::channel`).
//!
//! When the link is quiet — queue empty, writer idle, no direct write in the last
//! [`DIRECT_GAP`] — a small message does not wait for the writer at all: the sender writes the
//! frame itself with one non-blocking `send`, which saves waking the writer thread (the largest
//! part of a round trip's latency). Under a stream of messages the gap rule sends the rest
//! through the writer, which batches many frames per syscall. It happens under the queue's
//! lock and only while the writer is not writing, so frames never interleave; what the socket
//! does not take is queued for the writer in order. The writer closes the queue before it drops
//! the socket, so the descriptor is never used after it closed.

use crate::SendError;
use bytes::{Bytes, BytesMut};
use partisan_core::frame::{encode_message_header, message_frame_len, LENGTH_PREFIX};
use std::cell::RefCell;
use std::os::fd::RawFd;
use partisan_core::channel::{MonotonicKey, MonotonicQueue};
use partisan_core::frame::Dest;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One item for the wire.
#[derive(Debug)]
pub enum Outgoing {
    Message { dest: Dest, payload: Bytes },
    /// An already encoded frame (control frames).
    Frame(Bytes),
}

impl Outgoing {
    fn wire_len(&self) -> usize {
        match self {
            Outgoing::Message { dest, payload } => {
                payload.len()
                    + 16
                    + match dest {
                        Dest::Pid(b) => b.len(),
                        Dest::Name(n) => n.len(),
                        Dest::PidId { .. } | Dest::Reply { .. } => 8,
                    }
            }
            Outgoing::Frame(b) => b.len(),
        }
    }

    /// The frame's length as its length prefix states it (what the receiver checks).
    fn frame_len(&self) -> usize {
        match self {
            Outgoing::Message { dest, payload } => message_frame_len(dest, payload.len()),
            Outgoing::Frame(b) => b.len().saturating_sub(LENGTH_PREFIX),
        }
    }
}

/// Messages at most this large may be written directly by the sender.
const DIRECT_MAX: usize = 16 * 1024;
/// A sender writes directly only if no direct write happened this recently on the link: a
/// request-reply exchange (one message per round trip) qualifies, a stream goes to the writer.
pub const DIRECT_GAP: std::time::Duration = std::time::Duration::from_micros(50);

thread_local! {
    static FRAME: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(DIRECT_MAX + 512));
}

#[derive(Debug, Default)]
struct Inner {
    fifo: VecDeque<Outgoing>,
    monotonic: MonotonicQueue<Outgoing>,
    bytes: usize,
    closed: bool,
    /// Items the writer took and has not reported written.
    inflight: usize,
    /// The writer took items and is writing them.
    writer_busy: bool,
    last_direct: Option<std::time::Instant>,
}

/// One connection's send queue.
#[derive(Debug)]
pub struct LinkQueue {
    inner: Mutex<Inner>,
    wake: Notify,
    max_bytes: usize,
    replaced: Arc<AtomicU64>,
    /// The connection's socket, for direct writes by senders.
    fd: RawFd,
    /// The largest frame the peer accepts (it said so in the handshake).
    max_frame: usize,
}

impl LinkQueue {
    pub fn new(max_bytes: usize, replaced: Arc<AtomicU64>, fd: RawFd, max_frame: usize) -> Self {
        LinkQueue { inner: Mutex::new(Inner::default()), wake: Notify::new(), max_bytes, replaced, fd, max_frame }
    }

    /// Writes a small message straight to the socket when nothing is queued or being written.
    /// Returns the item back when it must be queued instead, with the bytes the socket did not
    /// take when it took part of the frame.
    fn try_direct(&self, inner: &mut Inner, item: Outgoing) -> Result<(), Outgoing> {
        let Outgoing::Message { dest, payload } = &item else { return Err(item) };
        if inner.writer_busy || !inner.fifo.is_empty() || !inner.monotonic.is_empty() || payload.len() > DIRECT_MAX {
            return Err(item);
        }
        let now = std::time::Instant::now();
        if inner.last_direct.is_some_and(|t| now.duration_since(t) < DIRECT_GAP) {
            return Err(item);
        }
        inner.last_direct = Some(now);
        // None: nothing written; Some(None): all of it; Some(Some(rest)): all but `rest`.
        let written = FRAME.with(|frame| {
            let mut frame = frame.borrow_mut();
            frame.clear();
            encode_message_header(dest, payload.len(), &mut frame);
            frame.extend_from_slice(payload);
            // SAFETY: the descriptor is open: the writer closes this queue (checked by the caller
            // under the same lock) before it drops the socket. MSG_DONTWAIT never blocks the
            // calling scheduler; MSG_NOSIGNAL turns a closed peer into an error, not a signal.
            let sent = unsafe {
                libc::send(self.fd, frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            match sent {
                n if n as usize == frame.len() => Some(None),
                n if n > 0 => Some(Some(Bytes::copy_from_slice(&frame[n as usize..]))),
                _ => None,
            }
        });
        match written {
            Some(None) => Ok(()),
            Some(Some(rest)) => Err(Outgoing::Frame(rest)),
            None => Err(item),
        }
    }

    /// Queues one item; `monotonic` gives the key under which it supersedes older items.
    pub fn push(&self, item: Outgoing, monotonic: Option<MonotonicKey>) -> Result<(), SendError> {
        let len = item.wire_len();
        let size = item.frame_len();
        if size > self.max_frame {
            // The peer would close the link on it: refused here, where the sender learns of it.
            return Err(SendError::MessageTooLarge { size, max: self.max_frame });
        }
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.closed {
                return Err(SendError::NotConnected);
            }
            // An item larger than the whole bound still goes through on an empty queue, so the
            // maximum message size is set by max_frame_size, not by the queue bound.
            if inner.bytes > 0 && inner.bytes + len > self.max_bytes {
                return Err(SendError::QueueFull);
            }
            let item = if monotonic.is_none() {
                match self.try_direct(&mut inner, item) {
                    Ok(()) => return Ok(()),
                    Err(rest) => rest,
                }
            } else {
                item
            };
            inner.bytes += len;
            match monotonic {
                Some(key) => {
                    if inner.monotonic.push(key, item) {
                        self.replaced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => inner.fifo.push_back(item),
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Waits for items and takes all of them. `None` once the queue is closed and drained.
    pub async fn take_all(&self, out: &mut Vec<Outgoing>) -> Option<()> {
        loop {
            {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                if !inner.fifo.is_empty() || !inner.monotonic.is_empty() {
                    inner.writer_busy = true;
                    let before = out.len();
                    out.extend(inner.fifo.drain(..));
                    while let Some(item) = inner.monotonic.pop() {
                        out.push(item);
                    }
                    inner.inflight += out.len() - before;
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

    /// Gives back the budget of items that were written.
    pub fn release(&self, bytes: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Replaced monotonic items were counted but never written; the floor keeps the
        // accounting from underflowing, and a drained queue resets it exactly.
        inner.bytes = inner.bytes.saturating_sub(bytes);
        if inner.fifo.is_empty() && inner.monotonic.is_empty() {
            inner.bytes = 0;
        }
    }

    /// The writer wrote `items` of those it took.
    pub fn written(&self, items: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.inflight = inner.inflight.saturating_sub(items);
    }

    /// Items accepted by `push` and not yet written: queued, or taken by the writer and not
    /// reported written.
    pub fn unwritten(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.fifo.len() + inner.monotonic.len() + inner.inflight
    }

    /// Stops accepting items; the writer flushes what is queued, then ends.
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.wake.notify_one();
    }

    /// The link is dead: stops accepting items, drops what is queued, and returns how many items
    /// were accepted and will never be written (queued ones and those the writer holds).
    /// Calling it again returns 0.
    pub fn abort(&self) -> usize {
        let lost = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.closed = true;
            let lost = inner.fifo.len() + inner.monotonic.len() + inner.inflight;
            inner.fifo.clear();
            while inner.monotonic.pop().is_some() {}
            inner.inflight = 0;
            inner.bytes = 0;
            lost
        };
        self.wake.notify_one();
        lost
    }

    pub fn wire_len(item: &Outgoing) -> usize {
        item.wire_len()
    }
}
