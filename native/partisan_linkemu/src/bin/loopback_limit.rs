//! `loopback_limit`: how many bytes per second plain TCP moves over this machine's loopback,
//! the ceiling `make bench-throughput` puts its 1 MiB rows against (issue: "≥ 80 % of the
//! loopback limit measured in the same run").
//!
//! Why a separate program: the limit must not include any BEAM or partisan cost, only the
//! kernel's: `connections` pairs of sockets, a thread per side, the writer writing `write_size`
//! buffers as fast as the socket takes them, the reader reading into a buffer of that size.
//! Bytes read during the measured window (after a warm-up) give the rate.
//!
//! ```text
//! loopback_limit --connections 8 --write-size 1048576 --warmup-ms 300 --millis 1000
//! bytes_per_sec=4812345678.0 connections=8 write_size=1048576 millis=1000
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Args {
    connections: usize,
    write_size: usize,
    warmup: Duration,
    measured: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { connections: 1, write_size: 1 << 20, warmup: Duration::from_millis(300), measured: Duration::from_millis(1000) };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value.parse().map_err(|_| format!("{flag}: not a non-negative integer: {value}"))?;
        match flag.as_str() {
            "--connections" if (1..=64).contains(&number) => args.connections = number as usize,
            "--write-size" if (1..=(64 << 20)).contains(&number) => args.write_size = number as usize,
            "--warmup-ms" if number <= 60_000 => args.warmup = Duration::from_millis(number),
            "--millis" if (1..=60_000).contains(&number) => args.measured = Duration::from_millis(number),
            _ => return Err(format!("unknown flag or value out of range: {flag} {value}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loopback_limit: {e}\nusage: loopback_limit [--connections 1..64] [--write-size BYTES] [--warmup-ms MS] [--millis MS]");
            std::process::exit(64);
        }
    };
    match run(&args) {
        Ok(rate) => println!(
            "bytes_per_sec={rate:.1} connections={} write_size={} millis={}",
            args.connections,
            args.write_size,
            args.measured.as_millis()
        ),
        Err(e) => {
            eprintln!("loopback_limit: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the pairs and returns the bytes per second read during the measured window.
fn run(args: &Args) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let read_total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..args.connections {
        let mut writer = TcpStream::connect(addr)?;
        let (mut reader, _) = listener.accept()?;
        let (stop, size) = (stop.clone(), args.write_size);
        threads.push(thread::spawn(move || {
            let buf = vec![0x5a_u8; size];
            while !stop.load(Ordering::Relaxed) {
                if writer.write_all(&buf).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(Shutdown::Write);
        }));
        let (total, size) = (read_total.clone(), args.write_size);
        threads.push(thread::spawn(move || {
            let mut buf = vec![0_u8; size];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                total.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    thread::sleep(args.warmup);
    let (start, before) = (Instant::now(), read_total.load(Ordering::Relaxed));
    thread::sleep(args.measured);
    let (elapsed, after) = (start.elapsed(), read_total.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok((after - before) as f64 / elapsed.as_secs_f64())
}
