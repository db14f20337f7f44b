//! The interface every overlay (membership strategy) implements: bring your own overlay.
//!
//! An overlay is a deterministic state machine. The shell (live runtime or simulator) calls the
//! input methods with the current time in milliseconds, then drains [`Action`]s with
//! [`Overlay::poll_action`] and executes them: dial a link, send a control frame, report a node
//! up or down. Control frames are opaque bytes to the shell; each overlay defines its own
//! encoding and must reject malformed input with an error, never a panic.
//!
//! The full mesh ([`crate::membership::FullMesh`]) is the reference implementation.
//!
//! ```
//! use partisan_core::channel::ChannelTable;
//! use partisan_core::membership::{FullMesh, MeshConfig, NodeSpec};
//! use partisan_core::overlay::Overlay;
//!
//! fn drive(overlay: &mut dyn Overlay, now: u64) -> usize {
//!     overlay.tick(now);
//!     std::iter::from_fn(|| overlay.poll_action()).count()
//! }
//! let me = NodeSpec::new("a@h", vec![], vec![]);
//! let mut mesh = FullMesh::new(me, 1, ChannelTable::new(vec![]).unwrap(), MeshConfig::default(), 1);
//! assert_eq!(drive(&mut mesh, 0), 0);
//! ```

use crate::membership::{Action, ControlError, FullMesh, LinkId, NodeSpec};

/// A membership strategy driven by events; see the module docs.
pub trait Overlay: Send {
    /// `partisan_peer_service:join/1`: contact the node `spec` describes.
    fn join(&mut self, now: u64, spec: NodeSpec);
    /// `leave/0,1`: remove `node` (this node itself when it is our name).
    fn leave(&mut self, now: u64, node: &str);
    /// A link this overlay asked for with [`Action::Connect`] is up.
    fn link_up(&mut self, now: u64, link: &LinkId);
    /// A link closed or could not be established.
    fn link_down(&mut self, now: u64, link: &LinkId);
    /// A control frame from an authenticated peer.
    fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError>;
    /// Time passed; run the timers that are due.
    fn tick(&mut self, now: u64);
    /// The next action for the shell, if any.
    fn poll_action(&mut self) -> Option<Action>;
    /// The earliest time at which `tick` has work.
    fn poll_timeout(&self) -> Option<u64>;
    /// The members this node knows, itself included, sorted.
    fn members(&self) -> Vec<String>;
    /// Replaces the member list, for overlays whose membership is decided outside the core
    /// (an Erlang membership strategy). Others ignore it.
    fn set_members(&mut self, _now: u64, _specs: Vec<NodeSpec>) {}
}

impl Overlay for FullMesh {
    fn join(&mut self, now: u64, spec: NodeSpec) {
        FullMesh::join(self, now, spec)
    }
    fn leave(&mut self, now: u64, node: &str) {
        FullMesh::leave(self, now, node)
    }
    fn link_up(&mut self, now: u64, link: &LinkId) {
        FullMesh::link_up(self, now, link)
    }
    fn link_down(&mut self, now: u64, link: &LinkId) {
        FullMesh::link_down(self, now, link)
    }
    fn control(&mut self, now: u64, from: &str, body: &[u8]) -> Result<(), ControlError> {
        FullMesh::control(self, now, from, body)
    }
    fn tick(&mut self, now: u64) {
        FullMesh::tick(self, now)
    }
    fn poll_action(&mut self) -> Option<Action> {
        FullMesh::poll_action(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        FullMesh::poll_timeout(self)
    }
    fn members(&self) -> Vec<String> {
        FullMesh::members(self)
    }
    fn set_members(&mut self, now: u64, specs: Vec<NodeSpec>) {
        FullMesh::set_members(self, now, specs)
    }
}

/// What a node reports about its overlay beyond the member list
/// (`partisan_peer_service:get_local_state/0`): named lists of node names.
pub trait Views {
    fn views(&self) -> Vec<(&'static str, Vec<String>)>;
}

impl Views for FullMesh {
    fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![("members", FullMesh::members(self)), ("connected", self.connected())]
    }
}

impl Views for crate::hyparview::HyParView {
    fn views(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![("active", self.active_view()), ("passive", self.passive_view()), ("unreachable", self.unreachable_peers())]
    }
}
