//! The process around the station: the intake's runtime, the signals
//! (SIGINT/SIGTERM stop, SIGHUP reloads), and the GTK screen on the main
//! thread when one is wanted and a display is there.
//!
//! Threading, stated once: tokio's runtimes run on their own threads; the
//! main thread runs the GLib main loop when there is a screen and only
//! waits otherwise. No `block_on` happens on the GLib loop.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Extras, Running, demo, start_with, systemd};
use crate::config::Config;
use crate::sys::priority::raise_intake_thread;

/// The station's main tokio runtime: worker threads that raise themselves
/// with [`raise_intake_thread`] (once, when they first go idle: tokio calls
/// that hook on workers only, never on its blocking pool's threads).
pub fn intake_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    thread_local! {
        static RAISED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    tokio::runtime::Builder::new_multi_thread()
        // One worker: the readers, the Station and posted taps hand work to
        // each other on one thread instead of waking a second worker to
        // steal it (a profile at 1,000 taps/s spent 29% of the station's
        // samples switching threads and 12% waking them; one worker took
        // 0.72 → 0.54 cores and p99 11.2 → 3.9 ms at 10,000 taps/s,
        // `cargo bench --bench intake`). The Station commits on it too
        // (`store::Writer`), and the first few event streams are written
        // from it; the public side, the fan-out, WAL checkpoints and the
        // screen have threads of their own.
        .worker_threads(1)
        .enable_all()
        .on_thread_park(|| {
            if !RAISED.replace(true) {
                let _ = raise_intake_thread();
            }
        })
        .build()
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
        systemd::notify_stopping();
        token.cancel();
    });
    Ok(())
}

/// Reload the config on every SIGHUP until `shutdown`.
pub(super) fn reload_on_sighup(
    reload: crate::control::Reload,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                s = hup.recv() => if s.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the config");
            systemd::notify_reloading();
            if let Err(e) = reload().await {
                tracing::error!("config reload refused; the running config is kept: {e}");
            }
            systemd::notify_ready("reloaded");
        }
    }))
}

/// Run a station until it is stopped: with simulated visitors for the
/// demo, and the screen on this thread unless `no_screen`.
pub fn run(
    config: &Config,
    demo_visitors: bool,
    no_screen: bool,
    extras: Extras,
) -> anyhow::Result<()> {
    #[cfg(feature = "gtk")]
    if !no_screen
        && crate::screen::display_present()
        && let Some(r) = crate::screen::choose_renderer()
    {
        tracing::info!(
            renderer = r,
            "no GPU render node: the screen draws with GTK's {r} renderer (GSK_RENDERER overrides)"
        );
    }
    let rt = intake_runtime()?;
    let shutdown = CancellationToken::new();
    // Start everything on tokio before the screen (if any) takes the main thread.
    let running = rt.block_on(async {
        cancel_on_signals(shutdown.clone())?;
        // The demo's readers exist before the station opens them.
        let sims = if demo_visitors {
            demo::simulated_readers(config)?
        } else {
            Vec::new()
        };
        let running = start_with(config, shutdown.clone(), extras).await?;
        if demo_visitors {
            println!(
                "\n  pollstation demo: results on http://{}/  operator page on http://{}/operator  (admin token: {})\n  data in {}\n",
                running.http_addr,
                running.http_addr,
                running.admin_token,
                config.station.data_dir.display()
            );
            tokio::spawn(demo::visitors(sims, shutdown.clone()));
        }
        anyhow::Ok(running)
    })?;
    screen(config, &running, &rt, &shutdown, no_screen);
    rt.block_on(running.wait());
    Ok(())
}

/// Show the GTK screen on this thread until it closes, if wanted and possible;
/// otherwise return at once (the station runs headless until a signal).
#[cfg(feature = "gtk")]
fn screen(
    config: &Config,
    running: &Running,
    rt: &tokio::runtime::Runtime,
    shutdown: &CancellationToken,
    no_screen: bool,
) {
    use crate::screen;
    let has_display = screen::display_present();
    let wanted = !no_screen && config.screen.enabled.unwrap_or(has_display);
    if !wanted {
        tracing::info!(
            reason = if no_screen {
                "--no-screen"
            } else if has_display {
                "[screen] enabled = false"
            } else {
                "no display"
            },
            "running headless: no screen"
        );
        return;
    }
    if !has_display {
        tracing::warn!(
            "[screen] enabled = true but no display (DISPLAY/WAYLAND_DISPLAY unset); running headless"
        );
        return;
    }
    let room = &running.room;
    let options = screen::ScreenOptions {
        fullscreen: config.screen.fullscreen,
        rotate: config.screen.rotate,
        qr_url: room.qr.then(|| room.public_url.clone()),
        language: room.language,
    };
    screen::run(&running.station, rt.handle(), options, shutdown);
}

#[cfg(not(feature = "gtk"))]
fn screen(
    _config: &Config,
    _running: &Running,
    _rt: &tokio::runtime::Runtime,
    _shutdown: &CancellationToken,
    _no_screen: bool,
) {
    tracing::info!("running headless: built without the gtk feature");
}
