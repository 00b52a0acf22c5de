//! Who carries which tag, as far as answered (this station's lookups and
//! the herd's, the last looked up winning), and which tags wait for a
//! lookup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::{IdentityRecord, Person, TagUid};

/// Who carries which tag, as far as answered, and what is still asked.
#[derive(Debug, Default)]
pub(super) struct People {
    /// Resolved tags: person (None = unknown), when, and by which station.
    pub(super) known: HashMap<TagUid, (Option<Person>, i64, Arc<str>)>,
    /// Tags waiting for a lookup.
    pub(super) pending: HashSet<TagUid>,
    /// How many tags resolved to a person (kept: read with every snapshot).
    pub(super) resolved: u64,
}

impl People {
    pub(super) fn insert(
        &mut self,
        tag: TagUid,
        person: Option<Person>,
        at: i64,
        origin: Arc<str>,
    ) {
        let now = person.is_some();
        let before = self
            .known
            .insert(tag, (person, at, origin))
            .is_some_and(|(p, _, _)| p.is_some());
        match (before, now) {
            (false, true) => self.resolved += 1,
            (true, false) => self.resolved -= 1,
            _ => {}
        }
    }

    pub(super) fn person(&self, tag: &TagUid) -> Option<&Person> {
        self.known.get(tag).and_then(|(p, _, _)| p.as_ref())
    }

    /// Whether `r` is the answer for its tag now: none known, or it wins
    /// over the one known (last looked up; ties by origin).
    pub(super) fn would_win(&self, r: &IdentityRecord) -> bool {
        self.known
            .get(&r.tag)
            .is_none_or(|(_, at, origin)| r.wins_over(*at, origin))
    }

    pub(super) fn knows(&self, tag: &TagUid) -> bool {
        self.known.contains_key(tag)
    }
}
