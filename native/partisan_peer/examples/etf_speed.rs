//! How fast `erlang-term` decodes and encodes the terms a peer typically receives, to compare
//! with the BEAM's own `binary_to_term`/`term_to_binary` (bench/bench_limits.erl measures those):
//! `cargo run --release -p partisan_peer --example etf_speed`.

use partisan_peer::etf::{atom, decode, encode, Pid, Term};
use std::time::{Duration, Instant};

fn rate(what: &str, bytes: &[u8]) {
    let term = decode(bytes).expect("a valid term");
    let (mut n, start) = (0u64, Instant::now());
    while start.elapsed() < Duration::from_millis(500) {
        std::hint::black_box(decode(std::hint::black_box(bytes)).unwrap());
        n += 1;
    }
    let decode_rate = n as f64 / start.elapsed().as_secs_f64();
    let (mut m, start) = (0u64, Instant::now());
    while start.elapsed() < Duration::from_millis(500) {
        std::hint::black_box(encode(std::hint::black_box(&term)));
        m += 1;
    }
    let encode_rate = m as f64 / start.elapsed().as_secs_f64();
    println!("| {what} | {} B | {decode_rate:.0} | {encode_rate:.0} |", bytes.len());
}

fn main() {
    let pid = Pid { node: "a@127.0.0.1".into(), id: 85, serial: 0, creation: 1_700_000_001 };
    let small = encode(&Term::SmallTuple(vec![pid.to_term(), Term::SmallTuple(vec![atom("ping"), Term::Int(12345)])]));
    let map = encode(&Term::Map((0..32).map(|i| (atom(&format!("key{i}")), Term::Binary(vec![i as u8; 24]))).collect()));
    let big = encode(&Term::Binary(vec![7; 1 << 20]));
    println!("| term | size | decodes/s | encodes/s |\n|---|---:|---:|---:|");
    rate("{Pid, {ping, 12345}}", &small);
    rate("map of 32 atoms -> 24 B binaries", &map);
    rate("1 MiB binary", &big);
    let tagged = encode(&Term::SmallTuple(vec![atom("chunk"), Term::Binary(vec![7; 1 << 20])]));
    rate("{chunk, 1 MiB binary}", &tagged);
}
