//! A live HyParView + Plumtree overlay of N members in one process: real sockets on loopback,
//! real handshakes, one real data plane (runtime, driver, connections) per member — not the
//! simulator. `make bench-scale` runs it for N = 100, 300, 1,000 and writes
//! `bench/results/scale-N.md`.
//!
//! ```text
//! cargo run --release -p partisan_peer --example scale -- --nodes 300 --join concurrent
//! ```
//! Measures: time for all N to join (one after another, or all at once through one contact),
//! until every member has a neighbour and the active views form one connected, symmetric graph;
//! threads, memory and descriptors per member; broadcasts from random members (reliability, time
//! to the last delivery, RMR); then 20 % of the members stop at once (their sockets close as a
//! kill -9 would close them): broadcasts right after, and the time until the survivors' views are
//! one component again.

use partisan_peer::etf::Term;
use partisan_peer::{Config, HyParViewConfig, OverlayConfig, Peer, PeerEvent, PlumtreeConfig};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

struct Args {
    nodes: usize,
    concurrent: bool,
    kill: f64,
    broadcasts: usize,
    seed: u64,
    out: Option<String>,
    deadline: Duration,
    /// A BEAM node (`name=ip:port`, `bench/bench_scale.erl`): member 0 joins it, and every other
    /// broadcast starts there.
    beam: Option<(String, std::net::SocketAddr)>,
}

fn parse_args() -> Args {
    let mut a = Args { nodes: 100, concurrent: false, kill: 0.2, broadcasts: 5, seed: 1, out: None, deadline: Duration::from_secs(120), beam: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = v.parse().expect("--nodes N"),
            "--join" => a.concurrent = v == "concurrent",
            "--kill" => a.kill = v.parse().expect("--kill fraction"),
            "--broadcasts" => a.broadcasts = v.parse().expect("--broadcasts N"),
            "--seed" => a.seed = v.parse().expect("--seed N"),
            "--out" => a.out = Some(v),
            "--beam" => {
                let (name, addr) = v.split_once('=').expect("--beam name@host=ip:port");
                a.beam = Some((name.to_owned(), addr.parse().expect("--beam name@host=ip:port")));
            }
            "--deadline-seconds" => a.deadline = Duration::from_secs(v.parse().expect("--deadline-seconds N")),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// A small deterministic generator (xorshift), for the choice of contacts, origins and victims.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Threads, resident memory (KiB) and open descriptors of this process.
fn resources() -> (usize, u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    // Listing /proc/self/fd needs a descriptor itself: at the limit it fails (EMFILE), which says
    // how many are open just as well.
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or_else(|_| fd_limit().parse().unwrap_or(0));
    (field("Threads:") as usize, field("VmRSS:"), fds)
}

/// The process's open-files limit (soft), from /proc/self/limits; read once, at start (at the
/// limit, reading a file needs a descriptor that is not there).
fn fd_limit() -> String {
    static LIMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIMIT
        .get_or_init(|| {
            std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| l.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)).map(str::to_owned))
                .unwrap_or_else(|| "unknown".into())
        })
        .clone()
}

fn member_config(i: usize, n: usize) -> Config {
    let mut cfg = Config::new(&format!("m{i}@127.0.0.1"), b"scale-bench-cookie");
    // One I/O thread per member: N runtimes share the machine's cores.
    cfg.io_threads = 1;
    // HyParView's defaults (active 6, passive 30), shuffles and promotions every 2 s and 1 s so a
    // run settles in seconds; Plumtree's defaults.
    let hv = HyParViewConfig { shuffle_interval: 2000, random_promotion_interval: 1000, ..HyParViewConfig::default() };
    cfg.node.overlay = OverlayConfig::HyParView(hv);
    cfg.node.broadcast = Some(PlumtreeConfig::default());
    cfg.node.timing.connection_interval = 200;
    cfg.node.timing.connection_jitter = 200;
    // Small queues: N members' worth of 64 MiB budgets is no bound at all.
    cfg.max_queue_bytes = 1 << 20;
    // Every member dials from 127.0.0.1: the per-address bound on pending handshakes (a flood
    // guard against one host) would make all members one host.
    cfg.max_pending_handshakes_per_addr = cfg.max_pending_handshakes;
    let _ = n;
    cfg
}

/// The graph of active views among the live Rust members: (symmetric, components, degree
/// min/mean/max; a degree counts a BEAM neighbour too).
fn overlay_shape(peers: &[Option<Peer>]) -> (bool, usize, usize, f64, usize) {
    let live: HashMap<String, HashSet<String>> =
        peers.iter().flatten().map(|p| (p.name().to_owned(), p.connected().into_iter().collect())).collect();
    // Among the members measured here (a BEAM member's view is not read from this process).
    let symmetric = live.iter().all(|(n, vs)| vs.iter().filter(|v| live.contains_key(*v)).all(|v| live[v].contains(n)));
    let mut seen = HashSet::new();
    let mut components = 0;
    for start in live.keys() {
        if !seen.insert(start.clone()) {
            continue;
        }
        components += 1;
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(n) = queue.pop_front() {
            for v in live.get(&n).into_iter().flatten() {
                if live.contains_key(v) && seen.insert(v.clone()) {
                    queue.push_back(v.clone());
                }
            }
        }
    }
    let degrees: Vec<usize> = live.values().map(HashSet::len).collect();
    let mean = degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64;
    (symmetric, components, degrees.iter().copied().min().unwrap_or(0), mean, degrees.iter().copied().max().unwrap_or(0))
}

fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stat_sum(peers: &[Option<Peer>], key: &str) -> u64 {
    peers.iter().flatten().map(|p| p.node().stats().into_iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)).sum()
}

/// Where a broadcast starts: a Rust member, or the BEAM node (asked through a live member).
enum Origin<'a> {
    Member(usize),
    Beam(&'a str),
}

/// One broadcast: (Rust members reached, live Rust members, time to the last delivery, RMR over
/// the Rust members' receipts).
fn broadcast(peers: &[Option<Peer>], origin: Origin, tag: i32, wait: Duration) -> (usize, usize, Option<Duration>, Option<f64>) {
    let live = peers.iter().flatten().count();
    let before = stat_sum(peers, "broadcast_payloads_received");
    let start = Instant::now();
    let mut reached: HashSet<usize> = HashSet::new();
    match origin {
        Origin::Member(i) => {
            let p = peers[i].as_ref().expect("a live origin");
            p.broadcast("bench_scale", &Term::Int(tag), &Term::Binary(vec![0; 64])).expect("broadcast");
            reached.insert(i);
        }
        Origin::Beam(node) => {
            let asker = peers.iter().flatten().next().expect("a live member");
            let ask = Term::SmallTuple(vec![partisan_peer::etf::atom("broadcast"), Term::Int(tag)]);
            asker.send_named(node, "bench_scale_origin", &ask).expect("ask the BEAM node");
        }
    }
    let mut last = Duration::ZERO;
    while reached.len() < live && start.elapsed() < wait {
        for (i, p) in peers.iter().enumerate() {
            let Some(p) = p else { continue };
            while let Some(e) = p.next_event(Duration::ZERO) {
                let id = match e {
                    PeerEvent::Broadcast { id: Term::Int(t), .. } => t,
                    // The BEAM writes small integers in one byte.
                    PeerEvent::Broadcast { id: Term::SmallInt(t), .. } => i32::from(t),
                    _ => continue,
                };
                {
                    let t = id;
                    if t == tag && reached.insert(i) {
                        last = start.elapsed();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Let late duplicates arrive before counting payload frames.
    std::thread::sleep(Duration::from_millis(300));
    let payloads = stat_sum(peers, "broadcast_payloads_received") - before;
    let rmr = (reached.len() >= 2).then(|| payloads as f64 / (reached.len() - 1) as f64 - 1.0);
    (reached.len(), live, (reached.len() == live).then_some(last), rmr)
}

fn main() {
    let args = parse_args();
    let n = args.nodes;
    let mut rng = Rng(args.seed.max(1) * 0x9E37_79B9_7F4A_7C15);
    let mut report = String::new();
    let mode = if args.concurrent { "all at once, through one contact" } else { "one after another, each through a random earlier member" };
    let _ = writeln!(report, "# Live overlay: {n} members in one process\n");
    let _ = writeln!(report, "HyParView (active 6, passive 30, shuffle 2 s, promotion 1 s) + Plumtree (defaults); one data plane per member (1 I/O thread each), real TCP on loopback, real handshakes. Join: {mode}. Seed {}.\n", args.seed);
    if let Some((beam, _)) = &args.beam {
        let _ = writeln!(report, "Plus one BEAM node, {beam} (`bench/bench_scale.erl`, partisan with the same settings), which member m0 joins first and which originates every even-numbered broadcast. Reach and RMR count the Rust members.\n");
    }
    let _ = fd_limit();
    let (t0, rss0, fd0) = resources();

    let start = Instant::now();
    let mut peers: Vec<Option<Peer>> = (0..n).map(|i| Some(Peer::start(member_config(i, n)).expect("member start"))).collect();
    let started = start.elapsed();
    let (_, rss1, fd1) = resources();

    let join_start = Instant::now();
    if let Some((name, addr)) = &args.beam {
        let p = peers[0].as_ref().expect("live");
        p.join(partisan_peer::NodeSpec::new(name, vec![*addr], vec![])).expect("join the BEAM node");
        if wait_for(Duration::from_secs(10), || p.connected().contains(name)).is_none() {
            eprintln!("scale: the BEAM node {name} did not become a neighbour of m0 within 10 s");
        }
    }
    let mut stalled = None;
    for i in 1..n {
        let contact = if args.concurrent { 0 } else { rng.below(i) };
        let spec = peers[contact].as_ref().expect("live").spec().clone();
        peers[i].as_ref().expect("live").join(spec).expect("join");
        if !args.concurrent {
            let p = peers[i].as_ref().expect("live");
            if wait_for(Duration::from_secs(10), || !p.connected().is_empty()).is_none() {
                // Where the machine stops it: the members from here on are stopped unjoined.
                let (_, _, fds) = resources();
                stalled = Some((i, fds));
                eprintln!("scale: member {i} found no neighbour within 10 s ({fds} descriptors open, limit {})", fd_limit());
                std::thread::scope(|s| {
                    for p in peers[i..].iter_mut().filter_map(Option::take) {
                        s.spawn(move || p.stop());
                    }
                });
                break;
            }
        }
    }
    eprintln!("scale: {n} joins asked after {:.2} s", join_start.elapsed().as_secs_f64());
    let all_have_neighbours = wait_for(args.deadline, || peers.iter().flatten().all(|p| !p.connected().is_empty())).map(|_| join_start.elapsed());
    let one_component = wait_for(args.deadline, || {
        let (sym, comps, ..) = overlay_shape(&peers);
        sym && comps == 1
    })
    .map(|_| join_start.elapsed());
    let (sym, comps, dmin, dmean, dmax) = overlay_shape(&peers);
    let (t2, rss2, fd2) = resources();
    eprintln!("scale: joined: neighbours {all_have_neighbours:?}, one component {one_component:?}, components {comps}, symmetric {sym}");

    let fmt = |d: Option<Duration>| d.map_or("not within the deadline".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    let _ = writeln!(report, "## Join\n\n| measure | value |\n|---|---|");
    let _ = writeln!(report, "| start {n} members (bind, runtime) | {:.2} s |", started.as_secs_f64());
    if let Some((i, fds)) = stalled {
        let _ = writeln!(report, "| **the machine stopped it** | member {i} found no neighbour: {fds} descriptors open, the process's limit is {} (members {i}..{n} stopped unjoined; the rest is measured with {i} members) |", fd_limit());
    }
    let _ = writeln!(report, "| every member has a neighbour | {} |", fmt(all_have_neighbours));
    let _ = writeln!(report, "| active views one connected, symmetric graph | {} |", fmt(one_component));
    let _ = writeln!(report, "| then: symmetric / components / active view min, mean, max | {sym} / {comps} / {dmin}, {dmean:.2}, {dmax} |");
    let joined = peers.iter().flatten().count();
    let per_started = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / joined as f64;
    let _ = writeln!(report, "| threads per member | {:.2} (process: {t0} before, {t2} after) |", per(t0 as u64, t2 as u64));
    let _ = writeln!(report, "| resident memory per member, idle / joined | {:.0} KiB / {:.0} KiB |", per_started(rss0, rss1), per(rss0, rss2));
    let _ = writeln!(report, "| descriptors per member, idle / joined | {:.2} / {:.2} |", per_started(fd0 as u64, fd1 as u64), per(fd0 as u64, fd2 as u64));

    let _ = writeln!(report, "\n## Broadcasts (Plumtree over the live views)\n\n| # | phase | origin | reached / live | last delivery | RMR |\n|---|---|---|---|---|---|");
    let mut tag = 0;
    let beam_name = args.beam.as_ref().map(|(n, _)| n.clone());
    let mut row = |report: &mut String, peers: &[Option<Peer>], phase: &str, rng: &mut Rng| {
        let live: Vec<usize> = (0..peers.len()).filter(|i| peers[*i].is_some()).collect();
        tag += 1;
        let (origin, origin_name) = match &beam_name {
            Some(b) if tag % 2 == 0 => (Origin::Beam(b), b.clone()),
            _ => {
                let i = live[rng.below(live.len())];
                (Origin::Member(i), format!("m{i}"))
            }
        };
        let (reached, total, last, rmr) = broadcast(peers, origin, tag, Duration::from_secs(10));
        let rmr = rmr.map_or("-".into(), |r| format!("{r:.3}"));
        let last = last.map_or("not all within 10 s".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
        eprintln!("scale: broadcast {tag} ({phase}): {reached} / {total}, last {last}");
        let _ = writeln!(report, "| {tag} | {phase} | {origin_name} | {reached} / {total} ({:.2} %) | {last} | {rmr} |", 100.0 * reached as f64 / total as f64);
        std::thread::sleep(Duration::from_millis(500));
    };
    for _ in 0..args.broadcasts {
        row(&mut report, &peers, "steady", &mut rng);
    }

    // 20 % stop at once: their sockets close, as a kill -9 closes them.
    let victims: HashSet<usize> = {
        let live: Vec<usize> = (0..n).filter(|i| peers[*i].is_some()).collect();
        let mut v = HashSet::new();
        while v.len() < (live.len() as f64 * args.kill) as usize {
            v.insert(live[rng.below(live.len())]);
        }
        v
    };
    let live_before = peers.iter().flatten().count();
    let stopping: Vec<Peer> = victims.iter().filter_map(|i| peers[*i].take()).collect();
    let kill_start = Instant::now();
    std::thread::scope(|s| {
        for p in stopping {
            s.spawn(move || p.stop());
        }
    });
    for _ in 0..2 {
        row(&mut report, &peers, "right after the crash", &mut rng);
    }
    let repaired = wait_for(args.deadline, || {
        let (sym, comps, dmin, ..) = overlay_shape(&peers);
        sym && comps == 1 && dmin > 0
    })
    .map(|_| kill_start.elapsed());
    for _ in 0..args.broadcasts {
        row(&mut report, &peers, "after repair", &mut rng);
    }
    let (sym, comps, dmin, dmean, dmax) = overlay_shape(&peers);
    let _ = writeln!(report, "\n## {:.0} % of the members stopped at once ({} of {live_before})\n\n| measure | value |\n|---|---|", args.kill * 100.0, victims.len());
    let _ = writeln!(report, "| survivors' views one connected, symmetric graph again | {} after the stop |", fmt(repaired));
    let _ = writeln!(report, "| then: symmetric / components / active view min, mean, max | {sym} / {comps} / {dmin}, {dmean:.2}, {dmax} |");

    print!("{report}");
    if let Some(path) = args.out {
        std::fs::write(&path, &report).expect("write the report");
    }
    std::thread::scope(|s| {
        for p in peers.into_iter().flatten() {
            s.spawn(move || p.stop());
        }
    });
}
