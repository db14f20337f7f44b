//! The sans-IO core of Partisan on a Rust data plane.
//!
//! Everything here is a pure state machine or codec: no sockets, no clock, no threads, no
//! randomness except a seeded RNG. The tokio shell (`partisan_net`) and the simulator drive the
//! same code, so what the tests prove about the protocol holds for the live runtime.
//!
//! - [`calls`]: callers waiting for a remote answer (one round trip per call, no late replies).
//! - [`etf_pids`]: pids of a VM that is not alive rewritten to remote references in encoded terms.
//! - [`frame`]: length-prefixed frames with a maximum size, and zero-copy message payloads.
//! - [`handshake`]: mutual challenge-response over the cluster cookie.
//! - [`channel`]: named channels, parallel connections, affinity, monotonic coalescing.
//! - [`membership`]: the full-mesh overlay and its gossip.
//! - [`overlay`]: the trait every overlay implements (bring your own).
//! - [`relay`]: transitive forwarding of messages through the overlay.
//! - [`hyparview`]: the HyParView partial-view overlay (active/passive views, shuffles, repair).
//! - [`plumtree`]: Plumtree epidemic broadcast trees over any overlay's neighbours.

pub mod calls;
pub mod channel;
pub mod etf_pids;
pub mod frame;
pub mod handshake;
pub mod hyparview;
pub mod membership;
pub mod overlay;
pub mod plumtree;
pub mod relay;
pub mod wire;
