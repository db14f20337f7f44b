//! Plumtree (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007): reliable
//! broadcast over any overlay's neighbour set, with an embedded spanning tree so that, once the
//! tree has formed, every node receives each payload exactly once (relative message redundancy
//! → 0) while the remaining links keep gossip's resilience.
//!
//! Flooding a HyParView active view sends each payload ~`degree` times to every node; a pure tree
//! sends it once but breaks when a node fails. Plumtree keeps both: links start *eager* (payloads
//! are pushed on them), a duplicate payload turns its link *lazy* (PRUNE), and lazy links carry
//! only announcements (IHAVE, batched per `lazy_tick_period`). A node that hears of a message
//! it has not received in time asks the announcer for it (GRAFT), which also makes that link
//! eager again: the tree repairs itself where it broke. This module is the protocol as a
//! deterministic sans-IO state machine; the live runtime and the simulator drive the same code.
//!
//! # Driving it
//! A [`crate::node::Node`] feeds it the overlay's neighbour changes ([`Plumtree::neighbour_up`] /
//! [`Plumtree::neighbour_down`], from the overlay's `NodeUp`/`NodeDown`), local broadcasts, the
//! Plumtree frames received from neighbours ([`Plumtree::receive`], carried as
//! [`crate::frame::Frame::Broadcast`] on the membership channel) and time ([`Plumtree::tick`] at
//! [`Plumtree::poll_timeout`]), then drains [`Action`]s.
//!
//! # The application decides delivery
//! Partisan's handler (`partisan_plumtree_broadcast_handler`) owns the data: `merge/2` says
//! whether a payload is new, `graft/1` produces the payload of a message id. The handler runs in
//! an Erlang process, so the decision is an asynchronous round trip rather than a callback:
//! [`Action::Deliver`] asks for `merge/2` and the shell answers with
//! [`Plumtree::merge_result`]; only a new message is forwarded, a stale one prunes its link (as in
//! Partisan). While a merge is pending, further copies are duplicates and are pruned without
//! asking. GRAFTs are answered from a bounded cache of recent payloads; on a miss,
//! [`Action::Graft`] asks the handler's `graft/1` and [`Plumtree::graft_result`] sends the answer.
//! `is_stale/1` is covered by the core's bounded set of received ids; an id older than that set
//! costs at most one extra `merge/2` (which answers "stale"). Several handler modules share one
//! instance: the shell makes the handler part of the opaque message id (e.g. ETF `{Mod, MsgId}`).
//!
//! # Messages and timers
//! GOSSIP (id, round, payload), IHAVE (ids + rounds, batched), GRAFT (id or none, round), PRUNE
//! and EXCHANGE (digest of recent ids) — tags 32–36, see [`Message`]. The round is the sender's
//! hop count from the origin. An IHAVE for an unknown id starts a timer (`graft_timeout`); on
//! expiry the first announcer is grafted and a shorter timer (`graft_retry_timeout`) moves on to
//! the next one. Tree optimisation (the paper's optional step): if a lazy announcement shows a
//! path shorter by `optimization_threshold` hops than the eager one, the lazy link is grafted
//! (GRAFT without id) and the eager one pruned. One tree is shared by all origins, as in the
//! paper; the optimisation compares hops for the current origin only, so with many origins it
//! swaps a few links per broadcast (RMR stays 0) and pays off mostly after GRAFT repairs (see
//! the network tests; `optimization_threshold: 0` turns it off). Anti-entropy: every `exchange_tick_period` a
//! digest of recent ids goes to a random neighbour, which treats what it lacks as announcements
//! and replies with an IHAVE of what the digest lacks; [`Action::Exchange`] lets the shell also
//! run the handler's own `exchange/1`.
//!
//! Everything is bounded by [`PlumtreeConfig`]: received ids, pending merges, missing ids and
//! their announcers, each lazy queue, the payload cache; message ids are at most
//! [`MAX_MSG_ID_LEN`] bytes. Overflow drops the oldest entry (counted in [`Stats::dropped`]);
//! anti-entropy recovers what is lost that way.
//!
//! ```
//! use bytes::Bytes;
//! use partisan_core::plumtree::{Action, Plumtree, PlumtreeConfig};
//!
//! let mut a = Plumtree::new("a", PlumtreeConfig::default(), 1).unwrap();
//! let mut b = Plumtree::new("b", PlumtreeConfig::default(), 2).unwrap();
//! a.neighbour_up(0, "b");
//! b.neighbour_up(0, "a");
//! a.broadcast(0, Bytes::from("k1"), Bytes::from("v1")).unwrap();
//! let Some(Action::SendTo { node, body }) = a.poll_action() else { panic!() };
//! assert_eq!(node, "b");
//! b.receive(5, "a", &body).unwrap();
//! let Some(Action::Deliver { msg_id, hops, .. }) = b.poll_action() else { panic!() };
//! assert_eq!((&msg_id[..], hops), (&b"k1"[..], 1));
//! b.merge_result(6, &msg_id, true); // the handler's merge/2 said "new"
//! assert_eq!(b.poll_action(), None); // nobody else to forward to
//! ```

use crate::overlay::ControlError;
use crate::wire::{Reader, WireError};
use bytes::{BufMut, Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Longest message id accepted (ids are opaque bytes, e.g. an ETF-encoded `{Mod, MsgId}`).
pub const MAX_MSG_ID_LEN: usize = 1024;
/// Most ids in one IHAVE or EXCHANGE frame; longer batches are split.
pub const MAX_BATCH: usize = 1024;

/// Plumtree settings (times in milliseconds), with Partisan's defaults where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlumtreeConfig {
    /// IHAVE announcements are batched and sent at most this long after the delivery.
    pub lazy_tick_period: u64,
    /// One anti-entropy exchange with a random neighbour per period.
    pub exchange_tick_period: u64,
    /// How long an announced, missing message may take to arrive before the first GRAFT.
    pub graft_timeout: u64,
    /// Time between GRAFTs to successive announcers of the same missing message.
    pub graft_retry_timeout: u64,
    /// Hops an announced path must save to swap it into the tree; 0 disables the optimisation.
    pub optimization_threshold: u32,
    /// Received ids remembered (duplicate detection, digests).
    pub max_ids: usize,
    /// Deliveries awaiting [`Plumtree::merge_result`]; a new message beyond this is dropped.
    pub max_pending: usize,
    /// Announced but missing ids tracked with a timer.
    pub max_missing: usize,
    /// Announcers remembered per missing id.
    pub max_announcers: usize,
    /// Announcements queued per lazy peer between two lazy ticks.
    pub max_lazy_queue: usize,
    /// Payloads kept to answer GRAFTs without asking the handler (count and total bytes).
    pub cache_size: usize,
    pub cache_bytes: usize,
    /// Ids in an anti-entropy digest.
    pub exchange_size: usize,
}

impl Default for PlumtreeConfig {
    fn default() -> Self {
        PlumtreeConfig {
            lazy_tick_period: 1000,
            exchange_tick_period: 10_000,
            graft_timeout: 1000,
            graft_retry_timeout: 500,
            optimization_threshold: 3,
            max_ids: 10_000,
            max_pending: 1024,
            max_missing: 4096,
            max_announcers: 8,
            max_lazy_queue: 4096,
            cache_size: 1024,
            cache_bytes: 64 << 20,
            exchange_size: 256,
        }
    }
}

impl PlumtreeConfig {
    /// Checks that the protocol can run with these parameters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (value, name) in [
            (self.lazy_tick_period, "lazy_tick_period"),
            (self.exchange_tick_period, "exchange_tick_period"),
            (self.graft_timeout, "graft_timeout"),
            (self.graft_retry_timeout, "graft_retry_timeout"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (value, name) in [
            (self.max_ids, "max_ids"),
            (self.max_pending, "max_pending"),
            (self.max_missing, "max_missing"),
            (self.max_announcers, "max_announcers"),
            (self.max_lazy_queue, "max_lazy_queue"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.exchange_size > self.max_ids || self.exchange_size > MAX_BATCH {
            return Err(ConfigError::ExchangeTooLarge(self.exchange_size));
        }
        Ok(())
    }
}

/// Why a [`PlumtreeConfig`] cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be positive")]
    Zero(&'static str),
    #[error("exchange_size ({0}) must be at most max_ids and at most {MAX_BATCH}")]
    ExchangeTooLarge(usize),
}

/// Why a local broadcast was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    #[error("message id must be 1..={MAX_MSG_ID_LEN} bytes, got {0}")]
    BadMsgId(usize),
    #[error("message id already known")]
    Duplicate,
}

/// A Plumtree control message as it travels in a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Eager push: the payload, `round` = the sender's hops from the origin.
    Gossip { msg_id: Bytes, round: u32, payload: Bytes },
    /// Lazy push: "I have these", with the sender's hops for each.
    IHave { entries: Vec<(Bytes, u32)> },
    /// "Make our link eager", and send `msg_id` (announced with `round`) if given.
    Graft { msg_id: Option<Bytes>, round: u32 },
    /// "Make our link lazy": a duplicate arrived on it.
    Prune,
    /// Anti-entropy digest: the sender's recent ids with its hops.
    Exchange { entries: Vec<(Bytes, u32)> },
}

const TAG_GOSSIP: u8 = 32;
const TAG_IHAVE: u8 = 33;
const TAG_GRAFT: u8 = 34;
const TAG_PRUNE: u8 = 35;
const TAG_EXCHANGE: u8 = 36;
/// Smallest encoded (id, round) entry, to bound allocations by the body size.
const MIN_ENTRY_LEN: usize = 2 + 1 + 4;

impl Message {
    /// Encodes the message. Ids must be valid (they are checked at the API boundary and by
    /// [`Message::decode`]) and batches at most [`MAX_BATCH`] long.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Message::Gossip { msg_id, round, payload } => {
                out.put_u8(TAG_GOSSIP);
                put_id(&mut out, msg_id);
                out.put_u32(*round);
                let len = u32::try_from(payload.len()).expect("payload longer than 4 GiB");
                out.put_u32(len);
                out.put_slice(payload);
            }
            Message::IHave { entries } => {
                out.put_u8(TAG_IHAVE);
                put_entries(&mut out, entries);
            }
            Message::Graft { msg_id, round } => {
                out.put_u8(TAG_GRAFT);
                match msg_id {
                    Some(id) => {
                        out.put_u8(1);
                        put_id(&mut out, id);
                    }
                    None => out.put_u8(0),
                }
                out.put_u32(*round);
            }
            Message::Prune => out.put_u8(TAG_PRUNE),
            Message::Exchange { entries } => {
                out.put_u8(TAG_EXCHANGE);
                put_entries(&mut out, entries);
            }
        }
        out.freeze()
    }

    /// Parses a control frame body. Never panics, never allocates more than the body justifies.
    pub fn decode(body: &[u8]) -> Result<Message, ControlError> {
        let mut r = Reader::new(body);
        let msg = match r.u8("control tag")? {
            TAG_GOSSIP => {
                let msg_id = read_id(&mut r)?;
                let round = r.u32("round")?;
                let payload = Bytes::copy_from_slice(r.bytes32("payload")?);
                Message::Gossip { msg_id, round, payload }
            }
            TAG_IHAVE => Message::IHave { entries: read_entries(&mut r)? },
            TAG_GRAFT => {
                let msg_id = if r.bool("graft id flag")? { Some(read_id(&mut r)?) } else { None };
                Message::Graft { msg_id, round: r.u32("round")? }
            }
            TAG_PRUNE => Message::Prune,
            TAG_EXCHANGE => Message::Exchange { entries: read_entries(&mut r)? },
            other => return Err(ControlError::UnknownTag(other)),
        };
        r.finish("plumtree message")?;
        Ok(msg)
    }
}

fn put_id(out: &mut BytesMut, id: &[u8]) {
    assert!(valid_id(id), "invalid message id length {}", id.len());
    out.put_u16(id.len() as u16);
    out.put_slice(id);
}

fn put_entries(out: &mut BytesMut, entries: &[(Bytes, u32)]) {
    assert!(entries.len() <= MAX_BATCH, "batch longer than MAX_BATCH");
    out.put_u16(entries.len() as u16);
    for (id, round) in entries {
        put_id(out, id);
        out.put_u32(*round);
    }
}

fn valid_id(id: &[u8]) -> bool {
    (1..=MAX_MSG_ID_LEN).contains(&id.len())
}

fn read_id(r: &mut Reader) -> Result<Bytes, WireError> {
    let len = r.u16("message id length")? as usize;
    if !(1..=MAX_MSG_ID_LEN).contains(&len) {
        return Err(WireError::BadValue { what: "message id length", value: len as u64 });
    }
    Ok(Bytes::copy_from_slice(r.take(len, "message id")?))
}

fn read_entries(r: &mut Reader) -> Result<Vec<(Bytes, u32)>, WireError> {
    let count = r.u16("entry count")? as usize;
    if count > MAX_BATCH {
        return Err(WireError::BadValue { what: "entry count", value: count as u64 });
    }
    let mut entries = Vec::with_capacity(count.min(r.remaining() / MIN_ENTRY_LEN));
    for _ in 0..count {
        let id = read_id(r)?;
        entries.push((id, r.u32("round")?));
    }
    Ok(entries)
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a Plumtree control frame to a neighbour (a node reported by `neighbour_up`).
    SendTo { node: String, body: Bytes },
    /// A message not seen before: run the handler's `merge(MsgId, Payload)` and report its
    /// answer with [`Plumtree::merge_result`]. `hops` is the distance from the origin.
    Deliver { msg_id: Bytes, payload: Bytes, from: String, hops: u32 },
    /// `node` grafted a message whose payload is no longer cached: run the handler's
    /// `graft(MsgId)` and report with [`Plumtree::graft_result`] (passing `node` and `round`).
    Graft { node: String, msg_id: Bytes, round: u32 },
    /// Exchange tick: the core digest went to `node`; the shell may also run the handler's
    /// `exchange(Node)` (Partisan's application-level anti-entropy).
    Exchange { node: String },
}

/// Counters for observability and the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub gossip_sent: u64,
    pub gossip_received: u64,
    /// Payloads received that were already known (each one sent a PRUNE).
    pub duplicates: u64,
    /// Announcements (ids) sent and received in IHAVE frames.
    pub ihave_sent: u64,
    pub ihave_received: u64,
    pub graft_sent: u64,
    pub graft_received: u64,
    pub prune_sent: u64,
    pub prune_received: u64,
    pub exchanges_sent: u64,
    /// Tree optimisations (a lazy link swapped for an eager one).
    pub swaps: u64,
    /// Entries dropped by a bound (announcements, lazy queue entries, deliveries over `max_pending`).
    pub dropped: u64,
}

/// Relative message redundancy: `payload_messages / (nodes_reached - 1) - 1`; 0 means every node
/// received the payload exactly once. `None` when fewer than two nodes were reached.
pub fn relative_message_redundancy(payload_messages: u64, nodes_reached: u64) -> Option<f64> {
    (nodes_reached >= 2).then(|| payload_messages as f64 / (nodes_reached - 1) as f64 - 1.0)
}

/// Per-broadcast measurements as in the paper: reliability, RMR and LDH (last delivery hop, the
/// largest hop count at which a node delivered). Feed it from the events of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastMetrics {
    /// Nodes that delivered the message, the origin included.
    pub reached: u64,
    /// GOSSIP frames (payload messages) received by any node, duplicates included.
    pub payload_messages: u64,
    /// Largest hop count of a delivery.
    pub last_delivery_hop: u32,
}

impl BroadcastMetrics {
    /// A broadcast sent by its origin (which counts as reached, at hop 0).
    pub fn originated() -> Self {
        BroadcastMetrics { reached: 1, payload_messages: 0, last_delivery_hop: 0 }
    }

    pub fn payload_received(&mut self) {
        self.payload_messages += 1;
    }

    pub fn delivered(&mut self, hops: u32) {
        self.reached += 1;
        self.last_delivery_hop = self.last_delivery_hop.max(hops);
    }

    pub fn rmr(&self) -> Option<f64> {
        relative_message_redundancy(self.payload_messages, self.reached)
    }

    /// Fraction of the `live_nodes` (origin included) that delivered.
    pub fn reliability(&self, live_nodes: u64) -> f64 {
        if live_nodes == 0 {
            return 1.0;
        }
        self.reached as f64 / live_nodes as f64
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for `merge_result`; `best` is the lowest-round announcer heard before the payload.
    Pending { payload: Bytes, best: Option<(String, u32)> },
    Delivered,
    Stale,
}

#[derive(Debug, Clone)]
struct Seen {
    /// Our hop count for this message (0 at the origin).
    hops: u32,
    /// The neighbour that delivered it first (None for a local broadcast).
    from: Option<String>,
    state: State,
}

#[derive(Debug, Clone)]
struct Missing {
    announcers: VecDeque<(String, u32)>,
    deadline: u64,
}

/// The Plumtree state machine; see the module docs.
#[derive(Debug, Clone)]
pub struct Plumtree {
    me: String,
    cfg: PlumtreeConfig,
    rng: SmallRng,
    eager: BTreeSet<String>,
    lazy: BTreeSet<String>,
    /// Received ids in arrival order; an id leaves `seen` only by eviction from the front.
    seen: BTreeMap<Bytes, Seen>,
    seen_order: VecDeque<Bytes>,
    pending: usize,
    /// Payloads of delivered messages, oldest first; likewise evicted only from the front.
    cache: BTreeMap<Bytes, Bytes>,
    cache_order: VecDeque<Bytes>,
    cache_len: usize,
    missing: BTreeMap<Bytes, Missing>,
    timers: BTreeSet<(u64, Bytes)>,
    lazy_queues: BTreeMap<String, VecDeque<(Bytes, u32)>>,
    next_lazy: Option<u64>,
    next_exchange: Option<u64>,
    actions: VecDeque<Action>,
    stats: Stats,
}

impl Plumtree {
    /// A node with no neighbours; `seed` drives every random choice. The exchange timer starts
    /// with the first input, at a random offset within its period.
    pub fn new(me: impl Into<String>, cfg: PlumtreeConfig, seed: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Plumtree {
            me: me.into(),
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
            pending: 0,
            cache: BTreeMap::new(),
            cache_order: VecDeque::new(),
            cache_len: 0,
            missing: BTreeMap::new(),
            timers: BTreeSet::new(),
            lazy_queues: BTreeMap::new(),
            next_lazy: None,
            next_exchange: None,
            actions: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.me
    }

    pub fn config(&self) -> &PlumtreeConfig {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Neighbours we push payloads to (tree links), sorted.
    pub fn eager_peers(&self) -> Vec<String> {
        self.eager.iter().cloned().collect()
    }

    /// Neighbours we only announce to, sorted.
    pub fn lazy_peers(&self) -> Vec<String> {
        self.lazy.iter().cloned().collect()
    }

    /// Whether the id is among the remembered received ids (pending merges included).
    pub fn has_seen(&self, msg_id: &[u8]) -> bool {
        self.seen.contains_key(msg_id)
    }

    /// Ids announced to us but not received yet.
    pub fn missing_len(&self) -> usize {
        self.missing.len()
    }

    /// A new overlay neighbour: it starts as an eager peer.
    pub fn neighbour_up(&mut self, now: u64, node: &str) {
        self.arm(now);
        if node != self.me && !self.is_neighbour(node) {
            self.eager.insert(node.to_owned());
        }
    }

    /// A neighbour left the overlay: forget its links, its queued announcements and its
    /// announcements of missing messages.
    pub fn neighbour_down(&mut self, now: u64, node: &str) {
        self.arm(now);
        self.eager.remove(node);
        self.lazy.remove(node);
        self.lazy_queues.remove(node);
        for m in self.missing.values_mut() {
            m.announcers.retain(|(n, _)| n != node);
        }
    }

    /// Broadcasts a message that originates here (the handler already has it: no Deliver).
    pub fn broadcast(&mut self, now: u64, msg_id: Bytes, payload: Bytes) -> Result<(), BroadcastError> {
        if !valid_id(&msg_id) {
            return Err(BroadcastError::BadMsgId(msg_id.len()));
        }
        if self.seen.contains_key(&msg_id) {
            return Err(BroadcastError::Duplicate);
        }
        self.arm(now);
        self.cancel_missing(&msg_id);
        self.remember(msg_id.clone(), Seen { hops: 0, from: None, state: State::Delivered });
        self.cache_put(msg_id.clone(), payload.clone());
        self.eager_push(&msg_id, 0, &payload, None);
        self.lazy_push(now, &msg_id, 0, None);
        Ok(())
    }

    /// A Plumtree control frame from `from`. Frames from nodes that are not neighbours change no
    /// link (a GOSSIP is still delivered); malformed frames are an error and change nothing.
    pub fn receive(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError> {
        let msg = Message::decode(body)?;
        self.arm(now);
        if from == self.me {
            return Ok(());
        }
        match msg {
            Message::Gossip { msg_id, round, payload } => self.on_gossip(from, msg_id, round, payload),
            Message::IHave { entries } => self.on_ihave(now, from, entries),
            Message::Graft { msg_id, round } => self.on_graft(from, msg_id, round),
            Message::Prune => self.on_prune(from),
            Message::Exchange { entries } => self.on_exchange(now, from, entries),
        }
        Ok(())
    }

    /// The handler's answer to [`Action::Deliver`]: a new message is forwarded (eagerly on tree
    /// links, announced on the others); a stale one prunes the link it came on. Answers for ids
    /// no longer pending are ignored.
    pub fn merge_result(&mut self, now: u64, msg_id: &[u8], is_new: bool) {
        self.arm(now);
        let Some(seen) = self.seen.get_mut(msg_id) else { return };
        let State::Pending { .. } = seen.state else { return };
        let state = if is_new { State::Delivered } else { State::Stale };
        let State::Pending { payload, best } = std::mem::replace(&mut seen.state, state) else { unreachable!() };
        let (hops, from) = (seen.hops, seen.from.clone());
        let msg_id = Bytes::copy_from_slice(msg_id);
        self.pending -= 1;
        let from = from.filter(|f| self.is_neighbour(f));
        if !is_new {
            if let Some(f) = from {
                self.prune(&f);
            }
            return;
        }
        self.cache_put(msg_id.clone(), payload.clone());
        if let Some(f) = &from {
            self.lazy.remove(f);
            self.eager.insert(f.clone());
        }
        self.eager_push(&msg_id, hops, &payload, from.as_deref());
        self.lazy_push(now, &msg_id, hops, from.as_deref());
        if let (Some(f), Some((announcer, round))) = (from, best) {
            self.optimize(&f, hops, &announcer, round);
        }
    }

    /// The handler's answer to [`Action::Graft`]: `Some(payload)` is sent to `node`.
    pub fn graft_result(&mut self, now: u64, node: &str, msg_id: &[u8], round: u32, payload: Option<Bytes>) {
        self.arm(now);
        if let Some(payload) = payload {
            if valid_id(msg_id) && self.is_neighbour(node) {
                let msg = Message::Gossip { msg_id: Bytes::copy_from_slice(msg_id), round, payload };
                self.stats.gossip_sent += 1;
                self.send(node, &msg);
            }
        }
    }

    /// Runs the timers that are due: GRAFTs for missing messages, the lazy flush, the exchange.
    pub fn tick(&mut self, now: u64) {
        self.arm(now);
        while let Some((deadline, _)) = self.timers.first() {
            if *deadline > now {
                break;
            }
            let (_, id) = self.timers.pop_first().expect("checked non-empty");
            self.graft_timer(now, id);
        }
        if self.next_lazy.is_some_and(|t| t <= now) {
            self.next_lazy = None;
            self.flush_lazy();
        }
        if self.next_exchange.is_some_and(|t| t <= now) {
            self.next_exchange = Some(now + self.cfg.exchange_tick_period);
            self.exchange();
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest time at which `tick` has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let graft = self.timers.first().map(|(t, _)| *t);
        graft.into_iter().chain(self.next_lazy).chain(self.next_exchange).min()
    }

    fn arm(&mut self, now: u64) {
        if self.next_exchange.is_none() {
            self.next_exchange = Some(now + self.rng.gen_range(1..=self.cfg.exchange_tick_period));
        }
    }

    fn is_neighbour(&self, node: &str) -> bool {
        self.eager.contains(node) || self.lazy.contains(node)
    }

    fn send(&mut self, node: &str, msg: &Message) {
        self.actions.push_back(Action::SendTo { node: node.to_owned(), body: msg.encode() });
    }

    /// Moves a neighbour to the lazy set and tells it to do the same.
    fn prune(&mut self, node: &str) {
        self.eager.remove(node);
        self.lazy.insert(node.to_owned());
        self.stats.prune_sent += 1;
        self.send(node, &Message::Prune);
    }

    fn remember(&mut self, msg_id: Bytes, seen: Seen) {
        if matches!(seen.state, State::Pending { .. }) {
            self.pending += 1;
        }
        self.seen.insert(msg_id.clone(), seen);
        self.seen_order.push_back(msg_id);
        while self.seen.len() > self.cfg.max_ids {
            let Some(old) = self.seen_order.pop_front() else { break };
            if let Some(evicted) = self.seen.remove(&old) {
                if matches!(evicted.state, State::Pending { .. }) {
                    self.pending -= 1;
                }
            }
        }
    }

    fn cache_put(&mut self, msg_id: Bytes, payload: Bytes) {
        if self.cfg.cache_size == 0 {
            return;
        }
        self.cache_len += payload.len();
        match self.cache.insert(msg_id.clone(), payload) {
            Some(old) => self.cache_len -= old.len(),
            None => self.cache_order.push_back(msg_id),
        }
        while self.cache.len() > self.cfg.cache_size || self.cache_len > self.cfg.cache_bytes {
            let Some(old) = self.cache_order.pop_front() else { break };
            if let Some(p) = self.cache.remove(&old) {
                self.cache_len -= p.len();
            }
        }
    }

    fn cancel_missing(&mut self, msg_id: &Bytes) -> Option<Missing> {
        let m = self.missing.remove(msg_id)?;
        self.timers.remove(&(m.deadline, msg_id.clone()));
        Some(m)
    }

    fn eager_push(&mut self, msg_id: &Bytes, hops: u32, payload: &Bytes, except: Option<&str>) {
        let targets: Vec<String> = self.eager.iter().filter(|n| Some(n.as_str()) != except).cloned().collect();
        if targets.is_empty() {
            return;
        }
        let body = Message::Gossip { msg_id: msg_id.clone(), round: hops, payload: payload.clone() }.encode();
        for node in targets {
            self.stats.gossip_sent += 1;
            self.actions.push_back(Action::SendTo { node, body: body.clone() });
        }
    }

    fn lazy_push(&mut self, now: u64, msg_id: &Bytes, hops: u32, except: Option<&str>) {
        let targets: Vec<String> = self.lazy.iter().filter(|n| Some(n.as_str()) != except).cloned().collect();
        for node in targets {
            let queue = self.lazy_queues.entry(node).or_default();
            if queue.len() >= self.cfg.max_lazy_queue {
                queue.pop_front();
                self.stats.dropped += 1;
            }
            queue.push_back((msg_id.clone(), hops));
            self.next_lazy.get_or_insert(now + self.cfg.lazy_tick_period);
        }
    }

    fn flush_lazy(&mut self) {
        for (node, queue) in std::mem::take(&mut self.lazy_queues) {
            let entries: Vec<(Bytes, u32)> = queue.into();
            self.stats.ihave_sent += entries.len() as u64;
            for chunk in entries.chunks(MAX_BATCH) {
                self.send(&node, &Message::IHave { entries: chunk.to_vec() });
            }
        }
    }

    fn on_gossip(&mut self, from: &str, msg_id: Bytes, round: u32, payload: Bytes) {
        self.stats.gossip_received += 1;
        if self.seen.contains_key(&msg_id) {
            self.stats.duplicates += 1;
            if self.is_neighbour(from) {
                self.prune(from);
            }
            return;
        }
        if self.pending >= self.cfg.max_pending {
            self.stats.dropped += 1;
            return;
        }
        let hops = round.saturating_add(1);
        let best = self.cancel_missing(&msg_id).and_then(|m| {
            m.announcers.into_iter().filter(|(n, _)| n != from).min_by_key(|(_, r)| *r)
        });
        let state = State::Pending { payload: payload.clone(), best };
        self.remember(msg_id.clone(), Seen { hops, from: Some(from.to_owned()), state });
        self.actions.push_back(Action::Deliver { msg_id, payload, from: from.to_owned(), hops });
    }

    /// The paper's optimisation: if `announcer` (a lazy neighbour at hop `round`) offers a path
    /// at least `optimization_threshold` hops shorter than the eager one through `eager_from`
    /// (which gave us hop `hops`), graft the announcer and prune the eager link.
    fn optimize(&mut self, eager_from: &str, hops: u32, announcer: &str, round: u32) {
        let threshold = self.cfg.optimization_threshold;
        if threshold == 0
            || announcer == eager_from
            || !self.eager.contains(eager_from)
            || !self.lazy.contains(announcer)
            || (hops as u64) < round as u64 + 1 + threshold as u64
        {
            return;
        }
        self.stats.swaps += 1;
        self.lazy.remove(announcer);
        self.eager.insert(announcer.to_owned());
        self.stats.graft_sent += 1;
        self.send(announcer, &Message::Graft { msg_id: None, round });
        self.prune(eager_from);
    }

    fn on_ihave(&mut self, now: u64, from: &str, entries: Vec<(Bytes, u32)>) {
        if !self.is_neighbour(from) {
            return;
        }
        self.stats.ihave_received += entries.len() as u64;
        for (msg_id, round) in entries {
            let Some(seen) = self.seen.get_mut(&msg_id) else {
                self.announce(now, msg_id, from, round);
                continue;
            };
            let eager = match (&mut seen.state, &seen.from) {
                (State::Delivered, Some(eager_from)) => Some((eager_from.clone(), seen.hops)),
                (State::Pending { best, .. }, _) => {
                    // the payload is here; remember the shortest announced path for the optimisation
                    if best.as_ref().is_none_or(|(_, r)| round < *r) {
                        *best = Some((from.to_owned(), round));
                    }
                    None
                }
                _ => None,
            };
            if let Some((eager_from, hops)) = eager {
                self.optimize(&eager_from, hops, from, round);
            }
        }
    }

    fn announce(&mut self, now: u64, msg_id: Bytes, from: &str, round: u32) {
        if let Some(m) = self.missing.get_mut(&msg_id) {
            if m.announcers.len() < self.cfg.max_announcers && !m.announcers.iter().any(|(n, _)| n == from) {
                m.announcers.push_back((from.to_owned(), round));
            }
            return;
        }
        if self.missing.len() >= self.cfg.max_missing {
            if let Some((_, oldest)) = self.timers.pop_first() {
                self.missing.remove(&oldest);
                self.stats.dropped += 1;
            }
        }
        let deadline = now + self.cfg.graft_timeout;
        self.timers.insert((deadline, msg_id.clone()));
        self.missing.insert(msg_id, Missing { announcers: VecDeque::from([(from.to_owned(), round)]), deadline });
    }

    /// A missing message's timer fired: graft the next announcer and wait a shorter time.
    fn graft_timer(&mut self, now: u64, msg_id: Bytes) {
        let Some(m) = self.missing.get_mut(&msg_id) else { return };
        let Some((node, round)) = m.announcers.pop_front() else {
            self.missing.remove(&msg_id);
            return;
        };
        m.deadline = now + self.cfg.graft_retry_timeout;
        self.timers.insert((m.deadline, msg_id.clone()));
        self.lazy.remove(&node);
        self.eager.insert(node.clone());
        self.stats.graft_sent += 1;
        self.send(&node, &Message::Graft { msg_id: Some(msg_id), round });
    }

    fn on_graft(&mut self, from: &str, msg_id: Option<Bytes>, round: u32) {
        if !self.is_neighbour(from) {
            return;
        }
        self.stats.graft_received += 1;
        self.lazy.remove(from);
        self.eager.insert(from.to_owned());
        let Some(msg_id) = msg_id else { return };
        match self.cache.get(&msg_id) {
            Some(payload) => {
                let msg = Message::Gossip { msg_id, round, payload: payload.clone() };
                self.stats.gossip_sent += 1;
                self.send(from, &msg);
            }
            None => self.actions.push_back(Action::Graft { node: from.to_owned(), msg_id, round }),
        }
    }

    fn on_prune(&mut self, from: &str) {
        if self.is_neighbour(from) {
            self.stats.prune_received += 1;
            self.eager.remove(from);
            self.lazy.insert(from.to_owned());
        }
    }

    /// Up to `exchange_size` of the most recent ids whose merge is decided, with our hops.
    fn digest(&self) -> Vec<(Bytes, u32)> {
        self.seen_order
            .iter()
            .rev()
            .filter_map(|id| match self.seen.get(id) {
                Some(Seen { state: State::Pending { .. }, .. }) | None => None,
                Some(seen) => Some((id.clone(), seen.hops)),
            })
            .take(self.cfg.exchange_size)
            .collect()
    }

    fn exchange(&mut self) {
        let peers: Vec<String> = self.eager.iter().chain(&self.lazy).cloned().collect();
        let Some(node) = peers.choose(&mut self.rng).cloned() else { return };
        self.stats.exchanges_sent += 1;
        self.send(&node, &Message::Exchange { entries: self.digest() });
        self.actions.push_back(Action::Exchange { node });
    }

    /// A neighbour's digest: what it has and we lack is announced (GRAFT after the timeout);
    /// what we have and the digest lacks is announced back in an IHAVE.
    fn on_exchange(&mut self, now: u64, from: &str, entries: Vec<(Bytes, u32)>) {
        if !self.is_neighbour(from) {
            return;
        }
        let theirs: BTreeSet<Bytes> = entries.iter().map(|(id, _)| id.clone()).collect();
        for (msg_id, round) in entries {
            if !self.seen.contains_key(&msg_id) {
                self.announce(now, msg_id, from, round);
            }
        }
        let reply: Vec<(Bytes, u32)> = self.digest().into_iter().filter(|(id, _)| !theirs.contains(id)).collect();
        self.stats.ihave_sent += reply.len() as u64;
        for chunk in reply.chunks(MAX_BATCH) {
            self.send(from, &Message::IHave { entries: chunk.to_vec() });
        }
    }
}

#[cfg(test)]
mod tests;
