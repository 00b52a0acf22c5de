//! Test harness: runs the real `pollstation` binary on port 0 with a temp
//! data dir, and reads its HTTP API and event stream.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

pub mod ejabberd;
pub mod herd;
pub mod prosody;
pub mod proxy;

pub const BIN: &str = env!("CARGO_BIN_EXE_pollstation");

/// A thread of a process: its name, scheduling policy, nice value and CPU
/// ticks so far (`/proc/PID/task/TID/stat`).
#[derive(Debug)]
pub struct Thread {
    pub name: String,
    pub policy: u32,
    pub nice: i32,
    pub ticks: u64,
}

/// The threads of process `pid` (one that ends while being read is left out).
pub fn threads(pid: u32) -> Vec<Thread> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue;
        };
        // Fields after the command's closing parenthesis, which is field 2:
        // utime 14, stime 15, nice 19, policy 41.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push(Thread {
            name: comm.trim().to_string(),
            ticks: rest[14 - 3].parse::<u64>().unwrap() + rest[15 - 3].parse::<u64>().unwrap(),
            nice: rest[19 - 3].parse().unwrap(),
            policy: rest[41 - 3].parse().unwrap(),
        });
    }
    out
}

/// The lowest nice value a thread of this process may take (−20 as root or
/// with `RLIMIT_NICE` 40, less with a smaller limit), or `None` where it may
/// not go below 0: asked of the kernel from a short-lived thread.
pub fn lowest_nice_allowed() -> Option<i32> {
    std::thread::spawn(|| {
        // SAFETY: setpriority with who = 0 changes only the calling,
        // short-lived thread's nice value.
        (-20..0).find(|&n| unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } == 0)
    })
    .join()
    .unwrap()
}

/// A TCP port free on loopback right now (for servers that cannot be
/// told to pick their own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Write a secret the way a technician must: mode 0600 (the station
/// refuses a secret other users can read).
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A config with three polls (one per rule) and fixed and slot readers.
pub fn config(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"
[station]
id = "test"
data_dir = "{}"
debounce_ms = 2000

[http]
listen = "127.0.0.1:0"

[[poll]]
id = "first"
question = "First tap counts?"
rule = "one-per-person"
answers = [{{ id = "a", label = "Alpha" }}, {{ id = "b", label = "Bravo" }}]

[[poll]]
id = "last"
question = "Last tap counts?"
rule = "last-wins"
answers = [{{ id = "a", label = "Alpha" }}, {{ id = "b", label = "Bravo" }}]

[[poll]]
id = "all"
question = "Every tap counts?"
rule = "unlimited"
answers = [{{ id = "a", label = "Alpha" }}, {{ id = "b", label = "Bravo" }}]

[[reader]]
id = "first-a"
device = "/nonexistent/first-a"
protocol = "text"
poll = "first"
answer = "a"

[[reader]]
id = "first-b"
device = "/nonexistent/first-b"
protocol = "text"
poll = "first"
answer = "b"

[[reader]]
id = "last-a"
device = "/nonexistent/last-a"
protocol = "text"
poll = "last"
answer = "a"

[[reader]]
id = "last-b"
device = "/nonexistent/last-b"
protocol = "text"
poll = "last"
answer = "b"

[[reader]]
id = "all-a"
device = "/nonexistent/all-a"
protocol = "text"
poll = "all"
answer = "a"

[[reader]]
id = "slot-b"
device = "/nonexistent/slot-b"
protocol = "text"
slot = "B"
{extra}
"#,
        data_dir.display()
    )
}

/// A running station process.
pub struct Station {
    pub child: Option<Child>,
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub output: Arc<Mutex<Vec<String>>>,
    /// Lines of output so far: changes with every line.
    lines: tokio::sync::watch::Receiver<usize>,
    /// One message per output pipe (stdout, stderr) when it reaches its end.
    eof: std::sync::mpsc::Receiver<()>,
    pub http: reqwest::Client,
}

impl Station {
    /// Write `config_text` next to `data_dir` and start the station on it.
    pub fn start(data_dir: &Path, config_text: &str) -> Station {
        std::fs::create_dir_all(data_dir).unwrap();
        let config_path = data_dir.parent().unwrap().join(format!(
            "{}.toml",
            data_dir.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&config_path, config_text).unwrap();
        Self::start_with(data_dir, &config_path)
    }

    pub fn start_with(data_dir: &Path, config_path: &Path) -> Station {
        Self::start_env(data_dir, config_path, &[])
    }

    /// Start on an existing config file with extra environment variables.
    pub fn start_env(data_dir: &Path, config_path: &Path, env: &[(&str, &str)]) -> Station {
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        Self::start_cmd(data_dir, config_path, cmd)
    }

    /// Start with at most `files` open files (soft and hard limit), as
    /// `LimitNOFILE=` would.
    pub fn start_limited(data_dir: &Path, config_path: &Path, files: u32) -> Station {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(BIN);
        Self::start_cmd(data_dir, config_path, cmd)
    }

    /// Start `cmd` (the binary, or a wrapper around it) on `config_path`.
    pub fn start_cmd(data_dir: &Path, config_path: &Path, mut cmd: Command) -> Station {
        let mut child = cmd
            .args(["run", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "pollstation=debug,warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pollstation");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines) = tokio::sync::watch::channel(0usize);
        let lines_tx = Arc::new(lines_tx);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        let count = lines_tx.clone();
        let (eof_tx, eof) = std::sync::mpsc::channel();
        let eof_out = eof_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = addr_tx.send(addr);
                }
                out.lock().unwrap().push(line);
                count.send_modify(|n| *n += 1);
            }
            let _ = eof_out.send(());
        });
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                out.lock().unwrap().push(format!("stderr: {line}"));
                lines_tx.send_modify(|n| *n += 1);
            }
            let _ = eof_tx.send(());
        });
        let addr = match addr_rx.recv_timeout(WAIT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "station did not start listening; output:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
        };
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        Station {
            child: Some(child),
            base: format!("http://{addr}"),
            token,
            data_dir: data_dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            output,
            lines,
            eof,
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        }
    }

    /// Until a line of the station's output contains `needle`, or panic
    /// after WAIT; woken by each new line.
    pub async fn output_until(&self, needle: &str) {
        let mut lines = self.lines.clone();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                lines.borrow_and_update();
                if self.output().contains(needle) {
                    return;
                }
                if lines.changed().await.is_err() {
                    // Output ended: one last look.
                    assert!(self.output().contains(needle), "output ended");
                    return;
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no {needle:?} in the output:\n{}",
            self.output()
        );
    }

    /// Until the station's state satisfies `pred`; returns it. Follows the
    /// `status` events (the first comes on connect; counters without an
    /// event of their own are announced at most every 250 ms), up to WAIT.
    pub async fn station_until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut sse = Sse::connect(&self.url("/api/v1/events")).await;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let (name, v) = sse.next().await;
                if name == "status" && pred(&v) {
                    return v;
                }
            }
        })
        .await;
        match found {
            Ok(v) => v,
            Err(_) => {
                let (_, s) = self.get("/api/v1/station").await;
                panic!("station never {what}: {s}\n{}", self.output())
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn admin_get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn tap(&self, reader: &str, tag: &str) -> (u16, Value) {
        self.admin_post(
            "/api/v1/taps",
            serde_json::json!({ "reader": reader, "tag": tag }),
        )
        .await
    }

    pub async fn tally(&self, poll: &str) -> Vec<u64> {
        let (s, v) = self.get(&format!("/api/v1/polls/{poll}/tally")).await;
        assert_eq!(s, 200, "{v}");
        v["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["count"].as_u64().unwrap())
            .collect()
    }

    /// All logged taps, from the admin export.
    pub async fn export(&self) -> Vec<Value> {
        let (s, body) = self.admin_get_text("/api/v1/taps").await;
        assert_eq!(s, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// SIGTERM, then wait for the exit status and for the last of the
    /// output to be read (the pipes are read on threads of their own, which
    /// may still hold the final lines when the process is gone).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let child = self.child.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = wait_exit(child);
        for _ in 0..2 {
            self.eof
                .recv_timeout(WAIT)
                .expect("the station's output pipes close when it exits");
        }
        status
    }

    /// kill -9.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait for a child to exit, at most WAIT.
pub fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(WAIT) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("process {pid} did not exit within {WAIT:?}");
        }
    }
}

/// A parsed Server-Sent Events stream. Events skipped by one wait are kept
/// for the next (`next_named` and `until` look there first), so waiting for
/// one event never loses another.
pub struct Sse {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
    backlog: std::collections::VecDeque<(String, Value)>,
    /// The task reading the stream: aborted on drop, so the connection
    /// closes with the `Sse` (not at the next event the station sends).
    reader: tokio::task::AbortHandle,
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Sse {
    pub async fn connect(url: &str) -> Sse {
        Self::resume(url, None).await
    }

    /// Connect sending `Last-Event-ID` (when given), as a browser does when
    /// it reconnects. An event's `id:` is in its value as `"_id"`.
    pub async fn resume(url: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find("\n\n") {
                    let block: String = buf.drain(..i + 2).collect();
                    let mut name = String::from("message");
                    let mut data = String::new();
                    let mut id = None;
                    for line in block.lines() {
                        if let Some(n) = line.strip_prefix("id:") {
                            id = Some(n.trim().to_string());
                        } else if let Some(n) = line.strip_prefix("event:") {
                            name = n.trim().to_string();
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue; // keep-alive comment
                    }
                    let mut v = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    if let (Some(id), Some(o)) = (id, v.as_object_mut()) {
                        o.insert("_id".into(), Value::String(id));
                    }
                    if tx.send((name, v)).is_err() {
                        return;
                    }
                }
            }
        });
        Sse {
            rx,
            backlog: std::collections::VecDeque::new(),
            reader: reader.abort_handle(),
        }
    }

    /// The next event, whatever its name (from the backlog first).
    pub async fn next(&mut self) -> (String, Value) {
        if let Some(e) = self.backlog.pop_front() {
            return e;
        }
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {WAIT:?}"))
            .expect("event stream ended")
    }

    /// The next event named `name` (from the backlog first), or panic after WAIT.
    pub async fn next_named(&mut self, name: &str) -> Value {
        self.until(name, |_| true).await
    }

    /// The first event named `name` that satisfies `pred`: from the backlog,
    /// else as it arrives. Others are kept in the backlog.
    pub async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(|(n, v)| n == name && pred(v)) {
            return self.backlog.remove(i).expect("index found above").1;
        }
        let fut = async {
            loop {
                let (n, v) = self.rx.recv().await.expect("event stream ended");
                if n == name && pred(&v) {
                    return v;
                }
                self.backlog.push_back((n, v));
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("no {name:?} event within {WAIT:?}"))
    }

    /// New events until one (of any name) satisfies `pred`; the backlog is
    /// not searched (it may hold stale states), but others are kept in it.
    pub async fn until_any(&mut self, pred: impl Fn(&str, &Value) -> bool) -> Value {
        let fut = async {
            loop {
                let (n, v) = self.rx.recv().await.expect("event stream ended");
                if pred(&n, &v) {
                    return v;
                }
                self.backlog.push_back((n, v));
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("no matching event within {WAIT:?}"))
    }

    /// Until reader `id` has `status`: a new `reader` event, or the reader's
    /// entry in a new `status` snapshot.
    pub async fn reader_status(&mut self, id: &str, status: &str) -> Value {
        self.until_any(|name, v| match name {
            "reader" => v["id"] == id && v["status"] == status,
            "status" => v["readers"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["id"] == id && r["status"] == status)),
            _ => false,
        })
        .await
    }
}
