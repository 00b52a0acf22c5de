//! A slow disk (an SD card whose fsync takes most of a second): the Station
//! commits on the intake's own thread, so while a commit waits for the disk
//! the readers' tasks wait too. Nothing may take that for a fault: a polled
//! reader (PN532, asked every 100 ms, 250 ms for an answer) stays
//! connected, every tap held on it is counted once, and the station keeps
//! answering HTTP. The disk is made slow for the station alone with an
//! `LD_PRELOAD` shim that sleeps in `fsync`/`fdatasync` before the real one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Sse, Station, WAIT};
use pollstation::app::sim::SimReader;
use pollstation::config::Protocol;

/// How long each fsync of the station takes: longer than a polled reader's
/// command and probe timeouts (250 and 400 ms).
const FSYNC_MS: u32 = 600;

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
static void slow(void) {
    const char *ms = getenv("SLOW_FSYNC_MS");
    if (ms) usleep((useconds_t)atoi(ms) * 1000);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}
"#;

fn build_shim(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("slow_fsync.c");
    let lib = dir.join("slow_fsync.so");
    std::fs::write(&src, SHIM).unwrap();
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) to build the slow-fsync shim")
        .success();
    assert!(ok, "cannot build the slow-fsync shim");
    lib
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disk_holds_up_taps_but_no_reader_is_taken_for_faulty() {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    let dev = dir.path().join("pn");
    let sim = SimReader::spawn(Protocol::Pn532, Some(&dev)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(
        &cfg,
        format!(
            "[station]\nid = \"slow\"\ndata_dir = \"{}\"\ndebounce_ms = 0\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [network]\nwatch = false\n[hotplug]\nenabled = false\n\n\
             [[poll]]\nid = \"p\"\nquestion = \"?\"\nrule = \"unlimited\"\nanswers = [{{ id = \"a\", label = \"A\" }}]\n\n\
             [[reader]]\nid = \"pn\"\ndevice = \"{}\"\nprotocol = \"pn532\"\npoll = \"p\"\nanswer = \"a\"\n",
            data.display(),
            dev.display()
        ),
    )
    .unwrap();
    let ms = FSYNC_MS.to_string();
    let st = Station::start_env(
        &data,
        &cfg,
        &[
            ("LD_PRELOAD", shim.to_str().unwrap()),
            ("SLOW_FSYNC_MS", &ms),
        ],
    );
    st.station_until("the reader connected", |s| {
        s["readers"][0]["status"] == "connected"
    })
    .await;
    let mut sse = Sse::connect(&format!("{}/api/v1/events", st.base)).await;

    // Five people, each holding a tag for a second, one after the other:
    // each tap's commit blocks the intake for 600 ms or more.
    let started = std::time::Instant::now();
    let mut seqs = Vec::new();
    for n in 1..=5u8 {
        sim.hold(&[0x40, 0x41, 0x42, n], Duration::from_secs(1))
            .await;
        let t = sse.until("tap", |t| t["reader"] == "pn").await;
        assert_eq!(t["counted"], true, "{t}");
        seqs.push(t["seq"].as_u64().unwrap());
    }
    println!(
        "5 taps held on a polled reader with {FSYNC_MS} ms fsyncs: all durable after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(seqs, [1, 2, 3, 4, 5], "each tap once, in order");

    // The slow commits were real (the station measured them), and the
    // reader never left `connected` meanwhile.
    let (code, text) = st.get_text("/metrics").await;
    assert_eq!(code, 200);
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
    };
    let within = value("pollstation_store_commit_seconds_bucket{le=\"0.4096\"}");
    let commits = value("pollstation_store_commit_seconds_count");
    assert!(
        commits - within >= 5.0,
        "{commits} commits, {within} of them under 0.4 s: the shim did not slow the disk"
    );
    let s = st.get("/api/v1/station").await.1;
    assert_eq!(s["readers"][0]["status"], "connected", "{s}");
    let log = st.output();
    assert!(
        !log.contains("reader disconnected"),
        "the reader was taken for faulty while the disk was slow:\n{log}"
    );
    // A new HTTP connection is accepted (on the intake's thread) meanwhile.
    let health = tokio::time::timeout(WAIT, st.get("/healthz"))
        .await
        .unwrap();
    assert_eq!(health.0, 200, "{}", health.1);
    drop(sse);
    assert!(st.terminate().success());
}
