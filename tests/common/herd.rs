//! Herd test rigs: certificates from `pollstation herd init`, stations on
//! loopback that listen for peers (each link through a [`Proxy`]), and a
//! check that a herd has converged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

#[allow(unused_imports)] // each test binary uses a different part of the rigs
pub use super::proxy::{Mode, Proxy};
use super::{Station, WAIT, free_port};

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
    let start = tokio::time::Instant::now();
    let deadline = start + within.max(WAIT);
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
            println!(
                "converged: {} taps at {} stations in {:?}",
                first.0.len(),
                members.len(),
                start.elapsed()
            );
            return first.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let sizes: Vec<usize> = all.iter().map(|h| h.0.len()).collect();
            let mut herd = Vec::new();
            for st in members {
                herd.push(st.get("/api/v1/herd").await.1);
            }
            // What each station said about its herd links, last lines first.
            let said: Vec<String> = members
                .iter()
                .map(|st| {
                    let out = st.output();
                    let lines: Vec<&str> = out.lines().filter(|l| l.contains("herd")).collect();
                    lines[lines.len().saturating_sub(30)..].join("\n")
                })
                .collect();
            panic!(
                "the herd did not converge: taps held {sizes:?}, same {same}, once {once}, gapless {gapless}\ntallies {:#?}\nherd {:#?}\nlogs:\n{}",
                all.iter().map(|h| &h.1).collect::<Vec<_>>(),
                herd,
                said.join("\n----\n")
            );
        }
        // Follow the first station's events until a tap arrives there (or
        // a second passes), then look again. (The stream opens with the
        // state as it is: that is no change.)
        let mut sse = super::Sse::connect(&members[0].url("/api/v1/events")).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while sse.next().await.0 != "tap" {}
        })
        .await;
    }
}

/// How many of a station's herd peers (in its `status` or `/api/v1/herd`
/// JSON) are up over XMPP (its own node counts as one).
pub fn xmpp_peers_up(v: &Value) -> usize {
    v["herd"]["peers"].as_array().map_or(0, |p| {
        p.iter()
            .filter(|p| {
                p["state"] == "up"
                    && p["address"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("xmpp:"))
            })
            .count()
    })
}

/// Station `id` of a herd carried by the XMPP server at `server` (plain
/// TCP, user `<id>@localhost`), its stations `stations`.
pub fn start_xmpp(dir: &Path, id: &str, server: &str, stations: &[&str]) -> Station {
    let data = dir.join(id);
    std::fs::create_dir_all(&data).unwrap();
    let secret = dir.join(format!("{id}.password"));
    super::write_secret(&secret, super::prosody::PASSWORD);
    let stations: Vec<String> = stations
        .iter()
        .map(|s| format!("{{ id = \"{s}\", jid = \"{s}@localhost\" }}"))
        .collect();
    let extra = format!(
        "[network]\nwatch = false\n[hotplug]\nenabled = false\n\
         [xmpp]\njid = \"{id}@localhost\"\npassword_file = \"{}\"\nserver = \"{server}\"\ntls = \"none\"\npubsub = \"pubsub.localhost\"\n\
         [herd]\nid = \"test-herd\"\ncarrier = \"xmpp\"\nstations = [{}]\n",
        secret.display(),
        stations.join(", ")
    );
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        super::config(&data, &extra).replace("id = \"test\"", &format!("id = \"{id}\"")),
    )
    .unwrap();
    Station::start_with(&data, &cfg)
}
