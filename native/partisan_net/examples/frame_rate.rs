//! Throughput of frames of several sizes through the data plane alone (no BEAM: two nodes in
//! one process over loopback, a sink that only counts), to tell data-plane cost from encoding
//! and delivery cost in `make bench`. Run: `cargo run --release -p partisan_net --example frame_rate`.

use bytes::Bytes;
use partisan_core::frame::Dest;
use partisan_net::{Config, DeliverError, Event, Node, Sink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Count(AtomicU64);
impl Sink for Count {
    fn deliver(&self, _: &str, _: &Dest, _: Bytes) -> Result<(), DeliverError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn event(&self, _: Event) {}
}

fn main() {
    for size in [1024usize, 65536, 1 << 20] {
        let sink_a = Arc::new(Count(AtomicU64::new(0)));
        let sink_b = Arc::new(Count(AtomicU64::new(0)));
        let a = Node::start(Config::new("a@127.0.0.1", b"c"), sink_a).unwrap();
        let b = Node::start(Config::new("b@127.0.0.1", b"c"), sink_b.clone()).unwrap();
        b.join(a.spec().clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.is_fully_connected("a@127.0.0.1") || !a.is_fully_connected("b@127.0.0.1") {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let payload = Bytes::from(vec![7u8; size]);
        let ch = a.channels().default_index();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            match a.send("b@127.0.0.1", ch, 0, Dest::Name("x".into()), payload.clone()) {
                Ok(()) => sent += 1,
                Err(_) => std::thread::yield_now(),
            }
        }
        while sink_b.0.load(Ordering::Relaxed) < sent && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let secs = start.elapsed().as_secs_f64();
        let got = sink_b.0.load(Ordering::Relaxed);
        println!("{size:>8} B: {:>9.0} msg/s  {:>7.0} MB/s", got as f64 / secs, got as f64 * size as f64 / secs / 1e6);
        a.stop();
        b.stop();
    }
}
