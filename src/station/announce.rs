//! What goes out of the Station besides the events of a commit: the
//! snapshot on the watch, `status` events, the counters that move without
//! an event of their own (announced at most every [`COUNTERS_EVERY`]), and
//! the store's health.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::commit::Station;
use super::view::{Event, Snapshot};
use crate::store::{CommitStats, StoreError};

/// Counters that change without a status change of their own (the XMPP
/// outbox, identity lookups) are announced in a `status` event at most this
/// often, so a watcher need not poll for them.
const COUNTERS_EVERY: Duration = Duration::from_millis(250);

impl Station {
    pub(super) fn store_ok(&mut self, stats: CommitStats) {
        self.metrics
            .commit_seconds
            .observe(stats.duration.as_secs_f64());
        self.metrics.batch_size.observe(stats.records as f64);
        let health = &mut self.state.store_health;
        let was_failing = !health.writable;
        health.writable = true;
        health.error = None;
        health.last_commit_ms = Some(stats.duration.as_secs_f64() * 1000.0);
        if was_failing {
            tracing::info!("store: writing again");
            self.announce_status();
        }
    }

    pub(super) fn store_failed(&mut self, e: &StoreError) {
        let text = e.to_string();
        let health = &mut self.state.store_health;
        let changed = health.error.as_deref() != Some(&text);
        health.writable = false;
        health.error = Some(text);
        if changed {
            self.announce_status();
        }
    }

    /// Put the current state on the watch.
    pub(super) fn show(&mut self) -> Arc<Snapshot> {
        self.view_stale = false;
        if self.state.counters() != self.counters.announced {
            self.counters.unannounced = true;
        }
        let snap = Arc::new(self.state.snapshot());
        self.out.state_tx.send_replace(snap.clone());
        snap
    }

    /// Show the state and announce it as a `status` event.
    pub(super) fn announce_status(&mut self) {
        let snap = self.show();
        self.counters.announced = self.state.counters();
        self.counters.unannounced = false;
        self.counters.at = Instant::now();
        let _ = self.out.events.send(Event::Status(snap));
    }

    /// Announce the status if the counters moved, at most every
    /// [`COUNTERS_EVERY`] (a timer catches the last change).
    pub(super) fn counters_moved(&mut self) {
        if self.counters.due.is_some()
            || (self.state.counters() == self.counters.announced && !self.counters.unannounced)
        {
            return;
        }
        let next = self.counters.at + COUNTERS_EVERY;
        if Instant::now() >= next {
            self.announce_status();
        } else {
            self.counters.due = Some(next);
        }
    }

    /// Hand a commit's new events to the herd links (the live path), before
    /// [`Self::publish_heads`] so a link wakes on them first.
    pub(super) fn herd_live(&self, events: impl FnOnce() -> Vec<crate::domain::herd::HerdEvent>) {
        if let Some(live) = &self.out.herd_live
            && live.receiver_count() > 0
        {
            let events = events();
            if !events.is_empty() {
                let _ = live.send(events.into());
            }
        }
    }

    /// Tell the herd links what this station holds now, if it changed.
    pub(super) fn publish_heads(&mut self) {
        let heads = &self.state.heads;
        self.out.heads.send_if_modified(|h| {
            if **h == *heads {
                false
            } else {
                *h = std::sync::Arc::new(heads.clone());
                true
            }
        });
    }
}
