//! Terms on the wire: the External Term Format through the `erlang-term` crate, plus the pid
//! type a peer hands out.
//!
//! `erlang-term` 1.1 decodes what OTP 25 produces for ordinary messages (integers, big integers,
//! floats, atoms up to 255 bytes, binaries, bit strings, lists, strings, tuples, maps, pids,
//! ports, references and local funs). It does not decode three tags: `ATOM_UTF8_EXT` (atoms of
//! more than 255 bytes), `EXPORT_EXT` (`fun m:f/a`) and `V4_PORT_EXT`; such a message is refused
//! with [`DecodeError::Unsupported`] and counted as undecodable by the data plane, never
//! half-read. The crate's parser indexes its input without checking in places, so a truncated
//! term from a peer could panic it: [`decode`] contains that, so bad bytes cost one message, not
//! the connection.
//!
//! ```
//! use partisan_peer::etf::{decode, encode, Term};
//! let bytes = encode(&Term::SmallTuple(vec![Term::SmallAtom("hello".into()), Term::SmallInt(42)]));
//! assert_eq!(decode(&bytes).unwrap(), Term::SmallTuple(vec![Term::SmallAtom("hello".into()), Term::SmallInt(42)]));
//! ```

pub use erlang_term::RawTerm as Term;

/// The version byte every term starts with.
const VERSION: u8 = 131;
/// Tags `erlang-term` 1.1 does not decode.
const UNSUPPORTED: [(u8, &str); 3] = [(118, "ATOM_UTF8_EXT (an atom longer than 255 bytes)"), (113, "EXPORT_EXT (fun M:F/A)"), (120, "V4_PORT_EXT")];

/// Why bytes are not a term this peer can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a term: {0}")]
    Malformed(String),
    #[error("the term contains {0}, which this peer does not decode")]
    Unsupported(&'static str),
}

/// Decodes one term in the External Term Format (as `binary_to_term/1`).
pub fn decode(bytes: &[u8]) -> Result<Term, DecodeError> {
    if bytes.first() != Some(&VERSION) {
        return Err(DecodeError::Malformed("no version byte 131".into()));
    }
    match std::panic::catch_unwind(|| Term::from_bytes(bytes)) {
        Ok(Ok(term)) => Ok(term),
        Ok(Err(e)) => Err(unsupported_tag(bytes).unwrap_or_else(|| DecodeError::Malformed(format!("{e:?}").chars().take(120).collect()))),
        Err(_) => Err(DecodeError::Malformed("truncated term".into())),
    }
}

/// Names an unsupported tag the term contains, if it contains one: a guess over the bytes that
/// only makes the error clearer (a byte equal to a tag may be data).
fn unsupported_tag(bytes: &[u8]) -> Option<DecodeError> {
    UNSUPPORTED.iter().find(|(tag, _)| bytes[1..].contains(tag)).map(|(_, what)| DecodeError::Unsupported(what))
}

/// Encodes a term (as `term_to_binary/1`) into one buffer.
///
/// Our own for the common tags: `erlang-term`'s encoder builds a vector per element and collects
/// containers byte by byte, so `{chunk, <<1 MiB>>}` took 4 ms (246/s, `examples/etf_speed.rs`)
/// where the BEAM takes 19 µs. The rare tags (big integers, funs, ports, references, old pids,
/// bit strings, deprecated atoms) go through the crate.
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    encode_into(term, &mut out);
    out
}

fn encode_into(term: &Term, out: &mut Vec<u8>) {
    let len32 = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_be_bytes());
    match term {
        Term::SmallInt(i) => out.extend_from_slice(&[97, *i]),
        Term::Int(i) => {
            out.push(98);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Term::Float(f) => {
            out.push(70);
            out.extend_from_slice(&f.0.to_be_bytes());
        }
        Term::SmallAtom(a) if a.len() < 256 => {
            out.extend_from_slice(&[119, a.len() as u8]);
            out.extend_from_slice(a.as_bytes());
        }
        Term::SmallAtom(a) | Term::Atom(a) => {
            out.push(118);
            out.extend_from_slice(&(a.len() as u16).to_be_bytes());
            out.extend_from_slice(a.as_bytes());
        }
        Term::Binary(b) => {
            out.push(109);
            len32(out, b.len());
            out.extend_from_slice(b);
        }
        Term::String(s) => {
            out.push(107);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        Term::Nil => out.push(106),
        Term::SmallTuple(items) => {
            out.extend_from_slice(&[104, items.len() as u8]);
            items.iter().for_each(|t| encode_into(t, out));
        }
        Term::LargeTuple(items) => {
            out.push(105);
            len32(out, items.len());
            items.iter().for_each(|t| encode_into(t, out));
        }
        Term::Map(pairs) => {
            out.push(116);
            len32(out, pairs.len());
            for (k, v) in pairs {
                encode_into(k, out);
                encode_into(v, out);
            }
        }
        Term::List(items) if items.is_empty() => out.push(106),
        // As `erlang-term` reads them: an improper list ends in `Improper(tail)`.
        Term::List(items) => {
            let (tail, elems) = match items.split_last() {
                Some((Term::Improper(tail), elems)) => (Some(&**tail), elems),
                _ => (None, &items[..]),
            };
            out.push(108);
            len32(out, elems.len());
            elems.iter().for_each(|t| encode_into(t, out));
            match tail {
                Some(t) => encode_into(t, out),
                None => out.push(106),
            }
        }
        Term::NewPid { node, id, serial, creation } => {
            out.push(88);
            encode_into(node, out);
            for n in [id, serial, creation] {
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        other => out.extend_from_slice(&other.clone().to_bytes()[1..]),
    }
}

/// An atom term.
pub fn atom(name: &str) -> Term {
    if name.len() < 256 {
        Term::SmallAtom(name.to_owned())
    } else {
        Term::Atom(name.to_owned())
    }
}

/// The text of an atom term.
pub fn atom_text(term: &Term) -> Option<&str> {
    match term {
        Term::SmallAtom(s) | Term::Atom(s) | Term::AtomDeprecated(s) | Term::SmallAtomDeprecated(s) => Some(s),
        _ => None,
    }
}

/// A process identifier: of a mailbox of a Rust peer, or of a BEAM process. It travels as an
/// ordinary pid, so a BEAM process answers it with `partisan:forward_message(Pid, Reply)` as it
/// answers any pid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pid {
    pub node: String,
    pub id: u32,
    pub serial: u32,
    pub creation: u32,
}

impl Pid {
    /// The pid as a term (`NEW_PID_EXT`).
    pub fn to_term(&self) -> Term {
        Term::NewPid { node: Box::new(atom(&self.node)), id: self.id, serial: self.serial, creation: self.creation }
    }

    /// The pid in `term`, when it is one.
    pub fn from_term(term: &Term) -> Option<Pid> {
        let (node, id, serial, creation) = match term {
            Term::NewPid { node, id, serial, creation } => (node, *id, *serial, *creation),
            Term::Pid { node, id, serial, creation } => (node, *id, *serial, *creation as u32),
            _ => return None,
        };
        Some(Pid { node: atom_text(node)?.to_owned(), id, serial, creation })
    }
}

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}.{}.{}>", self.node, self.id, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_round_trip() {
        let pid = Pid { node: "rust1@127.0.0.1".into(), id: 7, serial: 0, creation: 99 };
        let bytes = encode(&pid.to_term());
        assert_eq!(Pid::from_term(&decode(&bytes).unwrap()), Some(pid));
    }

    /// Our encoder writes what `erlang-term`'s does, for every tag it handles itself.
    #[test]
    fn encodes_as_the_crate_does() {
        let terms = vec![
            Term::SmallInt(3),
            Term::Int(-70000),
            Term::Float(1.5.into()),
            atom("ok"),
            Term::Atom("x".repeat(300)),
            Term::Binary(vec![1, 2, 3]),
            Term::String(b"abc".to_vec()),
            Term::Nil,
            Term::List(vec![atom("a"), Term::SmallInt(1)]),
            Term::List(vec![atom("a"), Term::Improper(Box::new(atom("b")))]),
            Term::SmallTuple(vec![atom("t"), Term::Map(vec![(atom("k"), Term::Binary(vec![9; 300]))])]),
            Term::LargeTuple((0..300).map(|i| Term::SmallInt((i % 200) as u8)).collect()),
            Pid { node: "n@h".into(), id: 1, serial: 2, creation: 3 }.to_term(),
            Term::SmallBigInt(num_bigint::BigInt::from(1u128 << 70)),
        ];
        for t in terms {
            assert_eq!(encode(&t), t.clone().to_bytes(), "{t:?}");
        }
        // An empty list is written as the BEAM writes it (NIL_EXT), not as an empty LIST_EXT.
        assert_eq!(encode(&Term::List(vec![])), vec![131, 106]);
        assert_eq!(decode(&encode(&Term::List(vec![]))).unwrap(), Term::Nil);
    }

    #[test]
    fn truncated_and_garbage_input_are_errors() {
        let bytes = encode(&Term::SmallTuple(vec![atom("a"), Term::Binary(vec![1; 100]), Pid { node: "n@h".into(), id: 1, serial: 2, creation: 3 }.to_term()]));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a term cut at {cut} bytes");
        }
        assert!(matches!(decode(&[131, 113, 1, 2]), Err(DecodeError::Unsupported(_))));
        assert!(decode(b"hello").is_err());
    }
}
