//! A station in its own process fed by text readers on real ptys: the
//! readers and intake benches. This process writes each tap's line straight
//! to a pty master (timed just before the write) and follows the SSE stream.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio_serial::SerialPort;

pub struct PtyRig {
    _dir: tempfile::TempDir,
    masters: Vec<tokio_serial::SerialStream>,
    _slaves: Vec<tokio_serial::SerialStream>,
    pub child: Option<Child>,
    pub base: String,
    arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    sent: HashMap<String, Vec<Instant>>,
    next_tag: u32,
}

impl PtyRig {
    /// Start the station with `readers` text readers on one unlimited poll
    /// (debounce off, no feedback lines), wait until all are connected and
    /// follow its event stream.
    pub async fn start(readers: usize) -> PtyRig {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let mut cfg_text = format!(
            "[station]\nid = \"bench\"\ndata_dir = \"{}\"\ndebounce_ms = 0\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[network]\nwatch = false\n[hotplug]\nenabled = false\n\n[[poll]]\nid = \"p\"\nquestion = \"?\"\nrule = \"unlimited\"\nanswers = [{{ id = \"a\", label = \"A\" }}]\n",
            dir.path().join("data").display()
        );
        let mut masters = Vec::new();
        let mut slaves = Vec::new();
        for r in 0..readers {
            let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
            let link = dev.join(format!("r{r}"));
            std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
            cfg_text.push_str(&format!(
                "\n[[reader]]\nid = \"r{r}\"\ndevice = \"{}\"\nprotocol = \"text\"\npoll = \"p\"\nanswer = \"a\"\nfeedback_counted = \"\"\nfeedback_refused = \"\"\n",
                link.display()
            ));
            masters.push(master);
            slaves.push(slave);
        }
        let cfg = dir.path().join("station.toml");
        std::fs::write(&cfg, cfg_text).unwrap();
        // `BENCH_BINARY`: another build of the station (e.g. the headless
        // one, `--no-default-features`).
        let bin = std::env::var("BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pollstation").to_string());
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["run", "--no-screen", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn,pollstation=info");
        let (child, base) = super::start_station(cmd, |_| true);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: serde_json::Value = client
                .get(format!("{base}/api/v1/station"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let up = v["readers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["status"] == "connected")
                .count();
            if up == readers {
                break;
            }
            assert!(Instant::now() < deadline, "only {up} readers connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        let arr = arrivals.clone();
        super::follow_taps(&base, move |v, now| {
            arr.lock()
                .unwrap()
                .entry(v["reader"].as_str().unwrap().to_string())
                .or_default()
                .push(now);
        })
        .await;
        PtyRig {
            _dir: dir,
            masters,
            _slaves: slaves,
            child: Some(child),
            base,
            arrivals,
            sent: HashMap::new(),
            next_tag: 0x2000_0000,
        }
    }

    /// The floor (`cargo bench --bench floor`): instead of the station,
    /// `exe` (the floor bench itself, which sees `FLOOR_CHILD`) on the same
    /// `readers` ptys, doing only the system calls a durable tap needs (read
    /// the ptys, append to a file and `fdatasync` it unless `sync` is false,
    /// write a line per tap to a TCP socket), followed like the SSE stream.
    pub async fn floor(readers: usize, sync: bool, exe: &std::path::Path) -> PtyRig {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cmd = std::process::Command::new(exe);
        cmd.env("FLOOR_CHILD", if sync { "sync" } else { "nosync" })
            .arg(listener.local_addr().unwrap().to_string())
            .arg(dir.path().join("log"));
        let mut masters = Vec::new();
        let mut slaves = Vec::new();
        for _ in 0..readers {
            let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
            cmd.arg(slave.name().unwrap());
            masters.push(master);
            slaves.push(slave);
        }
        let child = cmd.spawn().expect("start the floor");
        let (conn, _) = listener.accept().await.unwrap();
        let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        let arr = arrivals.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(conn).lines();
            while let Ok(Some(reader)) = lines.next_line().await {
                let now = Instant::now();
                arr.lock()
                    .unwrap()
                    .entry(format!("r{reader}"))
                    .or_default()
                    .push(now);
            }
        });
        PtyRig {
            _dir: dir,
            masters,
            _slaves: slaves,
            child: Some(child),
            base: String::new(),
            arrivals,
            sent: HashMap::new(),
            next_tag: 0x2000_0000,
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Play `rate` taps/s in total, round robin over the readers, for
    /// `seconds`; wait until all arrived. The latencies (write → SSE event)
    /// of this run's taps.
    pub async fn play(&mut self, rate: u32, seconds: f64) -> Vec<Duration> {
        let n = (f64::from(rate) * seconds) as u32;
        let before: HashMap<String, usize> = self
            .sent
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        let expected: usize = self.sent.values().map(Vec::len).sum::<usize>() + n as usize;
        let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let readers = self.masters.len();
        for i in 0..n {
            interval.tick().await;
            let r = (i as usize) % readers;
            let uid = self.next_tag.to_be_bytes();
            self.next_tag += 1;
            let line = format!(
                "Card UID: {:02X} {:02X} {:02X} {:02X}\r\n",
                uid[0], uid[1], uid[2], uid[3]
            );
            self.sent
                .entry(format!("r{r}"))
                .or_default()
                .push(Instant::now());
            self.masters[r].write_all(line.as_bytes()).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: usize = self.arrivals.lock().unwrap().values().map(Vec::len).sum();
            if got >= expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {got} of {expected} taps arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let arrivals = self.arrivals.lock().unwrap();
        let mut lat = Vec::new();
        for (reader, times) in &self.sent {
            let skip = before.get(reader).copied().unwrap_or(0);
            for (t0, t1) in times.iter().zip(&arrivals[reader]).skip(skip) {
                lat.push(*t1 - *t0);
            }
        }
        lat.sort();
        lat
    }

    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            super::stop_station(c);
        }
    }
}

impl Drop for PtyRig {
    fn drop(&mut self) {
        self.stop();
    }
}
