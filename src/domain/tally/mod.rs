//! Tallies: a pure function of (taps, identities, operator actions, rules),
//! kept incrementally.
//!
//! The incremental engine gives exactly what a rebuild from the log gives, in
//! whatever order taps, identity assignments and actions arrive (a property
//! test checks this, with taps from several stations). What makes that
//! possible:
//! - per poll and tag only the first and the last tap are needed: a person's
//!   vote under `one-per-person` is the minimum over their tags' first taps,
//!   under `last-wins` the maximum over their tags' last taps;
//! - every action has a key in the taps' total order. A reset is a cutoff:
//!   every tap at or below it is forgotten, the highest cutoff wins. Open
//!   and close are gates: a tap counts only if the poll was open at its
//!   key. An action that lands above every tap the poll has seen changes
//!   the counts at once; one that lands below (it arrived late from another
//!   station) asks the caller to re-fold the poll from the log
//!   ([`Effect::Refold`], [`Tallies::refold`]).
//!
//! Owns no I/O; the Station holds the only instance. Its state for a
//! checkpoint is [`TallyState`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod saved;
pub mod timeline;

use super::person::Voter;
use super::poll::{ActionKind, PollDef, Rule};
use super::tap::{TagUid, Tap, TapKey};

pub use saved::TallyState;

/// What applying a tap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The tap is the counted vote of its person (or every tap counts).
    Counted,
    /// The person has voted already (`one-per-person`), or a later tap of theirs counts.
    NotCounted,
    /// The tap is older than the poll's last reset.
    BeforeReset,
    /// The poll was closed at the tap's key (a tap another station took
    /// while it had not heard of the close).
    Closed,
    /// The tap names a poll or answer the config no longer has.
    Unknown,
}

impl Applied {
    #[must_use]
    pub fn counted(self) -> bool {
        self == Applied::Counted
    }
}

/// What an operator action did to a poll's tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing changed (an action already known, a lower cutoff, no poll).
    None,
    /// Applied at once: the counts are up to date.
    Changed,
    /// The action lies below taps already applied: re-fold the poll from
    /// the log with [`Tallies::refold`].
    Refold,
}

/// The public facts of the latest tap of a poll (no tag UID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastTap {
    pub station: Arc<str>,
    pub seq: u64,
    pub reader: Arc<str>,
    pub answer: Arc<str>,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Vote {
    key: TapKey,
    answer: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TagVotes {
    first: Vote,
    last: Vote,
}

#[derive(Debug, Clone)]
struct PollTally {
    def: PollDef,
    counts: Vec<u64>,
    /// Counted votes by the station that took the tap.
    by_station: BTreeMap<Arc<str>, u64>,
    cutoff: Option<TapKey>,
    /// Open (true) / close (false) by key, ascending: a tap counts if the
    /// last gate below its key is open (none: the config's `open`).
    gates: Vec<(TapKey, bool)>,
    /// First and last tap per tag; unused under `unlimited`.
    per_tag: HashMap<TagUid, TagVotes>,
    /// The highest key of any tap above the cutoff (gated or not): an
    /// action below it needs a re-fold.
    seen_key: Option<TapKey>,
    last_key: Option<TapKey>,
    last_tap: Option<LastTap>,
}

impl PollTally {
    /// A poll nobody has voted on.
    fn empty(def: &PollDef) -> Self {
        Self {
            counts: vec![0; def.answers.len()],
            by_station: BTreeMap::new(),
            def: def.clone(),
            cutoff: None,
            gates: Vec::new(),
            per_tag: HashMap::new(),
            seen_key: None,
            last_key: None,
            last_tap: None,
        }
    }

    /// Forget every tap (not the actions).
    fn clear_taps(&mut self) {
        self.per_tag.clear();
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.by_station.clear();
        self.seen_key = None;
        self.last_key = None;
        self.last_tap = None;
    }

    /// Whether the poll was open just above `key`.
    fn open_at(&self, key: &TapKey) -> bool {
        let below = self.gates.partition_point(|(g, _)| g < key);
        match below {
            0 => self.def.open,
            n => self.gates[n - 1].1,
        }
    }

    fn count(&mut self, vote: &Vote, by: i64) {
        let n = &mut self.counts[vote.answer];
        *n = n.saturating_add_signed(by);
        let s = self.by_station.entry(vote.key.station.clone()).or_default();
        *s = s.saturating_add_signed(by);
        if *s == 0 {
            self.by_station.remove(&vote.key.station);
        }
    }
}

/// A poll's counts, as the API and the screens show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TallyView {
    pub poll: String,
    pub total: u64,
    pub answers: Vec<AnswerCount>,
    pub last_tap: Option<LastTap>,
    /// Counted votes by the station that read them (a herd's breakdown).
    pub by_station: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AnswerCount {
    pub id: String,
    pub label: String,
    pub count: u64,
}

/// The incremental tally engine for all polls of a station.
#[derive(Debug, Clone)]
pub struct Tallies {
    polls: Vec<PollTally>,
    index: HashMap<String, usize>,
    /// tag → person id, for tags whose owner is known.
    identity: HashMap<TagUid, Arc<str>>,
    /// person id → their tags.
    members: HashMap<Arc<str>, BTreeSet<TagUid>>,
}

/// An action as the tally sees it: what, on which poll, at which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    Close,
    Reset,
}

impl Gate {
    /// What an operator action does to its poll's tally; `None` for
    /// `activate`, which picks the screen's poll and leaves tallies alone.
    #[must_use]
    pub fn of(kind: ActionKind) -> Option<Gate> {
        match kind {
            ActionKind::Open => Some(Gate::Open),
            ActionKind::Close => Some(Gate::Close),
            ActionKind::Reset => Some(Gate::Reset),
            ActionKind::Activate => None,
        }
    }
}

impl Tallies {
    #[must_use]
    pub fn new(defs: &[PollDef]) -> Self {
        let polls: Vec<PollTally> = defs.iter().map(PollTally::empty).collect();
        let index = polls
            .iter()
            .enumerate()
            .map(|(i, p)| (p.def.id.clone(), i))
            .collect();
        Self {
            polls,
            index,
            identity: HashMap::new(),
            members: HashMap::new(),
        }
    }

    /// Every tag that has a tap counted in (or refused by) some poll.
    pub fn tags(&self) -> std::collections::HashSet<&TagUid> {
        self.polls.iter().flat_map(|p| p.per_tag.keys()).collect()
    }

    /// Add a poll (config reload). False if it exists already.
    pub fn add_poll(&mut self, def: &PollDef) -> bool {
        if self.index.contains_key(&def.id) {
            return false;
        }
        self.index.insert(def.id.clone(), self.polls.len());
        self.polls.push(PollTally::empty(def));
        true
    }

    /// Take new labels and question for a poll whose rule and answer ids
    /// are unchanged (config reload). False if they changed (or no poll).
    pub fn relabel(&mut self, def: &PollDef) -> bool {
        let Some(&i) = self.index.get(&def.id) else {
            return false;
        };
        let p = &mut self.polls[i];
        if !p.def.same_shape(def) {
            return false;
        }
        p.def.question.clone_from(&def.question);
        p.def.answers.clone_from(&def.answers);
        p.def.display = def.display;
        true
    }

    /// Rebuild from scratch: the reference the incremental engine must equal.
    #[must_use]
    pub fn rebuild<'a>(
        defs: &[PollDef],
        identities: impl IntoIterator<Item = (TagUid, Option<Arc<str>>)>,
        actions: impl IntoIterator<Item = (&'a str, Gate, TapKey)>,
        taps: &[Tap],
    ) -> Self {
        let mut t = Self::new(defs);
        for (tag, person) in identities {
            t.assign(&tag, person);
        }
        for (poll, gate, key) in actions {
            t.act(poll, &gate, key);
        }
        let mut sorted: Vec<&Tap> = taps.iter().collect();
        sorted.sort_by_key(|tap| tap.key());
        for tap in sorted {
            t.apply(tap);
        }
        t
    }

    fn voter_of(&self, tag: &TagUid) -> Voter {
        match self.identity.get(tag) {
            Some(id) => Voter::Id(id.clone()),
            None => Voter::Tag(tag.clone()),
        }
    }

    /// The tap that counts for `person` in poll `p`, under its rule.
    fn counted_of(&self, p: usize, person: &Voter) -> Option<Vote> {
        let poll = &self.polls[p];
        let pick = |tag: &TagUid| -> Option<&Vote> {
            let v = poll.per_tag.get(tag)?;
            Some(match poll.def.rule {
                Rule::LastWins => &v.last,
                _ => &v.first,
            })
        };
        let best = match person {
            Voter::Tag(tag) if self.identity.contains_key(tag) => None,
            Voter::Tag(tag) => pick(tag),
            Voter::Id(id) => {
                let votes = self.members.get(id)?.iter().filter_map(pick);
                match poll.def.rule {
                    Rule::LastWins => votes.max_by(|a, b| a.key.cmp(&b.key)),
                    _ => votes.min_by(|a, b| a.key.cmp(&b.key)),
                }
            }
        };
        best.cloned()
    }

    fn swap_vote(&mut self, p: usize, before: Option<Vote>, after: Option<&Vote>) -> bool {
        if before.as_ref() == after {
            return false;
        }
        let poll = &mut self.polls[p];
        if let Some(b) = before {
            poll.count(&b, -1);
        }
        if let Some(a) = after {
            poll.count(a, 1);
        }
        true
    }

    /// Apply one tap. Idempotence is the caller's job: the store refuses a
    /// second copy of a `(station, seq)`.
    pub fn apply(&mut self, tap: &Tap) -> Applied {
        let Some(&p) = self.index.get(&*tap.poll) else {
            return Applied::Unknown;
        };
        let Some(answer) = self.polls[p].def.answer_index(&tap.answer) else {
            return Applied::Unknown;
        };
        let key = tap.key();
        let poll = &mut self.polls[p];
        if poll.cutoff.as_ref().is_some_and(|c| &key <= c) {
            return Applied::BeforeReset;
        }
        if poll.seen_key.as_ref().is_none_or(|k| &key > k) {
            poll.seen_key = Some(key.clone());
        }
        if !poll.open_at(&key) {
            return Applied::Closed;
        }
        if poll.last_key.as_ref().is_none_or(|k| &key > k) {
            poll.last_key = Some(key.clone());
            poll.last_tap = Some(LastTap {
                station: tap.station.clone(),
                seq: tap.seq,
                reader: tap.reader.clone(),
                answer: tap.answer.clone(),
                at: tap.at,
            });
        }
        let vote = Vote {
            key: key.clone(),
            answer,
        };
        if poll.def.rule == Rule::Unlimited {
            poll.count(&vote, 1);
            return Applied::Counted;
        }
        let person = self.voter_of(&tap.tag);
        let before = self.counted_of(p, &person);
        let poll = &mut self.polls[p];
        match poll.per_tag.get_mut(&tap.tag) {
            None => {
                poll.per_tag.insert(
                    tap.tag.clone(),
                    TagVotes {
                        first: vote.clone(),
                        last: vote,
                    },
                );
            }
            Some(v) => {
                if key < v.first.key {
                    v.first = vote.clone();
                }
                if key > v.last.key {
                    v.last = vote;
                }
            }
        }
        let after = self.counted_of(p, &person);
        let counted = after.as_ref().is_some_and(|a| a.key == key);
        self.swap_vote(p, before, after.as_ref());
        if counted {
            Applied::Counted
        } else {
            Applied::NotCounted
        }
    }

    /// Say who owns `tag` (`None`: nobody known, the tag is its own person).
    /// Returns the ids of the polls whose counts changed.
    pub fn assign(&mut self, tag: &TagUid, person: Option<Arc<str>>) -> Vec<String> {
        let old = self.voter_of(tag);
        let new = match &person {
            Some(id) => Voter::Id(id.clone()),
            None => Voter::Tag(tag.clone()),
        };
        if old == new {
            return Vec::new();
        }
        let per_person: Vec<usize> = (0..self.polls.len())
            .filter(|&p| self.polls[p].def.rule != Rule::Unlimited)
            .collect();
        let before: Vec<(Option<Vote>, Option<Vote>)> = per_person
            .iter()
            .map(|&p| (self.counted_of(p, &old), self.counted_of(p, &new)))
            .collect();
        // Move the tag.
        if let Voter::Id(id) = &old
            && let Some(set) = self.members.get_mut(id)
        {
            set.remove(tag);
            if set.is_empty() {
                self.members.remove(id);
            }
        }
        match &person {
            Some(id) => {
                self.identity.insert(tag.clone(), id.clone());
                self.members
                    .entry(id.clone())
                    .or_default()
                    .insert(tag.clone());
            }
            None => {
                self.identity.remove(tag);
            }
        }
        let mut changed = Vec::new();
        for (&p, (old_before, new_before)) in per_person.iter().zip(before) {
            let old_after = self.counted_of(p, &old);
            let new_after = self.counted_of(p, &new);
            let a = self.swap_vote(p, old_before, old_after.as_ref());
            let b = self.swap_vote(p, new_before, new_after.as_ref());
            if a || b {
                changed.push(self.polls[p].def.id.clone());
            }
        }
        changed
    }

    /// Apply an operator action at `key`: a reset forgets every tap of the
    /// poll at or below it (the highest cutoff wins); open and close gate
    /// the taps above it. Says whether the counts changed, or whether the
    /// poll must be re-folded (the action lies below taps already applied).
    pub fn act(&mut self, poll: &str, gate: &Gate, key: TapKey) -> Effect {
        let Some(&p) = self.index.get(poll) else {
            return Effect::None;
        };
        let poll = &mut self.polls[p];
        match gate {
            Gate::Reset => {
                if poll.cutoff.as_ref().is_some_and(|c| c >= &key) {
                    return Effect::None;
                }
                let below_all = poll.seen_key.as_ref().is_none_or(|s| s <= &key);
                poll.cutoff = Some(key);
                if below_all {
                    poll.clear_taps();
                    Effect::Changed
                } else {
                    Effect::Refold
                }
            }
            Gate::Open | Gate::Close => {
                let open = *gate == Gate::Open;
                let at = poll.gates.partition_point(|(g, _)| g < &key);
                if poll.gates.get(at).is_some_and(|(g, _)| *g == key) {
                    return Effect::None;
                }
                poll.gates.insert(at, (key.clone(), open));
                if poll.seen_key.as_ref().is_some_and(|s| s > &key) {
                    Effect::Refold
                } else {
                    Effect::Changed
                }
            }
        }
    }

    /// Apply every tap of `poll` again, from scratch, in key order: after an
    /// action that arrived below taps already applied. `taps` are all the
    /// poll's taps the log holds (other polls' are skipped).
    pub fn refold<'a>(&mut self, poll: &str, taps: impl IntoIterator<Item = &'a Tap>) {
        let Some(&p) = self.index.get(poll) else {
            return;
        };
        self.polls[p].clear_taps();
        let mut sorted: Vec<&Tap> = taps.into_iter().filter(|t| *t.poll == *poll).collect();
        sorted.sort_by_key(|t| t.key());
        for t in sorted {
            self.apply(t);
        }
    }

    /// Whether `poll` is open now: by its gate with the highest key.
    #[must_use]
    pub fn open_now(&self, poll: &str) -> Option<bool> {
        let p = &self.polls[*self.index.get(poll)?];
        Some(p.gates.last().map_or(p.def.open, |(_, open)| *open))
    }

    /// The key an action made now takes: `candidate` (the station's own
    /// latest key), raised to the newest tap of the poll if that is later,
    /// so everything the operator has seen lies at or below it.
    #[must_use]
    pub fn action_key(&self, poll: &str, candidate: TapKey) -> TapKey {
        let newest = self
            .index
            .get(poll)
            .and_then(|&p| self.polls[p].seen_key.clone());
        match newest {
            Some(k) if k > candidate => k,
            _ => candidate,
        }
    }

    /// The counts of one poll.
    #[must_use]
    pub fn view(&self, poll: &str) -> Option<TallyView> {
        let p = &self.polls[*self.index.get(poll)?];
        Some(TallyView {
            poll: p.def.id.clone(),
            total: p.counts.iter().sum(),
            answers: p
                .def
                .answers
                .iter()
                .zip(&p.counts)
                .map(|(a, &count)| AnswerCount {
                    id: a.id.clone(),
                    label: a.label.clone(),
                    count,
                })
                .collect(),
            last_tap: p.last_tap.clone(),
            by_station: p
                .by_station
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
        })
    }

    /// Counts of every poll, in config order.
    #[must_use]
    pub fn views(&self) -> Vec<TallyView> {
        self.polls
            .iter()
            .filter_map(|p| self.view(&p.def.id))
            .collect()
    }

    /// Just the numbers, for comparing engines.
    #[must_use]
    pub fn counts(&self) -> Vec<(String, Vec<u64>)> {
        self.polls
            .iter()
            .map(|p| (p.def.id.clone(), p.counts.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
