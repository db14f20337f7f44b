//! The full mesh: every member knows every other member, and links to all of them on every
//! channel.
//!
//! This is Partisan's default overlay (`partisan_pluggable_peer_service_manager` with the full
//! membership strategy), as a deterministic state machine in the style of `quinn-proto`: the
//! node feeds it events (`join`, `link_up`, `control`, `tick`, ...) with the current time in
//! milliseconds, then drains [`Action`]s (keep a link, send a control frame, report a node up,
//! ...) with [`FullMesh::poll_action`]. It holds no socket, no clock and no thread.
//!
//! The client-server and static managers are the same member table with fewer links: a
//! [`LinkPolicy`] says which members a node links to.
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
//! Each node keeps its own connections to every live member ([`Action::Keep`]): one per
//! (channel, connection index); the node redials them when they drop. It sends only on the
//! connections it dialed and receives on the ones it accepted, so two nodes never race to pick
//! one of two simultaneous connections. A member is up (a neighbour) while any of its links is.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::full_mesh::{FullMesh, LinkPolicy};
//! use partisan_core::overlay::{Action, NodeSpec, Overlay};
//! let me = NodeSpec::new("a@h", vec!["127.0.0.1:9000".parse().unwrap()], vec![]);
//! let mut mesh = FullMesh::new(me, 1, ChannelTable::new(vec![]).unwrap(), LinkPolicy::AllMembers, 10_000);
//! mesh.join(0, NodeSpec::new("b@h", vec!["127.0.0.1:9001".parse().unwrap()], vec![]));
//! let kept: Vec<usize> = std::iter::from_fn(|| mesh.poll_action())
//!     .filter_map(|a| if let Action::Keep { link, .. } = a { Some(link.channel) } else { None })
//!     .collect();
//! assert_eq!(kept.len(), 2); // default and membership channel, one connection each
//! ```

use crate::channel::{ChannelSpec, ChannelTable};
use crate::overlay::{Action, ControlError, LinkId, NodeSpec, Overlay};
use crate::wire::{Reader, WireError, WriteExt};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};

/// What a node is in a client-server cluster (`tag` in Partisan's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// A full-mesh or static member, or a node whose role is not known yet.
    #[default]
    Peer,
    Server,
    Client,
}

/// Which members a node links to. Membership itself (who is in the cluster) is gossiped the
/// same way under every policy except `Static`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkPolicy {
    /// Every member links to every other member (`partisan_pluggable_peer_service_manager`).
    #[default]
    AllMembers,
    /// Servers link to everyone; clients link only to servers
    /// (`partisan_client_server_peer_service_manager`). This node's role is gossiped.
    ClientServer(Role),
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

#[derive(Debug)]
struct Peer {
    /// Per link (in the order of [`ChannelTable::links`]): up or not.
    up: Vec<bool>,
    up_per_channel: Vec<u16>,
}

impl Peer {
    fn up_total(&self) -> usize {
        self.up.iter().filter(|up| **up).count()
    }
}

const TAG_GOSSIP: u8 = 1;

/// The full-mesh state machine; see the module docs.
#[derive(Debug)]
pub struct FullMesh {
    me: Member,
    policy: LinkPolicy,
    channels: ChannelTable,
    members: BTreeMap<String, Member>,
    /// Members this node links to.
    peers: BTreeMap<String, Peer>,
    periodic_interval: u64,
    actions: VecDeque<Action>,
    next_gossip: Option<u64>,
    /// Set when this node left or was removed, until it joins again or is re-added: gossip
    /// from peers that have not yet seen the departure must not pull it back in.
    departed: bool,
}

impl FullMesh {
    /// A cluster of one. `incarnation` must grow across restarts of the same node name (the
    /// shell passes the start time in microseconds); the member table is gossiped to every
    /// neighbour every `periodic_interval` ms (0: only on changes).
    pub fn new(me: NodeSpec, incarnation: u64, channels: ChannelTable, policy: LinkPolicy, periodic_interval: u64) -> Self {
        let role = match policy {
            LinkPolicy::ClientServer(role) => role,
            _ => Role::Peer,
        };
        let me = Member { spec: me, incarnation, version: 0, left: false, role };
        let mut members = BTreeMap::new();
        members.insert(me.spec.name.clone(), me.clone());
        FullMesh {
            me,
            policy,
            channels,
            members,
            peers: BTreeMap::new(),
            periodic_interval,
            actions: VecDeque::new(),
            next_gossip: None,
            departed: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.me.spec.name
    }

    pub fn member_table(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Members with at least one link up, sorted.
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
        self.peers.get(node).is_some_and(|p| p.up.iter().all(|up| *up))
    }

    fn arm_gossip(&mut self, now: u64) {
        if self.next_gossip.is_none() && self.periodic_interval > 0 && self.policy != LinkPolicy::External {
            self.next_gossip = Some(now + self.periodic_interval);
        }
    }

    /// Index of a link in its peer's state vector, if the peer is linked.
    fn slot(&self, link: &LinkId) -> Option<usize> {
        self.peers.get(&link.node)?;
        self.channels.links().position(|(c, i)| c == link.channel && i == link.conn)
    }

    /// Asks the node to keep every link to `spec`'s node up (or updates their addresses).
    fn keep_links(&mut self, spec: &NodeSpec) {
        for (channel, conn) in self.channels.links() {
            let link = LinkId { node: spec.name.clone(), channel, conn };
            self.actions.push_back(Action::Keep { link, addrs: spec.listen_addrs.clone() });
        }
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
        } else if self.peers.contains_key(&name) {
            if self.members.get(&name).is_none_or(|m| m.spec.listen_addrs != entry.spec.listen_addrs) {
                self.keep_links(&entry.spec);
            }
        } else {
            self.arm_gossip(now);
            self.keep_links(&entry.spec);
            let links = self.channels.links().count();
            self.peers.insert(name.clone(), Peer { up: vec![false; links], up_per_channel: vec![0; self.channels.specs().len()] });
        }
        self.members.insert(name, entry);
    }

    /// Whether this node links to `entry`'s node, by policy.
    fn wants_link(&self, entry: &Member) -> bool {
        match self.policy {
            LinkPolicy::AllMembers | LinkPolicy::Static | LinkPolicy::External => true,
            // A joined node of unknown role (Peer) is linked until its gossip says otherwise.
            LinkPolicy::ClientServer(_) => self.me.role == Role::Server || entry.role != Role::Client,
        }
    }

    fn reset_to_one(&mut self) {
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
        if self.policy == LinkPolicy::External {
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

impl Overlay for FullMesh {
    /// Adds a node (from `partisan_peer_service:join/1`) and starts linking to it.
    fn join(&mut self, now: u64, spec: NodeSpec) {
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
    fn leave(&mut self, now: u64, node: &str) {
        if node == self.me.spec.name {
            self.me.version += 1;
            self.me.left = true;
            self.members.insert(node.to_owned(), self.me.clone());
            self.gossip_to_connected();
            self.reset_to_one();
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

    fn link_up(&mut self, _now: u64, link: &LinkId) {
        let Some(slot) = self.slot(link) else { return };
        let peer = self.peers.get_mut(&link.node).expect("slot checked");
        if peer.up[slot] {
            return;
        }
        peer.up[slot] = true;
        peer.up_per_channel[link.channel] += 1;
        if peer.up_total() == 1 {
            self.actions.push_back(Action::NodeUp { node: link.node.clone() });
        }
        if link.channel == self.channels.membership_index() && self.policy != LinkPolicy::External {
            let body = encode_gossip(self.members.values());
            self.actions.push_back(Action::SendControl { to: link.node.clone(), body });
        }
    }

    /// A link closed, failed to connect, or failed its handshake (the node redials it).
    fn link_down(&mut self, _now: u64, link: &LinkId) {
        let Some(slot) = self.slot(link) else { return };
        let peer = self.peers.get_mut(&link.node).expect("slot checked");
        if !peer.up[slot] {
            return;
        }
        peer.up[slot] = false;
        peer.up_per_channel[link.channel] -= 1;
        if peer.up_total() == 0 {
            self.actions.push_back(Action::NodeDown { node: link.node.clone() });
        }
    }

    /// A control frame from an authenticated peer.
    fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError> {
        if self.policy == LinkPolicy::External {
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
            if self.policy == LinkPolicy::Static && entry.spec.name != from && entry.spec.name != self.me.spec.name {
                continue; // a static node learns only about the peers it is linked with
            }
            if entry.spec.name == self.me.spec.name {
                if entry.left && entry.incarnation == self.me.incarnation && entry.rank() > self.me.rank() {
                    self.me.version = entry.version;
                    self.actions.push_back(Action::Removed { by: from.to_owned() });
                    self.reset_to_one();
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

    /// Sends the periodic gossip.
    fn tick(&mut self, now: u64) {
        if self.next_gossip.is_some_and(|t| t <= now) {
            self.next_gossip = Some(now + self.periodic_interval);
            self.gossip_to_connected();
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.next_gossip
    }

    /// Live members, this node included, sorted by name.
    fn members(&self) -> Vec<String> {
        self.members.values().filter(|m| !m.left).map(|m| m.spec.name.clone()).collect()
    }

    fn member_specs(&self) -> Vec<NodeSpec> {
        self.members.values().filter(|m| !m.left).map(|m| m.spec.clone()).collect()
    }

    /// Replaces the member list ([`LinkPolicy::External`] only; ignored otherwise): links open to
    /// new members and close to members no longer listed. The change is local: nothing is
    /// gossiped, the strategy tells its peers itself.
    fn set_members(&mut self, now: u64, specs: Vec<NodeSpec>) {
        if self.policy != LinkPolicy::External {
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

    fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![("members", self.members()), ("connected", self.connected())]
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
