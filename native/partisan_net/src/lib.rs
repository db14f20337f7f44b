//! The tokio shell of Partisan on a Rust data plane.
//!
//! `partisan_core` decides; this crate does the I/O it asks for. A [`Node`] owns a tokio runtime
//! with a listener, one writer and one reader task per connection, and a *driver* task that owns
//! the core's [`partisan_core::node::Node`] (overlay, Plumtree, relaying, link policy) and
//! executes its actions: dial and close links, send frames, hand events to the [`Sink`]. The
//! driver keeps only I/O and time: which connection serves a link, and when to wake the node.
//!
//! The data path bypasses the driver: [`Node::send`] looks the connection up in a shared routing
//! table and appends to its queue from the caller's thread, and a reader task hands each message
//! to the [`Sink`] on the thread that read it. Nothing here knows about the BEAM; the NIF crate
//! implements [`Sink`] with `OwnedEnv`, and the tests implement it with channels.
//!
//! ```no_run
//! use partisan_net::{Config, Node, Sink, Event, DeliverError};
//! use partisan_core::frame::Dest;
//! struct Print;
//! impl Sink for Print {
//!     fn deliver(&self, from: &str, _dest: &Dest, payload: bytes::Bytes) -> Result<(), DeliverError> {
//!         println!("{} bytes from {from}", payload.len());
//!         Ok(())
//!     }
//!     fn event(&self, event: Event) { println!("{event:?}") }
//! }
//! let node = Node::start(Config::new("a@127.0.0.1", b"cookie"), std::sync::Arc::new(Print)).unwrap();
//! println!("listening on {:?}", node.spec().listen_addrs);
//! ```

mod acks;
pub mod config;
mod conn;
mod driver;
pub mod lock;
mod queue;
pub use queue::Payload;
pub mod report;
mod routes;
mod stream;
pub mod tls;

pub use config::{Config, ConfigError};

use bytes::Bytes;
use lock::{MutexExt, RwLockExt};
use partisan_core::channel::{ChannelTable, MonotonicKey};
use partisan_core::frame::{self, Dest};
use partisan_core::overlay::{LinkId, NodeSpec};
use queue::Outgoing;
pub use report::{Direction, DropReason};
use report::Key;
use routes::Routes;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why a message was not queued. Each maps to `{error, Reason}` in Erlang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not connected to the destination node on this channel")]
    NotConnected,
    /// The connection's send queue is full (for a relayed message: the driver's input).
    #[error("the send queue is full")]
    QueueFull,
    #[error("unknown channel")]
    UnknownChannel,
    /// The frame would exceed the largest frame the receiving node accepts (it told us its
    /// `max_frame_size` in the handshake), or this node's own when no link is involved.
    #[error("a message of {size} bytes exceeds the maximum frame size of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
}

/// A request to the driver was refused because its input queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the data plane's driver is overloaded (its input queue is full); retry later")]
pub struct Overloaded;

/// What [`Node::stop`] managed to flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopReport {
    /// Messages accepted by a send (`ok`) that were still queued or being written when the flush
    /// timeout ran out, and were dropped.
    pub undelivered: u64,
    /// Whether every queue was written out within the timeout.
    pub flushed: bool,
    pub elapsed: Duration,
}

/// Why a received message could not be delivered (counted by the shell).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    #[error("payload is not a valid term")]
    Undecodable,
    #[error("no such process")]
    NoProcess,
    /// A reply whose caller gave up (timeout) or that did not come from the node it called.
    #[error("no caller waits for this reply")]
    LateReply,
}

/// A membership change, for the Erlang events process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NodeUp(String),
    NodeDown(String),
    ChannelUp(String, String),
    ChannelDown(String, String),
    Members(Vec<String>),
    Removed { by: String },
    /// A control frame for the Erlang membership strategy.
    Upcall { from: String, body: Bytes },
    /// A broadcast not seen before: the handler's `merge/2` decides; answer with
    /// [`Node::broadcast_merged`].
    BroadcastDeliver { msg_id: Bytes, payload: Bytes, from: String },
    /// A neighbour grafted a message no longer cached: the handler's `graft/1` answers, with
    /// [`Node::broadcast_grafted`].
    BroadcastGraft { node: String, msg_id: Bytes, round: u32 },
    /// Anti-entropy tick with `node`: the handler's `exchange/1` may run.
    BroadcastExchange { node: String },
    /// A connection this node dialed passed the handshake (`conn` is its index in the channel).
    /// Sent from the dialing task, before the driver hears of the link.
    ConnectionUp { node: String, channel: String, conn: u16 },
    /// That connection closed: `closed` (the peer closed it), `connection_reset`, `timed_out`
    /// (keepalive), `io_error`, `bad_frame`, `write_failed` or `local_close` (this node closed it:
    /// node down or removed, leave, partition). Not sent while this node stops.
    ConnectionDown { node: String, channel: String, conn: u16, reason: &'static str },
    /// `count` messages lost or refused for `reason` since the last report (see [`report`]).
    /// `node`/`channel` are `None` where unknown (receive side) or folded.
    Dropped { reason: DropReason, node: Option<String>, channel: Option<String>, count: u64 },
    /// `count` handshakes that failed to authenticate since the last report. `peer` is the
    /// source address (inbound) or the node dialed (outbound).
    AuthFailed { direction: Direction, peer: String, reason: &'static str, count: u64 },
}

/// Where received messages and membership events go.
pub trait Sink: Send + Sync + 'static {
    /// Called on the reader's thread for every message frame.
    fn deliver(&self, from: &str, dest: &Dest, payload: Bytes) -> Result<(), DeliverError>;
    /// Called on the driver's thread, in order.
    fn event(&self, event: Event);
}

/// Counters, readable at any time (`partisan:stats/0`).
#[derive(Debug, Default)]
pub struct Stats {
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub dropped_not_connected: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub replaced_monotonic: Arc<AtomicU64>,
    pub undeliverable: AtomicU64,
    pub late_replies: AtomicU64,
    pub undecodable: AtomicU64,
    pub auth_failures: AtomicU64,
    pub bad_frames: AtomicU64,
    pub bad_control: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_dialed: AtomicU64,
    pub relayed: AtomicU64,
    /// Plumtree payload frames received, duplicates included, and the duplicates among them
    /// (each answered with a PRUNE): the inputs of the relative message redundancy.
    pub broadcast_payloads_received: AtomicU64,
    pub broadcast_duplicates: AtomicU64,
    /// Messages accepted by a send that were dropped because their link closed first.
    pub undelivered_on_close: AtomicU64,
    /// Accepted connections closed at once because too many handshakes were pending.
    pub handshakes_refused: AtomicU64,
    /// Accepted connections that did not authenticate within `handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// Dials tried (each address of each attempt).
    pub dial_attempts: AtomicU64,
    /// Log lines the rate limits suppressed (the counters above keep the exact numbers).
    pub log_lines_suppressed: AtomicU64,
    /// Messages sent with `ack` that arrived again after being delivered (dropped).
    pub ack_duplicates: AtomicU64,
    /// Messages sent with `ack` that arrived before an earlier one of their stream, or from an
    /// older incarnation of their sender (dropped; the sender resends in order).
    pub ack_out_of_order: AtomicU64,
    /// Messages sent with `ack` given up because their destination left the membership.
    pub dropped_destination_removed: AtomicU64,
    /// Links closed because the peer answered no `connection_ping`.
    pub ping_timeouts: AtomicU64,
    pub pings_sent: AtomicU64,
    /// TLS handshakes that failed (the peer's certificate was refused, or ours by the peer, or
    /// the peer does not speak TLS); also counted in `auth_failures`.
    pub tls_failures: AtomicU64,
    /// Messages sent with `ack` through the overlay (`partisan_core::relay_ack`): transmitted
    /// again, arrived again after delivery, and given up (their destination acknowledged
    /// nothing for a minute).
    pub acked_relays_retransmitted: AtomicU64,
    /// Held now (sent and not acknowledged; part of `unacked_messages`, not a counter).
    pub acked_relays_unacked: AtomicU64,
    pub acked_relays_duplicates: AtomicU64,
    pub dropped_unacknowledged: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("messages_sent", g(&self.messages_sent)),
            ("bytes_sent", g(&self.bytes_sent)),
            ("messages_received", g(&self.messages_received)),
            ("dropped_not_connected", g(&self.dropped_not_connected)),
            ("dropped_queue_full", g(&self.dropped_queue_full)),
            ("replaced_monotonic", g(&self.replaced_monotonic)),
            ("undeliverable", g(&self.undeliverable)),
            ("late_replies", g(&self.late_replies)),
            ("undecodable", g(&self.undecodable)),
            ("auth_failures", g(&self.auth_failures)),
            ("bad_frames", g(&self.bad_frames)),
            ("bad_control", g(&self.bad_control)),
            ("connections_accepted", g(&self.connections_accepted)),
            ("connections_dialed", g(&self.connections_dialed)),
            ("relayed", g(&self.relayed)),
            ("broadcast_payloads_received", g(&self.broadcast_payloads_received)),
            ("broadcast_duplicates", g(&self.broadcast_duplicates)),
            ("undelivered_on_close", g(&self.undelivered_on_close)),
            ("handshakes_refused", g(&self.handshakes_refused)),
            ("handshake_timeouts", g(&self.handshake_timeouts)),
            ("dial_attempts", g(&self.dial_attempts)),
            ("log_lines_suppressed", g(&self.log_lines_suppressed)),
            ("ack_duplicates", g(&self.ack_duplicates)),
            ("ack_out_of_order", g(&self.ack_out_of_order)),
            ("dropped_destination_removed", g(&self.dropped_destination_removed)),
            ("ping_timeouts", g(&self.ping_timeouts)),
            ("pings_sent", g(&self.pings_sent)),
            ("tls_failures", g(&self.tls_failures)),
            ("acked_relays_retransmitted", g(&self.acked_relays_retransmitted)),
            ("acked_relays_duplicates", g(&self.acked_relays_duplicates)),
            ("dropped_unacknowledged", g(&self.dropped_unacknowledged)),
        ]
    }
}

/// What API calls read of the node's state without a hop through the driver; the driver
/// replaces it after every step that changed it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Live members, this node included, sorted.
    pub members: Vec<String>,
    /// Nodes the overlay reports up, sorted (`partisan:nodes/0`).
    pub neighbours: Vec<String>,
    /// The overlay's named views (`get_local_state/0`).
    pub views: Vec<(String, Vec<String>)>,
    /// Whether a relayed message can leave this node now (a neighbour's default channel is up).
    pub can_relay: bool,
    /// The specs of the members the overlay knows (`members_for_orchestration/0`), refreshed
    /// when the member list changes.
    pub member_specs: Vec<NodeSpec>,
    /// Plumtree's eager (tree) and lazy peers, sorted; `None` when broadcast is off.
    pub broadcast_peers: Option<(Vec<String>, Vec<String>)>,
}

/// State shared between the driver, the connection tasks and API callers.
pub(crate) struct Shared {
    pub name: String,
    pub channels: ChannelTable,
    pub routes: Routes,
    pub snapshot: RwLock<Snapshot>,
    /// Nodes cut off by `inject_partition`: no dial, no accepted handshake.
    pub blocked: RwLock<HashSet<String>>,
    pub stats: Stats,
    /// Handshakes in progress, in all and per source address.
    pub pending: conn::Pending,
    /// Rate limits of the warnings a peer can trigger at will.
    pub log_limits: LogLimits,
    /// Set by [`Node::stop`]: no new connection is accepted or dialed.
    pub stopping: AtomicBool,
    /// Writer tasks alive, and a wake-up when one ends (the stop flush waits on them).
    pub writers: AtomicU64,
    pub writer_done: tokio::sync::Notify,
    /// Drops and failed handshakes, aggregated for the sink.
    pub reports: Arc<report::Reports>,
    pub sink: Arc<dyn Sink>,
    /// Outboxes and inbound streams of messages sent with `ack`.
    pub acks: acks::Acks,
    /// When each peer was last heard from (ms since `epoch`), on any of its connections: what
    /// `connection_ping` watches.
    pub heard: std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>,
    pub epoch: std::time::Instant,
    pub cfg: Config,
    /// The TLS configurations new connections use (`tls => true`); replaced by
    /// [`Node::reload_tls`].
    pub tls: RwLock<Option<Arc<tls::TlsContext>>>,
    /// Buffers of large received frames, shared by every connection's reader.
    pub frame_pool: Arc<frame::FramePool>,
}

/// At most one warning per kind and period; the rest are counted in `log_lines_suppressed` and
/// summed up in the next warning.
#[derive(Debug)]
pub(crate) struct LogLimit {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

/// The period of [`LogLimit`].
pub(crate) const LOG_PERIOD: Duration = Duration::from_secs(10);

impl LogLimit {
    fn new() -> Self {
        LogLimit { state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(n)` when a warning may be logged now, `n` being how many were suppressed since the
    /// last one; `None` (and the suppression counted) otherwise.
    pub(crate) fn allow(&self, stats: &Stats) -> Option<u64> {
        let mut st = self.state.lock_unpoisoned();
        let now = std::time::Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < LOG_PERIOD => {
                st.1 += 1;
                stats.log_lines_suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                st.0 = Some(now);
                Some(std::mem::take(&mut st.1))
            }
        }
    }
}

/// One [`LogLimit`] per kind of warning a remote peer can provoke.
#[derive(Debug)]
pub(crate) struct LogLimits {
    /// Connections refused over the pending-handshake bounds.
    pub refused: LogLimit,
    /// Inbound handshakes that failed (garbage, wrong cookie, timeout).
    pub inbound: LogLimit,
    /// Our dials whose handshake failed.
    pub outbound: LogLimit,
    /// `accept` errors (out of descriptors, ...).
    pub accept: LogLimit,
    /// Bad frames and rejected control frames from authenticated peers.
    pub frames: LogLimit,
}

impl LogLimits {
    fn new() -> Self {
        LogLimits { refused: LogLimit::new(), inbound: LogLimit::new(), outbound: LogLimit::new(), accept: LogLimit::new(), frames: LogLimit::new() }
    }
}

/// The driver's inputs. Each source has its own bound:
/// - `life`: connection lifecycle (link up/down, redial timers). Unbounded, but bounded in
///   practice by the connection tasks: each sends at most two, and there is one per link.
/// - `api`: requests from the application (join, leave, broadcast...): at most [`API_QUEUE`];
///   beyond, the call returns [`Overloaded`] at once.
/// - `peer`: control and broadcast frames read from peers: at most [`PEER_QUEUE`]; a reader
///   waits for room, which pushes back on the peer through TCP.
#[derive(Debug, Clone)]
pub(crate) struct Cmds {
    pub life: mpsc::UnboundedSender<Cmd>,
    pub api: mpsc::Sender<Cmd>,
    pub peer: mpsc::Sender<Cmd>,
}

pub(crate) const API_QUEUE: usize = 65_536;
pub(crate) const PEER_QUEUE: usize = 1024;

pub(crate) struct CmdReceivers {
    pub life: mpsc::UnboundedReceiver<Cmd>,
    pub api: mpsc::Receiver<Cmd>,
    pub peer: mpsc::Receiver<Cmd>,
}

impl Cmds {
    fn new() -> (Cmds, CmdReceivers) {
        let (life, life_rx) = mpsc::unbounded_channel();
        let (api, api_rx) = mpsc::channel(API_QUEUE);
        let (peer, peer_rx) = mpsc::channel(PEER_QUEUE);
        (Cmds { life, api, peer }, CmdReceivers { life: life_rx, api: api_rx, peer: peer_rx })
    }

    fn request(&self, cmd: Cmd) -> Result<(), Overloaded> {
        match self.api.try_send(cmd) {
            Ok(()) => Ok(()),
            // Closed: the node is stopping; nothing to tell the caller.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Overloaded),
        }
    }
}

impl Shared {
    /// Milliseconds since the node started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The cell holding when `node` was last heard from.
    pub(crate) fn heard(&self, node: &str) -> Arc<AtomicU64> {
        self.heard.lock_unpoisoned().entry(node.to_owned()).or_default().clone()
    }

    /// The TLS configurations for a new connection, `None` for plain TCP.
    pub(crate) fn tls(&self) -> Option<Arc<tls::TlsContext>> {
        self.tls.read_unpoisoned().clone()
    }

    pub(crate) fn is_blocked(&self, node: &str) -> bool {
        self.blocked.read_unpoisoned().contains(node)
    }

    /// Counts `n` messages lost or refused for the next report to the sink.
    pub(crate) fn report_drop(&self, reason: DropReason, node: Option<&str>, channel: Option<usize>, n: u64) {
        self.reports.add(Key::Dropped { reason, node: node.map(str::to_owned), channel }, n);
    }

    /// Counts a message refused with `queue_full` (the `dropped_queue_full` counter and the next
    /// report to the sink).
    pub(crate) fn count_queue_full(&self, node: &str, channel: Option<usize>) {
        self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        self.report_drop(DropReason::QueueFull, Some(node), channel, 1);
    }

    /// Counts a failed handshake for the next report to the sink.
    pub(crate) fn report_auth_failure(&self, direction: Direction, peer: String, reason: &'static str) {
        self.reports.add(Key::AuthFailed { direction, peer, reason }, 1);
    }

    /// Hands a received message to the sink; what cannot be delivered is counted and logged.
    pub(crate) fn deliver(&self, from: &str, dest: &Dest, payload: Bytes) {
        if let Err(e) = self.sink.deliver(from, dest, payload) {
            self.delivery_failed(from, dest, e);
        }
    }

    /// Counts and logs a received message that could not be delivered.
    pub(crate) fn delivery_failed(&self, from: &str, dest: &Dest, error: DeliverError) {
        match error {
            DeliverError::Undecodable => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                self.report_drop(DropReason::Undecodable, Some(from), None, 1);
                // An authenticated peer could send these at will: rate-limited.
                if let Some(suppressed) = self.log_limits.frames.allow(&self.stats) {
                    tracing::warn!(from, suppressed, "undecodable message dropped (counter undecodable)");
                }
            }
            DeliverError::NoProcess => {
                self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                self.report_drop(DropReason::Undeliverable, Some(from), None, 1);
                tracing::debug!(from, ?dest, "no such process; message dropped");
            }
            DeliverError::LateReply => {
                self.stats.late_replies.fetch_add(1, Ordering::Relaxed);
                self.report_drop(DropReason::LateReply, Some(from), None, 1);
                tracing::debug!(from, ?dest, "reply to a call that is no longer waiting dropped");
            }
        }
    }
}

pub(crate) enum Cmd {
    Join(NodeSpec),
    Leave(String),
    LinkUp { link: LinkId, tx: routes::LinkTx },
    LinkDown { link: LinkId, conn_id: u64 },
    /// A control, broadcast or relay frame from an authenticated peer.
    Frame { from: String, frame: frame::Frame },
    SetMembers(Vec<NodeSpec>),
    /// Cut (or restore) every link to a node, as a network partition would.
    Partition { node: String, blocked: bool },
    /// A message for a node that may not be a neighbour, relayed through the overlay.
    Transitive { target: String, dest: Dest, payload: Bytes },
    /// The same with `ack`; its budget is reserved ([`acks::Acks::reserve_relayed`]).
    AckedTransitive { target: String, dest: Dest, payload: Bytes },
    /// Plumtree inputs from the application.
    Originate { msg_id: Bytes, payload: Bytes },
    Merged { msg_id: Bytes, is_new: bool },
    Grafted { node: String, msg_id: Bytes, round: u32, payload: Option<Bytes> },
}

/// A running Partisan node. Dropping it (or [`Node::stop`]) closes every socket and thread.
pub struct Node {
    shared: Arc<Shared>,
    cmds: Cmds,
    runtime: Option<tokio::runtime::Runtime>,
    spec: NodeSpec,
}

impl Node {
    /// Checks the configuration, binds the listeners and starts the runtime threads. Once
    /// [`Config::validate`] accepts a configuration, only the operating system can refuse it
    /// (an address in use, no threads).
    pub fn start(cfg: Config, sink: Arc<dyn Sink>) -> Result<Node, StartError> {
        cfg.validate()?;
        let channels = ChannelTable::new(cfg.channels.clone()).map_err(|e| ConfigError::new("channels", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.io_threads)
            .thread_name("partisan-io")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let listeners = {
            let _guard = runtime.enter();
            cfg.listen_addrs.iter().map(|a| conn::bind(*a)).collect::<Result<Vec<_>, _>>()?
        };
        let bound = listeners.iter().map(|l| l.local_addr().expect("bound listener")).collect();
        let spec = NodeSpec { name: cfg.name.clone(), listen_addrs: bound, channels: channels.specs().to_vec() };
        let channel_names = channels.specs().iter().map(|s| s.name.clone()).collect();
        let reports = report::Reports::new(runtime.handle().clone(), sink.clone(), channel_names);
        let mut node_cfg = cfg.node;
        node_cfg.relay_ack.retransmit_interval = cfg.retransmit_interval.as_millis() as u64;
        let node = partisan_core::node::Node::from_config(spec.clone(), channels.clone(), &node_cfg, cfg.incarnation).map_err(ConfigError::from)?;
        let tls = cfg.tls.as_ref().map(|t| t.load()).transpose()?.map(Arc::new);
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            routes: Routes::new(&channels),
            channels,
            snapshot: RwLock::new(Snapshot { members: vec![cfg.name.clone()], ..Snapshot::default() }),
            blocked: RwLock::new(HashSet::new()),
            stats: Stats::default(),
            pending: conn::Pending::default(),
            log_limits: LogLimits::new(),
            stopping: AtomicBool::new(false),
            writers: AtomicU64::new(0),
            writer_done: tokio::sync::Notify::new(),
            reports,
            sink,
            acks: acks::Acks::new(
                partisan_core::ack::OutboxConfig {
                    retransmit_interval: cfg.retransmit_interval.as_millis() as u64,
                    max_bytes: cfg.max_unacked_bytes,
                },
                cfg.incarnation,
            ),
            heard: Default::default(),
            epoch: std::time::Instant::now(),
            cfg,
            tls: RwLock::new(tls),
            frame_pool: Default::default(),
        });
        let (cmds, rx) = Cmds::new();
        for listener in listeners {
            runtime.spawn(conn::accept_loop(listener, shared.clone(), cmds.clone()));
        }
        runtime.spawn(driver::run(shared.clone(), node, cmds.clone(), rx));
        runtime.spawn(retransmit_loop(shared.clone()));
        Ok(Node { shared, cmds, runtime: Some(runtime), spec })
    }

    /// Re-reads the TLS certificates and keys with `options` (they may name the same files,
    /// rewritten): connections made from now on use them; those up keep theirs until they
    /// reconnect. An error (a file missing or unreadable) leaves the current ones in place.
    /// Refused on a node started without TLS (a plain node cannot turn TLS on while running).
    pub fn reload_tls(&self, options: &tls::TlsOptions) -> Result<(), ConfigError> {
        let ctx = options.load()?;
        let mut current = self.shared.tls.write_unpoisoned();
        if current.is_none() {
            return Err(ConfigError::new("tls", "this node runs without TLS: set tls => true and restart partisan"));
        }
        *current = Some(Arc::new(ctx));
        Ok(())
    }

    /// This node's spec, with the addresses actually bound (port 0 resolved).
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    pub fn channels(&self) -> &ChannelTable {
        &self.shared.channels
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    pub fn join(&self, spec: NodeSpec) -> Result<(), Overloaded> {
        self.cmds.request(Cmd::Join(spec))
    }

    pub fn leave(&self, node: &str) -> Result<(), Overloaded> {
        self.cmds.request(Cmd::Leave(node.to_owned()))
    }

    /// Broadcasts a message with Plumtree (`partisan_plumtree_broadcast:broadcast/2`).
    pub fn broadcast(&self, msg_id: Bytes, payload: Bytes) -> Result<(), Overloaded> {
        self.cmds.request(Cmd::Originate { msg_id, payload })
    }

    /// The handler's `merge/2` answer for a delivered broadcast. Answers to the driver's own
    /// questions bypass the request bound (there is one per question it asked).
    pub fn broadcast_merged(&self, msg_id: Bytes, is_new: bool) {
        let _ = self.cmds.life.send(Cmd::Merged { msg_id, is_new });
    }

    /// The handler's `graft/1` answer: the payload, or `None` when it is stale or unknown.
    pub fn broadcast_grafted(&self, node: &str, msg_id: Bytes, round: u32, payload: Option<Bytes>) {
        let _ = self.cmds.life.send(Cmd::Grafted { node: node.to_owned(), msg_id, round, payload });
    }

    /// Replaces the member list when an external membership strategy decides it.
    pub fn set_members(&self, specs: Vec<NodeSpec>) -> Result<(), Overloaded> {
        self.cmds.request(Cmd::SetMembers(specs))
    }

    /// Sends a control frame (an external membership strategy's message) on `node`'s
    /// membership link.
    pub fn send_control(&self, node: &str, body: Bytes) -> Result<(), SendError> {
        let frame = Outgoing::Frame(frame::Frame::Control { body }.to_bytes());
        let membership = self.shared.channels.membership_index();
        self.shared.routes.with_queue(node, membership, 0, |q| q.push(frame, None)).unwrap_or(Err(SendError::NotConnected))
    }

    /// Live members, this node included, sorted.
    pub fn members(&self) -> Vec<String> {
        self.shared.snapshot.read_unpoisoned().members.clone()
    }

    /// Peers the overlay reports up (neighbours), sorted.
    pub fn connected(&self) -> Vec<String> {
        self.shared.snapshot.read_unpoisoned().neighbours.clone()
    }

    /// The overlay's named views (HyParView: active, passive, unreachable).
    pub fn views(&self) -> Vec<(String, Vec<String>)> {
        self.shared.snapshot.read_unpoisoned().views.clone()
    }

    /// The specs of the members the overlay knows, this node's included, sorted by name, as the
    /// driver published them at the last change of the member list. HyParView's specs carry
    /// no channels (its protocol does not send them).
    pub fn member_specs(&self) -> Vec<NodeSpec> {
        self.shared.snapshot.read_unpoisoned().member_specs.clone()
    }

    /// Plumtree's eager (tree) and lazy peers, each sorted, as the driver last published them;
    /// `None` when broadcast is off. One tree serves every origin, so the sets hold for any root.
    pub fn broadcast_peers(&self) -> Option<(Vec<String>, Vec<String>)> {
        self.shared.snapshot.read_unpoisoned().broadcast_peers.clone()
    }

    /// Cuts every link to `node` and refuses new ones (`blocked`), or lets them be made again.
    pub fn partition(&self, node: &str, blocked: bool) -> Result<(), Overloaded> {
        self.cmds.request(Cmd::Partition { node: node.to_owned(), blocked })
    }

    /// Nodes currently cut off by [`Node::partition`], sorted.
    pub fn partitions(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.shared.blocked.read_unpoisoned().iter().cloned().collect();
        nodes.sort();
        nodes
    }

    pub fn is_connected(&self, node: &str, channel: Option<usize>) -> bool {
        self.shared.routes.is_connected(node, channel)
    }

    pub fn is_fully_connected(&self, node: &str) -> bool {
        self.shared.routes.is_fully_connected(node)
    }

    /// Queues a message for `node` on connection `key`-affine of `channel`. Returns at once.
    pub fn send(&self, node: &str, channel: usize, key: u64, dest: Dest, payload: impl Into<Payload>) -> Result<(), SendError> {
        let payload = payload.into();
        let stats = &self.shared.stats;
        if channel >= self.shared.channels.specs().len() {
            return Err(SendError::UnknownChannel);
        }
        let spec = self.shared.channels.get(channel);
        // A reply answers one call: never superseded by a newer message.
        let monotonic = match &dest {
            _ if !spec.monotonic => None,
            Dest::Pid(b) => Some(b.to_vec()),
            Dest::Name(n) => Some(n.as_bytes().to_vec()),
            Dest::PidId { id, serial } => Some([id.to_be_bytes(), serial.to_be_bytes()].concat()),
            Dest::Reply { .. } => None,
        }
        .map(|dest| MonotonicKey { dest, affinity: key });
        let len = payload.len() as u64;
        let preferred = self.shared.channels.connection_for(channel, key);
        let item = Outgoing::Message { dest, payload };
        let result =
            self.shared.routes.with_queue(node, channel, preferred, |q| q.push(item, monotonic)).unwrap_or(Err(SendError::NotConnected));
        match result {
            Ok(()) => {
                stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            Err(SendError::QueueFull) => {
                self.shared.count_queue_full(node, Some(channel));
            }
            Err(SendError::MessageTooLarge { .. }) => {}
            Err(_) => {
                stats.dropped_not_connected.fetch_add(1, Ordering::Relaxed);
                self.shared.report_drop(DropReason::NotConnected, Some(node), Some(channel), 1);
            }
        }
        result
    }

    /// Refuses, as [`Node::send_acked`] would (and counted the same way), a message with `ack`
    /// for `dest` whose payload takes at least `payload_len` bytes when `node`'s budget has no
    /// room for it: the NIF asks before encoding a large message.
    pub fn check_acked_room(&self, node: &str, channel: usize, dest: &Dest, payload_len: usize) -> Result<(), SendError> {
        let budget = partisan_core::ack::budget(dest, payload_len);
        if self.shared.acks.has_room(&self.shared.routes, node, budget) {
            return Ok(());
        }
        self.shared.count_queue_full(node, Some(channel));
        Err(SendError::QueueFull)
    }

    /// Sends a message with `ack`: delivered exactly once while both nodes live, whatever happens
    /// to the connections (see `partisan_core::ack`). It waits for a link that is not up yet;
    /// `QueueFull` when `max_unacked_bytes` of the destination's messages are already held.
    pub fn send_acked(&self, node: &str, channel: usize, key: u64, dest: Dest, payload: impl Into<Payload>) -> Result<(), SendError> {
        let payload = payload.into();
        if channel >= self.shared.channels.specs().len() {
            return Err(SendError::UnknownChannel);
        }
        let size = frame::SEQUENCED_HEADER + frame::message_frame_len(&dest, payload.len());
        let max = self.shared.cfg.max_frame_size;
        if size > max {
            // Checked against this node's limit: the destination's may not be known yet
            // (configure the same max_frame_size cluster-wide).
            return Err(SendError::MessageTooLarge { size, max });
        }
        let conn = self.shared.channels.connection_for(channel, key) as u16;
        let len = payload.len() as u64;
        let stats = &self.shared.stats;
        match self.shared.acks.send(&self.shared.routes, node, channel, conn, dest, payload) {
            Ok(()) => {
                stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.shared.count_queue_full(node, Some(channel));
                Err(e)
            }
        }
    }

    /// Sends a message to `node` through the overlay when it is not a neighbour (transitive
    /// forwarding); straight to it when it is. The driver's node routes it; this call only
    /// refuses what cannot go anywhere: `NotConnected` when no neighbour could carry it now,
    /// `QueueFull` when the driver's input is full.
    pub fn send_transitive(&self, node: &str, dest: Dest, payload: Bytes) -> Result<(), SendError> {
        // A relayed frame carries the routing header on top of the message; every node on the
        // way must accept it, so this node's own limit is the one checked (configure the same
        // `max_frame_size` cluster-wide).
        let size = frame::relay_frame_len(&self.shared.name, node, &dest, payload.len());
        if size > self.shared.cfg.max_frame_size {
            return Err(SendError::MessageTooLarge { size, max: self.shared.cfg.max_frame_size });
        }
        let stats = &self.shared.stats;
        if node != self.shared.name && !self.shared.snapshot.read_unpoisoned().can_relay {
            stats.dropped_not_connected.fetch_add(1, Ordering::Relaxed);
            self.shared.report_drop(DropReason::NotConnected, Some(node), None, 1);
            return Err(SendError::NotConnected);
        }
        if let Err(Overloaded) = self.cmds.request(Cmd::Transitive { target: node.to_owned(), dest, payload }) {
            self.shared.count_queue_full(node, None);
            return Err(SendError::QueueFull);
        }
        stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a message to `node` through the overlay with `ack` (`partisan_core::relay_ack`):
    /// delivered once and in order, sent again until `node` acknowledges it, whether or not it
    /// is a neighbour now and even while this node has no neighbour. `QueueFull` when `node`'s
    /// unacknowledged messages fill `max_unacked_bytes` (or the driver's input is full);
    /// `MessageTooLarge` beyond `max_frame_size`. Given up, counted (`dropped_unacknowledged`)
    /// and logged only when `node` acknowledges nothing for a minute.
    pub fn send_acked_transitive(&self, node: &str, dest: Dest, payload: Bytes) -> Result<(), SendError> {
        let size = frame::relay_sequenced_frame_len(&self.shared.name, node, &dest, payload.len());
        if size > self.shared.cfg.max_frame_size {
            return Err(SendError::MessageTooLarge { size, max: self.shared.cfg.max_frame_size });
        }
        let stats = &self.shared.stats;
        let budget = partisan_core::relay_ack::budget(&dest, payload.len());
        let len = payload.len() as u64;
        let accepted = self.shared.acks.reserve_relayed(node, budget).and_then(|()| {
            self.cmds.request(Cmd::AckedTransitive { target: node.to_owned(), dest, payload }).map_err(|Overloaded| {
                self.shared.acks.release_relayed(node, budget);
                SendError::QueueFull
            })
        });
        if let Err(e) = accepted {
            self.shared.count_queue_full(node, None);
            return Err(e);
        }
        stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Counts and logs a received message that a [`Sink`] accepted and then could not deliver
    /// (a sink that delivers later, on other threads, reports its failures here).
    pub fn delivery_failed(&self, from: &str, dest: &Dest, error: DeliverError) {
        self.shared.delivery_failed(from, dest, error);
    }

    /// The counters, plus `handshakes_pending` (now), `handshakes_pending_peak` (the most at
    /// once since start) and `queued_messages` (now: messages accepted by a send on a
    /// connection that is up and not yet written to its socket, the ones that would count in
    /// `undelivered_on_close` if their connections died now).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut stats = self.shared.stats.snapshot();
        let (pending, peak) = self.shared.pending.counts();
        stats.push(("handshakes_pending", pending as u64));
        stats.push(("handshakes_pending_peak", peak as u64));
        let queued: usize = self.shared.routes.queues().iter().map(|q| q.unwritten()).sum();
        stats.push(("queued_messages", queued as u64));
        let (unacked, retransmitted) = self.shared.acks.counts();
        let relayed_unacked = self.shared.stats.acked_relays_unacked.load(Ordering::Relaxed);
        stats.push(("unacked_messages", unacked + relayed_unacked));
        stats.push(("retransmitted", retransmitted));
        stats
    }

    /// Stops the node: no new connection is accepted or dialed, every send queue is written
    /// out (for at most `stop_flush_timeout`), then every socket and thread is closed. Blocks
    /// the calling thread for up to the flush timeout plus two seconds.
    pub fn stop(mut self) -> StopReport {
        let report = self.flush();
        self.shutdown();
        report
    }

    /// Closes every queue (each writer writes what it holds, then closes its socket) and waits
    /// until the writers are done or the flush timeout runs out.
    fn flush(&self) -> StopReport {
        let Some(rt) = self.runtime.as_ref() else { return StopReport::default() };
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        let start = std::time::Instant::now();
        let deadline = start + shared.cfg.stop_flush_timeout;
        let queues = || shared.routes.queues();
        let flushed = rt.block_on(async {
            loop {
                // Again on every round: a link the driver registered meanwhile is closed too.
                for q in queues() {
                    q.close();
                }
                if shared.writers.load(Ordering::SeqCst) == 0 {
                    return true;
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return false;
                }
                let wait = (deadline - now).min(Duration::from_millis(20));
                let _ = tokio::time::timeout(wait, shared.writer_done.notified()).await;
            }
        });
        // The caller reports it (the NIF returns it; the manager logs it).
        let undelivered = if flushed { 0 } else { queues().iter().map(|q| q.unwritten()).sum::<usize>() as u64 };
        StopReport { undelivered, flushed, elapsed: start.elapsed() }
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Ticks every outbox for retransmissions, four times per `retransmit_interval` (at most every
/// 10 ms), so a stream that made no progress is resent within 1.25 intervals.
async fn retransmit_loop(shared: Arc<Shared>) {
    let period = (shared.cfg.retransmit_interval / 4).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.acks.tick();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}
