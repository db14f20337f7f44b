//! Encoding a message so that its large binaries are referenced, not copied.
//!
//! `enif_term_to_binary` copies every byte of a term into one new binary: a message carrying a
//! 1 MiB binary costs a 1 MiB copy on the sending scheduler before the socket copies it again.
//! Distributed Erlang writes such binaries from where they are (its output queue holds
//! references). [`encode`] does the same for messages that carry them near the top — the
//! binary itself, or one inside tuples, lists and maps a few levels down, as in `{put, Key,
//! Bin}` or a `gen_server` call wrapping it: it writes the External Term Format of those levels
//! itself, references each binary of at least [`GATHER_MIN`] bytes, and encodes every other
//! subterm with `enif_term_to_binary`. The receiver decodes the same term (the format is
//! compositional: a subterm's encoding is its `term_to_binary` without the version byte).
//!
//! A referenced binary is kept alive by a copy of its term in a process-independent
//! environment ([`KeptEnv`]: the copy of a reference-counted binary shares its bytes) until the
//! writer has written the last piece and dropped the payload. Reference-counted binary data
//! never moves, and `enif_inspect_binary` first makes a binary that its process could still
//! append to read-only, so the bytes stay what they were when sent.
//!
//! ```ignore
//! match gather::encode(env, msg) {
//!     Some(payload) => node.send(name, channel, key, dest, payload), // pieces, no copy
//!     None => node.send(name, channel, key, dest, Bytes::from_owner(Etf(msg.to_binary()))),
//! }
//! ```

use bytes::{Bytes, BytesMut};
use partisan_net::Payload;
use rustler::sys::{ErlNifBinary, ErlNifEnv, ErlNifTerm};
use rustler::types::map::MapIterator;
use rustler::{Env, Term};
use std::sync::Arc;

/// Binaries at least this large are referenced instead of copied (below it, a copy costs less
/// than keeping a reference).
pub const GATHER_MIN: usize = 16 * 1024;
/// How deep into tuples, lists and maps a large binary is looked for.
pub(crate) const MAX_DEPTH: usize = 4;
/// Containers with more elements than this are encoded whole (with a copy), not walked: the
/// walk encodes each element separately, which costs more than the copy for many small ones.
/// (At most 255: a walked tuple's arity fits `SMALL_TUPLE_EXT`.)
pub(crate) const MAX_WIDTH: usize = 64;
const _: () = assert!(MAX_WIDTH <= 255);
/// At most this many subterms are visited when looking for a large binary, so that a small
/// message pays a few checks.
const SCAN_BUDGET: usize = 64;

/// The External Term Format's tags this module and [`crate::scatter`] write and read.
pub(crate) const VERSION: u8 = 131;
pub(crate) const SMALL_TUPLE_EXT: u8 = 104;
pub(crate) const NIL_EXT: u8 = 106;
pub(crate) const LIST_EXT: u8 = 108;
pub(crate) const BINARY_EXT: u8 = 109;
pub(crate) const MAP_EXT: u8 = 116;

/// The message as pieces that reference its large binaries, or `None` when it holds none near
/// the top (encode it whole).
pub fn encode<'a>(env: Env<'a>, msg: Term<'a>) -> Option<Payload> {
    let mut budget = SCAN_BUDGET;
    if !has_large_binary(msg, 0, &mut budget) {
        return None;
    }
    let mut gather = Gather { env, kept: None, head: BytesMut::with_capacity(256), parts: Vec::with_capacity(4) };
    gather.head.extend_from_slice(&[VERSION]);
    gather.term(msg, 0)?;
    gather.flush();
    Some(Payload::gathered(gather.parts))
}

/// A large binary's length, if `term` is one.
fn large_binary(term: Term) -> Option<usize> {
    if !term.is_binary() {
        return None;
    }
    // A bitstring of whole bytes only: `from_term` refuses the others.
    rustler::Binary::from_term(term).ok().map(|b| b.len()).filter(|&n| n >= GATHER_MIN)
}

/// The elements of a tuple, borrowed from the term.
fn tuple_elements<'a>(term: Term<'a>) -> Option<&'a [ErlNifTerm]> {
    let (mut arity, mut array) = (0, std::ptr::null());
    // SAFETY: the env and term are valid for this NIF call; on success `array` points at
    // `arity` terms that live as long as the tuple (the caller's term).
    unsafe {
        if rustler::sys::enif_get_tuple(term.get_env().as_c_arg(), term.as_c_arg(), &mut arity, &mut array) == 0 {
            return None;
        }
        Some(if arity == 0 { &[] } else { std::slice::from_raw_parts(array, arity as usize) })
    }
}

/// The elements of a list up to `limit` of them, and its tail (`[]` for a proper list); `None`
/// for a longer list.
fn list_elements<'a>(term: Term<'a>, limit: usize) -> Option<(Vec<Term<'a>>, Term<'a>)> {
    let mut elements = Vec::new();
    let mut rest = term;
    while let Ok((head, tail)) = rest.list_get_cell() {
        if elements.len() == limit {
            return None;
        }
        elements.push(head);
        rest = tail;
    }
    Some((elements, rest))
}

/// Whether a binary of at least [`GATHER_MIN`] bytes sits within [`MAX_DEPTH`] levels of
/// `term`, through containers of at most [`MAX_WIDTH`] elements, visiting at most `budget`
/// subterms.
fn has_large_binary(term: Term, depth: usize, budget: &mut usize) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    if large_binary(term).is_some() {
        return true;
    }
    if depth == MAX_DEPTH {
        return false;
    }
    let env = term.get_env();
    if term.is_tuple() {
        let elements = tuple_elements(term).unwrap_or_default();
        // SAFETY: terms of this env.
        elements.len() <= MAX_WIDTH && elements.iter().any(|&e| has_large_binary(unsafe { Term::new(env, e) }, depth + 1, budget))
    } else if term.is_list() {
        match list_elements(term, MAX_WIDTH) {
            Some((elements, tail)) => {
                let improper_tail = (!tail.is_empty_list()).then_some(tail);
                elements.into_iter().chain(improper_tail).any(|e| has_large_binary(e, depth + 1, budget))
            }
            None => false,
        }
    } else if term.is_map() {
        match (term.map_size(), MapIterator::new(term)) {
            (Ok(n), Some(pairs)) if n <= MAX_WIDTH => {
                let mut pairs = pairs;
                pairs.any(|(k, v)| has_large_binary(k, depth + 1, budget) || has_large_binary(v, depth + 1, budget))
            }
            _ => false,
        }
    } else {
        false
    }
}

/// Keeps referenced binaries alive: a process-independent environment holding copies of their
/// terms.
struct KeptEnv(*mut ErlNifEnv);

// SAFETY: a process-independent environment may be used and freed from any thread; after
// construction it is only read through the binaries' data pointers (immutable) and freed once.
unsafe impl Send for KeptEnv {}
unsafe impl Sync for KeptEnv {}

impl Drop for KeptEnv {
    fn drop(&mut self) {
        // SAFETY: allocated by enif_alloc_env and freed only here.
        unsafe { rustler::sys::enif_free_env(self.0) }
    }
}

/// The bytes of one referenced binary.
struct KeptBinary {
    _env: Arc<KeptEnv>,
    data: *const u8,
    len: usize,
}

// SAFETY: the data is immutable and lives as long as `_env`.
unsafe impl Send for KeptBinary {}

impl AsRef<[u8]> for KeptBinary {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `data` points at `len` bytes of a binary kept alive by `_env`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

struct Gather<'a> {
    env: Env<'a>,
    kept: Option<Arc<KeptEnv>>,
    /// Encoded bytes since the last referenced binary.
    head: BytesMut,
    parts: Vec<Bytes>,
}

impl<'a> Gather<'a> {
    fn flush(&mut self) {
        if !self.head.is_empty() {
            self.parts.push(self.head.split().freeze());
        }
    }

    fn term(&mut self, term: Term<'a>, depth: usize) -> Option<()> {
        if let Some(len) = large_binary(term) {
            return self.reference(term, len);
        }
        let mut budget = SCAN_BUDGET;
        if depth == MAX_DEPTH || !has_large_binary(term, depth, &mut budget) {
            return self.whole(term);
        }
        let env = self.env;
        if term.is_tuple() {
            let elements = tuple_elements(term)?;
            self.head.extend_from_slice(&[SMALL_TUPLE_EXT, u8::try_from(elements.len()).ok()?]);
            // SAFETY: terms of this env.
            elements.iter().try_for_each(|&e| self.term(unsafe { Term::new(env, e) }, depth + 1))
        } else if term.is_list() {
            let (elements, tail) = list_elements(term, MAX_WIDTH)?;
            self.head.extend_from_slice(&[LIST_EXT]);
            self.head.extend_from_slice(&(elements.len() as u32).to_be_bytes());
            elements.into_iter().try_for_each(|e| self.term(e, depth + 1))?;
            if tail.is_empty_list() {
                self.head.extend_from_slice(&[NIL_EXT]);
                Some(())
            } else {
                self.term(tail, depth + 1)
            }
        } else if term.is_map() {
            let size = term.map_size().ok()?;
            self.head.extend_from_slice(&[MAP_EXT]);
            self.head.extend_from_slice(&(size as u32).to_be_bytes());
            MapIterator::new(term)?.try_for_each(|(k, v)| {
                self.term(k, depth + 1)?;
                self.term(v, depth + 1)
            })
        } else {
            self.whole(term)
        }
    }

    /// Appends `term`'s own encoding (its `term_to_binary` without the version byte).
    fn whole(&mut self, term: Term<'a>) -> Option<()> {
        let etf = term.to_binary();
        self.head.extend_from_slice(etf.as_slice().get(1..)?);
        Some(())
    }

    /// Appends the header of a binary of `len` bytes and a piece referencing its bytes.
    fn reference(&mut self, term: Term<'a>, len: usize) -> Option<()> {
        let kept = match &self.kept {
            Some(kept) => kept.clone(),
            None => {
                // SAFETY: allocates a process-independent env, freed by KeptEnv's drop.
                let env = unsafe { rustler::sys::enif_alloc_env() };
                self.kept.insert(Arc::new(KeptEnv(env))).clone()
            }
        };
        // SAFETY: the copy lives in the kept env; inspecting it there gives a pointer to the
        // (shared, immutable) bytes, valid until the env is freed.
        let mut bin: ErlNifBinary = unsafe { std::mem::zeroed() };
        let ok = unsafe {
            let copy = rustler::sys::enif_make_copy(kept.0, term.as_c_arg());
            rustler::sys::enif_inspect_binary(kept.0, copy, &mut bin)
        };
        if ok == 0 || bin.size != len {
            return None;
        }
        let len32 = u32::try_from(len).ok()?;
        self.head.extend_from_slice(&[BINARY_EXT]);
        self.head.extend_from_slice(&len32.to_be_bytes());
        self.flush();
        self.parts.push(Bytes::from_owner(KeptBinary { _env: kept, data: bin.data, len }));
        Some(())
    }
}
