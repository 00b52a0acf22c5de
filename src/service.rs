//! Wiring: start the Station and its inputs and outputs, and shut them down
//! in order (stop intake → flush the store → close streams).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::station::{self, StationHandle};
use crate::web;

/// A running station.
pub struct Running {
    pub station: StationHandle,
    pub http_addr: SocketAddr,
    pub admin_token: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    station_task: tokio::task::JoinHandle<()>,
    /// Serves the event streams; see [`fanout_runtime`].
    fanout: tokio::runtime::Runtime,
}

/// Start everything the config asks for. Returns once the store is open and
/// the HTTP listener is bound.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let (station, station_task) =
        station::start(config, shutdown.clone(), metrics).with_context(|| {
            format!(
                "cannot open the log in {}",
                config.station.data_dir.display()
            )
        })?;
    let admin_token = web::admin_token(
        &config.station.data_dir,
        config.http.admin_token_file.as_deref(),
    )?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let app = web::app(
        web::AppState {
            station: station.clone(),
            admin_token: admin_token.as_str().into(),
            shutdown: shutdown.clone(),
            hub: web::SseHub::start(&station, shutdown.clone()),
        },
        config.http.request_timeout,
    );
    let fanout = fanout_runtime()?;
    let http = tokio::spawn(serve(
        listener,
        app,
        fanout.handle().clone(),
        shutdown.clone(),
    ));
    let mut tasks = vec![http];
    tasks.extend(crate::reader::spawn_all(
        &config.readers,
        &station.sender(),
        &shutdown,
    ));
    tracing::info!(station = %config.station.id, "listening on http://{http_addr}");
    Ok(Running {
        station,
        http_addr,
        admin_token,
        tasks,
        station_task,
        fanout,
    })
}

impl Running {
    /// Wait for the station to finish after `shutdown` was cancelled. HTTP
    /// streams (SSE) are given a few seconds before they are cut.
    pub async fn wait(self) {
        if let Err(e) = self.station_task.await {
            tracing::error!(error = %e, "station task failed");
        }
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(3), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Streams ended with the shutdown token; don't wait for stragglers.
        self.fanout.shutdown_background();
    }
}

/// The event streams get a runtime of their own, on threads that yield to
/// everything else (nice 19). A change goes out to every open stream at
/// once; with thousands of them that burst would otherwise sit in the same
/// run queue as the tap a voter is waiting for.
fn fanout_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sse")
        .on_thread_start(|| {
            // SAFETY: setpriority on the calling thread (who = 0); no memory involved.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            if rc != 0 {
                tracing::debug!("cannot lower the priority of an SSE thread");
            }
        })
        .enable_all()
        .build()
        .context("cannot start the event-stream runtime")
}

/// Event streams served on the main runtime before the rest go to the
/// fan-out runtime: a projector and a few screens get full priority, a crowd
/// of phones gets what is left.
const PRIORITY_STREAMS: usize = 50;

/// Accept HTTP connections until `shutdown`. A connection whose first
/// request is `GET /api/v1/events` is served on the fan-out runtime once
/// [`PRIORITY_STREAMS`] streams are open here; every other one here. Sockets get TCP_NODELAY: small SSE writes must leave at
/// once (with Nagle, a second event waits for the client's delayed ACK).
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    fanout: tokio::runtime::Handle,
    shutdown: CancellationToken,
) {
    /// Counts a stream on the main runtime while its connection lives.
    struct Priority(Arc<AtomicUsize>);
    impl Drop for Priority {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let priority = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let fanout = fanout.clone();
        let priority = priority.clone();
        tokio::spawn(async move {
            let stream = is_event_stream(&tcp).await;
            if stream && priority.fetch_add(1, Ordering::Relaxed) < PRIORITY_STREAMS {
                let _slot = Priority(priority);
                serve_connection(tcp, app).await;
            } else if stream {
                priority.fetch_sub(1, Ordering::Relaxed);
                match tcp.into_std() {
                    Ok(std) => {
                        fanout.spawn(async move {
                            match tokio::net::TcpStream::from_std(std) {
                                Ok(tcp) => serve_connection(tcp, app).await,
                                Err(e) => tracing::debug!(error = %e, "cannot move a stream"),
                            }
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot move a stream"),
                }
            } else {
                serve_connection(tcp, app).await;
            }
        });
    }
}

/// Peek (without consuming) at the request line.
async fn is_event_stream(tcp: &tokio::net::TcpStream) -> bool {
    const WANT: &[u8] = b"GET /api/v1/events";
    let mut buf = [0u8; 32];
    let peek = async {
        loop {
            match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= WANT.len() || buf[..n].contains(&b'\n') => {
                    return buf[..n].starts_with(WANT);
                }
                // Only part of the line so far (rare: a request line comes
                // in one segment): give the rest a moment to arrive.
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), peek)
        .await
        .unwrap_or(false)
}

async fn serve_connection(tcp: tokio::net::TcpStream, app: axum::Router) {
    use hyper::body::Incoming;
    use tower::ServiceExt;
    let service =
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| app.clone().oneshot(req));
    let io = hyper_util::rt::TokioIo::new(tcp);
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Cancel `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
    Ok(())
}
