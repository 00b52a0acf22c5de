//! The Station's side of the herd, synchronous like the rest of the state:
//! which of a peer's events to store (only the next of each feed: a feed
//! held is a whole prefix), what stored foreign events change (taps folded
//! in, actions as gates and cutoffs, identities last-writer-wins), the
//! restore of this station's own feed after an empty start, and the herd's
//! view for the outputs.
//!
//! Invariant: a foreign event is applied only after it is durable, and is
//! then what this station forwards (links send from the log).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::api::{HerdApplied, HerdReport};
use super::state::{REFUSED_KEPT, Restore, State};
use super::view::{Event, HerdView, LinkState, OriginView, PeerView, TapEvent};
use crate::domain::herd::{Accept, Feed, Heads, HerdEvent};
use crate::store::Record;

/// A peer's events sorted for one commit.
#[derive(Debug, Default)]
pub(super) struct Foreign {
    pub events: Vec<HerdEvent>,
    pub applied: HerdApplied,
}

impl Foreign {
    /// The records that store them.
    pub(super) fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.events.iter().map(|e| match e {
            HerdEvent::Tap(t) => Record::ForeignTap(t.clone()),
            HerdEvent::Action(a) => Record::Action(a.clone()),
            HerdEvent::Identity(i) => Record::Identity(i.clone()),
        })
    }
}

impl State {
    /// Of a peer's events, those to store now: the next of their feed
    /// against `heads` (this batch's view, advanced as they are taken).
    /// This station's own feed is taken only while it restores it.
    pub(super) fn sort_foreign(&self, heads: &mut Heads, events: Vec<HerdEvent>) -> Foreign {
        let restoring = self.herd.as_ref().is_some_and(|h| h.restoring.is_some());
        let mut out = Foreign::default();
        for e in events {
            let (origin, feed, n) = e.position();
            if *origin == self.id && !restoring {
                // Ours: held already (a copy), or a forked id; never taken.
                out.applied.duplicates += 1;
                continue;
            }
            match heads.accept(&origin.clone(), feed, n) {
                Accept::Next => {
                    out.applied.stored += 1;
                    out.events.push(e);
                }
                Accept::Duplicate => out.applied.duplicates += 1,
                Accept::Gap { .. } => out.applied.gaps += 1,
            }
        }
        out
    }

    /// Apply foreign events now in the log: taps folded in and announced
    /// (with their origin), actions as gates and cutoffs, identities if they
    /// win. Returns the polls to re-fold from the log, and the foreign taps'
    /// tags nobody has answered for (looked up here after a grace period,
    /// unless the origin's own answer arrives first: one lookup serves all).
    pub(super) fn foreign_committed(
        &mut self,
        foreign: Foreign,
        announce: &mut Vec<Event>,
    ) -> (Vec<String>, Vec<crate::domain::TagUid>) {
        let unknown: Vec<crate::domain::TagUid> = if self.config.identity.is_some() {
            let taps: Vec<crate::domain::Tap> = foreign
                .events
                .iter()
                .filter_map(|e| match e {
                    HerdEvent::Tap(t) if t.station != self.id => Some(t.clone()),
                    _ => None,
                })
                .collect();
            self.lookups_due(&taps, crate::sys::clock::now_ms())
        } else {
            Vec::new()
        };
        let mut refold = Vec::new();
        let mut changed: Vec<Arc<str>> = Vec::new();
        let show = self.config.identity.as_ref().is_some_and(|i| i.show_names);
        if let Some(h) = &mut self.herd {
            h.received += foreign.applied.stored as u64;
            h.duplicates += foreign.applied.duplicates as u64;
            h.gaps += foreign.applied.gaps as u64;
        }
        for e in foreign.events {
            match e {
                HerdEvent::Tap(tap) => {
                    let held = self.heads.get(&tap.station, Feed::Taps).max(tap.seq);
                    self.heads.set(tap.station.clone(), Feed::Taps, held);
                    if tap.station == self.id {
                        // Our own, restored: numbering and clock go on after it.
                        self.clock.next_seq = self.clock.next_seq.max(tap.seq + 1);
                        self.clock.last_at = self.clock.last_at.max(tap.at);
                        self.taps_logged += 1;
                    } else {
                        self.newest_foreign =
                            Some(self.newest_foreign.map_or(tap.at, |m| m.max(tap.at)));
                        self.taps_logged += 1;
                    }
                    let applied = self.tallies.apply(&tap);
                    if applied != crate::domain::tally::Applied::Unknown
                        && !changed.contains(&tap.poll)
                    {
                        changed.push(tap.poll.clone());
                    }
                    let person = self.people.person(&tap.tag);
                    announce.push(Event::Tap(TapEvent {
                        station: tap.station.clone(),
                        seq: tap.seq,
                        reader: tap.reader.clone(),
                        poll: tap.poll.clone(),
                        answer: tap.answer.clone(),
                        at: tap.at,
                        counted: applied.counted(),
                        tag: tap.tag.clone(),
                        first_name: None,
                        name: person.filter(|_| show).map(|p| p.name.as_str().into()),
                    }));
                }
                HerdEvent::Action(a) => {
                    let (events, poll) = self.action_committed(&a);
                    announce.extend(events);
                    refold.extend(poll);
                }
                HerdEvent::Identity(i) => {
                    let polls = self.identity_committed(i, announce);
                    changed.extend(polls.into_iter().map(Arc::from));
                }
            }
        }
        changed.sort();
        changed.dedup();
        for poll in changed {
            if refold.iter().any(|p| **p == *poll) {
                continue; // announced after its re-fold
            }
            if let Some(view) = self.tallies.view(&poll) {
                announce.push(Event::Tally(view));
            }
        }
        self.check_restored();
        refold.sort();
        refold.dedup();
        (refold, unknown)
    }

    /// A link's report. True when it changes what an operator sees at once
    /// (a link up, down or failing, a refusal, a fork); a report of counts
    /// and heads alone is shown with the next status (throttled).
    pub(super) fn herd_report(&mut self, report: HerdReport) -> bool {
        let Some(h) = &mut self.herd else {
            return false;
        };
        let mut changed = true;
        match report {
            HerdReport::Peer { view, heads } => {
                let entry = h
                    .peers
                    .entry(view.address.clone())
                    .or_insert_with(|| (view.clone(), None));
                changed = entry.0.state != view.state
                    || entry.0.error != view.error
                    || entry.0.station != view.station
                    || entry.1.is_none();
                entry.0 = view;
                if heads.is_some() {
                    entry.1 = heads;
                }
                if h.restoring == Some(Restore::Waiting)
                    && let Some(heads) = &entry.1
                {
                    let mut own = Heads::default();
                    for f in Feed::ALL {
                        own.set(self.id.clone(), f, heads.get(&self.id, f));
                    }
                    tracing::info!(
                        taps = own.get(&self.id, Feed::Taps),
                        "herd: a peer said what it holds of this station; restoring up to it"
                    );
                    h.restoring = Some(Restore::Until(own));
                }
            }
            HerdReport::Gone { address } => {
                h.peers.remove(&address);
            }
            HerdReport::Refused(r) => {
                h.refused_total += 1;
                h.refused.push_back(r);
                if h.refused.len() > REFUSED_KEPT {
                    h.refused.pop_front();
                }
            }
            HerdReport::Forked { origin, detail } => {
                tracing::error!(
                    origin,
                    detail,
                    "herd: an origin sent two different events under one key; the first is kept"
                );
                h.forked.insert(origin);
            }
        }
        self.check_restored();
        changed
    }

    /// End the restore once this station holds its own feeds as far as the
    /// peer that said.
    fn check_restored(&mut self) {
        let Some(h) = &mut self.herd else {
            return;
        };
        if let Some(Restore::Until(target)) = &h.restoring
            && self.heads.lag(target) == 0
        {
            tracing::info!(
                next_seq = self.clock.next_seq,
                "herd: this station's own feed is restored; taps are taken again"
            );
            h.restoring = None;
        }
    }

    /// The herd for the outputs.
    pub(super) fn herd_view(&self) -> Option<HerdView> {
        let h = self.herd.as_ref()?;
        let peers: Vec<PeerView> = h
            .peers
            .values()
            .map(|(v, heads)| {
                let mut v = v.clone();
                if let Some(theirs) = heads {
                    v.we_lack = self.heads.lag(theirs);
                    v.it_lacks = theirs.lag(&self.heads);
                }
                v
            })
            .collect();
        let mut origins: BTreeMap<String, OriginView> = BTreeMap::new();
        for (o, f, n) in self.heads.iter() {
            let v = origins.entry(o.to_string()).or_insert_with(|| OriginView {
                origin: o.to_string(),
                taps: 0,
                actions: 0,
                identities: 0,
                lag: 0,
                via: Vec::new(),
            });
            match f {
                Feed::Taps => v.taps = n,
                Feed::Actions => v.actions = n,
                Feed::Identities => v.identities = n,
            }
        }
        for (_, heads) in h.peers.values().filter(|(v, _)| v.state == LinkState::Up) {
            let Some(theirs) = heads else { continue };
            for (o, f, ours, best) in self.heads.behind(theirs) {
                let v = origins.entry(o.to_string()).or_insert_with(|| OriginView {
                    origin: o.to_string(),
                    taps: 0,
                    actions: 0,
                    identities: 0,
                    lag: 0,
                    via: Vec::new(),
                });
                let _ = f;
                v.lag = v.lag.max(best - ours);
            }
        }
        // Through which carriers each origin is heard: the links up that hold it.
        for (v, heads) in h.peers.values().filter(|(v, _)| v.state == LinkState::Up) {
            let Some(theirs) = heads else { continue };
            let carrier = if v.address.starts_with("xmpp:") {
                "xmpp"
            } else {
                "direct"
            };
            for (o, _, n) in theirs.iter() {
                if n == 0 || **o == *self.id {
                    continue;
                }
                if let Some(view) = origins.get_mut(&**o)
                    && !view.via.contains(&carrier)
                {
                    view.via.push(carrier);
                    view.via.sort_unstable();
                }
            }
        }
        Some(HerdView {
            id: h.id.clone(),
            polls_hash: h.polls_hash.clone(),
            restoring: h.restoring.is_some(),
            peers,
            origins: origins.into_values().collect(),
            refused: h.refused.iter().cloned().collect(),
            refused_total: h.refused_total,
            forked: h.forked.iter().cloned().collect(),
            received: h.received,
            duplicates: h.duplicates,
            gaps: h.gaps,
        })
    }
}
