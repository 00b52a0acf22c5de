//! The intake rules: what an arriving tag on a reader becomes.
//!
//! - a reader's binding names an answer: fixed, or the answer in its slot of
//!   the active poll ([`vote_target`]);
//! - a tap on a closed poll is refused;
//! - the same tag on the same reader inside the debounce window is the
//!   earlier tap, not a new one ([`Debounce`]; expiry in amortised O(1));
//! - a station's tap times never run backwards, and its sequence numbers
//!   have no gaps ([`TapClock`]);
//! - a tag is looked up again only once its answer is older than its TTL
//!   ([`lookup_due`]).
//!
//! Pure: time is passed in (`now` is a monotonic offset, `wall` ms since the
//! epoch); the Station performs what these functions decide.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::poll::{Binding, PollDef};
use super::tap::TapKey;

/// Why a tap is refused before it is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no poll is active, so slot readers have nothing to vote on")]
    NoActivePoll,
    #[error("the active poll {poll:?} has no answer in slot {slot}")]
    EmptySlot { poll: String, slot: char },
    #[error("poll {0:?} is closed")]
    PollClosed(String),
}

/// The `(poll, answer)` a tap on a reader with `binding` votes for, given
/// the active poll and which polls are open.
pub fn vote_target(
    binding: &Binding,
    active: Option<&str>,
    polls: &[PollDef],
    is_open: impl Fn(&str) -> bool,
) -> Result<(String, String), Refusal> {
    let (poll, answer) = match binding {
        Binding::Fixed { poll, answer } => (poll.clone(), answer.clone()),
        Binding::Slot { slot } => {
            let active = active.ok_or(Refusal::NoActivePoll)?;
            let def = polls
                .iter()
                .find(|p| p.id == active)
                .ok_or(Refusal::NoActivePoll)?;
            let answer = def
                .answer_for_slot(*slot)
                .ok_or_else(|| Refusal::EmptySlot {
                    poll: active.to_string(),
                    slot: *slot,
                })?;
            (active.to_string(), answer.id.clone())
        }
    };
    if !is_open(&poll) {
        return Err(Refusal::PollClosed(poll));
    }
    Ok((poll, answer))
}

/// A station's own numbering and clock: the next sequence number and the
/// newest tap time handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapClock {
    pub next_seq: u64,
    pub last_at: i64,
}

impl TapClock {
    /// The time of a new local tap read at wall-clock `wall`: never before
    /// the last one (a clock stepped back by NTP does not reorder taps).
    pub fn stamp(&mut self, wall: i64) -> i64 {
        let at = wall.max(self.last_at);
        self.last_at = at;
        at
    }

    /// The key a reset made now cuts at: at or after every tap this
    /// station has numbered ([`crate::domain::tally::Tallies::reset_cutoff`]
    /// raises it to the poll's newest tap).
    #[must_use]
    pub fn cutoff_candidate(&self, station: &Arc<str>, at: i64) -> TapKey {
        TapKey {
            at,
            station: station.clone(),
            seq: self.next_seq.saturating_sub(1),
        }
    }
}

/// Recent taps by `(reader, tag)`: a repeat inside the window is the
/// earlier tap. Entries expire in the order they were made (a queue), so a
/// tap costs O(1) however many taps the window holds.
#[derive(Debug)]
pub struct Debounce<K, V> {
    window: Duration,
    entries: HashMap<K, (V, Duration)>,
    /// (when, key) in the order entries were made; an entry remade later
    /// leaves a stale item here, skipped when it comes up.
    order: VecDeque<(Duration, K)>,
}

impl<K: Eq + Hash + Clone, V> Debounce<K, V> {
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// The earlier tap of `key`, if it is inside the window at `now`.
    #[must_use]
    pub fn get(&self, key: &K, now: Duration) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, at)| now.saturating_sub(*at) < self.window)
            .map(|(v, _)| v)
    }

    /// Remember a tap of `key` made at `now`, and forget what has expired.
    /// `now` must not go backwards between calls.
    pub fn insert(&mut self, key: K, value: V, now: Duration) {
        self.expire(now);
        self.order.push_back((now, key.clone()));
        self.entries.insert(key, (value, now));
    }

    /// Forget every entry made a whole window before `now`.
    pub fn expire(&mut self, now: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_sub(*at) < self.window {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            if self.entries.get(&key).is_some_and(|(_, made)| *made == at) {
                self.entries.remove(&key);
            }
        }
    }

    /// Forget everything (a reset: a new round starts).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    /// Entries held (expired ones included until the next insert).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What is known of a tag's owner: whether a person was found, and when
/// (ms since the epoch) the answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub resolved: bool,
    pub at: i64,
}

/// Whether a tag needs a (new) lookup at `now`: never asked, or the answer
/// is older than its TTL (`ttl` for a person, `negative_ttl` for unknown).
#[must_use]
pub fn lookup_due(known: Option<Known>, now: i64, ttl: Duration, negative_ttl: Duration) -> bool {
    match known {
        None => true,
        Some(k) => {
            let ttl = if k.resolved { ttl } else { negative_ttl };
            now - k.at > i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::poll::{Answer, Rule};

    fn polls() -> Vec<PollDef> {
        let def = |id: &str, n: usize| PollDef {
            id: id.into(),
            question: "?".into(),
            rule: Rule::Unlimited,
            answers: (0..n)
                .map(|i| Answer {
                    id: format!("a{i}"),
                    label: format!("A{i}"),
                })
                .collect(),
            open: true,
            display: crate::domain::Display::Bars,
        };
        vec![def("p", 2), def("q", 3)]
    }

    #[test]
    fn a_slot_votes_on_the_active_poll_and_closed_polls_refuse() {
        let polls = polls();
        let open = |_: &str| true;
        let slot = |c| Binding::Slot { slot: c };
        assert_eq!(
            vote_target(&slot('B'), Some("q"), &polls, open),
            Ok(("q".into(), "a1".into()))
        );
        assert_eq!(
            vote_target(&slot('C'), Some("p"), &polls, open),
            Err(Refusal::EmptySlot {
                poll: "p".into(),
                slot: 'C'
            })
        );
        assert_eq!(
            vote_target(&slot('A'), None, &polls, open),
            Err(Refusal::NoActivePoll)
        );
        assert_eq!(
            vote_target(&slot('A'), Some("gone"), &polls, open),
            Err(Refusal::NoActivePoll)
        );
        let fixed = Binding::Fixed {
            poll: "p".into(),
            answer: "a0".into(),
        };
        assert_eq!(
            vote_target(&fixed, None, &polls, open),
            Ok(("p".into(), "a0".into()))
        );
        let closed = |p: &str| p != "p";
        assert_eq!(
            vote_target(&fixed, Some("q"), &polls, closed),
            Err(Refusal::PollClosed("p".into()))
        );
        assert_eq!(
            vote_target(&slot('A'), Some("p"), &polls, closed),
            Err(Refusal::PollClosed("p".into()))
        );
    }

    #[test]
    fn tap_times_never_run_backwards() {
        let mut c = TapClock {
            next_seq: 5,
            last_at: 1000,
        };
        assert_eq!(c.stamp(900), 1000, "a clock stepped back");
        assert_eq!(c.stamp(1200), 1200);
        assert_eq!(c.stamp(1100), 1200);
        let k = c.cutoff_candidate(&Arc::from("s"), 1300);
        assert_eq!((k.at, &*k.station, k.seq), (1300, "s", 4));
    }

    #[test]
    fn debounce_answers_inside_the_window_only() {
        let ms = Duration::from_millis;
        let mut d: Debounce<&str, u32> = Debounce::new(ms(2000));
        d.insert("a", 1, ms(0));
        assert_eq!(d.get(&"a", ms(1999)), Some(&1));
        assert_eq!(d.get(&"a", ms(2000)), None, "the window is half-open");
        assert_eq!(d.get(&"b", ms(10)), None);
        // A repeat after the window is a new tap that starts a new window.
        d.insert("a", 2, ms(2500));
        assert_eq!(d.get(&"a", ms(4000)), Some(&2));
        // The stale queue item of the first entry does not remove the second.
        d.insert("c", 3, ms(4100));
        assert_eq!(d.get(&"a", ms(4100)), Some(&2));
        assert_eq!(d.len(), 2);
        d.insert("d", 4, ms(4600));
        assert_eq!(d.get(&"a", ms(4600)), None);
        assert_eq!(d.len(), 2, "a expired when d came: {d:?}");
        d.clear();
        assert!(d.is_empty());
        // A shorter window (reload) applies to what is held.
        d.insert("e", 5, ms(5000));
        d.set_window(ms(100));
        assert_eq!(d.get(&"e", ms(5100)), None);
    }

    #[test]
    fn debounce_expiry_is_amortised_constant_at_100k_entries() {
        let ms = Duration::from_millis;
        let mut d: Debounce<u32, u32> = Debounce::new(ms(2000));
        // 100,000 taps in one window: all held.
        for i in 0..100_000u32 {
            d.insert(i, i, ms(u64::from(i) / 50));
        }
        assert_eq!(d.len(), 100_000);
        assert_eq!(d.order.len(), 100_000);
        // One more tap a window after the first half: only the first half
        // leaves, and each queue item is looked at once.
        d.insert(100_000, 0, ms(2000 + 999));
        assert_eq!(d.len(), 100_000 - 50_000 + 1);
        assert_eq!(d.order.len(), d.len());
        // The same key over and over keeps one entry and a bounded queue.
        let mut r: Debounce<u32, u32> = Debounce::new(ms(10));
        for t in 0..100_000u64 {
            r.insert(7, 0, ms(t));
        }
        assert_eq!(r.len(), 1);
        assert!(r.order.len() <= 11, "{}", r.order.len());
    }

    #[test]
    fn lookups_are_due_when_never_asked_or_stale() {
        let s = Duration::from_secs;
        let known = |resolved, at| Some(Known { resolved, at });
        assert!(lookup_due(None, 0, s(10), s(1)));
        assert!(!lookup_due(known(true, 0), 10_000, s(10), s(1)));
        assert!(lookup_due(known(true, 0), 10_001, s(10), s(1)));
        assert!(!lookup_due(known(false, 0), 1000, s(10), s(1)));
        assert!(lookup_due(known(false, 0), 1001, s(10), s(1)));
    }
}
