//! Wiring: start the Station and its inputs and outputs, hand each adapter
//! what it needs of another, and shut them down in order (stop intake →
//! flush the store → close streams).
//!
//! - [`run`]: the process around it: runtimes, signals, the screen;
//! - [`token`]: the admin token;
//! - [`systemd`]: readiness, reloading, stopping, the watchdog;
//! - [`demo`], [`sim`]: the demo's config and visitors, simulated readers.
//!
//! Invariants: a panic in the Station task ends the process with a
//! non-zero code (systemd restarts it) instead of leaving a station that
//! answers nothing; files the process creates are private (umask 077).

pub mod demo;
pub mod run;
pub mod sim;
pub mod systemd;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::station::metrics::Metrics;
use crate::station::{self, OutboxEncoder, StationHandle, WatchDevice};
use crate::web;

/// The exit code when the Station task panicked (EX_SOFTWARE).
pub const PANIC_EXIT: i32 = 70;

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
    /// Ends when the Station task has stopped (after flushing the log).
    station_done: tokio::sync::oneshot::Receiver<()>,
    /// Language, public address, QR code and rotation, for the pages and
    /// the screen.
    pub room: Arc<web::room::Room>,
    /// The public and the event-stream crowd's runtimes; stopped when this
    /// is dropped.
    sides: web::serve::Sides,
}

/// Start everything the config asks for. Returns once the store is open and
/// the HTTP listener is bound.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    start_with(config, shutdown, Extras::default()).await
}

/// The room's setting for the pages: language, QR code, rotation, and the
/// public address (configured, or derived from the bound listener).
fn room(config: &Config, bound: SocketAddr) -> web::room::Room {
    web::room::Room {
        language: config.station.language,
        public_url: config.http.public_url.clone().unwrap_or_else(|| {
            crate::sys::host::public_url(bound, crate::sys::host::name().as_deref())
        }),
        qr: config.screen.qr,
        rotate_s: config.screen.rotate.map_or(0, |d| d.as_secs()),
    }
}

/// Watch the Station task: a panic there takes the process down (logged,
/// exit [`PANIC_EXIT`]), since a station whose Station task is gone can
/// take no tap. The returned receiver fires when it ended normally.
fn watch_station(task: tokio::task::JoinHandle<()>) -> tokio::sync::oneshot::Receiver<()> {
    on_station_end(task, || {
        eprintln!("pollstation: the Station task panicked; exiting");
        std::process::exit(PANIC_EXIT);
    })
}

/// [`watch_station`] with what to do on a panic.
fn on_station_end(
    task: tokio::task::JoinHandle<()>,
    panicked: impl FnOnce() + Send + 'static,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        match task.await {
            Ok(()) => {
                let _ = done.send(());
            }
            Err(e) if e.is_panic() => {
                tracing::error!(
                    "the Station task panicked; exiting so the service manager restarts the station \
                     (nothing acknowledged is lost: every answered tap is in the log)"
                );
                panicked();
            }
            Err(e) => {
                tracing::error!(error = %e, "the Station task was cancelled");
                let _ = done.send(());
            }
        }
    });
    rx
}

/// [`start`], with a config file to reload from and a log filter to steer.
pub async fn start_with(
    config: &Config,
    shutdown: CancellationToken,
    extras: Extras,
) -> anyhow::Result<Running> {
    crate::sys::fs::private_umask();
    let metrics = Arc::new(Metrics::new());
    let encoder = config.xmpp.as_ref().map(|x| {
        let e: Arc<dyn OutboxEncoder> = Arc::new(crate::xmpp::outbox::Encoder::new(x));
        e
    });
    let started =
        station::start(config, shutdown.clone(), metrics.clone(), encoder).with_context(|| {
            format!(
                "cannot open the log in {}",
                config.station.data_dir.display()
            )
        })?;
    let station = started.handle;
    let station_done = watch_station(started.task);
    let admin_token = token::admin_token(
        &config.station.data_dir,
        config.http.admin_token_file.as_deref(),
    )?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let sides = web::serve::Sides::start().context("cannot start the HTTP threads")?;
    let limits = http_limits(config.http.limits);
    let room = Arc::new(room(config, http_addr));
    let state = web::AppState {
        station: station.clone(),
        admin_token: admin_token.as_str().into(),
        shutdown: shutdown.clone(),
        hub: web::SseHub::start(&station, shutdown.clone(), &sides.fanout()),
        room: room.clone(),
    };
    let app = web::app(state.clone(), config.http.request_timeout);
    let http = web::serve::serve(listener, app, state, &sides, limits, shutdown.clone());
    // Readers follow their devices through the hotplug watcher's registry.
    let devices = crate::hotplug::Devices::default();
    let watch_device: WatchDevice = {
        let devices = devices.clone();
        Arc::new(move |path| devices.watch(path))
    };
    let mut tasks = vec![http];
    tasks.extend([
        tokio::spawn(crate::network::run(
            config.network,
            station.sender(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::hotplug::run(
            config.hotplug.clone(),
            devices,
            station.sender(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::reader::supervise(
            config.readers.clone(),
            started.reader_ctl,
            station.sender(),
            metrics.clone(),
            watch_device,
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
            config.vote_publishers(),
            station.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(h) = &config.herd
        && h.carrier.xmpp()
        && let Some(x) = &config.xmpp
    {
        // Its own connection: a backlog of herd events never holds up votes.
        tasks.push(sides.public().spawn(crate::xmpp::herd::run(
            x.clone(),
            h.clone(),
            station.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(h) = &config.herd
        && h.carrier.direct()
    {
        let me = crate::herd::link::Me {
            herd: h.id.clone(),
            station: config.station.id.clone(),
            polls_hash: config.polls_hash(),
        };
        // On the public side, at normal priority: a peer's events wait
        // behind this station's own taps, never the other way round.
        tasks.push(sides.public().spawn(crate::herd::run(
            h.clone(),
            me,
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
        let f: crate::control::Reload = Arc::new(move || {
            let station = station.clone();
            let path = path.clone();
            Box::pin(async move { reload(&station, &path).await })
        });
        f
    });
    if let Some(r) = reload.clone() {
        tasks.push(run::reload_on_sighup(r, shutdown.clone())?);
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
    tasks.push(tokio::spawn(systemd::watchdog(
        station.clone(),
        shutdown.clone(),
    )));
    tracing::info!(control = %control_path.display(), "control socket ready (pollstation ctl)");
    tracing::info!(station = %config.station.id, "listening on http://{http_addr}");
    systemd::notify_ready(&format!("listening on http://{http_addr}"));
    Ok(Running {
        station,
        http_addr,
        admin_token,
        tasks,
        station_done,
        room,
        sides,
    })
}

/// The HTTP limits as configured, the connection cap lowered where the
/// open-files limit (raised to its hard limit first) would not leave the
/// readers, the store and the links their reserve.
fn http_limits(mut limits: crate::config::HttpLimits) -> crate::config::HttpLimits {
    use crate::sys::limits::{RESERVED_FDS, connection_cap, raise_open_files};
    match raise_open_files() {
        Ok(files) => {
            let cap = connection_cap(limits.max_connections, files);
            if cap < limits.max_connections {
                tracing::warn!(
                    open_files = files,
                    reserved = RESERVED_FDS,
                    configured = limits.max_connections,
                    cap,
                    "the open-files limit is too low for [http] max_connections: serving at most {cap} connections (raise LimitNOFILE=)"
                );
                limits.max_connections = cap;
                limits.max_per_address = limits.max_per_address.min(cap);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
    limits
}

impl Running {
    /// Wait for the station to finish after `shutdown` was cancelled. HTTP
    /// streams (SSE) are given a few seconds before they are cut.
    pub async fn wait(self) {
        let _ = self.station_done.await;
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(3), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        drop(self.sides);
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new config is invalid:\n{0}")]
    Invalid(#[from] crate::config::ConfigError),
    #[error("the station is shutting down")]
    ShuttingDown,
}

/// Re-read the config file and apply it. An invalid file is refused whole.
pub async fn reload(
    station: &StationHandle,
    path: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let applied = async {
        let config = Config::load(path)?;
        station
            .reload(config)
            .await
            .ok_or(ReloadError::ShuttingDown)
    };
    match applied.await {
        Ok(report) => Ok(serde_json::json!(report)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_station_task_ends_the_process_and_a_clean_one_does_not() {
        let (hit_tx, hit) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async { panic!("a bug in the Station") });
        let done = on_station_end(task, move || {
            let _ = hit_tx.send(());
        });
        hit.await.expect("the panic was acted on");
        assert!(done.await.is_err(), "a panic is not a clean end");

        let (hit_tx, mut hit) = tokio::sync::oneshot::channel::<()>();
        let done = on_station_end(tokio::spawn(async {}), move || {
            let _ = hit_tx.send(());
        });
        done.await.expect("a clean end is said");
        assert!(hit.try_recv().is_err(), "no exit for a clean end");
    }
}
