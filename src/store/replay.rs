//! Start-up: open (creating and migrating) the log, read it back in the
//! order the Station folds it, and start the store thread.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::{
    BoundReader, Cause, Record, Recovered, SELECT_TAPS, Store, StoreError, read_tap, schema, write,
};
use crate::domain::{Action, ActionKind, Binding, Person, TagUid, TapKey};

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

impl Store {
    /// Open (creating and migrating if needed) the log at `path`, replay it,
    /// and start the store thread.
    ///
    /// Replay: the latest checkpoint (if any) is offered to `restore`; then
    /// every action goes to `on_record` in order, then the bound readers,
    /// the identities, the outbox mark, and every tap in log order — only
    /// those after the checkpoint if `restore` accepted it.
    pub fn open(
        path: &Path,
        station: &str,
        restore: impl FnOnce(&[u8]) -> bool,
        mut on_record: impl FnMut(Record),
    ) -> Result<(Store, Recovered), StoreError> {
        let conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&conn)?;

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
        let checkpoint: Option<(i64, i64, Vec<u8>)> = conn
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
        if let Some((rowid, count, data)) = checkpoint {
            if restore(&data) {
                after_rowid = rowid;
                rec.taps = usize::try_from(count).unwrap_or(0);
                rec.from_checkpoint = true;
            } else {
                tracing::info!(
                    "checkpoint does not fit the configured polls; replaying the whole log"
                );
            }
        }
        {
            let mut stmt = conn.prepare(
                "SELECT at, kind, poll, cutoff_at, cutoff_station, cutoff_seq FROM actions ORDER BY id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let kind: ActionKind = row
                    .get::<_, String>(1)?
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("action: {e}")))?;
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
                    .map_err(|e: crate::config::UnknownProtocol| {
                        StoreError::Corrupt(format!("bound reader: {e}"))
                    })?;
                let (poll, answer, slot): (Option<String>, Option<String>, Option<String>) =
                    (row.get(3)?, row.get(4)?, row.get(5)?);
                let binding =
                    Binding::from_parts(poll.as_deref(), answer.as_deref(), slot.as_deref())
                        .map_err(|e| StoreError::Corrupt(format!("bound reader: {e}")))?;
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
                let person = row.get::<_, Option<String>>(1)?.map(|id| Person {
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
            .spawn(move || write::writer(conn, rx))
            .map_err(|e| StoreError::Io(Cause::Io(Arc::new(e))))?;
        Ok((
            Store {
                tx,
                path: path.to_path_buf(),
            },
            rec,
        ))
    }
}
