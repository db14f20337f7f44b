//! Aggregated reports of lost messages and failed handshakes, for the events process.
//!
//! A flood (a peer sending garbage, a sender hammering a full queue) must not turn into one
//! Erlang message per dropped frame. Each occurrence adds to a count keyed by what happened and
//! to whom; the first one arms a timer, and when it fires (at most [`REPORT_INTERVAL`] later)
//! every count is handed to the sink as one [`Event::Dropped`] or [`Event::AuthFailed`] and the
//! table is emptied. So the events process receives at most one message per key and interval,
//! and nothing at all while nothing happens. The exact totals stay in [`crate::Stats`].
//!
//! Keys are bounded: past [`MAX_KEYS`] distinct keys in one interval (a scan from many source
//! addresses), further occurrences are counted under a key without the peer (`node: None`,
//! `peer: "other"`).

use crate::lock::MutexExt;
use crate::{Event, Sink};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long counts gather before they are reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Distinct keys one interval may hold before peers are folded together.
pub const MAX_KEYS: usize = 1024;

/// Why messages were lost or refused (the `reason` of `[partisan, message, dropped]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A send found no connection to the node on that channel.
    NotConnected,
    /// A send found the connection's queue full (`max_queue_bytes`).
    QueueFull,
    /// A received message named no live local process (or an old incarnation's pid).
    Undeliverable,
    /// A received message was not a valid term.
    Undecodable,
    /// An answer arrived for a call that no longer waits.
    LateReply,
    /// Messages accepted by a send were still queued when their connection closed.
    UndeliveredOnClose,
    /// Messages sent with `ack` and not acknowledged when their destination node left the
    /// membership.
    DestinationRemoved,
    /// Messages sent with `ack` through the overlay whose destination acknowledged nothing for
    /// `give_up_after` (see `partisan_core::relay_ack`).
    Unacknowledged,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotConnected => "not_connected",
            DropReason::QueueFull => "queue_full",
            DropReason::Undeliverable => "undeliverable",
            DropReason::Undecodable => "undecodable",
            DropReason::LateReply => "late_reply",
            DropReason::UndeliveredOnClose => "undelivered_on_close",
            DropReason::DestinationRemoved => "destination_removed",
            DropReason::Unacknowledged => "unacknowledged",
        }
    }
}

/// Which side of a handshake failed to authenticate the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A connection this node accepted (the peer is its source address).
    Inbound,
    /// A connection this node dialed (the peer is the node it dialed).
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Dropped { reason: DropReason, node: Option<String>, channel: Option<usize> },
    AuthFailed { direction: Direction, peer: String, reason: &'static str },
}

impl Key {
    /// The same key without its peer.
    fn folded(self) -> Key {
        match self {
            Key::Dropped { reason, .. } => Key::Dropped { reason, node: None, channel: None },
            Key::AuthFailed { direction, reason, .. } => Key::AuthFailed { direction, peer: "other".into(), reason },
        }
    }
}

pub(crate) struct Reports {
    counts: Mutex<HashMap<Key, u64>>,
    armed: AtomicBool,
    handle: tokio::runtime::Handle,
    sink: Arc<dyn Sink>,
    channels: Vec<String>,
}

impl Reports {
    pub(crate) fn new(handle: tokio::runtime::Handle, sink: Arc<dyn Sink>, channels: Vec<String>) -> Arc<Self> {
        Arc::new(Reports { counts: Mutex::new(HashMap::new()), armed: AtomicBool::new(false), handle, sink, channels })
    }

    /// Counts `n` occurrences of `key`; reported within [`REPORT_INTERVAL`].
    pub(crate) fn add(self: &Arc<Self>, key: Key, n: u64) {
        if n == 0 {
            return;
        }
        {
            let mut counts = self.counts.lock_unpoisoned();
            let key = if counts.len() >= MAX_KEYS && !counts.contains_key(&key) { key.folded() } else { key };
            *counts.entry(key).or_insert(0) += n;
        }
        if !self.armed.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            // From any thread (a BEAM scheduler calling send, a reader): the runtime runs it. Once
            // the runtime is shut down the task never runs, and nothing is reported any more.
            self.handle.spawn(async move {
                tokio::time::sleep(REPORT_INTERVAL).await;
                me.flush();
            });
        }
    }

    /// Hands every count to the sink and empties the table.
    pub(crate) fn flush(&self) {
        // Disarm first: an occurrence counted from now on arms the next report; one counted
        // before the swap below is in this one.
        self.armed.store(false, Ordering::Release);
        let counts = std::mem::take(&mut *self.counts.lock_unpoisoned());
        for (key, count) in counts {
            let event = match key {
                Key::Dropped { reason, node, channel } => Event::Dropped {
                    reason,
                    node,
                    channel: channel.and_then(|c| self.channels.get(c).cloned()),
                    count,
                },
                Key::AuthFailed { direction, peer, reason } => Event::AuthFailed { direction, peer, reason, count },
            };
            self.sink.event(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeliverError;
    use bytes::Bytes;
    use partisan_core::frame::Dest;

    struct Collect(Mutex<Vec<Event>>);

    impl Sink for Collect {
        fn deliver(&self, _: &str, _: &Dest, _: Bytes) -> Result<(), DeliverError> {
            Ok(())
        }
        fn event(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
    }

    fn dropped(node: &str) -> Key {
        Key::Dropped { reason: DropReason::QueueFull, node: Some(node.into()), channel: Some(0) }
    }

    #[test]
    fn a_flood_is_one_event_per_key_with_the_exact_count() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sink = Arc::new(Collect(Mutex::new(vec![])));
        let reports = Reports::new(rt.handle().clone(), sink.clone(), vec!["undefined".into()]);
        for _ in 0..100_000 {
            reports.add(dropped("a@h"), 1);
        }
        reports.add(dropped("b@h"), 3);
        rt.block_on(async { tokio::time::sleep(REPORT_INTERVAL + Duration::from_millis(200)).await });
        let mut events = sink.0.lock().unwrap().clone();
        events.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            events,
            vec![
                Event::Dropped { reason: DropReason::QueueFull, node: Some("a@h".into()), channel: Some("undefined".into()), count: 100_000 },
                Event::Dropped { reason: DropReason::QueueFull, node: Some("b@h".into()), channel: Some("undefined".into()), count: 3 },
            ]
        );
        // Quiet: nothing more is reported; the next occurrence arms a new report.
        rt.block_on(async { tokio::time::sleep(REPORT_INTERVAL + Duration::from_millis(200)).await });
        assert_eq!(sink.0.lock().unwrap().len(), 2);
        reports.add(dropped("a@h"), 1);
        rt.block_on(async { tokio::time::sleep(REPORT_INTERVAL + Duration::from_millis(200)).await });
        assert_eq!(sink.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn peers_beyond_the_key_bound_are_folded() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sink = Arc::new(Collect(Mutex::new(vec![])));
        let reports = Reports::new(rt.handle().clone(), sink.clone(), vec![]);
        for i in 0..MAX_KEYS + 500 {
            reports.add(Key::AuthFailed { direction: Direction::Inbound, peer: format!("10.0.{}.{}", i / 256, i % 256), reason: "bad_proof" }, 1);
        }
        reports.flush();
        let events = sink.0.lock().unwrap().clone();
        assert_eq!(events.len(), MAX_KEYS + 1);
        let total: u64 = events.iter().map(|e| match e { Event::AuthFailed { count, .. } => *count, _ => 0 }).sum();
        assert_eq!(total, (MAX_KEYS + 500) as u64);
        assert!(events.contains(&Event::AuthFailed { direction: Direction::Inbound, peer: "other".into(), reason: "bad_proof", count: 500 }));
    }
}
