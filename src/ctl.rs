//! `pollstation ctl`: the client of the control socket ([`crate::control`]).
//! Human-readable tables by default, the server's JSON with `--json`.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::control::Request;

/// Why a ctl command failed; printed as is.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Connect(String),
    #[error("the station answered: {0}")]
    Station(String),
    #[error("the connection broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

/// Where to find the socket: `--socket`, else the config's data dir, else
/// the packaged service's runtime directory.
#[must_use]
pub fn find_socket(socket: Option<PathBuf>, config: Option<&Path>) -> PathBuf {
    if let Some(s) = socket {
        return s;
    }
    if let Some(c) = config
        && let Ok(cfg) = crate::config::Config::load(c)
    {
        let runtime = Path::new("/run/pollstation/control.sock");
        let data = cfg.station.data_dir.join("control.sock");
        return if data.exists() || !runtime.exists() {
            data
        } else {
            runtime.to_path_buf()
        };
    }
    PathBuf::from("/run/pollstation/control.sock")
}

fn connect(path: &Path) -> Result<UnixStream, CtlError> {
    UnixStream::connect(path).map_err(|e| {
        let p = path.display();
        CtlError::Connect(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "no station is running here: {p} does not exist (is pollstation running? point at it with --socket PATH or --config FILE)"
            ),
            std::io::ErrorKind::ConnectionRefused => {
                format!("the station is not running: nothing listens on {p} (a stale socket)")
            }
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied on {p}: run as the station's user or root (sudo pollstation ctl …)"
            ),
            _ => format!("cannot connect to {p}: {e}"),
        })
    })
}

/// Send `req` and hand every answer line to `each`; returns the final `ok`.
pub fn call(path: &Path, req: &Request, mut each: impl FnMut(&Value)) -> Result<Value, CtlError> {
    let mut stream = connect(path)?;
    let mut line = serde_json::to_vec(req).map_err(|e| CtlError::Station(e.to_string()))?;
    line.push(b'\n');
    // A refusing station answers and closes without reading: read its
    // answer even when the request could not be written.
    let written = stream.write_all(&line);
    for l in BufReader::new(stream).lines() {
        let Ok(l) = l else { break };
        let v: Value = serde_json::from_str(&l)
            .map_err(|e| CtlError::Station(format!("unreadable answer {l:?}: {e}")))?;
        if let Some(e) = v.get("error") {
            return Err(CtlError::Station(e.as_str().unwrap_or("").to_string()));
        }
        if let Some(ok) = v.get("ok") {
            return Ok(ok.clone());
        }
        each(&v);
    }
    written?;
    Err(CtlError::Station(
        "the station closed the connection without an answer".into(),
    ))
}

/// Ask before a reset unless `--yes`.
pub fn confirm_reset(poll: &str, yes: bool) -> Result<(), CtlError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Refused(format!(
            "resetting poll {poll:?} starts its count again from zero; add --yes to do it without asking"
        )));
    }
    eprint!(
        "Reset poll {poll:?}? Its count starts again from zero (the taps stay in the log). [y/N] "
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CtlError::Refused("not reset".into()))
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `ctl readers` as a table.
#[must_use]
pub fn readers_table(readers: &Value) -> String {
    let rows: Vec<Vec<String>> = readers
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let binding = if r["binding"]["slot"].is_string() {
                        format!("slot {}", s(&r["binding"]["slot"]))
                    } else {
                        format!(
                            "{}/{}",
                            s(&r["binding"]["poll"]),
                            s(&r["binding"]["answer"])
                        )
                    };
                    vec![
                        s(&r["id"]),
                        s(&r["status"]),
                        binding,
                        s(&r["protocol"]),
                        s(&r["device"]),
                        s(&r["taps"]),
                        s(&r["frames_ok"]),
                        s(&r["frames_bad"]),
                        r["last_error"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "READER",
            "STATUS",
            "BINDING",
            "PROTOCOL",
            "DEVICE",
            "TAPS",
            "FRAMES",
            "BAD",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// `ctl tally` as a table per poll.
#[must_use]
pub fn tally_table(tallies: &Value) -> String {
    let mut out = String::new();
    for t in tallies.as_array().into_iter().flatten() {
        let total = t["total"].as_u64().unwrap_or(0);
        let votes = if total == 1 { "vote" } else { "votes" };
        out.push_str(&format!("{} — {total} {votes}\n", s(&t["poll"])));
        let rows: Vec<Vec<String>> = t["answers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let n = a["count"].as_u64().unwrap_or(0);
                let pct = if total == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / total as f64
                };
                vec![
                    s(&a["id"]),
                    s(&a["label"]),
                    n.to_string(),
                    format!("{pct:.1}%"),
                ]
            })
            .collect();
        out.push_str(&table(&["ANSWER", "LABEL", "VOTES", "SHARE"], &rows));
        out.push('\n');
    }
    out
}

/// One tap as a line.
#[must_use]
pub fn tap_line(t: &Value) -> String {
    let counted = match t["counted"].as_bool() {
        Some(true) => " counted",
        Some(false) => " not counted",
        None => "",
    };
    let at = t["at"]
        .as_i64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| s(&t["at"]));
    format!(
        "{}:{}  {}  {}  {}  {}/{}{}",
        s(&t["station"]),
        s(&t["seq"]),
        at,
        s(&t["reader"]),
        s(&t["tag"]),
        s(&t["poll"]),
        s(&t["answer"]),
        counted
    )
}

/// `ctl status`: one screen.
#[must_use]
pub fn status_text(v: &Value) -> String {
    let mut out = String::new();
    let up = v["uptime_s"].as_i64().unwrap_or(0);
    out.push_str(&format!(
        "station {}   up {}h{:02}m{:02}s   health {}\n\n",
        s(&v["station"]),
        up / 3600,
        up / 60 % 60,
        up % 60,
        s(&v["health"]["level"])
    ));
    let polls: Vec<Vec<String>> = v["polls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["id"]),
                if p["open"] == true { "open" } else { "closed" }.into(),
                if p["active"] == true { "active" } else { "" }.into(),
                s(&p["rule"]),
                s(&p["total"]),
                s(&p["question"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["POLL", "STATE", "", "RULE", "VOTES", "QUESTION"],
        &polls,
    ));
    out.push('\n');
    out.push_str(&readers_table(&v["readers"]));
    out.push('\n');
    let store = &v["store"];
    let xmpp_state = format!(
        "{} {}",
        s(&v["xmpp"]["state"]),
        v["xmpp"]["detail"].as_str().unwrap_or("")
    );
    out.push_str(&format!(
        "network   {} ({})\nhotplug   {} ({}) {}\nidentity  {}\nxmpp      {} (outbox {})\nstore     {} taps, {:.1} MiB, {}\n\n",
        s(&v["network"]["state"]),
        s(&v["network"]["detail"]),
        s(&v["hotplug"]["state"]),
        s(&v["hotplug"]["detail"]),
        v["hotplug"]["unbound"].as_array().filter(|u| !u.is_empty()).map_or(String::new(), |u| format!("(unbound: {})", u.iter().map(s).collect::<Vec<_>>().join(", "))),
        s(&v["identity"]["state"]),
        xmpp_state,
        s(&v["xmpp"]["outbox"]),
        s(&store["taps"]),
        store["size_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
        if store["writable"] == true { "writable".to_string() } else { format!("NOT WRITABLE: {}", s(&store["error"])) },
    ));
    let rows: Vec<Vec<String>> = v["health"]["components"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["level"]),
                s(&c["component"]),
                s(&c["message"]),
                c["fix"]
                    .as_str()
                    .map_or(String::new(), |f| format!("→ {f}")),
            ]
        })
        .collect();
    out.push_str(&table(
        &["LEVEL", "COMPONENT", "STATE", "WHAT TO DO"],
        &rows,
    ));
    out
}
