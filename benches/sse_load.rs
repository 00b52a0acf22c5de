//! SSE fan-out under load (`cargo bench --bench sse_load`).
//!
//! Runs the real `pollstation` binary on loopback, opens 10,000 concurrent
//! `GET /api/v1/events` streams from this process (bounded: a fixed count,
//! a deadline, loopback only; the stream readers run under `SCHED_IDLE` as
//! stand-ins for browsers on other machines, the tap-timing client at the
//! station's intake priority as a stand-in for a machine of its own), then:
//! - injects taps and times, for every stream, from the POST to the arrival
//!   of the `tally` event that carries the new total (p50/p99 over all
//!   streams and taps);
//! - times 2,000 POSTs (tap latency) before the streams are opened, while
//!   they are open and after they are closed, to see what 10,000 listeners
//!   cost the intake;
//! - reads the station's RSS before and after, for memory per connection.
//!
//! `BENCH_QUICK=1` uses 500 streams.

use std::process::Command;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Barrier, broadcast};

/// Timed taps per phase (idle before, with the streams, idle after).
const TIMED: u32 = 2_000;

async fn tap_latencies(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    first: u32,
    n: u32,
) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let t0 = Instant::now();
        let r = client
            .post(format!("{base}/api/v1/taps"))
            .bearer_auth(token)
            .json(&serde_json::json!({"reader": "r", "tag": format!("{:08X}", 0x3000_0000 + first + i)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        out.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await; // 200 taps/s
    }
    out.sort();
    out
}

fn main() {
    let streams: usize = if std::env::var_os("BENCH_QUICK").is_some() {
        500
    } else {
        10_000
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(
        &cfg,
        format!(
            "[station]\nid = \"load\"\ndata_dir = \"{}\"\ndebounce_ms = 0\n[http]\nlisten = \"127.0.0.1:0\"\n[[poll]]\nid = \"p\"\nquestion = \"?\"\nrule = \"unlimited\"\nanswers = [{{ id = \"a\", label = \"A\" }}]\n[[reader]]\nid = \"r\"\ndevice = \"/nonexistent\"\nprotocol = \"text\"\npoll = \"p\"\nanswer = \"a\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // `BENCH_BINARY`: another build of the station (or a wrapper around it).
    let bin = std::env::var("BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pollstation").to_string());
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,pollstation=info");
    let (child, base) = common::start_station(cmd, |_| true);
    let addr = base.trim_start_matches("http://").to_string();
    let pid = child.id();
    let token = std::fs::read_to_string(dir.path().join("data/admin-token"))
        .unwrap()
        .trim()
        .to_string();

    // The tap-timing client stands in for a reader or phone on a machine of
    // its own, which 10,000 browsers elsewhere do not slow down: its threads
    // (this one runs the timing loop) take the station's intake priority
    // where allowed, so what it times is the station, not this process's
    // own wait behind the stream readers below.
    let raised = pollstation::sys::priority::raise_intake_thread();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            let _ = pollstation::sys::priority::raise_intake_thread();
        })
        .build()
        .unwrap();
    match raised {
        Ok(nice) => println!("sse_load: tap-timing client at the intake's priority: nice {nice}"),
        Err(e) => println!("sse_load: tap-timing client at normal priority ({e})"),
    }
    // The 10,000 readers stand in for browsers on other machines: they run
    // on their own threads under SCHED_IDLE, so they take only the CPU the
    // station leaves.
    let readers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(pollstation::sys::priority::idle_this_thread)
        .enable_all()
        .build()
        .unwrap();
    let readers = readers_rt.handle().clone();
    rt.block_on(async {
        let client = reqwest::Client::new();
        // Warm up (connection, caches, the store's first pages), untimed.
        tap_latencies(&client, &base, &token, 20_000, 100).await;
        let m0 = common::metrics(&base).await;
        let idle = tap_latencies(&client, &base, &token, 0, TIMED).await;
        let m1 = common::metrics(&base).await;
        let rss0 = common::status_kib(pid, "VmRSS");

        // Open the streams; each reports when it has its initial burst, then
        // the time it sees each expected total.
        let ready = Arc::new(Barrier::new(streams + 1));
        let (want_tx, _) = broadcast::channel::<u64>(16);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        let open_started = Instant::now();
        for i in 0..streams {
            let ready = ready.clone();
            let mut want_rx = want_tx.subscribe();
            let seen = seen_tx.clone();
            let addr = addr.clone();
            readers.spawn(async move {
                // Browsers come from many addresses: 100 streams per
                // loopback address (127.0.0.2, .3, …), under the per-address
                // cap at its default.
                let mut s = from_address(i / 100, &addr).await;
                s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 8192];
                let mut text = String::new();
                while !text.contains("event: tally") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "stream closed early");
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                ready.wait().await;
                text.clear();
                let mut want = want_rx.recv().await.unwrap();
                loop {
                    let n = tokio::select! {
                        n = s.read(&mut buf) => n.unwrap(),
                        w = want_rx.recv() => match w { Ok(w) => { want = w; continue } Err(_) => return },
                    };
                    if n == 0 {
                        return;
                    }
                    let now = Instant::now();
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    let marker = format!("\"total\":{want},");
                    if text.contains(&marker) {
                        let _ = seen.send((want, now));
                        text.clear();
                    } else if text.len() > 64 * 1024 {
                        text.drain(..text.len() - 1024);
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(120), ready.wait()).await.expect("all streams open");
        let opened = open_started.elapsed();
        let rss1 = common::status_kib(pid, "VmRSS");
        println!(
            "sse_load: {streams} streams open in {:.1} s; station RSS {} MiB → {} MiB = {:.1} KiB per stream",
            opened.as_secs_f64(),
            rss0 / 1024,
            rss1 / 1024,
            (rss1.saturating_sub(rss0)) as f64 / streams as f64
        );

        // Fan-out: 10 taps, one every 300 ms.
        let mut fanout = Vec::new();
        let mut total = 100 + u64::from(TIMED); // the warm-up's and the idle phase's
        for k in 0..10u32 {
            total += 1;
            let _ = want_tx.send(total);
            tokio::time::sleep(Duration::from_millis(20)).await; // let the tasks take the new target
            let t0 = Instant::now();
            let r = client
                .post(format!("{base}/api/v1/taps"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"reader": "r", "tag": format!("{:08X}", 0x3100_0000 + k)}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while got < streams {
                match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
                    Ok(Some((t, at))) if t == total => {
                        fanout.push(at.saturating_duration_since(t0));
                        got += 1;
                    }
                    Ok(Some(_)) => {}
                    _ => panic!("only {got} of {streams} streams saw total {total}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        fanout.sort();
        println!(
            "sse_load: tally update to {streams} streams ({} deliveries): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            fanout.len(),
            common::ms(&fanout, 0.5),
            common::ms(&fanout, 0.99),
            common::ms(&fanout, 1.0)
        );
        let m2 = common::metrics(&base).await;
        let (cpu0, steal0) = (common::cpu_ms(), common::steal_ms());
        let loaded = tap_latencies(&client, &base, &token, 100_000, TIMED).await;
        let (cpu1, steal1) = (common::cpu_ms(), common::steal_ms());
        let m3 = common::metrics(&base).await;
        println!(
            "sse_load: CPU while the loaded taps ran: {}; host steal {} ms",
            common::cpu_split(cpu0, cpu1),
            steal1 - steal0
        );
        let name = "pollstation_tap_seconds";
        println!(
            "sse_load: the Station's own part (tap in → durable answer, from /metrics): idle {}; with {streams} streams {}",
            common::quantiles(&m0, &m1, name),
            common::quantiles(&m2, &m3, name)
        );
        let name = "pollstation_store_commit_seconds";
        println!(
            "sse_load: the store's commits in the same phases: idle {}; with {streams} streams {}",
            common::quantiles(&m0, &m1, name),
            common::quantiles(&m2, &m3, name)
        );
        // Idle again, after the streams are gone: the machine drifts, so the
        // loaded figures are read against an idle phase on either side.
        readers_rt.shutdown_background();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !common::metrics(&base)
            .await
            .lines()
            .any(|l| l == "pollstation_sse_clients 0")
        {
            assert!(Instant::now() < deadline, "the streams did not close");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = tap_latencies(&client, &base, &token, 200_000, TIMED).await;
        println!(
            "sse_load: POST /api/v1/taps latency ({TIMED} taps at ≤200/s): idle before p50 {:.2} ms p99 {:.2} ms; with {streams} streams p50 {:.2} ms p99 {:.2} ms; idle after p50 {:.2} ms p99 {:.2} ms",
            common::ms(&idle, 0.5),
            common::ms(&idle, 0.99),
            common::ms(&loaded, 0.5),
            common::ms(&loaded, 0.99),
            common::ms(&after, 0.5),
            common::ms(&after, 0.99)
        );
    });
    common::stop_station(child);
}

/// A connection to `addr` from loopback address number `n` (127.0.0.2 on).
async fn from_address(n: usize, addr: &str) -> TcpStream {
    let n = u32::try_from(n).expect("address number") + 2;
    let src = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 0)) + n);
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind((src, 0).into())
        .expect("bind a loopback source address");
    sock.connect(addr.parse().expect("station address"))
        .await
        .expect("connect")
}
