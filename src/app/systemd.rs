//! Talking to systemd as its service: `READY=1` once the log is open and the
//! listener bound, `RELOADING=1` / `STOPPING=1`, a `STATUS=` line, and
//! `WATCHDOG=1` while the Station task answers. Outside systemd (no
//! `NOTIFY_SOCKET`) all of it does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::station::StationHandle;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_reloading() {
    // systemd ≥ 253 wants the monotonic time with RELOADING=1.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Ping the watchdog every third of `WatchdogSec` while the Station answers
/// a ping within that time; a stuck Station stops the pings, and systemd
/// restarts the service.
pub async fn watchdog(station: StationHandle, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 3).max(Duration::from_millis(100));
    tracing::info!(every_ms = every.as_millis(), "systemd watchdog enabled");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if station.alive(every).await {
            notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("the Station task did not answer in time; not pinging the watchdog");
        }
    }
}
