//! kill -9 in the middle of a stream of taps: nothing acknowledged is lost,
//! nothing is logged twice, and `seq` goes on where it stopped.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::{Sse, Station, WAIT, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_tap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &config(&data, ""));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let (enough_tx, mut enough_rx) = tokio::sync::watch::channel(0usize);

    // Acknowledgements by SSE count too.
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    let sse_acked = acked.clone();
    let sse_task = tokio::spawn(async move {
        loop {
            let ev = sse.next_named("tap").await;
            sse_acked
                .lock()
                .unwrap()
                .insert(ev["seq"].as_u64().unwrap());
        }
    });

    let mut writers = Vec::new();
    for w in 0..4u32 {
        let http = st.http.clone();
        let url = st.url("/api/v1/taps");
        let token = st.token.clone();
        let acked = acked.clone();
        let enough = enough_tx.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..100_000u32 {
                let tag = format!("{:08X}", 0x2000_0000 + w * 1_000_000 + i);
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"reader": "all-a", "tag": tag}))
                    .send()
                    .await;
                let Ok(r) = r else { return }; // the station is gone
                if r.status() != 201 {
                    return;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    return;
                };
                let mut a = acked.lock().unwrap();
                a.insert(v["seq"].as_u64().unwrap());
                enough.send_replace(a.len());
            }
        }));
    }
    tokio::time::timeout(WAIT, enough_rx.wait_for(|n| *n >= 400))
        .await
        .expect("400 taps acknowledged in time")
        .unwrap();
    st.kill9();
    for w in writers {
        tokio::time::timeout(WAIT, w).await.unwrap().unwrap();
    }
    sse_task.abort();
    let acked: BTreeSet<u64> = acked.lock().unwrap().clone();

    let st = Station::start_with(&data, &dir.path().join("data.toml"));
    let taps = st.export().await;
    let seqs: Vec<u64> = taps.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a tap was logged twice");
    let n = seqs.len() as u64;
    assert_eq!(unique, (1..=n).collect(), "seq has a gap");
    let missing: Vec<&u64> = acked.difference(&unique).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(n >= acked.len() as u64);
    assert_eq!(
        st.tally("all").await[0],
        n,
        "the tally is rebuilt from the log"
    );

    let (s, v) = st.tap("all-a", "7E6FD7A0").await;
    assert_eq!(s, 201);
    assert_eq!(
        v["seq"].as_u64(),
        Some(n + 1),
        "seq continues with no gap and no reuse"
    );
    eprintln!("acknowledged {}, logged {n}", acked.len());
}
