//! Forwards the data plane's `tracing` events (warnings and errors) to Erlang's `logger`.
//!
//! Lines go through a channel to one forwarding thread, which sends
//! `{partisan_log, Level, Line}` to the events process; the events process calls `logger`. The
//! thread keeps `OwnedEnv` sends off the VM's scheduler threads whatever thread logged.

use rustler::{Encoder, LocalPid, OwnedEnv};
use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

mod atoms {
    rustler::atoms! { partisan_log }
}

static TARGET: Mutex<Option<LocalPid>> = Mutex::new(None);
static LINES: OnceLock<Mutex<Sender<Vec<u8>>>> = OnceLock::new();

/// Installs the global subscriber once per VM (at NIF load).
pub fn init() {
    let (tx, rx) = channel::<Vec<u8>>();
    if LINES.set(Mutex::new(tx)).is_err() {
        return;
    }
    std::thread::Builder::new()
        .name("partisan-log".into())
        .spawn(move || {
            let mut env = OwnedEnv::new();
            for line in rx {
                let target = *TARGET.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(pid) = target {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    let _ = env.send_and_clear(&pid, |e| (atoms::partisan_log(), text).encode(e));
                }
            }
        })
        .expect("spawn log thread");
    let filter = std::env::var("PARTISAN_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_ansi(false)
        .without_time()
        .with_writer(|| LineWriter(Vec::new()))
        .try_init();
}

/// Sets the process that receives log lines (the events process of the running node).
pub fn set_target(pid: LocalPid) {
    *TARGET.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
}

struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if let Some(lines) = LINES.get() {
            let _ = lines.lock().unwrap_or_else(|e| e.into_inner()).send(std::mem::take(&mut self.0));
        }
    }
}
