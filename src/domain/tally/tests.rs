//! The tally's unit and property tests: incremental folds equal a rebuild
//! from the log, for every rule, origin order and late action.

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
        display: crate::domain::Display::Bars,
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

fn key(at: i64, station: &str, seq: u64) -> TapKey {
    TapKey {
        at,
        station: station.into(),
        seq,
    }
}

#[test]
fn reset_forgets_earlier_taps_and_ignores_late_ones() {
    let mut t = Tallies::new(&[def("p", Rule::OnePerPerson, 2)]);
    t.apply(&tap("s", 1, 10, "p", 1, 0));
    let cutoff = t.action_key("p", key(5, "s", 1));
    assert_eq!(cutoff.at, 10, "the key is raised to the newest tap");
    assert_eq!(t.act("p", &Gate::Reset, cutoff.clone()), Effect::Changed);
    assert_eq!(t.view("p").unwrap().total, 0);
    assert_eq!(t.act("p", &Gate::Reset, cutoff), Effect::None, "known");
    assert_eq!(t.apply(&tap("o", 1, 9, "p", 2, 1)), Applied::BeforeReset);
    assert_eq!(t.apply(&tap("s", 2, 11, "p", 1, 1)), Applied::Counted);
    assert_eq!(t.counts()[0].1, vec![0, 1]);
}

#[test]
fn a_late_reset_or_close_asks_for_a_refold_and_the_refold_is_exact() {
    let defs = [def("p", Rule::Unlimited, 2)];
    let mut t = Tallies::new(&defs);
    let taps = [
        tap("a", 1, 10, "p", 1, 0),
        tap("c", 1, 20, "p", 2, 1),
        tap("c", 2, 30, "p", 3, 1),
    ];
    for x in &taps {
        t.apply(x);
    }
    assert_eq!(t.view("p").unwrap().by_station.get("c"), Some(&2));
    // A reset at key 15 (from a station that had seen only a:1) arrives
    // late: c's taps above it stay, a:1 goes.
    assert_eq!(t.act("p", &Gate::Reset, key(15, "a", 1)), Effect::Refold);
    t.refold("p", &taps);
    assert_eq!(t.counts()[0].1, vec![0, 2]);
    // A close at 25: c:2 was taken after it, c:1 before.
    assert_eq!(t.act("p", &Gate::Close, key(25, "a", 1)), Effect::Refold);
    t.refold("p", &taps);
    assert_eq!(t.counts()[0].1, vec![0, 1]);
    assert_eq!(t.open_now("p"), Some(false));
    assert_eq!(t.apply(&tap("c", 3, 40, "p", 4, 0)), Applied::Closed);
    // Re-opened at 35: a tap at 40 counts again, above every tap seen.
    assert_eq!(t.act("p", &Gate::Open, key(35, "a", 1)), Effect::Refold);
    t.refold(
        "p",
        &[
            taps[0].clone(),
            taps[1].clone(),
            taps[2].clone(),
            tap("c", 3, 40, "p", 4, 0),
        ],
    );
    assert_eq!(t.counts()[0].1, vec![1, 1]);
    // Above everything: applied at once.
    assert_eq!(t.act("p", &Gate::Close, key(99, "a", 1)), Effect::Changed);
    let rebuilt = Tallies::rebuild(
        &defs,
        [],
        [
            ("p", Gate::Reset, key(15, "a", 1)),
            ("p", Gate::Close, key(25, "a", 1)),
            ("p", Gate::Open, key(35, "a", 1)),
            ("p", Gate::Close, key(99, "a", 1)),
        ],
        &[
            taps[0].clone(),
            taps[1].clone(),
            taps[2].clone(),
            tap("c", 3, 40, "p", 4, 0),
        ],
    );
    assert_eq!(t.views(), rebuilt.views());
}

#[test]
fn a_checkpoint_of_other_polls_is_refused() {
    let t = Tallies::new(&[def("p", Rule::OnePerPerson, 2)]);
    let state = || serde_json::from_slice(&serde_json::to_vec(&t.to_state()).unwrap()).unwrap();
    assert!(Tallies::from_state(&[def("p", Rule::OnePerPerson, 2)], state()).is_some());
    assert!(Tallies::from_state(&[def("p", Rule::LastWins, 2)], state()).is_none());
    assert!(Tallies::from_state(&[def("p", Rule::OnePerPerson, 3)], state()).is_none());
    assert!(Tallies::from_state(&[def("q", Rule::OnePerPerson, 2)], state()).is_none());
    // A checkpoint of the kind before gates: replayed instead.
    let old: TallyState = serde_json::from_str(r#"{"polls":[{"id":"p","rule":"one-per-person","answers":["a0","a1"],"counts":[0,0],"cutoff":null,"per_tag":[],"last_key":null,"last_tap":null}],"identity":[]}"#).unwrap();
    assert!(Tallies::from_state(&[def("p", Rule::OnePerPerson, 2)], old).is_none());
}

#[test]
fn unknown_poll_or_answer_is_not_counted() {
    let mut t = Tallies::new(&[def("p", Rule::Unlimited, 2)]);
    assert_eq!(t.apply(&tap("s", 1, 1, "q", 1, 0)), Applied::Unknown);
    assert_eq!(t.apply(&tap("s", 2, 1, "p", 1, 7)), Applied::Unknown);
    assert_eq!(t.view("p").unwrap().total, 0);
}

/// One step of a random history: taps from three stations, identity
/// answers, and keyed actions (some far below the taps: late).
#[derive(Debug, Clone)]
enum Step {
    Tap(Tap),
    Assign(u8, Option<u8>),
    Act(usize, u8, i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..3, 0u8..6, 0usize..3, 0i64..40, 0usize..3).prop_map(
            |(st, tag_n, poll, at, answer)| {
                let station = ["s0", "s1", "s2"][st];
                Step::Tap(tap(station, 0, at, ["p0", "p1", "p2"][poll], tag_n, answer))
            }
        ),
        2 => (0u8..6, proptest::option::of(0u8..3)).prop_map(|(t, p)| Step::Assign(t, p)),
        2 => (0usize..3, 0u8..3, 0i64..45).prop_map(|(p, g, at)| Step::Act(p, g, at)),
    ]
}

fn gate(g: u8) -> Gate {
    match g {
        0 => Gate::Open,
        1 => Gate::Close,
        _ => Gate::Reset,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// Incremental == rebuild from the log whatever the delivery order
    /// (taps of several stations, actions arriving late and re-folded
    /// from the taps received so far, identities in between), and the
    /// rebuild does not care in which order the taps are given.
    #[test]
    fn incremental_equals_rebuild(steps in proptest::collection::vec(step(), 0..90), seed in any::<u64>()) {
        let defs = [def("p0", Rule::OnePerPerson, 3), def("p1", Rule::LastWins, 3), def("p2", Rule::Unlimited, 3)];
        let mut inc = Tallies::new(&defs);
        let mut taps = Vec::new();
        let mut ids: HashMap<TagUid, Option<Arc<str>>> = HashMap::new();
        let mut actions: Vec<(&str, Gate, TapKey)> = Vec::new();
        let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
        for (n, s) in steps.into_iter().enumerate() {
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
                Step::Act(p, g, at) => {
                    let poll = ["p0", "p1", "p2"][p];
                    // A distinct key per action (its origin's own numbering).
                    let k = TapKey { at, station: "act".into(), seq: n as u64 };
                    if inc.act(poll, &gate(g), k.clone()) == Effect::Refold {
                        inc.refold(poll, &taps);
                    }
                    actions.push((poll, gate(g), k));
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
        let rebuilt = Tallies::rebuild(&defs, ids.clone(), actions.clone(), &taps);
        let rebuilt_shuffled = Tallies::rebuild(&defs, ids, actions, &shuffled);
        prop_assert_eq!(inc.views(), rebuilt.views());
        // A checkpoint restores the same engine: applying more taps to
        // both keeps them equal.
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
