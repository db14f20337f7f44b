//! Plumtree over HyParView: reliability, RMR and LDH of broadcasts in steady state and across a
//! mass crash (the measurements of Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees",
//! SRDS 2007).
//!
//! The nodes are the live runtime's composition ([`partisan_core::node::Node`] with HyParView
//! and broadcast on): the overlay's neighbours are Plumtree's, Plumtree frames travel as
//! broadcast frames on the membership links. On each node runs a [`BroadcastStore`], the
//! application's handler: it answers `merge/2` at once ("new" for an id it has not stored) and
//! `graft/1` from what it stored.
//!
//! The experiment takes a stabilized overlay (the same one, same seed, as the HyParView
//! experiments) and broadcasts, one message every `spacing_ms` from a random live node:
//! - [`Phase::Steady`]: no failures. The first broadcast floods every active-view link, the
//!   duplicates prune links to lazy, and once the eager links form a spanning tree every node
//!   gets each payload exactly once (RMR 0).
//! - [`Phase::Undetected`]: a fraction of the nodes crash at once, silently: the survivors'
//!   links to them look up for `undetected_broadcasts × spacing_ms` (a host that vanished
//!   without a TCP reset, found out by a timeout). Payloads pushed to the dead are lost; the
//!   tree repairs itself through the lazy links (IHAVE, then GRAFT after `graft_timeout`).
//! - [`Phase::Repaired`]: the links to the crashed nodes drop, HyParView refills the active
//!   views from the passive views ([`REPAIR_WINDOW_MS`] before the next broadcast), the new
//!   neighbours start eager (a burst of redundancy) and the tree settles again.
//!
//! Each broadcast is measured when the next one starts (`spacing_ms` later): reliability = share
//! of the live nodes that delivered it, RMR = payload frames received / (nodes reached − 1) − 1,
//! LDH = the largest hop count of a delivery. The deliveries are counted again at the end of the
//! run ([`BroadcastRow::reached_by_end`]): a message late rather than lost shows there.
//!
//! ```
//! use partisan_sim::broadcast::*;
//! use partisan_sim::experiments::{build_hyparview, HyParViewSetup};
//! let base = build_hyparview(&HyParViewSetup { nodes: 60, stabilize_rounds: 2, ..Default::default() }).unwrap();
//! let setup = PlumtreeSetup { steady_broadcasts: 4, undetected_broadcasts: 1, repaired_broadcasts: 2, fractions: vec![0.3], ..Default::default() };
//! let result = plumtree_experiment(&base, &setup, 1);
//! assert!(result.steady.iter().all(|r| r.reliability() == 1.0));
//! assert_eq!(result.crashes[0].rows.len(), 3);
//! ```

use crate::experiments::{par_map, HyParViewSim, REPAIR_WINDOW_MS};
use crate::net::App;
use bytes::Bytes;
use partisan_core::frame::Frame;
use partisan_core::node::{Event, Node};
use partisan_core::overlay::Overlay;
use partisan_core::plumtree::{BroadcastMetrics, Message};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// What a node saw of one message.
#[derive(Debug, Clone, Default)]
struct Receipt {
    /// GOSSIP frames (payload messages) received for it, duplicates included.
    payloads: u64,
    /// Hop count of the delivery (0 at the origin), if delivered.
    hop: Option<u32>,
    /// The handler's stored payload (answers `graft/1`).
    payload: Option<Bytes>,
}

/// Partisan's broadcast handler on a simulated node: stores what it merges, answers grafts from
/// the store, and (as a probe) counts the payload frames each message arrived in.
#[derive(Debug, Clone, Default)]
pub struct BroadcastStore {
    log: BTreeMap<Bytes, Receipt>,
}

impl BroadcastStore {
    /// A local broadcast (`partisan_plumtree_broadcast:broadcast/2`): the origin has delivered
    /// it.
    pub fn broadcast<O: Overlay>(&mut self, node: &mut Node<O>, now: u64, msg_id: Bytes, payload: Bytes) {
        node.broadcast(now, msg_id.clone(), payload.clone()).expect("broadcast is on and the message id fresh and valid");
        self.log.insert(msg_id, Receipt { payloads: 0, hop: Some(0), payload: Some(payload) });
    }

    /// Payload frames received for `msg_id` and the hop count of its delivery, if any.
    pub fn receipt(&self, msg_id: &[u8]) -> (u64, Option<u32>) {
        self.log.get(msg_id).map_or((0, None), |r| (r.payloads, r.hop))
    }
}

impl App for BroadcastStore {
    fn event<O: Overlay>(&mut self, node: &mut Node<O>, now: u64, event: Event) {
        match event {
            Event::BroadcastDeliver { msg_id, payload, hops, .. } => {
                // merge/2: new unless already stored
                let receipt = self.log.entry(msg_id.clone()).or_default();
                let is_new = receipt.hop.is_none();
                if is_new {
                    receipt.hop = Some(hops);
                    receipt.payload = Some(payload);
                }
                node.broadcast_merged(now, &msg_id, is_new);
            }
            Event::BroadcastGraft { node: peer, msg_id, round } => {
                let payload = self.log.get(&msg_id).and_then(|r| r.payload.clone());
                node.broadcast_grafted(now, &peer, &msg_id, round, payload);
            }
            _ => {}
        }
    }

    fn frame(&mut self, _from: &str, frame: &Frame) {
        if let Frame::Broadcast { body } = frame {
            if let Ok(Message::Gossip { msg_id, .. }) = Message::decode(body) {
                self.log.entry(msg_id).or_default().payloads += 1;
            }
        }
    }
}

/// When a broadcast was sent, relative to the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Steady,
    /// After the crash, before the survivors notice it.
    Undetected,
    /// After the links to the crashed nodes dropped and HyParView repaired its views.
    Repaired,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Undetected => "crash not yet detected",
            Phase::Repaired => "after repair",
        }
    }
}

/// One broadcast, measured `spacing_ms` after it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastRow {
    /// 1-based, counting from the first steady broadcast.
    pub index: u32,
    pub phase: Phase,
    pub live: usize,
    pub metrics: BroadcastMetrics,
    /// GRAFTs for a missing message the live nodes sent while the broadcast was measured
    /// (tree repairs).
    pub grafts: u64,
    /// Tree optimisations (a lazy link grafted, an eager one pruned) in the same window.
    pub swaps: u64,
    /// Eager (tree) links between live nodes when measured (directed links / 2).
    pub tree_links: usize,
    /// Live nodes that had delivered it by the end of the phase (steady) or of the crash run:
    /// what GRAFT repairs and anti-entropy delivered late.
    pub reached_by_end: u64,
}

impl BroadcastRow {
    pub fn reliability(&self) -> f64 {
        self.metrics.reliability(self.live as u64)
    }

    pub fn rmr(&self) -> Option<f64> {
        self.metrics.rmr()
    }

    pub fn ldh(&self) -> u32 {
        self.metrics.last_delivery_hop
    }

    /// Share of the live nodes that had delivered it by the end of the run.
    pub fn reliability_by_end(&self) -> f64 {
        if self.live == 0 {
            return 1.0;
        }
        self.reached_by_end as f64 / self.live as f64
    }
}

/// How the Plumtree experiment runs (Plumtree's own settings are the overlay's:
/// [`crate::experiments::HyParViewSetup::broadcast`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlumtreeSetup {
    pub seed: u64,
    pub steady_broadcasts: u32,
    /// Broadcasts between the crash and its detection (which comes right after the last one).
    pub undetected_broadcasts: u32,
    pub repaired_broadcasts: u32,
    /// Time from one broadcast to the next (and to its measurement).
    pub spacing_ms: u64,
    /// Fractions of the live nodes crashed at once, one run each from the same steady state.
    pub fractions: Vec<f64>,
}

impl Default for PlumtreeSetup {
    fn default() -> Self {
        PlumtreeSetup {
            seed: 1,
            steady_broadcasts: 20,
            undetected_broadcasts: 4,
            repaired_broadcasts: 10,
            spacing_ms: 5_000,
            fractions: vec![0.2, 0.5],
        }
    }
}

impl PlumtreeSetup {
    /// Time between the crash and the moment the survivors start noticing it.
    pub fn detection_ms(&self) -> u64 {
        u64::from(self.undetected_broadcasts) * self.spacing_ms
    }
}

/// The broadcasts after one crash.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashRun {
    pub fraction: f64,
    pub crashed: usize,
    pub rows: Vec<BroadcastRow>,
}

/// Everything measured on one overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct PlumtreeResult {
    pub nodes: usize,
    pub steady: Vec<BroadcastRow>,
    /// One per [`PlumtreeSetup::fractions`], each continuing from the steady state.
    pub crashes: Vec<CrashRun>,
}

const PAYLOAD: &[u8] = b"plumtree simulator payload";

fn msg_id(index: u32) -> Bytes {
    Bytes::from(format!("b{index:05}"))
}

/// Sets [`BroadcastRow::reached_by_end`] of `rows` from the live nodes of `sim` now.
fn count_by_end(sim: &HyParViewSim, rows: &mut [BroadcastRow]) {
    let alive = sim.alive();
    for row in rows {
        let id = msg_id(row.index);
        row.reached_by_end = alive.iter().filter_map(|n| sim.app(*n)).filter(|s| s.receipt(&id).1.is_some()).count() as u64;
    }
}

/// (repair GRAFTs, swaps) sent so far by the live nodes.
fn graft_totals(sim: &HyParViewSim) -> (u64, u64) {
    let stats = sim.alive().into_iter().filter_map(|id| sim.node(id)?.plumtree().map(|pt| pt.stats()));
    stats.fold((0, 0), |(g, w), s| {
        (g + s.graft_sent - s.swaps, w + s.swaps)
    })
}

fn tree_links(sim: &HyParViewSim) -> usize {
    let directed: usize = sim
        .alive()
        .iter()
        .filter_map(|id| sim.node(*id)?.plumtree())
        .map(|pt| pt.eager_peers().iter().filter(|p| sim.id_of(p).is_some_and(|q| sim.is_alive(q))).count())
        .sum();
    directed / 2
}

/// Sends broadcast `index` from a random live node, runs `spacing_ms`, measures it.
pub fn broadcast_once(sim: &mut HyParViewSim, index: u32, phase: Phase, spacing_ms: u64, rng: &mut SmallRng) -> BroadcastRow {
    let alive = sim.alive();
    let origin = *alive.choose(rng).expect("a live node to broadcast from");
    let msg_id = msg_id(index);
    let (grafts_before, swaps_before) = graft_totals(sim);
    sim.input(origin, |node, store, now| store.broadcast(node, now, msg_id.clone(), Bytes::from_static(PAYLOAD)));
    sim.run_for(spacing_ms);
    let mut metrics = BroadcastMetrics::default();
    for id in &alive {
        let Some(store) = sim.app(*id) else { continue };
        let (payloads, hop) = store.receipt(&msg_id);
        metrics.payload_messages += payloads;
        if let Some(hop) = hop {
            metrics.reached += 1;
            metrics.last_delivery_hop = metrics.last_delivery_hop.max(hop);
        }
    }
    BroadcastRow {
        index,
        phase,
        live: alive.len(),
        metrics,
        grafts: graft_totals(sim).0 - grafts_before,
        swaps: graft_totals(sim).1 - swaps_before,
        tree_links: tree_links(sim),
        reached_by_end: metrics.reached,
    }
}

/// Crashes `fraction` of the nodes of (a copy of) the steady-state `sim` silently and follows
/// the broadcasts until after the repair.
pub fn crash_run(steady: &HyParViewSim, next_index: u32, fraction: f64, setup: &PlumtreeSetup) -> CrashRun {
    let mut sim = steady.clone();
    let mut rng = SmallRng::seed_from_u64(setup.seed ^ fraction.to_bits() ^ 0x4352_4153);
    let crashed = sim.pick_fraction(fraction, &mut rng);
    sim.crash_detected_after(&crashed, setup.detection_ms());
    let mut rows = Vec::new();
    let mut index = next_index;
    for _ in 0..setup.undetected_broadcasts {
        rows.push(broadcast_once(&mut sim, index, Phase::Undetected, setup.spacing_ms, &mut rng));
        index += 1;
    }
    sim.run_for(REPAIR_WINDOW_MS);
    for _ in 0..setup.repaired_broadcasts {
        rows.push(broadcast_once(&mut sim, index, Phase::Repaired, setup.spacing_ms, &mut rng));
        index += 1;
    }
    count_by_end(&sim, &mut rows);
    CrashRun { fraction, crashed: crashed.len(), rows }
}

/// Broadcasts on (a copy of) `base`, which runs with broadcast on: the steady-state broadcasts,
/// then one crash run per fraction (on up to `threads` threads; the numbers do not depend on it).
pub fn plumtree_experiment(base: &HyParViewSim, setup: &PlumtreeSetup, threads: usize) -> PlumtreeResult {
    let mut sim = base.clone();
    let mut rng = SmallRng::seed_from_u64(setup.seed ^ 0x5354_4541);
    let mut steady: Vec<BroadcastRow> = (1..=setup.steady_broadcasts)
        .map(|index| broadcast_once(&mut sim, index, Phase::Steady, setup.spacing_ms, &mut rng))
        .collect();
    count_by_end(&sim, &mut steady);
    let next = setup.steady_broadcasts + 1;
    let crashes = par_map(&setup.fractions, threads, |&fraction| crash_run(&sim, next, fraction, setup));
    PlumtreeResult { nodes: base.len(), steady, crashes }
}

/// Aggregates of the broadcasts of one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSummary {
    pub phase: Phase,
    pub broadcasts: usize,
    pub min_reliability: f64,
    pub mean_reliability: f64,
    pub first_rmr: Option<f64>,
    /// Mean RMR of the phase's broadcasts after its first.
    pub rest_rmr: Option<f64>,
    pub max_ldh: u32,
    pub mean_ldh: f64,
    pub grafts: u64,
    pub swaps: u64,
    pub min_reliability_by_end: f64,
}

/// One summary per phase present in `rows`, in order.
pub fn summarize(rows: &[BroadcastRow]) -> Vec<PhaseSummary> {
    let mut phases: Vec<Phase> = Vec::new();
    for r in rows {
        if !phases.contains(&r.phase) {
            phases.push(r.phase);
        }
    }
    phases
        .into_iter()
        .map(|phase| {
            let of: Vec<&BroadcastRow> = rows.iter().filter(|r| r.phase == phase).collect();
            let n = of.len() as f64;
            let rest: Vec<f64> = of.iter().skip(1).filter_map(|r| r.rmr()).collect();
            PhaseSummary {
                phase,
                broadcasts: of.len(),
                min_reliability: of.iter().map(|r| r.reliability()).fold(f64::INFINITY, f64::min),
                mean_reliability: of.iter().map(|r| r.reliability()).sum::<f64>() / n,
                first_rmr: of.first().and_then(|r| r.rmr()),
                rest_rmr: (!rest.is_empty()).then(|| rest.iter().sum::<f64>() / rest.len() as f64),
                max_ldh: of.iter().map(|r| r.ldh()).max().unwrap_or(0),
                mean_ldh: of.iter().map(|r| f64::from(r.ldh())).sum::<f64>() / n,
                grafts: of.iter().map(|r| r.grafts).sum(),
                swaps: of.iter().map(|r| r.swaps).sum(),
                min_reliability_by_end: of.iter().map(|r| r.reliability_by_end()).fold(f64::INFINITY, f64::min),
            }
        })
        .collect()
}

