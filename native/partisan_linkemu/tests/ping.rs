//! The emulator adds the delay that was asked (within 10 %), caps bandwidth, and never buffers
//! more than its window: a sender whose receiver does not read is blocked.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use partisan_linkemu::{LinkConfig, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn proxy(target: SocketAddr, cfg: LinkConfig) -> SocketAddr {
    let p = Proxy::bind("127.0.0.1:0".parse().unwrap(), target, cfg).await.unwrap();
    let addr = p.local_addr().unwrap();
    tokio::spawn(p.run());
    addr
}

/// Median round trip of `n` 10-byte pings over a fresh connection to `addr`.
async fn ping_rtt(addr: SocketAddr, n: usize) -> Duration {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 10];
    let mut rtts = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t0 = Instant::now();
        s.write_all(b"0123456789").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        if i >= 5 {
            rtts.push(t0.elapsed()); // the first few pings warm up the connection
        }
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_delay_is_what_was_asked_within_10_percent() {
    let echo = echo_server().await;
    let base = ping_rtt(echo, 50).await;
    for one_way_ms in [0.5f64, 10.0] {
        let delay = Duration::from_secs_f64(one_way_ms / 1000.0);
        let p = proxy(echo, LinkConfig { delay, ..LinkConfig::default() }).await;
        let rtt = ping_rtt(p, if one_way_ms < 1.0 { 200 } else { 30 }).await;
        let added = rtt.saturating_sub(base).as_secs_f64();
        let asked = 2.0 * delay.as_secs_f64();
        eprintln!(
            "one-way {one_way_ms} ms: asked RTT +{:.3} ms, measured RTT {:.3} ms (direct {:.3} ms), added {:.3} ms ({:+.1} %)",
            asked * 1e3,
            rtt.as_secs_f64() * 1e3,
            base.as_secs_f64() * 1e3,
            added * 1e3,
            (added / asked - 1.0) * 100.0
        );
        assert!((added / asked - 1.0).abs() <= 0.10, "added {added} s for an asked {asked} s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_limits_throughput() {
    // A sink that reads everything; 40 Mbit/s = 5 MB/s; send 2 MB: ~0.4 s.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = l.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        while total < 2_000_000 {
            total += s.read(&mut buf).await.unwrap();
        }
        let _ = done_tx.send(Instant::now());
    });
    let cfg = LinkConfig { rate: Some(5_000_000), delay: Duration::from_millis(1), ..LinkConfig::default() };
    let p = proxy(sink, cfg).await;
    let mut s = TcpStream::connect(p).await.unwrap();
    let t0 = Instant::now();
    s.write_all(&vec![7u8; 2_000_000]).await.unwrap();
    let t1 = done_rx.await.unwrap();
    let secs = (t1 - t0).as_secs_f64();
    eprintln!("2 MB through a 5 MB/s link: {secs:.3} s");
    assert!(secs > 0.36 && secs < 0.6, "took {secs} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_bounds_what_the_proxy_holds() {
    // The target accepts but never reads: the sender must block after window + socket buffers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (_s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let window = 1 << 20;
    let cfg = LinkConfig { delay: Duration::from_millis(2), window, ..LinkConfig::default() };
    let p = proxy(target, cfg).await;
    let mut s = TcpStream::connect(p).await.unwrap();
    let chunk = vec![1u8; 256 << 10];
    let mut written = 0usize;
    while written < 512 << 20 {
        match tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break, // blocked: backpressure reached the sender
        }
    }
    eprintln!("sender blocked after {} MiB (window 1 MiB + kernel socket buffers)", written >> 20);
    // Kernel buffers on loopback (4 sockets) can hold tens of MiB; the proxy itself only `window`.
    assert!(written < 128 << 20, "proxy swallowed {written} bytes");
}
