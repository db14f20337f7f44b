//! One Partisan node as a sans-IO state machine: the overlay, Plumtree, relaying and the link
//! policy, composed in one place for the live runtime and the simulator.
//!
//! Each protocol of the core is a state machine of its own ([`crate::full_mesh`],
//! [`crate::hyparview`], [`crate::plumtree`], [`crate::relay`]). How they work together is
//! decided here and nowhere else: the overlay's neighbours are Plumtree's, Plumtree frames travel
//! on the membership channel as [`Frame::Broadcast`], a relayed message goes to the neighbours
//! whose default channel is up, and the links an overlay does not ask for itself (the data
//! channels of a HyParView neighbour) are opened while the neighbour is up. The tokio driver
//! (`partisan_net`) and the simulator (`partisan_sim`) both drive a [`Node`], as `quinn` and
//! its simulations drive `quinn-proto`, or iroh-gossip's `net` and `sim` drive its `proto`
//! state: what the simulator measures at 10,000 nodes is the composition the live runtime runs.
//!
//! # Driving it
//! Every input carries the current time in milliseconds: the application's requests (`join`,
//! `leave`, `broadcast`, `send_transitive`, ...), what happened to links (`link_up`,
//! `link_down`), frames from authenticated peers (`receive`) and `tick` at `poll_timeout`. The
//! shell then drains [`Action`]s: dial or close a link, send an encoded frame on a channel to a
//! node, hand an [`Event`] to the application. The node holds no socket, no clock, no thread;
//! its random choices come from seeded generators.
//!
//! # Links
//! A link is one connection this node dials, named by [`LinkId`] (node, channel, connection
//! index). The overlay asks for the links it needs: [`OverlayAction::Keep`] (the full mesh keeps
//! every link to every member) or [`OverlayAction::Dial`] (HyParView dials a membership link
//! once, and repairs its view from the passive view when it drops). When the overlay reports a
//! neighbour up, the node opens every other link of that neighbour and keeps them up until the
//! neighbour goes down. Kept links that drop are redialed after `connection_interval` plus a
//! seeded random share of `connection_jitter`; while dials keep failing the wait doubles from
//! [`REDIAL_FLOOR_MS`] up to [`REDIAL_CAP_MS`] ([`redial_delay`]).
//!
//! # Events
//! A neighbour's channel is up while one of its links on that channel is: [`Event::ChannelUp`]
//! follows [`Event::NodeUp`] for every channel already up, and [`Event::ChannelDown`] comes
//! before [`Event::NodeDown`] for the channels still up. Links closed by the overlay
//! (`Disconnect`) end without channel events.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::full_mesh::{FullMesh, LinkPolicy};
//! use partisan_core::node::{Action, Event, LinkTiming, Node};
//! use partisan_core::overlay::NodeSpec;
//!
//! let channels = ChannelTable::new(vec![]).unwrap();
//! let me = NodeSpec::new("a@h", vec![], vec![]);
//! let mesh = FullMesh::new(me.clone(), 1, channels.clone(), LinkPolicy::AllMembers, 10_000);
//! let mut a = Node::new(&me.name, channels, mesh, LinkTiming::default(), None, 7).unwrap();
//! a.join(0, NodeSpec::new("b@h", vec!["127.0.0.1:9001".parse().unwrap()], vec![]));
//! let dials: Vec<_> = std::iter::from_fn(|| a.poll_action())
//!     .filter_map(|action| if let Action::Dial { link, .. } = action { Some(link) } else { None })
//!     .collect();
//! assert_eq!(dials.len(), 2); // the default and the membership channel
//! a.link_up(5, &dials[0]);
//! let events: Vec<_> = std::iter::from_fn(|| a.poll_action()).collect();
//! assert!(events.contains(&Action::Event(Event::NodeUp("b@h".into()))));
//! ```

use crate::channel::ChannelTable;
use crate::frame::{Dest, Frame, RelayBody};
use crate::full_mesh::{FullMesh, LinkPolicy};
use crate::hyparview::{self, HyParView, HyParViewConfig};
use crate::overlay::{Action as OverlayAction, ControlError, LinkId, NodeSpec, Overlay};
use crate::plumtree::{self, Plumtree, PlumtreeConfig};
use crate::relay::{RelayDecision, RelayState, Relayed, DEFAULT_HOPS};
use crate::relay_ack::{self, RelayAckConfig, RelayAcks};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// The shortest wait before redialing a link whose last dial failed, in milliseconds.
pub const REDIAL_FLOOR_MS: u64 = 100;
/// The longest the backoff of a link that keeps failing grows to (a larger
/// `connection_interval` still applies as configured).
pub const REDIAL_CAP_MS: u64 = 2_000;
/// Relayed (origin, id) pairs each node remembers.
pub const RELAY_CACHE: usize = 65_536;

/// When links are redialed (Partisan's config keys of the same names, in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTiming {
    pub connection_interval: u64,
    pub connection_jitter: u64,
}

impl Default for LinkTiming {
    fn default() -> Self {
        LinkTiming { connection_interval: 1000, connection_jitter: 1000 }
    }
}

/// How long to wait before redialing a link after `failures` consecutive failed dials
/// (0: the link was up and dropped). The first redial after a drop waits
/// `connection_interval` + `jitter`, as configured, even 0; each failed dial after that doubles
/// a backoff that starts at [`REDIAL_FLOOR_MS`] and stops at [`REDIAL_CAP_MS`], and the wait is
/// the larger of the two. So `connection_interval => 0` cannot turn a dead member into a tight
/// dial loop.
///
/// ```
/// use partisan_core::node::{redial_delay, LinkTiming};
/// let zero = LinkTiming { connection_interval: 0, connection_jitter: 0 };
/// let waits: Vec<u64> = (0..7).map(|n| redial_delay(&zero, n, 0)).collect();
/// assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 2000]);
/// assert_eq!(redial_delay(&LinkTiming::default(), 3, 250), 1250);
/// ```
pub fn redial_delay(timing: &LinkTiming, failures: u32, jitter: u64) -> u64 {
    let configured = timing.connection_interval.saturating_add(jitter);
    if failures == 0 {
        return configured;
    }
    let backoff = REDIAL_FLOOR_MS.saturating_mul(1u64 << (failures - 1).min(20)).min(REDIAL_CAP_MS);
    configured.max(backoff)
}

/// Which overlay a node runs, with its parameters (`peer_service_manager` and its keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayConfig {
    /// Every node knows every member; links by policy (full mesh, client-server, static, or an
    /// Erlang membership strategy). The member table is gossiped every `periodic_interval` ms
    /// (0: only on changes).
    FullMesh { policy: LinkPolicy, periodic_interval: u64 },
    /// HyParView partial views.
    HyParView(HyParViewConfig),
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig::FullMesh { policy: LinkPolicy::AllMembers, periodic_interval: 10_000 }
    }
}

/// What a node runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    pub overlay: OverlayConfig,
    pub timing: LinkTiming,
    /// Plumtree over the overlay's neighbours (`broadcast => true`).
    pub broadcast: Option<PlumtreeConfig>,
    /// Messages sent with `ack` through the overlay ([`Node::send_acked_transitive`]).
    pub relay_ack: RelayAckConfig,
}

/// Why a [`Config`] cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("hyparview: {0}")]
    HyParView(#[from] hyparview::ConfigError),
    #[error("broadcast: {0}")]
    Plumtree(#[from] plumtree::ConfigError),
}

impl Config {
    /// Checks everything [`Node::from_config`] checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let OverlayConfig::HyParView(hv) = &self.overlay {
            hv.validate()?;
        }
        if let Some(pt) = &self.broadcast {
            pt.validate()?;
        }
        Ok(())
    }
}

/// What the node asks of its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial this link, trying the addresses in order; report `link_up` or `link_down`.
    Dial { link: LinkId, addrs: Vec<SocketAddr> },
    /// Close this link after flushing what is queued on it; no report follows.
    Close { link: LinkId },
    /// Close every link to the node after flushing what is queued on them; no report follows.
    Disconnect { node: String },
    /// Send an encoded frame (length prefix included) on an up connection of `channel` to
    /// `node`. When there is none, the frame is dropped: the protocols recover (gossip repeats,
    /// Plumtree grafts, relays are best effort).
    Send { node: String, channel: usize, frame: Bytes },
    /// Something for the application.
    Event(Event),
}

/// What the node tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The overlay made the node a neighbour (`partisan:nodes/0`).
    NodeUp(String),
    NodeDown(String),
    /// A neighbour's first link on a channel (an index in the [`ChannelTable`]) is up.
    ChannelUp { node: String, channel: usize },
    /// A neighbour's last link on a channel is down.
    ChannelDown { node: String, channel: usize },
    /// The members this node knows, itself included, sorted.
    Members(Vec<String>),
    /// Another node removed this one from the cluster.
    Removed { by: String },
    /// A control frame for a membership strategy outside the core.
    Upcall { from: String, body: Bytes },
    /// A broadcast not seen before: the handler's `merge/2` decides; answer with
    /// [`Node::broadcast_merged`]. `hops` is its distance from the origin.
    BroadcastDeliver { msg_id: Bytes, payload: Bytes, from: String, hops: u32 },
    /// A neighbour grafted a message no longer cached: the handler's `graft/1` answers, with
    /// [`Node::broadcast_grafted`].
    BroadcastGraft { node: String, msg_id: Bytes, round: u32 },
    /// Anti-entropy tick with `node`: the handler's `exchange/1` may run.
    BroadcastExchange { node: String },
    /// A message relayed through the overlay for a process of this node.
    Deliver { origin: String, dest: Dest, payload: Bytes },
    /// Messages sent to `node` with [`Node::send_acked_transitive`] left its outbox: `acked`
    /// acknowledged, `given_up` dropped (`node` acknowledged nothing for `give_up_after`);
    /// `bytes` of budget ([`relay_ack::budget`]) freed.
    AckedSettled { node: String, acked: usize, given_up: usize, bytes: usize },
}

/// Why a received frame was not taken (the shell counts and logs it; never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Malformed(#[from] ControlError),
    /// Message, ping and handshake frames are the shell's: they never reach the node.
    #[error("not a frame for the node: {0}")]
    NotForTheNode(&'static str),
}

/// Why a local broadcast was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    #[error("broadcast is not enabled (the broadcast config key is false)")]
    Disabled,
    #[error(transparent)]
    Refused(#[from] plumtree::BroadcastError),
}

/// A relayed message could not go anywhere: this node has no neighbour to carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no neighbour can carry a relayed message")]
pub struct NoRoute;

/// Counters of what the node decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Relayed messages forwarded to neighbours (this node's own and others').
    pub relayed: u64,
    /// Messages sent with [`Node::send_acked_transitive`] transmitted again.
    pub acked_relays_retransmitted: u64,
    /// Messages sent with [`Node::send_acked_transitive`] to this node that arrived again.
    pub acked_relays_duplicates: u64,
    /// Messages sent with [`Node::send_acked_transitive`] and not acknowledged yet (now).
    pub acked_relays_unacked: u64,
}

/// Who asked for a link, which decides when it is redialed and when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// [`OverlayAction::Keep`]: redialed until the overlay disconnects the node.
    OverlayKept,
    /// [`OverlayAction::Dial`]: forgotten when it goes down.
    OverlayDialed,
    /// A neighbour's link the overlay did not ask for: redialed while the neighbour is up.
    Neighbour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Dialing,
    Up,
    RetryAt(u64),
}

#[derive(Debug, Clone)]
struct Link {
    owner: Owner,
    state: LinkState,
    /// Consecutive failed dials (see [`redial_delay`]).
    failures: u32,
}

/// One node; see the module docs.
#[derive(Debug, Clone)]
pub struct Node<O> {
    name: String,
    channels: ChannelTable,
    overlay: O,
    plumtree: Option<Plumtree>,
    relay: RelayState,
    next_relay_id: u64,
    relay_acks: RelayAcks,
    timing: LinkTiming,
    links: BTreeMap<LinkId, Link>,
    /// Where each node with a link is reached (the overlay's latest `Keep` or `Dial`).
    addrs: BTreeMap<String, Vec<SocketAddr>>,
    neighbours: BTreeSet<String>,
    rng: SmallRng,
    actions: VecDeque<Action>,
    stats: Stats,
}

impl Node<Box<dyn Overlay>> {
    /// The node `cfg` describes, as the live runtime runs it. `incarnation` grows across restarts
    /// of the same name (the start time) and seeds every random choice.
    pub fn from_config(me: NodeSpec, channels: ChannelTable, cfg: &Config, incarnation: u64) -> Result<Self, ConfigError> {
        let name = me.name.clone();
        let overlay: Box<dyn Overlay> = match cfg.overlay {
            OverlayConfig::FullMesh { policy, periodic_interval } => {
                Box::new(FullMesh::new(me, incarnation, channels.clone(), policy, periodic_interval))
            }
            OverlayConfig::HyParView(hv) => Box::new(HyParView::new(me, &channels, hv, incarnation)?),
        };
        let mut node = Node::new(&name, channels, overlay, cfg.timing, cfg.broadcast, incarnation)?;
        node.relay_acks = RelayAcks::new(cfg.relay_ack, incarnation);
        Ok(node)
    }
}

impl<O: Overlay> Node<O> {
    /// A node named `name` running `overlay`, and Plumtree over its neighbours when `broadcast`
    /// is given. `seed` drives the redial jitter and Plumtree's choices, and is the incarnation
    /// of the node's acked relays (which run with the default [`RelayAckConfig`]).
    pub fn new(
        name: &str,
        channels: ChannelTable,
        overlay: O,
        timing: LinkTiming,
        broadcast: Option<PlumtreeConfig>,
        seed: u64,
    ) -> Result<Self, plumtree::ConfigError> {
        let plumtree = broadcast.map(|cfg| Plumtree::new(name, cfg, seed ^ 0x504c_554d)).transpose()?;
        Ok(Node {
            name: name.to_owned(),
            channels,
            overlay,
            plumtree,
            relay: RelayState::new(name, RELAY_CACHE),
            next_relay_id: 1,
            relay_acks: RelayAcks::new(RelayAckConfig::default(), seed),
            timing,
            links: BTreeMap::new(),
            addrs: BTreeMap::new(),
            neighbours: BTreeSet::new(),
            rng: SmallRng::seed_from_u64(seed ^ 0x4c49_4e4b),
            actions: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn channels(&self) -> &ChannelTable {
        &self.channels
    }

    pub fn overlay(&self) -> &O {
        &self.overlay
    }

    pub fn plumtree(&self) -> Option<&Plumtree> {
        self.plumtree.as_ref()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            acked_relays_retransmitted: self.relay_acks.retransmitted(),
            acked_relays_duplicates: self.relay_acks.stats().duplicates,
            acked_relays_unacked: self.relay_acks.held() as u64,
            ..self.stats
        }
    }

    /// Messages sent to `node` with [`Node::send_acked_transitive`] and not acknowledged yet.
    pub fn acked_relays_unacked(&self, node: &str) -> usize {
        self.relay_acks.unacked(node)
    }

    /// The members the overlay knows, this node included, sorted.
    pub fn members(&self) -> Vec<String> {
        self.overlay.members()
    }

    /// The specs of the members the overlay knows, this node's included, sorted by name.
    pub fn member_specs(&self) -> Vec<NodeSpec> {
        self.overlay.member_specs()
    }

    /// The overlay's named views (`get_local_state/0`).
    pub fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        self.overlay.views()
    }

    /// The neighbours (nodes the overlay reports up), sorted.
    pub fn neighbours(&self) -> impl Iterator<Item = &String> {
        self.neighbours.iter()
    }

    /// The neighbours that can carry a relayed message now (their default channel is up).
    pub fn relay_neighbours(&self) -> Vec<String> {
        let channel = self.channels.default_index();
        self.neighbours.iter().filter(|n| self.channel_up(n, channel)).cloned().collect()
    }

    pub fn join(&mut self, now: u64, spec: NodeSpec) {
        self.overlay.join(now, spec);
        self.absorb(now);
    }

    pub fn leave(&mut self, now: u64, node: &str) {
        self.overlay.leave(now, node);
        self.absorb(now);
    }

    /// Replaces the member list (an Erlang membership strategy decides it).
    pub fn set_members(&mut self, now: u64, specs: Vec<NodeSpec>) {
        self.overlay.set_members(now, specs);
        self.absorb(now);
    }

    /// A link this node dialed is up.
    pub fn link_up(&mut self, now: u64, link: &LinkId) {
        let Some(l) = self.links.get_mut(link) else {
            // Nobody wants it any more (the overlay disconnected the node meanwhile).
            self.actions.push_back(Action::Close { link: link.clone() });
            return;
        };
        if l.state == LinkState::Up {
            return;
        }
        l.state = LinkState::Up;
        l.failures = 0;
        let owner = l.owner;
        if self.neighbours.contains(&link.node) && self.links_up(&link.node, link.channel) == 1 {
            self.event(Event::ChannelUp { node: link.node.clone(), channel: link.channel });
        }
        if owner != Owner::Neighbour {
            self.overlay.link_up(now, link);
            self.absorb(now);
        }
    }

    /// A link this node dialed closed, or could not be opened.
    pub fn link_down(&mut self, now: u64, link: &LinkId) {
        let Some(l) = self.links.get_mut(link) else { return };
        let (owner, was_up) = (l.owner, l.state == LinkState::Up);
        if owner == Owner::OverlayDialed {
            self.links.remove(link);
        } else {
            let failures = if was_up { 0 } else { l.failures.saturating_add(1) };
            let jitter = match self.timing.connection_jitter {
                0 => 0,
                max => self.rng.gen_range(0..=max),
            };
            let l = self.links.get_mut(link).expect("looked up above");
            l.failures = failures;
            l.state = LinkState::RetryAt(now + redial_delay(&self.timing, failures, jitter));
        }
        if was_up && self.neighbours.contains(&link.node) && self.links_up(&link.node, link.channel) == 0 {
            self.event(Event::ChannelDown { node: link.node.clone(), channel: link.channel });
        }
        if owner != Owner::Neighbour {
            self.overlay.link_down(now, link);
            self.absorb(now);
        }
    }

    /// A frame from the authenticated peer `from`: control frames go to the overlay, broadcast
    /// frames to Plumtree (ignored when broadcast is off here), relayed messages are delivered or
    /// passed on.
    pub fn receive(&mut self, now: u64, from: &str, frame: Frame) -> Result<(), ReceiveError> {
        let result = match frame {
            Frame::Control { body } => self.overlay.control(now, from, &body).map_err(ReceiveError::from),
            Frame::Broadcast { body } => match self.plumtree.as_mut() {
                Some(pt) => pt.receive(now, from, &body).map_err(ReceiveError::from),
                None => Ok(()),
            },
            Frame::Relay { origin, id, hops, target, body } => {
                self.relay(now, from, Relayed { origin, id, hops, target, body });
                self.absorb_relay_acks(now);
                Ok(())
            }
            Frame::Message { .. } | Frame::Sequenced { .. } => Err(ReceiveError::NotForTheNode("message")),
            Frame::Ack { .. } => Err(ReceiveError::NotForTheNode("ack")),
            Frame::Ping { .. } | Frame::Pong { .. } => Err(ReceiveError::NotForTheNode("ping")),
            Frame::Challenge { .. } | Frame::Hello { .. } | Frame::Accept { .. } | Frame::Refused { .. } => {
                Err(ReceiveError::NotForTheNode("handshake"))
            }
        };
        self.absorb(now);
        result
    }

    /// Broadcasts a message with Plumtree (`partisan_plumtree_broadcast:broadcast/2`).
    pub fn broadcast(&mut self, now: u64, msg_id: Bytes, payload: Bytes) -> Result<(), BroadcastError> {
        let pt = self.plumtree.as_mut().ok_or(BroadcastError::Disabled)?;
        pt.broadcast(now, msg_id, payload)?;
        self.absorb(now);
        Ok(())
    }

    /// The handler's `merge/2` answer to [`Event::BroadcastDeliver`].
    pub fn broadcast_merged(&mut self, now: u64, msg_id: &[u8], is_new: bool) {
        if let Some(pt) = self.plumtree.as_mut() {
            pt.merge_result(now, msg_id, is_new);
            self.absorb(now);
        }
    }

    /// The handler's `graft/1` answer to [`Event::BroadcastGraft`]: the payload, or `None` when
    /// it is stale or unknown.
    pub fn broadcast_grafted(&mut self, now: u64, node: &str, msg_id: &[u8], round: u32, payload: Option<Bytes>) {
        if let Some(pt) = self.plumtree.as_mut() {
            pt.graft_result(now, node, msg_id, round, payload);
            self.absorb(now);
        }
    }

    /// Sends a message to `target` through the overlay (`transitive => true`): straight to it
    /// when it is a neighbour, else flooded to the neighbours (see [`crate::relay`]).
    pub fn send_transitive(&mut self, now: u64, target: &str, dest: Dest, payload: Bytes) -> Result<(), NoRoute> {
        let routed = self.originate(now, target, RelayBody::Message { dest, payload });
        self.absorb(now);
        if routed {
            Ok(())
        } else {
            Err(NoRoute)
        }
    }

    /// Sends a message to `target` through the overlay with `ack` (see [`crate::relay_ack`]):
    /// delivered once and in order, sent again until `target` acknowledges it, given up (and
    /// reported with [`Event::AckedSettled`]) only when `target` acknowledges nothing for
    /// `give_up_after`. With no neighbour now, it waits for the next retransmission. The shell
    /// budgets what it accepts ([`relay_ack::budget`] per message, freed by `AckedSettled`).
    pub fn send_acked_transitive(&mut self, now: u64, target: &str, dest: Dest, payload: Bytes) {
        self.relay_acks.send(now, target, dest, payload);
        self.absorb_relay_acks(now);
        self.absorb(now);
    }

    /// Redials the links that are due and runs the protocols' timers.
    pub fn tick(&mut self, now: u64) {
        let due: Vec<LinkId> =
            self.links.iter().filter(|(_, l)| matches!(l.state, LinkState::RetryAt(t) if t <= now)).map(|(id, _)| id.clone()).collect();
        for link in due {
            self.links.get_mut(&link).expect("listed above").state = LinkState::Dialing;
            self.dial(link);
        }
        if self.overlay.poll_timeout().is_some_and(|t| t <= now) {
            self.overlay.tick(now);
        }
        if let Some(pt) = self.plumtree.as_mut().filter(|pt| pt.poll_timeout().is_some_and(|t| t <= now)) {
            pt.tick(now);
        }
        if self.relay_acks.poll_timeout().is_some_and(|t| t <= now) {
            self.relay_acks.tick(now);
            self.absorb_relay_acks(now);
        }
        self.absorb(now);
    }

    /// The earliest time at which [`Node::tick`] has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let redials = self.links.values().filter_map(|l| match l.state {
            LinkState::RetryAt(t) => Some(t),
            _ => None,
        });
        redials
            .chain(self.overlay.poll_timeout())
            .chain(self.plumtree.as_ref().and_then(Plumtree::poll_timeout))
            .chain(self.relay_acks.poll_timeout())
            .min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn event(&mut self, event: Event) {
        self.actions.push_back(Action::Event(event));
    }

    fn dial(&mut self, link: LinkId) {
        let addrs = self.addrs.get(&link.node).cloned().unwrap_or_default();
        self.actions.push_back(Action::Dial { link, addrs });
    }

    /// The links to `node`, in [`LinkId`] order.
    fn links_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a LinkId, &'a Link)> + 'a {
        let first = LinkId { node: node.to_owned(), channel: 0, conn: 0 };
        self.links.range(first..).take_while(move |(id, _)| id.node == node)
    }

    fn links_up(&self, node: &str, channel: usize) -> usize {
        self.links_of(node).filter(|(id, l)| id.channel == channel && l.state == LinkState::Up).count()
    }

    fn channel_up(&self, node: &str, channel: usize) -> bool {
        self.links_up(node, channel) > 0
    }

    /// The channels of `node` with a link up, in order.
    fn channels_up(&self, node: &str) -> Vec<usize> {
        let mut up: Vec<usize> = self.links_of(node).filter(|(_, l)| l.state == LinkState::Up).map(|(id, _)| id.channel).collect();
        up.dedup();
        up
    }

    /// Executes what the overlay and Plumtree asked for until neither has anything left.
    fn absorb(&mut self, now: u64) {
        while let Some(action) = self.overlay.poll_action() {
            match action {
                OverlayAction::Keep { link, addrs } => {
                    self.addrs.insert(link.node.clone(), addrs);
                    match self.links.get_mut(&link) {
                        Some(l) => l.owner = Owner::OverlayKept,
                        None => {
                            self.links.insert(link.clone(), Link { owner: Owner::OverlayKept, state: LinkState::Dialing, failures: 0 });
                            self.dial(link);
                        }
                    }
                }
                OverlayAction::Dial { link, addrs } => {
                    self.addrs.insert(link.node.clone(), addrs);
                    self.links.insert(link.clone(), Link { owner: Owner::OverlayDialed, state: LinkState::Dialing, failures: 0 });
                    self.dial(link);
                }
                OverlayAction::Disconnect { node } => {
                    let links: Vec<LinkId> = self.links_of(&node).map(|(id, _)| id.clone()).collect();
                    for link in links {
                        self.links.remove(&link);
                    }
                    self.addrs.remove(&node);
                    self.actions.push_back(Action::Disconnect { node });
                }
                OverlayAction::SendControl { to, body } => {
                    let frame = Frame::Control { body }.to_bytes();
                    self.actions.push_back(Action::Send { node: to, channel: self.channels.membership_index(), frame });
                }
                OverlayAction::NodeUp { node } => self.neighbour_up(now, node),
                OverlayAction::NodeDown { node } => self.neighbour_down(now, node),
                OverlayAction::MembersChanged { members } => self.event(Event::Members(members)),
                OverlayAction::Removed { by } => self.event(Event::Removed { by }),
                OverlayAction::Upcall { from, body } => self.event(Event::Upcall { from, body }),
            }
        }
        let Some(pt) = self.plumtree.as_mut() else { return };
        let membership = self.channels.membership_index();
        while let Some(action) = pt.poll_action() {
            let action = match action {
                plumtree::Action::SendTo { node, body } => {
                    Action::Send { node, channel: membership, frame: Frame::Broadcast { body }.to_bytes() }
                }
                plumtree::Action::Deliver { msg_id, payload, from, hops } => {
                    Action::Event(Event::BroadcastDeliver { msg_id, payload, from, hops })
                }
                plumtree::Action::Graft { node, msg_id, round } => Action::Event(Event::BroadcastGraft { node, msg_id, round }),
                plumtree::Action::Exchange { node } => Action::Event(Event::BroadcastExchange { node }),
            };
            self.actions.push_back(action);
        }
    }

    fn neighbour_up(&mut self, now: u64, node: String) {
        if !self.neighbours.insert(node.clone()) {
            return;
        }
        self.event(Event::NodeUp(node.clone()));
        for channel in self.channels_up(&node) {
            self.event(Event::ChannelUp { node: node.clone(), channel });
        }
        if let Some(pt) = self.plumtree.as_mut() {
            pt.neighbour_up(now, &node);
        }
        let missing: Vec<LinkId> = self
            .channels
            .links()
            .map(|(channel, conn)| LinkId { node: node.clone(), channel, conn })
            .filter(|link| !self.links.contains_key(link))
            .collect();
        for link in missing {
            self.links.insert(link.clone(), Link { owner: Owner::Neighbour, state: LinkState::Dialing, failures: 0 });
            self.dial(link);
        }
    }

    fn neighbour_down(&mut self, now: u64, node: String) {
        if !self.neighbours.remove(&node) {
            return;
        }
        for channel in self.channels_up(&node) {
            self.event(Event::ChannelDown { node: node.clone(), channel });
        }
        let own: Vec<LinkId> = self.links_of(&node).filter(|(_, l)| l.owner == Owner::Neighbour).map(|(id, _)| id.clone()).collect();
        for link in own {
            self.links.remove(&link);
            self.actions.push_back(Action::Close { link });
        }
        if let Some(pt) = self.plumtree.as_mut() {
            pt.neighbour_down(now, &node);
        }
        self.event(Event::NodeDown(node));
    }

    /// Relays `body` from this node to `target` with a new relay id; returns whether it went
    /// anywhere.
    fn originate(&mut self, now: u64, target: &str, body: RelayBody) -> bool {
        let id = self.next_relay_id;
        self.next_relay_id += 1;
        let me = self.name.clone();
        self.relay(now, &me, Relayed { origin: me.clone(), id, hops: DEFAULT_HOPS, target: target.to_owned(), body })
    }

    /// Executes what the acked relays asked for until they have nothing left.
    fn absorb_relay_acks(&mut self, now: u64) {
        while let Some(output) = self.relay_acks.poll_output() {
            match output {
                relay_ack::Output::Send { target, body } => {
                    let seq = match &body {
                        RelayBody::Sequenced { seq, .. } => Some(*seq),
                        _ => None,
                    };
                    // An ack with nowhere to go is sent again with the next message's ack.
                    if !self.originate(now, &target, body) {
                        if let Some(seq) = seq {
                            self.relay_acks.transmit_failed(&target, seq);
                        }
                    }
                }
                relay_ack::Output::Deliver { origin, dest, payload } => self.event(Event::Deliver { origin, dest, payload }),
                relay_ack::Output::Settled { target, acked, given_up, bytes } => {
                    self.event(Event::AckedSettled { node: target, acked, given_up, bytes })
                }
            }
        }
    }

    /// Routes a relayed body from `from` (this node itself for its own): delivers it here,
    /// passes it on to neighbours, or drops it. Returns whether it went anywhere.
    fn relay(&mut self, now: u64, from: &str, msg: Relayed) -> bool {
        let Relayed { origin, id, hops, target, body } = msg;
        let neighbours = self.relay_neighbours();
        match self.relay.decide(&origin, id, hops, &target, from, &neighbours) {
            RelayDecision::Deliver => {
                match body {
                    RelayBody::Message { dest, payload } => self.event(Event::Deliver { origin, dest, payload }),
                    acked => self.relay_acks.receive(now, &origin, acked),
                }
                true
            }
            RelayDecision::Forward { to, hops_left } => {
                let frame = Frame::Relay { origin, id, hops: hops_left, target, body }.to_bytes();
                let channel = self.channels.default_index();
                for node in to {
                    self.actions.push_back(Action::Send { node, channel, frame: frame.clone() });
                }
                self.stats.relayed += 1;
                true
            }
            RelayDecision::Drop => false,
        }
    }
}

#[cfg(test)]
mod tests;
