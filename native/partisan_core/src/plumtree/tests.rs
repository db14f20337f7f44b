//! Plumtree tests: every message and timer path on a single node driven by hand, the codec, and
//! a deterministic network with per-link latency over a random graph that checks the paper's
//! properties: reliability, RMR → 0 once the tree has formed, repair after crashes, and LDH.
//! Plumtree over HyParView, composed as the live runtime runs it, is tested with
//! [`crate::node`].

use super::*;
use proptest::prelude::{any, proptest};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn node_with(name: &str, cfg: PlumtreeConfig, peers: &[&str]) -> Plumtree {
    let mut n = Plumtree::new(name, cfg, 42).unwrap();
    for p in peers {
        n.neighbour_up(0, p);
    }
    n
}

fn node(name: &str, peers: &[&str]) -> Plumtree {
    node_with(name, PlumtreeConfig::default(), peers)
}

fn drain(n: &mut Plumtree) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn recv(n: &mut Plumtree, now: u64, from: &str, msg: Message) {
    n.receive(now, from, &msg.encode()).unwrap();
}

fn sent(actions: &[Action]) -> Vec<(String, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendTo { node, body } => Some((node.clone(), Message::decode(body).unwrap())),
            _ => None,
        })
        .collect()
}

fn gossip(id: &str, round: u32, payload: &str) -> Message {
    Message::Gossip { msg_id: b(id), round, payload: b(payload) }
}

fn ihave(entries: &[(&str, u32)]) -> Message {
    Message::IHave { entries: entries.iter().map(|(id, r)| (b(id), *r)).collect() }
}

/// Delivers `id` from `from` and answers the merge.
fn deliver(n: &mut Plumtree, now: u64, from: &str, id: &str, round: u32, is_new: bool) -> Vec<Action> {
    recv(n, now, from, gossip(id, round, "p"));
    let actions = drain(n);
    assert!(matches!(&actions[..], [Action::Deliver { msg_id, .. }] if *msg_id == b(id)), "{actions:?}");
    n.merge_result(now, id.as_bytes(), is_new);
    drain(n)
}

/// Ticks at the time of the next graft/lazy timer (not the exchange timer) and drains.
fn tick_at(n: &mut Plumtree, now: u64) -> Vec<Action> {
    n.tick(now);
    drain(n).into_iter().filter(|a| !matches!(a, Action::Exchange { .. })).collect()
}

fn no_exchange() -> PlumtreeConfig {
    PlumtreeConfig { exchange_tick_period: 1 << 40, ..Default::default() }
}

#[test]
fn neighbours_start_eager_and_leave_both_sets() {
    let mut n = node("n", &["a", "b", "n"]);
    assert_eq!(n.eager_peers(), vec!["a", "b"], "self is never a neighbour");
    recv(&mut n, 0, "a", Message::Prune);
    assert_eq!((n.eager_peers(), n.lazy_peers()), (vec!["b".to_string()], vec!["a".to_string()]));
    n.neighbour_up(0, "a");
    assert_eq!(n.lazy_peers(), vec!["a"], "an existing neighbour keeps its link state");
    n.neighbour_down(0, "a");
    n.neighbour_down(0, "b");
    assert!(n.eager_peers().is_empty() && n.lazy_peers().is_empty());
}

#[test]
fn broadcast_pushes_eagerly_and_batches_announcements_per_lazy_tick() {
    let mut n = node_with("n", no_exchange(), &["a", "b", "c"]);
    recv(&mut n, 0, "c", Message::Prune);
    n.broadcast(10, b("m1"), b("x")).unwrap();
    n.broadcast(20, b("m2"), b("y")).unwrap();
    let actions = drain(&mut n);
    assert_eq!(
        sent(&actions),
        vec![
            ("a".into(), gossip("m1", 0, "x")),
            ("b".into(), gossip("m1", 0, "x")),
            ("a".into(), gossip("m2", 0, "y")),
            ("b".into(), gossip("m2", 0, "y")),
        ]
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Deliver { .. })), "the origin's handler already has it");
    assert_eq!(n.poll_timeout(), Some(1010), "one lazy tick after the first announcement");
    assert!(tick_at(&mut n, 1009).is_empty());
    assert_eq!(sent(&tick_at(&mut n, 1010)), vec![("c".into(), ihave(&[("m1", 0), ("m2", 0)]))]);
    assert!(n.poll_timeout().unwrap() > 1 << 30, "nothing queued: only the (far) exchange timer remains");
    assert_eq!(n.broadcast(30, b("m1"), b("x")), Err(BroadcastError::Duplicate));
    assert_eq!(n.broadcast(30, b(""), b("x")), Err(BroadcastError::BadMsgId(0)));
    let long = Bytes::from(vec![1u8; MAX_MSG_ID_LEN + 1]);
    assert_eq!(n.broadcast(30, long, b("x")), Err(BroadcastError::BadMsgId(MAX_MSG_ID_LEN + 1)));
    assert_eq!(n.stats().gossip_sent, 4);
    assert_eq!(n.stats().ihave_sent, 2);
}

#[test]
fn a_new_message_is_delivered_then_forwarded_only_if_the_handler_merges_it() {
    let mut n = node_with("n", no_exchange(), &["a", "b", "c"]);
    recv(&mut n, 0, "c", Message::Prune);
    recv(&mut n, 5, "a", gossip("m", 2, "p"));
    assert_eq!(
        drain(&mut n),
        vec![Action::Deliver { msg_id: b("m"), payload: b("p"), from: "a".into(), hops: 3 }]
    );
    assert!(n.has_seen(b"m"));
    // an unknown or repeated merge answer is ignored
    n.merge_result(5, b"other", true);
    assert!(drain(&mut n).is_empty());
    n.merge_result(6, b"m", true);
    assert_eq!(sent(&drain(&mut n)), vec![("b".into(), gossip("m", 3, "p"))], "eager peers but the sender");
    n.merge_result(6, b"m", true);
    assert!(drain(&mut n).is_empty());
    assert_eq!(sent(&tick_at(&mut n, 1006)), vec![("c".into(), ihave(&[("m", 3)]))]);
    assert_eq!(n.eager_peers(), vec!["a", "b"]);
}

#[test]
fn a_stale_message_prunes_its_link_and_is_not_forwarded() {
    let mut n = node_with("n", no_exchange(), &["a", "b"]);
    let out = deliver(&mut n, 0, "a", "m", 0, false);
    assert_eq!(sent(&out), vec![("a".into(), Message::Prune)]);
    assert_eq!(n.lazy_peers(), vec!["a"]);
    assert!(n.poll_timeout().unwrap() > 1 << 30, "nothing announced either");
}

#[test]
fn duplicates_prune_their_link_without_asking_the_handler() {
    let mut n = node_with("n", no_exchange(), &["a", "b", "c"]);
    recv(&mut n, 0, "a", gossip("m", 0, "p"));
    drain(&mut n);
    // while the merge is pending
    recv(&mut n, 1, "b", gossip("m", 0, "p"));
    assert_eq!(sent(&drain(&mut n)), vec![("b".into(), Message::Prune)]);
    n.merge_result(2, b"m", true);
    assert_eq!(sent(&drain(&mut n)), vec![("c".into(), gossip("m", 1, "p"))]);
    // after it
    recv(&mut n, 3, "c", gossip("m", 4, "p"));
    assert_eq!(sent(&drain(&mut n)), vec![("c".into(), Message::Prune)]);
    assert_eq!(n.eager_peers(), vec!["a"]);
    assert_eq!(n.lazy_peers(), vec!["b", "c"]);
    assert_eq!(n.stats().duplicates, 2);
    // PRUNE received moves the sender to lazy
    recv(&mut n, 4, "a", Message::Prune);
    assert_eq!(n.lazy_peers(), vec!["a", "b", "c"]);
}

#[test]
fn a_missing_message_is_grafted_from_each_announcer_in_turn() {
    let mut n = node_with("n", no_exchange(), &["a", "b", "c"]);
    for p in ["a", "b", "c"] {
        recv(&mut n, 0, p, Message::Prune);
    }
    recv(&mut n, 100, "a", ihave(&[("m", 2)]));
    recv(&mut n, 150, "b", ihave(&[("m", 5)]));
    recv(&mut n, 160, "a", ihave(&[("m", 2)])); // same announcer again: remembered once
    recv(&mut n, 170, "c", ihave(&[("m", 1)]));
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.missing_len(), 1);
    assert_eq!(n.poll_timeout(), Some(1100), "graft_timeout after the first announcement");
    assert!(tick_at(&mut n, 1099).is_empty());
    assert_eq!(sent(&tick_at(&mut n, 1100)), vec![("a".into(), Message::Graft { msg_id: Some(b("m")), round: 2 })]);
    assert_eq!(n.eager_peers(), vec!["a"], "grafting makes the link eager");
    assert_eq!(n.poll_timeout(), Some(1600), "then graft_retry_timeout");
    assert_eq!(sent(&tick_at(&mut n, 1600)), vec![("b".into(), Message::Graft { msg_id: Some(b("m")), round: 5 })]);
    assert_eq!(sent(&tick_at(&mut n, 2100)), vec![("c".into(), Message::Graft { msg_id: Some(b("m")), round: 1 })]);
    assert_eq!(n.poll_timeout(), Some(2600));
    assert!(tick_at(&mut n, 2600).is_empty(), "no announcer left: the entry is dropped");
    assert_eq!(n.missing_len(), 0);
    assert_eq!(n.stats().graft_sent, 3);
}

#[test]
fn a_message_that_arrives_in_time_cancels_its_graft_timer() {
    let mut n = node_with("n", no_exchange(), &["a", "b"]);
    recv(&mut n, 0, "b", Message::Prune);
    recv(&mut n, 0, "b", ihave(&[("m", 1)]));
    assert_eq!(n.poll_timeout(), Some(1000));
    deliver(&mut n, 500, "a", "m", 0, true);
    assert_eq!(n.missing_len(), 0);
    assert!(tick_at(&mut n, 1000).is_empty(), "no GRAFT once the message is here");
    // an IHAVE for a known id starts nothing
    recv(&mut n, 1100, "b", ihave(&[("m", 1)]));
    assert_eq!(n.missing_len(), 0);
}

#[test]
fn a_neighbour_going_down_loses_its_announcements_and_queue() {
    let mut n = node_with("n", no_exchange(), &["a", "b"]);
    recv(&mut n, 0, "b", Message::Prune);
    recv(&mut n, 0, "b", ihave(&[("m", 1)]));
    n.broadcast(0, b("x"), b("p")).unwrap();
    drain(&mut n);
    n.neighbour_down(10, "b");
    assert!(tick_at(&mut n, 1000).is_empty(), "no GRAFT to a gone announcer, no IHAVE to a gone peer");
    assert_eq!(n.missing_len(), 0);
}

#[test]
fn graft_makes_the_link_eager_and_is_answered_from_the_cache_or_the_handler() {
    let cfg = PlumtreeConfig { cache_size: 1, ..no_exchange() };
    let mut n = node_with("n", cfg, &["a", "b"]);
    recv(&mut n, 0, "a", Message::Prune);
    n.broadcast(0, b("old"), b("p0")).unwrap();
    n.broadcast(0, b("new"), b("p1")).unwrap();
    drain(&mut n);
    recv(&mut n, 1, "a", Message::Graft { msg_id: Some(b("new")), round: 0 });
    assert_eq!(sent(&drain(&mut n)), vec![("a".into(), gossip("new", 0, "p1"))]);
    assert_eq!(n.eager_peers(), vec!["a", "b"]);
    // evicted from the cache: ask the handler's graft/1
    recv(&mut n, 2, "b", Message::Graft { msg_id: Some(b("old")), round: 7 });
    assert_eq!(drain(&mut n), vec![Action::Graft { node: "b".into(), msg_id: b("old"), round: 7 }]);
    n.graft_result(3, "b", b"old", 7, Some(b("p0")));
    assert_eq!(sent(&drain(&mut n)), vec![("b".into(), gossip("old", 7, "p0"))]);
    n.graft_result(3, "b", b"old", 7, None); // stale or error in the handler
    n.graft_result(3, "zz", b"old", 7, Some(b("p0"))); // not a neighbour (any more)
    assert!(drain(&mut n).is_empty());
    // a GRAFT without id only repairs the link
    recv(&mut n, 4, "a", Message::Prune);
    recv(&mut n, 4, "a", Message::Graft { msg_id: None, round: 0 });
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.eager_peers(), vec!["a", "b"]);
}

#[test]
fn a_much_shorter_announced_path_is_swapped_into_the_tree() {
    let mut n = node_with("n", no_exchange(), &["a", "b", "c"]);
    recv(&mut n, 0, "b", Message::Prune);
    recv(&mut n, 0, "c", Message::Prune);
    deliver(&mut n, 0, "a", "m", 9, true); // we are at hop 10 through a
    recv(&mut n, 10, "c", ihave(&[("m", 7)])); // c would give hop 8: saves 2 < threshold 3
    assert!(sent(&drain(&mut n)).is_empty());
    recv(&mut n, 10, "b", ihave(&[("m", 6)])); // b would give hop 7: saves 3
    assert_eq!(
        sent(&drain(&mut n)),
        vec![("b".into(), Message::Graft { msg_id: None, round: 6 }), ("a".into(), Message::Prune)]
    );
    assert_eq!(n.eager_peers(), vec!["b"]);
    assert_eq!(n.stats().swaps, 1);
    // disabled with threshold 0
    let mut n = node_with("n", PlumtreeConfig { optimization_threshold: 0, ..no_exchange() }, &["a", "b"]);
    recv(&mut n, 0, "b", Message::Prune);
    deliver(&mut n, 0, "a", "m", 20, true);
    recv(&mut n, 10, "b", ihave(&[("m", 0)]));
    assert!(drain(&mut n).is_empty());
}

#[test]
fn an_announcement_heard_before_the_payload_also_optimises() {
    let mut n = node_with("n", no_exchange(), &["a", "b", "c"]);
    recv(&mut n, 0, "b", Message::Prune);
    recv(&mut n, 0, "c", Message::Prune);
    recv(&mut n, 0, "c", ihave(&[("m", 4)]));
    recv(&mut n, 0, "b", ihave(&[("m", 1)]));
    recv(&mut n, 10, "a", gossip("m", 5, "p"));
    drain(&mut n);
    // and one heard while the merge is pending
    recv(&mut n, 11, "c", ihave(&[("m", 0)]));
    assert!(drain(&mut n).is_empty());
    n.merge_result(12, b"m", true);
    let out = sent(&drain(&mut n));
    assert!(out.contains(&("c".into(), Message::Graft { msg_id: None, round: 0 })), "{out:?}");
    assert!(out.contains(&("a".into(), Message::Prune)), "{out:?}");
    assert_eq!(n.eager_peers(), vec!["c"]);
}

#[test]
fn the_exchange_tick_sends_a_digest_and_the_peer_reconciles_both_ways() {
    let cfg = PlumtreeConfig { exchange_size: 2, ..Default::default() };
    let mut n = node_with("n", cfg, &["a"]);
    for id in ["m1", "m2", "m3"] {
        n.broadcast(0, b(id), b("p")).unwrap();
    }
    drain(&mut n);
    let due = n.poll_timeout().unwrap();
    assert!((1..=10_000).contains(&due), "first exchange at a random offset within the period");
    n.tick(due);
    let actions = drain(&mut n);
    assert_eq!(
        actions,
        vec![
            Action::SendTo { node: "a".into(), body: Message::Exchange { entries: vec![(b("m3"), 0), (b("m2"), 0)] }.encode() },
            Action::Exchange { node: "a".into() },
        ],
        "the most recent exchange_size ids"
    );
    assert_eq!(n.poll_timeout(), Some(due + 10_000));
    // the receiving side: x is ours only, m3 theirs only
    let mut p = node_with("a", cfg, &["n"]);
    p.broadcast(0, b("x"), b("q")).unwrap();
    p.broadcast(0, b("m2"), b("q")).unwrap();
    drain(&mut p);
    recv(&mut p, 5, "n", Message::Exchange { entries: vec![(b("m3"), 0), (b("m2"), 0)] });
    assert_eq!(sent(&drain(&mut p)), vec![("n".into(), ihave(&[("x", 0)]))]);
    assert_eq!(p.missing_len(), 1);
    assert_eq!(sent(&tick_at(&mut p, 1005)), vec![("n".into(), Message::Graft { msg_id: Some(b("m3")), round: 0 })]);
    // with no neighbour, the exchange tick does nothing
    let mut lonely = node("z", &[]);
    lonely.tick(20_000);
    assert!(drain(&mut lonely).is_empty());
}

#[test]
fn frames_from_non_neighbours_change_no_link() {
    let mut n = node_with("n", no_exchange(), &["a"]);
    n.broadcast(0, b("m"), b("p")).unwrap();
    drain(&mut n);
    for msg in [
        ihave(&[("u", 0)]),
        Message::Graft { msg_id: Some(b("m")), round: 0 },
        Message::Prune,
        Message::Exchange { entries: vec![(b("u"), 0)] },
    ] {
        recv(&mut n, 1, "x", msg);
    }
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.missing_len(), 0);
    // a payload is still delivered and a duplicate from a stranger is not answered
    recv(&mut n, 1, "x", gossip("v", 0, "p"));
    assert!(matches!(&drain(&mut n)[..], [Action::Deliver { .. }]));
    n.merge_result(1, b"v", true);
    assert_eq!(sent(&drain(&mut n)), vec![("a".into(), gossip("v", 1, "p"))]);
    recv(&mut n, 1, "x", gossip("v", 0, "p"));
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.eager_peers(), vec!["a"]);
    // our own frames are ignored
    recv(&mut n, 1, "n", gossip("w", 0, "p"));
    assert!(drain(&mut n).is_empty());
}

#[test]
fn received_ids_pending_merges_missing_ids_and_lazy_queues_are_bounded() {
    let cfg = PlumtreeConfig { max_ids: 3, max_pending: 2, max_missing: 2, max_announcers: 2, max_lazy_queue: 2, exchange_size: 3, ..no_exchange() };
    let mut n = node_with("n", cfg, &["a", "b", "c", "d"]);
    recv(&mut n, 0, "d", Message::Prune);
    // pending merges
    recv(&mut n, 0, "a", gossip("p1", 0, "x"));
    recv(&mut n, 0, "a", gossip("p2", 0, "x"));
    recv(&mut n, 0, "a", gossip("p3", 0, "x"));
    assert_eq!(drain(&mut n).len(), 2, "the third delivery is dropped");
    assert!(!n.has_seen(b"p3"));
    n.merge_result(0, b"p1", true);
    n.merge_result(0, b"p2", true);
    // received ids: only max_ids remembered, the oldest forgotten
    for id in ["q1", "q2"] {
        n.broadcast(0, b(id), b("x")).unwrap();
    }
    assert!(!n.has_seen(b"p1") && n.has_seen(b"p2") && n.has_seen(b"q2"));
    // the lazy queue of d keeps the newest two
    drain(&mut n);
    assert_eq!(sent(&tick_at(&mut n, 1000)), vec![("d".into(), ihave(&[("q1", 0), ("q2", 0)]))]);
    // missing ids and their announcers
    recv(&mut n, 2000, "d", ihave(&[("u1", 0)]));
    recv(&mut n, 2001, "d", ihave(&[("u2", 0), ("u3", 0)]));
    assert_eq!(n.missing_len(), 2, "u1 was dropped for u3");
    for p in ["a", "b", "c"] {
        recv(&mut n, 2002, p, ihave(&[("u3", 0)]));
    }
    let grafts: Vec<String> = (0..4).flat_map(|i| sent(&tick_at(&mut n, 3001 + 500 * i))).map(|(to, _)| to).collect();
    assert_eq!(grafts, vec!["d", "d", "a"], "u2 from d; u3 from d then a (two announcers kept)");
    assert!(n.stats().dropped >= 3);
}

#[test]
fn the_payload_cache_is_bounded_by_count_and_bytes() {
    let cfg = PlumtreeConfig { cache_size: 2, cache_bytes: 10, ..no_exchange() };
    let mut n = node_with("n", cfg, &["a"]);
    n.broadcast(0, b("m1"), b("12345")).unwrap();
    n.broadcast(0, b("m2"), b("12345")).unwrap();
    n.broadcast(0, b("m3"), b("123")).unwrap();
    drain(&mut n);
    let grafted = |n: &mut Plumtree, id: &str| {
        recv(n, 1, "a", Message::Graft { msg_id: Some(b(id)), round: 0 });
        matches!(&drain(n)[..], [Action::SendTo { .. }])
    };
    assert_eq!([grafted(&mut n, "m1"), grafted(&mut n, "m2"), grafted(&mut n, "m3")], [false, true, true]);
    n.broadcast(0, b("big"), Bytes::from(vec![0u8; 11])).unwrap();
    drain(&mut n);
    assert!(!grafted(&mut n, "big"), "larger than the whole cache");
    let mut none = node_with("n", PlumtreeConfig { cache_size: 0, ..no_exchange() }, &["a"]);
    none.broadcast(0, b("m"), b("p")).unwrap();
    drain(&mut none);
    assert!(!grafted(&mut none, "m"), "cache_size 0: every GRAFT goes to the handler");
}

#[test]
fn config_is_validated() {
    let d = PlumtreeConfig::default();
    let bad = |cfg| Plumtree::new("n", cfg, 1).unwrap_err();
    assert_eq!(bad(PlumtreeConfig { lazy_tick_period: 0, ..d }), ConfigError::Zero("lazy_tick_period"));
    assert_eq!(bad(PlumtreeConfig { graft_retry_timeout: 0, ..d }), ConfigError::Zero("graft_retry_timeout"));
    assert_eq!(bad(PlumtreeConfig { max_ids: 0, exchange_size: 0, ..d }), ConfigError::Zero("max_ids"));
    assert_eq!(bad(PlumtreeConfig { max_ids: 10, ..d }), ConfigError::ExchangeTooLarge(256));
    assert_eq!(bad(PlumtreeConfig { exchange_size: MAX_BATCH + 1, ..d }), ConfigError::ExchangeTooLarge(MAX_BATCH + 1));
}

#[test]
fn every_message_roundtrips_and_garbage_is_an_error() {
    let all = [
        gossip("id", 3, "payload"),
        gossip("i", u32::MAX, ""),
        ihave(&[("a", 1), ("bb", 2)]),
        ihave(&[]),
        Message::Graft { msg_id: Some(b("x")), round: 9 },
        Message::Graft { msg_id: None, round: 0 },
        Message::Prune,
        Message::Exchange { entries: vec![(Bytes::from(vec![7u8; MAX_MSG_ID_LEN]), 1)] },
    ];
    for msg in all {
        assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
    }
    assert_eq!(Message::decode(&[16]).unwrap_err(), ControlError::UnknownTag(16));
    assert!(matches!(Message::decode(&[]), Err(ControlError::Malformed(_))));
    assert!(matches!(Message::decode(&[TAG_PRUNE, 0]), Err(ControlError::Malformed(WireError::Trailing { .. }))));
    // counts and lengths promising more than the body holds are truncations, not allocations
    assert!(matches!(Message::decode(&[TAG_IHAVE, 0x04, 0x00]), Err(ControlError::Malformed(WireError::Truncated { .. }))));
    assert!(matches!(Message::decode(&[TAG_GOSSIP, 0, 1, b'a', 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), Err(ControlError::Malformed(WireError::Truncated { .. }))));
    // bounds: empty or oversized ids, batches over MAX_BATCH, bad flags
    assert!(matches!(Message::decode(&[TAG_GRAFT, 1, 0, 0, 0, 0, 0, 0]), Err(ControlError::Malformed(WireError::BadValue { .. }))));
    assert!(matches!(Message::decode(&[TAG_GRAFT, 1, 0x04, 0x01]), Err(ControlError::Malformed(WireError::BadValue { .. }))));
    assert!(matches!(Message::decode(&[TAG_EXCHANGE, 0x04, 0x01]), Err(ControlError::Malformed(WireError::BadValue { .. }))));
    assert!(matches!(Message::decode(&[TAG_GRAFT, 2, 0, 0, 0, 0]), Err(ControlError::Malformed(WireError::BadValue { .. }))));
    let mut n = node("n", &["a"]);
    drain(&mut n);
    assert!(n.receive(0, "a", &[TAG_GOSSIP, 0]).is_err());
    assert!(drain(&mut n).is_empty());
}

#[test]
fn metrics_compute_rmr_ldh_and_reliability() {
    assert_eq!(relative_message_redundancy(9, 10), Some(0.0));
    assert_eq!(relative_message_redundancy(27, 10), Some(2.0));
    assert_eq!(relative_message_redundancy(0, 1), None);
    let mut m = BroadcastMetrics::originated();
    for hops in [1, 2, 2, 5] {
        m.payload_received();
        m.delivered(hops);
    }
    m.payload_received();
    assert_eq!((m.reached, m.payload_messages, m.last_delivery_hop), (5, 5, 5));
    assert_eq!(m.rmr(), Some(0.25));
    assert_eq!(m.reliability(10), 0.5);
    assert_eq!(BroadcastMetrics::default().reliability(0), 1.0);
}

proptest! {
    #[test]
    fn random_bodies_never_panic(tag in 30u8..40, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut n = node("n", &["a", "b"]);
        n.broadcast(0, b("m"), b("p")).unwrap();
        let mut body = vec![tag];
        body.extend_from_slice(&data);
        if let Ok(msg) = Message::decode(&body) {
            proptest::prop_assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
        }
        let _ = n.receive(1, "a", &body);
        let _ = n.receive(1, "z", &data);
        n.tick(100_000);
        drain(&mut n);
    }

    /// Random sequences of inputs keep every bound.
    #[test]
    fn random_inputs_keep_the_bounds(ops in proptest::collection::vec((0u8..8, 0u8..6, 0u8..12, 0u32..10), 0..200)) {
        let cfg = PlumtreeConfig { max_ids: 4, max_pending: 2, max_missing: 3, max_announcers: 2, max_lazy_queue: 3, cache_size: 2, exchange_size: 4, ..Default::default() };
        let mut n = Plumtree::new("n", cfg, 3).unwrap();
        let peers = ["a", "b", "c", "d", "e", "n"];
        let mut now = 0;
        for (op, peer, id, round) in ops {
            now += 97;
            let (p, id) = (peers[peer as usize], b(&format!("m{id}")));
            match op {
                0 => n.neighbour_up(now, p),
                1 => n.neighbour_down(now, p),
                2 => { let _ = n.broadcast(now, id, b("x")); }
                3 => recv(&mut n, now, p, Message::Gossip { msg_id: id, round, payload: b("y") }),
                4 => recv(&mut n, now, p, Message::IHave { entries: vec![(id, round)] }),
                5 => recv(&mut n, now, p, Message::Graft { msg_id: Some(id), round }),
                6 => n.merge_result(now, &id, round % 2 == 0),
                _ => n.tick(now + u64::from(round) * 300),
            }
            drain(&mut n);
            proptest::prop_assert!(n.seen.len() <= 4 && n.seen_order.len() == n.seen.len());
            proptest::prop_assert!(n.pending <= 2 && n.missing.len() <= 3 && n.cache.len() <= 2);
            proptest::prop_assert_eq!(n.timers.len(), n.missing.len());
            proptest::prop_assert!(n.missing.values().all(|m| m.announcers.len() <= 2));
            proptest::prop_assert!(n.lazy_queues.values().all(|q| q.len() <= 3));
            proptest::prop_assert!(n.eager.is_disjoint(&n.lazy));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic networks
// ---------------------------------------------------------------------------------------------

/// Symmetric per-link one-way latency, 5–50 ms, fixed per link so that each link is FIFO.
fn latency(a: &str, b: &str) -> u64 {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in x.bytes().chain([0]).chain(y.bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    5 + h % 46
}

#[derive(Debug)]
enum Event {
    Frame { from: String, to: String, body: Bytes },
    Merge { node: String, msg_id: Bytes },
    GraftReply { node: String, to: String, msg_id: Bytes, round: u32 },
}

/// One simulated node: the Plumtree core and its application (a handler that stores payloads:
/// `merge` = "not stored yet", `graft` = the stored payload).
struct SimNode {
    pt: Plumtree,
    store: BTreeMap<Bytes, Bytes>,
    /// Deliver actions per message id (must be exactly 1 for every message).
    delivers: BTreeMap<Bytes, u32>,
}

/// A discrete-event network of Plumtree nodes: frames take the link's latency, the handler
/// answers merges and grafts 1 ms after being asked (an Erlang round trip), crashed nodes
/// silently drop what they are sent.
struct Sim {
    now: u64,
    nodes: BTreeMap<String, SimNode>,
    events: BTreeMap<(u64, u64), Event>,
    seq: u64,
    metrics: BTreeMap<Bytes, BroadcastMetrics>,
    broadcasts: Vec<Bytes>,
}

impl Sim {
    fn new(names: &[String], cfg: PlumtreeConfig) -> Self {
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let pt = Plumtree::new(name.clone(), cfg, 1000 + i as u64).unwrap();
                (name.clone(), SimNode { pt, store: BTreeMap::new(), delivers: BTreeMap::new() })
            })
            .collect();
        Sim { now: 0, nodes, events: BTreeMap::new(), seq: 0, metrics: BTreeMap::new(), broadcasts: vec![] }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn link(&mut self, a: &str, b: &str) {
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            if let Some(n) = self.nodes.get_mut(x) {
                n.pt.neighbour_up(now, y);
            }
        }
        self.drain();
    }

    fn unlink(&mut self, a: &str, b: &str) {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(a) {
            n.pt.neighbour_down(now, b);
        }
        self.drain();
    }

    fn drain(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.drain_node(&name);
        }
    }

    fn drain_node(&mut self, name: &str) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(name) else { return };
        let actions: Vec<Action> = std::iter::from_fn(|| n.pt.poll_action()).collect();
        for action in actions {
            match action {
                Action::SendTo { node, body } => {
                    let at = now + latency(name, &node);
                    self.schedule(at, Event::Frame { from: name.to_owned(), to: node, body });
                }
                Action::Deliver { msg_id, payload, hops, .. } => {
                    let n = self.nodes.get_mut(name).unwrap();
                    *n.delivers.entry(msg_id.clone()).or_default() += 1;
                    if !n.store.contains_key(&msg_id) {
                        n.store.insert(msg_id.clone(), payload);
                        self.metrics.entry(msg_id.clone()).or_default().delivered(hops);
                    }
                    self.schedule(now + 1, Event::Merge { node: name.to_owned(), msg_id });
                }
                Action::Graft { node, msg_id, round } => {
                    self.schedule(now + 1, Event::GraftReply { node: name.to_owned(), to: node, msg_id, round });
                }
                Action::Exchange { .. } => {}
            }
        }
    }

    fn broadcast(&mut self, origin: &str, id: &str) {
        let id = b(id);
        let now = self.now;
        let n = self.nodes.get_mut(origin).unwrap();
        n.store.insert(id.clone(), b("payload"));
        n.pt.broadcast(now, id.clone(), b("payload")).unwrap();
        self.metrics.insert(id.clone(), BroadcastMetrics::originated());
        self.broadcasts.push(id);
        self.drain_node(origin);
    }

    /// Runs events and timers up to `end`.
    fn run_until(&mut self, end: u64) {
        loop {
            let next_event = self.events.keys().next().map(|(t, _)| *t);
            let next_timer = self.nodes.values().filter_map(|n| n.pt.poll_timeout()).min();
            let Some(t) = next_event.into_iter().chain(next_timer).min().filter(|t| *t <= end) else { break };
            self.now = self.now.max(t);
            let now = self.now;
            if next_event == Some(t) {
                let (_, event) = self.events.pop_first().unwrap();
                match event {
                    Event::Frame { from, to, body } => {
                        let Some(n) = self.nodes.get_mut(&to) else { continue };
                        if let Ok(Message::Gossip { msg_id, .. }) = Message::decode(&body) {
                            self.metrics.entry(msg_id).or_default().payload_received();
                        }
                        n.pt.receive(now, &from, &body).unwrap();
                        self.drain_node(&to);
                    }
                    Event::Merge { node, msg_id } => {
                        let Some(n) = self.nodes.get_mut(&node) else { continue };
                        // the handler stored it when asked: new iff this was the first delivery
                        let is_new = n.delivers[&msg_id] == 1;
                        n.pt.merge_result(now, &msg_id, is_new);
                        self.drain_node(&node);
                    }
                    Event::GraftReply { node, to, msg_id, round } => {
                        let Some(n) = self.nodes.get_mut(&node) else { continue };
                        let payload = n.store.get(&msg_id).cloned();
                        n.pt.graft_result(now, &to, &msg_id, round, payload);
                        self.drain_node(&node);
                    }
                }
            } else {
                let due: Vec<String> =
                    self.nodes.iter().filter(|(_, n)| n.pt.poll_timeout().is_some_and(|x| x <= now)).map(|(k, _)| k.clone()).collect();
                for name in due {
                    self.nodes.get_mut(&name).unwrap().pt.tick(now);
                    self.drain_node(&name);
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn advance(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Crashes nodes silently: frames to them are lost, their neighbours are not told.
    fn crash(&mut self, names: &[String]) {
        for name in names {
            self.nodes.remove(name);
        }
    }

    /// Broadcasts one message from `origin`, lets it settle, and checks that every node in
    /// `expected` (the live nodes the origin can reach) delivered it exactly once.
    fn broadcast_and_check(&mut self, origin: &str, id: &str, expected: &BTreeSet<String>, settle: u64) -> BroadcastMetrics {
        self.broadcast(origin, id);
        self.advance(settle);
        let key = b(id);
        for name in expected {
            let delivered = if name == origin { 1 } else { self.nodes[name].delivers.get(&key).copied().unwrap_or(0) };
            assert_eq!(delivered, 1, "{name} delivered {id} {delivered} times");
        }
        self.metrics[&key]
    }

    /// Every Deliver of every node happened once per message (no node asked twice).
    fn assert_exactly_once(&self) {
        for (name, n) in &self.nodes {
            for (id, count) in &n.delivers {
                assert_eq!(*count, 1, "{name} delivered {id:?} {count} times");
            }
        }
    }

    /// Sums the counters of the live nodes and prints them.
    fn print_totals(&self) -> Stats {
        let mut t = Stats::default();
        for n in self.nodes.values() {
            let s = n.pt.stats();
            t.gossip_sent += s.gossip_sent;
            t.duplicates += s.duplicates;
            t.ihave_sent += s.ihave_sent;
            t.graft_sent += s.graft_sent;
            t.prune_sent += s.prune_sent;
            t.exchanges_sent += s.exchanges_sent;
            t.swaps += s.swaps;
            t.dropped += s.dropped;
        }
        println!(
            "  totals: gossip {} duplicates {} ihave ids {} grafts {} prunes {} exchanges {} swaps {} dropped {}",
            t.gossip_sent, t.duplicates, t.ihave_sent, t.graft_sent, t.prune_sent, t.exchanges_sent, t.swaps, t.dropped
        );
        t
    }

    fn eager_edges_are_symmetric(&self) -> bool {
        self.nodes.iter().all(|(name, n)| {
            n.pt.eager_peers().iter().all(|p| self.nodes.get(p).is_none_or(|q| q.pt.eager_peers().contains(name)))
        })
    }
}

/// The nodes reachable from `start` over `edges` among `alive`.
fn component(start: &str, edges: &BTreeSet<(String, String)>, alive: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([start.to_owned()]);
    let mut stack = vec![start.to_owned()];
    while let Some(n) = stack.pop() {
        for (a, b) in edges {
            let other = if *a == n { b } else if *b == n { a } else { continue };
            if alive.contains(other) && seen.insert(other.clone()) {
                stack.push(other.clone());
            }
        }
    }
    seen
}

/// A random graph in which every node has 4 to 6 neighbours (like HyParView's active views).
fn random_graph(names: &[String], seed: u64) -> BTreeSet<(String, String)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut degree = vec![0usize; names.len()];
    let mut edges = BTreeSet::new();
    for i in 0..names.len() {
        let mut attempts = 0;
        while degree[i] < 4 && attempts < 1000 {
            attempts += 1;
            let j = rng.gen_range(0..names.len());
            let (a, b) = (names[i.min(j)].clone(), names[i.max(j)].clone());
            if j == i || degree[j] >= 6 || edges.contains(&(a.clone(), b.clone())) {
                continue;
            }
            edges.insert((a, b));
            degree[i] += 1;
            degree[j] += 1;
        }
    }
    edges
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("n{i:03}")).collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Prints a table row per broadcast (visible with `--nocapture`) and returns the RMRs.
fn report(label: &str, rows: &[(String, BroadcastMetrics, usize)]) -> Vec<f64> {
    println!("{label}");
    println!("  {:>8} {:>8} {:>9} {:>8} {:>5}", "msg", "reached", "payloads", "RMR", "LDH");
    for (id, m, live) in rows {
        println!(
            "  {:>8} {:>4}/{:<4} {:>8} {:>8.3} {:>5}",
            id,
            m.reached,
            live,
            m.payload_messages,
            m.rmr().unwrap_or(0.0),
            m.last_delivery_hop
        );
    }
    rows.iter().map(|(_, m, _)| m.rmr().unwrap_or(0.0)).collect()
}

#[test]
fn on_a_random_graph_every_node_delivers_once_and_rmr_drops_to_zero_once_the_tree_forms() {
    for single in [false, true] {
        let ldh = random_graph_run(PlumtreeConfig { optimization_threshold: 3, ..Default::default() }, "with tree optimisation (threshold 3)", single);
        let plain = random_graph_run(PlumtreeConfig { optimization_threshold: 0, ..Default::default() }, "without tree optimisation", single);
        println!("mean LDH after the first broadcast (single origin: {single}): {ldh:.2} with the optimisation, {plain:.2} without");
    }
}

/// Runs 20 broadcasts on a 100-node random graph, checks the properties, returns the mean LDH
/// of broadcasts 2..20.
fn random_graph_run(cfg: PlumtreeConfig, label: &str, single_origin: bool) -> f64 {
    let names = names(100);
    let edges = random_graph(&names, 7);
    let alive: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(component(&names[0], &edges, &alive).len(), 100, "the graph is connected");
    let mut sim = Sim::new(&names, cfg);
    for (a, b) in &edges {
        sim.link(a, b);
    }
    let mut rng = SmallRng::seed_from_u64(11);
    let mut rows = vec![];
    for i in 0..20 {
        let origin = if single_origin { names[0].clone() } else { names[rng.gen_range(0..names.len())].clone() };
        let m = sim.broadcast_and_check(&origin, &format!("m{i}"), &alive, 3000);
        rows.push((format!("m{i}"), m, alive.len()));
    }
    sim.advance(30_000); // let anti-entropy run: it must not produce duplicates
    sim.assert_exactly_once();
    let rows: Vec<_> = rows.into_iter().map(|(id, _, live)| (id.clone(), sim.metrics[&b(&id)], live)).collect();
    let rmr = report(&format!("random graph, 100 nodes, degree 4-6, 20 broadcasts from random origins, {label}"), &rows);
    assert_eq!(sim.print_totals().dropped, 0);
    let degree = 2.0 * edges.len() as f64 / 100.0;
    assert!(rmr[0] > degree - 2.5, "the first broadcast floods: RMR {} for mean degree {degree}", rmr[0]);
    assert!(mean(&rmr[3..]) < 0.02, "RMR once the tree has formed: {:?}", &rmr[3..]);
    assert!(sim.eager_edges_are_symmetric());
    let eager: usize = sim.nodes.values().map(|n| n.pt.eager_peers().len()).sum();
    assert_eq!(eager / 2, 99, "the eager links form a spanning tree");
    mean(&rows[1..].iter().map(|r| r.1.last_delivery_hop as f64).collect::<Vec<_>>())
}

#[test]
fn grafts_repair_the_tree_after_silent_crashes_and_rmr_recovers_once_the_overlay_reports_them() {
    let names = names(100);
    let edges = random_graph(&names, 8);
    let mut sim = Sim::new(&names, PlumtreeConfig::default());
    for (a, b) in &edges {
        sim.link(a, b);
    }
    let all: BTreeSet<String> = names.iter().cloned().collect();
    for i in 0..5 {
        sim.broadcast_and_check(&names[i * 7], &format!("warm{i}"), &all, 3000);
    }
    // 30 % of the nodes crash; nobody is told
    let mut rng = SmallRng::seed_from_u64(5);
    let mut dead: Vec<String> = names.clone();
    dead.shuffle(&mut rng);
    dead.truncate(30);
    sim.crash(&dead);
    let alive: BTreeSet<String> = names.iter().filter(|n| !dead.contains(n)).cloned().collect();
    let mut rows = vec![];
    let origins: Vec<String> = alive.iter().step_by(7).cloned().collect();
    for (i, origin) in origins.iter().take(5).enumerate() {
        let reach = component(origin, &edges, &alive);
        assert!(reach.len() >= 65, "the surviving graph stays (mostly) connected: {}", reach.len());
        let m = sim.broadcast_and_check(origin, &format!("c{i}"), &reach, 15_000);
        assert_eq!(m.reached as usize, reach.len(), "reliability 100 % of the reachable live nodes");
        rows.push((format!("c{i}"), m, alive.len()));
    }
    // the overlay detects the crashes (TCP) and reports NodeDown
    for (a, b) in &edges {
        if dead.contains(b) {
            sim.unlink(a, b);
        }
        if dead.contains(a) {
            sim.unlink(b, a);
        }
    }
    for (i, origin) in origins.iter().enumerate() {
        let reach = component(origin, &edges, &alive);
        let m = sim.broadcast_and_check(origin, &format!("d{i}"), &reach, 5000);
        rows.push((format!("d{i}"), m, alive.len()));
    }
    sim.assert_exactly_once();
    let rmr = report("random graph, 100 nodes, 30 % crashed silently (c*), then reported down (d*)", &rows);
    assert!(mean(&rmr[7..]) < 0.02, "RMR back to ~0 once the repaired tree is stable: {rmr:?}");
    let ldh_before = rows[..5].iter().map(|r| r.1.last_delivery_hop).max().unwrap();
    println!("  max LDH while repairing by GRAFT: {ldh_before}");
    assert!(sim.print_totals().graft_sent > 0);
}

#[test]
fn anti_entropy_brings_a_node_that_missed_broadcasts_up_to_date() {
    let names = names(20);
    let edges = random_graph(&names, 3);
    let mut sim = Sim::new(&names, PlumtreeConfig::default());
    let late = names[19].clone();
    for (a, b) in edges.iter().filter(|(a, b)| *a != late && *b != late) {
        sim.link(a, b);
    }
    let others: BTreeSet<String> = names[..19].iter().cloned().collect();
    for (i, origin) in names.iter().take(5).enumerate() {
        sim.broadcast_and_check(origin, &format!("m{i}"), &others, 2000);
    }
    // the late node gets neighbours, but nothing is broadcast any more: only the exchange helps
    for (a, b) in edges.iter().filter(|(a, b)| *a == late || *b == late) {
        sim.link(a, b);
    }
    sim.advance(25_000);
    let n = &sim.nodes[&late];
    assert_eq!(n.store.len(), 5, "caught up through EXCHANGE → IHAVE → GRAFT");
    assert!(n.delivers.values().all(|c| *c == 1));
    assert!(sim.nodes.values().map(|n| n.pt.stats().exchanges_sent).sum::<u64>() > 0);
}
