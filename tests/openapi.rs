//! The OpenAPI document (`GET /api/v1/openapi.json`) checked by tools
//! written by others, against a live station: `openapi-spec-validator`
//! says the document is valid OpenAPI 3.1, and `schemathesis` sends
//! generated requests to every operation — public and admin (with the
//! token), valid and invalid — and checks each answer: no 5xx, status
//! codes, content types, headers and bodies as the document says, auth
//! enforced. Nothing a rejected request carried may end up in the log.
//!
//! The tools come from `tests/vendor/python-wheels` (`scripts/install-deps
//! test` puts them in `target/py`). Schemathesis's `positive_data_acceptance`
//! check is left out: some rules cannot be written in a schema (a poll or
//! reader must exist, a binding names a slot *or* a poll and an answer, at
//! most 2,000 timeline buckets), so schema-valid requests are rightly
//! refused with 400/422.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Station, config};

fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/py/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/install-deps test`",
        p.display()
    );
    p
}

/// Run a tool; its output is printed (the test's log keeps the summary).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("station");
    // A reader named as the document's example, so the examples phase's
    // taps are taken (and the log has something to check).
    let post = "[[reader]]\nid = \"post-1\"\ndevice = \"/nonexistent/post-1\"\nprotocol = \"text\"\npoll = \"all\"\nanswer = \"a\"\n";
    let st = Station::start(&data, &config(&data, post));

    let (status, doc) = st.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let (ok, text) = run(Command::new(tool("openapi-spec-validator")).arg(&file));
    assert!(ok && text.contains("OK"), "openapi-spec-validator: {text}");

    // Realistic values for the path parameters, so the generated requests
    // reach past "unknown poll" to the logic behind.
    let cfg = dir.path().join("schemathesis.toml");
    std::fs::write(
        &cfg,
        "[parameters]\n\"path.poll\" = \"first\"\n\"path.action\" = \"close\"\n\"path.name\" = \"app.js\"\n",
    )
    .unwrap();
    let schema = st.url("/api/v1/openapi.json");
    let auth = format!("Authorization: Bearer {}", st.token);
    let schemathesis = |extra: &[&str]| {
        let mut c = Command::new(tool("schemathesis"));
        c.arg("--config-file")
            .arg(&cfg)
            .args(["run", &schema, "-H", &auth])
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            .args(["--seed", "20261207", "--no-color"])
            .args(extra)
            .current_dir(dir.path());
        c
    };
    // Every operation but the event stream (which never ends: each request
    // waits for the tool's read timeout), with many examples …
    let (ok, text) = run(&mut schemathesis(&[
        "--exclude-path",
        "/api/v1/events",
        "--max-examples",
        "40",
    ]));
    assert!(ok, "schemathesis found problems:\n{text}");
    // … and the event stream with a few.
    let (ok, text) = run(&mut schemathesis(&[
        "--include-path",
        "/api/v1/events",
        "--max-examples",
        "1",
    ]));
    assert!(
        ok,
        "schemathesis found problems with the event stream:\n{text}"
    );

    // The check is not vacuous: told that `/api/v1/polls` answers a string,
    // schemathesis says the station's answer violates the schema.
    let mut wrong = doc.clone();
    wrong["paths"]["/api/v1/polls"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] =
        serde_json::json!({ "type": "string" });
    let wrong_file = dir.path().join("wrong.json");
    std::fs::write(&wrong_file, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let (ok, text) = run(Command::new(tool("schemathesis"))
        .arg("--config-file")
        .arg(&cfg)
        .arg("run")
        .arg(&wrong_file)
        .args(["--url", &st.base, "--include-path", "/api/v1/polls"])
        .args(["--max-examples", "1", "--no-color"])
        .current_dir(dir.path()));
    assert!(
        !ok && text.contains("Response violates schema"),
        "a planted schema mismatch went unseen:\n{text}"
    );

    // Still up, and nothing a refused request carried is in the log: every
    // tap names a reader the station has and a well-formed tag.
    let (status, _) = st.get("/healthz").await;
    assert_eq!(status, 200);
    let (_, info) = st.get("/api/v1/station").await;
    let readers: Vec<&str> = info["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let taps = st.export().await;
    println!("{} taps in the log after the run", taps.len());
    assert!(!taps.is_empty(), "the examples' taps were not taken");
    for t in &taps {
        let reader = t["reader"].as_str().unwrap();
        assert!(
            readers.contains(&reader),
            "a tap from reader {reader:?}: {t}"
        );
        let tag = t["tag"].as_str().unwrap();
        let hex = tag.strip_prefix("urn:rfid:").unwrap_or(tag);
        assert!(
            !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "a tap with tag {tag:?}: {t}"
        );
    }
}
