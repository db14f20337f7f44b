//! Callers of this VM waiting for a remote answer (see `partisan_core::calls`).
//!
//! The Erlang side of a remote call (`partisan_gen`) registers the calling process and its tag
//! here, sends the request with the id it got, and waits for `{Tag, Reply}`. The reply frame
//! names that id; the reader thread decodes the payload *first* and only then takes the waiter,
//! so a caller whose `cancel` returns `false` knows its answer is already on the way to its
//! mailbox. When the called node is lost, or the data plane stops, every waiter gets
//! `{'DOWN', Tag, process, Node, Reason}`, the message OTP's `gen:call` waits for.

use partisan_net::lock::MutexExt;
use partisan_core::calls::CallTable;
use rustler::{Atom, Encoder, Env, LocalPid};
use std::sync::{Arc, Mutex, MutexGuard};

mod atoms {
    rustler::atoms! { process, noconnection, down = "DOWN" }
}

/// A process waiting for a reply, and the tag its reply must carry (ETF).
pub struct Waiter {
    pub pid: LocalPid,
    pub tag: Vec<u8>,
    pub node: String,
}

/// The table shared by the NIF functions and the reader threads.
#[derive(Clone)]
pub struct Calls(Arc<Mutex<CallTable<Waiter>>>);

impl Calls {
    pub fn new(first_id: u64) -> Self {
        Calls(Arc::new(Mutex::new(CallTable::new(first_id))))
    }

    pub fn lock(&self) -> MutexGuard<'_, CallTable<Waiter>> {
        self.0.lock_unpoisoned()
    }
}

/// Sends `{'DOWN', Tag, process, Node, Reason}` to each waiter, from a NIF call (`env` is the
/// calling process's environment: a scheduler thread must send through it).
pub fn notify_down(env: Env, waiters: Vec<Waiter>, reason: &str) -> usize {
    let count = waiters.len();
    for w in waiters {
        let _ = env.send(&w.pid, down_message(env, &w, reason));
    }
    count
}

fn down_message<'a>(env: Env<'a>, w: &Waiter, reason: &str) -> rustler::Term<'a> {
    let tag = env.binary_to_term(&w.tag).map(|(t, _)| t).unwrap_or_else(|| atoms::noconnection().encode(env));
    let node = Atom::from_str(env, &w.node).map(|a| a.encode(env)).unwrap_or_else(|_| w.node.as_str().encode(env));
    let reason = Atom::from_str(env, reason).unwrap_or_else(|_| atoms::noconnection());
    (atoms::down(), tag, atoms::process(), node, reason).encode(env)
}
