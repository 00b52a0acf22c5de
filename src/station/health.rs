//! The status overview: every component with a level, what is wrong and
//! what to do about it, in the spirit of the original station's
//! availability monitor. Shown on `/healthz`, `pollstation ctl status`, the
//! operator page and the screen.
//!
//! A pure function of the Station's [`Snapshot`]: nothing here keeps state.

use serde::Serialize;

use super::view::{
    HotplugState, IdentityState, LinkState, NetState, ReaderStatus, Snapshot, XmppState,
};

/// How bad it is, from fine to votes being lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Notice,
    Warning,
    Error,
}

impl Level {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// One component's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Component {
    /// `store`, `reader:<id>`, `network`, `hotplug`, `polls`, `identity`, `xmpp`, `herd`.
    pub component: String,
    pub level: Level,
    pub message: String,
    /// What to do about it (none when all is well).
    pub fix: Option<String>,
}

/// The worst level and every component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub level: Level,
    pub components: Vec<Component>,
}

fn c(
    component: impl Into<String>,
    level: Level,
    message: impl Into<String>,
    fix: Option<&str>,
) -> Component {
    Component {
        component: component.into(),
        level,
        message: message.into(),
        fix: fix.map(str::to_string),
    }
}

/// The overview of a snapshot.
#[must_use]
pub fn overview(snap: &Snapshot) -> Overview {
    let mut out = Vec::new();
    out.push(if snap.store.writable {
        c(
            "store",
            Level::Ok,
            format!("log writable, {} taps", snap.store.taps),
            None,
        )
    } else {
        c(
            "store",
            Level::Error,
            format!(
                "VOTES ARE NOT BEING RECORDED: {}",
                snap.store.error.as_deref().unwrap_or("the log cannot be written")
            ),
            Some("free space on the data disk (df -h /var/lib/pollstation) or remount it read-write; taps are accepted again at once"),
        )
    });

    if !snap.polls.iter().any(|p| p.def.open) {
        out.push(c(
            "polls",
            Level::Warning,
            "no poll is open: every tap is refused",
            Some("open a poll on the operator page or with `pollstation ctl poll open POLL`"),
        ));
    } else {
        let open = snap.polls.iter().filter(|p| p.def.open).count();
        out.push(c("polls", Level::Ok, format!("{open} open"), None));
    }

    for r in &snap.readers {
        let name = format!("reader:{}", r.id);
        out.push(match r.status {
            ReaderStatus::Connected if r.frames_bad > 0 => c(
                name,
                Level::Notice,
                format!(
                    "connected; {} corrupt frame(s) skipped of {}",
                    r.frames_bad,
                    r.frames_ok + r.frames_bad
                ),
                Some("if it keeps growing: check the cable, the baud rate and the protocol in the config"),
            ),
            ReaderStatus::Connected => c(
                name,
                Level::Ok,
                format!("connected ({}), {} taps", r.protocol, r.taps),
                None,
            ),
            ReaderStatus::Disconnected => {
                let err = r.last_error.as_deref().unwrap_or("disconnected");
                let fix = if err.contains("ermission denied") {
                    "the service user cannot open the device: install the udev rule (group dialout) and check DeviceAllow="
                } else if err.contains("not plugged in")
                    || err.contains("unplugged")
                    || err.contains("No such file")
                {
                    "plug the reader in (check the USB cable and `ls -l /dev/rfid/`)"
                } else if err.contains("does not answer") {
                    "the device opens but the reader is silent: check its power, wiring and the protocol/baud in the config"
                } else {
                    "check the cable; `pollstation ctl readers` shows the last error"
                };
                c(name, Level::Error, format!("disconnected: {err}"), Some(fix))
            }
        });
    }

    out.push(match snap.network.state {
        NetState::Online => c("network", Level::Ok, format!("online ({})", snap.network.detail), None),
        NetState::Limited => c(
            "network",
            Level::Notice,
            format!("limited: {}", snap.network.detail),
            Some("local services work; for anyMeta or a remote XMPP server check the uplink"),
        ),
        NetState::Offline => c(
            "network",
            Level::Warning,
            format!("offline: {}", snap.network.detail),
            Some("votes are still recorded and are published when the network is back; check the cable or Wi-Fi (nmcli device status)"),
        ),
        NetState::Unknown => c(
            "network",
            Level::Notice,
            format!("unknown: {}", snap.network.detail),
            Some("install and run NetworkManager to see the network state, or ignore"),
        ),
    });

    out.push(match (snap.hotplug.state, snap.hotplug.unbound.len()) {
        (HotplugState::Watching, 0) => c("hotplug", Level::Ok, "following systemd's device units", None),
        (HotplugState::Watching, n) => c(
            "hotplug",
            Level::Notice,
            format!("{n} reader device(s) plugged in but not bound: {}", snap.hotplug.unbound.join(", ")),
            Some("bind it on the operator page, or add a [[reader]] to the config and reload"),
        ),
        (HotplugState::Unavailable, _) => c(
            "hotplug",
            Level::Notice,
            format!("unavailable: {}", snap.hotplug.detail),
            Some("readers are still retried every few seconds; for instant hotplug run under systemd with the udev rule installed"),
        ),
        (HotplugState::Disabled, _) => c("hotplug", Level::Ok, "disabled in the config", None),
    });

    let x = &snap.xmpp;
    out.push(match x.state {
        XmppState::Disabled => c("xmpp", Level::Ok, "not configured", None),
        XmppState::Online if x.outbox > 1000 => c(
            "xmpp",
            Level::Notice,
            format!("online, catching up: {} votes queued", x.outbox),
            None,
        ),
        XmppState::Online => c("xmpp", Level::Ok, format!("online, {} published, {} queued", x.published, x.outbox), None),
        XmppState::Connecting => c("xmpp", Level::Notice, format!("connecting: {}; {} queued", x.detail, x.outbox), None),
        XmppState::Waiting => c(
            "xmpp",
            Level::Warning,
            format!("waiting for the network: {} votes queued", x.outbox),
            Some("votes are kept and published in order when the network is back"),
        ),
        XmppState::Error => c(
            "xmpp",
            Level::Warning,
            format!("error: {}", x.detail),
            Some("votes are kept in the outbox; check [xmpp] server, jid and password, and that the server is up (journalctl -u pollstation)"),
        ),
    });
    let i = &snap.identity;
    out.push(match i.state {
        IdentityState::NotConfigured => c("identity", Level::Ok, "not configured", None),
        IdentityState::Ok | IdentityState::Starting => c(
            "identity",
            Level::Ok,
            format!("{} known, {} pending", i.known, i.pending),
            None,
        ),
        IdentityState::Offline => c(
            "identity",
            Level::Warning,
            format!("lookups wait: {}; {} pending", i.detail, i.pending),
            Some("votes still count; names arrive when anyMeta answers again (check the network and the anyMeta site)"),
        ),
        IdentityState::Degraded => c(
            "identity",
            Level::Notice,
            format!("degraded: {}; {} pending", i.detail, i.pending),
            Some("check [identity] anymeta, the credentials file (mode 0600) and the people file"),
        ),
    });
    out.push(herd(snap));

    let level = out.iter().map(|c| c.level).max().unwrap_or(Level::Ok);
    Overview {
        level,
        components: out,
    }
}

/// The herd's component: links up, in step, clocks, forks.
fn herd(snap: &Snapshot) -> Component {
    let Some(h) = &snap.herd else {
        return c("herd", Level::Ok, "not configured", None);
    };
    if !h.forked.is_empty() {
        return c(
            "herd",
            Level::Error,
            format!(
                "station(s) {} sent two different events under one key",
                h.forked.join(", ")
            ),
            Some(
                "two stations share an id, or one was reinstalled without restoring: give each station its own id (the first events are kept)",
            ),
        );
    }
    if h.restoring {
        return c(
            "herd",
            Level::Warning,
            "restoring this station's log from the herd: taps wait until it has",
            Some("keep a link to a peer up (pollstation ctl herd); it ends by itself"),
        );
    }
    let up = h.peers.iter().filter(|p| p.state == LinkState::Up).count();
    if up == 0 {
        return if h.peers.is_empty() {
            c(
                "herd",
                Level::Notice,
                "waiting for peers to connect",
                Some("votes here are kept and shared once a peer connects"),
            )
        } else {
            c(
                "herd",
                Level::Error,
                format!(
                    "no herd link is up ({} peer(s) configured): votes here are not shared",
                    h.peers.len()
                ),
                Some(
                    "check the network to the other stations and that they run; `pollstation ctl herd` shows each link's last error",
                ),
            )
        };
    }
    let down: Vec<String> = h
        .peers
        .iter()
        .filter(|p| p.state != LinkState::Up)
        .map(|p| p.station.clone().unwrap_or_else(|| p.address.clone()))
        .collect();
    let skewed: Vec<String> = h
        .peers
        .iter()
        .filter(|p| p.skewed)
        .filter_map(|p| p.station.clone())
        .collect();
    let behind: u64 = h.origins.iter().map(|o| o.lag).sum();
    if !down.is_empty() {
        return c(
            "herd",
            Level::Warning,
            format!("{up} link(s) up; down: {}", down.join(", ")),
            Some(
                "votes are kept and exchanged when the link is back; check that station and the network to it",
            ),
        );
    }
    if !skewed.is_empty() {
        return c(
            "herd",
            Level::Warning,
            format!(
                "the clock of {} is off by more than max_skew_ms",
                skewed.join(", ")
            ),
            Some(
                "run NTP (chrony) on every station: counts stay right, but which of one person's two taps counts may not",
            ),
        );
    }
    if behind > 0 {
        return c(
            "herd",
            Level::Notice,
            format!("{up} link(s) up, catching up: {behind} event(s) to receive"),
            None,
        );
    }
    c("herd", Level::Ok, format!("{up} link(s) up, in step"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_from_ok_to_error() {
        assert!(Level::Ok < Level::Notice);
        assert!(Level::Notice < Level::Warning);
        assert!(Level::Warning < Level::Error);
    }
}
