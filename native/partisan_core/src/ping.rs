//! `connection_ping`: noticing a peer that stopped answering without waiting for TCP.
//!
//! A peer whose process is stopped (SIGSTOP, a long GC pause of its host), or whose packets are
//! black-holed, leaves its connections open: its kernel still acknowledges our bytes, or nothing
//! tells ours that anything is wrong, and TCP's keepalive and retransmission timers take from tens
//! of seconds to minutes to close them. So each link this node dials keeps a [`Liveness`]: once
//! nothing was heard from the peer for `idle_timeout`, it sends a ping; a ping unanswered for
//! `timeout` is sent again, up to `max_attempts`; the last one unanswered declares the link dead.
//! Anything heard from the peer (a pong, an ack, any frame on any of its connections) counts as an
//! answer, so a busy link never pings. Detection takes at most `idle_timeout + timeout ×
//! max_attempts` after the peer went silent (Partisan v5's keys and defaults: 20 s, 10 s, 5).
//!
//! ```
//! use partisan_core::ping::{Liveness, PingConfig, PingAction};
//! let cfg = PingConfig { enabled: true, idle_timeout: 100, timeout: 50, max_attempts: 2 };
//! let mut l = Liveness::new(cfg, 0);
//! assert_eq!(l.poll(10), PingAction::Wait(100));
//! assert_eq!(l.poll(100), PingAction::Ping(1));
//! assert_eq!(l.poll(150), PingAction::Ping(2));
//! assert_eq!(l.poll(200), PingAction::Dead); // 100 + 50 × 2
//! ```

/// The `connection_ping` settings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingConfig {
    pub enabled: bool,
    /// Silence before the first ping.
    pub idle_timeout: u64,
    /// How long a ping waits for an answer.
    pub timeout: u64,
    /// Pings sent before the link is declared dead (at least 1).
    pub max_attempts: u32,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig { enabled: true, idle_timeout: 20_000, timeout: 10_000, max_attempts: 5 }
    }
}

impl PingConfig {
    /// The longest a silent peer goes unnoticed: `idle_timeout + timeout × max_attempts`.
    pub fn detection_bound(&self) -> u64 {
        self.idle_timeout.saturating_add(self.timeout.saturating_mul(u64::from(self.max_attempts)))
    }
}

/// What the shell does next for a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingAction {
    /// Nothing before this time (poll again then, or when something is heard).
    Wait(u64),
    /// Send a ping with this sequence number now.
    Ping(u64),
    /// The peer did not answer `max_attempts` pings: close the link.
    Dead,
}

/// One link's liveness; see the module docs.
#[derive(Debug, Clone)]
pub struct Liveness {
    cfg: PingConfig,
    heard_at: u64,
    /// Pings sent since the peer was last heard.
    attempts: u32,
    sent_at: u64,
    next_seq: u64,
}

impl Liveness {
    /// A link that came up at `now` (the handshake was the last thing heard).
    pub fn new(cfg: PingConfig, now: u64) -> Self {
        Liveness { cfg, heard_at: now, attempts: 0, sent_at: 0, next_seq: 1 }
    }

    /// The peer was heard at `at` (times earlier than the last one heard change nothing).
    pub fn heard(&mut self, at: u64) {
        if at > self.heard_at {
            self.heard_at = at;
            self.attempts = 0;
        }
    }

    pub fn poll(&mut self, now: u64) -> PingAction {
        let cfg = self.cfg;
        if self.attempts == 0 {
            let due = self.heard_at.saturating_add(cfg.idle_timeout);
            if now < due {
                return PingAction::Wait(due);
            }
        } else {
            let due = self.sent_at.saturating_add(cfg.timeout);
            if now < due {
                return PingAction::Wait(due);
            }
            if self.attempts >= cfg.max_attempts {
                return PingAction::Dead;
            }
        }
        self.attempts += 1;
        self.sent_at = now;
        self.next_seq += 1;
        PingAction::Ping(self.next_seq - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: PingConfig = PingConfig { enabled: true, idle_timeout: 1000, timeout: 300, max_attempts: 3 };

    #[test]
    fn a_silent_peer_is_dead_at_the_bound_and_not_before() {
        let mut l = Liveness::new(CFG, 50);
        let mut now = 50;
        let mut pings = 0;
        loop {
            match l.poll(now) {
                PingAction::Wait(t) => now = t,
                PingAction::Ping(_) => pings += 1,
                PingAction::Dead => break,
            }
        }
        assert_eq!((now, pings), (50 + CFG.detection_bound(), 3));
    }

    #[test]
    fn an_answer_resets_and_a_busy_link_never_pings() {
        let mut l = Liveness::new(CFG, 0);
        for t in (0..10_000).step_by(500) {
            l.heard(t);
            assert!(matches!(l.poll(t), PingAction::Wait(_)), "heard every 500 ms: no ping");
        }
        let mut l = Liveness::new(CFG, 0);
        assert_eq!(l.poll(1000), PingAction::Ping(1));
        assert_eq!(l.poll(1300), PingAction::Ping(2));
        l.heard(1350); // the pong
        assert_eq!(l.poll(1600), PingAction::Wait(2350));
        assert_eq!(l.poll(2350), PingAction::Ping(3));
        l.heard(10); // old news
        assert_eq!(l.poll(2650), PingAction::Ping(4));
    }
}
