//! Full-mesh membership: every member connects to every other member on every channel.
//!
//! This is Partisan's default overlay (`partisan_pluggable_peer_service_manager` with the full
//! membership strategy), as a deterministic state machine in the style of `quinn-proto`: the shell
//! feeds it events (`join`, `link_up`, `control`, `tick`, ...) with the current time in
//! milliseconds, then drains [`Action`]s (connect, send a control frame, report a node up, ...)
//! with [`FullMesh::poll_action`]. It holds no socket, no clock and no thread, so the same code
//! runs in the live runtime and in tests that step time by hand.
//!
//! # Membership as a CRDT
//! The member table maps a node name to a [`Member`] entry ordered by
//! `(incarnation, version, left)`. Gossip merges tables entry by entry, keeping the greater entry,
//! so every node converges to the same table whatever the order of delivery. A node's incarnation
//! is taken when it starts (the shell passes the wall clock), so a restarted node's entry beats
//! its old one; `leave` writes a tombstone (`left = true`) with a higher version, which beats the
//! live entry it removes. A node that learns it has been removed resets to a cluster of one and
//! raises its own version above the tombstone, so it can join again later.
//!
//! # Links
//! Each node dials its own connections to every live member: one per (channel, connection
//! index). It sends only on the connections it dialed and receives on the ones it accepted, so
//! two nodes never race to pick one of two simultaneous connections. A link that drops is
//! retried after `connection_interval` plus a random share of `connection_jitter`.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::membership::*;
//! let me = NodeSpec::new("a@h", vec!["127.0.0.1:9000".parse().unwrap()], vec![]);
//! let mut mesh = FullMesh::new(me, 1, ChannelTable::new(vec![]).unwrap(), MeshConfig::default(), 7);
//! mesh.join(0, NodeSpec::new("b@h", vec!["127.0.0.1:9001".parse().unwrap()], vec![]));
//! let mut connects = 0;
//! while let Some(action) = mesh.poll_action() {
//!     if let Action::Connect { .. } = action { connects += 1 }
//! }
//! assert_eq!(connects, 2); // default and membership channel, one connection each
//! ```

use crate::channel::{ChannelSpec, ChannelTable};
use crate::wire::{Reader, WireError, WriteExt};
use bytes::{BufMut, Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// How to reach a node and which channels it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub listen_addrs: Vec<SocketAddr>,
    pub channels: Vec<ChannelSpec>,
}

impl NodeSpec {
    pub fn new(name: &str, listen_addrs: Vec<SocketAddr>, channels: Vec<ChannelSpec>) -> Self {
        NodeSpec { name: name.to_owned(), listen_addrs, channels }
    }
}

/// What a node is in a client-server cluster (`tag` in Partisan's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// A full-mesh or static member, or a node whose role is not known yet.
    #[default]
    Peer,
    Server,
    Client,
}

/// Which members a node keeps links to. Membership itself (who is in the cluster) is gossiped
/// the same way in every topology except `Static`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Every member links to every other member (`partisan_pluggable_peer_service_manager`).
    #[default]
    FullMesh,
    /// Servers link to everyone; clients link only to servers
    /// (`partisan_client_server_peer_service_manager`).
    ClientServer,
    /// Links exactly as configured: a node links to the nodes it joined and to the nodes that
    /// joined it, and learns no third parties from gossip (`partisan_static_peer_service_manager`).
    Static,
    /// Membership decided outside the core (an Erlang `partisan_membership_strategy` module):
    /// links to exactly the members given to [`FullMesh::set_members`], no gossip of its own,
    /// and control frames handed up with [`Action::Upcall`].
    External,
}

/// One entry of the member table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub spec: NodeSpec,
    pub incarnation: u64,
    pub version: u64,
    pub left: bool,
    pub role: Role,
}

impl Member {
    fn rank(&self) -> (u64, u64, bool) {
        (self.incarnation, self.version, self.left)
    }
}

/// Timing of the mesh, in milliseconds (Partisan's config keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshConfig {
    pub connection_interval: u64,
    pub connection_jitter: u64,
    pub periodic_interval: u64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig { connection_interval: 1000, connection_jitter: 1000, periodic_interval: 10_000 }
    }
}

/// The shortest wait before redialing a link whose last dial failed, in milliseconds.
pub const REDIAL_FLOOR_MS: u64 = 100;
/// The longest the backoff of a link that keeps failing grows to (a larger
/// `connection_interval` still applies as configured).
pub const REDIAL_CAP_MS: u64 = 2_000;

/// How long to wait before redialing a link after `failures` consecutive failed dials
/// (0: the link was up and dropped). The first redial after a drop waits
/// `connection_interval` + `jitter`, as configured, even 0; each failed dial after that doubles
/// a backoff that starts at [`REDIAL_FLOOR_MS`] and stops at [`REDIAL_CAP_MS`], and the wait is
/// the larger of the two. So `connection_interval => 0` cannot turn a dead member into a tight
/// dial loop.
///
/// ```
/// use partisan_core::membership::{redial_delay, MeshConfig};
/// let zero = MeshConfig { connection_interval: 0, connection_jitter: 0, periodic_interval: 0 };
/// let waits: Vec<u64> = (0..7).map(|n| redial_delay(&zero, n, 0)).collect();
/// assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 2000]);
/// assert_eq!(redial_delay(&MeshConfig::default(), 3, 250), 1250);
/// ```
pub fn redial_delay(cfg: &MeshConfig, failures: u32, jitter: u64) -> u64 {
    let configured = cfg.connection_interval.saturating_add(jitter);
    if failures == 0 {
        return configured;
    }
    let backoff = REDIAL_FLOOR_MS.saturating_mul(1u64 << (failures - 1).min(20)).min(REDIAL_CAP_MS);
    configured.max(backoff)
}

/// One outgoing connection: peer, channel index in the local [`ChannelTable`], connection index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    pub node: String,
    pub channel: usize,
    pub conn: u16,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial this link, trying the addresses in order; report `link_up` or `link_down`.
    Connect { link: LinkId, addrs: Vec<SocketAddr> },
    /// Close every link to the node, after flushing what is queued on them.
    Disconnect { node: String },
    /// Send a control frame on the node's membership link.
    SendControl { to: String, body: Bytes },
    NodeUp { node: String },
    NodeDown { node: String },
    ChannelUp { node: String, channel: usize },
    ChannelDown { node: String, channel: usize },
    /// The live members (this node included), sorted.
    MembersChanged { members: Vec<String> },
    /// Another node removed this one from the cluster; it is now a cluster of one.
    Removed { by: String },
    /// A control frame for the membership strategy outside the core ([`Topology::External`]).
    Upcall { from: String, body: Bytes },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Up,
    RetryAt(u64),
}

#[derive(Debug)]
struct Peer {
    addrs: Vec<SocketAddr>,
    links: Vec<LinkState>,
    /// Consecutive failed dials per link (see [`redial_delay`]).
    failures: Vec<u32>,
    up_per_channel: Vec<u16>,
}

impl Peer {
    fn up_total(&self) -> usize {
        self.links.iter().filter(|s| **s == LinkState::Up).count()
    }
}

/// Why a control frame was rejected (counted and logged by the shell; never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("malformed control frame: {0}")]
    Malformed(#[from] WireError),
    #[error("unknown control message tag {0}")]
    UnknownTag(u8),
}

const TAG_GOSSIP: u8 = 1;

/// The full-mesh state machine.
#[derive(Debug)]
pub struct FullMesh {
    me: Member,
    topology: Topology,
    channels: ChannelTable,
    members: BTreeMap<String, Member>,
    peers: BTreeMap<String, Peer>,
    cfg: MeshConfig,
    rng: SmallRng,
    actions: VecDeque<Action>,
    next_gossip: Option<u64>,
    /// Set when this node left or was removed, until it joins again or is re-added: gossip
    /// from peers that have not yet seen the departure must not pull it back in.
    departed: bool,
}

impl FullMesh {
    /// A cluster of one. `incarnation` must grow across restarts of the same node name (the
    /// shell passes the start time in microseconds); `seed` drives the retry jitter.
    pub fn new(me: NodeSpec, incarnation: u64, channels: ChannelTable, cfg: MeshConfig, seed: u64) -> Self {
        let me = Member { spec: me, incarnation, version: 0, left: false, role: Role::Peer };
        let mut members = BTreeMap::new();
        members.insert(me.spec.name.clone(), me.clone());
        FullMesh {
            me,
            topology: Topology::FullMesh,
            channels,
            members,
            peers: BTreeMap::new(),
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            actions: VecDeque::new(),
            next_gossip: None,
            departed: false,
        }
    }

    /// The same state machine with another link policy; `role` matters for `ClientServer`.
    pub fn with_topology(mut self, topology: Topology, role: Role) -> Self {
        self.topology = topology;
        self.me.role = role;
        self.members.insert(self.me.spec.name.clone(), self.me.clone());
        self
    }

    pub fn name(&self) -> &str {
        &self.me.spec.name
    }

    pub fn channels(&self) -> &ChannelTable {
        &self.channels
    }

    /// Live members, this node included, sorted by name.
    pub fn members(&self) -> Vec<String> {
        self.members.values().filter(|m| !m.left).map(|m| m.spec.name.clone()).collect()
    }

    pub fn member_table(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Nodes with at least one link up.
    pub fn connected(&self) -> Vec<String> {
        self.peers.iter().filter(|(_, p)| p.up_total() > 0).map(|(n, _)| n.clone()).collect()
    }

    pub fn is_connected(&self, node: &str, channel: Option<usize>) -> bool {
        self.peers.get(node).is_some_and(|p| match channel {
            Some(c) => p.up_per_channel.get(c).is_some_and(|n| *n > 0),
            None => p.up_total() > 0,
        })
    }

    /// Every link of every channel to `node` is up.
    pub fn is_fully_connected(&self, node: &str) -> bool {
        self.peers.get(node).is_some_and(|p| p.links.iter().all(|s| *s == LinkState::Up))
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest time at which [`FullMesh::tick`] has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let retries = self.peers.values().flat_map(|p| p.links.iter()).filter_map(|s| match s {
            LinkState::RetryAt(t) => Some(*t),
            _ => None,
        });
        retries.chain(self.next_gossip).min()
    }

    /// Adds a node (from `partisan_peer_service:join/1`) and starts connecting to it.
    pub fn join(&mut self, now: u64, spec: NodeSpec) {
        if spec.name == self.me.spec.name {
            return;
        }
        self.departed = false;
        self.arm_gossip(now);
        let entry = match self.members.get(&spec.name) {
            Some(m) if !m.left => {
                let mut m = m.clone();
                m.spec = spec;
                m
            }
            // Joining a removed node explicitly brings it back.
            Some(m) => Member { spec, incarnation: m.incarnation, version: m.version + 1, left: false, role: m.role },
            None => Member { spec, incarnation: 0, version: 0, left: false, role: Role::Peer },
        };
        self.apply(now, entry);
        self.members_changed();
    }

    /// Removes `node` from the cluster (this node itself when `node` is our name).
    pub fn leave(&mut self, now: u64, node: &str) {
        if node == self.me.spec.name {
            self.me.version += 1;
            self.me.left = true;
            self.members.insert(node.to_owned(), self.me.clone());
            self.gossip_to_connected();
            self.reset_to_one(now);
            return;
        }
        let Some(m) = self.members.get(node) else { return };
        if m.left {
            return;
        }
        let tomb = Member { version: m.version + 1, left: true, ..m.clone() };
        // Tell the removed node before closing its links: it resets itself on receipt.
        if self.is_connected(node, Some(self.channels.membership_index())) {
            let body = encode_gossip(std::iter::once(&tomb));
            self.actions.push_back(Action::SendControl { to: node.to_owned(), body });
        }
        self.apply(now, tomb);
        self.gossip_to_connected();
        self.members_changed();
    }

    pub fn link_up(&mut self, _now: u64, link: &LinkId) {
        let Some(slot) = self.slot(link) else { return };
        let peer = self.peers.get_mut(&link.node).expect("slot checked");
        if peer.links[slot] == LinkState::Up {
            return;
        }
        peer.links[slot] = LinkState::Up;
        peer.up_per_channel[link.channel] += 1;
        if peer.up_total() == 1 {
            self.actions.push_back(Action::NodeUp { node: link.node.clone() });
        }
        if peer.up_per_channel[link.channel] == 1 {
            self.actions.push_back(Action::ChannelUp { node: link.node.clone(), channel: link.channel });
        }
        if link.channel == self.channels.membership_index() && self.topology != Topology::External {
            let body = encode_gossip(self.members.values());
            self.actions.push_back(Action::SendControl { to: link.node.clone(), body });
        }
    }

    /// A link closed, failed to connect, or failed its handshake.
    pub fn link_down(&mut self, now: u64, link: &LinkId) {
        let Some(slot) = self.slot(link) else { return };
        let jitter = self.jitter();
        let peer = self.peers.get_mut(&link.node).expect("slot checked");
        let was_up = peer.links[slot] == LinkState::Up;
        peer.failures[slot] = if was_up { 0 } else { peer.failures[slot].saturating_add(1) };
        let retry = now + redial_delay(&self.cfg, peer.failures[slot], jitter);
        peer.links[slot] = LinkState::RetryAt(retry);
        if was_up {
            peer.up_per_channel[link.channel] -= 1;
            if peer.up_per_channel[link.channel] == 0 {
                self.actions.push_back(Action::ChannelDown { node: link.node.clone(), channel: link.channel });
            }
            if peer.up_total() == 0 {
                self.actions.push_back(Action::NodeDown { node: link.node.clone() });
            }
        }
    }

    /// A control frame from an authenticated peer.
    pub fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError> {
        if self.topology == Topology::External {
            self.actions.push_back(Action::Upcall { from: from.to_owned(), body: Bytes::copy_from_slice(body) });
            return Ok(());
        }
        let entries = decode_control(body)?;
        if self.departed {
            // Accept only gossip that knows our entry as it is now (someone re-added us with
            // `join`); older gossip predates our departure.
            let current = entries.iter().any(|e| e.spec.name == self.me.spec.name && !e.left && e.rank() >= self.me.rank());
            if !current {
                return Ok(());
            }
            self.departed = false;
        }
        let mut changed = false;
        for entry in entries {
            if self.topology == Topology::Static && entry.spec.name != from && entry.spec.name != self.me.spec.name {
                continue; // a static node learns only about the peers it is linked with
            }
            if entry.spec.name == self.me.spec.name {
                if entry.left && entry.incarnation == self.me.incarnation && entry.rank() > self.me.rank() {
                    self.me.version = entry.version;
                    self.actions.push_back(Action::Removed { by: from.to_owned() });
                    self.reset_to_one(now);
                    return Ok(());
                }
                continue;
            }
            let newer = self.members.get(&entry.spec.name).is_none_or(|m| entry.rank() > m.rank());
            if newer {
                self.apply(now, entry);
                changed = true;
            }
        }
        if changed {
            self.gossip_to_connected();
            self.members_changed();
        }
        Ok(())
    }

    /// Retries due links and sends periodic gossip.
    pub fn tick(&mut self, now: u64) {
        let mut due = Vec::new();
        for (name, peer) in &mut self.peers {
            for (slot, state) in peer.links.iter_mut().enumerate() {
                if matches!(state, LinkState::RetryAt(t) if *t <= now) {
                    *state = LinkState::Connecting;
                    due.push((name.clone(), slot, peer.addrs.clone()));
                }
            }
        }
        let links: Vec<(usize, u16)> = self.channels.links().collect();
        for (node, slot, addrs) in due {
            let (channel, conn) = links[slot];
            self.actions.push_back(Action::Connect { link: LinkId { node, channel, conn }, addrs });
        }
        if self.next_gossip.is_some_and(|t| t <= now) {
            self.next_gossip = Some(now + self.cfg.periodic_interval);
            self.gossip_to_connected();
        }
    }

    fn arm_gossip(&mut self, now: u64) {
        if self.next_gossip.is_none() && self.cfg.periodic_interval > 0 && self.topology != Topology::External {
            self.next_gossip = Some(now + self.cfg.periodic_interval);
        }
    }

    fn jitter(&mut self) -> u64 {
        if self.cfg.connection_jitter == 0 {
            0
        } else {
            self.rng.gen_range(0..=self.cfg.connection_jitter)
        }
    }

    /// Index of a link in its peer's state vector, if the peer is still tracked.
    fn slot(&self, link: &LinkId) -> Option<usize> {
        self.peers.get(&link.node)?;
        self.channels.links().position(|(c, i)| c == link.channel && i == link.conn)
    }

    /// Stores a newer entry and starts or stops links accordingly.
    fn apply(&mut self, now: u64, entry: Member) {
        let name = entry.spec.name.clone();
        if entry.left || !self.wants_link(&entry) {
            if let Some(peer) = self.peers.remove(&name) {
                self.actions.push_back(Action::Disconnect { node: name.clone() });
                if peer.up_total() > 0 {
                    self.actions.push_back(Action::NodeDown { node: name.clone() });
                }
            }
        } else if let Some(peer) = self.peers.get_mut(&name) {
            peer.addrs = entry.spec.listen_addrs.clone();
        } else {
            self.arm_gossip(now);
            let links: Vec<(usize, u16)> = self.channels.links().collect();
            for &(channel, conn) in &links {
                let link = LinkId { node: name.clone(), channel, conn };
                self.actions.push_back(Action::Connect { link, addrs: entry.spec.listen_addrs.clone() });
            }
            let peer = Peer {
                addrs: entry.spec.listen_addrs.clone(),
                links: vec![LinkState::Connecting; links.len()],
                failures: vec![0; links.len()],
                up_per_channel: vec![0; self.channels.specs().len()],
            };
            self.peers.insert(name.clone(), peer);
        }
        self.members.insert(name, entry);
    }

    /// Replaces the member list ([`Topology::External`] only; ignored otherwise): links open to
    /// new members and close to members no longer listed. The change is local: nothing is
    /// gossiped, the strategy tells its peers itself.
    pub fn set_members(&mut self, now: u64, specs: Vec<NodeSpec>) {
        if self.topology != Topology::External {
            return;
        }
        let listed: BTreeMap<String, NodeSpec> =
            specs.into_iter().filter(|s| s.name != self.me.spec.name).map(|s| (s.name.clone(), s)).collect();
        let gone: Vec<Member> = self
            .members
            .values()
            .filter(|m| !m.left && m.spec.name != self.me.spec.name && !listed.contains_key(&m.spec.name))
            .map(|m| Member { version: m.version + 1, left: true, ..m.clone() })
            .collect();
        for tomb in gone {
            self.apply(now, tomb);
        }
        for (name, spec) in listed {
            let entry = match self.members.get(&name) {
                Some(m) if !m.left && m.spec == spec => continue,
                Some(m) => Member { spec, left: false, version: m.version + 1, ..m.clone() },
                None => Member { spec, incarnation: 0, version: 0, left: false, role: Role::Peer },
            };
            self.apply(now, entry);
        }
        self.members_changed();
    }

    /// The link policy of the topology.
    fn wants_link(&self, entry: &Member) -> bool {
        match self.topology {
            Topology::FullMesh | Topology::Static | Topology::External => true,
            // A joined node of unknown role (Peer) is dialed until its gossip says otherwise.
            Topology::ClientServer => self.me.role == Role::Server || entry.role != Role::Client,
        }
    }

    fn reset_to_one(&mut self, _now: u64) {
        for (name, peer) in std::mem::take(&mut self.peers) {
            self.actions.push_back(Action::Disconnect { node: name.clone() });
            if peer.up_total() > 0 {
                self.actions.push_back(Action::NodeDown { node: name });
            }
        }
        self.me.version += 1;
        self.me.left = false;
        self.members.clear();
        self.members.insert(self.me.spec.name.clone(), self.me.clone());
        self.next_gossip = None;
        self.departed = true;
        self.members_changed();
    }

    fn gossip_to_connected(&mut self) {
        if self.topology == Topology::External {
            return;
        }
        let body = encode_gossip(self.members.values());
        let membership = self.channels.membership_index();
        for (name, peer) in &self.peers {
            if peer.up_per_channel[membership] > 0 {
                self.actions.push_back(Action::SendControl { to: name.clone(), body: body.clone() });
            }
        }
    }

    fn members_changed(&mut self) {
        self.actions.push_back(Action::MembersChanged { members: self.members() });
    }
}

/// Encodes a gossip control frame body.
pub fn encode_gossip<'a>(members: impl Iterator<Item = &'a Member>) -> Bytes {
    let members: Vec<&Member> = members.collect();
    let mut out = BytesMut::new();
    out.put_u8(TAG_GOSSIP);
    out.put_u32(members.len() as u32);
    for m in members {
        out.put_str16(&m.spec.name);
        out.put_u64(m.incarnation);
        out.put_u64(m.version);
        out.put_bool(m.left);
        out.put_u8(match m.role {
            Role::Peer => 0,
            Role::Server => 1,
            Role::Client => 2,
        });
        out.put_u16(m.spec.listen_addrs.len() as u16);
        for addr in &m.spec.listen_addrs {
            out.put_socket_addr(addr);
        }
        out.put_u16(m.spec.channels.len() as u16);
        for c in &m.spec.channels {
            out.put_str16(&c.name);
            out.put_u16(c.parallelism);
            out.put_bool(c.monotonic);
        }
    }
    out.freeze()
}

/// Parses a control frame body. Never panics, never allocates more than the body justifies.
pub fn decode_control(body: &[u8]) -> Result<Vec<Member>, ControlError> {
    let mut r = Reader::new(body);
    match r.u8("control tag")? {
        TAG_GOSSIP => {}
        other => return Err(ControlError::UnknownTag(other)),
    }
    let count = r.u32("member count")? as usize;
    // Each entry takes at least 24 bytes, which bounds the allocation by the body size.
    let mut members = Vec::with_capacity(count.min(r.remaining() / 24));
    for _ in 0..count {
        let name = r.str("member name")?;
        let incarnation = r.u64("incarnation")?;
        let version = r.u64("version")?;
        let left = r.bool("left flag")?;
        let role = match r.u8("role")? {
            0 => Role::Peer,
            1 => Role::Server,
            2 => Role::Client,
            v => return Err(WireError::BadValue { what: "role", value: v as u64 }.into()),
        };
        let addrs = (0..r.u16("address count")?).map(|_| r.socket_addr()).collect::<Result<_, _>>()?;
        let channels = (0..r.u16("channel count")?)
            .map(|_| Ok(ChannelSpec { name: r.str("channel name")?, parallelism: r.u16("parallelism")?, monotonic: r.bool("monotonic")? }))
            .collect::<Result<_, WireError>>()?;
        members.push(Member { spec: NodeSpec { name, listen_addrs: addrs, channels }, incarnation, version, left, role });
    }
    r.finish("gossip")?;
    Ok(members)
}

#[cfg(test)]
mod tests;
