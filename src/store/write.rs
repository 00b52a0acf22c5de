//! The write connection ([`Writer`]): one transaction per batch, the
//! answer only after the commit.
//!
//! Only what this station made waits for the disk: a batch of nothing but
//! other stations' events (taps, actions, identity answers received from
//! the herd) and outbox marks commits with `synchronous=NORMAL` — written
//! to the WAL, in order, safe from a crash of the process, but without its
//! own fsync. They are durable at their origin, a power cut loses at most
//! the newest of them (the WAL keeps a prefix) and the links fetch them
//! again from the heads; the next commit of this station's own events
//! fsyncs the WAL and with it everything before. A station ingesting a
//! peer's stream therefore does not put an fsync in front of every own tap.
//!
//! WAL checkpoints (copying the log's pages into the database file, with an
//! fsync of it) run on a thread of their own at normal priority
//! ([`checkpoint_beside`]): SQLite's automatic checkpoint would run inside
//! the commit that crosses 1,000 pages and hold up the taps of that batch
//! by the length of a checkpoint (~10 ms here, measured as the own-tap p99
//! of a station ingesting a peer's 1,000 taps/s).

use std::path::Path;
use std::time::Instant;

use super::{CommitStats, Record, StoreError, sql_u64};
use crate::domain::{Binding, Tap};
use rusqlite::{CachedStatement, Connection, params};

/// Write `records` in one transaction. BEGIN and COMMIT go through the
/// statement cache (`Connection::transaction` parses both anew each time:
/// 1.3% of the station's CPU at 5,000 taps/s, `perf record` under `cargo
/// bench --bench intake`); a batch that fails is rolled back. Should that
/// rollback itself fail (the disk gone), the next batch rolls the
/// transaction back before it begins instead of failing on it forever: the
/// batch in it was answered as failed.
pub(super) fn write_batch(conn: &Connection, records: &[Record]) -> Result<(), StoreError> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
        tracing::info!("store: rolled back a failed batch's transaction left open");
    }
    conn.prepare_cached("BEGIN")?.execute([])?;
    let written = write_records(conn, records).and_then(|()| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    });
    if written.is_err()
        && !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "store: cannot roll back a failed batch (retried before the next)");
    }
    written
}

/// The statement in `slot`, taken from the cache on its first use in a
/// batch: a batch prepares only what it writes (a lone tap looked up all
/// eleven, each by hashing its text).
fn lazily<'a, 'c>(
    slot: &'a mut Option<CachedStatement<'c>>,
    conn: &'c Connection,
    sql: &str,
) -> rusqlite::Result<&'a mut CachedStatement<'c>> {
    let stmt = match slot.take() {
        Some(s) => s,
        None => conn.prepare_cached(sql)?,
    };
    Ok(slot.insert(stmt))
}

/// The statements a batch may run.
mod sql {
    pub(super) const TAP: &str = "INSERT INTO taps (station, seq, reader, tag, at, poll, answer) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    pub(super) const CHECKPOINT: &str = "INSERT OR REPLACE INTO snapshots (id, tap_rowid, tap_count, at, data) \
        SELECT 1, coalesce(max(rowid), 0), ?1, ?2, ?3 FROM taps";
    pub(super) const FOREIGN_TAP: &str = "INSERT INTO taps (station, seq, reader, tag, at, poll, answer) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING";
    pub(super) const ACTION: &str = "INSERT INTO actions \
        (origin, oseq, at, kind, poll, cutoff_at, cutoff_station, cutoff_seq) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING";
    pub(super) const IDENTITY_LOG: &str = "INSERT INTO identity_log \
        (origin, iseq, tag, person_id, name, first, source, fetched_at) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING";
    pub(super) const OUTBOX: &str =
        "INSERT INTO outbox (seq, node, item_id, payload, at) VALUES (?1, ?2, ?3, ?4, ?5)";
    pub(super) const MARK: &str = "INSERT INTO outbox_state (id, enqueued_through) VALUES (1, ?1) \
        ON CONFLICT (id) DO UPDATE SET enqueued_through = max(enqueued_through, excluded.enqueued_through)";
    pub(super) const DONE: &str = "DELETE FROM outbox WHERE id = ?1";
    /// The answer that wins per tag: the last looked up, ties by origin.
    pub(super) const IDENTITY: &str = "INSERT INTO identities \
        (tag, person_id, name, first, source, fetched_at, origin) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
        ON CONFLICT (tag) DO UPDATE SET person_id = excluded.person_id, name = excluded.name, \
        first = excluded.first, source = excluded.source, fetched_at = excluded.fetched_at, \
        origin = excluded.origin \
        WHERE (excluded.fetched_at, excluded.origin) > (identities.fetched_at, coalesce(identities.origin, ''))";
    pub(super) const DEQUEUE: &str = "DELETE FROM identity_queue WHERE tag = ?1";
    pub(super) const READER: &str = "INSERT INTO bound_readers (id, device, protocol, poll, answer, slot, at) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
}

/// Run a statement that inserts into `taps` ([`sql::TAP`],
/// [`sql::FOREIGN_TAP`]) for `t`.
fn insert_tap(stmt: &mut CachedStatement<'_>, t: &Tap) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &*t.station,
        sql_u64(t.seq),
        &*t.reader,
        t.tag.as_str(),
        t.at,
        &*t.poll,
        &*t.answer
    ])
}

fn write_records(conn: &Connection, records: &[Record]) -> Result<(), StoreError> {
    let mut tap_stmt = None;
    let mut checkpoint_stmt = None;
    let mut foreign_tap_stmt = None;
    let mut action_stmt = None;
    let mut identity_log_stmt = None;
    let mut outbox_stmt = None;
    let mut mark_stmt = None;
    let mut done_stmt = None;
    let mut identity_stmt = None;
    let mut dequeue_stmt = None;
    let mut reader_stmt = None;
    for r in records {
        match r {
            Record::OutboxMark(_) | Record::KnownIdentity { .. } => {}
            Record::Identity(i) => {
                let person = i.person.as_ref();
                lazily(&mut identity_log_stmt, conn, sql::IDENTITY_LOG)?.execute(params![
                    &*i.origin,
                    sql_u64(i.iseq),
                    i.tag.as_str(),
                    person.map(|p| p.id.as_str()),
                    person.map(|p| p.name.as_str()),
                    person.map(|p| p.first.as_str()),
                    i.source,
                    i.at
                ])?;
                lazily(&mut identity_stmt, conn, sql::IDENTITY)?.execute(params![
                    i.tag.as_str(),
                    person.map(|p| p.id.as_str()),
                    person.map(|p| p.name.as_str()),
                    person.map(|p| p.first.as_str()),
                    i.source,
                    i.at,
                    &*i.origin
                ])?;
                lazily(&mut dequeue_stmt, conn, sql::DEQUEUE)?.execute([i.tag.as_str()])?;
            }
            Record::ForeignTap(t) => {
                insert_tap(lazily(&mut foreign_tap_stmt, conn, sql::FOREIGN_TAP)?, t)?;
            }
            Record::Outbox { items, through } => {
                for i in items {
                    lazily(&mut outbox_stmt, conn, sql::OUTBOX)?.execute(params![
                        sql_u64(i.seq),
                        i.node,
                        i.item_id,
                        i.payload,
                        i.at
                    ])?;
                }
                lazily(&mut mark_stmt, conn, sql::MARK)?.execute([sql_u64(*through)])?;
            }
            Record::Published(ids) => {
                for id in ids {
                    lazily(&mut done_stmt, conn, sql::DONE)?.execute([id])?;
                }
            }
            Record::Reader(b) => {
                let (poll, answer, slot) = match &b.binding {
                    Binding::Fixed { poll, answer } => {
                        (Some(poll.as_str()), Some(answer.as_str()), None)
                    }
                    Binding::Slot { slot } => (None, None, Some(slot.to_string())),
                };
                lazily(&mut reader_stmt, conn, sql::READER)?.execute(params![
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
                insert_tap(lazily(&mut tap_stmt, conn, sql::TAP)?, t).map_err(|e| {
                    match e.sqlite_error_code() {
                        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Duplicate {
                            station: t.station.to_string(),
                            seq: t.seq,
                        },
                        _ => e.into(),
                    }
                })?;
            }
            Record::Checkpoint { data, at, taps } => {
                lazily(&mut checkpoint_stmt, conn, sql::CHECKPOINT)?.execute(params![
                    sql_u64(*taps),
                    at,
                    data
                ])?;
            }
            Record::Action(a) => {
                lazily(&mut action_stmt, conn, sql::ACTION)?.execute(params![
                    &*a.origin,
                    sql_u64(a.oseq),
                    a.at,
                    a.kind.as_str(),
                    a.poll,
                    a.key.at,
                    &*a.key.station,
                    sql_u64(a.key.seq),
                ])?;
            }
        }
    }
    Ok(())
}

/// WAL pages after which the checkpointer is woken (SQLite's own default
/// for its automatic checkpoint).
const CHECKPOINT_PAGES: std::ffi::c_int = 1000;

/// Take WAL checkpoints off `conn`'s commits: a thread with its own
/// connection to `path` runs a passive checkpoint (it never blocks the
/// writer) each time a commit leaves the WAL at [`CHECKPOINT_PAGES`] or
/// more. The thread ends when `conn` is dropped.
pub(super) fn checkpoint_beside(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let other = Connection::open(path)?;
    other.busy_timeout(std::time::Duration::from_secs(5))?;
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("store-wal".into())
        .spawn(move || {
            crate::sys::priority::normal_this_thread();
            // A run of failures is said once (the WAL then grows until one
            // works: a full or read-only disk, which the writer reports too).
            let mut failing = false;
            while woken.recv().is_ok() {
                let done = other.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                match done {
                    Ok((wal, copied)) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("store: WAL checkpoints work again");
                        }
                        tracing::trace!(wal, copied, "store: WAL checkpointed");
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "store: WAL checkpoint failed; the WAL grows until one works (retried after the next commits)");
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| StoreError::Io(super::Cause::Io(std::sync::Arc::new(e))))?;
    // Replaces SQLite's automatic checkpoint (the same hook).
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
        if pages >= CHECKPOINT_PAGES {
            let _ = wake.try_send(());
        }
        Ok(())
    }))?;
    Ok(())
}

/// Whether `record` must be on disk before its batch is answered: all that
/// `station` made itself; not what came from other stations, nor outbox
/// marks (a lost mark only means the same item published again).
fn needs_sync(record: &Record, station: &str) -> bool {
    match record {
        Record::ForeignTap(_) | Record::Published(_) => false,
        Record::Action(a) => &*a.origin == station,
        Record::Identity(i) => &*i.origin == station,
        _ => true,
    }
}

/// The log's one write connection: one transaction per batch, answered
/// only once committed. The Station owns it and calls it on its own
/// thread: handing each batch to a store thread and its answer back cost
/// two thread wake-ups per commit — a quarter of the station's CPU at
/// 1,000 taps/s (`cargo bench --bench intake`: 0.278 → 0.209 cores).
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
    station: String,
    /// Whether the connection is at `synchronous=FULL` (`configure` set it).
    full: bool,
}

impl Writer {
    pub(super) fn new(conn: Connection, station: &str) -> Self {
        // Room for every statement a batch may run, BEGIN and COMMIT
        // besides (SQLite's cache in rusqlite holds 16 by default).
        conn.set_prepared_statement_cache_capacity(32);
        Self {
            conn,
            station: station.to_string(),
            full: true,
        }
    }

    /// Write `records` in one transaction, synced to disk if any of them
    /// is this station's own; answers after the commit.
    ///
    /// # Errors
    /// When the transaction fails; nothing of the batch is then written.
    pub fn append(&mut self, records: &[Record]) -> Result<CommitStats, StoreError> {
        let started = Instant::now();
        let wanted = records.iter().any(|r| needs_sync(r, &self.station));
        if wanted != self.full {
            let mode = if wanted { "FULL" } else { "NORMAL" };
            match self.conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => self.full = wanted,
                // Stays FULL where NORMAL was wanted: only slower.
                Err(e) if wanted => return Err(e.into()),
                Err(e) => tracing::debug!(error = %e, "store: cannot relax synchronous"),
            }
        }
        let result = write_batch(&self.conn, records).map(|()| CommitStats {
            records: records.len(),
            duration: started.elapsed(),
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, records = records.len(), "store: commit failed; nothing of this batch is acknowledged");
        }
        result
    }

    /// Checkpoint the WAL into the database (so it does not have to be
    /// replayed) and close the file.
    pub fn close(self) {
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!(error = %e, "store: final checkpoint failed (harmless: the WAL is replayed at next start)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    /// A batch whose ROLLBACK failed left its transaction open: the next
    /// batch rolls it back (its rows were never acknowledged) and commits.
    #[test]
    fn a_transaction_left_open_is_rolled_back_before_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("log.db")).unwrap();
        schema::configure(&conn).unwrap();
        schema::migrate(&conn).unwrap();
        conn.execute_batch(
            "BEGIN; INSERT INTO taps (station, seq, reader, tag, at, poll, answer) \
             VALUES ('s', 1, 'r', 'urn:rfid:01020304', 1001, 'p', 'a')",
        )
        .unwrap();
        write_batch(&conn, &[Record::Tap(crate::store::tests::tap(2))]).unwrap();
        assert!(conn.is_autocommit());
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM taps ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            seqs,
            vec![2],
            "the unacknowledged row is gone, the new one is there"
        );
    }
}
