//! HyParView tests: every message and timer path on a single node driven by hand, the codec,
//! and a small in-order network of nodes (connectivity, symmetry, crash repair, partition heal).

use super::*;
use proptest::prelude::{any, proptest};
use std::collections::BTreeSet;

fn addr(name: &str) -> SocketAddr {
    let port = 9000 + name.bytes().map(u16::from).sum::<u16>();
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn spec(name: &str) -> NodeSpec {
    NodeSpec::new(name, vec![addr(name)], vec![])
}

fn channels() -> ChannelTable {
    ChannelTable::new(vec![]).unwrap()
}

fn link(name: &str) -> LinkId {
    LinkId { node: name.into(), channel: channels().membership_index(), conn: 0 }
}

fn node_with(name: &str, cfg: HyParViewConfig) -> HyParView {
    HyParView::new(spec(name), &channels(), cfg, 42).unwrap()
}

fn node(name: &str) -> HyParView {
    node_with(name, HyParViewConfig::default())
}

fn drain(n: &mut HyParView) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn recv(n: &mut HyParView, from: &str, msg: Message) {
    n.control(0, from, &msg.encode()).unwrap();
}

/// Makes `peer` an active neighbour of `n` (as if it had sent NEIGHBOR) and drains the actions.
fn make_active(n: &mut HyParView, peer: &str) {
    recv(n, peer, Message::Neighbor { addrs: vec![addr(peer)] });
    n.link_up(0, &link(peer));
    drain(n);
}

fn make_passive(n: &mut HyParView, peers: &[&str]) {
    let sample = peers.iter().map(|p| spec(p)).collect();
    recv(n, "zz", Message::ShuffleReply { sample });
    drain(n);
}

/// Control frames sent, decoded, in order.
fn sent(actions: &[Action]) -> Vec<(String, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendControl { to, body } => Some((to.clone(), Message::decode(body).unwrap())),
            _ => None,
        })
        .collect()
}

fn connects(actions: &[Action]) -> Vec<String> {
    actions.iter().filter_map(|a| if let Action::Dial { link, .. } = a { Some(link.node.clone()) } else { None }).collect()
}

fn disconnects(actions: &[Action]) -> Vec<String> {
    actions.iter().filter_map(|a| if let Action::Disconnect { node } = a { Some(node.clone()) } else { None }).collect()
}

#[test]
fn join_reserves_the_contact_and_sends_join_when_the_link_is_up() {
    let mut a = node("a");
    a.join(0, spec("b"));
    let actions = drain(&mut a);
    assert_eq!(connects(&actions), vec!["b"]);
    assert!(sent(&actions).is_empty());
    assert!(a.active_view().is_empty(), "reserved, not active, until the link is up");
    a.link_up(1, &link("b"));
    let actions = drain(&mut a);
    assert_eq!(sent(&actions), vec![("b".into(), Message::Join { addrs: vec![addr("a")] })]);
    assert!(actions.contains(&Action::NodeUp { node: "b".into() }));
    assert_eq!(a.members(), vec!["a", "b"]);
    // joining oneself is ignored
    a.join(2, spec("a"));
    assert!(drain(&mut a).is_empty());
}

#[test]
fn join_receiver_adds_the_joiner_and_forwards_join_to_its_other_peers() {
    let mut c = node("c");
    make_active(&mut c, "a");
    make_active(&mut c, "b");
    recv(&mut c, "n", Message::Join { addrs: vec![addr("n")] });
    let actions = drain(&mut c);
    assert_eq!(connects(&actions), vec!["n"]);
    let fwd = Message::ForwardJoin { joiner: spec("n"), ttl: 6 };
    assert_eq!(sent(&actions), vec![("a".into(), fwd.clone()), ("b".into(), fwd)]);
    c.link_up(0, &link("n"));
    assert_eq!(c.active_view(), vec!["a", "b", "n"]);
}

#[test]
fn forward_join_ends_in_the_active_view_when_ttl_is_zero() {
    let mut r = node("r");
    make_active(&mut r, "s");
    make_active(&mut r, "t");
    recv(&mut r, "s", Message::ForwardJoin { joiner: spec("n"), ttl: 0 });
    let actions = drain(&mut r);
    assert_eq!(connects(&actions), vec!["n"]);
    r.link_up(0, &link("n"));
    let actions = drain(&mut r);
    assert_eq!(sent(&actions), vec![("n".into(), Message::Neighbor { addrs: vec![addr("r")] })]);
    assert!(r.active_view().contains(&"n".to_string()));
}

#[test]
fn forward_join_ends_when_the_sender_is_the_only_active_peer() {
    let mut r = node("r");
    make_active(&mut r, "s");
    recv(&mut r, "s", Message::ForwardJoin { joiner: spec("n"), ttl: 4 });
    assert_eq!(connects(&drain(&mut r)), vec!["n"]);
}

#[test]
fn forward_join_walks_on_and_adds_to_the_passive_view_at_prwl() {
    let cfg = HyParViewConfig { passive_rwl: 3, ..Default::default() };
    let mut r = node_with("r", cfg);
    make_active(&mut r, "s");
    make_active(&mut r, "t");
    recv(&mut r, "s", Message::ForwardJoin { joiner: spec("n"), ttl: 3 });
    let actions = drain(&mut r);
    assert_eq!(sent(&actions), vec![("t".into(), Message::ForwardJoin { joiner: spec("n"), ttl: 2 })]);
    assert_eq!(r.passive_view(), vec!["n"]);
    recv(&mut r, "s", Message::ForwardJoin { joiner: spec("m"), ttl: 5 });
    drain(&mut r);
    assert_eq!(r.passive_view(), vec!["n"], "only the prwl hop adds to the passive view");
    // a walk about ourselves or an active peer stops
    recv(&mut r, "s", Message::ForwardJoin { joiner: spec("r"), ttl: 0 });
    recv(&mut r, "s", Message::ForwardJoin { joiner: spec("t"), ttl: 0 });
    assert!(drain(&mut r).is_empty());
}

#[test]
fn neighbor_joins_the_active_view_and_a_full_view_drops_a_random_peer() {
    let mut n = node("n");
    for p in ["a", "b", "c", "d", "e", "f"] {
        make_active(&mut n, p);
    }
    assert_eq!(n.active_view().len(), 6);
    recv(&mut n, "g", Message::Neighbor { addrs: vec![addr("g")] });
    let actions = drain(&mut n);
    let msgs = sent(&actions);
    assert_eq!(msgs.len(), 1);
    let (victim, msg) = &msgs[0];
    assert_eq!(*msg, Message::Disconnect);
    assert_eq!(disconnects(&actions), vec![victim.clone()]);
    assert!(actions.contains(&Action::NodeDown { node: victim.clone() }));
    assert_eq!(n.passive_view(), vec![victim.clone()]);
    n.link_up(0, &link("g"));
    assert_eq!(n.active_view().len(), 6);
    assert!(n.active_view().contains(&"g".to_string()));
}

#[test]
fn a_new_neighbor_is_greeted_back_once_so_a_crossed_disconnect_heals() {
    let mut n = node("n");
    make_active(&mut n, "a");
    // a's NEIGHBOR crossed our DISCONNECT: a will drop us, so we greet it back
    recv(&mut n, "a", Message::Disconnect);
    drain(&mut n);
    recv(&mut n, "a", Message::Neighbor { addrs: vec![addr("a")] });
    n.link_up(0, &link("a"));
    assert_eq!(sent(&drain(&mut n)), vec![("a".into(), Message::Neighbor { addrs: vec![addr("n")] })]);
    // a known neighbour's NEIGHBOR (the greeting of our greeting) ends the exchange
    recv(&mut n, "a", Message::Neighbor { addrs: vec![addr("a")] });
    assert!(drain(&mut n).is_empty());
}

#[test]
fn low_priority_request_is_accepted_with_room_and_rejected_when_full() {
    let mut n = node("n");
    recv(&mut n, "a", Message::NeighborRequest { priority: Priority::Low, addrs: vec![addr("a")] });
    let actions = drain(&mut n);
    assert_eq!(connects(&actions), vec!["a"]);
    n.link_up(0, &link("a"));
    assert_eq!(sent(&drain(&mut n)), vec![("a".into(), Message::NeighborAccept { addrs: vec![addr("n")] })]);
    for p in ["b", "c", "d", "e", "f"] {
        make_active(&mut n, p);
    }
    recv(&mut n, "x", Message::NeighborRequest { priority: Priority::Low, addrs: vec![addr("x")] });
    // the reject travels on a transient link: connect, send, close
    assert_eq!(connects(&drain(&mut n)), vec!["x"]);
    n.link_up(0, &link("x"));
    let actions = drain(&mut n);
    assert_eq!(sent(&actions), vec![("x".into(), Message::NeighborReject)]);
    assert_eq!(disconnects(&actions), vec!["x"]);
    assert!(!n.active_view().contains(&"x".to_string()));
}

#[test]
fn high_priority_request_is_accepted_even_when_full() {
    let mut n = node("n");
    for p in ["a", "b", "c", "d", "e", "f"] {
        make_active(&mut n, p);
    }
    recv(&mut n, "x", Message::NeighborRequest { priority: Priority::High, addrs: vec![addr("x")] });
    let actions = drain(&mut n);
    assert_eq!(sent(&actions).iter().filter(|(_, m)| *m == Message::Disconnect).count(), 1);
    n.link_up(0, &link("x"));
    let actions = drain(&mut n);
    assert_eq!(sent(&actions), vec![("x".into(), Message::NeighborAccept { addrs: vec![addr("n")] })]);
    assert_eq!(n.active_view().len(), 6);
}

#[test]
fn accept_makes_the_requested_peer_active_and_reject_moves_on_to_another() {
    let mut n = node("n");
    make_passive(&mut n, &["p", "q"]);
    // promotion below active_min_size asks passive peers, high priority while the view is empty
    n.tick(0); // arms the timers
    let due = n.poll_timeout().unwrap();
    n.tick(due.max(n.next_promotion.unwrap()));
    let actions = drain(&mut n);
    let asked = connects(&actions);
    assert_eq!(asked.len(), 2, "both passive peers asked (min is 3, only 2 known)");
    n.link_up(1, &link(&asked[0]));
    n.link_up(1, &link(&asked[1]));
    let actions = drain(&mut n);
    for (_, m) in sent(&actions) {
        assert_eq!(m, Message::NeighborRequest { priority: Priority::High, addrs: vec![addr("n")] });
    }
    recv(&mut n, &asked[0], Message::NeighborAccept { addrs: vec![addr(&asked[0])] });
    let actions = drain(&mut n);
    assert!(actions.contains(&Action::NodeUp { node: asked[0].clone() }));
    assert_eq!(n.active_view(), vec![asked[0].clone()]);
    assert!(!n.passive_view().contains(&asked[0]));
    // a rejection closes the link, keeps the peer passive, and asks the next untried one
    make_passive(&mut n, &["r"]);
    recv(&mut n, &asked[1], Message::NeighborReject);
    let actions = drain(&mut n);
    assert_eq!(disconnects(&actions), vec![asked[1].clone()]);
    assert_eq!(connects(&actions), vec!["r"]);
    assert!(n.passive_view().contains(&asked[1]));
    // a stray reject or accept from a node we never asked changes nothing harmful
    recv(&mut n, "zz", Message::NeighborReject);
    recv(&mut n, "zz", Message::NeighborAccept { addrs: vec![addr("zz")] });
    assert!(drain(&mut n).is_empty());
    // a DISCONNECT that crossed our request is not its answer
    recv(&mut n, "r", Message::Disconnect);
    assert!(drain(&mut n).is_empty());
    n.link_up(1, &link("r"));
    recv(&mut n, "r", Message::NeighborAccept { addrs: vec![addr("r")] });
    assert_eq!(n.active_view(), vec![asked[0].clone(), "r".to_string()]);
}

#[test]
fn disconnect_moves_the_peer_to_the_passive_view() {
    let mut n = node("n");
    make_active(&mut n, "a");
    make_active(&mut n, "b");
    recv(&mut n, "a", Message::Disconnect);
    let actions = drain(&mut n);
    assert_eq!(disconnects(&actions), vec!["a"]);
    assert!(actions.contains(&Action::NodeDown { node: "a".into() }));
    assert!(sent(&actions).is_empty(), "no DISCONNECT back");
    assert_eq!(n.active_view(), vec!["b"]);
    assert_eq!(n.passive_view(), vec!["a"]);
    // from a non-neighbour it is ignored
    recv(&mut n, "q", Message::Disconnect);
    assert!(drain(&mut n).is_empty());
}

#[test]
fn shuffle_timer_sends_itself_and_samples_of_both_views_to_an_active_peer() {
    let mut n = node("n");
    for p in ["a", "b", "c", "d"] {
        make_active(&mut n, p);
    }
    make_passive(&mut n, &["p1", "p2", "p3", "p4", "p5"]);
    let at = n.next_shuffle.unwrap();
    n.tick(at - 1);
    assert!(sent(&drain(&mut n)).is_empty(), "not due yet");
    n.tick(at);
    let msgs = sent(&drain(&mut n));
    assert_eq!(msgs.len(), 1);
    let (to, Message::Shuffle { origin, ttl, sample }) = &msgs[0] else { panic!("not a shuffle: {msgs:?}") };
    assert!(["a", "b", "c", "d"].contains(&to.as_str()));
    assert_eq!((origin, *ttl), (&spec("n"), 6));
    assert_eq!(sample[0], spec("n"));
    let names: Vec<&str> = sample[1..].iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 3 + 4);
    assert!(!names.contains(&to.as_str()));
    assert_eq!(names.iter().filter(|s| s.starts_with('p')).count(), 4);
    assert_eq!(n.next_shuffle, Some(at + 10_000));
}

#[test]
fn shuffle_walks_on_while_ttl_lasts() {
    let mut n = node("n");
    make_active(&mut n, "s");
    make_active(&mut n, "t");
    let sample = vec![spec("o"), spec("x")];
    recv(&mut n, "s", Message::Shuffle { origin: spec("o"), ttl: 3, sample: sample.clone() });
    assert_eq!(sent(&drain(&mut n)), vec![("t".into(), Message::Shuffle { origin: spec("o"), ttl: 2, sample })]);
    assert!(n.passive_view().is_empty());
}

#[test]
fn shuffle_ends_with_a_reply_to_the_origin_and_both_sides_integrate() {
    let mut n = node("n");
    make_active(&mut n, "s");
    make_passive(&mut n, &["p1", "p2", "p3"]);
    let sample = vec![spec("o"), spec("x"), spec("n"), spec("s")];
    recv(&mut n, "s", Message::Shuffle { origin: spec("o"), ttl: 1, sample });
    let actions = drain(&mut n);
    assert_eq!(connects(&actions), vec!["o"], "transient link to the origin");
    n.link_up(0, &link("o"));
    let actions = drain(&mut n);
    let msgs = sent(&actions);
    let Message::ShuffleReply { sample: reply } = &msgs[0].1 else { panic!("{msgs:?}") };
    assert_eq!(reply.len(), 3, "as many as received, limited by the passive view");
    assert_eq!(disconnects(&actions), vec!["o"]);
    // ourselves and active peers are not added; o and x are
    let passive: BTreeSet<String> = n.passive_view().into_iter().collect();
    assert_eq!(passive, ["o", "p1", "p2", "p3", "x"].iter().map(|s| s.to_string()).collect());

    // The origin evicts the peers it sent first when its passive view is full.
    let cfg = HyParViewConfig { passive_max_size: 4, shuffle_k_active: 0, shuffle_k_passive: 2, ..Default::default() };
    let mut o = node_with("o", cfg);
    make_active(&mut o, "n");
    make_passive(&mut o, &["q1", "q2", "q3", "q4"]);
    o.tick(o.next_shuffle.unwrap());
    let msgs = sent(&drain(&mut o));
    let Message::Shuffle { sample, .. } = &msgs[0].1 else { panic!() };
    let shipped: BTreeSet<String> = sample[1..].iter().map(|s| s.name.clone()).collect();
    recv(&mut o, "n", Message::ShuffleReply { sample: vec![spec("y1"), spec("y2")] });
    let passive: BTreeSet<String> = o.passive_view().into_iter().collect();
    assert!(passive.contains("y1") && passive.contains("y2"));
    assert!(passive.is_disjoint(&shipped), "the shipped peers were evicted, not the others");
}

#[test]
fn shuffle_returning_to_its_origin_is_dropped() {
    let mut n = node("n");
    make_active(&mut n, "s");
    recv(&mut n, "s", Message::Shuffle { origin: spec("n"), ttl: 1, sample: vec![spec("n"), spec("x")] });
    assert!(drain(&mut n).is_empty());
    assert!(n.passive_view().is_empty());
}

#[test]
fn promotion_timer_fills_to_the_minimum_then_grows_one_by_one_to_the_maximum() {
    // below the minimum (2 of 3): requests until the minimum is reached
    let mut n = node("n");
    for p in ["a", "b"] {
        make_active(&mut n, p);
    }
    make_passive(&mut n, &["p1", "p2", "p3"]);
    let at = n.next_promotion.unwrap();
    n.tick(at);
    let asked = connects(&drain(&mut n));
    assert_eq!(asked.len(), 1, "one request brings the view back to the minimum");
    n.link_up(0, &link(&asked[0]));
    let msgs = sent(&drain(&mut n));
    // below the minimum, not empty: high priority, so full peers cannot keep the node there
    assert_eq!(msgs, vec![(asked[0].clone(), Message::NeighborRequest { priority: Priority::High, addrs: vec![addr("n")] })]);
    assert_eq!(n.next_promotion, Some(at + 5000));

    // between the minimum and the maximum: one low-priority request per tick, so components
    // left by a healed partition link up again
    let mut m = node("m");
    for p in ["a", "b", "c"] {
        make_active(&mut m, p);
    }
    make_passive(&mut m, &["p1", "p2"]);
    m.tick(m.next_promotion.unwrap());
    let asked = connects(&drain(&mut m));
    assert_eq!(asked.len(), 1, "at active_min_size: one request towards the maximum");
    m.link_up(0, &link(&asked[0]));
    let msgs = sent(&drain(&mut m));
    assert_eq!(msgs, vec![(asked[0].clone(), Message::NeighborRequest { priority: Priority::Low, addrs: vec![addr("m")] })]);

    // at the maximum: nothing
    let mut full = node("f");
    for p in ["a", "b", "c", "d", "e", "g"] {
        make_active(&mut full, p);
    }
    make_passive(&mut full, &["p1"]);
    full.tick(full.next_promotion.unwrap());
    assert!(connects(&drain(&mut full)).is_empty(), "at active_max_size: no promotion");

    let mut off = node_with("o", HyParViewConfig { random_promotion: false, ..Default::default() });
    make_passive(&mut off, &["p1"]);
    off.tick(off.next_promotion.unwrap());
    assert!(connects(&drain(&mut off)).is_empty());
}

/// A NEIGHBOR_REQUEST whose answer never comes is given up after two promotion ticks: the
/// peer returns to the passive view and another passive peer is asked.
#[test]
fn an_unanswered_request_is_given_up_and_another_peer_asked() {
    let mut n = node("n");
    make_passive(&mut n, &["p1"]);
    let mut at = n.next_promotion.unwrap();
    n.tick(at);
    let asked = connects(&drain(&mut n));
    assert_eq!(asked, vec!["p1"]);
    n.link_up(at, &link("p1"));
    drain(&mut n); // the request went out; no answer will come
    make_passive(&mut n, &["p2"]);
    for _ in 0..2 {
        at += 5000;
        n.tick(at);
        assert!(!drain(&mut n).contains(&Action::Disconnect { node: "p1".into() }), "still waiting");
    }
    at += 5000;
    n.tick(at);
    let actions = drain(&mut n);
    assert!(actions.contains(&Action::Disconnect { node: "p1".into() }), "{actions:?}");
    assert!(n.passive_view().contains(&"p1".to_string()));
    assert!(!connects(&actions).is_empty(), "another passive peer is asked");
}

/// A request is given up after two ticks of its own: before, the count of an earlier request to
/// the same peer carried over, so a request sent just after the first one was answered could be
/// given up one tick later, before its answer came back. A request that went out is withdrawn
/// with a DISCONNECT on its link: a peer that accepted it late drops us again instead of keeping
/// us as a neighbour we do not hold.
#[test]
fn a_request_waits_its_own_ticks_and_is_withdrawn_when_given_up() {
    let mut n = node("n");
    make_passive(&mut n, &["p"]);
    let mut at = n.next_promotion.unwrap();
    n.tick(at);
    assert_eq!(connects(&drain(&mut n)), vec!["p"]);
    n.link_up(at, &link("p"));
    drain(&mut n);
    at += 5000;
    n.tick(at); // the first request has waited one tick
    drain(&mut n);
    recv(&mut n, "p", Message::NeighborReject); // its answer: p is asked again at once
    assert_eq!(connects(&drain(&mut n)), vec!["p"]);
    n.link_up(at, &link("p"));
    drain(&mut n);
    for _ in 0..2 {
        at += 5000;
        n.tick(at);
        let actions = drain(&mut n);
        assert!(!actions.contains(&Action::Disconnect { node: "p".into() }), "given up before two ticks of its own: {actions:?}");
    }
    at += 5000;
    n.tick(at);
    let actions = drain(&mut n);
    assert_eq!(sent(&actions), vec![("p".into(), Message::Disconnect)], "withdrawn on its own link");
    let withdrawn = actions.iter().position(|a| matches!(a, Action::SendControl { to, .. } if to == "p")).unwrap();
    assert_eq!(actions.iter().position(|a| *a == Action::Disconnect { node: "p".into() }), Some(withdrawn + 1), "then closed");
    assert!(n.passive_view().contains(&"p".to_string()));
    // a request given up before its link came up never went out: nothing to withdraw
    let mut m = node("m");
    make_passive(&mut m, &["q"]);
    let mut at = m.next_promotion.unwrap();
    m.tick(at);
    assert_eq!(connects(&drain(&mut m)), vec!["q"]);
    for _ in 0..3 {
        at += 5000;
        m.tick(at);
    }
    let actions = drain(&mut m);
    assert!(actions.contains(&Action::Disconnect { node: "q".into() }));
    assert!(sent(&actions).is_empty());
}

/// A SHUFFLE or FORWARD_JOIN hop goes only to active peers: one from a node we hold neither as
/// a neighbour nor as a peer we are asking means it holds us while we do not hold it (a reply
/// matched to the wrong request, a DISCONNECT that crossed a request). It is told to drop us.
#[test]
fn a_non_neighbour_that_shuffles_or_forwards_a_join_to_us_is_told_to_drop_us() {
    let mut n = node("n");
    make_active(&mut n, "a");
    make_passive(&mut n, &["p"]);
    let shuffle = Message::Shuffle { origin: spec("o"), ttl: 2, sample: vec![spec("o")] };
    // from a neighbour: walked on, nothing else
    recv(&mut n, "a", shuffle.clone());
    assert!(!sent(&drain(&mut n)).iter().any(|(_, m)| *m == Message::Disconnect));
    // from a passive peer: DISCONNECT on a transient link, and the walk is still served
    recv(&mut n, "p", shuffle.clone());
    let actions = drain(&mut n);
    assert!(connects(&actions).contains(&"p".to_string()));
    n.link_up(0, &link("p"));
    let actions = drain(&mut n);
    assert_eq!(sent(&actions), vec![("p".into(), Message::Disconnect)]);
    assert_eq!(disconnects(&actions), vec!["p"]);
    assert_eq!(n.active_view(), vec!["a"]);
    assert!(n.passive_view().contains(&"p".to_string()), "kept as passive");
    recv(&mut n, "p", Message::ForwardJoin { joiner: spec("j"), ttl: 3 });
    assert!(connects(&drain(&mut n)).contains(&"p".to_string()));
    // from a peer we are asking: its answer will settle it
    make_passive(&mut n, &["q"]);
    n.link_down(0, &link("a")); // asks the passive peers at once
    drain(&mut n);
    n.link_up(0, &link("q"));
    drain(&mut n);
    recv(&mut n, "q", shuffle.clone());
    assert!(!sent(&drain(&mut n)).iter().any(|(to, m)| to == "q" && *m == Message::Disconnect));
    // from a node we know nothing of: no address to answer on
    recv(&mut n, "zz", shuffle);
    assert!(!connects(&drain(&mut n)).contains(&"zz".to_string()));
}

#[test]
fn a_dropped_active_link_is_repaired_from_the_passive_view_at_once() {
    let mut n = node("n");
    make_active(&mut n, "a");
    make_passive(&mut n, &["p1"]);
    n.link_down(7, &link("a"));
    let actions = drain(&mut n);
    assert!(actions.contains(&Action::NodeDown { node: "a".into() }));
    assert_eq!(connects(&actions), vec!["p1"]);
    n.link_up(8, &link("p1"));
    let msgs = sent(&drain(&mut n));
    assert_eq!(msgs, vec![("p1".into(), Message::NeighborRequest { priority: Priority::High, addrs: vec![addr("n")] })]);
    assert_eq!(n.unreachable_peers(), vec!["a"]);
    // a down event for a link we do not track, or another channel, is ignored
    n.link_down(9, &link("zz"));
    n.link_down(9, &LinkId { node: "p1".into(), channel: channels().default_index(), conn: 0 });
    assert!(drain(&mut n).is_empty());
}

#[test]
fn unreachable_peers_are_probed_with_backoff_until_they_answer() {
    let mut n = node("n");
    make_active(&mut n, "a");
    n.link_down(0, &link("a"));
    drain(&mut n);
    let interval = 5000;
    // the probe is due one interval after the drop; the promotion timer runs it
    let mut now = n.next_promotion.unwrap();
    while now < interval {
        n.tick(now);
        assert!(connects(&drain(&mut n)).is_empty(), "not due before {interval}");
        now += interval;
    }
    n.tick(now);
    assert_eq!(connects(&drain(&mut n)), vec!["a"]);
    n.link_down(now, &link("a")); // still unreachable: backoff doubles
    drain(&mut n);
    n.tick(now + interval);
    assert!(connects(&drain(&mut n)).is_empty());
    n.tick(now + 2 * interval);
    assert_eq!(connects(&drain(&mut n)), vec!["a"]);
    n.link_up(now + 2 * interval, &link("a"));
    let msgs = sent(&drain(&mut n));
    assert_eq!(msgs, vec![("a".into(), Message::NeighborRequest { priority: Priority::High, addrs: vec![addr("n")] })]);
    recv(&mut n, "a", Message::NeighborAccept { addrs: vec![addr("a")] });
    assert_eq!(n.active_view(), vec!["a"]);
    assert!(n.unreachable_peers().is_empty());
}

#[test]
fn a_failed_request_marks_the_peer_unreachable_and_tries_the_next() {
    let mut n = node("n");
    make_active(&mut n, "a");
    make_passive(&mut n, &["p1", "p2"]);
    n.link_down(0, &link("a"));
    let first = connects(&drain(&mut n));
    assert_eq!(first.len(), 2, "fills towards active_max_size");
    n.link_down(0, &link(&first[0]));
    assert!(!n.passive_view().contains(&first[0]));
    assert!(n.unreachable_peers().contains(&first[0]));
}

#[test]
fn a_join_contact_that_cannot_be_reached_is_probed_later() {
    let mut n = node("n");
    n.join(0, spec("c"));
    drain(&mut n);
    n.link_down(0, &link("c"));
    assert_eq!(n.unreachable_peers(), vec!["c"]);
}

#[test]
fn transient_links_flush_then_close_and_failures_drop_their_frames() {
    let mut n = node("n");
    recv(&mut n, "s", Message::Shuffle { origin: spec("o"), ttl: 0, sample: vec![spec("o")] });
    assert_eq!(connects(&drain(&mut n)), vec!["o"]);
    n.link_down(0, &link("o"));
    assert!(drain(&mut n).is_empty());
    assert!(n.unreachable_peers().is_empty(), "a transient peer is not ours to probe");
}

#[test]
fn demoting_a_peer_whose_link_is_still_opening_sends_disconnect_once_it_is_up() {
    let cfg = HyParViewConfig { active_max_size: 1, active_min_size: 1, ..Default::default() };
    let mut n = node_with("n", cfg);
    recv(&mut n, "a", Message::Neighbor { addrs: vec![addr("a")] });
    drain(&mut n);
    recv(&mut n, "b", Message::Neighbor { addrs: vec![addr("b")] }); // a is dropped before its link is up
    let actions = drain(&mut n);
    assert!(disconnects(&actions).is_empty());
    n.link_up(0, &link("a"));
    let actions = drain(&mut n);
    // the queued greeting, then the DISCONNECT that undoes it, then the link closes
    let greeting = Message::Neighbor { addrs: vec![addr("n")] };
    assert_eq!(sent(&actions), vec![("a".into(), greeting), ("a".into(), Message::Disconnect)]);
    assert_eq!(disconnects(&actions), vec!["a"]);
    assert!(!actions.contains(&Action::NodeUp { node: "a".into() }));
}

#[test]
fn leaving_disconnects_every_active_peer_and_forgets_the_views() {
    let mut n = node("n");
    make_active(&mut n, "a");
    make_active(&mut n, "b");
    make_passive(&mut n, &["p"]);
    n.leave(0, "a");
    let actions = drain(&mut n);
    assert_eq!(sent(&actions), vec![("a".into(), Message::Disconnect)]);
    assert_eq!(n.active_view(), vec!["b"]);
    assert_eq!(n.passive_view(), vec!["p"], "a left: not kept as passive");
    n.leave(0, "p");
    assert!(n.passive_view().is_empty());
    n.leave(0, "n");
    let actions = drain(&mut n);
    assert_eq!(sent(&actions), vec![("b".into(), Message::Disconnect)]);
    assert!(actions.contains(&Action::NodeDown { node: "b".into() }));
    assert_eq!(n.members(), vec!["n"]);
}

#[test]
fn config_is_validated() {
    let bad = |cfg| HyParView::new(spec("a"), &channels(), cfg, 1).unwrap_err();
    let d = HyParViewConfig::default();
    assert_eq!(bad(HyParViewConfig { active_max_size: 0, ..d }), ConfigError::EmptyActiveView);
    assert_eq!(bad(HyParViewConfig { active_min_size: 7, ..d }), ConfigError::MinAboveMax { min: 7, max: 6 });
    assert_eq!(bad(HyParViewConfig { passive_rwl: 7, ..d }), ConfigError::PassiveWalkLonger { passive: 7, active: 6 });
    assert_eq!(bad(HyParViewConfig { shuffle_interval: 0, ..d }), ConfigError::ZeroInterval("shuffle_interval"));
    assert_eq!(bad(HyParViewConfig { shuffle_k_passive: 300, ..d }), ConfigError::ShuffleTooLarge);
}

#[test]
fn every_message_roundtrips_and_garbage_is_an_error() {
    let v6: SocketAddr = "[::1]:7".parse().unwrap();
    let all = [
        Message::Join { addrs: vec![addr("a"), v6] },
        Message::ForwardJoin { joiner: spec("j"), ttl: 3 },
        Message::Neighbor { addrs: vec![] },
        Message::NeighborRequest { priority: Priority::High, addrs: vec![addr("b")] },
        Message::NeighborRequest { priority: Priority::Low, addrs: vec![addr("b")] },
        Message::NeighborAccept { addrs: vec![addr("c")] },
        Message::NeighborReject,
        Message::Disconnect,
        Message::Shuffle { origin: spec("o"), ttl: 6, sample: vec![spec("o"), spec("x")] },
        Message::ShuffleReply { sample: vec![] },
    ];
    for msg in all {
        assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
    }
    assert_eq!(Message::decode(&[1]).unwrap_err(), ControlError::UnknownTag(1));
    assert!(matches!(Message::decode(&[]), Err(ControlError::Malformed(_))));
    assert!(matches!(Message::decode(&[TAG_DISCONNECT, 0]), Err(ControlError::Malformed(WireError::Trailing { .. }))));
    // a count promising more than the body holds is a truncation, not a huge allocation
    assert!(matches!(Message::decode(&[TAG_JOIN, 0xff, 0xff]), Err(ControlError::Malformed(WireError::Truncated { .. }))));
    assert!(matches!(Message::decode(&[TAG_SHUFFLE_REPLY, 1, 0, 0, 0, 0]), Err(ControlError::Malformed(WireError::BadValue { .. }))));
    let mut n = node("n");
    assert!(n.control(0, "x", &[TAG_NEIGHBOR_REQUEST, 2, 0, 0]).is_err());
    assert!(drain(&mut n).is_empty());
}

proptest! {
    #[test]
    fn random_control_bodies_never_panic(tag in 0u8..30, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut n = node("n");
        make_active(&mut n, "a");
        let mut body = vec![tag];
        body.extend_from_slice(&data);
        let _ = n.control(0, "a", &body);
        let _ = n.control(0, "b", &data);
    }
}

/// In-order network: a Connect succeeds at once if the target runs and is on the same side of
/// the partition; control frames travel only on links that are up; a crash or a partition drops
/// the links it cuts at both ends.
struct Net {
    nodes: BTreeMap<String, HyParView>,
    side: BTreeMap<String, u8>,
    up: BTreeSet<(String, String)>,
    now: u64,
    /// DISCONNECTs sent so far: each one drops a neighbour.
    disconnects: usize,
}

impl Net {
    fn new(count: usize) -> Self {
        Net::with_config(count, HyParViewConfig::default(), 0)
    }

    /// `count` nodes running `cfg`, node `i` seeded with `seed + i`.
    fn with_config(count: usize, cfg: HyParViewConfig, seed: u64) -> Self {
        let mut net = Net { nodes: BTreeMap::new(), side: BTreeMap::new(), up: BTreeSet::new(), now: 0, disconnects: 0 };
        for i in 0..count {
            let name = format!("n{i:03}");
            let n = HyParView::new(spec(&name), &channels(), cfg, seed + i as u64).unwrap();
            net.side.insert(name.clone(), 0);
            net.nodes.insert(name, n);
        }
        net
    }

    fn reachable(&self, a: &str, b: &str) -> bool {
        self.nodes.contains_key(b) && self.side.get(a) == self.side.get(b)
    }

    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut work = Vec::new();
            for (name, n) in &mut self.nodes {
                while let Some(a) = n.poll_action() {
                    work.push((name.clone(), a));
                }
            }
            if work.is_empty() {
                return;
            }
            let now = self.now;
            for (from, action) in work {
                match action {
                    Action::Dial { link, .. } => {
                        let ok = self.reachable(&from, &link.node);
                        let Some(n) = self.nodes.get_mut(&from) else { continue };
                        if ok {
                            self.up.insert((from.clone(), link.node.clone()));
                            n.link_up(now, &link);
                        } else {
                            n.link_down(now, &link);
                        }
                    }
                    Action::Disconnect { node } => {
                        self.up.remove(&(from, node));
                    }
                    Action::SendControl { to, body } => {
                        assert!(self.up.contains(&(from.clone(), to.clone())), "{from} sent to {to} without a link");
                        if body[..] == [TAG_DISCONNECT] {
                            self.disconnects += 1;
                        }
                        if let Some(n) = self.nodes.get_mut(&to) {
                            n.control(now, &from, &body).unwrap();
                        }
                    }
                    _ => {}
                }
            }
        }
        panic!("network did not quiesce");
    }

    fn cut(&mut self, keep: impl Fn(&str, &str) -> bool) {
        let cut: Vec<(String, String)> = self.up.iter().filter(|(a, b)| !keep(a, b)).cloned().collect();
        for (a, b) in cut {
            self.up.remove(&(a.clone(), b.clone()));
            let now = self.now;
            if let Some(n) = self.nodes.get_mut(&a) {
                n.link_down(now, &link(&b));
            }
        }
        self.run();
    }

    fn crash(&mut self, names: &[String]) {
        for name in names {
            self.nodes.remove(name);
        }
        let nodes: BTreeSet<String> = self.nodes.keys().cloned().collect();
        self.cut(|a, b| nodes.contains(a) && nodes.contains(b));
    }

    fn partition(&mut self, side_of: impl Fn(&str) -> u8) {
        for (name, side) in &mut self.side {
            *side = side_of(name);
        }
        let side = self.side.clone();
        self.cut(|a, b| side[a] == side[b]);
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(t) = self.nodes.values().filter_map(|n| n.poll_timeout()).min().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            let now = self.now;
            for n in self.nodes.values_mut() {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.tick(now);
                }
            }
            self.run();
        }
        self.now = end;
    }

    /// Every node joins a random earlier one.
    fn join_all(&mut self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for i in 1..names.len() {
            let contact = spec(&names[rng.gen_range(0..i)]);
            let now = self.now;
            self.nodes.get_mut(&names[i]).unwrap().join(now, contact);
            self.run();
            self.advance(100);
        }
    }

    /// Every node but the first joins the first, all at once (as a cluster started by a script).
    fn join_one_seed(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let now = self.now;
        for name in &names[1..] {
            self.nodes.get_mut(name).unwrap().join(now, spec(&names[0]));
        }
        self.run();
    }

    fn components(&self) -> usize {
        let names: Vec<&String> = self.nodes.keys().collect();
        let mut seen = BTreeSet::new();
        let mut count = 0;
        for start in &names {
            if !seen.insert((*start).clone()) {
                continue;
            }
            count += 1;
            let mut stack = vec![(*start).clone()];
            while let Some(n) = stack.pop() {
                for peer in self.nodes[&n].active_view() {
                    if self.nodes.contains_key(&peer) && seen.insert(peer.clone()) {
                        stack.push(peer);
                    }
                }
            }
        }
        count
    }

    fn assert_symmetric_and_bounded(&self) {
        let max = self.nodes.values().next().map_or(0, |n| n.config().active_max_size);
        for (name, n) in &self.nodes {
            let view = n.active_view();
            assert!(view.len() <= max, "{name} has {} active peers", view.len());
            for peer in view {
                let back = self.nodes.get(&peer).map(|p| p.active_view().contains(name));
                assert_eq!(back, Some(true), "{name} -> {peer} is not symmetric");
            }
        }
    }
}

#[test]
fn a_small_network_forms_one_symmetric_component() {
    let mut net = Net::new(60);
    net.join_all(1);
    net.advance(60_000);
    assert_eq!(net.components(), 1);
    net.assert_symmetric_and_bounded();
    let sizes: Vec<usize> = net.nodes.values().map(|n| n.active_view().len()).collect();
    assert!(sizes.iter().all(|s| *s >= 2), "active view sizes {sizes:?}");
    assert!(net.nodes.values().map(|n| n.passive_view().len()).sum::<usize>() > 60 * 10, "passive views fill up");
}

#[test]
fn the_overlay_repairs_itself_after_half_of_the_nodes_crash() {
    let mut net = Net::new(60);
    net.join_all(2);
    net.advance(60_000);
    let dead: Vec<String> = net.nodes.keys().filter(|n| n[1..].parse::<u32>().unwrap() % 2 == 1).cloned().collect();
    net.crash(&dead);
    net.advance(30_000);
    assert_eq!(net.components(), 1);
    net.assert_symmetric_and_bounded();
}

#[test]
fn the_overlay_heals_after_a_partition_heals() {
    let mut net = Net::new(40);
    net.join_all(3);
    net.advance(60_000);
    net.partition(|n| (n[1..].parse::<u32>().unwrap() % 2) as u8);
    net.advance(60_000);
    assert_eq!(net.components(), 2, "split while partitioned");
    net.partition(|_| 0);
    net.advance(120_000);
    assert_eq!(net.components(), 1, "one component again after the partition heals");
    net.assert_symmetric_and_bounded();
}

/// A small overlay whose views are nearly full could settle split: in the 6-node broadcast CT
/// (max 3, min 2) as an island {pb2, pb3}, one neighbour each, next to a K4 of full nodes. The
/// island asked with low priority (its views were not empty) and every node it could ask was
/// full and rejected it. Many seeds of such clusters, every node joining the first at once: each
/// must end as one component with symmetric views, none below the escalation threshold
/// (`min(active_min_size, active_max_size − 1)`), and then stay quiet: no neighbour displaced
/// any more, so high-priority requests do not cascade, also when `active_min_size ==
/// active_max_size`. In these sizes a component of full nodes leaves too few nodes outside it
/// to reach the threshold, so a split always has a node that escalates.
#[test]
fn small_nearly_full_overlays_never_stay_split() {
    let cfg = |max, min| HyParViewConfig {
        active_max_size: max,
        active_min_size: min,
        shuffle_interval: 1000,
        random_promotion_interval: 500,
        ..Default::default()
    };
    // (nodes, config, seeds): the broadcast CT's cluster first (before the fix about one seed in
    // seven ended with a node below the minimum, seed 160 as the CT's island), then min == max
    // with an even and an odd sum of full views, then a larger maximum.
    let cases = [(6, cfg(3, 2), 300), (6, cfg(3, 3), 100), (5, cfg(3, 3), 50), (7, cfg(4, 2), 50)];
    for (count, cfg, seeds) in cases {
        let threshold = cfg.active_min_size.min(cfg.active_max_size - 1);
        let views = |net: &Net| -> Vec<(String, Vec<String>)> {
            net.nodes.iter().map(|(n, h)| (n.clone(), h.active_view())).collect()
        };
        let mut failures = Vec::new();
        for seed in 0..seeds {
            let mut net = Net::with_config(count, cfg, seed * 1000);
            net.join_one_seed();
            net.advance(20_000);
            if net.components() != 1 || net.nodes.values().any(|n| n.active_view().len() < threshold) {
                failures.push((seed, net.components(), views(&net)));
                continue;
            }
            net.assert_symmetric_and_bounded();
            let before = net.disconnects;
            net.advance(10_000);
            assert_eq!(net.disconnects, before, "{count} nodes {cfg:?} seed {seed}: still displacing, {:?}", views(&net));
        }
        assert!(
            failures.is_empty(),
            "{count} nodes, max {} min {}: {} of {seeds} seeds split or below {threshold}; first (seed, components, views): {:?}",
            cfg.active_max_size,
            cfg.active_min_size,
            failures.len(),
            failures[0]
        );
    }
}


/// A network that plays `partisan_net`'s shell for every node, with its timing and its partition
/// semantics, for the races the in-order [`Net`] cannot show. Time runs in microseconds (the
/// overlays see milliseconds).
/// - `Connect`: refused at once if the dialer blocks the target; else, after a dial delay, the
///   target refuses it if it blocks the dialer (checked when the handshake completes), else
///   `link_up`. The result of a dial the driver no longer expects (the node was disconnected, and
///   maybe dialed again, meanwhile) is dropped, as the driver drops it by connection id.
/// - `SendControl` goes out on the sender's own link if it is up (else it is dropped) and arrives
///   after a latency, in order per connection; frames on different connections may overtake each
///   other. The receiver reads it whomever it blocks: blocking only cuts one's own links and
///   refuses new inbound handshakes.
/// - `Disconnect` closes the sender's link after flushing: frames sent before it still arrive.
/// - `block(a, b)` (`inject_partition` on `a`): `a`'s link to `b` goes down at once (`link_down`)
///   and `a` dials `b` no more; `b`'s link to `a` stays up until `b` blocks `a` in turn.
struct ShellNet {
    nodes: BTreeMap<String, HyParView>,
    /// (a, b): `a` blocks `b`.
    blocked: BTreeSet<(String, String)>,
    /// Each node's link to a node (dial in flight or up), as the driver's `current`: connection
    /// id, and whether it is up.
    current: BTreeMap<(String, String), (u64, bool)>,
    /// Earliest time the next frame of a connection may arrive (FIFO per connection).
    fifo: BTreeMap<u64, u64>,
    queue: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64, ShellEvent)>>,
    now: u64,
    seq: u64,
    next_conn: u64,
    rng: SmallRng,
    /// Largest one-way latency of a frame, in microseconds (a dial takes a round trip).
    max_latency: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ShellEvent {
    Dialed { from: String, to: String, conn: u64 },
    Refused { from: String, to: String, conn: u64 },
    Deliver { from: String, to: String, body: Vec<u8> },
}

impl ShellNet {
    fn new(count: usize, cfg: HyParViewConfig, seed: u64, max_latency: u64) -> Self {
        let mut nodes = BTreeMap::new();
        for i in 0..count {
            let name = format!("n{i:03}");
            nodes.insert(name.clone(), HyParView::new(spec(&name), &channels(), cfg, seed + i as u64).unwrap());
        }
        ShellNet {
            nodes,
            blocked: BTreeSet::new(),
            current: BTreeMap::new(),
            fifo: BTreeMap::new(),
            queue: Default::default(),
            now: 0,
            seq: 0,
            next_conn: 0,
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed),
            max_latency,
        }
    }

    fn ms(&self) -> u64 {
        self.now / 1000
    }

    fn latency(&mut self) -> u64 {
        self.rng.gen_range(self.max_latency / 10..=self.max_latency)
    }

    fn schedule(&mut self, at: u64, event: ShellEvent) {
        self.seq += 1;
        self.queue.push(std::cmp::Reverse((at, self.seq, event)));
    }

    /// Executes the actions of `name`, as the driver does after each input.
    fn execute(&mut self, name: &str) {
        while let Some(action) = self.nodes.get_mut(name).and_then(|n| n.poll_action()) {
            match action {
                Action::Dial { link, .. } => {
                    self.next_conn += 1;
                    let conn = self.next_conn;
                    let (from, to) = (name.to_owned(), link.node);
                    self.current.insert((from.clone(), to.clone()), (conn, false));
                    if self.blocked.contains(&(from.clone(), to.clone())) {
                        self.schedule(self.now, ShellEvent::Refused { from, to, conn });
                    } else {
                        let at = self.now + 2 * self.latency();
                        self.schedule(at, ShellEvent::Dialed { from, to, conn });
                    }
                }
                Action::Disconnect { node } => {
                    self.current.remove(&(name.to_owned(), node));
                }
                Action::SendControl { to, body } => {
                    if let Some(&(conn, true)) = self.current.get(&(name.to_owned(), to.clone())) {
                        let at = (self.now + self.latency()).max(self.fifo.get(&conn).copied().unwrap_or(0));
                        self.fifo.insert(conn, at);
                        self.schedule(at, ShellEvent::Deliver { from: name.to_owned(), to, body: body.to_vec() });
                    }
                }
                _ => {}
            }
        }
    }

    fn handle(&mut self, event: ShellEvent) {
        let now = self.ms();
        match event {
            ShellEvent::Dialed { from, to, conn } => {
                let key = (from.clone(), to.clone());
                if self.current.get(&key) != Some(&(conn, false)) {
                    return; // a stale dial: the driver closes it
                }
                if self.blocked.contains(&(to.clone(), from.clone())) {
                    self.current.remove(&key);
                    self.nodes.get_mut(&from).unwrap().link_down(now, &link(&to));
                } else {
                    self.current.insert(key, (conn, true));
                    self.nodes.get_mut(&from).unwrap().link_up(now, &link(&to));
                }
                self.execute(&from);
            }
            ShellEvent::Refused { from, to, conn } => {
                let key = (from.clone(), to.clone());
                if self.current.get(&key) == Some(&(conn, false)) {
                    self.current.remove(&key);
                    self.nodes.get_mut(&from).unwrap().link_down(now, &link(&to));
                    self.execute(&from);
                }
            }
            ShellEvent::Deliver { from, to, body } => {
                self.nodes.get_mut(&to).unwrap().control(now, &from, &body).unwrap();
                self.execute(&to);
            }
        }
    }

    /// Runs frames, dials and timers up to `now + us`.
    fn advance(&mut self, us: u64) {
        let end = self.now + us;
        loop {
            let timer = self.nodes.values().filter_map(|n| n.poll_timeout()).min().map(|ms| ms * 1000);
            let event = self.queue.peek().map(|e| e.0 .0);
            let Some(next) = timer.into_iter().chain(event).min().filter(|t| *t <= end) else { break };
            self.now = self.now.max(next);
            if event == Some(next) {
                let std::cmp::Reverse((_, _, event)) = self.queue.pop().unwrap();
                self.handle(event);
            } else {
                let ms = self.ms();
                let due: Vec<String> =
                    self.nodes.iter().filter(|(_, n)| n.poll_timeout().is_some_and(|t| t <= ms)).map(|(k, _)| k.clone()).collect();
                for name in due {
                    self.nodes.get_mut(&name).unwrap().tick(ms);
                    self.execute(&name);
                }
            }
        }
        self.now = end;
    }

    fn join(&mut self, name: &str, contact: &str) {
        let now = self.ms();
        self.nodes.get_mut(name).unwrap().join(now, spec(contact));
        self.execute(name);
    }

    /// `a` blocks `b` (or no more): its link to `b` (dial or up) goes down at once.
    fn block(&mut self, a: &str, b: &str, blocked: bool) {
        let key = (a.to_owned(), b.to_owned());
        if !blocked {
            self.blocked.remove(&key);
            return;
        }
        self.blocked.insert(key.clone());
        if self.current.remove(&key).is_some() {
            let now = self.ms();
            self.nodes.get_mut(a).unwrap().link_down(now, &link(b));
            self.execute(a);
        }
    }

    /// The CT's `inject_partition`/`resolve_partition` loops: every node of `one` blocks (or
    /// unblocks) every node of `other`, then the other way round, a fraction of a millisecond
    /// apart.
    fn cut(&mut self, one: &[String], other: &[String], blocked: bool) {
        for (side, across) in [(one, other), (other, one)] {
            for a in side {
                for b in across {
                    self.block(a, b, blocked);
                    let gap = self.rng.gen_range(100..1000);
                    self.advance(gap);
                }
            }
        }
    }

    fn views(&self) -> Vec<(String, Vec<String>)> {
        self.nodes.iter().map(|(n, h)| (n.clone(), h.active_view())).collect()
    }

    /// The CT's `wait_healthy`: every node of `group` has a non-empty active view of nodes of
    /// `group`, views are symmetric, and `group` is one component.
    fn healthy(&self, group: &[String]) -> bool {
        let views: BTreeMap<&String, Vec<String>> = group.iter().map(|n| (n, self.nodes[n].active_view())).collect();
        let symmetric = views.iter().all(|(n, vs)| !vs.is_empty() && vs.iter().all(|p| views.get(p).is_some_and(|back| back.contains(n))));
        symmetric && self.connected(group, |a, b| views[a].contains(b))
    }

    /// Whether `group` is one component of the undirected graph whose edges `edge` gives.
    fn connected(&self, group: &[String], edge: impl Fn(&String, &String) -> bool) -> bool {
        let mut seen = BTreeSet::from([&group[0]]);
        let mut stack = vec![&group[0]];
        while let Some(n) = stack.pop() {
            for p in group {
                if (edge(n, p) || edge(p, n)) && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        seen.len() == group.len()
    }

    /// The CT's precondition for a cut: the nodes of `side` know one another, through the
    /// active and passive views of its members, as one component. A group of nodes that knows no
    /// one else on its side (a single node that only knew nodes of the other side, or a pair that
    /// only knew each other) cannot link up with the rest of the side until the partition ends.
    fn side_knows_itself(&self, side: &[String]) -> bool {
        let known = |a: &String, b: &String| {
            let n = &self.nodes[a];
            n.active_view().contains(b) || n.passive_view().contains(b)
        };
        self.connected(side, known)
    }

    /// Polls `cond` every 10 ms for at most `ms` milliseconds; whether it held.
    fn wait(&mut self, ms: u64, cond: impl Fn(&ShellNet) -> bool) -> bool {
        for _ in 0..ms / 10 {
            if cond(self) {
                return true;
            }
            self.advance(10_000);
        }
        cond(self)
    }
}

/// `partisan_hyparview_SUITE:heals_after_a_partition` (9 nodes, max 4, min 2, fast timers)
/// on a network with the shell's timing and one-sided partitions: all join the first node, the
/// overlay becomes healthy, each half knows itself (see [`ShellNet::side_knows_itself`]), the
/// halves {n000..n003} and {n004..n008} are cut both ways; each must become healthy within 20 s,
/// and the whole overlay within 20 s once the cut is resolved. Frames take up to 1 ms, 10 ms or
/// 200 ms one way.
///
/// Before the fix, 2 of these seeds (at 200 ms) ended with a half link for good: a node gave up
/// a NEIGHBOR_REQUEST one tick after sending it (the age of an earlier request to the same peer
/// carried over), the peer accepted it, and its ACCEPT was ignored; or an ACCEPT of an earlier
/// request was taken for the answer to a new one, which the peer then rejected. Either way one
/// end held the other as a neighbour and the other did not, which nothing repaired.
///
/// A cluster that does not form within 20 s is counted and skipped: a K5 of full nodes next to
/// a K4 whose nodes have room but ask only with low priority can stay split (two seeds in 10,000
/// at 1 ms; see the README's known issues). None of these seeds does.
#[test]
fn partitioned_halves_heal_and_merge_again_on_a_shell_like_network() {
    let cfg = HyParViewConfig {
        active_max_size: 4,
        active_min_size: 2,
        shuffle_interval: 1000,
        random_promotion_interval: 500,
        ..Default::default()
    };
    let (mut failures, mut unformed) = (Vec::new(), Vec::new());
    let cases = [(1000, 0..150), (10_000, 0..150), (200_000, 0..1000)];
    let runs: u64 = cases.iter().map(|(_, seeds)| seeds.end - seeds.start).sum();
    for (max_latency, seeds) in cases {
        for seed in seeds {
            let mut net = ShellNet::new(9, cfg, seed * 1000, max_latency);
            let names: Vec<String> = net.nodes.keys().cloned().collect();
            let (left, right) = (names[..4].to_vec(), names[4..].to_vec());
            for n in &names[1..] {
                net.join(n, &names[0]);
                net.advance(500);
            }
            if !net.wait(20_000, |net| net.healthy(&names)) {
                unformed.push((max_latency, seed));
                continue;
            }
            assert!(net.wait(20_000, |net| net.side_knows_itself(&left) && net.side_knows_itself(&right)), "seed {seed}");
            net.cut(&left, &right, true);
            if !net.wait(20_000, |net| net.healthy(&left) && net.healthy(&right)) {
                failures.push((max_latency, seed, "partitioned", net.views()));
                continue;
            }
            net.cut(&left, &right, false);
            if !net.wait(20_000, |net| net.healthy(&names)) {
                failures.push((max_latency, seed, "resolved", net.views()));
            }
        }
    }
    assert!(failures.is_empty(), "{} runs did not heal; first (latency us, seed, phase, views): {:?}", failures.len(), failures[0]);
    assert!(unformed.len() as u64 * 100 <= runs, "{} of {runs} clusters did not form: {unformed:?}", unformed.len());
}

/// The CT failure itself: a node whose views held only nodes of the other side when the cut
/// came (it had joined the first node, was dropped by it, and asked it back) is alone for as
/// long as the partition lasts: active and passive views empty, the first node unreachable.
/// No protocol can link it to nodes it never heard of; the CT now waits until each side knows
/// itself before cutting. Once the partition is resolved, the probe of the unreachable node
/// links it again.
#[test]
fn a_node_that_knows_only_the_other_side_is_alone_until_the_partition_ends() {
    let cfg = HyParViewConfig {
        active_max_size: 4,
        active_min_size: 2,
        shuffle_interval: 1000,
        random_promotion_interval: 500,
        ..Default::default()
    };
    let mut found = 0;
    for seed in 0..300 {
        let mut net = ShellNet::new(9, cfg, seed * 1000, 300);
        let names: Vec<String> = net.nodes.keys().cloned().collect();
        let (left, right) = (names[..4].to_vec(), names[4..].to_vec());
        for n in &names[1..] {
            net.join(n, &names[0]);
            net.advance(500);
        }
        assert!(net.wait(20_000, |net| net.healthy(&names)));
        // Cut at once (as the CT's precondition let happen), and only in runs with a stranded
        // node: one that knows no node of its side and that no node of its side knows.
        let knows = |a: &String, b: &String| {
            let h = &net.nodes[a];
            h.active_view().contains(b) || h.passive_view().contains(b)
        };
        let stranded: Vec<String> =
            right.iter().filter(|n| right.iter().all(|p| !knows(n, p) && !knows(p, n))).cloned().collect();
        if stranded.is_empty() {
            continue;
        }
        found += 1;
        net.cut(&left, &right, true);
        net.advance(20_000_000);
        for n in &stranded {
            let h = &net.nodes[n];
            assert!(h.active_view().is_empty() && h.passive_view().is_empty(), "seed {seed}: {n} {:?}", h.active_view());
            assert!(h.unreachable_peers().iter().all(|p| left.contains(p)) && !h.unreachable_peers().is_empty());
        }
        let others: Vec<String> = right.iter().filter(|n| !stranded.contains(n)).cloned().collect();
        assert!(others.is_empty() || net.healthy(&others) || !net.side_knows_itself(&others), "seed {seed}: {:?}", net.views());
        net.cut(&left, &right, false);
        assert!(net.wait(20_000, |net| net.healthy(&names)), "seed {seed}: not healed after the partition, {:?}", net.views());
    }
    assert!(found >= 3, "only {found} runs had a stranded node");
}
