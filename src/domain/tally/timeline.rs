//! Votes over time: a poll's counts at the end of each time bucket, each
//! the fold of what the log held by then — the taps read before it and the
//! operator actions taken before it (a reset drops the counts to zero at
//! the moment it was taken), under the poll's rule and the identities known
//! now. The last bucket equals the live tally.

use std::sync::Arc;

use serde::Serialize;

use super::{Gate, Tallies};
use crate::domain::poll::PollDef;
use crate::domain::tap::{TagUid, Tap, TapKey};

/// An operator action on the timeline: when it was taken, what, where it
/// lies in the taps' order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedAction {
    pub taken_at: i64,
    pub gate: Gate,
    pub key: TapKey,
}

/// One bucket: `[start, end)`, with the cumulative counts at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    pub start: i64,
    pub end: i64,
    /// Per answer, in the poll's order.
    pub counts: Vec<u64>,
    pub total: u64,
}

/// Too many buckets asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{needed} buckets would be needed, at most {max} are served: choose a larger bucket")]
pub struct TooManyBuckets {
    pub needed: u64,
    pub max: usize,
}

/// The buckets of `bucket_ms` (aligned to multiples of it since the epoch)
/// from the first tap or action of the poll through `until`.
///
/// # Errors
/// More than `max` buckets would be needed.
pub fn timeline(
    def: &PollDef,
    identities: impl IntoIterator<Item = (TagUid, Option<Arc<str>>)>,
    mut actions: Vec<TimedAction>,
    mut taps: Vec<Tap>,
    bucket_ms: i64,
    until: i64,
    max: usize,
) -> Result<Vec<Bucket>, TooManyBuckets> {
    let bucket_ms = bucket_ms.max(1);
    taps.retain(|t| *t.poll == *def.id);
    taps.sort_by_key(Tap::key);
    actions.sort_by(|a, b| (a.taken_at, &a.key).cmp(&(b.taken_at, &b.key)));
    let first = taps
        .first()
        .map(|t| t.at)
        .into_iter()
        .chain(actions.first().map(|a| a.taken_at))
        .min();
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    let start = first.div_euclid(bucket_ms) * bucket_ms;
    let last = until.max(first);
    let needed = (last - start) / bucket_ms + 1;
    let needed = u64::try_from(needed).unwrap_or(u64::MAX);
    if needed > max as u64 {
        return Err(TooManyBuckets { needed, max });
    }

    let mut t = Tallies::new(std::slice::from_ref(def));
    for (tag, person) in identities {
        t.assign(&tag, person);
    }
    let (mut ti, mut ai) = (0, 0);
    let mut out = Vec::with_capacity(needed as usize);
    for b in 0..needed as i64 {
        let end = start + (b + 1) * bucket_ms;
        // Taps and actions before `end`, in the order they happened.
        loop {
            let tap_at = taps.get(ti).map(|t| t.at).filter(|&at| at < end);
            let act_at = actions.get(ai).map(|a| a.taken_at).filter(|&at| at < end);
            match (tap_at, act_at) {
                (Some(tat), Some(aat)) if tat <= aat => {
                    t.apply(&taps[ti]);
                    ti += 1;
                }
                (Some(_), None) => {
                    t.apply(&taps[ti]);
                    ti += 1;
                }
                (_, Some(_)) => {
                    let a = &actions[ai];
                    if t.act(&def.id, &a.gate, a.key.clone()) == super::Effect::Refold {
                        t.refold(&def.id, &taps[..ti]);
                    }
                    ai += 1;
                }
                (None, None) => break,
            }
        }
        let counts: Vec<u64> = t
            .view(&def.id)
            .map(|v| v.answers.iter().map(|a| a.count).collect())
            .unwrap_or_default();
        out.push(Bucket {
            start: end - bucket_ms,
            end,
            total: counts.iter().sum(),
            counts,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::poll::{Answer, Rule};

    fn def(rule: Rule) -> PollDef {
        PollDef {
            id: "p".into(),
            question: "Q".into(),
            rule,
            answers: vec![
                Answer {
                    id: "a".into(),
                    label: "A".into(),
                },
                Answer {
                    id: "b".into(),
                    label: "B".into(),
                },
            ],
            open: true,
            display: crate::domain::poll::Display::Bars,
        }
    }

    fn tap(seq: u64, at: i64, tag: &str, answer: &str) -> Tap {
        Tap {
            station: "s".into(),
            seq,
            reader: "r".into(),
            tag: TagUid::parse(tag).unwrap(),
            at,
            poll: "p".into(),
            answer: answer.into(),
        }
    }

    fn counts(b: &[Bucket]) -> Vec<Vec<u64>> {
        b.iter().map(|b| b.counts.clone()).collect()
    }

    #[test]
    fn buckets_follow_the_rule_and_drop_at_a_reset() {
        let taps = vec![
            tap(1, 1_000, "01020304", "a"),
            tap(2, 1_500, "01020305", "b"),
            tap(3, 2_100, "01020304", "b"),
            tap(4, 4_200, "01020306", "a"),
        ];
        let reset = TimedAction {
            taken_at: 3_000,
            gate: Gate::Reset,
            key: taps[2].key(),
        };
        let got = |rule| {
            counts(
                &timeline(
                    &def(rule),
                    [],
                    vec![reset.clone()],
                    taps.clone(),
                    1_000,
                    4_500,
                    100,
                )
                .unwrap(),
            )
        };
        // Buckets end at 2000, 3000, 4000, 5000.
        assert_eq!(
            got(Rule::OnePerPerson),
            [vec![1, 1], vec![1, 1], vec![0, 0], vec![1, 0]]
        );
        assert_eq!(
            got(Rule::LastWins),
            [vec![1, 1], vec![0, 2], vec![0, 0], vec![1, 0]]
        );
        assert_eq!(
            got(Rule::Unlimited),
            [vec![1, 1], vec![1, 2], vec![0, 0], vec![1, 0]]
        );
    }

    #[test]
    fn too_many_buckets_are_refused_and_nothing_is_empty() {
        let taps = vec![tap(1, 0, "01020304", "a")];
        let e = timeline(&def(Rule::Unlimited), [], vec![], taps, 1, 10_000, 100).unwrap_err();
        assert_eq!(e.needed, 10_001);
        let none = timeline(&def(Rule::Unlimited), [], vec![], vec![], 1, 10, 100).unwrap();
        assert!(none.is_empty());
    }
}
