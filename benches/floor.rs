//! The floor under the intake's cost (`cargo bench --bench floor`, issue
//! "Efficiency"): what the least a process can do for a durable tap costs on
//! this machine, driven exactly like `--bench intake` (64 text readers on
//! real ptys at a fixed total rate, the same load generator in this process,
//! 2 s of warm-up, then the measured window, median of 3 by CPU).
//!
//! In place of the station, a child process (this bench again, with
//! `FLOOR_CHILD` set) on one thread: `epoll_wait` on the 64 ptys, read what
//! is ready, write it into a file (over and over, like SQLite's
//! write-ahead log) and `fdatasync` it (the commit), then write
//! a line per tap to a TCP socket (the event stream). No SQLite, no parsing,
//! no allocation per tap, no HTTP. Each rate is run with the `fdatasync`
//! and without, so the durable commit's own share shows.
//!
//! `BENCH_RATES=1000,5000` picks the rates (default 1,000, 5,000, 10,000);
//! `BENCH_QUICK=1` runs each once, shorter; `BENCH_COMMIT_BYTES=16384`
//! writes at least that much per commit (SQLite writes a few 4 KiB pages
//! to its log per commit; it made no difference to the floor).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use common::pty::PtyRig;
use common::{cpu_of, ms};

fn main() {
    if let Ok(mode) = std::env::var("FLOOR_CHILD") {
        floor_station(mode == "sync");
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 3 };
    let seconds = if quick { 3.0 } else { 10.0 };
    let rates: Vec<u32> = std::env::var("BENCH_RATES").map_or_else(
        |_| vec![1000, 5000, 10_000],
        |l| l.split(',').filter_map(|r| r.trim().parse().ok()).collect(),
    );
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("| taps/s | fdatasync per batch | p50 | p99 | floor CPU (cores) |");
    println!("|---|---|---|---|---|");
    for rate in rates {
        for sync in [true, false] {
            let mut all: Vec<(f64, f64, f64)> = (0..runs)
                .map(|_| {
                    rt.block_on(async {
                        let mut rig = PtyRig::floor(64, sync, &exe).await;
                        rig.play(rate, 2.0).await;
                        let pid = rig.pid();
                        let (cpu0, t0) = (cpu_of(pid), Instant::now());
                        let lat = rig.play(rate, seconds).await;
                        let cores = (cpu_of(pid) - cpu0) as f64 / t0.elapsed().as_millis() as f64;
                        rig.stop();
                        (cores, ms(&lat, 0.5), ms(&lat, 0.99))
                    })
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (lo, hi) = (all[0].0, all[all.len() - 1].0);
            let (cores, p50, p99) = all[all.len() / 2];
            println!(
                "| {rate} | {} | {p50:.2} ms | {p99:.2} ms | {cores:.3} ({lo:.3}–{hi:.3}) |",
                if sync { "yes" } else { "no" }
            );
        }
    }
}

/// The size of the floor's log file.
const LOG_BYTES: u64 = 4 << 20;

/// The child: `ADDR LOG PTY…`. Runs until killed.
fn floor_station(sync: bool) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ptys: Vec<std::fs::File> = args[2..]
        .iter()
        .map(|p| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap();
            raw_nonblocking(&f);
            f
        })
        .collect();
    // SAFETY: plain epoll system calls on descriptors this process owns;
    // `ev` and `events` outlive the calls that take them.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1");
    for (i, f) in ptys.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        let r = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, f.as_raw_fd(), &raw mut ev) };
        assert_eq!(r, 0, "epoll_ctl");
    }
    // Like SQLite's write-ahead log once it is in use: written over from its
    // start again when full, so a sync does not change the file's size.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&args[1])
        .unwrap();
    log.write_all_at(&vec![0; LOG_BYTES as usize], 0).unwrap();
    log.sync_all().unwrap();
    let mut at = 0;
    let commit_bytes: usize = std::env::var("BENCH_COMMIT_BYTES").map_or(0, |b| b.parse().unwrap());
    let mut stream = std::net::TcpStream::connect(&args[0]).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; ptys.len()];
    let (mut buf, mut record, mut out) = ([0u8; 4096], Vec::new(), Vec::new());
    loop {
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        record.clear();
        out.clear();
        for ev in &events[..n as usize] {
            let reader = ev.u64 as usize;
            loop {
                let got = unsafe {
                    libc::read(ptys[reader].as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if got <= 0 {
                    break;
                }
                let bytes = &buf[..got as usize];
                record.extend_from_slice(bytes);
                for _ in bytes.iter().filter(|b| **b == b'\n') {
                    writeln!(out, "{reader}").unwrap();
                }
            }
        }
        if record.is_empty() {
            continue;
        }
        record.resize(record.len().max(commit_bytes), 0);
        if at + record.len() as u64 > LOG_BYTES {
            at = 0;
        }
        log.write_all_at(&record, at).unwrap();
        at += record.len() as u64;
        if sync {
            log.sync_data().unwrap();
        }
        stream.write_all(&out).unwrap();
    }
}

/// The pty as a serial port is opened: raw, non-blocking reads.
fn raw_nonblocking(f: &std::fs::File) {
    let fd = f.as_raw_fd();
    // SAFETY: termios and fcntl calls on a descriptor this process owns;
    // `t` is fully written by tcgetattr before it is read.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd, &raw mut t), 0, "tcgetattr");
        libc::cfmakeraw(&raw mut t);
        assert_eq!(libc::tcsetattr(fd, libc::TCSANOW, &raw const t), 0);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}
