//! Term ⇄ Rust conversion of the configuration and of node specs.
//!
//! The data plane's keys ([`KEYS`]), their defaults and their checks belong to
//! `partisan_net::config`: this module reads each key the Erlang side passed (a key it did not
//! pass keeps its default), reports a value of the wrong shape as `{invalid_config, Key, Why}`,
//! and runs `Config::validate`. [`encode_data_plane`] gives the effective values back in the
//! shapes the keys take, which `partisan_config` caches, so what the Erlang side reads is what
//! the data plane runs with. Keys of the Erlang side (`name`, `cookie`, the overlay chosen by
//! `peer_service_manager`, ...) arrive already decided, as context.

use partisan_core::channel::{ChannelSpec, DEFAULT_CHANNEL, MEMBERSHIP_CHANNEL};
use partisan_core::etf_pids::RefFormat;
use partisan_core::full_mesh::{LinkPolicy, Role};
use partisan_core::hyparview::HyParViewConfig;
use partisan_core::node::{LinkTiming, OverlayConfig};
use partisan_core::overlay::NodeSpec;
use partisan_core::plumtree::PlumtreeConfig;
use partisan_core::ping::PingConfig;
use partisan_net::config::{validate_broadcast, validate_hyparview, MAX_MILLIS, MAX_PARALLELISM};
use partisan_net::tls::{Sni, TlsOptions, TlsSide, Verify, Version};
use std::path::PathBuf;
use partisan_net::{Config, ConfigError};
use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, LocalPid, Term};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

mod atoms {
    rustler::atoms! {
        invalid_config, name, listen_addrs, listen_ip, listen_port, peer_ip, peer_port, channels,
        parallelism, monotonic, cookie, connection_interval, connection_jitter, periodic_enabled,
        periodic_interval, max_frame_size, max_queue_bytes, decode, safe, trusted, events, vm_node,
        creation, ip, port, incarnation, connect_timeout, io_threads, read_spin, schedulers_online, overlay,
        tag, full_mesh, client_server, static_ = "static", external, server, client, hyparview,
        active_max_size, active_min_size, active_rwl, passive_max_size, passive_rwl,
        random_promotion, random_promotion_interval, shuffle_interval, shuffle_k_active,
        shuffle_k_passive, xbot_enabled, broadcast, lazy_tick_period, exchange_tick_period,
        handshake_timeout, max_pending_handshakes, max_pending_handshakes_per_addr,
        stop_flush_timeout, pid_rewrite, remote_ref_format, remote_ref_uri_padding,
        improper_list, tuple, uri, retransmit_interval, max_unacked_bytes, connection_ping,
        enabled, idle_timeout, timeout, max_attempts, tls, tls_server_options, tls_client_options, certfile, keyfile,
        cacertfile, verify, verify_peer, verify_none, fail_if_no_peer_cert, server_name_indication,
        versions, disable, compression, tlsv1_2 = "tlsv1.2", tlsv1_3 = "tlsv1.3",
    }
}

/// The configuration keys the data plane owns (`partisan_nif:config_keys/0`): the Erlang side
/// passes their values as the user set them, and neither defaults nor checks them itself.
pub const KEYS: &[&str] = &[
    "listen_addrs",
    "listen_ip",
    "listen_port",
    "peer_ip",
    "peer_port",
    "parallelism",
    "channels",
    "connection_interval",
    "connection_jitter",
    "periodic_enabled",
    "periodic_interval",
    "hyparview",
    "broadcast",
    "lazy_tick_period",
    "exchange_tick_period",
    "max_frame_size",
    "max_queue_bytes",
    "io_threads",
    "read_spin",
    "connect_timeout",
    "handshake_timeout",
    "max_pending_handshakes",
    "max_pending_handshakes_per_addr",
    "stop_flush_timeout",
    "decode",
    "retransmit_interval",
    "max_unacked_bytes",
    "connection_ping",
    "tls",
    "tls_server_options",
    "tls_client_options",
];

/// The data plane's keys, as read: what [`Config`] holds, and the keys that only fill it in.
#[derive(Debug, Clone)]
pub struct DataPlane {
    pub net: Config,
    /// Connections of a channel that does not say (`parallelism`).
    pub parallelism: u16,
    /// `periodic_interval` (0 with `periodic_enabled => false`), returned whatever the overlay.
    pub periodic_interval: u64,
    /// `hyparview`, checked and returned whatever the overlay.
    pub hyparview: HyParViewConfig,
    /// `lazy_tick_period` and `exchange_tick_period`, checked and returned whether `broadcast`
    /// is on or not.
    pub plumtree: PlumtreeConfig,
    /// `decode => safe`: message payloads go through the safe term decoder.
    pub safe_decode: bool,
}

/// What `partisan_nif:start/1` reads beyond the data plane's keys.
pub struct Start {
    pub data: DataPlane,
    pub events: LocalPid,
    pub vm_node: String,
    pub creation: u32,
    /// Rewrite this VM's pids in outgoing messages (`pid_encoding`, VM not alive).
    pub pid_rewrite: bool,
    /// `remote_ref_format` and `remote_ref_uri_padding`.
    pub ref_format: RefFormat,
}

/// `{invalid_config, Key, Why}`.
pub fn error_term<'a>(env: Env<'a>, e: &ConfigError) -> Term<'a> {
    let key = Atom::from_str(env, e.key).expect("configuration keys are short atoms");
    (atoms::invalid_config(), key, e.why.as_str()).encode(env)
}

fn bad(key: &'static str, why: &str) -> ConfigError {
    ConfigError::new(key, why)
}

fn get<'a>(map: Term<'a>, key: &str) -> Option<Term<'a>> {
    let atom = Atom::from_str(map.get_env(), key).ok()?;
    map.map_get(atom.encode(map.get_env())).ok()
}

/// A context key the Erlang side always passes.
fn required<'a>(map: Term<'a>, key: &'static str) -> Result<Term<'a>, ConfigError> {
    get(map, key).ok_or_else(|| bad(key, "missing"))
}

/// An integer in `0..=max`, never truncated: the range is checked on the full value (rustler's
/// integer decoders would cast `257` to `1`).
fn int_in(t: Term, max: u64) -> Option<u64> {
    let v: i64 = t.decode().ok()?;
    u64::try_from(v).ok().filter(|v| *v <= max)
}

/// Key `key` of `map`: a non-negative integer, or `default` when absent.
fn int(map: Term, key: &'static str, default: u64, what: &str) -> Result<u64, ConfigError> {
    match get(map, key) {
        None => Ok(default),
        Some(t) => int_in(t, u64::MAX >> 1).ok_or_else(|| bad(key, &format!("must be a non-negative integer ({what})"))),
    }
}

fn millis(map: Term, key: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    int(map, key, default.as_millis() as u64, "milliseconds").map(Duration::from_millis)
}

fn boolean(map: Term, key: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(map, key) {
        None => Ok(default),
        Some(t) => t.decode().map_err(|_| bad(key, "must be true or false")),
    }
}

fn atom_string(t: Term, key: &'static str) -> Result<String, ConfigError> {
    t.atom_to_string().map_err(|_| bad(key, "must be an atom"))
}

fn ip(t: Term) -> Option<IpAddr> {
    if let Ok(text) = t.decode::<String>() {
        return text.parse().ok(); // a charlist or a binary, "10.0.0.1" or "::1"
    }
    let parts = rustler::types::tuple::get_tuple(t).ok()?;
    match parts.len() {
        4 => {
            let v: Vec<u8> = parts.into_iter().map(|p| int_in(p, 255).map(|x| x as u8)).collect::<Option<_>>()?;
            Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
        }
        8 => {
            let v: Vec<u16> = parts.into_iter().map(|p| int_in(p, 65535).map(|x| x as u16)).collect::<Option<_>>()?;
            let v: [u16; 8] = v.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(v)))
        }
        _ => None,
    }
}

fn ip_string(t: Term) -> Option<IpAddr> {
    // An Erlang string arrives as a list of integers.
    let codes: Vec<u32> = t.decode().ok()?;
    let text: String = codes.into_iter().map(char::from_u32).collect::<Option<_>>()?;
    text.parse().ok()
}

fn any_ip(t: Term) -> Option<IpAddr> {
    ip(t).or_else(|| ip_string(t))
}

/// `#{ip := IP, port := Port}` or `{IP, Port}`, `IP` a tuple or a string.
fn addr(t: Term) -> Option<SocketAddr> {
    let (ip_term, port_term) = match rustler::types::tuple::get_tuple(t) {
        Ok(parts) if parts.len() == 2 => (parts[0], parts[1]),
        _ => (get(t, "ip")?, get(t, "port")?),
    };
    Some(SocketAddr::new(any_ip(ip_term)?, int_in(port_term, 65535)? as u16))
}

/// `listen_addrs`, or the single address of `listen_ip`/`listen_port` (old names: `peer_ip`,
/// `peer_port`); an error names the key that was set.
fn listen_addrs(cfg: Term) -> Result<Vec<SocketAddr>, ConfigError> {
    if let Some(list) = get(cfg, "listen_addrs") {
        let why = "must be a non-empty list of #{ip => IP, port => 0..65535} (IP a tuple or a string)";
        let items: Vec<Term> = list.decode().map_err(|_| bad("listen_addrs", why))?;
        return items.into_iter().map(|a| addr(a).ok_or_else(|| bad("listen_addrs", why))).collect();
    }
    let (ip_key, ip_term) = match (get(cfg, "listen_ip"), get(cfg, "peer_ip")) {
        (Some(t), _) => ("listen_ip", Some(t)),
        (None, Some(t)) => ("peer_ip", Some(t)),
        (None, None) => ("listen_ip", None),
    };
    let (port_key, port_term) = match (get(cfg, "listen_port"), get(cfg, "peer_port")) {
        (Some(t), _) => ("listen_port", Some(t)),
        (None, Some(t)) => ("peer_port", Some(t)),
        (None, None) => ("listen_port", None),
    };
    let ip = match ip_term {
        Some(t) => any_ip(t).ok_or_else(|| bad(ip_key, "must be an IP address (a tuple or a string)"))?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let port = match port_term {
        Some(t) => int_in(t, 65535).ok_or_else(|| bad(port_key, "must be an integer from 0 to 65535"))? as u16,
        None => 0,
    };
    Ok(vec![SocketAddr::new(ip, port)])
}

/// `channels` in the shape the Erlang side normalised it to, `#{Name => Opts}`; a channel that
/// does not give its `parallelism` gets `parallelism`.
fn channels(map: Term, parallelism: u16) -> Result<Vec<ChannelSpec>, ConfigError> {
    channels_with_compression(map, parallelism).map(|(specs, _)| specs)
}

/// [`channels`], and the channels with `compression` and their zstd levels.
#[allow(clippy::type_complexity)]
fn channels_with_compression(map: Term, parallelism: u16) -> Result<(Vec<ChannelSpec>, Vec<(String, i32)>), ConfigError> {
    let why = "must be a map #{Name => #{parallelism => 1..256, monotonic => boolean(), compression => boolean() | 0..9}}";
    let mut out = Vec::new();
    let mut compressed = Vec::new();
    for (name, opts) in MapIterator::new(map).ok_or_else(|| bad("channels", why))? {
        let name = name.atom_to_string().map_err(|_| bad("channels", "channel names must be atoms"))?;
        let parallelism = match get(opts, "parallelism") {
            // The range is checked by `Config::validate`, which names the channel.
            Some(p) => int_in(p, u16::MAX.into()).map(|p| p as u16).ok_or_else(|| bad("channels", why))?,
            None => parallelism,
        };
        let monotonic = match get(opts, "monotonic") {
            Some(m) => m.decode().map_err(|_| bad("channels", why))?,
            None => false,
        };
        // Partisan v5: `true` or a level 0..9 (0: off). The range is checked by
        // `Config::validate`, which names the channel.
        let level = match get(opts, "compression") {
            None => 0,
            Some(c) => match c.decode::<bool>() {
                Ok(on) => i64::from(on),
                Err(_) => c.decode::<i64>().map_err(|_| bad("channels", why))?,
            },
        };
        if level != 0 {
            compressed.push((name.clone(), i32::try_from(level).unwrap_or(i32::MAX)));
        }
        out.push(ChannelSpec { name, parallelism, monotonic });
    }
    Ok((out, compressed))
}

/// The configured channels, and the default (`parallelism` connections) and membership (one)
/// channels when they are not configured.
#[allow(clippy::type_complexity)]
fn node_channels(cfg: Term, parallelism: u16) -> Result<(Vec<ChannelSpec>, Vec<(String, i32)>), ConfigError> {
    let (mut out, compressed) = match get(cfg, "channels") {
        Some(map) => channels_with_compression(map, parallelism)?,
        None => (vec![], vec![]),
    };
    for (name, p) in [(DEFAULT_CHANNEL, parallelism), (MEMBERSHIP_CHANNEL, 1)] {
        if !out.iter().any(|c| c.name == name) {
            out.push(ChannelSpec::new(name, p, false));
        }
    }
    Ok((out, compressed))
}

/// A file name: a string (charlist) or a binary.
fn path(t: Term) -> Option<PathBuf> {
    if let Ok(b) = t.decode::<rustler::Binary>() {
        return std::str::from_utf8(b.as_slice()).ok().map(PathBuf::from);
    }
    let codes: Vec<u32> = t.decode().ok()?;
    codes.into_iter().map(char::from_u32).collect::<Option<String>>().map(PathBuf::from)
}

/// `tls_server_options` or `tls_client_options`: an ssl-style proplist (or a map).
fn tls_side(cfg: Term, key: &'static str) -> Result<TlsSide, ConfigError> {
    let mut side = TlsSide::default();
    let Some(opts) = get(cfg, key) else { return Ok(side) };
    let known = "certfile, keyfile, cacertfile, verify, fail_if_no_peer_cert, server_name_indication, versions";
    let entries: Vec<(Term, Term)> = match MapIterator::new(opts) {
        Some(it) => it.collect(),
        None => {
            let items: Vec<Term> = opts.decode().map_err(|_| bad(key, &format!("must be a list of ssl options ({known})")))?;
            items
                .into_iter()
                .map(|t| t.decode::<(Term, Term)>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(key, &format!("must be a list of {{Option, Value}} ({known})")))?
        }
    };
    for (k, v) in entries {
        let name = k.atom_to_string().unwrap_or_default();
        let file = || path(v).ok_or_else(|| bad(key, &format!("{name} must be a file name (a string or a binary)")));
        match name.as_str() {
            "certfile" => side.certfile = Some(file()?),
            "keyfile" => side.keyfile = Some(file()?),
            "cacertfile" => side.cacertfile = Some(file()?),
            "verify" => {
                side.verify = match v.decode::<Atom>() {
                    Ok(a) if a == atoms::verify_peer() => Verify::VerifyPeer,
                    Ok(a) if a == atoms::verify_none() => Verify::VerifyNone,
                    _ => return Err(bad(key, "verify must be verify_peer or verify_none")),
                }
            }
            "fail_if_no_peer_cert" => side.fail_if_no_peer_cert = v.decode().map_err(|_| bad(key, "fail_if_no_peer_cert must be true or false"))?,
            "server_name_indication" => {
                side.server_name_indication = match v.decode::<Atom>() {
                    Ok(a) if a == atoms::disable() => Sni::Disable,
                    _ => {
                        let host = path(v).and_then(|p| p.to_str().map(str::to_owned)).filter(|h| !h.is_empty());
                        let host = host.ok_or_else(|| bad(key, "server_name_indication must be a host name (a string) or disable"))?;
                        rustls_name_ok(&host).ok_or_else(|| bad(key, &format!("server_name_indication {host:?} is not a DNS name")))?;
                        Sni::Name(host)
                    }
                }
            }
            "versions" => {
                let why = "versions must be a non-empty list of 'tlsv1.2' and 'tlsv1.3'";
                let list: Vec<Atom> = v.decode().map_err(|_| bad(key, why))?;
                side.versions = list
                    .into_iter()
                    .map(|a| match a {
                        a if a == atoms::tlsv1_2() => Ok(Version::Tls12),
                        a if a == atoms::tlsv1_3() => Ok(Version::Tls13),
                        _ => Err(bad(key, why)),
                    })
                    .collect::<Result<_, _>>()?;
                if side.versions.is_empty() {
                    return Err(bad(key, why));
                }
            }
            _ => return Err(bad(key, &format!("{name} is not supported; supported: {known}"))),
        }
    }
    Ok(side)
}

fn rustls_name_ok(host: &str) -> Option<()> {
    partisan_net::tls::is_dns_name(host).then_some(())
}

/// `tls`, `tls_server_options`, `tls_client_options`: `None` unless `tls => true` (options
/// without it are still checked, so a typo is not found the day TLS is turned on).
pub fn read_tls(cfg: Term) -> Result<Option<TlsOptions>, ConfigError> {
    let on = boolean(cfg, "tls", false)?;
    let options = TlsOptions { server: tls_side(cfg, "tls_server_options")?, client: tls_side(cfg, "tls_client_options")? };
    Ok(on.then_some(options))
}

/// `hyparview`: the keys given override the defaults.
fn hyparview(cfg: Term) -> Result<HyParViewConfig, ConfigError> {
    let mut hv = HyParViewConfig::default();
    let Some(map) = get(cfg, "hyparview") else { return Ok(hv) };
    let entries = MapIterator::new(map).ok_or_else(|| bad("hyparview", "must be a map"))?;
    for (key, value) in entries {
        let key = key.atom_to_string().unwrap_or_default();
        let count = |max: u64| {
            int_in(value, max).ok_or_else(|| bad("hyparview", &format!("{key} must be an integer from 0 to {max}")))
        };
        let flag = || value.decode::<bool>().map_err(|_| bad("hyparview", &format!("{key} must be true or false")));
        match key.as_str() {
            "active_max_size" => hv.active_max_size = count(u32::MAX.into())? as usize,
            "active_min_size" => hv.active_min_size = count(u32::MAX.into())? as usize,
            "active_rwl" => hv.active_rwl = count(255)? as u8,
            "passive_max_size" => hv.passive_max_size = count(u32::MAX.into())? as usize,
            "passive_rwl" => hv.passive_rwl = count(255)? as u8,
            "random_promotion" => hv.random_promotion = flag()?,
            "random_promotion_interval" => hv.random_promotion_interval = count(u64::MAX >> 1)?,
            "shuffle_interval" => hv.shuffle_interval = count(u64::MAX >> 1)?,
            "shuffle_k_active" => hv.shuffle_k_active = count(255)? as usize,
            "shuffle_k_passive" => hv.shuffle_k_passive = count(255)? as usize,
            // Partisan v5's X-BOT optimisation is not implemented: accepted (the Erlang side
            // warns when it is true) and ignored.
            "xbot_enabled" => {
                flag()?;
            }
            _ => {
                let known = "active_max_size, active_min_size, active_rwl, passive_max_size, passive_rwl, random_promotion, \
                             random_promotion_interval, shuffle_interval, shuffle_k_active, shuffle_k_passive, xbot_enabled";
                return Err(bad("hyparview", &format!("unknown key {key}; known: {known}")));
            }
        }
    }
    Ok(hv)
}

/// `connection_ping`: a map (or a proplist) of `enabled`, `idle_timeout`, `timeout`,
/// `max_attempts`; keys not given keep Partisan v5's defaults.
fn connection_ping(cfg: Term) -> Result<PingConfig, ConfigError> {
    let mut ping = PingConfig::default();
    let Some(value) = get(cfg, "connection_ping") else { return Ok(ping) };
    let shape = "must be a map (or a list of {Key, Value}) of enabled, idle_timeout, timeout, max_attempts";
    let entries: Vec<(Term, Term)> = match MapIterator::new(value) {
        Some(it) => it.collect(),
        None => value.decode().map_err(|_| bad("connection_ping", shape))?,
    };
    for (key, value) in entries {
        let key = key.atom_to_string().unwrap_or_default();
        let count = |max: u64| int_in(value, max).ok_or_else(|| bad("connection_ping", &format!("{key} must be an integer from 1 to {max}")));
        match key.as_str() {
            "enabled" => ping.enabled = value.decode().map_err(|_| bad("connection_ping", "enabled must be true or false"))?,
            "idle_timeout" => ping.idle_timeout = count(MAX_MILLIS)?,
            "timeout" => ping.timeout = count(MAX_MILLIS)?,
            "max_attempts" => ping.max_attempts = count(1000)? as u32,
            _ => return Err(bad("connection_ping", &format!("unknown key {key:?}; {shape}"))),
        }
    }
    Ok(ping)
}

fn encode_ping<'a>(env: Env<'a>, p: &PingConfig) -> Term<'a> {
    pairs(
        env,
        &[
            (atoms::enabled(), p.enabled.encode(env)),
            (atoms::idle_timeout(), p.idle_timeout.encode(env)),
            (atoms::timeout(), p.timeout.encode(env)),
            (atoms::max_attempts(), p.max_attempts.encode(env)),
        ],
    )
}

fn overlay(cfg: Term, periodic_interval: u64, hv: HyParViewConfig) -> Result<OverlayConfig, ConfigError> {
    let role = match get(cfg, "tag").and_then(|t| t.decode::<Atom>().ok()) {
        Some(t) if t == atoms::server() => Role::Server,
        Some(t) if t == atoms::client() => Role::Client,
        _ => Role::Peer,
    };
    let full_mesh = |policy| Ok(OverlayConfig::FullMesh { policy, periodic_interval });
    match required(cfg, "overlay")?.decode::<Atom>() {
        Ok(o) if o == atoms::full_mesh() => full_mesh(LinkPolicy::AllMembers),
        Ok(o) if o == atoms::client_server() => full_mesh(LinkPolicy::ClientServer(role)),
        Ok(o) if o == atoms::static_() => full_mesh(LinkPolicy::Static),
        Ok(o) if o == atoms::external() => full_mesh(LinkPolicy::External),
        Ok(o) if o == atoms::hyparview() => Ok(OverlayConfig::HyParView(hv)),
        _ => Err(bad("overlay", "must be full_mesh, client_server, static, external or hyparview")),
    }
}

/// Reads and checks the data plane's keys (absent ones take their defaults) with the context
/// the Erlang side decided: `name`, `cookie`, `overlay`, `tag`, `schedulers_online` and, to
/// start, `incarnation`.
pub fn read_data_plane(cfg: Term) -> Result<DataPlane, ConfigError> {
    let name = atom_string(required(cfg, "name")?, "name")?;
    let cookie: rustler::Binary = required(cfg, "cookie")?.decode().map_err(|_| bad("cookie", "must be a binary"))?;
    let mut net = Config::new(&name, cookie.as_slice());
    if let Some(t) = get(cfg, "incarnation") {
        net.incarnation = t.decode().map_err(|_| bad("incarnation", "must be a non-negative integer"))?;
    }
    let defaults = Config::new(&name, b"");
    net.listen_addrs = listen_addrs(cfg)?;
    let parallelism = match get(cfg, "parallelism") {
        None => 1,
        Some(t) => int_in(t, MAX_PARALLELISM.into())
            .filter(|p| *p >= 1)
            .ok_or_else(|| bad("parallelism", &format!("must be an integer from 1 to {MAX_PARALLELISM}")))? as u16,
    };
    (net.channels, net.compression) = node_channels(cfg, parallelism)?;
    net.tls = read_tls(cfg)?.map(Box::new);
    let timing = LinkTiming::default();
    net.node.timing = LinkTiming {
        connection_interval: int(cfg, "connection_interval", timing.connection_interval, "milliseconds")?,
        connection_jitter: int(cfg, "connection_jitter", timing.connection_jitter, "milliseconds")?,
    };
    let periodic_interval = match boolean(cfg, "periodic_enabled", true)? {
        true => int(cfg, "periodic_interval", 10_000, "milliseconds")?,
        false => 0,
    };
    let hv = hyparview(cfg)?;
    validate_hyparview(&hv)?;
    net.node.overlay = overlay(cfg, periodic_interval, hv)?;
    let pt_defaults = PlumtreeConfig::default();
    let plumtree = PlumtreeConfig {
        lazy_tick_period: int(cfg, "lazy_tick_period", pt_defaults.lazy_tick_period, "milliseconds")?,
        exchange_tick_period: int(cfg, "exchange_tick_period", pt_defaults.exchange_tick_period, "milliseconds")?,
        ..pt_defaults
    };
    net.node.broadcast = boolean(cfg, "broadcast", false)?.then_some(plumtree);
    net.max_frame_size = int(cfg, "max_frame_size", defaults.max_frame_size as u64, "bytes")? as usize;
    net.max_queue_bytes = int(cfg, "max_queue_bytes", defaults.max_queue_bytes as u64, "bytes")? as usize;
    let schedulers = get(cfg, "schedulers_online").and_then(|t| int_in(t, 1 << 16)).unwrap_or(1) as usize;
    net.io_threads = int(cfg, "io_threads", Config::default_io_threads(schedulers) as u64, "threads")? as usize;
    net.read_spin = Duration::from_micros(int(cfg, "read_spin", defaults.read_spin.as_micros() as u64, "microseconds")?);
    net.connect_timeout = millis(cfg, "connect_timeout", defaults.connect_timeout)?;
    net.handshake_timeout = millis(cfg, "handshake_timeout", defaults.handshake_timeout)?;
    net.max_pending_handshakes = int(cfg, "max_pending_handshakes", defaults.max_pending_handshakes as u64, "connections")? as usize;
    net.max_pending_handshakes_per_addr =
        int(cfg, "max_pending_handshakes_per_addr", defaults.max_pending_handshakes_per_addr as u64, "connections")? as usize;
    net.stop_flush_timeout = millis(cfg, "stop_flush_timeout", defaults.stop_flush_timeout)?;
    net.retransmit_interval = millis(cfg, "retransmit_interval", defaults.retransmit_interval)?;
    net.max_unacked_bytes = int(cfg, "max_unacked_bytes", defaults.max_unacked_bytes as u64, "bytes")? as usize;
    net.connection_ping = connection_ping(cfg)?;
    let safe_decode = match get(cfg, "decode").map(|t| t.decode::<Atom>()) {
        None => false,
        Some(Ok(d)) if d == atoms::safe() => true,
        Some(Ok(d)) if d == atoms::trusted() => false,
        Some(_) => return Err(bad("decode", "must be safe or trusted")),
    };
    net.validate()?;
    // Checked even when broadcast is off, as the keys are.
    validate_broadcast(&plumtree)?;
    Ok(DataPlane { net, parallelism, periodic_interval, hyparview: hv, plumtree, safe_decode })
}

/// Everything `partisan_nif:start/1` takes.
pub fn read_start(cfg: Term) -> Result<Start, ConfigError> {
    let data = read_data_plane(cfg)?;
    let padded = boolean(cfg, "remote_ref_uri_padding", false)?;
    let ref_format = match get(cfg, "remote_ref_format").map(|t| t.decode::<Atom>()) {
        None => RefFormat::ImproperList,
        Some(Ok(f)) if f == atoms::improper_list() => RefFormat::ImproperList,
        Some(Ok(f)) if f == atoms::tuple() => RefFormat::Tuple,
        Some(Ok(f)) if f == atoms::uri() => RefFormat::Uri { padded },
        Some(_) => return Err(bad("remote_ref_format", "must be improper_list, tuple or uri")),
    };
    Ok(Start {
        data,
        events: required(cfg, "events")?.decode().map_err(|_| bad("events", "must be a local pid"))?,
        vm_node: atom_string(required(cfg, "vm_node")?, "vm_node")?,
        creation: required(cfg, "creation")?.decode().map_err(|_| bad("creation", "must be an integer"))?,
        pid_rewrite: boolean(cfg, "pid_rewrite", false)?,
        ref_format,
    })
}

/// The effective values of the data plane's keys, in the shapes the keys take (`listen_ip`,
/// `listen_port`, `peer_ip`, `peer_port` and `periodic_enabled` are folded into `listen_addrs`
/// and `periodic_interval`).
pub fn encode_data_plane<'a>(env: Env<'a>, d: &DataPlane) -> Term<'a> {
    let net = &d.net;
    let ms = |d: Duration| d.as_millis() as u64;
    let hv = &d.hyparview;
    let hyparview = pairs(
        env,
        &[
            (atoms::active_max_size(), hv.active_max_size.encode(env)),
            (atoms::active_min_size(), hv.active_min_size.encode(env)),
            (atoms::active_rwl(), hv.active_rwl.encode(env)),
            (atoms::passive_max_size(), hv.passive_max_size.encode(env)),
            (atoms::passive_rwl(), hv.passive_rwl.encode(env)),
            (atoms::random_promotion(), hv.random_promotion.encode(env)),
            (atoms::random_promotion_interval(), hv.random_promotion_interval.encode(env)),
            (atoms::shuffle_interval(), hv.shuffle_interval.encode(env)),
            (atoms::shuffle_k_active(), hv.shuffle_k_active.encode(env)),
            (atoms::shuffle_k_passive(), hv.shuffle_k_passive.encode(env)),
        ],
    );
    let decode = if d.safe_decode { atoms::safe() } else { atoms::trusted() };
    pairs(
        env,
        &[
            (atoms::listen_addrs(), encode_addrs(env, &net.listen_addrs)),
            (atoms::parallelism(), d.parallelism.encode(env)),
            (atoms::channels(), encode_channels(env, &net.channels, &net.compression)),
            (atoms::connection_interval(), net.node.timing.connection_interval.encode(env)),
            (atoms::connection_jitter(), net.node.timing.connection_jitter.encode(env)),
            (atoms::periodic_interval(), d.periodic_interval.encode(env)),
            (atoms::hyparview(), hyparview),
            (atoms::broadcast(), net.node.broadcast.is_some().encode(env)),
            (atoms::lazy_tick_period(), d.plumtree.lazy_tick_period.encode(env)),
            (atoms::exchange_tick_period(), d.plumtree.exchange_tick_period.encode(env)),
            (atoms::max_frame_size(), (net.max_frame_size as u64).encode(env)),
            (atoms::max_queue_bytes(), (net.max_queue_bytes as u64).encode(env)),
            (atoms::io_threads(), net.io_threads.encode(env)),
            (atoms::read_spin(), (net.read_spin.as_micros() as u64).encode(env)),
            (atoms::connect_timeout(), ms(net.connect_timeout).encode(env)),
            (atoms::handshake_timeout(), ms(net.handshake_timeout).encode(env)),
            (atoms::max_pending_handshakes(), net.max_pending_handshakes.encode(env)),
            (atoms::max_pending_handshakes_per_addr(), net.max_pending_handshakes_per_addr.encode(env)),
            (atoms::stop_flush_timeout(), ms(net.stop_flush_timeout).encode(env)),
            (atoms::decode(), decode.encode(env)),
            (atoms::retransmit_interval(), ms(net.retransmit_interval).encode(env)),
            (atoms::max_unacked_bytes(), (net.max_unacked_bytes as u64).encode(env)),
            (atoms::connection_ping(), encode_ping(env, &net.connection_ping)),
            (atoms::tls(), net.tls.is_some().encode(env)),
            (atoms::tls_server_options(), encode_tls_side(env, net.tls.as_ref().map(|t| &t.server))),
            (atoms::tls_client_options(), encode_tls_side(env, net.tls.as_ref().map(|t| &t.client))),
        ],
    )
}

/// A side's TLS options as an ssl-style proplist (`[]` without TLS).
fn encode_tls_side<'a>(env: Env<'a>, side: Option<&TlsSide>) -> Term<'a> {
    let Some(side) = side else { return Vec::<Term>::new().encode(env) };
    let mut out: Vec<Term> = Vec::new();
    for (k, p) in [(atoms::certfile(), &side.certfile), (atoms::keyfile(), &side.keyfile), (atoms::cacertfile(), &side.cacertfile)] {
        if let Some(p) = p {
            out.push((k, p.to_string_lossy().as_ref()).encode(env));
        }
    }
    let verify = match side.verify {
        Verify::VerifyPeer => atoms::verify_peer(),
        Verify::VerifyNone => atoms::verify_none(),
    };
    out.push((atoms::verify(), verify).encode(env));
    out.push((atoms::fail_if_no_peer_cert(), side.fail_if_no_peer_cert).encode(env));
    match &side.server_name_indication {
        Sni::PeerAddress => {}
        Sni::Name(n) => out.push((atoms::server_name_indication(), n.as_str()).encode(env)),
        Sni::Disable => out.push((atoms::server_name_indication(), atoms::disable()).encode(env)),
    }
    if !side.versions.is_empty() {
        let v: Vec<Atom> = side.versions.iter().map(|v| if *v == Version::Tls12 { atoms::tlsv1_2() } else { atoms::tlsv1_3() }).collect();
        out.push((atoms::versions(), v).encode(env));
    }
    out.encode(env)
}

fn pairs<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> Term<'a> {
    let pairs: Vec<(Term, Term)> = pairs.iter().map(|(k, v)| (k.encode(env), *v)).collect();
    Term::map_from_pairs(env, &pairs).expect("distinct keys")
}

/// A Partisan node spec map, `#{name, listen_addrs => [#{ip, port}], channels => #{...}}`, as
/// `partisan_node_spec` validated it; the error says what does not have the expected shape.
pub fn parse_spec(spec: Term) -> Result<NodeSpec, String> {
    let name = get(spec, "name").and_then(|n| n.atom_to_string().ok()).ok_or("name must be an atom")?;
    let addrs: Vec<Term> = get(spec, "listen_addrs").and_then(|a| a.decode().ok()).ok_or("listen_addrs must be a list")?;
    let listen_addrs = addrs.into_iter().map(addr).collect::<Option<_>>().ok_or("listen_addrs must be #{ip, port} maps")?;
    let channels = match get(spec, "channels") {
        Some(map) => channels(map, 1).map_err(|e| e.why)?,
        None => vec![],
    };
    Ok(NodeSpec { name, listen_addrs, channels })
}

fn encode_ip<'a>(env: Env<'a>, ip: IpAddr) -> Term<'a> {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            (o[0], o[1], o[2], o[3]).encode(env)
        }
        IpAddr::V6(v) => {
            let parts: Vec<Term> = v.segments().iter().map(|s| s.encode(env)).collect();
            rustler::types::tuple::make_tuple(env, &parts)
        }
    }
}

fn encode_addrs<'a>(env: Env<'a>, addrs: &[SocketAddr]) -> Term<'a> {
    let addrs: Vec<Term> =
        addrs.iter().map(|a| pairs(env, &[(atoms::ip(), encode_ip(env, a.ip())), (atoms::port(), a.port().encode(env))])).collect();
    addrs.encode(env)
}

/// Channels as `#{Name => #{parallelism, monotonic}}`, with `compression => Level` for those in
/// `compression`.
fn encode_channels<'a>(env: Env<'a>, channels: &[ChannelSpec], compression: &[(String, i32)]) -> Term<'a> {
    let mut map = Term::map_new(env);
    for c in channels {
        let mut opts = pairs(env, &[(atoms::parallelism(), c.parallelism.encode(env)), (atoms::monotonic(), c.monotonic.encode(env))]);
        if let Some((_, level)) = compression.iter().find(|(n, _)| *n == c.name) {
            opts = opts.map_put(atoms::compression().encode(env), level.encode(env)).expect("map");
        }
        let name = Atom::from_str(env, &c.name).expect("channel names are short").encode(env);
        map = map.map_put(name, opts).expect("map");
    }
    map
}

pub fn encode_spec<'a>(env: Env<'a>, spec: &NodeSpec) -> Term<'a> {
    let name = Atom::from_str(env, &spec.name).expect("node names are short");
    pairs(
        env,
        &[
            (atoms::name(), name.encode(env)),
            (atoms::listen_addrs(), encode_addrs(env, &spec.listen_addrs)),
            (atoms::channels(), encode_channels(env, &spec.channels, &[])),
        ],
    )
}
