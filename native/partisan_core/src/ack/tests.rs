use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;

const CFG: OutboxConfig = OutboxConfig { retransmit_interval: 100, max_bytes: 1 << 20 };

fn msg(n: u32) -> (Dest, Bytes) {
    (Dest::Name("srv".into()), Bytes::from(n.to_be_bytes().to_vec()))
}

fn number(payload: &Bytes) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

/// Every transmit the outbox has for its one stream.
fn drain(out: &mut Outbox<u8>) -> Vec<Transmit<u8>> {
    std::iter::from_fn(|| out.poll_transmit()).collect()
}

#[test]
fn messages_wait_for_the_link_and_go_in_order() {
    let mut out = Outbox::new(CFG);
    for n in 0..3 {
        let (d, p) = msg(n);
        assert_eq!(out.send(0, 0u8, d, p), Ok(u64::from(n) + 1));
    }
    assert!(out.poll_transmit().is_none(), "nothing goes before the link is up");
    out.link_up(1, 0);
    let seqs: Vec<u64> = drain(&mut out).iter().map(|t| t.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(out.stats().retransmitted, 0, "a first transmission is not a retransmission");
    let (d, p) = msg(3);
    out.send(2, 0, d, p).unwrap();
    let t = drain(&mut out);
    assert_eq!((t.len(), t[0].seq, t[0].base), (1, 4, 1));
    assert_eq!(out.on_ack(3, &0, 2), 2);
    assert_eq!(out.unacked(), 2);
}

#[test]
fn the_budget_refuses_and_acks_free_it() {
    let mut out = Outbox::new(OutboxConfig { retransmit_interval: 100, max_bytes: 200 });
    let big = Bytes::from(vec![0u8; 150]);
    out.send(0, 0u8, Dest::Name("a".into()), big.clone()).unwrap();
    assert_eq!(out.send(0, 1u8, Dest::Name("a".into()), big.clone()), Err(QueueFull), "the budget is per destination, across streams");
    assert!(!out.has_room(budget(&Dest::Name("a".into()), big.len())), "what a sender asks before encoding");
    assert!(out.has_room(10));
    out.link_up(0, 0);
    let t = drain(&mut out);
    out.on_ack(1, &0, t[0].seq);
    assert_eq!(out.bytes(), 0);
    assert!(out.has_room(1 << 30), "an empty budget takes any one message");
    assert!(out.send(1, 1u8, Dest::Name("a".into()), big).is_ok());
}

#[test]
fn a_reconnection_resends_the_unacked_and_the_receiver_drops_duplicates() {
    let mut out = Outbox::new(CFG);
    let mut rx = Inbound::default();
    out.link_up(0, 0u8);
    for n in 0..5 {
        let (d, p) = msg(n);
        out.send(0, 0, d, p).unwrap();
    }
    let first = drain(&mut out);
    // Messages 1..=3 arrive, the connection dies with 4 and 5 and the ack.
    for t in &first[..3] {
        assert_eq!(rx.receive(9, t.seq, t.base), Verdict::Deliver);
    }
    out.link_down(&0);
    out.link_up(10, 0);
    let again = drain(&mut out);
    assert_eq!(again.iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(out.stats().retransmitted, 5);
    let verdicts: Vec<Verdict> = again.iter().map(|t| rx.receive(9, t.seq, t.base)).collect();
    use Verdict::*;
    assert_eq!(verdicts, [Duplicate, Duplicate, Duplicate, Deliver, Deliver]);
    assert_eq!(rx.take_ack(), Some((9, 5)));
    assert_eq!(rx.take_ack(), None, "one ack per batch");
}

#[test]
fn no_progress_for_the_interval_retransmits() {
    let mut out = Outbox::new(CFG);
    out.link_up(0, 0u8);
    let (d, p) = msg(1);
    out.send(0, 0, d, p).unwrap();
    drain(&mut out);
    assert_eq!(out.poll_timeout(), Some(100));
    out.tick(99);
    assert!(out.poll_transmit().is_none());
    out.tick(100);
    assert_eq!(drain(&mut out).len(), 1);
    assert_eq!(out.poll_timeout(), Some(200));
    out.on_ack(150, &0, 1);
    assert_eq!(out.poll_timeout(), None, "nothing unacked, nothing to time");
}

#[test]
fn a_failed_transmit_waits_for_the_next_retransmission() {
    let mut out = Outbox::new(CFG);
    out.link_up(0, 0u8);
    for n in 0..3 {
        let (d, p) = msg(n);
        out.send(0, 0, d, p).unwrap();
    }
    let t = out.poll_transmit().unwrap();
    assert_eq!(t.seq, 1);
    out.transmit_failed(&0, 1);
    assert!(out.poll_transmit().is_none(), "the later ones do not jump the queue");
    let (d, p) = msg(3);
    out.send(1, 0, d, p).unwrap();
    assert!(out.poll_transmit().is_none(), "nor do new ones");
    out.tick(100);
    assert_eq!(drain(&mut out).iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[test]
fn given_up_messages_are_skipped_by_the_receiver() {
    let mut out = Outbox::new(CFG);
    let mut rx = Inbound::default();
    out.link_up(0, 0u8);
    let (d, p) = msg(0);
    out.send(0, 0, d, p).unwrap();
    let t = out.poll_transmit().unwrap();
    assert_eq!(rx.receive(1, t.seq, t.base), Verdict::Deliver);
    out.link_down(&0);
    for n in 1..4 {
        let (d, p) = msg(n);
        out.send(0, 0, d, p).unwrap();
    }
    assert_eq!(out.drain().0, 4);
    assert_eq!((out.unacked(), out.bytes()), (0, 0));
    out.link_up(5, 0);
    let (d, p) = msg(9);
    out.send(5, 0, d, p).unwrap();
    let t = out.poll_transmit().unwrap();
    assert_eq!((t.seq, t.base), (5, 5));
    assert_eq!(rx.receive(1, t.seq, t.base), Verdict::Deliver, "numbers 2..=4 were given up");
}

#[test]
fn a_restarted_sender_starts_a_new_stream_and_the_old_one_is_stale() {
    let mut rx = Inbound::default();
    assert_eq!(rx.receive(10, 1, 1), Verdict::Deliver);
    assert_eq!(rx.receive(10, 2, 1), Verdict::Deliver);
    assert_eq!(rx.receive(11, 1, 1), Verdict::Deliver, "a new incarnation numbers from 1 again");
    assert_eq!(rx.receive(10, 3, 1), Verdict::Stale);
    assert_eq!(rx.receive(11, 3, 1), Verdict::Early);
    assert_eq!(rx.take_ack(), Some((11, 1)));
}

#[test]
fn a_receiver_without_state_starts_at_the_base() {
    // The receiver restarted (or never heard of the stream): it starts where the sender holds.
    let mut rx = Inbound::default();
    assert_eq!(rx.receive(3, 8, 7), Verdict::Early);
    assert_eq!(rx.receive(3, 7, 7), Verdict::Deliver);
    assert_eq!(rx.receive(3, 8, 7), Verdict::Deliver);
}

/// One step of the randomized run.
#[derive(Debug, Clone)]
enum Step {
    Send(u8),
    /// The connection carries up to n frames each way.
    Carry(u8),
    /// The connection dies with everything on it; a new one comes up.
    Reconnect,
    /// The connection dies; none until a Reconnect.
    Cut,
    Tick(u8),
    /// The sender's queue refuses the next transmit.
    Refuse,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..3).prop_map(Step::Send),
        6 => (1u8..20).prop_map(Step::Carry),
        1 => Just(Step::Reconnect),
        1 => Just(Step::Cut),
        2 => (1u8..200).prop_map(Step::Tick),
        1 => Just(Step::Refuse),
    ]
}

/// The sender, a receiver and one connection per stream at a time between them, driven by
/// `steps`, then healed: every message accepted is delivered exactly once, in order per stream.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut out: Outbox<u8> = Outbox::new(OutboxConfig { retransmit_interval: 50, max_bytes: 4096 });
    let mut rx: [Inbound; 3] = Default::default();
    let mut delivered: [Vec<u32>; 3] = Default::default();
    let mut sent: [Vec<u32>; 3] = Default::default();
    // Frames in flight on the current connection: to the receiver and (acks) back.
    let mut wire: VecDeque<Transmit<u8>> = VecDeque::new();
    let mut acks: VecDeque<(u8, u64)> = VecDeque::new();
    let (mut now, mut up, mut next, mut refuse) = (0u64, true, 0u32, false);
    for k in 0..3 {
        out.link_up(now, k);
    }
    let pump = |out: &mut Outbox<u8>, wire: &mut VecDeque<Transmit<u8>>, refuse: &mut bool| {
        while let Some(t) = out.poll_transmit() {
            if std::mem::take(refuse) {
                out.transmit_failed(&t.key, t.seq);
            } else {
                wire.push_back(t);
            }
        }
    };
    let carry = |n: u8, now: u64, out: &mut Outbox<u8>, wire: &mut VecDeque<Transmit<u8>>, acks: &mut VecDeque<(u8, u64)>, rx: &mut [Inbound; 3], delivered: &mut [Vec<u32>; 3]| {
        for _ in 0..n {
            if let Some(t) = wire.pop_front() {
                let k = t.key as usize;
                if rx[k].receive(1, t.seq, t.base) == Verdict::Deliver {
                    delivered[k].push(number(&t.payload));
                }
                if let Some((_, seq)) = rx[k].take_ack() {
                    acks.push_back((t.key, seq));
                }
            }
            if let Some((k, seq)) = acks.pop_front() {
                out.on_ack(now, &k, seq);
            }
        }
    };
    for s in steps {
        now += 1;
        match *s {
            Step::Send(k) => {
                let (d, p) = msg(next);
                if out.send(now, k, d, p).is_ok() {
                    sent[k as usize].push(next);
                }
                next += 1;
            }
            Step::Carry(n) => carry(n, now, &mut out, &mut wire, &mut acks, &mut rx, &mut delivered),
            Step::Reconnect | Step::Cut => {
                wire.clear();
                acks.clear();
                for k in 0..3 {
                    out.link_down(&k);
                }
                up = matches!(s, Step::Reconnect);
                if up {
                    for k in 0..3 {
                        out.link_up(now, k);
                    }
                }
            }
            Step::Tick(dt) => {
                now += u64::from(dt);
                out.tick(now);
            }
            Step::Refuse => refuse = true,
        }
        if up {
            pump(&mut out, &mut wire, &mut refuse);
        } else {
            prop_assert!(out.poll_transmit().is_none(), "nothing to send without a link");
        }
    }
    // Heal: a link, then time and carrying until nothing is held.
    if !up {
        for k in 0..3 {
            out.link_up(now, k);
        }
    }
    for _ in 0..10_000 {
        if out.unacked() == 0 {
            break;
        }
        now += 60;
        out.tick(now);
        pump(&mut out, &mut wire, &mut refuse);
        carry(50, now, &mut out, &mut wire, &mut acks, &mut rx, &mut delivered);
    }
    prop_assert_eq!(out.unacked(), 0);
    prop_assert_eq!(out.bytes(), 0);
    prop_assert_eq!(delivered, sent);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Any interleaving of sends, lost connections (with the frames and acks on them), refused
    /// queue pushes and timeouts: each accepted message is delivered once, in order.
    #[test]
    fn exactly_once_in_order_across_lost_connections(steps in proptest::collection::vec(step(), 0..300)) {
        run(&steps)?;
    }
}
