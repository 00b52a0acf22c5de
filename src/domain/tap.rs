//! Tags and taps: a tag UID in its one canonical form, a tap (one arrival of
//! a tag on a reader) and the total order every station sorts taps by.
//!
//! Pure: no I/O, no clock. A tap's JSON shape for consumers that may see
//! the tag (admin API, control socket, export) is [`TapRecord`], and only
//! that.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A tag UID in canonical form: `urn:rfid:` followed by uppercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TagUid(Arc<str>);

/// Why a string or byte sequence is not a usable tag UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag UID is empty")]
    Empty,
    #[error("tag UID contains {0:?}, which is not a hex digit")]
    NotHex(char),
    #[error("tag UID has an odd number of hex digits ({0})")]
    OddLength(usize),
    #[error("tag UID is {0} bytes long; expected 4, 5, 7 or 10")]
    BadLength(usize),
    #[error(
        "tag UID {0} is a random ID (4 bytes starting with 08): it changes on every read and identifies nobody"
    )]
    RandomId(String),
}

impl TagUid {
    pub const PREFIX: &'static str = "urn:rfid:";

    /// Build from raw UID bytes as read (UID0 first).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TagError> {
        match bytes.len() {
            0 => return Err(TagError::Empty),
            4 | 5 | 7 | 10 => {}
            n => return Err(TagError::BadLength(n)),
        }
        let hex = hex::encode_upper(bytes);
        // ISO 14443-3: a 4-byte UID whose first byte is 0x08 is a random ID.
        if bytes.len() == 4 && bytes[0] == 0x08 {
            return Err(TagError::RandomId(hex));
        }
        Ok(Self(format!("{}{hex}", Self::PREFIX).into()))
    }

    /// Parse `urn:rfid:HEX` or bare hex; `:`, `-` and spaces between digits are allowed.
    pub fn parse(text: &str) -> Result<Self, TagError> {
        let text = text.trim();
        let body = text
            .strip_prefix(Self::PREFIX)
            .or_else(|| text.strip_prefix("URN:RFID:"))
            .unwrap_or(text);
        let mut digits = String::with_capacity(body.len());
        for c in body.chars() {
            match c {
                ':' | '-' | ' ' => {}
                c if c.is_ascii_hexdigit() => digits.push(c),
                c => return Err(TagError::NotHex(c)),
            }
        }
        if digits.is_empty() {
            return Err(TagError::Empty);
        }
        if digits.len() % 2 == 1 {
            return Err(TagError::OddLength(digits.len()));
        }
        let bytes = hex::decode(&digits).map_err(|_| TagError::OddLength(digits.len()))?;
        Self::from_bytes(&bytes)
    }

    /// Wrap a string already in canonical form (read back from our own log).
    #[must_use]
    pub fn from_canonical(text: Arc<str>) -> Self {
        Self(text)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The total order of taps: by time, then station, then sequence number.
/// Every station of a herd that holds the same taps sorts them the same way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TapKey {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub station: Arc<str>,
    pub seq: u64,
}

/// One arrival of a tag on a reader, with what it meant when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tap {
    pub station: Arc<str>,
    pub seq: u64,
    pub reader: Arc<str>,
    /// The tag's UID, upper-case hex.
    #[schema(value_type = String, example = "04A1B2C3")]
    pub tag: TagUid,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub poll: Arc<str>,
    pub answer: Arc<str>,
}

impl Tap {
    #[must_use]
    pub fn key(&self) -> TapKey {
        TapKey {
            at: self.at,
            station: self.station.clone(),
            seq: self.seq,
        }
    }
}

/// A tap as admin consumers see it (with its tag): the export's shape, plus
/// whether it counted and whether it was a repeat where that is known.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TapRecord<'a> {
    #[serde(flatten)]
    pub tap: &'a Tap,
    /// Absent in the export (it depends on everything else in the log).
    #[serde(skip_serializing_if = "Counted::is_absent")]
    #[schema(value_type = Option<bool>)]
    pub counted: Counted,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat: Option<bool>,
}

/// Whether a tap counted, as far as the sender of a record knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Counted {
    /// Not part of this record at all.
    #[serde(skip)]
    Absent,
    /// Part of the record, not known (`null`): a tap read back from the log.
    Unknown(()),
    Known(bool),
}

impl Counted {
    fn is_absent(&self) -> bool {
        *self == Counted::Absent
    }
}

impl<'a> TapRecord<'a> {
    /// The export's shape: the tap alone.
    #[must_use]
    pub fn logged(tap: &'a Tap) -> Self {
        Self {
            tap,
            counted: Counted::Absent,
            repeat: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_and_bare_forms() {
        let want = "urn:rfid:7E6FD7A0";
        for text in [
            "urn:rfid:7E6FD7A0",
            "7e6fd7a0",
            "7E:6F:D7:A0",
            "7E 6F D7 A0",
            " 7e-6f-d7-a0 ",
        ] {
            assert_eq!(TagUid::parse(text).unwrap().as_str(), want, "{text}");
        }
    }

    #[test]
    fn rejects_bad_tags_with_reasons() {
        assert_eq!(TagUid::parse(""), Err(TagError::Empty));
        assert_eq!(TagUid::parse("urn:rfid:"), Err(TagError::Empty));
        assert_eq!(TagUid::parse("7E6FD7A"), Err(TagError::OddLength(7)));
        assert_eq!(TagUid::parse("7E6FD7AZ"), Err(TagError::NotHex('Z')));
        assert_eq!(TagUid::parse("7E6FD7"), Err(TagError::BadLength(3)));
        assert_eq!(
            TagUid::parse("08123456"),
            Err(TagError::RandomId("08123456".into()))
        );
        // 7-byte UIDs may start with 08: only 4-byte ones are random.
        assert!(TagUid::parse("08123456789ABC").is_ok());
    }

    #[test]
    fn tap_order_is_time_then_station_then_seq() {
        let k = |at, st: &str, seq| TapKey {
            at,
            station: st.into(),
            seq,
        };
        let mut keys = vec![k(2, "a", 1), k(1, "b", 9), k(1, "a", 10), k(1, "a", 2)];
        keys.sort();
        assert_eq!(
            keys,
            vec![k(1, "a", 2), k(1, "a", 10), k(1, "b", 9), k(2, "a", 1)]
        );
    }

    #[test]
    fn one_tap_shape_for_every_admin_consumer() {
        let tap = Tap {
            station: "s".into(),
            seq: 3,
            reader: "r".into(),
            tag: TagUid::parse("01020304").unwrap(),
            at: 9,
            poll: "p".into(),
            answer: "a".into(),
        };
        let v = |r: &TapRecord| serde_json::to_value(r).unwrap();
        let logged = v(&TapRecord::logged(&tap));
        assert_eq!(logged, serde_json::to_value(&tap).unwrap());
        assert!(logged.get("counted").is_none() && logged.get("repeat").is_none());
        let tail = v(&TapRecord {
            tap: &tap,
            counted: Counted::Unknown(()),
            repeat: None,
        });
        assert_eq!(tail["counted"], serde_json::Value::Null);
        assert!(tail.as_object().unwrap().contains_key("counted"));
        let answer = v(&TapRecord {
            tap: &tap,
            counted: Counted::Known(true),
            repeat: Some(false),
        });
        assert_eq!(
            (answer["counted"].clone(), answer["repeat"].clone()),
            (true.into(), false.into())
        );
        assert_eq!(answer["tag"], "urn:rfid:01020304");
    }
}
