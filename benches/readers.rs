//! Reader benchmarks (`cargo bench --bench readers`).
//!
//! 1. Decoder throughput: MB/s and frames/s of each codec over a long stream
//!    of valid frames with some junk between them.
//! 2. pty → SSE latency: the real station binary in a process of its own
//!    with 64 push readers (text sketches) on real pseudo-terminals; this
//!    process writes 1,000 taps/s in total straight to the pty masters, each
//!    timed from just before its bytes are written to the arrival of its SSE
//!    `tap` event (a pty has no wire time, so this is what the station adds).
//!
//! `BENCH_QUICK=1` shrinks both.

mod common;

use common::ms;
use common::pty::PtyRig;

use std::time::Instant;

use bytes::BytesMut;
use pollstation::reader::{em4100, pn532, sm130, text};
use tokio_util::codec::Decoder;

fn throughput<D: Decoder<Error = std::io::Error>>(
    name: &str,
    stream: &[u8],
    frames: usize,
    mut codec: D,
) {
    let rounds = 20;
    let start = Instant::now();
    let mut items = 0usize;
    for _ in 0..rounds {
        let mut buf = BytesMut::new();
        for piece in stream.chunks(64) {
            buf.extend_from_slice(piece);
            while let Some(_item) = codec.decode(&mut buf).unwrap() {
                items += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (stream.len() * rounds) as f64 / 1e6;
    println!(
        "decoder {name}: {:.0} MB/s, {:.2} M frames/s ({} items per round)",
        mb / secs,
        (frames * rounds) as f64 / secs / 1e6,
        items / rounds
    );
}

fn decoders(n: usize) {
    let junk = b"\x13\x37junk";
    let mut s = Vec::new();
    for i in 0..n as u32 {
        s.extend_from_slice(&pn532::target_response(Some(&i.to_be_bytes())));
        if i % 10 == 0 {
            s.extend_from_slice(junk);
        }
    }
    throughput("pn532", &s, n, pn532::Pn532Codec);
    let mut s = Vec::new();
    for i in 0..n as u32 {
        let mut d = vec![2];
        d.extend_from_slice(&i.to_be_bytes());
        s.extend_from_slice(&sm130::frame(sm130::CMD_SELECT, &d));
        if i % 10 == 0 {
            s.extend_from_slice(junk);
        }
    }
    throughput("sm130", &s, n, sm130::Sm130Codec);
    let mut s = Vec::new();
    for i in 0..n as u32 {
        let b = i.to_be_bytes();
        s.extend_from_slice(&em4100::frame([0x1A, b[0], b[1], b[2], b[3]], i % 2 == 0));
        if i % 10 == 0 {
            s.extend_from_slice(junk);
        }
    }
    throughput("em4100", &s, n, em4100::Em4100Codec);
    let mut s = Vec::new();
    for i in 0..n as u32 {
        let b = i.to_be_bytes();
        s.extend_from_slice(
            format!(
                "Card UID: {:02X} {:02X} {:02X} {:02X}\r\n",
                b[0], b[1], b[2], b[3]
            )
            .as_bytes(),
        );
        if i % 10 == 0 {
            s.extend_from_slice(b"junk line\r\n");
        }
    }
    throughput("text", &s, n, text::TextCodec::default());
}

/// The station in its own process with `readers` text readers on ptys;
/// this process plays the readers (writing each line straight to the pty
/// master, timed just before the write) and reads the SSE stream.
async fn pty_latency(readers: usize, rate: u32, seconds: u32) {
    let mut rig = PtyRig::start(readers).await;
    let steal0 = common::steal_ms();
    let lat = rig.play(rate, f64::from(seconds)).await;
    println!(
        "pty→SSE with {readers} text readers at {rate} taps/s for {seconds} s (station in its own process): {} taps, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        ms(&lat, 0.5),
        ms(&lat, 0.9),
        ms(&lat, 0.99),
        ms(&lat, 1.0)
    );
    println!(
        "CPU steal by the host during that run: {} ms",
        common::steal_ms() - steal0
    );
    rig.stop();
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    decoders(if quick { 10_000 } else { 200_000 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pty_latency(64, 1000, if quick { 2 } else { 20 }));
}
