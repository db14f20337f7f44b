//! The experiments, as functions from a setup (and a seed) to rows of numbers.
//!
//! HyParView, after the paper's setup: nodes join one by one through a random earlier node, the
//! overlay runs `stabilize_rounds` shuffle periods, then a fraction of the nodes crash at once
//! and a broadcast is flooded over the active views of the survivors:
//! - with no healing at all (the graph as the crash left it),
//! - after [`REPAIR_WINDOW_MS`]: the links to crashed nodes have dropped and the immediate repair
//!   from the passive views has run, but no periodic round yet,
//! - after each of the following shuffle periods ("rounds"), until one component remains and the
//!   broadcast reaches every live node (the healing time).
//!
//! Full mesh against HyParView and client-server (10% servers): links per node and control
//! frames per membership change (one join, one leave) as N grows, with periodic traffic switched
//! off so only the change is counted.
//!
//! Plumtree over HyParView lives in [`crate::broadcast`]. Every node is the live runtime's
//! composition ([`partisan_core::node::Node`]): overlay, link policy (the data links of each
//! neighbour are dialed too) and, on the HyParView overlays, Plumtree.
//!
//! ```
//! use partisan_sim::experiments::*;
//! let base = build_hyparview(&HyParViewSetup { nodes: 100, stabilize_rounds: 3, ..Default::default() }).unwrap();
//! let row = crash_experiment(&base, 0.5, 3, 7);
//! assert_eq!(row.live, 50);
//! assert!(row.reliability_rounds[2] > 0.95);
//! ```

use crate::broadcast::BroadcastStore;
use crate::graph::{DegreeStats, Graph};
use crate::net::{App, NetConfig, NodeId, Sim};
use partisan_core::channel::ChannelTable;
use partisan_core::full_mesh::{FullMesh, LinkPolicy, Role};
use partisan_core::hyparview::{HyParView, HyParViewConfig};
use partisan_core::node::{self, LinkTiming, Node};
use partisan_core::plumtree::PlumtreeConfig;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Time after a crash in which failure detection and the immediate repair run, before the
/// first periodic round is counted.
pub const REPAIR_WINDOW_MS: u64 = 2_000;
/// Broadcast sources per reliability measurement (the result is their mean).
pub const SOURCES: usize = 20;

/// HyParView nodes with broadcast on, each with its broadcast handler.
pub type HyParViewSim = Sim<HyParView, BroadcastStore>;

/// How the HyParView overlay is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HyParViewSetup {
    pub nodes: usize,
    pub seed: u64,
    /// Shuffle periods after the last join, before measuring (the paper uses 50).
    pub stabilize_rounds: u32,
    pub join_spacing_ms: u64,
    pub net: NetConfig,
    pub config: HyParViewConfig,
    /// Plumtree on every node (the broadcast experiments use it; the others only see its
    /// exchange ticks).
    pub broadcast: PlumtreeConfig,
}

impl Default for HyParViewSetup {
    fn default() -> Self {
        HyParViewSetup {
            nodes: 1000,
            seed: 1,
            stabilize_rounds: 50,
            join_spacing_ms: 10,
            net: NetConfig::default(),
            config: HyParViewConfig::default(),
            broadcast: PlumtreeConfig::default(),
        }
    }
}

pub(crate) fn node_seed(seed: u64, id: NodeId) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(id)
}

/// Builds and stabilizes a HyParView overlay.
pub fn build_hyparview(setup: &HyParViewSetup) -> Result<HyParViewSim, node::ConfigError> {
    let channels = ChannelTable::new(vec![]).expect("the default channel table is valid");
    let mut sim = Sim::new(setup.net, setup.seed);
    for id in 0..setup.nodes as NodeId {
        let spec = HyParViewSim::spec_for(id);
        let seed = node_seed(setup.seed, id);
        let hv = HyParView::new(spec.clone(), &channels, setup.config, seed)?;
        let node = Node::new(&spec.name, channels.clone(), hv, LinkTiming::default(), Some(setup.broadcast), seed)?;
        sim.add_node(node, BroadcastStore::default());
    }
    let mut rng = SmallRng::seed_from_u64(setup.seed ^ 0x4a4f_494e);
    for id in 1..setup.nodes as NodeId {
        sim.join(id, rng.gen_range(0..id));
        sim.run_for(setup.join_spacing_ms);
    }
    sim.run_for(u64::from(setup.stabilize_rounds) * setup.config.shuffle_interval);
    Ok(sim)
}

fn reliability(graph: &Graph, rng: &mut SmallRng) -> f64 {
    let live: Vec<NodeId> = (0..graph.alive.len() as NodeId).filter(|u| graph.alive[*u as usize]).collect();
    let sources: Vec<NodeId> = live.choose_multiple(rng, SOURCES).copied().collect();
    graph.reliability(&sources)
}

/// One crash experiment: reliability and connectivity as the overlay heals.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashRow {
    pub fraction: f64,
    pub live: usize,
    /// Right after the crash, before any node noticed it.
    pub reliability_immediate: f64,
    pub components_immediate: usize,
    /// After [`REPAIR_WINDOW_MS`]: failure detection and immediate repair, no periodic round.
    pub reliability_repaired: f64,
    pub components_repaired: usize,
    /// After each shuffle period that followed.
    pub reliability_rounds: Vec<f64>,
    pub components_rounds: Vec<usize>,
    /// The first round (0 = the repair window) with one component reaching every live node.
    pub heal_rounds: Option<u32>,
    /// Active-view edges without their reverse after the last round.
    pub asymmetric_edges: usize,
}

/// Crashes `fraction` of the nodes of (a copy of) `base` at once and follows `rounds` shuffle
/// periods.
pub fn crash_experiment<A: App>(base: &Sim<HyParView, A>, fraction: f64, rounds: u32, seed: u64) -> CrashRow {
    let mut sim = base.clone();
    let mut rng = SmallRng::seed_from_u64(seed ^ fraction.to_bits());
    sim.crash_fraction(fraction, &mut rng);
    let graph = Graph::of(&sim);
    let reliability_immediate = reliability(&graph, &mut rng);
    let components_immediate = graph.components();
    sim.run_for(REPAIR_WINDOW_MS);
    let graph = Graph::of(&sim);
    let reliability_repaired = reliability(&graph, &mut rng);
    let components_repaired = graph.components();
    let healed = |r: f64, c: usize| c == 1 && r >= 1.0;
    let mut heal_rounds = healed(reliability_repaired, components_repaired).then_some(0);
    let interval = sim.node(sim.alive()[0]).map_or(10_000, |n| n.overlay().config().shuffle_interval);
    let (mut reliability_rounds, mut components_rounds) = (Vec::new(), Vec::new());
    let mut graph = graph;
    for round in 1..=rounds {
        sim.run_for(interval);
        graph = Graph::of(&sim);
        let r = reliability(&graph, &mut rng);
        let c = graph.components();
        if heal_rounds.is_none() && healed(r, c) {
            heal_rounds = Some(round);
        }
        reliability_rounds.push(r);
        components_rounds.push(c);
    }
    CrashRow {
        fraction,
        live: graph.live_count(),
        reliability_immediate,
        components_immediate,
        reliability_repaired,
        components_repaired,
        reliability_rounds,
        components_rounds,
        heal_rounds,
        asymmetric_edges: graph.asymmetric_edges(),
    }
}

/// [`crash_experiment`] for each fraction, on `threads` threads; rows in the order of
/// `fractions`, identical whatever the thread count.
pub fn crash_sweep<A: App + Sync>(base: &Sim<HyParView, A>, fractions: &[f64], rounds: u32, seed: u64, threads: usize) -> Vec<CrashRow> {
    par_map(fractions, threads, |&fraction| crash_experiment(base, fraction, rounds, seed))
}

/// `f` of each item on up to `threads` threads, results in the order of `items` (so the same
/// whatever the thread count, `f` being deterministic).
pub fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                let result = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner()).push((i, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Shape of a stable overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewStats {
    pub in_degree: DegreeStats,
    pub out_degree: DegreeStats,
    pub components: usize,
    pub asymmetric_edges: usize,
    pub reliability: f64,
}

pub fn view_stats<A: App>(sim: &Sim<HyParView, A>, seed: u64) -> ViewStats {
    let graph = Graph::of(sim);
    ViewStats {
        in_degree: graph.in_degrees(),
        out_degree: graph.out_degrees(),
        components: graph.components(),
        asymmetric_edges: graph.asymmetric_edges(),
        reliability: reliability(&graph, &mut SmallRng::seed_from_u64(seed)),
    }
}

/// A partition into two halves, held for a while, then healed.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionRow {
    pub nodes: usize,
    pub duration_ms: u64,
    pub components_during: usize,
    /// Shuffle periods after the heal until one component reaches every node.
    pub heal_rounds: Option<u32>,
    pub reliability_after: f64,
}

pub fn partition_experiment<A: App>(base: &Sim<HyParView, A>, duration_ms: u64, max_rounds: u32, seed: u64) -> PartitionRow {
    let mut sim = base.clone();
    let mut rng = SmallRng::seed_from_u64(seed ^ duration_ms);
    sim.partition(|id| id % 2);
    sim.run_for(duration_ms);
    let components_during = Graph::of(&sim).components();
    sim.partition(|_| 0);
    let interval = sim.node(0).map_or(10_000, |n| n.overlay().config().shuffle_interval);
    let mut heal_rounds = None;
    let mut reliability_after = 0.0;
    for round in 1..=max_rounds {
        sim.run_for(interval);
        let graph = Graph::of(&sim);
        reliability_after = reliability(&graph, &mut rng);
        if graph.components() == 1 && reliability_after >= 1.0 {
            heal_rounds = Some(round);
            break;
        }
    }
    PartitionRow { nodes: sim.len(), duration_ms, components_during, heal_rounds, reliability_after }
}

/// Cost of membership under each overlay at one cluster size.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRow {
    pub nodes: usize,
    pub mesh_links_per_node: f64,
    pub mesh_frames_per_join: u64,
    pub mesh_frames_per_leave: u64,
    pub hyparview_links_per_node: f64,
    pub hyparview_frames_per_join: u64,
    pub hyparview_frames_per_leave: u64,
    /// Client-server with [`SERVER_FRACTION`] of the nodes as servers (at least one).
    pub client_server: ClientServerCost,
}

/// Share of servers in the client-server runs.
pub const SERVER_FRACTION: f64 = 0.1;

/// Client-server membership cost: links dialed per node by role, and the frames of a client's
/// join and leave.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientServerCost {
    pub servers: usize,
    pub server_links_per_node: f64,
    pub client_links_per_node: f64,
    /// Distinct nodes each client has a link up to: (min, max) over the clients.
    pub client_peers: (usize, usize),
    /// Distinct nodes each server has a link up to: (min, max) over the servers.
    pub server_peers: (usize, usize),
    pub frames_per_join: u64,
    pub frames_per_leave: u64,
}

/// Time for a membership change to settle before its frames are counted.
const SETTLE_MS: u64 = 5_000;

/// What [`membership_cost`] measured: per node (index = id) the links it dialed and the distinct
/// peers they reach, with every node joined; then the frames of the last join and its leave.
struct Cost {
    links: Vec<usize>,
    peers: Vec<usize>,
    join: u64,
    leave: u64,
}

impl Cost {
    fn mean_links(&self, ids: std::ops::Range<usize>) -> f64 {
        let n = ids.len().max(1) as f64;
        self.links[ids].iter().sum::<usize>() as f64 / n
    }

    fn peer_range(&self, ids: std::ops::Range<usize>) -> (usize, usize) {
        let peers = &self.peers[ids];
        (peers.iter().copied().min().unwrap_or(0), peers.iter().copied().max().unwrap_or(0))
    }
}

/// Joins nodes 1..n−1 one by one, each through `contact(rng, id)`, then counts the frames of the
/// last join and of its leave.
fn membership_cost<O: partisan_core::overlay::Overlay>(
    mut sim: Sim<O>,
    seed: u64,
    contact: impl Fn(&mut SmallRng, NodeId) -> NodeId,
) -> Cost {
    let mut rng = SmallRng::seed_from_u64(seed);
    let last = sim.len() as NodeId - 1;
    for id in 1..last {
        let c = contact(&mut rng, id);
        sim.join(id, c);
        sim.run_for(SETTLE_MS);
    }
    let before = sim.stats().frames;
    let c = contact(&mut rng, last);
    sim.join(last, c);
    sim.run_for(SETTLE_MS);
    let joined = sim.stats().frames;
    let links = (0..sim.len() as NodeId).map(|id| sim.links_up_from(id)).collect();
    let peers = (0..sim.len() as NodeId).map(|id| sim.peers_up_from(id)).collect();
    sim.leave(last);
    sim.run_for(SETTLE_MS);
    Cost { links, peers, join: joined - before, leave: sim.stats().frames - joined }
}

/// Which overlay one [`scaling`] task measures.
#[derive(Debug, Clone, Copy)]
enum Kind {
    FullMesh,
    HyParView,
    ClientServer,
}

/// Links per node and frames per membership change, full mesh against HyParView and
/// client-server, for each N (the runs spread over `threads` threads). Periodic gossip and
/// shuffles are off so only the change itself is counted. In the client-server runs nodes
/// `0..servers` are the servers, every node joins through a random earlier server, and the
/// change measured is the join and leave of the last node, a client.
pub fn scaling(sizes: &[usize], net: NetConfig, seed: u64, threads: usize) -> Vec<ScalingRow> {
    let channels = ChannelTable::new(vec![]).expect("the default channel table is valid");
    let quiet_hv = HyParViewConfig { shuffle_interval: 1 << 40, random_promotion_interval: 1 << 40, ..Default::default() };
    let tasks: Vec<(usize, Kind)> =
        sizes.iter().flat_map(|&n| [(n, Kind::FullMesh), (n, Kind::HyParView), (n, Kind::ClientServer)]).collect();
    let any_earlier = |rng: &mut SmallRng, id: NodeId| rng.gen_range(0..id);
    let costs = par_map(&tasks, threads, |&(nodes, kind)| {
        let servers = servers_of(nodes) as NodeId;
        let timing = LinkTiming::default();
        if let Kind::HyParView = kind {
            let mut hv = Sim::new(net, seed);
            for id in 0..nodes as NodeId {
                let spec = Sim::<HyParView>::spec_for(id);
                let overlay = HyParView::new(spec.clone(), &channels, quiet_hv, node_seed(seed, id)).expect("valid config");
                hv.add_node(Node::new(&spec.name, channels.clone(), overlay, timing, None, node_seed(seed, id)).expect("no broadcast"), ());
            }
            return membership_cost(hv, seed, any_earlier);
        }
        let mut sim = Sim::new(net, seed);
        for id in 0..nodes as NodeId {
            let spec = Sim::<FullMesh>::spec_for(id);
            let policy = match kind {
                Kind::ClientServer => LinkPolicy::ClientServer(if id < servers { Role::Server } else { Role::Client }),
                _ => LinkPolicy::AllMembers,
            };
            let mesh = FullMesh::new(spec.clone(), u64::from(id) + 1, channels.clone(), policy, 0);
            sim.add_node(Node::new(&spec.name, channels.clone(), mesh, timing, None, node_seed(seed, id)).expect("no broadcast"), ());
        }
        match kind {
            Kind::ClientServer => membership_cost(sim, seed, |rng, id| rng.gen_range(0..id.min(servers))),
            _ => membership_cost(sim, seed, any_earlier),
        }
    });
    sizes
        .iter()
        .zip(costs.chunks(3))
        .map(|(&nodes, c)| {
            let (mesh, hv, cs) = (&c[0], &c[1], &c[2]);
            let servers = servers_of(nodes);
            ScalingRow {
                nodes,
                mesh_links_per_node: mesh.mean_links(0..nodes),
                mesh_frames_per_join: mesh.join,
                mesh_frames_per_leave: mesh.leave,
                hyparview_links_per_node: hv.mean_links(0..nodes),
                hyparview_frames_per_join: hv.join,
                hyparview_frames_per_leave: hv.leave,
                client_server: ClientServerCost {
                    servers,
                    server_links_per_node: cs.mean_links(0..servers),
                    client_links_per_node: cs.mean_links(servers..nodes),
                    client_peers: cs.peer_range(servers..nodes),
                    server_peers: cs.peer_range(0..servers),
                    frames_per_join: cs.join,
                    frames_per_leave: cs.leave,
                },
            }
        })
        .collect()
}

/// Servers among `nodes` in the client-server runs: [`SERVER_FRACTION`], at least one.
pub fn servers_of(nodes: usize) -> usize {
    ((nodes as f64 * SERVER_FRACTION).round() as usize).clamp(1, nodes.max(1))
}
