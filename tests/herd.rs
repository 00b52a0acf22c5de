//! The herd over direct links: real station processes on loopback, every
//! link through a proxy that can cut, black-hole or slow it. Stations
//! converge to the same log (every tap exactly once, no gap in any
//! origin's numbering) and the same tallies.

mod common;

use std::path::Path;
use std::time::Duration;

use common::herd::{self, Member, Mode, Proxy};
use common::{Station, WAIT};
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};

fn tag(n: u32) -> String {
    format!("urn:rfid:{:08X}", 0x2000_0000 + n)
}

/// Tap `tags` on `reader` of `st`, `parallel` at a time; every tap must be
/// taken (201).
async fn tap_all(st: &Station, reader: &str, tags: impl Iterator<Item = String>, parallel: usize) {
    futures_util::stream::iter(tags)
        .for_each_concurrent(parallel, |t| async move {
            let (s, v) = st.tap(reader, &t).await;
            assert_eq!(s, 201, "{t}: {v}");
        })
        .await;
}

/// A herd of stations named `ids`, every link dialled by the lower id of
/// the pair through a proxy. Returns the members and the proxies by pair.
async fn herd_of(
    dir: &Path,
    ids: &[&str],
    links: &[(usize, usize)],
    extra: &[&str],
) -> (Vec<Member>, Vec<((usize, usize), Proxy)>) {
    let certs = herd::certificates(dir, ids);
    let ports: Vec<u16> = ids.iter().map(|_| herd::port()).collect();
    let mut proxies = Vec::new();
    for &(a, b) in links {
        proxies.push(((a, b), Proxy::start(ports[b]).await));
    }
    let mut members = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers: Vec<String> = proxies
            .iter()
            .filter(|((a, _), _)| *a == i)
            .map(|(_, p)| p.address())
            .collect();
        let extra = extra.get(i).copied().unwrap_or("");
        members.push(herd::start(dir, id, &certs, ports[i], &peers, extra));
    }
    for (i, m) in members.iter().enumerate() {
        let n = links.iter().filter(|(a, b)| *a == i || *b == i).count();
        herd::linked(&m.station, n).await;
    }
    (members, proxies)
}

fn stations(m: &[Member]) -> Vec<&Station> {
    m.iter().map(|m| &m.station).collect()
}

#[tokio::test]
async fn two_stations_share_their_taps_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _proxies) = herd_of(dir.path(), &["hall-a", "hall-b"], &[(0, 1)], &[]).await;
    for n in 0..20 {
        assert_eq!(m[0].station.tap("all-a", &tag(n)).await.0, 201);
        assert_eq!(m[1].station.tap("all-a", &tag(100 + n)).await.0, 201);
    }
    let (keys, tallies) = herd::converged(&stations(&m), Duration::from_secs(1)).await;
    assert_eq!(keys.len(), 40);
    assert_eq!(tallies["all"]["total"], 40);
    assert_eq!(tallies["all"]["by_station"]["hall-a"], 20);
    assert_eq!(tallies["all"]["by_station"]["hall-b"], 20);
    let (_, h) = m[0].station.get("/api/v1/herd").await;
    let peer = &h["herd"]["peers"][0];
    assert_eq!(
        (peer["station"].as_str(), peer["state"].as_str()),
        (Some("hall-b"), Some("up")),
        "{h}"
    );
    let (_, health) = m[0].station.get("/healthz").await;
    let herd_c = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "herd")
        .unwrap();
    assert_eq!(herd_c["level"], "OK", "{herd_c}");
}

/// Five stations in a line, a ring and a full mesh: random taps at every
/// station (admin API, and a real pty reader at one), links cut and
/// restored at random meanwhile; after the last heal every station holds
/// every tap exactly once and shows the same tallies.
#[tokio::test]
async fn five_stations_in_a_line_a_ring_and_a_mesh_converge_through_cuts() {
    let ids = ["st-a", "st-b", "st-c", "st-d", "st-e"];
    let line = vec![(0, 1), (1, 2), (2, 3), (3, 4)];
    let mut ring = line.clone();
    ring.push((0, 4));
    let mesh: Vec<(usize, usize)> = (0..5)
        .flat_map(|a| (a + 1..5).map(move |b| (a, b)))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (name, links) in [("line", line), ("ring", ring), ("mesh", mesh)] {
        let dir = tempfile::tempdir().unwrap();
        // One station reads a real serial reader on a pseudo-terminal.
        let pty = dir.path().join("post");
        let sim = pollstation::app::sim::SimReader::spawn(
            pollstation::config::Protocol::Text,
            Some(&pty),
        )
        .unwrap();
        let reader = format!(
            "[[reader]]\nid = \"post\"\ndevice = \"{}\"\nprotocol = \"text\"\npoll = \"first\"\nanswer = \"a\"\n",
            pty.display()
        );
        let mut extra = vec![""; 5];
        extra[2] = &reader;
        let (m, proxies) = herd_of(dir.path(), &ids, &links, &extra).await;
        let mut sse = common::Sse::connect(&m[2].station.url("/api/v1/events")).await;
        sse.reader_status("post", "connected").await;
        for round in 0..4u32 {
            // Cut a random link (or two) while taps go on everywhere.
            let cut: Vec<usize> = (0..rng.random_range(1..=2))
                .map(|_| rng.random_range(0..proxies.len()))
                .collect();
            for &c in &cut {
                proxies[c].1.set(if rng.random_bool(0.5) {
                    Mode::Cut
                } else {
                    Mode::Blackhole
                });
            }
            for (i, member) in m.iter().enumerate() {
                let reader = ["first-a", "last-b", "all-a", "first-b", "all-a"][i];
                let base = 10_000 * (i as u32 + 1) + 100 * round;
                tap_all(&member.station, reader, (0..12).map(|k| tag(base + k)), 4).await;
            }
            sim.hold(&[0x04, 0x10, round as u8, 0x01], Duration::from_millis(400))
                .await;
            sse.until("tap", |t| t["reader"] == "post").await;
            for &c in &cut {
                proxies[c].1.set(Mode::Pass);
            }
        }
        let (keys, tallies) = herd::converged(&stations(&m), Duration::from_secs(1)).await;
        assert_eq!(keys.len(), 5 * 4 * 12 + 4, "{name}: every tap exactly once");
        assert_eq!(
            tallies["all"]["by_station"]["st-c"], 48,
            "{name}: {tallies:?}"
        );
    }
}

/// {A,B} | {C,D,E} with 10,000 taps on each side, then healed.
#[tokio::test]
async fn a_partition_with_ten_thousand_taps_a_side_heals_to_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["p-a", "p-b", "p-c", "p-d", "p-e"];
    let links = [(0, 1), (1, 2), (2, 3), (3, 4)];
    let (m, proxies) = herd_of(dir.path(), &ids, &links, &[]).await;
    // The link between the halls fails.
    proxies[1].1.set(Mode::Cut);
    let sides = [(0, 0u32), (1, 5000), (2, 20_000), (3, 23_000), (4, 26_000)];
    let counts = [5000u32, 5000, 3000, 3000, 4000];
    futures_util::future::join_all(sides.iter().zip(counts).map(|(&(i, base), n)| {
        let st = &m[i].station;
        async move { tap_all(st, "all-a", (0..n).map(|k| tag(base + k)), 16).await }
    }))
    .await;
    proxies[1].1.set(Mode::Pass);
    let (keys, tallies) = herd::converged(&stations(&m), Duration::from_secs(2)).await;
    assert_eq!(keys.len(), 20_000);
    assert_eq!(tallies["all"]["total"], 20_000);
}

/// A station killed -9 in the middle of a catch-up, restarted: no gap, no
/// duplicate, the same log.
#[tokio::test]
async fn kill_9_during_a_catch_up_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, proxies) = herd_of(dir.path(), &["k-a", "k-b"], &[(0, 1)], &[]).await;
    proxies[0].1.set(Mode::Cut);
    tap_all(&m[0].station, "all-a", (0..6000).map(tag), 16).await;
    // Slow the link so the catch-up takes a few seconds, heal, and kill B
    // once it holds some of A's taps but not all.
    let mut sse = common::Sse::connect(&m[1].station.url("/api/v1/events")).await;
    proxies[0].1.set(Mode::Throttle(20_000));
    sse.until("tap", |t| {
        t["station"] == "k-a" && t["seq"].as_u64() >= Some(1000)
    })
    .await;
    let (_, held) = m[1].station.get("/api/v1/station").await;
    assert!(
        held["store"]["taps"].as_u64() < Some(6000),
        "part-way: {}",
        held["store"]
    );
    let b = m.pop().unwrap();
    let (data, cfg) = (b.station.data_dir.clone(), b.station.config_path.clone());
    b.station.kill9();
    proxies[0].1.set(Mode::Pass);
    let b = Station::start_with(&data, &cfg);
    let (keys, _) = herd::converged(&[&m[0].station, &b], Duration::from_secs(2)).await;
    assert_eq!(keys.len(), 6000);
}

/// One vote per person across the event: the same tag at two stations
/// counts once, for the answer of the earlier tap; two tags of one person
/// (known from the people file at one station only) count once everywhere.
#[tokio::test]
async fn one_vote_per_person_holds_across_stations() {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.csv");
    std::fs::write(
        &people,
        format!("{},Anna,p1\n{},Anna,p1\n", tag(50), tag(51)),
    )
    .unwrap();
    let a_extra = format!("[identity]\npeople = \"{}\"\n", people.display());
    let (m, _p) = herd_of(
        dir.path(),
        &["v-a", "v-b", "v-c"],
        &[(0, 1), (1, 2)],
        &[&a_extra],
    )
    .await;
    let (s1, first) = m[0].station.tap("first-a", &tag(1)).await;
    assert_eq!((s1, first["counted"].as_bool()), (201, Some(true)));
    // The same tag at another station, later, for the other answer.
    herd::converged(&stations(&m), Duration::from_secs(1)).await;
    let (s2, _) = m[2].station.tap("first-b", &tag(1)).await;
    assert_eq!(s2, 201);
    // Anna's two tags: one at a station that knows her, one at one that does not.
    m[0].station.tap("first-a", &tag(50)).await;
    m[2].station.tap("first-b", &tag(51)).await;
    m[0].station
        .station_until("Anna known", |s| s["identity"]["known"] == 2)
        .await;
    let (_, tallies) = herd::converged(&stations(&m), Duration::from_secs(1)).await;
    // tag 1 counts once (a), Anna once (a: her first tap).
    assert_eq!(tallies["first"]["answers"][0]["count"], 2, "{tallies:?}");
    assert_eq!(tallies["first"]["answers"][1]["count"], 0, "{tallies:?}");
    for st in stations(&m) {
        assert_eq!(st.tally("first").await, vec![2, 0]);
    }
}

/// A reset and a close at A while C is cut off, with taps at C before and
/// after: after healing every station applies them at their keys.
#[tokio::test]
async fn a_reset_and_a_close_during_a_partition_apply_in_key_order_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["r-a", "r-b", "r-c", "r-d", "r-e"];
    let links = [(0, 1), (1, 2), (2, 3), (3, 4)];
    let (m, proxies) = herd_of(dir.path(), &ids, &links, &[]).await;
    let c = &m[2].station;
    // C alone: both of its links fail.
    proxies[1].1.set(Mode::Cut);
    proxies[2].1.set(Mode::Cut);
    tap_all(c, "all-a", (0..5).map(tag), 1).await; // before the reset
    tap_all(&m[0].station, "all-a", (100..103).map(tag), 1).await;
    let (s, _) = m[0]
        .station
        .admin_post("/api/v1/polls/all/reset", serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = m[0]
        .station
        .admin_post("/api/v1/polls/first/close", serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    // After the reset and the close, C (which has not heard) goes on.
    tap_all(c, "all-a", (10..13).map(tag), 1).await; // after the reset: count
    tap_all(c, "first-a", (20..24).map(tag), 1).await; // after the close: do not
    tap_all(&m[4].station, "all-a", (30..32).map(tag), 1).await;
    proxies[1].1.set(Mode::Pass);
    proxies[2].1.set(Mode::Pass);
    let (keys, tallies) = herd::converged(&stations(&m), Duration::from_secs(1)).await;
    assert_eq!(keys.len(), 5 + 3 + 3 + 4 + 2);
    // all: C's 3 after the reset and E's 2 (A's 3 and C's 5 were before it).
    assert_eq!(tallies["all"]["total"], 5, "{tallies:?}");
    assert_eq!(
        tallies["first"]["total"], 0,
        "taps after the close do not count: {tallies:?}"
    );
    let (_, polls) = c.get("/api/v1/polls").await;
    let first = polls
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "first")
        .unwrap();
    assert_eq!(first["open"], false, "C learned of the close");
}

/// Peers that are not of the herd: a certificate of another CA, none, a
/// name that is not the claimed id, other polls. Each is refused, with the
/// reason visible, and nothing of theirs is stored.
#[tokio::test]
async fn strangers_are_refused_and_nothing_of_theirs_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let certs = herd::certificates(dir.path(), &["s-a", "s-b"]);
    let pa = herd::port();
    let a = herd::start(dir.path(), "s-a", &certs, pa, &[], "");
    // Until A has refused a connection for a reason containing `why`.
    let refused = |why: &'static str| {
        let st = &a;
        async move {
            st.station
                .station_until(&format!("refused for {why:?}"), |s| {
                    s["herd"]["refused"].as_array().is_some_and(|r| {
                        r.iter()
                            .any(|r| r["reason"].as_str().is_some_and(|t| t.contains(why)))
                    })
                })
                .await;
        }
    };
    // Another herd's CA.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_certs = herd::certificates(&other, &["s-x"]);
    let x = herd::start(
        &other,
        "s-x",
        &other_certs,
        herd::port(),
        &[format!("127.0.0.1:{pa}")],
        "",
    );
    refused("TLS: the peer refused the handshake").await;
    x.station
        .station_until("told it is refused", |s| {
            s["herd"]["refused"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r["reason"]
                        .as_str()
                        .is_some_and(|t| t.contains("invalid peer certificate"))
                })
            })
        })
        .await;
    // No certificate at all.
    assert!(
        no_certificate(pa).await.is_err(),
        "a client without a certificate gets no link"
    );
    refused("TLS: peer sent no certificates").await;
    // A member's certificate, a hello that claims another id.
    let liar = liar(&certs, pa, "s-b", "s-z").await;
    assert!(liar.contains("certificate names s-b"), "{liar}");
    refused("claims to be station \"s-z\"").await;
    // Other polls.
    let polls_differ = herd::config(
        &dir.path().join("s-b"),
        "s-b",
        &certs,
        herd::port(),
        &[format!("127.0.0.1:{pa}")],
        "",
    )
    .replace("rule = \"unlimited\"", "rule = \"last-wins\"");
    std::fs::create_dir_all(dir.path().join("s-b")).unwrap();
    let cfg = dir.path().join("s-b.toml");
    std::fs::write(&cfg, polls_differ).unwrap();
    let b = Station::start_with(&dir.path().join("s-b"), &cfg);
    refused("the polls differ").await;
    b.station_until("told why", |s| {
        s["herd"]["refused"].as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains("the polls differ"))
            })
        })
    })
    .await;
    x.station.tap("all-a", &tag(1)).await;
    b.tap("all-a", &tag(2)).await;
    assert!(
        a.station.export().await.is_empty(),
        "nothing of theirs is stored"
    );
}

/// Trusts any server: for a client that has no certificate of its own.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client without a certificate; Err when no link comes of it.
async fn no_certificate(port: u16) -> Result<(), String> {
    use futures_util::SinkExt;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("pollstation-herd").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3: the server refuses the missing certificate after the client
    // has finished; the first read says so.
    let mut framed =
        tokio_util::codec::Framed::new(stream, tokio_util::codec::LengthDelimitedCodec::new());
    let _ = framed.send(bytes::Bytes::from_static(b"hello?")).await;
    match tokio::time::timeout(WAIT, framed.next()).await {
        Ok(Some(Ok(_))) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Speak the herd protocol with a member's certificate but claim `claim`.
async fn liar(certs: &Path, port: u16, cert_of: &str, claim: &str) -> String {
    use futures_util::SinkExt;
    use pollstation::herd::wire::{self, Frame, Hello};
    let cfg = pollstation::config::HerdConfig {
        id: "test-herd".into(),
        listen: None,
        peers: vec![],
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{cert_of}.pem")),
        key: certs.join(format!("{cert_of}.key")),
        max_skew: Duration::from_secs(1),
        carrier: pollstation::config::Carrier::Direct,
        stations: vec![],
    };
    let tls = pollstation::herd::tls::HerdTls::load(&cfg, cert_of).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("pollstation-herd").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.client)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut framed =
        tokio_util::codec::Framed::new(stream, tokio_util::codec::LengthDelimitedCodec::new());
    let hello = Hello {
        version: wire::VERSION,
        herd: "test-herd".into(),
        station: claim.into(),
        polls_hash: String::new(),
        heads: vec![],
    };
    framed
        .send(bytes::Bytes::from(
            wire::encode(&Frame::Hello(hello)).unwrap(),
        ))
        .await
        .unwrap();
    loop {
        let f = tokio::time::timeout(WAIT, framed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Frame::Refuse(r) = wire::decode(&f).unwrap() {
            return r;
        }
    }
}

/// A station that loses its data dir and starts empty under its id first
/// restores its own feed from a peer, then numbers on after its last tap.
#[tokio::test]
async fn a_station_restored_from_an_empty_data_dir_continues_its_own_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, _p) = herd_of(dir.path(), &["e-a", "e-b"], &[(0, 1)], &[]).await;
    tap_all(&m[0].station, "all-a", (0..10).map(tag), 1).await;
    herd::converged(&stations(&m), Duration::from_secs(1)).await;
    let a = m.remove(0);
    let (data, cfg) = (a.station.data_dir.clone(), a.station.config_path.clone());
    a.station.kill9();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let a = Station::start_with(&data, &cfg);
    herd::linked(&a, 1).await;
    let (s, v) = a.tap("all-a", &tag(99)).await;
    assert_eq!((s, v["seq"].as_u64()), (201, Some(11)), "{v}");
    let (keys, _) = herd::converged(&[&a, &m[0].station], Duration::from_secs(1)).await;
    assert_eq!(keys.len(), 11);
}
