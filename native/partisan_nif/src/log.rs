//! Forwards the data plane's `tracing` events to Erlang's `logger`, each at its own level
//! (`ERROR` → `error`, `WARN` → `warning`, `INFO` → `info`, `DEBUG` and `TRACE` → `debug`).
//! Which levels are forwarded at all is `PARTISAN_LOG` (default `warn`); `logger`'s own level
//! then decides what is shown.
//!
//! Lines go through a channel to one forwarding thread, which sends
//! `{partisan_log, Level, Line}` to the events process; the events process calls `logger`. The
//! thread keeps `OwnedEnv` sends off the VM's scheduler threads whatever thread logged.
//!
//! Both hops are bounded, so a flood of warnings (the data plane rate-limits those a peer can
//! provoke, but not every line) can neither grow memory here nor the events process's mailbox:
//! the channel holds at most [`QUEUE`] lines (a line that does not fit is dropped), and the
//! thread forwards at most [`RATE`] lines a second (a burst of [`BURST`]); what is dropped is
//! counted and reported in one line when there is room again.

use partisan_net::lock::MutexExt;
use rustler::{Atom, Encoder, LocalPid, OwnedEnv};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the forwarding thread, at most.
const QUEUE: usize = 1024;
/// Lines forwarded to `logger` per second, at most, and the burst allowed above that.
const RATE: f64 = 20.0;
const BURST: f64 = 100.0;

/// Lines dropped since the last report (queue full or over the rate).
static DROPPED: AtomicU64 = AtomicU64::new(0);

mod atoms {
    rustler::atoms! { partisan_log, error, warning, info, debug }
}

/// `logger`'s level for a `tracing` level.
fn logger_level(level: Level) -> Atom {
    match level {
        Level::ERROR => atoms::error(),
        Level::WARN => atoms::warning(),
        Level::INFO => atoms::info(),
        Level::DEBUG | Level::TRACE => atoms::debug(),
    }
}

/// One formatted event and its level.
type Line = (Level, Vec<u8>);

static TARGET: Mutex<Option<LocalPid>> = Mutex::new(None);
static LINES: OnceLock<Mutex<SyncSender<Line>>> = OnceLock::new();

/// Installs the global subscriber once per VM (at NIF load).
pub fn init() {
    let (tx, rx) = sync_channel::<Line>(QUEUE);
    if LINES.set(Mutex::new(tx)).is_err() {
        return;
    }
    std::thread::Builder::new()
        .name("partisan-log".into())
        .spawn(move || {
            let mut env = OwnedEnv::new();
            let mut send = |level: Level, text: String| {
                let target = *TARGET.lock_unpoisoned();
                if let Some(pid) = target {
                    let _ = env.send_and_clear(&pid, |e| (atoms::partisan_log(), logger_level(level), text).encode(e));
                }
            };
            let mut bucket = Bucket { tokens: BURST, at: Instant::now() };
            loop {
                let line = match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(line) => Some(line),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let dropped = DROPPED.load(Ordering::Relaxed);
                if dropped > 0 && bucket.take() {
                    DROPPED.fetch_sub(dropped, Ordering::Relaxed);
                    send(Level::WARN, format!("{dropped} data plane log lines dropped (more than {RATE} a second)"));
                }
                if let Some((level, line)) = line {
                    if bucket.take() {
                        send(level, String::from_utf8_lossy(&line).trim_end().to_owned());
                    } else {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .expect("spawn log thread");
    let filter = std::env::var("PARTISAN_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_ansi(false)
        .without_time()
        .with_level(false) // it travels as logger's level
        .with_writer(Lines)
        .try_init();
}

/// A token bucket: [`RATE`] tokens a second, at most [`BURST`] saved up.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * RATE).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sets the process that receives log lines (the events process of the running node).
pub fn set_target(pid: LocalPid) {
    *TARGET.lock_unpoisoned() = Some(pid);
}

/// Makes one [`LineWriter`] per event, knowing the event's level.
struct Lines;

impl<'a> MakeWriter<'a> for Lines {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { level: Level::INFO, text: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter { level: *meta.level(), text: Vec::new() }
    }
}

/// Collects one formatted event; hands it to the forwarding thread when dropped.
struct LineWriter {
    level: Level,
    text: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if let Some(lines) = LINES.get() {
            let sent = lines.lock_unpoisoned().try_send((self.level, std::mem::take(&mut self.text)));
            if let Err(TrySendError::Full(_)) = sent {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
