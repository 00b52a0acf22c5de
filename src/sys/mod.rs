//! What the station asks of the operating system, in one place: thread
//! priorities ([`priority`]), the wall clock ([`clock`]), secrets read from
//! files or systemd credentials ([`secret`]), the open-files limit
//! ([`limits`]), the host's name and public address ([`host`]) and a data directory that is
//! trusted only when it is ours ([`fs`]).
//!
//! Invariants: imports nothing of the crate; every layer but the domain may
//! use it; nothing here keeps state beyond a log-once flag.

pub mod clock;
pub mod fs;
pub mod host;
pub mod limits;
pub mod priority;
pub mod secret;
