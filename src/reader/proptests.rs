//! Property: random garbage interleaved with valid frames decodes to exactly
//! the valid UIDs, in order, however the stream is cut into reads.
//!
//! The garbage is any bytes except the protocol's start code (a start code
//! followed by bytes that happen to form a frame *is* a frame); start codes
//! inside junk are covered by the codecs' own tests.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::{em4100, pn532, sm130, text};

fn feed<D: Decoder<Error = std::io::Error>>(
    stream: &[u8],
    cut: usize,
    mut codec: D,
) -> Vec<D::Item> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in stream.chunks(cut.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut buf).expect("decoders never fail") {
            out.push(item);
        }
    }
    out
}

fn without(pattern: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(move |mut g| {
        // Break every occurrence of the start code.
        while let Some(i) = g.windows(pattern.len()).position(|w| w == pattern) {
            g[i] ^= 0x55;
        }
        g
    })
}

fn uid(len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn pn532_finds_every_frame(
        parts in proptest::collection::vec((without(&[0x00, 0xFF]), prop_oneof![uid(4), uid(7), uid(10)]), 1..8),
        tail in without(&[0x00, 0xFF]),
        cut in 1usize..40,
    ) {
        let mut stream = Vec::new();
        for (junk, u) in &parts {
            stream.extend_from_slice(junk);
            stream.extend_from_slice(&pn532::target_response(Some(u)));
        }
        stream.extend_from_slice(&tail);
        let got: Vec<Vec<u8>> = feed(&stream, cut, pn532::Pn532Codec)
            .into_iter()
            .filter_map(|f| match f {
                pn532::Frame::Info { code: 0x4B, data, .. } => match pn532::parse_targets(&data) {
                    pn532::Target::Uid(u) => Some(u),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let want: Vec<Vec<u8>> = parts.into_iter().map(|(_, u)| u).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn sm130_finds_every_frame(
        parts in proptest::collection::vec((without(&[0xFF, 0x00]), prop_oneof![uid(4), uid(7)]), 1..8),
        cut in 1usize..40,
    ) {
        let mut stream = Vec::new();
        for (junk, u) in &parts {
            stream.extend_from_slice(junk);
            let mut d = vec![0x02];
            d.extend_from_slice(u);
            stream.extend_from_slice(&sm130::frame(sm130::CMD_SELECT, &d));
        }
        let got: Vec<Vec<u8>> = feed(&stream, cut, sm130::Sm130Codec)
            .into_iter()
            .filter_map(|f| match f {
                sm130::Frame::Reply { cmd: sm130::CMD_SELECT, data } => match sm130::parse_select(&data) {
                    sm130::Select::Uid { uid, .. } => Some(uid),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let want: Vec<Vec<u8>> = parts.into_iter().map(|(_, u)| u).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn em4100_finds_every_frame(
        parts in proptest::collection::vec((without(&[0x02]), any::<[u8; 5]>(), any::<bool>()), 1..8),
        cut in 1usize..40,
    ) {
        let mut stream = Vec::new();
        for (junk, id, crlf) in &parts {
            stream.extend_from_slice(junk);
            stream.extend_from_slice(&em4100::frame(*id, *crlf));
        }
        let got: Vec<[u8; 5]> = feed(&stream, cut, em4100::Em4100Codec)
            .into_iter()
            .filter_map(|f| match f {
                em4100::Frame::Id(id) => Some(id),
                em4100::Frame::Corrupt { .. } => None,
            })
            .collect();
        let want: Vec<[u8; 5]> = parts.into_iter().map(|(_, id, _)| id).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn text_finds_every_line(
        parts in proptest::collection::vec((without(b"\n"), prop_oneof![uid(4), uid(7), uid(10)]), 1..8),
        cut in 1usize..40,
    ) {
        // Line noise spoils the line it is on: each junk run is a line of its own.
        let mut stream = Vec::new();
        for (junk, u) in &parts {
            stream.extend_from_slice(junk);
            stream.extend_from_slice(b"\r\n");
            let hex: Vec<String> = u.iter().map(|b| format!("{b:02X}")).collect();
            stream.extend_from_slice(format!("Card UID: {}\r\n", hex.join(" ")).as_bytes());
        }
        let got: Vec<Vec<u8>> = feed(&stream, cut, text::TextCodec::default())
            .into_iter()
            .filter_map(|l| match l {
                text::Line::Uid(u) => Some(u),
                _ => None,
            })
            .collect();
        let want: Vec<Vec<u8>> = parts.into_iter().map(|(_, u)| u).collect();
        prop_assert_eq!(got, want);
    }
}
