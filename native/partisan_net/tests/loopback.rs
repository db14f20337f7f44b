//! Two or three real nodes over loopback TCP in one process, with a channel-backed sink.

mod common;
use common::stat;
use bytes::Bytes;
use partisan_core::channel::ChannelSpec;
use partisan_core::frame::Dest;
use partisan_net::{Config, DeliverError, Event, Node, Sink};
use std::io::{Read, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Collect {
    msgs: Mutex<Sender<(String, Dest, Bytes)>>,
    events: Mutex<Sender<Event>>,
}

impl Sink for Collect {
    fn deliver(&self, from: &str, dest: &Dest, payload: Bytes) -> Result<(), DeliverError> {
        if matches!(dest, Dest::Name(n) if n == "nobody") {
            return Err(DeliverError::NoProcess);
        }
        self.msgs.lock().unwrap().send((from.into(), dest.clone(), payload)).unwrap();
        Ok(())
    }
    fn event(&self, e: Event) {
        let _ = self.events.lock().unwrap().send(e);
    }
}

fn node(name: &str, cookie: &[u8]) -> (Node, Receiver<(String, Dest, Bytes)>, Receiver<Event>) {
    node_with(name, cookie, |_| {})
}

fn node_with(name: &str, cookie: &[u8], tweak: impl FnOnce(&mut Config)) -> (Node, Receiver<(String, Dest, Bytes)>, Receiver<Event>) {
    let (mt, mr) = channel();
    let (et, er) = channel();
    let mut cfg = Config::new(name, cookie);
    cfg.channels = vec![ChannelSpec::new("data", 4, false), ChannelSpec::new("state", 1, true)];
    cfg.node.timing.connection_interval = 100;
    cfg.node.timing.connection_jitter = 20;
    tweak(&mut cfg);
    let n = Node::start(cfg, Arc::new(Collect { msgs: Mutex::new(mt), events: Mutex::new(et) })).unwrap();
    (n, mr, er)
}

fn wait(what: &str, f: impl Fn() -> bool) {
    common::wait_within(what, Duration::from_secs(10), f)
}

#[test]
fn join_gossip_send_and_failure() {
    let (a, a_msgs, a_events) = node("a@127.0.0.1", b"c");
    let (b, _b_msgs, _) = node("b@127.0.0.1", b"c");
    let (c, c_msgs, _) = node("c@127.0.0.1", b"c");
    b.join(a.spec().clone()).unwrap();
    c.join(b.spec().clone()).unwrap(); // c learns a through b's gossip
    wait("full mesh", || {
        [(&a, "b"), (&a, "c"), (&b, "a"), (&b, "c"), (&c, "a"), (&c, "b")]
            .iter()
            .all(|(n, p)| n.is_fully_connected(&format!("{p}@127.0.0.1")))
    });
    assert_eq!(a.members(), vec!["a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"]);
    assert_eq!(a.connected(), vec!["b@127.0.0.1", "c@127.0.0.1"]);

    // ordering per key over a parallel channel
    let data = a.channels().index_of("data").unwrap();
    for i in 0..1000u32 {
        let key = (i % 4) as u64;
        a.send("c@127.0.0.1", data, key, Dest::Name(format!("k{key}")), Bytes::from(i.to_be_bytes().to_vec())).unwrap();
    }
    let mut last = [None::<u32>; 4];
    for _ in 0..1000 {
        let (from, dest, payload) = c_msgs.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(from, "a@127.0.0.1");
        let Dest::Name(n) = dest else { panic!() };
        let k: usize = n[1..].parse().unwrap();
        let v = u32::from_be_bytes(payload[..].try_into().unwrap());
        assert!(last[k].is_none_or(|p| p < v), "reordered on key {k}");
        last[k] = Some(v);
    }
    // undeliverable is counted, not fatal
    a.send("c@127.0.0.1", data, 0, Dest::Name("nobody".into()), Bytes::new()).unwrap();
    wait("undeliverable counted", || stat(&c, "undeliverable") == 1);
    // errors for unknown node and channel
    assert_eq!(a.send("zz@h", data, 0, Dest::Name("x".into()), Bytes::new()), Err(partisan_net::SendError::NotConnected));
    assert_eq!(a.send("b@127.0.0.1", 99, 0, Dest::Name("x".into()), Bytes::new()), Err(partisan_net::SendError::UnknownChannel));

    // c stops: a sees it down quickly
    while a_events.try_recv().is_ok() {}
    c.stop();
    wait("c down at a", || !a.is_connected("c@127.0.0.1", None));
    let downs: Vec<Event> = a_events.try_iter().collect();
    assert!(downs.contains(&Event::NodeDown("c@127.0.0.1".into())), "{downs:?}");
    drop(a_msgs);
}

#[test]
fn bad_cookie_and_garbage_are_refused_and_counted() {
    let (a, _am, _) = node("a@127.0.0.1", b"right");
    let (b, _bm, _) = node("b@127.0.0.1", b"wrong");
    b.join(a.spec().clone()).unwrap();
    wait("auth failure counted on both sides", || stat(&a, "auth_failures") >= 1 && stat(&b, "auth_failures") >= 1);
    assert!(!b.is_connected("a@127.0.0.1", None));
    // garbage on the listening port
    let addr = a.spec().listen_addrs[0];
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server's challenge (a nonce) is all it sends; then it closes.
    let mut got = vec![];
    let _ = s.read_to_end(&mut got);
    assert_eq!(got.len(), 4 + 1 + 2 + 32, "only the challenge before the close: {got:?}");
    wait("bad frame counted", || stat(&a, "bad_frames") >= 1);
    // the listener still serves a good peer
    let (c, _cm, _) = node("c@127.0.0.1", b"right");
    c.join(a.spec().clone()).unwrap();
    wait("good peer connects", || c.is_fully_connected("a@127.0.0.1"));
}

#[test]
fn restart_on_same_port_is_a_new_incarnation() {
    let (a, _am, _) = node("a@127.0.0.1", b"c");
    let (b, _bm, _) = node("b@127.0.0.1", b"c");
    let port = b.spec().listen_addrs[0];
    b.join(a.spec().clone()).unwrap();
    wait("connected", || a.is_fully_connected("b@127.0.0.1"));
    b.stop();
    wait("down", || !a.is_connected("b@127.0.0.1", None));
    let (mt, _mr) = channel();
    let (et, _er) = channel();
    let mut cfg = Config::new("b@127.0.0.1", b"c");
    cfg.channels = vec![ChannelSpec::new("data", 4, false), ChannelSpec::new("state", 1, true)];
    cfg.listen_addrs = vec![port];
    let b2 = Node::start(cfg, Arc::new(Collect { msgs: Mutex::new(mt), events: Mutex::new(et) })).unwrap();
    // a's reconnect attempts reach the new incarnation, whose gossip-learned view includes a
    wait("a reconnects to restarted b", || a.is_fully_connected("b@127.0.0.1") && b2.is_fully_connected("a@127.0.0.1"));
}

/// Spaced-out messages are written by the sender itself (the link is quiet), bursts go through
/// the writer; mixed, they still arrive complete and in order on one connection.
#[test]
fn direct_and_queued_writes_keep_order() {
    let (a, _am, _) = node("a@127.0.0.1", b"c");
    let (b, b_msgs, _) = node("b@127.0.0.1", b"c");
    b.join(a.spec().clone()).unwrap();
    wait("connected", || a.is_fully_connected("b@127.0.0.1"));
    let data = a.channels().index_of("data").unwrap();
    let mut next = 0u32;
    let mut send = |n: u32| {
        for _ in 0..n {
            a.send("b@127.0.0.1", data, 7, Dest::Name("k".into()), Bytes::from(next.to_be_bytes().to_vec())).unwrap();
            next += 1;
        }
    };
    for round in 0..50 {
        send(1); // quiet link: a direct write
        std::thread::sleep(Duration::from_micros(200)); // longer than DIRECT_GAP, so the next is direct too
        send(if round % 5 == 0 { 200 } else { 1 }); // a burst: the first direct, the rest queued
    }
    let total = next;
    for expected in 0..total {
        let (_, _, payload) = b_msgs.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(u32::from_be_bytes(payload[..].try_into().unwrap()), expected);
    }
}

/// Connections that never authenticate take at most `max_pending_handshakes_per_addr` places per
/// source address and `max_pending_handshakes` in all; the others are reset at once and counted.
#[test]
fn pending_handshakes_are_bounded_in_all_and_per_address() {
    let (a, _am, _) = node_with("a@127.0.0.1", b"c", |c| {
        c.max_pending_handshakes = 6;
        c.max_pending_handshakes_per_addr = 4;
    });
    let addr = a.spec().listen_addrs[0];
    let from = |ip: [u8; 4]| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from((ip, 0)).into()).unwrap();
        s.connect(&addr.into()).unwrap();
        let s: std::net::TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    // Admitted connections get the challenge; refused ones are reset without a byte.
    let admitted = |s: &mut std::net::TcpStream| {
        let mut challenge = [0u8; 4 + 1 + 2 + 32];
        s.read_exact(&mut challenge).is_ok()
    };
    let mut held = vec![];
    for _ in 0..6 {
        held.push(from([127, 0, 0, 1]));
    }
    let got: Vec<bool> = held.iter_mut().map(admitted).collect();
    assert_eq!(got, [true, true, true, true, false, false]);
    for _ in 0..4 {
        held.push(from([127, 0, 0, 2]));
    }
    let got: Vec<bool> = held[6..].iter_mut().map(admitted).collect();
    assert_eq!(got, [true, true, false, false]);
    assert_eq!(stat(&a, "handshakes_pending"), 6);
    assert_eq!(stat(&a, "handshakes_pending_peak"), 6);
    assert_eq!(stat(&a, "handshakes_refused"), 4);
    // Closing them frees the places: a real peer connects.
    drop(held);
    wait("places freed", || stat(&a, "handshakes_pending") == 0);
    let (b, _bm, _) = node("b@127.0.0.1", b"c");
    b.join(a.spec().clone()).unwrap();
    wait("good peer connects", || b.is_fully_connected("a@127.0.0.1") && a.is_fully_connected("b@127.0.0.1"));
}

/// The receiver announces its `max_frame_size` in the handshake; a larger message is refused at
/// the sender instead of costing the link.
#[test]
fn messages_over_the_receivers_frame_limit_are_refused_at_the_sender() {
    let (a, _am, _) = node("a@127.0.0.1", b"c");
    let (b, b_msgs, _) = node_with("b@127.0.0.1", b"c", |c| c.max_frame_size = 64 * 1024);
    b.join(a.spec().clone()).unwrap();
    wait("connected", || a.is_fully_connected("b@127.0.0.1"));
    let data = a.channels().index_of("data").unwrap();
    let dest = Dest::Name("k".into());
    let max_payload = 64 * 1024 - partisan_core::frame::message_frame_len(&dest, 0);
    let err = a.send("b@127.0.0.1", data, 0, dest.clone(), Bytes::from(vec![0u8; max_payload + 1])).unwrap_err();
    assert_eq!(err, partisan_net::SendError::MessageTooLarge { size: 64 * 1024 + 1, max: 64 * 1024 });
    a.send("b@127.0.0.1", data, 0, dest.clone(), Bytes::from(vec![1u8; max_payload])).unwrap();
    let (_, _, payload) = b_msgs.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(payload.len(), max_payload);
    assert!(a.is_fully_connected("b@127.0.0.1"));
    assert_eq!(stat(&b, "bad_frames"), 0);
}

/// `stop` writes out what senders queued before it closes the sockets.
#[test]
fn stop_flushes_the_queues() {
    let (a, _am, _) = node("a@127.0.0.1", b"c");
    let (b, b_msgs, _) = node("b@127.0.0.1", b"c");
    b.join(a.spec().clone()).unwrap();
    wait("connected", || a.is_fully_connected("b@127.0.0.1"));
    let data = a.channels().index_of("data").unwrap();
    let n = 20_000u32;
    for i in 0..n {
        let mut payload = vec![0u8; 1024];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        a.send("b@127.0.0.1", data, i as u64, Dest::Name("k".into()), Bytes::from(payload)).unwrap();
    }
    let report = a.stop();
    assert!(report.flushed, "{report:?}");
    assert_eq!(report.undelivered, 0);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n as usize {
        let (_, _, payload) = b_msgs.recv_timeout(Duration::from_secs(10)).expect("every message queued before stop arrives");
        seen.insert(u32::from_be_bytes(payload[..4].try_into().unwrap()));
    }
}

/// Waits for the first event `f` accepts (other events are skipped).
fn wait_event(rx: &Receiver<Event>, what: &str, f: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if f(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn connection_events_come_with_their_channel_and_reason() {
    let (a, _am, a_events) = node("a@127.0.0.1", b"c");
    let (b, _bm, b_events) = node("b@127.0.0.1", b"c");
    b.join(a.spec().clone()).unwrap();
    wait("connected", || a.is_fully_connected("b@127.0.0.1") && b.is_fully_connected("a@127.0.0.1"));
    // Every connection b dialed to a reported itself up: data has parallelism 4.
    let mut data_conns = std::collections::BTreeSet::new();
    while data_conns.len() < 4 {
        if let Event::ConnectionUp { conn, .. } = wait_event(&b_events, "b's data connections up", |e| {
            matches!(e, Event::ConnectionUp { node, channel, .. } if node == "a@127.0.0.1" && channel == "data")
        }) {
            data_conns.insert(conn);
        }
    }
    assert_eq!(data_conns.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // b stops: a's connections to b report that the peer closed them, before the node's down.
    b.stop();
    let down = wait_event(&a_events, "a's connection to b down", |e| matches!(e, Event::ConnectionDown { .. } | Event::NodeDown(_)));
    match down {
        Event::ConnectionDown { node, reason, .. } => {
            assert_eq!(node, "b@127.0.0.1");
            assert!(["closed", "connection_reset"].contains(&reason), "{reason}");
        }
        other => panic!("node down before any connection down: {other:?}"),
    }
    wait_event(&a_events, "b down at a", |e| *e == Event::NodeDown("b@127.0.0.1".into()));
}

#[test]
fn drops_and_auth_failures_are_reported_in_aggregate() {
    let (a, _am, a_events) = node("a@127.0.0.1", b"right");
    let (b, _bm, b_events) = node("b@127.0.0.1", b"wrong");
    b.join(a.spec().clone()).unwrap();
    let inbound = wait_event(&a_events, "inbound auth failure at a", |e| matches!(e, Event::AuthFailed { .. }));
    match inbound {
        Event::AuthFailed { direction, peer, reason, count } => {
            assert_eq!((direction, peer.as_str(), reason), (partisan_net::Direction::Inbound, "127.0.0.1", "bad_proof"));
            assert!(count >= 1);
        }
        _ => unreachable!(),
    }
    let outbound = wait_event(&b_events, "outbound auth failure at b", |e| matches!(e, Event::AuthFailed { .. }));
    assert!(
        matches!(&outbound, Event::AuthFailed { direction: partisan_net::Direction::Outbound, peer, reason: "refused", .. } if peer == "a@127.0.0.1"),
        "{outbound:?}"
    );
    // 10,000 sends to a node that is not connected: counted exactly, reported in one event.
    let data = a.channels().index_of("data").unwrap();
    for _ in 0..10_000 {
        let _ = a.send("zz@h", data, 0, Dest::Name("x".into()), Bytes::new());
    }
    let dropped = wait_event(&a_events, "drops reported", |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(
        dropped,
        Event::Dropped { reason: partisan_net::DropReason::NotConnected, node: Some("zz@h".into()), channel: Some("data".into()), count: 10_000 }
    );
    assert_eq!(stat(&a, "dropped_not_connected"), 10_000);
    std::thread::sleep(partisan_net::report::REPORT_INTERVAL + Duration::from_millis(300));
    assert!(!a_events.try_iter().any(|e| matches!(e, Event::Dropped { .. })), "one report for the whole flood");
}

/// A channel with compression delivers compressible and incompressible payloads intact, to a
/// node with compression and to one without (compression is flagged per frame).
#[test]
fn compressed_channel_round_trips_and_mixes() {
    let (a, _a_msgs, _) = node_with("za@127.0.0.1", b"c", |c| c.compression = vec![("data".into(), 1)]);
    let (b, b_msgs, _) = node("zb@127.0.0.1", b"c");
    b.join(a.spec().clone()).unwrap();
    wait("connected", || a.is_fully_connected("zb@127.0.0.1") && b.is_fully_connected("za@127.0.0.1"));
    let data = a.channels().index_of("data").unwrap();
    let compressible: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
    let mut random = vec![0u8; 70_000];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
    for (i, p) in [compressible.clone(), random.clone(), vec![1, 2, 3], compressible[..2000].to_vec()].into_iter().enumerate() {
        a.send("zb@127.0.0.1", data, i as u64, Dest::Name("x".into()), Bytes::from(p.clone())).unwrap();
        let (_, _, got) = b_msgs.recv_timeout(Duration::from_secs(10)).expect("delivered");
        assert!(got[..] == p[..], "payload {i} changed ({} bytes, {} sent)", got.len(), p.len());
    }
    assert_eq!(stat(&b, "bad_frames"), 0);
}
