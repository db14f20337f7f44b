//! `partisan_linkemu --target HOST:PORT [--listen HOST:PORT] [--delay-ms F] [--rate-mbit F]
//!  [--window BYTES] [--chunk BYTES] [--exit-on-stdin-eof]`
//!
//! Prints `listening HOST:PORT` on stdout once bound (use `--listen 127.0.0.1:0` for a free
//! port), then forwards until killed. With `--exit-on-stdin-eof` it exits when stdin closes and
//! answers a `stats` line on stdin with `stats accepted=N bytes=N failed_connects=N`.
use std::net::SocketAddr;
use std::process::exit;
use std::time::Duration;

use partisan_linkemu::{LinkConfig, Proxy};

fn usage(msg: &str) -> ! {
    eprintln!("partisan_linkemu: {msg}");
    eprintln!(
        "usage: partisan_linkemu --target HOST:PORT [--listen HOST:PORT] [--delay-ms F] \
         [--rate-mbit F] [--window BYTES] [--chunk BYTES] [--exit-on-stdin-eof]"
    );
    exit(2)
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut target: Option<SocketAddr> = None;
    let mut cfg = LinkConfig::default();
    let mut stdin_eof = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--listen" => listen = val().parse().unwrap_or_else(|_| usage("bad --listen")),
            "--target" => target = Some(val().parse().unwrap_or_else(|_| usage("bad --target"))),
            "--delay-ms" => {
                let ms: f64 = val().parse().unwrap_or_else(|_| usage("bad --delay-ms"));
                if !(0.0..=60_000.0).contains(&ms) {
                    usage("--delay-ms out of range");
                }
                cfg.delay = Duration::from_secs_f64(ms / 1000.0);
            }
            "--rate-mbit" => {
                let m: f64 = val().parse().unwrap_or_else(|_| usage("bad --rate-mbit"));
                cfg.rate = if m > 0.0 { Some((m * 1e6 / 8.0) as u64) } else { None };
            }
            "--window" => cfg.window = val().parse().unwrap_or_else(|_| usage("bad --window")),
            "--chunk" => cfg.chunk = val().parse().unwrap_or_else(|_| usage("bad --chunk")),
            "--exit-on-stdin-eof" => stdin_eof = true,
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let target = target.unwrap_or_else(|| usage("--target is required"));
    if cfg.window == 0 || cfg.chunk == 0 || cfg.window > u32::MAX as usize {
        usage("--window and --chunk must be in 1..2^32");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("linkemu")
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let proxy = match Proxy::bind(listen, target, cfg.clone()).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("partisan_linkemu: cannot listen on {listen}: {e}");
                exit(1)
            }
        };
        println!("listening {}", proxy.local_addr().unwrap());
        eprintln!(
            "partisan_linkemu: {} -> {target}, delay {:?}, rate {}, window {} B",
            proxy.local_addr().unwrap(),
            cfg.delay,
            cfg.rate.map_or("unlimited".into(), |r| format!("{} B/s", r)),
            cfg.window
        );
        if stdin_eof {
            // Control on stdin: `stats` prints the counters; EOF (the owner went away) exits.
            let stats = proxy.stats.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.trim() == "stats" {
                        println!(
                            "stats accepted={} bytes={} failed_connects={}",
                            stats.accepted.load(Relaxed),
                            stats.bytes_forwarded.load(Relaxed),
                            stats.failed_connects.load(Relaxed)
                        );
                    }
                }
                exit(0);
            });
        }
        if let Err(e) = proxy.run().await {
            eprintln!("partisan_linkemu: accept failed: {e}");
            exit(1);
        }
    });
}
