//! The routing table: for every peer, the send queue of each of its links that is up, by channel
//! and connection index.
//!
//! Senders read it on every send, from any thread, under a read lock and without allocating; the
//! driver writes it when a link comes up or goes. A message to a node takes the connection its
//! affinity key picks; while that one is down, the next one up of the channel takes over (order
//! per key holds again from the switch on).

use crate::lock::RwLockExt;
use crate::queue::LinkQueue;
use partisan_core::channel::ChannelTable;
use partisan_core::overlay::LinkId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A registered outgoing connection.
#[derive(Debug, Clone)]
pub(crate) struct LinkTx {
    /// Tells this connection from an earlier or later one of the same link.
    pub conn_id: u64,
    pub queue: Arc<LinkQueue>,
}

#[derive(Debug)]
pub(crate) struct Routes {
    /// Connections per channel.
    parallelism: Vec<usize>,
    /// Per peer: `links[channel][conn]`, `Some` while that connection is up.
    peers: RwLock<HashMap<String, Vec<Vec<Option<LinkTx>>>>>,
}

impl Routes {
    pub fn new(channels: &ChannelTable) -> Self {
        Routes { parallelism: channels.specs().iter().map(|s| s.parallelism as usize).collect(), peers: RwLock::new(HashMap::new()) }
    }

    /// Calls `f` with the queue of the connection of `channel` to `node` that `preferred`
    /// names, or of the next one up; `None` when none is up.
    pub fn with_queue<R>(&self, node: &str, channel: usize, preferred: usize, f: impl FnOnce(&LinkQueue) -> R) -> Option<R> {
        let peers = self.peers.read_unpoisoned();
        let conns = peers.get(node)?.get(channel)?;
        let n = conns.len();
        let tx = (0..n).map(|i| (preferred + i) % n).find_map(|i| conns[i].as_ref())?;
        Some(f(&tx.queue))
    }

    /// Registers (`Some`) or removes (`None`) the connection of a link; returns the one it
    /// replaced, for the caller to close.
    pub fn set(&self, link: &LinkId, tx: Option<LinkTx>) -> Option<LinkTx> {
        let mut peers = self.peers.write_unpoisoned();
        let peer = match (peers.get_mut(&link.node), &tx) {
            (Some(peer), _) => peer,
            (None, None) => return None,
            (None, Some(_)) => {
                peers.entry(link.node.clone()).or_insert_with(|| self.parallelism.iter().map(|n| vec![None; *n]).collect())
            }
        };
        std::mem::replace(&mut peer[link.channel][link.conn as usize], tx)
    }

    /// Removes every connection to `node`; returns them, for the caller to close.
    pub fn remove_node(&self, node: &str) -> Vec<LinkTx> {
        let removed = self.peers.write_unpoisoned().remove(node);
        removed.into_iter().flatten().flatten().flatten().collect()
    }

    /// A connection of `channel` (of any channel with `None`) to `node` is up.
    pub fn is_connected(&self, node: &str, channel: Option<usize>) -> bool {
        let peers = self.peers.read_unpoisoned();
        peers.get(node).is_some_and(|links| match channel {
            Some(c) => links.get(c).is_some_and(|conns| conns.iter().any(Option::is_some)),
            None => links.iter().flatten().any(Option::is_some),
        })
    }

    /// Every connection of every channel to `node` is up.
    pub fn is_fully_connected(&self, node: &str) -> bool {
        let peers = self.peers.read_unpoisoned();
        peers.get(node).is_some_and(|links| links.iter().flatten().all(Option::is_some))
    }

    /// The links of `node` that are up, with their queues.
    pub fn links_of(&self, node: &str) -> Vec<(LinkId, Arc<LinkQueue>)> {
        let peers = self.peers.read_unpoisoned();
        let Some(links) = peers.get(node) else { return vec![] };
        let mut up = vec![];
        for (channel, conns) in links.iter().enumerate() {
            for (conn, tx) in conns.iter().enumerate() {
                if let Some(tx) = tx {
                    up.push((LinkId { node: node.to_owned(), channel, conn: conn as u16 }, tx.queue.clone()));
                }
            }
        }
        up
    }

    /// The queues of every connection up.
    pub fn queues(&self) -> Vec<Arc<LinkQueue>> {
        let peers = self.peers.read_unpoisoned();
        peers.values().flatten().flatten().flatten().map(|tx| tx.queue.clone()).collect()
    }
}
