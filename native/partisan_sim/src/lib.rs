//! A deterministic simulator that drives many `partisan_core` overlays over a virtual network.
//!
//! Real clusters of 10,000 BEAM nodes do not fit on a laptop; the overlays are sans-IO state
//! machines, so the simulator can play the shell for all of them at once and measure what the
//! papers measure (broadcast reliability after mass crashes, healing time, view distributions,
//! message cost). The code under test is the code the live runtime runs.
//!
//! - [`net`]: the virtual network ([`net::Sim`]): a binary-heap event queue, per-message latency,
//!   loss, partitions, crashes; it executes the overlays' actions the way `partisan_net` does.
//! - [`graph`]: metrics over the overlay graph (flooding reliability, components, degrees).
//! - [`experiments`]: the HyParView, full-mesh and client-server experiments, as rows of numbers.
//! - [`broadcast`]: Plumtree over HyParView (reliability, RMR, LDH; steady state and crashes).
//! - [`report`]: markdown tables and gnuplot plots of those rows.
//!
//! Same seed, same numbers: every random choice (latency, loss, crash sets, the overlays' own
//! choices) comes from seeded RNGs, and nothing iterates a randomly ordered hash map.
//!
//! ```
//! use partisan_sim::experiments::{build_hyparview, HyParViewSetup};
//! use partisan_sim::graph::Graph;
//! let sim = build_hyparview(&HyParViewSetup { nodes: 50, stabilize_rounds: 2, ..HyParViewSetup::default() }).unwrap();
//! let graph = Graph::of(&sim);
//! assert_eq!(graph.components(), 1);
//! assert_eq!(graph.reliability(&[0]), 1.0);
//! ```

pub mod broadcast;
pub mod experiments;
pub mod graph;
pub mod net;
pub mod report;
