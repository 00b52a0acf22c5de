//! Serial readers end to end over real pseudo-terminals: simulated readers
//! speak each protocol byte for byte; taps come out of the real HTTP event
//! stream once durable.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Sse, WAIT};
use pollstation::app;
use pollstation::app::sim::SimReader;
use pollstation::config::{Config, Protocol};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Rig {
    _dir: tempfile::TempDir,
    dev: std::path::PathBuf,
    running: Option<app::Running>,
    shutdown: CancellationToken,
    base: String,
    token: String,
    sims: HashMap<String, SimReader>,
    sse: Sse,
    http: reqwest::Client,
}

/// `readers`: (id, protocol the reader is configured with, protocol the
/// simulated device speaks, answer, extra TOML for the reader).
async fn rig(readers: &[(&str, &str, Protocol, &str, &str)]) -> Rig {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev");
    let mut text = format!(
        r#"
[station]
id = "rig"
data_dir = "{}"
debounce_ms = 0

[http]
listen = "127.0.0.1:0"

[[poll]]
id = "vote"
question = "Which?"
rule = "one-per-person"
answers = [
  {{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}, {{ id = "c", label = "C" }},
  {{ id = "d", label = "D" }}, {{ id = "e", label = "E" }}, {{ id = "f", label = "F" }},
]
"#,
        dir.path().join("data").display()
    );
    let mut sims = HashMap::new();
    for (id, configured, speaks, answer, extra) in readers {
        let path = dev.join(id);
        text.push_str(&format!(
            "\n[[reader]]\nid = \"{id}\"\ndevice = \"{}\"\nprotocol = \"{configured}\"\npoll = \"vote\"\nanswer = \"{answer}\"\n{extra}\n",
            path.display()
        ));
        sims.insert(
            id.to_string(),
            SimReader::spawn(*speaks, Some(&path)).unwrap(),
        );
    }
    let cfg = Config::parse(&text, dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(&cfg, shutdown.clone()).await.unwrap();
    let base = format!("http://{}", running.http_addr);
    let sse = Sse::connect(&format!("{base}/api/v1/events")).await;
    Rig {
        token: running.admin_token.clone(),
        running: Some(running),
        _dir: dir,
        dev,
        shutdown,
        base,
        sims,
        sse,
        http: reqwest::Client::new(),
    }
}

impl Rig {
    async fn tap_event(&mut self, reader: &str) -> Value {
        self.sse.until("tap", |t| t["reader"] == reader).await
    }

    /// Until reader `id` has `status`: already (per the API), or by an event.
    async fn reader_event(&mut self, reader: &str, status: &str) -> Value {
        let st = self.station().await;
        if let Some(r) = st["readers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == reader && r["status"] == status)
        {
            return r.clone();
        }
        self.sse.reader_status(reader, status).await
    }

    async fn export(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/api/v1/taps", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn station(&self) -> Value {
        self.http
            .get(format!("{}/api/v1/station", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn sim(&self, id: &str) -> &SimReader {
        &self.sims[id]
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.running.take().unwrap().wait().await;
    }
}

async fn wait_feedback(sim: &SimReader, want: &str) {
    let mut fb = sim.feedback();
    tokio::time::timeout(WAIT, fb.wait_for(|v| v.iter().any(|l| l == want)))
        .await
        .unwrap_or_else(|_| panic!("no feedback {want:?}; got {:?}", sim.feedback().borrow()))
        .unwrap();
}

const HOLD: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_from_bytes_to_event() {
    let mut rig = rig(&[
        ("pn", "pn532", Protocol::Pn532, "a", ""),
        ("sm", "sm130", Protocol::Sm130, "b", ""),
        ("id", "id12", Protocol::Id12, "c", ""),
        ("rdm", "rdm6300", Protocol::Rdm6300, "d", ""),
        ("txt", "text", Protocol::Text, "e", ""),
    ])
    .await;
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "pn",
            &[0x04, 0x7B, 0xCB, 0x51, 0x96, 0x22, 0x80],
            "urn:rfid:047BCB51962280",
        ),
        ("sm", &[0xDE, 0xAD, 0xBE, 0xEF], "urn:rfid:DEADBEEF"),
        ("id", &[0x0C, 0x00, 0x06, 0x21, 0xA5], "urn:rfid:0C000621A5"),
        (
            "rdm",
            &[0x67, 0x00, 0x3B, 0x51, 0xC6],
            "urn:rfid:67003B51C6",
        ),
        ("txt", &[0x11, 0x22, 0x33, 0x44], "urn:rfid:11223344"),
    ];
    for (reader, uid, _) in &cases {
        rig.sim(reader).hold(uid, HOLD).await;
        let ev = rig.tap_event(reader).await;
        assert_eq!(ev["counted"], true, "{ev}");
        assert!(ev.get("tag").is_none());
    }
    let taps = rig.export().await;
    let got: Vec<(String, String)> = taps
        .iter()
        .map(|t| {
            (
                t["reader"].as_str().unwrap().into(),
                t["tag"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = cases
        .iter()
        .map(|(r, _, t)| (r.to_string(), t.to_string()))
        .collect();
    assert_eq!(got, want);
    let station = rig.station().await;
    for r in station["readers"].as_array().unwrap() {
        assert_eq!(r["status"], "connected", "{r}");
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_tag_is_one_tap_and_lifting_it_makes_the_next_a_new_one() {
    let mut rig = rig(&[
        ("pn", "pn532", Protocol::Pn532, "a", ""),
        ("rdm", "rdm6300", Protocol::Rdm6300, "b", ""),
        ("marker", "text", Protocol::Text, "c", ""),
    ])
    .await;
    // Held for 1 s: polled 10 times / repeated 16 times, one tap each.
    rig.sim("pn")
        .hold(&[1, 2, 3, 4], Duration::from_secs(1))
        .await;
    rig.sim("rdm")
        .hold(&[9, 1, 2, 3, 4], Duration::from_secs(1))
        .await;
    rig.tap_event("pn").await;
    rig.tap_event("rdm").await;
    // Wait until the PN532 has been polled for 2 s more (two commands a
    // poll): the tags are gone for longer than the absence time. Then a
    // marker tap: anything the held tags produced came before it.
    let mut answered = rig.sim("pn").answered();
    let start = *answered.borrow();
    tokio::time::timeout(WAIT, answered.wait_for(|n| *n > start + 40))
        .await
        .unwrap()
        .unwrap();
    rig.sim("marker").hold(&[7, 7, 7, 7], HOLD).await;
    rig.tap_event("marker").await;
    let per_reader = |taps: &[Value], r: &str| taps.iter().filter(|t| t["reader"] == r).count();
    let taps = rig.export().await;
    assert_eq!(
        (per_reader(&taps, "pn"), per_reader(&taps, "rdm")),
        (1, 1),
        "{taps:?}"
    );
    // Lifted and tapped again: a new tap (not counted: one-per-person).
    rig.sim("pn").hold(&[1, 2, 3, 4], HOLD).await;
    let ev = rig.tap_event("pn").await;
    assert_eq!(ev["counted"], false);
    assert_eq!(per_reader(&rig.export().await, "pn"), 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_skipped_and_counted() {
    let mut rig = rig(&[
        ("rdm", "rdm6300", Protocol::Rdm6300, "a", ""),
        ("txt", "text", Protocol::Text, "b", ""),
        ("id", "id12", Protocol::Id12, "c", ""),
    ])
    .await;
    rig.sim("rdm")
        .raw(b"\x02\xff\xfe67003B\x00\x0313\x37garbage\x0268003B51C6CB\x03")
        .await;
    rig.sim("rdm")
        .hold(&[0x67, 0x00, 0x3B, 0x51, 0xC6], HOLD)
        .await;
    rig.tap_event("rdm").await;
    rig.sim("txt")
        .raw(b"\xff\xfe\r\nWARNING: Communication failure\r\n4A1B2C3\r\nCard SAK: 08\r\n")
        .await;
    rig.sim("txt").hold(&[0xAB, 0xCD, 0xEF, 0x01], HOLD).await;
    rig.tap_event("txt").await;
    rig.sim("id").raw(b"\x020C000621A5FF\r\n\x03").await; // bad checksum
    rig.sim("id")
        .hold(&[0x0C, 0x00, 0x06, 0x21, 0xA5], HOLD)
        .await;
    rig.tap_event("id").await;
    let taps = rig.export().await;
    assert_eq!(taps.len(), 3, "garbage made no taps: {taps:?}");
    let tags: Vec<&str> = taps.iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(
        tags,
        [
            "urn:rfid:67003B51C6",
            "urn:rfid:ABCDEF01",
            "urn:rfid:0C000621A5"
        ]
    );
    // Counters reach the Station within a second or so: wait for them.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    rig.sse
        .until_any(|name, v| {
            let mut seen = seen.lock().unwrap();
            let mut note = |r: &Value| {
                if r["frames_bad"].as_u64() > Some(0) {
                    seen.insert(r["id"].as_str().unwrap_or("").to_string());
                }
            };
            match name {
                "reader" => note(v),
                "status" => v["readers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .for_each(&mut note),
                _ => {}
            }
            ["rdm", "txt", "id"].iter().all(|id| seen.contains(*id))
        })
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_reader_goes_disconnected_and_comes_back() {
    let mut rig = rig(&[
        ("txt", "text", Protocol::Text, "a", ""),
        ("pn", "pn532", Protocol::Pn532, "b", ""),
    ])
    .await;
    rig.reader_event("pn", "connected").await;
    for id in ["txt", "pn"] {
        rig.sim(id).unplug().await;
        let ev = rig.reader_event(id, "disconnected").await;
        assert!(
            ev["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{ev}"
        );
    }
    // Plugged back in (a new pty at the same device path).
    for (id, p) in [("txt", Protocol::Text), ("pn", Protocol::Pn532)] {
        let sim = SimReader::spawn(p, Some(&rig.dev.join(id))).unwrap();
        rig.sims.insert(id.into(), sim);
        rig.reader_event(id, "connected").await;
    }
    rig.sim("txt").hold(&[1, 1, 1, 1], HOLD).await;
    assert_eq!(rig.tap_event("txt").await["counted"], true);
    rig.sim("pn").hold(&[2, 2, 2, 2], HOLD).await;
    assert_eq!(rig.tap_event("pn").await["counted"], true);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_reader_that_stops_answering_recovers() {
    let mut rig = rig(&[
        ("pn", "pn532", Protocol::Pn532, "a", ""),
        ("sm", "sm130", Protocol::Sm130, "b", ""),
    ])
    .await;
    rig.reader_event("pn", "connected").await;
    rig.reader_event("sm", "connected").await;
    // A reply cut off mid-frame, then a missed poll: costs a poll or two.
    rig.sim("pn").cut_next().await;
    rig.sim("sm").cut_next().await;
    rig.sim("sm").mute(1).await;
    // Held for a second, as people do: long enough to outlast a failed poll.
    rig.sim("pn")
        .hold(&[3, 3, 3, 3], Duration::from_secs(1))
        .await;
    rig.sim("sm")
        .hold(&[4, 4, 4, 4], Duration::from_secs(1))
        .await;
    rig.tap_event("pn").await;
    rig.tap_event("sm").await;
    // Silent for longer: reported disconnected, re-initialised, back.
    rig.sim("pn").mute(5).await;
    rig.reader_event("pn", "disconnected").await;
    rig.reader_event("pn", "connected").await;
    rig.sim("pn")
        .hold(&[5, 5, 5, 5], Duration::from_secs(1))
        .await;
    assert_eq!(rig.tap_event("pn").await["counted"], true);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_get_feedback_after_the_tap_is_durable() {
    let mut rig = rig(&[
        ("txt", "text", Protocol::Text, "a", ""),
        (
            "txt2",
            "text",
            Protocol::Text,
            "b",
            "feedback_counted = \"BEEP\"\nfeedback_refused = \"BUZZ\"",
        ),
        ("sm", "sm130", Protocol::Sm130, "c", "pulse_ms = 100"),
    ])
    .await;
    rig.sim("txt").hold(&[0xAA, 1, 2, 3], HOLD).await;
    rig.tap_event("txt").await;
    wait_feedback(rig.sim("txt"), "OK").await;
    // The same person again, on another answer: one-per-person says no.
    rig.sim("txt2").hold(&[0xAA, 1, 2, 3], HOLD).await;
    assert_eq!(rig.tap_event("txt2").await["counted"], false);
    wait_feedback(rig.sim("txt2"), "BUZZ").await;
    // SM130: output 1 pulses for a counted tap, then goes off.
    rig.sim("sm").hold(&[0xBB, 1, 2, 3], HOLD).await;
    rig.tap_event("sm").await;
    wait_feedback(rig.sim("sm"), "outputs 1").await;
    wait_feedback(rig.sim("sm"), "outputs 0").await;
    rig.sim("sm").hold(&[0xAA, 1, 2, 3], HOLD).await;
    rig.tap_event("sm").await;
    wait_feedback(rig.sim("sm"), "outputs 2").await;
    // A random ID (phone): refused at the reader, no tap, "not counted".
    rig.sim("txt").hold(&[0x08, 0x12, 0x34, 0x56], HOLD).await;
    wait_feedback(rig.sim("txt"), "NO").await;
    let taps = rig.export().await;
    assert!(
        taps.iter().all(|t| t["tag"] != "urn:rfid:08123456"),
        "{taps:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_order_and_auto_detection() {
    let mut rig = rig(&[
        (
            "rev",
            "text",
            Protocol::Text,
            "a",
            "uid_order = \"reversed\"",
        ),
        ("auto-pn", "auto", Protocol::Pn532, "b", ""),
        ("auto-sm", "auto", Protocol::Sm130, "c", ""),
        ("auto-txt", "auto", Protocol::Text, "d", ""),
    ])
    .await;
    rig.sim("rev").hold(&[0xDE, 0xAD, 0xBE, 0xEF], HOLD).await;
    rig.tap_event("rev").await;
    for (id, uid) in [
        ("auto-pn", [1u8, 0, 0, 1]),
        ("auto-sm", [1, 0, 0, 2]),
        ("auto-txt", [1, 0, 0, 3]),
    ] {
        rig.reader_event(id, "connected").await;
        rig.sim(id).hold(&uid, HOLD).await;
        rig.tap_event(id).await;
    }
    let taps = rig.export().await;
    assert_eq!(taps[0]["tag"], "urn:rfid:EFBEADDE");
    let st = rig.station().await;
    let proto = |id: &str| {
        st["readers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["protocol"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (proto("auto-pn"), proto("auto-sm"), proto("auto-txt")),
        ("pn532".into(), "sm130".into(), "text".into())
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_device_is_reported_and_attached_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("late");
    let text = format!(
        r#"
[station]
id = "late"
data_dir = "{}"

[http]
listen = "127.0.0.1:0"

[[poll]]
id = "p"
question = "?"
rule = "unlimited"
answers = [{{ id = "a", label = "A" }}]

[[reader]]
id = "late"
device = "{}"
protocol = "sm130"
poll = "p"
answer = "a"
"#,
        dir.path().join("data").display(),
        dev.display()
    );
    let cfg = Config::parse(&text, dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(&cfg, shutdown.clone()).await.unwrap();
    let mut sse = Sse::connect(&format!("http://{}/api/v1/events", running.http_addr)).await;
    let ev = sse.reader_status("late", "disconnected").await;
    let text = ev.to_string();
    assert!(text.contains("cannot open"), "{ev}");
    let sim = SimReader::spawn(Protocol::Sm130, Some(&dev)).unwrap();
    sse.reader_status("late", "connected").await;
    sim.hold(&[6, 6, 6, 6], HOLD).await;
    sse.until("tap", |t| t["reader"] == "late").await;
    shutdown.cancel();
    running.wait().await;
}

/// libnfc's own tools (Debian's libnfc-bin, libnfc-examples) drive the
/// simulated PN532 through its HSU driver as they would the chip: the
/// wake-up, the communication test, registers, every modulation's target
/// listing, auto-polling, deselect and power-down.
#[tokio::test]
async fn libnfc_lists_and_polls_the_simulated_pn532s_tag() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("pn532");
    let sim = SimReader::spawn(Protocol::Pn532, Some(&dev)).unwrap();
    let libnfc = |tool: &str| {
        let mut c = tokio::process::Command::new(tool);
        c.env("LIBNFC_AUTO_SCAN", "false")
            .env(
                "LIBNFC_DEFAULT_DEVICE",
                format!("pn532_uart:{}", dev.display()),
            )
            .kill_on_drop(true);
        c
    };
    let run = async |mut c: tokio::process::Command| {
        let out = tokio::time::timeout(WAIT, c.output())
            .await
            .expect("libnfc finished")
            .expect("libnfc-bin and libnfc-examples (scripts/install-deps test)");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A MIFARE Classic (4-byte UID) on the reader: nfc-list finds it.
    sim.hold(&[0x04, 0xA1, 0xB2, 0xC3], WAIT).await;
    let out = run(libnfc("nfc-list")).await;
    println!("nfc-list:\n{out}");
    assert!(out.contains("1 ISO14443A passive target(s) found"), "{out}");
    assert!(out.contains("UID (NFCID1): 04  a1  b2  c3  \n"), "{out}");
    assert!(out.contains("SAK (SEL_RES): 08"), "{out}");
    // An Ultralight (7-byte UID): nfc-poll's auto-poll finds it.
    sim.hold(&[0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6], WAIT)
        .await;
    let out = run(libnfc("nfc-poll")).await;
    println!("nfc-poll:\n{out}");
    assert!(
        out.contains("UID (NFCID1): 04  a1  b2  c3  d4  e5  f6"),
        "{out}"
    );
    assert!(out.contains("ATQA (SENS_RES): 00  44"), "{out}");
}
