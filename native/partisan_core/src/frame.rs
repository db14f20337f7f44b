//! Length-prefixed frames: the only unit that crosses a Partisan connection.
//!
//! ```text
//! +----------------+---------+------------------------+
//! | length: u32 BE | type u8 | body (length - 1 bytes) |
//! +----------------+---------+------------------------+
//! ```
//!
//! The decoder checks the length against a configured maximum *before* buffering the body, so an
//! oversized or hostile length prefix costs the peer its connection, not our memory. Message
//! bodies are split off the read buffer without copying (`Bytes`), so a delivered payload is the
//! same allocation the socket read into.
//!
//! ```
//! use bytes::BytesMut;
//! use partisan_core::frame::{Decoder, Dest, Frame};
//!
//! let mut buf = BytesMut::new();
//! Frame::Message { dest: Dest::Name("logger".into()), payload: b"\x83j"[..].into() }.encode(&mut buf);
//! let mut decoder = Decoder::new(1 << 20);
//! let frame = decoder.decode(&mut buf).unwrap().unwrap();
//! assert!(matches!(frame, Frame::Message { dest: Dest::Name(n), .. } if n == "logger"));
//! ```

use crate::wire::{Reader, WireError, WriteExt};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version sent in every handshake; peers with another version are refused.
/// Version 2: the accepting side speaks first with a bare nonce and the connecting side proves
/// knowledge of the cookie first (see [`crate::handshake`]).
pub const PROTOCOL_VERSION: u16 = 2;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Length of handshake nonces and proofs.
pub const NONCE_LEN: usize = 32;

const T_HELLO: u8 = 1;
const T_CHALLENGE: u8 = 2;
// 3 was version 1's client proof; it is not reused.
const T_REFUSED: u8 = 4;
const T_ACCEPT: u8 = 5;
const T_MESSAGE: u8 = 16;
const T_CONTROL: u8 = 17;
const T_PING: u8 = 18;
const T_PONG: u8 = 19;
const T_RELAY: u8 = 20;
const T_BROADCAST: u8 = 21;
const T_SEQUENCED: u8 = 22;
const T_ACK: u8 = 23;
/// A message frame whose payload is zstd-compressed (see [`crate::compress`]).
pub(crate) const T_MESSAGE_ZSTD: u8 = 24;
const T_RELAY_SEQUENCED: u8 = 25;
const T_RELAY_ACK: u8 = 26;

const D_PID: u8 = 0;
const D_NAME: u8 = 1;
const D_PID_ID: u8 = 2;
const D_REPLY: u8 = 3;

/// Where a message frame goes on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A pid in the external term format, as the sender's VM encoded it. The receiver decodes it
    /// and delivers only if it is a live local pid: a pid of an older incarnation of the receiving
    /// node decodes as non-local and is dropped.
    Pid(Bytes),
    /// A registered name on the receiving node. Looked up as an existing atom only.
    Name(String),
    /// A local pid given by its id and serial (`<0.Id.Serial>`), from a Partisan remote reference.
    PidId { id: u32, serial: u32 },
    /// The answer to a remote call: `id` names a waiting caller in the receiver's
    /// [`crate::calls::CallTable`]. Delivered only while that caller still waits, and only when
    /// it comes from the node the call went to; otherwise dropped as a late reply.
    Reply { id: u64 },
}

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Server → client, the first frame on a connection: the server's protocol version and a
    /// fresh nonce. Nothing in it depends on the cookie or names the server.
    Challenge { version: u16, nonce: [u8; NONCE_LEN] },
    /// Client → server: who I am, which connection of which channel this is, my nonce, and my
    /// proof of the shared secret over the whole transcript.
    Hello { version: u16, node: String, channel: String, conn_index: u16, nonce: [u8; NONCE_LEN], proof: [u8; NONCE_LEN] },
    /// Server → client, once the client has proved itself: the largest frame the server accepts
    /// and the server's proof of the shared secret.
    Accept { max_frame: u32, proof: [u8; NONCE_LEN] },
    /// Either side: the handshake failed for a reason the other side can act on.
    Refused { reason: String },
    /// A user message for a process on the receiving node; the payload is ETF.
    Message { dest: Dest, payload: Bytes },
    /// Something for `target`, which may not be a neighbour: relayed through the overlay (see
    /// [`crate::relay`]). `id` is unique per `origin` (and per transmission).
    Relay { origin: String, id: u64, hops: u8, target: String, body: RelayBody },
    /// A Plumtree message in its own encoding (see [`crate::plumtree`]).
    Broadcast { body: Bytes },
    /// An overlay protocol message in the overlay's own encoding (see [`crate::overlay`]).
    Control { body: Bytes },
    /// A message sent with `ack`: number `seq` of the sender's stream on this connection's link
    /// (see [`crate::ack`]). `incarnation` is the sender's; `base` is the oldest message the
    /// sender still holds, so the receiver skips what the sender gave up on.
    Sequenced { incarnation: u64, seq: u64, base: u64, dest: Dest, payload: Bytes },
    /// Receiver → sender, on the same connection: every message of the sender's stream
    /// (incarnation `incarnation`) up to `seq` is delivered.
    Ack { incarnation: u64, seq: u64 },
    /// Dialer → acceptor on an idle link (`connection_ping`); answered with [`Frame::Pong`].
    Ping { seq: u64 },
    Pong { seq: u64 },
}

/// What a [`Frame::Relay`] carries to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayBody {
    /// A message, best effort (`transitive => true`).
    Message { dest: Dest, payload: Bytes },
    /// A message sent with `ack` across the overlay: number `seq` of the origin's stream to the
    /// target (see [`crate::relay_ack`]); the fields mean what they mean in [`Frame::Sequenced`].
    /// `ack`, when set, acknowledges the target's stream to the origin as [`RelayBody::Ack`]
    /// does (piggy-backed: a reply carries the ack of its request).
    Sequenced { incarnation: u64, seq: u64, base: u64, ack: Option<RelayAck>, dest: Dest, payload: Bytes },
    /// Every message of the target's stream to the origin (incarnation `incarnation`) up to
    /// `seq` is delivered.
    Ack(RelayAck),
}

/// A cumulative ack of a stream of messages sent with `ack` across the overlay: every message of
/// the stream of sender incarnation `incarnation` up to `seq` is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAck {
    pub incarnation: u64,
    pub seq: u64,
}

/// Bytes a piggy-backed [`RelayAck`] adds to a [`RelayBody::Sequenced`] at most (a flag byte,
/// then the ack when set).
const PIGGY_ACK_LEN: usize = 17;

/// Bytes of the header a [`Frame::Sequenced`] adds to a message frame.
pub const SEQUENCED_HEADER: usize = 24;

/// Why the byte stream of a connection cannot be read further. Every variant closes the
/// connection; none is a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame (length 0)")]
    Empty,
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("malformed frame: {0}")]
    Malformed(#[from] WireError),
    #[error("compressed message: {0}")]
    Compressed(String),
}

impl Frame {
    /// Appends the encoded frame, length prefix included.
    pub fn encode(&self, out: &mut BytesMut) {
        if let Frame::Message { dest, payload } = self {
            encode_message_header(dest, payload.len(), out);
            out.put_slice(payload);
            return;
        }
        if let Frame::Relay { origin, id, hops, target, body } = self {
            let start = out.len();
            out.put_u32(0); // patched below
            out.put_u8(match body {
                RelayBody::Message { .. } => T_RELAY,
                RelayBody::Sequenced { .. } => T_RELAY_SEQUENCED,
                RelayBody::Ack { .. } => T_RELAY_ACK,
            });
            out.put_str16(origin);
            out.put_u64(*id);
            out.put_u8(*hops);
            out.put_str16(target);
            match body {
                RelayBody::Message { dest, payload } => encode_message_body(dest, payload, out),
                RelayBody::Sequenced { incarnation, seq, base, ack, dest, payload } => {
                    out.put_u64(*incarnation);
                    out.put_u64(*seq);
                    out.put_u64(*base);
                    match ack {
                        None => out.put_u8(0),
                        Some(RelayAck { incarnation, seq }) => {
                            out.put_u8(1);
                            out.put_u64(*incarnation);
                            out.put_u64(*seq);
                        }
                    }
                    encode_message_body(dest, payload, out);
                }
                RelayBody::Ack(RelayAck { incarnation, seq }) => {
                    out.put_u64(*incarnation);
                    out.put_u64(*seq);
                }
            }
            let len = (out.len() - start - LENGTH_PREFIX) as u32;
            out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
            return;
        }
        if let Frame::Sequenced { incarnation, seq, base, dest, payload } = self {
            encode_sequenced_header(*incarnation, *seq, *base, dest, payload.len(), out);
            out.put_slice(payload);
            return;
        }
        let start = out.len();
        out.put_u32(0); // patched below
        match self {
            Frame::Challenge { version, nonce } => {
                out.put_u8(T_CHALLENGE);
                out.put_u16(*version);
                out.put_slice(nonce);
            }
            Frame::Hello { version, node, channel, conn_index, nonce, proof } => {
                out.put_u8(T_HELLO);
                out.put_u16(*version);
                out.put_str16(node);
                out.put_str16(channel);
                out.put_u16(*conn_index);
                out.put_slice(nonce);
                out.put_slice(proof);
            }
            Frame::Accept { max_frame, proof } => {
                out.put_u8(T_ACCEPT);
                out.put_u32(*max_frame);
                out.put_slice(proof);
            }
            Frame::Refused { reason } => {
                out.put_u8(T_REFUSED);
                out.put_str16(reason);
            }
            Frame::Control { body } => {
                out.put_u8(T_CONTROL);
                out.put_slice(body);
            }
            Frame::Broadcast { body } => {
                out.put_u8(T_BROADCAST);
                out.put_slice(body);
            }
            Frame::Ping { seq } => {
                out.put_u8(T_PING);
                out.put_u64(*seq);
            }
            Frame::Pong { seq } => {
                out.put_u8(T_PONG);
                out.put_u64(*seq);
            }
            Frame::Ack { incarnation, seq } => {
                out.put_u8(T_ACK);
                out.put_u64(*incarnation);
                out.put_u64(*seq);
            }
            Frame::Message { .. } | Frame::Relay { .. } | Frame::Sequenced { .. } => unreachable!("handled above"),
        }
        let len = (out.len() - start - LENGTH_PREFIX) as u32;
        out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Parses one frame body (type byte first, length prefix already removed). A compressed
    /// message may expand to at most [`crate::compress::DEFAULT_MAX_EXPANDED`] bytes.
    pub fn parse(body: Bytes) -> Result<Frame, FrameError> {
        Frame::parse_bounded(body, crate::compress::DEFAULT_MAX_EXPANDED)
    }

    /// [`Frame::parse`], a compressed message expanding to at most `max_expanded` bytes.
    pub fn parse_bounded(mut body: Bytes, max_expanded: usize) -> Result<Frame, FrameError> {
        if body.is_empty() {
            return Err(FrameError::Empty);
        }
        let ty = body.get_u8();
        if ty == T_MESSAGE {
            return parse_message(body);
        }
        if ty == T_MESSAGE_ZSTD {
            return match parse_message(body)? {
                Frame::Message { dest, payload } => Ok(Frame::Message { dest, payload: crate::compress::unpack(&payload, max_expanded)? }),
                _ => unreachable!("parse_message returns messages"),
            };
        }
        if ty == T_CONTROL {
            return Ok(Frame::Control { body });
        }
        if ty == T_BROADCAST {
            return Ok(Frame::Broadcast { body });
        }
        if matches!(ty, T_RELAY | T_RELAY_SEQUENCED | T_RELAY_ACK) {
            return parse_relay(ty, body);
        }
        if ty == T_SEQUENCED {
            let mut r = Reader::new(&body);
            let (incarnation, seq, base) = (r.u64("incarnation")?, r.u64("sequence number")?, r.u64("base")?);
            return match parse_message(body.slice(SEQUENCED_HEADER..))? {
                Frame::Message { dest, payload } => Ok(Frame::Sequenced { incarnation, seq, base, dest, payload }),
                _ => unreachable!("parse_message returns messages"),
            };
        }
        let mut r = Reader::new(&body);
        let frame = match ty {
            T_CHALLENGE => Frame::Challenge { version: r.u16("version")?, nonce: r.array("nonce")? },
            T_HELLO => Frame::Hello {
                version: r.u16("version")?,
                node: r.str("node name")?,
                channel: r.str("channel")?,
                conn_index: r.u16("connection index")?,
                nonce: r.array("nonce")?,
                proof: r.array("proof")?,
            },
            T_ACCEPT => Frame::Accept { max_frame: r.u32("max frame size")?, proof: r.array("proof")? },
            T_REFUSED => Frame::Refused { reason: r.str("reason")? },
            T_PING => Frame::Ping { seq: r.u64("ping")? },
            T_PONG => Frame::Pong { seq: r.u64("pong")? },
            T_ACK => Frame::Ack { incarnation: r.u64("incarnation")?, seq: r.u64("ack")? },
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish("frame")?;
        Ok(frame)
    }
}

/// Bytes of the destination in a message frame (as [`encode_message_header`] writes it).
fn dest_len(dest: &Dest) -> usize {
    match dest {
        Dest::Pid(etf) => 1 + 2 + etf.len(),
        Dest::Name(name) => 1 + 2 + name.len(),
        Dest::PidId { .. } | Dest::Reply { .. } => 1 + 8,
    }
}

/// The length (as in the length prefix, which [`Decoder`] checks against its maximum) of a
/// message frame for `dest` with a payload of `payload_len` bytes.
pub fn message_frame_len(dest: &Dest, payload_len: usize) -> usize {
    1 + dest_len(dest) + payload_len
}

/// The length of a relay frame (see [`Frame::Relay`]) carrying such a message.
pub fn relay_frame_len(origin: &str, target: &str, dest: &Dest, payload_len: usize) -> usize {
    message_frame_len(dest, payload_len) + 2 + origin.len() + 8 + 1 + 2 + target.len()
}

/// The length of a relay frame carrying such a message with `ack` ([`RelayBody::Sequenced`]).
pub fn relay_sequenced_frame_len(origin: &str, target: &str, dest: &Dest, payload_len: usize) -> usize {
    relay_frame_len(origin, target, dest, payload_len) + SEQUENCED_HEADER + PIGGY_ACK_LEN
}

/// Writes the length prefix, type and destination of a message frame whose payload of
/// `payload_len` bytes follows. Lets a writer send a large payload without copying it.
pub fn encode_message_header(dest: &Dest, payload_len: usize, out: &mut BytesMut) {
    encode_header(T_MESSAGE, dest, payload_len, out)
}

/// The header of a [`Frame::Sequenced`] whose payload of `payload_len` bytes follows.
pub fn encode_sequenced_header(incarnation: u64, seq: u64, base: u64, dest: &Dest, payload_len: usize, out: &mut BytesMut) {
    let len = SEQUENCED_HEADER + message_frame_len(dest, payload_len);
    out.reserve(LENGTH_PREFIX + 1 + SEQUENCED_HEADER + dest_len(dest));
    out.put_u32(u32::try_from(len).expect("message larger than 4 GiB"));
    out.put_u8(T_SEQUENCED);
    out.put_u64(incarnation);
    out.put_u64(seq);
    out.put_u64(base);
    encode_dest(dest, out);
}

/// The header of a message frame of type `ty` with `rest_len` bytes after the destination.
pub(crate) fn encode_header(ty: u8, dest: &Dest, rest_len: usize, out: &mut BytesMut) {
    let dest_len = dest_len(dest);
    let len = 1 + dest_len + rest_len;
    out.reserve(LENGTH_PREFIX + 1 + dest_len);
    out.put_u32(u32::try_from(len).expect("message larger than 4 GiB"));
    out.put_u8(ty);
    encode_dest(dest, out);
}

fn encode_dest(dest: &Dest, out: &mut BytesMut) {
    match dest {
        Dest::Pid(etf) => {
            out.put_u8(D_PID);
            out.put_u16(u16::try_from(etf.len()).expect("pid ETF larger than 64 KiB"));
            out.put_slice(etf);
        }
        Dest::Name(name) => {
            out.put_u8(D_NAME);
            out.put_str16(name);
        }
        Dest::PidId { id, serial } => {
            out.put_u8(D_PID_ID);
            out.put_u32(*id);
            out.put_u32(*serial);
        }
        Dest::Reply { id } => {
            out.put_u8(D_REPLY);
            out.put_u64(*id);
        }
    }
}

/// A message's destination and payload, as in a message frame after its type byte.
fn encode_message_body(dest: &Dest, payload: &Bytes, out: &mut BytesMut) {
    encode_dest(dest, out);
    out.put_slice(payload);
}

/// A relay frame's body (after the type byte): the routing header, then what `ty` says.
fn parse_relay(ty: u8, body: Bytes) -> Result<Frame, FrameError> {
    let mut r = Reader::new(&body);
    let origin = r.str("relay origin")?;
    let id = r.u64("relay id")?;
    let hops = r.u8("relay hops")?;
    let target = r.str("relay target")?;
    let message = |r: &Reader| match parse_message(body.slice(body.len() - r.remaining()..))? {
        Frame::Message { dest, payload } => Ok::<_, FrameError>((dest, payload)),
        _ => unreachable!("parse_message returns messages"),
    };
    let body = match ty {
        T_RELAY => {
            let (dest, payload) = message(&r)?;
            RelayBody::Message { dest, payload }
        }
        T_RELAY_SEQUENCED => {
            let (incarnation, seq, base) = (r.u64("incarnation")?, r.u64("sequence number")?, r.u64("base")?);
            let ack = match r.u8("piggy-backed ack flag")? {
                0 => None,
                1 => Some(RelayAck { incarnation: r.u64("incarnation")?, seq: r.u64("ack")? }),
                other => return Err(WireError::BadValue { what: "piggy-backed ack flag", value: other as u64 }.into()),
            };
            let (dest, payload) = message(&r)?;
            RelayBody::Sequenced { incarnation, seq, base, ack, dest, payload }
        }
        _ => {
            let ack = RelayBody::Ack(RelayAck { incarnation: r.u64("incarnation")?, seq: r.u64("ack")? });
            r.finish("relayed ack")?;
            ack
        }
    };
    Ok(Frame::Relay { origin, id, hops, target, body })
}

fn parse_message(body: Bytes) -> Result<Frame, FrameError> {
    let mut r = Reader::new(&body);
    let dest = match r.u8("destination kind")? {
        D_PID => {
            let len = r.u16("destination pid")? as usize;
            let start = 3;
            r.take(len, "destination pid")?;
            Dest::Pid(body.slice(start..start + len))
        }
        D_NAME => Dest::Name(r.str("destination name")?),
        D_PID_ID => Dest::PidId { id: r.u32("pid id")?, serial: r.u32("pid serial")? },
        D_REPLY => Dest::Reply { id: r.u64("reply id")? },
        other => return Err(WireError::BadValue { what: "destination kind", value: other as u64 }.into()),
    };
    let consumed = body.len() - r.remaining();
    Ok(Frame::Message { dest, payload: body.slice(consumed..) })
}

/// The least a decoder waiting for the rest of a frame reserves.
const GROW_MIN: usize = 64 * 1024;
/// Frames at least this large get a buffer of their own (see [`Decoder`])...
pub const OWN_BUFFER_MIN: usize = 64 * 1024;
/// ...and frames larger than this do not: they are read into the growing read buffer, and the
/// receiver copies their payload out of it. Measured on 1 MiB messages: once the receiving
/// processes hold more payloads than the pool keeps (they free them at their next garbage
/// collection), every new buffer is fresh memory from the kernel and page-faults on each byte,
/// which costs more than the copy into a VM binary (the VM's allocator caches such segments).
/// It also bounds what a length prefix alone makes the decoder reserve.
pub const OWN_BUFFER_MAX: usize = 512 * 1024;

/// Buffers of large frames, used again once everything made of them is dropped.
///
/// A large frame is read into a buffer of its own, and the receiver may keep its payload a
/// while (as sub-binaries of a message, until the process holding them collects its garbage).
/// Allocating each such buffer afresh costs more than the copy it saves: `malloc` maps
/// buffers above 128 KiB straight from the kernel and unmaps them when freed, so every byte of
/// every frame would page-fault once. The pool keeps up to [`FramePool::MAX_BYTES`] of returned
/// buffers for the next frames.
#[derive(Debug, Default)]
pub struct FramePool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl FramePool {
    /// Returned buffers kept, in bytes of capacity.
    pub const MAX_BYTES: usize = 32 << 20;

    /// The returned buffers (a panic while the lock was held left them as they were).
    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for `len` bytes: a returned one at most twice as large, or a
    /// new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free();
        match free.iter().position(|b| b.capacity() >= len && b.capacity() <= 2 * len) {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free();
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= Self::MAX_BYTES {
            free.push(buf);
        }
    }

    /// Buffers kept and their total capacity.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let free = self.free();
        (free.len(), free.iter().map(Vec::capacity).sum())
    }
}

/// A frame's own buffer, given back to its pool when the last piece of it is dropped.
struct PooledBuffer {
    buf: Vec<u8>,
    pool: std::sync::Arc<FramePool>,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Splits a byte stream into frames, enforcing the maximum frame size.
///
/// With a [`FramePool`] ([`Decoder::with_pool`]; a reader then follows
/// [`Decoder::own_buffer`] and [`Decoder::prefix_only`]), a large frame (from
/// [`OWN_BUFFER_MIN`] to [`OWN_BUFFER_MAX`] bytes) is read into a buffer of its own, taken from
/// the pool when it starts: its bytes are then never moved while the rest arrives, and its
/// payload — which the receiver may keep, e.g. as sub-binaries of a message — holds only that
/// buffer, not the read buffer. What arrived of it with an earlier read is copied over; so that
/// nothing is, a reader reads only the next length prefix after such a frame: large frames tend
/// to follow each other, and then each is read straight into its own buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: usize,
    pool: Option<std::sync::Arc<FramePool>>,
    /// The large frame being read into its own buffer, and its total length.
    own: Option<(Vec<u8>, usize)>,
    /// The last frame taken was read into its own buffer.
    after_large: bool,
}

impl Decoder {
    pub fn new(max_frame: usize) -> Self {
        Decoder { max_frame, pool: None, own: None, after_large: false }
    }

    /// The same decoder taking the buffers of large frames from `pool`.
    pub fn with_pool(mut self, pool: std::sync::Arc<FramePool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Where the next read must go while a large frame is read into its own buffer: that
    /// buffer, limited to the bytes the frame still lacks (nothing of the next frame lands in
    /// it).
    pub fn own_buffer(&mut self) -> Option<bytes::buf::Limit<&mut Vec<u8>>> {
        let (own, total) = self.own.as_mut()?;
        let missing = *total - own.len();
        Some(own.limit(missing))
    }

    /// Whether the reader should read just the next length prefix ([`LENGTH_PREFIX`] bytes)
    /// into `buf`: the frame before was large, so the next one may be too, and then it gets its
    /// own buffer before any of its body is read.
    pub fn prefix_only(&self, buf: &BytesMut) -> bool {
        self.after_large && self.own.is_none() && buf.len() < LENGTH_PREFIX
    }

    /// Takes one complete frame off the front of `buf` (or out of a large frame's own buffer),
    /// or returns `Ok(None)` if more bytes are needed. After an error the stream is unusable and
    /// the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some((own, total)) = &self.own {
            if own.len() < *total {
                return Ok(None);
            }
            let (own, _) = self.own.take().expect("checked");
            self.after_large = true;
            let pool = self.pool.clone().expect("own buffers come from the pool");
            let frame = Bytes::from_owner(PooledBuffer { buf: own, pool });
            return Frame::parse_bounded(frame.slice(LENGTH_PREFIX..), self.max_frame).map(Some);
        }
        if buf.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes(buf[..LENGTH_PREFIX].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        let total = LENGTH_PREFIX + len;
        if buf.len() < total {
            let own_buffer = (OWN_BUFFER_MIN..=OWN_BUFFER_MAX).contains(&total);
            if let Some(pool) = self.pool.as_ref().filter(|_| own_buffer) {
                // Everything buffered belongs to this frame (it is incomplete).
                let mut own = pool.take(total);
                own.extend_from_slice(buf);
                buf.clear();
                self.own = Some((own, total));
                return Ok(None);
            }
            // Grow with the bytes that actually arrived (at most doubling, at least a read's
            // worth), never to the announced length at once: a 4-byte prefix alone must not make
            // us reserve up to `max_frame`.
            let missing = total - buf.len();
            buf.reserve(missing.min(buf.len().max(GROW_MIN)));
            return Ok(None);
        }
        self.after_large = false;
        buf.advance(LENGTH_PREFIX);
        Frame::parse_bounded(buf.split_to(len).freeze(), self.max_frame).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let mut dec = Decoder::new(1 << 20);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_type_roundtrips() {
        roundtrip(Frame::Challenge { version: 2, nonce: [1; 32] });
        roundtrip(Frame::Hello { version: 2, node: "a@h".into(), channel: "undefined".into(), conn_index: 3, nonce: [7; 32], proof: [8; 32] });
        roundtrip(Frame::Accept { max_frame: 1 << 20, proof: [9; 32] });
        roundtrip(Frame::Refused { reason: "bad cookie".into() });
        roundtrip(Frame::Message { dest: Dest::Pid(Bytes::from_static(b"\x83X")), payload: Bytes::from_static(b"abc") });
        roundtrip(Frame::Message { dest: Dest::Name("srv".into()), payload: Bytes::new() });
        roundtrip(Frame::Message { dest: Dest::PidId { id: 123, serial: 4 }, payload: Bytes::from_static(b"x") });
        roundtrip(Frame::Message { dest: Dest::Reply { id: u64::MAX - 7 }, payload: Bytes::from_static(b"r") });
        roundtrip(Frame::Control { body: Bytes::from_static(b"\x01\x02") });
        let relay = |body| Frame::Relay { origin: "a@h".into(), id: 9, hops: 3, target: "z@h".into(), body };
        roundtrip(relay(RelayBody::Message { dest: Dest::Name("srv".into()), payload: Bytes::from_static(b"\x83a\x01") }));
        for ack in [None, Some(RelayAck { incarnation: 3, seq: 9 })] {
            roundtrip(relay(RelayBody::Sequenced {
                incarnation: 5,
                seq: 7,
                base: 2,
                ack,
                dest: Dest::PidId { id: 1, serial: 0 },
                payload: Bytes::from_static(b"\x83j"),
            }));
        }
        roundtrip(relay(RelayBody::Ack(RelayAck { incarnation: 5, seq: 1 << 33 })));
        roundtrip(Frame::Broadcast { body: Bytes::from_static(b"\x20\x01") });
        roundtrip(Frame::Ping { seq: 42 });
        let (dest, payload) = (Dest::Name("srv".into()), Bytes::from_static(b"\x83a\x01"));
        let msg = Frame::Message { dest: dest.clone(), payload: payload.clone() }.to_bytes();
        assert_eq!(msg.len(), LENGTH_PREFIX + message_frame_len(&dest, payload.len()));
        let body = RelayBody::Message { dest: dest.clone(), payload: payload.clone() };
        let relay = Frame::Relay { origin: "a@h".into(), id: 1, hops: 2, target: "zz@h".into(), body };
        assert_eq!(relay.to_bytes().len(), LENGTH_PREFIX + relay_frame_len("a@h", "zz@h", &dest, 3));
        let ack = Some(RelayAck { incarnation: 1, seq: 1 });
        let body = RelayBody::Sequenced { incarnation: 1, seq: 2, base: 1, ack, dest: dest.clone(), payload };
        let relay = Frame::Relay { origin: "a@h".into(), id: 1, hops: 2, target: "zz@h".into(), body };
        assert_eq!(relay.to_bytes().len(), LENGTH_PREFIX + relay_sequenced_frame_len("a@h", "zz@h", &dest, 3));
        roundtrip(Frame::Pong { seq: 43 });
        roundtrip(Frame::Ack { incarnation: 7, seq: 1 << 40 });
        let seq = Frame::Sequenced { incarnation: 9, seq: 12, base: 3, dest: Dest::PidId { id: 1, serial: 2 }, payload: Bytes::from_static(b"\x83j") };
        assert_eq!(seq.to_bytes().len(), LENGTH_PREFIX + SEQUENCED_HEADER + message_frame_len(&Dest::PidId { id: 1, serial: 2 }, 2));
        roundtrip(seq);
        roundtrip(Frame::Sequenced { incarnation: 1, seq: 1, base: 1, dest: Dest::Pid(Bytes::from_static(b"\x83X")), payload: Bytes::new() });
    }

    #[test]
    fn short_sequenced_frame_is_malformed() {
        let mut buf = BytesMut::from(&[0, 0, 0, 9, T_SEQUENCED, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert!(matches!(Decoder::new(64).decode(&mut buf), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn oversized_length_is_rejected_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, T_PING][..]);
        let err = Decoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 0xffff_ffff, max: 1024 });
    }

    #[test]
    fn announced_length_is_not_reserved_before_the_bytes_arrive() {
        // An authenticated peer announces 60 MiB and sends 10 bytes: the buffer grows with what
        // arrived, not to the announced size (with or without a pool: a frame this large never
        // gets a buffer of its own).
        for mut dec in [Decoder::new(64 << 20), Decoder::new(64 << 20).with_pool(Default::default())] {
            let mut buf = BytesMut::new();
            buf.put_u32(60 << 20);
            buf.put_u8(T_MESSAGE);
            buf.put_slice(&[0; 9]);
            assert_eq!(dec.decode(&mut buf), Ok(None));
            assert!(buf.capacity() <= 2 * GROW_MIN, "reserved {} bytes for 14 received", buf.capacity());
            // As data arrives the buffer grows at most geometrically, and the frame still decodes.
            let mut fed = buf.len();
            let total = LENGTH_PREFIX + (60 << 20);
            while fed < total {
                assert!(dec.own_buffer().is_none());
                let n = (total - fed).min(1 << 20);
                buf.put_slice(&vec![0u8; n]);
                fed += n;
                assert!(buf.capacity() <= 4 * buf.len() + 2 * GROW_MIN, "capacity {} for {} bytes", buf.capacity(), buf.len());
                if fed < total {
                    assert_eq!(dec.decode(&mut buf), Ok(None));
                }
            }
            assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Message { .. }))));
        }
    }

    #[test]
    fn a_large_frame_is_read_into_a_pooled_buffer_of_its_own() {
        let encode = |name: &str, payload: Bytes| {
            let mut out = BytesMut::new();
            Frame::Message { dest: Dest::Name(name.into()), payload }.encode(&mut out);
            out
        };
        let payload: Bytes = (0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        let large = encode("p", payload.clone());
        let (first, next) = (encode("o", Bytes::from_static(b"first")), encode("q", Bytes::from_static(b"small")));
        let frame_total = large.len();
        let mut stream = large.clone();
        stream.extend_from_slice(&next);
        let pool = std::sync::Arc::new(FramePool::default());
        let mut dec = Decoder::new(1 << 20).with_pool(pool.clone());
        // A read brought a small frame and the start of the large one.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&stream[..1000]);
        assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Message { dest: Dest::Name(n), .. })) if n == "o"));
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty(), "the start of the large frame moved to its own buffer");
        // The rest arrives in reads that never take more than the frame lacks.
        let mut fed = 1000;
        while fed < frame_total {
            let mut own = dec.own_buffer().expect("reading into the frame's own buffer");
            let n = own.remaining_mut().min(30_000);
            own.put_slice(&stream[fed..fed + n]);
            fed += n;
            if fed < frame_total {
                assert_eq!(dec.decode(&mut buf), Ok(None));
            }
        }
        assert_eq!(dec.own_buffer().unwrap().remaining_mut(), 0);
        let got = match dec.decode(&mut buf) {
            Ok(Some(Frame::Message { payload: got, .. })) => got,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, payload);
        assert!(dec.own_buffer().is_none());
        assert!(dec.prefix_only(&buf), "after a large frame, read the next prefix alone");
        // The buffer returns to the pool when the payload is dropped, and serves the next one.
        assert_eq!(pool.kept().0, 0);
        drop(got);
        assert_eq!(pool.kept().0, 1);
        buf.extend_from_slice(&stream[frame_total..]);
        assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Message { dest: Dest::Name(n), .. })) if n == "q"));
        buf.extend_from_slice(&large[..LENGTH_PREFIX]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(pool.kept().0, 0, "the kept buffer was taken again");
    }

    #[test]
    fn partial_input_waits_for_more() {
        let full = Frame::Ping { seq: 1 }.to_bytes();
        let mut dec = Decoder::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in full.iter().enumerate() {
            buf.put_u8(*b);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == full.len() - 1);
        }
    }

    #[test]
    fn unknown_type_and_trailing_bytes_are_errors() {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 99][..]);
        assert_eq!(Decoder::new(64).decode(&mut buf).unwrap_err(), FrameError::UnknownType(99));
        let mut buf = BytesMut::from(&[0, 0, 0, 10, T_PING, 0, 0, 0, 0, 0, 0, 0, 1, 0][..]);
        assert!(matches!(Decoder::new(64).decode(&mut buf), Err(FrameError::Malformed(WireError::Trailing { .. }))));
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(Decoder::new(64).decode(&mut buf).unwrap_err(), FrameError::Empty);
    }

    proptest! {
        /// Random bytes never panic the decoder: each call yields a frame, a need for more bytes,
        /// or an error.
        #[test]
        fn random_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            let mut dec = Decoder::new(256);
            for _ in 0..64 {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// Any valid frame cut short decodes to "need more", never to a wrong frame or a panic;
        /// a random corruption of one byte gives a frame or an error, never a panic.
        #[test]
        fn truncated_and_corrupted_frames(node in "[a-z]{1,20}@[a-z]{1,10}", idx in any::<u16>(),
                                          cut in 0usize..80, flip in 0usize..80, bit in 0u8..8) {
            let frame = Frame::Hello { version: 2, node, channel: "c".into(), conn_index: idx, nonce: [5; 32], proof: [6; 32] };
            let full = frame.to_bytes();
            let cut = cut.min(full.len() - 1);
            let mut buf = BytesMut::from(&full[..cut]);
            prop_assert_eq!(Decoder::new(1024).decode(&mut buf), Ok(None));
            let mut bytes = full.to_vec();
            let flip = flip.min(bytes.len() - 1);
            bytes[flip] ^= 1 << bit;
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = Decoder::new(1024).decode(&mut buf);
        }
    }
}
