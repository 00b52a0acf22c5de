//! Reads beside the writer: the outbox for the publisher, the tail for the
//! operator, and the export (JSON or CSV) — each on a blocking thread with
//! its own read-only connection, so a million taps are never held in memory
//! and never hold up a commit.

use std::path::Path;
use std::sync::Arc;

use rusqlite::params;
use tokio::sync::mpsc;

use super::{OutboxItem, SELECT_TAPS, Store, StoreError, read_tap, sql_u64};
use crate::domain::{Tap, TapRecord};

/// The formats of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per tap ([`TapRecord::logged`]).
    Json,
    /// [`CSV_HEADER`], then one line per tap.
    Csv,
}

/// The header of the CSV export.
pub const CSV_HEADER: &str = "station,seq,reader,tag,at,at_iso,poll,answer";

/// One tap of the export, without a line break.
#[must_use]
pub fn export_line(t: &Tap, format: ExportFormat) -> String {
    match format {
        ExportFormat::Json => serde_json::to_string(&TapRecord::logged(t)).unwrap_or_default(),
        ExportFormat::Csv => csv_line(t),
    }
}

/// A CSV field a spreadsheet will not take for a formula: one that starts
/// with `=`, `+`, `-` or `@` gets a leading `'` (OWASP's advice). Ids are
/// `[A-Za-z0-9._-]` and tags `urn:rfid:HEX`, so no quoting is needed.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

fn csv_line(t: &Tap) -> String {
    let iso = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.at) * 1_000_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{}",
        csv_field(&t.station),
        t.seq,
        csv_field(&t.reader),
        t.tag,
        t.at,
        iso,
        csv_field(&t.poll),
        csv_field(&t.answer)
    )
}

impl Store {
    /// The oldest items still to publish with a row id above `after`.
    pub async fn outbox_peek(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.readers.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, seq, node, item_id, payload, at FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, sql_u64(limit as u64)], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    node: r.get(2)?,
                    item_id: r.get(3)?,
                    payload: r.get(4)?,
                    at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Stream taps in log order (the order they were written), starting
    /// after the tap `after` if given (which must exist:
    /// [`StoreError::NoSuchTap`] otherwise, as the first item).
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

    /// The last `n` taps, oldest first.
    pub async fn tail(&self, n: usize) -> Result<Vec<Tap>, StoreError> {
        self.readers
            .run(move |conn| {
                let mut stmt =
                    conn.prepare(&format!("{SELECT_TAPS} ORDER BY rowid DESC LIMIT ?1"))?;
                let mut rows = stmt.query([sql_u64(n as u64)])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(read_tap(row, |s| Arc::from(s), |s| Arc::from(s))?);
                }
                out.reverse();
                Ok(out)
            })
            .await
    }

    /// Whether the log holds the tap `(station, seq)`.
    pub async fn tap_exists(&self, station: String, seq: u64) -> Result<bool, StoreError> {
        self.readers
            .run(move |conn| {
                let n: i64 = conn.query_row(
                    "SELECT count(*) FROM taps WHERE station = ?1 AND seq = ?2",
                    params![station, sql_u64(seq)],
                    |r| r.get(0),
                )?;
                Ok(n > 0)
            })
            .await
    }
}

fn export_rows(
    path: &Path,
    after: Option<(String, u64)>,
    tx: &mpsc::Sender<Result<Tap, StoreError>>,
) -> Result<(), StoreError> {
    let conn = super::read::open(path)?;
    let start: i64 = match after {
        None => 0,
        Some((station, seq)) => conn
            .query_row(
                "SELECT rowid FROM taps WHERE station = ?1 AND seq = ?2",
                params![station, sql_u64(seq)],
                |r| r.get(0),
            )
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => StoreError::NoSuchTap { station, seq },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TagUid;

    #[test]
    fn csv_fields_are_never_formulas() {
        let t = Tap {
            station: "hall-a".into(),
            seq: 1,
            reader: "-post=1".into(),
            tag: TagUid::parse("01020304").unwrap(),
            at: 0,
            poll: "@lunch".into(),
            answer: "+pizza".into(),
        };
        assert_eq!(
            export_line(&t, ExportFormat::Csv),
            "hall-a,1,'-post=1,urn:rfid:01020304,0,1970-01-01T00:00:00Z,'@lunch,'+pizza"
        );
        let json: serde_json::Value =
            serde_json::from_str(&export_line(&t, ExportFormat::Json)).unwrap();
        assert_eq!(json["reader"], "-post=1", "JSON is not for spreadsheets");
    }
}
