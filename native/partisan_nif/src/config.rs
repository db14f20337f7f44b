//! Term ⇄ Rust conversion of the runtime config and node specs.
//!
//! The Erlang side (`partisan_config`) validates user configuration and names the offending key;
//! this module only converts the already-normalised map, and reports `{bad_config, Key}` if a
//! value still has the wrong shape.

use partisan_core::channel::ChannelSpec;
use partisan_core::etf_pids::RefFormat;
use partisan_core::hyparview::HyParViewConfig;
use partisan_core::plumtree::PlumtreeConfig;
use partisan_core::full_mesh::{LinkPolicy, Role};
use partisan_core::node::{LinkTiming, OverlayConfig};
use partisan_core::overlay::NodeSpec;
use partisan_net::Config;
use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, LocalPid, Term};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

mod atoms {
    rustler::atoms! {
        bad_config, name, listen_addrs, channels, cookie, connection_interval, connection_jitter,
        periodic_interval, max_frame_size, max_queue_bytes, decode, safe, events, vm_node,
        creation, ip, port, parallelism, monotonic, incarnation, connect_timeout, io_threads,
        topology, tag, full_mesh, client_server, static_ = "static", external, server, client, hyparview,
        active_max_size, active_min_size, active_rwl, passive_max_size, passive_rwl,
        random_promotion, random_promotion_interval, shuffle_interval, shuffle_k_active,
        shuffle_k_passive, broadcast, lazy_tick_period, exchange_tick_period, handshake_timeout,
        max_pending_handshakes, max_pending_handshakes_per_addr, stop_flush_timeout,
        pid_rewrite, remote_ref_format, remote_ref_uri_padding, improper_list, tuple, uri,
    }
}

pub struct Parsed {
    pub net: Config,
    pub events: LocalPid,
    pub safe_decode: bool,
    pub vm_node: String,
    pub creation: u32,
    /// Rewrite this VM's pids in outgoing messages (`pid_encoding`, VM not alive).
    pub pid_rewrite: bool,
    /// `remote_ref_format` and `remote_ref_uri_padding`.
    pub ref_format: RefFormat,
}

/// An optional key: its default when absent, `bad_config` when present with the wrong shape.
fn get_or<'a, T: rustler::Decoder<'a>>(map: Term<'a>, key: Atom, default: T) -> Result<T, Bad> {
    match map.map_get(key.encode(map.get_env())) {
        Ok(v) => v.decode().map_err(|_| (atoms::bad_config(), key)),
        Err(_) => Ok(default),
    }
}

fn ref_format(cfg: Term) -> Result<RefFormat, Bad> {
    let padded = get_or(cfg, atoms::remote_ref_uri_padding(), false)?;
    match get_or(cfg, atoms::remote_ref_format(), atoms::improper_list())? {
        f if f == atoms::improper_list() => Ok(RefFormat::ImproperList),
        f if f == atoms::tuple() => Ok(RefFormat::Tuple),
        f if f == atoms::uri() => Ok(RefFormat::Uri { padded }),
        _ => Err((atoms::bad_config(), atoms::remote_ref_format())),
    }
}

type Bad = (Atom, Atom);

fn get<'a>(map: Term<'a>, key: Atom) -> Result<Term<'a>, Bad> {
    map.map_get(key.encode(map.get_env())).map_err(|_| (atoms::bad_config(), key))
}

fn get_as<'a, T: rustler::Decoder<'a>>(map: Term<'a>, key: Atom) -> Result<T, Bad> {
    get(map, key)?.decode().map_err(|_| (atoms::bad_config(), key))
}

fn atom_string(t: Term, key: Atom) -> Result<String, Bad> {
    t.atom_to_string().map_err(|_| (atoms::bad_config(), key))
}

/// An integer in `0..=max`, never truncated: the range is checked on the full value (rustler's
/// integer decoders would cast `257` to `1`).
fn int_in(t: Term, max: u64) -> Option<u64> {
    let v: i64 = t.decode().ok()?;
    u64::try_from(v).ok().filter(|v| *v <= max)
}

fn ip(t: Term) -> Option<IpAddr> {
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

fn addrs(t: Term) -> Result<Vec<SocketAddr>, Bad> {
    let bad = (atoms::bad_config(), atoms::listen_addrs());
    let list: Vec<Term> = t.decode().map_err(|_| bad)?;
    list.into_iter()
        .map(|a| {
            let ip = ip(get(a, atoms::ip())?).ok_or(bad)?;
            let port = int_in(get(a, atoms::port())?, 65535).ok_or(bad)? as u16;
            Ok(SocketAddr::new(ip, port))
        })
        .collect()
}

/// Channels as the normalised map `#{Name => #{parallelism := N, monotonic := B}}`.
fn channels(t: Term) -> Result<Vec<ChannelSpec>, Bad> {
    let bad = (atoms::bad_config(), atoms::channels());
    let iter = MapIterator::new(t).ok_or(bad)?;
    let mut out = Vec::new();
    for (name, opts) in iter {
        out.push(ChannelSpec {
            name: atom_string(name, atoms::channels())?,
            parallelism: match int_in(get(opts, atoms::parallelism())?, 256) {
                Some(p) if p >= 1 => p as u16,
                _ => return Err(bad),
            },
            // Optional in a hand-written node spec, as in Partisan.
            monotonic: match get(opts, atoms::monotonic()) {
                Ok(m) => m.decode().map_err(|_| bad)?,
                Err(_) => false,
            },
        });
    }
    Ok(out)
}

pub fn parse(cfg: Term) -> Result<Parsed, Bad> {
    let name = atom_string(get(cfg, atoms::name())?, atoms::name())?;
    let cookie: rustler::Binary = get_as(cfg, atoms::cookie())?;
    let mut net = Config::new(&name, cookie.as_slice());
    net.listen_addrs = addrs(get(cfg, atoms::listen_addrs())?)?;
    net.channels = channels(get(cfg, atoms::channels())?)?;
    net.node.timing = LinkTiming {
        connection_interval: get_as(cfg, atoms::connection_interval())?,
        connection_jitter: get_as(cfg, atoms::connection_jitter())?,
    };
    let periodic_interval = get_as(cfg, atoms::periodic_interval())?;
    net.max_frame_size = get_as(cfg, atoms::max_frame_size())?;
    net.max_queue_bytes = get_as(cfg, atoms::max_queue_bytes())?;
    net.incarnation = get_as(cfg, atoms::incarnation())?;
    net.connect_timeout = Duration::from_millis(get_as(cfg, atoms::connect_timeout())?);
    net.handshake_timeout = Duration::from_millis(get_as(cfg, atoms::handshake_timeout())?);
    net.max_pending_handshakes = get_as(cfg, atoms::max_pending_handshakes())?;
    net.max_pending_handshakes_per_addr = get_as(cfg, atoms::max_pending_handshakes_per_addr())?;
    net.stop_flush_timeout = Duration::from_millis(get_as(cfg, atoms::stop_flush_timeout())?);
    net.io_threads = get_as(cfg, atoms::io_threads())?;
    let tag: Atom = get_as(cfg, atoms::tag())?;
    let role = match tag {
        t if t == atoms::server() => Role::Server,
        t if t == atoms::client() => Role::Client,
        _ => Role::Peer,
    };
    let topology: Atom = get_as(cfg, atoms::topology())?;
    let full_mesh = |policy| OverlayConfig::FullMesh { policy, periodic_interval };
    net.node.overlay = match topology {
        t if t == atoms::full_mesh() => full_mesh(LinkPolicy::AllMembers),
        t if t == atoms::client_server() => full_mesh(LinkPolicy::ClientServer(role)),
        t if t == atoms::static_() => full_mesh(LinkPolicy::Static),
        t if t == atoms::external() => full_mesh(LinkPolicy::External),
        t if t == atoms::hyparview() => OverlayConfig::HyParView(hyparview(get(cfg, atoms::hyparview())?)?),
        _ => return Err((atoms::bad_config(), atoms::topology())),
    };
    net.node.broadcast = if get_as::<bool>(cfg, atoms::broadcast())? {
        Some(PlumtreeConfig {
            lazy_tick_period: get_as(cfg, atoms::lazy_tick_period())?,
            exchange_tick_period: get_as(cfg, atoms::exchange_tick_period())?,
            ..PlumtreeConfig::default()
        })
    } else {
        None
    };
    Ok(Parsed {
        net,
        events: get_as(cfg, atoms::events())?,
        safe_decode: get_as::<Atom>(cfg, atoms::decode())? == atoms::safe(),
        vm_node: atom_string(get(cfg, atoms::vm_node())?, atoms::vm_node())?,
        creation: get_as(cfg, atoms::creation())?,
        pid_rewrite: get_or(cfg, atoms::pid_rewrite(), false)?,
        ref_format: ref_format(cfg)?,
    })
}

/// The normalised `hyparview` map (every key present).
fn hyparview(m: Term) -> Result<HyParViewConfig, Bad> {
    Ok(HyParViewConfig {
        active_max_size: get_as(m, atoms::active_max_size())?,
        active_min_size: get_as(m, atoms::active_min_size())?,
        active_rwl: get_as(m, atoms::active_rwl())?,
        passive_max_size: get_as(m, atoms::passive_max_size())?,
        passive_rwl: get_as(m, atoms::passive_rwl())?,
        random_promotion: get_as(m, atoms::random_promotion())?,
        random_promotion_interval: get_as(m, atoms::random_promotion_interval())?,
        shuffle_interval: get_as(m, atoms::shuffle_interval())?,
        shuffle_k_active: get_as(m, atoms::shuffle_k_active())?,
        shuffle_k_passive: get_as(m, atoms::shuffle_k_passive())?,
    })
}

/// A Partisan node spec map: `#{name, listen_addrs => [#{ip, port}], channels => #{...}}`.
pub fn parse_spec(spec: Term) -> Result<NodeSpec, Bad> {
    let name = atom_string(get(spec, atoms::name())?, atoms::name())?;
    let listen_addrs = addrs(get(spec, atoms::listen_addrs())?)?;
    let channels = match get(spec, atoms::channels()) {
        Ok(c) => channels(c)?,
        Err(_) => vec![],
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

pub fn encode_spec<'a>(env: Env<'a>, spec: &NodeSpec) -> Term<'a> {
    let addrs: Vec<Term> = spec
        .listen_addrs
        .iter()
        .map(|a| {
            Term::map_from_pairs(env, &[(atoms::ip().encode(env), encode_ip(env, a.ip())), (atoms::port().encode(env), a.port().encode(env))])
                .expect("distinct keys")
        })
        .collect();
    let mut chans = Term::map_new(env);
    for c in &spec.channels {
        let opts = Term::map_from_pairs(
            env,
            &[(atoms::parallelism().encode(env), c.parallelism.encode(env)), (atoms::monotonic().encode(env), c.monotonic.encode(env))],
        )
        .expect("distinct keys");
        let name = Atom::from_str(env, &c.name).expect("channel names are short").encode(env);
        chans = chans.map_put(name, opts).expect("map");
    }
    let name = Atom::from_str(env, &spec.name).expect("node names are short");
    Term::map_from_pairs(
        env,
        &[
            (atoms::name().encode(env), name.encode(env)),
            (atoms::listen_addrs().encode(env), addrs.encode(env)),
            (atoms::channels().encode(env), chans),
        ],
    )
    .expect("distinct keys")
}
