//! People: who carries a tag, and the local people file that says so.
//!
//! Pure: parsing takes the file's text; reading it is the config's job.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::tap::TagUid;
use super::text;

/// A person, as far as the station needs one (from anyMeta or the people file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Unique across sources: `anymeta:<id>` or `local:<person_id>`.
    pub id: String,
    pub name: String,
    pub first: String,
}

/// An identity answer as logged and replicated: who carries `tag`, as
/// `origin` looked it up at `at` (person `None`: unknown). Numbered gap-free
/// per origin, so one station's lookup serves the whole herd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub origin: Arc<str>,
    pub iseq: u64,
    pub tag: TagUid,
    pub person: Option<Person>,
    /// `people` or `anymeta`.
    pub source: String,
    /// When it was looked up (ms since the epoch).
    pub at: i64,
}

impl IdentityRecord {
    /// Whether this answer replaces `other` for the same tag: the last
    /// looked up wins, ties broken by origin (every station decides alike).
    #[must_use]
    pub fn wins_over(&self, other_at: i64, other_origin: &str) -> bool {
        (self.at, &*self.origin) > (other_at, other_origin)
    }
}

/// Whose vote a tap is, for the tally: a known person, else the tag itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Voter {
    Tag(TagUid),
    Id(Arc<str>),
}

/// One line of the people file that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeopleProblem {
    pub line: usize,
    pub message: String,
}

/// Read a people file: `tag,name,person_id` per line (a header line
/// `tag,name,person_id` is allowed; `#` starts a comment).
pub fn parse_people(text: &str) -> Result<HashMap<TagUid, Person>, Vec<PeopleProblem>> {
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        if line.is_empty()
            || line.starts_with('#')
            || (n == 1 && line.eq_ignore_ascii_case("tag,name,person_id"))
        {
            continue;
        }
        let mut problem = |message: String| problems.push(PeopleProblem { line: n, message });
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 3 {
            problem(format!(
                "expected 3 fields (tag,name,person_id), found {}",
                fields.len()
            ));
            continue;
        }
        let tag = match TagUid::parse(fields[0]) {
            Ok(t) => t,
            Err(e) => {
                problem(format!("tag {:?}: {e}", fields[0]));
                continue;
            }
        };
        if fields[1].is_empty() || fields[2].is_empty() {
            problem("name and person_id must not be empty".into());
            continue;
        }
        if let Some(c) = text::unprintable(fields[1]).or_else(|| text::unprintable(fields[2])) {
            problem(format!(
                "contains the control character {}: names are shown on the screen and published, remove it",
                text::code_point(c)
            ));
            continue;
        }
        let person = Person {
            id: format!("local:{}", fields[2]),
            name: fields[1].to_string(),
            first: fields[1]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
        };
        if out.insert(tag.clone(), person).is_some() {
            problem(format!("tag {} is listed twice", tag.as_str()));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_file_is_validated_with_line_numbers() {
        let ok = parse_people("tag,name,person_id\n04A1B2C3, Anna de Vries ,p1\n# comment\n\n04A1B2C4,Anna de Vries,p1\n").unwrap();
        assert_eq!(ok.len(), 2);
        let a = &ok[&TagUid::parse("04A1B2C3").unwrap()];
        assert_eq!(
            (a.id.as_str(), a.first.as_str(), a.name.as_str()),
            ("local:p1", "Anna", "Anna de Vries")
        );
        let errs = parse_people(
            "04A1B2C3,Anna\nzz,Bob,p2\n04A1B2C5,,p3\n04A1B2C6,Cy,p4\n04A1B2C6,Cy,p4\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 5], "{errs:?}");
    }

    #[test]
    fn the_last_lookup_wins_and_ties_go_by_origin() {
        let r = IdentityRecord {
            origin: "hall-b".into(),
            iseq: 1,
            tag: TagUid::parse("01020304").unwrap(),
            person: None,
            source: "anymeta".into(),
            at: 100,
        };
        assert!(r.wins_over(99, "hall-z"));
        assert!(!r.wins_over(101, "hall-a"));
        assert!(r.wins_over(100, "hall-a"));
        assert!(!r.wins_over(100, "hall-c"));
    }

    #[test]
    fn a_control_character_in_a_name_is_refused_with_its_line() {
        let errs = parse_people("04A1B2C3,Anna,p1\n04A1B2C4,Bo\u{1}b,p2\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 2);
        assert!(errs[0].message.contains("U+0001"), "{errs:?}");
    }
}
