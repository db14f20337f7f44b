//! A connection's byte stream, plain TCP or TLS, split into the side its reader owns and the
//! side its writer owns.
//!
//! Why two shapes instead of one `AsyncRead + AsyncWrite`: plain TCP keeps its fast path. Its
//! socket is shared (`Arc<TcpStream>`) by the reader, the writer and the send queue, whose
//! senders write a small frame straight to the socket when the link is idle, with tokio's
//! readiness API and no lock. A TLS connection cannot be written by two parties: the encryption
//! state (sequence numbers, buffered records) is one per connection. So a TLS stream is split
//! with `tokio::io::split` into a read half for the reader and a write half that only the writer
//! task uses; its queue takes no direct writes ([`crate::queue::LinkQueue::without_direct_writes`]).
//! Both shapes keep the `Arc<TcpStream>` underneath, through which the queue shuts the socket
//! down when the link dies, whichever the shape.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// The shared socket as an `AsyncRead + AsyncWrite` for rustls (readiness + `try_*`, as the
/// plain path reads and writes it).
#[derive(Debug, Clone)]
pub(crate) struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self.0.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

pub(crate) type TlsIo = tokio_rustls::TlsStream<SharedTcp>;

/// What the reader reads from.
pub(crate) enum ReadSide {
    Plain(Arc<TcpStream>),
    Tls(ReadHalf<TlsIo>),
}

/// What the writer (and, before it, the handshake) writes to.
pub(crate) enum WriteSide {
    Plain(Arc<TcpStream>),
    Tls(WriteHalf<TlsIo>),
}

/// A plain connection's two sides (the same socket).
pub(crate) fn plain(socket: &Arc<TcpStream>) -> (ReadSide, WriteSide) {
    (ReadSide::Plain(socket.clone()), WriteSide::Plain(socket.clone()))
}

/// An established TLS session's two sides.
pub(crate) fn tls(stream: TlsIo) -> (ReadSide, WriteSide) {
    let (r, w) = tokio::io::split(stream);
    (ReadSide::Tls(r), WriteSide::Tls(w))
}

impl ReadSide {
    /// Reads what is available into `buf` (0: the peer closed).
    pub(crate) async fn read_some(&mut self, buf: &mut impl bytes::BufMut) -> io::Result<usize> {
        match self {
            ReadSide::Plain(socket) => crate::conn::read_some(socket, buf).await,
            ReadSide::Tls(r) => match r.read_buf(buf).await {
                // A peer that closes without close_notify: as a TCP close (the frame decoder
                // sees any truncation).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }

    /// [`ReadSide::read_some`] for the rest of a large frame: a plain socket is polled for it
    /// briefly first (see [`crate::conn::read_rest`]).
    pub(crate) async fn read_rest(&mut self, buf: &mut impl bytes::BufMut, poll: &mut crate::conn::RestPoll) -> io::Result<usize> {
        match self {
            ReadSide::Plain(socket) => crate::conn::read_rest(socket, buf, poll).await,
            ReadSide::Tls(_) => self.read_some(buf).await,
        }
    }

    /// [`ReadSide::read_some`], a plain socket polled first while that pays (see
    /// [`crate::conn::Spin`]); a TLS session reads as it does.
    pub(crate) async fn read_some_spinning(&mut self, buf: &mut impl bytes::BufMut, spin: &mut crate::conn::Spin) -> io::Result<usize> {
        match self {
            ReadSide::Plain(socket) => crate::conn::read_some_spinning(socket, buf, spin).await,
            ReadSide::Tls(_) => self.read_some(buf).await,
        }
    }
}

impl WriteSide {
    /// Whether senders may write to the socket themselves (plain TCP only).
    pub(crate) fn allows_direct_writes(&self) -> bool {
        matches!(self, WriteSide::Plain(_))
    }

    /// Writes all of `bytes` (and, for TLS, flushes the records out).
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            WriteSide::Plain(socket) => crate::queue::write_slice(socket, bytes).await,
            WriteSide::Tls(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    /// Writes `pieces` one after the other (vectored writes on a plain socket).
    pub(crate) async fn write_gathered(&mut self, pieces: &[&[u8]]) -> io::Result<()> {
        match self {
            WriteSide::Plain(socket) => crate::queue::write_gathered(socket, pieces).await,
            WriteSide::Tls(w) => {
                for piece in pieces {
                    w.write_all(piece).await?;
                }
                w.flush().await
            }
        }
    }

    /// Closes the write direction: the peer reads everything, then the end of the stream (a
    /// TLS close_notify first).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            WriteSide::Plain(socket) => socket2::SockRef::from(&**socket).shutdown(std::net::Shutdown::Write),
            WriteSide::Tls(w) => w.shutdown().await,
        }
    }
}

/// Yields to the runtime once `*done` bytes reach `slice` (and counts again from 0).
///
/// A connection's reader or writer that keeps finding work never returns to the runtime on its
/// own before tokio's cooperative budget runs out (128 socket operations: 8 MiB of a bulk
/// stream in 64 KiB reads, milliseconds of work). Meanwhile the other tasks of its worker
/// thread wait, and the I/O driver is not polled: a small message arriving on another
/// connection (another channel) waits behind the bulk one, which is the head-of-line blocking
/// that separate channels are meant to avoid.
pub(crate) async fn yield_after(done: &mut usize, slice: usize) {
    if *done >= slice {
        *done = 0;
        tokio::task::yield_now().await;
    }
}
