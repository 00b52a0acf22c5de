//! What operators do through the Station: poll actions (logged as the next
//! of this station's action feed, then applied), runtime reader bindings,
//! and the re-fold of a poll from the log when an action (or a reset that
//! arrived late from another station) lies below taps already applied.

use super::api::{ActionError, BindError, ReaderCtl};
use super::commit::Station;
use super::view::{Event, PollState, ReaderState};
use crate::config::ReaderConfig;
use crate::store::Record;
use crate::sys::clock::now_ms;

impl Station {
    pub(super) async fn apply_action(
        &mut self,
        poll: &str,
        kind: crate::domain::ActionKind,
    ) -> Result<PollState, ActionError> {
        let action = self.state.plan_action(poll, kind, now_ms())?;
        match self.writer.append(&[Record::Action(action.clone())]) {
            Err(e) => {
                self.store_failed(&e);
                return Err(ActionError::Store(e));
            }
            Ok(stats) => self.store_ok(stats),
        }
        self.herd_live(|| vec![crate::domain::herd::HerdEvent::Action(action.clone())]);
        let (events, refold) = self.state.action_committed(&action);
        for e in events {
            let _ = self.out.events.send(e);
        }
        self.refold(refold).await;
        self.publish_heads();
        tracing::info!(poll, action = %kind, "operator action logged");
        self.announce_status();
        Ok(self
            .state
            .poll_state(poll)
            .expect("the action was planned for a configured poll"))
    }

    pub(super) async fn bind_reader(
        &mut self,
        cfg: ReaderConfig,
    ) -> Result<ReaderState, BindError> {
        let record = self.state.plan_bind(&cfg, now_ms())?;
        match self.writer.append(&[record]) {
            Err(e) => {
                self.store_failed(&e);
                return Err(BindError::Store(e));
            }
            Ok(stats) => self.store_ok(stats),
        }
        tracing::info!(reader = %cfg.id, device = %cfg.device.display(), "reader bound by the operator");
        let state = self.state.readers.add(cfg.clone());
        let _ = self.out.reader_ctl.send(ReaderCtl::Start(cfg));
        self.announce_status();
        Ok(state)
    }

    /// Re-fold these polls from the log and announce their tallies.
    pub(super) async fn refold(&mut self, polls: impl IntoIterator<Item = String>) {
        for poll in polls {
            match self.store.poll_taps(poll.clone()).await {
                Ok(taps) => {
                    tracing::info!(
                        poll,
                        taps = taps.len(),
                        "re-folding a poll from the log (an action arrived below its taps)"
                    );
                    self.state.tallies.refold(&poll, &taps);
                    if let Some(view) = self.state.tallies.view(&poll) {
                        let _ = self.out.events.send(Event::Tally(view));
                    }
                }
                // The tally stays as it was until the next start re-folds it.
                Err(e) => {
                    tracing::error!(poll, error = %e, "cannot read the poll's taps to re-fold it")
                }
            }
        }
    }
}
