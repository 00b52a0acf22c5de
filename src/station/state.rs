//! The Station's state and every decision made on it, synchronously: what
//! a tap becomes, what a committed batch changes and announces, what an
//! action, a binding or a reload does, which tags are due a lookup.
//!
//! No I/O and no awaiting: [`super::commit`] performs what this decides
//! (the commit first, then [`State::taps_committed`] and friends), which is
//! why this file can be tested with a paused clock and no store. Time comes
//! in as arguments (`now`: monotonic offset, `wall`: ms since the epoch).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::api::{ActionError, BindError, ReaderReport, TapError, TapOutcome, Vote};
pub(super) use super::people::People;
pub(super) use super::readers::Readers;
use super::view::{
    Event, HotplugState, HotplugStatus, HotplugView, IdentityView, NetState, NetworkStatus,
    PeerView, PersonEvent, PollState, RefusedPeer, RemoteTally, Snapshot, StoreHealth, TapEvent,
    XmppView,
};
use crate::config::{Config, ReaderConfig};
use crate::domain::herd::{Feed, Heads, herd_stamp};
use crate::domain::intake::{self, Debounce, Known, TapClock};
use crate::domain::tally::{Applied, Effect, Gate, Tallies, TallyState};
use crate::domain::{Action, ActionKind, IdentityRecord, Person, PollDef, TagUid, Tap};
use crate::store::{BoundReader, Record};

/// Remote results kept: one per (source, question), the oldest dropped
/// beyond this (a chatty or hostile pubsub node cannot grow the state).
pub(super) const MAX_REMOTE: usize = 64;

/// Refusals kept for the herd's view.
pub(super) const REFUSED_KEPT: usize = 20;

/// Where the restore of this station's own feed stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Restore {
    /// No peer has said yet what it holds of this station.
    Waiting,
    /// A peer holds this station's feeds up to these heads: taps wait until
    /// this station holds them too.
    Until(Heads),
}

/// The herd's bookkeeping in the Station.
#[derive(Debug)]
pub(super) struct HerdState {
    pub id: String,
    pub polls_hash: String,
    /// `Some` while this station restores its own feed (taps wait).
    pub restoring: Option<Restore>,
    pub peers: BTreeMap<String, (PeerView, Option<Arc<Heads>>)>,
    pub refused: VecDeque<RefusedPeer>,
    pub refused_total: u64,
    pub forked: BTreeSet<String>,
    pub received: u64,
    pub duplicates: u64,
    pub gaps: u64,
}

impl HerdState {
    /// A herd member; `restoring` when it starts with nothing of its own
    /// and has peers to ask.
    pub(super) fn new(id: String, polls_hash: String, restoring: bool) -> Self {
        Self {
            id,
            polls_hash,
            restoring: restoring.then_some(Restore::Waiting),
            peers: BTreeMap::new(),
            refused: VecDeque::new(),
            refused_total: 0,
            forked: BTreeSet::new(),
            received: 0,
            duplicates: 0,
            gaps: 0,
        }
    }
}

/// An identity answer of this station's, waiting to be logged (it gets
/// its number in the feed when it is written).
#[derive(Debug, Clone)]
pub(super) struct ResolvedIdentity {
    pub tag: TagUid,
    pub person: Option<Person>,
    pub source: String,
    pub at: i64,
}

/// What a checkpoint saves: the tally state, and the tags whose lookup was
/// still pending (a logged tap is its own lookup request; taps before the
/// checkpoint are not replayed, so their pending lookups are kept here).
/// The JSON is stable: old checkpoints must keep loading.
#[derive(Serialize, Deserialize)]
pub(super) struct SavedState {
    #[serde(flatten)]
    pub tallies: TallyState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_lookups: Vec<TagUid>,
}

/// XMPP outbox, published; identity lookups pending, people known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters(u64, u64, u64, u64);

/// When the counters were last announced, and whether they must be again.
pub(super) struct CounterAnnouncer {
    pub(super) announced: Counters,
    /// A snapshot went out (on the watch, which a stream reads when it
    /// connects) with counters that no status event carried: a client may
    /// hold them, so the next move must be announced even if the counters
    /// are back where the last announcement left them.
    pub(super) unannounced: bool,
    pub(super) at: Instant,
    pub(super) due: Option<Instant>,
}

impl CounterAnnouncer {
    pub(super) fn new(now: Counters, at: Instant) -> Self {
        Self {
            announced: now,
            unannounced: false,
            at,
            due: None,
        }
    }
}

/// What a tap in a batch being gathered became.
#[derive(Debug)]
pub(super) enum Prepared {
    /// A new tap, to be committed.
    New(Tap),
    /// The same tag on the same reader as the batch's tap at this index.
    RepeatInBatch(usize),
    /// A repeat of a tap already durable: answered at once.
    RepeatDurable(TapOutcome),
}

/// What applying a committed batch gives.
#[derive(Debug, Default)]
pub(super) struct Applied2 {
    /// Per tap of the batch: whether it counted.
    pub counted: Vec<bool>,
    /// What to announce, in order.
    pub events: Vec<Event>,
}

/// The state the Station task owns.
#[derive(Debug)]
pub(super) struct State {
    pub id: Arc<str>,
    pub config: Config,
    pub polls: Vec<PollDef>,
    /// The poll slot readers vote on.
    pub active: crate::domain::ActivePoll,
    pub tallies: Tallies,
    pub readers: Readers,
    /// Recent taps by (reader, tag), with whether they counted.
    pub recent: Debounce<(Arc<str>, TagUid), (Tap, bool)>,
    pub clock: TapClock,
    /// Every feed held (own and the herd's), with its head.
    pub heads: Heads,
    /// The newest tap time of another station (the herd clock follows it).
    pub newest_foreign: Option<i64>,
    /// How far ahead of the wall clock a foreign tap may pull a local one.
    pub max_skew_ms: i64,
    /// The herd's bookkeeping, when `[herd]` is configured.
    pub herd: Option<HerdState>,
    pub taps_logged: u64,
    pub people: People,
    pub store_health: StoreHealth,
    pub network: NetworkStatus,
    pub hotplug: HotplugStatus,
    pub xmpp: XmppView,
    pub remote: Vec<RemoteTally>,
    pub identity: IdentityView,
    pub started_at: i64,
}

impl State {
    /// The taps and their order in a batch being gathered.
    fn key(tap: &Tap) -> (Arc<str>, TagUid) {
        (tap.reader.clone(), tap.tag.clone())
    }

    /// What a tag arriving on `reader` becomes, with the batch gathered so
    /// far (`batch`, and `in_batch` indexing it by reader and tag).
    pub(super) fn prepare_tap(
        &mut self,
        reader: &str,
        tag: TagUid,
        now: Duration,
        wall: i64,
        batch: &[Tap],
        in_batch: &HashMap<(Arc<str>, TagUid), usize>,
    ) -> Result<Prepared, TapError> {
        let state = self
            .readers
            .get(reader)
            .ok_or_else(|| TapError::UnknownReader(reader.to_string()))?;
        let reader_id: Arc<str> = state.id.clone();
        let key = (reader_id.clone(), tag);
        if let Some(&i) = in_batch.get(&key) {
            return Ok(Prepared::RepeatInBatch(i));
        }
        if let Some((tap, counted)) = self.recent.get(&key, now) {
            return Ok(Prepared::RepeatDurable(TapOutcome {
                tap: tap.clone(),
                counted: *counted,
                repeat: true,
            }));
        }
        if self.herd.as_ref().is_some_and(|h| h.restoring.is_some()) {
            return Err(TapError::Restoring);
        }
        let (poll, answer) =
            intake::vote_target(&state.binding, self.active.get(), &self.polls, |p| {
                self.tallies.open_now(p).unwrap_or(false)
            })?;
        let at = herd_stamp(
            wall,
            self.clock.last_at,
            self.newest_foreign,
            self.max_skew_ms,
        );
        self.clock.last_at = at;
        Ok(Prepared::New(Tap {
            station: self.id.clone(),
            seq: self.clock.next_seq + batch.len() as u64,
            reader: reader_id,
            tag: key.1,
            at,
            poll: poll.into(),
            answer: answer.into(),
        }))
    }

    /// The tags of `taps` due a lookup now (each once).
    pub(super) fn lookups_due(&self, taps: &[Tap], wall: i64) -> Vec<TagUid> {
        let Some(cfg) = &self.config.identity else {
            return Vec::new();
        };
        let mut due: Vec<TagUid> = Vec::new();
        for t in taps {
            if self.people.pending.contains(&t.tag) || due.contains(&t.tag) {
                continue;
            }
            let known = self.people.known.get(&t.tag).map(|(p, at, _)| Known {
                resolved: p.is_some(),
                at: *at,
            });
            if intake::lookup_due(known, wall, cfg.ttl, cfg.negative_ttl) {
                due.push(t.tag.clone());
            }
        }
        due
    }

    /// Apply a batch that is now durable: its taps, and the identities that
    /// rode with it. Says which taps counted and what to announce.
    pub(super) fn taps_committed(
        &mut self,
        taps: &[Tap],
        identities: Vec<IdentityRecord>,
        now: Duration,
    ) -> Applied2 {
        self.clock.next_seq += taps.len() as u64;
        if let Some(last) = taps.last() {
            self.heads.set(self.id.clone(), Feed::Taps, last.seq);
        }
        self.taps_logged += taps.len() as u64;
        let mut out = Applied2 {
            counted: Vec::with_capacity(taps.len()),
            events: Vec::with_capacity(taps.len() + 1),
        };
        let mut changed: Vec<Arc<str>> = Vec::new();
        let show = self.config.identity.as_ref().is_some_and(|i| i.show_names);
        for tap in taps {
            let applied = self.tallies.apply(tap);
            let c = applied.counted();
            out.counted.push(c);
            if applied != Applied::Unknown && !changed.contains(&tap.poll) {
                changed.push(tap.poll.clone());
            }
            if let Some(r) = self.readers.get_mut(&tap.reader) {
                r.taps += 1;
            }
            self.recent.insert(Self::key(tap), (tap.clone(), c), now);
            let person = self.people.person(&tap.tag);
            out.events.push(Event::Tap(TapEvent {
                station: tap.station.clone(),
                seq: tap.seq,
                reader: tap.reader.clone(),
                poll: tap.poll.clone(),
                answer: tap.answer.clone(),
                at: tap.at,
                counted: c,
                tag: tap.tag.clone(),
                first_name: person
                    .filter(|p| !p.first.is_empty())
                    .map(|p| p.first.as_str().into()),
                name: person.filter(|_| show).map(|p| p.name.as_str().into()),
            }));
        }
        for id in identities {
            let polls = self.identity_committed(id, &mut out.events);
            changed.extend(polls.into_iter().map(Arc::from));
        }
        changed.sort();
        changed.dedup();
        for poll in changed {
            if let Some(view) = self.tallies.view(&poll) {
                out.events.push(Event::Tally(view));
            }
        }
        out
    }

    /// Apply an identity answer that is now in the log (this station's or
    /// another's): if it wins for its tag, names, and tallies when two tags
    /// turn out to be one person. Returns the polls whose tally changed;
    /// the thanks for a known name goes to `announce`.
    pub(super) fn identity_committed(
        &mut self,
        id: IdentityRecord,
        announce: &mut Vec<Event>,
    ) -> Vec<String> {
        self.heads.set(
            id.origin.clone(),
            Feed::Identities,
            id.iseq.max(self.heads.get(&id.origin, Feed::Identities)),
        );
        // One station's lookup serves the herd: no need to ask again.
        self.people.pending.remove(&id.tag);
        if !self.people.would_win(&id) {
            return Vec::new();
        }
        let IdentityRecord {
            tag,
            person,
            at,
            origin,
            ..
        } = id;
        let changed = self
            .tallies
            .assign(&tag, person.as_ref().map(|p| Arc::from(p.id.as_str())));
        if let Some(p) = &person
            && !p.first.is_empty()
        {
            announce.push(Event::Person(PersonEvent {
                tag: tag.clone(),
                first_name: p.first.as_str().into(),
            }));
        }
        self.people.insert(tag, person, at, origin);
        changed
    }

    /// Whether an identity answer is for a tag this station asked about.
    pub(super) fn wants_identity(&self, tag: &TagUid) -> bool {
        self.people.knows(tag) || self.people.pending.contains(tag)
    }

    /// The counted votes of a committed batch, for the outbox.
    pub(super) fn votes<'a>(
        &'a self,
        taps: &'a [Tap],
        counted: &[bool],
        views: &'a HashMap<Arc<str>, crate::domain::tally::TallyView>,
    ) -> Vec<Vote<'a>> {
        taps.iter()
            .zip(counted)
            // Each station publishes only its own votes.
            .filter(|(t, c)| **c && t.station == self.id)
            .filter_map(|(tap, _)| {
                Some(Vote {
                    tap,
                    poll: self.polls.iter().find(|p| *p.id == *tap.poll)?,
                    tally: views.get(&tap.poll)?,
                    person: self.people.person(&tap.tag),
                })
            })
            .collect()
    }

    /// The action to log for `kind` on `poll` now, or why not: the next of
    /// this station's feed, keyed above every tap of the poll it has seen.
    pub(super) fn plan_action(
        &self,
        poll: &str,
        kind: ActionKind,
        wall: i64,
    ) -> Result<Action, ActionError> {
        if !self.polls.iter().any(|p| p.id == poll) {
            return Err(ActionError::UnknownPoll(poll.to_string()));
        }
        let at = wall.max(self.clock.last_at);
        let key = self
            .tallies
            .action_key(poll, self.clock.cutoff_candidate(&self.id, at));
        Ok(Action {
            origin: self.id.clone(),
            oseq: self.heads.get(&self.id, Feed::Actions) + 1,
            at,
            kind,
            poll: poll.to_string(),
            key,
        })
    }

    /// Apply an action that is now in the log (this station's or another's);
    /// returns what to announce, and the poll to re-fold from the log when
    /// the action landed below taps already applied.
    pub(super) fn action_committed(&mut self, action: &Action) -> (Vec<Event>, Option<String>) {
        let held = self
            .heads
            .get(&action.origin, Feed::Actions)
            .max(action.oseq);
        self.heads.set(action.origin.clone(), Feed::Actions, held);
        if action.origin == self.id {
            self.clock.last_at = self.clock.last_at.max(action.at);
        }
        let mut events = Vec::new();
        let poll = action.poll.clone();
        let Some(gate) = Gate::of(action.kind) else {
            self.active.activate(&poll, &action.key, &self.polls);
            return (events, None);
        };
        if action.kind == ActionKind::Reset {
            // Debounce memory would answer "repeat" for taps of the old round.
            self.recent.clear();
        }
        match self.tallies.act(&poll, &gate, action.key.clone()) {
            Effect::None => (events, None),
            Effect::Refold => (events, Some(poll)),
            Effect::Changed => {
                if let Some(view) = self.tallies.view(&poll) {
                    events.push(Event::Tally(view));
                }
                (events, None)
            }
        }
    }

    /// The record that binds a new reader, or why it cannot be bound.
    pub(super) fn plan_bind(&self, cfg: &ReaderConfig, wall: i64) -> Result<Record, BindError> {
        if self.readers.get(&cfg.id).is_some() {
            return Err(BindError::DuplicateId(cfg.id.clone()));
        }
        let device = cfg.device.display().to_string();
        if let Some(r) = self.readers.on_device(&device) {
            return Err(BindError::DeviceInUse(device, r.id.to_string()));
        }
        cfg.binding.check(&self.polls)?;
        Ok(Record::Reader(BoundReader::from_config(cfg, wall)))
    }

    /// A reader task's report; the event to announce if anything changed.
    pub(super) fn reader_report(&mut self, r: ReaderReport) -> Option<Event> {
        let state = self.readers.get_mut(&r.reader)?;
        // Reader tasks report at most once a second each, so every report
        // may be announced.
        let error_changed = state.last_error.as_deref() != r.error.as_deref();
        let changed = error_changed
            || state.status != r.status
            || state.frames_ok != r.frames_ok
            || state.frames_bad != r.frames_bad;
        state.status = r.status;
        if error_changed {
            // Shared with every snapshot: replaced only when it changes.
            state.last_error = r.error.map(Into::into);
        }
        state.frames_ok = r.frames_ok;
        state.frames_bad = r.frames_bad;
        if let Some(p) = r.protocol {
            state.protocol = p;
        }
        changed.then(|| Event::Reader(state.clone()))
    }

    /// A result heard over XMPP: replaces the one from the same source and
    /// question; the oldest goes beyond [`MAX_REMOTE`].
    pub(super) fn remote_heard(&mut self, r: RemoteTally) {
        self.remote
            .retain(|x| !(x.source == r.source && x.question_id == r.question_id));
        self.remote.push(r);
        if self.remote.len() > MAX_REMOTE {
            let drop = self.remote.len() - MAX_REMOTE;
            self.remote.drain(..drop);
        }
    }

    pub(super) fn poll_state(&self, poll: &str) -> Option<PollState> {
        let mut def = self.polls.iter().find(|p| p.id == poll)?.clone();
        def.open = self.tallies.open_now(poll).unwrap_or(false);
        Some(PollState {
            active: self.active.get() == Some(poll),
            def,
        })
    }

    pub(super) fn counters(&self) -> Counters {
        Counters(
            self.xmpp.outbox,
            self.xmpp.published,
            self.people.pending.len() as u64,
            self.people.resolved,
        )
    }

    /// What a checkpoint saves now.
    pub(super) fn saved(&self) -> SavedState {
        SavedState {
            tallies: self.tallies.to_state(),
            pending_lookups: self.people.pending.iter().cloned().collect(),
        }
    }

    /// Everything the outputs show, now.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            station: self.id.to_string(),
            started_at: self.started_at,
            active_poll: self.active.get().map(str::to_owned),
            polls: self
                .polls
                .iter()
                .filter_map(|p| self.poll_state(&p.id))
                .collect(),
            tallies: self.tallies.views(),
            readers: self.readers.list.clone(),
            store: StoreHealth {
                taps: self.taps_logged,
                ..self.store_health.clone()
            },
            network: self.network.clone(),
            xmpp: self.xmpp.clone(),
            remote: self.remote.clone(),
            identity: IdentityView {
                pending: self.people.pending.len() as u64,
                known: self.people.resolved,
                ..self.identity.clone()
            },
            herd: self.herd_view(),
            hotplug: HotplugView {
                state: self.hotplug.state,
                detail: self.hotplug.detail.clone(),
                unbound: self
                    .hotplug
                    .devices
                    .iter()
                    .filter(|d| self.readers.on_device(d).is_none())
                    .cloned()
                    .collect(),
            },
        }
    }
}

/// The network as it is before anyone has said.
pub(super) fn unknown_network(wall: i64) -> NetworkStatus {
    NetworkStatus {
        state: NetState::Unknown,
        detail: "not watched yet".into(),
        since: wall,
    }
}

/// Hotplug before the watcher has said.
pub(super) fn hotplug_not_started() -> HotplugStatus {
    HotplugStatus {
        state: HotplugState::Unavailable,
        detail: "not started yet".into(),
        devices: Vec::new(),
    }
}
