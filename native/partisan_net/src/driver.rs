//! The driver task: owns the overlay state machine and executes its actions.
//!
//! Every membership input (join, leave, link up/down, gossip) arrives on one channel and is
//! applied in order, so the core needs no locks. Link registration happens here too: a dialed
//! connection becomes visible to senders only when the driver accepts its `LinkUp`, and events
//! from a connection nobody expects any more (a node removed while it was being dialed, a
//! duplicate down) are recognised by their connection id and dropped.
//!
//! Overlays differ in which links they manage. The full mesh asks for every (channel,
//! connection) link itself; HyParView asks only for the membership link of each neighbour and
//! leaves the data channels to the shell. So when an overlay reports a node up, the driver dials
//! every link of that node the overlay did not ask for, keeps them up while the node is up
//! (redialing after `connection_interval` + jitter), reports their channel events, and closes
//! them when the node goes down. `partisan:nodes()` is the set of nodes the overlay reported up,
//! not the set of open sockets: a transient link (a HyParView JOIN or SHUFFLE_REPLY) is no
//! neighbour.

use crate::conn::{control_frame, dial, next_conn_id};
use crate::{Cmd, CmdReceivers, Cmds, Event, LinkTx, PeerRoutes, Shared};
use partisan_core::membership::{redial_delay, Action, LinkId};
use partisan_core::frame::Frame;
use partisan_core::overlay::{Overlay, Views};
use partisan_core::plumtree::{self, Plumtree};
use crate::queue::Outgoing;
use rand::Rng;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// An overlay the live runtime can run.
pub(crate) trait LiveOverlay: Overlay + Views {}
impl<T: Overlay + Views> LiveOverlay for T {}

struct Driver {
    shared: Arc<Shared>,
    overlay: Box<dyn LiveOverlay>,
    /// Plumtree over the overlay's neighbours, when broadcast is on.
    plumtree: Option<Plumtree>,
    cmds: Cmds,
    /// Consecutive failed dials per link the driver owns (reset when it comes up).
    failures: HashMap<LinkId, u32>,
    /// Connection id of the dial in flight or the connection up, per link.
    current: HashMap<LinkId, u64>,
    /// Whether the overlay leaves data channels to the shell (HyParView) or dials them itself.
    shell_dials_data: bool,
    /// Links the driver dials on its own: data channels of neighbours (see the module docs).
    owned: HashSet<LinkId>,
    /// Last known addresses per node, from the overlay's dials.
    addrs: HashMap<String, Vec<SocketAddr>>,
    /// Nodes the overlay reported up.
    up: BTreeSet<String>,
    epoch: Instant,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    overlay: Box<dyn LiveOverlay>,
    shell_dials_data: bool,
    plumtree: Option<Plumtree>,
    cmds: Cmds,
    mut rx: CmdReceivers,
) {
    let mut d = Driver {
        shared,
        overlay,
        plumtree,
        cmds,
        failures: HashMap::new(),
        shell_dials_data,
        current: HashMap::new(),
        owned: HashSet::new(),
        addrs: HashMap::new(),
        up: BTreeSet::new(),
        epoch: Instant::now(),
    };
    d.publish();
    loop {
        let next = d.overlay.poll_timeout().into_iter().chain(d.plumtree.as_ref().and_then(Plumtree::poll_timeout)).min();
        let deadline = next.map(|ms| d.epoch + Duration::from_millis(ms));
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Lifecycle first (it keeps the routing table right), then the application's
        // requests, then peers' frames.
        let cmd = tokio::select! {
                biased;
                cmd = rx.life.recv() => cmd,
                Some(cmd) = rx.api.recv() => Some(cmd),
                Some(cmd) = rx.peer.recv() => Some(cmd),
                _ = sleep => {
                    let now = d.now();
                    d.overlay.tick(now);
                    if let Some(pt) = d.plumtree.as_mut() {
                        pt.tick(now);
                    }
                    d.execute();
                    continue;
                }
        };
        match cmd {
            Some(cmd) => d.handle(cmd),
            None => return,
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
            Cmd::Join(spec) => self.overlay.join(now, spec),
            Cmd::Leave(node) => self.overlay.leave(now, &node),
            Cmd::SetMembers(specs) => self.overlay.set_members(now, specs),
            Cmd::LinkUp { link, tx } => {
                if self.current.get(&link) != Some(&tx.conn_id) || self.shared.stopping.load(Ordering::SeqCst) {
                    tx.queue.close(); // stale dial (nobody wants this connection any more) or stopping
                    return;
                }
                self.failures.remove(&link);
                self.register(&link, Some(tx));
                if !self.owned.contains(&link) {
                    self.overlay.link_up(now, &link);
                }
            }
            Cmd::LinkDown { link, conn_id } => {
                if self.current.get(&link) != Some(&conn_id) {
                    return;
                }
                self.current.remove(&link);
                let was_up = self.register(&link, None);
                if self.owned.contains(&link) {
                    self.schedule_redial(link, was_up);
                } else {
                    self.overlay.link_down(now, &link);
                }
            }
            Cmd::Redial(link) => {
                if self.owned.contains(&link) && self.up.contains(&link.node) && !self.current.contains_key(&link) {
                    self.dial(link);
                }
            }
            Cmd::Control { from, body } => {
                if let Err(e) = self.overlay.control(now, &from, &body) {
                    self.shared.stats.bad_control.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.shared.log_limits.frames.allow(&self.shared.stats) {
                        warn!(from, error = %e, suppressed, "control frame rejected");
                    }
                }
            }
            Cmd::Broadcast { from, body } => {
                let Some(pt) = self.plumtree.as_mut() else { return };
                if let Err(e) = pt.receive(now, &from, &body) {
                    self.shared.stats.bad_control.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.shared.log_limits.frames.allow(&self.shared.stats) {
                        warn!(from, error = %e, suppressed, "broadcast frame rejected");
                    }
                }
            }
            Cmd::Originate { msg_id, payload } => {
                let Some(pt) = self.plumtree.as_mut() else {
                    warn!("broadcast dropped: the broadcast config key is false");
                    return;
                };
                if let Err(e) = pt.broadcast(now, msg_id, payload) {
                    warn!(error = %e, "broadcast not sent");
                }
            }
            Cmd::Merged { msg_id, is_new } => {
                if let Some(pt) = self.plumtree.as_mut() {
                    pt.merge_result(now, &msg_id, is_new);
                }
            }
            Cmd::Grafted { node, msg_id, round, payload } => {
                if let Some(pt) = self.plumtree.as_mut() {
                    pt.graft_result(now, &node, &msg_id, round, payload);
                }
            }
            Cmd::Partition { node, blocked } => {
                let mut set = self.shared.blocked.write().unwrap_or_else(|e| e.into_inner());
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

    fn dial(&mut self, link: LinkId) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Some(addrs) = self.addrs.get(&link.node).cloned() else { return };
        let conn_id = next_conn_id();
        self.current.insert(link.clone(), conn_id);
        tokio::spawn(dial(link, addrs, conn_id, self.shared.clone(), self.cmds.clone()));
    }

    /// Redials after `connection_interval` + jitter, backing off while the link keeps failing
    /// (see [`redial_delay`]).
    fn schedule_redial(&mut self, link: LinkId, was_up: bool) {
        let mesh = self.shared.cfg.mesh;
        let jitter = if mesh.connection_jitter == 0 { 0 } else { rand::thread_rng().gen_range(0..=mesh.connection_jitter) };
        let failures = if was_up {
            self.failures.remove(&link);
            0
        } else {
            let n = self.failures.entry(link.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = Duration::from_millis(redial_delay(&mesh, failures, jitter));
        let cmds = self.cmds.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = cmds.life.send(Cmd::Redial(link));
        });
    }

    /// Sets (or clears) the queue of one link in the shared routing table, and reports channel
    /// events for the links the driver owns.
    fn register(&self, link: &LinkId, tx: Option<LinkTx>) -> bool {
        let mut routes = self.shared.routes.write().unwrap_or_else(|e| e.into_inner());
        let channels = &self.shared.channels;
        let peer = routes.entry(link.node.clone()).or_insert_with(|| PeerRoutes {
            links: channels.specs().iter().map(|s| vec![None; s.parallelism as usize]).collect(),
        });
        let was_up = peer.up(link.channel);
        let up = tx.is_some();
        let slot = &mut peer.links[link.channel][link.conn as usize];
        let old = std::mem::replace(slot, tx);
        let had_link = old.is_some();
        if let Some(old) = old {
            old.queue.close();
        }
        let is_up = peer.up(link.channel);
        drop(routes);
        if self.owned.contains(link) && was_up != is_up {
            let (node, name) = (link.node.clone(), channels.get(link.channel).name.clone());
            self.shared.sink.event(if up { Event::ChannelUp(node, name) } else { Event::ChannelDown(node, name) });
        }
        had_link
    }

    /// Dials the links of a node the overlay does not manage itself.
    fn open_owned_links(&mut self, node: &str) {
        let links: Vec<LinkId> = self
            .shared
            .channels
            .links()
            .map(|(channel, conn)| LinkId { node: node.to_owned(), channel, conn })
            .filter(|l| !self.current.contains_key(l))
            .collect();
        for link in links {
            self.owned.insert(link.clone());
            self.dial(link);
        }
    }

    fn close_owned_links(&mut self, node: &str) {
        let links: Vec<LinkId> = self.owned.iter().filter(|l| l.node == node).cloned().collect();
        for link in links {
            self.current.remove(&link);
            self.register(&link, None);
            self.owned.remove(&link);
        }
    }

    fn execute(&mut self) {
        while let Some(action) = self.overlay.poll_action() {
            match action {
                Action::Connect { link, addrs } => {
                    self.addrs.insert(link.node.clone(), addrs);
                    self.owned.remove(&link);
                    self.dial(link);
                }
                Action::Disconnect { node } => {
                    self.current.retain(|l, _| l.node != node);
                    self.owned.retain(|l| l.node != node);
                    let removed = self.shared.routes.write().unwrap_or_else(|e| e.into_inner()).remove(&node);
                    for tx in removed.into_iter().flat_map(|p| p.links).flatten().flatten() {
                        tx.queue.close();
                    }
                }
                Action::SendControl { to, body } => {
                    let routes = self.shared.routes.read().unwrap_or_else(|e| e.into_inner());
                    let membership = self.shared.channels.membership_index();
                    let tx = routes.get(&to).and_then(|p| p.links[membership].iter().flatten().next());
                    match tx {
                        Some(tx) if tx.queue.push(control_frame(body), None).is_ok() => {}
                        _ => warn!(to, "control frame dropped: membership link down or its queue full"),
                    }
                }
                Action::NodeUp { node } => {
                    info!(node, "node up");
                    self.up.insert(node.clone());
                    self.shared.sink.event(Event::NodeUp(node.clone()));
                    if self.shell_dials_data {
                        self.open_owned_links(&node);
                    }
                    if let Some(pt) = self.plumtree.as_mut() {
                        pt.neighbour_up(self.epoch.elapsed().as_millis() as u64, &node);
                    }
                }
                Action::NodeDown { node } => {
                    info!(node, "node down");
                    self.up.remove(&node);
                    self.close_owned_links(&node);
                    if let Some(pt) = self.plumtree.as_mut() {
                        pt.neighbour_down(self.epoch.elapsed().as_millis() as u64, &node);
                    }
                    self.shared.sink.event(Event::NodeDown(node));
                }
                Action::ChannelUp { node, channel } => {
                    let name = self.shared.channels.get(channel).name.clone();
                    self.shared.sink.event(Event::ChannelUp(node, name));
                }
                Action::ChannelDown { node, channel } => {
                    let name = self.shared.channels.get(channel).name.clone();
                    self.shared.sink.event(Event::ChannelDown(node, name));
                }
                Action::MembersChanged { members } => {
                    *self.shared.members.write().unwrap_or_else(|e| e.into_inner()) = members.clone();
                    self.shared.sink.event(Event::Members(members));
                }
                Action::Upcall { from, body } => self.shared.sink.event(Event::Upcall { from, body }),
                Action::Removed { by } => {
                    info!(by, "removed from the cluster");
                    self.shared.sink.event(Event::Removed { by });
                }
            }
        }
        self.execute_plumtree();
        self.publish();
    }

    fn execute_plumtree(&mut self) {
        let Some(pt) = self.plumtree.as_mut() else { return };
        while let Some(action) = pt.poll_action() {
            match action {
                plumtree::Action::SendTo { node, body } => {
                    let routes = self.shared.routes.read().unwrap_or_else(|e| e.into_inner());
                    let membership = self.shared.channels.membership_index();
                    let frame = Outgoing::Frame(Frame::Broadcast { body }.to_bytes());
                    match routes.get(&node).and_then(|p| p.links[membership].iter().flatten().next()) {
                        Some(tx) if tx.queue.push(frame, None).is_ok() => {}
                        _ => warn!(node, "broadcast frame dropped: link down or queue full (anti-entropy repairs it)"),
                    }
                }
                plumtree::Action::Deliver { msg_id, payload, from, .. } => {
                    self.shared.sink.event(Event::BroadcastDeliver { msg_id, payload, from })
                }
                plumtree::Action::Graft { node, msg_id, round } => {
                    self.shared.sink.event(Event::BroadcastGraft { node, msg_id, round })
                }
                plumtree::Action::Exchange { node } => self.shared.sink.event(Event::BroadcastExchange { node }),
            }
        }
    }

    /// Snapshots read by API calls without a hop through this task.
    fn publish(&self) {
        *self.shared.up.write().unwrap_or_else(|e| e.into_inner()) = self.up.iter().cloned().collect();
        let views = self.overlay.views().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        *self.shared.views.write().unwrap_or_else(|e| e.into_inner()) = views;
    }
}
