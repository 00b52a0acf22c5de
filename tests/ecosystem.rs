//! Checked by the tools people already run (issue "Fit the ecosystem"):
//! Prometheus's `promtool` on the live `/metrics` and on the shipped
//! alerting rules.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::Station;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("monitoring"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps test)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn promtool_finds_nothing_to_say_about_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &common::config(&data, ""));
    // Every family with samples: taps counted and not, a reader's counters.
    assert_eq!(st.tap("all-a", "04A1B2C3").await.0, 201);
    assert_eq!(st.tap("first-a", "04A1B2C3").await.0, 201);
    assert_eq!(st.tap("first-b", "04A1B2C3").await.0, 201);
    let (code, text) = st.get_text("/metrics").await;
    assert_eq!(code, 200);
    let (ok, said) = promtool(&["check", "metrics"], Some(&text));
    println!(
        "promtool check metrics: {}",
        if said.trim().is_empty() {
            "(nothing)"
        } else {
            said.trim()
        }
    );
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\non:\n{text}"
    );
    assert!(st.terminate().success());
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let (ok, said) = promtool(&["check", "rules", "pollstation-alerts.yml"], None);
    println!("promtool check rules: {}", said.trim());
    assert!(ok, "{said}");
    assert!(said.contains("SUCCESS: 5 rules found"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "pollstation-alerts.test.yml"], None);
    println!("promtool test rules: {}", said.trim());
    assert!(ok, "{said}");
}
