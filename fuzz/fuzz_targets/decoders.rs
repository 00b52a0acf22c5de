//! Every reader decoder on arbitrary bytes, fed in arbitrary chunks: no
//! panic, no stall (each call either makes progress or waits for more), and
//! every UID it yields has a length a tag can have.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pollstation::reader::{em4100, pn532, sm130, text};
use tokio_util::codec::Decoder;

/// Feed `data` to `codec` in chunks whose sizes come from the first byte.
fn run<D: Decoder<Error = std::io::Error>>(data: &[u8], mut codec: D, mut check: impl FnMut(&D::Item)) {
    let Some((&seed, data)) = data.split_first() else { return };
    let chunk = usize::from(seed % 17) + 1;
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(item)) => check(&item),
                Ok(None) => break,
                Err(e) => panic!("decoders never fail: {e}"),
            }
            assert!(buf.len() <= before, "a decoder grew its buffer");
        }
        // A decoder may hold back at most one frame's worth of bytes.
        assert!(buf.len() <= 300, "decoder holds {} bytes", buf.len());
    }
}

fuzz_target!(|data: &[u8]| {
    run(data, pn532::Pn532Codec, |f| {
        if let pn532::Frame::Info { tfi: pn532::TFI_CHIP, code: 0x4B, data } = f {
            if let pn532::Target::Uid(uid) = pn532::parse_targets(data) {
                assert!(matches!(uid.len(), 4 | 7 | 10));
            }
        }
    });
    run(data, sm130::Sm130Codec, |f| {
        if let sm130::Frame::Reply { data, .. } = f {
            if let sm130::Select::Uid { uid, .. } = sm130::parse_select(data) {
                assert!(matches!(uid.len(), 4 | 7));
            }
        }
    });
    run(data, em4100::Em4100Codec, |_| {});
    run(data, text::TextCodec::default(), |l| {
        if let text::Line::Uid(uid) = l {
            assert!(matches!(uid.len(), 4 | 5 | 7 | 10), "{uid:02X?}");
        }
    });
});
