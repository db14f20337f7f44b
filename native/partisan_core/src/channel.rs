//! Named channels, their parallel connections, and which connection a message takes.
//!
//! Each channel has `parallelism` TCP connections to every peer. A message takes the connection
//! chosen by its affinity key — the `partition_key` when the sender gives one, else a hash of the
//! sending pid — so messages from one sender to one node keep their order (TCP keeps order on one
//! connection) while different senders spread over all connections.
//!
//! A *monotonic* channel carries state that supersedes itself (CRDT states, gauges): when a
//! message is queued behind an older one with the same [`MonotonicKey`], the older one is dropped
//! unsent. [`MonotonicQueue`] is that queue.
//!
//! ```
//! use partisan_core::channel::{ChannelSpec, ChannelTable};
//! let table = ChannelTable::new(vec![ChannelSpec::new("gossip", 4, false)]).unwrap();
//! let gossip = table.index_of("gossip").unwrap();
//! let conn = table.connection_for(gossip, 12345);
//! assert!(conn < 4);
//! assert_eq!(conn, table.connection_for(gossip, 12345)); // stable: order is kept per key
//! ```

use std::collections::{HashMap, VecDeque};

/// The channel every node has, named `undefined` as in Partisan's channels map.
pub const DEFAULT_CHANNEL: &str = "undefined";
/// The channel that carries membership (control) frames.
pub const MEMBERSHIP_CHANNEL: &str = "partisan_membership";

/// One channel's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub name: String,
    pub parallelism: u16,
    pub monotonic: bool,
}

impl ChannelSpec {
    pub fn new(name: &str, parallelism: u16, monotonic: bool) -> Self {
        ChannelSpec { name: name.to_owned(), parallelism, monotonic }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {0:?} has parallelism 0; it must be at least 1")]
    ZeroParallelism(String),
    #[error("channel {0:?} is configured twice")]
    Duplicate(String),
    #[error("channel name {0:?} is empty or longer than 255 bytes")]
    BadName(String),
}

/// The channels of a node, indexed for the hot path. The default and membership channels are
/// always present (added with parallelism 1 when the configuration does not name them).
#[derive(Debug, Clone)]
pub struct ChannelTable {
    specs: Vec<ChannelSpec>,
    by_name: HashMap<String, usize>,
}

impl ChannelTable {
    pub fn new(configured: Vec<ChannelSpec>) -> Result<Self, ChannelError> {
        let mut specs: Vec<ChannelSpec> = Vec::new();
        for spec in configured {
            if spec.parallelism == 0 {
                return Err(ChannelError::ZeroParallelism(spec.name));
            }
            if spec.name.is_empty() || spec.name.len() > 255 {
                return Err(ChannelError::BadName(spec.name));
            }
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(ChannelError::Duplicate(spec.name));
            }
            specs.push(spec);
        }
        for required in [DEFAULT_CHANNEL, MEMBERSHIP_CHANNEL] {
            if !specs.iter().any(|s| s.name == required) {
                specs.push(ChannelSpec::new(required, 1, false));
            }
        }
        let by_name = specs.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        Ok(ChannelTable { specs, by_name })
    }

    pub fn specs(&self) -> &[ChannelSpec] {
        &self.specs
    }

    pub fn get(&self, index: usize) -> &ChannelSpec {
        &self.specs[index]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn default_index(&self) -> usize {
        self.by_name[DEFAULT_CHANNEL]
    }

    pub fn membership_index(&self) -> usize {
        self.by_name[MEMBERSHIP_CHANNEL]
    }

    /// Whether this node serves connection `index` of channel `name` (handshake check).
    pub fn serves(&self, name: &str, index: u16) -> bool {
        self.index_of(name).is_some_and(|c| index < self.specs[c].parallelism)
    }

    /// The connection of `channel` that messages with affinity `key` take.
    pub fn connection_for(&self, channel: usize, key: u64) -> usize {
        affinity(key, self.specs[channel].parallelism as usize)
    }

    /// Every (channel, connection) pair a fully connected peer has.
    pub fn links(&self) -> impl Iterator<Item = (usize, u16)> + '_ {
        self.specs.iter().enumerate().flat_map(|(c, s)| (0..s.parallelism).map(move |i| (c, i)))
    }
}

/// Maps an affinity key onto one of `n` connections. The key is mixed first so that sequential
/// partition keys and pid hashes with common low bits still spread evenly.
pub fn affinity(key: u64, n: usize) -> usize {
    debug_assert!(n > 0);
    // splitmix64 finaliser
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n as u64) as usize
}

/// Identifies what a monotonic message supersedes: a message replaces a queued one with the same
/// destination process and the same affinity key (the `partition_key`, or the sender).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MonotonicKey {
    pub dest: Vec<u8>,
    pub affinity: u64,
}

/// A FIFO queue in which a newer item replaces a queued older item of the same key, keeping the
/// older item's place in line. Used by the writers of monotonic channels.
#[derive(Debug)]
pub struct MonotonicQueue<T> {
    order: VecDeque<(MonotonicKey, u64)>,
    latest: HashMap<MonotonicKey, (u64, T)>,
    next_seq: u64,
}

impl<T> Default for MonotonicQueue<T> {
    fn default() -> Self {
        MonotonicQueue { order: VecDeque::new(), latest: HashMap::new(), next_seq: 0 }
    }
}

impl<T> MonotonicQueue<T> {
    /// Queues `item`; returns the older queued item of the same key it replaced, if any.
    pub fn push(&mut self, key: MonotonicKey, item: T) -> Option<T> {
        if let Some(slot) = self.latest.get_mut(&key) {
            return Some(std::mem::replace(&mut slot.1, item));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key.clone(), seq));
        self.latest.insert(key, (seq, item));
        None
    }

    pub fn pop(&mut self) -> Option<T> {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.latest.get(&key).is_some_and(|(s, _)| *s == seq) {
                return self.latest.remove(&key).map(|(_, item)| item);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_adds_required_channels_and_rejects_bad_config() {
        let t = ChannelTable::new(vec![ChannelSpec::new("data", 3, false)]).unwrap();
        assert_eq!(t.specs().len(), 3);
        assert!(t.serves("data", 2) && !t.serves("data", 3) && !t.serves("nope", 0));
        assert!(t.serves(DEFAULT_CHANNEL, 0) && t.serves(MEMBERSHIP_CHANNEL, 0));
        assert_eq!(t.links().count(), 5);
        let t = ChannelTable::new(vec![ChannelSpec::new(DEFAULT_CHANNEL, 4, false)]).unwrap();
        assert_eq!(t.get(t.default_index()).parallelism, 4);
        assert_eq!(ChannelTable::new(vec![ChannelSpec::new("x", 0, false)]).unwrap_err(), ChannelError::ZeroParallelism("x".into()));
        let dup = vec![ChannelSpec::new("x", 1, false), ChannelSpec::new("x", 2, false)];
        assert_eq!(ChannelTable::new(dup).unwrap_err(), ChannelError::Duplicate("x".into()));
        assert!(matches!(ChannelTable::new(vec![ChannelSpec::new("", 1, false)]), Err(ChannelError::BadName(_))));
    }

    #[test]
    fn affinity_is_stable_and_spreads() {
        let mut counts = [0usize; 8];
        for key in 0..8000u64 {
            let c = affinity(key, 8);
            assert_eq!(c, affinity(key, 8));
            counts[c] += 1;
        }
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
        assert_eq!(affinity(u64::MAX, 1), 0);
    }

    #[test]
    fn monotonic_queue_replaces_in_place() {
        let k = |d: u8, a: u64| MonotonicKey { dest: vec![d], affinity: a };
        let mut q = MonotonicQueue::default();
        assert_eq!(q.push(k(1, 0), "a1"), None);
        assert_eq!(q.push(k(2, 0), "b1"), None);
        assert_eq!(q.push(k(1, 0), "a2"), Some("a1"));
        assert_eq!(q.push(k(1, 9), "c1"), None);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some("a2"));
        assert_eq!(q.pop(), Some("b1"));
        assert_eq!(q.push(k(1, 0), "a3"), None); // a new item after the old one was sent
        assert_eq!(q.pop(), Some("c1"));
        assert_eq!(q.pop(), Some("a3"));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }
}
