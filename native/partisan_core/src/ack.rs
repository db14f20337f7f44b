//! Exactly-once delivery for messages sent with `ack => true`: sequence numbers, cumulative acks,
//! go-back-N retransmission.
//!
//! TCP delivers a connection's bytes in order or not at all, but a connection can die with
//! messages in the sender's queue, in the kernel's buffers or on the wire, and a plain send that
//! returned `ok` is then lost. For messages sent with `ack`, the sender keeps every message
//! until the receiver acknowledges it, and sends again what is unacknowledged when the link comes
//! back or when nothing progressed for `retransmit_interval`; the receiver delivers each message
//! once and in order, however many times it arrives.
//!
//! # Streams
//! Messages are numbered per *stream*: one per link of the sender (destination node, channel,
//! connection index — the connection an affinity key picks), from 1, within the sender's
//! incarnation. One stream per connection rather than per channel keeps parallel connections
//! independent (a gap on one does not hold up the others) and keeps a sender's order, since a
//! sender's messages take one connection. Each frame ([`crate::frame::Frame::Sequenced`])
//! carries the sender's incarnation, the message's number and the stream's *base* (the oldest
//! number the sender still holds).
//!
//! # Receiver ([`Inbound`])
//! Delivers number `expected` and moves on; a number below is a duplicate (acknowledged again,
//! not delivered), a number above is early (dropped: the sender resends from its oldest
//! unacknowledged message, in order). A base above `expected` means the sender gave messages up
//! (their destination node was removed from membership; counted there): the receiver skips to
//! it. A higher incarnation is a restarted sender: its stream starts over at its base. So the
//! receiver's whole dedup window is one number per stream, and a message is delivered at most
//! once and only after every earlier one of its stream.
//!
//! # Sender ([`Outbox`], one per destination node)
//! A state machine driven by events (`send`, `link_up`, `link_down`, `on_ack`, `tick`,
//! `transmit_failed`) whose output is [`Transmit`]s for the shell to queue on the link, in order
//! ([`Outbox::poll_transmit`]). What it holds is bounded in bytes per destination
//! (`max_unacked_bytes`); a send beyond is refused ([`QueueFull`]), never dropped after `ok`.
//! Acks are cumulative, so the receiver sends one per batch of frames read; a lost ack is
//! repaired by the next one or by a retransmission that the receiver acknowledges again.
//!
//! ```
//! use bytes::Bytes;
//! use partisan_core::ack::{Inbound, Outbox, OutboxConfig, Verdict};
//! use partisan_core::frame::Dest;
//!
//! let mut out = Outbox::new(OutboxConfig { retransmit_interval: 1000, max_bytes: 1 << 20 });
//! out.link_up(0, 0u16);
//! out.send(0, 0u16, Dest::Name("srv".into()), Bytes::from_static(b"hi")).unwrap();
//! let t = out.poll_transmit().unwrap();
//! let mut rx = Inbound::default();
//! assert_eq!(rx.receive(7, t.seq, t.base), Verdict::Deliver);
//! assert_eq!(rx.receive(7, t.seq, t.base), Verdict::Duplicate); // a retransmission
//! let (_, acked) = rx.take_ack().unwrap();
//! out.on_ack(5, &0u16, acked);
//! assert_eq!(out.unacked(), 0);
//! ```

use crate::frame::{message_frame_len, Dest, SEQUENCED_HEADER};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// The sender's settings (`retransmit_interval`, `max_unacked_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Milliseconds without progress (no ack advanced) after which what is unacknowledged on an
    /// up link is sent again.
    pub retransmit_interval: u64,
    /// Bytes of unacknowledged messages held for one destination node, at most.
    pub max_bytes: usize,
}

/// The destination's unacknowledged messages already take `max_unacked_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the destination's unacknowledged messages fill max_unacked_bytes")]
pub struct QueueFull;

/// A message's encoded term as an [`Outbox`] holds it until it is acknowledged. It is cloned
/// for every (re)transmission, so a clone must be cheap: `Bytes`, or the shell's own type (the
/// tokio shell's payload references the VM's large binaries instead of copies of them).
pub trait AckPayload: Clone {
    /// Its length in bytes.
    fn encoded_len(&self) -> usize;
}

impl AckPayload for Bytes {
    fn encoded_len(&self) -> usize {
        self.len()
    }
}

/// A message to put on the wire as a [`crate::frame::Frame::Sequenced`] on stream `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<K, P = Bytes> {
    pub key: K,
    pub seq: u64,
    pub base: u64,
    pub dest: Dest,
    pub payload: P,
}

#[derive(Debug, Clone)]
struct Pending<P> {
    seq: u64,
    dest: Dest,
    payload: P,
}

/// What one message takes of an [`Outbox`]'s budget while it is unacknowledged (its sequenced
/// frame's length).
pub fn budget(dest: &Dest, payload_len: usize) -> usize {
    SEQUENCED_HEADER + message_frame_len(dest, payload_len)
}

impl<P: AckPayload> Pending<P> {
    fn budget(&self) -> usize {
        budget(&self.dest, self.payload.encoded_len())
    }
}

#[derive(Debug, Clone)]
struct Stream<P> {
    /// The number the next message gets.
    next_seq: u64,
    /// Unacknowledged messages, oldest first, numbered consecutively.
    unacked: VecDeque<Pending<P>>,
    /// The first number not handed to the current connection yet.
    next_unsent: u64,
    up: bool,
    /// When the stream last progressed (an ack advanced, the link came up, a retransmission).
    progress_at: u64,
}

impl<P> Stream<P> {
    fn new(now: u64) -> Self {
        Stream { next_seq: 1, unacked: VecDeque::new(), next_unsent: 1, up: false, progress_at: now }
    }

    /// The oldest number the sender still holds (the next one when it holds none).
    fn base(&self) -> u64 {
        self.unacked.front().map_or(self.next_seq, |p| p.seq)
    }
}

/// Counters of an [`Outbox`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages handed to a connection again (after a reconnection or a retransmit timeout).
    pub retransmitted: u64,
}

/// The sender's side for one destination node; `K` names a stream (a link: channel and
/// connection index), `P` is the payload type. See the module docs.
#[derive(Debug, Clone)]
pub struct Outbox<K, P = Bytes> {
    cfg: OutboxConfig,
    streams: BTreeMap<K, Stream<P>>,
    bytes: usize,
    transmits: VecDeque<Transmit<K, P>>,
    stats: OutboxStats,
}

impl<K: Ord + Clone, P: AckPayload> Outbox<K, P> {
    pub fn new(cfg: OutboxConfig) -> Self {
        Outbox { cfg, streams: BTreeMap::new(), bytes: 0, transmits: VecDeque::new(), stats: OutboxStats::default() }
    }

    /// Whether a message taking at least `budget` bytes (see [`budget`]) could be taken now:
    /// a sender checks it before encoding a large message that would only be refused.
    pub fn has_room(&self, budget: usize) -> bool {
        self.bytes == 0 || self.bytes + budget <= self.cfg.max_bytes
    }

    /// Takes a message for stream `key`; returns its number, or [`QueueFull`] when the
    /// destination's budget is used up (one message always fits in an empty budget, so the
    /// largest message is bounded by the frame size, not by the budget).
    pub fn send(&mut self, now: u64, key: K, dest: Dest, payload: P) -> Result<u64, QueueFull> {
        let size = budget(&dest, payload.encoded_len());
        if !self.has_room(size) {
            return Err(QueueFull);
        }
        let stream = self.streams.entry(key.clone()).or_insert_with(|| Stream::new(now));
        let pending = Pending { seq: stream.next_seq, dest, payload };
        self.bytes += size;
        let seq = pending.seq;
        stream.next_seq += 1;
        if stream.unacked.is_empty() {
            stream.progress_at = now;
        }
        if stream.up && stream.next_unsent == seq {
            stream.next_unsent += 1;
            let base = stream.base().min(seq);
            self.transmits.push_back(Transmit { key, seq, base, dest: pending.dest.clone(), payload: pending.payload.clone() });
        }
        stream.unacked.push_back(pending);
        Ok(seq)
    }

    /// A connection of stream `key` is up: everything unacknowledged goes on it, oldest first
    /// (what an earlier connection carried may not have arrived).
    pub fn link_up(&mut self, now: u64, key: K) {
        let stream = self.streams.entry(key.clone()).or_insert_with(|| Stream::new(now));
        stream.up = true;
        stream.progress_at = now;
        self.go_back(&key);
    }

    /// Stream `key` has no connection: nothing is sent on it until [`Outbox::link_up`].
    pub fn link_down(&mut self, key: &K) {
        if let Some(stream) = self.streams.get_mut(key) {
            stream.up = false;
        }
        self.transmits.retain(|t| &t.key != key);
    }

    /// The receiver has every message of stream `key` up to `seq`: they are forgotten. Returns
    /// how many were.
    pub fn on_ack(&mut self, now: u64, key: &K, seq: u64) -> usize {
        let Some(stream) = self.streams.get_mut(key) else { return 0 };
        let mut freed = 0;
        while stream.unacked.front().is_some_and(|p| p.seq <= seq) {
            let p = stream.unacked.pop_front().expect("checked");
            self.bytes -= p.budget();
            freed += 1;
        }
        if freed > 0 {
            stream.progress_at = now;
            stream.next_unsent = stream.next_unsent.max(stream.base());
        }
        freed
    }

    /// The shell could not queue the transmit of `seq` on stream `key` (its connection's queue
    /// is full or closed): it and the later ones wait for the next retransmission.
    pub fn transmit_failed(&mut self, key: &K, seq: u64) {
        if let Some(stream) = self.streams.get_mut(key) {
            stream.next_unsent = stream.next_unsent.min(seq).max(stream.base());
        }
        self.transmits.retain(|t| &t.key != key);
    }

    /// Resends what is unacknowledged on every up stream that made no progress for
    /// `retransmit_interval`.
    pub fn tick(&mut self, now: u64) {
        let due: Vec<K> = self
            .streams
            .iter()
            .filter(|(_, s)| s.up && !s.unacked.is_empty() && now >= s.progress_at.saturating_add(self.cfg.retransmit_interval))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.streams.get_mut(&key).expect("listed above").progress_at = now;
            self.go_back(&key);
        }
    }

    /// When [`Outbox::tick`] has something to do, at the earliest.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.streams
            .values()
            .filter(|s| s.up && !s.unacked.is_empty())
            .map(|s| s.progress_at.saturating_add(self.cfg.retransmit_interval))
            .min()
    }

    /// The next message to queue on its stream's connection, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit<K, P>> {
        self.transmits.pop_front()
    }

    /// Gives up every unacknowledged message (the destination left the membership); returns how
    /// many messages and bytes. Numbering goes on, and the next frame's base tells the receiver
    /// to skip the numbers given up.
    pub fn drain(&mut self) -> (usize, usize) {
        let mut lost = 0;
        for stream in self.streams.values_mut() {
            lost += stream.unacked.len();
            stream.unacked.clear();
            stream.next_unsent = stream.next_seq;
        }
        self.transmits.clear();
        (lost, std::mem::take(&mut self.bytes))
    }

    /// Messages held (sent and not acknowledged, or waiting for a link).
    pub fn unacked(&self) -> usize {
        self.streams.values().map(|s| s.unacked.len()).sum()
    }

    /// Bytes of the budget in use.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    /// Queues every unacknowledged message of an up stream again, from the oldest.
    fn go_back(&mut self, key: &K) {
        self.transmits.retain(|t| &t.key != key);
        let stream = self.streams.get_mut(key).expect("callers checked");
        if !stream.up {
            return;
        }
        let base = stream.base();
        for p in &stream.unacked {
            if p.seq < stream.next_unsent {
                self.stats.retransmitted += 1;
            }
            self.transmits.push_back(Transmit { key: key.clone(), seq: p.seq, base, dest: p.dest.clone(), payload: p.payload.clone() });
        }
        stream.next_unsent = stream.next_seq;
    }
}

/// What the receiver does with a sequenced message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next message of the stream: deliver it.
    Deliver,
    /// Delivered before: drop it (it is acknowledged again).
    Duplicate,
    /// An earlier message is missing: drop it; the sender resends both in order.
    Early,
    /// From an older incarnation of the sender than one already heard: drop it.
    Stale,
}

/// The receiver's side of one stream; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inbound {
    incarnation: u64,
    /// The next number to deliver; 0 before the first message.
    expected: u64,
    ack_due: bool,
}

impl Inbound {
    /// Decides about message `seq` of the stream of sender incarnation `incarnation`, whose
    /// oldest held message is `base`.
    pub fn receive(&mut self, incarnation: u64, seq: u64, base: u64) -> Verdict {
        if incarnation < self.incarnation {
            return Verdict::Stale;
        }
        if self.expected == 0 || incarnation > self.incarnation {
            self.incarnation = incarnation;
            self.expected = base.max(1);
        }
        // The sender gave up the numbers below its base.
        self.expected = self.expected.max(base);
        self.ack_due = true;
        match seq.cmp(&self.expected) {
            std::cmp::Ordering::Less => Verdict::Duplicate,
            std::cmp::Ordering::Equal => {
                self.expected += 1;
                Verdict::Deliver
            }
            std::cmp::Ordering::Greater => Verdict::Early,
        }
    }

    /// The cumulative ack to send, `(incarnation, seq)`, when one is due (once per batch of
    /// frames read).
    pub fn take_ack(&mut self) -> Option<(u64, u64)> {
        if !std::mem::take(&mut self.ack_due) || self.expected == 0 {
            return None;
        }
        Some((self.incarnation, self.expected - 1))
    }
}

#[cfg(test)]
mod tests;
