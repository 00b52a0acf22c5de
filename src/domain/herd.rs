//! The herd's rules: every station's log is a set of feeds, one per origin
//! and kind, each numbered without gaps; stations exchange what the other
//! lacks and end up holding the same events.
//!
//! - [`Heads`]: per feed, the highest number held. An event is taken only
//!   as the next of its feed ([`Heads::accept`]): a feed held is always a
//!   whole prefix, so "what do you lack" is one number per feed;
//! - the herd clock ([`herd_stamp`]): a local tap is stamped no earlier
//!   than the newest foreign tap seen (+1 ms), but never more than
//!   `max_skew` ahead of this station's own wall clock, so one fast clock
//!   cannot drag the herd.
//!
//! What the merge does with the events (the tally fold, reset cutoffs,
//! gates, last-writer-wins identities and activation) is in
//! [`super::tally`] and [`super::person`]. Pure: time is passed in.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::person::IdentityRecord;
use super::poll::Action;
use super::tap::Tap;

/// The kinds of replicated events, each a feed per origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    Taps,
    Actions,
    Identities,
}

impl Feed {
    pub const ALL: [Feed; 3] = [Feed::Taps, Feed::Actions, Feed::Identities];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Feed::Taps => "taps",
            Feed::Actions => "actions",
            Feed::Identities => "identities",
        }
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replicated event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HerdEvent {
    Tap(Tap),
    Action(Action),
    Identity(IdentityRecord),
}

impl HerdEvent {
    /// Its origin, feed and number there.
    #[must_use]
    pub fn position(&self) -> (&Arc<str>, Feed, u64) {
        match self {
            HerdEvent::Tap(t) => (&t.station, Feed::Taps, t.seq),
            HerdEvent::Action(a) => (&a.origin, Feed::Actions, a.oseq),
            HerdEvent::Identity(i) => (&i.origin, Feed::Identities, i.iseq),
        }
    }
}

/// What to do with an arriving event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// The next of its feed: store it.
    Next,
    /// Held already: drop it (or check it is the same).
    Duplicate,
    /// An earlier one is missing: drop it; it comes again, in order.
    Gap { held: u64 },
}

/// Per (origin, feed), the highest number held; every number below it is
/// held too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heads(BTreeMap<(Arc<str>, Feed), u64>);

impl Heads {
    #[must_use]
    pub fn get(&self, origin: &str, feed: Feed) -> u64 {
        // BTreeMap lookups want the owned key type; build it once.
        self.0.get(&(Arc::from(origin), feed)).copied().unwrap_or(0)
    }

    /// Set a feed's head (at start, from the log).
    pub fn set(&mut self, origin: Arc<str>, feed: Feed, n: u64) {
        if n == 0 {
            self.0.remove(&(origin, feed));
        } else {
            self.0.insert((origin, feed), n);
        }
    }

    /// Whether `n` of `origin`'s `feed` is the next to take; takes it if so.
    pub fn accept(&mut self, origin: &Arc<str>, feed: Feed, n: u64) -> Accept {
        let held = self.0.entry((origin.clone(), feed)).or_insert(0);
        match n {
            n if n <= *held => Accept::Duplicate,
            n if n == *held + 1 => {
                *held = n;
                Accept::Next
            }
            _ => {
                let held = *held;
                if held == 0 {
                    self.0.remove(&(origin.clone(), feed));
                }
                Accept::Gap { held }
            }
        }
    }

    /// Every feed held, with its head.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, Feed, u64)> {
        self.0.iter().map(|((o, f), n)| (o, *f, *n))
    }

    /// The feeds where `other` holds more than this, with both heads:
    /// (origin, feed, ours, theirs).
    #[must_use]
    pub fn behind(&self, other: &Heads) -> Vec<(Arc<str>, Feed, u64, u64)> {
        other
            .iter()
            .filter_map(|(o, f, theirs)| {
                let ours = self.get(o, f);
                (theirs > ours).then(|| (o.clone(), f, ours, theirs))
            })
            .collect()
    }

    /// How many events `other` holds that this does not.
    #[must_use]
    pub fn lag(&self, other: &Heads) -> u64 {
        self.behind(other).iter().map(|(_, _, a, b)| b - a).sum()
    }
}

/// The time of a new local tap read at wall clock `wall`: never before the
/// station's last one, and after the newest foreign tap it has seen
/// (`newest_foreign + 1`) — but that term at most `max_skew_ms` ahead of
/// `wall`, so a peer with a fast clock cannot drag this station's taps
/// into its future.
#[must_use]
pub fn herd_stamp(
    wall: i64,
    last_local: i64,
    newest_foreign: Option<i64>,
    max_skew_ms: i64,
) -> i64 {
    let foreign = newest_foreign.map_or(i64::MIN, |f| f.saturating_add(1).min(wall + max_skew_ms));
    wall.max(last_local).max(foreign)
}

/// Whether a station id can name a herd certificate (a DNS name: letters,
/// digits, '-' and '.', not at either end; no '_').
#[must_use]
pub fn certifiable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !id.starts_with(['-', '.'])
        && !id.ends_with(['-', '.'])
}

/// How far a peer's clock seems off ours: its time minus ours, from a
/// ping's round trip (`sent` and `received` ours, `theirs` stamped by the
/// peer in between).
#[must_use]
pub fn clock_offset(sent: i64, theirs: i64, received: i64) -> i64 {
    theirs - (sent + (received - sent) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_next_of_a_feed_is_taken() {
        let mut h = Heads::default();
        let a: Arc<str> = "a".into();
        assert_eq!(h.accept(&a, Feed::Taps, 2), Accept::Gap { held: 0 });
        assert_eq!(h.get("a", Feed::Taps), 0);
        assert_eq!(h.accept(&a, Feed::Taps, 1), Accept::Next);
        assert_eq!(h.accept(&a, Feed::Taps, 2), Accept::Next);
        assert_eq!(h.accept(&a, Feed::Taps, 2), Accept::Duplicate);
        assert_eq!(h.accept(&a, Feed::Taps, 1), Accept::Duplicate);
        assert_eq!(h.accept(&a, Feed::Taps, 4), Accept::Gap { held: 2 });
        assert_eq!(
            h.accept(&a, Feed::Actions, 1),
            Accept::Next,
            "feeds are apart"
        );
        assert_eq!(h.get("a", Feed::Taps), 2);
        let mut other = Heads::default();
        other.set("a".into(), Feed::Taps, 5);
        other.set("b".into(), Feed::Identities, 3);
        assert_eq!(
            h.behind(&other),
            [
                ("a".into(), Feed::Taps, 2, 5),
                ("b".into(), Feed::Identities, 0, 3)
            ]
        );
        assert_eq!(h.lag(&other), 6);
        assert_eq!(other.lag(&h), 1, "a's actions");
    }

    #[test]
    fn the_herd_clock_follows_peers_but_not_too_far() {
        // No peers: the wall clock, never backwards.
        assert_eq!(herd_stamp(1000, 0, None, 1000), 1000);
        assert_eq!(herd_stamp(1000, 1200, None, 1000), 1200);
        // A peer slightly ahead: after its newest tap.
        assert_eq!(herd_stamp(1000, 0, Some(1500), 1000), 1501);
        // A peer far ahead: at most max_skew ahead of our wall clock.
        assert_eq!(herd_stamp(1000, 0, Some(90_000), 1000), 2000);
        // A peer behind changes nothing.
        assert_eq!(herd_stamp(1000, 0, Some(10), 1000), 1000);
        assert_eq!(clock_offset(1000, 1600, 1200), 500);
    }
}
