//! Decoding a received message so that its large binaries stay where they arrived.
//!
//! `enif_binary_to_term` copies every binary of a term out of the bytes it reads. For a
//! message carrying a 1 MiB binary that is a 1 MiB copy on the reader thread after the kernel
//! copied the same bytes in. [`decode`] instead wraps the received payload in a resource
//! binary and makes each binary of at least [`GATHER_MIN`] bytes a sub-binary of it: the
//! receiving process gets the bytes the socket wrote, and the payload's buffer is freed when the
//! last of those binaries is garbage collected. It is the mirror of [`crate::gather`]: it walks
//! tuples, lists and maps a few levels down (only those large enough to hold such a binary) and
//! decodes every other subterm with `enif_binary_to_term`, so atoms are created (or refused)
//! exactly as for a whole term.
//!
//! The payload must be in a buffer of its own — the frame reader gives frames of 64 KiB to
//! 512 KiB one (see `partisan_core::frame::Decoder`) — or the sub-binaries would keep the
//! reader's whole buffer alive; larger payloads are copied out as before (why: see
//! [`OWN_BUFFER_MAX`]). Maps of more than 32 keys are never built here (see [`crate::deliver`]).

use crate::deliver::MAX_FLAT_MAP;
use crate::gather::{self, BINARY_EXT, GATHER_MIN, LIST_EXT, MAP_EXT, MAX_DEPTH, NIL_EXT, SMALL_TUPLE_EXT, VERSION};
use bytes::Bytes;
use partisan_core::etf_pids::term_end;
use partisan_core::frame::OWN_BUFFER_MAX;
use rustler::{Binary, Env, ResourceArc, Term};

/// Payloads from this size up to the largest frame that has a buffer of its own
/// ([`OWN_BUFFER_MAX`]) are decoded here.
pub const SCATTER_MIN: usize = 64 * 1024;
/// As wide as [`crate::gather`] walks.
const MAX_WIDTH: u32 = gather::MAX_WIDTH as u32;

/// A received payload, owned by the binaries made from it.
pub struct ReceivedPayload(Bytes);

#[rustler::resource_impl]
impl rustler::Resource for ReceivedPayload {}

/// The term encoded in `payload`, its large binaries sub-binaries of the payload; `None` when
/// it is malformed or holds nothing to keep (decode it whole, which reports what is wrong).
pub fn decode<'a>(env: Env<'a>, payload: &Bytes, trusted: bool) -> Option<Term<'a>> {
    if !(SCATTER_MIN..OWN_BUFFER_MAX).contains(&payload.len()) || payload.first() != Some(&VERSION) {
        return None;
    }
    let mut scatter = Scatter { env, etf: payload, trusted, whole: None, scratch: Vec::new() };
    let (term, end) = scatter.term(1, 0)?;
    (end == payload.len()).then_some(term)
}

struct Scatter<'p, 'a> {
    env: Env<'a>,
    etf: &'p Bytes,
    trusted: bool,
    /// The resource binary over the whole payload, made when the first large binary is found.
    whole: Option<Binary<'a>>,
    /// The version byte and one subterm, for `enif_binary_to_term`.
    scratch: Vec<u8>,
}

impl<'p, 'a> Scatter<'p, 'a> {
    fn u32_at(&self, pos: usize) -> Option<u32> {
        Some(u32::from_be_bytes(self.etf.get(pos..pos + 4)?.try_into().ok()?))
    }

    /// The term at `pos` and where it ends.
    fn term(&mut self, pos: usize, depth: usize) -> Option<(Term<'a>, usize)> {
        let end = term_end(self.etf, pos).ok()?;
        let tag = *self.etf.get(pos)?;
        if tag == BINARY_EXT {
            let len = self.u32_at(pos + 1)? as usize;
            if len >= GATHER_MIN {
                return Some((self.sub_binary(pos + 5, len)?, end));
            }
        }
        // A container smaller than a large binary cannot hold one.
        if depth == MAX_DEPTH || end - pos < GATHER_MIN {
            return Some((self.whole(pos, end)?, end));
        }
        let env = self.env;
        match tag {
            SMALL_TUPLE_EXT => {
                let arity = u32::from(*self.etf.get(pos + 1)?);
                if arity > MAX_WIDTH {
                    return Some((self.whole(pos, end)?, end));
                }
                let (elements, at) = self.terms(pos + 2, arity, depth)?;
                Some((rustler::types::tuple::make_tuple(env, &elements), at))
            }
            LIST_EXT => {
                let len = self.u32_at(pos + 1)?;
                if len > MAX_WIDTH {
                    return Some((self.whole(pos, end)?, end));
                }
                let (elements, at) = self.terms(pos + 5, len, depth)?;
                let (tail, at) = if self.etf.get(at) == Some(&NIL_EXT) {
                    (Term::list_new_empty(env), at + 1)
                } else {
                    self.term(at, depth + 1)?
                };
                Some((elements.into_iter().rev().fold(tail, |list, e| list.list_prepend(e)), at))
            }
            MAP_EXT => {
                let size = self.u32_at(pos + 1)?;
                if size > MAX_WIDTH.min(MAX_FLAT_MAP) {
                    return Some((self.whole(pos, end)?, end));
                }
                let (pairs, at) = self.terms(pos + 5, 2 * size, depth)?;
                let (keys, values): (Vec<Term>, Vec<Term>) = pairs.chunks(2).map(|kv| (kv[0], kv[1])).unzip();
                // Fails on duplicate keys, as binary_to_term does.
                Some((Term::map_from_arrays(env, &keys, &values).ok()?, at))
            }
            _ => Some((self.whole(pos, end)?, end)),
        }
    }

    /// `count` consecutive terms from `pos`, one level deeper.
    fn terms(&mut self, mut pos: usize, count: u32, depth: usize) -> Option<(Vec<Term<'a>>, usize)> {
        let mut terms = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (term, end) = self.term(pos, depth + 1)?;
            terms.push(term);
            pos = end;
        }
        Some((terms, pos))
    }

    /// The term in `pos..end`, decoded by the VM (a copy).
    fn whole(&mut self, pos: usize, end: usize) -> Option<Term<'a>> {
        self.scratch.clear();
        self.scratch.push(VERSION);
        self.scratch.extend_from_slice(self.etf.get(pos..end)?);
        let decoded = if self.trusted {
            // SAFETY: enif_binary_to_term validates its input whatever the flags; "trusted"
            // only lets it create atoms (see `BeamSink::decode`).
            unsafe { self.env.binary_to_term_trusted(&self.scratch) }
        } else {
            self.env.binary_to_term(&self.scratch)
        };
        match decoded {
            Some((term, used)) if used == self.scratch.len() => Some(term),
            _ => None,
        }
    }

    /// A sub-binary of the payload.
    fn sub_binary(&mut self, offset: usize, len: usize) -> Option<Term<'a>> {
        if offset.checked_add(len)? > self.etf.len() {
            return None;
        }
        let (env, etf) = (self.env, self.etf);
        let whole = *self.whole.get_or_insert_with(|| ResourceArc::new(ReceivedPayload(etf.clone())).make_binary(env, |p| &p.0[..]));
        whole.make_subbinary(offset, len).ok().map(|b| b.to_term(self.env))
    }
}
