//! The composition: links of neighbours, redials, channel events, Plumtree and relays over an
//! overlay, on single nodes driven by hand and on the test network.

use super::*;
use crate::channel::ChannelSpec;
use crate::full_mesh::{FullMesh, LinkPolicy};
use crate::hyparview::{HyParView, HyParViewConfig};
use crate::testnet::Net;
use rand::seq::SliceRandom;

fn spec(name: &str) -> NodeSpec {
    let port = 9000 + name.bytes().map(u16::from).sum::<u16>();
    NodeSpec::new(name, vec![SocketAddr::from(([127, 0, 0, 1], port))], vec![])
}

/// Default, membership, and a `data` channel of two connections.
fn channels() -> ChannelTable {
    ChannelTable::new(vec![ChannelSpec::new("data", 2, false)]).unwrap()
}

fn hyparview_node(name: &str, seed: u64, cfg: HyParViewConfig, broadcast: bool) -> Node<HyParView> {
    let hv = HyParView::new(spec(name), &channels(), cfg, seed).unwrap();
    let broadcast = broadcast.then(PlumtreeConfig::default);
    Node::new(name, channels(), hv, LinkTiming { connection_interval: 100, connection_jitter: 50 }, broadcast, seed).unwrap()
}

/// `count` HyParView nodes (`n000`, `n001`, ...), each joining a random earlier one.
fn hyparview_net(count: usize, cfg: HyParViewConfig, broadcast: bool, seed: u64) -> Net<HyParView> {
    let mut net = Net::new();
    let names: Vec<String> = (0..count).map(|i| format!("n{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        net.add(hyparview_node(name, seed + i as u64, cfg, broadcast));
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 1..count {
        let contact = spec(&names[rng.gen_range(0..i)]);
        net.with(&names[i], |n, now| n.join(now, contact));
        net.advance(100);
    }
    net
}

fn drain<O: Overlay>(node: &mut Node<O>) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

fn link(node: &str, channel: usize, conn: u16) -> LinkId {
    LinkId { node: node.into(), channel, conn }
}

#[test]
fn a_neighbour_gets_a_link_on_every_channel_and_they_close_with_it() {
    let mut net = Net::new();
    net.add(hyparview_node("a", 1, HyParViewConfig::default(), false));
    net.add(hyparview_node("b", 2, HyParViewConfig::default(), false));
    net.with("b", |n, now| n.join(now, spec("a")));
    let table = channels();
    let all: Vec<LinkId> = table.links().map(|(c, i)| link("b", c, i)).collect();
    assert_eq!(net.links_up("a"), all, "HyParView dials the membership link, the node the others");
    let membership = table.membership_index();
    let events = net.events("a");
    let up = events.iter().position(|e| *e == Event::NodeUp("b".into())).expect("b is a neighbour");
    let channels_up: Vec<usize> =
        events.iter().filter_map(|e| if let Event::ChannelUp { channel, .. } = e { Some(*channel) } else { None }).collect();
    assert_eq!(channels_up[0], membership, "the channel up with the neighbour comes first");
    assert_eq!(channels_up.len(), table.specs().len(), "then each channel once: {events:?}");
    assert!(events[up + 1..].contains(&Event::ChannelUp { node: "b".into(), channel: membership }));

    let before = net.actions.len();
    net.crash(&["b"]);
    let after: Vec<Event> = net.events("a").into_iter().skip(events.len()).collect();
    let down = after.iter().position(|e| *e == Event::NodeDown("b".into())).expect("b is down");
    let channels_down = after.iter().filter(|e| matches!(e, Event::ChannelDown { .. })).count();
    assert_eq!(channels_down, table.specs().len(), "{after:?}");
    assert!(after[down + 1..].iter().all(|e| !matches!(e, Event::ChannelDown { .. })), "channels go down before the node");
    net.advance(60_000);
    let data_redials = net.actions[before..]
        .iter()
        .filter(|(at, a)| at == "a" && matches!(a, Action::Dial { link, .. } if link.channel != membership))
        .count();
    assert_eq!(data_redials, 0, "the links of a neighbour that is gone are not redialed (HyParView probes it itself)");
}

#[test]
fn a_neighbours_dropped_link_is_redialed_while_it_stays_up() {
    let mut net = Net::new();
    net.add(hyparview_node("a", 1, HyParViewConfig::default(), false));
    net.add(hyparview_node("b", 2, HyParViewConfig::default(), false));
    net.with("b", |n, now| n.join(now, spec("a")));
    let data = channels().index_of("data").unwrap();
    let seen = net.events("a").len();
    net.with("a", |n, now| n.link_down(now, &link("b", data, 1)));
    assert_eq!(net.events("a")[seen..], [], "the other data connection is up: the channel stays up");
    net.with("a", |n, now| n.link_down(now, &link("b", data, 0)));
    assert_eq!(net.events("a")[seen..], [Event::ChannelDown { node: "b".into(), channel: data }]);
    net.advance(200); // interval 100 + jitter up to 50
    assert_eq!(
        net.events("a")[seen..],
        [Event::ChannelDown { node: "b".into(), channel: data }, Event::ChannelUp { node: "b".into(), channel: data }]
    );
    assert_eq!(net.nodes["a"].neighbours().collect::<Vec<_>>(), ["b"], "b never went down");
}

/// `connection_interval => 0, connection_jitter => 0` and a member that is gone: each failed dial
/// doubles the wait before the next (from 100 ms up to 2 s) instead of redialing at once.
#[test]
fn failed_dials_back_off_even_with_a_zero_interval() {
    let table = channels();
    let mesh = FullMesh::new(spec("a@h"), 1, table.clone(), LinkPolicy::AllMembers, 0);
    let timing = LinkTiming { connection_interval: 0, connection_jitter: 0 };
    let mut node = Node::new("a@h", table, mesh, timing, None, 1).unwrap();
    node.join(0, spec("dead@h"));
    drain(&mut node);
    let dead = link("dead@h", 0, 0);
    // The link was up once and dropped: the first redial is at once, as configured.
    node.link_up(0, &dead);
    let mut now = 1_000;
    node.link_down(now, &dead);
    let mut waits = vec![];
    for _ in 0..8 {
        let due = node.poll_timeout().unwrap();
        waits.push(due - now);
        now = due;
        node.tick(now);
        assert!(drain(&mut node).contains(&Action::Dial { link: dead.clone(), addrs: spec("dead@h").listen_addrs }));
        node.link_down(now, &dead); // the dial failed
    }
    assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 2000, 2000]);
    // Once the link is up again, a later drop redials at once again.
    node.tick(node.poll_timeout().unwrap());
    node.link_up(now, &dead);
    node.link_down(now, &dead);
    assert_eq!(node.poll_timeout(), Some(now));
}

#[test]
fn the_jitter_is_seeded() {
    let waits = |seed| {
        let table = channels();
        let mesh = FullMesh::new(spec("a@h"), 1, table.clone(), LinkPolicy::AllMembers, 0);
        let mut node = Node::new("a@h", table.clone(), mesh, LinkTiming { connection_interval: 0, connection_jitter: 1000 }, None, seed).unwrap();
        node.join(0, spec("b@h"));
        let mut due = vec![];
        for (c, i) in table.links() {
            node.link_up(0, &link("b@h", c, i));
            node.link_down(0, &link("b@h", c, i));
        }
        while let Some(t) = node.poll_timeout() {
            due.push(t);
            node.tick(t);
            drain(&mut node);
            // keep the redialed links dialing: no new timers
        }
        due
    };
    assert_eq!(waits(5), waits(5));
    assert_ne!(waits(5), waits(6));
}

#[test]
fn a_link_nobody_wants_is_closed_and_frames_that_are_not_the_nodes_are_refused() {
    let mut node = hyparview_node("a", 1, HyParViewConfig::default(), false);
    node.link_up(0, &link("x", 0, 0));
    assert_eq!(drain(&mut node), [Action::Close { link: link("x", 0, 0) }]);
    let message = Frame::Message { dest: Dest::Name("p".into()), payload: Bytes::new() };
    assert_eq!(node.receive(0, "x", message), Err(ReceiveError::NotForTheNode("message")));
    assert!(matches!(node.receive(0, "x", Frame::Control { body: Bytes::from_static(&[99]) }), Err(ReceiveError::Malformed(_))));
    assert_eq!(node.broadcast(0, Bytes::from_static(b"id"), Bytes::new()), Err(BroadcastError::Disabled));
    // broadcast frames to a node without broadcast are ignored, as Partisan does
    assert_eq!(node.receive(0, "x", Frame::Broadcast { body: Bytes::from_static(&[35]) }), Ok(()));
    assert_eq!(node.send_transitive(0, "z", Dest::Name("p".into()), Bytes::new()), Err(NoRoute), "no neighbour to relay through");
}

/// Plumtree over HyParView, as the live runtime runs it: the overlay's neighbours are Plumtree's,
/// its frames travel as broadcast frames on the membership links. Every node delivers every
/// broadcast once, before and after half of the nodes crash and the overlay repairs itself.
#[test]
fn broadcasts_reach_every_node_once_before_and_after_half_of_them_crash() {
    let mut net = hyparview_net(60, HyParViewConfig::default(), true, 4);
    net.advance(60_000);
    let mut rng = SmallRng::seed_from_u64(9);
    let mut broadcast_from = |net: &mut Net<HyParView>, id: String| {
        let names: Vec<String> = net.nodes.keys().cloned().collect();
        let origin = names.choose(&mut rng).unwrap().clone();
        net.with(&origin, |n, now| n.broadcast(now, Bytes::from(id.clone()), Bytes::from_static(b"payload")).unwrap());
        // the origin's own handler stores it when it broadcasts
        net.store.entry(origin).or_default().insert(Bytes::from(id), Bytes::from_static(b"payload"));
        net.advance(5_000);
    };
    let payload_frames = |net: &Net<HyParView>| -> u64 { net.nodes.values().map(|n| n.plumtree().unwrap().stats().gossip_received).sum() };
    let mut rmr = vec![];
    for i in 0..5 {
        let before = payload_frames(&net);
        broadcast_from(&mut net, format!("before{i}"));
        rmr.push(plumtree::relative_message_redundancy(payload_frames(&net) - before, 60).unwrap());
    }
    assert!(rmr[0] > 1.0, "the first broadcast floods the active views: {rmr:?}");
    assert!(rmr[2..].iter().all(|r| *r < 0.05), "then the eager links form a tree: {rmr:?}");
    let dead: Vec<String> = net.nodes.keys().filter(|n| n[1..].parse::<u32>().unwrap() % 2 == 1).cloned().collect();
    net.crash(&dead.iter().map(String::as_str).collect::<Vec<_>>());
    net.advance(30_000);
    for i in 0..5 {
        broadcast_from(&mut net, format!("after{i}"));
    }
    for (name, node) in &net.nodes {
        let store = &net.store[name];
        assert_eq!(store.len(), 10, "{name} has {:?}", store.keys().collect::<Vec<_>>());
        let delivered = net.events(name).iter().filter(|e| matches!(e, Event::BroadcastDeliver { .. })).count();
        assert!(delivered <= 10, "{name}: the handler is asked once per message at most, got {delivered}");
        assert!(node.plumtree().unwrap().stats().gossip_received > 0);
    }
}

/// 30 HyParView nodes (room for 3 neighbours each) after 30 s: `n000`, its neighbours, and a
/// node that is not one of them.
fn settled_with_a_non_neighbour(seed: u64) -> (Net<HyParView>, &'static str, Vec<String>, String) {
    let cfg = HyParViewConfig { active_max_size: 3, active_min_size: 2, ..Default::default() };
    let mut net = hyparview_net(30, cfg, false, seed);
    net.advance(30_000);
    let from = "n000";
    let neighbours: Vec<String> = net.nodes[from].neighbours().cloned().collect();
    let target = net.nodes.keys().find(|n| *n != from && !neighbours.contains(n)).unwrap().clone();
    (net, from, neighbours, target)
}

/// A node sends to one that is not its neighbour: the message crosses the overlay (flooded, with
/// a seen-cache) and is delivered once.
#[test]
fn a_relayed_message_crosses_the_overlay_and_is_delivered_once() {
    let (mut net, from, neighbours, target) = settled_with_a_non_neighbour(7);
    net.with(from, |n, now| n.send_transitive(now, &target, Dest::Name("inbox".into()), Bytes::from_static(b"hi")).unwrap());
    assert_eq!(net.relayed, [(target.clone(), from.to_string(), Bytes::from_static(b"hi"))]);
    let forwards: u64 = net.nodes.values().map(|n| n.stats().relayed).sum();
    assert!(forwards >= 2, "it took more than one hop: {forwards}");
    // to a neighbour: straight there
    let next = neighbours[0].clone();
    net.with(from, |n, now| n.send_transitive(now, &next, Dest::Name("inbox".into()), Bytes::from_static(b"direct")).unwrap());
    assert_eq!(net.relayed.last(), Some(&(next, from.to_string(), Bytes::from_static(b"direct"))));
    // to itself: delivered here
    net.with(from, |n, now| n.send_transitive(now, from, Dest::Name("inbox".into()), Bytes::from_static(b"me")).unwrap());
    assert_eq!(net.relayed.len(), 3);
}

/// Messages sent with `ack` through the overlay to a node that is not a neighbour arrive once
/// and in order while the network loses a third of the relayed frames (messages and acks), the
/// views change under them (a third of the nodes crash), and the target acknowledges them all.
#[test]
fn acked_relays_arrive_once_and_in_order_through_a_lossy_changing_overlay() {
    let (mut net, from, _, target) = settled_with_a_non_neighbour(11);
    let mut rng = SmallRng::seed_from_u64(3);
    net.lose = Some(Box::new(move |_, _, frame| matches!(frame, Frame::Relay { .. }) && rng.gen_bool(0.33)));
    let payloads: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("m{i}"))).collect();
    for (i, p) in payloads.iter().enumerate() {
        net.with(from, |n, now| n.send_acked_transitive(now, &target, Dest::Name("inbox".into()), p.clone()));
        if i == 100 {
            // a third of the others crash: the overlay repairs around them meanwhile
            let crashed: Vec<String> = net.nodes.keys().filter(|n| **n != from && **n != target).take(9).cloned().collect();
            net.crash(&crashed.iter().map(String::as_str).collect::<Vec<_>>());
        }
        net.advance(5);
    }
    net.advance(60_000);
    let got: Vec<Bytes> = net.relayed.iter().filter(|(at, o, _)| *at == target && o == from).map(|(_, _, p)| p.clone()).collect();
    assert_eq!(got, payloads, "every message once, in order");
    assert_eq!(net.nodes[from].acked_relays_unacked(&target), 0, "all acknowledged");
    assert!(net.nodes[from].stats().acked_relays_retransmitted > 0, "losses were repaired by retransmissions");
    let settled: usize = net
        .events(from)
        .iter()
        .map(|e| match e {
            Event::AckedSettled { node, acked, given_up, .. } if *node == target => {
                assert_eq!(*given_up, 0);
                *acked
            }
            _ => 0,
        })
        .sum();
    assert_eq!(settled, payloads.len());
}

/// A target that never answers is given up after `give_up_after`, and that is reported.
#[test]
fn acked_relays_to_a_silent_node_are_given_up_and_reported() {
    let cfg = HyParViewConfig { active_max_size: 3, active_min_size: 2, ..Default::default() };
    let mut net = hyparview_net(8, cfg, false, 5);
    net.advance(10_000);
    net.with("n000", |n, now| {
        for i in 0..3u8 {
            n.send_acked_transitive(now, "nobody", Dest::Name("inbox".into()), Bytes::from(vec![i]));
        }
    });
    net.advance(RelayAckConfig::default().give_up_after + 1_000);
    let given_up: Vec<usize> = net
        .events("n000")
        .iter()
        .filter_map(|e| match e {
            Event::AckedSettled { node, given_up, .. } if node == "nobody" => Some(*given_up),
            _ => None,
        })
        .collect();
    assert_eq!(given_up, [3]);
    assert_eq!(net.nodes["n000"].acked_relays_unacked("nobody"), 0);
}
