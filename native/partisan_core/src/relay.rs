//! Transitive forwarding: a message for a node that is not a neighbour travels through the
//! overlay (`forward_message(..., #{transitive => true})`).
//!
//! Partial-view overlays (HyParView, client-server) do not link every pair of nodes. A relayed
//! message carries its origin, an id unique at that origin, a hop budget and the target node.
//! Each node decides with [`RelayState::decide`]: deliver it (it is the target), pass it straight
//! to the target (a neighbour), or flood it to its other neighbours with one hop less. Every node
//! remembers the (origin, id) pairs it has seen, in a bounded cache, so a message crosses each
//! link at most once and is delivered at most once, whatever the cycles of the overlay.
//!
//! ```
//! use partisan_core::relay::{RelayDecision, RelayState};
//! let mut b = RelayState::new("b", 1024);
//! let neighbours = vec!["a".to_string(), "c".to_string(), "d".to_string()];
//! // a's message for d reaches b: d is b's neighbour, so it goes there only
//! assert_eq!(b.decide("a", 1, 8, "d", "a", &neighbours), RelayDecision::Forward { to: vec!["d".into()], hops_left: 7 });
//! // the same message again (another path) is dropped
//! assert_eq!(b.decide("a", 1, 8, "d", "c", &neighbours), RelayDecision::Drop);
//! ```

use crate::frame::RelayBody;
use std::collections::{HashSet, VecDeque};

/// Hop budget of a new relayed message: enough for the diameter of a HyParView overlay of
/// tens of thousands of nodes (about log(N) / log(active_max_size - 1)).
pub const DEFAULT_HOPS: u8 = 16;

/// A message relayed through the overlay (the fields of [`crate::frame::Frame::Relay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub origin: String,
    /// Unique per origin.
    pub id: u64,
    /// Hops it may still take.
    pub hops: u8,
    pub target: String,
    pub body: RelayBody,
}

/// What to do with a relayed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayDecision {
    /// This node is the target.
    Deliver,
    /// Send it on to these neighbours with this many hops left.
    Forward { to: Vec<String>, hops_left: u8 },
    /// Seen before, or out of hops.
    Drop,
}

/// The seen-cache of one node.
#[derive(Debug, Clone)]
pub struct RelayState {
    me: String,
    seen: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
    capacity: usize,
}

impl RelayState {
    pub fn new(me: &str, capacity: usize) -> Self {
        RelayState { me: me.to_owned(), seen: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Decides for message `id` of `origin`, received from `from` (this node itself for a
    /// message it originates) with `hops` left, for `target`, given the current neighbours.
    pub fn decide(&mut self, origin: &str, id: u64, hops: u8, target: &str, from: &str, neighbours: &[String]) -> RelayDecision {
        let key = (origin.to_owned(), id);
        if !self.seen.insert(key.clone()) {
            return RelayDecision::Drop;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if target == self.me {
            return RelayDecision::Deliver;
        }
        if hops == 0 {
            return RelayDecision::Drop;
        }
        let to: Vec<String> = if neighbours.iter().any(|n| n == target) {
            vec![target.to_owned()]
        } else {
            neighbours.iter().filter(|n| *n != from && *n != origin).cloned().collect()
        };
        if to.is_empty() {
            RelayDecision::Drop
        } else {
            RelayDecision::Forward { to, hops_left: hops - 1 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn target_delivers_once() {
        let mut d = RelayState::new("d", 16);
        assert_eq!(d.decide("a", 7, 3, "d", "b", &names(&["b", "c"])), RelayDecision::Deliver);
        assert_eq!(d.decide("a", 7, 3, "d", "c", &names(&["b", "c"])), RelayDecision::Drop);
        assert_eq!(d.decide("x", 7, 3, "d", "c", &names(&["b", "c"])), RelayDecision::Deliver, "ids are per origin");
    }

    #[test]
    fn floods_except_back_and_respects_hops() {
        let mut b = RelayState::new("b", 16);
        let n = names(&["a", "c", "e"]);
        assert_eq!(b.decide("a", 1, 2, "z", "a", &n), RelayDecision::Forward { to: names(&["c", "e"]), hops_left: 1 });
        assert_eq!(b.decide("a", 2, 0, "z", "a", &n), RelayDecision::Drop);
        assert_eq!(b.decide("a", 3, 5, "z", "a", &names(&["a"])), RelayDecision::Drop, "nowhere to go");
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let mut b = RelayState::new("b", 2);
        let n = names(&["c"]);
        for id in 0..3 {
            assert_ne!(b.decide("a", id, 5, "z", "a", &n), RelayDecision::Drop);
        }
        assert_eq!(b.seen.len(), 2);
        assert_ne!(b.decide("a", 0, 5, "z", "a", &n), RelayDecision::Drop, "id 0 was evicted");
    }

    /// On a ring of 20 nodes (every node sees only its two neighbours), a relayed message from
    /// node 0 reaches node 10 exactly once, and no link carries it twice.
    #[test]
    fn reaches_a_distant_node_once_over_a_ring() {
        let n = 20;
        let name = |i: usize| format!("n{i}");
        let neighbours = |i: usize| vec![name((i + 1) % n), name((i + n - 1) % n)];
        let mut states: BTreeMap<String, RelayState> = (0..n).map(|i| (name(i), RelayState::new(&name(i), 64))).collect();
        let mut queue = VecDeque::new();
        let mut sends = HashSet::new();
        let mut delivered = 0;
        let origin = name(0);
        match states.get_mut(&origin).unwrap().decide(&origin, 1, DEFAULT_HOPS, &name(10), &origin, &neighbours(0)) {
            RelayDecision::Forward { to, hops_left } => to.into_iter().for_each(|t| queue.push_back((origin.clone(), t, hops_left))),
            other => panic!("{other:?}"),
        }
        while let Some((from, at, hops)) = queue.pop_front() {
            assert!(sends.insert((from.clone(), at.clone())), "link {from}->{at} used twice");
            let i: usize = at[1..].parse().unwrap();
            match states.get_mut(&at).unwrap().decide(&origin, 1, hops, &name(10), &from, &neighbours(i)) {
                RelayDecision::Deliver => delivered += 1,
                RelayDecision::Forward { to, hops_left } => to.into_iter().for_each(|t| queue.push_back((at.clone(), t, hops_left))),
                RelayDecision::Drop => {}
            }
        }
        assert_eq!(delivered, 1);
    }
}
