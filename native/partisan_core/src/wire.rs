//! Byte-level reader and writer for the core's own encodings.
//!
//! Control frames and handshake frames are parsed here, never by the Erlang term decoder: a
//! peer's bytes reach `binary_to_term` only after it has authenticated, and only inside message
//! frames. Every read is bounds-checked and returns [`WireError`] instead of panicking, so the
//! parsers can be fed arbitrary bytes (see the property tests in `frame.rs`).

use bytes::{BufMut, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a frame body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated frame: needed {needed} more bytes while reading {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("invalid UTF-8 in {0}")]
    BadUtf8(&'static str),
    #[error("invalid {what}: {value}")]
    BadValue { what: &'static str, value: u64 },
    #[error("{extra} trailing bytes after {what}")]
    Trailing { what: &'static str, extra: usize },
}

/// A cursor over a frame body.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated { what, needed: n - self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::BadValue { what, value: v as u64 }),
        }
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    /// A string with a u16 length prefix.
    pub fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadUtf8(what))
    }

    /// Bytes with a u32 length prefix.
    pub fn bytes32(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    pub fn socket_addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8("address family")? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>("IPv4 address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>("IPv6 address")?)),
            v => return Err(WireError::BadValue { what: "address family", value: v as u64 }),
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }

    /// Fails unless the whole body was consumed.
    pub fn finish(self, what: &'static str) -> Result<(), WireError> {
        match self.buf.len() {
            0 => Ok(()),
            extra => Err(WireError::Trailing { what, extra }),
        }
    }
}

/// Appends the core's encodings to a buffer.
pub trait WriteExt {
    fn put_str16(&mut self, s: &str);
    fn put_bool(&mut self, b: bool);
    fn put_socket_addr(&mut self, addr: &SocketAddr);
}

impl WriteExt for BytesMut {
    fn put_str16(&mut self, s: &str) {
        // Names are validated to fit at the API boundary; truncating here would corrupt the frame.
        let len = u16::try_from(s.len()).expect("string longer than 65535 bytes");
        self.put_u16(len);
        self.put_slice(s.as_bytes());
    }

    fn put_bool(&mut self, b: bool) {
        self.put_u8(b as u8);
    }

    fn put_socket_addr(&mut self, addr: &SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => {
                self.put_u8(4);
                self.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.put_u8(6);
                self.put_slice(&ip.octets());
            }
        }
        self.put_u16(addr.port());
    }
}
