//! A herd of many stations through a two-node ejabberd cluster
//! (`cargo bench --bench herd_cluster`): `BENCH_REAL` (default 3) real
//! headless `pollstation` processes with `[herd] carrier = "xmpp"`, the
//! rest of the herd played over real XMPP connections by this process
//! (`player.rs`: the same nodes, subscriptions and batch items as a
//! station, nothing stored), stations spread over both nodes; ejabberd
//! 23.01 with accounts and pubsub in one PostgreSQL
//! (`xmpp-server/ejabberd-herd.yml`, set up by `tests/common/ejabberd.rs`).
//! A hundred real stations do not fit on this 2-core machine: each
//! receives every other's taps (99 events a second at 1 tap/s each), and
//! a hundred processes doing that starve each other (BENCHMARKS.md).
//!
//! 1. Start-up: all stations at once, until each has every peer up.
//! 2. Load: each station taps at a fixed rate (`BENCH_RATES`, taps per
//!    second per station, default `1,2,4`) for `BENCH_SECS` (default 20);
//!    every station's event stream is followed, so each tap's arrival at
//!    every other station is timed (POST at the origin → `tap` event at the
//!    receiver). Per rate: p50/p99/max of those arrivals, how many of them
//!    came (within a 10 s drain after the window), the stations' CPU (in
//!    cores, summed) and RSS, each ejabberd node's and PostgreSQL's CPU and
//!    RSS. A rate the herd does not keep up with shows as missing arrivals
//!    and a p99 that grows with the window.
//! 3. A node restart: at 1 tap/s per station, node 1 is killed (SIGKILL),
//!    taps go on for 10 s, the node is started again; the time from its
//!    start until every real station holds every tap of every station.
//!
//! `BENCH_STATIONS` (default 100) sets the herd's size; `BENCH_QUICK=1`
//! runs 10 stations, 5 s windows.

#[path = "../tests/common/mod.rs"]
mod rig;

mod common;
#[path = "herd_cluster/player.rs"]
mod player;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cpu_of, ms, status_kib, steal_ms};
use rig::ejabberd::Cluster;
use rig::prosody::PASSWORD;

const BIN: &str = env!("CARGO_BIN_EXE_pollstation");

/// One station process.
struct Member {
    id: String,
    child: Child,
    base: String,
    token: String,
}

fn station_id(i: usize) -> String {
    format!("s{i:03}")
}

/// Start station `i` of `n` on the cluster node at `server`.
fn start(dir: &Path, i: usize, n: usize, server: &str) -> Member {
    let id = station_id(i);
    let data = dir.join(&id);
    std::fs::create_dir_all(&data).unwrap();
    let secret = dir.join(format!("{id}.password"));
    rig::write_secret(&secret, PASSWORD);
    let stations: Vec<String> = (0..n)
        .map(|j| {
            let s = station_id(j);
            format!("{{ id = \"{s}\", jid = \"{s}@localhost\" }}")
        })
        .collect();
    let extra = format!(
        "[network]\nwatch = false\n[hotplug]\nenabled = false\n\
         [xmpp]\njid = \"{id}@localhost\"\npassword_file = \"{}\"\nserver = \"{server}\"\ntls = \"none\"\npubsub = \"pubsub.localhost\"\n\
         [herd]\nid = \"bench-herd\"\ncarrier = \"xmpp\"\nstations = [{}]\n",
        secret.display(),
        stations.join(", ")
    );
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        rig::config(&data, &extra).replace("id = \"test\"", &format!("id = \"{id}\"")),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--no-screen", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "pollstation=info,warn");
    let (child, base) = common::start_station(cmd, |_| true);
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    Member {
        id,
        child,
        base,
        token,
    }
}

/// Peers up over XMPP at `m` (its own node counts as one).
async fn peers_up(http: &reqwest::Client, m: &Member) -> usize {
    let Ok(r) = http.get(format!("{}/api/v1/herd", m.base)).send().await else {
        return 0;
    };
    rig::herd::xmpp_peers_up(&r.json().await.unwrap_or_default())
}

/// Taps `m` holds of each origin.
async fn holds(http: &reqwest::Client, m: &Member) -> HashMap<String, u64> {
    let Ok(r) = http.get(format!("{}/api/v1/herd", m.base)).send().await else {
        return HashMap::new();
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["herd"]["origins"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| Some((o["origin"].as_str()?.to_string(), o["taps"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// What the bench saw: when each tap was posted, and each arrival's delay.
#[derive(Default)]
pub struct Seen {
    pub posted: HashMap<(String, u64), Instant>,
    /// Arrivals at another station: (posted at, delay).
    arrivals: Vec<(Instant, Duration)>,
    /// Arrivals before their POST was answered (the origin's answer and a
    /// peer's event raced): timed when the answer comes.
    early: Vec<((String, u64), Instant)>,
}

impl Seen {
    /// Tap `key` arrived at another station at `at`.
    pub fn arrived(&mut self, key: (String, u64), at: Instant) {
        match self.posted.get(&key) {
            Some(&p) => self.arrivals.push((p, at.saturating_duration_since(p))),
            None => self.early.push((key, at)),
        }
    }
}

/// CPU (ms) and RSS (KiB) of a set of processes.
fn usage(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .map(|&p| (cpu_of(p), status_kib(p, "VmRSS")))
        .fold((0, 0), |(c, r), (c1, r1)| (c + c1, r + r1))
}

fn cores(ms_used: u64, over: Duration) -> f64 {
    ms_used as f64 / over.as_secs_f64() / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let n: usize = std::env::var("BENCH_STATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10 } else { 100 });
    let window = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 5 } else { 20 }),
    );
    let real: usize = std::env::var("BENCH_REAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .min(n);
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..n).map(station_id).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let t = Instant::now();
    let mut cluster = Cluster::start(dir.path(), &user_refs);
    println!(
        "cluster: 2 ejabberd nodes + PostgreSQL up, {n} accounts, in {:.1} s; {real} real stations, {} played",
        t.elapsed().as_secs_f64(),
        n - real
    );
    let seen = Arc::new(Mutex::new(Seen::default()));

    // (1) Start-up.
    let t = Instant::now();
    let members: Vec<Member> = (0..real)
        .map(|i| {
            let server = format!("127.0.0.1:{}", cluster.port(i % 2));
            start(dir.path(), i, n, &server)
        })
        .collect();
    let (rate_tx, rate_rx) = tokio::sync::watch::channel(0.0f64);
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in real..n {
        let control = player::Control {
            rate: rate_rx.clone(),
            ready: ready.clone(),
        };
        let server = format!("127.0.0.1:{}", cluster.port(i % 2));
        tokio::spawn(player::play(
            station_id(i),
            users.clone(),
            server,
            control,
            seen.clone(),
        ));
    }
    let started = t.elapsed();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut all = ready.load(std::sync::atomic::Ordering::SeqCst) == n - real;
        for m in &members {
            if !all || peers_up(&http, m).await < n {
                all = false;
                break;
            }
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the herd did not come up in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
    let rss: Vec<u64> = pids.iter().map(|&p| status_kib(p, "VmRSS")).collect();
    let anon: Vec<u64> = pids.iter().map(|&p| status_kib(p, "RssAnon")).collect();
    println!(
        "start-up: {real} processes and {} players started in {:.1} s; every station has its {} peers up after {:.1} s; real station RSS mean {:.1} MiB (anonymous {:.1} MiB)",
        n - real,
        started.as_secs_f64(),
        n - 1,
        t.elapsed().as_secs_f64(),
        rss.iter().sum::<u64>() as f64 / real.max(1) as f64 / 1024.0,
        anon.iter().sum::<u64>() as f64 / real.max(1) as f64 / 1024.0,
    );

    // Follow every real station's events (the players time their own).
    for m in &members {
        let me = m.id.clone();
        let seen = seen.clone();
        common::follow_taps(&m.base, move |tap, at| {
            let origin = tap["station"].as_str().unwrap_or_default().to_string();
            if origin == me {
                return;
            }
            seen.lock()
                .unwrap()
                .arrived((origin, tap["seq"].as_u64().unwrap_or(0)), at);
        })
        .await;
    }

    // (2) Load, per rate.
    let mut tag = 0x7000_0000u32;
    for &rate in &rates {
        let (beams, sql) = cluster.pids();
        let (st0, ej0, pg0) = (
            usage(&pids).0,
            beams.iter().map(|b| usage(b).0).collect::<Vec<_>>(),
            usage(&sql).0,
        );
        let steal0 = steal_ms();
        let me = std::process::id();
        let players0 = cpu_of(me);
        {
            let mut s = seen.lock().unwrap();
            s.arrivals.clear();
            s.early.clear();
        }
        let t0 = Instant::now();
        let taps = load(&members, &rate_tx, n, &http, &seen, rate, window, &mut tag).await;
        let elapsed = t0.elapsed();
        let (st1, ej1, pg1) = (
            usage(&pids).0,
            beams.iter().map(|b| usage(b).0).collect::<Vec<_>>(),
            usage(&sql).0,
        );
        let steal = steal_ms() - steal0;
        let players = cpu_of(me) - players0;
        let ej_rss: Vec<u64> = beams.iter().map(|b| usage(b).1).collect();
        let pg_rss = usage(&sql).1;
        let st_rss = usage(&pids).1;
        // Drain: arrivals of the window's taps still on their way.
        let expected = taps * (n - 1);
        let drain_until = Instant::now() + Duration::from_secs(10);
        let arrived = || {
            seen.lock()
                .unwrap()
                .arrivals
                .iter()
                .filter(|a| a.0 >= t0)
                .count()
        };
        while arrived() < expected && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut lat: Vec<Duration> = seen
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|a| a.0 >= t0)
            .map(|a| a.1)
            .collect();
        lat.sort();
        let got = lat.len();
        println!(
            "rate {rate} taps/s per station ({:.0} taps/s in all), {:.0} s: {taps} taps, {got} of {expected} arrivals ({:.2}%); arrival p50 {:.1} ms p99 {:.1} ms max {:.1} ms; real stations {:.2} cores, RSS {:.0} MiB in all; players and the bench {:.2} cores; ejabberd {} ; PostgreSQL {:.2} cores, RSS {:.0} MiB; host steal {:.1} s",
            rate * n as f64,
            elapsed.as_secs_f64(),
            got as f64 * 100.0 / expected.max(1) as f64,
            if got > 0 { ms(&lat, 0.5) } else { f64::NAN },
            if got > 0 { ms(&lat, 0.99) } else { f64::NAN },
            lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            cores(st1 - st0, elapsed),
            st_rss as f64 / 1024.0,
            cores(players, elapsed),
            ej0.iter()
                .zip(&ej1)
                .zip(&ej_rss)
                .enumerate()
                .map(|(i, ((a, b), r))| format!(
                    "node {}: {:.2} cores, RSS {:.0} MiB",
                    i + 1,
                    cores(b - a, elapsed),
                    *r as f64 / 1024.0
                ))
                .collect::<Vec<_>>()
                .join("; "),
            cores(pg1 - pg0, elapsed),
            pg_rss as f64 / 1024.0,
            steal as f64 / 1000.0
        );
    }

    // (3) A node restart at 1 tap/s per station.
    let cut = Duration::from_secs(10);
    cluster.kill(0);
    let killed = Instant::now();
    let taps = load(&members, &rate_tx, n, &http, &seen, 1.0, cut, &mut tag).await;
    let t = Instant::now();
    cluster.restart(0);
    let restarted = Instant::now();
    println!(
        "node 1 killed: {taps} taps made in {:.1} s while it was down; it started again in {:.1} s",
        restarted.duration_since(killed).as_secs_f64() - t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    // Every station's highest tap (the players' too: taps made while
    // their node was down go out when they are back).
    let mut tops: HashMap<String, u64> = HashMap::new();
    for (o, s) in seen.lock().unwrap().posted.keys() {
        let t = tops.entry(o.clone()).or_default();
        *t = (*t).max(*s);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut behind = n;
    while behind > 0 && Instant::now() < deadline {
        behind = 0;
        for m in &members {
            let h = holds(&http, m).await;
            if tops
                .iter()
                .any(|(o, top)| h.get(o).copied().unwrap_or(0) < *top)
            {
                behind += 1;
            }
        }
        if behind > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!(
        "after the node restart: every real station holds every tap of the {} stations {:.1} s after the node started ({behind} still behind)",
        tops.len(),
        restarted.elapsed().as_secs_f64()
    );
    for m in members {
        common::stop_station(m.child);
    }
}

/// Each station taps `rate` times a second for `window`; returns the taps
/// made. A tap's POST time is kept to time its arrivals.
#[allow(clippy::too_many_arguments)]
async fn load(
    members: &[Member],
    players: &tokio::sync::watch::Sender<f64>,
    n: usize,
    http: &reqwest::Client,
    seen: &Arc<Mutex<Seen>>,
    rate: f64,
    window: Duration,
    tag: &mut u32,
) -> usize {
    let period = Duration::from_secs_f64(1.0 / rate);
    let count = (window.as_secs_f64() * rate).round() as usize;
    let mut tasks = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let (http, seen) = (http.clone(), seen.clone());
        let (url, auth) = (
            format!("{}/api/v1/taps", m.base),
            format!("Bearer {}", m.token),
        );
        let id = m.id.clone();
        let first = *tag;
        *tag += count as u32;
        // Spread the stations' ticks over the period.
        let offset = period.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            let mut made = 0;
            for k in 0..count {
                tick.tick().await;
                let posted = Instant::now();
                let r = http
                    .post(&url)
                    .header("Authorization", &auth)
                    .json(&serde_json::json!({"reader": "all-a", "tag": format!("{:08X}", first + k as u32)}))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let Some(seq) = v["seq"].as_u64() else { continue };
                made += 1;
                let key = (id.clone(), seq);
                let mut s = seen.lock().unwrap();
                // Arrivals that beat the answer are timed from the POST.
                let early: Vec<Instant> = s
                    .early
                    .iter()
                    .filter(|(k, _)| *k == key)
                    .map(|(_, at)| *at)
                    .collect();
                for at in early {
                    s.arrivals.push((posted, at.saturating_duration_since(posted)));
                }
                s.early.retain(|(k, _)| *k != key);
                s.posted.insert(key, posted);
            }
            made
        }));
    }
    let before = seen.lock().unwrap().posted.len();
    players.send_replace(rate);
    tokio::time::sleep(window).await;
    players.send_replace(0.0);
    for t in tasks {
        let _ = t.await;
    }
    // The real stations' taps and the players'.
    seen.lock().unwrap().posted.len() - before
}
