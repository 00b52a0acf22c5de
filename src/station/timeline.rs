//! A poll's votes over time, for the pages' charts: read from the log (off
//! the Station's task) and folded by the domain's
//! [`timeline`](crate::domain::tally::timeline::timeline).

use serde::Serialize;

use super::api::StationHandle;
use crate::domain::PollDef;
use crate::domain::tally::timeline::{Bucket, TooManyBuckets, timeline};
use crate::store::StoreError;

/// At most this many buckets in one answer.
pub const MAX_BUCKETS: usize = 2000;

/// Bucket sizes chosen when none is asked for (seconds): the smallest that
/// keeps the chart under [`AUTO_BUCKETS`] points.
const NICE_BUCKETS_S: &[i64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400,
];
const AUTO_BUCKETS: i64 = 120;

/// A poll's timeline, as `GET /api/v1/polls/{poll}/timeline` serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub poll: String,
    pub bucket_ms: i64,
    /// Answer ids, in the order of every bucket's `counts`.
    pub answers: Vec<String>,
    pub labels: Vec<String>,
    pub buckets: Vec<Bucket>,
    /// When it was computed (ms since the epoch).
    pub at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("no poll {0:?} is configured")]
    UnknownPoll(String),
    #[error(transparent)]
    TooMany(#[from] TooManyBuckets),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StationHandle {
    /// The timeline of `poll` in buckets of `bucket_ms` (`None`: a bucket
    /// that gives at most ~120 points), up to now.
    pub async fn timeline(
        &self,
        poll: &str,
        bucket_ms: Option<i64>,
    ) -> Result<Timeline, TimelineError> {
        let def: PollDef = self
            .snapshot()
            .polls
            .iter()
            .find(|p| p.def.id == poll)
            .map(|p| p.def.clone())
            .ok_or_else(|| TimelineError::UnknownPoll(poll.to_string()))?;
        let inputs = self.store.timeline_inputs(poll.to_string()).await?;
        let now = crate::sys::clock::now_ms();
        tokio::task::spawn_blocking(move || {
            let first = inputs
                .taps
                .iter()
                .map(|t| t.at)
                .chain(inputs.actions.iter().map(|a| a.taken_at))
                .min()
                .unwrap_or(now);
            let bucket_ms = bucket_ms.unwrap_or_else(|| auto_bucket_ms(now - first));
            let buckets = timeline(
                &def,
                inputs.identities,
                inputs.actions,
                inputs.taps,
                bucket_ms,
                now,
                MAX_BUCKETS,
            )?;
            Ok(Timeline {
                poll: def.id.clone(),
                bucket_ms,
                answers: def.answers.iter().map(|a| a.id.clone()).collect(),
                labels: def.answers.iter().map(|a| a.label.clone()).collect(),
                buckets,
                at: now,
            })
        })
        .await
        .map_err(|e| TimelineError::Store(e.into()))?
    }
}

/// The smallest "nice" bucket that covers `span_ms` in at most
/// [`AUTO_BUCKETS`] buckets.
fn auto_bucket_ms(span_ms: i64) -> i64 {
    NICE_BUCKETS_S
        .iter()
        .map(|s| s * 1000)
        .find(|b| span_ms / b < AUTO_BUCKETS)
        .unwrap_or(86_400_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_buckets_are_nice_and_few() {
        assert_eq!(super::auto_bucket_ms(0), 1000);
        assert_eq!(super::auto_bucket_ms(119_000), 1000);
        assert_eq!(super::auto_bucket_ms(600_000), 10_000);
        assert_eq!(super::auto_bucket_ms(3 * 3_600_000), 120_000);
    }
}
