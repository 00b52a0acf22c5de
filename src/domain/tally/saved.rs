//! The engine's state for a checkpoint: everything but the labels, which
//! come from the config. The JSON is stable; a checkpoint of an older
//! kind (without gates) is not restored — the log is replayed instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{LastTap, TagVotes, Tallies};
use crate::domain::poll::{PollDef, Rule};
use crate::domain::tap::{TagUid, TapKey};

/// The version of [`TallyState`] written now; older checkpoints (without
/// gates) are not restored: the log is replayed instead.
const STATE_VERSION: u32 = 2;

/// The engine's state, for checkpoints: everything but the labels, which come
/// from the config.
#[derive(Debug, Serialize, Deserialize)]
pub struct TallyState {
    #[serde(default)]
    version: u32,
    polls: Vec<PollTallyState>,
    identity: Vec<(TagUid, Arc<str>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PollTallyState {
    id: String,
    rule: Rule,
    answers: Vec<String>,
    counts: Vec<u64>,
    #[serde(default)]
    by_station: BTreeMap<Arc<str>, u64>,
    cutoff: Option<TapKey>,
    #[serde(default)]
    gates: Vec<(TapKey, bool)>,
    per_tag: Vec<(TagUid, TagVotes)>,
    #[serde(default)]
    seen_key: Option<TapKey>,
    last_key: Option<TapKey>,
    last_tap: Option<LastTap>,
}

impl Tallies {
    /// The state to checkpoint.
    #[must_use]
    pub fn to_state(&self) -> TallyState {
        TallyState {
            version: STATE_VERSION,
            polls: self
                .polls
                .iter()
                .map(|p| PollTallyState {
                    id: p.def.id.clone(),
                    rule: p.def.rule,
                    answers: p.def.answers.iter().map(|a| a.id.clone()).collect(),
                    counts: p.counts.clone(),
                    by_station: p.by_station.clone(),
                    cutoff: p.cutoff.clone(),
                    gates: p.gates.clone(),
                    per_tag: p
                        .per_tag
                        .iter()
                        .map(|(t, v)| (t.clone(), v.clone()))
                        .collect(),
                    seen_key: p.seen_key.clone(),
                    last_key: p.last_key.clone(),
                    last_tap: p.last_tap.clone(),
                })
                .collect(),
            identity: self
                .identity
                .iter()
                .map(|(t, p)| (t.clone(), p.clone()))
                .collect(),
        }
    }

    /// Restore a checkpoint taken with the same polls (ids, rules and answer
    /// ids, in order); `None` if the config has changed since (or the
    /// checkpoint is of an older kind), in which case the caller rebuilds
    /// from the log.
    #[must_use]
    pub fn from_state(defs: &[PollDef], state: TallyState) -> Option<Self> {
        if defs.len() != state.polls.len() || state.version != STATE_VERSION {
            return None;
        }
        let mut t = Self::new(defs);
        for (poll, s) in t.polls.iter_mut().zip(state.polls) {
            let same = poll.def.id == s.id
                && poll.def.rule == s.rule
                && poll.def.answers.iter().map(|a| &a.id).eq(s.answers.iter())
                && s.counts.len() == poll.def.answers.len()
                && s.per_tag.iter().all(|(_, v)| {
                    v.first.answer < s.counts.len() && v.last.answer < s.counts.len()
                });
            if !same {
                return None;
            }
            poll.counts = s.counts;
            poll.by_station = s.by_station;
            poll.cutoff = s.cutoff;
            poll.gates = s.gates;
            poll.per_tag = s.per_tag.into_iter().collect();
            poll.seen_key = s.seen_key;
            poll.last_key = s.last_key;
            poll.last_tap = s.last_tap;
        }
        for (tag, person) in state.identity {
            t.members
                .entry(person.clone())
                .or_default()
                .insert(tag.clone());
            t.identity.insert(tag, person);
        }
        Some(t)
    }
}
