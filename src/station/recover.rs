//! Start-up: make sure the data directory is ours, open the log, fold it
//! back into the [`State`] (checkpoint first, then the taps after it),
//! merge the readers bound at runtime with the config's, re-find the
//! lookups a crash left pending, repair the outbox, and start the Station.
//!
//! Invariants: the state after a start equals the state before the stop
//! (or the crash): replay is the same fold as the live path; nothing is
//! started until the whole log is read.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::api::{OutboxEncoder, ReaderCtl, StationHandle};
use super::commit::{MAX_BATCH, Station};
use super::metrics::Metrics;
use super::ring::TapRing;
use super::state::{HerdState, Readers, SavedState, State, hotplug_not_started, unknown_network};
use super::view::{IdentityState, IdentityView, StartupReplay, StoreHealth, XmppState, XmppView};
use crate::config::Config;
use crate::domain::herd::Feed;
use crate::domain::intake::{Debounce, TapClock};
use crate::domain::tally::{Applied, Effect, Gate, Tallies};
use crate::domain::{ActivePoll, TagUid, Tap};
use crate::store::{BoundReader, Record, Store, StoreError};
use crate::sys::clock::now_ms;
use crate::sys::fs::DataDirError;

/// Why the Station could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot open the log: {0}")]
    Store(#[from] StoreError),
}

/// A started Station.
pub struct Started {
    pub handle: StationHandle,
    /// The Station task; it ends after shutdown, once the log is flushed.
    pub task: tokio::task::JoinHandle<()>,
    /// Reader tasks to start or stop beyond the config's readers: those
    /// bound at runtime (the logged ones arrive at once), and reloads.
    pub reader_ctl: mpsc::UnboundedReceiver<ReaderCtl>,
    /// Tags to resolve (identity); the queued ones arrive at once.
    pub lookups: mpsc::UnboundedReceiver<TagUid>,
}

/// What replaying the log gathers beside the tallies.
#[derive(Default)]
struct Replayed {
    active: ActivePoll,
    /// Polls whose actions arrived below checkpointed taps: re-folded
    /// from the log before the Station takes its first command.
    refold: Vec<String>,
    bound: Vec<BoundReader>,
    outbox_mark: Option<u64>,
    /// Counted own taps above the outbox mark: committed, not enqueued
    /// (a crash in between).
    unenqueued: Vec<Tap>,
    people: super::people::People,
}

/// Open the store, rebuild the state from the log, and start the Station.
/// `encoder` makes the XMPP items of counted votes (`None`: no publishing).
pub fn start(
    config: &Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    encoder: Option<Arc<dyn OutboxEncoder>>,
) -> Result<Started, StartError> {
    crate::sys::fs::prepare_data_dir(&config.station.data_dir)?;
    let db = config.station.data_dir.join("pollstation.db");
    let started = std::time::Instant::now();
    let resolving = config.identity.is_some();
    let publishing = encoder.is_some();
    let tallies = RefCell::new(Tallies::new(&config.polls));
    // Tags whose lookup is pending: from the checkpoint, the replayed taps,
    // and logs written before taps were the queue.
    let queued: RefCell<HashSet<TagUid>> = RefCell::default();
    let mut r = Replayed {
        active: ActivePoll::configured(config.station.active_poll.clone().or_else(|| {
            config
                .polls
                .iter()
                .find(|p| p.open)
                .or(config.polls.first())
                .map(|p| p.id.clone())
        })),
        ..Replayed::default()
    };
    let restore = |data: &[u8]| match serde_json::from_slice::<SavedState>(data) {
        Ok(saved) => match Tallies::from_state(&config.polls, saved.tallies) {
            Some(t) => {
                *tallies.borrow_mut() = t;
                queued.borrow_mut().extend(saved.pending_lookups);
                true
            }
            None => false,
        },
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint unreadable; replaying the whole log");
            false
        }
    };
    let (store, writer, rec) = Store::open(
        &db,
        &config.station.id,
        restore,
        |record| match record {
            Record::Action(a) => {
                let Some(gate) = Gate::of(a.kind) else {
                    r.active.activate(&a.poll, &a.key, &config.polls);
                    return;
                };
                if tallies.borrow_mut().act(&a.poll, &gate, a.key) == Effect::Refold {
                    r.refold.push(a.poll);
                }
            }
            Record::Tap(tap) => {
                if resolving {
                    queued.borrow_mut().insert(tap.tag.clone());
                }
                let applied = tallies.borrow_mut().apply(&tap);
                if applied == Applied::Unknown {
                    tracing::warn!(station = %tap.station, seq = tap.seq, poll = %tap.poll, answer = %tap.answer,
                    "logged tap names a poll or answer no longer in the config; kept in the log, not counted");
                }
                if publishing
                    && applied.counted()
                    && *tap.station == *config.station.id
                    && r.outbox_mark.is_some_and(|m| tap.seq > m)
                {
                    r.unenqueued.push(tap);
                }
            }
            Record::OutboxMark(m) => r.outbox_mark = m,
            Record::KnownIdentity {
                tag,
                person,
                origin,
                at,
            } => {
                // The engine is order-independent: identities may come first.
                tallies
                    .borrow_mut()
                    .assign(&tag, person.as_ref().map(|p| Arc::from(p.id.as_str())));
                r.people.insert(tag, person, at, origin);
            }
            Record::Reader(b) => r.bound.push(b),
            Record::Checkpoint { .. }
            | Record::Outbox { .. }
            | Record::Published(_)
            | Record::ForeignTap(_)
            | Record::Identity(_) => {}
        },
    )?;
    let tallies = tallies.into_inner();
    let mut queued = queued.into_inner();
    queued.extend(rec.legacy_lookups.iter().cloned());
    if resolving {
        // Every tag a poll counts by person and nobody has answered for yet
        // (also those tapped before identity was configured).
        queued.extend(tallies.tags().into_iter().cloned());
    }
    queued.retain(|t| !r.people.knows(t));
    let startup = StartupReplay {
        from_checkpoint: rec.from_checkpoint,
        replayed_taps: rec.replayed,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    tracing::info!(
        taps = rec.taps,
        replayed = rec.replayed,
        actions = rec.actions,
        from_checkpoint = rec.from_checkpoint,
        next_seq = rec.next_seq,
        elapsed_ms = started.elapsed().as_millis(),
        db = %db.display(),
        "log replayed"
    );

    let (reader_ctl_tx, reader_ctl) = mpsc::unbounded_channel();
    let (lookups_tx, lookups) = mpsc::unbounded_channel();
    let mut readers = Readers::default();
    for cfg in &config.readers {
        readers.add(cfg.clone());
    }
    for b in std::mem::take(&mut r.bound) {
        let cfg = b.into_config();
        let device = cfg.device.display().to_string();
        if let Some(c) = readers.get(&cfg.id).or_else(|| readers.on_device(&device)) {
            tracing::info!(reader = %cfg.id, configured = %c.id, "a reader bound at runtime is now in the config; the config wins");
            continue;
        }
        if let Err(e) = cfg.binding.check(&config.polls) {
            tracing::warn!(reader = %cfg.id, error = %e, "a reader bound at runtime no longer fits the polls; not started");
            continue;
        }
        readers.add(cfg.clone());
        let _ = reader_ctl_tx.send(ReaderCtl::Start(cfg));
    }
    r.people.pending = queued;
    let wall = now_ms();
    let state = State {
        id: config.station.id.as_str().into(),
        config: config.clone(),
        polls: config.polls.clone(),
        active: r.active,
        tallies,
        readers,
        recent: Debounce::new(config.station.debounce),
        clock: TapClock {
            next_seq: rec.next_seq,
            last_at: rec.last_at,
        },
        heads: rec.heads.clone(),
        newest_foreign: rec.newest_foreign_at,
        max_skew_ms: config
            .herd
            .as_ref()
            .map_or(1000, |h| i64::try_from(h.max_skew.as_millis()).unwrap_or(i64::MAX)),
        herd: config.herd.as_ref().map(|h| {
            let own = &config.station.id;
            let nothing_of_ours = Feed::ALL.iter().all(|f| rec.heads.get(own, *f) == 0);
            let restoring = nothing_of_ours && !h.peers.is_empty();
            if restoring {
                tracing::info!("herd: this station holds nothing of its own yet; it asks its peers first (taps wait)");
            }
            HerdState::new(h.id.clone(), config.polls_hash(), restoring)
        }),
        taps_logged: rec.taps as u64,
        people: r.people,
        store_health: StoreHealth {
            writable: true,
            error: None,
            taps: rec.taps as u64,
            last_commit_ms: None,
            startup,
        },
        network: unknown_network(wall),
        hotplug: hotplug_not_started(),
        xmpp: XmppView {
            state: if publishing {
                XmppState::Connecting
            } else {
                XmppState::Disabled
            },
            detail: String::new(),
            outbox: rec.outbox_depth,
            published: 0,
        },
        remote: Vec::new(),
        identity: IdentityView {
            state: if resolving {
                IdentityState::Starting
            } else {
                IdentityState::NotConfigured
            },
            detail: String::new(),
            pending: 0,
            known: 0,
        },
        started_at: wall,
    };
    let pending: Vec<TagUid> = state.people.pending.iter().cloned().collect();
    for tag in pending {
        let _ = lookups_tx.send(tag);
    }
    // The outbox to repair: publishing starting now (the log so far is not
    // backfilled), or counted taps a crash left out of it.
    let backfill = match (publishing, r.outbox_mark) {
        (false, _) => None,
        (true, None) => Some((Vec::new(), rec.next_seq.saturating_sub(1))),
        (true, Some(_)) if r.unenqueued.is_empty() => None,
        (true, Some(_)) => {
            tracing::info!(
                taps = r.unenqueued.len(),
                "enqueueing counted taps that were logged but not yet enqueued for XMPP"
            );
            let through = r.unenqueued.last().map_or(0, |t| t.seq);
            Some((r.unenqueued, through))
        }
    };

    let (events, _) = broadcast::channel(4096);
    let snapshot = Arc::new(state.snapshot());
    let (state_tx, state_rx) = watch::channel(snapshot);
    let (heads_tx, heads_rx) = watch::channel(Arc::new(state.heads.clone()));
    let herd_live = config.herd.as_ref().map(|_| broadcast::channel(1024).0);
    let tap_ring = Arc::new(std::sync::Mutex::new(TapRing::new(
        rec.next_seq.saturating_sub(1),
    )));
    let checkpoint_taps = (rec.from_checkpoint && rec.replayed == 0).then_some(rec.taps as u64);
    let station = Station::new(
        state,
        (writer, store.clone()),
        encoder,
        super::commit::Outputs {
            state_tx,
            events: events.clone(),
            tap_ring: tap_ring.clone(),
            reader_ctl: reader_ctl_tx,
            lookups: lookups_tx,
            heads: heads_tx,
            herd_live: herd_live.clone(),
        },
        metrics.clone(),
        checkpoint_taps,
    );
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    let handle = StationHandle {
        tx,
        state: state_rx,
        events,
        tap_ring,
        store,
        metrics,
        heads: heads_rx,
        herd_live,
    };
    let task = tokio::spawn(station.run(rx, shutdown, backfill, r.refold));
    Ok(Started {
        handle,
        task,
        reader_ctl,
        lookups,
    })
}
