//! Text-line readers: an Arduino + MFRC522 sketch (ours is in
//! `firmware-notes/`) or anything that prints one UID per line.
//!
//! Accepted, case-insensitive, after an optional label such as `UID:`,
//! `Card UID:`, `Reader 0: Card UID:` or `In hex:`:
//! - space-, colon- or dash-separated tokens of 1–2 hex digits (4, 7 or 10);
//! - one run of 8, 10, 14 or 20 hex digits;
//! - exactly 10 decimal digits: a 4-byte UID as a big-endian number (use
//!   `uid_order = "reversed"` for readers that print it little-endian).
//!
//! Odd-length runs (`4A1B2C3`, a sketch that dropped a leading zero) are
//! rejected, not guessed. Lines with another label (`Card SAK: 08`,
//! `In dec: …`), banners after a board reset and empty lines are ignored.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Longest line we keep; longer ones are junk.
const MAX_LINE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Uid(Vec<u8>),
    /// The sketch reports the card was lifted.
    Removed,
    /// Not a UID line (banner, other label): nothing to do.
    Ignored(String),
    /// Looked like a UID but cannot be one.
    Rejected {
        line: String,
        reason: &'static str,
    },
    /// An over-long run without a newline was dropped.
    Corrupt {
        skipped: usize,
    },
}

#[derive(Debug, Default)]
pub struct TextCodec {
    /// Inside an over-long line: drop bytes until the next newline.
    discarding: bool,
}

impl Decoder for TextCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_LINE {
                let n = buf.len();
                buf.advance(n);
                self.discarding = true;
                return Ok(Some(Line::Corrupt { skipped: n }));
            }
            return Ok(None);
        };
        let raw = buf.split_to(nl + 1);
        if std::mem::take(&mut self.discarding) {
            return Ok(Some(Line::Corrupt { skipped: raw.len() }));
        }
        if raw.len() > MAX_LINE {
            return Ok(Some(Line::Corrupt { skipped: raw.len() }));
        }
        Ok(Some(parse_line(&String::from_utf8_lossy(&raw))))
    }
}

/// Interpret one line (without caring about its line ending).
#[must_use]
pub fn parse_line(line: &str) -> Line {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if line.is_empty() {
        return Line::Ignored(String::new());
    }
    let lower = line.to_ascii_lowercase();
    if lower == "removed" || lower == "card removed" {
        return Line::Removed;
    }
    // Strip labels: text before a ':' that has a letter which is not a hex
    // digit ("UID", "Card UID", "Reader 0", "In hex"). "DE:AD:BE:EF" has none.
    let mut rest = line;
    let mut uid_label = true;
    while let Some((label, after)) = rest.split_once(':') {
        let is_label = label
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
        if !is_label {
            break;
        }
        let l = label.to_ascii_lowercase();
        uid_label = l.contains("uid") || l.contains("hex") || l.contains("reader");
        rest = after.trim();
    }
    if !uid_label {
        return Line::Ignored(line.to_string());
    }
    parse_uid(rest).unwrap_or_else(|reason| {
        if reason.is_empty() {
            Line::Ignored(line.to_string())
        } else {
            Line::Rejected {
                line: line.to_string(),
                reason,
            }
        }
    })
}

/// `Err("")` means "not UID-like at all" (a banner); other errors are a
/// UID-like line that cannot be read unambiguously.
fn parse_uid(text: &str) -> Result<Line, &'static str> {
    let tokens: Vec<&str> = text
        .split([' ', ':', '-', '\t'])
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty()
        || !tokens
            .iter()
            .all(|t| t.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err("");
    }
    if tokens.len() == 1 {
        let t = tokens[0];
        if t.len() == 10 && t.chars().all(|c| c.is_ascii_digit()) {
            let n: u64 = t.parse().map_err(|_| "not a number")?;
            let n = u32::try_from(n).map_err(|_| "10-digit number larger than 4 bytes")?;
            return Ok(Line::Uid(n.to_be_bytes().to_vec()));
        }
        if t.len() % 2 == 1 {
            return Err("odd number of hex digits: a leading zero was probably lost");
        }
        if !matches!(t.len(), 8 | 10 | 14 | 20) {
            return Err("not 4, 5, 7 or 10 bytes of hex");
        }
        return hex::decode(t).map(Line::Uid).map_err(|_| "not hex");
    }
    if tokens.iter().any(|t| t.len() > 2) {
        return Err("separated tokens must be 1–2 hex digits each");
    }
    if !matches!(tokens.len(), 4 | 7 | 10) {
        return Err("not 4, 7 or 10 bytes");
    }
    tokens
        .iter()
        .map(|t| u8::from_str_radix(t, 16).map_err(|_| "not hex"))
        .collect::<Result<Vec<u8>, _>>()
        .map(Line::Uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::testutil::{decode_all, hex, split_everywhere};

    fn uid(s: &str) -> Line {
        Line::Uid(hex(s))
    }

    #[test]
    fn reference_vectors() {
        let cases = [
            ("Card UID: DE AD BE EF\r\n", uid("DE AD BE EF")),
            (
                "Card UID: 04 7B CB 51 96 22 80\r\n",
                uid("04 7B CB 51 96 22 80"),
            ),
            ("UID: de ad be ef\r\n", uid("DE AD BE EF")),
            ("DEADBEEF\r\n", uid("DE AD BE EF")),
            ("In hex:  0A 0B 0C 0D\r\n", uid("0A 0B 0C 0D")),
            ("3735928559\r\n", uid("DE AD BE EF")),
            ("0514229873\r\n", uid("1E A6 86 71")),
            ("Reader 0: Card UID: DE AD BE EF\r\n", uid("DE AD BE EF")),
            ("DE:AD:BE:EF\n", uid("DE AD BE EF")),
            ("4 A1 B2 C3\r\n", uid("04 A1 B2 C3")),
            ("UID:047BCB51962280\n", uid("04 7B CB 51 96 22 80")),
        ];
        for (bytes, want) in cases {
            for frames in split_everywhere(bytes.as_bytes(), TextCodec::default) {
                assert_eq!(frames, vec![want.clone()], "{bytes:?}");
            }
        }
    }

    #[test]
    fn ambiguous_lines_are_rejected_not_guessed() {
        for line in [
            "4A1B2C3",
            "UID: DEADBEE",
            "DE AD BE",
            "DEAD BEEF",
            "9999999999",
            "DEADBEEF01",
        ] {
            let got = parse_line(line);
            if line == "DEADBEEF01" {
                assert_eq!(
                    got,
                    uid("DE AD BE EF 01"),
                    "5-byte EM4100 IDs are hex runs of 10"
                );
                continue;
            }
            assert!(matches!(got, Line::Rejected { .. }), "{line}: {got:?}");
        }
    }

    #[test]
    fn banners_and_other_labels_are_ignored() {
        for line in [
            "Firmware Version: 0x92 = v2.0",
            "Scan PICC to see UID, SAK, type, and data blocks...",
            "WARNING: Communication failure, is the MFRC522 properly connected?",
            "Card SAK: 08",
            "PICC type: MIFARE 1KB",
            "In dec:  222 173 190 239",
            "",
            "ready",
        ] {
            assert!(
                matches!(parse_line(line), Line::Ignored(_)),
                "{line}: {:?}",
                parse_line(line)
            );
        }
        assert_eq!(parse_line("Card removed"), Line::Removed);
    }

    #[test]
    fn junk_and_overlong_lines_do_not_stall() {
        let mut stream = vec![0xFFu8; 300];
        stream.extend_from_slice(b"\r\nDEADBEEF\r\n\x00\x07garbage\x01\nUID: 01 02 03 04\n");
        let lines = decode_all(&stream, TextCodec::default());
        let uids: Vec<&Line> = lines.iter().filter(|l| matches!(l, Line::Uid(_))).collect();
        assert_eq!(
            uids,
            vec![&uid("DE AD BE EF"), &uid("01 02 03 04")],
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| matches!(l, Line::Corrupt { .. })));
    }
}
