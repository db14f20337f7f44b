//! The driver task: owns the membership state machine and executes its actions.
//!
//! Every membership input (join, leave, link up/down, gossip) arrives on one channel and is
//! applied in order, so the core needs no locks. Link registration happens here too: a dialed
//! connection becomes visible to senders only when the driver accepts its `LinkUp`, and events
//! from a connection the core no longer expects (a node removed while it was being dialed, a
//! duplicate down) are recognised by their connection id and dropped.

use crate::conn::{control_frame, dial, next_conn_id};
use crate::{Cmd, Event, LinkTx, PeerRoutes, Shared};
use partisan_core::membership::{Action, FullMesh, LinkId, NodeSpec};
use partisan_core::overlay::Overlay;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tracing::{info, warn};

struct Driver {
    shared: Arc<Shared>,
    mesh: Box<dyn Overlay>,
    cmds: UnboundedSender<Cmd>,
    /// Connection id of the dial in flight or the connection up, per link.
    current: HashMap<LinkId, u64>,
    epoch: Instant,
}

pub(crate) async fn run(shared: Arc<Shared>, spec: NodeSpec, cmds: UnboundedSender<Cmd>, mut rx: UnboundedReceiver<Cmd>) {
    let mesh: Box<dyn Overlay> =
        Box::new(
            FullMesh::new(spec, shared.cfg.incarnation, shared.channels.clone(), shared.cfg.mesh, shared.cfg.incarnation)
                .with_topology(shared.cfg.topology, shared.cfg.role),
        );
    let mut d = Driver { shared, mesh, cmds, current: HashMap::new(), epoch: Instant::now() };
    loop {
        let deadline = d.mesh.poll_timeout().map(|ms| d.epoch + std::time::Duration::from_millis(ms));
        let cmd = match deadline {
            Some(at) => tokio::select! {
                cmd = rx.recv() => cmd,
                _ = tokio::time::sleep_until(at) => { let now = d.now(); d.mesh.tick(now); d.execute(); continue; }
            },
            None => rx.recv().await,
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
            Cmd::Join(spec) => self.mesh.join(now, spec),
            Cmd::Leave(node) => self.mesh.leave(now, &node),
            Cmd::LinkUp { link, tx } => {
                if self.current.get(&link) != Some(&tx.conn_id) {
                    tx.queue.close(); // stale dial: nobody wants this connection any more
                    return;
                }
                self.register(&link, Some(tx));
                self.mesh.link_up(now, &link);
            }
            Cmd::LinkDown { link, conn_id } => {
                if self.current.get(&link) != Some(&conn_id) {
                    return;
                }
                self.current.remove(&link);
                self.register(&link, None);
                self.mesh.link_down(now, &link);
            }
            Cmd::Control { from, body } => {
                if let Err(e) = self.mesh.control(now, &from, &body) {
                    self.shared.stats.bad_control.fetch_add(1, Ordering::Relaxed);
                    warn!(from, error = %e, "control frame rejected");
                }
            }
        }
    }

    /// Sets (or clears) the queue of one link in the shared routing table.
    fn register(&self, link: &LinkId, tx: Option<LinkTx>) {
        let mut routes = self.shared.routes.write().unwrap_or_else(|e| e.into_inner());
        let channels = &self.shared.channels;
        let peer = routes.entry(link.node.clone()).or_insert_with(|| PeerRoutes {
            links: channels.specs().iter().map(|s| vec![None; s.parallelism as usize]).collect(),
        });
        let slot = &mut peer.links[link.channel][link.conn as usize];
        if let Some(old) = std::mem::replace(slot, tx) {
            old.queue.close();
        }
    }

    fn execute(&mut self) {
        while let Some(action) = self.mesh.poll_action() {
            match action {
                Action::Connect { link, addrs } => {
                    let conn_id = next_conn_id();
                    self.current.insert(link.clone(), conn_id);
                    tokio::spawn(dial(link, addrs, conn_id, self.shared.clone(), self.cmds.clone()));
                }
                Action::Disconnect { node } => {
                    self.current.retain(|l, _| l.node != node);
                    let removed = self.shared.routes.write().unwrap_or_else(|e| e.into_inner()).remove(&node);
                    for tx in removed.into_iter().flat_map(|p| p.links).flatten().flatten() {
                        tx.queue.close();
                    }
                }
                Action::SendControl { to, body } => {
                    let routes = self.shared.routes.read().unwrap_or_else(|e| e.into_inner());
                    let membership = self.shared.channels.membership_index();
                    let tx = routes.get(&to).and_then(|p| p.links[membership].iter().flatten().next());
                    if let Some(tx) = tx {
                        if tx.queue.push(control_frame(body), None).is_err() {
                            warn!(to, "membership queue full; gossip dropped (periodic gossip repairs it)");
                        }
                    }
                }
                Action::NodeUp { node } => {
                    info!(node, "node up");
                    self.shared.sink.event(Event::NodeUp(node));
                }
                Action::NodeDown { node } => {
                    info!(node, "node down");
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
                Action::Removed { by } => {
                    info!(by, "removed from the cluster");
                    self.shared.sink.event(Event::Removed { by });
                }
            }
        }
    }
}
