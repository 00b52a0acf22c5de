//! SonMicro SM130: the frame codec and the commands we use.
//!
//! Frames are `FF 00 LEN CMD DATA… CSUM` both ways, with
//! `CSUM = LEN + CMD + ΣDATA (mod 256)`. The original driver trusted every
//! byte: it did not check the sum, truncated 7-byte UIDs, and waited forever
//! for a reply that lost a byte. Here the sum is checked, LEN is bounded (a
//! junk LEN cannot make us wait for 200 bytes), and the driver times out and
//! flushes, so a lost byte costs one poll.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub const CMD_RESET: u8 = 0x80;
pub const CMD_FIRMWARE: u8 = 0x81;
pub const CMD_SEEK: u8 = 0x82;
pub const CMD_SELECT: u8 = 0x83;
pub const CMD_ANTENNA: u8 = 0x90;
pub const CMD_WRITE_OUTPUT: u8 = 0x92;
pub const CMD_HALT: u8 = 0x93;

/// The largest LEN any SM130 reply has (read block: 1 + 1 + 16 bytes).
const MAX_LEN: u8 = 0x20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Reply {
        cmd: u8,
        data: Vec<u8>,
    },
    Corrupt {
        skipped: usize,
        reason: &'static str,
    },
}

#[derive(Debug, Default)]
pub struct Sm130Codec;

impl Decoder for Sm130Codec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let Some(start) = buf.windows(2).position(|w| w == [0xFF, 0x00]) else {
            let keep = usize::from(buf.last() == Some(&0xFF));
            let junk = buf.len() - keep;
            buf.advance(junk);
            return Ok((junk > 0).then_some(Frame::Corrupt {
                skipped: junk,
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
        if buf.len() < 3 {
            return Ok(None);
        }
        let len = buf[2];
        if len == 0 || len > MAX_LEN {
            buf.advance(1);
            return Ok(Some(Frame::Corrupt {
                skipped: 1,
                reason: "impossible length",
            }));
        }
        let total = 3 + usize::from(len) + 1;
        if buf.len() < total {
            return Ok(None);
        }
        let sum = buf[2..total - 1]
            .iter()
            .fold(0u8, |a, &b| a.wrapping_add(b));
        if sum != buf[total - 1] {
            // LEN may itself be the corrupt byte: resync from the next byte.
            buf.advance(1);
            return Ok(Some(Frame::Corrupt {
                skipped: 1,
                reason: "bad checksum",
            }));
        }
        let frame = Frame::Reply {
            cmd: buf[3],
            data: buf[4..total - 1].to_vec(),
        };
        buf.advance(total);
        Ok(Some(frame))
    }
}

impl Encoder<(u8, &[u8])> for Sm130Codec {
    type Error = std::io::Error;

    fn encode(&mut self, (cmd, data): (u8, &[u8]), dst: &mut BytesMut) -> Result<(), Self::Error> {
        let len = u8::try_from(data.len() + 1)
            .ok()
            .filter(|&l| l <= MAX_LEN)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "SM130 frame too long")
            })?;
        dst.put_slice(&[0xFF, 0x00, len, cmd]);
        dst.put_slice(data);
        let sum = data
            .iter()
            .fold(len.wrapping_add(cmd), |a, &b| a.wrapping_add(b));
        dst.put_u8(sum);
        Ok(())
    }
}

/// A frame (either direction).
#[must_use]
pub fn frame(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    Sm130Codec
        .encode((cmd, data), &mut b)
        .expect("our frames are short");
    b.to_vec()
}

/// What a Select Tag reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    Uid { kind: u8, uid: Vec<u8> },
    NoTag,
    RfOff,
    Other(u8),
    Malformed,
}

/// Parse the data of a Select (0x83) or Seek (0x82) reply.
#[must_use]
pub fn parse_select(data: &[u8]) -> Select {
    match data {
        [b'N'] => Select::NoTag,
        [b'U'] => Select::RfOff,
        [code] => Select::Other(*code),
        // LEN 6: type + 4-byte UID; LEN 9: type + 7-byte UID.
        [kind, uid @ ..] if uid.len() == 4 || uid.len() == 7 => Select::Uid {
            kind: *kind,
            uid: uid.to_vec(),
        },
        _ => Select::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::testutil::{decode_all, hex, split_everywhere};

    fn selects(frames: &[Frame]) -> Vec<Select> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Reply {
                    cmd: CMD_SELECT | CMD_SEEK,
                    data,
                } => Some(parse_select(data)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn encodes_the_documented_host_frames() {
        assert_eq!(frame(CMD_SELECT, &[]), hex("FF 00 01 83 84"));
        assert_eq!(frame(CMD_SEEK, &[]), hex("FF 00 01 82 83"));
        assert_eq!(frame(CMD_HALT, &[]), hex("FF 00 01 93 94"));
        assert_eq!(frame(CMD_ANTENNA, &[1]), hex("FF 00 02 90 01 93"));
        assert_eq!(frame(CMD_WRITE_OUTPUT, &[0]), hex("FF 00 02 92 00 94"));
        assert_eq!(frame(CMD_WRITE_OUTPUT, &[3]), hex("FF 00 02 92 03 97"));
        assert_eq!(frame(0x94, &[1]), hex("FF 00 02 94 01 97"));
    }

    #[test]
    fn decodes_the_vectors_split_anywhere() {
        let cases: &[(&str, Select)] = &[
            (
                "FF 00 06 83 02 DE AD BE EF C3",
                Select::Uid {
                    kind: 2,
                    uid: hex("DE AD BE EF"),
                },
            ),
            (
                "FF 00 09 83 01 04 11 22 33 44 55 66 F6",
                Select::Uid {
                    kind: 1,
                    uid: hex("04 11 22 33 44 55 66"),
                },
            ),
            ("FF 00 02 83 4E D3", Select::NoTag),
            ("FF 00 02 83 55 DA", Select::RfOff),
            ("FF 00 02 82 4C D0", Select::Other(b'L')),
            (
                "FF 00 06 82 02 1D E0 F1 58 D0",
                Select::Uid {
                    kind: 2,
                    uid: hex("1D E0 F1 58"),
                },
            ),
        ];
        for (bytes, want) in cases {
            for frames in split_everywhere(&hex(bytes), || Sm130Codec) {
                assert_eq!(selects(&frames), vec![want.clone()], "{bytes}: {frames:?}");
            }
        }
        let value = decode_all(&hex("FF 00 06 87 08 10 27 00 00 CC"), Sm130Codec);
        assert_eq!(
            value,
            vec![Frame::Reply {
                cmd: 0x87,
                data: hex("08 10 27 00 00")
            }]
        );
    }

    #[test]
    fn bad_checksum_junk_and_lost_bytes_resync() {
        let good = hex("FF 00 06 83 02 DE AD BE EF C3");
        let cases = [
            hex("FF 00 06 83 02 DE AD BE EF C4"), // bad checksum
            hex("FF 00 06 83 02 DE BE EF C3"),    // a lost byte
            hex("12 FF 34 00 FF"),                // junk
            hex("FF 00 FE"),                      // impossible length
            hex("FF 00 00"),
        ];
        for bad in cases {
            let mut stream = bad.clone();
            stream.extend_from_slice(&good);
            for frames in split_everywhere(&stream, || Sm130Codec) {
                assert_eq!(
                    selects(&frames),
                    vec![Select::Uid {
                        kind: 2,
                        uid: hex("DE AD BE EF")
                    }],
                    "{bad:02X?}: {frames:?}"
                );
                assert!(
                    frames.iter().any(|f| matches!(f, Frame::Corrupt { .. })),
                    "{bad:02X?}"
                );
            }
        }
    }

    #[test]
    fn two_replies_in_one_read() {
        let stream = hex("FF 00 02 83 4E D3 FF 00 06 83 02 DE AD BE EF C3");
        assert_eq!(
            selects(&decode_all(&stream, Sm130Codec)),
            vec![
                Select::NoTag,
                Select::Uid {
                    kind: 2,
                    uid: hex("DE AD BE EF")
                }
            ]
        );
    }
}
