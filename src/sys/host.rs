//! The host's name and the address visitors reach the station at.

use std::net::SocketAddr;

/// The host's name (`/proc/sys/kernel/hostname`, as `uname -n`), if set.
#[must_use]
pub fn name() -> Option<String> {
    let n = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let n = n.trim();
    (!n.is_empty() && n != "(none)" && n != "localhost").then(|| n.to_string())
}

/// The results page's address from the bound listen address: the address
/// itself when it is a specific one, else the host's name (`.local`, as
/// Avahi publishes it on the LAN) — for a QR code a phone can follow.
#[must_use]
pub fn public_url(bound: SocketAddr, host: Option<&str>) -> String {
    let ip = bound.ip();
    let authority = if ip.is_unspecified() {
        match host {
            Some(h) if h.contains('.') => format!("{h}:{}", bound.port()),
            Some(h) => format!("{h}.local:{}", bound.port()),
            None => bound.to_string(),
        }
    } else {
        bound.to_string()
    };
    format!("http://{authority}/")
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn the_address_follows_the_listener() {
        let a = |s: &str| s.parse().unwrap();
        assert_eq!(
            public_url(a("127.0.0.1:8080"), Some("box")),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            public_url(a("0.0.0.0:8080"), Some("poll-1")),
            "http://poll-1.local:8080/"
        );
        assert_eq!(
            public_url(a("[::]:80"), Some("poll.example.org")),
            "http://poll.example.org:80/"
        );
        assert_eq!(public_url(a("[fe80::1]:80"), None), "http://[fe80::1]:80/");
    }
}
