//! The outbox of counted votes: each of this station's counted taps is
//! encoded (by the XMPP adapter's [`OutboxEncoder`]) with its poll's tally
//! as it is after the commit, and rides with the next commit.
//!
//! Invariant: a vote enters the outbox only after its tap is durable and
//! answered; foreign taps are never published by this station.

use std::collections::HashMap;
use std::sync::Arc;

use super::commit::Station;
use crate::domain::Tap;
use crate::domain::tally::TallyView;
use crate::store::{OutboxItem, Record};

#[allow(unused_imports)]
use super::api::OutboxEncoder;

impl Station {
    /// The outbox items of the counted taps among `taps`, with their polls'
    /// tallies as they are now.
    pub(super) fn encode(&self, taps: &[Tap], counted: &[bool]) -> Vec<OutboxItem> {
        let Some(encoder) = &self.encoder else {
            return Vec::new();
        };
        let mut views: HashMap<Arc<str>, TallyView> = HashMap::new();
        for (t, _) in taps.iter().zip(counted).filter(|(_, c)| **c) {
            if !views.contains_key(&t.poll)
                && let Some(v) = self.state.tallies.view(&t.poll)
            {
                views.insert(t.poll.clone(), v);
            }
        }
        encoder.encode(&self.state.votes(taps, counted, &views))
    }

    /// Write publications to the outbox (after the taps are durable).
    pub(super) async fn enqueue(&mut self, items: Vec<OutboxItem>, through: u64) {
        let n = items.len() as u64;
        match self.writer.append(&[Record::Outbox { items, through }]) {
            Ok(_) => {
                self.state.xmpp.outbox += n;
                self.view_stale = true;
            }
            // The taps are in the log above the mark: the next start enqueues them.
            Err(e) => {
                tracing::warn!(error = %e, items = n, "cannot enqueue votes for XMPP now; they are enqueued at the next start");
            }
        }
    }
}
