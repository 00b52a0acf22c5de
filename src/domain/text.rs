//! Text that people read and that goes into XML: labels, questions, names.
//!
//! XML 1.0 forbids most control characters (only tab, line feed and
//! carriage return are allowed below U+0020) and U+FFFE/U+FFFF. A label or
//! a name carrying one would make every XMPP item built from it unwritable,
//! so text is checked where it enters the station (config, people file,
//! anyMeta answers) and made safe where it enters XML.

use std::borrow::Cow;

/// Whether XML 1.0 allows `c` in text.
#[must_use]
pub fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The first character a one-line text shown to people must not carry: a
/// control character (C0, DEL or C1, tabs and line breaks included) or one
/// XML forbids.
#[must_use]
pub fn unprintable(s: &str) -> Option<char> {
    s.chars().find(|&c| c.is_control() || !xml_char(c))
}

/// How to name a character in a message: `U+0001`.
#[must_use]
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// `s` with every character XML forbids replaced by U+FFFD.
#[must_use]
pub fn xml_safe(s: &str) -> Cow<'_, str> {
    if s.chars().all(xml_char) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if xml_char(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    }
}

/// `s` with control characters dropped (for names from outside services:
/// kept, but only what can be shown).
#[must_use]
pub fn printable(s: &str) -> Cow<'_, str> {
    if unprintable(s).is_none() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .filter(|&c| !c.is_control() && xml_char(c))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_and_replaced() {
        assert_eq!(unprintable("Pizza"), None);
        assert_eq!(unprintable("Piz\u{1}za"), Some('\u{1}'));
        assert_eq!(unprintable("a\tb"), Some('\t'));
        assert_eq!(unprintable("a\u{85}b"), Some('\u{85}'));
        assert_eq!(unprintable("a\u{FFFF}"), Some('\u{FFFF}'));
        assert_eq!(code_point('\u{1}'), "U+0001");
        assert_eq!(xml_safe("ok & <fine>"), "ok & <fine>");
        assert_eq!(xml_safe("a\u{1}b\u{FFFE}"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(xml_safe("tab\tok"), "tab\tok");
        assert_eq!(printable("An\u{7}na\u{1b}[31m"), "Anna[31m");
        assert!(matches!(printable("Anna"), Cow::Borrowed(_)));
        assert!("é€😀".chars().all(xml_char));
    }
}
