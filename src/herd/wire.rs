//! The herd link's frames: length-delimited (tokio-util's codec, 1 MiB at
//! most), each a postcard-encoded [`Frame`]. A batch carries consecutive
//! events of one feed, packed: taps as time deltas, indexes into a string
//! table of the batch (readers, polls, answers) and raw UID bytes — about a
//! dozen bytes a tap.
//!
//! Invariant: decoding never trusts the peer — a frame that does not
//! parse, a batch that does not unpack to consecutive events of the feed it
//! names, or an index out of its table is an error that ends the link.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::herd::{Feed, Heads, HerdEvent};
use crate::domain::{Action, IdentityRecord, TagUid, Tap};

/// The version of the link protocol; a peer with another is refused.
pub const VERSION: u16 = 1;

/// The largest frame read or written.
pub const MAX_FRAME: usize = 1 << 20;

/// Heads as sent: (origin, feed, highest number held).
pub type WireHeads = Vec<(String, Feed, u64)>;

/// What one side says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub herd: String,
    pub station: String,
    pub polls_hash: String,
    pub heads: WireHeads,
}

/// One frame of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Hello(Hello),
    /// The link is refused, and why (then it closes).
    Refuse(String),
    /// Consecutive events of one feed.
    Batch(Batch),
    /// What the sender holds now (so the other side skips what it has).
    Heads(WireHeads),
    /// A ping with the sender's clock, and its answer with the other's
    /// (`echo`: the ping's `at`).
    Ping {
        id: u64,
        at: i64,
    },
    Pong {
        id: u64,
        at: i64,
        echo: i64,
    },
}

/// Consecutive events of `origin`'s `feed`, the first numbered `first`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub origin: String,
    pub feed: Feed,
    pub first: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    Taps(PackedTaps),
    Actions(Vec<Action>),
    Identities(Vec<IdentityRecord>),
}

/// Taps of one origin, packed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedTaps {
    /// The first tap's time; each next one is a delta from the one before.
    pub at: i64,
    /// Readers, polls and answers named in this batch.
    pub strings: Vec<String>,
    pub taps: Vec<PackedTap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedTap {
    pub dt: i64,
    pub reader: u16,
    pub poll: u16,
    pub answer: u16,
    /// The UID's bytes (the tag is `urn:rfid:` + their hex).
    pub uid: Vec<u8>,
}

/// Why a frame or batch cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("a frame that does not parse: {0}")]
    Decode(#[from] postcard::Error),
    #[error("a batch that does not fit its feed: {0}")]
    Batch(&'static str),
    #[error("a tag in a batch is not a UID: {0}")]
    Tag(#[from] crate::domain::TagError),
}

pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    Ok(postcard::to_allocvec(frame)?)
}

pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Heads for the wire.
#[must_use]
pub fn heads_out(h: &Heads) -> WireHeads {
    h.iter().map(|(o, f, n)| (o.to_string(), f, n)).collect()
}

/// Heads from the wire.
#[must_use]
pub fn heads_in(w: &WireHeads) -> Heads {
    let mut h = Heads::default();
    for (o, f, n) in w {
        h.set(o.as_str().into(), *f, *n);
    }
    h
}

/// The raw bytes of a canonical tag.
fn uid_bytes(tag: &TagUid) -> Vec<u8> {
    let hex = tag.as_str().strip_prefix(TagUid::PREFIX).unwrap_or("");
    hex::decode(hex).unwrap_or_default()
}

/// Pack consecutive events of one feed (as read from the log).
///
/// # Errors
/// When the events are not of one origin and feed, consecutive.
pub fn pack(events: &[HerdEvent]) -> Result<Batch, WireError> {
    let Some(first) = events.first() else {
        return Err(WireError::Batch("an empty batch"));
    };
    let (origin, feed, start) = first.position();
    for (i, e) in events.iter().enumerate() {
        let (o, f, n) = e.position();
        if o != origin || f != feed || n != start + i as u64 {
            return Err(WireError::Batch("events of several feeds or with a gap"));
        }
    }
    let body = match feed {
        Feed::Taps => {
            let mut strings: Vec<String> = Vec::new();
            let mut index = |s: &str| -> u16 {
                let i = strings.iter().position(|x| x == s).unwrap_or_else(|| {
                    strings.push(s.to_string());
                    strings.len() - 1
                });
                u16::try_from(i).unwrap_or(u16::MAX)
            };
            let mut prev = None;
            let mut taps = Vec::with_capacity(events.len());
            let mut at0 = 0;
            for e in events {
                let HerdEvent::Tap(t) = e else {
                    unreachable!("checked above")
                };
                let dt = match prev {
                    None => {
                        at0 = t.at;
                        0
                    }
                    Some(p) => t.at - p,
                };
                prev = Some(t.at);
                taps.push(PackedTap {
                    dt,
                    reader: index(&t.reader),
                    poll: index(&t.poll),
                    answer: index(&t.answer),
                    uid: uid_bytes(&t.tag),
                });
            }
            if strings.len() > usize::from(u16::MAX) {
                return Err(WireError::Batch("more names than a batch can hold"));
            }
            Body::Taps(PackedTaps {
                at: at0,
                strings,
                taps,
            })
        }
        Feed::Actions => Body::Actions(
            events
                .iter()
                .filter_map(|e| match e {
                    HerdEvent::Action(a) => Some(a.clone()),
                    _ => None,
                })
                .collect(),
        ),
        Feed::Identities => Body::Identities(
            events
                .iter()
                .filter_map(|e| match e {
                    HerdEvent::Identity(i) => Some(i.clone()),
                    _ => None,
                })
                .collect(),
        ),
    };
    Ok(Batch {
        origin: origin.to_string(),
        feed,
        first: start,
        body,
    })
}

/// Unpack a batch into its events, checking it is what it says.
///
/// # Errors
/// When the batch is inconsistent: another feed inside, a gap, an index
/// out of its table, a tag that is not a UID.
pub fn unpack(b: Batch) -> Result<Vec<HerdEvent>, WireError> {
    let origin: Arc<str> = b.origin.as_str().into();
    let numbered = |i: usize| b.first + i as u64;
    match b.body {
        Body::Taps(p) => {
            if b.feed != Feed::Taps {
                return Err(WireError::Batch("taps in another feed"));
            }
            let names: Vec<Arc<str>> = p.strings.iter().map(|s| Arc::from(s.as_str())).collect();
            let name = |i: u16| {
                names
                    .get(usize::from(i))
                    .cloned()
                    .ok_or(WireError::Batch("a name index out of its table"))
            };
            let mut at = p.at;
            let mut out = Vec::with_capacity(p.taps.len());
            for (i, t) in p.taps.into_iter().enumerate() {
                at = at
                    .checked_add(t.dt)
                    .ok_or(WireError::Batch("a time out of range"))?;
                out.push(HerdEvent::Tap(Tap {
                    station: origin.clone(),
                    seq: numbered(i),
                    reader: name(t.reader)?,
                    tag: TagUid::from_bytes(&t.uid)?,
                    at,
                    poll: name(t.poll)?,
                    answer: name(t.answer)?,
                }));
            }
            Ok(out)
        }
        Body::Actions(actions) => {
            let ok = b.feed == Feed::Actions
                && actions
                    .iter()
                    .enumerate()
                    .all(|(i, a)| *a.origin == *origin && a.oseq == numbered(i));
            if !ok {
                return Err(WireError::Batch("actions out of their feed or order"));
            }
            Ok(actions.into_iter().map(HerdEvent::Action).collect())
        }
        Body::Identities(ids) => {
            let ok = b.feed == Feed::Identities
                && ids
                    .iter()
                    .enumerate()
                    .all(|(i, r)| *r.origin == *origin && r.iseq == numbered(i));
            if !ok {
                return Err(WireError::Batch("identities out of their feed or order"));
            }
            Ok(ids.into_iter().map(HerdEvent::Identity).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(seq: u64, at: i64, reader: &str, uid: &str) -> HerdEvent {
        HerdEvent::Tap(Tap {
            station: "hall-a".into(),
            seq,
            reader: reader.into(),
            tag: TagUid::parse(uid).unwrap(),
            at,
            poll: "lunch".into(),
            answer: if seq.is_multiple_of(2) {
                "pizza"
            } else {
                "sushi"
            }
            .into(),
        })
    }

    #[test]
    fn taps_pack_small_and_come_back_the_same() {
        let events: Vec<HerdEvent> = (1..=1000)
            .map(|i| {
                tap(
                    i,
                    1_760_000_000_000 + i as i64 * 137,
                    if i % 3 == 0 { "post-1" } else { "post-2" },
                    &format!("04{:06X}", i),
                )
            })
            .collect();
        let batch = pack(&events).unwrap();
        let bytes = encode(&Frame::Batch(batch.clone())).unwrap();
        let per_tap = bytes.len() as f64 / 1000.0;
        assert!(per_tap < 16.0, "{per_tap} bytes a tap");
        let Frame::Batch(back) = decode(&bytes).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(unpack(back).unwrap(), events);
    }

    #[test]
    fn a_batch_that_lies_is_refused() {
        let mut events = vec![tap(1, 10, "r", "01020304"), tap(2, 11, "r", "01020305")];
        assert!(pack(&events).is_ok());
        events[1] = tap(3, 11, "r", "01020305");
        assert!(pack(&events).is_err(), "a gap");
        let mut b = pack(&[tap(1, 10, "r", "01020304")]).unwrap();
        if let Body::Taps(p) = &mut b.body {
            p.taps[0].poll = 9;
        }
        assert!(matches!(unpack(b), Err(WireError::Batch(_))));
        let mut b = pack(&[tap(1, 10, "r", "01020304")]).unwrap();
        b.feed = Feed::Actions;
        assert!(unpack(b).is_err());
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
