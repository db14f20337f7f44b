//! An instant, in-order network of [`Node`]s for the core's tests: a dial succeeds at once when
//! the target runs on the same side of the partition, a frame is parsed and received at once when
//! the sender has an up link to the receiver on the frame's channel, a crash or a partition drops
//! the links it cuts at the dialing end, and [`Net::lose`] loses the frames it picks. Each node's
//! application answers broadcasts the way Partisan's handler would (`merge/2`: new unless stored;
//! `graft/1`: from the store).

use crate::frame::{Frame, LENGTH_PREFIX};
use crate::node::{Action, Event, Node};
use crate::overlay::{LinkId, Overlay};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Decides, for each frame sent (from, to, frame), whether the network loses it.
pub(crate) type LoseFrame = Box<dyn FnMut(&str, &str, &Frame) -> bool>;

pub(crate) struct Net<O> {
    pub nodes: BTreeMap<String, Node<O>>,
    pub now: u64,
    /// Links up, by dialer.
    up: BTreeSet<(String, LinkId)>,
    side: BTreeMap<String, u8>,
    /// Every action every node produced, in order.
    pub actions: Vec<(String, Action)>,
    /// Per node, the broadcasts its handler stored (msg id → payload).
    pub store: BTreeMap<String, BTreeMap<Bytes, Bytes>>,
    /// Relayed messages delivered: (at, origin, payload).
    pub relayed: Vec<(String, String, Bytes)>,
    pub lose: Option<LoseFrame>,
}

impl<O: Overlay> Net<O> {
    pub fn new() -> Self {
        Net {
            nodes: BTreeMap::new(),
            now: 0,
            up: BTreeSet::new(),
            side: BTreeMap::new(),
            actions: vec![],
            store: BTreeMap::new(),
            relayed: vec![],
            lose: None,
        }
    }

    pub fn add(&mut self, node: Node<O>) {
        self.side.insert(node.name().to_owned(), 0);
        self.nodes.insert(node.name().to_owned(), node);
    }

    /// Gives `name` an input and runs the network until it is quiet.
    pub fn with(&mut self, name: &str, f: impl FnOnce(&mut Node<O>, u64)) {
        let now = self.now;
        f(self.nodes.get_mut(name).expect("a running node"), now);
        self.run();
    }

    pub fn count(&self, at: &str, pred: impl Fn(&Action) -> bool) -> usize {
        self.actions.iter().filter(|(n, a)| n == at && pred(a)).count()
    }

    pub fn events(&self, at: &str) -> Vec<Event> {
        self.actions
            .iter()
            .filter_map(|(n, a)| match a {
                Action::Event(e) if n == at => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// Links of `name` that are up.
    pub fn links_up(&self, name: &str) -> Vec<LinkId> {
        self.up.iter().filter(|(from, _)| from == name).map(|(_, l)| l.clone()).collect()
    }

    fn reachable(&self, a: &str, b: &str) -> bool {
        self.nodes.contains_key(a) && self.nodes.contains_key(b) && self.side.get(a) == self.side.get(b)
    }

    /// Executes actions until no node has any left.
    pub fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut work = Vec::new();
            for (name, node) in &mut self.nodes {
                while let Some(action) = node.poll_action() {
                    work.push((name.clone(), action));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, action) in work {
                self.actions.push((from.clone(), action.clone()));
                self.execute(&from, action);
            }
        }
        panic!("the network did not quiesce");
    }

    fn execute(&mut self, from: &str, action: Action) {
        let now = self.now;
        match action {
            Action::Dial { link, .. } => {
                let up = self.reachable(from, &link.node);
                if up {
                    self.up.insert((from.to_owned(), link.clone()));
                }
                let Some(node) = self.nodes.get_mut(from) else { return };
                if up {
                    node.link_up(now, &link);
                } else {
                    node.link_down(now, &link);
                }
            }
            Action::Close { link } => {
                self.up.remove(&(from.to_owned(), link));
            }
            Action::Disconnect { node } => self.up.retain(|(f, l)| !(f == from && l.node == node)),
            Action::Send { node: to, channel, frame } => {
                let linked = self.up.iter().any(|(f, l)| f == from && l.node == to && l.channel == channel);
                if !linked || !self.reachable(from, &to) {
                    return;
                }
                let frame = Frame::parse(frame.slice(LENGTH_PREFIX..)).expect("nodes send valid frames");
                if self.lose.as_mut().is_some_and(|lose| lose(from, &to, &frame)) {
                    return;
                }
                self.nodes.get_mut(&to).expect("reachable").receive(now, from, frame).expect("nodes send frames their peers take");
            }
            Action::Event(Event::BroadcastDeliver { msg_id, payload, .. }) => {
                let store = self.store.entry(from.to_owned()).or_default();
                let is_new = !store.contains_key(&msg_id);
                if is_new {
                    store.insert(msg_id.clone(), payload);
                }
                self.nodes.get_mut(from).expect("running").broadcast_merged(now, &msg_id, is_new);
            }
            Action::Event(Event::BroadcastGraft { node, msg_id, round }) => {
                let payload = self.store.get(from).and_then(|s| s.get(&msg_id)).cloned();
                self.nodes.get_mut(from).expect("running").broadcast_grafted(now, &node, &msg_id, round, payload);
            }
            Action::Event(Event::Deliver { origin, payload, .. }) => self.relayed.push((from.to_owned(), origin, payload)),
            Action::Event(_) => {}
        }
    }

    /// Advances the clock by `ms`, running every timer that falls due on the way.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(t) = self.nodes.values().filter_map(|n| n.poll_timeout()).min().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            let now = self.now;
            for node in self.nodes.values_mut() {
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.tick(now);
                }
            }
            self.run();
        }
        self.now = end;
    }

    /// Drops the links for which `keep` is false: the dialer sees them go down.
    fn cut(&mut self, keep: impl Fn(&Self, &str, &str) -> bool) {
        let cut: Vec<(String, LinkId)> = self.up.iter().filter(|(a, l)| !keep(self, a, &l.node)).cloned().collect();
        for (from, link) in cut {
            self.up.remove(&(from.clone(), link.clone()));
            let now = self.now;
            if let Some(node) = self.nodes.get_mut(&from) {
                node.link_down(now, &link);
            }
        }
        self.run();
    }

    pub fn crash(&mut self, names: &[&str]) {
        for name in names {
            self.nodes.remove(*name);
        }
        self.cut(|net, a, b| net.nodes.contains_key(a) && net.nodes.contains_key(b));
    }

    pub fn partition(&mut self, side_of: impl Fn(&str) -> u8) {
        for (name, side) in &mut self.side {
            *side = side_of(name);
        }
        self.cut(|net, a, b| net.side.get(a) == net.side.get(b));
    }
}
