//! Delivery of received messages and membership events into BEAM processes.
//!
//! Reader threads belong to the tokio runtime, not to the VM, so each keeps a thread-local
//! `OwnedEnv`: a payload is decoded into it and handed to the destination with `enif_send`, which
//! moves the term without a copy. No Erlang process sits between the socket and the receiver.
//!
//! Destinations resolve to *local* pids only. A pid in the external format decodes as local only
//! if its node name and creation are this VM's, so a message addressed to a pid of an earlier
//! incarnation of this node is dropped (and counted), never delivered to a new process.
//!
//! A VM that is not alive calls itself `nonode@nohost`, as every other such VM does, so a pid
//! of `nonode@nohost` that arrives from a peer (one that did not rewrite its pids) would decode
//! as a local pid here. On such a VM every payload is scanned first and those pids become remote
//! references of the sending node ([`PidRewriter`]); a payload that cannot be scanned is
//! dropped as undecodable, and a destination given as a raw pid is refused.
//!
//! **Receive-side interposition.** While an interposition process is set ([`set_interposer`]:
//! `partisan_interposition` sets it while a fun or `ingress_delay` needs it), a message is sent
//! to that process as `{'$partisan_interpose', FromNode, Pid, Msg}` instead of to `Pid`, and the
//! Erlang side decides what reaches `Pid`. Without one, the cost is one relaxed atomic load per
//! message. Answers to calls (`Dest::Reply`) always go straight to their caller.

use crate::calls::Calls;
use bytes::Bytes;
use partisan_core::etf_pids::{PidRewriter, RefFormat};
use partisan_core::frame::Dest;
use partisan_net::{DeliverError, Direction, Event, Sink};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

mod atoms {
    rustler::atoms! {
        partisan_event, node_up, node_down, channel_up, channel_down, members, removed, upcall,
        bcast_deliver, bcast_graft, bcast_exchange,
        connection_up, connection_down, dropped, auth_failure, undefined,
        partisan_interpose = "$partisan_interpose",
    }
}

/// Whether received messages go through the interposition process (read on every delivery).
static INTERPOSING: AtomicBool = AtomicBool::new(false);
/// The interposition process, when set.
static INTERPOSER: Mutex<Option<LocalPid>> = Mutex::new(None);

/// Routes received messages through `pid` (`Some`) or straight to their destinations (`None`).
pub fn set_interposer(pid: Option<LocalPid>) {
    let mut slot = INTERPOSER.lock().unwrap_or_else(|e| e.into_inner());
    INTERPOSING.store(pid.is_some(), Ordering::SeqCst);
    *slot = pid;
}

/// The interposition process, if received messages go through one.
fn interposer() -> Option<LocalPid> {
    if !INTERPOSING.load(Ordering::Relaxed) {
        return None;
    }
    *INTERPOSER.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    static ENV: RefCell<OwnedEnv> = RefCell::new(OwnedEnv::new());
}

pub struct BeamSink {
    events: LocalPid,
    /// Callers waiting for remote answers ([`Dest::Reply`]).
    calls: Calls,
    safe: bool,
    /// `NEW_PID_EXT` of this VM up to the id field: version, tag, node atom.
    pid_prefix: Vec<u8>,
    creation: u32,
    /// When this VM is not alive: pids of `nonode@nohost` in received payloads become remote
    /// references of the sender.
    foreign_pids: Option<PidRewriter>,
}

impl BeamSink {
    pub fn new(events: LocalPid, calls: Calls, safe: bool, vm_node: &str, creation: u32, format: RefFormat) -> Self {
        let mut pid_prefix = vec![131, 88, 119, vm_node.len() as u8];
        pid_prefix.extend_from_slice(vm_node.as_bytes());
        let foreign_pids = (vm_node == NOT_ALIVE).then(|| PidRewriter::new(NOT_ALIVE, format));
        BeamSink { events, calls, safe, pid_prefix, creation, foreign_pids }
    }

    fn resolve<'a>(&self, env: Env<'a>, dest: &Dest) -> Result<LocalPid, DeliverError> {
        let pid_term = |etf: &[u8]| -> Result<LocalPid, DeliverError> {
            // Always the safe decoder: a destination never needs a new atom.
            let (term, _) = env.binary_to_term(etf).ok_or(DeliverError::NoProcess)?;
            term.decode::<LocalPid>().map_err(|_| DeliverError::NoProcess)
        };
        match dest {
            // Only a pid of another VM's `nonode@nohost` can name this VM by a raw pid.
            Dest::Pid(_) if self.foreign_pids.is_some() => Err(DeliverError::NoProcess),
            Dest::Pid(etf) => pid_term(etf),
            Dest::Name(name) => {
                let atom = Atom::existing_from_bytes(env, name.as_bytes()).map_err(|_| DeliverError::NoProcess)?;
                env.whereis_pid(atom).ok_or(DeliverError::NoProcess)
            }
            Dest::PidId { id, serial } => {
                let mut etf = self.pid_prefix.clone();
                etf.extend_from_slice(&id.to_be_bytes());
                etf.extend_from_slice(&serial.to_be_bytes());
                etf.extend_from_slice(&self.creation.to_be_bytes());
                pid_term(&etf)
            }
            Dest::Reply { .. } => unreachable!("replies are resolved after decoding, in deliver"),
        }
    }

    fn decode<'a>(&self, env: Env<'a>, from: &str, payload: &[u8]) -> Result<Term<'a>, DeliverError> {
        let rewritten = match &self.foreign_pids {
            Some(rw) => rw.rewrite(payload, from).map_err(|_| DeliverError::Undecodable)?,
            None => None,
        };
        let payload = rewritten.as_deref().unwrap_or(payload);
        let decoded = if self.safe {
            env.binary_to_term(payload)
        } else {
            // SAFETY: enif_binary_to_term validates its input whatever the flags; "trusted" only
            // allows it to create atoms, as Distributed Erlang does for authenticated peers.
            unsafe { env.binary_to_term_trusted(payload) }
        };
        match decoded {
            Some((term, used)) if used == payload.len() => Ok(term),
            _ => Err(DeliverError::Undecodable),
        }
    }
}

impl Sink for BeamSink {
    fn deliver(&self, from: &str, dest: &Dest, payload: Bytes) -> Result<(), DeliverError> {
        ENV.with(|cell| {
            let mut owned = cell.borrow_mut();
            let result = owned.run(|env| {
                let (pid, term) = match dest {
                    // Decode first: the waiter is taken only for an answer that will reach it,
                    // so a caller whose cancel fails can count on its mailbox.
                    Dest::Reply { id } => {
                        let term = self.decode(env, from, &payload)?;
                        let waiter = self.calls.lock().take(*id, from).ok_or(DeliverError::LateReply)?;
                        (waiter.pid, term)
                    }
                    _ => {
                        let (pid, term) = (self.resolve(env, dest)?, self.decode(env, from, &payload)?);
                        match interposer() {
                            None => (pid, term),
                            Some(via) => {
                                let wrapped = (atoms::partisan_interpose(), node_atom(env, from), pid, term).encode(env);
                                (via, wrapped)
                            }
                        }
                    }
                };
                // SAFETY: called from a runtime thread (not a scheduler), so the caller env is
                // NULL; the message env is the owned env, which is cleared right after.
                let sent = unsafe { rustler::sys::enif_send(std::ptr::null_mut(), pid.as_c_arg(), env.as_c_arg(), term.as_c_arg()) };
                if sent == 1 { Ok(()) } else { Err(DeliverError::NoProcess) }
            });
            owned.clear();
            result
        })
    }

    fn event(&self, event: Event) {
        // `enif_send` without a caller env is for threads the VM does not manage. Events come
        // from runtime threads; one raised while a scheduler tears the runtime down (a task
        // dropped during `stop`) has nobody left to tell and is dropped here.
        // SAFETY: enif_thread_type only reads the calling thread's type.
        if unsafe { rustler::sys::enif_thread_type() } > 0 {
            return;
        }
        ENV.with(|cell| {
            let mut owned = cell.borrow_mut();
            let _ = owned.send_and_clear(&self.events, |env| encode_event(env, &event));
        });
    }
}

/// What a VM that is not alive calls itself.
pub const NOT_ALIVE: &str = "nonode@nohost";

fn node_atom(env: Env, name: &str) -> Atom {
    Atom::from_str(env, name).unwrap_or_else(|_| Atom::from_str(env, "invalid_node_name").expect("short atom"))
}

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut bin = rustler::NewBinary::new(env, bytes.len());
    bin.as_mut_slice().copy_from_slice(bytes);
    bin.into()
}

fn encode_event<'a>(env: Env<'a>, event: &Event) -> Term<'a> {
    let tag = atoms::partisan_event();
    match event {
        Event::NodeUp(n) => (tag, atoms::node_up(), node_atom(env, n)).encode(env),
        Event::NodeDown(n) => (tag, atoms::node_down(), node_atom(env, n)).encode(env),
        Event::ChannelUp(n, c) => (tag, atoms::channel_up(), node_atom(env, n), node_atom(env, c)).encode(env),
        Event::ChannelDown(n, c) => (tag, atoms::channel_down(), node_atom(env, n), node_atom(env, c)).encode(env),
        Event::Members(ms) => {
            let nodes: Vec<Atom> = ms.iter().map(|m| node_atom(env, m)).collect();
            (tag, atoms::members(), nodes).encode(env)
        }
        Event::Removed { by } => (tag, atoms::removed(), node_atom(env, by)).encode(env),
        Event::Upcall { from, body } => (tag, atoms::upcall(), node_atom(env, from), binary(env, body)).encode(env),
        Event::BroadcastDeliver { msg_id, payload, from } => {
            (tag, atoms::bcast_deliver(), binary(env, msg_id), binary(env, payload), node_atom(env, from)).encode(env)
        }
        Event::BroadcastGraft { node, msg_id, round } => {
            (tag, atoms::bcast_graft(), node_atom(env, node), binary(env, msg_id), *round).encode(env)
        }
        Event::BroadcastExchange { node } => (tag, atoms::bcast_exchange(), node_atom(env, node)).encode(env),
        Event::ConnectionUp { node, channel, conn } => {
            (tag, atoms::connection_up(), node_atom(env, node), node_atom(env, channel), *conn).encode(env)
        }
        Event::ConnectionDown { node, channel, conn, reason } => {
            (tag, atoms::connection_down(), node_atom(env, node), node_atom(env, channel), *conn, node_atom(env, reason)).encode(env)
        }
        Event::Dropped { reason, node, channel, count } => {
            let or_undefined = |name: &Option<String>| name.as_deref().map_or(atoms::undefined(), |n| node_atom(env, n));
            (tag, atoms::dropped(), node_atom(env, reason.as_str()), or_undefined(node), or_undefined(channel), *count).encode(env)
        }
        // Inbound, the peer is a source address (a binary: no atom for an unauthenticated peer).
        Event::AuthFailed { direction: Direction::Inbound, peer, reason, count } => {
            (tag, atoms::auth_failure(), node_atom(env, "inbound"), binary(env, peer.as_bytes()), node_atom(env, reason), *count).encode(env)
        }
        Event::AuthFailed { direction: Direction::Outbound, peer, reason, count } => {
            (tag, atoms::auth_failure(), node_atom(env, "outbound"), node_atom(env, peer), node_atom(env, reason), *count).encode(env)
        }
    }
}
