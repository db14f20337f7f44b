//! Two Rust peers on loopback, the real data plane between them: messages by name and by pid,
//! a dead mailbox, undecodable bytes, node events, a broadcast, and acked messages.

use bytes::Bytes;
use partisan_peer::etf::{atom, Pid, Term};
use partisan_peer::{Config, Dest, Peer, PeerEvent};
use partisan_core::plumtree::PlumtreeConfig;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn peer(name: &str) -> Peer {
    let mut cfg = Config::new(name, b"peer-test-cookie");
    cfg.node.broadcast = Some(PlumtreeConfig::default());
    cfg.node.timing.connection_interval = 100;
    cfg.node.timing.connection_jitter = 100;
    Peer::start(cfg).unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stat(peer: &Peer, key: &str) -> u64 {
    peer.node().stats().into_iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)
}

#[test]
fn two_peers_exchange_terms_by_name_and_pid() {
    let a = peer("a@127.0.0.1");
    let b = peer("b@127.0.0.1");
    b.join(a.spec().clone()).unwrap();
    wait_until("a full link", || a.node().is_fully_connected("b@127.0.0.1") && b.node().is_fully_connected("a@127.0.0.1"));
    let up = std::iter::from_fn(|| a.next_event(WAIT)).find(|e| matches!(e, PeerEvent::NodeUp(_)));
    assert_eq!(up, Some(PeerEvent::NodeUp("b@127.0.0.1".into())));

    let server = b.register("server").unwrap();
    assert!(b.register("server").is_err(), "a name is registered once");
    let client = a.mailbox();
    let request = Term::SmallTuple(vec![client.pid().to_term(), Term::Binary(vec![7; 200_000])]);
    a.send_named("b@127.0.0.1", "server", &request).unwrap();
    let got = server.recv_timeout(WAIT).unwrap();
    assert_eq!((got.from_node.as_str(), &got.term), ("a@127.0.0.1", &request));

    // The reply goes to the pid that came inside the message.
    let Term::SmallTuple(items) = got.term else { unreachable!() };
    let from = Pid::from_term(&items[0]).unwrap();
    b.send(&from, &Term::SmallTuple(vec![atom("reply"), server.pid().to_term()])).unwrap();
    let reply = client.recv_timeout(WAIT).unwrap();
    assert_eq!(reply.term, Term::SmallTuple(vec![atom("reply"), server.pid().to_term()]));

    // A dropped mailbox is a dead process: counted as undeliverable, nothing else breaks.
    let dead = b.mailbox();
    let dead_pid = dead.pid().clone();
    drop(dead);
    a.send(&dead_pid, &atom("hello")).unwrap();
    wait_until("an undeliverable count", || stat(&b, "undeliverable") == 1);

    // Bytes that are not a term cost that message only.
    a.node().send("b@127.0.0.1", a.node().channels().default_index(), 0, Dest::Name("server".into()), Bytes::from_static(b"\x83\x68")).unwrap();
    wait_until("an undecodable count", || stat(&b, "undecodable") == 1);
    a.send_named("b@127.0.0.1", "server", &atom("still_up")).unwrap();
    assert_eq!(server.recv_timeout(WAIT).unwrap().term, atom("still_up"));

    // A broadcast from one peer reaches the other once.
    a.broadcast("partisan_test_store", &Term::SmallInt(1), &Term::Binary(b"v".to_vec())).unwrap();
    let seen = std::iter::from_fn(|| b.next_event(WAIT)).find(|e| matches!(e, PeerEvent::Broadcast { .. }));
    assert_eq!(
        seen,
        Some(PeerEvent::Broadcast { handler: "partisan_test_store".into(), id: Term::SmallInt(1), payload: Term::Binary(b"v".to_vec()), from: "a@127.0.0.1".into() })
    );

    // The other peer stopping is a node down.
    b.stop();
    let down = std::iter::from_fn(|| a.next_event(WAIT)).find(|e| matches!(e, PeerEvent::NodeDown(_)));
    assert_eq!(down, Some(PeerEvent::NodeDown("b@127.0.0.1".into())));
    a.stop();
}

#[test]
fn acked_messages_arrive_once_and_in_order_and_are_acknowledged() {
    let a = peer("acka@127.0.0.1");
    let b = peer("ackb@127.0.0.1");
    let inbox = b.register("inbox").unwrap();
    // Sent before the nodes know each other: they wait, and go once the overlay carries them.
    for i in 0..3 {
        a.send_acked("ackb@127.0.0.1", Dest::Name("inbox".into()), &Term::SmallInt(i)).unwrap();
    }
    b.join(a.spec().clone()).unwrap();
    wait_until("a full link", || a.node().is_fully_connected("ackb@127.0.0.1"));
    for i in 3..200 {
        a.send_acked("ackb@127.0.0.1", Dest::Name("inbox".into()), &Term::SmallInt(i)).unwrap();
    }
    for i in 0..200 {
        assert_eq!(inbox.recv_timeout(WAIT).unwrap().term, Term::SmallInt(i));
    }
    wait_until("everything acknowledged", || stat(&a, "unacked_messages") == 0);
    assert_eq!(stat(&a, "dropped_unacknowledged"), 0);
}
