//! The intake's cost (`cargo bench --bench intake`, issue "Efficiency"):
//! the real binary in its own process, 64 text readers on real ptys at a
//! fixed total rate, one SSE subscriber reading every event (this process).
//! For each rate, a fresh station: 2 s of warm-up at the rate, then the
//! measured window; printed per rate: latency (pty write → SSE event)
//! p50/p99, the station's CPU in cores over the window (`/proc/PID/stat`),
//! its peak RSS (`VmHWM`) and anonymous RSS at the end, against its idle
//! RSS before the load, and the host's steal. Each rate is run `RUNS`
//! times (3; `BENCH_QUICK=1`: once, shorter) and the median run printed
//! with the spread.
//!
//! `BENCH_RATES=1000,5000` picks the rates (default 200 with 8 readers,
//! then 1,000, 2,000, 5,000 and 10,000 with 64). `BENCH_BINARY` runs
//! another build of the station, e.g. the headless one:
//! `cargo build --release --no-default-features` into its own target dir.

mod common;

use std::time::Instant;

use common::pty::PtyRig;
use common::{cpu_of, ms, status_kib};

struct Run {
    p50: f64,
    p99: f64,
    cores: f64,
    idle_kib: u64,
    peak_kib: u64,
    anon_kib: u64,
    steal_ms: u64,
    /// The store's commit times over the window.
    commits: String,
}

async fn once(readers: usize, rate: u32, seconds: f64) -> Run {
    let mut rig = PtyRig::start(readers).await;
    let pid = rig.pid();
    // Idle: connected, nothing tapped yet.
    let idle_kib = status_kib(pid, "VmRSS");
    rig.play(rate, 2.0).await;
    let steal0 = common::steal_ms();
    let metrics0 = common::metrics(&rig.base).await;
    let (cpu0, t0) = (cpu_of(pid), Instant::now());
    let lat = rig.play(rate, seconds).await;
    let cores = (cpu_of(pid) - cpu0) as f64 / t0.elapsed().as_millis() as f64;
    let metrics1 = common::metrics(&rig.base).await;
    let commits = format!(
        "commits {}; read → durable answer {}",
        common::quantiles(&metrics0, &metrics1, "pollstation_store_commit_seconds"),
        common::quantiles(&metrics0, &metrics1, "pollstation_tap_seconds"),
    );
    let run = Run {
        p50: ms(&lat, 0.5),
        p99: ms(&lat, 0.99),
        cores,
        idle_kib,
        peak_kib: status_kib(pid, "VmHWM"),
        anon_kib: status_kib(pid, "RssAnon"),
        steal_ms: common::steal_ms() - steal0,
        commits,
    };
    rig.stop();
    run
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 3 };
    let seconds = if quick { 3.0 } else { 10.0 };
    let rates: Vec<(usize, u32)> = match std::env::var("BENCH_RATES") {
        Ok(list) => list
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .map(|r| (64, r))
            .collect(),
        Err(_) => vec![(8, 200), (64, 1000), (64, 2000), (64, 5000), (64, 10_000)],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "| readers | taps/s | p50 | p99 | station CPU (cores) | idle RSS | peak RSS (VmHWM) | anon RSS at end | steal |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut commits = Vec::new();
    for (readers, rate) in rates {
        let mut all: Vec<Run> = (0..runs)
            .map(|_| rt.block_on(once(readers, rate, seconds)))
            .collect();
        all.sort_by(|a, b| a.cores.total_cmp(&b.cores));
        let spread = |f: fn(&Run) -> f64| {
            let v: Vec<f64> = all.iter().map(f).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            if all.len() > 1 {
                format!(" ({lo:.2}–{hi:.2})")
            } else {
                String::new()
            }
        };
        let m = &all[all.len() / 2];
        println!(
            "| {readers} | {rate} | {:.2} ms{} | {:.2} ms{} | {:.3}{} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} ms |",
            m.p50,
            spread(|r| r.p50),
            m.p99,
            spread(|r| r.p99),
            m.cores,
            spread(|r| r.cores),
            m.idle_kib as f64 / 1024.0,
            m.peak_kib as f64 / 1024.0,
            m.anon_kib as f64 / 1024.0,
            m.steal_ms
        );
        commits.push(format!("{rate} taps/s: {}", m.commits));
    }
    println!(
        "\nInside the station (the median run's window: `pollstation_store_commit_seconds`, `pollstation_tap_seconds`):"
    );
    for c in commits {
        println!("- {c}");
    }
}
