//! A TCP proxy for a herd link that can cut it, black-hole it (stop
//! carrying bytes, as a dead network does), delay or throttle it, and
//! counts the bytes it carries. Used by the herd tests and benches.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a proxy does with its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Connections are closed and new ones refused.
    Cut,
    /// Bytes are held, not carried (connections stay open).
    Blackhole,
    /// Bytes are carried, each chunk after this delay.
    Delay(Duration),
    /// Bytes are carried at about this many a second.
    Throttle(u32),
}

/// A TCP proxy to one station's herd port.
pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    /// Bytes carried towards the target and back.
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, rx) = watch::channel(Mode::Pass);
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = bytes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *rx.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                // As the stations do: no Nagle delay on a small frame.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, rx.clone(), counted.clone()));
                tokio::spawn(pipe(sr, cw, rx.clone(), counted.clone()));
            }
        });
        Proxy { port, mode, bytes }
    }

    pub fn set(&self, m: Mode) {
        self.mode.send_replace(m);
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Held while black-holed; closed when cut.
        let m = *mode.borrow_and_update();
        match m {
            Mode::Cut => return,
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Pass | Mode::Delay(_) | Mode::Throttle(_) => {}
        }
        let chunk = if let Mode::Throttle(rate) = m {
            (rate as usize / 20).clamp(64, buf.len())
        } else {
            buf.len()
        };
        let n = tokio::select! {
            r = from.read(&mut buf[..chunk]) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            r = mode.changed() => {
                if r.is_err() { return; }
                continue;
            }
        };
        // The simulated network is slow: this is the link's delay, not a
        // test waiting for something.
        match m {
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Throttle(rate) => {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / f64::from(rate.max(1))))
                    .await;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
