//! `pollstation ctl`: the client of the control socket ([`crate::control`]).
//! Human-readable tables by default, the server's JSON with `--json`.
//! Its tables are in [`super::tables`].

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser;
use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use super::tables::{
    herd_text, poll_line, readers_table, reload_lines, status_text, tally_table, tap_line,
    tapped_line, text,
};
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
    /// The herd: each link (state, round trip, clock, lag) and each origin's feeds.
    Herd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
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
        CtlCommand::Herd => print(&call(&path, &Request::Herd, |_| {})?, &herd_text),
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
