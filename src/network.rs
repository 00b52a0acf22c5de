//! Is the network there? Asked of NetworkManager over the system bus.
//!
//! Watches `org.freedesktop.NetworkManager` (its `State` and `Connectivity`
//! properties, its `StateChanged` signal and the standard
//! `PropertiesChanged`), maps them to online / limited / offline, and tells
//! the Station once a new state has held for the debounce time (so a
//! `connecting` blip during a Wi-Fi roam is not an outage). No system bus or
//! no NetworkManager is `unknown`, and everything else works; a bus that goes
//! away is reconnected to with capped back-off.
//!
//! It only observes: what to do when offline (queue, flush) is decided by
//! the parts that use the network, from the Station's state.
//!
//! D-Bus API: <https://networkmanager.dev/docs/api/latest/gdbus-org.freedesktop.NetworkManager.html>
//! (`NMState`, `NMConnectivityState` in nm-dbus-types).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::NetworkConfig;
use crate::domain::backoff::Backoff;
use crate::station::{Command, NetState, NetworkStatus};
use crate::sys::clock::now_ms;

const NM_BUS_NAME: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
/// Longest wait before trying the system bus again.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager"
)]
trait NetworkManager {
    /// `NMState`: 0 unknown … 70 connected (global).
    #[zbus(property)]
    fn state(&self) -> zbus::Result<u32>;
    /// `NMConnectivityState`: 0 unknown, 1 none, 2 portal, 3 limited, 4 full.
    #[zbus(property)]
    fn connectivity(&self) -> zbus::Result<u32>;
    /// Renamed in Rust: `StateChanged` would clash with the property's stream.
    #[zbus(signal, name = "StateChanged")]
    fn nm_state_changed(&self, state: u32) -> zbus::Result<()>;
}

/// What NetworkManager's numbers mean for a polling station.
#[must_use]
pub fn classify(state: u32, connectivity: u32) -> (NetState, String) {
    let conn = match connectivity {
        1 => "no connectivity",
        2 => "captive portal",
        3 => "limited connectivity",
        4 => "full connectivity",
        _ => "connectivity not checked",
    };
    match state {
        70 => match connectivity {
            2 | 3 => (NetState::Limited, format!("connected, {conn}")),
            _ => (NetState::Online, format!("connected, {conn}")),
        },
        60 => (NetState::Limited, "connected to the site only".into()),
        50 => (
            NetState::Limited,
            "connected to the local network only".into(),
        ),
        40 => (NetState::Offline, "connecting".into()),
        30 => (NetState::Offline, "disconnecting".into()),
        20 => (NetState::Offline, "disconnected".into()),
        10 => (NetState::Offline, "networking is disabled (asleep)".into()),
        _ => (
            NetState::Unknown,
            format!("NetworkManager reports state {state}"),
        ),
    }
}

/// Watch NetworkManager for as long as the station runs.
pub async fn run(cfg: NetworkConfig, station: mpsc::Sender<Command>, shutdown: CancellationToken) {
    let mut reporter = Reporter {
        station,
        current: None,
    };
    if !cfg.watch {
        reporter
            .set(NetState::Unknown, "not watched ([network] watch = false)")
            .await;
        return;
    }
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut last_error = String::new();
    loop {
        let err = match watch(&cfg, &mut reporter, &mut backoff, &shutdown).await {
            Ok(()) => return,
            Err(e) => e,
        };
        reporter
            .set(NetState::Unknown, &format!("system bus: {err}"))
            .await;
        // Said once at warn level; the same error again only at debug.
        if err.to_string() == last_error {
            tracing::debug!(error = %err, retry_in_ms = backoff.peek().as_millis(), "network: still cannot watch NetworkManager");
        } else {
            tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis(), "network: cannot watch NetworkManager");
            last_error = err.to_string();
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.fail()) => {}
        }
    }
}

/// Sends the Station each state once.
struct Reporter {
    station: mpsc::Sender<Command>,
    current: Option<(NetState, String)>,
}

impl Reporter {
    async fn set(&mut self, state: NetState, detail: &str) {
        if self
            .current
            .as_ref()
            .is_some_and(|(s, d)| *s == state && d == detail)
        {
            return;
        }
        if self.current.as_ref().map(|c| c.0) != Some(state) {
            tracing::info!(state = state.as_str(), detail, "network");
        }
        self.current = Some((state, detail.to_string()));
        let _ = self
            .station
            .send(Command::Network(NetworkStatus {
                state,
                detail: detail.to_string(),
                since: now_ms(),
            }))
            .await;
    }
}

/// Why watching stopped (it is retried).
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Bus(#[from] zbus::Error),
    #[error("the bus connection was lost")]
    Lost,
}

/// Read NetworkManager's state now; `None` when it is not on the bus.
async fn read(nm: &NetworkManagerProxy<'_>) -> Result<Option<(NetState, String)>, zbus::Error> {
    let state = match nm.state().await {
        Ok(s) => s,
        Err(zbus::Error::FDO(e)) if matches!(*e, zbus::fdo::Error::ServiceUnknown(_)) => {
            return Ok(None);
        }
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let connectivity = nm.connectivity().await.unwrap_or(0);
    Ok(Some(classify(state, connectivity)))
}

async fn watch(
    cfg: &NetworkConfig,
    reporter: &mut Reporter,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<(), WatchError> {
    let conn = zbus::Connection::system().await?;
    let nm = NetworkManagerProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let props = zbus::fdo::PropertiesProxy::builder(&conn)
        .destination(NM_BUS_NAME)
        .path(NM_PATH)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let mut owner = nm.inner().receive_owner_changed().await?;
    let mut signals = nm.receive_nm_state_changed().await?;
    let mut changed = props.receive_properties_changed().await?;
    backoff.reset();
    tracing::debug!("network: watching NetworkManager on the system bus");

    const ABSENT: &str = "NetworkManager is not running";
    let first = read(&nm).await?;
    match &first {
        Some((s, d)) => reporter.set(*s, d).await,
        None => reporter.set(NetState::Unknown, ABSENT).await,
    }
    // A state seen but not yet held for the debounce time.
    let mut pending: Option<((NetState, String), Instant)> = None;
    loop {
        let deadline = pending.as_ref().map(|(_, at)| *at);
        let reread = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = sleep_until(deadline) => {
                if let Some(((s, d), _)) = pending.take() {
                    reporter.set(s, &d).await;
                }
                false
            }
            o = owner.next() => match o {
                None => return Err(WatchError::Lost),
                Some(None) => {
                    // Gone from the bus: no debounce, it is not coming back soon.
                    pending = None;
                    reporter.set(NetState::Unknown, ABSENT).await;
                    false
                }
                Some(Some(_)) => true,
            },
            s = signals.next() => match s {
                None => return Err(WatchError::Lost),
                Some(_) => true,
            },
            c = changed.next() => match c {
                None => return Err(WatchError::Lost),
                Some(_) => true,
            },
        };
        if !reread {
            continue;
        }
        let Some(now) = read(&nm).await? else {
            continue;
        };
        let same = reporter.current.as_ref() == Some(&now);
        if same {
            pending = None;
        } else if pending.as_ref().map(|(p, _)| p) != Some(&now) {
            pending = Some((now, Instant::now() + cfg.debounce));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_networkmanager_states() {
        assert_eq!(classify(70, 4).0, NetState::Online);
        assert_eq!(classify(70, 0).0, NetState::Online);
        assert_eq!(classify(70, 2).0, NetState::Limited);
        assert_eq!(classify(60, 4).0, NetState::Limited);
        assert_eq!(classify(50, 1).0, NetState::Limited);
        assert_eq!(classify(40, 1).0, NetState::Offline);
        assert_eq!(classify(20, 1).0, NetState::Offline);
        assert_eq!(classify(10, 0).0, NetState::Offline);
        assert_eq!(classify(0, 0).0, NetState::Unknown);
    }
}
