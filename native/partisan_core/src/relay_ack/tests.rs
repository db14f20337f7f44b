//! The acked relays alone: a hand-carried network between two [`RelayAcks`] that loses,
//! duplicates and reorders what it is told to.

use super::*;

const CFG: RelayAckConfig = RelayAckConfig { retransmit_interval: 100, give_up_after: 1_000 };

fn msg(i: u64) -> Bytes {
    Bytes::from(i.to_string())
}

/// Every output: the bodies sent (with their targets), the payloads delivered, the settlements.
#[derive(Default, Debug)]
struct Drained {
    sent: Vec<(String, RelayBody)>,
    delivered: Vec<Bytes>,
    settled: Vec<(usize, usize, usize)>,
}

fn drain(r: &mut RelayAcks) -> Drained {
    let mut d = Drained::default();
    while let Some(out) = r.poll_output() {
        match out {
            Output::Send { target, body } => d.sent.push((target, body)),
            Output::Deliver { payload, .. } => d.delivered.push(payload),
            Output::Settled { acked, given_up, bytes, .. } => d.settled.push((acked, given_up, bytes)),
        }
    }
    d
}

fn seq_of(body: &RelayBody) -> u64 {
    match body {
        RelayBody::Sequenced { seq, .. } => *seq,
        other => panic!("not a message: {other:?}"),
    }
}

fn send_n(a: &mut RelayAcks, now: u64, n: u64) -> Vec<RelayBody> {
    for i in 1..=n {
        a.send(now, "b", Dest::Name("p".into()), msg(i));
    }
    drain(a).sent.into_iter().map(|(t, body)| {
        assert_eq!(t, "b");
        body
    }).collect()
}

#[test]
fn reordered_messages_are_delivered_in_order_and_once() {
    let (mut a, mut b) = (RelayAcks::new(CFG, 1), RelayAcks::new(CFG, 2));
    let bodies = send_n(&mut a, 0, 5);
    for i in [2, 0, 1, 4, 1, 3, 0] {
        b.receive(1, "a", bodies[i].clone());
    }
    assert_eq!(drain(&mut b).delivered, (1..=5).map(msg).collect::<Vec<_>>());
    assert_eq!(b.stats().duplicates, 2);
    // one ack for the whole burst, once its delay is over
    assert_eq!(b.poll_timeout(), Some(1 + ACK_DELAY_MS));
    b.tick(1 + ACK_DELAY_MS);
    let acks = drain(&mut b).sent;
    assert_eq!(acks, [("a".to_string(), RelayBody::Ack(RelayAck { incarnation: 1, seq: 5 }))]);
    a.receive(20, "b", acks[0].1.clone());
    let settled = drain(&mut a).settled;
    assert_eq!(settled.len(), 1);
    assert_eq!((settled[0].0, settled[0].1), (5, 0));
    assert_eq!(settled[0].2, (1..=5).map(|i| budget(&Dest::Name("p".into()), msg(i).len())).sum::<usize>());
    assert_eq!(a.unacked("b"), 0);
    assert_eq!(a.poll_timeout(), None, "nothing left to do");
}

#[test]
fn what_is_lost_is_sent_again_until_acknowledged() {
    let (mut a, mut b) = (RelayAcks::new(CFG, 1), RelayAcks::new(CFG, 2));
    let bodies = send_n(&mut a, 0, 3);
    b.receive(1, "a", bodies[0].clone()); // 2 and 3 are lost
    assert_eq!(drain(&mut b).delivered, [msg(1)]);
    b.tick(11);
    let ack = drain(&mut b).sent.remove(0).1;
    a.receive(12, "b", ack);
    assert_eq!(drain(&mut a).settled[0].0, 1);
    assert_eq!(a.poll_timeout(), Some(112), "retransmit_interval after the last progress");
    a.tick(112);
    let again: Vec<u64> = drain(&mut a).sent.iter().map(|(_, b)| seq_of(b)).collect();
    assert_eq!(again, [2, 3]);
    assert_eq!(a.retransmitted(), 2);
}

#[test]
fn a_silent_target_is_given_up_and_the_receiver_skips_what_was() {
    let (mut a, mut b) = (RelayAcks::new(CFG, 1), RelayAcks::new(CFG, 2));
    let first = send_n(&mut a, 0, 1);
    b.receive(1, "a", first[0].clone());
    drain(&mut b);
    let lost = send_n(&mut a, 10, 2); // never arrive, and 1 is never acknowledged either
    assert_eq!(lost.len(), 2);
    let (mut t, mut settled) = (10, vec![]);
    while t < 1_000 {
        t = a.poll_timeout().unwrap();
        a.tick(t);
        settled.extend(drain(&mut a).settled.into_iter().map(|s| (t, s)));
    }
    assert_eq!(t, 1_000, "give_up_after since the last progress (the first send)");
    assert_eq!(settled.iter().map(|(at, s)| (*at, s.0, s.1)).collect::<Vec<_>>(), [(1_000, 0, 3)], "all three given up at once");
    assert_eq!(a.stats().given_up, 3);
    assert_eq!(a.unacked("b"), 0);
    // the next message says so: b delivers it although 2 and 3 never came
    let next = send_n(&mut a, 1_001, 1);
    assert!(matches!(next[0], RelayBody::Sequenced { seq: 4, base: 4, .. }));
    b.receive(1_002, "a", next[0].clone());
    assert_eq!(drain(&mut b).delivered, [msg(1)]);
}

#[test]
fn a_restarted_origin_starts_over_and_its_old_incarnation_is_ignored() {
    let mut b = RelayAcks::new(CFG, 2);
    let mut old = RelayAcks::new(CFG, 1);
    let old_bodies = send_n(&mut old, 0, 2);
    b.receive(1, "a", old_bodies[0].clone());
    let mut new = RelayAcks::new(CFG, 5);
    let new_bodies = send_n(&mut new, 2, 1);
    b.receive(3, "a", new_bodies[0].clone());
    b.receive(4, "a", old_bodies[1].clone()); // stale
    assert_eq!(drain(&mut b).delivered, [msg(1), msg(1)]);
    b.tick(100);
    let ack = drain(&mut b).sent.remove(0).1;
    assert_eq!(ack, RelayBody::Ack(RelayAck { incarnation: 5, seq: 1 }));
    old.receive(101, "b", ack.clone());
    assert_eq!(old.unacked("b"), 2, "an ack of another incarnation's stream");
    new.receive(101, "b", ack);
    assert_eq!(new.unacked("b"), 0);
}

#[test]
fn the_reorder_buffer_is_bounded() {
    let (mut a, mut b) = (RelayAcks::new(CFG, 1), RelayAcks::new(CFG, 2));
    let bodies = send_n(&mut a, 0, MAX_EARLY as u64 + 2);
    for body in &bodies[1..] {
        b.receive(1, "a", body.clone());
    }
    assert_eq!(b.stats().early_dropped, 1);
    assert!(drain(&mut b).delivered.is_empty());
    b.receive(2, "a", bodies[0].clone());
    assert_eq!(drain(&mut b).delivered.len(), MAX_EARLY + 1, "the last one comes again later");
}

#[test]
fn retransmissions_without_progress_back_off_and_progress_resets_them() {
    let cfg = RelayAckConfig { give_up_after: 60_000, ..CFG };
    let (mut a, mut b) = (RelayAcks::new(cfg, 1), RelayAcks::new(cfg, 2));
    let first = send_n(&mut a, 0, 2);
    let mut at = vec![];
    while at.len() < 8 {
        let t = a.poll_timeout().unwrap();
        a.tick(t);
        if !drain(&mut a).sent.is_empty() {
            at.push(t);
        }
    }
    let gaps: Vec<u64> = std::iter::once(at[0]).chain(at.windows(2).map(|w| w[1] - w[0])).collect();
    assert_eq!(gaps, [100, 200, 400, 800, 1_600, 3_200, 3_200, 3_200]);
    // an ack resets the wait to retransmit_interval
    let now = *at.last().unwrap();
    b.receive(now, "a", first[0].clone());
    b.tick(now + ACK_DELAY_MS);
    let ack = drain(&mut b).sent.remove(0).1;
    a.receive(now + ACK_DELAY_MS, "b", ack);
    drain(&mut a);
    assert_eq!(a.poll_timeout(), Some(now + ACK_DELAY_MS + 100));
}

/// A reply sent before the request's ack is due carries it: no ack of its own goes out.
#[test]
fn a_reply_carries_the_ack_of_its_request() {
    let (mut a, mut b) = (RelayAcks::new(CFG, 1), RelayAcks::new(CFG, 2));
    let request = send_n(&mut a, 0, 1);
    b.receive(1, "a", request[0].clone());
    assert_eq!(drain(&mut b).delivered, [msg(1)]);
    b.send(3, "a", Dest::Reply { id: 7 }, msg(42));
    let sent = drain(&mut b).sent;
    assert!(matches!(&sent[..], [(t, RelayBody::Sequenced { ack: Some(RelayAck { incarnation: 1, seq: 1 }), .. })] if t == "a"));
    assert_eq!(b.poll_timeout(), Some(3 + 100), "no ack due any more: only the reply's retransmission");
    a.receive(4, "b", sent[0].1.clone());
    let d = drain(&mut a);
    assert_eq!(d.delivered, [msg(42)]);
    assert_eq!(d.settled.iter().map(|s| s.0).sum::<usize>(), 1, "the request is acknowledged");
    assert_eq!(a.unacked("b"), 0);
}
