//! NXP PN532 over HSU: the frame codec and the command set we use.
//!
//! Frames are `00 00 FF LEN LCS TFI PD… DCS 00` in both directions, with
//! `LEN + LCS == 0` and `TFI + PD… + DCS == 0` (mod 256); ACK is
//! `00 00 FF 00 FF 00`, NACK `00 00 FF FF 00 00`. The decoder hunts for the
//! `00 FF` start code, so leading preamble zeros, wake-up zeros and junk are
//! skipped; a frame whose LCS, TFI or DCS is wrong is dropped and the hunt
//! goes on from the byte after its start code. The postamble is not required (some
//! clones omit it); a missing one costs nothing.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Frame identifier, host → PN532.
pub const TFI_HOST: u8 = 0xD4;
/// Frame identifier, PN532 → host.
pub const TFI_CHIP: u8 = 0xD5;

pub const CMD_DIAGNOSE: u8 = 0x00;
pub const CMD_GET_FIRMWARE: u8 = 0x02;
pub const CMD_READ_REGISTER: u8 = 0x06;
pub const CMD_WRITE_REGISTER: u8 = 0x08;
pub const CMD_WRITE_GPIO: u8 = 0x0E;
pub const CMD_SET_PARAMETERS: u8 = 0x12;
pub const CMD_SAM_CONFIGURATION: u8 = 0x14;
pub const CMD_POWER_DOWN: u8 = 0x16;
pub const CMD_RF_CONFIGURATION: u8 = 0x32;
pub const CMD_IN_DATA_EXCHANGE: u8 = 0x40;
pub const CMD_IN_COMMUNICATE_THRU: u8 = 0x42;
pub const CMD_IN_DESELECT: u8 = 0x44;
pub const CMD_IN_LIST_PASSIVE_TARGET: u8 = 0x4A;
pub const CMD_IN_RELEASE: u8 = 0x52;
pub const CMD_IN_AUTO_POLL: u8 = 0x60;

/// HSU wake-up: `55 55` and zeros (libnfc sends fourteen), then a command.
pub const WAKE_UP: [u8; 16] = [0x55, 0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
pub const ACK: [u8; 6] = [0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00];
pub const NACK: [u8; 6] = [0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00];

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Ack,
    Nack,
    /// The application-level error frame (`00 00 FF 01 FF 7F 81 00`).
    Error,
    /// An information frame: `tfi`, then `code` (PD0) and the rest of the data.
    Info {
        tfi: u8,
        code: u8,
        data: Vec<u8>,
    },
    /// Bytes skipped to resynchronise (junk, or a frame with a bad checksum).
    Corrupt {
        skipped: usize,
        reason: &'static str,
    },
}

/// Codec for PN532 frames (both directions: the simulator decodes host frames).
#[derive(Debug, Default)]
pub struct Pn532Codec;

impl Decoder for Pn532Codec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        // Hunt for the start code. Zeros before it are preamble, not junk.
        let Some(start) = buf.windows(2).position(|w| w == [0x00, 0xFF]) else {
            // Keep a trailing 00 (it may begin a start code); drop the rest.
            let keep = usize::from(buf.last() == Some(&0x00));
            let junk = buf[..buf.len() - keep].iter().filter(|&&b| b != 0).count();
            buf.advance(buf.len() - keep);
            return Ok((junk > 0).then_some(Frame::Corrupt {
                skipped: junk,
                reason: "bytes outside a frame",
            }));
        };
        let junk = buf[..start].iter().filter(|&&b| b != 0).count();
        if junk > 0 {
            buf.advance(start);
            return Ok(Some(Frame::Corrupt {
                skipped: junk,
                reason: "bytes outside a frame",
            }));
        }
        buf.advance(start);
        // buf now starts with 00 FF.
        if buf.len() < 4 {
            return Ok(None);
        }
        let (len, lcs) = (buf[2], buf[3]);
        match (len, lcs) {
            (0x00, 0xFF) => {
                buf.advance(4);
                skip_postamble(buf);
                return Ok(Some(Frame::Ack));
            }
            (0xFF, 0x00) => {
                buf.advance(4);
                skip_postamble(buf);
                return Ok(Some(Frame::Nack));
            }
            _ => {}
        }
        if len.wrapping_add(lcs) != 0 || len == 0 {
            // Not a frame (or an extended frame, which we never ask for).
            buf.advance(1);
            return Ok(Some(Frame::Corrupt {
                skipped: 1,
                reason: "bad length checksum",
            }));
        }
        // The frame identifier: D4 or D5 (7F for the error frame). Junk
        // after a postamble can look like a start code with a matching
        // length checksum; without this check such a header would hold up
        // the real frame behind it until LEN bytes had come.
        match buf.get(4) {
            None => return Ok(None),
            Some(&(TFI_HOST | TFI_CHIP)) => {}
            Some(&0x7F) if len == 1 => {}
            Some(_) => {
                buf.advance(1);
                return Ok(Some(Frame::Corrupt {
                    skipped: 1,
                    reason: "bad frame identifier",
                }));
            }
        }
        let len = usize::from(len);
        let total = 4 + len + 1; // start code, LEN, LCS, TFI+data, DCS
        if buf.len() < total {
            return Ok(None);
        }
        let body = &buf[4..4 + len];
        let dcs = buf[4 + len];
        let sum = body.iter().fold(dcs, |a, &b| a.wrapping_add(b));
        if sum != 0 {
            // Skip only the start code: LEN/LCS may have been junk that
            // happened to agree, and a good frame may begin inside.
            buf.advance(2);
            return Ok(Some(Frame::Corrupt {
                skipped: total,
                reason: "bad data checksum",
            }));
        }
        let frame = if len == 1 && body[0] == 0x7F {
            Frame::Error
        } else if len >= 2 {
            Frame::Info {
                tfi: body[0],
                code: body[1],
                data: body[2..].to_vec(),
            }
        } else {
            Frame::Corrupt {
                skipped: total,
                reason: "frame too short",
            }
        };
        buf.advance(total);
        skip_postamble(buf);
        Ok(Some(frame))
    }
}

fn skip_postamble(buf: &mut BytesMut) {
    if buf.first() == Some(&0x00) && buf.get(1) != Some(&0xFF) {
        buf.advance(1);
    }
}

/// Build an information frame.
#[must_use]
pub fn frame(tfi: u8, code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 9);
    let mut codec = Pn532Codec;
    let mut b = BytesMut::new();
    codec
        .encode((tfi, code, data), &mut b)
        .expect("frames up to 253 data bytes encode");
    out.extend_from_slice(&b);
    out
}

impl Encoder<(u8, u8, &[u8])> for Pn532Codec {
    type Error = std::io::Error;

    fn encode(
        &mut self,
        (tfi, code, data): (u8, u8, &[u8]),
        dst: &mut BytesMut,
    ) -> Result<(), Self::Error> {
        let len = u8::try_from(data.len() + 2).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "PN532 frame too long")
        })?;
        dst.reserve(data.len() + 9);
        dst.put_slice(&[0x00, 0x00, 0xFF, len, len.wrapping_neg(), tfi, code]);
        dst.put_slice(data);
        let sum = data
            .iter()
            .fold(tfi.wrapping_add(code), |a, &b| a.wrapping_add(b));
        dst.put_u8(sum.wrapping_neg());
        dst.put_u8(0x00);
        Ok(())
    }
}

/// Host → PN532 command frame.
#[must_use]
pub fn command(code: u8, data: &[u8]) -> Vec<u8> {
    frame(TFI_HOST, code, data)
}

/// SAMConfiguration, normal mode, no timeout: leaves LowVbat after wake-up.
#[must_use]
pub fn sam_configuration() -> Vec<u8> {
    command(CMD_SAM_CONFIGURATION, &[0x01])
}

/// RFConfiguration MaxRetries: one passive activation try, so "no tag" is
/// answered at once instead of never.
#[must_use]
pub fn finite_retries() -> Vec<u8> {
    command(CMD_RF_CONFIGURATION, &[0x05, 0x00, 0x01, 0x01])
}

/// RFConfiguration: RF field on or off. Off between polls makes a card that
/// stays in the field answer the next poll again from IDLE.
#[must_use]
pub fn rf_field(on: bool) -> Vec<u8> {
    command(CMD_RF_CONFIGURATION, &[0x01, u8::from(on)])
}

/// InListPassiveTarget: one target, 106 kbps type A.
#[must_use]
pub fn in_list_passive_target() -> Vec<u8> {
    command(CMD_IN_LIST_PASSIVE_TARGET, &[0x01, 0x00])
}

/// What an InListPassiveTarget response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    None,
    Uid(Vec<u8>),
    /// The response did not parse (e.g. an NFCID length that is not 4/7/10).
    Malformed(&'static str),
}

/// Parse the data of a `D5 4B` response (after the code byte).
#[must_use]
pub fn parse_targets(data: &[u8]) -> Target {
    match data.first() {
        None => Target::Malformed("empty response"),
        Some(0) => Target::None,
        Some(_) => {
            // NbTg, Tg, SENS_RES(2), SEL_RES, NFCIDLength, NFCID1…
            let Some(&n) = data.get(5) else {
                return Target::Malformed("response too short");
            };
            let n = usize::from(n);
            if !matches!(n, 4 | 7 | 10) {
                return Target::Malformed("NFCID length is not 4, 7 or 10");
            }
            match data.get(6..6 + n) {
                Some(uid) => Target::Uid(uid.to_vec()),
                None => Target::Malformed("UID cut short"),
            }
        }
    }
}

/// A chip-side answer to InListPassiveTarget (for the simulator and tests).
#[must_use]
pub fn target_response(uid: Option<&[u8]>) -> Vec<u8> {
    match uid {
        None => frame(TFI_CHIP, CMD_IN_LIST_PASSIVE_TARGET + 1, &[0x00]),
        Some(uid) => {
            let mut d = vec![0x01];
            d.extend_from_slice(&target_data(uid));
            frame(TFI_CHIP, CMD_IN_LIST_PASSIVE_TARGET + 1, &d)
        }
    }
}

/// One ISO 14443-A target as the PN532 describes it: `Tg SENS_RES(2)
/// SEL_RES NFCIDLength NFCID…` (a 7-byte UID is an Ultralight, SAK 00;
/// a 4-byte one a MIFARE Classic 1K, SAK 08).
#[must_use]
pub fn target_data(uid: &[u8]) -> Vec<u8> {
    let (atqa, sak): ([u8; 2], u8) = if uid.len() == 7 {
        ([0x00, 0x44], 0x00)
    } else {
        ([0x00, 0x04], 0x08)
    };
    let mut d = vec![
        0x01,
        atqa[0],
        atqa[1],
        sak,
        u8::try_from(uid.len()).unwrap_or(4),
    ];
    d.extend_from_slice(uid);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::testutil::{decode_all, hex, split_everywhere};

    fn uid_of(frames: &[Frame]) -> Vec<Target> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Info {
                    tfi: TFI_CHIP,
                    code: 0x4B,
                    data,
                } => Some(parse_targets(data)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn encodes_the_documented_host_frames() {
        assert_eq!(
            in_list_passive_target(),
            hex("00 00 FF 04 FC D4 4A 01 00 E1 00")
        );
        assert_eq!(sam_configuration(), hex("00 00 FF 03 FD D4 14 01 17 00"));
        assert_eq!(rf_field(false), hex("00 00 FF 04 FC D4 32 01 00 F9 00"));
        assert_eq!(rf_field(true), hex("00 00 FF 04 FC D4 32 01 01 F8 00"));
        assert_eq!(
            command(CMD_GET_FIRMWARE, &[]),
            hex("00 00 FF 02 FE D4 02 2A 00")
        );
        assert_eq!(
            command(CMD_RF_CONFIGURATION, &[0x05, 0x00, 0x01, 0x02]),
            hex("00 00 FF 06 FA D4 32 05 00 01 02 F2 00")
        );
    }

    #[test]
    fn decodes_captured_and_derived_vectors() {
        let cases: &[(&str, Target)] = &[
            (
                "00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 9E B3 6E 66 A9 00",
                Target::Uid(hex("9E B3 6E 66")),
            ),
            (
                "00 00 FF 0C F4 D5 4B 01 01 00 02 18 04 8A 4C B5 12 23 00",
                Target::Uid(hex("8A 4C B5 12")),
            ),
            (
                "00 00 FF 0F F1 D5 4B 01 01 00 44 00 07 04 7B CB 51 96 22 80 C0 00",
                Target::Uid(hex("04 7B CB 51 96 22 80")),
            ),
            (
                "00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 6E 8A E2 B0 44 00",
                Target::Uid(hex("6E 8A E2 B0")),
            ),
            ("00 00 FF 03 FD D5 4B 00 E0 00", Target::None),
            (
                "00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 DE AD BE EF 96 00",
                Target::Uid(hex("DE AD BE EF")),
            ),
            (
                "00 00 FF 15 EB D5 4B 01 01 03 44 20 07 04 11 22 33 44 55 66 06 75 77 81 02 80 12 00",
                Target::Uid(hex("04 11 22 33 44 55 66")),
            ),
        ];
        for (bytes, want) in cases {
            for frames in split_everywhere(&hex(bytes), || Pn532Codec) {
                assert_eq!(uid_of(&frames), vec![want.clone()], "{bytes}");
                assert!(
                    !frames.iter().any(|f| matches!(f, Frame::Corrupt { .. })),
                    "{bytes}: {frames:?}"
                );
            }
        }
    }

    #[test]
    fn ten_byte_uids() {
        let uid = hex("04 01 02 03 04 05 06 07 08 09");
        let mut d = vec![0x01, 0x01, 0x00, 0x44, 0x00, 10];
        d.extend_from_slice(&uid);
        let f = frame(TFI_CHIP, 0x4B, &d);
        assert_eq!(uid_of(&decode_all(&f, Pn532Codec)), vec![Target::Uid(uid)]);
    }

    #[test]
    fn ack_then_response_in_one_read() {
        let bytes =
            hex("00 00 FF 00 FF 00 00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 D1 AA 40 EA 29 00");
        for frames in split_everywhere(&bytes, || Pn532Codec) {
            assert_eq!(frames[0], Frame::Ack);
            assert_eq!(uid_of(&frames), vec![Target::Uid(hex("D1 AA 40 EA"))]);
            assert_eq!(frames.len(), 2, "{frames:?}");
        }
        let captured = hex("00 00 FF 00 FF 00 00 00 FF 02 FE D5 15 16 00");
        let frames = decode_all(&captured, Pn532Codec);
        assert_eq!(
            frames,
            vec![
                Frame::Ack,
                Frame::Info {
                    tfi: TFI_CHIP,
                    code: 0x15,
                    data: vec![]
                }
            ]
        );
        let fw = decode_all(&hex("00 00 FF 06 FA D5 03 32 01 06 07 E8 00"), Pn532Codec);
        assert_eq!(
            fw,
            vec![Frame::Info {
                tfi: TFI_CHIP,
                code: 0x03,
                data: hex("32 01 06 07")
            }]
        );
    }

    #[test]
    fn nack_and_error_frames() {
        assert_eq!(decode_all(&NACK, Pn532Codec), vec![Frame::Nack]);
        assert_eq!(
            decode_all(&hex("00 00 FF 01 FF 7F 81 00"), Pn532Codec),
            vec![Frame::Error]
        );
    }

    #[test]
    fn corrupt_frames_are_skipped_and_the_next_one_read() {
        let good = hex("00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 DE AD BE EF 96 00");
        let bad_dcs = hex("00 00 FF 0C F4 D5 4B 01 01 00 04 08 04 9E B3 6E 66 AA 00");
        let bad_lcs = hex("00 00 FF 0C F5 D5 4B 01 01 00 04 08 04 9E B3 6E 66 A9 00");
        for bad in [bad_dcs, bad_lcs, hex("13 37 FF 42"), hex("00 FF 00")] {
            let mut stream = bad.clone();
            stream.extend_from_slice(&good);
            for frames in split_everywhere(&stream, || Pn532Codec) {
                assert_eq!(
                    uid_of(&frames),
                    vec![Target::Uid(hex("DE AD BE EF"))],
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
    fn malformed_target_responses_are_reported() {
        assert_eq!(parse_targets(&[]), Target::Malformed("empty response"));
        assert_eq!(
            parse_targets(&hex("01 01 00 04 08 05 01 02 03 04 05")),
            Target::Malformed("NFCID length is not 4, 7 or 10")
        );
        assert_eq!(
            parse_targets(&hex("01 01 00 04 08 04 01 02")),
            Target::Malformed("UID cut short")
        );
    }
}
