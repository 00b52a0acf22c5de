//! Hardening: input that once crashed the station, hostile clients, a data
//! directory and secrets that are not ours. Each test is a regression test
//! for a finding of the review (issue "Hardening"), against the real binary.

mod common;

use std::process::Command;

use common::Station;
use common::prosody::{PASSWORD, Prosody, Watcher};
use pollstation::xmpp::payload;

fn check_config(text: &str, files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let path = dir.path().join("station.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(common::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&dir.path().display().to_string(), "DIR");
    (out.status.code().unwrap(), text)
}

const BASE: &str = r#"[station]
id = "hall-a"
data_dir = "/var/lib/pollstation"

[[poll]]
id = "lunch"
question = "Lunch?"
rule = "one-per-person"
answers = [{ id = "pizza", label = "Pizza" }, { id = "sushi", label = "Sushi" }]
"#;

/// A control character (XML forbids it) in a label, a question or a name
/// of the people file is refused where it enters, with its line.
#[test]
fn control_characters_are_refused_at_their_source_with_the_line() {
    let (code, out) = check_config(
        &BASE.replace("label = \"Pizza\"", "label = \"Piz\\u0001za\""),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("station.toml:9:36: the label of answer \"pizza\" in poll \"lunch\" contains the control character U+0001"),
        "{out}"
    );
    let (code, out) = check_config(&BASE.replace("\"Lunch?\"", "\"Lunch\\u001b[31m?\""), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("the question of poll \"lunch\" contains the control character U+001B"),
        "{out}"
    );
    let people = format!("{BASE}\n[identity]\npeople = \"people.csv\"\n");
    let (code, out) = check_config(
        &people,
        &[("people.csv", "04A1B2C3,Anna,p1\n04A1B2C4,Bo\u{1}b,p2\n")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DIR/people.csv:2: contains the control character U+0001"),
        "{out}"
    );
}

/// Secrets that would travel or lie in clear are refused by check-config
/// with the reason: plaintext OAuth signatures over http://, XMPP without
/// TLS to another machine, secret files other users can read.
#[test]
fn secrets_in_clear_are_refused_with_the_reason() {
    let anymeta = format!(
        "{BASE}\n[identity]\nanymeta = \"http://www.example.org/services/rest/\"\nsignature = \"plaintext\"\n"
    );
    let (code, out) = check_config(&anymeta, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "signature = \"plaintext\" sends the anyMeta secrets as they are: only over https://"
        ),
        "{out}"
    );
    let xmpp = format!(
        "{BASE}\n[xmpp]\njid = \"hall-a@example.org\"\npassword_file = \"xmpp.password\"\nserver = \"xmpp.example.org:5222\"\ntls = \"none\"\npubsub = \"pubsub.example.org\"\n"
    );
    // Written with the default umask: readable by every local user.
    let (code, out) = check_config(&xmpp, &[("xmpp.password", "secret\n")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tls = \"none\" sends the password and every vote in clear"),
        "{out}"
    );
    assert!(
        out.contains(
            "DIR/xmpp.password is readable or writable by other users (mode 644): chmod 600 it"
        ),
        "{out}"
    );
    // On this machine, with a private file: accepted.
    let local = xmpp.replace("xmpp.example.org:5222", "127.0.0.1:5222");
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(&dir.path().join("xmpp.password"), "secret\n");
    let path = dir.path().join("station.toml");
    std::fs::write(&path, local).unwrap();
    let out = Command::new(common::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name with a control character that reached the log (an older station
/// accepted them) made the Station task panic while encoding the vote for
/// XMPP — and again at every start. Now the vote is published with the
/// character replaced, and the station keeps answering.
#[tokio::test]
async fn a_control_character_in_a_logged_name_is_published_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let prosody = Prosody::start(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pw = dir.path().join("xmpp.password");
    common::write_secret(&pw, &format!("{PASSWORD}\n"));
    let people = dir.path().join("people.csv");
    std::fs::write(&people, "04A1B2C3,Anna de Vries,p1\n").unwrap();
    let xmpp = format!(
        "[network]\nwatch = false\n[hotplug]\nenabled = false\n\
         [xmpp]\njid = \"station@localhost\"\npassword_file = \"{}\"\nserver = \"127.0.0.1:{}\"\n\
         tls = \"none\"\npubsub = \"pubsub.localhost\"\n",
        pw.display(),
        prosody.port
    );
    let with_people = format!("{xmpp}[identity]\npeople = \"{}\"\n", people.display());
    let config = dir.path().join("station.toml");
    std::fs::write(&config, common::config(&data, &with_people)).unwrap();

    // Anna taps; her name is resolved and logged.
    let st = Station::start_with(&data, &config);
    assert_eq!(st.tap("all-a", "04A1B2C3").await.0, 201);
    st.station_until("Anna known and her vote published", |s| {
        s["identity"]["known"] == 1 && s["xmpp"]["published"] == 1
    })
    .await;
    assert!(st.terminate().success());

    // What an older station let into the log: a name with U+0001.
    let db = rusqlite::Connection::open(data.join("pollstation.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE identities SET name = 'Anna' || char(1) || ' de Vries', first = 'An' || char(1) || 'na'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    // Without the people file the logged name is what the station knows.
    std::fs::write(&config, common::config(&data, &xmpp)).unwrap();
    let st = Station::start_with(&data, &config);
    let mut w = Watcher::connect(prosody.port).await;
    w.subscribe("vote/all").await.unwrap();
    let (code, v) = st.tap("all-a", "04A1B2C3").await;
    assert_eq!(code, 201, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    let item = loop {
        let (node, id, p) = w.next_item().await;
        if node == "vote/all" && id == format!("test-{seq}") {
            break p;
        }
    };
    let parsed = payload::parse(&item).unwrap();
    assert_eq!(
        parsed.person_title.as_deref(),
        Some("Anna\u{FFFD} de Vries"),
        "published with the forbidden character replaced"
    );
    // Still answering: the Station task is alive.
    let (code, h) = st.get("/healthz").await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(st.tap("all-a", "04A1B2C4").await.0, 201);
    assert!(st.terminate().success(), "a clean stop");
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loops_back_off_and_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("station.toml");
    std::fs::write(&config, common::config(&data, "")).unwrap();
    // 300 files: HTTP keeps to 300 - 256 = 44 connections; the control
    // socket has no cap of its own, so idle ctl clients take the rest.
    let st = Station::start_limited(&data, &config, 300);
    st.output_until("serving at most 44 connections").await;
    let sock = data.join("control.sock");
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(tokio::net::UnixStream::connect(&sock).await.unwrap());
    }
    st.output_until("control socket: accept failed").await;
    // The idle clients are cut after 10 s; accepting resumes, and the
    // station says how often it retried meanwhile (a loop without back-off
    // retried millions of times and logged each).
    st.output_until("control socket: accepting again").await;
    let out = st.output();
    let failed = out
        .lines()
        .filter(|l| l.contains("control socket: accept failed"))
        .count();
    assert_eq!(failed, 1, "{out}");
    let retries: u64 = out
        .lines()
        .find(|l| l.contains("control socket: accepting again"))
        .and_then(|l| l.split("failures=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the retry count");
    assert!(
        (1..=30).contains(&retries),
        "{retries} retries in about 10 s"
    );
    drop(held);
    assert!(st.terminate().success());
}

#[tokio::test]
async fn the_control_socket_refuses_an_endless_request_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &common::config(&data, ""));
    let mut s = tokio::net::UnixStream::connect(data.join("control.sock"))
        .await
        .unwrap();
    // 1 MiB without a newline: refused after 64 KiB, not buffered.
    let writer = async {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    writer.await;
    // Read what came before the station closed (a reset may follow it:
    // bytes were left unread).
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(common::WAIT, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.contains("request longer than 64 KiB"), "{answer:?}");
    assert!(st.terminate().success());
}
