//! Herd test rigs: certificates from `pollstation herd init`, stations on
//! loopback that listen for peers, and a TCP proxy in every link that can
//! cut it, black-hole it (stop carrying bytes, as a dead network does) or
//! slow it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Station, WAIT, free_port};

/// What a proxy does with its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Connections are closed and new ones refused.
    Cut,
    /// Bytes are held, not carried (connections stay open).
    Blackhole,
    /// Bytes are carried, each chunk after this delay.
    Delay(Duration),
}

/// A TCP proxy to one station's herd port.
pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    /// Bytes carried towards the target and back.
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, rx) = watch::channel(Mode::Pass);
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = bytes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *rx.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, rx.clone(), counted.clone()));
                tokio::spawn(pipe(sr, cw, rx.clone(), counted.clone()));
            }
        });
        Proxy { port, mode, bytes }
    }

    pub fn set(&self, m: Mode) {
        self.mode.send_replace(m);
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Held while black-holed; closed when cut.
        let m = *mode.borrow_and_update();
        match m {
            Mode::Cut => return,
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Pass | Mode::Delay(_) => {}
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            r = mode.changed() => {
                if r.is_err() { return; }
                continue;
            }
        };
        if let Mode::Delay(d) = m {
            // The simulated network is slow: this is the link's delay, not
            // a test waiting for something.
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The herd's certificates, made by the real `pollstation herd init`.
pub fn certificates(dir: &Path, stations: &[&str]) -> PathBuf {
    let out = dir.join("herd-certs");
    let status = std::process::Command::new(super::BIN)
        .args(["herd", "init", "--herd", "test-herd", "--stations"])
        .arg(stations.join(","))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "herd init");
    out
}

/// The config of station `id` in the herd: the common polls and readers,
/// a herd port, and the peers it dials.
pub fn config(
    data: &Path,
    id: &str,
    certs: &Path,
    listen: u16,
    peers: &[String],
    extra: &str,
) -> String {
    let peers = peers
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let herd = format!(
        "[network]\nwatch = false\n[hotplug]\nenabled = false\n{extra}\n\
         [herd]\nid = \"test-herd\"\nlisten = \"127.0.0.1:{listen}\"\npeers = [{peers}]\n\
         ca = \"{0}/ca.pem\"\ncert = \"{0}/{id}.pem\"\nkey = \"{0}/{id}.key\"\n",
        certs.display()
    );
    super::config(data, &herd).replace("id = \"test\"", &format!("id = \"{id}\""))
}

/// A station of a test herd, with its herd port.
pub struct Member {
    pub id: String,
    pub herd_port: u16,
    pub station: Station,
}

/// Start station `id` listening on `herd_port`, dialling `peers`.
pub fn start(
    dir: &Path,
    id: &str,
    certs: &Path,
    herd_port: u16,
    peers: &[String],
    extra: &str,
) -> Member {
    let data = dir.join(id);
    std::fs::create_dir_all(&data).unwrap();
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(&cfg, config(&data, id, certs, herd_port, peers, extra)).unwrap();
    Member {
        id: id.to_string(),
        herd_port,
        station: Station::start_with(&data, &cfg),
    }
}

/// Until `st` has `n` herd links up and is not restoring.
pub async fn linked(st: &Station, n: usize) {
    st.station_until(&format!("with {n} herd link(s) up"), |s| {
        let h = &s["herd"];
        h["restoring"] == false
            && h["peers"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["state"] == "up").count() >= n)
    })
    .await;
}

/// A free port for a station's herd listener.
pub fn port() -> u16 {
    free_port()
}

/// What a station holds: every (origin, seq) of its export (with how many
/// copies: more than one is a duplicate) and every poll's counts.
pub async fn holdings(st: &Station) -> (BTreeMap<(String, u64), usize>, BTreeMap<String, Value>) {
    let mut keys = BTreeMap::new();
    for t in st.export().await {
        *keys
            .entry((
                t["station"].as_str().unwrap().to_string(),
                t["seq"].as_u64().unwrap(),
            ))
            .or_insert(0) += 1;
    }
    let mut tallies = BTreeMap::new();
    let (_, polls) = st.get("/api/v1/polls").await;
    for p in polls.as_array().unwrap() {
        let id = p["id"].as_str().unwrap().to_string();
        let (_, t) = st.get(&format!("/api/v1/polls/{id}/tally")).await;
        tallies.insert(id, serde_json::json!({"answers": t["answers"], "total": t["total"], "by_station": t["by_station"]}));
    }
    (keys, tallies)
}

/// Until every station holds the same taps (each exactly once, with no
/// gap in any origin's numbering) and shows the same tallies; panics after
/// `within` with what differs.
pub async fn converged(
    members: &[&Station],
    within: Duration,
) -> (BTreeMap<(String, u64), usize>, BTreeMap<String, Value>) {
    let deadline = tokio::time::Instant::now() + within.max(WAIT);
    loop {
        let mut all = Vec::new();
        for st in members {
            all.push(holdings(st).await);
        }
        let first = &all[0];
        let same = all.iter().all(|h| h == first);
        let once = first.0.values().all(|&n| n == 1);
        let origins: BTreeSet<&String> = first.0.keys().map(|(o, _)| o).collect();
        let gapless = origins.iter().all(|o| {
            let seqs: Vec<u64> = first
                .0
                .keys()
                .filter(|(x, _)| x == *o)
                .map(|(_, s)| *s)
                .collect();
            seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1)
        });
        if same && once && gapless {
            return first.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let sizes: Vec<usize> = all.iter().map(|h| h.0.len()).collect();
            let mut herd = Vec::new();
            for st in members {
                herd.push(st.get("/api/v1/herd").await.1);
            }
            panic!(
                "the herd did not converge: taps held {sizes:?}, same {same}, once {once}, gapless {gapless}\ntallies {:#?}\nherd {:#?}",
                all.iter().map(|h| &h.1).collect::<Vec<_>>(),
                herd
            );
        }
        // Follow the first station's events until something changes there
        // (or a second passes), then look again.
        let mut sse = super::Sse::connect(&members[0].url("/api/v1/events")).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            sse.next().await;
            sse.next().await
        })
        .await;
    }
}
