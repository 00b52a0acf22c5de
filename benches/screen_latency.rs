//! Tap latency with the GTK screen attached vs headless
//! (`cargo bench --bench screen_latency`; needs Xvfb and dbus-run-session).
//!
//! The real binary, under Xvfb with the screen (the renderer the station
//! picks; `GSK_RENDERER` overrides) and with `--no-screen`, taking turns for
//! four rounds; each time 2,050 taps POSTed at 200/s (the first 50 warm up),
//! each timed to its 201 (durable). The screen must not slow intake.
//! `BENCH_QUICK=1`: one round.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn xvfb() -> (Child, String) {
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb");
    let mut out = child.stdout.take().unwrap();
    let mut s = String::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        s.push(b[0] as char);
    }
    (child, format!(":{}", s.trim()))
}

fn station(screen: Option<&str>, dir: &std::path::Path) -> (Child, String, String) {
    let data = dir.join("data");
    let cfg = dir.join("station.toml");
    std::fs::write(
        &cfg,
        format!(
            "[station]\nid = \"lat\"\ndata_dir = \"{}\"\ndebounce_ms = 0\n[http]\nlisten = \"127.0.0.1:0\"\n[screen]\nfullscreen = true\n[[poll]]\nid = \"p\"\nquestion = \"Which one?\"\nrule = \"unlimited\"\nanswers = [{{ id = \"a\", label = \"A\" }}, {{ id = \"b\", label = \"B\" }}]\n[[reader]]\nid = \"r\"\ndevice = \"/nonexistent\"\nprotocol = \"text\"\npoll = \"p\"\nanswer = \"a\"\n",
            data.display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_pollstation");
    let mut cmd = match screen {
        Some(display) => {
            let mut c = Command::new("dbus-run-session");
            c.args(["--", bin, "run", "--config"])
                .arg(&cfg)
                .env("DISPLAY", display)
                .env("GTK_A11Y", "none");
            c
        }
        None => {
            let mut c = Command::new(bin);
            c.args(["run", "--no-screen", "--config"]).arg(&cfg);
            c
        }
    };
    cmd.env("RUST_LOG", "pollstation=debug,warn")
        .stderr(Stdio::null());
    // With a screen, wait until it has painted; headless, until listening.
    let (child, base) =
        common::start_station(cmd, |l| screen.is_none() || l.contains("screen painted"));
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    (child, base, token)
}

async fn measure(base: &str, token: &str) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..2050u32 {
        tick.tick().await;
        let t0 = Instant::now();
        let r = client
            .post(format!("{base}/api/v1/taps"))
            .bearer_auth(token)
            .json(&serde_json::json!({"reader": "r", "tag": format!("{:08X}", 0x4000_0000 + i)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        if i >= 50 {
            lat.push(t0.elapsed()); // the first 50 warm up
        }
    }
    lat.sort();
    lat
}

fn p(l: &[Duration], q: f64) -> f64 {
    l[((l.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

fn main() {
    let rounds = if std::env::var_os("BENCH_QUICK").is_some() {
        1
    } else {
        4
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut x, display) = xvfb();
    // Headless and with the screen take turns, so the machine's drift falls
    // on both alike; the samples of each are pooled.
    let mut pooled: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for screen in [None, Some(display.as_str())] {
            let dir = tempfile::tempdir().unwrap();
            let (child, base, token) = station(screen, dir.path());
            let lat = rt.block_on(measure(&base, &token));
            println!(
                "screen_latency: {}: POST→201 over {} taps at 200/s: p50 {:.3} ms, p99 {:.3} ms",
                if screen.is_some() {
                    "with screen"
                } else {
                    "headless"
                },
                lat.len(),
                p(&lat, 0.5),
                p(&lat, 0.99)
            );
            pooled[usize::from(screen.is_some())].extend(lat);
            common::stop_station(child);
        }
    }
    for l in &mut pooled {
        l.sort();
    }
    let [h, s] = &pooled;
    println!(
        "screen_latency: {rounds} rounds pooled ({} taps each): headless p50 {:.3} / p90 {:.3} / p99 {:.3} ms; with screen p50 {:.3} / p90 {:.3} / p99 {:.3} ms ({:+.0}% / {:+.0}% / {:+.0}%)",
        h.len(),
        p(h, 0.5),
        p(h, 0.9),
        p(h, 0.99),
        p(s, 0.5),
        p(s, 0.9),
        p(s, 0.99),
        (p(s, 0.5) / p(h, 0.5) - 1.0) * 100.0,
        (p(s, 0.9) / p(h, 0.9) - 1.0) * 100.0,
        (p(s, 0.99) / p(h, 0.99) - 1.0) * 100.0
    );
    let _ = x.kill();
    let _ = x.wait();
}
