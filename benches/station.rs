//! Station benchmarks (a bench binary; `cargo bench --bench station`).
//!
//! 1. Durable taps per second through the Station with group commit.
//! 2. Latency from `POST /api/v1/taps` to the SSE `tap` event at 1,000 taps/s.
//! 3. Start-up time to serving with 1,000,000 taps in the log.
//!
//! Everything runs on loopback with temp dirs and stops by itself; the
//! latency is measured against the real binary in a process of its own.
//! `BENCH_QUICK=1` shrinks the sizes for a smoke run.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollstation::app;
use pollstation::config::Config;
use pollstation::domain::{TagUid, Tap};
use pollstation::store::{Record, Store};
use tokio_util::sync::CancellationToken;

fn config(data: &Path) -> Config {
    Config::parse(&config_text(data), data).expect("bench config")
}

fn config_text(data: &Path) -> String {
    format!(
        r#"
[station]
id = "bench"
data_dir = "{}"

[http]
listen = "127.0.0.1:0"

[[poll]]
id = "p"
question = "Bench?"
rule = "one-per-person"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[poll]]
id = "u"
question = "Bench unlimited?"
rule = "unlimited"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[reader]]
id = "r1"
device = "/nonexistent/r1"
protocol = "text"
poll = "p"
answer = "a"

[[reader]]
id = "r2"
device = "/nonexistent/r2"
protocol = "text"
poll = "u"
answer = "b"
"#,
        data.display()
    )
}

fn tag(n: u32) -> TagUid {
    TagUid::from_bytes(&(0x1000_0000u32 + n).to_be_bytes()).expect("valid tag")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Throughput: many concurrent inputs, each waiting for its tap to be durable.
async fn throughput(total: u32, concurrency: u32) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let shutdown = CancellationToken::new();
    let running = app::start(&cfg, shutdown.clone()).await.unwrap();
    let station = running.station.clone();
    let started = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let station = station.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                station
                    .tap("r1", tag(w * per + i))
                    .await
                    .expect("tap recorded");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let n = per * concurrency;
    let snap = station.snapshot();
    assert_eq!(snap.store.taps, u64::from(n));
    println!(
        "throughput: {n} durable taps from {concurrency} concurrent inputs in {:.2} s = {:.0} taps/s",
        elapsed.as_secs_f64(),
        f64::from(n) / elapsed.as_secs_f64()
    );
    shutdown.cancel();
    running.wait().await;
}

/// Latency: POST at a steady rate; time each tap from just before its POST
/// to the arrival of its SSE event.
async fn latency(rate: u32, seconds: u32) {
    // The real binary in a process of its own: this process is the client
    // (as phones and readers are other machines), not a task beside it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, config_text(dir.path())).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pollstation"));
    cmd.args(["run", "--no-screen", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,pollstation=info");
    let (child, base) = common::start_station(cmd, |_| true);
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_string();

    // The SSE side notes when each seq arrived; the POST side notes when the
    // request for each seq was sent; the two are joined at the end.
    let arrived: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let arrived_sse = arrived.clone();
    common::follow_taps(&base, move |v, now| {
        arrived_sse
            .lock()
            .unwrap()
            .insert(v["seq"].as_u64().unwrap(), now);
    })
    .await;

    let client = reqwest::Client::new();
    let n = rate * seconds;
    // Warm up the connection pool.
    for i in 0..50 {
        client
            .post(format!("{base}/api/v1/taps"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"reader": "r2", "tag": tag(9_000_000 + i).as_str()}))
            .send()
            .await
            .unwrap();
    }
    let steal0 = common::steal_ms();
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut posts = Vec::new();
    for i in 0..n {
        interval.tick().await;
        let client = client.clone();
        let url = format!("{base}/api/v1/taps");
        let token = token.clone();
        posts.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"reader": "r2", "tag": tag(i).as_str()}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: serde_json::Value = r.json().await.unwrap();
            (v["seq"].as_u64().unwrap(), t0)
        }));
    }
    let mut sent = Vec::new();
    for p in posts {
        sent.push(p.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lat = Vec::new();
    for (seq, t0) in sent {
        loop {
            if let Some(t1) = arrived.lock().unwrap().get(&seq) {
                lat.push(*t1 - t0);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "SSE event for seq {seq} never came"
            );
            tokio::task::yield_now().await;
        }
    }
    lat.sort();
    println!(
        "latency POST→SSE at {rate} taps/s for {seconds} s: {} samples, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap())
    );
    // How much of that is the disk: the store's commit times (fsync included).
    let metrics = common::metrics(&base).await;
    println!(
        "CPU steal by the host during that run: {} ms",
        common::steal_ms() - steal0
    );
    println!(
        "store commit times in that run: {}",
        common::quantiles("", &metrics, "pollstation_store_commit_seconds")
    );
    common::stop_station(child);
}

/// Append `count` taps (seq `first`..) straight to the log, as a station
/// that ran for a long time would have left it.
async fn fill_log(db: &Path, first: u64, count: u64, people: u32) {
    let (_store, mut writer, _) = Store::open(db, "bench", |_| false, |_| {}).unwrap();
    let station: Arc<str> = "bench".into();
    let r: Arc<str> = "r1".into();
    let (p, a): (Arc<str>, Arc<str>) = ("p".into(), "a".into());
    let tags: Vec<TagUid> = (0..people).map(tag).collect();
    let mut seq = first;
    while seq < first + count {
        let end = (seq + 10_000).min(first + count);
        let batch: Vec<Record> = (seq..end)
            .map(|s| {
                Record::Tap(Tap {
                    station: station.clone(),
                    seq: s,
                    reader: r.clone(),
                    tag: tags[(s % u64::from(people)) as usize].clone(),
                    at: 1_700_000_000_000 + s as i64,
                    poll: p.clone(),
                    answer: a.clone(),
                })
            })
            .collect();
        seq = end;
        writer.append(&batch).unwrap();
    }
    writer.close();
}

/// Start the station on `cfg` and time it until it is serving: listener bound
/// and the first `/healthz` answered. Stops it cleanly afterwards (which
/// writes a snapshot).
async fn timed_start(cfg: &Config, client: &reqwest::Client, n: u64, people: u32, what: &str) {
    let shutdown = CancellationToken::new();
    let t0 = Instant::now();
    let running = app::start(cfg, shutdown.clone()).await.unwrap();
    let bound = t0.elapsed();
    let r = client
        .get(format!("http://{}/healthz", running.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let serving = t0.elapsed();
    let snap = running.station.snapshot();
    assert_eq!(snap.store.taps, n);
    assert_eq!(snap.tally("p").unwrap().total, u64::from(people));
    println!(
        "startup with {n} taps in the log, {what}: listener bound after {:.1} ms, first /healthz answered after {:.1} ms ({:?})",
        ms(bound),
        ms(serving),
        snap.store.startup
    );
    shutdown.cancel();
    running.wait().await;
}

/// Start-up with `n` taps from `people` tags in the log: after a clean stop
/// (snapshot covers everything), after a crash (the longest tail a snapshot
/// interval allows), and with no snapshot at all (whole log). With
/// `identity`, a people file is configured: every tag in the replayed taps
/// and in the tallies is then collected for a lookup (first and crash
/// starts only).
async fn startup(n: u64, people: u32, identity: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, what) = if identity {
        let file = dir.path().join("people.csv");
        std::fs::write(&file, "tag,name,person_id\n").unwrap();
        let text = format!(
            "{}\n[identity]\npeople = \"{}\"\n",
            config_text(dir.path()),
            file.display()
        );
        let cfg = Config::parse(&text, dir.path()).expect("bench config");
        (cfg, "identity configured, ")
    } else {
        (config(dir.path()), "")
    };
    let db = dir.path().join("pollstation.db");
    let client = reqwest::Client::new();
    let tail = 49_999.min(n / 2);
    let build = Instant::now();
    fill_log(&db, 1, n - tail, people).await;
    // A first start replays everything and its clean stop leaves a snapshot.
    timed_start(
        &cfg,
        &client,
        n - tail,
        people,
        &format!("{what}no snapshot yet (whole log)"),
    )
    .await;
    // Taps after that snapshot, as a crash just before the next one would leave.
    fill_log(&db, n - tail + 1, tail, people).await;
    println!(
        "startup: built a log of {n} taps ({people} tags) in {:.1} s, {} MB",
        build.elapsed().as_secs_f64(),
        std::fs::metadata(&db)
            .map(|m| m.len() / 1_000_000)
            .unwrap_or(0)
    );
    timed_start(
        &cfg,
        &client,
        n,
        people,
        &format!("{what}after a crash ({tail} taps after the snapshot)"),
    )
    .await;
    if !identity {
        for _ in 0..2 {
            timed_start(&cfg, &client, n, people, "after a clean stop").await;
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if quick {
            throughput(5_000, 64).await;
            latency(1000, 1).await;
            startup(20_000, 1_000, false).await;
            startup(20_000, 1_000, true).await;
        } else {
            throughput(200_000, 256).await;
            latency(1000, 20).await;
            startup(1_000_000, 5_000, false).await;
            startup(1_000_000, 5_000, true).await;
        }
    });
}
