//! The driver task: runs the core's [`Node`] on real time and real sockets.
//!
//! Every input of the node (API requests, links up and down, frames from peers, timers) arrives
//! on one task and is applied in order, so the node needs no locks. What the node decides, the
//! driver carries out: it dials links and registers their connections in the routing table when
//! they come up, closes them when asked, queues frames on an up connection of the asked channel,
//! and hands events to the [`crate::Sink`]. The driver itself decides nothing about protocols;
//! it keeps what only the shell can know: which connection currently serves a link. A dialed
//! connection becomes visible to senders only when the driver accepts its `LinkUp`, and reports
//! from a connection nobody expects any more (a node disconnected while it was being dialed, a
//! duplicate down) are recognised by their connection id and dropped.

use crate::conn::{dial, next_conn_id};
use crate::lock::RwLockExt;
use crate::queue::Outgoing;
use crate::routes::LinkTx;
use crate::{Cmd, CmdReceivers, Cmds, Event, Shared, Snapshot};
use partisan_core::node::{self, Action, BroadcastError, Node};
use partisan_core::overlay::{LinkId, Overlay};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

struct Driver {
    shared: Arc<Shared>,
    node: Node<Box<dyn Overlay>>,
    cmds: Cmds,
    /// Connection id of the dial in flight or the connection up, per link.
    current: HashMap<LinkId, u64>,
    epoch: Instant,
}

pub(crate) async fn run(shared: Arc<Shared>, node: Node<Box<dyn Overlay>>, cmds: Cmds, mut rx: CmdReceivers) {
    let mut d = Driver { shared, node, cmds, current: HashMap::new(), epoch: Instant::now() };
    d.publish();
    loop {
        let deadline = d.node.poll_timeout().map(|ms| d.epoch + Duration::from_millis(ms));
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Lifecycle first (it keeps the routing table right), then the application's
        // requests, then peers' frames.
        tokio::select! {
            biased;
            cmd = rx.life.recv() => match cmd {
                Some(cmd) => d.handle(cmd),
                None => return,
            },
            Some(cmd) = rx.api.recv() => d.handle(cmd),
            Some(cmd) = rx.peer.recv() => d.handle(cmd),
            _ = sleep => {
                let now = d.now();
                d.node.tick(now);
            }
        }
        d.execute();
    }
}

impl Driver {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn handle(&mut self, cmd: Cmd) {
        let now = self.now();
        match cmd {
            Cmd::Join(spec) => self.node.join(now, spec),
            Cmd::Leave(node) => self.node.leave(now, &node),
            Cmd::SetMembers(specs) => self.node.set_members(now, specs),
            Cmd::LinkUp { link, tx } => {
                if self.current.get(&link) != Some(&tx.conn_id) || self.shared.stopping.load(Ordering::SeqCst) {
                    tx.queue.close(); // stale dial (nobody wants this connection any more) or stopping
                    return;
                }
                self.register(&link, Some(tx));
                self.node.link_up(now, &link);
            }
            Cmd::LinkDown { link, conn_id } => {
                if self.current.get(&link) != Some(&conn_id) {
                    return;
                }
                self.current.remove(&link);
                self.register(&link, None);
                self.node.link_down(now, &link);
            }
            Cmd::Frame { from, frame } => {
                if let Err(e) = self.node.receive(now, &from, frame) {
                    self.shared.stats.bad_control.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.shared.log_limits.frames.allow(&self.shared.stats) {
                        warn!(from, error = %e, suppressed, "frame rejected");
                    }
                }
            }
            Cmd::Transitive { target, dest, payload } => {
                if self.node.send_transitive(now, &target, dest, payload).is_err() {
                    // The neighbours this send counted on went away meanwhile.
                    self.shared.stats.dropped_not_connected.fetch_add(1, Ordering::Relaxed);
                    self.shared.report_drop(crate::DropReason::NotConnected, Some(&target), None, 1);
                }
            }
            Cmd::AckedTransitive { target, dest, payload } => self.node.send_acked_transitive(now, &target, dest, payload),
            Cmd::Originate { msg_id, payload } => match self.node.broadcast(now, msg_id, payload) {
                Ok(()) => {}
                Err(BroadcastError::Disabled) => warn!("broadcast dropped: the broadcast config key is false"),
                Err(e) => warn!(error = %e, "broadcast not sent"),
            },
            Cmd::Merged { msg_id, is_new } => self.node.broadcast_merged(now, &msg_id, is_new),
            Cmd::Grafted { node, msg_id, round, payload } => self.node.broadcast_grafted(now, &node, &msg_id, round, payload),
            Cmd::Partition { node, blocked } => {
                let mut set = self.shared.blocked.write_unpoisoned();
                if blocked {
                    set.insert(node.clone());
                } else {
                    set.remove(&node);
                }
                drop(set);
                if blocked {
                    // Every open link to the node fails as if the network dropped it.
                    let links: Vec<(LinkId, u64)> =
                        self.current.iter().filter(|(l, _)| l.node == node).map(|(l, c)| (l.clone(), *c)).collect();
                    for (link, conn_id) in links {
                        self.handle(Cmd::LinkDown { link, conn_id });
                    }
                }
            }
        }
    }

    /// Sets (or clears) the connection of one link in the routing table, closing the one it
    /// replaces.
    fn register(&self, link: &LinkId, tx: Option<LinkTx>) {
        let queue = tx.as_ref().map(|tx| tx.queue.clone());
        if let Some(old) = self.shared.routes.set(link, tx) {
            old.queue.close();
        }
        // After the routing table, so an outbox made meanwhile finds the link either way.
        match queue {
            Some(queue) => self.shared.acks.link_up(link, &queue),
            None => self.shared.acks.link_down(link),
        }
    }

    /// Carries out what the node decided, then publishes what API calls read.
    fn execute(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Dial { link, addrs } => {
                    if self.shared.stopping.load(Ordering::Relaxed) {
                        continue;
                    }
                    let conn_id = next_conn_id();
                    self.current.insert(link.clone(), conn_id);
                    tokio::spawn(dial(link, addrs, conn_id, self.shared.clone(), self.cmds.clone()));
                }
                Action::Close { link } => {
                    self.current.remove(&link);
                    self.register(&link, None);
                }
                Action::Disconnect { node } => {
                    self.current.retain(|l, _| l.node != node);
                    let links: Vec<LinkId> = self.shared.routes.links_of(&node).into_iter().map(|(link, _)| link).collect();
                    for tx in self.shared.routes.remove_node(&node) {
                        tx.queue.close();
                    }
                    for link in &links {
                        self.shared.acks.link_down(link);
                    }
                }
                Action::Send { node, channel, frame } => {
                    let pushed = self.shared.routes.with_queue(&node, channel, 0, |q| q.push(Outgoing::Frame(frame), None));
                    if !matches!(pushed, Some(Ok(()))) {
                        let channel = &self.shared.channels.get(channel).name;
                        debug!(node, channel, "frame dropped: no link up on the channel, or its queue is full (the protocols recover)");
                    }
                }
                Action::Event(event) => self.event(event),
            }
        }
        self.publish();
    }

    fn event(&self, event: node::Event) {
        let sink = &self.shared.sink;
        let channel_name = |c: usize| self.shared.channels.get(c).name.clone();
        match event {
            node::Event::NodeUp(node) => {
                info!(node, "node up");
                sink.event(Event::NodeUp(node));
            }
            node::Event::NodeDown(node) => {
                info!(node, "node down");
                sink.event(Event::NodeDown(node));
            }
            node::Event::ChannelUp { node, channel } => sink.event(Event::ChannelUp(node, channel_name(channel))),
            node::Event::ChannelDown { node, channel } => sink.event(Event::ChannelDown(node, channel_name(channel))),
            node::Event::Members(members) => {
                let specs = self.node.member_specs();
                let mut snapshot = self.shared.snapshot.write_unpoisoned();
                snapshot.member_specs = specs;
                let before = std::mem::replace(&mut snapshot.members, members.clone());
                drop(snapshot);
                for node in before.iter().filter(|n| !members.contains(n)) {
                    self.give_up(node);
                }
                sink.event(Event::Members(members));
            }
            node::Event::Removed { by } => {
                info!(by, "removed from the cluster");
                sink.event(Event::Removed { by });
            }
            node::Event::Upcall { from, body } => sink.event(Event::Upcall { from, body }),
            node::Event::BroadcastDeliver { msg_id, payload, from, .. } => sink.event(Event::BroadcastDeliver { msg_id, payload, from }),
            node::Event::BroadcastGraft { node, msg_id, round } => sink.event(Event::BroadcastGraft { node, msg_id, round }),
            node::Event::BroadcastExchange { node } => sink.event(Event::BroadcastExchange { node }),
            node::Event::Deliver { origin, dest, payload } => {
                self.shared.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                self.shared.deliver(&origin, &dest, payload)
            }
            node::Event::AckedSettled { node, given_up, bytes, .. } => {
                self.shared.acks.release_relayed(&node, bytes);
                if given_up > 0 {
                    self.shared.stats.dropped_unacknowledged.fetch_add(given_up as u64, Ordering::Relaxed);
                    self.shared.report_drop(crate::DropReason::Unacknowledged, Some(&node), None, given_up as u64);
                    warn!(node, lost = given_up, "messages sent with ack through the overlay are dropped: their destination acknowledged none for a minute (counter dropped_unacknowledged)");
                }
            }
        }
    }

    /// `node` left the membership: what was sent to it with `ack` and is not acknowledged is
    /// given up, counted and logged.
    fn give_up(&self, node: &str) {
        let lost = self.shared.acks.give_up(node);
        if lost > 0 {
            self.shared.stats.dropped_destination_removed.fetch_add(lost as u64, Ordering::Relaxed);
            self.shared.report_drop(crate::DropReason::DestinationRemoved, Some(node), None, lost as u64);
            warn!(node, lost, "node left the membership: messages sent to it with ack and not acknowledged are dropped (counter dropped_destination_removed)");
        }
    }

    /// Refreshes what API calls read without a hop through this task.
    fn publish(&self) {
        let neighbours: Vec<String> = self.node.neighbours().cloned().collect();
        let views: Vec<(String, Vec<String>)> = self.node.views().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let can_relay = !self.node.relay_neighbours().is_empty();
        let broadcast_peers = self.node.plumtree().map(|pt| (pt.eager_peers(), pt.lazy_peers()));
        let mut snapshot = self.shared.snapshot.write_unpoisoned();
        let Snapshot { neighbours: n, views: v, can_relay: r, broadcast_peers: b, .. } = &mut *snapshot;
        (*n, *v, *r, *b) = (neighbours, views, can_relay, broadcast_peers);
        drop(snapshot);
        let node_stats = self.node.stats();
        self.shared.stats.relayed.store(node_stats.relayed, Ordering::Relaxed);
        self.shared.stats.acked_relays_retransmitted.store(node_stats.acked_relays_retransmitted, Ordering::Relaxed);
        self.shared.stats.acked_relays_duplicates.store(node_stats.acked_relays_duplicates, Ordering::Relaxed);
        self.shared.stats.acked_relays_unacked.store(node_stats.acked_relays_unacked, Ordering::Relaxed);
        if let Some(pt) = self.node.plumtree() {
            let pt = pt.stats();
            self.shared.stats.broadcast_payloads_received.store(pt.gossip_received, Ordering::Relaxed);
            self.shared.stats.broadcast_duplicates.store(pt.duplicates, Ordering::Relaxed);
        }
    }
}
