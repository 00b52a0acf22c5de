//! `pollstation ctl`: the client of the control socket ([`crate::control`]).
//! Human-readable tables by default, the server's JSON with `--json`.
//!
//! Invariant: nothing the station sends reaches the terminal raw — labels,
//! errors and ids have their control characters escaped ([`clean`]), so a
//! label with an ANSI escape cannot change the operator's terminal.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser;
use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use crate::control::Request;
use crate::domain::ActionKind;

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
            return Err(CtlError::Station(text(e)));
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

/// `text` with control characters shown as `\u{1b}` escapes.
#[must_use]
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Null => "-".into(),
        other => clean(&other.to_string()),
    }
}

/// A text field, empty when absent.
fn text(v: &Value) -> String {
    v.as_str().map(clean).unwrap_or_default()
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
                        text(&r["last_error"]),
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
    let xmpp_state = format!("{} {}", s(&v["xmpp"]["state"]), text(&v["xmpp"]["detail"]));
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
                    .map_or(String::new(), |f| format!("→ {}", clean(f))),
            ]
        })
        .collect();
    out.push_str(&table(
        &["LEVEL", "COMPONENT", "STATE", "WHAT TO DO"],
        &rows,
    ));
    out
}

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The control socket (default: from --config, else /run/pollstation/control.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The station's config file, to find its socket in its data dir.
    #[arg(long, short, global = true, env = "POLLSTATION_CONFIG")]
    config: Option<PathBuf>,
    /// Print the station's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Everything on one screen: polls, readers, network, store, health.
    Status,
    /// Readers with state and counters.
    Readers,
    /// Counts per answer (all polls, or one).
    Tally { poll: Option<String> },
    /// The last taps (with tags); -f keeps following.
    Taps {
        #[arg(long, default_value_t = 20)]
        tail: usize,
        #[arg(short, long)]
        follow: bool,
    },
    /// Open, close, reset or activate a poll.
    Poll {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(ActionKind::NAMES)
            .map(|s| s.parse::<ActionKind>().expect("only possible values get here")))]
        action: ActionKind,
        poll: String,
        /// Reset without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Inject a tap as if READER read TAG (to test a post).
    Tap { reader: String, tag: String },
    /// Change the log filter live, e.g. `debug` or `pollstation::reader=trace,info`.
    LogLevel { level: String },
    /// The whole log, with tags.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
    /// Re-read the config file and apply what can be applied live (as SIGHUP).
    Reload,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

/// A one-line answer for `poll`.
fn poll_line(v: &Value) -> String {
    format!(
        "poll {}: {}{}\n",
        text(&v["id"]),
        if v["open"] == true { "open" } else { "closed" },
        if v["active"] == true { ", active" } else { "" }
    )
}

/// A one-line answer for `tap`.
fn tapped_line(v: &Value) -> String {
    format!(
        "tap {} on {}: {}/{} {}{}\n",
        v["seq"],
        text(&v["reader"]),
        text(&v["poll"]),
        text(&v["answer"]),
        if v["counted"] == true {
            "counted"
        } else {
            "not counted"
        },
        if v["repeat"] == true { " (repeat)" } else { "" }
    )
}

/// What a reload did, a line each.
fn reload_lines(v: &Value) -> String {
    let mut s = String::new();
    for a in v["applied"].as_array().into_iter().flatten() {
        s.push_str(&format!("applied: {}\n", text(a)));
    }
    for a in v["needs_restart"].as_array().into_iter().flatten() {
        s.push_str(&format!("needs a restart: {}\n", text(a)));
    }
    if s.is_empty() {
        s.push_str("no changes\n");
    }
    s
}

/// Run one `ctl` command against the station's socket.
pub fn run(args: CtlArgs) -> Result<(), CtlError> {
    let CtlArgs {
        socket,
        config,
        json,
        command,
    } = args;
    let path = find_socket(socket, config.as_deref());
    let print = |v: &Value, human: &dyn Fn(&Value) -> String| {
        if json {
            println!("{v}");
        } else {
            print!("{}", human(v));
        }
    };
    match command {
        CtlCommand::Status => print(&call(&path, &Request::Status, |_| {})?, &status_text),
        CtlCommand::Readers => print(&call(&path, &Request::Readers, |_| {})?, &readers_table),
        CtlCommand::Tally { poll } => {
            print(
                &call(&path, &Request::Tally { poll }, |_| {})?,
                &tally_table,
            );
        }
        CtlCommand::Taps { tail, follow } => {
            call(&path, &Request::Taps { tail, follow }, |v| {
                if json {
                    println!("{v}");
                } else if let Some(t) = v.get("tap") {
                    println!("{}", tap_line(t));
                } else if let Some(n) = v.get("lagged") {
                    println!("… {n} taps skipped (too fast to follow)");
                }
            })?;
        }
        CtlCommand::Poll { action, poll, yes } => {
            if action == ActionKind::Reset {
                confirm_reset(&poll, yes)?;
            }
            let req = Request::Poll {
                action: action.to_string(),
                poll,
            };
            print(&call(&path, &req, |_| {})?, &poll_line);
        }
        CtlCommand::Tap { reader, tag } => {
            print(
                &call(&path, &Request::Tap { reader, tag }, |_| {})?,
                &tapped_line,
            );
        }
        CtlCommand::LogLevel { level } => {
            let v = call(&path, &Request::LogLevel { level }, |_| {})?;
            print(&v, &|v| format!("log filter now {}\n", v["level"]));
        }
        CtlCommand::Export { format } => export(&path, format)?,
        CtlCommand::Reload => print(&call(&path, &Request::Reload, |_| {})?, &reload_lines),
    }
    Ok(())
}

/// Write the export to stdout: CSV lines, or one JSON array.
fn export(path: &Path, format: ExportFormat) -> Result<(), CtlError> {
    let json = format == ExportFormat::Json;
    let req = Request::Export {
        format: if json { "json" } else { "csv" }.into(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let result = call(path, &req, |v| {
        if let Some(l) = v.get("line").and_then(|l| l.as_str()) {
            let _ = if json {
                writeln!(out, "{}{l}", if first { "[" } else { "," })
            } else {
                writeln!(out, "{l}")
            };
            first = false;
        }
    });
    if json {
        let _ = writeln!(out, "{}]", if first { "[" } else { "" });
    }
    result.map(|_| ())
}
