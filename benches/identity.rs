//! Identity benchmark (`cargo bench --bench identity`): tap latency (tap →
//! durable) with no identity, with anyMeta answering in 2 s, and with
//! anyMeta never answering (a listener that accepts and stays silent).
//! Every tap carries a new tag, so every tap queues a lookup.
//! `BENCH_QUICK=1` shrinks the sizes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use pollstation::config::Config;
use pollstation::poll::TagUid;
use pollstation::service;
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

async fn measure(label: &str, cfg: Config, n: u32) -> f64 {
    let shutdown = CancellationToken::new();
    let running = service::start(&cfg, shutdown.clone()).await.unwrap();
    let mut d = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        running.station.tap("r", tag(i)).await.unwrap();
        d.push(t.elapsed());
    }
    d.sort();
    let p = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    let snap = running.station.snapshot();
    println!(
        "tap latency, {label}: p50 {:.2} ms, p99 {:.2} ms ({n} taps; identity {} with {} pending)",
        p(0.5),
        p(0.99),
        snap.identity.state,
        snap.identity.pending
    );
    shutdown.cancel();
    running.wait().await;
    p(0.5)
}

#[tokio::main]
async fn main() {
    let n: u32 = if std::env::var("BENCH_QUICK").is_ok() {
        300
    } else {
        2000
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
            "[identity]\nanymeta = \"{url}\"\ncredentials = \"{}\"\ntimeout_ms = 5000\n",
            creds.display()
        )
    };
    let base = measure("no identity", config(&dir.path().join("a"), ""), n).await;
    let slow = slow_anymeta(Some(Duration::from_secs(2))).await;
    let s = measure(
        "anyMeta answering in 2 s",
        config(&dir.path().join("b"), &identity(&slow)),
        n,
    )
    .await;
    let dead = slow_anymeta(None).await;
    let d = measure(
        "anyMeta never answering",
        config(&dir.path().join("c"), &identity(&dead)),
        n,
    )
    .await;
    println!(
        "p50 vs no identity: 2 s anyMeta {:+.1}%, silent anyMeta {:+.1}%",
        (s / base - 1.0) * 100.0,
        (d / base - 1.0) * 100.0
    );
}
