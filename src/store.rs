//! The durable log: SQLite in WAL mode with `synchronous=FULL`.
//!
//! The store owns its write connection on a thread of its own; the Station
//! reaches it through [`Store`], a cloneable handle over a bounded channel.
//! A call to [`Store::append`] writes a whole batch in one transaction and
//! answers only once it is committed (group commit: the Station batches what
//! arrived while the previous commit was running). Exports read through
//! their own connections, so they never hold up writes.
//!
//! It must not interpret the log: folding it into state is the Station's job.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Binding, Protocol, ReaderConfig};
use crate::poll::{TagUid, Tap, TapKey};

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_snapshots.sql"),
    include_str!("../migrations/0003_bound_readers.sql"),
    include_str!("../migrations/0004_outbox.sql"),
    include_str!("../migrations/0005_identities.sql"),
];

/// Why the log could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("the data directory is read-only: {0}")]
    ReadOnly(String),
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("the log is corrupt: {0}")]
    Corrupt(String),
    #[error("the store has stopped")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let text = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full(text),
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(text),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(text),
            Some(ErrorCode::CannotOpen) if text.contains("read") => StoreError::ReadOnly(text),
            _ => StoreError::Io(text),
        }
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Read a tap from a row of `SELECT station, seq, reader, tag, at, poll, answer`.
/// `name` and `tag` make the shared strings (interned or not).
fn read_tap(
    row: &rusqlite::Row<'_>,
    mut name: impl FnMut(&str) -> Arc<str>,
    mut tag: impl FnMut(&str) -> Arc<str>,
) -> Result<Tap, StoreError> {
    Ok(Tap {
        station: name(row.get_ref(0)?.as_str()?),
        seq: u64::try_from(row.get::<_, i64>(1)?)
            .map_err(|_| StoreError::Corrupt("negative sequence number".into()))?,
        reader: name(row.get_ref(2)?.as_str()?),
        tag: TagUid::from_canonical(tag(row.get_ref(3)?.as_str()?)),
        at: row.get(4)?,
        poll: name(row.get_ref(5)?.as_str()?),
        answer: name(row.get_ref(6)?.as_str()?),
    })
}

const SELECT_TAPS: &str = "SELECT station, seq, reader, tag, at, poll, answer FROM taps";

/// An operator action on a poll, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub at: i64,
    pub kind: ActionKind,
    pub poll: String,
    /// For resets: the key at and below which taps are forgotten.
    pub cutoff: Option<TapKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Open,
    Close,
    Reset,
    Activate,
}

impl ActionKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Open => "open",
            ActionKind::Close => "close",
            ActionKind::Reset => "reset",
            ActionKind::Activate => "activate",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => ActionKind::Open,
            "close" => ActionKind::Close,
            "reset" => ActionKind::Reset,
            "activate" => ActionKind::Activate,
            _ => return None,
        })
    }
}

/// A reader the operator bound at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundReader {
    pub id: String,
    pub device: String,
    pub protocol: Protocol,
    pub binding: Binding,
    pub at: i64,
}

impl BoundReader {
    #[must_use]
    pub fn from_config(r: &ReaderConfig, at: i64) -> Self {
        Self {
            id: r.id.clone(),
            device: r.device.display().to_string(),
            protocol: r.protocol,
            binding: r.binding.clone(),
            at,
        }
    }

    #[must_use]
    pub fn into_config(self) -> ReaderConfig {
        ReaderConfig::with_defaults(self.id, self.device.into(), self.protocol, self.binding)
    }
}

/// One item to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Row id (0 until written).
    pub id: i64,
    pub seq: u64,
    pub node: String,
    pub item_id: String,
    pub payload: String,
    pub at: i64,
}

/// One entry to append.
#[derive(Debug, Clone)]
pub enum Record {
    /// Items to publish; `through` becomes the enqueued-through mark.
    Outbox {
        items: Vec<OutboxItem>,
        through: u64,
    },
    /// Items the server acknowledged.
    Published(Vec<i64>),
    /// Replay only, before the taps: the outbox's enqueued-through mark.
    OutboxMark(Option<u64>),
    /// A tag resolved (person `None`: unknown); clears it from the queue.
    Identity {
        tag: TagUid,
        person: Option<crate::identity::Person>,
        source: String,
        at: i64,
    },
    Tap(Tap),
    Action(Action),
    /// A reader bound at runtime (replayed before the taps).
    Reader(BoundReader),
    /// The Station's tally state, covering every tap committed so far.
    Snapshot {
        data: Vec<u8>,
        at: i64,
        taps: u64,
    },
}

/// How one commit went, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    pub records: usize,
    pub duration: Duration,
}

enum Command {
    Append(
        Vec<Record>,
        oneshot::Sender<Result<CommitStats, StoreError>>,
    ),
    /// Checkpoint the WAL into the database and stop the thread.
    Close(oneshot::Sender<()>),
}

/// Handle to the store thread.
#[derive(Clone, Debug)]
pub struct Store {
    /// Station → store thread: batches to commit.
    tx: mpsc::Sender<Command>,
    path: PathBuf,
}

/// What the log held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub actions: usize,
    /// Whether a snapshot was used (only the taps after it were replayed).
    pub from_snapshot: bool,
    /// How many taps were read back from the log.
    pub replayed: usize,
    pub taps: usize,
    /// The next sequence number of this station: one above the highest logged.
    pub next_seq: u64,
    /// The newest tap time of this station, so its clock never runs backwards.
    pub last_at: i64,
    /// Items waiting in the outbox.
    pub outbox_depth: u64,
    /// The enqueued-through mark, if publishing ever ran.
    pub outbox_through: Option<u64>,
    /// Tags a log written before taps became their own lookup requests
    /// still has queued for an identity lookup (nothing writes these now;
    /// an answer for the tag deletes its row).
    pub legacy_lookups: Vec<TagUid>,
}

/// Makes repeated strings of the log share one allocation.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = s.into();
        self.0.insert(a.clone());
        a
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl Store {
    /// Open (creating and migrating if needed) the log at `path`, replay it,
    /// and start the store thread.
    ///
    /// Replay: the latest snapshot (if any) is offered to `restore`; then
    /// every action goes to `on_record` in order, then every tap in log
    /// order — only those after the snapshot if `restore` accepted it.
    pub fn open(
        path: &Path,
        station: &str,
        restore: impl FnOnce(&[u8]) -> bool,
        mut on_record: impl FnMut(Record),
    ) -> Result<(Store, Recovered), StoreError> {
        let conn = Connection::open(path)?;
        configure(&conn)?;
        migrate(&conn)?;

        let mut rec = Recovered {
            next_seq: 1,
            ..Recovered::default()
        };
        if let Some((seq, at)) = conn
            .query_row(
                "SELECT seq, at FROM taps WHERE station = ?1 ORDER BY seq DESC LIMIT 1",
                [station],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?
        {
            rec.next_seq = u64::try_from(seq).unwrap_or(0) + 1;
            rec.last_at = at;
        }
        rec.outbox_depth = conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))?;
        rec.outbox_through = conn
            .query_row(
                "SELECT enqueued_through FROM outbox_state WHERE id = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| Some(u64::try_from(n).unwrap_or(0)))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let snapshot: Option<(i64, i64, Vec<u8>)> = conn
            .query_row(
                "SELECT tap_rowid, tap_count, data FROM snapshots WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let mut after_rowid = 0i64;
        if let Some((rowid, count, data)) = snapshot {
            if restore(&data) {
                after_rowid = rowid;
                rec.taps = usize::try_from(count).unwrap_or(0);
                rec.from_snapshot = true;
            } else {
                tracing::info!(
                    "snapshot does not fit the configured polls; replaying the whole log"
                );
            }
        }
        {
            let mut stmt = conn.prepare(
                "SELECT at, kind, poll, cutoff_at, cutoff_station, cutoff_seq FROM actions ORDER BY id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let kind: String = row.get(1)?;
                let Some(kind) = ActionKind::parse(&kind) else {
                    return Err(StoreError::Corrupt(format!("unknown action kind {kind:?}")));
                };
                let cutoff = match (
                    row.get::<_, Option<i64>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<i64>>(5)?,
                ) {
                    (Some(at), Some(station), Some(seq)) => Some(TapKey {
                        at,
                        station: station.into(),
                        seq: u64::try_from(seq).unwrap_or(0),
                    }),
                    _ => None,
                };
                let action = Action {
                    at: row.get(0)?,
                    kind,
                    poll: row.get(2)?,
                    cutoff,
                };
                rec.actions += 1;
                on_record(Record::Action(action));
            }
        }
        {
            let mut stmt = conn.prepare(
                "SELECT id, device, protocol, poll, answer, slot, at FROM bound_readers ORDER BY at",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let protocol: String = row.get(2)?;
                let protocol = protocol
                    .parse()
                    .map_err(|e: String| StoreError::Corrupt(format!("bound reader: {e}")))?;
                let binding = match (
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ) {
                    (Some(poll), Some(answer), None) => Binding::Fixed { poll, answer },
                    (None, None, Some(slot)) if slot.chars().count() == 1 => Binding::Slot {
                        slot: slot.chars().next().unwrap_or('A'),
                    },
                    _ => {
                        return Err(StoreError::Corrupt(
                            "bound reader without a valid binding".into(),
                        ));
                    }
                };
                on_record(Record::Reader(BoundReader {
                    id: row.get(0)?,
                    device: row.get(1)?,
                    protocol,
                    binding,
                    at: row.get(6)?,
                }));
            }
        }
        {
            let mut stmt = conn.prepare(
                "SELECT tag, person_id, name, first, source, fetched_at FROM identities",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let tag: String = row.get(0)?;
                let Ok(tag) = TagUid::parse(&tag) else {
                    continue;
                };
                let person = row
                    .get::<_, Option<String>>(1)?
                    .map(|id| crate::identity::Person {
                        id,
                        name: row
                            .get::<_, Option<String>>(2)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        first: row
                            .get::<_, Option<String>>(3)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                    });
                on_record(Record::Identity {
                    tag,
                    person,
                    source: row.get(4)?,
                    at: row.get(5)?,
                });
            }
            let mut stmt = conn.prepare("SELECT tag FROM identity_queue ORDER BY at")?;
            let tags: Vec<TagUid> = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .filter_map(|t| t.ok().and_then(|t| TagUid::parse(&t).ok()))
                .collect();
            rec.legacy_lookups = tags;
        }
        on_record(Record::OutboxMark(rec.outbox_through));
        {
            let mut names = Interner::default();
            let mut tags = Interner::default();
            let mut stmt =
                conn.prepare(&format!("{SELECT_TAPS} WHERE rowid > ?1 ORDER BY rowid"))?;
            let mut rows = stmt.query([after_rowid])?;
            while let Some(row) = rows.next()? {
                let tap = read_tap(row, |s| names.get(s), |s| tags.get(s))?;
                rec.taps += 1;
                rec.replayed += 1;
                on_record(Record::Tap(tap));
            }
        }

        let (tx, rx) = mpsc::channel(64);
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| StoreError::Io(format!("cannot start the store thread: {e}")))?;
        Ok((
            Store {
                tx,
                path: path.to_path_buf(),
            },
            rec,
        ))
    }

    /// Write `records` in one transaction; answers after the commit.
    pub async fn append(&self, records: Vec<Record>) -> Result<CommitStats, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(records, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The oldest items still to publish with a row id above `after`.
    pub async fn outbox_peek(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, seq, node, item_id, payload, at FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(OutboxItem {
                        id: r.get(0)?,
                        seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        node: r.get(2)?,
                        item_id: r.get(3)?,
                        payload: r.get(4)?,
                        at: r.get(5)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .map_err(|e| StoreError::Io(format!("outbox read failed: {e}")))?
    }

    /// Checkpoint and stop the store thread; answers once the thread is done
    /// with the file. Later appends fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Close(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Path of the database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stream taps in log order (the order they were written), starting after
    /// the tap `after` if given. Runs on a blocking thread with its own
    /// read-only connection and hands rows over a small channel, so a million
    /// taps are never held in memory at once.
    #[must_use]
    pub fn export(&self, after: Option<(String, u64)>) -> mpsc::Receiver<Result<Tap, StoreError>> {
        let (tx, rx) = mpsc::channel(256);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = export_rows(&path, after, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }

    /// The last `n` taps, oldest first (read on a blocking thread).
    pub async fn tail(&self, n: usize) -> Result<Vec<Tap>, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            let mut stmt = conn.prepare(&format!("{SELECT_TAPS} ORDER BY rowid DESC LIMIT ?1"))?;
            let mut rows = stmt.query([i64::try_from(n).unwrap_or(i64::MAX)])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(read_tap(row, |s| Arc::from(s), |s| Arc::from(s))?);
            }
            out.reverse();
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Io(format!("tail task failed: {e}")))?
    }

    /// Size of the log in bytes (database plus WAL).
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        let wal = self.path.with_extension("db-wal");
        [self.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn export_rows(
    path: &Path,
    after: Option<(String, u64)>,
    tx: &mpsc::Sender<Result<Tap, StoreError>>,
) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let start: i64 = match after {
        None => 0,
        Some((station, seq)) => conn
            .query_row(
                "SELECT rowid FROM taps WHERE station = ?1 AND seq = ?2",
                params![station, i64::try_from(seq).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => {
                    StoreError::Io(format!("no tap {station}:{seq} in the log"))
                }
                e => e.into(),
            })?,
    };
    let mut stmt = conn.prepare(&format!("{SELECT_TAPS} WHERE rowid > ?1 ORDER BY rowid"))?;
    let mut rows = stmt.query([start])?;
    while let Some(row) = rows.next()? {
        let tap = read_tap(row, |s| Arc::from(s), |s| Arc::from(s))?;
        if tx.blocking_send(Ok(tap)).is_err() {
            break; // the client went away
        }
    }
    Ok(())
}

/// Whether a tap `(station, seq)` exists; for checking an export cursor.
pub fn tap_exists(path: &Path, station: &str, seq: u64) -> Result<bool, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM taps WHERE station = ?1 AND seq = ?2",
        params![station, i64::try_from(seq).unwrap_or(i64::MAX)],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the log has schema version {version}, newer than this program knows ({}); refusing to touch it",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

fn write_batch(conn: &mut Connection, records: &[Record]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut tap_stmt = tx.prepare_cached(
            "INSERT INTO taps (station, seq, reader, tag, at, poll, answer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut snapshot_stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO snapshots (id, tap_rowid, tap_count, at, data) \
             SELECT 1, coalesce(max(rowid), 0), ?1, ?2, ?3 FROM taps",
        )?;
        let mut action_stmt = tx.prepare_cached(
            "INSERT INTO actions (at, kind, poll, cutoff_at, cutoff_station, cutoff_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut outbox_stmt = tx.prepare_cached(
            "INSERT INTO outbox (seq, node, item_id, payload, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut mark_stmt = tx.prepare_cached(
            "INSERT INTO outbox_state (id, enqueued_through) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET enqueued_through = max(enqueued_through, excluded.enqueued_through)",
        )?;
        let mut done_stmt = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
        let mut identity_stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO identities (tag, person_id, name, first, source, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut dequeue_stmt = tx.prepare_cached("DELETE FROM identity_queue WHERE tag = ?1")?;
        let mut reader_stmt = tx.prepare_cached(
            "INSERT INTO bound_readers (id, device, protocol, poll, answer, slot, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for r in records {
            match r {
                Record::OutboxMark(_) => {}
                Record::Identity {
                    tag,
                    person,
                    source,
                    at,
                } => {
                    identity_stmt.execute(params![
                        tag.as_str(),
                        person.as_ref().map(|p| p.id.as_str()),
                        person.as_ref().map(|p| p.name.as_str()),
                        person.as_ref().map(|p| p.first.as_str()),
                        source,
                        at
                    ])?;
                    dequeue_stmt.execute([tag.as_str()])?;
                }
                Record::Outbox { items, through } => {
                    for i in items {
                        outbox_stmt.execute(params![
                            i64::try_from(i.seq).unwrap_or(i64::MAX),
                            i.node,
                            i.item_id,
                            i.payload,
                            i.at
                        ])?;
                    }
                    mark_stmt.execute([i64::try_from(*through).unwrap_or(i64::MAX)])?;
                }
                Record::Published(ids) => {
                    for id in ids {
                        done_stmt.execute([id])?;
                    }
                }
                Record::Reader(b) => {
                    let (poll, answer, slot) = match &b.binding {
                        Binding::Fixed { poll, answer } => {
                            (Some(poll.as_str()), Some(answer.as_str()), None)
                        }
                        Binding::Slot { slot } => (None, None, Some(slot.to_string())),
                    };
                    reader_stmt.execute(params![
                        b.id,
                        b.device,
                        b.protocol.to_string(),
                        poll,
                        answer,
                        slot,
                        b.at
                    ])?;
                }
                Record::Tap(t) => {
                    tap_stmt.execute(params![
                        &*t.station,
                        i64::try_from(t.seq).unwrap_or(i64::MAX),
                        &*t.reader,
                        t.tag.as_str(),
                        t.at,
                        &*t.poll,
                        &*t.answer
                    ])?;
                }
                Record::Snapshot { data, at, taps } => {
                    snapshot_stmt.execute(params![
                        i64::try_from(*taps).unwrap_or(i64::MAX),
                        at,
                        data
                    ])?;
                }
                Record::Action(a) => {
                    action_stmt.execute(params![
                        a.at,
                        a.kind.as_str(),
                        a.poll,
                        a.cutoff.as_ref().map(|c| c.at),
                        a.cutoff.as_ref().map(|c| c.station.to_string()),
                        a.cutoff
                            .as_ref()
                            .map(|c| i64::try_from(c.seq).unwrap_or(i64::MAX)),
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// The store thread: one transaction per batch, replies after the commit.
fn writer(mut conn: Connection, mut rx: mpsc::Receiver<Command>) {
    // A tap's answer waits for this thread's commit (src/priority.rs).
    let _ = crate::priority::raise_intake_thread();
    let mut closed = None;
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Command::Append(records, reply) => {
                let started = Instant::now();
                let result = write_batch(&mut conn, &records).map(|()| CommitStats {
                    records: records.len(),
                    duration: started.elapsed(),
                });
                if let Err(e) = &result {
                    tracing::error!(error = %e, records = records.len(), "store: commit failed; nothing of this batch is acknowledged");
                }
                let _ = reply.send(result);
            }
            Command::Close(reply) => {
                closed = Some(reply);
                break;
            }
        }
    }
    // All handles are gone: checkpoint so the WAL does not have to be replayed.
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %e, "store: final checkpoint failed (harmless: the WAL is replayed at next start)");
    }
    drop(conn);
    if let Some(reply) = closed {
        let _ = reply.send(());
    }
}

/// The header of the CSV export.
pub const CSV_HEADER: &str = "station,seq,reader,tag,at,at_iso,poll,answer\n";

/// One tap as a line of the CSV export.
#[must_use]
pub fn csv_line(t: &Tap) -> String {
    let iso = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.at) * 1_000_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    // Ids are restricted to [A-Za-z0-9._-] and tags to urn:rfid:HEX: no quoting needed.
    format!(
        "{},{},{},{},{},{},{},{}\n",
        t.station, t.seq, t.reader, t.tag, t.at, iso, t.poll, t.answer
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(seq: u64) -> Tap {
        Tap {
            station: "s".into(),
            seq,
            reader: "r".into(),
            tag: TagUid::parse("01020304").unwrap(),
            at: 1000 + i64::try_from(seq).unwrap(),
            poll: "p".into(),
            answer: "a".into(),
        }
    }

    #[tokio::test]
    async fn appends_survive_reopen_and_seq_continues() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        let (store, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        assert_eq!(rec.next_seq, 1);
        store
            .append((1..=3).map(|s| Record::Tap(tap(s))).collect())
            .await
            .unwrap();
        store
            .append(vec![Record::Action(Action {
                at: 5,
                kind: ActionKind::Reset,
                poll: "p".into(),
                cutoff: Some(tap(2).key()),
            })])
            .await
            .unwrap();
        drop(store);
        let mut seen = Vec::new();
        let mut actions = Vec::new();
        let (_store, rec) = Store::open(
            &db,
            "s",
            |_| false,
            |r| match r {
                Record::Tap(t) => seen.push(t),
                Record::Action(a) => actions.push(a),
                Record::Snapshot { .. }
                | Record::Reader(_)
                | Record::Outbox { .. }
                | Record::Published(_)
                | Record::OutboxMark(_)
                | Record::Identity { .. } => {}
            },
        )
        .unwrap();
        assert_eq!(rec.next_seq, 4);
        assert_eq!(rec.last_at, 1003);
        assert_eq!(seen, vec![tap(1), tap(2), tap(3)]);
        assert_eq!(actions[0].cutoff, Some(tap(2).key()));
    }

    #[tokio::test]
    async fn a_duplicate_tap_fails_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("log.db"), "s", |_| false, |_| {}).unwrap();
        store.append(vec![Record::Tap(tap(1))]).await.unwrap();
        let err = store
            .append(vec![Record::Tap(tap(2)), Record::Tap(tap(1))])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        let mut rx = store.export(None);
        let mut n = 0;
        while let Some(t) = rx.recv().await {
            t.unwrap();
            n += 1;
        }
        assert_eq!(n, 1, "the failed batch left nothing behind");
    }

    /// Logs from before taps became their own lookup requests kept a queue
    /// of tags to look up. Those rows are still read, and an answer for a
    /// tag deletes its row.
    #[tokio::test]
    async fn an_old_logs_lookup_queue_is_read_until_answered() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        let (store, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        assert!(rec.legacy_lookups.is_empty());
        drop(store);
        // As the old code wrote them.
        let conn = Connection::open(&db).unwrap();
        for (tag, at) in [("urn:rfid:0A0B0C0D", 7), ("urn:rfid:01020304", 5)] {
            conn.execute(
                "INSERT INTO identity_queue (tag, at) VALUES (?1, ?2)",
                params![tag, at],
            )
            .unwrap();
        }
        drop(conn);
        let (store, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        let tags: Vec<&str> = rec.legacy_lookups.iter().map(TagUid::as_str).collect();
        assert_eq!(
            tags,
            ["urn:rfid:01020304", "urn:rfid:0A0B0C0D"],
            "oldest first"
        );
        store
            .append(vec![Record::Identity {
                tag: TagUid::parse("01020304").unwrap(),
                person: None,
                source: "test".into(),
                at: 9,
            }])
            .await
            .unwrap();
        drop(store);
        let (_store, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        let tags: Vec<&str> = rec.legacy_lookups.iter().map(TagUid::as_str).collect();
        assert_eq!(tags, ["urn:rfid:0A0B0C0D"]);
    }

    #[tokio::test]
    async fn export_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("log.db"), "s", |_| false, |_| {}).unwrap();
        store
            .append((1..=5).map(|s| Record::Tap(tap(s))).collect())
            .await
            .unwrap();
        let mut rx = store.export(Some(("s".into(), 3)));
        let mut seqs = Vec::new();
        while let Some(t) = rx.recv().await {
            seqs.push(t.unwrap().seq);
        }
        assert_eq!(seqs, vec![4, 5]);
    }
}
