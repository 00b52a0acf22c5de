//! The domain's vocabulary: polls, answers, rules, tags and taps.
//!
//! Pure: no I/O, no clock, no async. Everything here can be built from a
//! config or a log row and compared in tests.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How the taps of one person in one poll become votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A person's first tap counts; later ones are kept but do not count.
    OnePerPerson,
    /// A person's latest tap counts: they can change their mind.
    LastWins,
    /// Every tap counts.
    Unlimited,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::OnePerPerson => "one-per-person",
            Rule::LastWins => "last-wins",
            Rule::Unlimited => "unlimited",
        })
    }
}

/// One answer of a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub id: String,
    pub label: String,
}

/// The static definition of a poll (from the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollDef {
    pub id: String,
    pub question: String,
    pub rule: Rule,
    pub answers: Vec<Answer>,
    /// Whether the poll is open when the log holds no open/close action for it.
    pub open: bool,
}

impl PollDef {
    /// Index of an answer by id.
    #[must_use]
    pub fn answer_index(&self, answer: &str) -> Option<usize> {
        self.answers.iter().position(|a| a.id == answer)
    }

    /// The answer id for a slot letter (`A` is the first answer).
    #[must_use]
    pub fn answer_for_slot(&self, slot: char) -> Option<&Answer> {
        let idx = slot_index(slot)?;
        self.answers.get(idx)
    }
}

/// `A` → 0, `B` → 1, … (case-insensitive).
#[must_use]
pub fn slot_index(slot: char) -> Option<usize> {
    let up = slot.to_ascii_uppercase();
    up.is_ascii_uppercase().then(|| (up as u8 - b'A') as usize)
}

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tap {
    pub station: Arc<str>,
    pub seq: u64,
    pub reader: Arc<str>,
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

/// Who a tag belongs to: an identity once one is known, else the tag itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Person {
    Tag(TagUid),
    Id(Arc<str>),
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
    fn slots_map_to_answers() {
        assert_eq!(slot_index('A'), Some(0));
        assert_eq!(slot_index('c'), Some(2));
        assert_eq!(slot_index('1'), None);
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
}
