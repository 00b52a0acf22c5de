//! Connection caps: how many HTTP connections are open at once, in all and
//! per address.
//!
//! Invariants: every served connection holds a [`Permit`] for its whole
//! life, and dropping it gives the place back — before the socket closes,
//! so a client that sees its connection closed finds the place free; the
//! counts never exceed the
//! caps; the station's own host (127.0.0.1, ::1: the kiosk's browser, an
//! operator's `curl` on the box) keeps [`LOCAL_RESERVE`] places beyond the
//! global cap, so a LAN that fills the cap does not lock the operator out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Places beyond the global cap for connections from the station itself.
pub const LOCAL_RESERVE: usize = 8;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the station holds its maximum of {0} connections")]
    Full(usize),
    #[error("this address holds its maximum of {0} connections")]
    PerAddress(usize),
}

/// The counts, shared by the accept loop and the connections' permits.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    per_address: usize,
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Gate {
    #[must_use]
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_address,
            open: Mutex::default(),
        })
    }

    /// Take a place for a connection from `ip`, or say why there is none.
    ///
    /// # Errors
    /// When the global or the per-address cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let ip = ip.to_canonical();
        let max = if ip.is_loopback() && is_own_host(ip) {
            self.max + LOCAL_RESERVE
        } else {
            self.max
        };
        let mut c = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= max {
            return Err(Refused::Full(self.max));
        }
        let mine = c.by_address.entry(ip).or_default();
        if *mine >= self.per_address {
            return Err(Refused::PerAddress(self.per_address));
        }
        *mine += 1;
        c.total += 1;
        Ok(Permit {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// 127.0.0.1 and ::1 (not the rest of 127/8, which a test or a local proxy
/// may use to stand for many clients).
fn is_own_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets() == [127, 0, 0, 1],
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// One admitted connection's place; given back on drop.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self
            .gate
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_hold_and_places_come_back() {
        let gate = Gate::new(4, 2);
        let a1 = gate.admit(ip("10.0.0.1")).unwrap();
        let _a2 = gate.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::PerAddress(2)
        );
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert_eq!(
            gate.admit(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::PerAddress(2)
        );
        let _b1 = gate.admit(ip("10.0.0.2")).unwrap();
        let _b2 = gate.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.3")).unwrap_err(), Refused::Full(4));
        drop(a1);
        assert_eq!(gate.open(), 3);
        let _c = gate.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(gate.open(), 4);
    }

    #[test]
    fn the_station_itself_keeps_a_reserve() {
        let gate = Gate::new(2, 100);
        let _x = gate.admit(ip("10.0.0.1")).unwrap();
        let _y = gate.admit(ip("127.0.0.2")).unwrap();
        assert!(gate.admit(ip("127.0.0.3")).is_err());
        let local: Vec<Permit> = (0..LOCAL_RESERVE)
            .map(|_| gate.admit(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(gate.admit(ip("::1")).unwrap_err(), Refused::Full(2));
        drop(local);
        assert_eq!(gate.open(), 2);
    }
}
