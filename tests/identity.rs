//! Identity against a stand-in anyMeta (axum, here) that checks every
//! request's OAuth 1.0a signature the way a server does (401 when wrong)
//! and answers people, unknown tags, error bodies, no answer (a timeout), 500s,
//! malformed JSON and dropped connections; and the local people file,
//! edited while the station runs.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Sse, Station};
use pollstation::identity::oauth;
use serde_json::{Value, json};

const CONSUMER_SECRET: &str = "kd94hf93k423kf44";
const TOKEN_SECRET: &str = "pfkkdhi9sl3r4s00";

#[derive(Default)]
struct Fake {
    /// identify requests per raw tag.
    calls: HashMap<String, u32>,
    /// Requests refused for a bad signature.
    refused: u32,
    /// While true, every identify fails with 500.
    down: bool,
    url: String,
}

type Shared = Arc<Mutex<Fake>>;

async fn rest(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let Some(oauth_params) = oauth::parse_authorization(auth) else {
        s.lock().unwrap().refused += 1;
        return (StatusCode::UNAUTHORIZED, "no OAuth header").into_response();
    };
    // Verify like a server: same base string, our copy of the secrets.
    let given = oauth_params
        .iter()
        .find(|(k, _)| k == "oauth_signature")
        .map(|(_, v)| v.clone());
    let method = oauth_params
        .iter()
        .find(|(k, _)| k == "oauth_signature_method")
        .map(|(_, v)| v.as_str());
    let mut all = form.clone();
    all.extend(
        oauth_params
            .iter()
            .filter(|(k, _)| k != "oauth_signature")
            .cloned(),
    );
    let url = s.lock().unwrap().url.clone();
    let base = oauth::base_string("POST", &url, &all);
    let m = if method == Some("PLAINTEXT") {
        oauth::Method::Plaintext
    } else {
        oauth::Method::HmacSha1
    };
    if given.as_deref() != Some(oauth::sign(m, &base, CONSUMER_SECRET, TOKEN_SECRET).as_str()) {
        s.lock().unwrap().refused += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match get("method").as_str() {
        "anymeta.user.info" => {
            return axum::Json(json!({"id": 1, "title": "pollstation"})).into_response();
        }
        "identity.identify" => {}
        other => {
            return axum::Json(
                json!({"err": {"-attrib-": {"code": 2, "msg": format!("no method {other}")}}}),
            )
            .into_response();
        }
    }
    assert_eq!(get("type"), "rfid");
    assert_eq!(get("format"), "json");
    let raw = get("raw");
    let (n, down) = {
        let mut f = s.lock().unwrap();
        let c = f.calls.entry(raw.clone()).or_default();
        *c += 1;
        (*c, f.down)
    };
    if down {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let anna = json!({"id": 41, "title": "<b>Anna</b> de Vries", "name": {"first": "Anna", "full": "Anna de Vries"}});
    match raw.as_str() {
        "urn:rfid:04000001" | "urn:rfid:04000002" => axum::Json(anna).into_response(),
        "urn:rfid:04000003" => axum::Json(json!(false)).into_response(),
        // An anyMeta error twice, then the person.
        "urn:rfid:04000004" if n <= 2 => {
            axum::Json(json!({"err": {"-attrib-": {"code": 9, "msg": "Try later"}}}))
                .into_response()
        }
        "urn:rfid:04000004" => {
            axum::Json(json!({"rsc_id": "77", "text": {"title": "Bob Jansen"}})).into_response()
        }
        // No answer at all the first time (the station's timeout is 1 s and
        // it gives up on the request), then fine.
        "urn:rfid:04000005" if n == 1 => std::future::pending().await,
        "urn:rfid:04000005" => axum::Json(json!({"id": 55, "title": "Cas"})).into_response(),
        // A 500 and malformed JSON, then fine.
        "urn:rfid:04000006" if n == 1 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
        }
        "urn:rfid:04000006" if n == 2 => "<html>not json".into_response(),
        "urn:rfid:04000006" => axum::Json(json!({"id": 66, "title": "Dee"})).into_response(),
        // The connection drops in the middle of the answer, then fine.
        "urn:rfid:04000007" if n == 1 => {
            let cut = futures_util::stream::iter([
                Ok(axum::body::Bytes::from_static(b"{\"id\": 77, \"ti")),
                Err(std::io::Error::other("connection dropped")),
            ]);
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(cut),
            )
                .into_response()
        }
        "urn:rfid:04000007" => axum::Json(json!({"id": 77, "title": "Eve"})).into_response(),
        _ => axum::Json(json!(false)).into_response(),
    }
}

async fn fake_anymeta() -> (Shared, String) {
    let shared: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/rest/", listener.local_addr().unwrap());
    shared.lock().unwrap().url = url.clone();
    let app = axum::Router::new()
        .route("/services/rest/", axum::routing::post(rest))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (shared, url)
}

fn credentials(dir: &Path, consumer_secret: &str) -> std::path::PathBuf {
    let p = dir.join("anymeta.toml");
    std::fs::write(
        &p,
        format!("c_key = \"dpf43f3p2l4k3l03\"\nc_sec = \"{consumer_secret}\"\nt_key = \"nnch734d00sl2jdk\"\nt_sec = \"{TOKEN_SECRET}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn start(dir: &Path, identity: &str) -> Station {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let extra =
        format!("[network]\nwatch = false\n[hotplug]\nenabled = false\n[identity]\n{identity}\n");
    Station::start(&data, &common::config(&data, &extra))
}

async fn identity_until(st: &Station, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    st.station_until(&format!("identity {what}"), |s| pred(&s["identity"]))
        .await["identity"]
        .clone()
}

/// Each tap is acknowledged quickly whatever anyMeta does.
async fn quick_tap(st: &Station, reader: &str, tag: &str) -> Value {
    let t = Instant::now();
    let (code, body) = st.tap(reader, tag).await;
    assert!(code == 201 || code == 200, "{code} {body}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "tap took {:?}",
        t.elapsed()
    );
    body
}

#[tokio::test]
async fn people_come_from_anymeta_off_the_hot_path() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = fake_anymeta().await;
    let creds = credentials(dir.path(), CONSUMER_SECRET);
    let st = start(
        dir.path(),
        &format!(
            "anymeta = \"{url}\"\ncredentials = \"{}\"\ntimeout_ms = 1000\nbreaker_open_s = 1\n",
            creds.display()
        ),
    );
    identity_until(&st, "ok", |i| i["state"] == "ok").await;
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;

    // Anna's first tag votes "a" in the one-per-person poll.
    quick_tap(&st, "first-a", "urn:rfid:04000001").await;
    identity_until(&st, "knowing Anna", |i| {
        i["known"] == 1 && i["pending"] == 0
    })
    .await;
    // Her second tag votes "b": counted at first (unknown tag)…
    let b = quick_tap(&st, "first-b", "urn:rfid:04000002").await;
    assert_eq!(b["counted"], true);
    sse.until("tally", |t| t["poll"] == "first" && t["total"] == 2)
        .await;
    // …until it turns out to be Anna's: one vote per person.
    sse.until("tally", |t| t["poll"] == "first" && t["total"] == 1)
        .await;
    identity_until(&st, "knowing both tags", |i| i["known"] == 2).await;
    assert_eq!(st.tally("first").await, vec![1, 0]);

    // The cache: no second lookup for a known tag.
    quick_tap(&st, "all-a", "urn:rfid:04000001").await;
    // Unknown (false) is cached too, for a shorter time.
    quick_tap(&st, "all-a", "urn:rfid:04000003").await;
    identity_until(&st, "resolving the unknown", |i| i["pending"] == 0).await;
    quick_tap(&st, "last-a", "urn:rfid:04000003").await;
    // Error bodies, timeouts, 500s, malformed JSON and a dropped
    // connection: retried until answered.
    for t in [
        "urn:rfid:04000004",
        "urn:rfid:04000005",
        "urn:rfid:04000006",
        "urn:rfid:04000007",
    ] {
        quick_tap(&st, "all-a", t).await;
    }
    identity_until(&st, "resolving the hard ones", |i| {
        i["pending"] == 0 && i["known"] == 6
    })
    .await;
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.calls["urn:rfid:04000001"], 1, "cached");
        assert_eq!(f.calls["urn:rfid:04000003"], 1, "negatively cached");
        assert_eq!(f.calls["urn:rfid:04000004"], 3);
        assert_eq!(f.calls["urn:rfid:04000005"], 2);
        assert_eq!(f.calls["urn:rfid:04000006"], 3);
        assert_eq!(f.calls["urn:rfid:04000007"], 2);
        assert_eq!(f.refused, 0, "every request correctly signed");
    }
    // Names never on public interfaces unless show_names.
    let (_, export) = st.get_text("/api/v1/polls").await;
    assert!(!export.contains("Anna"));
    let tap = sse.until("tap", |t| t["reader"] == "all-a").await;
    assert!(tap.get("name").is_none(), "{tap}");

    // The log keeps identities: after a restart, no lookups repeat.
    let data = st.data_dir.clone();
    let cfg = st.config_path.clone();
    assert!(st.terminate().success());
    let st = Station::start_with(&data, &cfg);
    identity_until(&st, "restored", |i| i["known"] == 6).await;
    assert_eq!(st.tally("first").await, vec![1, 0]);
    quick_tap(&st, "last-b", "urn:rfid:04000002").await;
    assert_eq!(fake.lock().unwrap().calls["urn:rfid:04000002"], 1);

    // anyMeta keeps failing: the breaker opens (identity offline), taps go
    // on; it recovers: the breaker closes and the queue drains.
    fake.lock().unwrap().down = true;
    for i in 0..6 {
        quick_tap(&st, "all-a", &format!("urn:rfid:0400010{i}")).await;
    }
    let v = identity_until(&st, "offline (breaker open)", |i| i["state"] == "offline").await;
    assert!(v["detail"].as_str().unwrap().contains("500"), "{v}");
    // A crash with lookups pending: the logged taps are the queue.
    let before = fake.lock().unwrap().calls["urn:rfid:04000100"];
    let (data, cfg) = (st.data_dir.clone(), st.config_path.clone());
    st.kill9();
    let st = Station::start_with(&data, &cfg);
    identity_until(&st, "still pending after the crash", |i| i["pending"] == 6).await;
    // A clean stop saves a snapshot (replay starts after it): the pending
    // lookups are kept in it.
    assert!(st.terminate().success());
    let st = Station::start_with(&data, &cfg);
    let v = st
        .station_until("replay from the snapshot", |s| {
            s["store"]["startup"]["replayed_taps"] == 0
        })
        .await;
    assert_eq!(v["identity"]["pending"], 6, "{v}");
    fake.lock().unwrap().down = false;
    identity_until(&st, "recovered", |i| {
        i["state"] == "ok" && i["pending"] == 0
    })
    .await;
    assert!(fake.lock().unwrap().calls["urn:rfid:04000100"] > before);
    assert!(st.terminate().success());
}

#[tokio::test]
async fn a_wrong_signature_is_refused_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = fake_anymeta().await;
    let creds = credentials(dir.path(), "not-the-secret");
    let st = start(
        dir.path(),
        &format!(
            "anymeta = \"{url}\"\ncredentials = \"{}\"\n",
            creds.display()
        ),
    );
    let v = identity_until(&st, "degraded", |i| i["state"] == "degraded").await;
    assert!(v["detail"].as_str().unwrap().contains("401"), "{v}");
    assert!(fake.lock().unwrap().refused >= 1);
    // The secret never reaches the log.
    assert!(!st.output().contains("not-the-secret"));
    quick_tap(&st, "all-a", "urn:rfid:04000001").await;
    assert!(st.terminate().success());
}

#[tokio::test]
async fn a_people_file_names_voters_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.csv");
    std::fs::write(
        &people,
        "tag,name,person_id\n04000001,Anna de Vries,anna\n04000002,Anna de Vries,anna\n",
    )
    .unwrap();
    let st = start(
        dir.path(),
        &format!("people = \"{}\"\nshow_names = true\n", people.display()),
    );
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    quick_tap(&st, "first-a", "urn:rfid:04000001").await;
    identity_until(&st, "knowing Anna", |i| i["known"] == 1).await;
    quick_tap(&st, "first-b", "urn:rfid:04000002").await;
    sse.until("tally", |t| t["poll"] == "first" && t["total"] == 2)
        .await;
    sse.until("tally", |t| t["poll"] == "first" && t["total"] == 1)
        .await;
    // show_names: a known voter's name is on the public tap event.
    quick_tap(&st, "all-a", "urn:rfid:04000001").await;
    let tap = sse.until("tap", |t| t["reader"] == "all-a").await;
    assert_eq!(tap["name"], "Anna de Vries");

    // The file is edited while the station runs: a tag that was unknown
    // gets a name, Anna's name is corrected; a tag nobody tapped is not
    // "known" here. Applied without a restart.
    quick_tap(&st, "all-a", "urn:rfid:04000003").await;
    identity_until(&st, "resolving the unknown tag", |i| i["pending"] == 0).await;
    std::fs::write(
        &people,
        "tag,name,person_id\n04000001,Anna Smit,anna\n04000002,Anna Smit,anna\n04000003,Bob Bakker,bob\n04000009,Nobody Yet,nobody\n",
    )
    .unwrap();
    identity_until(&st, "knowing Bob", |i| i["known"] == 3).await;
    let seq = quick_tap(&st, "last-b", "urn:rfid:04000003").await["seq"].clone();
    let tap = sse.until("tap", |t| t["seq"] == seq).await;
    assert_eq!(tap["name"], "Bob Bakker");
    let seq = quick_tap(&st, "last-b", "urn:rfid:04000001").await["seq"].clone();
    let tap = sse.until("tap", |t| t["seq"] == seq).await;
    assert_eq!(tap["name"], "Anna Smit");
    // A broken edit is refused with its line and the last good one kept.
    std::fs::write(&people, "tag,name,person_id\n0400000Z,Zed,zed\n").unwrap();
    let v = identity_until(&st, "degraded", |i| i["state"] == "degraded").await;
    assert!(v["detail"].as_str().unwrap().contains(":2"), "{v}");
    let seq = quick_tap(&st, "first-b", "urn:rfid:04000003").await["seq"].clone();
    let tap = sse.until("tap", |t| t["seq"] == seq).await;
    assert_eq!(tap["name"], "Bob Bakker", "{tap}");
    // It stays degraded while the file is broken (a lookup does not make
    // it look good again), and is ok once the file is fixed.
    quick_tap(&st, "all-a", "urn:rfid:0400000A").await;
    let v = identity_until(&st, "answering the lookup", |i| i["pending"] == 0).await;
    assert_eq!(v["state"], "degraded", "{v}");
    std::fs::write(&people, "tag,name,person_id\n04000003,Bob Bakker,bob\n").unwrap();
    identity_until(&st, "ok again", |i| i["state"] == "ok").await;
    let config = st.config_path.clone();
    assert!(st.terminate().success());

    // A broken people file is refused with its line.
    std::fs::write(&people, "04000001,Anna de Vries,anna\nnot-a-tag,Bob,bob\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("people.csv:2: tag \"not-a-tag\""), "{e}");
}
