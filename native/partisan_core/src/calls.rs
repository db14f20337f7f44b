//! The callers of one node that wait for an answer from another node.
//!
//! A remote `partisan_gen_server:call` costs one round trip: the caller registers here, sends
//! its request with the id it got, and the remote side sends the answer to
//! [`crate::frame::Dest::Reply`] with that id. The table is what makes the answer safe to
//! deliver:
//!
//! - **No late replies.** A caller that gave up (timeout) [`cancels`](CallTable::cancel) its
//!   entry; an answer that arrives afterwards finds nothing and is dropped, as OTP's aliases drop
//!   late replies. A `cancel` that returns `false` means the answer was already taken for
//!   delivery, so the caller can wait for it instead of reporting a timeout.
//! - **Only the called node answers.** [`take`](CallTable::take) checks that the answer comes
//!   from the node the call went to, so a peer cannot answer calls made to another node.
//! - **Node loss ends every wait.** [`fail_node`](CallTable::fail_node) hands back the waiters
//!   of a node that is gone, for the shell to tell them (`noconnection`).
//!
//! Ids start at a random offset chosen by the shell, so an answer meant for an earlier
//! incarnation of this node finds no waiter instead of a stranger's.
//!
//! The waiter type is the shell's: the NIF keeps a pid and the caller's tag there.
//!
//! ```
//! use partisan_core::calls::CallTable;
//!
//! let mut calls: CallTable<&str> = CallTable::new(1000);
//! let id = calls.register("b@h", "caller-1");
//! assert_eq!(calls.take(id, "c@h"), None); // only b@h may answer
//! assert_eq!(calls.take(id, "b@h"), Some("caller-1"));
//! assert!(!calls.cancel(id)); // already answered
//! ```

use std::collections::{BTreeSet, HashMap};

#[derive(Debug)]
struct Entry<W> {
    node: String,
    waiter: W,
}

/// Waiting callers by id, with the node each one called.
#[derive(Debug)]
pub struct CallTable<W> {
    next_id: u64,
    entries: HashMap<u64, Entry<W>>,
}

impl<W> CallTable<W> {
    /// An empty table whose ids start at `first_id` (pick it at random per start).
    pub fn new(first_id: u64) -> Self {
        CallTable { next_id: first_id, entries: HashMap::new() }
    }

    /// Registers a caller waiting for an answer from `node`; returns the id the answer must carry.
    pub fn register(&mut self, node: &str, waiter: W) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.insert(id, Entry { node: node.to_owned(), waiter });
        id
    }

    /// The waiter for an answer from `from`, removed from the table; `None` for an unknown id
    /// (late or forged answer) or an answer from another node than the one called.
    pub fn take(&mut self, id: u64, from: &str) -> Option<W> {
        match self.entries.get(&id) {
            Some(e) if e.node == from => self.entries.remove(&id).map(|e| e.waiter),
            _ => None,
        }
    }

    /// The caller gave up: `true` if it was still waiting (its answer will be dropped), `false`
    /// if its answer was already taken for delivery.
    pub fn cancel(&mut self, id: u64) -> bool {
        self.entries.remove(&id).is_some()
    }

    /// Removes and returns every waiter of `node` (the node is gone).
    pub fn fail_node(&mut self, node: &str) -> Vec<W> {
        let ids: Vec<u64> = self.entries.iter().filter(|(_, e)| e.node == node).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.entries.remove(&id)).map(|e| e.waiter).collect()
    }

    /// Removes and returns every waiter (the data plane stops).
    pub fn drain(&mut self) -> Vec<W> {
        self.entries.drain().map(|(_, e)| e.waiter).collect()
    }

    /// Nodes that callers wait on, sorted and without duplicates.
    pub fn nodes(&self) -> Vec<String> {
        self.entries.values().map(|e| e.node.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_delivered_once_and_only_from_the_called_node() {
        let mut t = CallTable::new(7);
        let a = t.register("b@h", 1);
        let b = t.register("b@h", 2);
        assert_ne!(a, b);
        assert_eq!(t.take(a, "x@h"), None);
        assert_eq!(t.take(a, "b@h"), Some(1));
        assert_eq!(t.take(a, "b@h"), None, "a second answer is late");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancel_tells_whether_the_answer_was_already_taken() {
        let mut t = CallTable::new(0);
        let a = t.register("b@h", ());
        assert!(t.cancel(a));
        assert_eq!(t.take(a, "b@h"), None, "answer after a timeout is dropped");
        let b = t.register("b@h", ());
        assert_eq!(t.take(b, "b@h"), Some(()));
        assert!(!t.cancel(b));
        assert!(t.is_empty());
    }

    #[test]
    fn node_loss_returns_exactly_that_nodes_waiters() {
        let mut t = CallTable::new(u64::MAX); // ids wrap around
        let ids: Vec<u64> = (0..6).map(|i| t.register(if i % 2 == 0 { "b@h" } else { "c@h" }, i)).collect();
        assert_eq!(t.nodes(), vec!["b@h".to_owned(), "c@h".to_owned()]);
        let mut lost = t.fail_node("b@h");
        lost.sort();
        assert_eq!(lost, vec![0, 2, 4]);
        assert_eq!(t.nodes(), vec!["c@h".to_owned()]);
        assert_eq!(t.take(ids[1], "c@h"), Some(1));
        let mut rest = t.drain();
        rest.sort();
        assert_eq!(rest, vec![3, 5]);
        assert!(t.is_empty());
    }
}
