//! XMPP publishing against a real Prosody on loopback: the station publishes
//! every counted vote to `vote/<poll>` with the ikPoll payload; a second
//! client subscribed to the node receives exactly the expected items; votes
//! survive Prosody being killed and the station being killed -9, and are
//! published once per item id, in order, until the outbox is empty.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Station;
use common::prosody::{PASSWORD, Prosody, Watcher};
use pollstation::xmpp::payload;
use serde_json::Value;

fn station(dir: &Path, prosody: &Prosody, extra: &str) -> Station {
    station_env(dir, prosody, extra, "none", &[])
}

fn station_env(
    dir: &Path,
    prosody: &Prosody,
    extra: &str,
    tls: &str,
    env: &[(&str, &str)],
) -> Station {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pw = dir.join("xmpp.password");
    common::write_secret(&pw, &format!("{PASSWORD}\n"));
    let cfg = format!(
        "[network]\nwatch = false\n[hotplug]\nenabled = false\n\
         [xmpp]\njid = \"station@localhost\"\npassword_file = \"{}\"\nserver = \"127.0.0.1:{}\"\n\
         tls = \"{tls}\"\npubsub = \"pubsub.localhost\"\n{extra}\n",
        pw.display(),
        prosody.port
    );
    let config = dir.join("station.toml");
    std::fs::write(&config, common::config(&data, &cfg)).unwrap();
    Station::start_env(&data, &config, env)
}

/// Until the station's XMPP view satisfies `pred`.
async fn xmpp_until(st: &Station, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    st.station_until(&format!("xmpp {what}"), |s| pred(&s["xmpp"]))
        .await["xmpp"]
        .clone()
}

#[tokio::test]
async fn votes_reach_a_subscriber_with_the_ikpoll_payload() {
    let dir = tempfile::tempdir().unwrap();
    let prosody = Prosody::start(dir.path());
    let st = station(dir.path(), &prosody, "");
    xmpp_until(&st, "online", |x| x["state"] == "online").await;

    // The first vote creates the node (the server answers item-not-found).
    let (code, _) = st.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);
    xmpp_until(&st, "published 1", |x| {
        x["published"] == 1 && x["outbox"] == 0
    })
    .await;
    assert!(st.output().contains("node does not exist; creating it"));

    let mut w = Watcher::connect(prosody.port).await;
    w.subscribe("vote/all").await.unwrap();
    // Not counted (first-wins poll, second tap of a tag) → nothing published.
    st.tap("first-a", "urn:rfid:04A1B2C3").await;
    st.tap("first-b", "urn:rfid:04A1B2C3").await;
    let mut seqs = Vec::new();
    for (reader, tag) in [
        ("all-a", "urn:rfid:04A1B2C4"),
        ("all-a", "urn:rfid:04A1B2C5"),
    ] {
        let (code, body) = st.tap(reader, tag).await;
        assert_eq!(code, 201);
        seqs.push(body["seq"].as_u64().unwrap());
    }
    // Prosody sends the node's last item on subscribing (test-1): skip it.
    let (node, id, p) = loop {
        let (node, id, p) = w.next_item().await;
        if id != "test-1" {
            break (node, id, p);
        }
    };
    assert_eq!(id, format!("test-{}", seqs[0]));
    // Field by field, as ikDisplay reads it.
    assert_eq!(node, "vote/all");
    assert_eq!(p.name(), "rsp");
    let v = p.get_child("vote", payload::NS).expect("<vote>");
    let field =
        |e: &tokio_xmpp::minidom::Element, n: &str| e.get_child(n, payload::NS).map(|c| c.text());
    let seq: u64 = id.strip_prefix("test-").unwrap().parse().unwrap();
    assert_eq!(field(v, "id").as_deref(), Some(id.as_str()));
    assert_eq!(field(v, "reader_serial").as_deref(), Some("all-a"));
    assert_eq!(field(v, "answer_id_ref").as_deref(), Some("a"));
    assert_eq!(field(v, "question_id_ref").as_deref(), Some("all"));
    assert_eq!(
        field(v, "rfid_tag"),
        None,
        "tags only with publish_tags = true"
    );
    let ts = field(v, "timestamp").unwrap();
    assert!(
        ts.len() == 19 && &ts[4..5] == "-" && &ts[10..11] == " " && &ts[13..14] == ":",
        "timestamp {ts:?}"
    );
    let person = p.get_child("person", payload::NS).expect("<person>");
    assert_eq!(
        field(person, "title").as_deref(),
        Some(""),
        "unknown person: empty title"
    );
    assert_eq!(field(person, "image").as_deref(), Some(""));
    let q = p.get_child("question", payload::NS).expect("<question>");
    assert_eq!(field(q, "id").as_deref(), Some("all"));
    assert_eq!(field(q, "title").as_deref(), Some("Every tap counts?"));
    let parsed = payload::parse(&p).unwrap();
    assert_eq!(parsed.question.answers[0].0, "a");
    assert_eq!(parsed.question.answers[0].1, "Alpha");
    assert_eq!(parsed.question.answers[1].1, "Bravo");
    let total = parsed.question.total;
    assert!(total >= 2, "total {total}");
    assert_eq!(parsed.question.answers[0].2, total);
    assert_eq!(parsed.question.answers[0].3, 100);
    let (_, id2, _) = w.next_item().await;
    assert_eq!(id2, format!("test-{}", seqs[1]), "in order, nothing else");
    assert_eq!(seq, seqs[0]);
    // 4: test-1, test-2 (the first-wins poll, its node made too), and the two above.
    xmpp_until(&st, "drained", |x| x["outbox"] == 0 && x["published"] == 4).await;
    let (_, metrics) = st.get_text("/metrics").await;
    assert!(metrics.contains("pollstation_xmpp_online 1"), "{metrics}");
    assert!(
        metrics.contains("pollstation_xmpp_published_total 4"),
        "{metrics}"
    );
    assert!(st.terminate().success());
}

#[tokio::test]
async fn every_vote_is_published_once_in_order_across_server_and_station_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut prosody = Prosody::start(dir.path());
    let st = station(
        dir.path(),
        &prosody,
        "publish_tags = true\nmax_items = 1000",
    );
    xmpp_until(&st, "online", |x| x["state"] == "online").await;
    let mut expected: Vec<String> = Vec::new();
    let mut n = 0u32;
    let mut tap = async |st: &Station, expected: &mut Vec<String>| {
        n += 1;
        let (code, body) = st.tap("all-a", &format!("urn:rfid:04BB{n:04X}")).await;
        assert_eq!(code, 201, "{body}");
        expected.push(format!("test-{}", body["seq"]));
    };
    for _ in 0..20 {
        tap(&st, &mut expected).await;
    }
    // The server dies mid-stream: taps are still acknowledged at once.
    prosody.kill();
    let t = Instant::now();
    for _ in 0..30 {
        tap(&st, &mut expected).await;
    }
    let during = t.elapsed();
    assert!(
        during < Duration::from_secs(5),
        "30 taps took {during:?} with the server down"
    );
    xmpp_until(&st, "noticing the outage", |x| {
        x["state"] == "error" && x["outbox"].as_u64() > Some(0)
    })
    .await;
    prosody.restart();
    for _ in 0..10 {
        tap(&st, &mut expected).await;
    }
    xmpp_until(&st, "drained", |x| {
        x["state"] == "online" && x["outbox"] == 0
    })
    .await;

    // The station is killed -9 with votes queued (server down), restarted.
    prosody.kill();
    for _ in 0..15 {
        tap(&st, &mut expected).await;
    }
    let data = st.data_dir.clone();
    let config = st.config_path.clone();
    st.kill9();
    prosody.restart();
    let st = Station::start_with(&data, &config);
    for _ in 0..5 {
        tap(&st, &mut expected).await;
    }
    let x = xmpp_until(&st, "drained after the restart", |x| {
        x["state"] == "online" && x["outbox"] == 0
    })
    .await;
    assert!(x["published"].as_u64().unwrap() >= 20, "{x}");

    // The node holds exactly the votes, each once, with their tags.
    let mut w = Watcher::connect(prosody.port).await;
    let items = w.items("vote/all").await;
    let mut ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
    ids.sort_by_key(|id| id.strip_prefix("test-").unwrap().parse::<u64>().unwrap());
    assert_eq!(ids, expected, "every vote once by item id, nothing else");
    for (id, p) in &items {
        let seq: u64 = id.strip_prefix("test-").unwrap().parse().unwrap();
        let tag = p
            .get_child("vote", payload::NS)
            .unwrap()
            .get_child("rfid_tag", payload::NS)
            .unwrap()
            .text();
        assert!(tag.starts_with("urn:rfid:04BB"), "{id}: {tag}");
        assert!(seq >= 1);
    }

    // Order: published in log order (Prosody keeps items in publish order;
    // a republished item keeps its place).
    let (_, s) = st.get("/api/v1/station").await;
    assert_eq!(s["xmpp"]["outbox"], 0);
    assert!(st.terminate().success());
    let _ = prosody.log();
}

#[tokio::test]
async fn starttls_verifies_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let prosody = Prosody::start_with(dir.path(), true, "internal");
    let trusted = prosody.dir.join("localhost.crt");

    // A certificate the station does not trust: no session, a clear state.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = common::prosody::self_signed(&other_dir, "localhost");
    let a = dir.path().join("a");
    let st = station_env(
        &a,
        &prosody,
        "",
        "required",
        &[("SSL_CERT_FILE", other.to_str().unwrap())],
    );
    let x = xmpp_until(&st, "refusing the certificate", |x| x["state"] == "error").await;
    assert!(x["detail"].as_str().unwrap().contains("no session"), "{x}");
    let out = st.output();
    assert!(
        out.to_lowercase().contains("certificate"),
        "the log says why:\n{out}"
    );
    assert!(st.terminate().success());

    // Trusted: STARTTLS, logged in, votes published.
    let b = dir.path().join("b");
    let st = station_env(
        &b,
        &prosody,
        "",
        "required",
        &[("SSL_CERT_FILE", trusted.to_str().unwrap())],
    );
    xmpp_until(&st, "online over TLS", |x| x["state"] == "online").await;
    let (code, _) = st.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);
    xmpp_until(&st, "published over TLS", |x| {
        x["published"] == 1 && x["outbox"] == 0
    })
    .await;
    assert!(st.terminate().success());
}

/// Listening: a second station subscribed to the first one's node shows
/// its results as remote results; started first, it subscribes once the
/// node exists.
#[tokio::test]
async fn a_subscribed_station_shows_remote_results() {
    let dir = tempfile::tempdir().unwrap();
    let prosody = Prosody::start(dir.path());

    // Station "b" (another id, the watcher account) listens to vote/all,
    // which does not exist until station "a" publishes its first vote.
    let bdir = dir.path().join("b");
    let data = bdir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pw = bdir.join("xmpp.password");
    common::write_secret(&pw, PASSWORD);
    let cfg = common::config(
        &data,
        &format!(
            "[network]\nwatch = false\n[hotplug]\nenabled = false\n\
             [xmpp]\njid = \"watcher@localhost\"\npassword_file = \"{}\"\nserver = \"127.0.0.1:{}\"\n\
             tls = \"none\"\npubsub = \"pubsub.localhost\"\n\
             subscribe = [\"xmpp:pubsub.localhost?;node=vote/all\"]\n",
            pw.display(),
            prosody.port
        ),
    )
    .replace("id = \"test\"", "id = \"other\"");
    let b = Station::start(&data, &cfg);
    let x = xmpp_until(&b, "online", |x| x["state"] == "online").await;
    assert!(
        x["detail"]
            .as_str()
            .unwrap()
            .contains("listening to 0 of 1 nodes"),
        "{x}"
    );
    let a = station(&dir.path().join("a"), &prosody, "");
    xmpp_until(&a, "online", |x| x["state"] == "online").await;
    let (code, _) = a.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);
    xmpp_until(&a, "published", |x| x["published"] == 1).await;
    // The node exists now: b's next try succeeds.
    xmpp_until(&b, "listening", |x| {
        x["detail"]
            .as_str()
            .unwrap()
            .contains("listening to 1 of 1 nodes")
    })
    .await;
    let (code, _) = a.tap("all-a", "urn:rfid:04A1B2C4").await;
    assert_eq!(code, 201);
    let remote = b
        .station_until("showing the remote result", |s| {
            s["remote"][0]["total"] == 2
        })
        .await["remote"][0]
        .clone();
    assert_eq!(remote["source"], "xmpp:pubsub.localhost?;node=vote/all");
    assert_eq!(remote["question_id"], "all");
    assert_eq!(remote["question"], "Every tap counts?");
    assert_eq!(remote["answers"][0], serde_json::json!(["a", "Alpha", 2]));
    // b's own tallies are untouched: remote results are shown, not merged.
    assert_eq!(b.tally("all").await, vec![0, 0]);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}
