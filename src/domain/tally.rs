//! Tallies: a pure function of (taps, identities, resets, rules), kept
//! incrementally.
//!
//! The incremental engine gives exactly what a rebuild from the log gives, in
//! whatever order taps and identity assignments arrive (a property test
//! checks this). What makes that possible:
//! - per poll and tag only the first and the last tap are needed: a person's
//!   vote under `one-per-person` is the minimum over their tags' first taps,
//!   under `last-wins` the maximum over their tags' last taps;
//! - a reset carries its cutoff key, chosen at or above every tap the station
//!   knows of the poll, so clearing the poll at reset time is exact and a tap
//!   that turns up later with a smaller key is ignored.
//!
//! Owns no I/O; the Station holds the only instance. Its state for a
//! checkpoint is [`TallyState`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::person::Voter;
use super::poll::{PollDef, Rule};
use super::tap::{TagUid, Tap, TapKey};

/// What applying a tap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The tap is the counted vote of its person (or every tap counts).
    Counted,
    /// The person has voted already (`one-per-person`), or a later tap of theirs counts.
    NotCounted,
    /// The tap is older than the poll's last reset.
    BeforeReset,
    /// The tap names a poll or answer the config no longer has.
    Unknown,
}

impl Applied {
    #[must_use]
    pub fn counted(self) -> bool {
        self == Applied::Counted
    }
}

/// The public facts of the latest tap of a poll (no tag UID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    cutoff: Option<TapKey>,
    /// First and last tap per tag; unused under `unlimited`.
    per_tag: HashMap<TagUid, TagVotes>,
    last_key: Option<TapKey>,
    last_tap: Option<LastTap>,
}

impl PollTally {
    /// A poll nobody has voted on.
    fn empty(def: &PollDef) -> Self {
        Self {
            counts: vec![0; def.answers.len()],
            def: def.clone(),
            cutoff: None,
            per_tag: HashMap::new(),
            last_key: None,
            last_tap: None,
        }
    }
}

/// A poll's counts, as the API and the screens show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TallyView {
    pub poll: String,
    pub total: u64,
    pub answers: Vec<AnswerCount>,
    pub last_tap: Option<LastTap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerCount {
    pub id: String,
    pub label: String,
    pub count: u64,
}

/// The engine's state, for checkpoints: everything but the labels, which come
/// from the config.
#[derive(Debug, Serialize, Deserialize)]
pub struct TallyState {
    polls: Vec<PollTallyState>,
    identity: Vec<(TagUid, Arc<str>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PollTallyState {
    id: String,
    rule: Rule,
    answers: Vec<String>,
    counts: Vec<u64>,
    cutoff: Option<TapKey>,
    per_tag: Vec<(TagUid, TagVotes)>,
    last_key: Option<TapKey>,
    last_tap: Option<LastTap>,
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
        true
    }

    /// The state to checkpoint.
    #[must_use]
    pub fn to_state(&self) -> TallyState {
        TallyState {
            polls: self
                .polls
                .iter()
                .map(|p| PollTallyState {
                    id: p.def.id.clone(),
                    rule: p.def.rule,
                    answers: p.def.answers.iter().map(|a| a.id.clone()).collect(),
                    counts: p.counts.clone(),
                    cutoff: p.cutoff.clone(),
                    per_tag: p
                        .per_tag
                        .iter()
                        .map(|(t, v)| (t.clone(), v.clone()))
                        .collect(),
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
    /// ids, in order); `None` if the config has changed since, in which case
    /// the caller rebuilds from the log.
    #[must_use]
    pub fn from_state(defs: &[PollDef], state: TallyState) -> Option<Self> {
        if defs.len() != state.polls.len() {
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
            poll.cutoff = s.cutoff;
            poll.per_tag = s.per_tag.into_iter().collect();
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

    /// Rebuild from scratch: the reference the incremental engine must equal.
    #[must_use]
    pub fn rebuild<'a>(
        defs: &[PollDef],
        identities: impl IntoIterator<Item = (TagUid, Option<Arc<str>>)>,
        resets: impl IntoIterator<Item = (&'a str, TapKey)>,
        taps: &[Tap],
    ) -> Self {
        let mut t = Self::new(defs);
        for (tag, person) in identities {
            t.assign(&tag, person);
        }
        for (poll, cutoff) in resets {
            t.reset(poll, cutoff);
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
        let counts = &mut self.polls[p].counts;
        if let Some(b) = before {
            counts[b.answer] -= 1;
        }
        if let Some(a) = after {
            counts[a.answer] += 1;
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
        if poll.def.rule == Rule::Unlimited {
            poll.counts[answer] += 1;
            return Applied::Counted;
        }
        let person = self.voter_of(&tap.tag);
        let before = self.counted_of(p, &person);
        let vote = Vote {
            key: key.clone(),
            answer,
        };
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

    /// Forget every tap of `poll` with a key at or below `cutoff`.
    ///
    /// The caller picks `cutoff` at or above every tap of the poll it holds
    /// (see [`Tallies::reset_cutoff`]), which makes clearing exact.
    pub fn reset(&mut self, poll: &str, cutoff: TapKey) -> bool {
        let Some(&p) = self.index.get(poll) else {
            return false;
        };
        let poll = &mut self.polls[p];
        if poll.cutoff.as_ref().is_some_and(|c| c >= &cutoff) {
            return false;
        }
        poll.cutoff = Some(cutoff);
        poll.per_tag.clear();
        poll.counts.iter_mut().for_each(|c| *c = 0);
        poll.last_key = None;
        poll.last_tap = None;
        true
    }

    /// The cutoff for a reset made now: `candidate` (the station's own
    /// latest key), raised to the newest tap of the poll if that is later.
    #[must_use]
    pub fn reset_cutoff(&self, poll: &str, candidate: TapKey) -> TapKey {
        let newest = self
            .index
            .get(poll)
            .and_then(|&p| self.polls[p].last_key.clone());
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
mod tests {
    use super::*;
    use crate::domain::poll::Answer;
    use proptest::prelude::*;

    fn def(id: &str, rule: Rule, n: usize) -> PollDef {
        PollDef {
            id: id.into(),
            question: format!("{id}?"),
            rule,
            answers: (0..n)
                .map(|i| Answer {
                    id: format!("a{i}"),
                    label: format!("Answer {i}"),
                })
                .collect(),
            open: true,
        }
    }

    fn tag(n: u8) -> TagUid {
        TagUid::from_bytes(&[0x10, 0, 0, n]).unwrap()
    }

    fn tap(station: &str, seq: u64, at: i64, poll: &str, tag_n: u8, answer: usize) -> Tap {
        Tap {
            station: station.into(),
            seq,
            reader: "r".into(),
            tag: tag(tag_n),
            at,
            poll: poll.into(),
            answer: format!("a{answer}").into(),
        }
    }

    #[test]
    fn one_per_person_counts_the_first_tap_only() {
        let mut t = Tallies::new(&[def("p", Rule::OnePerPerson, 2)]);
        assert_eq!(t.apply(&tap("s", 1, 10, "p", 1, 0)), Applied::Counted);
        assert_eq!(t.apply(&tap("s", 2, 11, "p", 1, 1)), Applied::NotCounted);
        assert_eq!(t.apply(&tap("s", 3, 12, "p", 2, 1)), Applied::Counted);
        assert_eq!(t.counts(), vec![("p".into(), vec![1, 1])]);
    }

    #[test]
    fn last_wins_moves_the_vote() {
        let mut t = Tallies::new(&[def("p", Rule::LastWins, 2)]);
        t.apply(&tap("s", 1, 10, "p", 1, 0));
        assert_eq!(t.counts()[0].1, vec![1, 0]);
        assert_eq!(t.apply(&tap("s", 2, 11, "p", 1, 1)), Applied::Counted);
        assert_eq!(t.counts()[0].1, vec![0, 1]);
        // A late-arriving older tap (from another station) does not count.
        assert_eq!(t.apply(&tap("o", 1, 5, "p", 1, 0)), Applied::NotCounted);
        assert_eq!(t.counts()[0].1, vec![0, 1]);
    }

    #[test]
    fn unlimited_counts_every_tap() {
        let mut t = Tallies::new(&[def("p", Rule::Unlimited, 2)]);
        for seq in 1..=3 {
            assert_eq!(t.apply(&tap("s", seq, 10, "p", 1, 1)), Applied::Counted);
        }
        assert_eq!(t.view("p").unwrap().total, 3);
    }

    #[test]
    fn two_tags_of_one_person_count_once() {
        let mut t = Tallies::new(&[def("p", Rule::OnePerPerson, 2)]);
        t.apply(&tap("s", 1, 10, "p", 1, 0));
        t.apply(&tap("s", 2, 11, "p", 2, 1));
        assert_eq!(t.counts()[0].1, vec![1, 1]);
        t.assign(&tag(1), Some("alice".into()));
        assert_eq!(t.counts()[0].1, vec![1, 1]);
        let changed = t.assign(&tag(2), Some("alice".into()));
        assert_eq!(changed, vec!["p".to_string()]);
        assert_eq!(t.counts()[0].1, vec![1, 0]);
        // Tag 2 turns out to be someone else after all.
        t.assign(&tag(2), None);
        assert_eq!(t.counts()[0].1, vec![1, 1]);
    }

    #[test]
    fn reset_forgets_earlier_taps_and_ignores_late_ones() {
        let mut t = Tallies::new(&[def("p", Rule::OnePerPerson, 2)]);
        t.apply(&tap("s", 1, 10, "p", 1, 0));
        let cutoff = t.reset_cutoff(
            "p",
            TapKey {
                at: 5,
                station: "s".into(),
                seq: 1,
            },
        );
        assert_eq!(cutoff.at, 10, "cutoff is raised to the newest tap");
        assert!(t.reset("p", cutoff));
        assert_eq!(t.view("p").unwrap().total, 0);
        assert_eq!(t.apply(&tap("o", 1, 9, "p", 2, 1)), Applied::BeforeReset);
        assert_eq!(t.apply(&tap("s", 2, 11, "p", 1, 1)), Applied::Counted);
        assert_eq!(t.counts()[0].1, vec![0, 1]);
    }

    #[test]
    fn a_snapshot_of_other_polls_is_refused() {
        let t = Tallies::new(&[def("p", Rule::OnePerPerson, 2)]);
        let state = || serde_json::from_slice(&serde_json::to_vec(&t.to_state()).unwrap()).unwrap();
        assert!(Tallies::from_state(&[def("p", Rule::OnePerPerson, 2)], state()).is_some());
        assert!(Tallies::from_state(&[def("p", Rule::LastWins, 2)], state()).is_none());
        assert!(Tallies::from_state(&[def("p", Rule::OnePerPerson, 3)], state()).is_none());
        assert!(Tallies::from_state(&[def("q", Rule::OnePerPerson, 2)], state()).is_none());
    }

    #[test]
    fn unknown_poll_or_answer_is_not_counted() {
        let mut t = Tallies::new(&[def("p", Rule::Unlimited, 2)]);
        assert_eq!(t.apply(&tap("s", 1, 1, "q", 1, 0)), Applied::Unknown);
        assert_eq!(t.apply(&tap("s", 2, 1, "p", 1, 7)), Applied::Unknown);
        assert_eq!(t.view("p").unwrap().total, 0);
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        Tap(Tap),
        Assign(u8, Option<u8>),
        Reset(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0usize..3, 0u8..6, 0usize..3, 0i64..40, 0usize..3).prop_map(
                |(st, tag_n, poll, at, answer)| {
                    let station = ["s0", "s1", "s2"][st];
                    Step::Tap(tap(station, 0, at, ["p0", "p1", "p2"][poll], tag_n, answer))
                }
            ),
            2 => (0u8..6, proptest::option::of(0u8..3)).prop_map(|(t, p)| Step::Assign(t, p)),
            1 => (0usize..3).prop_map(Step::Reset),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Incremental == rebuild from the log, and the rebuild does not care
        /// in which order the taps are given.
        #[test]
        fn incremental_equals_rebuild(steps in proptest::collection::vec(step(), 0..80), seed in any::<u64>()) {
            let defs = [def("p0", Rule::OnePerPerson, 3), def("p1", Rule::LastWins, 3), def("p2", Rule::Unlimited, 3)];
            let mut inc = Tallies::new(&defs);
            let mut taps = Vec::new();
            let mut ids: HashMap<TagUid, Option<Arc<str>>> = HashMap::new();
            let mut resets: Vec<(&str, TapKey)> = Vec::new();
            let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
            for s in steps {
                match s {
                    Step::Tap(mut t) => {
                        let seq = seqs.entry(t.station.clone()).or_default();
                        *seq += 1;
                        t.seq = *seq;
                        inc.apply(&t);
                        taps.push(t);
                    }
                    Step::Assign(t, p) => {
                        let person: Option<Arc<str>> = p.map(|p| format!("person{p}").into());
                        inc.assign(&tag(t), person.clone());
                        ids.insert(tag(t), person);
                    }
                    Step::Reset(p) => {
                        let poll = ["p0", "p1", "p2"][p];
                        let cutoff = inc.reset_cutoff(poll, TapKey { at: 20, station: "s0".into(), seq: 0 });
                        inc.reset(poll, cutoff.clone());
                        resets.push((poll, cutoff));
                    }
                }
            }
            // Shuffle the log deterministically from the seed.
            let mut shuffled = taps.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let rebuilt = Tallies::rebuild(&defs, ids.clone(), resets.clone(), &taps);
            let rebuilt_shuffled = Tallies::rebuild(&defs, ids, resets, &shuffled);
            prop_assert_eq!(inc.views(), rebuilt.views());
            // A snapshot restores the same engine: applying more taps to both
            // keeps them equal.
            let json = serde_json::to_vec(&inc.to_state()).unwrap();
            let mut restored = Tallies::from_state(&defs, serde_json::from_slice(&json).unwrap()).unwrap();
            let mut inc2 = inc.clone();
            for (i, t) in taps.iter().take(5).enumerate() {
                let mut t = t.clone();
                t.station = "late".into();
                t.seq = i as u64;
                t.at += 3;
                prop_assert_eq!(inc2.apply(&t), restored.apply(&t));
            }
            prop_assert_eq!(inc2.views(), restored.views());
            prop_assert_eq!(rebuilt.views(), rebuilt_shuffled.views());
        }
    }
}
