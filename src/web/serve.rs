//! HTTP serving: one listener, two runtimes.
//!
//! Every connection is accepted on the main runtime, beside the Station and
//! the readers. The first bytes of its first request decide where it is
//! served: once a crowd of event streams is open (see
//! [`DIRECT_STREAMS`](super::sse::DIRECT_STREAMS)), a new `GET /api/v1/events` goes to
//! the *fan-out* runtime, whose threads run only when the intake's do not
//! want the CPU (`SCHED_IDLE`). Ten
//! thousand browsers watching the results then cost the fan-out threads, and
//! a tap arriving meanwhile does not queue behind their writes.
//!
//! Both sides are plain `axum::serve` with the same router; only the
//! listener differs (a channel fed by the accept loop).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a new connection has to send its request line before it is
/// handed to the main side as it is (which then applies its own timeouts).
const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(5);

const EVENTS_REQUEST: &[u8] = b"GET /api/v1/events";

/// The fan-out runtime. Dropping it stops its threads without blocking (it
/// may be dropped inside the main runtime).
pub struct Fanout(Option<Runtime>);

impl Fanout {
    /// Start the runtime's two worker threads at the lowest priority
    /// ([`crate::sys::priority::idle_this_thread`]).
    ///
    /// # Errors
    /// When the threads cannot be started.
    pub fn start() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fanout")
            .on_thread_start(crate::sys::priority::idle_this_thread)
            .enable_all()
            .build()?;
        Ok(Self(Some(rt)))
    }

    #[must_use]
    pub fn handle(&self) -> Handle {
        self.0
            .as_ref()
            .map_or_else(Handle::current, |rt| rt.handle().clone())
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Serve `app` on `listener` until `shutdown`. `crowd()` says whether a new
/// event stream should go to the fan-out side. Returns the two server tasks.
pub fn serve(
    listener: TcpListener,
    app: Router,
    fanout: &Handle,
    crowd: impl Fn() -> bool + Send + 'static,
    shutdown: CancellationToken,
) -> io::Result<Vec<JoinHandle<()>>> {
    let addr = listener.local_addr()?;
    let (main_tx, main_rx) = mpsc::unbounded_channel();
    let (fan_tx, fan_rx) = mpsc::unbounded_channel();
    let main = tokio::spawn(run_server(
        Incoming { rx: main_rx, addr },
        app.clone(),
        shutdown.clone(),
    ));
    let fan = fanout.spawn(run_server(
        Incoming { rx: fan_rx, addr },
        app,
        shutdown.clone(),
    ));
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: say so, wait
                        // a moment, go on (as axum::serve does).
                        tracing::warn!(error = %e, "cannot accept an HTTP connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Small SSE writes must leave at once: without TCP_NODELAY, Nagle
            // holds a second event until the client ACKs the first (delayed
            // ACK: up to 40 ms).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let main_tx = main_tx.clone();
            let fan_tx = fan_tx.clone();
            let to_fanout = crowd();
            tokio::spawn(async move {
                let (conn, is_stream) = first_bytes(tcp).await;
                let conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "connection lost before its request");
                        return;
                    }
                };
                let sent = if is_stream && to_fanout {
                    fan_tx.send((conn, peer)).map_err(|_| ())
                } else {
                    main_tx.send((conn, peer)).map_err(|_| ())
                };
                if sent.is_err() {
                    tracing::debug!(%peer, "server stopped; connection dropped");
                }
            });
        }
    });
    Ok(vec![accept, main, fan])
}

async fn run_server(listener: Incoming, app: Router, shutdown: CancellationToken) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Read the start of the first request (until it either is or cannot be
/// `GET /api/v1/events`), keeping the bytes to replay them to the server.
async fn first_bytes(mut tcp: TcpStream) -> (io::Result<Conn>, bool) {
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_WITHIN;
    let is_stream = loop {
        if head.len() > EVENTS_REQUEST.len() {
            break head.starts_with(EVENTS_REQUEST)
                && matches!(head[EVENTS_REQUEST.len()], b' ' | b'?');
        }
        let common = head.len().min(EVENTS_REQUEST.len());
        if head[..common] != EVENTS_REQUEST[..common] {
            break false;
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) => {
                return (Err(io::Error::from(io::ErrorKind::UnexpectedEof)), false);
            }
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (Err(e), false),
            Err(_) => break false,
        }
    };
    let conn = tcp.into_std().map(|tcp| Conn {
        head: Bytes::from(head),
        tcp,
    });
    (conn, is_stream)
}

/// An accepted connection and the bytes already read from it.
struct Conn {
    head: Bytes,
    tcp: std::net::TcpStream,
}

/// What `axum::serve` gets instead of a `TcpListener`.
struct Incoming {
    rx: mpsc::UnboundedReceiver<(Conn, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for Incoming {
    type Io = Replay;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Replay, SocketAddr) {
        loop {
            let Some((conn, peer)) = self.rx.recv().await else {
                // The accept loop has stopped (shutdown): nothing more comes;
                // graceful shutdown ends the server.
                return std::future::pending().await;
            };
            // Registers the socket with this runtime's reactor.
            match TcpStream::from_std(conn.tcp) {
                Ok(tcp) => {
                    return (
                        Replay {
                            head: conn.head,
                            tcp,
                        },
                        peer,
                    );
                }
                Err(e) => tracing::debug!(error = %e, %peer, "cannot take over a connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A TCP stream that first yields the bytes read before the server got it.
pub struct Replay {
    head: Bytes,
    tcp: TcpStream,
}

impl AsyncRead for Replay {
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
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    async fn classify(parts: &[&[u8]]) -> (bool, Vec<u8>) {
        let (mut client, server) = pair().await;
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for p in parts {
                client.write_all(&p).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
        });
        let (conn, is_stream) = first_bytes(server).await;
        let conn = conn.unwrap();
        writer.await.unwrap();
        let mut replay = Replay {
            head: conn.head,
            tcp: TcpStream::from_std(conn.tcp).unwrap(),
        };
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        (is_stream, all)
    }

    #[tokio::test]
    async fn event_streams_are_told_apart_and_no_byte_is_lost() {
        let (s, all) = classify(&[b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert!(s);
        assert_eq!(all, b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
        // Split anywhere, with a query.
        let (s, all) = classify(&[b"GET /api/v", b"1/even", b"ts?x=1 HTTP/1.1\r\n\r\n"]).await;
        assert!(s);
        assert_eq!(all, b"GET /api/v1/events?x=1 HTTP/1.1\r\n\r\n");
        // Not streams.
        for req in [
            &b"POST /api/v1/taps HTTP/1.1\r\n\r\n{}"[..],
            b"GET /api/v1/eventsX HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            let (s, all) = classify(&[req]).await;
            assert!(!s, "{}", String::from_utf8_lossy(req));
            assert_eq!(all, req);
        }
        // A client that closes after a few bytes: nothing to serve.
        let (mut client, server) = pair().await;
        client.write_all(b"GET /api").await.unwrap();
        client.shutdown().await.unwrap();
        assert!(first_bytes(server).await.0.is_err());
    }
}
