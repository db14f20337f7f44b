//! The virtual network: plays the shell for every node, the way `partisan_net` does for one.
//!
//! - `Connect` opens a link after a round trip if the target runs and is on the same side of
//!   the partition (`link_up`), else fails after the round trip (`link_down`, connection refused).
//! - `SendControl` travels on the sender's membership link if it is up (as the live runtime, a
//!   frame for a node without a link is dropped), after a latency drawn per message, lost with
//!   probability `loss`, and in order per (sender, receiver) pair as on one TCP connection.
//! - `Disconnect` closes the sender's links to the node; frames already in flight still arrive.
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
//! use partisan_sim::net::{NetConfig, Sim};
//! let channels = ChannelTable::new(vec![]).unwrap();
//! let mut sim = Sim::new(NetConfig::default(), channels.membership_index(), 1);
//! for i in 0..3 {
//!     let spec = Sim::<HyParView>::spec_for(i);
//!     sim.add_node(HyParView::new(spec, &channels, HyParViewConfig::default(), i as u64).unwrap());
//! }
//! sim.join(1, 0);
//! sim.join(2, 0);
//! sim.run_for(1_000);
//! assert_eq!(sim.node(0).unwrap().active_view(), vec!["n00001", "n00002"]);
//! ```

use bytes::Bytes;
use partisan_core::membership::{Action, LinkId, NodeSpec};
use partisan_core::overlay::Overlay;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

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
    /// Probability that a control frame is lost.
    pub loss: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { latency: Latency::Uniform { min_ms: 5, max_ms: 50 }, loss: 0.0 }
    }
}

/// Counters of what the overlays asked the network to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub control_frames: u64,
    pub control_bytes: u64,
    pub connects: u64,
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
    Deliver { from: NodeId, to: NodeId, body: Bytes },
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

/// The simulation: nodes running overlay `O` over the virtual network.
#[derive(Debug, Clone)]
pub struct Sim<O> {
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Option<O>>,
    specs: Vec<NodeSpec>,
    ids: HashMap<String, NodeId>,
    side: Vec<u32>,
    links: BTreeMap<LinkKey, LinkState>,
    /// Time of the last delivery per (sender, receiver): keeps frames in order.
    fifo: HashMap<(NodeId, NodeId), u64>,
    /// The tick each node has in the queue.
    timers: Vec<Option<u64>>,
    next_attempt: u64,
    membership_channel: usize,
    cfg: NetConfig,
    rng: SmallRng,
    scratch: Vec<Action>,
    stats: Stats,
}

impl<O: Overlay> Sim<O> {
    pub fn new(cfg: NetConfig, membership_channel: usize, seed: u64) -> Self {
        Sim {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            specs: Vec::new(),
            ids: HashMap::new(),
            side: Vec::new(),
            links: BTreeMap::new(),
            fifo: HashMap::new(),
            timers: Vec::new(),
            next_attempt: 0,
            membership_channel,
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

    /// Adds a node; it must have been created with `Sim::spec_for(next id)`.
    pub fn add_node(&mut self, overlay: O) -> NodeId {
        let id = self.nodes.len() as NodeId;
        let spec = Self::spec_for(id);
        self.ids.insert(spec.name.clone(), id);
        self.specs.push(spec);
        self.nodes.push(Some(overlay));
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
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> Option<&O> {
        self.nodes.get(id as usize)?.as_ref()
    }

    pub fn is_alive(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    pub fn alive(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as NodeId).filter(|id| self.is_alive(*id)).collect()
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

    /// Gives `node` an input through `f(overlay, now)` (a local broadcast, say) and executes
    /// the actions it produced. Nothing happens for a crashed node.
    pub fn input(&mut self, node: NodeId, f: impl FnOnce(&mut O, u64)) {
        let now = self.now;
        if let Some(n) = self.nodes[node as usize].as_mut() {
            f(n, now);
            self.after_input(node);
        }
    }

    /// The same network, links, clock and events with every node replaced by `f(id, node)`
    /// (a protocol stacked on the overlay, say); the new nodes' actions are executed and their
    /// timers armed at once.
    pub fn map<P: Overlay>(self, mut f: impl FnMut(NodeId, O, u64) -> P) -> Sim<P> {
        let now = self.now;
        let nodes: Vec<Option<P>> = self
            .nodes
            .into_iter()
            .enumerate()
            .map(|(id, n)| n.map(|n| f(id as NodeId, n, now)))
            .collect();
        let mut sim = Sim {
            now,
            seq: self.seq,
            queue: self.queue,
            nodes,
            specs: self.specs,
            ids: self.ids,
            side: self.side,
            links: self.links,
            fifo: self.fifo,
            timers: self.timers,
            next_attempt: self.next_attempt,
            membership_channel: self.membership_channel,
            cfg: self.cfg,
            rng: self.rng,
            scratch: Vec::new(),
            stats: self.stats,
        };
        for id in 0..sim.nodes.len() as NodeId {
            if sim.is_alive(id) {
                sim.after_input(id);
            }
        }
        sim
    }

    /// `node` joins through `contact` (`partisan_peer_service:join/1`).
    pub fn join(&mut self, node: NodeId, contact: NodeId) {
        let spec = self.specs[contact as usize].clone();
        let now = self.now;
        if let Some(n) = self.nodes[node as usize].as_mut() {
            n.join(now, spec);
            self.after_input(node);
        }
    }

    /// `node` leaves the cluster (`partisan_peer_service:leave/0`).
    pub fn leave(&mut self, node: NodeId) {
        let name = self.specs[node as usize].name.clone();
        let now = self.now;
        if let Some(n) = self.nodes[node as usize].as_mut() {
            n.leave(now, &name);
            self.after_input(node);
        }
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
            self.nodes[id as usize] = None;
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
        self.drop_links(|sim, from, to| sim.side[from as usize] != sim.side[to as usize]);
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        self.is_alive(to) && self.side[from as usize] == self.side[to as usize]
    }

    /// Links of crashed dialers vanish; live dialers of a cut link see it drop after a latency.
    fn drop_links(&mut self, cut: impl Fn(&Self, NodeId, NodeId) -> bool) {
        self.drop_links_after(0, cut);
    }

    /// [`Self::drop_links`], the live dialers noticing `delay_ms` later.
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
        let now = self.now;
        match event {
            Event::Tick { node } => {
                if self.timers[node as usize] != Some(now) {
                    return; // superseded by an earlier deadline, or the node crashed
                }
                self.timers[node as usize] = None;
                if let Some(n) = self.nodes[node as usize].as_mut() {
                    n.tick(now);
                    self.after_input(node);
                }
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
                } else {
                    self.links.remove(&key);
                }
                if let Some(n) = self.nodes[from as usize].as_mut() {
                    if up {
                        n.link_up(now, &link);
                    } else {
                        n.link_down(now, &link);
                    }
                    self.after_input(from);
                }
            }
            Event::LinkLost { from, to, channel, conn, attempt } => {
                let key = (from, to, channel, conn);
                if self.links.get(&key).is_none_or(|s| s.attempt != attempt) {
                    return;
                }
                self.links.remove(&key);
                let link = self.link_id(to, channel, conn);
                if let Some(n) = self.nodes[from as usize].as_mut() {
                    n.link_down(now, &link);
                    self.after_input(from);
                }
            }
            Event::Deliver { from, to, body } => {
                if !self.reachable(from, to) {
                    return;
                }
                let name = &self.specs[from as usize].name;
                if let Some(n) = self.nodes[to as usize].as_mut() {
                    if n.control(now, name, &body).is_err() {
                        self.stats.rejected += 1;
                    }
                    self.after_input(to);
                }
            }
        }
    }

    /// Executes the actions `id` produced and re-arms its timer.
    fn after_input(&mut self, id: NodeId) {
        let mut actions = std::mem::take(&mut self.scratch);
        if let Some(n) = self.nodes[id as usize].as_mut() {
            actions.extend(std::iter::from_fn(|| n.poll_action()));
        }
        for action in actions.drain(..) {
            self.execute(id, action);
        }
        self.scratch = actions;
        let deadline = self.nodes[id as usize].as_ref().and_then(|n| n.poll_timeout());
        if let Some(at) = deadline {
            if self.timers[id as usize] != Some(at.max(self.now)) {
                let at = at.max(self.now);
                self.timers[id as usize] = Some(at);
                self.schedule(at, Event::Tick { node: id });
            }
        }
    }

    fn execute(&mut self, from: NodeId, action: Action) {
        match action {
            Action::Connect { link, .. } => {
                let Some(&to) = self.ids.get(&link.node) else { return };
                self.next_attempt += 1;
                let attempt = self.next_attempt;
                self.stats.connects += 1;
                self.links.insert((from, to, link.channel, link.conn), LinkState { attempt, up: false });
                let rtt = self.cfg.latency.sample(&mut self.rng) + self.cfg.latency.sample(&mut self.rng);
                self.schedule(self.now + rtt, Event::Connected { from, to, channel: link.channel, conn: link.conn, attempt });
            }
            Action::Disconnect { node } => {
                let Some(&to) = self.ids.get(&node) else { return };
                let keys: Vec<LinkKey> =
                    self.links.range((from, to, 0, 0)..=(from, to, usize::MAX, u16::MAX)).map(|(k, _)| *k).collect();
                for key in keys {
                    self.links.remove(&key);
                }
            }
            Action::SendControl { to, body } => {
                let Some(&to) = self.ids.get(&to) else { return };
                let on_link = self
                    .links
                    .range((from, to, self.membership_channel, 0)..=(from, to, self.membership_channel, u16::MAX))
                    .any(|(_, s)| s.up);
                if !on_link {
                    self.stats.unsent += 1;
                    return;
                }
                self.stats.control_frames += 1;
                self.stats.control_bytes += body.len() as u64;
                if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss) {
                    self.stats.lost += 1;
                    return;
                }
                let earliest = self.now + self.cfg.latency.sample(&mut self.rng);
                let last = self.fifo.entry((from, to)).or_insert(0);
                let at = earliest.max(*last);
                *last = at;
                self.schedule(at, Event::Deliver { from, to, body });
            }
            // Membership events are for applications; the experiments read the views directly.
            _ => {}
        }
    }
}
