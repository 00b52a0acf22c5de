//! Hardening of the HTTP side against a hostile LAN (issue "Hardening",
//! findings 2 and 3), against the real binary: slow and idle connections
//! closed within their deadlines, oversized heads refused, connection caps
//! per address and in all (with the station's own host still served, and a
//! reader's taps still counted), and public requests served by threads at
//! normal priority while taps keep the intake's.

mod common;

use std::time::{Duration, Instant};

use common::{Sse, Station, Thread, WAIT, threads};
use pollstation::app::sim::SimReader;
use pollstation::config::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn with_http(data: &std::path::Path, http: &str, extra: &str) -> String {
    common::config(data, extra).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{http}"),
    )
}

fn addr(st: &Station) -> std::net::SocketAddr {
    st.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection to the station from loopback address 127.0.0.`last`.
async fn from(last: u8, st: &Station) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::new(127, 0, 0, last), 0).into())
        .unwrap();
    sock.connect(addr(st)).await.unwrap()
}

/// Read until the station closes the connection; what it sent.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Err(_) => panic!("the station never closed the connection"),
            Ok(Ok(0) | Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read one response (head and a `Content-Length` body) off a kept-alive
/// connection.
async fn one_response(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        all.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&all).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_within_their_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = "header_timeout_s = 1\nidle_timeout_s = 4\nrequest_timeout_s = 30";
    let st = Station::start(&data, &with_http(&data, http, ""));

    // Headers trickled a byte every 100 ms: cut at the header deadline,
    // though bytes keep coming.
    let mut s = TcpStream::connect(addr(&st)).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = s.split();
    let trickle = async {
        for b in b"GET /api/v1/station HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain([b'a'; 400].iter())
        {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        started.elapsed()
    };
    let took = tokio::select! {
        t = closed => t,
        () = trickle => panic!("40 s of trickled headers were accepted"),
    };
    assert!(
        took < Duration::from_secs(4),
        "trickled headers cut after {took:?}"
    );

    // A request line and then nothing.
    let mut s = TcpStream::connect(addr(&st)).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /api/v1/station HTTP/1.1\r\n")
        .await
        .unwrap();
    until_closed(&mut s).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "half a request kept for {took:?}"
    );

    // A kept-alive connection that sends nothing after its answer: closed
    // once the header deadline for its next request passes.
    let mut s = TcpStream::connect(addr(&st)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = one_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let started = Instant::now();
    assert!(until_closed(&mut s).await.is_empty());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "idle keep-alive kept for {took:?}"
    );

    // A body announced and never sent: the request's head is complete, so
    // the idle timeout (4 s) is what ends it, not the header deadline (1 s).
    let mut s = TcpStream::connect(addr(&st)).await.unwrap();
    let req = format!(
        "POST /api/v1/taps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{{\"reader\"",
        st.token
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let started = Instant::now();
    until_closed(&mut s).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(8),
        "a stalled body closed after {took:?}, not at the idle timeout"
    );

    // An oversized head: refused (431, or a reset when the refusal leaves
    // bytes unread), never buffered and served.
    let mut s = TcpStream::connect(addr(&st)).await.unwrap();
    let big = format!(
        "GET /api/v1/station HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let answer = String::from_utf8_lossy(&until_closed(&mut s).await).to_string();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Nothing of this was stored, and the station still answers.
    assert_eq!(st.get("/api/v1/station").await.1["store"]["taps"], 0);
    assert!(st.terminate().success());
}

#[tokio::test]
async fn a_flood_of_connections_is_capped_while_readers_and_the_operator_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = dir.path().join("post-a");
    let sim = SimReader::spawn(Protocol::Text, Some(&dev)).unwrap();
    let http = "max_connections = 30\nmax_connections_per_address = 10\nheader_timeout_s = 60";
    let text = with_http(&data, http, "").replace(
        "device = \"/nonexistent/all-a\"",
        &format!("device = \"{}\"", dev.display()),
    );
    let st = Station::start(&data, &text);
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    sse.reader_status("all-a", "connected").await;
    // The event stream above is one of 127.0.0.1's places.

    // One address takes its ten places; the eleventh connection is told why.
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.push(from(2, &st).await);
    }
    let mut over = from(2, &st).await;
    let answer = String::from_utf8_lossy(&until_closed(&mut over).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("this address holds its maximum of 10 connections"),
        "{answer}"
    );

    // Other addresses fill the station's 30 places (the stream above has one).
    for last in [3, 4] {
        for _ in 0..10 {
            flood.push(from(last, &st).await);
        }
    }
    // One accept loop admits connections in the order they were made: the
    // next one finds the station full.
    let mut c = from(5, &st).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&until_closed(&mut c).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("the station holds its maximum of 30 connections"),
        "{answer}"
    );

    // Meanwhile a visitor taps at the reader: counted and announced.
    sim.hold(&[0x04, 0xA1, 0xB2, 0xC3], Duration::from_millis(300))
        .await;
    let tap = sse.next_named("tap").await;
    assert_eq!(tap["reader"], "all-a", "{tap}");
    // The operator on the box still gets in (the local reserve).
    assert_eq!(st.get("/healthz").await.0, 200);
    let (code, v) = st.tap("all-a", "0BADCAFE").await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(st.tally("all").await, vec![2, 0]);

    // The flood leaves, each connection closed from its side and seen
    // closed by the station: its places are back (a place is given back
    // before the station closes the socket).
    for mut c in flood {
        c.shutdown().await.unwrap();
        until_closed(&mut c).await;
    }
    let mut c = from(5, &st).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let a = String::from_utf8_lossy(&until_closed(&mut c).await).to_string();
    assert!(
        a.starts_with("HTTP/1.1 200"),
        "places did not come back: {a}"
    );
    assert!(st.terminate().success());
}

fn ticks_of(ts: &[Thread], f: impl Fn(&Thread) -> bool) -> u64 {
    ts.iter().filter(|t| f(t)).map(|t| t.ticks).sum()
}

#[tokio::test]
async fn public_requests_run_at_normal_priority_and_not_on_the_intake() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &common::config(&data, ""));
    // A tap, so the intake's worker has run and raised itself where nice
    // -20 is allowed.
    assert_eq!(st.tap("all-a", "04A1B2C3").await.0, 201);
    let before = threads(st.pid());
    let http: Vec<_> = before.iter().filter(|t| t.name == "http").collect();
    assert_eq!(http.len(), 2, "{before:?}");
    assert!(
        http.iter().all(|t| t.policy == 0 && t.nice == 0),
        "public-request threads are SCHED_OTHER at nice 0: {before:?}"
    );
    let raised_allowed = before.iter().any(|t| t.nice < 0);
    // A LAN client hammering the public API on one kept-alive connection.
    let client = reqwest::Client::new();
    for _ in 0..3000 {
        let r = client.get(st.url("/api/v1/station")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let after = threads(st.pid());
    let public = ticks_of(&after, |t| t.name == "http") - ticks_of(&before, |t| t.name == "http");
    let raised = ticks_of(&after, |t| t.nice < 0) - ticks_of(&before, |t| t.nice < 0);
    assert!(public > 0, "the public threads did the work: {after:?}");
    if raised_allowed {
        assert!(
            raised * 4 < public,
            "the intake's raised thread took {raised} ticks for public requests, the public ones {public}"
        );
    } else {
        eprintln!(
            "no raise of the intake is allowed here: only the public threads' policy is checked"
        );
    }
    assert!(st.terminate().success());
}
