//! Message compression (a channel's `compression` option): zstd, flagged per frame.
//!
//! A compressed message travels as its own frame type, the message frame's destination then the
//! payload's uncompressed length (u32) and the zstd frame:
//!
//! ```text
//! | length u32 | 22 | dest | expanded length u32 | zstd frame |
//! ```
//!
//! Flagged per frame rather than negotiated: every node decodes both types, and a sender
//! compresses only what it was configured to, so nodes with and without `compression` on a
//! channel talk to each other, and a payload that does not shrink goes uncompressed.
//!
//! Why zstd and not lz4: at the bandwidths where compression pays (links between data centres,
//! tens to hundreds of Mbit/s) the link is the bottleneck, not the codec. On 64 KiB of
//! ETF-encoded records (bench/results/codec-choice.txt), zstd level 1 compressed 11.4:1 at
//! 706 MB/s and lz4 (lz4_flex) 5.1:1 at 1,235 MB/s: both are far faster than such a link, and
//! zstd sends half the bytes. Partisan v5's `compression => 0..9` maps to zstd's levels.
//!
//! The receiver bounds the expansion: the declared length may not exceed its `max_frame_size`
//! (a small frame cannot make it allocate more than a large one could), and the zstd frame must
//! expand to exactly the declared length.
//!
//! ```
//! use bytes::BytesMut;
//! use partisan_core::compress::Packer;
//! use partisan_core::frame::{Decoder, Dest, Frame};
//! let payload = vec![7u8; 64 * 1024];
//! let mut out = BytesMut::new();
//! assert!(Packer::new(1).encode_message(&Dest::Name("srv".into()), &payload, &mut out));
//! assert!(out.len() < 1024);
//! match Decoder::new(1 << 20).decode(&mut out).unwrap() {
//!     Some(Frame::Message { payload: p, .. }) => assert_eq!(&p[..], &payload[..]),
//!     other => panic!("{other:?}"),
//! }
//! ```

use crate::frame::{encode_header, Dest, FrameError, T_MESSAGE_ZSTD};
use bytes::{BufMut, Bytes, BytesMut};

/// What [`crate::frame::Frame::parse`] lets a compressed message expand to when no decoder
/// bound is given (the default `max_frame_size`).
pub const DEFAULT_MAX_EXPANDED: usize = 64 << 20;

/// Compresses message payloads for one writer (it keeps zstd's context between messages).
pub struct Packer {
    level: i32,
    cx: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").field("level", &self.level).finish_non_exhaustive()
    }
}

impl Packer {
    /// A packer compressing at zstd `level` (1..=9 as configured; 1 is fast).
    pub fn new(level: i32) -> Self {
        Packer { level, cx: None, scratch: Vec::new() }
    }

    /// Appends `payload` to `out` as a compressed message frame for `dest`, if it shrinks;
    /// returns `false` (and appends nothing) when it does not or zstd fails, and the caller
    /// sends it uncompressed.
    pub fn encode_message(&mut self, dest: &Dest, payload: &[u8], out: &mut BytesMut) -> bool {
        let Ok(expanded) = u32::try_from(payload.len()) else { return false };
        if self.cx.is_none() {
            self.cx = zstd::bulk::Compressor::new(self.level).ok();
        }
        let Some(cx) = self.cx.as_mut() else { return false };
        self.scratch.clear();
        self.scratch.reserve(zstd::zstd_safe::compress_bound(payload.len()));
        let Ok(n) = cx.compress_to_buffer(payload, &mut self.scratch) else { return false };
        if n + 4 >= payload.len() {
            return false;
        }
        encode_header(T_MESSAGE_ZSTD, dest, 4 + n, out);
        out.put_u32(expanded);
        out.put_slice(&self.scratch[..n]);
        true
    }
}

/// The payload of a compressed message (what follows the destination), expanded; at most
/// `max_expanded` bytes.
pub(crate) fn unpack(body: &[u8], max_expanded: usize) -> Result<Bytes, FrameError> {
    let bad = |why: String| FrameError::Compressed(why);
    let (len, data) = body.split_first_chunk::<4>().ok_or_else(|| bad("no expanded length".into()))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > max_expanded {
        return Err(bad(format!("expands to {len} bytes, over the maximum frame size of {max_expanded}")));
    }
    let mut out = vec![0u8; len];
    let n = zstd::zstd_safe::decompress(&mut out[..], data).map_err(|code| bad(format!("zstd: {}", zstd::zstd_safe::get_error_name(code))))?;
    if n != len {
        return Err(bad(format!("expanded to {n} bytes, {len} declared")));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Decoder, Frame};
    use proptest::prelude::*;

    fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
        Decoder::new(max).decode(buf)
    }

    #[test]
    fn compressible_payload_round_trips_smaller() {
        let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 / 8).collect();
        let dest = Dest::PidId { id: 7, serial: 1 };
        let mut out = BytesMut::new();
        assert!(Packer::new(1).encode_message(&dest, &payload, &mut out));
        assert!(out.len() < payload.len() / 4, "{} bytes", out.len());
        let got = decode(&mut out, 1 << 20);
        assert!(got == Ok(Some(Frame::Message { dest, payload: payload.into() })), "round trip failed: {:?}", got.map(|_| ()));
    }

    #[test]
    fn incompressible_payload_is_left_alone() {
        let mut payload = vec![0u8; 4096];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut payload);
        let mut out = BytesMut::new();
        assert!(!Packer::new(3).encode_message(&Dest::Name("x".into()), &payload, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn expansion_over_the_bound_is_refused() {
        let payload = vec![0u8; 200_000];
        let mut out = BytesMut::new();
        assert!(Packer::new(1).encode_message(&Dest::Name("x".into()), &payload, &mut out));
        // The frame itself is small; what it expands to is over the receiver's 64 KiB.
        assert!(matches!(decode(&mut out, 65536), Err(FrameError::Compressed(_))));
    }

    #[test]
    fn lying_about_the_length_is_refused() {
        let payload = vec![1u8; 10_000];
        let mut out = BytesMut::new();
        assert!(Packer::new(1).encode_message(&Dest::Name("x".into()), &payload, &mut out));
        // The expanded length sits right after the destination: type, kind, u16 len, "x".
        let at = 4 + 1 + 1 + 2 + 1;
        out[at..at + 4].copy_from_slice(&9_999u32.to_be_bytes());
        assert!(matches!(decode(&mut out, 1 << 20), Err(FrameError::Compressed(_))));
    }

    proptest! {
        /// Garbage after a compressed message's header is an error, never a panic.
        #[test]
        fn garbage_compressed_body_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut out = BytesMut::new();
            encode_header(T_MESSAGE_ZSTD, &Dest::Name("x".into()), data.len(), &mut out);
            out.put_slice(&data);
            let _ = decode(&mut out, 1 << 16);
        }
    }
}
