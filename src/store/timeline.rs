//! What a poll's timeline is folded from: its taps, its operator actions
//! with the moment each was taken, and the identities known now.

use std::sync::Arc;

use super::{Store, StoreError};
use crate::domain::tally::Gate;
use crate::domain::tally::timeline::TimedAction;
use crate::domain::{ActionKind, TagUid, Tap, TapKey};

/// The inputs of [`crate::domain::tally::timeline::timeline`] for one poll.
pub struct TimelineInputs {
    pub taps: Vec<Tap>,
    pub actions: Vec<TimedAction>,
    pub identities: Vec<(TagUid, Option<Arc<str>>)>,
}

impl Store {
    /// Read everything the timeline of `poll` needs, on a read-only
    /// connection (the writer is not held up).
    pub async fn timeline_inputs(&self, poll: String) -> Result<TimelineInputs, StoreError> {
        let taps = self.poll_taps(poll.clone()).await?;
        let (actions, identities) = self
            .readers
            .run(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT at, kind, cutoff_at, cutoff_station, cutoff_seq FROM actions \
                 WHERE poll = ?1 AND cutoff_at IS NOT NULL",
                )?;
                let mut rows = stmt.query([&poll])?;
                let mut actions = Vec::new();
                while let Some(r) = rows.next()? {
                    let kind: ActionKind = r
                        .get::<_, String>(1)?
                        .parse()
                        .map_err(|e| StoreError::Corrupt(format!("action: {e}")))?;
                    let Some(gate) = Gate::of(kind) else {
                        continue;
                    };
                    let seq: i64 = r.get(4)?;
                    actions.push(TimedAction {
                        taken_at: r.get(0)?,
                        gate,
                        key: TapKey {
                            at: r.get(2)?,
                            station: r.get::<_, String>(3)?.into(),
                            seq: u64::try_from(seq).unwrap_or_default(),
                        },
                    });
                }
                let mut stmt = conn.prepare("SELECT tag, person_id FROM identities")?;
                let mut rows = stmt.query([])?;
                let mut identities = Vec::new();
                while let Some(r) = rows.next()? {
                    let Ok(tag) = TagUid::parse(&r.get::<_, String>(0)?) else {
                        continue;
                    };
                    let person = r.get::<_, Option<String>>(1)?.map(Arc::from);
                    identities.push((tag, person));
                }
                Ok::<_, StoreError>((actions, identities))
            })
            .await?;
        Ok(TimelineInputs {
            taps,
            actions,
            identities,
        })
    }
}
