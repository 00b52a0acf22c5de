//! 125 kHz EM4100 readers that push ASCII frames: ID-Innovations ID-12/ID-20
//! (`02` + 10 hex + 2 hex checksum + `0D 0A` + `03`) and RDM6300 (the same
//! without CR LF). One decoder serves both: start at STX, collect to ETX,
//! drop CR and LF, require exactly 12 hex digits, check the XOR of the five
//! data bytes. A new STX before the ETX starts over (the old frame was cut),
//! so a stream that begins mid-frame costs only that frame.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

const STX: u8 = 0x02;
const ETX: u8 = 0x03;
/// Longest STX…ETX span we wait for (16 bytes is an ID-12 frame).
const MAX_FRAME: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The five data bytes (version/customer byte + 4 ID bytes).
    Id([u8; 5]),
    Corrupt {
        skipped: usize,
        reason: &'static str,
    },
}

#[derive(Debug, Default)]
pub struct Em4100Codec;

impl Decoder for Em4100Codec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let Some(start) = buf.iter().position(|&b| b == STX) else {
            let n = buf.len();
            buf.advance(n);
            return Ok((n > 0).then_some(Frame::Corrupt {
                skipped: n,
                reason: "bytes outside a frame",
            }));
        };
        if start > 0 {
            buf.advance(start);
            return Ok(Some(Frame::Corrupt {
                skipped: start,
                reason: "bytes outside a frame",
            }));
        }
        // buf[0] is STX. Find ETX, or another STX that cuts this frame short.
        let end = buf[1..]
            .iter()
            .take(MAX_FRAME)
            .position(|&b| b == ETX || b == STX)
            .map(|i| i + 1);
        let Some(end) = end else {
            if buf.len() > MAX_FRAME {
                buf.advance(1);
                return Ok(Some(Frame::Corrupt {
                    skipped: 1,
                    reason: "no end of frame",
                }));
            }
            return Ok(None);
        };
        if buf[end] == STX {
            buf.advance(end);
            return Ok(Some(Frame::Corrupt {
                skipped: end,
                reason: "frame cut short",
            }));
        }
        let body: Vec<u8> = buf[1..end]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        buf.advance(end + 1);
        Ok(Some(parse_body(&body).unwrap_or_else(|reason| {
            Frame::Corrupt {
                skipped: end + 1,
                reason,
            }
        })))
    }
}

fn parse_body(body: &[u8]) -> Result<Frame, &'static str> {
    if body.len() != 12 {
        return Err("not 12 hex digits");
    }
    let text = std::str::from_utf8(body).map_err(|_| "not ASCII")?;
    let bytes = hex::decode(text).map_err(|_| "not hex")?;
    let mut id = [0u8; 5];
    id.copy_from_slice(&bytes[..5]);
    let xor = id.iter().fold(0u8, |a, &b| a ^ b);
    if xor != bytes[5] {
        return Err("bad checksum");
    }
    Ok(Frame::Id(id))
}

/// A frame as a reader sends it (`crlf`: ID-12 style).
#[must_use]
pub fn frame(id: [u8; 5], crlf: bool) -> Vec<u8> {
    let xor = id.iter().fold(0u8, |a, &b| a ^ b);
    let mut out = vec![STX];
    out.extend_from_slice(hex::encode_upper(id).as_bytes());
    out.extend_from_slice(format!("{xor:02X}").as_bytes());
    if crlf {
        out.extend_from_slice(b"\r\n");
    }
    out.push(ETX);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::testutil::{decode_all, hex, split_everywhere};

    fn ids(frames: &[Frame]) -> Vec<[u8; 5]> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Id(id) => Some(*id),
                Frame::Corrupt { .. } => None,
            })
            .collect()
    }

    fn id(s: &str) -> [u8; 5] {
        hex(s).try_into().unwrap()
    }

    #[test]
    fn id12_vectors() {
        let cases = [
            (
                "02 30 43 30 30 30 36 32 31 41 35 38 45 0D 0A 03",
                "0C 00 06 21 A5",
            ),
            (
                "02 36 37 30 30 33 42 35 31 43 36 43 42 0D 0A 03",
                "67 00 3B 51 C6",
            ),
            (
                "02 30 34 31 35 44 39 41 33 42 37 44 43 0D 0A 03",
                "04 15 D9 A3 B7",
            ),
        ];
        for (bytes, want) in cases {
            for frames in split_everywhere(&hex(bytes), || Em4100Codec) {
                assert_eq!(frames, vec![Frame::Id(id(want))], "{bytes}");
            }
            assert_eq!(frame(id(want), true), hex(bytes));
        }
        // I4: checksum "CC" instead of "CB".
        let bad = decode_all(
            &hex("02 36 37 30 30 33 42 35 31 43 36 43 43 0D 0A 03"),
            Em4100Codec,
        );
        assert!(
            matches!(
                bad[..],
                [Frame::Corrupt {
                    reason: "bad checksum",
                    ..
                }]
            ),
            "{bad:?}"
        );
    }

    #[test]
    fn rdm6300_vectors() {
        let stx = |s: &str| {
            let mut v = vec![STX];
            v.extend_from_slice(s.as_bytes());
            v.push(ETX);
            v
        };
        for (text, want) in [
            ("67003B51C6CB", "67 00 3B 51 C6"),
            ("67003BA86C98", "67 00 3B A8 6C"),
            ("67003BA86793", "67 00 3B A8 67"),
        ] {
            assert_eq!(ids(&decode_all(&stx(text), Em4100Codec)), vec![id(want)]);
        }
        // R4 bad checksum, R5 too long: skipped.
        assert!(ids(&decode_all(&stx("68003B51C6CB"), Em4100Codec)).is_empty());
        assert!(ids(&decode_all(&stx("68003B51C6CBDA"), Em4100Codec)).is_empty());
        // R6: a stream that starts mid-frame, then R1.
        let mut stream = b"67003B51C6CB".to_vec();
        stream.push(ETX);
        stream.extend_from_slice(&stx("67003B51C6CB"));
        for frames in split_everywhere(&stream, || Em4100Codec) {
            assert_eq!(ids(&frames), vec![id("67 00 3B 51 C6")]);
        }
    }

    #[test]
    fn garbage_between_and_cut_frames() {
        let good = frame(id("04 15 D9 A3 B7"), false);
        let mut stream = hex("FF 00 41 02 30 34 31");
        stream.extend_from_slice(&good);
        stream.extend_from_slice(&hex("0D 0A 99"));
        stream.extend_from_slice(&good);
        for frames in split_everywhere(&stream, || Em4100Codec) {
            assert_eq!(ids(&frames), vec![id("04 15 D9 A3 B7"); 2]);
        }
        // An STX with no ETX for ever does not stall the decoder.
        let mut stream = vec![STX];
        stream.extend_from_slice(&[b'A'; 40]);
        stream.extend_from_slice(&good);
        assert_eq!(
            ids(&decode_all(&stream, Em4100Codec)),
            vec![id("04 15 D9 A3 B7")]
        );
    }
}
