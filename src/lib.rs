//! pollstation: an RFID polling station appliance.
//!
//! People tap a tag on the reader at the answer they choose; the station
//! makes the tap durable, tells them it counted, and shows the tally live.
//!
//! Map of the crate (dependencies point inward, to the pure domain):
//!
//! - domain, pure, no I/O:
//!   - [`poll`]: polls, answers, rules, tag UIDs, taps and their total order;
//!   - [`tally`]: the incremental tally engine (equal to a rebuild from the log);
//! - [`config`]: the TOML file, validated with line-accurate errors;
//! - [`store`]: the durable log (SQLite, WAL, group commit) on its own thread;
//! - [`station`]: the one task that owns the state, batches commits, and
//!   announces changes (`watch` for state, `broadcast` for events);
//! - outside systems, each a client of the Station:
//!   - [`reader`]: serial RFID readers (one task each; codecs per protocol);
//!   - [`web`]: HTTP API, SSE, results page (axum);
//!   - [`serve`]: the HTTP listener; crowds of event streams on their own low-priority runtime;
//!   - [`network`]: NetworkManager's online/offline over D-Bus (zbus);
//!   - [`hotplug`]: readers plugged in and out, from systemd's device units (zbus);
//!   - [`identity`]: tags to people (people file, anyMeta over OAuth 1.0a), off the hot path;
//!   - [`xmpp`]: votes published over XMPP pubsub from a durable outbox; remote results heard;
//!   - `screen`: the GTK tally screen (feature `gtk`), on the main thread;
//! - [`sim`]: simulated readers on pseudo-terminals (demo, tests, `pollstation sim`);
//! - [`metrics`]: Prometheus metrics;
//! - [`priority`]: lower CPU priority for the threads that must not slow the intake;
//! - [`health`]: the status overview (level, message and fix per component);
//! - [`service`]: wires the parts together and shuts them down in order;
//! - [`control`] / [`ctl`]: the live admin console (Unix socket, `pollstation ctl`);
//! - [`systemd`]: sd_notify (ready, reloading, stopping, watchdog);
//! - [`demo`]: the built-in demo config and simulated visitors.

pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod health;
pub mod hotplug;
pub mod identity;
pub mod metrics;
pub mod network;
pub mod poll;
pub mod priority;
pub mod reader;
#[cfg(feature = "gtk")]
pub mod screen;
pub mod serve;
pub mod service;
pub mod sim;
pub mod station;
pub mod store;
pub mod systemd;
pub mod tally;
pub mod web;
pub mod xmpp;
