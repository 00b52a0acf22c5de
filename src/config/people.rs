//! Reading the people file (`[identity] people`): its text is parsed by the
//! domain ([`crate::domain::person::parse_people`]); problems come back as
//! `FILE:LINE: message`, one per line.

use std::collections::HashMap;
use std::path::Path;

use crate::domain::person::parse_people;
use crate::domain::{Person, TagUid};

/// Why the people file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeopleFileError(String);

/// Read and parse the people file.
pub fn load(path: &Path) -> Result<HashMap<TagUid, Person>, PeopleFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PeopleFileError(format!("{}: {e}", path.display())))?;
    parse_people(&text).map_err(|ps| {
        PeopleFileError(
            ps.iter()
                .map(|p| format!("{}:{}: {}", path.display(), p.line, p.message))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}
