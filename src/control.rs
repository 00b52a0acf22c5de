//! The live admin console's server side: a Unix socket the running station
//! listens on (`$RUNTIME_DIRECTORY/control.sock`, else
//! `<data_dir>/control.sock`), mode 0600, answering only its own user and
//! root. `pollstation ctl` ([`crate::cli::ctl`]) is the client.
//!
//! Protocol: the client sends one JSON [`Request`] on a line; the server
//! answers with JSON lines: `{"ok": …}` or `{"error": …}`, or a stream of
//! `{"tap": …}` (follow) / `{"line": …}` (export) ending with `{"end": true}`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::domain::backoff::Backoff;
use crate::domain::tap::Counted;
use crate::domain::{ActionKind, TagUid, TapRecord};
use crate::station::{Event, ExportFormat, StationHandle, health};
use crate::sys::clock::now_ms;

/// The longest request line read (a request is a few dozen bytes).
const MAX_REQUEST: usize = 64 * 1024;
/// Waits after a failed accept.
const ACCEPT_FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
const ACCEPT_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a client has to send its request.
const REQUEST_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Changes the tracing filter of the running process.
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
/// Re-reads the config file and applies it; the answer says what happened.
pub type Reload =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// One request from `pollstation ctl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Readers,
    Tally { poll: Option<String> },
    Taps { tail: usize, follow: bool },
    Poll { action: String, poll: String },
    Tap { reader: String, tag: String },
    LogLevel { level: String },
    Export { format: String },
    Reload,
    Herd,
}

/// What the server needs.
#[derive(Clone)]
pub struct Control {
    pub station: StationHandle,
    pub set_log_level: Option<SetLogLevel>,
    pub reload: Option<Reload>,
}

/// Where the socket goes.
#[must_use]
pub fn socket_path(data_dir: &Path) -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by ':'; ours is the first.
        Some(dirs) => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            PathBuf::from(first).join("control.sock")
        }
        None => data_dir.join("control.sock"),
    }
}

/// Bind the socket (refusing if another station answers on it) and serve
/// until `shutdown`.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another station is already running with control socket {}",
                path.display()
            );
        }
        std::fs::remove_file(path)?; // stale, from a crash
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    ctl: Control,
    shutdown: CancellationToken,
) {
    let owner = std::fs::metadata(&path).map(|m| m.uid()).ok();
    // Out of file descriptors and the like: wait before trying again, and
    // say so once per run of failures (an accept loop that retries at once
    // spins on the intake's thread, ahead of everything, and floods the journal).
    let mut backoff = Backoff::new(ACCEPT_FIRST_BACKOFF, ACCEPT_MAX_BACKOFF);
    let mut failures = 0u64;
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    if failures > 0 {
                        tracing::info!(failures, "control socket: accepting again");
                        failures = 0;
                    }
                    backoff.reset();
                    s
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, "control socket: accept failed; retrying with back-off");
                    }
                    failures += 1;
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff.fail()) => {}
                    }
                    continue;
                }
            },
        };
        let ctl = ctl.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let uid = stream.peer_cred().map(|c| c.uid()).ok();
            let allowed = uid.is_some_and(|u| u == 0 || Some(u) == owner);
            if let Err(e) = handle(stream, allowed, uid, &ctl, &shutdown).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    w.write_all(&line).await
}

async fn handle(
    stream: UnixStream,
    allowed: bool,
    uid: Option<u32>,
    ctl: &Control,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    if !allowed {
        tracing::warn!(
            uid,
            "control socket: refused a connection from another user"
        );
        return send(
            &mut wr,
            &json!({"error": "permission denied: only the station's own user and root may use the control socket"}),
        )
        .await;
    }
    let mut line = String::new();
    let mut limited = BufReader::new(rd).take(MAX_REQUEST as u64 + 1);
    match tokio::time::timeout(REQUEST_WITHIN, limited.read_line(&mut line)).await {
        Err(_) => {
            return send(&mut wr, &json!({"error": "no request within 10 s"})).await;
        }
        Ok(r) => {
            r?;
        }
    }
    if line.len() > MAX_REQUEST {
        return send(
            &mut wr,
            &json!({"error": format!("request longer than {} KiB", MAX_REQUEST / 1024)}),
        )
        .await;
    }
    if line.is_empty() {
        return Ok(());
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&mut wr, &json!({"error": format!("bad request: {e}")})).await,
    };
    tracing::debug!(?req, "control request");
    let st = &ctl.station;
    let answer: Result<Value, String> = match req {
        Request::Status => Ok(status(st)),
        Request::Readers => Ok(json!(st.snapshot().readers)),
        Request::Herd => match &st.snapshot().herd {
            Some(h) => Ok(json!(h)),
            None => Err("this station is not in a herd (no [herd] in its config)".into()),
        },
        Request::Tally { poll } => {
            let snap = st.snapshot();
            match poll {
                None => Ok(json!(snap.tallies)),
                Some(p) => snap
                    .tally(&p)
                    .map(|t| json!([t]))
                    .ok_or_else(|| format!("no poll {p:?} is configured")),
            }
        }
        Request::Taps { tail, follow } => {
            // Subscribe first so nothing falls between the tail and the follow.
            let mut events = st.subscribe();
            let taps = st.tail(tail.min(10_000)).await.map_err(|e| e.to_string());
            match taps {
                Err(e) => Err(e),
                Ok(taps) => {
                    let mut last = taps.last().map(|t| t.seq);
                    for t in &taps {
                        let record = TapRecord {
                            tap: t,
                            counted: Counted::Unknown(()),
                            repeat: None,
                        };
                        send(&mut wr, &json!({ "tap": record })).await?;
                    }
                    if follow {
                        loop {
                            let ev = tokio::select! {
                                () = shutdown.cancelled() => break,
                                e = events.recv() => e,
                            };
                            match ev {
                                Ok(Event::Tap(t)) => {
                                    if last.is_some_and(|l| {
                                        t.seq <= l && &*t.station == st.snapshot().station.as_str()
                                    }) {
                                        continue;
                                    }
                                    last = None;
                                    let tap = crate::domain::Tap {
                                        station: t.station.clone(),
                                        seq: t.seq,
                                        reader: t.reader.clone(),
                                        tag: t.tag.clone(),
                                        at: t.at,
                                        poll: t.poll.clone(),
                                        answer: t.answer.clone(),
                                    };
                                    let record = TapRecord {
                                        tap: &tap,
                                        counted: Counted::Known(t.counted),
                                        repeat: None,
                                    };
                                    send(&mut wr, &json!({ "tap": record })).await?;
                                }
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                    send(&mut wr, &json!({"lagged": n})).await?;
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                            }
                        }
                    }
                    Ok(json!({"end": true}))
                }
            }
        }
        Request::Poll { action, poll } => match action.parse::<ActionKind>() {
            Err(e) => Err(e.to_string()),
            Ok(kind) => st
                .poll_action(&poll, kind)
                .await
                .map(|p| json!(p))
                .map_err(|e| e.to_string()),
        },
        Request::Tap { reader, tag } => match TagUid::parse(&tag) {
            Err(e) => Err(e.to_string()),
            Ok(tag) => st
                .tap(&reader, tag)
                .await
                .map(|o| {
                    json!({
                        "seq": o.tap.seq, "reader": &*o.tap.reader, "poll": &*o.tap.poll,
                        "answer": &*o.tap.answer, "counted": o.counted, "repeat": o.repeat,
                    })
                })
                .map_err(|e| e.to_string()),
        },
        Request::LogLevel { level } => match &ctl.set_log_level {
            None => Err("this station cannot change its log level".into()),
            Some(set) => set(&level).map(|()| {
                tracing::info!(filter = %level, "log level changed from the control socket");
                json!({"level": level})
            }),
        },
        Request::Export { format } => {
            let format = match format.as_str() {
                "csv" => ExportFormat::Csv,
                "json" => ExportFormat::Json,
                other => {
                    return send(
                        &mut wr,
                        &json!({"error": format!("format {other:?} is not csv or json")}),
                    )
                    .await;
                }
            };
            let mut lines = st.export(None, format);
            let mut failed = None;
            while let Some(line) = lines.next().await {
                match line {
                    Ok(line) => send(&mut wr, &json!({ "line": line })).await?,
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            match failed {
                Some(e) => Err(format!("export stopped: {e}")),
                None => Ok(json!({"end": true})),
            }
        }
        Request::Reload => match &ctl.reload {
            None => Err("this station was not started from a config file".into()),
            Some(reload) => reload().await,
        },
    };
    match answer {
        Ok(v) => send(&mut wr, &json!({"ok": v})).await,
        Err(e) => send(&mut wr, &json!({"error": e})).await,
    }
}

/// Everything on one screen.
fn status(st: &StationHandle) -> Value {
    let snap = st.snapshot();
    let polls: Vec<Value> = snap
        .polls
        .iter()
        .map(|p| {
            json!({
                "id": p.def.id, "question": p.def.question, "rule": p.def.rule,
                "open": p.def.open, "active": p.active,
                "total": snap.tally(&p.def.id).map_or(0, |t| t.total),
            })
        })
        .collect();
    let uptime_s = (now_ms() - snap.started_at).max(0) / 1000;
    let (path, size) = st.log_file();
    json!({
        "station": snap.station,
        "started_at": snap.started_at,
        "uptime_s": uptime_s,
        "polls": polls,
        "readers": snap.readers,
        "network": snap.network,
        "hotplug": snap.hotplug,
        "identity": snap.identity,
        "herd": snap.herd,
        "xmpp": snap.xmpp,
        "remote": snap.remote,
        "store": {
            "writable": snap.store.writable,
            "error": snap.store.error,
            "taps": snap.store.taps,
            "size_bytes": size,
            "path": path,
        },
        "health": health::overview(&snap),
    })
}
