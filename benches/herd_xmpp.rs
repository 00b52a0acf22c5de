//! The herd through a real Prosody (`cargo bench --bench herd_xmpp`): two
//! station processes with `carrier = "xmpp"`, Prosody 0.12 on SQLite
//! (`xmpp-server/prosody-herd.cfg.lua`), the second station behind a proxy
//! that counts its bytes.
//!
//! 1. Live: a tap at A until it is in B's log (A's POST → B's SSE `tap`),
//!    p50/p99 over 300 taps at 20/s.
//! 2. Catch-up: B cut off from the server while A takes 10,000 taps
//!    (`BENCH_QUICK=1`: 1,000); the link restored: until B holds them all,
//!    and the bytes B's link carried per tap.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::herd::{Mode, Proxy, start_xmpp};
use common::prosody::Prosody;
use common::{Sse, Station};
use futures_util::StreamExt;

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Taps of `origin` that `st` holds.
async fn held(st: &Station, origin: &str) -> u64 {
    let (_, h) = st.get("/api/v1/herd").await;
    h["herd"]["origins"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["origin"] == origin))
        .and_then(|o| o["taps"].as_u64())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let dir = tempfile::tempdir().unwrap();
    let server = Prosody::start_herd(dir.path(), &["x-a", "x-b"], &[]);
    let direct = format!("127.0.0.1:{}", server.port);
    let proxy = Proxy::start(server.port).await;
    let ids = ["x-a", "x-b"];
    let a = start_xmpp(dir.path(), "x-a", &direct, &ids);
    let b = start_xmpp(dir.path(), "x-b", &proxy.address(), &ids);
    for st in [&a, &b] {
        st.station_until("its peer up over XMPP", |s| {
            s["herd"]["peers"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["state"] == "up" && p["station"] != s["id"])
            })
        })
        .await;
    }

    // (1) Live.
    let mut sse = Sse::connect(&b.url("/api/v1/events")).await;
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..300u32 {
        tick.tick().await;
        let t0 = Instant::now();
        let (s, v) = a.tap("all-a", &format!("{:08X}", 0x5100_0000 + i)).await;
        assert_eq!(s, 201, "{v}");
        let seq = v["seq"].as_u64().unwrap();
        sse.until("tap", |t| {
            t["station"] == "x-a" && t["seq"].as_u64() == Some(seq)
        })
        .await;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "live: a tap at x-a in x-b's log p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} taps at 20/s)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len()
    );

    // (2) Catch-up of a partition.
    let n: u32 = if quick { 1000 } else { 10_000 };
    proxy.set(Mode::Cut);
    let base = held(&a, "x-a").await;
    futures_util::stream::iter(0..n)
        .for_each_concurrent(16, |k| {
            let a = &a;
            async move {
                let (s, v) = a.tap("all-a", &format!("{:08X}", 0x6000_0000 + k)).await;
                assert_eq!(s, 201, "{v}");
            }
        })
        .await;
    let target = base + u64::from(n);
    // Until x-a's node holds them all (its own link is not cut).
    while held(&a, "x-a").await < target {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = proxy.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let healed = Instant::now();
    proxy.set(Mode::Pass);
    let deadline = healed + Duration::from_secs(300);
    while held(&b, "x-a").await < target {
        assert!(Instant::now() < deadline, "x-b never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = healed.elapsed();
    let bytes = proxy.bytes.load(std::sync::atomic::Ordering::Relaxed) - before;
    println!(
        "catch-up: x-b cut off while x-a took {n} taps; healed, it held them all after {:.2} s (login, resubscribe, fetch); {bytes} bytes over its link = {:.1} B a tap",
        took.as_secs_f64(),
        bytes as f64 / f64::from(n)
    );
    drop(server);
}
