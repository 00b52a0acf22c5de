//! Wiring: start the Station and its inputs and outputs, and shut them down
//! in order (stop intake → flush the store → close streams).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::station::{self, StationHandle};
use crate::web;

/// What `start` may be given beyond the config.
#[derive(Default, Clone)]
pub struct Extras {
    /// The config file, for reloads (SIGHUP, `ctl reload`).
    pub config_path: Option<std::path::PathBuf>,
    /// Changes the log filter live (`ctl log-level`).
    pub set_log_level: Option<crate::control::SetLogLevel>,
}

/// A running station.
pub struct Running {
    pub station: StationHandle,
    pub http_addr: SocketAddr,
    pub admin_token: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    station_task: tokio::task::JoinHandle<()>,
    /// The event-stream crowd's runtime; stopped when this is dropped.
    fanout: crate::serve::Fanout,
}

/// Start everything the config asks for. Returns once the store is open and
/// the HTTP listener is bound.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    start_with(config, shutdown, Extras::default()).await
}

/// [`start`], with a config file to reload from and a log filter to steer.
pub async fn start_with(
    config: &Config,
    shutdown: CancellationToken,
    extras: Extras,
) -> anyhow::Result<Running> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let started = station::start(config, shutdown.clone(), metrics.clone()).with_context(|| {
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
    let fanout = crate::serve::Fanout::start().context("cannot start the fan-out threads")?;
    let app = web::app(
        web::AppState {
            station: station.clone(),
            admin_token: admin_token.as_str().into(),
            shutdown: shutdown.clone(),
            hub: web::SseHub::start(&station, shutdown.clone(), &fanout.handle()),
        },
        config.http.request_timeout,
    );
    let streams = station.clone();
    let http = crate::serve::serve(
        listener,
        app,
        &fanout.handle(),
        move || web::crowd(&streams),
        shutdown.clone(),
    )?;
    let devices = crate::hotplug::Devices::default();
    let mut tasks = http;
    tasks.extend([
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
            started.reader_ctl,
            station.sender(),
            metrics.clone(),
            devices,
            shutdown.clone(),
        )),
    ]);
    match &config.identity {
        Some(i) => tasks.push(tokio::spawn(crate::identity::run(
            i.clone(),
            station.clone(),
            started.lookups,
            shutdown.clone(),
        ))),
        None => drop(started.lookups),
    }
    if let Some(x) = &config.xmpp {
        tasks.push(tokio::spawn(crate::xmpp::run(
            x.clone(),
            station.clone(),
            shutdown.clone(),
        )));
    }
    let control_path = crate::control::socket_path(&config.station.data_dir);
    let control = crate::control::bind(&control_path)
        .await
        .with_context(|| format!("cannot listen on {}", control_path.display()))?;
    let reload = extras.config_path.clone().map(|path| {
        let station = station.clone();
        let f: crate::control::Reload = std::sync::Arc::new(move || {
            let station = station.clone();
            let path = path.clone();
            Box::pin(async move { reload(&station, &path).await })
        });
        f
    });
    if let Some(r) = reload.clone() {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot watch SIGHUP")?;
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    s = hup.recv() => if s.is_none() { return },
                }
                tracing::info!("SIGHUP: reloading the config");
                crate::systemd::notify_reloading();
                if let Err(e) = r().await {
                    tracing::error!("config reload refused; the running config is kept: {e}");
                }
                crate::systemd::notify_ready("reloaded");
            }
        }));
    }
    tasks.push(tokio::spawn(crate::control::serve(
        control,
        control_path.clone(),
        crate::control::Control {
            station: station.clone(),
            set_log_level: extras.set_log_level,
            reload,
        },
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::systemd::watchdog(
        station.clone(),
        shutdown.clone(),
    )));
    tracing::info!(control = %control_path.display(), "control socket ready (pollstation ctl)");
    tracing::info!(station = %config.station.id, "listening on http://{http_addr}");
    crate::systemd::notify_ready(&format!("listening on http://{http_addr}"));
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
        drop(self.fanout);
    }
}

/// Re-read the config file and apply it. An invalid file is refused whole.
pub async fn reload(
    station: &StationHandle,
    path: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let config = Config::load(path).map_err(|e| format!("the new config is invalid:\n{e}"))?;
    let report = station
        .reload(config)
        .await
        .ok_or_else(|| "the station is shutting down".to_string())?;
    Ok(serde_json::json!(report))
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
        crate::systemd::notify_stopping();
        token.cancel();
    });
    Ok(())
}
