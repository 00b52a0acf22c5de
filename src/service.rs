//! Wiring: start the Station and its inputs and outputs, and shut them down
//! in order (stop intake → flush the store → close streams).

use std::net::SocketAddr;

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
}

/// Start everything the config asks for. Returns once the store is open and
/// the HTTP listener is bound.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let started = station::start(config, shutdown.clone(), metrics).with_context(|| {
        format!(
            "cannot open the log in {}",
            config.station.data_dir.display()
        )
    })?;
    let station = started.handle;
    let station_task = started.task;
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
    // Small SSE writes must leave at once: without TCP_NODELAY, Nagle holds a
    // second event until the client ACKs the first (delayed ACK: up to 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let http_shutdown = shutdown.clone();
    let http = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let devices = crate::hotplug::Devices::default();
    let tasks = vec![
        http,
        tokio::spawn(crate::network::run(
            config.network,
            station.sender(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::hotplug::run(
            config.hotplug.clone(),
            devices.clone(),
            station.sender(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::reader::supervise(
            config.readers.clone(),
            started.new_readers,
            station.sender(),
            devices,
            shutdown.clone(),
        )),
    ];
    tracing::info!(station = %config.station.id, "listening on http://{http_addr}");
    Ok(Running {
        station,
        http_addr,
        admin_token,
        tasks,
        station_task,
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
