//! The schema: migrations from `migrations/`, applied in order and counted
//! by `PRAGMA user_version`, and the connection settings every connection
//! gets. An existing data dir opens unchanged; a newer one is refused.

use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_snapshots.sql"),
    include_str!("../../migrations/0003_bound_readers.sql"),
    include_str!("../../migrations/0004_outbox.sql"),
    include_str!("../../migrations/0005_identities.sql"),
    include_str!("../../migrations/0006_herd.sql"),
];

/// WAL, fsync on every commit, and a busy timeout for the readers.
pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Bring the schema up to date, each migration in its own transaction.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
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

/// Give rows written before the herd (actions and identity answers
/// without an origin) this station's id and gap-free numbers, and each
/// action its key: where it lay in the taps' order (after this station's
/// taps up to its time; a reset's cutoff is kept).
pub(super) fn adopt(conn: &mut Connection, station: &str) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let orphans: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare("SELECT id, at FROM actions WHERE origin IS NULL ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if !orphans.is_empty() {
        let mut next: i64 = tx.query_row(
            "SELECT coalesce(max(oseq), 0) FROM actions WHERE origin = ?1",
            [station],
            |r| r.get(0),
        )?;
        let mut key = tx.prepare(
            "UPDATE actions SET origin = ?1, oseq = ?2, \
             cutoff_at = coalesce(cutoff_at, ?3), cutoff_station = coalesce(cutoff_station, ?1), \
             cutoff_seq = coalesce(cutoff_seq, (SELECT coalesce(max(seq), 0) FROM taps WHERE station = ?1 AND at <= ?3)) \
             WHERE id = ?4",
        )?;
        for (id, at) in orphans {
            next += 1;
            key.execute(rusqlite::params![station, next, at, id])?;
        }
    }
    let unlogged: i64 = tx.query_row(
        "SELECT count(*) FROM identities WHERE origin IS NULL",
        [],
        |r| r.get(0),
    )?;
    if unlogged > 0 {
        tx.execute(
            "INSERT INTO identity_log (origin, iseq, tag, person_id, name, first, source, fetched_at) \
             SELECT ?1, row_number() OVER (ORDER BY rowid) + \
                    (SELECT coalesce(max(iseq), 0) FROM identity_log WHERE origin = ?1), \
                    tag, person_id, name, first, source, fetched_at \
             FROM identities WHERE origin IS NULL",
            [station],
        )?;
        tx.execute(
            "UPDATE identities SET origin = ?1 WHERE origin IS NULL",
            [station],
        )?;
    }
    tx.commit()?;
    Ok(())
}
