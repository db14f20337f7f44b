//! `ack => true` across the overlay: messages for a node that is not (or not always) a
//! neighbour, delivered exactly once and in order while both nodes live.
//!
//! A relayed message ([`crate::relay`]) is best effort: it is flooded over the links that are up
//! as it passes, and a link that closes with it in its queue loses it — on HyParView, where views
//! change all the time, that happens. The link-level ack ([`crate::ack`]) cannot repair it: it
//! numbers messages per link, and a node that is not a neighbour has no link. So these acks are
//! end to end, over the relay:
//!
//! - The origin numbers its messages per target (its incarnation, `seq`, and `base`, the oldest
//!   number it still holds, as [`crate::ack`] does) and keeps them in an [`Outbox`] until the
//!   target acknowledges them. Each transmission is a fresh relay (a new relay id), so the
//!   flood's seen-caches let a retransmission through.
//! - The target delivers in order. Floods take different paths, so a message ahead of a gap waits
//!   in a bounded reorder buffer instead of being dropped. It answers with a cumulative ack,
//!   at most once per origin every [`ACK_DELAY_MS`]: piggy-backed on its own next message to the
//!   origin when it sends one by then (a call's reply carries its request's ack), else relayed
//!   on its own.
//! - What is unacknowledged is sent again after `retransmit_interval` without progress, then
//!   after twice, four times... that long (up to [`MAX_BACKOFF`] doublings) while nothing
//!   progresses: each retransmission is a flood, and a target cut off by a partition should not
//!   turn its sender's window into a storm. A target that acknowledges nothing for
//!   `give_up_after` is given up: its messages are dropped and reported ([`Output::Settled`]),
//!   never silently.
//!
//! The node ([`crate::node::Node`]) routes the relays, and the shell budgets the bytes held per
//! target (the outboxes here are unbounded), so a send is refused before it is accepted.
//!
//! ```
//! use bytes::Bytes;
//! use partisan_core::frame::{Dest, RelayBody};
//! use partisan_core::relay_ack::{Output, RelayAckConfig, RelayAcks};
//!
//! let cfg = RelayAckConfig::default();
//! let (mut a, mut b) = (RelayAcks::new(cfg, 1), RelayAcks::new(cfg, 2));
//! a.send(0, "b", Dest::Name("srv".into()), Bytes::from_static(b"hi"));
//! let Some(Output::Send { body, .. }) = a.poll_output() else { panic!() };
//! b.receive(1, "a", body.clone());
//! b.receive(2, "a", body); // a retransmission: not delivered twice
//! assert!(matches!(b.poll_output(), Some(Output::Deliver { .. })));
//! assert_eq!(b.poll_output(), None);
//! b.tick(20); // the batched ack (b had no message of its own to a to carry it)
//! let Some(Output::Send { target, body }) = b.poll_output() else { panic!() };
//! assert_eq!(target, "a");
//! a.receive(30, "b", body);
//! assert!(matches!(a.poll_output(), Some(Output::Settled { acked: 1, given_up: 0, .. })));
//! ```

use crate::ack::{Outbox, OutboxConfig, Transmit};
use crate::frame::{Dest, RelayAck, RelayBody};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// How long a target waits before acknowledging, so that one ack covers a burst.
pub const ACK_DELAY_MS: u64 = 10;
/// Messages of one origin held ahead of a gap, at most (beyond, dropped: they come again).
pub const MAX_EARLY: usize = 4096;
/// Bytes of one origin's messages held ahead of a gap, at most.
pub const MAX_EARLY_BYTES: usize = 16 << 20;
/// Doublings of the wait between retransmissions that make no progress, at most (32 ×
/// `retransmit_interval`).
pub const MAX_BACKOFF: u32 = 5;

/// When to retransmit and when to give up, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAckConfig {
    /// Without progress for this long, what is unacknowledged is sent again
    /// (`retransmit_interval`).
    pub retransmit_interval: u64,
    /// A target that acknowledged nothing for this long while messages wait is given up.
    pub give_up_after: u64,
}

impl Default for RelayAckConfig {
    fn default() -> Self {
        RelayAckConfig { retransmit_interval: 1000, give_up_after: 60_000 }
    }
}

/// What the acked relays ask of their node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Relay `body` to `target` (as a new relay). When it cannot go anywhere and is a
    /// [`RelayBody::Sequenced`], report it with [`RelayAcks::transmit_failed`].
    Send { target: String, body: RelayBody },
    /// Deliver to a process of this node (in the order the origin sent).
    Deliver { origin: String, dest: Dest, payload: Bytes },
    /// Messages to `target` left the outbox: `acked` acknowledged, `given_up` dropped (the target
    /// acknowledged nothing for `give_up_after`), `bytes` of budget freed (see [`budget`]).
    Settled { target: String, acked: usize, given_up: usize, bytes: usize },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayAckStats {
    /// Messages received again after their delivery (acknowledged again, not delivered).
    pub duplicates: u64,
    /// Messages dropped because the reorder buffer was full (they come again).
    pub early_dropped: u64,
    /// Messages given up (their target acknowledged nothing for `give_up_after`).
    pub given_up: u64,
}

/// The budget one message takes while unacknowledged: the outboxes' own accounting, so what the
/// shell reserves per target is what [`Output::Settled`] frees.
pub use crate::ack::budget;

#[derive(Debug, Clone)]
struct Target {
    outbox: Outbox<()>,
    /// The last time an ack advanced (or the outbox went from empty to holding a message).
    progress_at: u64,
    /// Retransmissions since then, and when the next one is due.
    backoff: u32,
    retransmit_at: u64,
}

impl Target {
    fn progressed(&mut self, now: u64, retransmit_interval: u64) {
        self.progress_at = now;
        self.backoff = 0;
        self.retransmit_at = now.saturating_add(retransmit_interval);
    }
}

#[derive(Debug, Clone, Default)]
struct Origin {
    incarnation: u64,
    /// The next number to deliver; 0 before the first message.
    expected: u64,
    early: BTreeMap<u64, (Dest, Bytes)>,
    early_bytes: usize,
    /// When the ack is due (none is while nothing arrived since the last one).
    ack_at: Option<u64>,
}

impl Origin {
    /// The cumulative ack of this stream; none is due after it.
    fn take_ack(&mut self) -> RelayAck {
        self.ack_at = None;
        RelayAck { incarnation: self.incarnation, seq: self.expected.saturating_sub(1) }
    }
}

/// The acked relays of one node: an outbox per target, a receiver per origin.
#[derive(Debug, Clone)]
pub struct RelayAcks {
    cfg: RelayAckConfig,
    incarnation: u64,
    targets: BTreeMap<String, Target>,
    origins: BTreeMap<String, Origin>,
    out: VecDeque<Output>,
    stats: RelayAckStats,
}

impl RelayAcks {
    /// `incarnation` grows across restarts of the node (the receivers restart a stream on it).
    pub fn new(cfg: RelayAckConfig, incarnation: u64) -> Self {
        RelayAcks { cfg, incarnation, targets: BTreeMap::new(), origins: BTreeMap::new(), out: VecDeque::new(), stats: RelayAckStats::default() }
    }

    /// Numbers a message for `target` and asks for its first transmission; returns its number.
    pub fn send(&mut self, now: u64, target: &str, dest: Dest, payload: Bytes) -> u64 {
        let retransmit_interval = self.cfg.retransmit_interval;
        let t = self.targets.entry(target.to_owned()).or_insert_with(|| {
            let mut outbox = Outbox::new(OutboxConfig { retransmit_interval, max_bytes: usize::MAX });
            outbox.link_up(now, ());
            Target { outbox, progress_at: now, backoff: 0, retransmit_at: now }
        });
        if t.outbox.unacked() == 0 {
            t.progressed(now, retransmit_interval);
        }
        let seq = t.outbox.send(now, (), dest, payload).expect("an unbounded outbox takes everything");
        self.flush(target);
        seq
    }

    /// The transmission of `seq` to `target` could not go anywhere (no neighbour): it and the
    /// later ones go at the next retransmission.
    pub fn transmit_failed(&mut self, target: &str, seq: u64) {
        if let Some(t) = self.targets.get_mut(target) {
            t.outbox.transmit_failed(&(), seq);
        }
    }

    /// A relayed body for this node from `origin`: a message (delivered in order, once) or an
    /// ack. [`RelayBody::Message`] is not for this layer and is ignored.
    pub fn receive(&mut self, now: u64, origin: &str, body: RelayBody) {
        match body {
            RelayBody::Sequenced { incarnation, seq, base, ack, dest, payload } => {
                if let Some(ack) = ack {
                    self.on_ack(now, origin, ack);
                }
                self.on_message(now, origin, incarnation, seq, base, dest, payload)
            }
            RelayBody::Ack(ack) => self.on_ack(now, origin, ack),
            RelayBody::Message { .. } => {}
        }
    }

    /// Sends the acks that are due, retransmits what made no progress, gives up silent targets.
    pub fn tick(&mut self, now: u64) {
        for (origin, o) in &mut self.origins {
            if o.ack_at.is_some_and(|t| t <= now) {
                let body = RelayBody::Ack(o.take_ack());
                self.out.push_back(Output::Send { target: origin.clone(), body });
            }
        }
        let names: Vec<String> = self.targets.keys().cloned().collect();
        for name in names {
            let t = self.targets.get_mut(&name).expect("listed above");
            if t.outbox.unacked() > 0 && now >= t.progress_at.saturating_add(self.cfg.give_up_after) {
                let (given_up, bytes) = t.outbox.drain();
                self.stats.given_up += given_up as u64;
                self.out.push_back(Output::Settled { target: name, acked: 0, given_up, bytes });
                continue;
            }
            if t.outbox.unacked() > 0 && now >= t.retransmit_at {
                // Due for the outbox too: its own timer restarts only on progress or here.
                t.outbox.tick(now);
                t.backoff = (t.backoff + 1).min(MAX_BACKOFF);
                t.retransmit_at = now.saturating_add(self.cfg.retransmit_interval << t.backoff);
                self.flush(&name);
            }
        }
    }

    /// When [`RelayAcks::tick`] has work, at the earliest.
    pub fn poll_timeout(&self) -> Option<u64> {
        let acks = self.origins.values().filter_map(|o| o.ack_at);
        let targets = self.targets.values().filter(|t| t.outbox.unacked() > 0).flat_map(|t| {
            [t.retransmit_at, t.progress_at.saturating_add(self.cfg.give_up_after)]
        });
        acks.chain(targets).min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Messages held for `target` (sent and not acknowledged).
    pub fn unacked(&self, target: &str) -> usize {
        self.targets.get(target).map_or(0, |t| t.outbox.unacked())
    }

    /// Messages held (sent and not acknowledged), over every target.
    pub fn held(&self) -> usize {
        self.targets.values().map(|t| t.outbox.unacked()).sum()
    }

    /// Transmissions after the first, over every target.
    pub fn retransmitted(&self) -> u64 {
        self.targets.values().map(|t| t.outbox.stats().retransmitted).sum()
    }

    pub fn stats(&self) -> RelayAckStats {
        self.stats
    }

    fn flush(&mut self, target: &str) {
        let Some(t) = self.targets.get_mut(target) else { return };
        while let Some(Transmit { seq, base, dest, payload, .. }) = t.outbox.poll_transmit() {
            // An ack due to the target rides along (lost with it if it goes nowhere: the target
            // then sends its message again, and the duplicate is acknowledged again).
            let ack = self.origins.get_mut(target).filter(|o| o.ack_at.is_some()).map(Origin::take_ack);
            let body = RelayBody::Sequenced { incarnation: self.incarnation, seq, base, ack, dest, payload };
            self.out.push_back(Output::Send { target: target.to_owned(), body });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_message(&mut self, now: u64, origin: &str, incarnation: u64, seq: u64, base: u64, dest: Dest, payload: Bytes) {
        let o = self.origins.entry(origin.to_owned()).or_default();
        if incarnation < o.incarnation {
            return; // an older incarnation of the origin: its stream is over
        }
        if o.expected == 0 || incarnation > o.incarnation {
            *o = Origin { incarnation, expected: base.max(1), ..Origin::default() };
        }
        o.ack_at.get_or_insert(now + ACK_DELAY_MS);
        // The origin gave up the numbers below its base.
        if base > o.expected {
            o.expected = base;
            while o.early.first_key_value().is_some_and(|(s, _)| *s < base) {
                let (_, (d, p)) = o.early.pop_first().expect("checked");
                o.early_bytes -= budget(&d, p.len());
            }
        }
        if seq < o.expected || o.early.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if seq > o.expected {
            let size = budget(&dest, payload.len());
            if o.early.len() >= MAX_EARLY || o.early_bytes + size > MAX_EARLY_BYTES {
                self.stats.early_dropped += 1;
            } else {
                o.early_bytes += size;
                o.early.insert(seq, (dest, payload));
            }
            return;
        }
        o.expected += 1;
        self.out.push_back(Output::Deliver { origin: origin.to_owned(), dest, payload });
        while let Some(entry) = o.early.first_entry().filter(|e| *e.key() == o.expected) {
            let (d, p) = entry.remove();
            o.early_bytes -= budget(&d, p.len());
            o.expected += 1;
            self.out.push_back(Output::Deliver { origin: origin.to_owned(), dest: d, payload: p });
        }
    }

    fn on_ack(&mut self, now: u64, from: &str, RelayAck { incarnation, seq }: RelayAck) {
        if incarnation != self.incarnation {
            return; // acknowledges a stream of an earlier incarnation of this node
        }
        let Some(t) = self.targets.get_mut(from) else { return };
        let before = t.outbox.bytes();
        let acked = t.outbox.on_ack(now, &(), seq);
        if acked > 0 {
            t.progressed(now, self.cfg.retransmit_interval);
            self.out.push_back(Output::Settled { target: from.to_owned(), acked, given_up: 0, bytes: before - t.outbox.bytes() });
        }
    }
}

#[cfg(test)]
mod tests;
