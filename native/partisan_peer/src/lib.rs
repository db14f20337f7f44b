//! A Rust program as a member of a Partisan cluster.
//!
//! Polyglot systems usually put HTTP or a broker between a Rust service and the BEAM, or take the
//! C-node route with Distributed Erlang's full mesh. A [`Peer`] is instead a node of the cluster
//! like any BEAM node: it runs the same data plane ([`partisan_net::Node`]: handshake, channels,
//! failure detection, the full mesh or HyParView, Plumtree), so BEAM nodes see it in
//! `partisan:nodes()`, get `on_up`/`on_down` for it and send to its mailboxes as to any process.
//!
//! What the BEAM has as processes, a peer has as [`Mailbox`]es: each has a [`Pid`] (an ordinary
//! pid on the wire, of this peer's node name and creation), optionally a registered name, and a
//! queue of received terms. Terms are the External Term Format ([`etf`]).
//!
//! ```no_run
//! use partisan_peer::{etf::{atom, Term}, Config, Peer};
//! use std::time::Duration;
//! let peer = Peer::start(Config::new("rust1@127.0.0.1", b"secret")).unwrap();
//! // The spec of a running BEAM node: partisan:node_spec() there.
//! # let spec = partisan_peer::NodeSpec::new("a@127.0.0.1", vec![], vec![]);
//! peer.join(spec).unwrap();
//! let echo = peer.register("echo").unwrap();
//! // A BEAM process sends {From, Msg} with partisan:forward_message('rust1@127.0.0.1', echo, ...).
//! while let Ok(msg) = echo.recv_timeout(Duration::from_secs(60)) {
//!     if let Term::SmallTuple(items) = msg.term {
//!         if let [from, body] = &items[..] {
//!             if let Some(from) = partisan_peer::etf::Pid::from_term(from) {
//!                 let reply = Term::SmallTuple(vec![atom("echo"), body.clone()]);
//!                 peer.send(&from, &reply).unwrap();
//!             }
//!         }
//!     }
//! }
//! peer.stop();
//! ```
//!
//! A peer trusts its cluster as a BEAM node does: whoever knows the cookie may send it anything.
//! Bad bytes from a peer cost the message (counted as `undecodable`), never the connection.

pub mod etf;

use bytes::Bytes;
use partisan_net::lock::{MutexExt, RwLockExt};
use etf::{atom, atom_text, decode, encode, Pid, Term};
pub use partisan_core::channel::ChannelSpec;
pub use partisan_core::frame::Dest;
pub use partisan_core::hyparview::HyParViewConfig;
pub use partisan_core::node::OverlayConfig;
pub use partisan_core::plumtree::PlumtreeConfig;
pub use partisan_core::overlay::NodeSpec;
pub use partisan_net::{Config, ConfigError, DeliverError, Event, SendError, StartError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

/// Broadcasts remembered (for duplicates and GRAFT answers), at most.
const BROADCAST_CACHE: usize = 4096;

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("the data plane's driver is overloaded; retry later")]
    Overloaded,
    #[error("the name {0:?} is registered already")]
    NameTaken(String),
    #[error("the peer has stopped")]
    Stopped,
}

/// A message received by a mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The node that sent it.
    pub from_node: String,
    pub term: Term,
}

/// What happened to the cluster, as a BEAM node's `partisan_peer_service` events report it.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    NodeUp(String),
    NodeDown(String),
    /// The members this peer knows, itself included.
    Members(Vec<String>),
    /// Another node removed this peer from the cluster.
    Removed { by: String },
    /// A Plumtree broadcast seen for the first time: `handler` is the BEAM handler module that
    /// sent it, `id` and `payload` its terms (`partisan_plumtree_broadcast`'s encoding).
    Broadcast { handler: String, id: Term, payload: Term, from: String },
}

/// A process of this peer: a pid, maybe a name, and the terms sent to it.
pub struct Mailbox {
    pid: Pid,
    name: Option<String>,
    rx: mpsc::Receiver<Envelope>,
    state: Weak<State>,
}

impl Mailbox {
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The next message if one is there.
    pub fn try_recv(&self) -> Option<Envelope> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Mailbox {
    /// A dropped mailbox is a dead process: messages to it are counted as undeliverable.
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            state.mailboxes.write_unpoisoned().remove(&self.pid.id);
            if let Some(name) = &self.name {
                state.names.write_unpoisoned().remove(name);
            }
        }
    }
}

/// What the data plane's sink and the API share.
struct State {
    name: String,
    creation: u32,
    next_id: AtomicU32,
    mailboxes: RwLock<HashMap<u32, mpsc::Sender<Envelope>>>,
    names: RwLock<HashMap<String, u32>>,
    events: Mutex<mpsc::Sender<PeerEvent>>,
    /// The node, for answers the sink gives on the driver's thread (broadcast merge and graft);
    /// emptied by [`Peer::stop`] so the peer holds the only strong reference when it stops.
    node: Mutex<Option<Weak<partisan_net::Node>>>,
    broadcasts: Mutex<BroadcastCache>,
}

/// Broadcast payloads by message id, oldest forgotten first.
#[derive(Default)]
struct BroadcastCache {
    seen: HashMap<Bytes, Bytes>,
    order: VecDeque<Bytes>,
}

impl BroadcastCache {
    /// Remembers a broadcast; false when it was known already.
    fn insert(&mut self, id: Bytes, payload: Bytes) -> bool {
        if self.seen.contains_key(&id) {
            return false;
        }
        if self.order.len() == BROADCAST_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.seen.insert(id, payload);
        true
    }
}

impl State {
    fn lookup(&self, dest: &Dest) -> Option<mpsc::Sender<Envelope>> {
        let id = match dest {
            Dest::Name(name) => *self.names.read_unpoisoned().get(name)?,
            Dest::PidId { id, .. } => *id,
            Dest::Pid(etf) => {
                let pid = Pid::from_term(&decode(etf).ok()?)?;
                // A pid of another node, or of an earlier run of this one, is no process here.
                if pid.node != self.name || pid.creation != self.creation {
                    return None;
                }
                pid.id
            }
            Dest::Reply { .. } => return None,
        };
        self.mailboxes.read_unpoisoned().get(&id).cloned()
    }

    fn emit(&self, event: PeerEvent) {
        let _ = self.events.lock_unpoisoned().send(event);
    }

    fn with_node(&self, f: impl FnOnce(&partisan_net::Node)) {
        let slot = self.node.lock_unpoisoned();
        if let Some(node) = slot.as_ref().and_then(Weak::upgrade) {
            f(&node);
        }
    }

    fn on_broadcast(&self, msg_id: Bytes, payload: Bytes, from: String) {
        let is_new = self.broadcasts.lock_unpoisoned().insert(msg_id.clone(), payload.clone());
        if is_new {
            // `partisan_plumtree_broadcast` sends term_to_binary({Handler, Id}) and the payload.
            match (decode(&msg_id), decode(&payload)) {
                (Ok(Term::SmallTuple(id)), Ok(payload)) if id.len() == 2 && atom_text(&id[0]).is_some() => {
                    let handler = atom_text(&id[0]).unwrap_or_default().to_owned();
                    self.emit(PeerEvent::Broadcast { handler, id: id[1].clone(), payload, from });
                }
                _ => tracing::debug!(%from, "broadcast that is not a partisan_plumtree_broadcast term relayed, not reported"),
            }
        }
        // New messages travel on down the tree; the core prunes the sender of a duplicate.
        self.with_node(|node| node.broadcast_merged(msg_id, is_new));
    }
}

/// The data plane's callbacks: messages into mailboxes, events into the event queue.
struct PeerSink(Arc<State>);

impl partisan_net::Sink for PeerSink {
    fn deliver(&self, from: &str, dest: &Dest, payload: Bytes) -> Result<(), DeliverError> {
        let mailbox = self.0.lookup(dest).ok_or(DeliverError::NoProcess)?;
        let term = decode(&payload).map_err(|e| {
            tracing::debug!(from, error = %e, "message not decoded");
            DeliverError::Undecodable
        })?;
        mailbox.send(Envelope { from_node: from.to_owned(), term }).map_err(|_| DeliverError::NoProcess)
    }

    fn event(&self, event: Event) {
        match event {
            Event::NodeUp(n) => self.0.emit(PeerEvent::NodeUp(n)),
            Event::NodeDown(n) => self.0.emit(PeerEvent::NodeDown(n)),
            Event::Members(m) => self.0.emit(PeerEvent::Members(m)),
            Event::Removed { by } => self.0.emit(PeerEvent::Removed { by }),
            Event::BroadcastDeliver { msg_id, payload, from } => self.0.on_broadcast(msg_id, payload, from),
            Event::BroadcastGraft { node, msg_id, round } => {
                let payload = self.0.broadcasts.lock_unpoisoned().seen.get(&msg_id).cloned();
                self.0.with_node(|n| n.broadcast_grafted(&node, msg_id, round, payload));
            }
            // Channel-level and report events are for dashboards; a peer reads partisan_net's
            // stats instead.
            _ => {}
        }
    }
}

/// A running member of a Partisan cluster (see the crate docs).
pub struct Peer {
    node: Arc<partisan_net::Node>,
    state: Arc<State>,
    events: Mutex<mpsc::Receiver<PeerEvent>>,
}

impl Peer {
    /// Starts the data plane with `cfg` (name, cookie, listen addresses, channels, overlay —
    /// configure the channels and overlay the cluster uses).
    pub fn start(cfg: Config) -> Result<Peer, PeerError> {
        let (tx, rx) = mpsc::channel();
        // Pids carry the creation: a pid of an earlier run of this peer name reaches nothing.
        let creation = (cfg.incarnation as u32) | 1;
        let state = Arc::new(State {
            name: cfg.name.clone(),
            creation,
            next_id: AtomicU32::new(1),
            mailboxes: RwLock::new(HashMap::new()),
            names: RwLock::new(HashMap::new()),
            events: Mutex::new(tx),
            node: Mutex::new(None),
            broadcasts: Mutex::new(BroadcastCache::default()),
        });
        let node = Arc::new(partisan_net::Node::start(cfg, Arc::new(PeerSink(state.clone())))?);
        *state.node.lock_unpoisoned() = Some(Arc::downgrade(&node));
        Ok(Peer { node, state, events: Mutex::new(rx) })
    }

    /// This peer's node name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// This peer's spec (what a BEAM node passes to `partisan_peer_service:join/1`).
    pub fn spec(&self) -> &NodeSpec {
        self.node.spec()
    }

    /// The data plane (stats, channels, partitions).
    pub fn node(&self) -> &partisan_net::Node {
        &self.node
    }

    /// Joins the cluster of the node `spec` describes.
    pub fn join(&self, spec: NodeSpec) -> Result<(), PeerError> {
        self.node.join(spec).map_err(|_| PeerError::Overloaded)
    }

    /// Leaves the cluster (the others forget this peer).
    pub fn leave(&self) -> Result<(), PeerError> {
        self.node.leave(&self.state.name).map_err(|_| PeerError::Overloaded)
    }

    /// Members this peer knows, itself included.
    pub fn members(&self) -> Vec<String> {
        self.node.members()
    }

    /// Nodes this peer is connected to (`partisan:nodes/0`).
    pub fn connected(&self) -> Vec<String> {
        self.node.connected()
    }

    /// A new anonymous mailbox.
    pub fn mailbox(&self) -> Mailbox {
        self.new_mailbox(None)
    }

    /// A new mailbox registered as `name` (BEAM processes send to `{name, PeerNode}`).
    pub fn register(&self, name: &str) -> Result<Mailbox, PeerError> {
        let mut names = self.state.names.write_unpoisoned();
        if names.contains_key(name) {
            return Err(PeerError::NameTaken(name.to_owned()));
        }
        let mailbox = self.new_mailbox(Some(name.to_owned()));
        names.insert(name.to_owned(), mailbox.pid.id);
        Ok(mailbox)
    }

    fn new_mailbox(&self, name: Option<String>) -> Mailbox {
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.state.mailboxes.write_unpoisoned().insert(id, tx);
        let pid = Pid { node: self.state.name.clone(), id, serial: 0, creation: self.state.creation };
        Mailbox { pid, name, rx, state: Arc::downgrade(&self.state) }
    }

    /// Sends `term` to a process by pid (a BEAM process's, or a mailbox of a peer), on the
    /// default channel.
    pub fn send(&self, to: &Pid, term: &Term) -> Result<(), PeerError> {
        let key = u64::from(to.id);
        self.send_on(&to.node, None, key, Dest::Pid(Bytes::from(encode(&to.to_term()))), term)
    }

    /// Sends `term` to the process registered as `name` on `node`, on the default channel.
    pub fn send_named(&self, node: &str, name: &str, term: &Term) -> Result<(), PeerError> {
        self.send_on(node, None, 0, Dest::Name(name.to_owned()), term)
    }

    /// Sends on a named channel (`None`: the default channel). Messages with the same
    /// `partition_key` to the same node keep their order. A node that is not a neighbour (on
    /// HyParView) is reached through the overlay, best effort and in no particular order, as
    /// `transitive => true` does on a BEAM node.
    pub fn send_on(&self, node: &str, channel: Option<&str>, partition_key: u64, dest: Dest, term: &Term) -> Result<(), PeerError> {
        let channels = self.node.channels();
        let channel = match channel {
            None => channels.default_index(),
            Some(name) => channels.index_of(name).ok_or(SendError::UnknownChannel)?,
        };
        if node == self.state.name {
            let mailbox = self.state.lookup(&dest).ok_or(SendError::NotConnected)?;
            let _ = mailbox.send(Envelope { from_node: node.to_owned(), term: term.clone() });
            return Ok(());
        }
        let payload = Bytes::from(encode(term));
        match self.node.send(node, channel, partition_key, dest.clone(), payload.clone()) {
            // Not a neighbour (HyParView's partial views): relayed through the overlay, best
            // effort, as `transitive => true` does on a BEAM node.
            Err(SendError::NotConnected) => Ok(self.node.send_transitive(node, dest, payload)?),
            result => Ok(result?),
        }
    }

    /// Sends `term` to `dest` on `node` with `ack`: delivered once and in order (with this
    /// peer's other acked messages to `node`) while both live, sent again until `node`
    /// acknowledges it, whether or not it is a neighbour — end to end through the overlay, on the
    /// default channel, as a BEAM node sends with `ack => true` off the full mesh (see
    /// `partisan_core::relay_ack`). `QueueFull` when `node`'s unacknowledged messages fill
    /// `max_unacked_bytes`.
    pub fn send_acked(&self, node: &str, dest: Dest, term: &Term) -> Result<(), PeerError> {
        if node == self.state.name {
            return self.send_on(node, None, 0, dest, term);
        }
        Ok(self.node.send_acked_transitive(node, dest, Bytes::from(encode(term)))?)
    }

    /// Broadcasts through Plumtree (the config needs `node.broadcast`), as
    /// `partisan_plumtree_broadcast:broadcast/2` does for handler module `handler` on the BEAM
    /// nodes: they merge `payload` under `id` with `handler:merge/2`.
    pub fn broadcast(&self, handler: &str, id: &Term, payload: &Term) -> Result<(), PeerError> {
        let msg_id = Bytes::from(encode(&Term::SmallTuple(vec![atom(handler), id.clone()])));
        let payload = Bytes::from(encode(payload));
        self.state.broadcasts.lock_unpoisoned().insert(msg_id.clone(), payload.clone());
        self.node.broadcast(msg_id, payload).map_err(|_| PeerError::Overloaded)
    }

    /// The next cluster event, waiting at most `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<PeerEvent> {
        self.events.lock_unpoisoned().recv_timeout(timeout).ok()
    }

    /// Stops the data plane: queued messages are flushed (bounded by `stop_flush_timeout`), then
    /// every connection closes. Returns how many messages could not be written.
    pub fn stop(self) -> u64 {
        // No answer from the sink may hold the node after this: the peer's reference is the last.
        self.state.node.lock_unpoisoned().take();
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.stop().undelivered,
            Err(_) => 0, // unreachable: the sink only ever held weak references
        }
    }
}
