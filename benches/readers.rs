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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pollstation::reader::{em4100, pn532, sm130, text};
use tokio::io::AsyncWriteExt;
use tokio_serial::SerialPort;
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

/// The real binary in a process of its own, 64 text readers on real ptys;
/// this process plays the readers (writing each line straight to the pty
/// master, timed just before the write) and reads the SSE stream.
async fn pty_latency(readers: usize, rate: u32, seconds: u32) {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    let mut cfg_text = format!(
        "[station]\nid = \"bench\"\ndata_dir = \"{}\"\ndebounce_ms = 0\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[network]\nwatch = false\n[hotplug]\nenabled = false\n\n[[poll]]\nid = \"p\"\nquestion = \"?\"\nrule = \"unlimited\"\nanswers = [{{ id = \"a\", label = \"A\" }}]\n",
        dir.path().join("data").display()
    );
    // Masters written by this process; slaves kept open so the ptys stay up
    // until the station has opened them.
    let mut masters = Vec::new();
    let mut slaves = Vec::new();
    for r in 0..readers {
        let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
        let link = dev.join(format!("r{r}"));
        std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
        cfg_text.push_str(&format!(
            "\n[[reader]]\nid = \"r{r}\"\ndevice = \"{}\"\nprotocol = \"text\"\npoll = \"p\"\nanswer = \"a\"\nfeedback_counted = \"\"\nfeedback_refused = \"\"\n",
            link.display()
        ));
        masters.push(master);
        slaves.push(slave);
    }
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pollstation"));
    cmd.args(["run", "--no-screen", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,pollstation=info");
    let (child, base) = common::start_station(cmd, |_| true);

    // Wait until every reader is connected (polling is fine in a bench).
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/station"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let up = v["readers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "connected")
            .count();
        if up == readers {
            break;
        }
        assert!(Instant::now() < deadline, "only {up} readers connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SSE side: arrival times per reader, in order.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let arr = arrivals.clone();
    common::follow_taps(&base, move |v, now| {
        arr.lock()
            .unwrap()
            .entry(v["reader"].as_str().unwrap().to_string())
            .or_default()
            .push(now);
    })
    .await;

    let n = rate * seconds;
    let mut sent: HashMap<String, Vec<Instant>> = HashMap::new();
    let steal0 = common::steal_ms();
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        interval.tick().await;
        let r = (i as usize) % readers;
        let uid = (0x2000_0000u32 + i).to_be_bytes();
        let line = format!(
            "Card UID: {:02X} {:02X} {:02X} {:02X}\r\n",
            uid[0], uid[1], uid[2], uid[3]
        );
        sent.entry(format!("r{r}"))
            .or_default()
            .push(Instant::now());
        masters[r].write_all(line.as_bytes()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: usize = arrivals.lock().unwrap().values().map(Vec::len).sum();
        if got >= n as usize {
            break;
        }
        assert!(Instant::now() < deadline, "only {got} of {n} taps arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lat: Vec<Duration> = Vec::new();
    {
        let arrivals = arrivals.lock().unwrap();
        for (reader, times) in &sent {
            for (t0, t1) in times.iter().zip(&arrivals[reader]) {
                lat.push(*t1 - *t0);
            }
        }
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "pty→SSE with {readers} text readers at {rate} taps/s for {seconds} s (station in its own process): {} taps, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
    println!(
        "CPU steal by the host during that run: {} ms",
        common::steal_ms() - steal0
    );
    common::stop_station(child);
    drop(slaves);
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    decoders(if quick { 10_000 } else { 200_000 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pty_latency(64, 1000, if quick { 2 } else { 20 }));
}
