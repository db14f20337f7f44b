//! The interface every overlay (membership strategy) implements: bring your own overlay.
//!
//! An overlay decides who this node's neighbours are. It is a deterministic state machine driven
//! by a [`crate::node::Node`]: the node calls the input methods with the current time in
//! milliseconds, then drains [`Action`]s with [`Overlay::poll_action`]: keep or dial a link,
//! send a control frame, report a neighbour up or down. The node does the rest, the same way for
//! every overlay: it redials the links an overlay keeps, opens the other links of a neighbour,
//! reports channels up and down, and runs Plumtree and relaying over the neighbours. Control
//! frames are opaque bytes to the node; each overlay defines its own encoding and must reject
//! malformed input with an error, never a panic.
//!
//! The full mesh ([`crate::full_mesh::FullMesh`]) is the reference implementation; HyParView
//! ([`crate::hyparview::HyParView`]) keeps partial views.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::full_mesh::{FullMesh, LinkPolicy};
//! use partisan_core::overlay::{Action, NodeSpec, Overlay};
//!
//! let me = NodeSpec::new("a@h", vec![], vec![]);
//! let mut mesh = FullMesh::new(me, 1, ChannelTable::new(vec![]).unwrap(), LinkPolicy::AllMembers, 10_000);
//! mesh.join(0, NodeSpec::new("b@h", vec!["127.0.0.1:9001".parse().unwrap()], vec![]));
//! let keeps = std::iter::from_fn(|| mesh.poll_action()).filter(|a| matches!(a, Action::Keep { .. })).count();
//! assert_eq!(keeps, 2); // one link per channel (default and membership), kept up by the node
//! ```

use crate::channel::ChannelSpec;
use crate::wire::WireError;
use bytes::Bytes;
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

/// One connection this node dials: peer, channel index in the local
/// [`crate::channel::ChannelTable`], connection index within the channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    pub node: String,
    pub channel: usize,
    pub conn: u16,
}

/// What an overlay asks of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep this link up: the node dials it now and redials it whenever it drops (after
    /// `connection_interval` plus jitter, backing off while dials fail) until the overlay
    /// disconnects the node. Asking again for a kept link only updates its addresses.
    Keep { link: LinkId, addrs: Vec<SocketAddr> },
    /// Dial this link once, trying the addresses in order; a link that drops or cannot be opened
    /// is reported down and forgotten.
    Dial { link: LinkId, addrs: Vec<SocketAddr> },
    /// Close every link to the node, after flushing what is queued on them.
    Disconnect { node: String },
    /// Send a control frame on the node's membership link (dropped when it is not up).
    SendControl { to: String, body: Bytes },
    /// The node is a neighbour now (`partisan:nodes/0`); the node opens its links the overlay
    /// did not ask for, and keeps them up while it stays a neighbour.
    NodeUp { node: String },
    NodeDown { node: String },
    /// The members this node knows, itself included, sorted.
    MembersChanged { members: Vec<String> },
    /// Another node removed this one from the cluster; it is now a cluster of one.
    Removed { by: String },
    /// A control frame for a membership strategy outside the core (an Erlang module).
    Upcall { from: String, body: Bytes },
}

/// Why a control frame was rejected (counted and logged by the shell; never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("malformed control frame: {0}")]
    Malformed(#[from] WireError),
    #[error("unknown control message tag {0}")]
    UnknownTag(u8),
}

/// A membership strategy driven by events; see the module docs.
pub trait Overlay: Send {
    /// `partisan_peer_service:join/1`: contact the node `spec` describes.
    fn join(&mut self, now: u64, spec: NodeSpec);
    /// `leave/0,1`: remove `node` (this node itself when it is our name).
    fn leave(&mut self, now: u64, node: &str);
    /// A link this overlay asked for is up.
    fn link_up(&mut self, now: u64, link: &LinkId);
    /// A link this overlay asked for closed or could not be established.
    fn link_down(&mut self, now: u64, link: &LinkId);
    /// A control frame from an authenticated peer.
    fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError>;
    /// Time passed; run the timers that are due.
    fn tick(&mut self, now: u64);
    /// The next action for the node, if any.
    fn poll_action(&mut self) -> Option<Action>;
    /// The earliest time at which `tick` has work.
    fn poll_timeout(&self) -> Option<u64>;
    /// The members this node knows, itself included, sorted.
    fn members(&self) -> Vec<String>;
    /// Replaces the member list, for overlays whose membership is decided outside the core
    /// (an Erlang membership strategy). Others ignore it.
    fn set_members(&mut self, _now: u64, _specs: Vec<NodeSpec>) {}
    /// What the overlay reports beyond the member list (`partisan_peer_service:get_local_state/0`):
    /// named lists of node names.
    fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![("members", self.members())]
    }
    /// The specs of [`Overlay::members`] this overlay knows (Partisan's
    /// `members_for_orchestration/0`), this node's included, sorted by name. The default knows
    /// none.
    fn member_specs(&self) -> Vec<NodeSpec> {
        Vec::new()
    }
}

/// The live runtime picks its overlay from the configuration, so it runs a boxed one.
impl Overlay for Box<dyn Overlay> {
    fn join(&mut self, now: u64, spec: NodeSpec) {
        (**self).join(now, spec)
    }
    fn leave(&mut self, now: u64, node: &str) {
        (**self).leave(now, node)
    }
    fn link_up(&mut self, now: u64, link: &LinkId) {
        (**self).link_up(now, link)
    }
    fn link_down(&mut self, now: u64, link: &LinkId) {
        (**self).link_down(now, link)
    }
    fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError> {
        (**self).control(now, from, body)
    }
    fn tick(&mut self, now: u64) {
        (**self).tick(now)
    }
    fn poll_action(&mut self) -> Option<Action> {
        (**self).poll_action()
    }
    fn poll_timeout(&self) -> Option<u64> {
        (**self).poll_timeout()
    }
    fn members(&self) -> Vec<String> {
        (**self).members()
    }
    fn set_members(&mut self, now: u64, specs: Vec<NodeSpec>) {
        (**self).set_members(now, specs)
    }
    fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        (**self).views()
    }
    fn member_specs(&self) -> Vec<NodeSpec> {
        (**self).member_specs()
    }
}
