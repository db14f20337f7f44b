//! The shell of `ack => true`: runs `partisan_core::ack`'s state machines on real links.
//!
//! The core decides what to number, keep, resend and deliver; this module only carries it out.
//! Sends stay on the caller's thread as plain sends do: a sender locks its destination's
//! [`Outbox`] (one per destination node), numbers the message and, when the stream's link is up,
//! pushes the frames the outbox asks for onto that link's queue, under the same lock, so frames
//! enter the queue in the order they were numbered. The driver tells each outbox when links come
//! up and go ([`Acks::link_up`], [`Acks::link_down`]), a task ticks every outbox for
//! retransmissions ([`Acks::tick`]), and a destination removed from membership has its messages
//! given up, counted and logged ([`Acks::give_up`]).
//!
//! Messages sent with `ack` through the overlay (`partisan_core::relay_ack`, run by the driver's
//! node) are budgeted here: a send reserves its bytes for the destination before it is accepted
//! ([`Acks::reserve_relayed`]), and the driver frees them as they are acknowledged or given up.
//!
//! Receiving: each stream (sender node, channel, connection) has one [`Inbound`], shared by the
//! readers of that link's successive connections; a reader holds its lock while it delivers, so
//! an old connection still being read cannot deliver out of order with its replacement.

use crate::lock::{MutexExt, RwLockExt};
use crate::queue::{LinkQueue, Outgoing, Payload};
use crate::routes::Routes;
use crate::{SendError, Stats};
use partisan_core::ack::{Inbound, Outbox, OutboxConfig};
use partisan_core::frame::Dest;
use partisan_core::overlay::LinkId;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// A stream of a destination: (channel index, connection index).
type StreamKey = (usize, u16);

/// The receiving side of a sender's stream: (sender node, channel index, connection index).
type InboundKey = (String, usize, u16);

/// One destination's outbox and the queues of its links that are up.
struct Peer {
    outbox: Outbox<StreamKey, Payload>,
    queues: HashMap<StreamKey, Arc<LinkQueue>>,
}

impl Peer {
    /// Queues what the outbox asks for; a queue that refuses leaves the rest of its stream to the
    /// next retransmission.
    fn flush(&mut self, incarnation: u64) {
        while let Some(t) = self.outbox.poll_transmit() {
            let item = Outgoing::Sequenced { incarnation, seq: t.seq, base: t.base, dest: t.dest, payload: t.payload };
            let pushed = self.queues.get(&t.key).map(|q| q.push(item, None));
            if !matches!(pushed, Some(Ok(()))) {
                self.outbox.transmit_failed(&t.key, t.seq);
            }
        }
    }
}

/// Every outbox and inbound stream of a node.
pub(crate) struct Acks {
    cfg: OutboxConfig,
    incarnation: u64,
    epoch: Instant,
    peers: RwLock<HashMap<String, Arc<Mutex<Peer>>>>,
    inbound: Mutex<HashMap<InboundKey, Arc<Mutex<Inbound>>>>,
    /// Bytes of messages sent with `ack` through the overlay and not settled, per destination.
    relayed: Mutex<HashMap<String, usize>>,
}

impl Acks {
    pub fn new(cfg: OutboxConfig, incarnation: u64) -> Self {
        Acks { cfg, incarnation, epoch: Instant::now(), peers: RwLock::default(), inbound: Mutex::default(), relayed: Mutex::default() }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The outbox of `node`, made on first use with the links up now.
    fn peer(&self, node: &str, routes: &Routes) -> Arc<Mutex<Peer>> {
        if let Some(p) = self.peers.read_unpoisoned().get(node) {
            return p.clone();
        }
        let mut peers = self.peers.write_unpoisoned();
        peers
            .entry(node.to_owned())
            .or_insert_with(|| {
                let mut peer = Peer { outbox: Outbox::new(self.cfg), queues: HashMap::new() };
                let now = self.now();
                for (link, queue) in routes.links_of(node) {
                    let key = (link.channel, link.conn);
                    peer.outbox.link_up(now, key);
                    peer.queues.insert(key, queue);
                }
                Arc::new(Mutex::new(peer))
            })
            .clone()
    }

    /// Whether `node`'s outbox could take a message of at least `budget` bytes now.
    pub fn has_room(&self, routes: &Routes, node: &str, budget: usize) -> bool {
        self.peer(node, routes).lock_unpoisoned().outbox.has_room(budget)
    }

    /// Numbers a message for `node` on connection `conn` of `channel` and queues it when that
    /// link is up; it waits otherwise. `QueueFull` when the destination's budget is used up.
    pub fn send(&self, routes: &Routes, node: &str, channel: usize, conn: u16, dest: Dest, payload: Payload) -> Result<(), SendError> {
        let peer = self.peer(node, routes);
        let mut peer = peer.lock_unpoisoned();
        peer.outbox.send(self.now(), (channel, conn), dest, payload).map_err(|_| SendError::QueueFull)?;
        peer.flush(self.incarnation);
        Ok(())
    }

    /// A connection of `link` is up with `queue`: what its stream holds goes on it.
    pub fn link_up(&self, link: &LinkId, queue: &Arc<LinkQueue>) {
        let Some(peer) = self.peers.read_unpoisoned().get(&link.node).cloned() else { return };
        let mut peer = peer.lock_unpoisoned();
        let key = (link.channel, link.conn);
        if peer.queues.get(&key).is_some_and(|q| Arc::ptr_eq(q, queue)) {
            return; // already known (the outbox was made after the link was registered)
        }
        peer.queues.insert(key, queue.clone());
        peer.outbox.link_up(self.now(), key);
        peer.flush(self.incarnation);
    }

    /// `link` has no connection any more.
    pub fn link_down(&self, link: &LinkId) {
        let Some(peer) = self.peers.read_unpoisoned().get(&link.node).cloned() else { return };
        let mut peer = peer.lock_unpoisoned();
        let key = (link.channel, link.conn);
        peer.queues.remove(&key);
        peer.outbox.link_down(&key);
    }

    /// The receiver on `link` acknowledged its stream up to `seq`.
    pub fn on_ack(&self, link: &LinkId, incarnation: u64, seq: u64) {
        if incarnation != self.incarnation {
            return; // for an earlier run of this node's name
        }
        let Some(peer) = self.peers.read_unpoisoned().get(&link.node).cloned() else { return };
        let now = self.now();
        peer.lock_unpoisoned().outbox.on_ack(now, &(link.channel, link.conn), seq);
    }

    /// Retransmits what made no progress for `retransmit_interval`, for every destination.
    pub fn tick(&self) {
        let peers: Vec<Arc<Mutex<Peer>>> = self.peers.read_unpoisoned().values().cloned().collect();
        let now = self.now();
        for peer in peers {
            let mut peer = peer.lock_unpoisoned();
            if peer.outbox.poll_timeout().is_some_and(|t| t <= now) {
                peer.outbox.tick(now);
                peer.flush(self.incarnation);
            }
        }
    }

    /// `node` left the membership: gives up what is unacknowledged for it; returns how many
    /// messages. Its numbering goes on (the outbox stays), so messages sent if it comes back are
    /// not mistaken by the receiver for ones it already had.
    pub fn give_up(&self, node: &str) -> usize {
        let Some(peer) = self.peers.read_unpoisoned().get(node).cloned() else { return 0 };
        let lost = peer.lock_unpoisoned().outbox.drain().0;
        lost
    }

    /// Reserves `bytes` of `node`'s budget (`max_unacked_bytes`) for a message sent with `ack`
    /// through the overlay; `QueueFull` when it is used up (one message always fits in an empty
    /// budget, as for [`Outbox`]).
    pub fn reserve_relayed(&self, node: &str, bytes: usize) -> Result<(), SendError> {
        let mut relayed = self.relayed.lock_unpoisoned();
        let held = relayed.entry(node.to_owned()).or_default();
        if *held > 0 && *held + bytes > self.cfg.max_bytes {
            return Err(SendError::QueueFull);
        }
        *held += bytes;
        Ok(())
    }

    /// Frees what [`Acks::reserve_relayed`] reserved, once the messages are settled.
    pub fn release_relayed(&self, node: &str, bytes: usize) {
        let mut relayed = self.relayed.lock_unpoisoned();
        if let Some(held) = relayed.get_mut(node) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                relayed.remove(node);
            }
        }
    }

    /// The receiving side of the stream of `node`'s link (`channel`, `conn`) to this node.
    pub fn inbound(&self, node: &str, channel: usize, conn: u16) -> Arc<Mutex<Inbound>> {
        self.inbound.lock_unpoisoned().entry((node.to_owned(), channel, conn)).or_default().clone()
    }

    /// Messages held unacknowledged (or waiting for a link) for every destination, and the
    /// retransmissions so far.
    pub fn counts(&self) -> (u64, u64) {
        let peers = self.peers.read_unpoisoned();
        peers.values().fold((0, 0), |(held, re), p| {
            let p = p.lock_unpoisoned();
            (held + p.outbox.unacked() as u64, re + p.outbox.stats().retransmitted)
        })
    }
}

/// Counts a sequenced message the receiver dropped (`Duplicate`, `Early`, `Stale`).
pub(crate) fn count_not_delivered(stats: &Stats, duplicate: bool) {
    let counter = if duplicate { &stats.ack_duplicates } else { &stats.ack_out_of_order };
    counter.fetch_add(1, Ordering::Relaxed);
}
