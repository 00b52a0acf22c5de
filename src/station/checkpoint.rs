//! Checkpoints: the tally state saved in the log every [`CHECKPOINT_EVERY`]
//! taps and at stop, so a start replays only what follows. A checkpoint is
//! a cache (the `snapshots` table): losing it only makes a start slower.
//!
//! Invariant: a checkpoint never covers a counted tap whose publication is
//! not in the outbox yet (a crash would skip it).

use super::commit::Station;
use crate::store::Record;
use crate::sys::clock::now_ms;

/// Taps between two checkpoints of the tally state: bounds the replay at start.
const CHECKPOINT_EVERY: u64 = 50_000;

impl Station {
    /// Whether enough has happened since the last checkpoint to log another.
    pub(super) fn checkpoint_due(&self) -> bool {
        let since = self
            .checkpoint_taps
            .map_or(u64::MAX, |s| self.state.taps_logged - s);
        since >= CHECKPOINT_EVERY
    }

    /// Save the tally state so the next start replays only what follows.
    pub(super) async fn checkpoint(&mut self) {
        // A checkpoint covers taps: their publications must be in the outbox
        // first, or a crash would skip them (replay starts after it).
        self.flush_riders().await;
        if !self.riders.outbox.is_empty() {
            // Not written (the store refused): no checkpoint past them.
            return;
        }
        let started = std::time::Instant::now();
        let data = match serde_json::to_vec(&self.state.saved()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the tally state; no checkpoint");
                return;
            }
        };
        let bytes = data.len();
        let taps = self.state.taps_logged;
        let record = Record::Checkpoint {
            data,
            at: now_ms(),
            taps,
        };
        match self.writer.append(&[record]) {
            Ok(_) => {
                self.checkpoint_taps = Some(taps);
                tracing::debug!(
                    taps,
                    bytes,
                    elapsed_ms = started.elapsed().as_millis(),
                    "checkpoint saved"
                );
            }
            // Only a cache: the next start replays more of the log.
            Err(e) => tracing::warn!(error = %e, "checkpoint not saved"),
        }
    }
}
