//! The configuration's one validator against the start of a real node: whatever
//! `Config::validate` accepts starts (listeners on port 0, so only the operating system could
//! refuse), and what it refuses names the key to fix.

use bytes::Bytes;
use partisan_core::channel::ChannelSpec;
use partisan_core::frame::Dest;
use partisan_core::full_mesh::{LinkPolicy, Role};
use partisan_core::hyparview::HyParViewConfig;
use partisan_core::node::{LinkTiming, OverlayConfig};
use partisan_core::plumtree::PlumtreeConfig;
use partisan_net::config::MAX_MILLIS;
use partisan_net::{Config, DeliverError, Event, Node, Sink, StartError};
use proptest::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct Discard;

impl Sink for Discard {
    fn deliver(&self, _: &str, _: &Dest, _: Bytes) -> Result<(), DeliverError> {
        Ok(())
    }
    fn event(&self, _: Event) {}
}

/// Mostly a value in `lo..=hi` (its bounds often), sometimes one just outside or anything:
/// most generated configurations are valid, and every bound is tried from both sides.
fn int(lo: u64, hi: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        48 => lo..=hi,
        4 => Just(lo),
        4 => Just(hi),
        1 => Just(lo.saturating_sub(1)),
        1 => Just(hi.saturating_add(1)),
        1 => any::<u64>(),
    ]
}

fn channels() -> impl Strategy<Value = Vec<ChannelSpec>> {
    let name = prop_oneof![20 => Just("data".to_string()), 20 => Just("state".to_string()), 1 => Just(String::new()), 1 => Just("x".repeat(256))];
    let spec = (name, int(1, 256), any::<bool>()).prop_map(|(name, p, monotonic)| ChannelSpec { name, parallelism: p.min(u16::MAX as u64) as u16, monotonic });
    proptest::collection::vec(spec, 0..3)
}

fn hyparview() -> impl Strategy<Value = HyParViewConfig> {
    let ms = || int(1, MAX_MILLIS);
    (int(1, 8), int(0, 8), int(0, 255), int(0, 40), int(0, 255), any::<bool>(), ms(), ms(), int(0, 10), int(0, 10)).prop_map(
        |(max, min, arwl, passive, prwl, random_promotion, promotion, shuffle, ka, kp)| HyParViewConfig {
            active_max_size: max as usize,
            active_min_size: min as usize,
            active_rwl: arwl.min(255) as u8,
            passive_max_size: passive as usize,
            passive_rwl: prwl.min(255) as u8,
            random_promotion,
            random_promotion_interval: promotion,
            shuffle_interval: shuffle,
            shuffle_k_active: ka as usize,
            shuffle_k_passive: kp as usize,
        },
    )
}

fn overlay() -> impl Strategy<Value = OverlayConfig> {
    let policy = prop_oneof![
        Just(LinkPolicy::AllMembers),
        Just(LinkPolicy::ClientServer(Role::Server)),
        Just(LinkPolicy::ClientServer(Role::Client)),
        Just(LinkPolicy::Static),
        Just(LinkPolicy::External),
    ];
    prop_oneof![
        (policy, int(0, MAX_MILLIS)).prop_map(|(policy, periodic_interval)| OverlayConfig::FullMesh { policy, periodic_interval }),
        hyparview().prop_map(OverlayConfig::HyParView),
    ]
}

fn broadcast() -> impl Strategy<Value = Option<PlumtreeConfig>> {
    proptest::option::of((int(1, MAX_MILLIS), int(1, MAX_MILLIS)).prop_map(|(lazy_tick_period, exchange_tick_period)| PlumtreeConfig {
        lazy_tick_period,
        exchange_tick_period,
        ..PlumtreeConfig::default()
    }))
}

fn ms(lo: u64, hi: u64) -> impl Strategy<Value = Duration> {
    int(lo, hi).prop_map(|ms| Duration::from_millis(ms.min(u64::MAX / 2)))
}

prop_compose! {
    fn config()(
        name in prop_oneof![30 => Just("a@127.0.0.1".to_string()), 1 => Just(String::new()), 1 => Just("n".repeat(256))],
        listen in prop_oneof![30 => Just(1usize), 1 => Just(0), 1 => Just(2)],
        channels in channels(),
        overlay in overlay(),
        timing in (int(0, MAX_MILLIS), int(0, MAX_MILLIS)),
        broadcast in broadcast(),
        max_frame_size in int(1024, u32::MAX.into()),
        max_queue_bytes in int(1024, 1 << 30),
        // threads are started for real: few, but the bound is tried
        io_threads in prop_oneof![30 => 1u64..=3, 1 => Just(0), 1 => Just(64), 1 => Just(65)],
        timeouts in (ms(0, MAX_MILLIS), ms(100, 60_000), ms(0, 60_000)),
        pending in (int(1, 65_536), int(1, 65_536)),
    ) -> Config {
        let mut cfg = Config::new(&name, b"cookie");
        cfg.listen_addrs = vec![SocketAddr::from(([127, 0, 0, 1], 0)); listen];
        cfg.channels = channels;
        cfg.node.overlay = overlay;
        cfg.node.timing = LinkTiming { connection_interval: timing.0, connection_jitter: timing.1 };
        cfg.node.broadcast = broadcast;
        cfg.max_frame_size = max_frame_size as usize;
        cfg.max_queue_bytes = max_queue_bytes as usize;
        cfg.io_threads = io_threads as usize;
        (cfg.connect_timeout, cfg.handshake_timeout, cfg.stop_flush_timeout) = timeouts;
        (cfg.max_pending_handshakes, cfg.max_pending_handshakes_per_addr) = (pending.0 as usize, pending.1 as usize);
        cfg
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the validator accepts starts; whatever the start refuses, the validator refuses
    /// with the same key.
    #[test]
    fn every_config_the_validator_accepts_starts(cfg in config()) {
        let verdict = cfg.validate();
        match Node::start(cfg.clone(), Arc::new(Discard)) {
            Ok(node) => {
                prop_assert!(verdict.is_ok(), "started although invalid: {verdict:?}");
                prop_assert_eq!(node.config(), &cfg);
                node.stop();
            }
            Err(StartError::Config(e)) => prop_assert_eq!(verdict, Err(e)),
            Err(other) => prop_assert!(false, "a valid config failed to start: {other} ({cfg:?})"),
        }
    }
}

#[test]
fn a_fair_share_of_generated_configs_is_valid() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let valid = (0..1000).filter(|_| config().new_tree(&mut runner).unwrap().current().validate().is_ok()).count();
    assert!((150..=850).contains(&valid), "{valid} of 1000 generated configs are valid");
}

#[test]
fn each_bad_value_names_its_key() {
    type Tweak = fn(&mut Config);
    let cases: [(&str, Tweak); 13] = [
        ("name", |c| c.name.clear()),
        ("listen_addrs", |c| c.listen_addrs.clear()),
        ("channels", |c| c.channels = vec![ChannelSpec::new("data", 0, false)]),
        ("channels", |c| c.channels = vec![ChannelSpec::new("data", 257, false)]),
        ("channels", |c| c.channels = vec![ChannelSpec::new("x", 1, false), ChannelSpec::new("x", 1, false)]),
        ("hyparview", |c| c.node.overlay = OverlayConfig::HyParView(HyParViewConfig { shuffle_interval: 0, ..Default::default() })),
        ("hyparview", |c| c.node.overlay = OverlayConfig::HyParView(HyParViewConfig { active_min_size: 7, ..Default::default() })),
        ("lazy_tick_period", |c| c.node.broadcast = Some(PlumtreeConfig { lazy_tick_period: 0, ..Default::default() })),
        ("max_frame_size", |c| c.max_frame_size = 10),
        ("io_threads", |c| c.io_threads = 0),
        ("handshake_timeout", |c| c.handshake_timeout = Duration::from_millis(99)),
        ("max_pending_handshakes_per_addr", |c| c.max_pending_handshakes_per_addr = 0),
        ("stop_flush_timeout", |c| c.stop_flush_timeout = Duration::from_millis(60_001)),
    ];
    for (key, tweak) in cases {
        let mut cfg = Config::new("a@127.0.0.1", b"c");
        tweak(&mut cfg);
        assert_eq!(cfg.validate().map_err(|e| e.key), Err(key), "{cfg:?}");
        assert!(matches!(Node::start(cfg, Arc::new(Discard)), Err(StartError::Config(e)) if e.key == key));
    }
}
