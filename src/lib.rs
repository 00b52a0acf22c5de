//! pollstation: an RFID polling station appliance.
//!
//! People tap a tag on the reader at the answer they choose; the station
//! makes the tap durable, tells them it counted, and shows the tally live.
//!
//! # Layers
//!
//! Each layer imports only the layers above it in this list; nothing
//! imports a layer below it, and there are no cycles (`tests/architecture.rs`
//! reads `src/` and fails on an import that breaks this):
//!
//! 1. [`domain`] — the pure core: polls, tags, taps, people, the tally
//!    fold, the intake rules, back-off, text checks. std, serde, thiserror
//!    and hex only (and utoipa's `ToSchema` derive on the types the HTTP API
//!    serializes, for the OpenAPI document); no tokio, no I/O, no clock.
//! 2. [`sys`] — what is asked of the OS: thread priorities, the wall clock,
//!    secrets, the private data directory. Imports no other layer.
//! 3. [`config`] — the TOML file: raw serde structs, validation with lines,
//!    the typed [`config::Config`].
//! 4. [`store`] — the durable log (SQLite, WAL, group commit), its schema,
//!    replay and export. The only user of rusqlite.
//! 5. [`station`] — the actor that owns the state: its API (commands,
//!    handle, errors), its view (snapshot, events), recovery, the commit
//!    loop; metrics and the health overview.
//! 6. adapters, one per outside system, each a client of the Station's API
//!    and view; an adapter never imports another (where one needs
//!    another's output, `app` hands it in):
//!    - [`reader`]: serial RFID readers (one task each; codecs per protocol);
//!    - [`network`]: NetworkManager's online/offline over D-Bus (zbus);
//!    - [`hotplug`]: readers plugged in and out, from systemd's device units (zbus);
//!    - [`identity`]: tags to people (people file, anyMeta over OAuth 1.0a; reqwest);
//!    - [`xmpp`]: votes published over pubsub from a durable outbox (tokio-xmpp);
//!    - [`herd`]: the log shared with the other stations over mutual-TLS links (rustls);
//!    - [`web`]: HTTP API, SSE, the pages, and HTTP serving (axum);
//!    - `screen`: the GTK tally screen (feature `gtk`), on the main thread;
//!    - [`control`]: the live admin console's Unix socket.
//! 7. [`app`] — start-up wiring, shutdown, systemd, the admin token, the
//!    demo and the simulated readers.
//! 8. [`cli`] — the subcommands; `main.rs` only parses arguments.
//!
//! Outside crates stay in their adapter: axum in `web`, zbus in `network`
//! and `hotplug`, tokio-xmpp in `xmpp`, gtk in `screen`, reqwest in
//! `identity`, rusqlite in `store`, rustls and rcgen in `herd`.

pub mod domain;
pub mod sys;

pub mod config;

pub mod store;

pub mod station;

pub mod control;
pub mod herd;
pub mod hotplug;
pub mod identity;
pub mod network;
pub mod reader;
#[cfg(feature = "gtk")]
pub mod screen;
pub mod web;
pub mod xmpp;

pub mod app;

pub mod cli;
