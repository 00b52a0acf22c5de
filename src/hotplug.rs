//! Readers plugged in and pulled out, heard from systemd over the system bus.
//!
//! Our udev rule tags each reader `TAG+="systemd"` and names it under
//! `/dev/rfid/`, so systemd keeps a device unit for it (the unit name is the
//! escaped path: `/dev/rfid/post-1` → `dev-rfid-post\x2d1.device`). This
//! module calls `Subscribe` on `org.freedesktop.systemd1.Manager`, lists the
//! device units already there (`ListUnitsByPatterns`) and follows `UnitNew` /
//! `UnitRemoved`. Each reader task watches its own device's presence
//! ([`DevicePresence`], through the [`Devices::watch`] that `app` hands the
//! readers):
//! it opens the device the moment the unit appears and drops it the moment
//! the unit goes, instead of finding out from an I/O timeout. Devices that
//! match `[hotplug] pattern` but no configured reader are reported to the
//! Station, which shows them to the operator for binding.
//!
//! Without a system bus or systemd, every device is [`DevicePresence::Unknown`] and
//! readers fall back to retrying their device with back-off.
//!
//! D-Bus API: org.freedesktop.systemd1(5),
//! <https://www.freedesktop.org/software/systemd/man/latest/org.freedesktop.systemd1.html>.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::HotplugConfig;
use crate::domain::backoff::Backoff;
use crate::station::{Command, DevicePresence, DeviceWatch, HotplugState, HotplugStatus};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One unit as `ListUnits*` returns it: name, description, load state,
/// active state, sub state, following, object path, job id, job type, job path.
pub type UnitInfo = (
    String,
    String,
    String,
    String,
    String,
    String,
    zbus::OwnedObjectPath,
    u32,
    String,
    zbus::OwnedObjectPath,
);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    /// Without it, systemd sends no unit signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitInfo>>;
    #[zbus(signal)]
    fn unit_new(&self, id: String, unit: zbus::OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_removed(&self, id: String, unit: zbus::OwnedObjectPath) -> zbus::Result<()>;
}

/// The systemd device unit name of a device path (`systemd-escape --path`).
#[must_use]
pub fn unit_name(device: &Path) -> String {
    let s = device.to_string_lossy();
    let trimmed = s.trim_matches('/');
    let mut out = String::new();
    let mut last_slash = false;
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => {
                if !last_slash {
                    out.push('-');
                }
                last_slash = true;
                continue;
            }
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(char::from(b));
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
        last_slash = false;
    }
    if out.is_empty() {
        out.push('-');
    }
    out.push_str(".device");
    out
}

/// The device path of a device unit name (`systemd-escape --unescape --path`).
#[must_use]
pub fn device_path(unit: &str) -> Option<String> {
    let name = unit.strip_suffix(".device")?;
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(b'/');
    let raw = name.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'-' => bytes.push(b'/'),
            b'\\' if raw.get(i + 1) == Some(&b'x') && i + 3 < raw.len() => {
                let hex = std::str::from_utf8(&raw[i + 2..i + 4]).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).ok()
}

/// The device units systemd has, shared with every reader task.
#[derive(Clone, Default, Debug)]
pub struct Devices {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default, Debug)]
struct Inner {
    /// Whether systemd is being followed (else everything is `Unknown`).
    watching: bool,
    present: HashSet<String>,
    watchers: HashMap<String, watch::Sender<DevicePresence>>,
}

impl Inner {
    fn presence(&self, unit: &str) -> DevicePresence {
        match (self.watching, self.present.contains(unit)) {
            (false, _) => DevicePresence::Unknown,
            (true, true) => DevicePresence::Present,
            (true, false) => DevicePresence::Absent,
        }
    }

    fn notify(&self) {
        for (unit, tx) in &self.watchers {
            let p = self.presence(unit);
            tx.send_if_modified(|old| std::mem::replace(old, p) != p);
        }
    }
}

impl Devices {
    /// Follow one device's presence.
    #[must_use]
    pub fn watch(&self, device: &Path) -> DeviceWatch {
        let unit = unit_name(device);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = inner.presence(&unit);
        let presence = inner
            .watchers
            .entry(unit.clone())
            .or_insert_with(|| watch::channel(p).0)
            .subscribe();
        DeviceWatch { presence, unit }
    }

    fn update(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner);
        inner.notify();
    }
}

/// Follow systemd's device units for as long as the station runs.
pub async fn run(
    cfg: HotplugConfig,
    devices: Devices,
    station: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let report = |state, detail: String, present: Vec<String>| {
        let station = station.clone();
        async move {
            let _ = station
                .send(Command::Hotplug(HotplugStatus {
                    state,
                    detail,
                    devices: present,
                }))
                .await;
        }
    };
    if !cfg.enabled {
        report(
            HotplugState::Disabled,
            "not watched ([hotplug] enabled = false)".into(),
            vec![],
        )
        .await;
        return;
    }
    let pattern = match glob::Pattern::new(&cfg.pattern) {
        Ok(p) => p,
        Err(e) => {
            report(
                HotplugState::Unavailable,
                format!("bad pattern {:?}: {e}", cfg.pattern),
                vec![],
            )
            .await;
            return;
        }
    };
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut last_error = String::new();
    loop {
        let result = follow(&devices, &pattern, &station, &mut backoff, &shutdown).await;
        devices.update(|i| {
            i.watching = false;
            i.present.clear();
        });
        let err = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if err.to_string() == last_error {
            tracing::debug!(error = %err, retry_in_ms = backoff.peek().as_millis(), "hotplug: still cannot follow systemd's device units");
        } else {
            tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis(), "hotplug: cannot follow systemd's device units; readers retry their devices instead");
            last_error = err.to_string();
        }
        report(
            HotplugState::Unavailable,
            format!("systemd on the system bus: {err}"),
            vec![],
        )
        .await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.fail()) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Bus(#[from] zbus::Error),
    #[error("the bus connection was lost")]
    Lost,
    #[error("systemd left the bus")]
    ManagerGone,
}

async fn follow(
    devices: &Devices,
    pattern: &glob::Pattern,
    station: &mpsc::Sender<Command>,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<(), FollowError> {
    let conn = zbus::Connection::system().await?;
    let manager = ManagerProxy::new(&conn).await?;
    // Listen first, then subscribe and list, so nothing falls in between.
    let mut new = manager.receive_unit_new().await?;
    let mut removed = manager.receive_unit_removed().await?;
    let mut owner = manager.inner().receive_owner_changed().await?;
    manager.subscribe().await?;
    let listed = manager
        .list_units_by_patterns(&[], &["*.device"])
        .await?
        .into_iter()
        // A loaded but dead device unit is one systemd remembers, not a device.
        .filter(|u| u.3 == "active" || u.4 == "plugged")
        .map(|u| u.0)
        .collect::<HashSet<_>>();
    backoff.reset();
    tracing::info!(
        devices = listed.len(),
        "hotplug: following systemd's device units"
    );
    let mut present = listed;
    let matching = |present: &HashSet<String>| {
        let mut v: Vec<String> = present
            .iter()
            .filter(|u| pattern.matches(u))
            .filter_map(|u| device_path(u))
            .collect();
        v.sort();
        v
    };
    devices.update(|i| {
        i.watching = true;
        i.present.clone_from(&present);
    });
    let send = |present: &HashSet<String>| {
        Command::Hotplug(HotplugStatus {
            state: HotplugState::Watching,
            detail: "following systemd's device units".into(),
            devices: matching(present),
        })
    };
    let _ = station.send(send(&present)).await;
    loop {
        let changed = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            s = new.next() => {
                let s = s.ok_or(FollowError::Lost)?;
                let unit = s.args()?.id;
                if !unit.ends_with(".device") {
                    continue;
                }
                tracing::info!(unit, "hotplug: device appeared");
                devices.update(|i| { i.present.insert(unit.clone()); });
                present.insert(unit.clone());
                pattern.matches(&unit)
            }
            s = removed.next() => {
                let s = s.ok_or(FollowError::Lost)?;
                let unit = s.args()?.id;
                if !unit.ends_with(".device") {
                    continue;
                }
                tracing::info!(unit, "hotplug: device removed");
                devices.update(|i| { i.present.remove(&unit); });
                present.remove(&unit);
                pattern.matches(&unit)
            }
            o = owner.next() => match o {
                None => return Err(FollowError::Lost),
                Some(None) => return Err(FollowError::ManagerGone),
                Some(Some(_)) => continue,
            },
        };
        if changed {
            let _ = station.send(send(&present)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_systemd_escape_path() {
        // Values from `systemd-escape --path --suffix=device …`.
        assert_eq!(
            unit_name(Path::new("/dev/rfid/post-1")),
            "dev-rfid-post\\x2d1.device"
        );
        assert_eq!(unit_name(Path::new("/dev/ttyUSB0")), "dev-ttyUSB0.device");
        assert_eq!(
            unit_name(Path::new("/dev/serial/by-id/usb-FTDI_FT232R_A1-if00-port0")),
            "dev-serial-by\\x2did-usb\\x2dFTDI_FT232R_A1\\x2dif00\\x2dport0.device"
        );
        assert_eq!(unit_name(Path::new("/tmp/x y//z/")), "tmp-x\\x20y-z.device");
        for p in ["/dev/rfid/post-1", "/dev/ttyACM0", "/tmp/x y/z"] {
            assert_eq!(device_path(&unit_name(Path::new(p))).as_deref(), Some(p));
        }
    }

    #[tokio::test]
    async fn presence_follows_updates() {
        let d = Devices::default();
        let mut rx = d.watch(Path::new("/dev/rfid/a")).presence;
        assert_eq!(*rx.borrow_and_update(), DevicePresence::Unknown);
        d.update(|i| i.watching = true);
        assert_eq!(*rx.borrow_and_update(), DevicePresence::Absent);
        d.update(|i| {
            i.present.insert("dev-rfid-a.device".into());
        });
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), DevicePresence::Present);
        d.update(|i| {
            i.present.insert("dev-rfid-b.device".into());
        });
        assert!(!rx.has_changed().unwrap(), "another device is no news");
    }
}
