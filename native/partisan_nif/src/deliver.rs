//! Delivery of received messages and membership events into BEAM processes.
//!
//! Two paths, chosen per message by [`lanes::offer`]. A lone message is delivered by its reader:
//! reader threads belong to the tokio runtime, not to the VM, so each keeps a thread-local
//! `OwnedEnv`; the payload is decoded into it and handed to the destination with `enif_send`,
//! which moves the term without a copy, and no Erlang process sits between the socket and the
//! receiver. The messages of a stream are queued on a delivery lane and delivered in batches by
//! a `partisan_delivery` process ([`BeamSink::deliver_on_scheduler`], on its scheduler), which
//! costs less per message (see [`lanes`]).
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
//!
//! **Large maps are decoded on a scheduler.** OTP 23.3.4.15+, 24.3.4.2+, 25.1+ and 26 crash the
//! VM when a thread that is not a scheduler decodes a map of more than 32 keys
//! (erlang/otp#8208, fixed in OTP 27.3). A lane's process is on a scheduler and decodes them
//! itself. On the reader's path, a payload holding one (found by
//! [`partisan_core::etf_pids::largest_map`] without decoding it), or one that cannot be scanned,
//! goes as a binary to the `partisan_decoder` process, which decodes it and sends it on; the
//! reader waits until it has ([`decoded`]), so messages keep their order.

use crate::calls::Calls;
use crate::lanes;
use crate::scatter;
use bytes::Bytes;
use partisan_core::etf_pids::{largest_map, PidRewriter, RefFormat};
use partisan_core::frame::Dest;
use partisan_net::{DeliverError, Direction, Event, Sink};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};
use std::cell::RefCell;
use partisan_net::lock::MutexExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

mod atoms {
    rustler::atoms! {
        partisan_event, node_up, node_down, channel_up, channel_down, members, removed, upcall,
        bcast_deliver, bcast_graft, bcast_exchange,
        connection_up, connection_down, dropped, auth_failure, undefined,
        partisan_interpose = "$partisan_interpose",
        partisan_decode = "$partisan_decode", partisan_decoder, partisan_deliver = "$partisan_deliver", none, delivered, undecodable, noproc,
    }
}

/// Maps of more keys than this are built as hash maps, which only a scheduler may decode.
pub(crate) const MAX_FLAT_MAP: u32 = 32;
/// How long a reader waits for the decoder before it moves on (the message may still arrive).
const DECODE_WAIT: Duration = Duration::from_secs(10);

/// What the decoder did with a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Delivered,
    Undecodable,
    NoProcess,
}

/// Readers waiting for the decoder, by token.
static DECODING: Mutex<BTreeMap<u64, mpsc::SyncSender<Decoded>>> = Mutex::new(BTreeMap::new());
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The decoder's answer for `token` (`partisan_nif:decoded/2`); false when nobody waits any more.
pub fn decoded(token: u64, outcome: Decoded) -> bool {
    let waiter = DECODING.lock_unpoisoned().remove(&token);
    waiter.is_some_and(|tx| tx.try_send(outcome).is_ok())
}

/// Where a decoded term goes: to `to`, as it is or wrapped for the interposition process.
struct Target {
    to: LocalPid,
    /// `(FromNode, Pid)` when `to` is the interposition process.
    interposed: Option<(Atom, LocalPid)>,
}

/// Whether received messages go through the interposition process (read on every delivery).
static INTERPOSING: AtomicBool = AtomicBool::new(false);
/// The interposition process, when set.
static INTERPOSER: Mutex<Option<LocalPid>> = Mutex::new(None);

/// Routes received messages through `pid` (`Some`) or straight to their destinations (`None`).
pub fn set_interposer(pid: Option<LocalPid>) {
    let mut slot = INTERPOSER.lock_unpoisoned();
    INTERPOSING.store(pid.is_some(), Ordering::SeqCst);
    *slot = pid;
}

/// The interposition process, if received messages go through one.
fn interposer() -> Option<LocalPid> {
    if !INTERPOSING.load(Ordering::Relaxed) {
        return None;
    }
    *INTERPOSER.lock_unpoisoned()
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

    /// Decodes on this (runtime) thread: only terms without a map of more than
    /// [`MAX_FLAT_MAP`] keys. A large payload as received keeps its large binaries in place
    /// ([`scatter`]); `payload` is then that payload.
    fn decode<'a>(&self, env: Env<'a>, payload: &[u8], received: Option<&Bytes>) -> Result<Term<'a>, DeliverError> {
        if let Some(term) = received.and_then(|received| scatter::decode(env, received, !self.safe)) {
            return Ok(term);
        }
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

    /// Where a message goes and, unless it is left to the decoder process (`decode_here` false
    /// and a map too large for this thread), its decoded term.
    fn target_and_term<'a>(
        &self,
        env: Env<'a>,
        from: &str,
        dest: &Dest,
        etf: &[u8],
        received: Option<&Bytes>,
        decode_here: bool,
    ) -> Result<(Target, Option<Term<'a>>), DeliverError> {
        match dest {
            // Decode first: the waiter is taken only for an answer that will reach it, so a
            // caller whose cancel fails can count on its mailbox. (A large answer is decoded by
            // the decoder: its caller is taken first.)
            Dest::Reply { id } => {
                let term = if decode_here { Some(self.decode(env, etf, received)?) } else { None };
                let waiter = self.calls.lock().take(*id, from).ok_or(DeliverError::LateReply)?;
                Ok((Target { to: waiter.pid, interposed: None }, term))
            }
            _ => {
                let pid = self.resolve(env, dest)?;
                let term = if decode_here { Some(self.decode(env, etf, received)?) } else { None };
                let target = match interposer() {
                    None => Target { to: pid, interposed: None },
                    Some(via) => Target { to: via, interposed: Some((node_atom(env, from), pid)) },
                };
                Ok((target, term))
            }
        }
    }

    /// The payload as it is decoded: pids of `nonode@nohost` rewritten on a VM that is not alive.
    fn rewritten(&self, from: &str, payload: &Bytes) -> Result<Option<Vec<u8>>, DeliverError> {
        match &self.foreign_pids {
            Some(rw) => rw.rewrite(payload, from).map_err(|_| DeliverError::Undecodable),
            None => Ok(None),
        }
    }

    /// Delivers from a reader thread (a lone message, or no delivery lanes): decoded here and
    /// sent with `enif_send` from outside the VM, or, holding a map only a scheduler may
    /// decode, handed to the decoder process and waited for.
    fn deliver_from_reader(&self, from: &str, dest: &Dest, payload: Bytes) -> Result<(), DeliverError> {
        let rewritten = self.rewritten(from, &payload)?;
        let etf = rewritten.as_deref().unwrap_or(&payload);
        let received = rewritten.is_none().then_some(&payload);
        let on_scheduler = largest_map(etf).map_or(true, |keys| keys > MAX_FLAT_MAP);
        let waiting = ENV.with(|cell| {
            let mut owned = cell.borrow_mut();
            let result = owned.run(|env| {
                let (target, term) = self.target_and_term(env, from, dest, etf, received, !on_scheduler)?;
                match term {
                    // SAFETY: a runtime thread (no caller env); the message env is the owned
                    // env, cleared right after.
                    Some(term) => unsafe { send_decoded(std::ptr::null_mut(), env.as_c_arg(), env, &target, term) }.map(|()| None),
                    None => to_decoder(env, &target, etf, self.safe).map(Some),
                }
            });
            owned.clear();
            result
        })?;
        let Some((token, rx)) = waiting else { return Ok(()) };
        match rx.recv_timeout(DECODE_WAIT) {
            Ok(Decoded::Delivered) => Ok(()),
            Ok(Decoded::Undecodable) => Err(DeliverError::Undecodable),
            Ok(Decoded::NoProcess) => Err(DeliverError::NoProcess),
            Err(_) => {
                DECODING.lock_unpoisoned().remove(&token);
                tracing::warn!(from, "the decoder did not answer within 10 s; the next messages may overtake this one");
                Ok(())
            }
        }
    }

    /// Delivers a message taken from a delivery lane, on the scheduler of the calling process
    /// (`env` is its NIF call's): any term may be decoded here, and the message is copied to
    /// its receiver.
    pub fn deliver_on_scheduler(&self, env: Env, from: &str, dest: &Dest, payload: &Bytes) -> Result<(), DeliverError> {
        let rewritten = self.rewritten(from, payload)?;
        let etf = rewritten.as_deref().unwrap_or(payload);
        let received = rewritten.is_none().then_some(payload);
        let (target, term) = self.target_and_term(env, from, dest, etf, received, true)?;
        let term = term.expect("decoded on a scheduler");
        // SAFETY: a NIF call's env on a scheduler; the term is copied (no message env).
        unsafe { send_decoded(env.as_c_arg(), std::ptr::null_mut(), env, &target, term) }
    }
}

impl Sink for BeamSink {
    fn deliver(&self, from: &str, dest: &Dest, payload: Bytes) -> Result<(), DeliverError> {
        match lanes::offer(from, dest, payload) {
            lanes::Offer::Deliver(payload) => self.deliver_from_reader(from, dest, payload),
            lanes::Offer::Queued(None) => Ok(()),
            lanes::Offer::Queued(Some(process)) => {
                ENV.with(|cell| {
                    let mut owned = cell.borrow_mut();
                    // A process that is gone leaves the messages to the next one (it drains
                    // the lane when it registers).
                    let _ = owned.send_and_clear(&process, |env| atoms::partisan_deliver().encode(env));
                });
                Ok(())
            }
        }
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

/// Sends a term decoded here to its target.
///
/// # Safety
/// `caller` and `msg_env` are what `enif_send` needs from where it runs: a runtime thread passes
/// a null caller and the owned env `term` lives in; a NIF call passes its env and a null
/// message env (the term is copied).
unsafe fn send_decoded<'a>(
    caller: *mut rustler::sys::ErlNifEnv,
    msg_env: *mut rustler::sys::ErlNifEnv,
    env: Env<'a>,
    target: &Target,
    term: Term<'a>,
) -> Result<(), DeliverError> {
    let msg = match target.interposed {
        None => term,
        Some((from, pid)) => (atoms::partisan_interpose(), from, pid, term).encode(env),
    };
    let sent = unsafe { rustler::sys::enif_send(caller, target.to.as_c_arg(), msg_env, msg.as_c_arg()) };
    if sent == 1 { Ok(()) } else { Err(DeliverError::NoProcess) }
}

/// Hands the encoded term to the `partisan_decoder` process, which decodes it on a scheduler
/// and sends it on; returns the token and the channel its answer comes on.
fn to_decoder(env: Env, target: &Target, etf: &[u8], safe: bool) -> Result<(u64, mpsc::Receiver<Decoded>), DeliverError> {
    let decoder = env.whereis_pid(atoms::partisan_decoder()).ok_or(DeliverError::NoProcess)?;
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::sync_channel(1);
    DECODING.lock_unpoisoned().insert(token, tx);
    let wrap = match target.interposed {
        None => atoms::none().encode(env),
        Some((from, pid)) => (from, pid).encode(env),
    };
    let msg = (atoms::partisan_decode(), token, target.to, wrap, binary(env, etf), safe).encode(env);
    // SAFETY: as in `send_decoded`.
    let sent = unsafe { rustler::sys::enif_send(std::ptr::null_mut(), decoder.as_c_arg(), env.as_c_arg(), msg.as_c_arg()) };
    if sent == 1 {
        Ok((token, rx))
    } else {
        DECODING.lock_unpoisoned().remove(&token);
        Err(DeliverError::NoProcess)
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
