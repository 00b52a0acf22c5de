//! Herd benchmarks (`cargo bench --bench herd`): real station processes on
//! loopback, every link through a proxy that counts bytes and can cut it.
//!
//! 1. Propagation of a tap along a line of five (per hop), p50/p99.
//! 2. A partition {A,B} | {C,D,E} with 10,000 taps a side, healed: when
//!    each tap reached the far side after the heal (p50/p99/max), and bytes
//!    on the wire per replicated tap.
//! 3. Catch-up ingest into an empty station from one holding 200,000 taps.
//! 4. A full mesh of five taking 2,000 taps/s in all for 60 s: each
//!    station's lag (max), and that they converge.
//! 5. A station's own tap latency (POST → its SSE event) with the herd off,
//!    and on with a peer busy streaming into it.
//! 6. Memory of a station during a partition with taps on both sides.
//!
//! `BENCH_QUICK=1` shrinks the sizes; `BENCH_PARTITION_S` sets (6)'s length
//! (default 120 s; the figure in BENCHMARKS.md is for 600 s).

mod common;

#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proxy::{Mode, Proxy};

const BIN: &str = env!("CARGO_BIN_EXE_pollstation");

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn certificates(dir: &Path, ids: &[&str]) -> PathBuf {
    let out = dir.join("certs");
    let ok = Command::new(BIN)
        .args(["herd", "init", "--herd", "bench", "--stations"])
        .arg(ids.join(","))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "herd init");
    out
}

fn config(data: &Path, id: &str, herd: Option<(&Path, u16, &[String])>) -> String {
    let herd = herd.map_or(String::new(), |(certs, port, peers)| {
        let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
        format!(
            "[herd]\nid = \"bench\"\nlisten = \"127.0.0.1:{port}\"\npeers = [{}]\nca = \"{c}/ca.pem\"\ncert = \"{c}/{id}.pem\"\nkey = \"{c}/{id}.key\"\n",
            peers.join(", "),
            c = certs.display()
        )
    });
    format!(
        r#"
[station]
id = "{id}"
data_dir = "{}"

[http]
listen = "127.0.0.1:0"

[network]
watch = false

[hotplug]
enabled = false

[[poll]]
id = "u"
question = "Bench?"
rule = "unlimited"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[reader]]
id = "r"
device = "/nonexistent/r"
protocol = "text"
poll = "u"
answer = "a"

{herd}"#,
        data.display()
    )
}

/// A station process.
struct St {
    id: String,
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl St {
    fn start(dir: &Path, id: &str, herd: Option<(&Path, u16, &[String])>) -> St {
        let data = dir.join(id);
        std::fs::create_dir_all(&data).unwrap();
        let cfg = dir.join(format!("{id}.toml"));
        std::fs::write(&cfg, config(&data, id, herd)).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--no-screen", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn,pollstation=info");
        let (child, base) = common::start_station(cmd, |_| true);
        let token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        St {
            id: id.to_string(),
            child,
            base,
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn tap(&self, n: u32) {
        let r = self
            .http
            .post(format!("{}/api/v1/taps", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"reader": "r", "tag": format!("{:08X}", 0x1000_0000u32 + n)}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// Taps held (own and the herd's).
    async fn taps(&self) -> u64 {
        self.get("/api/v1/station").await["store"]["taps"]
            .as_u64()
            .unwrap_or(0)
    }

    async fn lag(&self) -> u64 {
        let h = self.get("/api/v1/herd").await;
        h["herd"]["origins"].as_array().map_or(0, |o| {
            o.iter().map(|o| o["lag"].as_u64().unwrap_or(0)).sum()
        })
    }

    async fn linked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = self.get("/api/v1/herd").await;
            let up = h["herd"]["peers"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["state"] == "up").count());
            if up >= n && h["herd"]["restoring"] == false {
                return;
            }
            assert!(Instant::now() < deadline, "{} never linked: {h}", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rss_kib(&self) -> u64 {
        common::status_kib(self.child.id(), "VmRSS")
    }
}

impl Drop for St {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Start a herd: `ids`, linked as `links` (the lower index dials), each
/// link through a proxy.
async fn herd(dir: &Path, ids: &[&str], links: &[(usize, usize)]) -> (Vec<St>, Vec<Proxy>) {
    let certs = certificates(dir, ids);
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let mut proxies = Vec::new();
    for &(_, b) in links {
        proxies.push(Proxy::start(ports[b]).await);
    }
    let mut stations = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers: Vec<String> = links
            .iter()
            .zip(&proxies)
            .filter(|((a, _), _)| *a == i)
            .map(|(_, p)| p.address())
            .collect();
        stations.push(St::start(dir, id, Some((&certs, ports[i], &peers))));
    }
    for (i, s) in stations.iter().enumerate() {
        s.linked(links.iter().filter(|(a, b)| *a == i || *b == i).count())
            .await;
    }
    (stations, proxies)
}

/// Record when each tap (station, seq) arrives in `st`'s event stream.
async fn arrivals(st: &St) -> Arc<Mutex<HashMap<(String, u64), Instant>>> {
    let seen: Arc<Mutex<HashMap<(String, u64), Instant>>> = Arc::default();
    let s = seen.clone();
    common::follow_taps(&st.base, move |v, now| {
        let key = (
            v["station"].as_str().unwrap_or("").to_string(),
            v["seq"].as_u64().unwrap_or(0),
        );
        s.lock().unwrap().entry(key).or_insert(now);
    })
    .await;
    seen
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn until(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (1) A tap's way along a line of five.
async fn propagation() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["h-a", "h-b", "h-c", "h-d", "h-e"];
    let (st, _p) = herd(dir.path(), &ids, &[(0, 1), (1, 2), (2, 3), (3, 4)]).await;
    let at_b = arrivals(&st[1]).await;
    let at_e = arrivals(&st[4]).await;
    let n = if quick() { 100 } else { 1000 };
    let mut sent = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        st[0].tap(i).await;
        sent.push(t);
        tokio::time::sleep(Duration::from_millis(10)).await; // ~100 taps/s, one at a time
    }
    until("all at E", Duration::from_secs(30), async || {
        at_e.lock().unwrap().len() >= n as usize
    })
    .await;
    let lat = |m: &HashMap<(String, u64), Instant>| {
        let mut v: Vec<f64> = sent
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                m.get(&("h-a".to_string(), i as u64 + 1))
                    .map(|a| a.duration_since(*t).as_secs_f64() * 1000.0)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (b, e) = (lat(&at_b.lock().unwrap()), lat(&at_e.lock().unwrap()));
    println!(
        "propagation, {n} taps at ~100/s along a line of 5 (POST sent → SSE event there): one hop p50 {:.2} ms p99 {:.2} ms; four hops p50 {:.2} ms p99 {:.2} ms ({:.2} ms p99 a hop)",
        pct(&b, 0.5),
        pct(&b, 0.99),
        pct(&e, 0.5),
        pct(&e, 0.99),
        pct(&e, 0.99) / 4.0
    );
}

/// (2) A partition with 10,000 taps a side, healed.
async fn partition() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["p-a", "p-b", "p-c", "p-d", "p-e"];
    let (st, proxies) = herd(dir.path(), &ids, &[(0, 1), (1, 2), (2, 3), (3, 4)]).await;
    proxies[1].set(Mode::Cut);
    let n: u32 = if quick() { 1000 } else { 10_000 };
    let at_a = arrivals(&st[0]).await;
    let at_e = arrivals(&st[4]).await;
    let side = |who: &'static [usize], base: u32| {
        let st = &st;
        async move {
            futures_util::stream::iter(0..n)
                .for_each_concurrent(16, |k| async move {
                    st[who[k as usize % who.len()]].tap(base + k).await;
                })
                .await;
        }
    };
    futures_util::future::join(side(&[0, 1], 0), side(&[2, 3, 4], 1_000_000)).await;
    let before = proxies[1].bytes.load(std::sync::atomic::Ordering::Relaxed);
    let healed = Instant::now();
    proxies[1].set(Mode::Pass);
    until("converged", Duration::from_secs(120), async || {
        st[0].taps().await >= u64::from(2 * n) && st[4].taps().await >= u64::from(2 * n)
    })
    .await;
    let all = healed.elapsed();
    let bytes = proxies[1].bytes.load(std::sync::atomic::Ordering::Relaxed) - before;
    let mut after: Vec<f64> = Vec::new();
    for (m, far) in [
        (&at_a, ["p-c", "p-d", "p-e"].as_slice()),
        (&at_e, ["p-a", "p-b"].as_slice()),
    ] {
        for ((o, _), t) in m.lock().unwrap().iter() {
            if far.contains(&o.as_str()) && *t >= healed {
                after.push(t.duration_since(healed).as_secs_f64() * 1000.0);
            }
        }
    }
    after.sort_by(f64::total_cmp);
    println!(
        "partition of {n} taps a side healed: every station holds all {} after {:.0} ms; a tap reached the far side p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({} arrivals seen); {} bytes over the healed link = {:.1} B a replicated tap",
        2 * n,
        all.as_secs_f64() * 1000.0,
        pct(&after, 0.5),
        pct(&after, 0.99),
        after.last().copied().unwrap_or(f64::NAN),
        after.len(),
        bytes,
        bytes as f64 / f64::from(2 * n)
    );
}

/// (3) Catch-up ingest: an empty station from one holding many taps.
async fn ingest() {
    let dir = tempfile::tempdir().unwrap();
    let n: u32 = if quick() { 20_000 } else { 200_000 };
    let certs = certificates(dir.path(), &["i-a", "i-b"]);
    // A's log, written straight into its store.
    {
        let data = dir.path().join("i-a");
        std::fs::create_dir_all(&data).unwrap();
        let (_store, mut writer, _) =
            pollstation::store::Store::open(&data.join("pollstation.db"), "i-a", |_| false, |_| {})
                .unwrap();
        let t0 = 1_760_000_000_000i64;
        for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
            let records = chunk
                .iter()
                .map(|&i| {
                    pollstation::store::Record::Tap(pollstation::domain::Tap {
                        station: "i-a".into(),
                        seq: u64::from(i) + 1,
                        reader: "r".into(),
                        tag: pollstation::domain::TagUid::from_bytes(
                            &(0x1000_0000u32 + i).to_be_bytes(),
                        )
                        .unwrap(),
                        at: t0 + i64::from(i),
                        poll: "u".into(),
                        answer: "a".into(),
                    })
                })
                .collect::<Vec<_>>();
            writer.append(&records).unwrap();
        }
        writer.close();
    }
    let (pa, pb) = (free_port(), free_port());
    let to_b = Proxy::start(pb).await;
    to_b.set(Mode::Cut);
    let a = St::start(dir.path(), "i-a", Some((&certs, pa, &[to_b.address()])));
    let b = St::start(dir.path(), "i-b", Some((&certs, pb, &[])));
    let started = Instant::now();
    to_b.set(Mode::Pass);
    until("caught up", Duration::from_secs(300), async || {
        b.taps().await >= u64::from(n)
    })
    .await;
    let took = started.elapsed();
    let bytes = to_b.bytes.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "catch-up ingest: {n} taps into an empty station in {:.2} s = {:.0} taps/s; {:.1} B a tap on the wire",
        took.as_secs_f64(),
        f64::from(n) / took.as_secs_f64(),
        bytes as f64 / f64::from(n)
    );
    drop(a);
}

/// (4) A full mesh of five at 2,000 taps/s in all.
async fn mesh() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["m-a", "m-b", "m-c", "m-d", "m-e"];
    let links: Vec<(usize, usize)> = (0..5)
        .flat_map(|a| (a + 1..5).map(move |b| (a, b)))
        .collect();
    let (st, _p) = herd(dir.path(), &ids, &links).await;
    let seconds = if quick() { 10 } else { 60 };
    let rate = 400u32; // per station
    let cpu0: Vec<u64> = st.iter().map(|s| cpu_ticks(s.child.id())).collect();
    let started = Instant::now();
    let taking = futures_util::future::join_all(st.iter().enumerate().map(|(i, s)| async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut inflight = futures_util::stream::FuturesUnordered::new();
        let mut k = 0u32;
        while started.elapsed() < Duration::from_secs(seconds) {
            tokio::select! {
                _ = tick.tick() => {
                    inflight.push(s.tap(i as u32 * 10_000_000 + k));
                    k += 1;
                }
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
            }
        }
        while inflight.next().await.is_some() {}
        k
    }));
    let sampling = async {
        let mut max = vec![0u64; 5];
        while started.elapsed() < Duration::from_secs(seconds) {
            for (i, s) in st.iter().enumerate() {
                max[i] = max[i].max(s.lag().await);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        max
    };
    let (counts, max_lag) = futures_util::future::join(taking, sampling).await;
    let total: u32 = counts.iter().sum();
    let offered = started.elapsed();
    until("the mesh converged", Duration::from_secs(60), async || {
        let mut all = true;
        for s in &st {
            all &= s.taps().await >= u64::from(total);
        }
        all
    })
    .await;
    let settled = started.elapsed() - offered;
    let cpu: Vec<String> = st
        .iter()
        .zip(cpu0)
        .map(|(s, c0)| {
            format!(
                "{:.2}",
                (cpu_ticks(s.child.id()) - c0) as f64 / 100.0 / started.elapsed().as_secs_f64()
            )
        })
        .collect();
    println!(
        "mesh of 5 at {} taps/s in all for {seconds} s: {total} taps; max lag seen per station {max_lag:?} events; all held everything {:.0} ms after the last tap; station CPU (cores) {}",
        rate * 5,
        settled.as_secs_f64() * 1000.0,
        cpu.join(" ")
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// (5) Own tap latency, herd off and on-and-busy.
async fn own_latency() {
    let n = if quick() { 200 } else { 2000 };
    let measure = async |st: &St| {
        let seen = arrivals(st).await;
        let mut sent = Vec::new();
        let mut durable = Vec::new();
        for i in 0..n {
            let t = Instant::now();
            st.tap(5_000_000 + i).await;
            durable.push(t.elapsed().as_secs_f64() * 1000.0);
            sent.push((i, t));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        durable.sort_by(f64::total_cmp);
        until("all seen", Duration::from_secs(30), async || {
            seen.lock().unwrap().len() >= n as usize
        })
        .await;
        let m = seen.lock().unwrap();
        let mut v: Vec<f64> = m
            .iter()
            .filter(|((o, _), _)| *o == st.id)
            .map(|((_, seq), t)| t.duration_since(sent[*seq as usize - 1].1).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        (pct(&v, 0.5), pct(&v, 0.99), pct(&durable, 0.99))
    };
    // The load: 1,000 taps/s posted to `to` for the length of a measure.
    let busy = async |to: &St| {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut k = 0;
        let mut inflight = futures_util::stream::FuturesUnordered::new();
        let until = Instant::now() + Duration::from_secs(if quick() { 5 } else { 20 });
        while Instant::now() < until {
            tokio::select! {
                _ = tick.tick() => { inflight.push(to.tap(k)); k += 1; }
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
            }
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let alone = St::start(dir.path(), "o-alone", None);
    let off = measure(&alone).await;
    // The same load on the machine, to a station not linked to this one:
    // what the 2 cores cost, apart from the herd.
    drop(alone);
    let alone = St::start(dir.path(), "o-alone2", None);
    let load = St::start(dir.path(), "o-load", None);
    let (off_loaded, ()) = futures_util::future::join(measure(&alone), busy(&load)).await;
    drop(alone);
    drop(load);
    let (st, _p) = herd(dir.path(), &["o-a", "o-b"], &[(0, 1)]).await;
    // B keeps the herd busy: 1,000 taps/s streaming into A.
    let (on, ()) = futures_util::future::join(measure(&st[0]), busy(&st[1])).await;
    println!(
        "own tap latency (POST → own SSE event, one at a time; in brackets POST → its answer, durable, p99): herd off p50 {:.2} ms p99 {:.2} ms [{:.2}]; herd off, another station on the machine taking 1,000 taps/s p50 {:.2} ms p99 {:.2} ms [{:.2}]; herd on, that station its peer streaming them in p50 {:.2} ms p99 {:.2} ms [{:.2}] (p99 {:+.2} ms against the same load without the herd, {:+.2} ms against an idle machine)",
        off.0,
        off.1,
        off.2,
        off_loaded.0,
        off_loaded.1,
        off_loaded.2,
        on.0,
        on.1,
        on.2,
        on.1 - off_loaded.1,
        on.1 - off.1
    );
}

/// (6) Memory during a partition with taps on both sides.
async fn memory() {
    let secs: u64 = std::env::var("BENCH_PARTITION_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick() { 20 } else { 120 });
    let dir = tempfile::tempdir().unwrap();
    let (st, proxies) = herd(dir.path(), &["r-a", "r-b"], &[(0, 1)]).await;
    proxies[0].set(Mode::Cut);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut k = 0u32;
    let mut next_sample = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        futures_util::future::join(st[0].tap(k), st[1].tap(k)).await;
        k += 1;
        if Instant::now() >= next_sample {
            samples.push((
                started.elapsed().as_secs(),
                st[0].rss_kib(),
                st[1].rss_kib(),
            ));
            next_sample += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = samples
        .get(1)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let peak = samples.iter().map(|s| s.1.max(s.2)).max().unwrap_or(0);
    println!(
        "memory during a {secs} s partition, {k} taps on each side: RSS A {} → {} KiB, B {} → {} KiB (10 s in → end), peak {} KiB",
        first.1, last.1, first.2, last.2, peak
    );
    let curve: Vec<String> = samples
        .iter()
        .filter(|s| s.0 % 60 == 0 || s.0 + 10 >= secs)
        .map(|s| format!("{} s {} / {}", s.0, s.1, s.2))
        .collect();
    println!("  RSS A / B in KiB over time: {}", curve.join(", "));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    println!("host steal before: {} ms", common::steal_ms());
    rt.block_on(async {
        if run("propagation") {
            propagation().await;
        }
        if run("partition") {
            partition().await;
        }
        if run("ingest") {
            ingest().await;
        }
        if run("mesh") {
            mesh().await;
        }
        if run("latency") {
            own_latency().await;
        }
        if run("memory") {
            memory().await;
        }
    });
    println!("host steal after: {} ms", common::steal_ms());
}
