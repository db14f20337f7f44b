//! Rewriting the pids of one node inside an encoded term (Erlang external term format) into
//! Partisan remote references, without decoding the term.
//!
//! A VM that is not alive calls itself `nonode@nohost` and gives its pids creation 0, so a pid
//! sent as is from one such VM decodes on another as a *local* pid there, of whatever process
//! has that number. Partisan v5 avoids it by sending remote references instead of pids
//! (`pid_encoding`); this module does it on the encoded bytes:
//!
//! - on the send path, pids of this VM become references of this partisan node;
//! - on the receive path, pids that claim to be of `nonode@nohost` (a peer that did not rewrite
//!   them) become references of the sending node, so they can never reach a local process.
//!
//! The walker reads each term once, left to right, with an explicit stack (no recursion, so no
//! input can overflow the thread's stack). When no pid matches it returns `None` and nothing is
//! copied: the caller sends the bytes it had. Otherwise the output is built lazily: unchanged
//! runs are copied with one `memcpy` each, binaries included, and only the matching pids are
//! re-encoded. The `Size` field of a fun whose free variables changed is patched. References and
//! ports are not rewritten (see the README).
//!
//! Malformed input (the receive path reads bytes from a peer) is an error, never a panic.

use std::fmt::Write as _;

/// The encoding of a remote reference, as `partisan_remote_ref`'s `remote_ref_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefFormat {
    /// `[Node | <<"Pid#<0.Id.Serial>">>]` (the default).
    ImproperList,
    /// `{partisan_remote_reference, Node, {partisan_process_reference, "<0.Id.Serial>"}}`.
    Tuple,
    /// `<<"partisan:pid:Node:0.Id.Serial">>`, padded with NUL bytes to 65 when `padded`.
    Uri { padded: bool },
}

/// Why a term could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtfError {
    #[error("not an external term (version byte {0})")]
    Version(u8),
    #[error("the term ends early (at byte {0})")]
    Truncated(usize),
    #[error("unsupported tag {tag} at byte {at}")]
    Tag { tag: u8, at: usize },
    #[error("compressed terms are not supported")]
    Compressed,
    #[error("{0} bytes follow the term")]
    Trailing(usize),
    #[error("a fun's size field does not match its contents (at byte {0})")]
    FunSize(usize),
    #[error("the term nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Containers open at once (not counting ones whose last element is being read): 16 MiB of
/// stack at most, whatever the input.
pub const MAX_DEPTH: usize = 1 << 20;

const VERSION: u8 = 131;
const NEW_FLOAT: u8 = 70;
const BIT_BINARY: u8 = 77;
const COMPRESSED: u8 = 80;
const NEW_PID: u8 = 88;
const NEW_PORT: u8 = 89;
const NEWER_REFERENCE: u8 = 90;
const SMALL_INTEGER: u8 = 97;
const INTEGER: u8 = 98;
const FLOAT: u8 = 99;
const ATOM: u8 = 100;
const REFERENCE: u8 = 101;
const PORT: u8 = 102;
const PID: u8 = 103;
const SMALL_TUPLE: u8 = 104;
const LARGE_TUPLE: u8 = 105;
const NIL: u8 = 106;
const STRING: u8 = 107;
const LIST: u8 = 108;
const BINARY: u8 = 109;
const SMALL_BIG: u8 = 110;
const LARGE_BIG: u8 = 111;
const NEW_FUN: u8 = 112;
const EXPORT: u8 = 113;
const NEW_REFERENCE: u8 = 114;
const SMALL_ATOM: u8 = 115;
const MAP: u8 = 116;
const ATOM_UTF8: u8 = 118;
const SMALL_ATOM_UTF8: u8 = 119;
const V4_PORT: u8 = 120;

/// Rewrites the pids of one node (by name) into remote references.
#[derive(Clone, Debug)]
pub struct PidRewriter {
    match_node: Vec<u8>,
    format: RefFormat,
}

/// A container being read: how many terms are left in it, whether pids directly in it may be
/// rewritten (not a fun's own pid field), and for a fun's free variables where its `Size` field
/// is (input offset, output offset).
struct Frame {
    remaining: u64,
    rewrite: bool,
    fun: Option<(usize, usize)>,
}

/// The output, started at the first pid that is rewritten.
struct Out<'a> {
    input: &'a [u8],
    buf: Option<Vec<u8>>,
    /// Input bytes before this offset are in `buf` (or rewritten).
    copied: usize,
}

impl Out<'_> {
    /// Where input offset `pos` lands in the output, for a `pos` at or after `copied`.
    fn out_pos(&self, pos: usize) -> usize {
        match &self.buf {
            Some(b) => b.len() + (pos - self.copied),
            None => pos,
        }
    }

    fn replace(&mut self, start: usize, end: usize, with: impl FnOnce(&mut Vec<u8>)) {
        let input = self.input;
        let buf = self.buf.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
        buf.extend_from_slice(&input[self.copied..start]);
        with(buf);
        self.copied = end;
    }
}

fn need(input: &[u8], pos: usize, n: usize) -> Result<(), EtfError> {
    match pos.checked_add(n) {
        Some(end) if end <= input.len() => Ok(()),
        _ => Err(EtfError::Truncated(input.len())),
    }
}

fn u8_at(input: &[u8], pos: usize) -> Result<u8, EtfError> {
    input.get(pos).copied().ok_or(EtfError::Truncated(input.len()))
}

fn u16_at(input: &[u8], pos: usize) -> Result<usize, EtfError> {
    need(input, pos, 2)?;
    Ok(u16::from_be_bytes([input[pos], input[pos + 1]]) as usize)
}

fn u32_at(input: &[u8], pos: usize) -> Result<u32, EtfError> {
    need(input, pos, 4)?;
    Ok(u32::from_be_bytes([input[pos], input[pos + 1], input[pos + 2], input[pos + 3]]))
}

/// The text and end offset of the atom at `pos`.
fn atom_at(input: &[u8], pos: usize) -> Result<(&[u8], usize), EtfError> {
    let (len, start) = match u8_at(input, pos)? {
        ATOM | ATOM_UTF8 => (u16_at(input, pos + 1)?, pos + 3),
        SMALL_ATOM | SMALL_ATOM_UTF8 => (u8_at(input, pos + 1)? as usize, pos + 2),
        tag => return Err(EtfError::Tag { tag, at: pos }),
    };
    need(input, start, len)?;
    Ok((&input[start..start + len], start + len))
}

/// Offset after `n` bytes from `pos`, checked.
/// An external term starts with the version byte.
fn check_version(etf: &[u8]) -> Result<(), EtfError> {
    match etf.first() {
        Some(&VERSION) => Ok(()),
        Some(&v) => Err(EtfError::Version(v)),
        None => Err(EtfError::Truncated(0)),
    }
}

/// Where the term at `pos` ends, for every tag that is neither a container nor a pid (the two
/// walkers treat those differently); any other tag is an error.
fn scalar_end(etf: &[u8], pos: usize, tag: u8) -> Result<usize, EtfError> {
    Ok(match tag {
        SMALL_INTEGER => skip(etf, pos, 2)?,
        INTEGER => skip(etf, pos, 5)?,
        FLOAT => skip(etf, pos, 32)?,
        NEW_FLOAT => skip(etf, pos, 9)?,
        ATOM | ATOM_UTF8 | SMALL_ATOM | SMALL_ATOM_UTF8 => atom_at(etf, pos)?.1,
        NIL => pos + 1,
        STRING => skip(etf, pos + 3, u16_at(etf, pos + 1)?)?,
        BINARY => skip(etf, pos + 5, u32_at(etf, pos + 1)? as usize)?,
        BIT_BINARY => skip(etf, pos + 6, u32_at(etf, pos + 1)? as usize)?,
        SMALL_BIG => skip(etf, pos + 3, u8_at(etf, pos + 1)? as usize)?,
        LARGE_BIG => skip(etf, pos + 6, u32_at(etf, pos + 1)? as usize)?,
        PORT => skip(etf, atom_at(etf, pos + 1)?.1, 5)?,
        NEW_PORT => skip(etf, atom_at(etf, pos + 1)?.1, 8)?,
        V4_PORT => skip(etf, atom_at(etf, pos + 1)?.1, 12)?,
        REFERENCE => skip(etf, atom_at(etf, pos + 1)?.1, 5)?,
        NEW_REFERENCE | NEWER_REFERENCE => {
            let words = u16_at(etf, pos + 1)?;
            let after_node = atom_at(etf, pos + 3)?.1;
            skip(etf, after_node, if tag == NEW_REFERENCE { 1 } else { 4 } + 4 * words)?
        }
        COMPRESSED => return Err(EtfError::Compressed),
        tag => return Err(EtfError::Tag { tag, at: pos }),
    })
}

fn skip(input: &[u8], pos: usize, n: usize) -> Result<usize, EtfError> {
    need(input, pos, n)?;
    Ok(pos + n)
}

impl PidRewriter {
    /// Rewrites pids whose node is `match_node` (for this VM: `nonode@nohost`).
    pub fn new(match_node: &str, format: RefFormat) -> Self {
        PidRewriter { match_node: match_node.as_bytes().to_vec(), format }
    }

    pub fn format(&self) -> RefFormat {
        self.format
    }

    /// Rewrites every pid of the matched node in `etf` (a whole encoded term, version byte
    /// first) into a remote reference of `ref_node`. `Ok(None)`: there was none, nothing was
    /// copied.
    pub fn rewrite(&self, etf: &[u8], ref_node: &str) -> Result<Option<Vec<u8>>, EtfError> {
        check_version(etf)?;
        let mut out = Out { input: etf, buf: None, copied: 0 };
        let mut stack = vec![Frame { remaining: 1, rewrite: true, fun: None }];
        let mut pos = 1;
        loop {
            // Close the containers that are complete.
            while stack.last().is_some_and(|f| f.remaining == 0) {
                let done = stack.pop().expect("non-empty");
                if let Some(at) = done.fun {
                    patch_fun_size(&mut out, at, pos)?;
                }
            }
            let Some(frame) = stack.last_mut() else { break };
            frame.remaining -= 1;
            let rewrite = frame.rewrite;
            // The last term of a plain container replaces it on the stack, so a chain of
            // nested last elements ([[[...]]], {{{...}}}) keeps the stack flat.
            if frame.remaining == 0 && frame.fun.is_none() {
                stack.pop();
            }
            let at = pos;
            let tag = u8_at(etf, pos)?;
            let mut open = |remaining: u64, rewrite: bool, fun: Option<(usize, usize)>| {
                if stack.len() >= MAX_DEPTH {
                    return Err(EtfError::TooDeep);
                }
                stack.push(Frame { remaining, rewrite, fun });
                Ok(())
            };
            pos = match tag {
                SMALL_TUPLE => {
                    open(u8_at(etf, pos + 1)? as u64, rewrite, None)?;
                    pos + 2
                }
                LARGE_TUPLE => {
                    open(u32_at(etf, pos + 1)? as u64, rewrite, None)?;
                    pos + 5
                }
                MAP => {
                    open(2 * u32_at(etf, pos + 1)? as u64, rewrite, None)?;
                    pos + 5
                }
                LIST => {
                    open(u32_at(etf, pos + 1)? as u64 + 1, rewrite, None)?;
                    pos + 5
                }
                EXPORT => {
                    // module, function, arity
                    open(3, false, None)?;
                    pos + 1
                }
                NEW_FUN => {
                    // Size(4) Arity(1) Uniq(16) Index(4) NumFree(4), then Module, OldIndex,
                    // OldUniq and Pid (the fun's creator: stays a pid), then NumFree terms.
                    let num_free = u32_at(etf, pos + 26)?;
                    let size_at = pos + 1;
                    open(num_free as u64, rewrite, Some((size_at, out.out_pos(size_at))))?;
                    open(4, false, None)?;
                    pos + 30
                }
                PID | NEW_PID => {
                    let (node, after_node) = atom_at(etf, pos + 1)?;
                    let end = skip(etf, after_node, if tag == PID { 9 } else { 12 })?;
                    if rewrite && node == self.match_node.as_slice() {
                        let id = u32_at(etf, after_node)?;
                        let serial = u32_at(etf, after_node + 4)?;
                        out.replace(at, end, |buf| self.encode_ref(buf, ref_node, id, serial));
                    }
                    end
                }
                tag => scalar_end(etf, pos, tag)?,
            };
        }
        if pos != etf.len() {
            return Err(EtfError::Trailing(etf.len() - pos));
        }
        Ok(out.buf.map(|mut buf| {
            buf.extend_from_slice(&etf[out.copied..]);
            buf
        }))
    }

    fn encode_ref(&self, buf: &mut Vec<u8>, node: &str, id: u32, serial: u32) {
        let mut text = String::with_capacity(32);
        match self.format {
            RefFormat::ImproperList => {
                let _ = write!(text, "Pid#<0.{id}.{serial}>");
                buf.push(LIST);
                buf.extend_from_slice(&1u32.to_be_bytes());
                encode_atom(buf, node);
                encode_binary(buf, text.as_bytes());
            }
            RefFormat::Tuple => {
                let _ = write!(text, "<0.{id}.{serial}>");
                buf.extend_from_slice(&[SMALL_TUPLE, 3]);
                encode_atom(buf, "partisan_remote_reference");
                encode_atom(buf, node);
                buf.extend_from_slice(&[SMALL_TUPLE, 2]);
                encode_atom(buf, "partisan_process_reference");
                buf.push(STRING);
                buf.extend_from_slice(&(text.len() as u16).to_be_bytes());
                buf.extend_from_slice(text.as_bytes());
            }
            RefFormat::Uri { padded } => {
                let _ = write!(text, "partisan:pid:{node}:0.{id}.{serial}");
                let mut bytes = text.into_bytes();
                if padded && bytes.len() < 65 {
                    bytes.resize(65, 0);
                }
                encode_binary(buf, &bytes);
            }
        }
    }
}

/// The most keys of any map in an encoded term (0 when it holds none), read without decoding it.
///
/// Why: OTP 23.3.4.15+, 24.3.4.2+, 25.1+ and 26 crash the VM (SEGV) when a thread that is not a
/// scheduler decodes a map of more than 32 keys with `enif_binary_to_term` (erlang/otp#8208,
/// fixed in OTP 27.3): the receive path must hand such terms to a scheduler. Like
/// [`PidRewriter::rewrite`] it reads each term once, iteratively; it only counts what is left
/// to read, so it needs no stack. A compressed term cannot be read without inflating it: an
/// error, as is malformed input.
pub fn largest_map(etf: &[u8]) -> Result<u32, EtfError> {
    check_version(etf)?;
    let mut largest = 0u32;
    let end = walk(etf, 1, |keys| largest = largest.max(keys))?;
    if end != etf.len() {
        return Err(EtfError::Trailing(etf.len() - end));
    }
    Ok(largest)
}

/// Where the term that starts at `pos` (a tag byte, after the version byte) ends, read without
/// decoding it: the receive path cuts terms into their subterms with it.
pub fn term_end(etf: &[u8], pos: usize) -> Result<usize, EtfError> {
    walk(etf, pos, |_| {})
}

/// Reads the term at `pos` to its end, telling `on_map` the key count of each map in it. It
/// only counts what is left to read, so it needs no stack.
fn walk(etf: &[u8], mut pos: usize, mut on_map: impl FnMut(u32)) -> Result<usize, EtfError> {
    let mut left = 1u64;
    while left > 0 {
        left -= 1;
        pos = match u8_at(etf, pos)? {
            SMALL_TUPLE => {
                left += u64::from(u8_at(etf, pos + 1)?);
                pos + 2
            }
            LARGE_TUPLE => {
                left += u64::from(u32_at(etf, pos + 1)?);
                pos + 5
            }
            MAP => {
                let keys = u32_at(etf, pos + 1)?;
                on_map(keys);
                left += 2 * u64::from(keys);
                pos + 5
            }
            LIST => {
                left += u64::from(u32_at(etf, pos + 1)?) + 1;
                pos + 5
            }
            EXPORT => {
                left += 3;
                pos + 1
            }
            NEW_FUN => {
                left += 4 + u64::from(u32_at(etf, pos + 26)?);
                pos + 30
            }
            PID => skip(etf, atom_at(etf, pos + 1)?.1, 9)?,
            NEW_PID => skip(etf, atom_at(etf, pos + 1)?.1, 12)?,
            tag => scalar_end(etf, pos, tag)?,
        };
    }
    Ok(pos)
}

/// A fun whose free variables were rewritten gets its new size. `at` = (input, output) offset
/// of its `Size` field; `end` = input offset just past the fun.
fn patch_fun_size(out: &mut Out, (size_in, size_out): (usize, usize), end: usize) -> Result<(), EtfError> {
    if u32_at(out.input, size_in)? as usize != end - size_in {
        return Err(EtfError::FunSize(size_in - 1));
    }
    let new_end = out.out_pos(end);
    if let Some(buf) = out.buf.as_mut() {
        // Written out already: something inside the fun was rewritten (a rewrite before the fun
        // flushes only up to the pid it replaced).
        if size_out + 4 <= buf.len() {
            let size = (new_end - size_out) as u32;
            buf[size_out..size_out + 4].copy_from_slice(&size.to_be_bytes());
        }
    }
    Ok(())
}

fn encode_atom(buf: &mut Vec<u8>, name: &str) {
    if name.len() <= 255 {
        buf.extend_from_slice(&[SMALL_ATOM_UTF8, name.len() as u8]);
    } else {
        buf.push(ATOM_UTF8);
        buf.extend_from_slice(&(name.len() as u16).to_be_bytes());
    }
    buf.extend_from_slice(name.as_bytes());
}

fn encode_binary(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.push(BINARY);
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests;
