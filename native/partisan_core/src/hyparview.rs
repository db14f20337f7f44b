//! HyParView (Leitão, Pereira, Rodrigues, DSN 2007): a partial-view overlay that keeps a small,
//! symmetric *active view* of open links and a larger *passive view* of peers to repair it from.
//!
//! A full mesh needs N−1 links per node and O(N²) messages per membership change; HyParView
//! needs `active_max_size` links per node and still survives the crash of most nodes at once:
//! links are TCP connections, so a crashed neighbour is detected at once (`link_down`) and
//! replaced from the passive view, and the passive views are kept fresh and random by periodic
//! SHUFFLE random walks. This module is the protocol as a deterministic sans-IO state machine
//! implementing [`Overlay`]: the live runtime and the simulator (`partisan_sim`) drive the same
//! code.
//!
//! # Links
//! An *active peer* is a node whose membership link (the one we dialed, see
//! [`crate::full_mesh`]) is up and that we keep in the active view; both ends dial, so the view
//! is symmetric exactly when both links are up. Only the membership link is dialed here, once
//! ([`Action::Dial`]: a link that drops is repaired from the passive view, not redialed): the
//! node ([`crate::node`]) opens the data channels of a peer on [`Action::NodeUp`] and closes
//! them on [`Action::NodeDown`]/[`Action::Disconnect`], so a slow data channel never makes a
//! neighbour look dead to the protocol.
//!
//! Messages to a node we have no link with (a JOIN to a contact, a SHUFFLE_REPLY to the origin of
//! a walk, a NEIGHBOR_REJECT) travel on a *transient* link: [`Action::Dial`], queue the frame,
//! send it on `link_up`, then [`Action::Disconnect`] (which flushes first), as the paper's
//! "temporary TCP connection".
//!
//! # Messages
//! JOIN, FORWARD_JOIN (random walk of `active_rwl` hops; the walk adds the joiner to the passive
//! view at hop `passive_rwl` and to the active view where it ends), NEIGHBOR ("I added you, add
//! me"; a receiver that did not have the sender answers with its own NEIGHBOR, which repairs a
//! NEIGHBOR that crossed a DISCONNECT), NEIGHBOR_REQUEST with high priority (always accepted, a
//! full receiver drops a random active peer; see *Priorities*) or low priority (accepted only if
//! there is room) answered by NEIGHBOR_ACCEPT or NEIGHBOR_REJECT,
//! DISCONNECT (sender dropped us: we move it to the passive view), SHUFFLE (random walk carrying
//! the origin, `shuffle_k_active` active and `shuffle_k_passive` passive peers) and SHUFFLE_REPLY
//! (a same-sized sample of the receiver's passive view, sent back to the origin). The encoding is
//! our own (tags 16–24, see [`Message`]); a peer speaks only for itself: its addresses travel in
//! the message, its name is the authenticated `from`.
//!
//! # Timers and healing
//! - `shuffle_interval`: one SHUFFLE to a random active peer.
//! - `random_promotion_interval`: when `random_promotion` is set and the active view is below
//!   `active_min_size`, promote random passive peers (NEIGHBOR_REQUEST, high priority as
//!   *Priorities* says); while it is below
//!   `active_max_size`, send one low-priority NEIGHBOR_REQUEST to a random passive peer. On the
//!   same timer one *unreachable* peer is probed (see below).
//! - A dropped active link is repaired at once: NEIGHBOR_REQUESTs to random passive peers until
//!   the view is full again or every passive peer was tried.
//!
//! Partisan's known gap is that an overlay split by a partition stays split after the partition
//! heals: each side refills its active views from its own side and forgets the other. Here a peer
//! whose link dropped or could not be opened is remembered in a bounded *unreachable* list
//! (`passive_max_size` entries, oldest evicted) and probed with a high-priority NEIGHBOR_REQUEST,
//! with exponential backoff from `random_promotion_interval` up to 16 times that. A probe that
//! connects is always accepted, so one reachable peer of the other side re-links the overlay.
//!
//! # Priorities
//! In the paper a NEIGHBOR_REQUEST has high priority only when the sender's active view is
//! empty. That leaves stable splits in small overlays whose views are nearly full: with 6 nodes,
//! `active_max_size` 3 and `active_min_size` 2 the overlay can settle as a K4 of full nodes next
//! to a pair of nodes that have only each other. Every node of the pair is below the minimum
//! but not empty, so it asks with low priority, and every node it can ask is full and rejects:
//! the pair never links back (seen in the 6-node broadcast CT; the core test
//! `small_nearly_full_overlays_never_stay_split` reproduces it). A node with fewer neighbours
//! than the minimum is also stuck there whenever every node it knows is full.
//!
//! So here a node asks with high priority while its active view (pending requests included) is
//! below `min(active_min_size, active_max_size − 1)`, and with low priority above (an empty
//! view always asks with high priority, as in the paper). A high-priority request is always
//! accepted; a full receiver drops a random active peer, which is left with up to
//! `active_max_size − 1` neighbours: at or above the threshold if it was full, so it does not
//! ask with high priority in turn. Capping the threshold at `active_max_size − 1` is what keeps
//! `active_min_size == active_max_size` from cascading forever: with the threshold at the
//! minimum, every drop would push a full peer below it, that peer would displace another, and
//! so on for as long as the views cannot all be full (an odd sum of degrees, say). A drop that
//! does leave a peer below the threshold (one that was not full) only moves a missing link from
//! one node to another, never adds one, and a high-priority request that reaches a node with
//! room takes one away; once every view is at the threshold, requests are low priority again
//! and nothing is displaced.
//!
//! # Symmetry
//! Links are symmetric only if every "I hold you" is matched: replies travel on the replier's
//! own link, so they can overtake or trail the frames of ours, and two repairs keep a half link
//! (one end holds the other as a neighbour, the other does not, and the link stays up at the
//! first end for good) from outliving the race that made it:
//! - A NEIGHBOR_REQUEST given up unanswered (after two promotion ticks of its own) is
//!   withdrawn with a DISCONNECT on its link, behind the request: a peer that accepts it late
//!   drops us again, since its ACCEPT is no longer taken for an answer.
//! - A SHUFFLE or FORWARD_JOIN hop comes only from a node that holds us as a neighbour; from a
//!   node we hold neither as a neighbour nor as a peer we are asking, it is answered with a
//!   DISCONNECT. This ends the half links that a reply matched to the wrong request leaves (an
//!   ACCEPT of a request whose link became a neighbour link and was dropped again, arriving
//!   while a new request to the same peer waits) at the holder's next shuffle.
//!
//! Both were found on a network with the live shell's timing (`hyparview/tests.rs`, frames of up
//! to 200 ms): before, 2 runs in 1,000 of the 9-node partition CT ended with a half link.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::hyparview::{HyParView, HyParViewConfig};
//! use partisan_core::overlay::{Action, LinkId, NodeSpec, Overlay};
//!
//! let channels = ChannelTable::new(vec![]).unwrap();
//! let me = NodeSpec::new("a@h", vec!["127.0.0.1:9000".parse().unwrap()], vec![]);
//! let mut a = HyParView::new(me, &channels, HyParViewConfig::default(), 7).unwrap();
//! a.join(0, NodeSpec::new("b@h", vec!["127.0.0.1:9001".parse().unwrap()], vec![]));
//! // dial the contact's membership link; the JOIN is sent once it is up
//! assert!(matches!(a.poll_action(), Some(Action::Dial { link, .. }) if link.node == "b@h"));
//! a.link_up(1, &LinkId { node: "b@h".into(), channel: channels.membership_index(), conn: 0 });
//! assert!(matches!(a.poll_action(), Some(Action::SendControl { to, .. }) if to == "b@h"));
//! assert_eq!(a.active_view(), vec!["b@h"]);
//! ```

use crate::channel::ChannelTable;
use crate::overlay::{Action, ControlError, LinkId, NodeSpec, Overlay};
use crate::wire::{Reader, WireError, WriteExt};
use bytes::{BufMut, Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Promotion ticks a NEIGHBOR_REQUEST may wait for its answer before it is given up.
const REQUEST_TICKS: u32 = 2;

/// Partisan's `hyparview` config map (times in milliseconds), with Partisan's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HyParViewConfig {
    pub active_max_size: usize,
    pub active_min_size: usize,
    /// Active random walk length: hops of FORWARD_JOIN and SHUFFLE walks.
    pub active_rwl: u8,
    pub passive_max_size: usize,
    /// The FORWARD_JOIN hop (counting down from `active_rwl`) that adds the joiner to the passive view.
    pub passive_rwl: u8,
    pub random_promotion: bool,
    pub random_promotion_interval: u64,
    pub shuffle_interval: u64,
    pub shuffle_k_active: usize,
    pub shuffle_k_passive: usize,
}

impl Default for HyParViewConfig {
    fn default() -> Self {
        HyParViewConfig {
            active_max_size: 6,
            active_min_size: 3,
            active_rwl: 6,
            passive_max_size: 30,
            passive_rwl: 6,
            random_promotion: true,
            random_promotion_interval: 5000,
            shuffle_interval: 10_000,
            shuffle_k_active: 3,
            shuffle_k_passive: 4,
        }
    }
}

impl HyParViewConfig {
    /// Checks that the protocol can run with these parameters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.active_max_size == 0 {
            return Err(ConfigError::EmptyActiveView);
        }
        if self.active_min_size > self.active_max_size {
            return Err(ConfigError::MinAboveMax { min: self.active_min_size, max: self.active_max_size });
        }
        if self.passive_rwl > self.active_rwl {
            return Err(ConfigError::PassiveWalkLonger { passive: self.passive_rwl, active: self.active_rwl });
        }
        if self.shuffle_interval == 0 {
            return Err(ConfigError::ZeroInterval("shuffle_interval"));
        }
        if self.random_promotion_interval == 0 {
            return Err(ConfigError::ZeroInterval("random_promotion_interval"));
        }
        if self.shuffle_k_active + self.shuffle_k_passive >= MAX_SAMPLE {
            return Err(ConfigError::ShuffleTooLarge);
        }
        Ok(())
    }
}

/// Why a [`HyParViewConfig`] cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("active_max_size must be at least 1")]
    EmptyActiveView,
    #[error("active_min_size ({min}) exceeds active_max_size ({max})")]
    MinAboveMax { min: usize, max: usize },
    #[error("passive_rwl ({passive}) exceeds active_rwl ({active}): no join walk would reach it")]
    PassiveWalkLonger { passive: u8, active: u8 },
    #[error("{0} must be positive")]
    ZeroInterval(&'static str),
    #[error("shuffle_k_active + shuffle_k_passive must be below {MAX_SAMPLE}")]
    ShuffleTooLarge,
}

/// Priority of a NEIGHBOR_REQUEST: high when the sender's active view is empty or below the
/// escalation threshold (see the module docs), or for a probe of an unreachable peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Low,
    High,
}

/// A HyParView control message as it travels in a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Join { addrs: Vec<SocketAddr> },
    ForwardJoin { joiner: NodeSpec, ttl: u8 },
    Neighbor { addrs: Vec<SocketAddr> },
    NeighborRequest { priority: Priority, addrs: Vec<SocketAddr> },
    NeighborAccept { addrs: Vec<SocketAddr> },
    NeighborReject,
    Disconnect,
    Shuffle { origin: NodeSpec, ttl: u8, sample: Vec<NodeSpec> },
    ShuffleReply { sample: Vec<NodeSpec> },
}

const TAG_JOIN: u8 = 16;
const TAG_FORWARD_JOIN: u8 = 17;
const TAG_NEIGHBOR: u8 = 18;
const TAG_NEIGHBOR_REQUEST: u8 = 19;
const TAG_NEIGHBOR_ACCEPT: u8 = 20;
const TAG_NEIGHBOR_REJECT: u8 = 21;
const TAG_DISCONNECT: u8 = 22;
const TAG_SHUFFLE: u8 = 23;
const TAG_SHUFFLE_REPLY: u8 = 24;
/// Samples are counted with one byte.
const MAX_SAMPLE: usize = 255;
/// Smallest encodings, used to bound allocations by the body size.
const MIN_ADDR_LEN: usize = 7;
const MIN_SPEC_LEN: usize = 5;
/// Probes of unreachable peers back off up to this many promotion intervals.
const MAX_BACKOFF_FACTOR: u64 = 16;

impl Message {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Message::Join { addrs } => {
                out.put_u8(TAG_JOIN);
                put_addrs(&mut out, addrs);
            }
            Message::ForwardJoin { joiner, ttl } => {
                out.put_u8(TAG_FORWARD_JOIN);
                put_spec(&mut out, joiner);
                out.put_u8(*ttl);
            }
            Message::Neighbor { addrs } => {
                out.put_u8(TAG_NEIGHBOR);
                put_addrs(&mut out, addrs);
            }
            Message::NeighborRequest { priority, addrs } => {
                out.put_u8(TAG_NEIGHBOR_REQUEST);
                out.put_bool(*priority == Priority::High);
                put_addrs(&mut out, addrs);
            }
            Message::NeighborAccept { addrs } => {
                out.put_u8(TAG_NEIGHBOR_ACCEPT);
                put_addrs(&mut out, addrs);
            }
            Message::NeighborReject => out.put_u8(TAG_NEIGHBOR_REJECT),
            Message::Disconnect => out.put_u8(TAG_DISCONNECT),
            Message::Shuffle { origin, ttl, sample } => {
                out.put_u8(TAG_SHUFFLE);
                put_spec(&mut out, origin);
                out.put_u8(*ttl);
                put_sample(&mut out, sample);
            }
            Message::ShuffleReply { sample } => {
                out.put_u8(TAG_SHUFFLE_REPLY);
                put_sample(&mut out, sample);
            }
        }
        out.freeze()
    }

    /// Parses a control frame body. Never panics, never allocates more than the body justifies.
    pub fn decode(body: &[u8]) -> Result<Message, ControlError> {
        let mut r = Reader::new(body);
        let msg = match r.u8("control tag")? {
            TAG_JOIN => Message::Join { addrs: read_addrs(&mut r)? },
            TAG_FORWARD_JOIN => Message::ForwardJoin { joiner: read_spec(&mut r)?, ttl: r.u8("ttl")? },
            TAG_NEIGHBOR => Message::Neighbor { addrs: read_addrs(&mut r)? },
            TAG_NEIGHBOR_REQUEST => {
                let priority = if r.bool("priority")? { Priority::High } else { Priority::Low };
                Message::NeighborRequest { priority, addrs: read_addrs(&mut r)? }
            }
            TAG_NEIGHBOR_ACCEPT => Message::NeighborAccept { addrs: read_addrs(&mut r)? },
            TAG_NEIGHBOR_REJECT => Message::NeighborReject,
            TAG_DISCONNECT => Message::Disconnect,
            TAG_SHUFFLE => {
                Message::Shuffle { origin: read_spec(&mut r)?, ttl: r.u8("ttl")?, sample: read_sample(&mut r)? }
            }
            TAG_SHUFFLE_REPLY => Message::ShuffleReply { sample: read_sample(&mut r)? },
            other => return Err(ControlError::UnknownTag(other)),
        };
        r.finish("hyparview message")?;
        Ok(msg)
    }
}

fn put_addrs(out: &mut BytesMut, addrs: &[SocketAddr]) {
    let len = u16::try_from(addrs.len()).expect("more than 65535 listen addresses");
    out.put_u16(len);
    for addr in addrs {
        out.put_socket_addr(addr);
    }
}

fn put_spec(out: &mut BytesMut, spec: &NodeSpec) {
    out.put_str16(&spec.name);
    put_addrs(out, &spec.listen_addrs);
}

fn put_sample(out: &mut BytesMut, sample: &[NodeSpec]) {
    let len = u8::try_from(sample.len()).expect("shuffle sample longer than 255 (config is validated)");
    out.put_u8(len);
    for spec in sample {
        put_spec(out, spec);
    }
}

fn read_addrs(r: &mut Reader) -> Result<Vec<SocketAddr>, WireError> {
    let count = r.u16("address count")? as usize;
    let mut addrs = Vec::with_capacity(count.min(r.remaining() / MIN_ADDR_LEN));
    for _ in 0..count {
        addrs.push(r.socket_addr()?);
    }
    Ok(addrs)
}

fn read_spec(r: &mut Reader) -> Result<NodeSpec, WireError> {
    let name = r.str("node name")?;
    if name.is_empty() {
        return Err(WireError::BadValue { what: "node name length", value: 0 });
    }
    Ok(NodeSpec { name, listen_addrs: read_addrs(r)?, channels: vec![] })
}

fn read_sample(r: &mut Reader) -> Result<Vec<NodeSpec>, WireError> {
    let count = r.u8("sample size")? as usize;
    let mut sample = Vec::with_capacity(count.min(r.remaining() / MIN_SPEC_LEN));
    for _ in 0..count {
        sample.push(read_spec(r)?);
    }
    Ok(sample)
}

/// What a link to a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkPurpose {
    /// The node is in the active view (a reserved slot until the link is up).
    Active,
    /// A NEIGHBOR_REQUEST waits on this link for its answer; if the node turns out unreachable
    /// it is probed again after `retry_backoff`.
    Request { retry_backoff: u64 },
    /// Carries queued frames, then closes.
    Transient,
}

#[derive(Debug, Clone)]
struct Link {
    spec: NodeSpec,
    up: bool,
    purpose: LinkPurpose,
    /// Frames waiting for the link to come up (empty once it is up: frames then go out at once).
    pending: Vec<Bytes>,
}

/// A peer whose link dropped or could not be opened, to probe again at `due`.
#[derive(Debug, Clone)]
struct Unreachable {
    spec: NodeSpec,
    due: u64,
    backoff: u64,
}

/// The HyParView state machine; see the module docs.
#[derive(Debug, Clone)]
pub struct HyParView {
    me: NodeSpec,
    membership_channel: usize,
    cfg: HyParViewConfig,
    rng: SmallRng,
    /// One membership link per node we talk to; the active view is the links with purpose Active.
    links: BTreeMap<String, Link>,
    passive: Vec<NodeSpec>,
    unreachable: Vec<Unreachable>,
    /// Passive peers asked since the last promotion tick (each is asked at most once per round).
    tried: Vec<String>,
    /// Promotion ticks each pending NEIGHBOR_REQUEST has been waiting for its answer.
    request_ticks: BTreeMap<String, u32>,
    /// The active view size the current repair works towards.
    fill_target: usize,
    /// Names in our last SHUFFLE: the first to evict when its reply arrives.
    shuffle_sent: Vec<String>,
    next_shuffle: Option<u64>,
    next_promotion: Option<u64>,
    actions: VecDeque<Action>,
}

impl HyParView {
    /// A node with empty views; `seed` drives every random choice (same seed, same run). The
    /// timers start with the first input, at a random offset within their interval so that
    /// nodes started together do not shuffle in lockstep.
    pub fn new(me: NodeSpec, channels: &ChannelTable, cfg: HyParViewConfig, seed: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(HyParView {
            me,
            membership_channel: channels.membership_index(),
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            links: BTreeMap::new(),
            passive: Vec::new(),
            unreachable: Vec::new(),
            tried: Vec::new(),
            request_ticks: BTreeMap::new(),
            fill_target: 0,
            shuffle_sent: Vec::new(),
            next_shuffle: None,
            next_promotion: None,
            actions: VecDeque::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.me.name
    }

    pub fn config(&self) -> &HyParViewConfig {
        &self.cfg
    }

    /// Active peers whose link is up, sorted.
    pub fn active_view(&self) -> Vec<String> {
        self.links.iter().filter(|(_, l)| l.purpose == LinkPurpose::Active && l.up).map(|(n, _)| n.clone()).collect()
    }

    /// Passive peers, in no particular order.
    pub fn passive_view(&self) -> Vec<String> {
        self.passive.iter().map(|p| p.name.clone()).collect()
    }

    /// Peers that will be probed for reconnection.
    pub fn unreachable_peers(&self) -> Vec<String> {
        self.unreachable.iter().map(|u| u.spec.name.clone()).collect()
    }

    fn arm(&mut self, now: u64) {
        if self.next_shuffle.is_none() {
            self.next_shuffle = Some(now + self.rng.gen_range(1..=self.cfg.shuffle_interval));
            self.next_promotion = Some(now + self.rng.gen_range(1..=self.cfg.random_promotion_interval));
        }
    }

    fn is_active(&self, name: &str) -> bool {
        self.links.get(name).is_some_and(|l| l.purpose == LinkPurpose::Active)
    }

    /// Active view size, reserved slots included.
    fn active_len(&self) -> usize {
        self.links.values().filter(|l| l.purpose == LinkPurpose::Active).count()
    }

    fn requests_len(&self) -> usize {
        self.links.values().filter(|l| matches!(l.purpose, LinkPurpose::Request { .. })).count()
    }

    /// A random active peer with its link up, other than `except`.
    fn random_active_up(&mut self, except: &[&str]) -> Option<NodeSpec> {
        let candidates: Vec<&Link> = self
            .links
            .iter()
            .filter(|(n, l)| l.purpose == LinkPurpose::Active && l.up && !except.contains(&n.as_str()))
            .map(|(_, l)| l)
            .collect();
        candidates.choose(&mut self.rng).map(|l| l.spec.clone())
    }

    fn my_addrs(&self) -> Vec<SocketAddr> {
        self.me.listen_addrs.clone()
    }

    fn connect(&mut self, spec: &NodeSpec) {
        let link = LinkId { node: spec.name.clone(), channel: self.membership_channel, conn: 0 };
        self.actions.push_back(Action::Dial { link, addrs: spec.listen_addrs.clone() });
    }

    /// Sends on the node's link, queueing until it is up; opens a transient link if there is none.
    fn send(&mut self, to: &NodeSpec, msg: &Message) {
        let body = msg.encode();
        match self.links.get_mut(&to.name) {
            Some(link) if link.up => self.actions.push_back(Action::SendControl { to: to.name.clone(), body }),
            Some(link) => link.pending.push(body),
            None => {
                let link = Link { spec: to.clone(), up: false, purpose: LinkPurpose::Transient, pending: vec![body] };
                self.links.insert(to.name.clone(), link);
                self.connect(to);
            }
        }
    }

    /// The link is no longer wanted: close it now, or once its queued frames are out.
    fn close(&mut self, name: &str) {
        let Some(link) = self.links.get_mut(name) else { return };
        if link.up || link.pending.is_empty() {
            self.drop_link(name);
        } else {
            link.purpose = LinkPurpose::Transient;
        }
    }

    /// Closes the link at once, discarding anything still queued.
    fn drop_link(&mut self, name: &str) {
        if self.links.remove(name).is_some() {
            self.actions.push_back(Action::Disconnect { node: name.to_owned() });
        }
    }

    fn node_up(&mut self, name: &str) {
        self.actions.push_back(Action::NodeUp { node: name.to_owned() });
        self.actions.push_back(Action::MembersChanged { members: self.members() });
    }

    fn node_down(&mut self, name: &str) {
        self.actions.push_back(Action::NodeDown { node: name.to_owned() });
        self.actions.push_back(Action::MembersChanged { members: self.members() });
    }

    /// Puts `spec` in the active view (dropping a random peer if it is full) and sends
    /// `greeting` to it once the link is up.
    fn add_active(&mut self, spec: NodeSpec, greeting: Option<Message>) {
        if spec.name == self.me.name {
            return;
        }
        self.passive.retain(|p| p.name != spec.name);
        self.unreachable.retain(|u| u.spec.name != spec.name);
        let existing = self.links.get(&spec.name).map(|l| (l.purpose, l.up));
        if !matches!(existing, Some((LinkPurpose::Active, _))) {
            if self.active_len() >= self.cfg.active_max_size {
                self.drop_random_active(&spec.name);
            }
            match self.links.get_mut(&spec.name) {
                Some(link) => {
                    if link.purpose == LinkPurpose::Transient {
                        // Re-added before a demotion's DISCONNECT went out: it must not go out.
                        link.pending.retain(|frame| frame[..] != [TAG_DISCONNECT]);
                    }
                    link.purpose = LinkPurpose::Active;
                    link.spec = spec.clone();
                    if link.up {
                        self.node_up(&spec.name);
                    }
                }
                None => {
                    let link = Link { spec: spec.clone(), up: false, purpose: LinkPurpose::Active, pending: vec![] };
                    self.links.insert(spec.name.clone(), link);
                    self.connect(&spec);
                }
            }
        }
        if let Some(msg) = greeting {
            self.send(&spec, &msg);
        }
    }

    fn drop_random_active(&mut self, keep: &str) {
        let candidates: Vec<&String> =
            self.links.iter().filter(|(n, l)| l.purpose == LinkPurpose::Active && n.as_str() != keep).map(|(n, _)| n).collect();
        if let Some(victim) = candidates.choose(&mut self.rng).map(|n| (*n).clone()) {
            self.demote(&victim);
        }
    }

    /// Drops an active peer: DISCONNECT tells it to do the same; it moves to the passive view.
    fn demote(&mut self, name: &str) {
        let Some(link) = self.links.get(name) else { return };
        let (spec, up) = (link.spec.clone(), link.up);
        self.send(&spec, &Message::Disconnect);
        self.close(name);
        if up {
            self.node_down(name);
        }
        self.add_passive(spec, &mut Vec::new());
    }

    /// Adds a peer to the passive view unless known; when full, evicts one of
    /// `preferred_victims` if present, else a random peer.
    fn add_passive(&mut self, spec: NodeSpec, preferred_victims: &mut Vec<String>) {
        if spec.name == self.me.name
            || self.cfg.passive_max_size == 0
            || self.is_active(&spec.name)
            || self.passive.iter().any(|p| p.name == spec.name)
        {
            return;
        }
        if self.passive.len() >= self.cfg.passive_max_size {
            let preferred = preferred_victims.iter().find_map(|v| self.passive.iter().position(|p| &p.name == v));
            let victim = preferred.unwrap_or_else(|| self.rng.gen_range(0..self.passive.len()));
            let evicted = self.passive.swap_remove(victim);
            preferred_victims.retain(|v| *v != evicted.name);
        }
        self.passive.push(spec);
    }

    fn mark_unreachable(&mut self, now: u64, spec: NodeSpec, backoff: u64) {
        self.unreachable.retain(|u| u.spec.name != spec.name);
        if self.unreachable.len() >= self.cfg.passive_max_size.max(1) {
            self.unreachable.remove(0);
        }
        self.unreachable.push(Unreachable { spec, due: now + backoff, backoff });
    }

    /// Sends NEIGHBOR_REQUESTs to untried passive peers until active + pending requests reach
    /// `fill_target` or no candidate is left.
    fn fill(&mut self) {
        while self.active_len() + self.requests_len() < self.fill_target {
            let candidates: Vec<usize> = (0..self.passive.len())
                .filter(|&i| {
                    let name = &self.passive[i].name;
                    !self.links.contains_key(name) && !self.tried.contains(name)
                })
                .collect();
            let Some(&i) = candidates.choose(&mut self.rng) else { break };
            let spec = self.passive[i].clone();
            self.tried.push(spec.name.clone());
            let priority = self.request_priority();
            self.request(spec, priority, self.cfg.random_promotion_interval);
        }
    }

    /// The active view size below which a node asks with high priority (besides an empty view):
    /// `active_min_size`, but at most `active_max_size − 1`, so that the peer a full receiver
    /// drops to make room (left with `active_max_size − 1` neighbours) is not below it in turn.
    fn escalation_threshold(&self) -> usize {
        self.cfg.active_min_size.min(self.cfg.active_max_size - 1)
    }

    /// High for every request while the active view is empty (as in the paper), and for the
    /// requests that bring active + pending up to [`Self::escalation_threshold`]; low beyond.
    /// See "Priorities" in the module docs.
    fn request_priority(&self) -> Priority {
        let active = self.active_len();
        if active == 0 || active + self.requests_len() < self.escalation_threshold() {
            Priority::High
        } else {
            Priority::Low
        }
    }

    fn request(&mut self, spec: NodeSpec, priority: Priority, retry_backoff: u64) {
        // A new request is as old as the ticks it has waited itself: the count of an earlier
        // request to the same peer, answered between two ticks, must not carry over (it gave up
        // a request just sent, before its answer could come back).
        self.request_ticks.remove(&spec.name);
        let body = Message::NeighborRequest { priority, addrs: self.my_addrs() }.encode();
        let link = Link { spec: spec.clone(), up: false, purpose: LinkPurpose::Request { retry_backoff }, pending: vec![body] };
        self.links.insert(spec.name.clone(), link);
        self.connect(&spec);
    }

    fn promote(&mut self, now: u64) {
        self.tried.clear();
        self.expire_requests();
        if self.cfg.random_promotion {
            let have = self.active_len() + self.requests_len();
            if have < self.cfg.active_min_size {
                self.fill_target = self.cfg.active_min_size;
                self.fill();
            } else if have < self.cfg.active_max_size {
                // One low-priority request per tick while there is room: views grow towards their
                // maximum, and the components a partition left behind, each content with
                // `active_min_size` neighbours, link up again through their passive views once
                // it heals.
                self.fill_target = have + 1;
                self.fill();
            }
        }
        self.probe_unreachable(now);
    }

    /// Gives up NEIGHBOR_REQUESTs left unanswered for [`REQUEST_TICKS`] promotion ticks: the
    /// paper assumes the reply cannot be lost, but a pending request counts towards the view, so
    /// one lost reply would stop the node from ever asking anyone else. The peer goes back to the
    /// passive view and the view is filled from the others.
    ///
    /// A request that went out is withdrawn with a DISCONNECT on the same link: the answer may
    /// only be late, and a peer that accepted keeps us in its active view while we would ignore
    /// its ACCEPT (no request is outstanding any more), a half link that nothing ever repairs.
    /// Behind the request on the same connection, the DISCONNECT reaches the peer after it and
    /// undoes an accept (an ACCEPT still queued there is discarded with the link); after a reject
    /// it is ignored.
    fn expire_requests(&mut self) {
        let pending: Vec<String> =
            self.links.iter().filter(|(_, l)| matches!(l.purpose, LinkPurpose::Request { .. })).map(|(n, _)| n.clone()).collect();
        self.request_ticks.retain(|n, _| pending.contains(n));
        for name in pending {
            let ticks = self.request_ticks.entry(name.clone()).or_insert(0);
            *ticks += 1;
            if *ticks > REQUEST_TICKS {
                self.request_ticks.remove(&name);
                let (spec, up) = (self.links[&name].spec.clone(), self.links[&name].up);
                if up {
                    self.send(&spec, &Message::Disconnect);
                }
                self.drop_link(&name);
                self.add_passive(spec, &mut Vec::new());
            }
        }
    }

    /// Probes the unreachable peer that is due first with a high-priority request.
    fn probe_unreachable(&mut self, now: u64) {
        let due = self
            .unreachable
            .iter()
            .enumerate()
            .filter(|(_, u)| u.due <= now && !self.links.contains_key(&u.spec.name))
            .min_by_key(|(_, u)| u.due)
            .map(|(i, _)| i);
        let Some(i) = due else { return };
        let entry = self.unreachable.remove(i);
        let backoff = (entry.backoff * 2).min(self.cfg.random_promotion_interval * MAX_BACKOFF_FACTOR);
        self.request(entry.spec, Priority::High, backoff);
    }

    fn shuffle(&mut self) {
        let Some(target) = self.random_active_up(&[]) else { return };
        let actives: Vec<&NodeSpec> = self
            .links
            .values()
            .filter(|l| l.purpose == LinkPurpose::Active && l.up && l.spec.name != target.name)
            .map(|l| &l.spec)
            .collect();
        let mut sample: Vec<NodeSpec> = actives.choose_multiple(&mut self.rng, self.cfg.shuffle_k_active).map(|s| (*s).clone()).collect();
        sample.extend(self.passive.choose_multiple(&mut self.rng, self.cfg.shuffle_k_passive).cloned());
        self.shuffle_sent = sample.iter().map(|s| s.name.clone()).collect();
        sample.insert(0, self.me.clone());
        self.send(&target, &Message::Shuffle { origin: self.me.clone(), ttl: self.cfg.active_rwl, sample });
    }

    fn on_join(&mut self, joiner: NodeSpec) {
        self.add_active(joiner.clone(), None);
        let others: Vec<NodeSpec> =
            self.links.values().filter(|l| l.purpose == LinkPurpose::Active && l.spec.name != joiner.name).map(|l| l.spec.clone()).collect();
        let msg = Message::ForwardJoin { joiner, ttl: self.cfg.active_rwl };
        for other in others {
            self.send(&other, &msg);
        }
    }

    fn on_forward_join(&mut self, from: &str, joiner: NodeSpec, ttl: u8) {
        if joiner.name == self.me.name || self.is_active(&joiner.name) {
            return;
        }
        let next = self.random_active_up(&[from, &joiner.name]);
        match next {
            Some(next) if ttl > 0 => {
                if ttl == self.cfg.passive_rwl {
                    self.add_passive(joiner.clone(), &mut Vec::new());
                }
                self.send(&next, &Message::ForwardJoin { joiner, ttl: ttl - 1 });
            }
            _ => self.add_active(joiner, Some(Message::Neighbor { addrs: self.my_addrs() })),
        }
    }

    fn on_neighbor_request(&mut self, requester: NodeSpec, priority: Priority) {
        if priority == Priority::High || self.is_active(&requester.name) || self.active_len() < self.cfg.active_max_size {
            self.add_active(requester, Some(Message::NeighborAccept { addrs: self.my_addrs() }));
        } else {
            self.send(&requester, &Message::NeighborReject);
        }
    }

    /// A new neighbour is greeted back with NEIGHBOR: if the peer's NEIGHBOR crossed our
    /// DISCONNECT, the peer drops us on the DISCONNECT and adds us again on the greeting, so the
    /// views end symmetric. A known neighbour is not greeted, so the exchange stops there.
    fn on_neighbor(&mut self, peer: NodeSpec) {
        if !self.is_active(&peer.name) {
            self.add_active(peer, Some(Message::Neighbor { addrs: self.my_addrs() }));
        }
    }

    /// Only an outstanding request is answered: an ACCEPT that crossed our DISCONNECT to the
    /// same peer must not bring it back (the peer drops us when the DISCONNECT arrives).
    fn on_accept(&mut self, peer: NodeSpec) {
        if matches!(self.links.get(&peer.name), Some(l) if matches!(l.purpose, LinkPurpose::Request { .. })) {
            self.add_active(peer, None);
        }
    }

    fn on_reject(&mut self, from: &str) {
        if matches!(self.links.get(from), Some(l) if matches!(l.purpose, LinkPurpose::Request { .. })) {
            self.drop_link(from);
            self.fill();
        }
    }

    fn on_disconnect(&mut self, from: &str) {
        let Some(link) = self.links.get(from) else { return };
        match link.purpose {
            LinkPurpose::Active => {
                let (spec, up) = (link.spec.clone(), link.up);
                self.drop_link(from);
                if up {
                    self.node_down(from);
                }
                self.add_passive(spec, &mut Vec::new());
            }
            // Not an answer: the peer dropped us before our request reached it, and it will
            // still answer the request.
            LinkPurpose::Request { .. } | LinkPurpose::Transient => {}
        }
    }

    /// `from` sent us what only goes to active peers (a SHUFFLE or FORWARD_JOIN hop), so it
    /// holds us as a neighbour. If we hold it neither as a neighbour nor as a peer we are asking,
    /// the views are asymmetric (a reply matched to the wrong request, a DISCONNECT crossing a
    /// request) and nothing else would ever end it: the link stays up at its end. It is told so
    /// with a DISCONNECT. One already on its way (we dropped the peer meanwhile) makes this one
    /// a no-op at the peer.
    fn check_held_by(&mut self, from: &str) {
        if matches!(self.links.get(from).map(|l| l.purpose), Some(LinkPurpose::Active | LinkPurpose::Request { .. })) {
            return;
        }
        let known = self
            .links
            .get(from)
            .map(|l| &l.spec)
            .or_else(|| self.passive.iter().find(|p| p.name == from))
            .or_else(|| self.unreachable.iter().map(|u| &u.spec).find(|s| s.name == from))
            .cloned();
        if let Some(spec) = known {
            self.send(&spec, &Message::Disconnect);
        }
    }

    fn on_shuffle(&mut self, from: &str, origin: NodeSpec, ttl: u8, sample: Vec<NodeSpec>) {
        let ttl = ttl.saturating_sub(1);
        if ttl > 0 {
            if let Some(next) = self.random_active_up(&[from, &origin.name]) {
                self.send(&next, &Message::Shuffle { origin, ttl, sample });
                return;
            }
        }
        if origin.name == self.me.name {
            return;
        }
        let reply: Vec<NodeSpec> = self.passive.choose_multiple(&mut self.rng, sample.len()).cloned().collect();
        let mut victims: Vec<String> = reply.iter().map(|s| s.name.clone()).collect();
        self.send(&origin, &Message::ShuffleReply { sample: reply });
        for spec in sample {
            self.add_passive(spec, &mut victims);
        }
    }

    fn on_shuffle_reply(&mut self, sample: Vec<NodeSpec>) {
        let mut victims = std::mem::take(&mut self.shuffle_sent);
        for spec in sample {
            self.add_passive(spec, &mut victims);
        }
    }
}

impl Overlay for HyParView {
    /// Sends JOIN to the contact, which becomes our first active peer.
    fn join(&mut self, now: u64, spec: NodeSpec) {
        self.arm(now);
        if spec.name != self.me.name {
            self.add_active(spec, Some(Message::Join { addrs: self.my_addrs() }));
        }
    }

    /// Leaving ourselves disconnects every active peer and forgets both views; leaving another
    /// node forgets it (and disconnects it if active).
    fn leave(&mut self, now: u64, node: &str) {
        self.arm(now);
        if node == self.me.name {
            let names: Vec<String> = self.links.keys().cloned().collect();
            for name in names {
                let Some(link) = self.links.get(&name) else { continue };
                let (spec, purpose, up) = (link.spec.clone(), link.purpose, link.up);
                if purpose == LinkPurpose::Active {
                    self.send(&spec, &Message::Disconnect);
                    self.close(&name);
                    if up {
                        self.node_down(&name);
                    }
                } else if matches!(purpose, LinkPurpose::Request { .. }) {
                    self.drop_link(&name);
                }
            }
            self.passive.clear();
            self.unreachable.clear();
            self.fill_target = 0;
            return;
        }
        self.passive.retain(|p| p.name != node);
        self.unreachable.retain(|u| u.spec.name != node);
        match self.links.get(node).map(|l| (l.purpose, l.up, l.spec.clone())) {
            Some((LinkPurpose::Active, up, spec)) => {
                self.send(&spec, &Message::Disconnect);
                self.close(node);
                if up {
                    self.node_down(node);
                }
            }
            Some((LinkPurpose::Request { .. }, ..)) => self.drop_link(node),
            _ => {}
        }
    }

    fn link_up(&mut self, now: u64, link: &LinkId) {
        self.arm(now);
        if link.channel != self.membership_channel {
            return;
        }
        let Some(l) = self.links.get_mut(&link.node) else { return };
        if l.up {
            return;
        }
        l.up = true;
        let purpose = l.purpose;
        for body in std::mem::take(&mut l.pending) {
            self.actions.push_back(Action::SendControl { to: link.node.clone(), body });
        }
        match purpose {
            LinkPurpose::Active => self.node_up(&link.node),
            LinkPurpose::Transient => self.drop_link(&link.node),
            LinkPurpose::Request { .. } => {}
        }
    }

    /// A dropped active link is repaired from the passive view at once; a peer that could not be
    /// reached goes to the unreachable list.
    fn link_down(&mut self, now: u64, link: &LinkId) {
        self.arm(now);
        if link.channel != self.membership_channel {
            return;
        }
        let Some(l) = self.links.remove(&link.node) else { return };
        match l.purpose {
            LinkPurpose::Active => {
                if l.up {
                    self.node_down(&link.node);
                }
                self.mark_unreachable(now, l.spec, self.cfg.random_promotion_interval);
                self.fill_target = self.cfg.active_max_size;
                self.fill();
            }
            LinkPurpose::Request { retry_backoff } => {
                self.passive.retain(|p| p.name != link.node);
                self.mark_unreachable(now, l.spec, retry_backoff);
                self.fill();
            }
            LinkPurpose::Transient => {}
        }
    }

    fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError> {
        let msg = Message::decode(body)?;
        self.arm(now);
        if from == self.me.name {
            return Ok(());
        }
        let sender = |addrs| NodeSpec { name: from.to_owned(), listen_addrs: addrs, channels: vec![] };
        match msg {
            Message::Join { addrs } => self.on_join(sender(addrs)),
            Message::ForwardJoin { joiner, ttl } => {
                self.check_held_by(from);
                self.on_forward_join(from, joiner, ttl)
            }
            Message::Neighbor { addrs } => self.on_neighbor(sender(addrs)),
            Message::NeighborAccept { addrs } => self.on_accept(sender(addrs)),
            Message::NeighborRequest { priority, addrs } => self.on_neighbor_request(sender(addrs), priority),
            Message::NeighborReject => self.on_reject(from),
            Message::Disconnect => self.on_disconnect(from),
            Message::Shuffle { origin, ttl, sample } => {
                self.check_held_by(from);
                self.on_shuffle(from, origin, ttl, sample)
            }
            Message::ShuffleReply { sample } => self.on_shuffle_reply(sample),
        }
        Ok(())
    }

    fn tick(&mut self, now: u64) {
        if self.next_shuffle.is_some_and(|t| t <= now) {
            self.next_shuffle = Some(now + self.cfg.shuffle_interval);
            self.shuffle();
        }
        if self.next_promotion.is_some_and(|t| t <= now) {
            self.next_promotion = Some(now + self.cfg.random_promotion_interval);
            self.promote(now);
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.next_shuffle.into_iter().chain(self.next_promotion).min()
    }

    /// This node and its active peers (Partisan's `members/0` under HyParView), sorted.
    fn members(&self) -> Vec<String> {
        let mut members = self.active_view();
        members.push(self.me.name.clone());
        members.sort();
        members
    }

    /// This node and its active view (the members), as the links to them were made.
    fn member_specs(&self) -> Vec<NodeSpec> {
        let mut specs: Vec<NodeSpec> = self
            .links
            .values()
            .filter(|l| l.purpose == LinkPurpose::Active && l.up)
            .map(|l| l.spec.clone())
            .chain(std::iter::once(self.me.clone()))
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![("active", self.active_view()), ("passive", self.passive_view()), ("unreachable", self.unreachable_peers())]
    }
}

#[cfg(test)]
mod tests;
