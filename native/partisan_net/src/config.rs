//! The data plane's configuration: its keys, their defaults, and what each accepts, checked in
//! one place ([`Config::validate`]).
//!
//! The Erlang application passes the keys the user set through `partisan_nif:check_config/1`
//! (the NIF fills in the defaults below and validates) and caches what comes back, so it neither
//! defaults nor checks these keys itself; keys only the Erlang side reads (`name`, `cookie`,
//! `peer_service_manager`, `monitor_probe_*`, ...) are its own. Once `validate` accepts a
//! configuration, [`crate::Node::start`] fails only when the operating system refuses (an address
//! in use, no threads): a property test checks it.
//!
//! | key | default | accepts |
//! |---|---|---|
//! | `listen_addrs` | `127.0.0.1:0` | one or more addresses |
//! | `parallelism`, `channels` | 1; the default and membership channels | parallelism 1..=256, names of 1..=255 bytes, each once |
//! | `connection_interval`, `connection_jitter` | 1000, 1000 ms | 0..=[`MAX_MILLIS`] |
//! | `periodic_interval` | 10000 ms (0: no periodic gossip) | 0..=[`MAX_MILLIS`] |
//! | `hyparview` | [`HyParViewConfig::default`] | see [`HyParViewConfig::validate`] |
//! | `broadcast`, `lazy_tick_period`, `exchange_tick_period` | off, 1000, 10000 ms | periods 1..=[`MAX_MILLIS`] |
//! | `max_frame_size` | 64 MiB | 1024..=u32::MAX |
//! | `max_queue_bytes` | 64 MiB | 1024 or more |
//! | `io_threads` | schedulers online, at most 4 | 1..=64 |
//! | `read_spin` | 0 µs (off) | 0..=1000 µs |
//! | `connect_timeout` | 2000 ms | 0..=[`MAX_MILLIS`] |
//! | `handshake_timeout` | 5000 ms | 100..=60000 |
//! | `max_pending_handshakes`, `_per_addr` | 256, 64 | 1..=65536 |
//! | `stop_flush_timeout` | 5000 ms | 0..=60000 |
//! | `retransmit_interval` | 1000 ms | 1..=[`MAX_MILLIS`] |
//! | `max_unacked_bytes` | 64 MiB | 1024 or more |
//! | `connection_ping` | `enabled`, `idle_timeout` 20000, `timeout` 10000, `max_attempts` 5 | timeouts 1..=[`MAX_MILLIS`] ms, attempts 1..=1000 |
//! | `tls`, `tls_server_options`, `tls_client_options` | off | see [`crate::tls`]: the PEM files are read here, so a missing or unreadable one stops the start |
//! | `channels` → `compression` | off | `true` (zstd level 1) or a level 1..=9; 0 or `false` is off |
//!
//! ```
//! use partisan_net::Config;
//! let mut cfg = Config::new("a@127.0.0.1", b"cookie");
//! assert!(cfg.validate().is_ok());
//! cfg.handshake_timeout = std::time::Duration::ZERO;
//! assert_eq!(cfg.validate().unwrap_err().key, "handshake_timeout");
//! ```

use partisan_core::channel::{ChannelSpec, ChannelTable};
use partisan_core::hyparview::HyParViewConfig;
use partisan_core::node::{self, OverlayConfig};
use partisan_core::ping::PingConfig;
use partisan_core::plumtree::PlumtreeConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// The longest period or timeout in milliseconds (2^53: about 285,000 years, and exact as a
/// float).
pub const MAX_MILLIS: u64 = 1 << 53;
/// Connections per channel, at most.
pub const MAX_PARALLELISM: u16 = 256;

/// Everything a [`crate::Node`] runs with (see the module docs for the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's name (Erlang: `name`, checked there to be `name@host`).
    pub name: String,
    /// The cluster's shared secret (Erlang: `cookie`).
    pub cookie: Vec<u8>,
    /// Grows across restarts of the same node name (the start time in microseconds).
    pub incarnation: u64,
    pub listen_addrs: Vec<SocketAddr>,
    /// The configured channels; the default and membership channels are added when missing.
    pub channels: Vec<ChannelSpec>,
    /// The overlay, the link timing and broadcast.
    pub node: node::Config,
    /// Largest frame accepted from an authenticated peer, in bytes.
    pub max_frame_size: usize,
    /// Bytes that may wait in one connection's send queue.
    pub max_queue_bytes: usize,
    /// Threads of the tokio runtime.
    pub io_threads: usize,
    /// How long a reader polls its socket before it sleeps (see [`crate::conn::Spin`]); zero:
    /// never.
    pub read_spin: Duration,
    pub connect_timeout: Duration,
    /// How long an accepted connection may take to authenticate.
    pub handshake_timeout: Duration,
    /// Accepted connections that have not authenticated yet, at most, in all and per source
    /// address; connections beyond are closed at once (and counted).
    pub max_pending_handshakes: usize,
    pub max_pending_handshakes_per_addr: usize,
    /// How long [`crate::Node::stop`] lets the writers flush their queues before it closes them.
    pub stop_flush_timeout: Duration,
    /// Messages sent with `ack`: resent when nothing was acknowledged for this long.
    pub retransmit_interval: Duration,
    /// Messages sent with `ack`: bytes held unacknowledged per destination node, at most.
    pub max_unacked_bytes: usize,
    /// Pings on idle links (`connection_ping`).
    pub connection_ping: PingConfig,
    /// `tls => true` with its options; `None`: plain TCP.
    pub tls: Option<Box<crate::tls::TlsOptions>>,
    /// Channels whose messages are compressed, with the zstd level (1..=9).
    pub compression: Vec<(String, i32)>,
}

/// A configuration value that cannot run: `{invalid_config, Key, Why}` in Erlang.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct ConfigError {
    /// The configuration key to fix.
    pub key: &'static str,
    /// What is wrong with it, and what would do.
    pub why: String,
}

impl ConfigError {
    pub fn new(key: &'static str, why: impl ToString) -> Self {
        ConfigError { key, why: why.to_string() }
    }
}

impl Config {
    /// The defaults, for node `name` with `cookie`.
    pub fn new(name: &str, cookie: &[u8]) -> Self {
        let schedulers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            name: name.to_owned(),
            cookie: cookie.to_vec(),
            incarnation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1),
            listen_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            channels: vec![],
            node: node::Config::default(),
            max_frame_size: 64 << 20,
            max_queue_bytes: 64 << 20,
            io_threads: Config::default_io_threads(schedulers),
            read_spin: Duration::ZERO,
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 256,
            max_pending_handshakes_per_addr: 64,
            stop_flush_timeout: Duration::from_secs(5),
            retransmit_interval: Duration::from_secs(1),
            max_unacked_bytes: 64 << 20,
            connection_ping: PingConfig::default(),
            tls: None,
            compression: vec![],
        }
    }

    /// The zstd level of `channel`'s compression, `None` when it is not compressed.
    pub fn compression_level(&self, channel: &str) -> Option<i32> {
        self.compression.iter().find(|(c, _)| c == channel).map(|(_, l)| *l)
    }

    /// `io_threads` when not set: one per scheduler, at most 4.
    pub fn default_io_threads(schedulers: usize) -> usize {
        schedulers.clamp(1, 4)
    }

    /// Checks every key; the first bad one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > 255 {
            return Err(ConfigError::new("name", format!("{:?} must be 1 to 255 bytes long", self.name)));
        }
        if self.listen_addrs.is_empty() {
            return Err(ConfigError::new("listen_addrs", "must be a non-empty list of #{ip, port}"));
        }
        for c in &self.channels {
            if !(1..=MAX_PARALLELISM).contains(&c.parallelism) {
                let why = format!("channel {}: parallelism {} must be an integer from 1 to {MAX_PARALLELISM}", c.name, c.parallelism);
                return Err(ConfigError::new("channels", why));
            }
        }
        ChannelTable::new(self.channels.clone()).map_err(|e| ConfigError::new("channels", e))?;
        self.validate_node()?;
        let max_frame_ok = (1024..=u32::MAX as usize).contains(&self.max_frame_size);
        check(max_frame_ok, "max_frame_size", || format!("{} must be an integer from 1024 to {}", self.max_frame_size, u32::MAX))?;
        check(self.max_queue_bytes >= 1024, "max_queue_bytes", || format!("{} must be an integer of at least 1024", self.max_queue_bytes))?;
        check((1..=64).contains(&self.io_threads), "io_threads", || format!("{} must be an integer from 1 to 64", self.io_threads))?;
        check(self.read_spin <= Duration::from_millis(1), "read_spin", || format!("{} must be from 0 to 1000 microseconds", self.read_spin.as_micros()))?;
        millis("connect_timeout", self.connect_timeout, 0, MAX_MILLIS)?;
        millis("handshake_timeout", self.handshake_timeout, 100, 60_000)?;
        for (key, n) in [("max_pending_handshakes", self.max_pending_handshakes), ("max_pending_handshakes_per_addr", self.max_pending_handshakes_per_addr)] {
            check((1..=65_536).contains(&n), key, || format!("{n} must be an integer from 1 to 65536 (connections)"))?;
        }
        millis("stop_flush_timeout", self.stop_flush_timeout, 0, 60_000)?;
        millis("retransmit_interval", self.retransmit_interval, 1, MAX_MILLIS)?;
        check(self.max_unacked_bytes >= 1024, "max_unacked_bytes", || format!("{} must be an integer of at least 1024", self.max_unacked_bytes))?;
        validate_ping(&self.connection_ping)?;
        for (channel, level) in &self.compression {
            check((1..=9).contains(level), "channels", || format!("channel {channel}: compression level {level} must be from 1 to 9"))?;
        }
        match &self.tls {
            // The files are read (and parsed) now: a missing certificate stops the start.
            Some(tls) => tls.load().map(|_| ()),
            None => Ok(()),
        }
    }

    fn validate_node(&self) -> Result<(), ConfigError> {
        let timing = &self.node.timing;
        for (key, ms) in [("connection_interval", timing.connection_interval), ("connection_jitter", timing.connection_jitter)] {
            check(ms <= MAX_MILLIS, key, || format!("{ms} must be an integer from 0 to {MAX_MILLIS} (milliseconds)"))?;
        }
        match &self.node.overlay {
            OverlayConfig::FullMesh { periodic_interval, .. } => {
                let ms = *periodic_interval;
                check(ms <= MAX_MILLIS, "periodic_interval", || format!("{ms} must be an integer from 0 to {MAX_MILLIS} (milliseconds)"))?;
            }
            OverlayConfig::HyParView(hv) => validate_hyparview(hv)?,
        }
        if let Some(pt) = &self.node.broadcast {
            validate_broadcast(pt)?;
        }
        Ok(())
    }
}

/// The `broadcast` settings (`lazy_tick_period`, `exchange_tick_period` and Plumtree's bounds).
pub fn validate_broadcast(pt: &PlumtreeConfig) -> Result<(), ConfigError> {
    for (key, ms) in [("lazy_tick_period", pt.lazy_tick_period), ("exchange_tick_period", pt.exchange_tick_period)] {
        check((1..=MAX_MILLIS).contains(&ms), key, || format!("{ms} must be a positive integer up to {MAX_MILLIS} (milliseconds)"))?;
    }
    pt.validate().map_err(|e| ConfigError::new("broadcast", e))
}

/// The `connection_ping` settings.
pub fn validate_ping(p: &PingConfig) -> Result<(), ConfigError> {
    for (key, ms) in [("idle_timeout", p.idle_timeout), ("timeout", p.timeout)] {
        check((1..=MAX_MILLIS).contains(&ms), "connection_ping", || format!("{key} {ms} must be an integer from 1 to {MAX_MILLIS} (milliseconds)"))?;
    }
    let n = p.max_attempts;
    check((1..=1000).contains(&n), "connection_ping", || format!("max_attempts {n} must be an integer from 1 to 1000"))
}

/// The `hyparview` settings.
pub fn validate_hyparview(hv: &HyParViewConfig) -> Result<(), ConfigError> {
    for (key, ms) in [("random_promotion_interval", hv.random_promotion_interval), ("shuffle_interval", hv.shuffle_interval)] {
        check(ms <= MAX_MILLIS, "hyparview", || format!("{key} {ms} must be at most {MAX_MILLIS} (milliseconds)"))?;
    }
    hv.validate().map_err(|e| ConfigError::new("hyparview", e))
}

impl From<node::ConfigError> for ConfigError {
    fn from(e: node::ConfigError) -> Self {
        match e {
            node::ConfigError::HyParView(e) => ConfigError::new("hyparview", e),
            node::ConfigError::Plumtree(e) => ConfigError::new("broadcast", e),
        }
    }
}

fn check(ok: bool, key: &'static str, why: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, why()))
    }
}

fn millis(key: &'static str, d: Duration, min: u64, max: u64) -> Result<(), ConfigError> {
    let ms = d.as_millis();
    check((u128::from(min)..=u128::from(max)).contains(&ms), key, || format!("{ms} must be an integer from {min} to {max} (milliseconds)"))
}
