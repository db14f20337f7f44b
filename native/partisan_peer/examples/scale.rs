//! A live HyParView + Plumtree overlay of N members in one or two processes: real sockets on
//! loopback, real handshakes, one real data plane (runtime, driver, connections) per member — not
//! the simulator. `make bench-scale` runs it for N = 100, 300, 1,000 and writes
//! `bench/results/scale-N.md`.
//!
//! ```text
//! cargo run --release -p partisan_peer --example scale -- --nodes 300 --join concurrent
//! cargo run --release -p partisan_peer --example scale -- --nodes 1000 --procs 2
//! ```
//! A joined member holds about 27 descriptors, so one process stops near 20,000 / 27 members where
//! that is the limit: `--procs 2` hosts the second half of the members in a worker process (this
//! program with `--worker`), driven over its stdin/stdout with one line per command (see
//! [`worker_main`]), and every measure counts both halves.
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
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Processes hosting the members: 1, or 2 (the second half in a worker).
    procs: usize,
    /// This process is a worker hosting members `first..first + count`.
    worker: Option<(usize, usize)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: 100,
        concurrent: false,
        kill: 0.2,
        broadcasts: 5,
        seed: 1,
        out: None,
        deadline: Duration::from_secs(120),
        beam: None,
        procs: 1,
        worker: None,
    };
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
            "--procs" => a.procs = v.parse().ok().filter(|p| (1..=2).contains(p)).expect("--procs 1 or 2"),
            "--worker" => {
                let (first, count) = v.split_once(',').expect("--worker FIRST,COUNT");
                a.worker = Some((first.parse().expect("--worker FIRST,COUNT"), count.parse().expect("--worker FIRST,COUNT")));
            }
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

/// Microseconds since the Unix epoch: the clock both processes of a run share.
fn wall_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

/// The broadcast tag of an event, if it is a broadcast.
fn broadcast_tag(e: &PeerEvent) -> Option<i32> {
    match e {
        PeerEvent::Broadcast { id: Term::Int(t), .. } => Some(*t),
        // The BEAM writes small integers in one byte.
        PeerEvent::Broadcast { id: Term::SmallInt(t), .. } => Some(i32::from(*t)),
        _ => None,
    }
}

/// Members hosted by one process, indexed from `first`, and the broadcasts they received
/// (tag → member → when, in [`wall_us`]), recorded by a thread that drains their events.
struct Hosted {
    first: usize,
    peers: Mutex<Vec<Option<Peer>>>,
    receipts: Mutex<HashMap<i32, HashMap<usize, u128>>>,
}

impl Hosted {
    fn start(first: usize, count: usize, n: usize) -> Arc<Hosted> {
        let peers = (first..first + count).map(|i| Some(Peer::start(member_config(i, n)).expect("member start"))).collect();
        let hosted = Arc::new(Hosted { first, peers: Mutex::new(peers), receipts: Mutex::new(HashMap::new()) });
        let weak = Arc::downgrade(&hosted);
        std::thread::spawn(move || {
            while let Some(h) = weak.upgrade() {
                h.drain_events();
                drop(h);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        hosted
    }

    fn drain_events(&self) {
        let peers = self.peers.lock().expect("peers");
        let mut got = vec![];
        for (k, p) in peers.iter().enumerate() {
            let Some(p) = p else { continue };
            while let Some(e) = p.next_event(Duration::ZERO) {
                if let Some(tag) = broadcast_tag(&e) {
                    got.push((tag, self.first + k, wall_us()));
                }
            }
        }
        drop(peers);
        let mut receipts = self.receipts.lock().expect("receipts");
        for (tag, i, at) in got {
            receipts.entry(tag).or_default().entry(i).or_insert(at);
        }
    }

    fn with<R>(&self, i: usize, f: impl FnOnce(&Peer) -> R) -> Option<R> {
        self.peers.lock().expect("peers").get(i - self.first).and_then(Option::as_ref).map(f)
    }

    fn live(&self) -> Vec<usize> {
        self.peers.lock().expect("peers").iter().enumerate().filter(|(_, p)| p.is_some()).map(|(k, _)| self.first + k).collect()
    }

    /// Name → active view of every live member.
    fn views(&self) -> Vec<(String, Vec<String>)> {
        self.peers.lock().expect("peers").iter().flatten().map(|p| (p.name().to_owned(), p.connected())).collect()
    }

    fn stat_sum(&self, key: &str) -> u64 {
        let peers = self.peers.lock().expect("peers");
        peers.iter().flatten().map(|p| p.node().stats().into_iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)).sum()
    }

    /// Members reached by broadcast `tag`, and when the last was.
    fn reached(&self, tag: i32) -> (usize, u128) {
        let receipts = self.receipts.lock().expect("receipts");
        receipts.get(&tag).map_or((0, 0), |r| (r.len(), r.values().copied().max().unwrap_or(0)))
    }

    /// Stops these members at once (their sockets close as a kill -9 closes them).
    fn stop(&self, members: &[usize]) {
        let stopping: Vec<Peer> = {
            let mut peers = self.peers.lock().expect("peers");
            members.iter().filter_map(|i| peers.get_mut(i - self.first).and_then(Option::take)).collect()
        };
        std::thread::scope(|s| {
            for p in stopping {
                s.spawn(move || p.stop());
            }
        });
    }
}

/// The worker process of `--procs 2`: hosts `count` members from `first`. Prints `BASE threads
/// rss_kib fds` (before its members started), `SPEC i name ip:port` for each, then `END`; then answers each command line on stdin with lines ending in
/// `END`: `JOIN i name ip:port`, `NEIGHBOURED i` (`1`/`0`), `VIEWS` (`name neighbour...` per
/// live member), `BCAST i tag`, `REACHED tag` (`count last_us`), `STAT key`, `RES` (`threads
/// rss_kib fds`), `LIVE` (member indices), `STOP i...`, and `QUIT`.
fn worker_main(first: usize, count: usize, n: usize) {
    let (t0, rss0, fd0) = resources();
    let hosted = Hosted::start(first, count, n);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "BASE {t0} {rss0} {fd0}");
    for i in first..first + count {
        let (name, addr) = hosted.with(i, |p| (p.name().to_owned(), p.spec().listen_addrs[0])).expect("started");
        let _ = writeln!(out, "SPEC {i} {name} {addr}");
    }
    let _ = writeln!(out, "END");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |k: usize| words.get(k).and_then(|w| w.parse::<usize>().ok()).unwrap_or(usize::MAX);
        match words.first().copied() {
            Some("JOIN") => {
                let spec = partisan_peer::NodeSpec::new(words[2], vec![words[3].parse().expect("ip:port")], vec![]);
                let _ = hosted.with(num(1), |p| p.join(spec));
            }
            Some("NEIGHBOURED") => {
                let _ = writeln!(out, "{}", u8::from(hosted.with(num(1), |p| !p.connected().is_empty()).unwrap_or(false)));
            }
            Some("VIEWS") => {
                for (name, view) in hosted.views() {
                    let _ = writeln!(out, "{name} {}", view.join(" "));
                }
            }
            Some("BCAST") => {
                let tag: i32 = words[2].parse().expect("tag");
                let _ = hosted.with(num(1), |p| p.broadcast("bench_scale", &Term::Int(tag), &Term::Binary(vec![0; 64])));
            }
            Some("REACHED") => {
                let (count, last) = hosted.reached(words[1].parse().expect("tag"));
                let _ = writeln!(out, "{count} {last}");
            }
            Some("STAT") => {
                let _ = writeln!(out, "{}", hosted.stat_sum(words[1]));
            }
            Some("RES") => {
                let (t, rss, fds) = resources();
                let _ = writeln!(out, "{t} {rss} {fds}");
            }
            Some("LIVE") => {
                let live: Vec<String> = hosted.live().iter().map(usize::to_string).collect();
                let _ = writeln!(out, "{}", live.join(" "));
            }
            Some("STOP") => hosted.stop(&(1..words.len()).map(num).collect::<Vec<_>>()),
            Some("QUIT") | None => break,
            Some(other) => eprintln!("scale worker: unknown command {other}"),
        }
        let _ = writeln!(out, "END");
        let _ = out.flush();
    }
    let all = hosted.live();
    hosted.stop(&all);
}

/// The worker process, driven line by line (see [`worker_main`]).
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    first: usize,
    specs: Vec<(String, std::net::SocketAddr)>,
    /// Threads, resident KiB and descriptors of the worker before its members started.
    base: (usize, u64, usize),
}

impl Worker {
    fn spawn(first: usize, count: usize, n: usize, seed: u64) -> Worker {
        let exe = std::env::current_exe().expect("this program");
        let mut child = Command::new(exe)
            .args(["--nodes", &n.to_string(), "--seed", &seed.to_string(), "--worker", &format!("{first},{count}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the worker process");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut w = Worker { child, stdin, stdout, first, specs: vec![], base: (0, 0, 0) };
        for line in w.read_reply() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts[..] {
                ["SPEC", _, name, addr] => w.specs.push((name.to_owned(), addr.parse().expect("ip:port"))),
                ["BASE", t, rss, fds] => w.base = (t.parse().unwrap_or(0), rss.parse().unwrap_or(0), fds.parse().unwrap_or(0)),
                _ => {}
            }
        }
        w
    }

    fn read_reply(&mut self) -> Vec<String> {
        let mut lines = vec![];
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("the worker's output") == 0 {
                panic!("the worker process ended");
            }
            let line = line.trim_end().to_owned();
            if line == "END" {
                return lines;
            }
            lines.push(line);
        }
    }

    fn call(&mut self, cmd: &str) -> Vec<String> {
        writeln!(self.stdin, "{cmd}").expect("the worker's input");
        self.stdin.flush().expect("the worker's input");
        self.read_reply()
    }

    fn numbers(&mut self, cmd: &str) -> Vec<u128> {
        self.call(cmd).first().map(|l| l.split_whitespace().filter_map(|w| w.parse().ok()).collect()).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "QUIT");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// Every member of the run: those this process hosts (from 0), and the worker's.
struct Members {
    local: Arc<Hosted>,
    worker: Option<Worker>,
}

impl Members {
    fn is_local(&self, i: usize) -> bool {
        self.worker.as_ref().is_none_or(|w| i < w.first)
    }

    fn spec(&self, i: usize) -> partisan_peer::NodeSpec {
        match &self.worker {
            Some(w) if i >= w.first => {
                let (name, addr) = &w.specs[i - w.first];
                partisan_peer::NodeSpec::new(name, vec![*addr], vec![])
            }
            _ => self.local.with(i, |p| p.spec().clone()).expect("a live contact"),
        }
    }

    fn join(&mut self, i: usize, spec: partisan_peer::NodeSpec) {
        if self.is_local(i) {
            self.local.with(i, |p| p.join(spec).expect("join"));
        } else {
            let addr = spec.listen_addrs[0];
            self.worker.as_mut().expect("remote").call(&format!("JOIN {i} {} {addr}", spec.name));
        }
    }

    fn has_neighbour(&mut self, i: usize) -> bool {
        if self.is_local(i) {
            self.local.with(i, |p| !p.connected().is_empty()).unwrap_or(false)
        } else {
            self.worker.as_mut().expect("remote").numbers(&format!("NEIGHBOURED {i}")) == [1]
        }
    }

    fn live(&mut self) -> Vec<usize> {
        let mut live = self.local.live();
        if let Some(w) = self.worker.as_mut() {
            live.extend(w.numbers("LIVE").into_iter().map(|i| i as usize));
        }
        live
    }

    fn views(&mut self) -> HashMap<String, HashSet<String>> {
        let mut views: HashMap<String, HashSet<String>> = self.local.views().into_iter().map(|(n, v)| (n, v.into_iter().collect())).collect();
        if let Some(w) = self.worker.as_mut() {
            for line in w.call("VIEWS") {
                let mut words = line.split_whitespace().map(str::to_owned);
                if let Some(name) = words.next() {
                    views.insert(name, words.collect());
                }
            }
        }
        views
    }

    fn stat_sum(&mut self, key: &str) -> u64 {
        let remote = self.worker.as_mut().map_or(0, |w| w.numbers(&format!("STAT {key}")).first().copied().unwrap_or(0) as u64);
        self.local.stat_sum(key) + remote
    }

    fn broadcast(&mut self, i: usize, tag: i32) {
        if self.is_local(i) {
            self.local.with(i, |p| p.broadcast("bench_scale", &Term::Int(tag), &Term::Binary(vec![0; 64])).expect("broadcast"));
        } else {
            self.worker.as_mut().expect("remote").call(&format!("BCAST {i} {tag}"));
        }
    }

    /// Members reached by broadcast `tag`, and when the last one was ([`wall_us`]).
    fn reached(&mut self, tag: i32) -> (usize, u128) {
        let (mut count, mut last) = self.local.reached(tag);
        if let Some(w) = self.worker.as_mut() {
            if let [c, l] = w.numbers(&format!("REACHED {tag}"))[..] {
                count += c as usize;
                last = last.max(l);
            }
        }
        (count, last)
    }

    fn stop(&mut self, members: &[usize]) {
        let (local, remote): (Vec<usize>, Vec<usize>) = members.iter().partition(|i| self.is_local(**i));
        std::thread::scope(|s| {
            let local_hosted = &self.local;
            s.spawn(move || local_hosted.stop(&local));
            if let Some(w) = self.worker.as_mut() {
                if !remote.is_empty() {
                    let list: Vec<String> = remote.iter().map(usize::to_string).collect();
                    w.call(&format!("STOP {}", list.join(" ")));
                }
            }
        });
    }

    /// Threads, resident KiB and descriptors, summed over the processes, and the worker's own
    /// before its members started.
    fn resources(&mut self) -> ((usize, u64, usize), (usize, u64, usize)) {
        let mut total = resources();
        let mut base = (0, 0, 0);
        if let Some(w) = self.worker.as_mut() {
            if let [t, rss, fds] = w.numbers("RES")[..] {
                total = (total.0 + t as usize, total.1 + rss as u64, total.2 + fds as usize);
            }
            base = w.base;
        }
        (total, base)
    }
}

/// The graph of active views among the live Rust members: (symmetric, components, degree
/// min/mean/max; a degree counts a BEAM neighbour too).
fn overlay_shape(members: &mut Members) -> (bool, usize, usize, f64, usize) {
    let live = members.views();
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

/// Where a broadcast starts: a Rust member, or the BEAM node (asked through a live member).
enum Origin<'a> {
    Member(usize),
    Beam(&'a str),
}

/// One broadcast: (Rust members reached, live Rust members, time to the last delivery, RMR over
/// the Rust members' receipts).
fn broadcast(members: &mut Members, origin: Origin, tag: i32, wait: Duration) -> (usize, usize, Option<Duration>, Option<f64>) {
    let live = members.live().len();
    let before = members.stat_sum("broadcast_payloads_received");
    let start = Instant::now();
    let start_us = wall_us();
    // The origin counts as reached (Plumtree does not deliver a node's own broadcast to it).
    let own = match origin {
        Origin::Member(i) => {
            members.broadcast(i, tag);
            1
        }
        Origin::Beam(node) => {
            let ask = Term::SmallTuple(vec![partisan_peer::etf::atom("broadcast"), Term::Int(tag)]);
            let asked = members.local.live().first().and_then(|i| members.local.with(*i, |p| p.send_named(node, "bench_scale_origin", &ask)));
            asked.expect("a live local member").expect("ask the BEAM node");
            0
        }
    };
    let (mut reached, mut last_us) = (own, start_us);
    while reached < live && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(10));
        let (count, last) = members.reached(tag);
        (reached, last_us) = (own + count, last.max(start_us));
    }
    // Let late duplicates arrive before counting payload frames.
    std::thread::sleep(Duration::from_millis(300));
    let payloads = members.stat_sum("broadcast_payloads_received") - before;
    let rmr = (reached >= 2).then(|| payloads as f64 / (reached - 1) as f64 - 1.0);
    let last = Duration::from_micros((last_us - start_us) as u64);
    (reached, live, (reached == live).then_some(last), rmr)
}

fn main() {
    let args = parse_args();
    let n = args.nodes;
    if let Some((first, count)) = args.worker {
        return worker_main(first, count, n);
    }
    let mut rng = Rng(args.seed.max(1) * 0x9E37_79B9_7F4A_7C15);
    let mut report = String::new();
    let mode = if args.concurrent { "all at once, through one contact" } else { "one after another, each through a random earlier member" };
    let hosting = if args.procs == 2 { format!("two processes (members m0..m{} here, the rest in a worker process)", n / 2 - 1) } else { "one process".to_owned() };
    let _ = writeln!(report, "# Live overlay: {n} members in {}\n", if args.procs == 2 { "two processes" } else { "one process" });
    let _ = writeln!(report, "HyParView (active 6, passive 30, shuffle 2 s, promotion 1 s) + Plumtree (defaults); one data plane per member (1 I/O thread each), real TCP on loopback, real handshakes, hosted by {hosting}. Join: {mode}. Seed {}.\n", args.seed);
    if let Some((beam, _)) = &args.beam {
        let _ = writeln!(report, "Plus one BEAM node, {beam} (`bench/bench_scale.erl`, partisan with the same settings), which member m0 joins first and which originates every even-numbered broadcast. Reach and RMR count the Rust members.\n");
    }
    let _ = fd_limit();
    let (t0, rss0, fd0) = resources();

    let start = Instant::now();
    let local_count = if args.procs == 2 { n / 2 } else { n };
    let worker = (args.procs == 2).then(|| Worker::spawn(local_count, n - local_count, n, args.seed));
    let mut members = Members { local: Hosted::start(0, local_count, n), worker };
    let started = start.elapsed();
    // Both processes, before their members started (what the worker held then is not theirs).
    let ((_, rss1, fd1), (wt0, wrss0, wfd0)) = members.resources();
    let (t0, rss0, fd0) = (t0 + wt0, rss0 + wrss0, fd0 + wfd0);

    let join_start = Instant::now();
    if let Some((name, addr)) = &args.beam {
        members.join(0, partisan_peer::NodeSpec::new(name, vec![*addr], vec![]));
        let m0_has = |m: &mut Members| m.local.with(0, |p| p.connected().contains(name)).unwrap_or(false);
        if wait_for(Duration::from_secs(10), || m0_has(&mut members)).is_none() {
            eprintln!("scale: the BEAM node {name} did not become a neighbour of m0 within 10 s");
        }
    }
    let mut stalled = None;
    for i in 1..n {
        let contact = if args.concurrent { 0 } else { rng.below(i) };
        let spec = members.spec(contact);
        members.join(i, spec);
        if !args.concurrent && wait_for(Duration::from_secs(10), || members.has_neighbour(i)).is_none() {
            // Where the machine stops it: the members from here on are stopped unjoined.
            let ((_, _, fds), _) = members.resources();
            stalled = Some((i, fds));
            eprintln!("scale: member {i} found no neighbour within 10 s ({fds} descriptors open, limit {} per process)", fd_limit());
            members.stop(&(i..n).collect::<Vec<_>>());
            break;
        }
    }
    eprintln!("scale: {n} joins asked after {:.2} s", join_start.elapsed().as_secs_f64());
    let all_have_neighbours = wait_for(args.deadline, || {
        let live = members.live();
        live.into_iter().all(|i| members.has_neighbour(i))
    })
    .map(|_| join_start.elapsed());
    let one_component = wait_for(args.deadline, || {
        let (sym, comps, ..) = overlay_shape(&mut members);
        sym && comps == 1
    })
    .map(|_| join_start.elapsed());
    let (sym, comps, dmin, dmean, dmax) = overlay_shape(&mut members);
    let ((t2, rss2, fd2), _) = members.resources();
    eprintln!("scale: joined: neighbours {all_have_neighbours:?}, one component {one_component:?}, components {comps}, symmetric {sym}");

    let fmt = |d: Option<Duration>| d.map_or("not within the deadline".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    let _ = writeln!(report, "## Join\n\n| measure | value |\n|---|---|");
    let _ = writeln!(report, "| start {n} members (bind, runtime) | {:.2} s |", started.as_secs_f64());
    if let Some((i, fds)) = stalled {
        let _ = writeln!(report, "| **the machine stopped it** | member {i} found no neighbour: {fds} descriptors open, the limit is {} per process (members {i}..{n} stopped unjoined; the rest is measured with {i} members) |", fd_limit());
    }
    let _ = writeln!(report, "| every member has a neighbour | {} |", fmt(all_have_neighbours));
    let _ = writeln!(report, "| active views one connected, symmetric graph | {} |", fmt(one_component));
    let _ = writeln!(report, "| then: symmetric / components / active view min, mean, max | {sym} / {comps} / {dmin}, {dmean:.2}, {dmax} |");
    let joined = members.live().len();
    let per_started = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / joined as f64;
    let _ = writeln!(report, "| threads per member | {:.2} (processes: {t0} before, {t2} after) |", per(t0 as u64, t2 as u64));
    let _ = writeln!(report, "| resident memory per member, idle / joined | {:.0} KiB / {:.0} KiB |", per_started(rss0, rss1), per(rss0, rss2));
    let _ = writeln!(report, "| descriptors per member, idle / joined | {:.2} / {:.2} |", per_started(fd0 as u64, fd1 as u64), per(fd0 as u64, fd2 as u64));

    let _ = writeln!(report, "\n## Broadcasts (Plumtree over the live views)\n\n| # | phase | origin | reached / live | last delivery | RMR |\n|---|---|---|---|---|---|");
    let mut tag = 0;
    let beam_name = args.beam.as_ref().map(|(n, _)| n.clone());
    let mut row = |report: &mut String, members: &mut Members, phase: &str, rng: &mut Rng| {
        let live = members.live();
        tag += 1;
        let (origin, origin_name) = match &beam_name {
            Some(b) if tag % 2 == 0 => (Origin::Beam(b), b.clone()),
            _ => {
                let i = live[rng.below(live.len())];
                (Origin::Member(i), format!("m{i}"))
            }
        };
        let (reached, total, last, rmr) = broadcast(members, origin, tag, Duration::from_secs(10));
        let rmr = rmr.map_or("-".into(), |r| format!("{r:.3}"));
        let last = last.map_or("not all within 10 s".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
        eprintln!("scale: broadcast {tag} ({phase}): {reached} / {total}, last {last}");
        let _ = writeln!(report, "| {tag} | {phase} | {origin_name} | {reached} / {total} ({:.2} %) | {last} | {rmr} |", 100.0 * reached as f64 / total as f64);
        std::thread::sleep(Duration::from_millis(500));
    };
    for _ in 0..args.broadcasts {
        row(&mut report, &mut members, "steady", &mut rng);
    }

    // 20 % stop at once: their sockets close, as a kill -9 closes them.
    let victims: HashSet<usize> = {
        let live = members.live();
        let mut v = HashSet::new();
        while v.len() < (live.len() as f64 * args.kill) as usize {
            v.insert(live[rng.below(live.len())]);
        }
        v
    };
    let live_before = members.live().len();
    let kill_start = Instant::now();
    members.stop(&victims.iter().copied().collect::<Vec<_>>());
    for _ in 0..2 {
        row(&mut report, &mut members, "right after the crash", &mut rng);
    }
    let repaired = wait_for(args.deadline, || {
        let (sym, comps, dmin, ..) = overlay_shape(&mut members);
        sym && comps == 1 && dmin > 0
    })
    .map(|_| kill_start.elapsed());
    for _ in 0..args.broadcasts {
        row(&mut report, &mut members, "after repair", &mut rng);
    }
    let (sym, comps, dmin, dmean, dmax) = overlay_shape(&mut members);
    let _ = writeln!(report, "\n## {:.0} % of the members stopped at once ({} of {live_before})\n\n| measure | value |\n|---|---|", args.kill * 100.0, victims.len());
    let _ = writeln!(report, "| survivors' views one connected, symmetric graph again | {} after the stop |", fmt(repaired));
    let _ = writeln!(report, "| then: symmetric / components / active view min, mean, max | {sym} / {comps} / {dmin}, {dmean:.2}, {dmax} |");

    print!("{report}");
    if let Some(path) = args.out {
        std::fs::write(&path, &report).expect("write the report");
    }
    let all = members.local.live();
    members.local.stop(&all);
    drop(members); // the worker stops its members and exits
}
