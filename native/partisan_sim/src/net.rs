//! The virtual network: plays the shell for every node, the way `partisan_net`'s driver does for
//! one. Each simulated node is a [`partisan_core::node::Node`] — the same composition of overlay,
//! Plumtree, relaying and link policy the live runtime runs — with an [`App`] on top that gets
//! its events, as the live runtime's `Sink` does.
//!
//! - `Dial` opens a link after a round trip if the target runs and is on the same side of the
//!   partition (`link_up`), else fails after the round trip (`link_down`, connection refused).
//! - `Send` travels on the sender's link of the frame's channel if one is up (as the live
//!   runtime, a frame for a node without a link is dropped), after a latency drawn per frame,
//!   lost with probability `loss`, and in order per (sender, receiver) pair as on TCP. Frames
//!   are the live ones, encoded: the receiver parses them as its reader would.
//! - `Close` and `Disconnect` close the sender's links; frames already in flight still arrive.
//! - A crash removes the node at once; every link to it drops at its other end after one latency
//!   (the TCP reset), frames in flight to it are lost. A partition drops every link across it
//!   the same way and refuses new ones until it is healed.
//!
//! Events sit in one binary heap ordered by (time, sequence number), so a run is a pure function
//! of the seed. Nodes are numbered ([`NodeId`]); names are interned once.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::hyparview::{HyParView, HyParViewConfig};
//! use partisan_core::node::{LinkTiming, Node};
//! use partisan_sim::net::{NetConfig, Sim};
//! let channels = ChannelTable::new(vec![]).unwrap();
//! let mut sim: Sim<HyParView> = Sim::new(NetConfig::default(), 1);
//! for i in 0..3 {
//!     let spec = Sim::<HyParView>::spec_for(i);
//!     let hv = HyParView::new(spec.clone(), &channels, HyParViewConfig::default(), i as u64).unwrap();
//!     sim.add_node(Node::new(&spec.name, channels.clone(), hv, LinkTiming::default(), None, i as u64).unwrap(), ());
//! }
//! sim.join(1, 0);
//! sim.join(2, 0);
//! sim.run_for(1_000);
//! assert_eq!(sim.node(0).unwrap().overlay().active_view(), vec!["n00001", "n00002"]);
//! ```

use bytes::Bytes;
use partisan_core::frame::{Frame, LENGTH_PREFIX};
use partisan_core::node::{Action, Event as NodeEvent, Node};
use partisan_core::overlay::{LinkId, NodeSpec, Overlay};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

/// What runs on top of a simulated node: it gets the node's events (what the live runtime hands
/// its `Sink`) and may answer them through the node, as Partisan's broadcast handler answers
/// `merge/2` and `graft/1`.
pub trait App: Clone {
    fn event<O: Overlay>(&mut self, node: &mut Node<O>, now: u64, event: NodeEvent);
    /// A frame the node is about to receive: a measurement probe (a live application sees no
    /// frames).
    fn frame(&mut self, _from: &str, _frame: &Frame) {}
}

/// No application: events are dropped.
impl App for () {
    fn event<O: Overlay>(&mut self, _: &mut Node<O>, _: u64, _: NodeEvent) {}
}

/// Index of a node in the simulation.
pub type NodeId = u32;

/// One-way latency of a message, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Uniform { min_ms: u64, max_ms: u64 },
    /// `min_ms` plus an exponentially distributed delay of mean `mean_extra_ms` (a long tail).
    Exponential { min_ms: u64, mean_extra_ms: f64 },
}

impl Latency {
    fn sample(&self, rng: &mut SmallRng) -> u64 {
        match *self {
            Latency::Uniform { min_ms, max_ms } => rng.gen_range(min_ms..=max_ms.max(min_ms)),
            Latency::Exponential { min_ms, mean_extra_ms } => {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                min_ms + (-u.ln() * mean_extra_ms) as u64
            }
        }
    }
}

/// The virtual network's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetConfig {
    pub latency: Latency,
    /// Probability that a frame is lost.
    pub loss: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { latency: Latency::Uniform { min_ms: 5, max_ms: 50 }, loss: 0.0 }
    }
}

/// Counters of what the nodes asked the network to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames sent on a link (control, broadcast and relay frames).
    pub frames: u64,
    pub frame_bytes: u64,
    pub dials: u64,
    /// Frames for a node without a link up (dropped, as the live runtime does).
    pub unsent: u64,
    pub lost: u64,
    /// Frames the receiver rejected as malformed.
    pub rejected: u64,
}

#[derive(Debug, Clone)]
enum Event {
    Tick { node: NodeId },
    Connected { from: NodeId, to: NodeId, channel: usize, conn: u16, attempt: u64 },
    LinkLost { from: NodeId, to: NodeId, channel: usize, conn: u16, attempt: u64 },
    Deliver { from: NodeId, to: NodeId, frame: Bytes },
}

#[derive(Debug, Clone)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A link a node dialed: (from, to, channel, connection index).
type LinkKey = (NodeId, NodeId, usize, u16);

#[derive(Debug, Clone, Copy)]
struct LinkState {
    /// Tells a stale event (for a link closed and dialed again) from the current one.
    attempt: u64,
    up: bool,
}

/// One simulated node and its application.
#[derive(Debug, Clone)]
struct Host<O, A> {
    node: Node<O>,
    app: A,
}

/// The simulation: nodes running overlay `O`, each with application `A`, over the virtual
/// network.
#[derive(Debug, Clone)]
pub struct Sim<O, A = ()> {
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    hosts: Vec<Option<Host<O, A>>>,
    specs: Vec<NodeSpec>,
    ids: HashMap<String, NodeId>,
    side: Vec<u32>,
    links: BTreeMap<LinkKey, LinkState>,
    /// Time of the last delivery per (sender, receiver): keeps frames in order.
    fifo: HashMap<(NodeId, NodeId), u64>,
    /// The tick each node has in the queue.
    timers: Vec<Option<u64>>,
    next_attempt: u64,
    cfg: NetConfig,
    rng: SmallRng,
    scratch: Vec<Action>,
    stats: Stats,
}

impl<O: Overlay, A: App> Sim<O, A> {
    pub fn new(cfg: NetConfig, seed: u64) -> Self {
        Sim {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: Vec::new(),
            specs: Vec::new(),
            ids: HashMap::new(),
            side: Vec::new(),
            links: BTreeMap::new(),
            fifo: HashMap::new(),
            timers: Vec::new(),
            next_attempt: 0,
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            scratch: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// The name and (fictitious) address of node `id`: `n00042` at 10.0.0.42:9000.
    pub fn spec_for(id: NodeId) -> NodeSpec {
        let ip = Ipv4Addr::from(0x0a00_0000 | id);
        NodeSpec::new(&format!("n{id:05}"), vec![SocketAddr::new(ip.into(), 9000)], vec![])
    }

    /// Adds a node; it must be named as `Sim::spec_for(next id)`.
    pub fn add_node(&mut self, node: Node<O>, app: A) -> NodeId {
        let id = self.hosts.len() as NodeId;
        let spec = Self::spec_for(id);
        assert_eq!(node.name(), spec.name, "nodes are added in the order of their ids");
        self.ids.insert(spec.name.clone(), id);
        self.specs.push(spec);
        self.hosts.push(Some(Host { node, app }));
        self.side.push(0);
        self.timers.push(None);
        id
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn node(&self, id: NodeId) -> Option<&Node<O>> {
        self.hosts.get(id as usize)?.as_ref().map(|h| &h.node)
    }

    pub fn app(&self, id: NodeId) -> Option<&A> {
        self.hosts.get(id as usize)?.as_ref().map(|h| &h.app)
    }

    pub fn is_alive(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    pub fn alive(&self) -> Vec<NodeId> {
        (0..self.hosts.len() as NodeId).filter(|id| self.is_alive(*id)).collect()
    }

    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        self.ids.get(name).copied()
    }

    /// Links dialed by `id` that are up.
    pub fn links_up_from(&self, id: NodeId) -> usize {
        self.links.range((id, 0, 0, 0)..(id + 1, 0, 0, 0)).filter(|(_, s)| s.up).count()
    }

    /// Distinct nodes that `id` has a dialed link up to.
    pub fn peers_up_from(&self, id: NodeId) -> usize {
        let mut peers: Vec<NodeId> =
            self.links.range((id, 0, 0, 0)..(id + 1, 0, 0, 0)).filter(|(_, s)| s.up).map(|(k, _)| k.1).collect();
        peers.dedup();
        peers.len()
    }

    /// Gives `node` an input through `f(node, app, now)` (a local broadcast, say) and executes
    /// the actions it produced. Nothing happens for a crashed node.
    pub fn input(&mut self, node: NodeId, f: impl FnOnce(&mut Node<O>, &mut A, u64)) {
        let now = self.now;
        if let Some(host) = self.hosts[node as usize].as_mut() {
            f(&mut host.node, &mut host.app, now);
            self.after_input(node);
        }
    }

    /// `node` joins through `contact` (`partisan_peer_service:join/1`).
    pub fn join(&mut self, node: NodeId, contact: NodeId) {
        let spec = self.specs[contact as usize].clone();
        self.input(node, |n, _, now| n.join(now, spec));
    }

    /// `node` leaves the cluster (`partisan_peer_service:leave/0`).
    pub fn leave(&mut self, node: NodeId) {
        let name = self.specs[node as usize].name.clone();
        self.input(node, |n, _, now| n.leave(now, &name));
    }

    /// Crashes nodes at once: their state is gone, their links drop at the other ends.
    pub fn crash(&mut self, crashed: &[NodeId]) {
        self.crash_detected_after(crashed, 0);
    }

    /// Crashes nodes silently: the other ends of their links notice only `detect_ms` later
    /// (plus one latency), as with a host that vanished without a TCP reset and is found out by
    /// a timeout. Until then those links look up: frames sent on them are counted and lost.
    /// New connections to a crashed node are still refused after one round trip.
    pub fn crash_detected_after(&mut self, crashed: &[NodeId], detect_ms: u64) {
        for &id in crashed {
            self.hosts[id as usize] = None;
            self.timers[id as usize] = None;
        }
        self.drop_links_after(detect_ms, |sim, from, to| !sim.is_alive(from) || !sim.is_alive(to));
    }

    /// A random `fraction` of the live nodes, sorted.
    pub fn pick_fraction(&self, fraction: f64, rng: &mut SmallRng) -> Vec<NodeId> {
        let mut alive = self.alive();
        let count = ((alive.len() as f64) * fraction).round() as usize;
        let (chosen, _) = rand::seq::SliceRandom::partial_shuffle(&mut alive[..], rng, count);
        let mut chosen = chosen.to_vec();
        chosen.sort_unstable();
        chosen
    }

    /// Crashes a random `fraction` of the live nodes; returns them.
    pub fn crash_fraction(&mut self, fraction: f64, rng: &mut SmallRng) -> Vec<NodeId> {
        let chosen = self.pick_fraction(fraction, rng);
        self.crash(&chosen);
        chosen
    }

    /// Splits the network: nodes talk only within their side (`side_of(id)`); links across
    /// drop. `partition(|_| 0)` heals it.
    pub fn partition(&mut self, side_of: impl Fn(NodeId) -> u32) {
        for (id, side) in self.side.iter_mut().enumerate() {
            *side = side_of(id as NodeId);
        }
        self.drop_links_after(0, |sim, from, to| sim.side[from as usize] != sim.side[to as usize]);
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        self.is_alive(to) && self.side[from as usize] == self.side[to as usize]
    }

    /// Links of crashed dialers vanish; live dialers of a cut link see it drop `delay_ms` plus a
    /// latency later.
    fn drop_links_after(&mut self, delay_ms: u64, cut: impl Fn(&Self, NodeId, NodeId) -> bool) {
        let cut: Vec<(LinkKey, LinkState)> =
            self.links.iter().filter(|(k, _)| cut(self, k.0, k.1)).map(|(k, s)| (*k, *s)).collect();
        for ((from, to, channel, conn), state) in cut {
            if !self.is_alive(from) {
                self.links.remove(&(from, to, channel, conn));
            } else {
                let at = self.now + delay_ms + self.cfg.latency.sample(&mut self.rng);
                self.schedule(at, Event::LinkLost { from, to, channel, conn, attempt: state.attempt });
            }
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    /// Runs every event up to `now + ms`.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.queue.peek().is_some_and(|e| e.at <= end) {
            let Some(Scheduled { at, event, .. }) = self.queue.pop() else { break };
            self.now = at;
            self.handle(event);
        }
        self.now = end;
    }

    fn link_id(&self, to: NodeId, channel: usize, conn: u16) -> LinkId {
        LinkId { node: self.specs[to as usize].name.clone(), channel, conn }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node } => {
                if self.timers[node as usize] != Some(self.now) {
                    return; // superseded by an earlier deadline, or the node crashed
                }
                self.timers[node as usize] = None;
                self.input(node, |n, _, now| n.tick(now));
            }
            Event::Connected { from, to, channel, conn, attempt } => {
                let key = (from, to, channel, conn);
                if self.links.get(&key).is_none_or(|s| s.attempt != attempt) || !self.is_alive(from) {
                    return;
                }
                let link = self.link_id(to, channel, conn);
                let up = self.reachable(from, to);
                if up {
                    self.links.insert(key, LinkState { attempt, up: true });
                    self.input(from, |n, _, now| n.link_up(now, &link));
                } else {
                    self.links.remove(&key);
                    self.input(from, |n, _, now| n.link_down(now, &link));
                }
            }
            Event::LinkLost { from, to, channel, conn, attempt } => {
                let key = (from, to, channel, conn);
                if self.links.get(&key).is_none_or(|s| s.attempt != attempt) {
                    return;
                }
                self.links.remove(&key);
                let link = self.link_id(to, channel, conn);
                self.input(from, |n, _, now| n.link_down(now, &link));
            }
            Event::Deliver { from, to, frame } => {
                if !self.reachable(from, to) {
                    return;
                }
                let Ok(frame) = Frame::parse(frame.slice(LENGTH_PREFIX..)) else {
                    self.stats.rejected += 1;
                    return;
                };
                let name = self.specs[from as usize].name.clone();
                let mut rejected = false;
                self.input(to, |n, app, now| {
                    app.frame(&name, &frame);
                    rejected = n.receive(now, &name, frame).is_err();
                });
                self.stats.rejected += u64::from(rejected);
            }
        }
    }

    /// Hands `id`'s events to its application (which may give the node more inputs), executes
    /// its other actions on the network, and re-arms its timer.
    fn after_input(&mut self, id: NodeId) {
        let mut actions = std::mem::take(&mut self.scratch);
        let now = self.now;
        if let Some(host) = self.hosts[id as usize].as_mut() {
            while let Some(action) = host.node.poll_action() {
                match action {
                    Action::Event(event) => host.app.event(&mut host.node, now, event),
                    other => actions.push(other),
                }
            }
        }
        for action in actions.drain(..) {
            self.execute(id, action);
        }
        self.scratch = actions;
        let deadline = self.node(id).and_then(|n| n.poll_timeout());
        if let Some(at) = deadline {
            let at = at.max(self.now);
            if self.timers[id as usize] != Some(at) {
                self.timers[id as usize] = Some(at);
                self.schedule(at, Event::Tick { node: id });
            }
        }
    }

    fn execute(&mut self, from: NodeId, action: Action) {
        match action {
            Action::Dial { link, .. } => {
                let Some(&to) = self.ids.get(&link.node) else { return };
                self.next_attempt += 1;
                let attempt = self.next_attempt;
                self.stats.dials += 1;
                self.links.insert((from, to, link.channel, link.conn), LinkState { attempt, up: false });
                let rtt = self.cfg.latency.sample(&mut self.rng) + self.cfg.latency.sample(&mut self.rng);
                self.schedule(self.now + rtt, Event::Connected { from, to, channel: link.channel, conn: link.conn, attempt });
            }
            Action::Close { link } => {
                let Some(&to) = self.ids.get(&link.node) else { return };
                self.links.remove(&(from, to, link.channel, link.conn));
            }
            Action::Disconnect { node } => {
                let Some(&to) = self.ids.get(&node) else { return };
                let keys: Vec<LinkKey> =
                    self.links.range((from, to, 0, 0)..=(from, to, usize::MAX, u16::MAX)).map(|(k, _)| *k).collect();
                for key in keys {
                    self.links.remove(&key);
                }
            }
            Action::Send { node, channel, frame } => {
                let Some(&to) = self.ids.get(&node) else { return };
                let on_link = self.links.range((from, to, channel, 0)..=(from, to, channel, u16::MAX)).any(|(_, s)| s.up);
                if !on_link {
                    self.stats.unsent += 1;
                    return;
                }
                self.stats.frames += 1;
                self.stats.frame_bytes += frame.len() as u64;
                if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss) {
                    self.stats.lost += 1;
                    return;
                }
                let earliest = self.now + self.cfg.latency.sample(&mut self.rng);
                let last = self.fifo.entry((from, to)).or_insert(0);
                let at = earliest.max(*last);
                *last = at;
                self.schedule(at, Event::Deliver { from, to, frame });
            }
            Action::Event(_) => unreachable!("events go to the application in after_input"),
        }
    }
}
