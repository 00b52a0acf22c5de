//! What the benches that run the real binary share.

pub mod pty;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Start `cmd` (a `pollstation run …`), read its output until `ready` says
/// so, and return the child and its `http://ADDR`. The rest of the output is
/// drained on a thread.
#[allow(dead_code)]
pub fn start_station(mut cmd: Command, ready: impl Fn(&str) -> bool) -> (Child, String) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the station");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = String::new();
    loop {
        let l = lines.next().expect("station output").unwrap();
        if let Some(i) = l.find("listening on http://") {
            addr = l[i + 20..].split_whitespace().next().unwrap().to_string();
        }
        if !addr.is_empty() && ready(&l) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}

/// Stop the station (SIGTERM) and reap it.
#[allow(dead_code)]
pub fn stop_station(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Follow `{base}/api/v1/events` and call `on_tap` with each `tap` event's
/// data and the moment its chunk arrived.
#[allow(dead_code)] // not every bench that shares this module follows taps
pub async fn follow_taps(
    base: &str,
    mut on_tap: impl FnMut(serde_json::Value, std::time::Instant) + Send + 'static,
) {
    use futures_util::StreamExt;
    let resp = reqwest::get(format!("{base}/api/v1/events")).await.unwrap();
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let now = std::time::Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find("\n\n") {
                let block: String = buf.drain(..i + 2).collect();
                // A tap's frame: "id: …", "event: tap", "data: …".
                if !block.lines().any(|l| l == "event: tap") {
                    continue;
                }
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                on_tap(serde_json::from_str(data).unwrap(), now);
            }
        }
    });
}

/// CPU time this VM's vCPUs were ready but the host ran something else
/// ("steal", /proc/stat), in ms. A latency tail that comes with steal is the
/// host's, not the station's.
#[allow(dead_code)]
pub fn steal_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0);
    ticks * 10 // USER_HZ = 100
}

/// The machine's CPU time by kind (/proc/stat's first line: user, nice,
/// system, idle, iowait, irq, softirq, steal), in ms.
#[allow(dead_code)]
pub fn cpu_ms() -> [u64; 8] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = [0; 8];
    if let Some(line) = stat.lines().next() {
        for (slot, field) in out.iter_mut().zip(line.split_whitespace().skip(1)) {
            *slot = field.parse::<u64>().unwrap_or(0) * 10; // USER_HZ = 100
        }
    }
    out
}

/// Where the CPU went between two [`cpu_ms`] readings, as a line.
#[allow(dead_code)]
pub fn cpu_split(before: [u64; 8], after: [u64; 8]) -> String {
    let names = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: u64 = d.iter().sum::<u64>().max(1);
    names
        .iter()
        .zip(&d)
        .map(|(n, v)| format!("{n} {:.0}%", *v as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// p50/p90/p99 of a Prometheus histogram over what happened between two
/// scrapes of `/metrics` (`before` may be empty), as bucket upper bounds.
#[allow(dead_code)]
pub fn quantiles(before: &str, after: &str, name: &str) -> String {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|l| {
                let (le, n) = l.split_once("\"} ")?;
                Some((le.parse().ok()?, n.trim().parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|&(le, n)| {
            let was = b0.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |b| b.1);
    let q = |p: f64| {
        delta
            .iter()
            .find(|(_, n)| *n >= total * p)
            .map_or(f64::NAN, |b| b.0 * 1000.0)
    };
    format!(
        "{total} samples, p50 ≤ {:.2} ms, p90 ≤ {:.2} ms, p99 ≤ {:.2} ms",
        q(0.5),
        q(0.9),
        q(0.99)
    )
}

/// The text of `{base}/metrics`.
#[allow(dead_code)]
pub async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `q` quantile of sorted latencies, in ms.
#[must_use]
#[allow(dead_code)]
pub fn ms(lat: &[Duration], q: f64) -> f64 {
    lat[((lat.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

/// The process's CPU time so far (user + system), in ms.
#[must_use]
#[allow(dead_code)]
pub fn cpu_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = rest
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + rest
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    ticks * 10
}

/// A `/proc/PID/status` field in KiB (VmHWM, VmRSS, RssAnon, RssFile).
#[must_use]
#[allow(dead_code)]
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
