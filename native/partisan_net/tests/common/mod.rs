//! Helpers shared by the loopback integration tests (each test file is its own crate).

use partisan_net::Node;
use std::time::{Duration, Instant};

/// Polls `f` every 5 ms until it holds; fails the test after `timeout`.
pub fn wait_within(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One counter of `partisan:stats()`.
pub fn stat(n: &Node, key: &str) -> u64 {
    n.stats().into_iter().find(|(k, _)| *k == key).unwrap().1
}
