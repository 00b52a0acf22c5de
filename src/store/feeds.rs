//! Reads for the herd: a feed's events after a number, in order and in
//! bounded batches (straight from the tables, by primary key: nothing is
//! queued that grows with a partition); a poll's taps for a re-fold; and
//! whether events a peer sends again match what the log holds (a forked
//! origin does not).

use std::sync::Arc;

use rusqlite::{Connection, params};

use super::{SELECT_TAPS, Store, StoreError, read_tap, sql_u64};
use crate::domain::herd::{Feed, HerdEvent};
use crate::domain::{Action, IdentityRecord, Person, TagUid, Tap, TapKey};

fn number(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("a negative number in a feed".into()))
}

fn actions_after(
    conn: &Connection,
    origin: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<HerdEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT oseq, at, kind, poll, cutoff_at, cutoff_station, cutoff_seq FROM actions \
         WHERE origin = ?1 AND oseq > ?2 ORDER BY oseq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![origin, sql_u64(after), sql_u64(limit as u64)])?;
    let origin: Arc<str> = origin.into();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(HerdEvent::Action(Action {
            origin: origin.clone(),
            oseq: number(r.get(0)?)?,
            at: r.get(1)?,
            kind: r
                .get::<_, String>(2)?
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("action: {e}")))?,
            poll: r.get(3)?,
            key: TapKey {
                at: r.get(4)?,
                station: r.get::<_, String>(5)?.into(),
                seq: number(r.get(6)?)?,
            },
        }));
    }
    Ok(out)
}

fn identities_after(
    conn: &Connection,
    origin: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<HerdEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT iseq, tag, person_id, name, first, source, fetched_at FROM identity_log \
         WHERE origin = ?1 AND iseq > ?2 ORDER BY iseq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![origin, sql_u64(after), sql_u64(limit as u64)])?;
    let origin: Arc<str> = origin.into();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let tag = TagUid::parse(&r.get::<_, String>(1)?)
            .map_err(|e| StoreError::Corrupt(format!("identity: {e}")))?;
        let person = r.get::<_, Option<String>>(2)?.map(|id| Person {
            id,
            name: r
                .get::<_, Option<String>>(3)
                .ok()
                .flatten()
                .unwrap_or_default(),
            first: r
                .get::<_, Option<String>>(4)
                .ok()
                .flatten()
                .unwrap_or_default(),
        });
        out.push(HerdEvent::Identity(IdentityRecord {
            origin: origin.clone(),
            iseq: number(r.get(0)?)?,
            tag,
            person,
            source: r.get(5)?,
            at: r.get(6)?,
        }));
    }
    Ok(out)
}

fn taps_after(
    conn: &Connection,
    origin: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<HerdEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_TAPS} WHERE station = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))?;
    let mut rows = stmt.query(params![origin, sql_u64(after), sql_u64(limit as u64)])?;
    let station: Arc<str> = origin.into();
    let mut names = std::collections::HashMap::<String, Arc<str>>::new();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let tap = read_tap(
            r,
            |s| {
                if s == &*station {
                    return station.clone();
                }
                names
                    .entry(s.to_string())
                    .or_insert_with(|| s.into())
                    .clone()
            },
            |s| Arc::from(s),
        )?;
        out.push(HerdEvent::Tap(tap));
    }
    Ok(out)
}

/// Whether the log holds `e` as it is (false: the same key with other
/// content — a forked origin). An event the log does not hold is `true`.
fn matches(conn: &Connection, e: &HerdEvent) -> Result<bool, StoreError> {
    let (origin, feed, n) = e.position();
    let held = match feed {
        Feed::Taps => taps_after(conn, origin, n - 1, 1)?,
        Feed::Actions => actions_after(conn, origin, n - 1, 1)?,
        Feed::Identities => identities_after(conn, origin, n - 1, 1)?,
    };
    Ok(match held.first() {
        Some(h) if h.position() == e.position() => h == e,
        _ => true,
    })
}

impl Store {
    /// Up to `limit` events of `origin`'s `feed` numbered above `after`.
    pub async fn feed_after(
        &self,
        origin: Arc<str>,
        feed: Feed,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HerdEvent>, StoreError> {
        self.readers
            .run(move |conn| match feed {
                Feed::Taps => taps_after(conn, &origin, after, limit),
                Feed::Actions => actions_after(conn, &origin, after, limit),
                Feed::Identities => identities_after(conn, &origin, after, limit),
            })
            .await
    }

    /// Every tap of `poll`, for a re-fold.
    pub async fn poll_taps(&self, poll: String) -> Result<Vec<Tap>, StoreError> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare(&format!("{SELECT_TAPS} WHERE poll = ?1"))?;
                let mut rows = stmt.query([poll])?;
                let mut names = std::collections::HashMap::<String, Arc<str>>::new();
                let mut intern = |s: &str| {
                    names
                        .entry(s.to_string())
                        .or_insert_with(|| s.into())
                        .clone()
                };
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(read_tap(r, &mut intern, |s| Arc::from(s))?);
                }
                Ok(out)
            })
            .await
    }

    /// Of `events` (copies of ones the log holds), those whose content
    /// differs from the logged one: their origin has forked.
    pub async fn mismatching(&self, events: Vec<HerdEvent>) -> Result<Vec<HerdEvent>, StoreError> {
        self.readers
            .run(move |conn| {
                let mut out = Vec::new();
                for e in events {
                    if !matches(conn, &e)? {
                        out.push(e);
                    }
                }
                Ok(out)
            })
            .await
    }
}
