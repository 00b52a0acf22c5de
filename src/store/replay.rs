//! Start-up: open (creating and migrating) the log, read it back in the
//! order the Station folds it, and hand over the [`Writer`].

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::{
    BoundReader, Record, Recovered, SELECT_TAPS, Store, StoreError, Writer, read_tap, schema, write,
};
use crate::domain::herd::Feed;
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
    /// and give back the read handle and the one [`Writer`].
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
    ) -> Result<(Store, Writer, Recovered), StoreError> {
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&conn)?;
        schema::adopt(&mut conn, station)?;

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
        heads(&conn, station, &mut rec)?;
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
                "SELECT origin, oseq, at, kind, poll, cutoff_at, cutoff_station, cutoff_seq \
                 FROM actions ORDER BY id",
            )?;
            let mut rows = stmt.query([])?;
            let mut names = Interner::default();
            while let Some(row) = rows.next()? {
                let kind: ActionKind = row
                    .get::<_, String>(3)?
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("action: {e}")))?;
                let number = |i| {
                    u64::try_from(row.get::<_, i64>(i)?)
                        .map_err(|_| StoreError::Corrupt("a negative number in an action".into()))
                };
                let action = Action {
                    origin: names.get(row.get_ref(0)?.as_str()?),
                    oseq: number(1)?,
                    at: row.get(2)?,
                    kind,
                    poll: row.get(4)?,
                    key: TapKey {
                        at: row.get(5)?,
                        station: names.get(row.get_ref(6)?.as_str()?),
                        seq: number(7)?,
                    },
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
                "SELECT tag, person_id, name, first, origin, fetched_at FROM identities",
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
                on_record(Record::KnownIdentity {
                    tag,
                    person,
                    origin: row.get::<_, String>(4)?.into(),
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

        write::checkpoint_beside(&mut conn, path)?;
        Ok((
            Store {
                path: path.to_path_buf(),
                readers: super::read::Readers::new(path),
            },
            Writer::new(conn, station),
            rec,
        ))
    }
}

/// The head of every feed the log holds, and the newest foreign tap time.
/// Feeds are gap-free prefixes, so each head is its highest number.
fn heads(conn: &Connection, station: &str, rec: &mut Recovered) -> Result<(), StoreError> {
    let feeds = [
        (Feed::Taps, "taps", "station", "seq"),
        (Feed::Actions, "actions", "origin", "oseq"),
        (Feed::Identities, "identity_log", "origin", "iseq"),
    ];
    for (feed, table, origin, seq) in feeds {
        // A skip scan of the (origin, seq) index: one seek per origin, not
        // a pass over every row (`GROUP BY` read all 1,000,000 taps at
        // each start: ~50 ms).
        let sql = format!(
            "WITH RECURSIVE o(origin) AS ( \
               SELECT min({origin}) FROM {table} \
               UNION ALL \
               SELECT (SELECT min({origin}) FROM {table} WHERE {origin} > o.origin) FROM o WHERE o.origin IS NOT NULL) \
             SELECT origin, (SELECT max({seq}) FROM {table} WHERE {origin} = o.origin) FROM o WHERE origin IS NOT NULL"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let origin: String = row.get(0)?;
            let n = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
            if feed == Feed::Taps && origin != station {
                // Per origin, tap times only grow: its newest is at its head.
                let at: i64 = conn.query_row(
                    "SELECT at FROM taps WHERE station = ?1 AND seq = ?2",
                    rusqlite::params![origin, crate::store::sql_u64(n)],
                    |r| r.get(0),
                )?;
                rec.newest_foreign_at = Some(rec.newest_foreign_at.map_or(at, |m| m.max(at)));
            }
            rec.heads.set(origin.into(), feed, n);
        }
    }
    Ok(())
}
