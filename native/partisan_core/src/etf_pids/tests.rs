//! The rewriter against a model: terms are generated, encoded by a test encoder (every tag the
//! VM emits, several encodings of each), rewritten, decoded by an independent recursive test
//! decoder and compared with the model in which the matching pids were replaced by references.
//! The EUnit suite `partisan_pid_rewrite_tests` checks the same against the VM's own encoder
//! and `partisan_remote_ref`.

use super::*;
use proptest::prelude::*;

const ME: &str = "nonode@nohost";

#[derive(Clone, Debug, PartialEq)]
enum T {
    Int(i64),
    Float(u64),
    Atom(String),
    Bin(Vec<u8>),
    BitBin(Vec<u8>, u8),
    Str(Vec<u8>),
    Nil,
    List(Vec<T>, Box<T>),
    Tuple(Vec<T>),
    Map(Vec<(T, T)>),
    Pid { node: String, id: u32, serial: u32, creation: u32, old: bool },
    Port { node: String, id: u64, creation: u32 },
    Ref { node: String, creation: u32, ids: Vec<u32> },
    Fun { pid: Box<T>, free: Vec<T> },
    Export(String, String, u8),
}

// -- test encoder --------------------------------------------------------------------------

fn enc(t: &T) -> Vec<u8> {
    let mut b = vec![VERSION];
    enc_into(&mut b, t);
    b
}

fn enc_atom(b: &mut Vec<u8>, a: &str) {
    // Every atom encoding the VM accepts, picked by the text so each appears.
    match a.len() % 4 {
        0 => {
            b.push(ATOM_UTF8);
            b.extend_from_slice(&(a.len() as u16).to_be_bytes());
        }
        1 if a.is_ascii() => {
            b.push(ATOM);
            b.extend_from_slice(&(a.len() as u16).to_be_bytes());
        }
        2 if a.is_ascii() => b.extend_from_slice(&[SMALL_ATOM, a.len() as u8]),
        _ => b.extend_from_slice(&[SMALL_ATOM_UTF8, a.len() as u8]),
    }
    b.extend_from_slice(a.as_bytes());
}

fn enc_into(b: &mut Vec<u8>, t: &T) {
    match t {
        T::Int(i) if (0..=255).contains(i) => b.extend_from_slice(&[SMALL_INTEGER, *i as u8]),
        T::Int(i) if i32::try_from(*i).is_ok() => {
            b.push(INTEGER);
            b.extend_from_slice(&(*i as i32).to_be_bytes());
        }
        T::Int(i) => {
            let digits = i.unsigned_abs().to_le_bytes();
            let n = 8 - digits.iter().rev().take_while(|d| **d == 0).count();
            if n % 2 == 0 {
                b.extend_from_slice(&[SMALL_BIG, n as u8, (*i < 0) as u8]);
            } else {
                b.push(LARGE_BIG);
                b.extend_from_slice(&(n as u32).to_be_bytes());
                b.push((*i < 0) as u8);
            }
            b.extend_from_slice(&digits[..n]);
        }
        T::Float(bits) => {
            b.push(NEW_FLOAT);
            b.extend_from_slice(&bits.to_be_bytes());
        }
        T::Atom(a) => enc_atom(b, a),
        T::Bin(bytes) => {
            b.push(BINARY);
            b.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            b.extend_from_slice(bytes);
        }
        T::BitBin(bytes, bits) => {
            b.push(BIT_BINARY);
            b.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            b.push(*bits);
            b.extend_from_slice(bytes);
        }
        T::Str(bytes) => {
            b.push(STRING);
            b.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            b.extend_from_slice(bytes);
        }
        T::Nil => b.push(NIL),
        T::List(items, tail) => {
            b.push(LIST);
            b.extend_from_slice(&(items.len() as u32).to_be_bytes());
            items.iter().for_each(|i| enc_into(b, i));
            enc_into(b, tail);
        }
        T::Tuple(items) => {
            if items.len() <= 255 && items.len() % 3 != 2 {
                b.extend_from_slice(&[SMALL_TUPLE, items.len() as u8]);
            } else {
                b.push(LARGE_TUPLE);
                b.extend_from_slice(&(items.len() as u32).to_be_bytes());
            }
            items.iter().for_each(|i| enc_into(b, i));
        }
        T::Map(pairs) => {
            b.push(MAP);
            b.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                enc_into(b, k);
                enc_into(b, v);
            }
        }
        T::Pid { node, id, serial, creation, old } => {
            b.push(if *old { PID } else { NEW_PID });
            enc_atom(b, node);
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&serial.to_be_bytes());
            if *old {
                b.push(*creation as u8);
            } else {
                b.extend_from_slice(&creation.to_be_bytes());
            }
        }
        T::Port { node, id, creation } => {
            if *id > u32::MAX as u64 {
                b.push(V4_PORT);
                enc_atom(b, node);
                b.extend_from_slice(&id.to_be_bytes());
            } else {
                b.push(NEW_PORT);
                enc_atom(b, node);
                b.extend_from_slice(&(*id as u32).to_be_bytes());
            }
            b.extend_from_slice(&creation.to_be_bytes());
        }
        T::Ref { node, creation, ids } => {
            b.push(NEWER_REFERENCE);
            b.extend_from_slice(&(ids.len() as u16).to_be_bytes());
            enc_atom(b, node);
            b.extend_from_slice(&creation.to_be_bytes());
            ids.iter().for_each(|i| b.extend_from_slice(&i.to_be_bytes()));
        }
        T::Fun { pid, free } => {
            let start = b.len();
            b.push(NEW_FUN);
            b.extend_from_slice(&[0; 4]);
            b.push(2); // arity
            b.extend_from_slice(&[7; 16]); // uniq
            b.extend_from_slice(&3u32.to_be_bytes()); // index
            b.extend_from_slice(&(free.len() as u32).to_be_bytes());
            enc_atom(b, "some_module");
            enc_into(b, &T::Int(3)); // old index
            enc_into(b, &T::Int(123456789)); // old uniq
            enc_into(b, pid);
            free.iter().for_each(|f| enc_into(b, f));
            let size = (b.len() - start - 1) as u32;
            b[start + 1..start + 5].copy_from_slice(&size.to_be_bytes());
        }
        T::Export(m, f, a) => {
            b.push(EXPORT);
            enc_atom(b, m);
            enc_atom(b, f);
            enc_into(b, &T::Int(*a as i64));
        }
    }
}

// -- test decoder (recursive, independent of the walker) -----------------------------------

struct Dec<'a> {
    b: &'a [u8],
    p: usize,
}

impl Dec<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> usize {
        u16::from_be_bytes(self.take(2).try_into().unwrap()) as usize
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn atom(&mut self) -> String {
        let n = match self.u8() {
            ATOM | ATOM_UTF8 => self.u16(),
            SMALL_ATOM | SMALL_ATOM_UTF8 => self.u8() as usize,
            t => panic!("atom expected, tag {t}"),
        };
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn term(&mut self) -> T {
        let tag = self.b[self.p];
        match tag {
            ATOM | ATOM_UTF8 | SMALL_ATOM | SMALL_ATOM_UTF8 => return T::Atom(self.atom()),
            _ => self.p += 1,
        }
        match tag {
            SMALL_INTEGER => T::Int(self.u8() as i64),
            INTEGER => T::Int(self.u32() as i32 as i64),
            SMALL_BIG | LARGE_BIG => {
                let n = if tag == SMALL_BIG { self.u8() as usize } else { self.u32() as usize };
                let neg = self.u8() == 1;
                let mut digits = [0u8; 8];
                digits[..n].copy_from_slice(self.take(n));
                let v = u64::from_le_bytes(digits) as i64;
                T::Int(if neg { v.wrapping_neg() } else { v })
            }
            NEW_FLOAT => T::Float(u64::from_be_bytes(self.take(8).try_into().unwrap())),
            BINARY => {
                let n = self.u32() as usize;
                T::Bin(self.take(n).to_vec())
            }
            BIT_BINARY => {
                let n = self.u32() as usize;
                let bits = self.u8();
                T::BitBin(self.take(n).to_vec(), bits)
            }
            STRING => {
                let n = self.u16();
                T::Str(self.take(n).to_vec())
            }
            NIL => T::Nil,
            LIST => {
                let n = self.u32() as usize;
                let items = (0..n).map(|_| self.term()).collect();
                T::List(items, Box::new(self.term()))
            }
            SMALL_TUPLE | LARGE_TUPLE => {
                let n = if tag == SMALL_TUPLE { self.u8() as usize } else { self.u32() as usize };
                T::Tuple((0..n).map(|_| self.term()).collect())
            }
            MAP => {
                let n = self.u32() as usize;
                T::Map((0..n).map(|_| (self.term(), self.term())).collect())
            }
            PID | NEW_PID => {
                let node = self.atom();
                let id = self.u32();
                let serial = self.u32();
                let creation = if tag == PID { self.u8() as u32 } else { self.u32() };
                T::Pid { node, id, serial, creation, old: tag == PID }
            }
            NEW_PORT | V4_PORT => {
                let node = self.atom();
                let id = if tag == V4_PORT { u64::from_be_bytes(self.take(8).try_into().unwrap()) } else { self.u32() as u64 };
                T::Port { node, id, creation: self.u32() }
            }
            NEWER_REFERENCE => {
                let n = self.u16();
                let node = self.atom();
                let creation = self.u32();
                T::Ref { node, creation, ids: (0..n).map(|_| self.u32()).collect() }
            }
            NEW_FUN => {
                let start = self.p;
                let size = self.u32() as usize;
                assert_eq!(self.u8(), 2);
                assert_eq!(self.take(16), &[7; 16]);
                assert_eq!(self.u32(), 3);
                let num_free = self.u32() as usize;
                assert_eq!(self.atom(), "some_module");
                assert_eq!(self.term(), T::Int(3));
                assert_eq!(self.term(), T::Int(123456789));
                let pid = Box::new(self.term());
                assert!(matches!(*pid, T::Pid { .. }), "a fun's pid field must stay a pid");
                let free = (0..num_free).map(|_| self.term()).collect();
                assert_eq!(size, self.p - start, "fun size field");
                T::Fun { pid, free }
            }
            EXPORT => {
                let m = self.atom();
                let f = self.atom();
                let T::Int(a) = self.term() else { panic!("arity") };
                T::Export(m, f, a as u8)
            }
            t => panic!("test decoder: tag {t}"),
        }
    }
}

fn dec(b: &[u8]) -> T {
    assert_eq!(b[0], VERSION);
    let mut d = Dec { b, p: 1 };
    let t = d.term();
    assert_eq!(d.p, b.len(), "trailing bytes");
    t
}

// -- the model of a rewrite ----------------------------------------------------------------

fn reference(format: RefFormat, node: &str, id: u32, serial: u32) -> T {
    match format {
        RefFormat::ImproperList => T::List(
            vec![T::Atom(node.into())],
            Box::new(T::Bin(format!("Pid#<0.{id}.{serial}>").into_bytes())),
        ),
        RefFormat::Tuple => T::Tuple(vec![
            T::Atom("partisan_remote_reference".into()),
            T::Atom(node.into()),
            T::Tuple(vec![T::Atom("partisan_process_reference".into()), T::Str(format!("<0.{id}.{serial}>").into_bytes())]),
        ]),
        RefFormat::Uri { padded } => {
            let mut b = format!("partisan:pid:{node}:0.{id}.{serial}").into_bytes();
            if padded && b.len() < 65 {
                b.resize(65, 0);
            }
            T::Bin(b)
        }
    }
}

fn expected(t: &T, format: RefFormat, to: &str) -> T {
    let e = |t: &T| expected(t, format, to);
    match t {
        T::Pid { node, id, serial, .. } if node == ME => reference(format, to, *id, *serial),
        T::List(items, tail) => T::List(items.iter().map(e).collect(), Box::new(e(tail))),
        T::Tuple(items) => T::Tuple(items.iter().map(e).collect()),
        T::Map(pairs) => T::Map(pairs.iter().map(|(k, v)| (e(k), e(v))).collect()),
        // The creator stays a pid; captured values are rewritten.
        T::Fun { pid, free } => T::Fun { pid: pid.clone(), free: free.iter().map(e).collect() },
        other => other.clone(),
    }
}

fn has_match(t: &T) -> bool {
    match t {
        T::Pid { node, .. } => node == ME,
        T::List(items, tail) => items.iter().any(has_match) || has_match(tail),
        T::Tuple(items) => items.iter().any(has_match),
        T::Map(pairs) => pairs.iter().any(|(k, v)| has_match(k) || has_match(v)),
        T::Fun { free, .. } => free.iter().any(has_match),
        _ => false,
    }
}

// -- strategies ----------------------------------------------------------------------------

fn node() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(ME.to_string()),
        1 => Just("a@127.0.0.1".to_string()),
        1 => Just("nonode@nohost2".to_string()),
        1 => Just("n\u{e9}@h\u{f6}st".to_string()),
    ]
}

fn pid() -> impl Strategy<Value = T> {
    (node(), any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>())
        .prop_map(|(node, id, serial, creation, old)| T::Pid { node, id, serial, creation: if old { creation & 3 } else { creation }, old })
}

fn leaf() -> impl Strategy<Value = T> {
    prop_oneof![
        any::<i64>().prop_map(T::Int),
        (0i64..300).prop_map(T::Int),
        any::<u64>().prop_map(T::Float),
        "[a-z_@.]{0,12}".prop_map(T::Atom),
        "\\PC{0,4}".prop_map(T::Atom),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(T::Bin),
        (proptest::collection::vec(any::<u8>(), 1..10), 1u8..8).prop_map(|(b, bits)| T::BitBin(b, bits)),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(T::Str),
        Just(T::Nil),
        pid(),
        pid(),
        (node(), any::<u64>(), any::<u32>()).prop_map(|(node, id, creation)| T::Port { node, id, creation }),
        (node(), any::<u32>(), proptest::collection::vec(any::<u32>(), 1..5))
            .prop_map(|(node, creation, ids)| T::Ref { node, creation, ids }),
        ("[a-z]{1,8}", "[a-z]{1,8}", any::<u8>()).prop_map(|(m, f, a)| T::Export(m, f, a)),
    ]
}

fn term() -> impl Strategy<Value = T> {
    leaf().prop_recursive(6, 200, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(T::Tuple),
            (proptest::collection::vec(inner.clone(), 1..8), inner.clone())
                .prop_map(|(items, tail)| T::List(items, Box::new(tail))),
            proptest::collection::vec(inner.clone(), 1..8).prop_map(|items| T::List(items, Box::new(T::Nil))),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..5).prop_map(T::Map),
            (pid(), proptest::collection::vec(inner.clone(), 0..4)).prop_map(|(pid, free)| T::Fun { pid: Box::new(pid), free }),
        ]
    })
}

fn format() -> impl Strategy<Value = RefFormat> {
    prop_oneof![
        Just(RefFormat::ImproperList),
        Just(RefFormat::Tuple),
        Just(RefFormat::Uri { padded: false }),
        Just(RefFormat::Uri { padded: true }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The output decodes, and is the input with exactly the pids of this VM replaced; a term
    /// without one comes back as `None` (unchanged, not copied).
    #[test]
    fn rewrite_matches_the_model(t in term(), format in format()) {
        let bytes = enc(&t);
        prop_assert_eq!(dec(&bytes), t.clone(), "test encoder/decoder agree");
        let out = PidRewriter::new(ME, format).rewrite(&bytes, "a@127.0.0.1").unwrap();
        prop_assert_eq!(out.is_some(), has_match(&t));
        let decoded = dec(out.as_deref().unwrap_or(&bytes));
        prop_assert_eq!(decoded, expected(&t, format, "a@127.0.0.1"));
    }

    /// Rewriting is idempotent: the output has no pid of this VM left.
    #[test]
    fn a_rewritten_term_has_nothing_left_to_rewrite(t in term(), format in format()) {
        let rw = PidRewriter::new(ME, format);
        if let Some(out) = rw.rewrite(&enc(&t), "b@h").unwrap() {
            prop_assert_eq!(rw.rewrite(&out, "b@h").unwrap(), None);
        }
    }

    /// Any prefix of a term, and any single corrupted byte, is an error or a valid result, never
    /// a panic (the receive path reads peers' bytes).
    #[test]
    fn malformed_input_never_panics(t in term(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let bytes = enc(&t);
        let rw = PidRewriter::new(ME, RefFormat::ImproperList);
        let n = cut.index(bytes.len());
        prop_assert!(rw.rewrite(&bytes[..n], "x@y").is_err());
        let mut corrupted = bytes.clone();
        corrupted[flip.index(bytes.len())] = byte;
        let _ = rw.rewrite(&corrupted, "x@y");
    }
}

#[test]
fn one_pid_in_each_format_is_what_partisan_remote_ref_makes() {
    let pid = T::Pid { node: ME.into(), id: 91, serial: 0, creation: 0, old: false };
    let cases = [
        (RefFormat::ImproperList, T::List(vec![T::Atom("a@127.0.0.1".into())], Box::new(T::Bin(b"Pid#<0.91.0>".to_vec())))),
        (RefFormat::Uri { padded: false }, T::Bin(b"partisan:pid:a@127.0.0.1:0.91.0".to_vec())),
    ];
    for (format, want) in cases {
        let out = PidRewriter::new(ME, format).rewrite(&enc(&pid), "a@127.0.0.1").unwrap().unwrap();
        assert_eq!(dec(&out), want);
    }
    let padded = PidRewriter::new(ME, RefFormat::Uri { padded: true }).rewrite(&enc(&pid), "a@127.0.0.1").unwrap().unwrap();
    let T::Bin(b) = dec(&padded) else { panic!() };
    assert_eq!(b.len(), 65);
    assert!(b.ends_with(&[0, 0]));
}

#[test]
fn large_binaries_are_not_copied_when_nothing_changes_and_copied_verbatim_otherwise() {
    let big: Vec<u8> = (0..8 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let rw = PidRewriter::new(ME, RefFormat::ImproperList);
    let alone = enc(&T::Tuple(vec![T::Bin(big.clone()), T::Atom("ok".into())]));
    assert_eq!(rw.rewrite(&alone, "a@h").unwrap(), None);
    let pid = T::Pid { node: ME.into(), id: 5, serial: 1, creation: 0, old: false };
    let with_pid = enc(&T::Tuple(vec![T::Bin(big.clone()), pid, T::Bin(big.clone())]));
    let out = rw.rewrite(&with_pid, "a@h").unwrap().unwrap();
    let T::Tuple(items) = dec(&out) else { panic!() };
    assert_eq!(items[0], T::Bin(big.clone()));
    assert_eq!(items[1], reference(RefFormat::ImproperList, "a@h", 5, 1));
    assert_eq!(items[2], T::Bin(big));
}

#[test]
fn deep_nesting_neither_overflows_the_stack_nor_grows_it_without_bound() {
    let rw = PidRewriter::new(ME, RefFormat::ImproperList);
    // {{{...{Pid}...}}}: a chain of last elements keeps the stack flat, however deep.
    let depth = 3_000_000;
    let mut b = vec![VERSION];
    for _ in 0..depth {
        b.extend_from_slice(&[SMALL_TUPLE, 1]);
    }
    enc_into(&mut b, &T::Pid { node: ME.into(), id: 1, serial: 2, creation: 0, old: false });
    let out = rw.rewrite(&b, "a@h").unwrap().unwrap();
    let pid_len = enc(&T::Pid { node: ME.into(), id: 1, serial: 2, creation: 0, old: false }).len() - 1;
    let ref_len = enc(&reference(RefFormat::ImproperList, "a@h", 1, 2)).len() - 1;
    assert_eq!(out.len(), b.len() - pid_len + ref_len);
    // [[[...]|x]|x]: heads nested, each list still open: refused past MAX_DEPTH.
    let mut b = vec![VERSION];
    for _ in 0..MAX_DEPTH + 1 {
        b.extend_from_slice(&[LIST, 0, 0, 0, 1]);
    }
    b.resize(b.len() + MAX_DEPTH + 2, NIL);
    assert_eq!(rw.rewrite(&b, "a@h"), Err(EtfError::TooDeep));
}

#[test]
fn errors_say_what_is_wrong() {
    let rw = PidRewriter::new(ME, RefFormat::ImproperList);
    assert_eq!(rw.rewrite(&[], "a@h"), Err(EtfError::Truncated(0)));
    assert_eq!(rw.rewrite(&[130, NIL], "a@h"), Err(EtfError::Version(130)));
    assert_eq!(rw.rewrite(&[VERSION, COMPRESSED, 0, 0, 0, 1], "a@h"), Err(EtfError::Compressed));
    assert_eq!(rw.rewrite(&[VERSION, NIL, NIL], "a@h"), Err(EtfError::Trailing(1)));
    assert_eq!(rw.rewrite(&[VERSION, 82, 0], "a@h"), Err(EtfError::Tag { tag: 82, at: 1 }));
    let mut fun = enc(&T::Fun { pid: Box::new(T::Pid { node: ME.into(), id: 1, serial: 0, creation: 0, old: false }), free: vec![] });
    fun[4] ^= 1;
    assert!(matches!(rw.rewrite(&fun, "a@h"), Err(EtfError::FunSize(1))));
}

/// Throughput of the walk (printed; `cargo test --release -- --nocapture rewrite_speed`): the
/// NIF moves a rewrite to a dirty scheduler above a size chosen from it.
#[test]
fn rewrite_speed() {
    let rw = PidRewriter::new(ME, RefFormat::ImproperList);
    let small: Vec<T> = (0..20_000)
        .map(|i| T::Tuple(vec![T::Atom("item".into()), T::Int(i), T::Bin(vec![1; 16]), T::Pid { node: "a@b".into(), id: i as u32, serial: 0, creation: 1, old: false }]))
        .collect();
    let bytes = enc(&T::List(small, Box::new(T::Nil)));
    let t = std::time::Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        assert_eq!(rw.rewrite(&bytes, "a@h").unwrap(), None);
    }
    let per = t.elapsed() / rounds;
    println!("rewrite_speed: {} bytes of small terms scanned in {:?} ({:.0} MB/s)", bytes.len(), per, bytes.len() as f64 / per.as_secs_f64() / 1e6);
}

/// A map of `n` small-integer keys with `[]` values.
fn map_etf(n: u32) -> Vec<u8> {
    let mut out = vec![116];
    out.extend_from_slice(&n.to_be_bytes());
    for i in 0..n {
        out.extend_from_slice(&[98]);
        out.extend_from_slice(&(i as i32).to_be_bytes());
        out.push(106);
    }
    out
}

#[test]
fn largest_map_finds_the_biggest_map_at_any_depth() {
    assert_eq!(largest_map(&[131, 106]), Ok(0));
    // {ok, [#{...32 keys}, #{...40 keys}]}
    let mut etf = vec![131, 104, 2, 119, 2, b'o', b'k', 108, 0, 0, 0, 2];
    etf.extend(map_etf(32));
    etf.extend(map_etf(40));
    etf.push(106);
    assert_eq!(largest_map(&etf), Ok(40));
    // A map as a map's value.
    let mut nested = vec![131, 116, 0, 0, 0, 1, 97, 1];
    nested.extend(map_etf(5000));
    assert_eq!(largest_map(&nested), Ok(5000));
    // Malformed or compressed input is an error, never a panic or a wrong count.
    for cut in 0..etf.len() {
        assert!(largest_map(&etf[..cut]).is_err(), "cut at {cut}");
    }
    assert_eq!(largest_map(&[131, 80, 0, 0, 0, 1]), Err(EtfError::Compressed));
}

#[test]
fn term_end_finds_where_each_subterm_ends() {
    // {1, <<"abc">>, [x | y]}
    let etf = [131, 104, 3, 97, 1, 109, 0, 0, 0, 3, b'a', b'b', b'c', 108, 0, 0, 0, 1, 119, 1, b'x', 119, 1, b'y'];
    assert_eq!(term_end(&etf, 1), Ok(etf.len()));
    assert_eq!(term_end(&etf, 3), Ok(5), "the small integer");
    assert_eq!(term_end(&etf, 5), Ok(13), "the binary, without reading its bytes");
    assert_eq!(term_end(&etf, 13), Ok(etf.len()), "the improper list and its tail");
    assert_eq!(term_end(&etf[..20], 1), Err(EtfError::Truncated(20)));
}
