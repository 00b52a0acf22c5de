//! Operations: `pollstation ctl` against a running station (every
//! subcommand, `--json` parsed), the control socket's permissions, and
//! config reload by SIGHUP (valid and invalid).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Sse, Station, WAIT};
use serde_json::Value;

fn ctl(st: &Station, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(st.data_dir.join("control.sock"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pollstation ctl")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ctl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(st: &Station, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(ok(&ctl(st, &a)).trim()).expect("ctl --json prints JSON")
}

fn start(dir: &std::path::Path) -> Station {
    let data = dir.join("data");
    Station::start(
        &data,
        &common::config(
            &data,
            "[network]\nwatch = false\n[hotplug]\nenabled = false\n",
        ),
    )
}

#[tokio::test]
async fn ctl_drives_a_running_station() {
    let dir = tempfile::tempdir().unwrap();
    let st = start(dir.path());

    // Socket: owner only.
    let sock = st.data_dir.join("control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");

    // tap (inject), then everything else sees it.
    let tap = json(&st, &["tap", "all-a", "04A1B2C3"]);
    assert_eq!(tap["counted"], true);
    assert_eq!(tap["poll"], "all");
    let human = ok(&ctl(&st, &["tap", "all-a", "04A1B2C4"]));
    assert!(
        human.starts_with("tap 2 on all-a: all/a counted"),
        "{human}"
    );

    let status = json(&st, &["status"]);
    assert_eq!(status["station"], "test");
    assert_eq!(status["store"]["taps"], 2);
    assert!(status["store"]["size_bytes"].as_u64().unwrap() > 0);
    let all = status["polls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "all")
        .unwrap();
    assert_eq!(all["total"], 2);
    assert_eq!(status["network"]["state"], "unknown");
    assert_eq!(status["health"]["level"], "ERROR"); // its readers are not plugged in
    let comps = status["health"]["components"].as_array().unwrap();
    let reader = comps
        .iter()
        .find(|c| c["component"] == "reader:all-a")
        .unwrap();
    assert_eq!(reader["level"], "ERROR");
    assert!(
        reader["fix"]
            .as_str()
            .unwrap()
            .contains("plug the reader in")
    );
    let text = ok(&ctl(&st, &["status"]));
    for want in [
        "station test",
        "POLL",
        "all",
        "READER",
        "first-a",
        "network",
        "store     2 taps",
        "WHAT TO DO",
    ] {
        assert!(text.contains(want), "status lacks {want:?}:\n{text}");
    }

    let readers = json(&st, &["readers"]);
    assert_eq!(readers.as_array().unwrap().len(), 6);
    assert!(ok(&ctl(&st, &["readers"])).contains("slot B"));

    let tally = json(&st, &["tally", "all"]);
    assert_eq!(tally[0]["total"], 2);
    assert_eq!(tally[0]["answers"][0]["count"], 2);
    assert!(ok(&ctl(&st, &["tally", "all"])).contains("all — 2 votes"));
    let err = ctl(&st, &["tally", "nope"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no poll \"nope\""));

    // taps --tail, and -f following live taps.
    let taps = ok(&ctl(&st, &["--json", "taps", "--tail", "1"]));
    let lines: Vec<Value> = taps
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tap"]["seq"], 2);
    assert_eq!(lines[0]["tap"]["tag"], "urn:rfid:04A1B2C4");
    let mut follow = Command::new(BIN)
        .args(["ctl", "--json", "--socket"])
        .arg(&sock)
        .args(["taps", "--tail", "0", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    // The follower is connected once the station has two control clients;
    // tap until the follower sees one (each tap is distinct).
    let deadline = Instant::now() + WAIT;
    let mut n = 0u32;
    let seen = loop {
        n += 1;
        let tag = format!("04C0FF{n:02X}");
        json(&st, &["tap", "last-a", &tag]);
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            break l;
        }
        assert!(Instant::now() < deadline, "taps -f showed nothing");
    };
    let v: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(v["tap"]["reader"], "last-a");
    assert_eq!(v["tap"]["counted"], true);
    let _ = follow.kill();
    let _ = follow.wait();

    // poll open/close/activate; reset refuses without --yes when not a tty.
    let p = json(&st, &["poll", "close", "all"]);
    assert_eq!(p["open"], false);
    let refused = json_err(&ctl(&st, &["tap", "all-a", "04A1B2C5"]));
    assert!(refused.contains("closed"), "{refused}");
    assert_eq!(json(&st, &["poll", "open", "all"])["open"], true);
    assert_eq!(json(&st, &["poll", "activate", "last"])["active"], true);
    let no = ctl(&st, &["poll", "reset", "all"]);
    assert!(!no.status.success());
    assert!(String::from_utf8_lossy(&no.stderr).contains("--yes"));
    assert_eq!(st.tally("all").await, vec![2, 0], "not reset without --yes");
    ok(&ctl(&st, &["poll", "reset", "all", "--yes"]));
    assert_eq!(st.tally("all").await, vec![0, 0]);

    // log-level: changes the filter live; a bad one is refused.
    assert_eq!(
        json(&st, &["log-level", "pollstation=trace,info"])["level"],
        "pollstation=trace,info"
    );
    let bad = json_err(&ctl(&st, &["log-level", "pollstation=loud"]));
    assert!(bad.contains("not a log filter"), "{bad}");

    // export: CSV and JSON, every tap with its tag.
    let csv = ok(&ctl(&st, &["export"]));
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "station,seq,reader,tag,at,at_iso,poll,answer");
    assert_eq!(rows.len() as u32, 1 + 2 + n);
    assert!(rows[1].starts_with("test,1,all-a,urn:rfid:04A1B2C3,"));
    let all: Value = serde_json::from_str(&ok(&ctl(&st, &["export", "--format", "json"]))).unwrap();
    assert_eq!(all.as_array().unwrap().len() as u32, 2 + n);

    // Another user is refused: by the socket's mode, and (with the mode
    // opened up by mistake) by the station itself.
    if nobody_can_run() {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&st.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = as_nobody(&sock, &["status"]);
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("permission denied on"), "{e}");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = as_nobody(&sock, &["status"]);
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("only the station's own user and root"), "{e}");
    }

    // Not running: a clear error.
    let data = st.data_dir.clone();
    assert!(st.terminate().success());
    let out = Command::new(BIN)
        .args(["ctl", "status", "--socket"])
        .arg(data.join("control.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no station is running here"), "{e}");
}

fn json_err(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn nobody_can_run() -> bool {
    // Needs root (to switch user) and setpriv (util-linux).
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

fn as_nobody(sock: &std::path::Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "ctl",
            "--socket",
        ])
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_keeps_the_running_one_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let st = start(dir.path());
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    let original = std::fs::read_to_string(&st.config_path).unwrap();

    // Valid: a new poll, a new label, a reader removed, one added, one rebound.
    let changed = original
        .replace("question = \"Every tap counts?\"", "question = \"Does every tap count?\"")
        .replace(
            "[[reader]]\nid = \"first-b\"\ndevice = \"/nonexistent/first-b\"\nprotocol = \"text\"\npoll = \"first\"\nanswer = \"b\"\n",
            "",
        )
        .replace("id = \"slot-b\"\ndevice = \"/nonexistent/slot-b\"\nprotocol = \"text\"\nslot = \"B\"", "id = \"slot-b\"\ndevice = \"/nonexistent/slot-b\"\nprotocol = \"text\"\nslot = \"A\"")
        + "\n[[poll]]\nid = \"new\"\nquestion = \"Added live?\"\nrule = \"unlimited\"\nanswers = [{ id = \"y\", label = \"Yes\" }]\n\n[[reader]]\nid = \"new-y\"\ndevice = \"/nonexistent/new-y\"\nprotocol = \"text\"\npoll = \"new\"\nanswer = \"y\"\n";
    assert_ne!(changed, original);
    std::fs::write(&st.config_path, &changed).unwrap();
    let pid = st.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let v = sse
        .until_any(|name, v| {
            name == "status"
                && v["readers"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|r| r["id"] == "new-y"))
        })
        .await;
    let readers = v["readers"].as_array().unwrap();
    assert!(
        !readers.iter().any(|r| r["id"] == "first-b"),
        "first-b removed"
    );
    let slot_b = readers.iter().find(|r| r["id"] == "slot-b").unwrap();
    assert_eq!(slot_b["binding"]["slot"], "A");
    let (_, polls) = st.get("/api/v1/polls").await;
    let polls = polls.as_array().unwrap();
    assert!(polls.iter().any(|p| p["id"] == "new" && p["open"] == true));
    let all = polls.iter().find(|p| p["id"] == "all").unwrap();
    assert_eq!(all["question"], "Does every tap count?");
    // The new reader's poll takes taps at once; the removed reader is gone.
    let (code, _) = st.tap("new-y", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);
    let (code, _) = st.tap("first-b", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 404);
    // What cannot be applied live is said.
    std::fs::write(
        &st.config_path,
        changed.replace(
            "rule = \"unlimited\"\nanswers = [{ id = \"y\"",
            "rule = \"last-wins\"\nanswers = [{ id = \"y\"",
        ),
    )
    .unwrap();
    let report = json(&st, &["reload"]);
    let restart = report["needs_restart"].as_array().unwrap();
    assert!(
        restart
            .iter()
            .any(|r| r.as_str().unwrap().contains("poll new: rule or answer ids")),
        "{report}"
    );

    // Invalid: refused whole, with the line; the running config stays.
    std::fs::write(
        &st.config_path,
        changed.replace("rule = \"unlimited\"", "rule = \"sometimes\""),
    )
    .unwrap();
    let out = ctl(&st, &["reload"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("the new config is invalid") && e.contains(".toml:"),
        "{e}"
    );
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    st.output_until("config reload refused; the running config is kept")
        .await;
    let (code, _) = st.tap("new-y", "urn:rfid:04A1B2C4").await;
    assert_eq!(code, 201, "still running on the last good config");
    assert!(st.terminate().success());
}
