//! Delivery lanes: received messages on their way from the data plane's reader threads to a
//! scheduler, where a `partisan_delivery` process decodes them and sends them on.
//!
//! Why: a reader that delivers a message itself decodes it on a thread the VM does not manage and
//! hands it over with `enif_send`, which from such a thread pays for thread-progress bookkeeping,
//! a message allocated for another thread to free, and often a wake-up of the receiver's
//! scheduler. In a stream of small messages that is most of the receiving side's work. A reader
//! that only queues the message, and one process that takes the queue in batches on a scheduler
//! (where the receivers run), moves the same messages with less CPU: measured A/B on 10 B
//! messages, 1.16–1.26× the rate at 0.77–0.86× the CPU per message with 1, 8 and 64 senders.
//!
//! A lone message is still delivered by its reader: the hop through a process would add ~20 µs
//! to a request-reply round trip. A message is queued when its lane holds messages, or when it
//! is small (below [`DIRECT_FROM`]), its lane saw another in the last [`LANE_GAP`] (a stream) and
//! that one went to another process; otherwise the reader delivers it. A large message gains
//! nothing from a batch, and neither does a stream to a single process: its receiver is awake
//! already, and a hop through another process only adds work (measured: one sender's 10 B
//! stream cost 1.2–1.4× the CPU per message through a lane).
//!
//! **Order.** All messages from one node use one lane (chosen by its name), and a reader delivers
//! directly only while its lane holds nothing undelivered, so the messages of a connection reach
//! their processes in the order they were read.
//!
//! **Schedulers.** A lane's process decodes only messages below [`DIRECT_FROM`] (up to 512 or
//! 1 MiB per call): a large one that arrives while its lane holds messages waits, on its reader,
//! for the lane to drain, and is then decoded there, off the schedulers.
//!
//! **Bounds.** A lane holds at most [`MAX_LANE_BYTES`] (payloads plus what each queued message
//! costs besides); a reader that finds it full waits (its connection's TCP window then slows the
//! sender) for up to [`FULL_WAIT`], then queues anyway and logs it. It waits outside the runtime's
//! worker (`block_in_place`), so the node's other connections, pings and writers keep running. A
//! lane without a process (none started yet, or its process is restarting) keeps its messages
//! for the next one; while no lane is registered, readers deliver everything themselves. When the
//! data plane stops ([`set_stopping`]), the lanes' processes take nothing more, waiting readers
//! queue at once instead, and what the lanes hold once the readers are gone is delivered by the
//! stopping call.

use bytes::Bytes;
use partisan_core::frame::Dest;
use partisan_net::lock::MutexExt;
use rustler::LocalPid;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// At most this many lanes (one per scheduler, see `partisan_delivery`).
pub const MAX_LANES: usize = 64;
/// A message is queued if its lane saw another this recently (a stream), even when empty.
const LANE_GAP: Duration = Duration::from_micros(20);
/// Messages at least this large are delivered by their reader whenever their lane is empty.
const DIRECT_FROM: usize = 16 * 1024;
/// Bytes a lane holds (see [`footprint`]) before its readers wait.
const MAX_LANE_BYTES: usize = 64 << 20;
/// How long a reader waits for room in a full lane before it queues anyway.
const FULL_WAIT: Duration = Duration::from_secs(10);

/// A received message waiting in a lane.
pub struct Pending {
    pub from: Arc<str>,
    pub dest: Dest,
    pub payload: Bytes,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Pending>,
    /// The [`footprint`] of `queue`.
    bytes: usize,
    /// Messages queued or taken by the process and not yet sent.
    undelivered: usize,
    /// When a message last went through the lane (queued or delivered by a reader).
    last_seen: Option<Instant>,
    /// A hash of that message's destination.
    last_dest: u64,
    process: Option<LocalPid>,
}

#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
    /// Signalled when a batch was delivered: readers waiting for room look again.
    room: Condvar,
}

static LANES: LazyLock<Vec<Lane>> = LazyLock::new(|| (0..MAX_LANES).map(|_| Lane::default()).collect());
/// Lanes in use (0: none registered, readers deliver everything).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Messages queued on a lane since the VM started (`lane_messages` in `partisan:stats()`).
static QUEUED: AtomicU64 = AtomicU64::new(0);

/// Set from `stop` to the next `start`: nobody drains the lanes then, so readers do not wait on
/// them.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Times a reader found its lane full and waited for room, since the VM started.
static FULL_WAITS: AtomicU64 = AtomicU64::new(0);

/// Messages queued on a lane (for the scheduler to deliver) since the VM started.
pub fn queued_total() -> u64 {
    QUEUED.load(Ordering::Relaxed)
}

/// Times a reader found its lane full and waited for room, since the VM started.
pub fn full_waits_total() -> u64 {
    FULL_WAITS.load(Ordering::Relaxed)
}

thread_local! {
    /// The last sender name seen on this reader thread, shared by its queued messages.
    static LAST_FROM: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// What a reader does with a message it offered.
pub enum Offer {
    /// Deliver it yourself (the lane is idle, or there are no lanes).
    Deliver(Bytes),
    /// Queued; send the lane's process a wake-up when given one.
    Queued(Option<LocalPid>),
}

/// The lane of messages from `from`.
fn lane_of(from: &str) -> Option<&'static Lane> {
    let active = ACTIVE.load(Ordering::Acquire);
    if active == 0 {
        return None;
    }
    Some(&LANES[(fnv(from.as_bytes()) % active as u64) as usize])
}

/// FNV-1a of `bytes` (cheap and stable for short names).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A hash of a destination (equal destinations, equal hashes).
fn hash(dest: &Dest) -> u64 {
    match dest {
        Dest::Pid(etf) => fnv(etf),
        Dest::Name(name) => fnv(name.as_bytes()),
        Dest::PidId { id, serial } => (u64::from(*id) << 32 | u64::from(*serial)).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        Dest::Reply { id } => id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1,
    }
}

/// What a queued message holds in memory: its payload (a slice of its read buffer) and its entry.
fn footprint(payload: &Bytes) -> usize {
    payload.len() + std::mem::size_of::<Pending>()
}

fn shared_name(from: &str) -> Arc<str> {
    LAST_FROM.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(name) if &**name == from => name.clone(),
            _ => {
                let name: Arc<str> = Arc::from(from);
                *last = Some(name.clone());
                name
            }
        }
    })
}

/// Queues a received message on its lane, or gives it back for the reader to deliver (see the
/// module doc). May wait for room, off the runtime's worker (see [`wait_for_room`]).
pub fn offer(from: &str, dest: &Dest, payload: Bytes) -> Offer {
    let Some(lane) = lane_of(from) else { return Offer::Deliver(payload) };
    let now = Instant::now();
    let mut state = lane.state.lock_unpoisoned();
    let dest_hash = hash(dest);
    let streaming = state.last_seen.is_some_and(|t| now.duration_since(t) < LANE_GAP);
    let same_dest = std::mem::replace(&mut state.last_dest, dest_hash) == dest_hash;
    state.last_seen = Some(now);
    // A large message gains nothing from a batch, nor does a stream to a single process (its
    // receiver is awake already: a hop through another process only adds work); either waits
    // only for the lane to be empty.
    if state.undelivered == 0 && (!streaming || same_dest || payload.len() >= DIRECT_FROM) {
        return Offer::Deliver(payload);
    }
    if payload.len() >= DIRECT_FROM {
        // Decoding a large term could hold a scheduler for milliseconds: the reader waits for
        // the lane to deliver what it holds (order), then decodes it on its own thread.
        let timed_out;
        (state, timed_out) = wait_for_room(lane, state, |s| s.undelivered > 0);
        if timed_out {
            tracing::warn!(from, "a delivery lane did not drain in 10 s; a large message may overtake the lane's");
        }
        // Still undelivered without a timeout: the data plane stops, and the stopping call
        // delivers the lane in order, this message with it.
        if state.undelivered == 0 || timed_out {
            return Offer::Deliver(payload);
        }
    } else if state.bytes > MAX_LANE_BYTES && !STOPPING.load(Ordering::Acquire) {
        FULL_WAITS.fetch_add(1, Ordering::Relaxed);
        let timed_out;
        (state, timed_out) = wait_for_room(lane, state, |s| s.bytes > MAX_LANE_BYTES);
        if timed_out {
            tracing::warn!(from, bytes = state.bytes, "a delivery lane stayed full for 10 s; queueing anyway");
        }
    }
    let wake = state.queue.is_empty().then_some(state.process).flatten();
    state.bytes += footprint(&payload);
    state.undelivered += 1;
    state.queue.push_back(Pending { from: shared_name(from), dest: dest.clone(), payload });
    drop(state);
    QUEUED.fetch_add(1, Ordering::Relaxed);
    Offer::Queued(wake)
}

/// Waits while `busy` holds of the lane and the data plane is not stopping, for at most
/// [`FULL_WAIT`]; true when that ran out. The wait leaves the runtime's worker to the node's
/// other tasks.
fn wait_for_room<'a>(
    lane: &'a Lane,
    state: MutexGuard<'a, LaneState>,
    mut busy: impl FnMut(&mut LaneState) -> bool,
) -> (MutexGuard<'a, LaneState>, bool) {
    let wait = || {
        lane.room
            .wait_timeout_while(state, FULL_WAIT, |s| busy(s) && !STOPPING.load(Ordering::Acquire))
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    // Readers run on the runtime's workers; anything else (none today) just waits.
    let (state, timeout) = match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
        _ => wait(),
    };
    (state, timeout.timed_out())
}

/// Marks the data plane as stopping (`stop`, until the next `start` clears it); waiting readers
/// look again. While it stops the lanes' processes take nothing (see `deliver_pending`), so a
/// reader must not wait for them.
pub fn set_stopping(stopping: bool) {
    STOPPING.store(stopping, Ordering::Release);
    for lane in LANES.iter() {
        // Under the lock: a reader between its check and its wait cannot miss the wake-up.
        let _state = lane.state.lock_unpoisoned();
        lane.room.notify_all();
    }
}

/// Registers `pid` as the process of lane `index` of `count`; true when messages wait for it.
pub fn register(index: usize, count: usize, pid: LocalPid) -> bool {
    let Some(lane) = LANES.get(index) else { return false };
    let mut state = lane.state.lock_unpoisoned();
    state.process = Some(pid);
    // Lanes register in order at start; the count is final once the last one has.
    if index + 1 == count {
        ACTIVE.store(count.min(MAX_LANES), Ordering::Release);
    }
    !state.queue.is_empty()
}

/// Takes up to `max_msgs` messages (and at least one) but at most `max_bytes` of payload off
/// lane `index`. They stay counted as undelivered until [`delivered`].
pub fn take(index: usize, max_msgs: usize, max_bytes: usize, out: &mut Vec<Pending>) {
    let Some(lane) = LANES.get(index) else { return };
    let mut state = lane.state.lock_unpoisoned();
    let (mut payload, mut held) = (0, 0);
    while out.len() < max_msgs {
        match state.queue.front() {
            Some(p) if out.is_empty() || payload + p.payload.len() <= max_bytes => {
                payload += p.payload.len();
                held += footprint(&p.payload);
                let p = state.queue.pop_front().expect("a front element");
                out.push(p);
            }
            _ => break,
        }
    }
    state.bytes -= held;
}

/// `count` messages taken from lane `index` were delivered (or dropped); true when more wait.
pub fn delivered(index: usize, count: usize) -> bool {
    let Some(lane) = LANES.get(index) else { return false };
    let more = {
        let mut state = lane.state.lock_unpoisoned();
        state.undelivered = state.undelivered.saturating_sub(count);
        !state.queue.is_empty()
    };
    lane.room.notify_all();
    more
}

/// Hands every lane's messages to `deliver`, batch by batch, until all lanes are empty: the
/// data plane stopped, and what its readers queued is delivered by the caller (the lanes'
/// processes take nothing once it is stopped, so the order holds).
pub fn drain_all(max_msgs: usize, max_bytes: usize, mut deliver: impl FnMut(&[Pending])) {
    let mut batch = Vec::with_capacity(max_msgs);
    for index in 0..MAX_LANES {
        loop {
            take(index, max_msgs, max_bytes, &mut batch);
            if batch.is_empty() {
                break;
            }
            deliver(&batch);
            delivered(index, batch.len());
            batch.clear();
        }
    }
}
