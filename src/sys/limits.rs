//! Resource limits: how many files the process may hold open.
//!
//! The station raises its soft `RLIMIT_NOFILE` to the hard limit at start
//! (systemd's `LimitNOFILE=` sets both); the HTTP side then caps its
//! connections so that a [`RESERVED_FDS`] remain for the readers, the store,
//! the herd links and the control socket, whatever the LAN does.

use std::io;

/// File descriptors kept out of the HTTP side's reach.
pub const RESERVED_FDS: u64 = 256;

/// Raise the soft limit on open files to the hard limit; the limit now in
/// force.
///
/// # Errors
/// When the limit cannot be read.
pub fn raise_open_files() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads `raised`, which lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
        tracing::debug!(error = %io::Error::last_os_error(), "cannot raise the open-files limit");
    }
    Ok(lim.rlim_cur)
}

/// The connections the HTTP side may hold: what was configured, or fewer
/// when the open-files limit would leave less than [`RESERVED_FDS`].
#[must_use]
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let room = usize::try_from(open_files.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    configured.min(room.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve() {
        assert_eq!(connection_cap(16_384, 65_536), 16_384);
        assert_eq!(connection_cap(16_384, 1_024), 768);
        assert_eq!(connection_cap(16_384, 100), 1);
    }

    #[test]
    fn the_soft_limit_rises_to_the_hard_one() {
        let now = raise_open_files().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) },
            0
        );
        assert_eq!(now, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
