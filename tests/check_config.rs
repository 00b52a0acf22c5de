//! `pollstation check-config`: every mistake with its line, exit 2; a summary
//! and exit 0 for a good file.

mod common;

use std::process::Command;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
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
    .replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap(), text)
}

const BASE: &str = r#"[station]
id = "hall-a"
data_dir = "/var/lib/pollstation"

[http]
listen = "0.0.0.0:8080"

[[poll]]
id = "lunch"
question = "Lunch?"
rule = "one-per-person"
answers = [{ id = "pizza", label = "Pizza" }, { id = "sushi", label = "Sushi" }]

[[reader]]
id = "post-1"
device = "/dev/rfid/post-1"
protocol = "pn532"
poll = "lunch"
answer = "pizza"
"#;

#[test]
fn a_good_file_prints_a_summary() {
    let (code, out) = check(BASE);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 poll(s), 2 answer(s), 1 reader(s)"), "{out}");
    assert!(
        out.contains("reader post-1 (pn532 on /dev/rfid/post-1): lunch/pizza"),
        "{out}"
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pollstation.example.toml"
    ))
    .unwrap();
    let (code, out) = check(&example);
    assert_eq!(code, 0, "{out}");
}

fn reader(extra: &str) -> String {
    format!("{BASE}\n[[reader]]\n{extra}\n")
}

#[test]
fn each_mistake_points_at_its_line() {
    let cases: Vec<(String, &str)> = vec![
        // duplicate ids
        (
            BASE.to_string() + "\n[[poll]]\nid = \"lunch\"\nquestion = \"Again?\"\nrule = \"unlimited\"\nanswers = [{ id = \"x\", label = \"X\" }]\n",
            "FILE:22:6: duplicate poll id \"lunch\"",
        ),
        (
            reader("id = \"post-1\"\ndevice = \"/dev/rfid/post-2\"\nprotocol = \"text\"\nslot = \"A\""),
            "FILE:22:6: duplicate reader id \"post-1\"",
        ),
        (
            BASE.replace("{ id = \"sushi\"", "{ id = \"pizza\""),
            "FILE:12:54: duplicate answer id \"pizza\" in poll \"lunch\"",
        ),
        // unknown poll / answer
        (
            BASE.replace("poll = \"lunch\"", "poll = \"dinner\""),
            "FILE:18:8: reader \"post-1\" names poll \"dinner\", which is not configured",
        ),
        (
            BASE.replace("answer = \"pizza\"", "answer = \"pasta\""),
            "FILE:19:10: reader \"post-1\" names answer \"pasta\", which poll \"lunch\" does not have",
        ),
        // both a fixed answer and a slot
        (
            BASE.to_string() + "slot = \"A\"\n",
            "FILE:20:8: reader \"post-1\" has both a fixed poll/answer and a slot: choose one",
        ),
        // two readers on one device
        (
            reader("id = \"post-2\"\ndevice = \"/dev/rfid/post-1\"\nprotocol = \"text\"\nslot = \"A\""),
            "FILE:23:10: reader \"post-2\" uses device \"/dev/rfid/post-1\", which another reader already uses",
        ),
        // a poll without answers
        (
            BASE.replace(
                "answers = [{ id = \"pizza\", label = \"Pizza\" }, { id = \"sushi\", label = \"Sushi\" }]",
                "answers = []",
            ),
            "FILE:12:11: poll \"lunch\" has no answers",
        ),
        // a bad listen address
        (
            BASE.replace("0.0.0.0:8080", "0.0.0.0:80800"),
            "FILE:6:10: listen address \"0.0.0.0:80800\" is not IP:PORT",
        ),
        // syntax and unknown keys
        (
            BASE.replace("rule = \"one-per-person\"", "rule = \"most-votes\""),
            "FILE:11:8: unknown variant `most-votes`, expected one of `one-per-person`, `last-wins`, `unlimited`",
        ),
        (
            BASE.replace("protocol = \"pn532\"", "protocol = \"pn532\"\nbaudrate = 9600"),
            "FILE:18:1: unknown field `baudrate`",
        ),
        (
            BASE.replace("id = \"hall-a\"", "id = \"hall-a"),
            "FILE:2:",
        ),
        (
            reader("id = \"post-2\"\ndevice = \"/dev/x\"\nprotocol = \"text\"\nslot = \"AB\""),
            "FILE:25:8: reader \"post-2\": slot \"AB\" is not one answer letter",
        ),
        (
            reader("id = \"post-2\"\ndevice = \"/dev/x\"\nprotocol = \"text\""),
            "FILE:22:6: reader \"post-2\" is bound to nothing",
        ),
        // the room: language, public address, rotation, display
        (
            BASE.replace("id = \"hall-a\"", "id = \"hall-a\"\nlanguage = \"de\""),
            "FILE:3:12: unknown language \"de\": use \"en\" or \"nl\"",
        ),
        (
            BASE.replace("0.0.0.0:8080\"", "0.0.0.0:8080\"\npublic_url = \"poll.local\""),
            "FILE:7:14: public_url \"poll.local\" is not an http:// or https:// address",
        ),
        (
            BASE.to_string() + "\n[screen]\nrotate_s = 99999\n",
            "FILE:22:12: rotate_s = 99999: at most 3600",
        ),
        (
            BASE.replace("rule = \"one-per-person\"", "rule = \"one-per-person\"\ndisplay = \"wordcloud\""),
            "FILE:12:11: unknown variant `wordcloud`, expected `bars` or `cloud`",
        ),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        let (code, out) = check(&text);
        if code != 2 || !out.contains(want) {
            failures.push(format!("want {want:?} (exit 2), got exit {code}:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = BASE
        .replace("0.0.0.0:8080", "localhost")
        .replace("answer = \"pizza\"", "answer = \"pasta\"");
    let (code, out) = check(&text);
    assert_eq!(code, 2);
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(common::BIN)
        .args(["check-config", "/nonexistent/station.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/station.toml:1:1: cannot read the config file"),
        "{err}"
    );
}
