//! The send queue over a real connected socket pair (loopback TCP): what the peer reads is what
//! the queue promised.

use super::*;
use bytes::Buf;
use partisan_core::frame::{Decoder, Frame};
use std::sync::atomic::AtomicUsize;
use tokio::io::AsyncReadExt;

/// A connected pair: the queue's side (shared, as a link's socket is) and the peer's.
async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (peer, _) = listener.accept().await.unwrap();
    // tokio learns that a new socket is writable from its first readiness event; wait for it so
    // that a direct write is tried rather than refused for want of it.
    ours.writable().await.unwrap();
    (Arc::new(ours), peer)
}

fn queue(socket: Arc<TcpStream>, max_bytes: usize, gap: Duration) -> (LinkQueue, Arc<AtomicU64>) {
    let replaced = Arc::new(AtomicU64::new(0));
    (LinkQueue::new(socket, max_bytes, 1 << 20, replaced.clone()).with_direct_gap(gap), replaced)
}

/// Message `n`: its payload is `n` (4 bytes), padded to `size` bytes.
fn msg(n: u32, size: usize) -> Outgoing {
    let mut payload = n.to_be_bytes().to_vec();
    payload.resize(size.max(4), 0);
    Outgoing::Message { dest: Dest::Name("p".into()), payload: Bytes::from(payload).into() }
}

/// Message `n` as a gathered payload: its number, then `pieces` more pieces of `size` bytes.
fn gathered_msg(n: u32, pieces: usize, size: usize) -> Outgoing {
    let parts = std::iter::once(Bytes::copy_from_slice(&n.to_be_bytes())).chain((0..pieces).map(|i| Bytes::from(vec![i as u8; size]))).collect();
    Outgoing::Message { dest: Dest::Name("p".into()), payload: Payload::gathered(parts) }
}

/// The queue's writer on a task of its own.
fn spawn_writer(q: &Arc<LinkQueue>) -> tokio::task::JoinHandle<io::Result<()>> {
    let q = q.clone();
    tokio::spawn(async move { write_batches(&q, &mut crate::stream::WriteSide::Plain(q.socket.clone())).await })
}

fn key(k: u8) -> Option<MonotonicKey> {
    Some(MonotonicKey { dest: vec![k], affinity: 0 })
}

/// Reads message frames (plain or sequenced) until `count` arrived (`None`: until EOF); returns their numbers.
async fn read_numbers(peer: &mut TcpStream, count: Option<usize>) -> Vec<u32> {
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut numbers = vec![];
    while count != Some(numbers.len()) {
        match dec.decode(&mut buf).unwrap() {
            Some(Frame::Message { mut payload, .. } | Frame::Sequenced { mut payload, .. }) => numbers.push(payload.get_u32()),
            Some(other) => panic!("unexpected frame {other:?}"),
            None => {
                if peer.read_buf(&mut buf).await.unwrap() == 0 {
                    assert!(buf.is_empty(), "EOF inside a frame");
                    break;
                }
            }
        }
    }
    numbers
}

/// Waits (10 s at most) until `f` holds: for what the writer reports after the peer could read.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_quiet_link_is_written_by_the_sender_and_a_busy_one_by_the_writer() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 1 << 20, Duration::from_secs(3600));
    q.push(msg(1, 4), None).unwrap();
    assert_eq!(q.unwritten(), 0, "written by the sender itself, no writer runs");
    assert_eq!(read_numbers(&mut peer, Some(1)).await, [1]);
    q.push(msg(2, 4), None).unwrap();
    assert_eq!(q.unwritten(), 1, "a second message within the gap waits for the writer");

    let (socket, _peer) = socket_pair().await;
    let (q, _) = queue(socket, 1 << 20, Duration::ZERO);
    q.push(msg(1, DIRECT_LARGE_MAX + 1), None).unwrap();
    assert_eq!(q.unwritten(), 1, "a large message goes to the writer");
    let mut held = vec![];
    q.take_all(&mut held).await.unwrap();
    q.push(msg(2, 4), None).unwrap();
    assert_eq!(q.unwritten(), 2, "so does any message while the writer is writing");
    q.written(Written { items: 1, bytes: held[0].budget_len(), ..Written::default() });
    let mut held = vec![];
    q.take_all(&mut held).await.unwrap();
    q.written(Written { items: 1, bytes: held[0].budget_len(), ..Written::default() });
    q.push(msg(3, 4), key(1)).unwrap();
    assert_eq!(q.unwritten(), 1, "and a monotonic message, which a newer one may still replace");
}

#[tokio::test]
async fn messages_arrive_in_the_order_they_were_pushed() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 64 << 20, Duration::ZERO);
    let q = Arc::new(q);
    let writer = spawn_writer(&q);
    let reader = tokio::spawn(async move { read_numbers(&mut peer, None).await });
    for n in 0..2000u32 {
        // every 100th is written from its own buffer, the others batched or written directly
        let size = if n % 100 == 0 { COPY_LIMIT + 1 } else { 16 };
        q.push(msg(n, size), None).unwrap();
        if n % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    q.close();
    writer.await.unwrap().unwrap();
    assert_eq!(reader.await.unwrap(), (0..2000).collect::<Vec<_>>());
    assert_eq!(q.budget_used(), 0);
}

/// Large and gathered payloads are written from their own buffers, many frames per vectored
/// write, between copied small frames: what arrives is every frame whole, in order.
#[tokio::test]
async fn large_and_gathered_payloads_keep_their_place_between_small_ones() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 64 << 20, Duration::ZERO);
    let q = Arc::new(q);
    let writer = spawn_writer(&q);
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut expected = vec![];
    for n in 0..600u32 {
        let item = match n % 3 {
            0 => msg(n, 16),
            1 => msg(n, COPY_LIMIT + 100),
            // more pieces than one vectored write takes, in some
            _ => gathered_msg(n, if n % 30 == 2 { MAX_IOVECS + 3 } else { 3 }, 5_000),
        };
        let mut encoded = BytesMut::new();
        if let Outgoing::Message { dest, payload } = &item {
            Frame::Message { dest: dest.clone(), payload: payload.contiguous() }.encode(&mut encoded);
        }
        expected.push(encoded.freeze());
        q.push(item, None).unwrap();
        if n % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    q.close();
    let reader = tokio::spawn(async move {
        let mut frames = vec![];
        loop {
            match dec.decode(&mut buf).unwrap() {
                Some(frame) => frames.push(frame.to_bytes()),
                None if peer.read_buf(&mut buf).await.unwrap() == 0 => return frames,
                None => {}
            }
        }
    });
    writer.await.unwrap().unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), expected.len(), "frames");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
        panic!("frame {i} differs: {} bytes, expected {}", got[i].len(), expected[i].len());
    }
    assert_eq!(q.budget_used(), 0);
}

#[tokio::test]
async fn a_newer_monotonic_message_replaces_the_queued_one_in_its_place() {
    let (socket, mut peer) = socket_pair().await;
    let (q, replaced) = queue(socket, 1 << 20, Duration::ZERO);
    q.push(msg(1, 100), key(1)).unwrap();
    q.push(msg(2, 50), key(2)).unwrap();
    q.push(msg(3, 300), key(1)).unwrap();
    q.push(msg(4, 10), key(1)).unwrap();
    assert_eq!(replaced.load(Ordering::Relaxed), 2);
    assert_eq!(q.unwritten(), 2);
    assert_eq!(q.budget_used(), msg(4, 10).budget_len() + msg(2, 50).budget_len(), "replaced messages leave the budget");
    q.close();
    write_batches(&q, &mut crate::stream::WriteSide::Plain(q.socket.clone())).await.unwrap();
    assert_eq!(read_numbers(&mut peer, None).await, [4, 2], "the newest of key 1, where the first of key 1 stood");
    assert_eq!((q.unwritten(), q.budget_used()), (0, 0));
}

#[tokio::test]
async fn the_byte_budget_refuses_with_queue_full_until_the_writer_frees_it() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 1000, Duration::ZERO);
    let q = Arc::new(q);
    // monotonic, distinct keys: queued (never written directly) and never replaced
    let each = msg(0, 200).budget_len();
    for n in 0..(1000 / each) as u8 {
        q.push(msg(n.into(), 200), key(n)).unwrap();
    }
    assert_eq!(q.push(msg(99, 200), key(99)), Err(SendError::QueueFull));
    assert_eq!(q.budget_used(), (1000 / each) * each);
    // A message sent with `ack` is bounded by its outbox, not refused here.
    let sequenced = Outgoing::Sequenced { incarnation: 1, seq: 1, base: 1, dest: Dest::Name("p".into()), payload: Bytes::from(vec![0u8; 200]).into() };
    let sequenced_budget = sequenced.budget_len();
    assert_eq!(q.push(sequenced, None), Ok(()));
    assert_eq!(q.budget_used(), (1000 / each) * each + sequenced_budget);
    let writer = tokio::spawn({
        let q = q.clone();
        async move { write_batches(&q, &mut crate::stream::WriteSide::Plain(q.socket.clone())).await }
    });
    assert_eq!(read_numbers(&mut peer, Some(1000 / each + 1)).await.len(), 1000 / each + 1);
    until("the writer gave the budget back", || q.budget_used() == 0).await;
    // one item larger than the whole budget still goes through an empty queue, alone
    q.push(msg(7, 5000), key(7)).unwrap();
    assert_eq!(q.push(msg(8, 10), key(8)), Err(SendError::QueueFull));
    // and the peer's frame limit is checked before anything else
    let too_large = msg(9, 2 << 20);
    assert!(matches!(q.push(too_large, None), Err(SendError::MessageTooLarge { max, .. }) if max == 1 << 20));
    q.close();
    writer.await.unwrap().unwrap();
    assert_eq!(read_numbers(&mut peer, None).await, [7]);
}

/// A sender pushes as fast as it can (directly when the link is quiet, else through the writer)
/// while the queue is closed under it: every push that returned `Ok` is read by the peer, in
/// order, and every later one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_while_a_sender_pushes_loses_nothing_that_was_accepted() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 64 << 20, Duration::ZERO);
    let q = Arc::new(q);
    let writer = spawn_writer(&q);
    let reader = tokio::spawn(async move { read_numbers(&mut peer, None).await });
    let accepted = Arc::new(AtomicUsize::new(0));
    let sender = std::thread::spawn({
        let (q, accepted) = (q.clone(), accepted.clone());
        move || {
            for n in 0u32.. {
                match q.push(msg(n, 16), None) {
                    Ok(()) => accepted.store(n as usize + 1, Ordering::SeqCst),
                    Err(e) => return (n, e),
                }
            }
            unreachable!()
        }
    });
    until("the sender is under way", || accepted.load(Ordering::SeqCst) >= 5000).await;
    q.close();
    let (first_refused, error) = sender.join().unwrap();
    assert_eq!(error, SendError::NotConnected);
    writer.await.unwrap().unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), first_refused as usize, "every accepted message was written");
    assert!(got.iter().enumerate().all(|(i, n)| *n == i as u32), "in order");
}

#[tokio::test]
async fn abort_drops_and_counts_what_was_not_written_and_shuts_the_socket() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 1 << 20, Duration::ZERO);
    for k in 0..3 {
        q.push(msg(k.into(), 10), key(k)).unwrap();
    }
    let mut held = vec![];
    q.take_all(&mut held).await.unwrap();
    q.push(msg(3, 10), key(3)).unwrap();
    assert_eq!(q.abort(), 4, "three held by the writer, one queued");
    assert_eq!(q.abort(), 0);
    assert_eq!(q.push(msg(4, 10), None), Err(SendError::NotConnected));
    assert_eq!(q.budget_used(), 0);
    assert_eq!(read_numbers(&mut peer, None).await, Vec::<u32>::new(), "EOF, nothing written");
}

/// Small messages queued behind a busy writer share buffers of frames: the queue counts each
/// message (for what a dead link loses) and its bytes, and a written buffer is used again.
#[tokio::test]
async fn small_messages_share_buffers_of_frames_that_are_reused() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket, 64 << 20, Duration::from_secs(3600));
    let q = Arc::new(q);
    // A large message keeps the link busy, so the small ones queue behind it.
    q.push(msg(0, DIRECT_LARGE_MAX + 1), None).unwrap();
    let n = 1 + 2 * FRAMES_BYTES / msg(1, 100).frame_len();
    for i in 1..=n as u32 {
        q.push(msg(i, 100), None).unwrap();
    }
    assert_eq!(q.unwritten(), n + 1);
    let frames_bytes = n * (LENGTH_PREFIX + msg(1, 100).frame_len());
    assert_eq!(q.budget_used(), msg(0, DIRECT_LARGE_MAX + 1).budget_len() + frames_bytes, "a buffered frame counts its bytes");
    let buffers = q.lock().fifo.iter().filter(|i| matches!(i, Queued::Frames { .. })).count();
    assert_eq!(buffers, 3, "{n} frames of 100 bytes fill two buffers of {FRAMES_BYTES} and start a third");
    let writer = spawn_writer(&q);
    assert_eq!(read_numbers(&mut peer, Some(n + 1)).await, (0..=n as u32).collect::<Vec<_>>());
    until("the writer gave the budget back", || q.budget_used() == 0).await;
    assert_eq!(q.lock().spare.len(), 3, "written buffers are kept for reuse (append_frame takes them first)");
    q.close();
    writer.await.unwrap().unwrap();
    assert_eq!((q.unwritten(), q.budget_used()), (0, 0));
}

/// A writer with a long backlog gives its thread back every `WRITE_SLICE` bytes: the other tasks
/// of that thread (another connection's reader or writer) run while a bulk stream is written,
/// instead of after it.
#[tokio::test(flavor = "current_thread")]
async fn a_writer_with_a_long_backlog_lets_other_tasks_run() {
    let (socket, peer) = socket_pair().await;
    // Every message through the writer (none written by the sender while the link is quiet).
    let q = Arc::new(LinkQueue::new(socket, 64 << 20, 1 << 20, Arc::default()).without_direct_writes());
    let count = 256; // 16 MiB of 64 KiB messages
    for n in 0..count {
        q.push(msg(n, 64 * 1024), None).unwrap();
    }
    // The peer drains the socket on a thread of its own, so the writer seldom meets a full
    // socket buffer (which would also make it give the thread back).
    let mut peer = peer.into_std().unwrap();
    peer.set_nonblocking(false).unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut peer, &mut std::io::sink()).unwrap());
    let queued = q.unwritten();
    let writer = spawn_writer(&q);
    // Spawned after the writer: on this one-thread runtime it runs when the writer yields.
    let left = tokio::spawn({
        let q = q.clone();
        async move { q.unwritten() }
    })
    .await
    .unwrap();
    let written = queued - left;
    assert!(written * 64 * 1024 <= 2 * WRITE_SLICE + 2 * BATCH_BYTES, "{written} messages of 64 KiB were written before another task could run");
    q.close();
    writer.await.unwrap().unwrap();
    assert_eq!(drain.join().unwrap() as usize, count as usize * msg(0, 64 * 1024).frame_len() + count as usize * LENGTH_PREFIX);
}

/// A large message on a quiet link is written by its sender, from its own buffers, whatever
/// the gap since the last direct write; what the socket does not take is queued, by reference,
/// and arrives after what it took.
#[tokio::test]
async fn a_large_message_on_a_quiet_link_is_written_by_the_sender() {
    let (socket, mut peer) = socket_pair().await;
    let (q, _) = queue(socket.clone(), 64 << 20, Duration::from_secs(3600));
    q.push(msg(1, 4), None).unwrap();
    q.push(gathered_msg(2, 3, 20_000), None).unwrap();
    assert_eq!(q.unwritten(), 0, "written by the sender, within the gap");
    assert_eq!(read_numbers(&mut peer, Some(2)).await, [1, 2]);

    // Small socket buffers and a peer that does not read yet: the socket takes part of it.
    let (socket, mut peer) = socket_pair().await;
    socket2::SockRef::from(&*socket).set_send_buffer_size(16 * 1024).unwrap();
    socket2::SockRef::from(&peer).set_recv_buffer_size(16 * 1024).unwrap();
    let (q, _) = queue(socket, 64 << 20, Duration::from_secs(3600));
    let q = Arc::new(q);
    let large = gathered_msg(3, 4, 60_000);
    let Outgoing::Message { payload, .. } = &large else { unreachable!() };
    let expected = payload.contiguous();
    q.push(large, None).unwrap();
    assert_eq!(q.unwritten(), 1, "the socket took part of the frame; the rest waits for the writer");
    let writer = spawn_writer(&q);
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Some(frame) = dec.decode(&mut buf).unwrap() {
            break frame;
        }
        assert!(peer.read_buf(&mut buf).await.unwrap() > 0, "EOF inside the frame");
    };
    assert!(matches!(frame, Frame::Message { payload, .. } if payload == expected), "the frame arrives whole");
    q.close();
    writer.await.unwrap().unwrap();
    assert_eq!((q.unwritten(), q.budget_used()), (0, 0));
}

#[test]
fn the_unwritten_rest_of_a_frame_is_what_follows_the_written_bytes() {
    let parts = [Bytes::from_static(b"abc"), Bytes::from_static(b"defgh")];
    let rest = |n| unwritten_rest(b"HEAD", &parts, n).contiguous();
    assert_eq!(rest(1), &b"EADabcdefgh"[..]);
    assert_eq!(rest(4), &b"abcdefgh"[..]);
    assert_eq!(rest(6), &b"cdefgh"[..]);
    assert_eq!(rest(7), &b"defgh"[..]);
    assert_eq!(rest(11), &b"h"[..]);
}
