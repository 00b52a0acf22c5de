//! The station end to end: the real binary, its HTTP API and event stream.

mod common;

use common::{Sse, Station, config};
use serde_json::{Value, json};

fn tag(n: u32) -> String {
    format!("urn:rfid:{:08X}", 0x1000_0000 + n)
}

#[tokio::test]
async fn taps_come_out_as_events_and_in_the_tally_under_each_rule() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    let status = sse.next_named("status").await;
    assert_eq!(status["id"], "test");

    // one-per-person: the second tap of tag 1 (other answer) does not count.
    let (s, v) = st.tap("first-a", &tag(1)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["counted"], true);
    let ev = sse.next_named("tap").await;
    assert_eq!(
        (
            ev["reader"].as_str(),
            ev["seq"].as_u64(),
            ev["counted"].as_bool()
        ),
        (Some("first-a"), v["seq"].as_u64(), Some(true))
    );
    assert!(ev.get("tag").is_none(), "public events carry no tag: {ev}");
    let t = sse
        .until("tally", |t| t["poll"] == "first" && t["total"] == 1)
        .await;
    assert_eq!(t["answers"][0]["count"], 1);

    let (s, v) = st.tap("first-b", &tag(1)).await;
    assert_eq!((s, v["counted"].as_bool()), (201, Some(false)), "{v}");
    let ev = sse.next_named("tap").await;
    assert_eq!(ev["counted"], false);
    st.tap("first-b", &tag(2)).await;
    assert_eq!(st.tally("first").await, vec![1, 1]);

    // last-wins: tag 1 changes its mind.
    st.tap("last-a", &tag(1)).await;
    assert_eq!(st.tally("last").await, vec![1, 0]);
    let (_, v) = st.tap("last-b", &tag(1)).await;
    assert_eq!(v["counted"], true);
    assert_eq!(st.tally("last").await, vec![0, 1]);

    // unlimited: every tap counts (different tags, and the same tag after the debounce window
    // is covered by the debounce test).
    for n in 1..=3 {
        let (s, _) = st.tap("all-a", &tag(n)).await;
        assert_eq!(s, 201);
    }
    let t = sse
        .until("tally", |t| t["poll"] == "all" && t["total"] == 3)
        .await;
    assert_eq!(t["answers"][0]["count"], 3);
    assert_eq!(t["last_tap"]["reader"], "all-a");

    // The slot reader votes on the active poll (the first open one: "first").
    let (s, v) = st.tap("slot-b", &tag(9)).await;
    assert_eq!(
        (s, v["poll"].as_str(), v["answer"].as_str()),
        (201, Some("first"), Some("b"))
    );
}

#[tokio::test]
async fn a_repeat_inside_the_debounce_window_is_the_earlier_tap() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let (s1, v1) = st.tap("all-a", &tag(1)).await;
    let (s2, v2) = st.tap("all-a", "10:00:00:01").await; // same tag, other spelling
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(v1["seq"], v2["seq"]);
    assert_eq!(v2["repeat"], true);
    // Another reader is another tap.
    let (s3, _) = st.tap("first-a", &tag(1)).await;
    assert_eq!(s3, 201);
    assert_eq!(st.tally("all").await, vec![1, 0]);
    assert_eq!(st.export().await.len(), 2);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_log_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"reader": "nope", "tag": tag(1)}),
            404,
            "unknown reader",
        ),
        (json!({"reader": "all-a", "tag": "xyz"}), 422, "bad tag"),
        (
            json!({"reader": "all-a", "tag": "08123456"}),
            422,
            "bad tag",
        ),
        (json!({"reader": "all-a"}), 400, "bad request"),
        (
            json!({"reader": "all-a", "tag": tag(1), "extra": 1}),
            400,
            "bad request",
        ),
        (json!([1, 2]), 400, "bad request"),
    ];
    for (body, status, error) in cases {
        let (s, v) = st.admin_post("/api/v1/taps", body.clone()).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(error)),
            "{body} → {v}"
        );
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    // Not JSON at all, and too large.
    let r = st
        .http
        .post(st.url("/api/v1/taps"))
        .bearer_auth(&st.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Its own connection: the server closes it after refusing the body.
    let r = reqwest::Client::new()
        .post(st.url("/api/v1/taps"))
        .bearer_auth(&st.token)
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // axum's own rejections are said again as our JSON, with the reason.
    let v: Value = r.json().await.expect("a JSON 413");
    assert_eq!(v["error"], "payload too large", "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    let r = st
        .http
        .get(st.url("/api/v1/taps?tail=many"))
        .bearer_auth(&st.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("a JSON 400 for a bad query");
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("tail")),
        "{v}"
    );
    let r = st
        .http
        .delete(st.url("/api/v1/polls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.expect("a JSON 405");
    assert_eq!(v["error"], "method not allowed", "{v}");
    // The scheme of Authorization is case-insensitive (RFC 9110).
    let r = st
        .http
        .get(st.url("/api/v1/taps"))
        .header("Authorization", format!("bearer {}", st.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = st.get("/api/v1/polls/nope/tally").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown poll")));
    let (s, v) = st
        .admin_post("/api/v1/polls/first/explode", json!({}))
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown action")));
    let (s, v) = st.admin_post("/api/v1/polls/nope/open", json!({})).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown poll")));
    let (s, v) = st.get("/api/v1/nothing").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not found")));
    let (s, _) = st.admin_get_text("/api/v1/taps?after=test").await;
    assert_eq!(s, 400);
    let (s, _) = st.admin_get_text("/api/v1/taps?after=test:99").await;
    assert_eq!(s, 404);
    let (s, _) = st.admin_get_text("/api/v1/taps?format=xml").await;
    assert_eq!(s, 400);
    assert!(st.export().await.is_empty());
}

#[tokio::test]
async fn admin_endpoints_need_the_token_and_public_ones_never_show_tags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &config(&data, ""));
    // The token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let body = json!({"reader": "all-a", "tag": tag(1)});
    let r = st
        .http
        .post(st.url("/api/v1/taps"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = st
        .http
        .post(st.url("/api/v1/taps"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for path in ["/api/v1/taps", "/api/v1/taps?format=csv"] {
        let r = st.http.get(st.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = st
        .http
        .post(st.url("/api/v1/polls/first/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        st.export().await.is_empty(),
        "refused requests logged nothing"
    );

    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    assert_eq!(st.tap("all-a", &tag(1)).await.0, 201);
    let ev = sse.next_named("tap").await;
    assert!(!ev.to_string().contains("urn:rfid"), "{ev}");
    for path in [
        "/",
        "/healthz",
        "/api/v1/station",
        "/api/v1/polls",
        "/api/v1/polls/all/tally",
    ] {
        let (s, text) = st.get_text(path).await;
        assert_eq!(s, 200, "{path}");
        assert!(
            !text.contains("urn:rfid") && !text.contains("10000001"),
            "{path}: {text}"
        );
    }
    // The admin export does carry tags.
    let (s, csv) = st.admin_get_text("/api/v1/taps?format=csv").await;
    assert_eq!(s, 200);
    assert!(
        csv.starts_with("station,seq,reader,tag,at,at_iso,poll,answer\n"),
        "{csv}"
    );
    assert!(csv.contains(&format!("test,1,all-a,{},", tag(1))), "{csv}");
}

#[tokio::test]
async fn operator_actions_open_close_reset_activate() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    st.tap("first-a", &tag(1)).await;
    st.tap("first-b", &tag(2)).await;
    assert_eq!(st.tally("first").await, vec![1, 1]);

    let (s, v) = st.admin_post("/api/v1/polls/first/close", json!({})).await;
    assert_eq!((s, v["open"].as_bool()), (200, Some(false)), "{v}");
    let (s, v) = st.tap("first-a", &tag(3)).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("poll closed")), "{v}");
    let (s, _) = st.admin_post("/api/v1/polls/first/open", json!({})).await;
    assert_eq!(s, 200);

    let (s, _) = st.admin_post("/api/v1/polls/first/reset", json!({})).await;
    assert_eq!(s, 200);
    sse.until("tally", |t| t["poll"] == "first" && t["total"] == 0)
        .await;
    assert_eq!(st.tally("first").await, vec![0, 0]);
    // After a reset the same person votes again, and it counts.
    let (s, v) = st.tap("first-a", &tag(1)).await;
    assert_eq!((s, v["counted"].as_bool()), (201, Some(true)), "{v}");

    // Activating "last" moves the slot reader there.
    let (s, v) = st
        .admin_post("/api/v1/polls/last/activate", json!({}))
        .await;
    assert_eq!((s, v["active"].as_bool()), (200, Some(true)), "{v}");
    let (_, v) = st.tap("slot-b", &tag(5)).await;
    assert_eq!(
        (v["poll"].as_str(), v["answer"].as_str()),
        (Some("last"), Some("b"))
    );
    let (_, polls) = st.get("/api/v1/polls").await;
    let active: Vec<&str> = polls
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["active"] == true)
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(active, vec!["last"]);

    // Actions are in the log: a restart keeps them (closed stays closed, the
    // reset stays reset, the active poll stays active).
    st.admin_post("/api/v1/polls/all/close", json!({})).await;
    let data = st.data_dir.clone();
    let cfg = st.config_path.clone();
    assert!(st.terminate().success());
    let st = Station::start_with(&data, &cfg);
    assert_eq!(st.tally("first").await, vec![1, 0]);
    let (_, polls) = st.get("/api/v1/polls").await;
    let all = polls
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "all")
        .unwrap()
        .clone();
    assert_eq!(all["open"], false);
    let (_, v) = st.tap("slot-b", &tag(6)).await;
    assert_eq!(v["poll"], "last");
}

#[tokio::test]
async fn station_and_health_report_readers_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let (s, v) = st.get("/api/v1/station").await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], "test");
    assert_eq!(v["network"]["state"], "unknown");
    let readers = v["readers"].as_array().unwrap();
    assert_eq!(readers.len(), 6);
    let r = &readers[0];
    assert_eq!(
        (r["id"].as_str(), r["status"].as_str()),
        (Some("first-a"), Some("disconnected"))
    );
    assert_eq!(r["binding"], json!({"poll": "first", "answer": "a"}));
    assert_eq!(readers[5]["binding"], json!({"slot": "B"}));
    let (s, v) = st.get("/healthz").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "{v}");
}

#[tokio::test]
async fn metrics_and_the_operator_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let _sse = Sse::connect(&st.url("/api/v1/events")).await;
    st.tap("all-a", &tag(1)).await;
    st.tap("first-a", &tag(1)).await;
    st.tap("first-b", &tag(1)).await; // not counted
    // OpenMetrics when the scraper asks for it (as Prometheus does).
    let r = st
        .http
        .get(st.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = r.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE pollstation_taps counter"), "{om}");
    // The Prometheus text format by default.
    let r = st.http.get(st.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("# EOF"), "{text}");
    for want in [
        r#"pollstation_taps_total{reader="all-a",counted="true"} 1"#,
        r#"pollstation_taps_total{reader="first-b",counted="false"} 1"#,
        "pollstation_sse_clients 1",
        "pollstation_readers_connected 0",
        r#"pollstation_reader_decoder_errors_total{reader="all-a"} 0"#,
        r#"pollstation_reader_frames_total{reader="all-a"} 0"#,
        "# TYPE pollstation_taps_total counter",
        "pollstation_store_writable 1",
        "pollstation_log_taps 3",
        "pollstation_store_commit_seconds_count",
        "pollstation_tap_seconds_count 3",
        "pollstation_store_batch_size_bucket",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(!text.contains("urn:rfid"));
    // The last N taps, for the operator page.
    let (s, body) = st.admin_get_text("/api/v1/taps?tail=2").await;
    assert_eq!(s, 200);
    let taps: Vec<Value> = serde_json::from_str(&body).unwrap();
    let readers: Vec<&str> = taps.iter().map(|t| t["reader"].as_str().unwrap()).collect();
    assert_eq!(readers, ["first-a", "first-b"]);
    assert_eq!(
        st.admin_get_text("/api/v1/taps?tail=2&format=csv").await.0,
        400
    );
    let r = st
        .http
        .get(st.url("/api/v1/taps?tail=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The pages carry a strict CSP and nosniff.
    for path in [
        "/",
        "/operator",
        "/assets/app.js",
        "/assets/operator.js",
        "/assets/style.css",
    ] {
        let r = st.http.get(st.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("default-src 'self'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(
        &dir.path().join("data"),
        &config(&dir.path().join("data"), ""),
    );
    let _sse = Sse::connect(&st.url("/api/v1/events")).await; // an open stream must not block exit
    st.tap("all-a", &tag(1)).await;
    let out = st.output.clone();
    assert!(st.terminate().success());
    let log = out.lock().unwrap().join("\n");
    assert!(log.contains("station stopped; log is flushed"), "{log}");
}

/// A stream that comes back with `Last-Event-ID` is sent exactly the taps it
/// missed, then the whole state; also from the crowd's side (the hub).
#[tokio::test]
async fn a_resumed_stream_gets_exactly_the_taps_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(dir.path(), &config(dir.path(), ""));
    let url = st.url("/api/v1/events");
    let tap = |i: u32| {
        let st = &st;
        async move {
            let (code, body) = st
                .tap("all-a", &format!("urn:rfid:{:08X}", 0x0400_0000 + i))
                .await;
            assert_eq!(code, 201, "{body}");
            body["seq"].as_u64().unwrap()
        }
    };
    // Expect, in this order: the taps `seqs`, then the state.
    async fn replayed(sse: &mut Sse, seqs: &[u64]) {
        for &seq in seqs {
            let (name, v) = sse.next().await;
            assert_eq!(
                (name.as_str(), v["seq"].as_u64()),
                ("tap", Some(seq)),
                "{v}"
            );
            assert_eq!(v["_id"], format!("test:{seq}"));
        }
        let (name, v) = sse.next().await;
        assert_eq!(name, "status", "{v}");
    }

    let mut sse = Sse::connect(&url).await;
    let mut last = 0;
    for i in 1..=3 {
        last = tap(i).await;
    }
    let seen = sse.until("tap", |t| t["seq"] == last).await;
    let id = seen["_id"].as_str().unwrap().to_string();
    assert_eq!(id, format!("test:{last}"));
    drop(sse);
    let missed = [tap(4).await, tap(5).await];
    let mut back = Sse::resume(&url, Some(&id)).await;
    replayed(&mut back, &missed).await;
    // Live from there on, each tap once: the next tap is the new one (a
    // copy of a replayed one would come before it).
    let now = tap(6).await;
    assert_eq!(back.next_named("tap").await["seq"], now);

    // Not ours, or nothing missed: no taps, the state at once.
    replayed(&mut Sse::resume(&url, Some("elsewhere:3")).await, &[]).await;
    replayed(
        &mut Sse::resume(&url, Some(&format!("test:{now}"))).await,
        &[],
    )
    .await;

    // A crowd of streams: the next ones are served by the hub (batched,
    // another runtime); resuming works the same there.
    let mut crowd = Vec::new();
    for _ in 0..10 {
        crowd.push(Sse::connect(&url).await);
    }
    let mut one = Sse::resume(&url, Some(&format!("test:{now}"))).await;
    replayed(&mut one, &[]).await;
    let seen = tap(7).await;
    let t = one.until("tap", |t| t["seq"] == seen).await;
    drop(one);
    let missed = [tap(8).await, tap(9).await];
    // The hub sends what it has; wait until a crowd stream saw the last one.
    crowd[0].until("tap", |t| t["seq"] == missed[1]).await;
    let mut back = Sse::resume(&url, t["_id"].as_str()).await;
    replayed(&mut back, &missed).await;
    let now = tap(10).await;
    assert_eq!(back.next_named("tap").await["seq"], now);
    assert!(st.terminate().success());
}

/// A station started under `RLIMIT_NICE` `limit` (see `setrlimit(2)`) and,
/// as root, without `CAP_SYS_NICE` (root may raise any thread otherwise),
/// in `dir`.
fn start_with_nice_limit(dir: &std::path::Path, limit: u32) -> Station {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = dir.join("station.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--nice={limit}:{limit}")).arg("--");
    if unsafe { libc::geteuid() } == 0 {
        cmd.args([
            "setpriv",
            "--inh-caps=-sys_nice",
            "--bounding-set=-sys_nice",
            "--",
        ]);
    }
    cmd.arg(common::BIN);
    Station::start_cmd(&data, &cfg, cmd)
}

/// Where nice -20 is refused (a unit without `LimitNICE=-20`; here no
/// `CAP_SYS_NICE` and an `RLIMIT_NICE` of 0), the station runs all the same,
/// its intake at nice 0, and its log says what to change.
#[tokio::test]
async fn refused_nice_the_station_runs_and_says_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let st = start_with_nice_limit(dir.path(), 0);
    st.output_until("the intake stays at normal priority (nice -20 needs root or LimitNICE=-20)")
        .await;
    assert_eq!(
        st.tap("all-a", "04A1B2C3").await.0,
        201,
        "taps still counted"
    );
    let threads = common::threads(st.pid());
    assert!(threads.iter().all(|t| t.nice >= 0), "{threads:?}");
    assert!(st.terminate().success());
}

/// Where `RLIMIT_NICE` allows some raise but not −20 (`LimitNICE=-10`),
/// the intake's thread takes what is allowed, and the log says so and what
/// would give the rest. Raising the limit needs `CAP_SYS_RESOURCE`, which
/// root lacks in some sandboxes (this project's build machines among
/// them): there the test says so and checks nothing (the fallback's
/// decisions are unit-tested in `sys::priority`).
#[tokio::test]
async fn partial_nice_the_intake_takes_what_the_limit_allows() {
    let settable = std::process::Command::new("prlimit")
        .args(["--nice=30:30", "--", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !settable {
        eprintln!(
            "NOT RUN: this machine cannot raise RLIMIT_NICE (no CAP_SYS_RESOURCE); the partial raise is untested here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // RLIMIT_NICE 30: nice values down to 20 - 30 = -10.
    let st = start_with_nice_limit(dir.path(), 30);
    st.output_until("the intake runs at nice -10, the most RLIMIT_NICE allows (nice -20 needs root or LimitNICE=-20)")
        .await;
    assert_eq!(st.tap("all-a", "04A1B2C3").await.0, 201);
    let threads = common::threads(st.pid());
    let raised: Vec<_> = threads.iter().filter(|t| t.nice < 0).collect();
    assert_eq!(raised.len(), 1, "one raised thread: {threads:?}");
    assert!(raised[0].name.starts_with("tokio-r"), "{threads:?}");
    assert_eq!(raised[0].nice, -10, "{threads:?}");
    assert!(st.terminate().success());
}

/// The event-stream crowd's threads run under SCHED_IDLE; the intake's
/// thread (the main runtime's one worker) runs at nice -20 where this
/// machine allows it (root, or an RLIMIT_NICE of 40 as the systemd unit's
/// `LimitNICE=-20` gives), at the lowest nice a smaller limit allows, and at
/// nice 0 where none is; no thread of the station runs at real-time
/// priority.
#[tokio::test]
async fn fanout_threads_yield_to_the_intake() {
    let dir = tempfile::tempdir().unwrap();
    let st = Station::start(dir.path(), &config(dir.path(), ""));
    let threads = common::threads(st.pid());
    const SCHED_IDLE: u32 = 5;
    let fanout: Vec<_> = threads.iter().filter(|t| t.name == "fanout").collect();
    assert_eq!(fanout.len(), 2, "{threads:?}");
    assert!(fanout.iter().all(|t| t.policy == SCHED_IDLE), "{threads:?}");
    // How far may a thread of this user, with these limits, raise itself?
    let lowest = common::lowest_nice_allowed();
    let raised: Vec<_> = threads.iter().filter(|t| t.nice < 0).collect();
    if let Some(nice) = lowest {
        // The main runtime's one worker; its blocking pool's threads (same
        // name) are not raised.
        assert_eq!(raised.len(), 1, "one raised thread: {threads:?}");
        assert!(raised[0].name.starts_with("tokio-r"), "{threads:?}");
        assert_eq!(raised[0].nice, nice, "{threads:?}");
    } else {
        assert!(raised.is_empty(), "{threads:?}");
    }
    assert!(
        threads
            .iter()
            .all(|t| t.policy == 0 || t.policy == SCHED_IDLE),
        "no real-time thread: {threads:?}"
    );
    if let Some(nice) = lowest {
        st.output_until(&format!("runs at nice {nice}")).await;
    }
    assert!(st.terminate().success());
}
