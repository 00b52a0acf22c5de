//! The Station: the one task that owns the polling state.
//!
//! Inputs (readers, the admin API, identity, XMPP, hotplug, the network
//! watcher) send it [`Command`]s through a [`StationHandle`]. It applies
//! them in batches and commits each batch in one transaction (group
//! commit); only after the commit does it apply the taps, answer the
//! senders and announce the change: the latest [`Snapshot`] on a `watch`,
//! each [`Event`] on a `broadcast`. Subscribers that fall behind lag and
//! resync from the snapshot; they never hold the Station up.
//!
//! - [`api`]: commands, the handle, errors, the contracts `app` wires;
//! - [`view`]: the snapshot and the events, with the component states;
//! - `state`: every decision, synchronous and unit-tested; `reload`: the
//!   reload plan;
//! - `commit`: the batch loop, the group commit and its riders;
//!   `announce`: the watch, status events, counters; `checkpoint`;
//!   `outbox`: votes to publish; `operator`: actions, bindings, re-folds;
//! - `herd`: the herd's events in the state (sorting, applying, restore);
//! - `recover`: start-up from the log;
//! - [`ring`]: the replay ring for resumed event streams;
//! - [`metrics`], [`health`]: what `/metrics` and the health overview read.
//!
//! Invariants: the Station task alone mutates the state (no locks around
//! it); it does I/O only through the store; a tap is announced only after
//! its batch committed; adapters see the log only through the handle.

mod announce;
pub mod api;
mod checkpoint;
mod commit;
pub mod health;
mod herd;
pub mod metrics;
mod operator;
mod outbox;
mod people;
mod readers;
mod recover;
mod reload;
pub mod ring;
mod state;
#[cfg(test)]
mod tests;
pub mod timeline;
pub mod view;

pub use api::{
    ActionError, BindError, Command, DevicePresence, DeviceWatch, ExportFormat, ExportLines,
    HerdApplied, HerdReport, OutboxEncoder, OutboxItem, ReaderCtl, ReaderReport, ReloadReport,
    StationHandle, StoreError, TapError, TapOutcome, Vote, WatchDevice,
};
pub use recover::{StartError, Started, start};
pub use view::{
    Event, HerdView, HotplugState, HotplugStatus, HotplugView, IdentityState, IdentityView,
    LinkState, NetState, NetworkStatus, OriginView, PeerView, PersonEvent, PollState, ReaderState,
    ReaderStatus, RefusedPeer, RemoteTally, Snapshot, StoreHealth, TapEvent, XmppState, XmppView,
};
