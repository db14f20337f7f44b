//! The properties the HyParView paper states, checked on small simulated clusters with fixed
//! seeds, plus the full mesh's costs and the simulator's determinism.

use partisan_sim::experiments::*;
use partisan_sim::graph::Graph;
use partisan_sim::net::{Latency, NetConfig};

fn setup(nodes: usize, seed: u64) -> HyParViewSetup {
    HyParViewSetup { nodes, seed, stabilize_rounds: 5, ..Default::default() }
}

#[test]
fn a_200_node_overlay_is_connected_symmetric_and_bounded() {
    let sim = build_hyparview(&setup(200, 11)).unwrap();
    let graph = Graph::of(&sim);
    assert_eq!(graph.components(), 1);
    assert_eq!(graph.asymmetric_edges(), 0);
    assert_eq!(graph.reliability(&[0, 57, 199]), 1.0);
    let out = graph.out_degrees();
    assert!(out.max <= 6 && out.min >= 1, "active view sizes {out:?}");
    assert!(out.mean > 4.0, "active views mostly full: mean {}", out.mean);
}

#[test]
fn half_of_200_nodes_crashed_still_reaches_99_percent_after_healing() {
    let base = build_hyparview(&setup(200, 12)).unwrap();
    let row = crash_experiment(&base, 0.5, 3, 12);
    assert_eq!(row.live, 100);
    assert!(row.reliability_repaired >= 0.99, "after the immediate repair: {row:?}");
    assert!(row.reliability_rounds.iter().all(|r| *r >= 0.99), "{row:?}");
    assert_eq!(row.components_rounds.last(), Some(&1));
    assert_eq!(row.asymmetric_edges, 0);
}

#[test]
fn same_seed_same_numbers_whatever_the_thread_count() {
    let a = build_hyparview(&setup(120, 13)).unwrap();
    let b = build_hyparview(&setup(120, 13)).unwrap();
    assert_eq!(Graph::of(&a), Graph::of(&b));
    assert_eq!(a.stats(), b.stats());
    let fractions = [0.3, 0.8];
    assert_eq!(crash_sweep(&a, &fractions, 2, 5, 1), crash_sweep(&b, &fractions, 2, 5, 2));
    let c = build_hyparview(&setup(120, 14)).unwrap();
    assert_ne!(a.stats(), c.stats(), "another seed gives another run");
}

#[test]
fn the_overlay_heals_after_a_partition() {
    let base = build_hyparview(&setup(200, 15)).unwrap();
    let row = partition_experiment(&base, 60_000, 20, 15);
    assert!(row.components_during >= 2, "{row:?}");
    assert!(row.heal_rounds.is_some(), "{row:?}");
    assert_eq!(row.reliability_after, 1.0);
}

#[test]
fn lossy_long_tailed_network_still_forms_one_component() {
    let net = NetConfig { latency: Latency::Exponential { min_ms: 2, mean_extra_ms: 40.0 }, loss: 0.01 };
    let sim = build_hyparview(&HyParViewSetup { net, ..setup(100, 16) }).unwrap();
    let graph = Graph::of(&sim);
    assert_eq!(graph.components(), 1);
    assert!(sim.stats().lost > 0);
    assert!(graph.out_degrees().mean > 3.0);
}

#[test]
fn full_mesh_cost_grows_with_n_and_hyparview_stays_flat() {
    let rows = scaling(&[5, 10, 20], NetConfig::default(), 17, 2);
    for r in &rows {
        // default + membership channel to each other member
        assert_eq!(r.mesh_links_per_node, 2.0 * (r.nodes as f64 - 1.0), "{r:?}");
        // a membership and a default-channel link per neighbour, at most active_max_size of them
        assert!(r.hyparview_links_per_node <= 2.0 * 6.0, "{r:?}");
        assert!(r.hyparview_frames_per_leave <= 6);
    }
    assert!(rows[2].mesh_frames_per_join > 3 * rows[1].mesh_frames_per_join, "{rows:?}");
    assert!(rows[2].mesh_frames_per_leave > rows[0].mesh_frames_per_leave);
}

#[test]
fn client_server_clients_link_exactly_to_the_servers() {
    let rows = scaling(&[10, 30], NetConfig::default(), 18, 2);
    for r in &rows {
        let cs = &r.client_server;
        assert_eq!(cs.servers, servers_of(r.nodes));
        assert_eq!(cs.client_peers, (cs.servers, cs.servers), "each client is linked to every server, nothing else: {r:?}");
        // default + membership channel per server
        assert_eq!(cs.client_links_per_node, 2.0 * cs.servers as f64, "{r:?}");
        assert_eq!(cs.server_peers, (r.nodes - 1, r.nodes - 1), "servers link to everyone: {r:?}");
        assert!(cs.frames_per_join < r.mesh_frames_per_join && cs.frames_per_leave < r.mesh_frames_per_leave, "{r:?}");
    }
    assert_eq!(rows[1].client_server.servers, 3);
}

/// What a node's application received through the overlay: (origin, payload).
#[derive(Debug, Clone, Default)]
struct Inbox(Vec<(String, bytes::Bytes)>);

impl partisan_sim::net::App for Inbox {
    fn event<O: partisan_core::overlay::Overlay>(&mut self, _: &mut partisan_core::node::Node<O>, _: u64, event: partisan_core::node::Event) {
        if let partisan_core::node::Event::Deliver { origin, payload, .. } = event {
            self.0.push((origin, payload));
        }
    }
}

/// `transitive => true` on a simulated 200-node overlay: a message to a node that is not a
/// neighbour crosses the overlay on relay frames and is delivered once.
#[test]
fn a_relayed_message_crosses_a_200_node_overlay_once() {
    use partisan_core::channel::ChannelTable;
    use partisan_core::frame::Dest;
    use partisan_core::hyparview::{HyParView, HyParViewConfig};
    use partisan_core::node::{LinkTiming, Node};
    use partisan_sim::net::Sim;
    let channels = ChannelTable::new(vec![]).unwrap();
    let mut sim: Sim<HyParView, Inbox> = Sim::new(NetConfig::default(), 19);
    for id in 0..200 {
        let spec = Sim::<HyParView, Inbox>::spec_for(id);
        let hv = HyParView::new(spec.clone(), &channels, HyParViewConfig::default(), u64::from(id)).unwrap();
        sim.add_node(Node::new(&spec.name, channels.clone(), hv, LinkTiming::default(), None, u64::from(id)).unwrap(), Inbox::default());
    }
    for id in 1..200 {
        sim.join(id, id / 2);
        sim.run_for(10);
    }
    sim.run_for(60_000);
    let neighbours: Vec<String> = sim.node(0).unwrap().neighbours().cloned().collect();
    let target = (1..200).find(|id| !neighbours.contains(&Sim::<HyParView, Inbox>::spec_for(*id).name)).unwrap();
    let target_name = Sim::<HyParView, Inbox>::spec_for(target).name;
    sim.input(0, |node, _, now| node.send_transitive(now, &target_name, Dest::Name("inbox".into()), bytes::Bytes::from_static(b"hi")).unwrap());
    sim.run_for(5_000);
    assert_eq!(sim.app(target).unwrap().0, [("n00000".to_string(), bytes::Bytes::from_static(b"hi"))]);
    let elsewhere: usize = (0..200).filter(|id| *id != target).map(|id| sim.app(id).unwrap().0.len()).sum();
    assert_eq!(elsewhere, 0);
}
