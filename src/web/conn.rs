//! One HTTP connection, served with its deadlines.
//!
//! Invariants: a request's head (line and headers, at most [`MAX_HEAD`]
//! bytes, else 431) arrives within the header deadline, and a kept-alive
//! connection gets its next request within it too (hyper's header-read
//! timer); a connection on which no byte moved either way for the idle
//! timeout is closed (event streams send a comment every 15 s, so a
//! listening browser is never idle); the connection's [`Permit`] is held
//! until it is closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::{Buf, Bytes};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::gate::Permit;
use crate::config::HttpLimits;

/// Hyper's read buffer, and so the largest request head (its minimum).
pub const MAX_HEAD: usize = 8 * 1024;

/// Serve HTTP/1.1 on `io` until the client goes, a deadline passes, or
/// `shutdown` (then the request in flight finishes first).
pub async fn serve(io: Guarded, app: Router, limits: HttpLimits, shutdown: CancellationToken) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = done {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// A TCP stream that first yields the bytes read before the server got it,
/// ends when it has been idle too long, and holds the connection's place.
pub struct Guarded {
    /// First, so it is dropped before the socket closes (see `gate`).
    _permit: Option<Permit>,
    head: Bytes,
    tcp: TcpStream,
    idle_for: Duration,
    last: Instant,
    /// Fires no earlier than `last + idle_for`; moved forward lazily, when
    /// it fires, so a busy stream costs no timer work per byte.
    idle: Pin<Box<Sleep>>,
}

impl Guarded {
    #[must_use]
    pub fn new(head: Bytes, tcp: TcpStream, idle_for: Duration, permit: Option<Permit>) -> Self {
        let last = Instant::now();
        Self {
            _permit: permit,
            head,
            tcp,
            idle_for,
            last,
            idle: Box::pin(tokio::time::sleep_until(last + idle_for)),
        }
    }

    fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the connection has been idle for too long (registering the
    /// task's waker for when it might be).
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last + self.idle_for;
            if due <= Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(due);
        }
    }

    /// A write's outcome: bytes written count as activity; a write that
    /// waits on a connection idle too long fails.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.idle_too_long(cx) => Poll::Ready(Err(Self::idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn idle_error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.head.has_remaining() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.idle_too_long(cx) => Poll::Ready(Err(Self::idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
