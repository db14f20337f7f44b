//! The rustler bridge between the `partisan` Erlang application and the Rust data plane.
//!
//! No protocol logic lives here: this crate converts terms, owns the one running
//! [`partisan_net::Node`] of the VM, and implements [`partisan_net::Sink`] so that reader threads
//! deliver messages straight into BEAM processes with a thread-local `OwnedEnv`.
//!
//! Every NIF returns in microseconds: `send` encodes the message in the caller with the VM's own
//! `term_to_binary` and appends it to a connection queue; `start`, `stop` bind sockets and join
//! threads, so they run on dirty I/O schedulers. Panics are caught by rustler and surface as an
//! Erlang exception, never as a VM crash.
//!
//! On a VM that is not alive, `send` also rewrites the pids of this VM inside the encoded message
//! into remote references of this partisan node ([`partisan_core::etf_pids`]); an encoded
//! message of [`REWRITE_DIRTY_BYTES`] or more is handed to a dirty scheduler for that
//! (`enif_schedule_nif`), so the walk never holds a normal scheduler for long.

mod calls;
mod config;
mod deliver;
mod gather;
mod lanes;
mod log;
mod scatter;

use partisan_net::lock::RwLockExt;
use bytes::Bytes;
use partisan_core::etf_pids::PidRewriter;
use partisan_core::frame::Dest;
use partisan_net::{DeliverError, Node, Overloaded, Payload, SendError, StartError};
use rustler::{Atom, Encoder, Env, NifResult, OwnedBinary, Term};
use std::sync::{Arc, RwLock};

mod atoms {
    rustler::atoms! {
        ok, error, undefined, true_ = "true",
        not_started, already_started, not_connected, queue_full, unknown_channel, bad_destination,
        bad_partition_key, overloaded, message_too_large,
        undelivered_on_stop, flushed, elapsed_ms,
        pid_id, reply, cannot_rewrite_pids, direct, transitive, acked, acked_transitive, nif_panicked, bad_node_spec,
        delivered, undecodable, noproc,
    }
}

/// The running node and what the hot path needs from it.
struct Running {
    node: Node,
    creation: u32,
    /// Callers waiting for remote answers; shared with the reader threads' sink.
    calls: calls::Calls,
    /// Channel atoms and their indices: a send finds its channel without reading the atom text.
    channel_atoms: Vec<(Atom, usize)>,
    /// This partisan node's name: the node of the remote references pids become.
    name: String,
    /// Set when pids of this VM must not leave it as pids (VM not alive, `pid_encoding`).
    rewriter: Option<PidRewriter>,
    /// The data plane's keys it started with.
    config: config::DataPlane,
    /// Delivers what the delivery lanes hold (the node's own handle on the same sink).
    sink: Arc<deliver::BeamSink>,
}

impl Running {
    fn channel(&self, atom: Atom) -> Option<usize> {
        self.channel_atoms.iter().find(|(a, _)| *a == atom).map(|(_, i)| *i)
    }
}

/// Calls `f` with the text of an ASCII atom read into a stack buffer (no allocation: this runs
/// on every send); falls back to an allocated string for other atoms.
fn with_atom_str<R>(env: Env, atom: Atom, f: impl FnOnce(&str) -> R) -> NifResult<R> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed; enif_get_atom writes at most
    // that many bytes including the NUL and returns 0 when the atom does not fit.
    let n = unsafe {
        rustler::sys::enif_get_atom(
            env.as_c_arg(),
            atom.as_c_arg(),
            buf.as_mut_ptr() as *mut _,
            buf.len() as _,
            rustler::sys::ErlNifCharEncoding::ERL_NIF_LATIN1,
        )
    };
    match n {
        n if n > 0 && buf[..n as usize - 1].is_ascii() => {
            Ok(f(std::str::from_utf8(&buf[..n as usize - 1]).expect("ASCII is UTF-8")))
        }
        _ => Ok(f(&atom.to_term(env).atom_to_string()?)),
    }
}

static RUNNING: RwLock<Option<Arc<Running>>> = RwLock::new(None);

fn running() -> Option<Arc<Running>> {
    RUNNING.read_unpoisoned().clone()
}

fn err<'a>(env: Env<'a>, reason: impl Encoder) -> Term<'a> {
    (atoms::error(), reason).encode(env)
}

/// Reads and checks the data plane's keys of a config map (`partisan_config` passes what the
/// user set, with the context it decided); returns their effective values, defaults filled in,
/// or `{invalid_config, Key, Why}`. On a dirty I/O scheduler: with `tls => true` it reads the
/// certificate files.
#[rustler::nif(schedule = "DirtyIo")]
fn check_config<'a>(env: Env<'a>, cfg: Term<'a>) -> Term<'a> {
    match config::read_data_plane(cfg) {
        Ok(data) => (atoms::ok(), config::encode_data_plane(env, &data)).encode(env),
        Err(e) => err(env, config::error_term(env, &e)),
    }
}

/// Re-reads the TLS certificates and keys with the `tls_server_options` and
/// `tls_client_options` of `cfg` (`partisan_config:set/2`): `ok`, `{error, not_started}` or
/// `{error, {invalid_config, Key, Why}}` (the files in use stay in use).
#[rustler::nif(schedule = "DirtyIo")]
fn reload_tls<'a>(env: Env<'a>, cfg: Term<'a>) -> Term<'a> {
    let Some(r) = running() else { return err(env, atoms::not_started()) };
    let result = match config::read_tls(cfg) {
        Ok(Some(options)) => r.node.reload_tls(&options),
        Ok(None) => Err(partisan_net::ConfigError::new("tls", "reload_tls needs tls => true")),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => err(env, config::error_term(env, &e)),
    }
}

/// The configuration keys the data plane owns.
#[rustler::nif]
fn config_keys(env: Env) -> NifResult<Vec<Atom>> {
    config::KEYS.iter().map(|k| Atom::from_str(env, k)).collect()
}

/// The effective values of the data plane's keys the running node started with.
#[rustler::nif]
fn config(env: Env) -> Term {
    match running() {
        Some(r) => (atoms::ok(), config::encode_data_plane(env, &r.config)).encode(env),
        None => err(env, atoms::not_started()),
    }
}

/// Starts the data plane with a config map built by `partisan_config:nif_config/0`; returns the
/// node spec with the bound ports, or `{invalid_config, Key, Why}`.
#[rustler::nif(schedule = "DirtyIo")]
fn start<'a>(env: Env<'a>, cfg: Term<'a>) -> NifResult<Term<'a>> {
    let mut slot = RUNNING.write_unpoisoned();
    if slot.is_some() {
        return Ok(err(env, atoms::already_started()));
    }
    let start = match config::read_start(cfg) {
        Ok(start) => start,
        Err(e) => return Ok(err(env, config::error_term(env, &e))),
    };
    log::set_target(start.events);
    let net = start.data.net.clone();
    let calls = calls::Calls::new(first_call_id(net.incarnation));
    let sink = Arc::new(deliver::BeamSink::new(start.events, calls.clone(), start.data.safe_decode, &start.vm_node, start.creation, start.ref_format));
    // Marked stopping by the last `stop` (which may not have returned): this data plane's
    // lanes are drained by their processes again.
    lanes::set_stopping(false);
    let name = net.name.clone();
    let rewriter = start.pid_rewrite.then(|| PidRewriter::new(&start.vm_node, start.ref_format));
    match Node::start(net, sink.clone()) {
        Ok(node) => {
            let spec = config::encode_spec(env, node.spec());
            let channel_atoms = node
                .channels()
                .specs()
                .iter()
                .enumerate()
                .map(|(i, c)| Atom::from_str(env, &c.name).map(|a| (a, i)))
                .collect::<NifResult<_>>()?;
            *slot = Some(Arc::new(Running { node, creation: start.creation, calls, channel_atoms, name, rewriter, config: start.data, sink }));
            Ok((atoms::ok(), spec).encode(env))
        }
        Err(StartError::Config(e)) => Ok(err(env, config::error_term(env, &e))),
        Err(e) => Ok(err(env, e.to_string())),
    }
}

/// Flushes every send queue (for at most `stop_flush_timeout`), closes every socket and stops
/// the runtime threads. Returns `{ok, #{undelivered_on_stop, flushed, elapsed_ms}}`.
#[rustler::nif(schedule = "DirtyIo")]
fn stop(env: Env) -> NifResult<Term> {
    let taken = RUNNING.write_unpoisoned().take();
    if let Some(running) = taken {
        // Senders may still hold a clone for a moment; wait for the last one.
        let mut running = running;
        let running = loop {
            match Arc::try_unwrap(running) {
                Ok(r) => break r,
                Err(shared) => {
                    running = shared;
                    std::thread::yield_now();
                }
            }
        };
        // No lane's process takes a batch from here on (`running()` is gone): a reader waiting
        // for room in a lane queues instead, or `node.stop` would wait for it.
        lanes::set_stopping(true);
        let report = running.node.stop();
        // The readers are gone; what they queued on the delivery lanes is delivered from here
        // (the node's counters went with it: what cannot be delivered is only logged).
        lanes::drain_all(LANE_BATCH, LANE_BATCH_BYTES, |batch| {
            deliver_batch(env, &running.sink, batch, |p, error| tracing::debug!(from = %p.from, %error, "message queued at stop not delivered"));
        });
        // Nothing can answer them any more: end every wait as a lost connection would.
        calls::notify_down(env, running.calls.lock().drain(), "noconnection");
        let map = Term::map_from_pairs(
            env,
            &[
                (atoms::undelivered_on_stop().encode(env), report.undelivered.encode(env)),
                (atoms::flushed().encode(env), report.flushed.encode(env)),
                (atoms::elapsed_ms().encode(env), (report.elapsed.as_millis() as u64).encode(env)),
            ],
        )?;
        return Ok((atoms::ok(), map).encode(env));
    }
    Ok((atoms::ok(), Term::map_new(env)).encode(env))
}

fn request_result(env: Env, result: Result<(), Overloaded>) -> Term {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(Overloaded) => err(env, atoms::overloaded()),
    }
}

/// Spreads call ids of successive incarnations over the whole id space (splitmix64), so that
/// an answer meant for an earlier incarnation of this node finds no waiter.
fn first_call_id(incarnation: u64) -> u64 {
    let mut z = incarnation.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Registers the calling process as waiting for an answer from `Node` whose message will be
/// `{Tag, Reply}`; returns the id the answer must be sent to (`{reply, Id}`).
#[rustler::nif]
fn await_reply<'a>(env: Env<'a>, node: Atom, tag: Term<'a>) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    let tag = tag.to_binary().as_slice().to_vec();
    let waiter = |node: &str| calls::Waiter { pid: env.pid(), tag, node: node.to_owned() };
    let id = with_atom_str(env, node, |name| r.calls.lock().register(name, waiter(name)))?;
    Ok((atoms::ok(), id).encode(env))
}

/// The caller gave up waiting: `true` if its answer had not arrived (it will be dropped),
/// `false` if it was already handed to the caller's mailbox.
#[rustler::nif]
fn cancel_reply(id: u64) -> bool {
    running().is_some_and(|r| r.calls.lock().cancel(id))
}

/// `Node` is lost: every caller waiting on it gets `{'DOWN', Tag, process, Node, Reason}`.
/// Returns how many there were. Dirty: the table may be large.
#[rustler::nif(schedule = "DirtyCpu")]
fn fail_replies(env: Env, node: Atom, reason: Atom) -> NifResult<usize> {
    let Some(r) = running() else { return Ok(0) };
    let reason = reason.to_term(env).atom_to_string()?;
    let waiters = with_atom_str(env, node, |name| r.calls.lock().fail_node(name))?;
    Ok(calls::notify_down(env, waiters, &reason))
}

/// Nodes that callers of this VM are waiting on.
#[rustler::nif]
fn reply_nodes(env: Env) -> NifResult<Vec<Atom>> {
    to_atoms(env, running().map(|r| r.calls.lock().nodes()).unwrap_or_default())
}

#[rustler::nif]
fn join<'a>(env: Env<'a>, spec: Term<'a>) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    match config::parse_spec(spec) {
        Ok(spec) => Ok(request_result(env, r.node.join(spec))),
        Err(why) => Ok(err(env, (atoms::bad_node_spec(), why))),
    }
}

#[rustler::nif]
fn leave<'a>(env: Env<'a>, node: Atom) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    Ok(request_result(env, r.node.leave(&node.to_term(env).atom_to_string()?)))
}

fn to_atoms<'a>(env: Env<'a>, names: Vec<String>) -> NifResult<Vec<Atom>> {
    names.iter().map(|n| Atom::from_str(env, n)).collect()
}

#[rustler::nif]
fn members(env: Env) -> NifResult<Vec<Atom>> {
    to_atoms(env, running().map(|r| r.node.members()).unwrap_or_default())
}

#[rustler::nif]
fn connected(env: Env) -> NifResult<Vec<Atom>> {
    to_atoms(env, running().map(|r| r.node.connected()).unwrap_or_default())
}

/// `Channel` is a channel atom, or `'$any'` for any channel.
#[rustler::nif]
fn is_connected(env: Env, node: Atom, channel: Atom) -> NifResult<bool> {
    let Some(r) = running() else { return Ok(false) };
    let channel_name = channel.to_term(env).atom_to_string()?;
    let channel = match channel_name.as_str() {
        "$any" => None,
        name => match r.node.channels().index_of(name) {
            Some(i) => Some(i),
            None => return Ok(false),
        },
    };
    Ok(r.node.is_connected(&node.to_term(env).atom_to_string()?, channel))
}

#[rustler::nif]
fn is_fully_connected(env: Env, node: Atom) -> NifResult<bool> {
    Ok(running().is_some_and(|r| node.to_term(env).atom_to_string().is_ok_and(|n| r.node.is_fully_connected(&n))))
}

/// Encodes `Msg` in the caller and queues it for `Dest` on `Node`. `Key` is a partition key
/// (non-negative integer) or `undefined` for the caller's pid.
#[rustler::nif]
fn send<'a>(env: Env<'a>, node: Atom, channel: Atom, key: Term<'a>, dest: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    send_impl(env, node, channel, key, dest, msg, false, Delivery::Direct)
}

/// `send/5` for messages large enough that encoding them may take more than a millisecond.
#[rustler::nif(schedule = "DirtyCpu")]
fn send_dirty<'a>(env: Env<'a>, node: Atom, channel: Atom, key: Term<'a>, dest: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    send_impl(env, node, channel, key, dest, msg, true, Delivery::Direct)
}

/// `send/5` with `ack`: delivered exactly once while both nodes live; waits for a link that is
/// not up (see `partisan_core::ack`).
#[rustler::nif]
fn send_acked<'a>(env: Env<'a>, node: Atom, channel: Atom, key: Term<'a>, dest: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    send_impl(env, node, channel, key, dest, msg, false, Delivery::Acked)
}

/// `send_acked/5` for large messages.
#[rustler::nif(schedule = "DirtyCpu")]
fn send_acked_dirty<'a>(env: Env<'a>, node: Atom, channel: Atom, key: Term<'a>, dest: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    send_impl(env, node, channel, key, dest, msg, true, Delivery::Acked)
}

/// How a message to a connected node's process travels.
#[derive(Clone, Copy)]
enum Delivery {
    /// Queued on the connection (`ok` means queued).
    Direct,
    /// Numbered, kept until acknowledged, resent after a lost connection.
    Acked,
}

impl Delivery {
    fn atom(self) -> Atom {
        match self {
            Delivery::Direct => atoms::direct(),
            Delivery::Acked => atoms::acked(),
        }
    }

    fn send(self, node: &Node, name: &str, channel: usize, key: u64, dest: Dest, payload: impl Into<Payload>) -> Result<(), SendError> {
        match self {
            Delivery::Direct => node.send(name, channel, key, dest, payload),
            Delivery::Acked => node.send_acked(name, channel, key, dest, payload),
        }
    }
}

struct Etf(OwnedBinary);

impl AsRef<[u8]> for Etf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Encoded messages of at least this many bytes have their pids rewritten on a dirty scheduler:
/// the walk scans 1-4 GB/s, so below this it holds a normal scheduler for well under 1 ms.
pub const REWRITE_DIRTY_BYTES: usize = 256 * 1024;

/// A message ready to queue, or the term to return at once.
enum Prepared<'a> {
    Ready(Bytes),
    Return(Term<'a>),
}

/// Encodes `msg`; on a VM that is not alive, rewrites this VM's pids in it. A large message to
/// rewrite on a normal scheduler is handed to [`send_rewritten_dirty`] with `args` (what it
/// needs to queue it) and the encoded term.
fn prepare<'a>(env: Env<'a>, r: &Running, msg: Term<'a>, dirty: bool, args: &[Term<'a>]) -> Prepared<'a> {
    let etf = msg.to_binary();
    let Some(rw) = &r.rewriter else { return Prepared::Ready(Bytes::from_owner(Etf(etf))) };
    if !dirty && etf.len() >= REWRITE_DIRTY_BYTES {
        let mut argv: Vec<rustler::sys::ErlNifTerm> = args.iter().map(|t| t.as_c_arg()).collect();
        argv.push(etf.release(env).to_term(env).as_c_arg());
        // SAFETY: the env is this call's, the arguments are terms of it, and the function is an
        // `extern "C"` NIF of the right signature that checks its arguments itself.
        let term = unsafe {
            rustler::sys::enif_schedule_nif(
                env.as_c_arg(),
                c"send_rewritten_dirty".as_ptr(),
                rustler::SchedulerFlags::DirtyCpu as i32,
                send_rewritten_dirty,
                argv.len() as i32,
                argv.as_ptr(),
            )
        };
        // SAFETY: enif_schedule_nif returns a term of this env.
        return Prepared::Return(unsafe { Term::new(env, term) });
    }
    match rw.rewrite(etf.as_slice(), &r.name) {
        Ok(None) => Prepared::Ready(Bytes::from_owner(Etf(etf))),
        Ok(Some(rewritten)) => Prepared::Ready(Bytes::from(rewritten)),
        Err(e) => Prepared::Return(err(env, (atoms::cannot_rewrite_pids(), e.to_string()))),
    }
}

/// The hash of a partition key: the caller's pid (`undefined`), a pid, or the integer itself.
fn key_hash<'a>(env: Env<'a>, key: Term<'a>) -> Result<u64, Term<'a>> {
    // The same hash for the caller's pid (no key) and for a pid given as key, so a message sent
    // on behalf of a process (a monitor's DOWN) takes that process's connection. An atom other
    // than `undefined` is refused, not taken for "no key".
    if key == atoms::undefined().encode(env) {
        Ok(env.pid().encode(env).hash_internal(0))
    } else if key.is_pid() {
        Ok(key.hash_internal(0))
    } else {
        key.decode::<u64>().map_err(|_| err(env, (atoms::bad_partition_key(), key)))
    }
}

#[allow(clippy::too_many_arguments)]
fn send_impl<'a>(env: Env<'a>, node: Atom, channel: Atom, key: Term<'a>, dest: Term<'a>, msg: Term<'a>, dirty: bool, delivery: Delivery) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    let Some(channel_ix) = r.channel(channel) else {
        return Ok(err(env, (atoms::unknown_channel(), channel)));
    };
    // The key picks one of a channel's connections and keeps apart the monotonic messages of
    // different senders; where it does neither, the caller's pid is not hashed (a cost on every
    // send).
    let spec = &r.node.channels().specs()[channel_ix];
    let key = if key == atoms::undefined().encode(env) && spec.parallelism == 1 && !spec.monotonic && matches!(delivery, Delivery::Direct) {
        0
    } else {
        match key_hash(env, key) {
            Ok(k) => k,
            Err(e) => return Ok(e),
        }
    };
    let dest_parsed = match decode_dest(dest) {
        Ok(d) => d,
        Err(()) => return Ok(err(env, atoms::bad_destination())),
    };
    // An acked message the destination's budget cannot take is refused before it is encoded
    // (the size of a binary is known without encoding it; other terms are checked by the send).
    if matches!(delivery, Delivery::Acked) {
        if let Ok(bin) = rustler::Binary::from_term(msg) {
            let room = with_atom_str(env, node, |name| r.node.check_acked_room(name, channel_ix, &dest_parsed, bin.len()))?;
            if let Err(e) = room {
                return Ok(send_result(env, Err(e)));
            }
        }
    }
    // A VM whose pids need no rewriting sends large binaries by reference (with `ack` too: the
    // outbox holds the references until the message is acknowledged).
    if r.rewriter.is_none() {
        if let Some(payload) = gather::encode(env, msg) {
            return Ok(send_result(env, with_atom_str(env, node, |name| delivery.send(&r.node, name, channel_ix, key, dest_parsed, payload))?));
        }
    }
    let args = [delivery.atom().encode(env), node.encode(env), channel.encode(env), key.encode(env), dest];
    let payload = match prepare(env, &r, msg, dirty, &args) {
        Prepared::Ready(p) => p,
        Prepared::Return(t) => return Ok(t),
    };
    Ok(send_result(env, with_atom_str(env, node, |name| delivery.send(&r.node, name, channel_ix, key, dest_parsed, payload))?))
}

/// The second half of a send whose message is large and has pids to rewrite, on a dirty CPU
/// scheduler: `[direct | acked | transitive | acked_transitive, Node, Channel, KeyHash, Dest,
/// EncodedMsg]`.
unsafe extern "C" fn send_rewritten_dirty(
    env: *mut rustler::sys::ErlNifEnv,
    argc: std::os::raw::c_int,
    argv: *const rustler::sys::ErlNifTerm,
) -> rustler::sys::ErlNifTerm {
    let marker = ();
    // SAFETY: called by the VM as a NIF: `env` is valid for this call and `argv` holds `argc`
    // terms of it.
    let env = unsafe { Env::new(&marker, env) };
    let args: Vec<Term> = (0..argc.max(0) as usize).map(|i| unsafe { Term::new(env, *argv.add(i)) }).collect();
    match std::panic::catch_unwind(|| send_rewritten(env, &args)) {
        Ok(Ok(term)) => term.as_c_arg(),
        Ok(Err(_)) => rustler::sys::enif_make_badarg(env.as_c_arg()),
        Err(_) => rustler::sys::enif_raise_exception(env.as_c_arg(), atoms::nif_panicked().encode(env).as_c_arg()),
    }
}

fn send_rewritten<'a>(env: Env<'a>, args: &[Term<'a>]) -> NifResult<Term<'a>> {
    let [kind, node, channel, key, dest, etf] = args else { return Err(rustler::Error::BadArg) };
    let (kind, node, channel, key, etf) =
        (kind.decode::<Atom>()?, node.decode::<Atom>()?, channel.decode::<Atom>()?, key.decode::<u64>()?, etf.decode::<rustler::Binary>()?);
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    let Some(rw) = &r.rewriter else { return Err(rustler::Error::BadArg) };
    let Ok(dest) = decode_dest(*dest) else { return Ok(err(env, atoms::bad_destination())) };
    let payload = match rw.rewrite(etf.as_slice(), &r.name) {
        Ok(None) => Bytes::copy_from_slice(etf.as_slice()),
        Ok(Some(rewritten)) => Bytes::from(rewritten),
        Err(e) => return Ok(err(env, (atoms::cannot_rewrite_pids(), e.to_string()))),
    };
    if kind == atoms::transitive() || kind == atoms::acked_transitive() {
        return Ok(send_result(env, with_atom_str(env, node, |name| send_through_overlay(&r.node, kind, name, dest, payload))?));
    }
    let Some(channel) = r.channel(channel) else {
        return Ok(err(env, (atoms::unknown_channel(), channel)));
    };
    let delivery = if kind == atoms::acked() { Delivery::Acked } else { Delivery::Direct };
    Ok(send_result(env, with_atom_str(env, node, |name| delivery.send(&r.node, name, channel, key, dest, payload))?))
}

/// Rewrites the pids of node `MatchNode` inside an encoded term into remote references of
/// `RefNode`, as `send` does on a VM that is not alive (where `MatchNode` is `nonode@nohost`):
/// `{ok, Etf}`, `unchanged` (no such pid in it) or `{error, Why}`. For tests and diagnostics;
/// dirty, since the term may be large.
#[rustler::nif(schedule = "DirtyCpu")]
fn rewrite_pids<'a>(env: Env<'a>, etf: rustler::Binary<'a>, match_node: Atom, ref_node: Atom, format: Atom, padded: bool) -> NifResult<Term<'a>> {
    use partisan_core::etf_pids::RefFormat;
    let format = match format.to_term(env).atom_to_string()?.as_str() {
        "improper_list" => RefFormat::ImproperList,
        "tuple" => RefFormat::Tuple,
        "uri" => RefFormat::Uri { padded },
        _ => return Err(rustler::Error::BadArg),
    };
    let rw = PidRewriter::new(&match_node.to_term(env).atom_to_string()?, format);
    match rw.rewrite(etf.as_slice(), &ref_node.to_term(env).atom_to_string()?) {
        Ok(None) => Ok(Atom::from_str(env, "unchanged")?.encode(env)),
        Ok(Some(out)) => {
            let mut bin = rustler::NewBinary::new(env, out.len());
            bin.as_mut_slice().copy_from_slice(&out);
            Ok((atoms::ok(), Term::from(bin)).encode(env))
        }
        Err(e) => Ok(err(env, e.to_string())),
    }
}

/// A destination term: a pid, a registered name (atom or binary), `{pid_id, Id, Serial}` or
/// `{reply, Id}` (a caller waiting in the called node's call table).
fn decode_dest(dest: Term) -> Result<Dest, ()> {
    if dest.is_pid() {
        Ok(Dest::Pid(Bytes::copy_from_slice(dest.to_binary().as_slice())))
    } else if dest.is_atom() {
        dest.atom_to_string().map(Dest::Name).map_err(|_| ())
    } else if let Ok(name) = dest.decode::<rustler::Binary>() {
        match std::str::from_utf8(name.as_slice()) {
            Ok(n) if !n.is_empty() && n.len() < 256 => Ok(Dest::Name(n.to_owned())),
            _ => Err(()),
        }
    } else if let Ok((tag, id, serial)) = dest.decode::<(Atom, u32, u32)>() {
        if tag == atoms::pid_id() { Ok(Dest::PidId { id, serial }) } else { Err(()) }
    } else if let Ok((tag, id)) = dest.decode::<(Atom, u64)>() {
        if tag == atoms::reply() { Ok(Dest::Reply { id }) } else { Err(()) }
    } else {
        Err(())
    }
}

fn send_result<'a>(env: Env<'a>, result: Result<(), SendError>) -> Term<'a> {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(SendError::NotConnected) => err(env, atoms::not_connected()),
        Err(SendError::QueueFull) => err(env, atoms::queue_full()),
        Err(SendError::UnknownChannel) => err(env, atoms::unknown_channel()),
        Err(SendError::MessageTooLarge { size, max }) => err(env, (atoms::message_too_large(), size as u64, max as u64)),
    }
}

/// Sends `Msg` to `Dest` on `Node` through the overlay (transitive forwarding): relayed by
/// neighbours when `Node` is not one. Best effort.
#[rustler::nif]
fn send_transitive<'a>(env: Env<'a>, node: Atom, dest_term: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    overlay_send(env, atoms::transitive(), node, dest_term, msg)
}

/// `send_transitive/3` with `ack`: delivered once and in order, retransmitted until `Node`
/// acknowledges it (see `partisan_core::relay_ack`).
#[rustler::nif]
fn send_acked_transitive<'a>(env: Env<'a>, node: Atom, dest_term: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    overlay_send(env, atoms::acked_transitive(), node, dest_term, msg)
}

/// A send through the overlay of `kind` (`transitive` or `acked_transitive`).
fn overlay_send<'a>(env: Env<'a>, kind: Atom, node: Atom, dest_term: Term<'a>, msg: Term<'a>) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    let Ok(dest) = decode_dest(dest_term) else { return Ok(err(env, atoms::bad_destination())) };
    let undefined = atoms::undefined().encode(env);
    let args = [kind.encode(env), node.encode(env), undefined, 0u64.encode(env), dest_term];
    let payload = match prepare(env, &r, msg, false, &args) {
        Prepared::Ready(p) => p,
        Prepared::Return(t) => return Ok(t),
    };
    Ok(send_result(env, with_atom_str(env, node, |name| send_through_overlay(&r.node, kind, name, dest, payload))?))
}

fn send_through_overlay(node: &partisan_net::Node, kind: Atom, name: &str, dest: Dest, payload: Bytes) -> Result<(), SendError> {
    if kind == atoms::acked_transitive() {
        node.send_acked_transitive(name, dest, payload)
    } else {
        node.send_transitive(name, dest, payload)
    }
}


/// Broadcasts with Plumtree: `MsgId` and `Payload` are the encoded id and payload.
#[rustler::nif]
fn broadcast<'a>(env: Env<'a>, msg_id: rustler::Binary<'a>, payload: rustler::Binary<'a>) -> Term<'a> {
    let Some(r) = running() else { return err(env, atoms::not_started()) };
    request_result(env, r.node.broadcast(Bytes::copy_from_slice(&msg_id), Bytes::copy_from_slice(&payload)))
}

/// The handler's `merge/2` answer for a delivered broadcast.
#[rustler::nif]
fn broadcast_merged<'a>(env: Env<'a>, msg_id: rustler::Binary<'a>, is_new: bool) -> Term<'a> {
    let Some(r) = running() else { return err(env, atoms::not_started()) };
    r.node.broadcast_merged(Bytes::copy_from_slice(&msg_id), is_new);
    atoms::ok().encode(env)
}

/// The handler's `graft/1` answer: the encoded payload, or `undefined` when stale or unknown.
#[rustler::nif]
fn broadcast_grafted<'a>(env: Env<'a>, node: Atom, msg_id: rustler::Binary<'a>, round: u32, payload: Term<'a>) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    let payload = payload.decode::<rustler::Binary>().ok().map(|b| Bytes::copy_from_slice(&b));
    let msg_id = Bytes::copy_from_slice(&msg_id);
    with_atom_str(env, node, |name| r.node.broadcast_grafted(name, msg_id, round, payload))?;
    Ok(atoms::ok().encode(env))
}

/// Replaces the member list (node specs) for an Erlang membership strategy.
#[rustler::nif]
fn set_members<'a>(env: Env<'a>, specs: Vec<Term<'a>>) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    match specs.into_iter().map(config::parse_spec).collect::<Result<Vec<_>, _>>() {
        Ok(specs) => Ok(request_result(env, r.node.set_members(specs))),
        Err(why) => Ok(err(env, (atoms::bad_node_spec(), why))),
    }
}

/// Sends a binary as a control frame on `Node`'s membership link (an Erlang membership
/// strategy's message).
#[rustler::nif]
fn send_control<'a>(env: Env<'a>, node: Atom, body: rustler::Binary<'a>) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    let body = Bytes::copy_from_slice(body.as_slice());
    Ok(send_result(env, with_atom_str(env, node, |name| r.node.send_control(name, body))?))
}

/// The overlay's named views as a map (`#{active => [...], passive => [...]}` for HyParView).
#[rustler::nif]
fn views(env: Env) -> NifResult<Term> {
    let mut map = Term::map_new(env);
    if let Some(r) = running() {
        for (name, nodes) in r.node.views() {
            map = map.map_put(Atom::from_str(env, &name)?, to_atoms(env, nodes)?)?;
        }
    }
    Ok(map)
}

/// The specs of the members the overlay knows, this node's included (read from the snapshot the
/// driver publishes when the member list changes, no hop); `[]` when not running.
#[rustler::nif]
fn member_specs(env: Env) -> Term {
    let specs = running().map(|r| r.node.member_specs()).unwrap_or_default();
    specs.iter().map(|s| config::encode_spec(env, s)).collect::<Vec<Term>>().encode(env)
}

/// Plumtree's peers: `{Eager, Lazy}` (sorted node lists, read from the snapshot the driver
/// publishes, no hop), or `undefined` when broadcast is off or the data plane is not running.
#[rustler::nif]
fn broadcast_peers(env: Env) -> NifResult<Term> {
    match running().and_then(|r| r.node.broadcast_peers()) {
        Some((eager, lazy)) => Ok((to_atoms(env, eager)?, to_atoms(env, lazy)?).encode(env)),
        None => Ok(atoms::undefined().encode(env)),
    }
}

/// Cuts (`true`) or restores (`false`) every link to `Node`, as a network partition would.
#[rustler::nif]
fn partition<'a>(env: Env<'a>, node: Atom, blocked: bool) -> NifResult<Term<'a>> {
    let Some(r) = running() else { return Ok(err(env, atoms::not_started())) };
    Ok(request_result(env, with_atom_str(env, node, |name| r.node.partition(name, blocked))?))
}

/// Nodes currently cut off by `partition/2`.
#[rustler::nif]
fn partitions(env: Env) -> NifResult<Vec<Atom>> {
    to_atoms(env, running().map(|r| r.node.partitions()).unwrap_or_default())
}

/// Routes received messages through the interposition process `pid` (a pid), or straight to
/// their destinations again (`undefined`): see [`deliver`].
#[rustler::nif]
fn set_interposer(pid: Term) -> NifResult<Atom> {
    if pid.decode::<Atom>().is_ok_and(|a| a == atoms::undefined()) {
        deliver::set_interposer(None);
    } else {
        deliver::set_interposer(Some(pid.decode::<rustler::LocalPid>()?));
    }
    Ok(atoms::ok())
}

/// The `partisan_decoder` process decoded (or could not decode) the payload of `token`
/// (`delivered`, `undecodable` or `noproc`): the reader waiting for it goes on.
#[rustler::nif]
fn decoded(token: u64, outcome: Atom) -> NifResult<bool> {
    let outcome = match outcome {
        o if o == atoms::delivered() => deliver::Decoded::Delivered,
        o if o == atoms::undecodable() => deliver::Decoded::Undecodable,
        o if o == atoms::noproc() => deliver::Decoded::NoProcess,
        _ => return Err(rustler::Error::BadArg),
    };
    Ok(deliver::decoded(token, outcome))
}

/// Registers the calling `partisan_delivery` process as the process of delivery lane `index`
/// of `count` (see [`lanes`]); true when messages already wait for it.
#[rustler::nif]
fn set_delivery_lane(env: Env, index: usize, count: usize) -> NifResult<bool> {
    if index >= count || count > lanes::MAX_LANES {
        return Err(rustler::Error::BadArg);
    }
    let pid = env.pid();
    Ok(lanes::register(index, count, pid))
}

/// Messages a delivery lane takes per call, and payload bytes: a call stays well under a
/// millisecond (10 B messages: ~0.3 µs each here).
const LANE_BATCH: usize = 512;
const LANE_BATCH_BYTES: usize = 1 << 20;

/// Delivers a batch of the messages waiting in delivery lane `index`, from the calling process's
/// scheduler; true when more wait. What cannot be delivered is counted as when a reader
/// delivers it. Once the data plane is stopping it takes nothing: `stop` delivers the rest.
#[rustler::nif]
fn deliver_pending(env: Env, index: usize) -> bool {
    let Some(r) = running() else { return false };
    let mut batch = Vec::with_capacity(LANE_BATCH);
    lanes::take(index, LANE_BATCH, LANE_BATCH_BYTES, &mut batch);
    // Counted delivered even if a delivery panics: the lane must not stay marked busy.
    struct Unfinished(usize, usize);
    impl Drop for Unfinished {
        fn drop(&mut self) {
            lanes::delivered(self.0, self.1);
        }
    }
    let count = batch.len();
    let guard = Unfinished(index, count);
    deliver_batch(env, &r.sink, &batch, |p, e| r.node.delivery_failed(&p.from, &p.dest, e));
    std::mem::forget(guard);
    // Tell the VM how much of a time slice this took (a NIF call counts as one reduction).
    // SAFETY: `env` is this NIF call's.
    unsafe { rustler::sys::enif_consume_timeslice(env.as_c_arg(), (1 + count * 100 / (4 * LANE_BATCH)) as i32) };
    lanes::delivered(index, count)
}

/// Delivers messages taken from a lane from the calling process's scheduler (`env` its NIF
/// call's); `failed` is told of each that could not be.
fn deliver_batch(env: Env, sink: &deliver::BeamSink, batch: &[lanes::Pending], mut failed: impl FnMut(&lanes::Pending, DeliverError)) {
    for p in batch {
        if let Err(e) = sink.deliver_on_scheduler(env, &p.from, &p.dest, &p.payload) {
            failed(p, e);
        }
    }
}

/// Counters of the running node as a map (empty when stopped).
#[rustler::nif]
fn stats(env: Env) -> NifResult<Term> {
    let mut map = Term::map_new(env);
    if let Some(r) = running() {
        for (k, v) in r.node.stats() {
            map = map.map_put(Atom::from_str(env, k)?, v)?;
        }
        map = map.map_put(Atom::from_str(env, "creation")?, r.creation)?;
        map = map.map_put(Atom::from_str(env, "calls_waiting")?, r.calls.lock().len())?;
        map = map.map_put(Atom::from_str(env, "lane_messages")?, lanes::queued_total())?;
        map = map.map_put(Atom::from_str(env, "lane_full_waits")?, lanes::full_waits_total())?;
    }
    Ok(map)
}

fn load(_env: Env, _info: Term) -> bool {
    log::init();
    true
}

rustler::init!("partisan_nif", load = load);
