//! The Station's state and every decision made on it, synchronously: what
//! a tap becomes, what a committed batch changes and announces, what an
//! action, a binding or a reload does, which tags are due a lookup.
//!
//! No I/O and no awaiting: [`super::commit`] performs what this decides
//! (the commit first, then [`State::taps_committed`] and friends), which is
//! why this file can be tested with a paused clock and no store. Time comes
//! in as arguments (`now`: monotonic offset, `wall`: ms since the epoch).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{ActionError, BindError, ReaderReport, TapError, TapOutcome, Vote};
use super::view::{
    Event, HotplugState, HotplugStatus, HotplugView, IdentityView, NetState, NetworkStatus,
    PersonEvent, PollState, ReaderState, ReaderStatus, RemoteTally, Snapshot, StoreHealth,
    TapEvent, XmppView,
};
use crate::config::{Config, ReaderConfig};
use crate::domain::intake::{self, Debounce, Known, TapClock};
use crate::domain::tally::{Applied, Tallies, TallyState};
use crate::domain::{Action, ActionKind, Person, PollDef, TagUid, Tap};
use crate::store::{BoundReader, Record};

/// Remote results kept: one per (source, question), the oldest dropped
/// beyond this (a chatty or hostile pubsub node cannot grow the state).
pub(super) const MAX_REMOTE: usize = 64;

/// The readers: their state as shown, and their settings, by id.
#[derive(Debug, Default)]
pub(super) struct Readers {
    list: Vec<ReaderState>,
    index: HashMap<String, usize>,
    pub(super) cfgs: HashMap<String, ReaderConfig>,
}

impl Readers {
    fn state_of(r: &ReaderConfig) -> ReaderState {
        ReaderState {
            id: r.id.clone(),
            status: ReaderStatus::Disconnected,
            binding: r.binding.clone(),
            protocol: r.protocol,
            device: r.device.display().to_string(),
            last_error: Some("not opened yet".into()),
            frames_ok: 0,
            frames_bad: 0,
            taps: 0,
        }
    }

    pub(super) fn add(&mut self, cfg: ReaderConfig) -> ReaderState {
        let state = Self::state_of(&cfg);
        self.index.insert(cfg.id.clone(), self.list.len());
        self.list.push(state.clone());
        self.cfgs.insert(cfg.id.clone(), cfg);
        state
    }

    pub(super) fn remove(&mut self, id: &str) {
        self.list.retain(|r| r.id != id);
        self.cfgs.remove(id);
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut ReaderState> {
        let i = *self.index.get(id)?;
        self.list.get_mut(i)
    }

    pub(super) fn get(&self, id: &str) -> Option<&ReaderState> {
        self.list.get(*self.index.get(id)?)
    }

    pub(super) fn on_device(&self, device: &str) -> Option<&ReaderState> {
        self.list.iter().find(|r| r.device == device)
    }
}

/// Who carries which tag, as far as answered, and what is still asked.
#[derive(Debug, Default)]
pub(super) struct People {
    /// Resolved tags: person (None = unknown) and when.
    known: HashMap<TagUid, (Option<Person>, i64)>,
    /// Tags waiting for a lookup.
    pub(super) pending: HashSet<TagUid>,
    /// How many tags resolved to a person (kept: read with every snapshot).
    resolved: u64,
}

impl People {
    pub(super) fn insert(&mut self, tag: TagUid, person: Option<Person>, at: i64) {
        let now = person.is_some();
        let before = self
            .known
            .insert(tag, (person, at))
            .is_some_and(|(p, _)| p.is_some());
        match (before, now) {
            (false, true) => self.resolved += 1,
            (true, false) => self.resolved -= 1,
            _ => {}
        }
    }

    fn person(&self, tag: &TagUid) -> Option<&Person> {
        self.known.get(tag).and_then(|(p, _)| p.as_ref())
    }

    pub(super) fn knows(&self, tag: &TagUid) -> bool {
        self.known.contains_key(tag)
    }
}

/// An identity answer waiting to be logged.
#[derive(Debug, Clone)]
pub(super) struct ResolvedIdentity {
    pub tag: TagUid,
    pub person: Option<Person>,
    pub source: String,
    pub at: i64,
}

impl ResolvedIdentity {
    pub(super) fn record(&self) -> Record {
        Record::Identity {
            tag: self.tag.clone(),
            person: self.person.clone(),
            source: self.source.clone(),
            at: self.at,
        }
    }
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
    pub open: HashMap<String, bool>,
    pub active: Option<String>,
    pub tallies: Tallies,
    pub readers: Readers,
    /// Recent taps by (reader, tag), with whether they counted.
    pub recent: Debounce<(Arc<str>, TagUid), (Tap, bool)>,
    pub clock: TapClock,
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
        let reader_id: Arc<str> = state.id.as_str().into();
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
        let (poll, answer) =
            intake::vote_target(&state.binding, self.active.as_deref(), &self.polls, |p| {
                self.open.get(p).copied().unwrap_or(false)
            })?;
        let at = self.clock.stamp(wall);
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
            let known = self.people.known.get(&t.tag).map(|(p, at)| Known {
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
        identities: Vec<ResolvedIdentity>,
        now: Duration,
    ) -> Applied2 {
        self.clock.next_seq += taps.len() as u64;
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

    /// Apply an identity that is now in the log: names, and tallies when two
    /// tags turn out to be one person. Returns the polls whose tally changed;
    /// the thanks for a known name goes to `announce`.
    fn identity_committed(
        &mut self,
        id: ResolvedIdentity,
        announce: &mut Vec<Event>,
    ) -> Vec<String> {
        let ResolvedIdentity {
            tag, person, at, ..
        } = id;
        self.people.pending.remove(&tag);
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
        self.people.insert(tag, person, at);
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
            .filter(|(_, c)| **c)
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

    /// The action to log for `kind` on `poll` now, or why not.
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
        let cutoff = (kind == ActionKind::Reset).then(|| {
            self.tallies
                .reset_cutoff(poll, self.clock.cutoff_candidate(&self.id, at))
        });
        Ok(Action {
            at,
            kind,
            poll: poll.to_string(),
            cutoff,
        })
    }

    /// Apply an action that is now in the log; returns the poll's new state
    /// and what to announce besides the status.
    pub(super) fn action_committed(&mut self, action: Action) -> (PollState, Vec<Event>) {
        self.clock.last_at = self.clock.last_at.max(action.at);
        let mut events = Vec::new();
        let poll = action.poll.clone();
        match action.kind {
            ActionKind::Open | ActionKind::Close => {
                self.open
                    .insert(poll.clone(), action.kind == ActionKind::Open);
            }
            ActionKind::Activate => self.active = Some(poll.clone()),
            ActionKind::Reset => {
                if let Some(c) = action.cutoff {
                    self.tallies.reset(&poll, c);
                }
                // Debounce memory would answer "repeat" for taps of the old round.
                self.recent.clear();
                if let Some(view) = self.tallies.view(&poll) {
                    events.push(Event::Tally(view));
                }
            }
        }
        let state = self
            .poll_state(&poll)
            .expect("the action was planned for a configured poll");
        (state, events)
    }

    /// The record that binds a new reader, or why it cannot be bound.
    pub(super) fn plan_bind(&self, cfg: &ReaderConfig, wall: i64) -> Result<Record, BindError> {
        if self.readers.get(&cfg.id).is_some() {
            return Err(BindError::DuplicateId(cfg.id.clone()));
        }
        let device = cfg.device.display().to_string();
        if let Some(r) = self.readers.on_device(&device) {
            return Err(BindError::DeviceInUse(device, r.id.clone()));
        }
        cfg.binding.check(&self.polls)?;
        Ok(Record::Reader(BoundReader::from_config(cfg, wall)))
    }

    /// A reader task's report; the event to announce if anything changed.
    pub(super) fn reader_report(&mut self, r: ReaderReport) -> Option<Event> {
        let state = self.readers.get_mut(&r.reader)?;
        // Reader tasks report at most once a second each, so every report
        // may be announced.
        let changed = state.status != r.status
            || state.last_error != r.error
            || state.frames_ok != r.frames_ok
            || state.frames_bad != r.frames_bad;
        state.status = r.status;
        state.last_error = r.error;
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
        def.open = self.open.get(poll).copied().unwrap_or(false);
        Some(PollState {
            active: self.active.as_deref() == Some(poll),
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
            active_poll: self.active.clone(),
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
