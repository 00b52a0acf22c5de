//! Identity benchmark (`cargo bench --bench identity`): tap latency (tap →
//! durable) with no identity, with anyMeta answering in 2 s or in 50 ms
//! (64 lookups at a time, so answers keep arriving while taps go on), and
//! with anyMeta never answering (a listener that accepts and stays silent).
//! Every tap carries a new tag, so every tap queues a lookup; taps at 200/s.
//! `BENCH_QUICK=1` shrinks the sizes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use pollstation::app;
use pollstation::config::Config;
use pollstation::domain::TagUid;
use tokio_util::sync::CancellationToken;

fn config(data: &Path, identity: &str) -> Config {
    std::fs::create_dir_all(data).unwrap();
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
{identity}
[[poll]]
id = "p"
question = "Bench?"
rule = "one-per-person"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[reader]]
id = "r"
device = "/nonexistent/r"
protocol = "text"
poll = "p"
answer = "a"
"#,
        data.display()
    );
    Config::parse(&text, data).expect("bench config")
}

fn tag(n: u32) -> TagUid {
    TagUid::from_bytes(&(0x2000_0000u32 + n).to_be_bytes()).unwrap()
}

/// A stand-in anyMeta that answers every request after `delay` (None: never).
async fn slow_anymeta(delay: Option<Duration>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/rest/", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/services/rest/",
        axum::routing::post(move || async move {
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            axum::Json(serde_json::json!(false))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Tap latencies (tap → durable) of `n` taps at 200/s with new tags,
/// starting at tag number `first`.
async fn measure(label: &str, cfg: &Config, first: u32, n: u32) -> Vec<Duration> {
    let shutdown = CancellationToken::new();
    let running = app::start(cfg, shutdown.clone()).await.unwrap();
    let mut d = Vec::with_capacity(n as usize);
    // 200 taps/s, so the answers (after 50 ms or 2 s) arrive while taps go on.
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    for i in first..first + n {
        pace.tick().await;
        let t = Instant::now();
        running.station.tap("r", tag(i)).await.unwrap();
        d.push(t.elapsed());
    }
    let snap = running.station.snapshot();
    println!(
        "  {label}: identity {:?}, {} known, {} pending",
        snap.identity.state, snap.identity.known, snap.identity.pending
    );
    shutdown.cancel();
    running.wait().await;
    d
}

#[tokio::main]
async fn main() {
    let (rounds, n): (u32, u32) = if std::env::var("BENCH_QUICK").is_ok() {
        (1, 300)
    } else {
        (4, 800)
    };
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("anymeta.toml");
    std::fs::write(
        &creds,
        "c_key = \"k\"\nc_sec = \"s\"\nt_key = \"t\"\nt_sec = \"u\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let identity = |url: &str| {
        format!(
            "[identity]\nanymeta = \"{url}\"\ncredentials = \"{}\"\ntimeout_ms = 5000\nconcurrency = 64\n",
            creds.display()
        )
    };
    let slow = slow_anymeta(Some(Duration::from_secs(2))).await;
    let fast = slow_anymeta(Some(Duration::from_millis(50))).await;
    let dead = slow_anymeta(None).await;
    let cases = [
        ("no identity", config(&dir.path().join("a"), "")),
        (
            "anyMeta answering in 2 s",
            config(&dir.path().join("b"), &identity(&slow)),
        ),
        (
            "anyMeta answering in 50 ms",
            config(&dir.path().join("c"), &identity(&fast)),
        ),
        (
            "anyMeta never answering",
            config(&dir.path().join("d"), &identity(&dead)),
        ),
    ];
    // The cases take turns, round after round, so the machine's drift
    // (this VM's disk and CPU vary by tens of percent over minutes) falls
    // on all of them alike.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        println!("round {}", round + 1);
        for (i, (label, cfg)) in cases.iter().enumerate() {
            let d = measure(label, cfg, round * n, n).await;
            samples[i].extend(d);
        }
    }
    let pct = |d: &[Duration], q: f64| {
        d[((d.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
    };
    let mut base = (0.0, 0.0);
    for (i, (label, _)) in cases.iter().enumerate() {
        let d = &mut samples[i];
        d.sort();
        let (p50, p99) = (pct(d, 0.5), pct(d, 0.99));
        if i == 0 {
            base = (p50, p99);
        }
        println!(
            "tap latency, {label}: p50 {p50:.2} ms ({:+.1}%), p99 {p99:.2} ms ({:+.1}%), {} taps at 200/s",
            (p50 / base.0 - 1.0) * 100.0,
            (p99 / base.1 - 1.0) * 100.0,
            d.len()
        );
    }
}
