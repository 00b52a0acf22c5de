//! The herd through a real Prosody (Debian's 0.12, every store in SQLite,
//! PEP nodes): three station processes with `carrier = "xmpp"`, one of them
//! behind a proxy that cuts its link to the server, the server killed and
//! started again mid-stream; every station ends with every tap exactly
//! once and the same tallies. A station outside the herd can neither
//! publish into a herd node nor read one.

mod common;

use std::time::Duration;

use common::herd::{Mode, Proxy, converged, start_xmpp};
use common::prosody::{PASSWORD, Prosody};
use common::{Station, WAIT};
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse};

const STATIONS: [&str; 3] = ["hall-a", "hall-b", "hall-c"];

/// `n` random taps at `st` (random readers, a small crowd of tags so that
/// the rules have repeats to judge); each taken.
async fn taps(st: &Station, rng: &mut rand::rngs::StdRng, n: usize, crowd: u32) {
    let readers = ["first-a", "first-b", "last-a", "last-b", "all-a"];
    let picks: Vec<(String, String)> = (0..n)
        .map(|_| {
            (
                readers[rng.random_range(0..readers.len())].to_string(),
                format!("{:08X}", 0x3100_0000 + rng.random_range(0..crowd)),
            )
        })
        .collect();
    futures_util::stream::iter(picks)
        .for_each_concurrent(4, |(r, t)| async move {
            let (s, v) = st.tap(&r, &t).await;
            assert!(s == 201 || s == 200, "{r} {t}: {s} {v}");
        })
        .await;
}

/// Until `st` has its herd peers up over the server.
async fn online(st: &Station, n: usize) {
    st.station_until(&format!("{n} herd peers up over XMPP"), |s| {
        s["herd"]["peers"].as_array().is_some_and(|p| {
            p.iter()
                .filter(|p| {
                    p["state"] == "up"
                        && p["address"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("xmpp:"))
                })
                .count()
                >= n
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stations_through_prosody_heal_a_cut_link_and_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Prosody::start_herd(dir.path(), &["hall-a", "hall-b", "hall-c", "outsider"]);
    let direct = format!("127.0.0.1:{}", server.port);
    let proxy = Proxy::start(server.port).await;
    let a = start_xmpp(dir.path(), "hall-a", &direct, &STATIONS);
    let b = start_xmpp(dir.path(), "hall-b", &direct, &STATIONS);
    let c = start_xmpp(dir.path(), "hall-c", &proxy.address(), &STATIONS);
    for st in [&a, &b, &c] {
        // Its two peers and its own node.
        if tokio::time::timeout(WAIT, online(st, 3)).await.is_err() {
            panic!("not online:\n{}\n{}", st.output(), server.log());
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for st in [&a, &b, &c] {
        taps(st, &mut rng, 20, 12).await;
    }
    let (held, _) = converged(&[&a, &b, &c], Duration::from_secs(3)).await;
    assert!(held.len() >= 40, "{} taps", held.len());

    // hall-c loses the server; everyone taps on; it comes back.
    proxy.set(Mode::Cut);
    for st in [&a, &b, &c] {
        taps(st, &mut rng, 15, 12).await;
    }
    proxy.set(Mode::Pass);
    converged(&[&a, &b, &c], Duration::from_secs(3)).await;

    // The server dies mid-stream and starts again (its SQL store keeps the items).
    taps(&a, &mut rng, 5, 12).await;
    server.kill();
    for st in [&a, &b, &c] {
        taps(st, &mut rng, 10, 12).await;
    }
    server.restart();
    taps(&b, &mut rng, 5, 12).await;
    let (held, tallies) = converged(&[&a, &b, &c], Duration::from_secs(3)).await;
    for s in STATIONS {
        assert!(
            held.keys().filter(|(o, _)| o == s).count() >= 20,
            "{s}: {held:?}"
        );
    }
    assert!(!tallies.is_empty());

    // Seen from outside: each peer over XMPP, with its lag.
    let (_, herd) = a.get("/api/v1/herd").await;
    let origins = herd["herd"]["origins"].as_array().unwrap();
    for o in origins {
        assert_eq!(o["lag"], 0, "{o}");
    }
    for id in ["hall-b", "hall-c"] {
        let o = origins.iter().find(|o| o["origin"] == id).unwrap();
        assert_eq!(o["via"], serde_json::json!(["xmpp"]), "{o}");
    }

    outsider_is_refused(server.port, &[&a, &b, &c]).await;
}

/// `outsider@localhost` (an account on the server, not in the herd) tries
/// to read hall-a's node and to publish a forged batch into it: the server
/// refuses both, and no station takes the forged tap.
async fn outsider_is_refused(port: u16, herd: &[&Station]) {
    let mut client = Client::new_plaintext(
        "outsider@localhost".parse::<Jid>().unwrap(),
        PASSWORD,
        DnsConfig::addr(&format!("127.0.0.1:{port}")),
        Timeouts::default(),
    );
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Online { .. }) = client.next().await {
                return;
            }
        }
    })
    .await
    .expect("outsider online");
    let (sender, mut events) = client.split();
    tokio::spawn(async move { while events.next().await.is_some() {} });
    let node = "herd/test-herd/hall-a";
    let hall_a: Jid = "hall-a@localhost".parse().unwrap();
    let forged = format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item id='taps-000000999999'>\
         <batch xmlns='urn:pollstation:herd:0' origin='hall-a' feed='taps' first='999999' last='999999'><summary>forged</summary><data>AA==</data></batch>\
         </item></publish></pubsub>"
    );
    let read = format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'/></pubsub>"
    );
    for (what, req) in [
        (
            "publish",
            IqRequest::Set(forged.parse::<Element>().unwrap()),
        ),
        ("read", IqRequest::Get(read.parse::<Element>().unwrap())),
    ] {
        let token = sender.send_iq(Some(hall_a.clone()), req).await;
        let answer = tokio::time::timeout(WAIT, token).await.unwrap().unwrap();
        match answer {
            IqResponse::Error(e) => {
                println!("outsider {what}: refused with {:?}", e.defined_condition)
            }
            IqResponse::Result(r) => panic!("the server let an outsider {what}: {r:?}"),
        }
    }
    for st in herd {
        let export = st.export().await;
        assert!(
            !export.iter().any(|t| t["seq"].as_u64() == Some(999_999)),
            "a station took the forged tap"
        );
    }
}
