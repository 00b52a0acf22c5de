//! XMPP benchmarks (a bench binary; `cargo bench --bench xmpp`), against a
//! real Prosody on loopback (the test harness's, tests/common/prosody.rs):
//!
//! 1. Publishing throughput: votes/s from tap to acknowledged pubsub item,
//!    live (taps as fast as they are durable) and draining a backlog.
//! 2. Tap latency (tap → durable) with XMPP off, up, down (Prosody killed)
//!    and slow (Prosody stopped with SIGSTOP: connected, never answering).
//!
//! `BENCH_QUICK=1` shrinks the sizes.

#[path = "../tests/common/prosody.rs"]
#[allow(dead_code)]
mod prosody;

use std::path::Path;
use std::time::{Duration, Instant};

use pollstation::app;
use pollstation::config::Config;
use pollstation::domain::TagUid;
use tokio_util::sync::CancellationToken;

/// What prosody.rs waits for at most.
const WAIT: Duration = Duration::from_secs(60);

/// A free loopback port, for prosody.rs (the tests' harness has its own).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(data: &Path, xmpp: Option<u16>) -> Config {
    let pw = data.join("xmpp.password");
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(&pw, prosody::PASSWORD).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let xmpp = xmpp.map_or(String::new(), |port| {
        format!(
            "[xmpp]\njid = \"station@localhost\"\npassword_file = \"{}\"\nserver = \"127.0.0.1:{port}\"\ntls = \"none\"\npubsub = \"pubsub.localhost\"\n",
            pw.display()
        )
    });
    let text = format!(
        r#"
[station]
id = "bench"
data_dir = "{}"
[http]
listen = "127.0.0.1:0"
[network]
watch = false
[hotplug]
enabled = false
{xmpp}
[[poll]]
id = "u"
question = "Bench unlimited?"
rule = "unlimited"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[reader]]
id = "r"
device = "/nonexistent/r"
protocol = "text"
poll = "u"
answer = "a"
"#,
        data.display()
    );
    Config::parse(&text, data).expect("bench config")
}

fn tag(n: u32) -> TagUid {
    TagUid::from_bytes(&(0x1000_0000u32 + n).to_be_bytes()).unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn until(
    station: &pollstation::station::StationHandle,
    pred: impl Fn(&pollstation::station::XmppView) -> bool,
) {
    let mut w = station.watch();
    let deadline = Instant::now() + WAIT * 5;
    loop {
        if pred(&w.borrow_and_update().xmpp) {
            return;
        }
        tokio::time::timeout_at(deadline.into(), w.changed())
            .await
            .expect("xmpp state in time")
            .unwrap();
    }
}

/// Sequential taps, each awaited until durable: (p50, p99) in ms.
async fn latency(station: &pollstation::station::StationHandle, from: u32, n: u32) -> (f64, f64) {
    let mut d = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        station.tap("r", tag(from + i)).await.unwrap();
        d.push(t.elapsed());
    }
    d.sort();
    let p = |q: f64| ms(d[((d.len() as f64 - 1.0) * q).round() as usize]);
    (p(0.5), p(0.99))
}

#[tokio::main]
async fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let n: u32 = if quick { 500 } else { 5000 };
    let lat_n: u32 = if quick { 200 } else { 1000 };
    let dir = tempfile::tempdir().unwrap();
    // Memory storage: Prosody's file store, not the station, would be
    // measured otherwise (it rewrites a node's items on every publish).
    let mut server = prosody::Prosody::start_with(dir.path(), false, "memory");

    // Baseline: no XMPP at all.
    {
        let d = dir.path().join("baseline");
        let shutdown = CancellationToken::new();
        let running = app::start(&config(&d, None), shutdown.clone())
            .await
            .unwrap();
        let (p50, p99) = latency(&running.station, 0, lat_n).await;
        println!(
            "tap latency, XMPP not configured: p50 {p50:.2} ms, p99 {p99:.2} ms ({lat_n} taps)"
        );
        shutdown.cancel();
        running.wait().await;
    }

    let d = dir.path().join("station");
    let shutdown = CancellationToken::new();
    let running = app::start(&config(&d, Some(server.port)), shutdown.clone())
        .await
        .unwrap();
    let st = running.station.clone();
    until(&st, |x| x.state == pollstation::station::XmppState::Online).await;
    // Make the node exist (the first publish creates it).
    st.tap("r", tag(9_999_999)).await.unwrap();
    until(&st, |x| x.outbox == 0 && x.published == 1).await;

    // 1a. Live: 16 concurrent inputs tapping as fast as taps are durable.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                st.tap("r", tag(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let taps_done = t.elapsed();
    until(&st, |x| x.outbox == 0 && x.published == 1 + u64::from(n)).await;
    let all = t.elapsed();
    println!(
        "publishing live: {n} votes tapped in {:.0} ms ({:.0} taps/s), all acknowledged by Prosody after {:.0} ms: {:.0} votes/s",
        ms(taps_done),
        f64::from(n) / taps_done.as_secs_f64(),
        ms(all),
        f64::from(n) / all.as_secs_f64()
    );

    // 2. Latency with XMPP up (publishing alongside).
    let (p50, p99) = latency(&st, 100_000, lat_n).await;
    println!("tap latency, XMPP up: p50 {p50:.2} ms, p99 {p99:.2} ms");
    until(&st, |x| x.outbox == 0).await;

    // XMPP slow: Prosody stopped (SIGSTOP): the TCP connection stays, nothing answers.
    let pid = std::fs::read_to_string(server.dir.join("prosody.pid")).unwrap();
    let pid = pid.trim().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (p50, p99) = latency(&st, 200_000, lat_n).await;
    println!(
        "tap latency, XMPP slow (server stopped, connection open): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    until(&st, |x| x.outbox == 0).await;

    // XMPP down: Prosody killed.
    server.kill();
    let (p50, p99) = latency(&st, 300_000, lat_n).await;
    println!("tap latency, XMPP down (server killed): p50 {p50:.2} ms, p99 {p99:.2} ms");

    // 1b. Backlog: n more votes while the server is down, then drain.
    for i in 0..n {
        st.tap("r", tag(400_000 + i)).await.unwrap();
    }
    let backlog = st.snapshot().xmpp.outbox;
    server.restart();
    until(&st, |x| x.state == pollstation::station::XmppState::Online).await;
    let t = Instant::now();
    until(&st, |x| x.outbox == 0).await;
    let drain = t.elapsed();
    println!(
        "publishing a backlog: {backlog} queued votes drained in {:.0} ms after reconnecting: {:.0} votes/s",
        ms(drain),
        backlog as f64 / drain.as_secs_f64()
    );
    shutdown.cancel();
    running.wait().await;
}
