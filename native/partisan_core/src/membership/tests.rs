//! Full-mesh tests: single-machine checks plus a small deterministic network of meshes.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn spec(name: &str, port: u16) -> NodeSpec {
    NodeSpec::new(name, vec![SocketAddr::from(([127, 0, 0, 1], port))], vec![])
}

fn table() -> ChannelTable {
    ChannelTable::new(vec![ChannelSpec::new("data", 2, false)]).unwrap()
}

fn drain(mesh: &mut FullMesh) -> Vec<Action> {
    std::iter::from_fn(|| mesh.poll_action()).collect()
}

/// Instant-delivery network: a Connect succeeds at once when the target runs, control frames
/// arrive in order, a crash drops every link to the crashed node.
struct Net {
    nodes: BTreeMap<String, FullMesh>,
    now: u64,
    events: Vec<(String, Action)>,
    next_incarnation: u64,
    topology: fn(&str) -> (Topology, Role),
}

impl Net {
    fn new(names: &[&str]) -> Self {
        Net::with_topology(names, |_| (Topology::FullMesh, Role::Peer))
    }

    fn with_topology(names: &[&str], topology: fn(&str) -> (Topology, Role)) -> Self {
        let mut net = Net { nodes: BTreeMap::new(), now: 0, events: vec![], next_incarnation: 1, topology };
        for n in names {
            net.start(n);
        }
        net
    }

    fn start(&mut self, name: &str) {
        let port = 9000 + self.nodes.len() as u16;
        let inc = self.next_incarnation;
        self.next_incarnation += 1;
        let cfg = MeshConfig { connection_interval: 100, connection_jitter: 50, periodic_interval: 1000 };
        let (topology, role) = (self.topology)(name);
        let mesh = FullMesh::new(spec(name, port), inc, table(), cfg, inc).with_topology(topology, role);
        self.nodes.insert(name.into(), mesh);
    }

    fn crash(&mut self, name: &str) {
        self.nodes.remove(name);
        let links: Vec<(usize, u16)> = table().links().collect();
        for mesh in self.nodes.values_mut() {
            for &(channel, conn) in &links {
                mesh.link_down(self.now, &LinkId { node: name.into(), channel, conn });
            }
        }
        self.run();
    }

    fn with(&mut self, name: &str, f: impl FnOnce(&mut FullMesh, u64)) {
        let now = self.now;
        f(self.nodes.get_mut(name).unwrap(), now);
        self.run();
    }

    /// Delivers actions until the network is quiet.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut work = Vec::new();
            for (name, mesh) in &mut self.nodes {
                while let Some(a) = mesh.poll_action() {
                    work.push((name.clone(), a));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, action) in work {
                self.events.push((from.clone(), action.clone()));
                match action {
                    Action::Connect { link, .. } => {
                        let up = self.nodes.contains_key(&link.node);
                        let mesh = self.nodes.get_mut(&from).unwrap();
                        if up { mesh.link_up(self.now, &link) } else { mesh.link_down(self.now, &link) }
                    }
                    Action::SendControl { to, body } => {
                        if let Some(mesh) = self.nodes.get_mut(&to) {
                            mesh.control(self.now, &from, &body).unwrap();
                        }
                    }
                    _ => {}
                }
            }
        }
        panic!("network did not quiesce");
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(t) = self.nodes.values().filter_map(|m| m.poll_timeout()).min().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            let now = self.now;
            for mesh in self.nodes.values_mut() {
                mesh.tick(now);
            }
            self.run();
        }
        self.now = end;
    }

    fn assert_full_mesh(&self) {
        let names: BTreeSet<String> = self.nodes.keys().cloned().collect();
        for (name, mesh) in &self.nodes {
            assert_eq!(mesh.members().into_iter().collect::<BTreeSet<_>>(), names, "members at {name}");
            for other in names.iter().filter(|n| *n != name) {
                assert!(mesh.is_fully_connected(other), "{name} not fully connected to {other}");
            }
        }
    }

    fn count(&self, at: &str, pred: impl Fn(&Action) -> bool) -> usize {
        self.events.iter().filter(|(n, a)| n == at && pred(a)).count()
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
    assert_eq!(net.count("a", |x| matches!(x, Action::NodeUp { .. })), 4);
    assert_eq!(net.count("a", |x| matches!(x, Action::ChannelUp { .. })), 4 * 3);
}

#[test]
fn crash_marks_down_retries_and_restart_rejoins_itself() {
    let mut net = Net::new(&["a", "b", "c"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    net.with("c", |m, now| m.join(now, spec("a", 9000)));
    net.assert_full_mesh();
    net.crash("c");
    assert_eq!(net.count("a", |x| matches!(x, Action::NodeDown { node } if node == "c")), 1);
    assert!(!net.nodes["a"].is_connected("c", None));
    assert_eq!(net.nodes["a"].connected(), vec!["b".to_string()]);
    // retries fire after the interval (plus jitter) and fail while c is down
    let before = net.count("a", |x| matches!(x, Action::Connect { link, .. } if link.node == "c"));
    net.advance(151);
    let after = net.count("a", |x| matches!(x, Action::Connect { link, .. } if link.node == "c"));
    assert_eq!(after - before, 4, "one retry per link within interval + jitter");
    // c restarts with a new incarnation and knows nobody; a's retry reaches it and gossip
    // teaches it the cluster.
    net.start("c");
    net.advance(400);
    net.assert_full_mesh();
    let inc_c = net.nodes["c"].me.incarnation;
    assert_eq!(net.nodes["a"].members.get("c").unwrap().incarnation, inc_c);
}

#[test]
fn removing_a_node_resets_it_and_others_forget_it() {
    let mut net = Net::new(&["a", "b", "c"]);
    net.with("b", |m, now| m.join(now, spec("a", 9000)));
    net.with("c", |m, now| m.join(now, spec("a", 9000)));
    net.with("a", |m, now| m.leave(now, "c"));
    assert_eq!(net.nodes["a"].members(), vec!["a", "b"]);
    assert_eq!(net.nodes["b"].members(), vec!["a", "b"]);
    assert_eq!(net.nodes["c"].members(), vec!["c"]);
    assert_eq!(net.count("c", |x| matches!(x, Action::Removed { by } if by == "a")), 1);
    // no more retries towards the removed node
    net.advance(5000);
    assert!(!net.nodes["a"].is_connected("c", None));
    assert_eq!(net.nodes["a"].members(), vec!["a", "b"]);
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
    assert_eq!(net.nodes["a"].members(), vec!["a", "c"]);
    assert_eq!(net.nodes["c"].members(), vec!["a", "c"]);
    assert_eq!(net.nodes["b"].members(), vec!["b"]);
    assert!(net.nodes["b"].connected().is_empty());
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
        let stale = encode_gossip(net.nodes["b"].member_table());
        if removed_by_other {
            net.with("a", |m, now| m.leave(now, "c"));
        } else {
            net.with("c", |m, now| m.leave(now, "c"));
        }
        net.nodes.get_mut("c").unwrap().control(net.now, "b", &stale).unwrap();
        net.run();
        assert_eq!(net.nodes["c"].members(), vec!["c"]);
        assert_eq!(net.nodes["a"].members(), vec!["a", "b"]);
        assert_eq!(net.nodes["b"].members(), vec!["a", "b"]);
        net.advance(3000); // periodic gossip changes nothing
        assert_eq!(net.nodes["c"].members(), vec!["c"]);
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
    drain(net.nodes.get_mut("b").unwrap());
    net.nodes.get_mut("a").unwrap().control(0, "x", &body).unwrap();
    drain(net.nodes.get_mut("a").unwrap()); // drop a's immediate gossip
    assert!(!net.nodes["b"].members().contains(&"x".to_string()));
    net.advance(1000);
    assert!(net.nodes["b"].members().contains(&"x".to_string()));
}

#[test]
fn stale_entries_lose_and_links_for_unknown_nodes_are_ignored() {
    let mut mesh = FullMesh::new(spec("a", 1), 10, table(), MeshConfig::default(), 1);
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
    let role = |n: &str| (Topology::ClientServer, if n < "c" { Role::Server } else { Role::Client });
    let mut net = Net::with_topology(&["a", "b", "c", "d", "e"], role);
    net.with("b", |m, now| m.join(now, spec("a", port_of("a"))));
    for c in ["c", "d", "e"] {
        net.with(c, |m, now| m.join(now, spec("a", port_of("a"))));
    }
    net.advance(3000);
    let all: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
    for (name, mesh) in &net.nodes {
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
    net.advance(3000);
    assert_eq!(net.nodes["d"].connected(), vec!["a", "b"]);
}

#[test]
fn static_links_exactly_the_joined_pairs() {
    let mut net = Net::with_topology(&["a", "b", "c"], |_| (Topology::Static, Role::Peer));
    net.with("a", |m, now| m.join(now, spec("b", port_of("b"))));
    net.with("c", |m, now| m.join(now, spec("b", port_of("b"))));
    net.advance(5000); // periodic gossip does not spread third parties
    assert_eq!(net.nodes["a"].connected(), vec!["b"]);
    assert_eq!(net.nodes["c"].connected(), vec!["b"]);
    assert_eq!(net.nodes["b"].connected(), vec!["a", "c"]);
    assert_eq!(net.nodes["a"].members(), vec!["a", "b"]);
    assert!(net.nodes["b"].is_fully_connected("a") && net.nodes["b"].is_fully_connected("c"));
}

#[test]
fn external_membership_links_exactly_the_listed_members_and_hands_control_up() {
    let mut mesh = FullMesh::new(spec("a", 1), 1, table(), MeshConfig::default(), 1).with_topology(Topology::External, Role::Peer);
    mesh.set_members(0, vec![spec("a", 1), spec("b", 2), spec("c", 3)]);
    let connects = drain(&mut mesh).iter().filter(|x| matches!(x, Action::Connect { .. })).count();
    assert_eq!(connects, 2 * 4, "two peers, four links each");
    assert_eq!(mesh.members(), vec!["a", "b", "c"]);
    mesh.link_up(0, &LinkId { node: "b".into(), channel: mesh.channels().membership_index(), conn: 0 });
    assert!(!drain(&mut mesh).iter().any(|x| matches!(x, Action::SendControl { .. })), "no gossip of its own");
    mesh.control(0, "b", b"strategy bytes").unwrap();
    assert_eq!(drain(&mut mesh), vec![Action::Upcall { from: "b".into(), body: Bytes::from_static(b"strategy bytes") }]);
    mesh.set_members(0, vec![spec("b", 2)]);
    let actions = drain(&mut mesh);
    assert!(actions.contains(&Action::Disconnect { node: "c".into() }));
    assert!(!actions.iter().any(|x| matches!(x, Action::SendControl { .. })));
    assert_eq!(mesh.members(), vec!["a", "b"]);
    assert_eq!(mesh.poll_timeout(), None, "no periodic gossip timer");
    // set_members means nothing to other topologies
    let mut full = FullMesh::new(spec("a", 1), 1, table(), MeshConfig::default(), 1);
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
        let mut mesh = FullMesh::new(spec("a", 1), 1, table(), MeshConfig::default(), 1);
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

/// `connection_interval => 0, connection_jitter => 0` and a member that is gone: each failed dial
/// doubles the wait before the next (from 100 ms up to 2 s) instead of redialing at once.
#[test]
fn failed_dials_back_off_even_with_a_zero_interval() {
    let cfg = MeshConfig { connection_interval: 0, connection_jitter: 0, periodic_interval: 0 };
    let mut mesh = FullMesh::new(spec("a@h", 1), 1, table(), cfg, 1);
    mesh.join(0, spec("dead@h", 2));
    let link = LinkId { node: "dead@h".into(), channel: 0, conn: 0 };
    // The link was up once and dropped: the first redial is at once, as configured.
    mesh.link_up(0, &link);
    let mut now = 1_000;
    mesh.link_down(now, &link);
    let mut waits = vec![];
    for _ in 0..8 {
        let due = mesh.poll_timeout().unwrap();
        waits.push(due - now);
        now = due;
        mesh.tick(now);
        drain(&mut mesh);
        mesh.link_down(now, &link); // the dial failed
    }
    assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 2000, 2000]);
    // Once the link is up again, a later drop redials at once again.
    mesh.tick(mesh.poll_timeout().unwrap());
    mesh.link_up(now, &link);
    mesh.link_down(now, &link);
    assert_eq!(mesh.poll_timeout(), Some(now));
}
