//! The herd over direct links: real station processes on loopback, every
//! link through a proxy that can cut, black-hole or slow it. Stations
//! converge to the same log (every tap exactly once, no gap in any
//! origin's numbering) and the same tallies.

mod common;

use std::time::Duration;

use common::herd::{self, Mode, Proxy};

fn tag(n: u32) -> String {
    format!("urn:rfid:{:08X}", 0x2000_0000 + n)
}

#[tokio::test]
async fn two_stations_share_their_taps_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let certs = herd::certificates(dir.path(), &["hall-a", "hall-b"]);
    let (pa, pb) = (herd::port(), herd::port());
    let to_b = Proxy::start(pb).await;
    let a = herd::start(dir.path(), "hall-a", &certs, pa, &[to_b.address()], "");
    let b = herd::start(dir.path(), "hall-b", &certs, pb, &[], "");
    herd::linked(&a.station, 1).await;
    herd::linked(&b.station, 1).await;
    for n in 0..20 {
        assert_eq!(a.station.tap("all-a", &tag(n)).await.0, 201);
        assert_eq!(b.station.tap("all-a", &tag(100 + n)).await.0, 201);
    }
    let (keys, tallies) = herd::converged(&[&a.station, &b.station], Duration::from_secs(1)).await;
    assert_eq!(keys.len(), 40);
    assert_eq!(tallies["all"]["total"], 40);
    assert_eq!(tallies["all"]["by_station"]["hall-a"], 20);
    let (_, h) = a.station.get("/api/v1/herd").await;
    assert_eq!(h["herd"]["peers"][0]["station"], "hall-b", "{h}");
    assert_eq!(h["herd"]["peers"][0]["state"], "up", "{h}");
    to_b.set(Mode::Pass);
}
