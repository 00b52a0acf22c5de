//! Helpers for the codec tests: hex vectors and feeding a stream split at
//! every byte boundary.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// `"DE AD be ef"` → bytes.
pub fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// Feed `chunks` one after the other, collecting every item.
pub fn decode_chunks<D: Decoder>(chunks: &[&[u8]], mut codec: D) -> Vec<D::Item>
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(item) = codec.decode(&mut buf).expect("decoders never fail") {
            out.push(item);
        }
    }
    out
}

pub fn decode_all<D: Decoder>(bytes: &[u8], codec: D) -> Vec<D::Item>
where
    D::Error: std::fmt::Debug,
{
    decode_chunks(&[bytes], codec)
}

/// The stream split in two at every position, and fed one byte at a time.
pub fn split_everywhere<D: Decoder>(bytes: &[u8], make: impl Fn() -> D) -> Vec<Vec<D::Item>>
where
    D::Error: std::fmt::Debug,
{
    let mut runs: Vec<Vec<D::Item>> = (0..=bytes.len())
        .map(|i| decode_chunks(&[&bytes[..i], &bytes[i..]], make()))
        .collect();
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    runs.push(decode_chunks(&singles, make()));
    runs
}
