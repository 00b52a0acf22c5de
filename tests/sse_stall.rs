//! A browser that stops reading its event stream (a phone locked mid-event)
//! costs the station a bounded amount: the stream is pulled only as fast
//! as the client reads (the kernel's send buffer for it is bounded too), so
//! what it misses is dropped from a fixed-size channel, not queued; when
//! the client reads again it gets a fresh
//! snapshot (`status` + `tally`) and the right totals (issue "Efficiency").

mod common;

use std::time::Duration;

use common::{Station, WAIT};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_stream_is_resynced_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &common::config(&data, ""));
    // A client with a small receive window that reads its first burst and
    // then nothing.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock
        .connect(st.base.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut first = String::new();
    while !first.contains("event: tally") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        first.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let before = rss_kib(st.pid());

    // 15,000 taps while it does not read: far more events than the
    // station's event channel holds (4,096) plus what the sockets buffer.
    let taps = 15_000u32;
    futures_util::stream::iter(0..taps)
        .for_each_concurrent(32, |n| {
            let st = &st;
            async move {
                let (code, v) = st.tap("all-a", &format!("{:08X}", 0x1100_0000 + n)).await;
                assert_eq!(code, 201, "{v}");
            }
        })
        .await;
    let during = rss_kib(st.pid());

    // Reading again: the stream says it lost events by sending the whole
    // state afresh, and ends up at the right total.
    let mut text = String::new();
    let want = format!("\"total\":{taps}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the stream caught up")
            .unwrap();
        assert!(n > 0, "stream closed");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains(&want) && text.contains("event: status") {
            break;
        }
    }
    // Taps it was sent one by one: fewer than were tapped — the rest were
    // dropped for it, and the fresh snapshot stood in for them.
    let seen = text.matches("event: tap\n").count();
    println!("after the stall: {seen} of {taps} taps as events, then a fresh snapshot");
    assert!(
        seen < taps as usize,
        "every tap was queued for the stalled client"
    );
    assert!(
        text.contains("event: status"),
        "no fresh snapshot after the stall"
    );
    println!(
        "station RSS {before} KiB before the stall, {during} KiB with a stalled stream after {taps} taps"
    );
    // The log and tallies grow a little with 15,000 taps; a queue of
    // ~30,000 events for the stalled client would add more than this.
    assert!(
        during < before + 16 * 1024,
        "RSS {before} → {during} KiB with a stalled stream"
    );
    assert!(st.terminate().success());
}
