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

use crate::SendError;
use bytes::Bytes;
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
                        Dest::PidId { .. } => 8,
                    }
            }
            Outgoing::Frame(b) => b.len(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    fifo: VecDeque<Outgoing>,
    monotonic: MonotonicQueue<Outgoing>,
    bytes: usize,
    closed: bool,
}

/// One connection's send queue.
#[derive(Debug)]
pub struct LinkQueue {
    inner: Mutex<Inner>,
    wake: Notify,
    max_bytes: usize,
    replaced: Arc<AtomicU64>,
}

impl LinkQueue {
    pub fn new(max_bytes: usize, replaced: Arc<AtomicU64>) -> Self {
        LinkQueue { inner: Mutex::new(Inner::default()), wake: Notify::new(), max_bytes, replaced }
    }

    /// Queues one item; `monotonic` gives the key under which it supersedes older items.
    pub fn push(&self, item: Outgoing, monotonic: Option<MonotonicKey>) -> Result<(), SendError> {
        let len = item.wire_len();
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
                    out.extend(inner.fifo.drain(..));
                    while let Some(item) = inner.monotonic.pop() {
                        out.push(item);
                    }
                    return Some(());
                }
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

    /// Stops accepting items; the writer flushes what is queued, then ends.
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.wake.notify_one();
    }

    pub fn wire_len(item: &Outgoing) -> usize {
        item.wire_len()
    }
}
