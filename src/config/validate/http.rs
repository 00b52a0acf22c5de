//! The `[http]` section: where the station listens and the limits that keep
//! a hostile LAN from exhausting it (deadlines, connection caps).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::super::raw::RawHttp;
use super::super::{HttpConfig, HttpLimits};
use super::{Problems, absolute};

pub(super) fn http(raw: &RawHttp, base: &Path, p: &mut Problems) -> HttpConfig {
    let listen = raw
        .listen
        .get_ref()
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| {
            p.add(
                raw.listen.span(),
                format!(
                    "listen address {:?} is not IP:PORT (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")",
                    raw.listen.get_ref()
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
    for (value, key) in [
        (&raw.request_timeout_s, "request_timeout_s"),
        (&raw.header_timeout_s, "header_timeout_s"),
        (&raw.idle_timeout_s, "idle_timeout_s"),
    ] {
        if value.get_ref() == &0 {
            p.add(value.span(), format!("{key} must be at least 1"));
        }
    }
    if raw.max_connections.get_ref() == &0 {
        p.add(
            raw.max_connections.span(),
            "max_connections must be at least 1".into(),
        );
    }
    let per = *raw.max_connections_per_address.get_ref();
    if per == 0 {
        p.add(
            raw.max_connections_per_address.span(),
            "max_connections_per_address must be at least 1".into(),
        );
    } else if per > *raw.max_connections.get_ref() {
        p.add(
            raw.max_connections_per_address.span(),
            format!(
                "max_connections_per_address ({per}) is above max_connections ({})",
                raw.max_connections.get_ref()
            ),
        );
    }
    let public_url = raw.public_url.as_ref().map(|u| {
        let url = u.get_ref().trim();
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() > "https://".len()
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            p.add(
                u.span(),
                format!(
                    "public_url {url:?} is not an http:// or https:// address (e.g. \"http://poll.local:8080/\")"
                ),
            );
        }
        url.to_string()
    });
    HttpConfig {
        listen,
        public_url,
        admin_token_file: raw.admin_token_file.as_ref().map(|f| absolute(base, f)),
        request_timeout: Duration::from_secs(*raw.request_timeout_s.get_ref()),
        limits: HttpLimits {
            header_timeout: Duration::from_secs(*raw.header_timeout_s.get_ref()),
            idle_timeout: Duration::from_secs(*raw.idle_timeout_s.get_ref()),
            max_connections: *raw.max_connections.get_ref(),
            max_per_address: per,
        },
    }
}
