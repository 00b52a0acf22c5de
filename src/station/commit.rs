//! The Station task: the batch loop and the group commit.
//!
//! Whatever arrived while the previous commit ran becomes the next batch;
//! its taps are written in one transaction with what rides along (outbox
//! items of earlier votes, identity answers), and only then applied
//! ([`State::taps_committed`]), answered and announced: the state first (a
//! sender that reads back after its 201 sees its tap), then the senders,
//! then the events. Records that only ride (publications, identities) wait
//! at most [`RIDERS_IDLE`] for a tap commit, then go alone. Counters that
//! move without an event of their own are announced at most every
//! `COUNTERS_EVERY` (`announce`). A checkpoint of the tally state is
//! logged every `CHECKPOINT_EVERY` taps and at stop (`checkpoint`), so a
//! start replays little.
//!
//! Invariants: a tap is announced (and answered) only after its batch
//! committed; one announcement per durable tap; nothing here blocks on a
//! subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Command, HerdApplied, OutboxEncoder, ReaderCtl, TapError, TapOutcome, TapReply};
use super::herd::Foreign;
use super::metrics::{Metrics, TapLabels};
use super::ring::TapRing;
use super::state::{CounterAnnouncer, Prepared, ResolvedIdentity, State};
use super::view::{Event, Snapshot, TapEvent};
use crate::domain::herd::{Feed, Heads, HerdEvent};
use crate::domain::{IdentityRecord, TagUid, Tap};
use crate::store::{OutboxItem, Record, Store, StoreError, Writer};
use crate::sys::clock::now_ms;

/// A tag tapped at another station is looked up here only if no answer
/// for it has come from the herd this long after its tap arrived.
const FOREIGN_LOOKUP_GRACE: Duration = Duration::from_secs(3);

/// Most commands taken into one batch.
pub(super) const MAX_BATCH: usize = 4096;

/// Records that follow taps (publications for the outbox, resolved
/// identities) wait at most this long for a tap commit to ride with.
const RIDERS_IDLE: Duration = Duration::from_millis(10);

/// Where the Station's results go.
pub(super) struct Outputs {
    /// Station → anyone: the latest state.
    pub state_tx: watch::Sender<Arc<Snapshot>>,
    /// Station → subscribers: each change.
    pub events: broadcast::Sender<Event>,
    /// The latest taps announced (sent under its lock).
    pub tap_ring: Arc<std::sync::Mutex<TapRing<TapEvent>>>,
    /// Station → reader supervisor: tasks to start or stop.
    pub reader_ctl: mpsc::UnboundedSender<ReaderCtl>,
    /// Station → identity: tags to resolve.
    pub lookups: mpsc::UnboundedSender<TagUid>,
    /// Station → herd links: the feeds held.
    pub heads: watch::Sender<Arc<Heads>>,
    /// Station → herd links: each commit's new events, in feed order (the
    /// live path; a link that lags reads the log instead). `None` without
    /// a herd.
    pub herd_live: Option<broadcast::Sender<Arc<[HerdEvent]>>>,
}

/// Records waiting to ride with the next tap commit.
#[derive(Default)]
pub(super) struct Riders {
    pub(super) outbox: Vec<OutboxItem>,
    /// The highest seq whose publication is in `outbox` (the mark).
    pub(super) outbox_through: u64,
    pub(super) identities: Vec<ResolvedIdentity>,
    /// Since when something waits.
    pub(super) since: Option<Instant>,
}

/// A reply owed once the current batch commits.
enum Waiter {
    /// The batch's tap at this index.
    New(usize, Option<TapReply>),
    /// A repeat of the batch's tap at this index.
    Repeat(usize, TapReply),
}

/// The taps of a batch being gathered, and who waits for them.
#[derive(Default)]
struct Batch {
    taps: Vec<Tap>,
    waiters: Vec<Waiter>,
    index: HashMap<(Arc<str>, TagUid), usize>,
    /// The feeds as they will be once this batch's foreign events are in.
    heads: Option<Heads>,
    /// Peers' events to store behind the local taps.
    foreign: Foreign,
    /// Who sent them, with what became of theirs.
    herd_waiters: Vec<(HerdReply, HerdApplied)>,
}

type HerdReply = oneshot::Sender<Result<HerdApplied, StoreError>>;

/// The Station task's own state.
pub(super) struct Station {
    pub(super) state: State,
    /// The log's write connection: commits run on this task's thread.
    pub(super) writer: Writer,
    /// Reads of the log (re-folds, timelines).
    pub(super) store: Store,
    pub(super) encoder: Option<Arc<dyn OutboxEncoder>>,
    pub(super) out: Outputs,
    pub(super) metrics: Arc<Metrics>,
    pub(super) riders: Riders,
    pub(super) counters: CounterAnnouncer,
    /// `taps_logged` at the last checkpoint; `None` when the stored
    /// checkpoint (if any) is behind the state.
    pub(super) checkpoint_taps: Option<u64>,
    /// A change not yet in the snapshot on the watch (reader reports).
    pub(super) view_stale: bool,
    /// Where the monotonic time the intake rules take starts.
    epoch: Instant,
    /// Foreign taps' tags to look up once their grace period is over.
    deferred_lookups: std::collections::VecDeque<(Instant, TagUid)>,
}

impl Station {
    pub(super) fn new(
        state: State,
        (writer, store): (Writer, Store),
        encoder: Option<Arc<dyn OutboxEncoder>>,
        out: Outputs,
        metrics: Arc<Metrics>,
        checkpoint_taps: Option<u64>,
    ) -> Self {
        Self {
            counters: CounterAnnouncer::new(state.counters(), Instant::now()),
            state,
            writer,
            store,
            encoder,
            out,
            metrics,
            riders: Riders::default(),
            checkpoint_taps,
            view_stale: false,
            epoch: Instant::now(),
            deferred_lookups: std::collections::VecDeque::new(),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Run until `shutdown`, then drain what was queued and flush the log.
    /// `backfill`: counted taps to enqueue for publishing first (a crash
    /// left them out of the outbox), with the mark to set.
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        backfill: Option<(Vec<Tap>, u64)>,
        refold: Vec<String>,
    ) {
        // Actions that arrived below checkpointed taps: fold those polls again.
        self.refold(refold).await;
        if let Some((taps, through)) = backfill {
            let items = self.encode(&taps, &vec![true; taps.len()]);
            self.enqueue(items, through).await;
        }
        if self.checkpoint_due() {
            // A long replay just happened: don't make the next start repeat it.
            self.checkpoint().await;
        }
        loop {
            let riders_due = self.riders.since.map(|t| t + RIDERS_IDLE);
            let counters_due = self.counters.due;
            let lookups_due = self.deferred_lookups.front().map(|(t, _)| *t);
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(c) => c,
                    None => break,
                },
                () = sleep_until(riders_due) => {
                    self.flush_riders().await;
                    if self.view_stale {
                        self.show();
                    }
                    self.counters_moved();
                    continue;
                }
                () = sleep_until(counters_due) => {
                    self.counters.due = None;
                    self.counters_moved();
                    continue;
                }
                () = sleep_until(lookups_due) => {
                    self.deferred_due();
                    continue;
                }
            };
            // Let the readers woken with this one hand in their taps too
            // (the commit runs on this thread: what they read during it
            // waits for the next batch).
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.handle_batch(batch).await;
            if self.checkpoint_due() {
                self.checkpoint().await;
            }
            self.counters_moved();
        }
        // Stop intake, then finish what was already accepted into the queue.
        rx.close();
        let mut rest = Vec::new();
        while let Some(c) = rx.recv().await {
            rest.push(c);
        }
        if !rest.is_empty() {
            tracing::info!(
                commands = rest.len(),
                "draining queued commands before exit"
            );
            self.handle_batch(rest).await;
        }
        self.flush_riders().await;
        if self.checkpoint_taps != Some(self.state.taps_logged) {
            self.checkpoint().await;
        }
        self.writer.close();
        tracing::info!(
            taps = self.state.taps_logged,
            "station stopped; log is flushed"
        );
    }

    async fn handle_batch(&mut self, commands: Vec<Command>) {
        let mut batch = Batch::default();
        let now = self.now();
        let wall = now_ms();
        for cmd in commands {
            match cmd {
                Command::Tap { reader, tag, reply } => {
                    let prepared =
                        self.state
                            .prepare_tap(&reader, tag, now, wall, &batch.taps, &batch.index);
                    match prepared {
                        Err(e) => {
                            tracing::info!(reader = %reader, error = %e, "tap refused");
                            if let Some(r) = reply {
                                let _ = r.send(Err(e));
                            }
                        }
                        Ok(Prepared::RepeatDurable(outcome)) => {
                            if let Some(r) = reply {
                                let _ = r.send(Ok(outcome));
                            }
                        }
                        Ok(Prepared::RepeatInBatch(i)) => {
                            if let Some(r) = reply {
                                batch.waiters.push(Waiter::Repeat(i, r));
                            }
                        }
                        Ok(Prepared::New(tap)) => {
                            let i = batch.taps.len();
                            batch.index.insert((tap.reader.clone(), tap.tag.clone()), i);
                            batch.waiters.push(Waiter::New(i, reply));
                            batch.taps.push(tap);
                        }
                    }
                }
                Command::Poll {
                    poll,
                    action,
                    reply,
                } => {
                    // Actions change what later taps mean: commit what came before first.
                    self.commit(std::mem::take(&mut batch)).await;
                    let result = self.apply_action(&poll, action).await;
                    let _ = reply.send(result);
                }
                Command::Reader(report) => {
                    if let Some(e) = self.state.reader_report(report) {
                        let _ = self.out.events.send(e);
                        self.view_stale = true;
                    }
                }
                Command::Network(n) => {
                    if n.state != self.state.network.state || n.detail != self.state.network.detail
                    {
                        self.state.network = n;
                        self.announce_status();
                    }
                }
                Command::Hotplug(h) => {
                    if h != self.state.hotplug {
                        self.state.hotplug = h;
                        self.announce_status();
                    }
                }
                Command::Ping(reply) => {
                    let _ = reply.send(());
                }
                Command::Xmpp { state, detail } => {
                    let x = &mut self.state.xmpp;
                    if state != x.state || detail != x.detail {
                        x.state = state;
                        x.detail = detail;
                        self.announce_status();
                    }
                }
                Command::Published(ids) => {
                    let n = ids.len() as u64;
                    match self.writer.append(&[Record::Published(ids)]) {
                        Ok(stats) => {
                            self.store_ok(stats);
                            let x = &mut self.state.xmpp;
                            x.outbox = x.outbox.saturating_sub(n);
                            x.published += n;
                            self.view_stale = true;
                        }
                        // Published again later: same item ids, no duplicates.
                        Err(e) => self.store_failed(&e),
                    }
                }
                Command::IdentityStatus { state, detail } => {
                    let i = &mut self.state.identity;
                    if state != i.state || detail != i.detail {
                        i.state = state;
                        i.detail = detail;
                        self.announce_status();
                    }
                }
                Command::Identity {
                    tag,
                    person,
                    source,
                } => {
                    if !self.state.wants_identity(&tag) {
                        // A changed people file names a tag never tapped here.
                        continue;
                    }
                    // Logged with the next tap commit (or alone when idle):
                    // an fsync of its own would hold up the taps behind it.
                    self.riders.identities.push(ResolvedIdentity {
                        tag,
                        person,
                        source,
                        at: wall,
                    });
                    self.riders.since.get_or_insert_with(Instant::now);
                }
                Command::Remote(r) => {
                    self.state.remote_heard(r);
                    self.announce_status();
                }
                Command::Reload { config, reply } => {
                    let (report, ctl, events) = self.state.reload(*config);
                    for c in ctl {
                        let _ = self.out.reader_ctl.send(c);
                    }
                    for e in events {
                        let _ = self.out.events.send(e);
                    }
                    tracing::info!(applied = ?report.applied, needs_restart = ?report.needs_restart, "config reloaded");
                    self.announce_status();
                    let _ = reply.send(report);
                }
                Command::BindReader { reader, reply } => {
                    let result = self.bind_reader(reader).await;
                    let _ = reply.send(result);
                }
                Command::Herd { events, reply } => {
                    let heads = batch.heads.get_or_insert_with(|| self.state.heads.clone());
                    let sorted = self.state.sort_foreign(heads, events);
                    batch.foreign.events.extend(sorted.events);
                    let (total, got) = (&mut batch.foreign.applied, sorted.applied);
                    total.stored += got.stored;
                    total.duplicates += got.duplicates;
                    total.gaps += got.gaps;
                    batch.herd_waiters.push((reply, got));
                }
                Command::HerdStatus(report) => {
                    if self.state.herd_report(report) {
                        self.announce_status();
                    } else {
                        // Counts and heads: with the next status, at most
                        // every COUNTERS_EVERY (a herd of a hundred peers
                        // reports many times a second).
                        self.counters.unannounced = true;
                    }
                }
            }
        }
        self.commit(batch).await;
        // Commits and actions show as they happen; only reader reports wait.
        if self.view_stale {
            self.show();
        }
    }

    /// Look up the foreign tags whose grace period is over and for which no
    /// answer came from the herd meanwhile.
    fn deferred_due(&mut self) {
        let now = Instant::now();
        while let Some((t, _)) = self.deferred_lookups.front() {
            if *t > now {
                break;
            }
            let (_, tag) = self.deferred_lookups.pop_front().expect("front exists");
            if !self.state.people.knows(&tag) && !self.state.people.pending.contains(&tag) {
                self.state.people.pending.insert(tag.clone());
                let _ = self.out.lookups.send(tag);
            }
        }
        self.view_stale = true;
    }

    /// Log what waits to ride with a tap commit, now (idle, checkpoint, stop).
    pub(super) async fn flush_riders(&mut self) {
        self.riders.since = None;
        if self.riders.outbox.is_empty() && self.riders.identities.is_empty() {
            return;
        }
        self.write(Batch::default()).await;
    }

    async fn commit(&mut self, batch: Batch) {
        if batch.taps.is_empty() && batch.waiters.is_empty() && batch.herd_waiters.is_empty() {
            return;
        }
        self.write(batch).await;
    }

    /// One transaction: the taps and the riders; then apply and announce.
    async fn write(&mut self, batch: Batch) {
        let Batch {
            taps,
            waiters,
            foreign,
            herd_waiters,
            ..
        } = batch;
        let mut records: Vec<Record> = taps.iter().cloned().map(Record::Tap).collect();
        // Peers' events go behind the local taps, in the same transaction.
        records.extend(foreign.records());
        // A tap is its own durable lookup request: after a crash, every
        // logged tag without an answer is looked up again (see `recover`).
        let wall = now_ms();
        let to_look_up = self.state.lookups_due(&taps, wall);
        // Earlier publications and identities ride with this commit (no
        // fsync of their own).
        let riding = std::mem::take(&mut self.riders.outbox);
        let riding_n = riding.len() as u64;
        if !riding.is_empty() {
            records.push(Record::Outbox {
                items: riding.clone(),
                through: self.riders.outbox_through,
            });
        }
        let identities = std::mem::take(&mut self.riders.identities);
        // This station's answers, numbered in its identity feed.
        let first = self.state.heads.get(&self.state.id, Feed::Identities) + 1;
        let numbered: Vec<IdentityRecord> = identities
            .iter()
            .zip(first..)
            .map(|(i, iseq)| IdentityRecord {
                origin: self.state.id.clone(),
                iseq,
                tag: i.tag.clone(),
                person: i.person.clone(),
                source: i.source.clone(),
                at: i.at,
            })
            .collect();
        records.extend(numbered.iter().cloned().map(Record::Identity));
        if let Err(e) = self.writer.append(&records).map(|s| self.store_ok(s)) {
            self.store_failed(&e);
            // Not written: try them again with the next commit.
            self.riders.outbox.splice(0..0, riding);
            self.riders.identities.splice(0..0, identities);
            for (reply, _) in herd_waiters {
                let _ = reply.send(Err(e.clone()));
            }
            for w in waiters {
                let reply = match w {
                    Waiter::New(_, r) => r,
                    Waiter::Repeat(_, r) => Some(r),
                };
                if let Some(r) = reply {
                    let _ = r.send(Err(TapError::Store(e.clone())));
                }
            }
            return;
        }
        if riding_n > 0 {
            self.state.xmpp.outbox += riding_n;
            self.view_stale = true;
        }
        self.riders.since = None;
        for tag in to_look_up {
            self.state.people.pending.insert(tag.clone());
            let _ = self.out.lookups.send(tag);
        }
        self.herd_live(|| {
            let own = taps.iter().cloned().map(HerdEvent::Tap);
            let ids = numbered.iter().cloned().map(HerdEvent::Identity);
            own.chain(foreign.events.iter().cloned())
                .chain(ids)
                .collect()
        });
        let mut applied = self.state.taps_committed(&taps, numbered, self.now());
        let refold = if foreign.events.is_empty() {
            Vec::new()
        } else {
            let (refold, unknown) = self.state.foreign_committed(foreign, &mut applied.events);
            let due = Instant::now() + FOREIGN_LOOKUP_GRACE;
            self.deferred_lookups
                .extend(unknown.into_iter().map(|t| (due, t)));
            refold
        };
        self.refold(refold).await;
        self.publish_heads();
        for (tap, c) in taps.iter().zip(&applied.counted) {
            self.metrics
                .taps
                .get_or_create(&TapLabels {
                    reader: tap.reader.clone(),
                    counted: *c,
                })
                .inc();
        }
        self.show();
        for w in waiters {
            let (i, reply, repeat) = match w {
                Waiter::New(i, r) => (i, r, false),
                Waiter::Repeat(i, r) => (i, Some(r), true),
            };
            if let Some(r) = reply {
                let _ = r.send(Ok(TapOutcome {
                    tap: taps[i].clone(),
                    counted: applied.counted[i],
                    repeat,
                }));
            }
        }
        for (reply, result) in herd_waiters {
            self.metrics.herd_received.inc_by(result.stored as u64);
            self.metrics
                .herd_duplicates
                .inc_by(result.duplicates as u64);
            let _ = reply.send(Ok(result));
        }
        // Taps go into the ring and out under its lock, so a stream that
        // reconnects sees each exactly once (`subscribe_after`).
        {
            let mut ring = self
                .out
                .tap_ring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in applied.events {
                // Resumed streams name this station's taps only.
                if let Event::Tap(t) = &e
                    && t.station == self.state.id
                {
                    ring.push(t.seq, t.clone());
                }
                let _ = self.out.events.send(e);
            }
        }
        let items = self.encode(&taps, &applied.counted);
        if let Some(last) = taps.iter().zip(&applied.counted).rev().find(|(_, c)| **c) {
            self.riders.outbox_through = last.0.seq;
        }
        if !items.is_empty() {
            self.riders.outbox.extend(items);
            self.riders.since.get_or_insert_with(Instant::now);
        }
    }
}

/// Sleep until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
