//! A Rust peer that joins a running BEAM cluster, echoes messages, and leaves.
//!
//! ```text
//! cargo run --release -p partisan_peer --example echo -- \
//!     --name rust1@127.0.0.1 --cookie secret --join a@127.0.0.1=127.0.0.1:45321
//! ```
//! On a BEAM node of the cluster (`partisan:node_spec()` gives the address to join):
//! ```erlang
//! partisan:forward_message('rust1@127.0.0.1', echo, {self(), hello}),
//! receive {echo, RustPid, hello} -> partisan:forward_message(RustPid, {self(), again}) end.
//! ```
//! The `echo` mailbox answers `{From, Msg}` with `{echo, EchoPid, Msg}` to `From`, forwards
//! `{send_named, Node, Name, Msg}` to `Name` on `Node`, broadcasts `{broadcast, Handler, Id,
//! Payload}` through Plumtree, and leaves the cluster on `stop`. It sends with `ack` (delivered
//! once, in order, also through the overlay to a node that is not a neighbour). With `--report Node:Name`, cluster
//! events (`{node_up, N}`, `{node_down, N}`, `{broadcast, Handler, Id, Payload}`) are sent there as
//! `{peer_event, ThisNode, Event}`. The peer prints `READY <name> <ip:port>` once it listens, and
//! exits when its standard input closes, on `stop`, or after `--max-seconds`.
//!
//! Options: `--channel name:parallelism[:monotonic]` (repeatable; the cluster's channels),
//! `--hyparview active_max,active_min` (HyParView instead of the full mesh), `--broadcast`
//! (Plumtree on), `--listen ip:port`, `--connection-interval ms`.

use partisan_core::channel::ChannelSpec;
use partisan_core::hyparview::HyParViewConfig;
use partisan_core::node::OverlayConfig;
use partisan_core::plumtree::PlumtreeConfig;
use partisan_peer::etf::{atom, atom_text, encode, Pid, Term};
use partisan_peer::{Config, Dest, NodeSpec, Peer, PeerEvent};
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Args {
    cfg: Config,
    join: Option<NodeSpec>,
    report: Option<(String, String)>,
    max: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut name, mut cookie) = (None, None);
    let (mut join, mut report, mut listen, mut hyparview) = (None, None, None, None);
    let (mut channels, mut broadcast, mut max, mut interval) = (vec![], false, 600, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = Some(value()?),
            "--cookie" => cookie = Some(value()?),
            "--join" => join = Some(value()?),
            "--report" => report = Some(value()?),
            "--listen" => listen = Some(value()?),
            "--hyparview" => hyparview = Some(value()?),
            "--channel" => channels.push(value()?),
            "--broadcast" => broadcast = true,
            "--max-seconds" => max = value()?.parse().map_err(|e| format!("--max-seconds: {e}"))?,
            "--connection-interval" => interval = Some(value()?.parse::<u64>().map_err(|e| format!("--connection-interval: {e}"))?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let name = name.ok_or("--name is required")?;
    let mut cfg = Config::new(&name, cookie.ok_or("--cookie is required")?.as_bytes());
    if let Some(addr) = listen {
        cfg.listen_addrs = vec![addr.parse().map_err(|e| format!("--listen: {e}"))?];
    }
    for c in &channels {
        let parts: Vec<&str> = c.split(':').collect();
        let parallelism = parts.get(1).map_or(Ok(1), |p| p.parse()).map_err(|e| format!("--channel {c}: {e}"))?;
        cfg.channels.push(ChannelSpec::new(parts[0], parallelism, parts.get(2) == Some(&"monotonic")));
    }
    if let Some(hv) = hyparview {
        let (max, min) = hv.split_once(',').ok_or("--hyparview takes active_max,active_min")?;
        let hv_cfg = HyParViewConfig {
            active_max_size: max.parse().map_err(|e| format!("--hyparview: {e}"))?,
            active_min_size: min.parse().map_err(|e| format!("--hyparview: {e}"))?,
            ..HyParViewConfig::default()
        };
        cfg.node.overlay = OverlayConfig::HyParView(hv_cfg);
    }
    if broadcast {
        cfg.node.broadcast = Some(PlumtreeConfig::default());
    }
    if let Some(ms) = interval {
        cfg.node.timing.connection_interval = ms;
        cfg.node.timing.connection_jitter = ms;
    }
    let join = match join {
        None => None,
        Some(j) => {
            let (node, addr) = j.split_once('=').ok_or("--join takes name@host=ip:port")?;
            let addr: SocketAddr = addr.parse().map_err(|e| format!("--join: {e}"))?;
            Some(NodeSpec::new(node, vec![addr], cfg.channels.clone()))
        }
    };
    let report = match report {
        None => None,
        Some(r) => {
            let (node, name) = r.rsplit_once(':').ok_or("--report takes node@host:name")?;
            Some((node.to_owned(), name.to_owned()))
        }
    };
    Ok(Args { cfg, join, report, max: Duration::from_secs(max) })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(64);
        }
    };
    let peer = match Peer::start(args.cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    };
    let echo = peer.register("echo").expect("a fresh peer has no names");
    if let Some(spec) = args.join {
        peer.join(spec).expect("the driver's input is empty at start");
    }
    println!("READY {} {}", peer.name(), peer.spec().listen_addrs[0]);
    // The parent (a shell, an Erlang port) closing our stdin means: stop.
    let (stdin_closed_tx, stdin_closed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines().map_while(Result::ok) {}
        let _ = stdin_closed_tx.send(());
    });
    let report = |event: Term| {
        if let Some((node, name)) = &args.report {
            let msg = Term::SmallTuple(vec![atom("peer_event"), atom(peer.name()), event]);
            if let Err(e) = peer.send_acked(node, Dest::Name(name.clone()), &msg) {
                eprintln!("echo: report to {name} on {node} failed: {e}");
            }
        }
    };
    let deadline = Instant::now() + args.max;
    while Instant::now() < deadline && stdin_closed.try_recv().is_err() {
        while let Some(event) = peer.next_event(Duration::ZERO) {
            match event {
                PeerEvent::NodeUp(n) => report(Term::SmallTuple(vec![atom("node_up"), atom(&n)])),
                PeerEvent::NodeDown(n) => report(Term::SmallTuple(vec![atom("node_down"), atom(&n)])),
                PeerEvent::Broadcast { handler, id, payload, .. } => report(Term::SmallTuple(vec![atom("broadcast"), atom(&handler), id, payload])),
                _ => {}
            }
        }
        let Ok(msg) = echo.recv_timeout(Duration::from_millis(20)) else { continue };
        match msg.term {
            Term::SmallTuple(items) => match &items[..] {
                [from, body] if Pid::from_term(from).is_some() => {
                    let from = Pid::from_term(from).expect("checked");
                    let reply = Term::SmallTuple(vec![atom("echo"), echo.pid().to_term(), body.clone()]);
                    let to = Dest::Pid(encode(&from.to_term()).into());
                    if let Err(e) = peer.send_acked(&from.node, to, &reply) {
                        eprintln!("echo: reply to {from} failed: {e}");
                    }
                }
                [tag, node, name, body] if atom_text(tag) == Some("send_named") => {
                    if let (Some(node), Some(name)) = (atom_text(node), atom_text(name)) {
                        if let Err(e) = peer.send_acked(node, Dest::Name(name.to_owned()), body) {
                            eprintln!("echo: send to {name} on {node} failed: {e}");
                        }
                    }
                }
                [tag, handler, id, payload] if atom_text(tag) == Some("broadcast") => {
                    if let Some(handler) = atom_text(handler) {
                        if let Err(e) = peer.broadcast(handler, id, payload) {
                            eprintln!("echo: broadcast failed: {e}");
                        }
                    }
                }
                _ => eprintln!("echo: unexpected message from {}", msg.from_node),
            },
            ref t if atom_text(t) == Some("stop") => break,
            _ => eprintln!("echo: unexpected message from {}", msg.from_node),
        }
    }
    let _ = peer.leave();
    let undelivered = peer.stop();
    eprintln!("echo: stopped ({undelivered} messages not written)");
}
