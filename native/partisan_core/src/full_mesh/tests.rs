//! Full-mesh tests: the state machine alone, and networks of nodes running it.

use super::*;
use crate::frame::Frame;
use crate::node::{Action as NodeAction, Event, LinkTiming, Node};
use crate::testnet;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;

fn spec(name: &str, port: u16) -> NodeSpec {
    NodeSpec::new(name, vec![SocketAddr::from(([127, 0, 0, 1], port))], vec![])
}

fn table() -> ChannelTable {
    ChannelTable::new(vec![ChannelSpec::new("data", 2, false)]).unwrap()
}

fn drain(mesh: &mut FullMesh) -> Vec<Action> {
    std::iter::from_fn(|| mesh.poll_action()).collect()
}

fn lone_mesh(name: &str, port: u16, policy: LinkPolicy) -> FullMesh {
    FullMesh::new(spec(name, port), 1, table(), policy, 1000)
}

/// Nodes running the full mesh over the test network; each node's name is its start order's
/// port (`a` 9000, `b` 9001, ...), a restart takes the next incarnation.
struct Net {
    net: testnet::Net<FullMesh>,
    next_incarnation: u64,
    policy: fn(&str) -> LinkPolicy,
}

impl Net {
    fn new(names: &[&str]) -> Self {
        Net::with_policy(names, |_| LinkPolicy::AllMembers)
    }

    fn with_policy(names: &[&str], policy: fn(&str) -> LinkPolicy) -> Self {
        let mut net = Net { net: testnet::Net::new(), next_incarnation: 1, policy };
        for n in names {
            net.start(n);
        }
        net
    }

    fn start(&mut self, name: &str) {
        let inc = self.next_incarnation;
        self.next_incarnation += 1;
        let timing = LinkTiming { connection_interval: 100, connection_jitter: 50 };
        let mesh = FullMesh::new(spec(name, port_of(name)), inc, table(), (self.policy)(name), 1000);
        self.net.add(Node::new(name, table(), mesh, timing, None, inc).unwrap());
    }

    fn mesh(&self, name: &str) -> &FullMesh {
        self.net.nodes[name].overlay()
    }

    fn with(&mut self, name: &str, f: impl FnOnce(&mut Node<FullMesh>, u64)) {
        self.net.with(name, f)
    }

    fn count(&self, at: &str, pred: impl Fn(&NodeAction) -> bool) -> usize {
        self.net.count(at, pred)
    }

    fn assert_full_mesh(&self) {
        let names: BTreeSet<String> = self.net.nodes.keys().cloned().collect();
        for name in &names {
            let mesh = self.mesh(name);
            assert_eq!(mesh.members().into_iter().collect::<BTreeSet<_>>(), names, "members at {name}");
            for other in names.iter().filter(|n| *n != name) {
                assert!(mesh.is_fully_connected(other), "{name} not fully connected to {other}");
            }
        }
    }
}

#[test]
fn joining_any_member_connects_to_all() {
    let mut net = Net::new(&["a", "b", "c", "d", "e"]);
    for (joiner, seed) in [("b", "a"), ("c", "b"), ("d", "a"), ("e", "d")] {
        let target = spec(seed, 9000 + (seed.as_bytes()[0] - b'a') as u16);
        net.with(joiner, |m, now| m.join(now, target));
    }
    net.assert_full_mesh();
    // node up fires once per peer, channel up once per (peer, channel)
    assert_eq!(net.count("a", |x| matches!(x, NodeAction::Event(Event::NodeUp(_)))), 4);
    assert_eq!(net.count("a", |x| matches!(x, NodeAction::Event(Event::ChannelUp { .. }))), 4 * 3);
}

#[test]
fn crash_marks_down_retries_and_restart_rejoins_itself() {
    let mut net = Net::new(&["a", "b", "c"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    net.with("c", |m, now| m.join(now, spec("a", 9000)));
    net.assert_full_mesh();
    net.net.crash(&["c"]);
    assert_eq!(net.count("a", |x| matches!(x, NodeAction::Event(Event::NodeDown(n)) if n == "c")), 1);
    assert!(!net.mesh("a").is_connected("c", None));
    assert_eq!(net.mesh("a").connected(), vec!["b".to_string()]);
    // the node redials after the interval (plus jitter), and fails while c is down
    let dials = |net: &Net| net.count("a", |x| matches!(x, NodeAction::Dial { link, .. } if link.node == "c"));
    let before = dials(&net);
    net.net.advance(151);
    assert_eq!(dials(&net) - before, 4, "one redial per link within interval + jitter");
    // c restarts with a new incarnation and knows nobody; a's redial reaches it and gossip
    // teaches it the cluster.
    net.start("c");
    net.net.advance(400);
    net.assert_full_mesh();
    let inc_c = net.mesh("c").me.incarnation;
    assert_eq!(net.mesh("a").members.get("c").unwrap().incarnation, inc_c);
}

#[test]
fn removing_a_node_resets_it_and_others_forget_it() {
    let mut net = Net::new(&["a", "b", "c"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    net.with("c", |m, now| m.join(now, spec("a", 9000)));
    net.with("a", |m, now| m.leave(now, "c"));
    assert_eq!(net.mesh("a").members(), vec!["a", "b"]);
    assert_eq!(net.mesh("b").members(), vec!["a", "b"]);
    assert_eq!(net.mesh("c").members(), vec!["c"]);
    assert_eq!(net.count("c", |x| matches!(x, NodeAction::Event(Event::Removed { by }) if by == "a")), 1);
    // no more redials towards the removed node
    net.net.advance(5000);
    assert!(!net.mesh("a").is_connected("c", None));
    assert_eq!(net.mesh("a").members(), vec!["a", "b"]);
    // and it can join again
    net.with("c", |m, now| m.join(now, spec("b", 9001)));
    net.assert_full_mesh();
}

#[test]
fn leaving_oneself_tells_the_others() {
    let mut net = Net::new(&["a", "b", "c"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    net.with("c", |m, now| m.join(now, spec("b", 9001)));
    net.with("b", |m, now| m.leave(now, "b"));
    assert_eq!(net.mesh("a").members(), vec!["a", "c"]);
    assert_eq!(net.mesh("c").members(), vec!["a", "c"]);
    assert_eq!(net.mesh("b").members(), vec!["b"]);
    assert!(net.mesh("b").connected().is_empty());
    net.with("b", |m, now| m.join(now, spec("c", 9002)));
    net.assert_full_mesh();
}

/// Regression: a peer that has not yet processed a departure still has links to the departed
/// node; its stale gossip must not re-add the cluster there (and so the node everywhere).
#[test]
fn stale_gossip_does_not_undo_a_departure() {
    for removed_by_other in [false, true] {
        let mut net = Net::new(&["a", "b", "c"]);
        net.with("b", |m, now| m.join(now, spec("a", 9000)));
        net.with("c", |m, now| m.join(now, spec("a", 9000)));
        let stale = encode_gossip(net.mesh("b").member_table());
        if removed_by_other {
            net.with("a", |m, now| m.leave(now, "c"));
        } else {
            net.with("c", |m, now| m.leave(now, "c"));
        }
        let stale = Frame::Control { body: stale };
        net.with("c", |n, now| n.receive(now, "b", stale).unwrap());
        assert_eq!(net.mesh("c").members(), vec!["c"]);
        assert_eq!(net.mesh("a").members(), vec!["a", "b"]);
        assert_eq!(net.mesh("b").members(), vec!["a", "b"]);
        net.net.advance(3000); // periodic gossip changes nothing
        assert_eq!(net.mesh("c").members(), vec!["c"]);
        // re-adding from the cluster side works: a's gossip knows c's current entry
        net.with("a", |m, now| m.join(now, spec("c", 9002)));
        net.assert_full_mesh();
    }
}

#[test]
fn periodic_gossip_repairs_a_lost_update() {
    let mut net = Net::new(&["a", "b"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    // a learns of x from a frame that b never saw
    let x = Member { spec: spec("x", 9100), incarnation: 5, version: 0, left: false, role: Role::Peer };
    let body = encode_gossip(std::iter::once(&x));
    let a = net.net.nodes.get_mut("a").unwrap();
    a.receive(0, "x", Frame::Control { body }).unwrap();
    while a.poll_action().is_some() {} // drop a's immediate gossip (and its dials of x)
    assert!(!net.mesh("b").members().contains(&"x".to_string()));
    net.net.advance(1000);
    assert!(net.mesh("b").members().contains(&"x".to_string()));
}

#[test]
fn stale_entries_lose_and_links_for_unknown_nodes_are_ignored() {
    let mut mesh = FullMesh::new(spec("a", 1), 10, table(), LinkPolicy::AllMembers, 1000);
    let newer = Member { spec: spec("b", 2), incarnation: 9, version: 3, left: false, role: Role::Peer };
    let older = Member { spec: spec("b", 3), incarnation: 9, version: 2, left: true, role: Role::Peer };
    mesh.control(0, "b", &encode_gossip(std::iter::once(&newer))).unwrap();
    mesh.control(0, "b", &encode_gossip(std::iter::once(&older))).unwrap();
    assert_eq!(mesh.members(), vec!["a", "b"]);
    // an old tombstone of ourselves (older incarnation) is ignored
    let old_me = Member { spec: spec("a", 1), incarnation: 3, version: 99, left: true, role: Role::Peer };
    mesh.control(0, "b", &encode_gossip(std::iter::once(&old_me))).unwrap();
    assert_eq!(mesh.members(), vec!["a", "b"]);
    drain(&mut mesh);
    mesh.link_up(0, &LinkId { node: "zz".into(), channel: 0, conn: 0 });
    mesh.link_down(0, &LinkId { node: "zz".into(), channel: 0, conn: 0 });
    mesh.link_up(0, &LinkId { node: "b".into(), channel: 0, conn: 99 });
    assert!(drain(&mut mesh).is_empty());
}

fn port_of(name: &str) -> u16 {
    9000 + (name.as_bytes()[name.len() - 1] - b'a') as u16
}

#[test]
fn client_server_links_clients_only_to_servers() {
    // nodes a, b are servers; c, d, e clients (ports follow the start order a..e)
    let policy = |n: &str| LinkPolicy::ClientServer(if n < "c" { Role::Server } else { Role::Client });
    let mut net = Net::with_policy(&["a", "b", "c", "d", "e"], policy);
    net.with("b", |m, now| m.join(now, spec("a", port_of("a"))));
    for c in ["c", "d", "e"] {
        net.with(c, |m, now| m.join(now, spec("a", port_of("a"))));
    }
    net.net.advance(3000);
    let all: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
    for (name, node) in &net.net.nodes {
        let mesh = node.overlay();
        assert_eq!(mesh.members(), all, "every node knows every member ({name})");
        let expected: Vec<String> = if name.as_str() < "c" {
            all.iter().filter(|n| *n != name).cloned().collect()
        } else {
            vec!["a".into(), "b".into()]
        };
        assert_eq!(mesh.connected(), expected, "links of {name}");
        for peer in &expected {
            assert!(mesh.is_fully_connected(peer));
        }
    }
    // a client that joined another client drops that link once gossip tells it the role
    net.with("d", |m, now| m.join(now, spec("e", port_of("e"))));
    net.net.advance(3000);
    assert_eq!(net.mesh("d").connected(), vec!["a", "b"]);
}

#[test]
fn static_links_exactly_the_joined_pairs() {
    let mut net = Net::with_policy(&["a", "b", "c"], |_| LinkPolicy::Static);
    net.with("a", |m, now| m.join(now, spec("b", port_of("b"))));
    net.with("c", |m, now| m.join(now, spec("b", port_of("b"))));
    net.net.advance(5000); // periodic gossip does not spread third parties
    assert_eq!(net.mesh("a").connected(), vec!["b"]);
    assert_eq!(net.mesh("c").connected(), vec!["b"]);
    assert_eq!(net.mesh("b").connected(), vec!["a", "c"]);
    assert_eq!(net.mesh("a").members(), vec!["a", "b"]);
    assert!(net.mesh("b").is_fully_connected("a") && net.mesh("b").is_fully_connected("c"));
}

#[test]
fn external_membership_links_exactly_the_listed_members_and_hands_control_up() {
    let mut mesh = lone_mesh("a", 1, LinkPolicy::External);
    mesh.set_members(0, vec![spec("a", 1), spec("b", 2), spec("c", 3)]);
    let kept = drain(&mut mesh).iter().filter(|x| matches!(x, Action::Keep { .. })).count();
    assert_eq!(kept, 2 * 4, "two peers, four links each");
    assert_eq!(mesh.members(), vec!["a", "b", "c"]);
    mesh.link_up(0, &LinkId { node: "b".into(), channel: table().membership_index(), conn: 0 });
    assert!(!drain(&mut mesh).iter().any(|x| matches!(x, Action::SendControl { .. })), "no gossip of its own");
    mesh.control(0, "b", b"strategy bytes").unwrap();
    assert_eq!(drain(&mut mesh), vec![Action::Upcall { from: "b".into(), body: Bytes::from_static(b"strategy bytes") }]);
    mesh.set_members(0, vec![spec("b", 2)]);
    let actions = drain(&mut mesh);
    assert!(actions.contains(&Action::Disconnect { node: "c".into() }));
    assert!(!actions.iter().any(|x| matches!(x, Action::SendControl { .. })));
    assert_eq!(mesh.members(), vec!["a", "b"]);
    assert_eq!(mesh.poll_timeout(), None, "no periodic gossip timer");
    // set_members means nothing to other policies
    let mut full = lone_mesh("a", 1, LinkPolicy::AllMembers);
    full.set_members(0, vec![spec("b", 2)]);
    assert_eq!(full.members(), vec!["a"]);
}

#[test]
fn gossip_roundtrips_and_garbage_is_an_error() {
    let m = Member {
        spec: NodeSpec::new("n@h", vec!["[::1]:7".parse().unwrap(), "10.0.0.1:9".parse().unwrap()], vec![ChannelSpec::new("c", 3, true)]),
        incarnation: 1,
        version: 2,
        left: true,
        role: Role::Client,
    };
    assert_eq!(decode_control(&encode_gossip(std::iter::once(&m))).unwrap(), vec![m]);
    assert_eq!(decode_control(&[9]).unwrap_err(), ControlError::UnknownTag(9));
    assert!(matches!(decode_control(&[TAG_GOSSIP, 0, 0, 0, 1]), Err(ControlError::Malformed(_))));
    assert!(decode_control(&[]).is_err());
}

proptest! {
    #[test]
    fn random_control_bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut mesh = lone_mesh("a", 1, LinkPolicy::AllMembers);
        let _ = mesh.control(0, "b", &data);
        let mut with_tag = vec![TAG_GOSSIP];
        with_tag.extend_from_slice(&data);
        let _ = mesh.control(0, "b", &with_tag);
    }

    /// Gossip converges whatever the join order: every node ends with the same member set.
    #[test]
    fn any_join_order_converges(order in proptest::collection::vec((0usize..6, 0usize..6), 5..15)) {
        let names = ["a", "b", "c", "d", "e", "f"];
        let mut net = Net::new(&names);
        for i in 1..6 {
            // ensure connectivity: i joins someone below it, plus the random extra joins
            let (j, _) = order[i % order.len()];
            let seed = j % i;
            net.with(names[i], |m, now| m.join(now, spec(names[seed], 9000 + seed as u16)));
        }
        for (x, y) in order {
            if x != y {
                net.with(names[x], |m, now| m.join(now, spec(names[y], 9000 + y as u16)));
            }
        }
        net.assert_full_mesh();
    }
}

/// A partition drops every link across it; the node keeps redialing them (the full mesh keeps
/// every link) and the mesh is whole again once the partition heals.
#[test]
fn links_across_a_healed_partition_come_back() {
    let mut net = Net::new(&["a", "b", "c"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    net.with("c", |m, now| m.join(now, spec("a", 9000)));
    net.net.partition(|n| u8::from(n == "a"));
    net.net.advance(1000);
    assert!(net.mesh("a").connected().is_empty());
    assert_eq!(net.mesh("b").connected(), vec!["c"]);
    assert_eq!(net.mesh("a").members(), vec!["a", "b", "c"], "still members, only unreachable");
    net.net.partition(|_| 0);
    net.net.advance(3000);
    net.assert_full_mesh();
}
