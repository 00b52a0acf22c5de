//! The domain: the pure core every other layer builds on.
//!
//! What a poll, a tag, a tap, a person and a vote are; how taps fold into
//! tallies ([`tally`]); what an arriving tag becomes ([`intake`]); how a
//! retry waits ([`backoff`]); which text is fit to show and publish
//! ([`text`]); the words people read, per language ([`words`]).
//!
//! Invariants:
//! - no I/O, no clock, no async: time is passed in, results are returned;
//! - imports nothing of the crate, and of the outside only std, serde,
//!   thiserror and hex, and utoipa's `ToSchema` derive on the types the
//!   HTTP API serializes (a test in `tests/architecture.rs` keeps it so);
//! - everything here is unit- or property-tested.

pub mod backoff;
pub mod herd;
pub mod intake;
pub mod person;
pub mod poll;
pub mod tally;
pub mod tap;
pub mod text;
pub mod words;

pub use person::{IdentityRecord, Person, Voter};
pub use poll::{
    Action, ActionKind, ActivePoll, Answer, Binding, BindingError, Display, PollDef, Rule,
};
pub use tap::{TagError, TagUid, Tap, TapKey, TapRecord};
pub use words::{Language, Words};
