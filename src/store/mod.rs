//! The durable log: SQLite in WAL mode with `synchronous=FULL`.
//!
//! [`Store::open`] replays the log ([`replay`]) and gives back two things:
//! the one [`Writer`], owned by the Station, whose [`Writer::append`]
//! writes a whole batch in one transaction and returns only once it is
//! committed (group commit: the Station batches what arrived while the
//! previous commit ran); and [`Store`], a cloneable handle for reads —
//! exports, the herd's feeds, timelines — on read-only connections of
//! their own ([`export`], [`feeds`], [`read`]), so they never hold up
//! writes. WAL checkpoints run on a thread of their own
//! ([`write::checkpoint_beside`]). The schema and its migrations live in
//! `migrations/` ([`schema`]).
//!
//! Deliberately not a store thread: the Station commits on its own thread
//! (the intake's one worker) and blocks it for the commit. Taps arriving
//! meanwhile wait in the kernel's serial buffers instead of the Station's
//! channel — the next batch either way — and the two thread hand-offs per
//! commit were a quarter of the station's CPU (see [`Writer`]).
//!
//! Invariants: nothing is acknowledged that was not committed; the store
//! does not interpret the log (folding it into state is the Station's job);
//! rusqlite is used nowhere else in the crate.

mod export;
mod feeds;
mod read;
mod replay;
mod schema;
mod timeline;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::ErrorCode;

use crate::config::{Protocol, ReaderConfig};
use crate::domain::herd::Heads;
use crate::domain::{Action, Binding, IdentityRecord, Person, TagUid, Tap};

pub use export::{CSV_HEADER, ExportFormat, export_line};
pub use timeline::TimelineInputs;
pub use write::Writer;

/// What lies under a [`StoreError`]: SQLite's error, an I/O error, or a
/// task that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Sqlite(Arc<rusqlite::Error>),
    #[error(transparent)]
    Io(Arc<std::io::Error>),
    #[error("{0}")]
    Task(String),
}

/// Why the log could not be written or read. The text is for operators
/// (logs, `/healthz`, `ctl status`); HTTP clients get only the kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the disk is full: {0}")]
    Full(Cause),
    #[error("the data directory is read-only: {0}")]
    ReadOnly(Cause),
    #[error("storage I/O error: {0}")]
    Io(Cause),
    #[error("the log is corrupt: {0}")]
    Corrupt(String),
    /// The log already holds a tap with this key.
    #[error("tap {station}:{seq} is in the log already")]
    Duplicate { station: String, seq: u64 },
    /// An export cursor that names no tap.
    #[error("no tap {station}:{seq} in the log")]
    NoSuchTap { station: String, seq: u64 },
    #[error("the store has stopped")]
    Closed,
}

impl PartialEq for StoreError {
    /// Errors compare by kind and text (their causes are not comparable).
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let code = e.sqlite_error_code();
        let read_only = code == Some(ErrorCode::CannotOpen) && e.to_string().contains("read");
        let cause = Cause::Sqlite(Arc::new(e));
        match code {
            Some(ErrorCode::DiskFull) => StoreError::Full(cause),
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(cause),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(cause.to_string())
            }
            _ if read_only => StoreError::ReadOnly(cause),
            _ => StoreError::Io(cause),
        }
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Io(Cause::Task(format!("a store read failed: {e}")))
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
    /// An identity answer, this station's or another's: logged in its
    /// origin's feed (a copy already held is skipped), and made the tag's
    /// answer if it wins (the last looked up; ties by origin).
    Identity(IdentityRecord),
    /// Replay only: the answer that won for a tag.
    KnownIdentity {
        tag: TagUid,
        person: Option<Person>,
        origin: std::sync::Arc<str>,
        at: i64,
    },
    /// A tap this station read (its key must be new).
    Tap(Tap),
    /// A tap another station read (a copy already held is skipped).
    ForeignTap(Tap),
    /// An operator action, this station's or another's (a copy already
    /// held is skipped).
    Action(Action),
    /// A reader bound at runtime (replayed before the taps).
    Reader(BoundReader),
    /// A checkpoint of the Station's tally state, covering every tap
    /// committed so far (the `snapshots` table).
    Checkpoint { data: Vec<u8>, at: i64, taps: u64 },
}

/// How one commit went, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    pub records: usize,
    pub duration: Duration,
}

/// Reads of the log (exports, the herd's feeds, timelines), cloneable;
/// the one [`Writer`] appends.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    /// Connections for the reads beside the writer.
    readers: Arc<read::Readers>,
}

/// What the log held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub actions: usize,
    /// Whether a checkpoint was used (only the taps after it were replayed).
    pub from_checkpoint: bool,
    /// How many taps were read back from the log.
    pub replayed: usize,
    pub taps: usize,
    /// The next sequence number of this station: one above the highest logged.
    pub next_seq: u64,
    /// The newest tap time of this station, so its clock never runs backwards.
    pub last_at: i64,
    /// Every feed held (this station's and the herd's), with its head.
    pub heads: Heads,
    /// The newest tap time of any other station.
    pub newest_foreign_at: Option<i64>,
    /// Items waiting in the outbox.
    pub outbox_depth: u64,
    /// The enqueued-through mark, if publishing ever ran.
    pub outbox_through: Option<u64>,
    /// Tags a log written before taps became their own lookup requests
    /// still has queued for an identity lookup (nothing writes these now;
    /// an answer for the tag deletes its row).
    pub legacy_lookups: Vec<TagUid>,
}

impl Store {
    /// Path of the database file.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.path
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

/// The columns [`read_tap`] reads, in its order.
const SELECT_TAPS: &str = "SELECT station, seq, reader, tag, at, poll, answer FROM taps";

/// Read a tap from a row of [`SELECT_TAPS`]. `name` and `tag` make the
/// shared strings (interned or not).
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

/// An `i64` column value of a `u64` (sequence numbers, counts).
fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActionKind;
    use rusqlite::{Connection, params};

    pub(super) fn tap(seq: u64) -> Tap {
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
        let (store, mut writer, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        assert_eq!(rec.next_seq, 1);
        writer
            .append(&(1..=3).map(|s| Record::Tap(tap(s))).collect::<Vec<_>>())
            .unwrap();
        writer
            .append(&[Record::Action(Action {
                origin: "s".into(),
                oseq: 1,
                at: 5,
                kind: ActionKind::Reset,
                poll: "p".into(),
                key: tap(2).key(),
            })])
            .unwrap();
        drop((store, writer));
        let mut seen = Vec::new();
        let mut actions = Vec::new();
        let (_store, _writer, rec) = Store::open(
            &db,
            "s",
            |_| false,
            |r| match r {
                Record::Tap(t) => seen.push(t),
                Record::Action(a) => actions.push(a),
                Record::Checkpoint { .. }
                | Record::Reader(_)
                | Record::Outbox { .. }
                | Record::Published(_)
                | Record::OutboxMark(_)
                | Record::ForeignTap(_)
                | Record::Identity(_)
                | Record::KnownIdentity { .. } => {}
            },
        )
        .unwrap();
        assert_eq!(rec.next_seq, 4);
        assert_eq!(rec.last_at, 1003);
        assert_eq!(seen, vec![tap(1), tap(2), tap(3)]);
        assert_eq!(actions[0].key, tap(2).key());
        assert_eq!(rec.heads.get("s", crate::domain::herd::Feed::Actions), 1);
    }

    #[tokio::test]
    async fn a_duplicate_tap_fails_the_whole_batch_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, _) =
            Store::open(&dir.path().join("log.db"), "s", |_| false, |_| {}).unwrap();
        writer.append(&[Record::Tap(tap(1))]).unwrap();
        let err = writer
            .append(&[Record::Tap(tap(2)), Record::Tap(tap(1))])
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Duplicate {
                station: "s".into(),
                seq: 1
            },
            "a duplicate is named as one"
        );
        let mut rx = store.export(None);
        let mut n = 0;
        while let Some(t) = rx.recv().await {
            t.unwrap();
            n += 1;
        }
        assert_eq!(n, 1, "the failed batch left nothing behind");
        writer
            .append(&[Record::Tap(tap(2))])
            .expect("the next batch commits: the failed one was rolled back");
        let mut rx = store.export(None);
        let mut n = 0;
        while let Some(t) = rx.recv().await {
            t.unwrap();
            n += 1;
        }
        assert_eq!(n, 2);
    }

    /// Logs from before taps became their own lookup requests kept a queue
    /// of tags to look up. Those rows are still read, and an answer for a
    /// tag deletes its row.
    #[tokio::test]
    async fn an_old_logs_lookup_queue_is_read_until_answered() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        let (store, writer, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        assert!(rec.legacy_lookups.is_empty());
        drop((store, writer));
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
        let (store, mut writer, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        let tags: Vec<&str> = rec.legacy_lookups.iter().map(TagUid::as_str).collect();
        assert_eq!(
            tags,
            ["urn:rfid:01020304", "urn:rfid:0A0B0C0D"],
            "oldest first"
        );
        writer
            .append(&[Record::Identity(IdentityRecord {
                origin: "s".into(),
                iseq: 1,
                tag: TagUid::parse("01020304").unwrap(),
                person: None,
                source: "test".into(),
                at: 9,
            })])
            .unwrap();
        drop((store, writer));
        let (_store, _writer, rec) = Store::open(&db, "s", |_| false, |_| {}).unwrap();
        let tags: Vec<&str> = rec.legacy_lookups.iter().map(TagUid::as_str).collect();
        assert_eq!(tags, ["urn:rfid:0A0B0C0D"]);
    }

    #[tokio::test]
    async fn export_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, _) =
            Store::open(&dir.path().join("log.db"), "s", |_| false, |_| {}).unwrap();
        writer
            .append(&(1..=5).map(|s| Record::Tap(tap(s))).collect::<Vec<_>>())
            .unwrap();
        let mut rx = store.export(Some(("s".into(), 3)));
        let mut seqs = Vec::new();
        while let Some(t) = rx.recv().await {
            seqs.push(t.unwrap().seq);
        }
        assert_eq!(seqs, vec![4, 5]);
    }
}
