//! The sans-IO core of Partisan on a Rust data plane.
//!
//! Everything here is a pure state machine or codec: no sockets, no clock, no threads, no
//! randomness except a seeded RNG. The tokio shell (`partisan_net`) and the simulator
//! (`partisan_sim`) both drive [`node::Node`], so what the tests and the simulations prove about
//! the protocols, alone and together, holds for the live runtime.
//!
//! - [`node`]: one node: an overlay, Plumtree, relaying and the link policy composed — what the
//!   live runtime and the simulator both drive.
//! - [`overlay`]: the trait every overlay implements (bring your own), and what they share.
//! - [`full_mesh`]: the full-mesh overlay and its gossip (also client-server and static).
//! - [`hyparview`]: the HyParView partial-view overlay (active/passive views, shuffles, repair).
//! - [`plumtree`]: Plumtree epidemic broadcast trees over any overlay's neighbours.
//! - [`relay`]: transitive forwarding of messages through the overlay.
//! - [`relay_ack`]: `ack` across the overlay (end-to-end numbering, reordering, retransmission).
//! - [`frame`]: length-prefixed frames with a maximum size, and zero-copy message payloads.
//! - [`handshake`]: mutual challenge-response over the cluster cookie.
//! - [`channel`]: named channels, parallel connections, affinity, monotonic coalescing.
//! - [`ack`]: exactly-once delivery of messages sent with `ack` (numbering, dedup, retransmission).
//! - [`ping`]: `connection_ping`, noticing a peer that stopped answering.
//! - [`calls`]: callers waiting for a remote answer (one round trip per call, no late replies).
//! - [`etf_pids`]: pids of a VM that is not alive rewritten to remote references in encoded terms.

pub mod ack;
pub mod calls;
pub mod channel;
pub mod compress;
pub mod etf_pids;
pub mod frame;
pub mod handshake;
pub mod full_mesh;
pub mod hyparview;
pub mod node;
pub mod overlay;
pub mod ping;
pub mod plumtree;
pub mod relay;
pub mod relay_ack;
#[cfg(test)]
mod testnet;
pub mod wire;
