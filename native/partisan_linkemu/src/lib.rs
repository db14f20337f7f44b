//! A user-space TCP link emulator for the benchmarks (`netem` is not available here).
//!
//! One [`Proxy`] listens on one address and forwards every accepted connection to one target.
//! Each direction of each connection is a *link* with
//!
//! * a fixed one-way **delay**: a chunk read at time `t` is written out at `t + delay`
//!   (plus its serialization time when a bandwidth cap is set);
//! * an optional **bandwidth cap**: chunks leave the link one after the other at `rate` bytes/s;
//! * a bounded **window**: at most `window` bytes may be "in flight" in one direction. A chunk
//!   counts from the moment it is read until one delay *after* it was delivered (the time its
//!   acknowledgement would take to come back), so a single connection can carry at most
//!   `window / RTT` bytes per second, as TCP with that window would. When the window is full
//!   the proxy stops reading from the source, the kernel buffers fill up and the sender blocks:
//!   backpressure reaches the sender and nothing is swallowed without bound.
//!
//! Timing: tokio's timer has a 1 ms granularity, far too coarse for a 0.5 ms one-way delay, so
//! deadlines are served by a dedicated timer thread that sleeps with the OS's (µs-precise)
//! condition-variable timeouts and wakes the waiting task through a oneshot channel.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Parameters of one emulated link (applied to both directions of every connection).
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// One-way delay added to every byte.
    pub delay: Duration,
    /// Bandwidth cap in bytes per second; `None` = unlimited.
    pub rate: Option<u64>,
    /// Bytes that may be in flight per direction of one connection (see the module doc).
    pub window: usize,
    /// Largest chunk read from the source at once.
    pub chunk: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { delay: Duration::ZERO, rate: None, window: 8 << 20, chunk: 64 << 10 }
    }
}

/// Counters of a running proxy.
#[derive(Default, Debug)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub failed_connects: AtomicU64,
}

/// A listener that forwards to `target` through emulated links.
pub struct Proxy {
    listener: TcpListener,
    target: SocketAddr,
    cfg: LinkConfig,
    pub stats: Arc<Stats>,
}

impl Proxy {
    pub async fn bind(listen: SocketAddr, target: SocketAddr, cfg: LinkConfig) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Proxy { listener, target, cfg, stats: Arc::new(Stats::default()) })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and forwards connections until the task is dropped.
    pub async fn run(self) -> io::Result<()> {
        loop {
            let (client, _) = self.listener.accept().await?;
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let (target, cfg, stats) = (self.target, self.cfg.clone(), self.stats.clone());
            tokio::spawn(async move {
                let server = match TcpStream::connect(target).await {
                    Ok(s) => s,
                    Err(_) => {
                        stats.failed_connects.fetch_add(1, Ordering::Relaxed);
                        return; // dropping `client` closes it: the dialer sees a failed connect
                    }
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = tokio::spawn(link(cr, sw, cfg.clone(), stats.clone()));
                let down = tokio::spawn(link(sr, cw, cfg, stats));
                let _ = tokio::join!(up, down);
            });
        }
    }
}

struct Chunk {
    data: Vec<u8>,
    due: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// One direction of one connection: reads from `src`, delays, writes to `dst`. EOF and errors
/// are forwarded as a shutdown of the write side once everything before them was delivered.
pub async fn link<R, W>(mut src: R, mut dst: W, cfg: LinkConfig, stats: Arc<Stats>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let window = Arc::new(Semaphore::new(cfg.window.max(1)));
    let chunk_max = cfg.chunk.clamp(1, cfg.window.max(1));
    // The queue is bounded by the window (in bytes); the channel bound only caps the count.
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    let delay = cfg.delay;
    let rate = cfg.rate;
    let reader = tokio::spawn(async move {
        let mut tx_free = Instant::now(); // when the emulated wire is free again (rate cap)
        loop {
            // Wait for window space for a full chunk before reading: stop reading when full.
            let Ok(permit) = window.clone().acquire_many_owned(chunk_max as u32).await else { return };
            let mut buf = vec![0u8; chunk_max];
            let n = match src.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.truncate(n);
            let mut permit = permit;
            if n < chunk_max {
                // Give back the unused part of the reservation.
                let used = permit.split(n).expect("n < reserved");
                drop(permit);
                permit = used;
            }
            let now = Instant::now();
            let sent = match rate {
                Some(r) if r > 0 => {
                    let start = tx_free.max(now);
                    tx_free = start + Duration::from_secs_f64(n as f64 / r as f64);
                    tx_free
                }
                _ => now,
            };
            if tx.send(Chunk { data: buf, due: sent + delay, permit }).is_err() {
                return;
            }
        }
    });
    while let Some(c) = rx.recv().await {
        sleep_until(c.due).await;
        if dst.write_all(&c.data).await.is_err() {
            break;
        }
        stats.bytes_forwarded.fetch_add(c.data.len() as u64, Ordering::Relaxed);
        // The bytes leave the window when their acknowledgement would be back.
        let permit = c.permit;
        if delay.is_zero() {
            drop(permit);
        } else {
            let back = Instant::now() + delay;
            tokio::spawn(async move {
                sleep_until(back).await;
                drop(permit);
            });
        }
    }
    reader.abort();
    let _ = dst.shutdown().await;
}

// -- precise timer ------------------------------------------------------------------------------

struct Entry {
    due: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}
impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    cv: Condvar,
}

fn timer() -> &'static Arc<Timer> {
    static T: OnceLock<Arc<Timer>> = OnceLock::new();
    T.get_or_init(|| {
        let t = Arc::new(Timer { heap: Mutex::new((BinaryHeap::new(), 0)), cv: Condvar::new() });
        let t2 = t.clone();
        std::thread::Builder::new()
            .name("linkemu-timer".into())
            .spawn(move || timer_loop(&t2))
            .expect("timer thread");
        t
    })
}

/// How early the timer thread fires: the hand-off to the waiting task (oneshot, tokio wake-up,
/// the write syscall) takes about this long, so the bytes leave on time.
const HANDOFF: Duration = Duration::from_micros(40);
/// The last stretch before a deadline is spun rather than slept (OS sleeps overshoot).
const SPIN: Duration = Duration::from_micros(60);

fn timer_loop(t: &Timer) {
    // Default timer slack is 50 µs; ask for 1 µs so condition-variable timeouts are precise.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut g = t.heap.lock().unwrap();
    loop {
        let now = Instant::now();
        while g.0.peek().is_some_and(|Reverse(e)| e.due <= now + HANDOFF) {
            let Reverse(e) = g.0.pop().unwrap();
            let _ = e.tx.send(());
        }
        g = match g.0.peek() {
            Some(Reverse(e)) => {
                let fire = e.due - HANDOFF;
                let wait = fire.saturating_duration_since(now);
                if wait <= SPIN {
                    drop(g);
                    while Instant::now() < fire {
                        std::hint::spin_loop();
                    }
                    t.heap.lock().unwrap()
                } else {
                    t.cv.wait_timeout(g, wait - SPIN).unwrap().0
                }
            }
            None => t.cv.wait(g).unwrap(),
        };
    }
}

/// Sleeps until `due` with sub-millisecond precision (tokio's own timer rounds up to 1 ms).
pub async fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due <= now {
        return;
    }
    // Long waits: let tokio do the bulk, the timer thread the last 2 ms.
    if due - now > Duration::from_millis(3) {
        tokio::time::sleep_until((due - Duration::from_millis(2)).into()).await;
    }
    if due <= Instant::now() {
        return;
    }
    let (tx, rx) = oneshot::channel();
    let t = timer();
    {
        let mut g = t.heap.lock().unwrap();
        let seq = g.1;
        g.1 += 1;
        let earliest = g.0.peek().is_none_or(|Reverse(e)| due < e.due);
        g.0.push(Reverse(Entry { due, seq, tx }));
        if earliest {
            t.cv.notify_one();
        }
    }
    let _ = rx.await;
}
