//! A read-only data directory, or a disk that fills up while the station
//! runs: a clear error, nothing false is acknowledged, and the station writes
//! again once the problem is fixed.
//!
//! Needs root (to mount a tmpfs), which `make test` and CI have.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Station, config};

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root: run the suite as root (make test does)"
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn read_only_data_dir_is_a_clear_error_at_start() {
    // (A mounted file system cannot be made read-only while the station holds
    // its log open for writing, so the read-only case is a start-up case; the
    // runtime case is the full disk below.)
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("mnt"), "16m");
    let data = fs.0.join("data");
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let st = Station::start_with(&data, &cfg);
    assert_eq!(st.tap("all-a", "01000001").await.0, 201);
    assert!(st.terminate().success());

    fs.remount("ro");
    let out = Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the data directory {} is not writable",
            data.display()
        )) && err.contains("Read-only file system"),
        "{err}"
    );
    // Writable again: the tap from before is there, and seq continues.
    fs.remount("rw");
    let st = Station::start_with(&data, &cfg);
    let (s, v) = st.tap("all-a", "01000002").await;
    assert_eq!((s, v["seq"].as_u64()), (201, Some(2)), "{v}");
}

#[tokio::test]
async fn full_disk_refuses_taps_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("mnt"), "4m");
    let data = fs.0.join("data");
    let st = Station::start(&data, &config(&data, ""));
    assert_eq!(st.tap("all-a", "01000001").await.0, 201);

    // Fill the disk to the last byte.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=512", "oflag=append", "conv=notrunc"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let mut refused = 0;
    for n in 2..200u32 {
        let (s, v) = st.tap("all-a", &format!("{:08X}", 0x0100_0000 + n)).await;
        if s == 503 {
            assert!(v["detail"].as_str().unwrap().contains("full"), "{v}");
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a full disk must refuse a tap");
    let (s, h) = st.get("/healthz").await;
    assert_eq!(s, 503, "{h}");
    let before = st.export().await.len();

    std::fs::remove_file(&filler).unwrap();
    let (s, v) = st.tap("all-a", "0A000001").await;
    assert_eq!(s, 201, "{v}");
    let taps = st.export().await;
    assert_eq!(taps.len(), before + 1);
    let seqs: Vec<u64> = taps.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=taps.len() as u64).collect::<Vec<_>>());
}
