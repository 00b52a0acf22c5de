//! The `pollstation` binary: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pollstation::config::{Config, Protocol};
use pollstation::sim::SimReader;
use pollstation::{demo, service};
use tokio_util::sync::CancellationToken;

/// RFID polling station: serial readers in, durable votes, live tallies out.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the station with a config file.
    Run {
        /// The TOML config file.
        #[arg(long, short, env = "POLLSTATION_CONFIG")]
        config: PathBuf,
        /// Run headless even if a display is present.
        #[arg(long)]
        no_screen: bool,
    },
    /// Validate a config file: prints every problem as FILE:LINE:COL and exits 2,
    /// or a summary and exits 0.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Run with the built-in demo config and simulated visitors.
    Demo {
        /// Where the demo keeps its log and admin token.
        #[arg(long, default_value = "/tmp/pollstation-demo")]
        data_dir: PathBuf,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Run headless even if a display is present.
        #[arg(long)]
        no_screen: bool,
        /// Open the screen in a window instead of full screen.
        #[arg(long)]
        windowed: bool,
    },
    /// Talk to the running station over its control socket.
    Ctl {
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
    },
    /// Play a reader on a pseudo-terminal, with visitors tapping tags; prints
    /// the device path to put in a config.
    Sim {
        /// pn532 | sm130 | id12 | rdm6300 | text
        #[arg(long)]
        protocol: Protocol,
        /// Also make this symlink to the pty (e.g. ./dev/post-1).
        #[arg(long)]
        link: Option<PathBuf>,
        /// Tags (hex UIDs) the visitors carry; default: 20 made-up ones.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Mean milliseconds between two visitors.
        #[arg(long, default_value_t = 1500)]
        pace_ms: u64,
        /// How many taps to play before exiting (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
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
        action: PollAction,
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

#[derive(Clone, Copy, ValueEnum)]
enum PollAction {
    Open,
    Close,
    Reset,
    Activate,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

/// Log to stdout; the returned function changes the filter live.
fn init_logging() -> pollstation::control::SetLogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pollstation=info,warn"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
        .init();
    std::sync::Arc::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("{level:?} is not a log filter: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}

fn ctl(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
    command: CtlCommand,
) -> Result<(), pollstation::ctl::CtlError> {
    use pollstation::control::Request;
    use pollstation::ctl;
    let path = ctl::find_socket(socket, config.as_deref());
    let print = |v: &serde_json::Value, human: &dyn Fn(&serde_json::Value) -> String| {
        if json {
            println!("{v}");
        } else {
            print!("{}", human(v));
        }
    };
    match command {
        CtlCommand::Status => {
            let v = ctl::call(&path, &Request::Status, |_| {})?;
            print(&v, &ctl::status_text);
        }
        CtlCommand::Readers => {
            let v = ctl::call(&path, &Request::Readers, |_| {})?;
            print(&v, &ctl::readers_table);
        }
        CtlCommand::Tally { poll } => {
            let v = ctl::call(&path, &Request::Tally { poll }, |_| {})?;
            print(&v, &ctl::tally_table);
        }
        CtlCommand::Taps { tail, follow } => {
            ctl::call(&path, &Request::Taps { tail, follow }, |v| {
                if json {
                    println!("{v}");
                } else if let Some(t) = v.get("tap") {
                    println!("{}", ctl::tap_line(t));
                } else if let Some(n) = v.get("lagged") {
                    println!("… {n} taps skipped (too fast to follow)");
                }
            })?;
        }
        CtlCommand::Poll { action, poll, yes } => {
            let action = match action {
                PollAction::Open => "open",
                PollAction::Close => "close",
                PollAction::Reset => {
                    ctl::confirm_reset(&poll, yes)?;
                    "reset"
                }
                PollAction::Activate => "activate",
            };
            let v = ctl::call(
                &path,
                &Request::Poll {
                    action: action.into(),
                    poll,
                },
                |_| {},
            )?;
            print(&v, &|v| {
                format!(
                    "poll {}: {}{}\n",
                    v["id"].as_str().unwrap_or(""),
                    if v["open"] == true { "open" } else { "closed" },
                    if v["active"] == true { ", active" } else { "" }
                )
            });
        }
        CtlCommand::Tap { reader, tag } => {
            let v = ctl::call(&path, &Request::Tap { reader, tag }, |_| {})?;
            print(&v, &|v| {
                format!(
                    "tap {} on {}: {}/{} {}{}\n",
                    v["seq"],
                    v["reader"].as_str().unwrap_or(""),
                    v["poll"].as_str().unwrap_or(""),
                    v["answer"].as_str().unwrap_or(""),
                    if v["counted"] == true {
                        "counted"
                    } else {
                        "not counted"
                    },
                    if v["repeat"] == true { " (repeat)" } else { "" }
                )
            });
        }
        CtlCommand::LogLevel { level } => {
            let v = ctl::call(&path, &Request::LogLevel { level }, |_| {})?;
            print(&v, &|v| format!("log filter now {}\n", v["level"]));
        }
        CtlCommand::Export { format } => {
            let format = match format {
                ExportFormat::Csv => "csv",
                ExportFormat::Json => "json",
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut first = true;
            let result = ctl::call(
                &path,
                &Request::Export {
                    format: format.into(),
                },
                |v| {
                    if let Some(l) = v.get("line").and_then(|l| l.as_str()) {
                        use std::io::Write;
                        let _ = if format == "json" {
                            let sep = if first { "[" } else { "," };
                            writeln!(out, "{sep}{l}")
                        } else {
                            writeln!(out, "{l}")
                        };
                        first = false;
                    }
                },
            );
            if format == "json" {
                use std::io::Write;
                let _ = writeln!(out, "{}]", if first { "[" } else { "" });
            }
            result?;
        }
        CtlCommand::Reload => {
            let v = ctl::call(&path, &Request::Reload, |_| {})?;
            print(&v, &|v| {
                let mut s = String::new();
                for a in v["applied"].as_array().into_iter().flatten() {
                    s.push_str(&format!("applied: {}\n", a.as_str().unwrap_or("")));
                }
                for a in v["needs_restart"].as_array().into_iter().flatten() {
                    s.push_str(&format!("needs a restart: {}\n", a.as_str().unwrap_or("")));
                }
                if s.is_empty() {
                    s.push_str("no changes\n");
                }
                s
            });
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!("{}: OK\n{}", file.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, no_screen } => {
            let set_log_level = init_logging();
            let loaded = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let extras = service::Extras {
                config_path: Some(config),
                set_log_level: Some(set_log_level),
            };
            exit(run(loaded, false, no_screen, extras))
        }
        Command::Ctl {
            socket,
            config,
            json,
            command,
        } => match ctl(socket, config, json, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pollstation ctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sim {
            protocol,
            link,
            tags,
            pace_ms,
            count,
        } => {
            let _ = init_logging();
            exit(sim(protocol, link, &tags, pace_ms, count))
        }
        Command::Demo {
            data_dir,
            listen,
            no_screen,
            windowed,
        } => {
            let set_log_level = init_logging();
            let config = match std::fs::create_dir_all(&data_dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| demo::config(&data_dir, &listen))
            {
                Ok(mut c) => {
                    if windowed {
                        c.screen.fullscreen = false;
                    }
                    c
                }
                Err(e) => {
                    eprintln!("pollstation demo: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let extras = service::Extras {
                config_path: None,
                set_log_level: Some(set_log_level),
            };
            exit(run(config, true, no_screen, extras))
        }
    }
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pollstation: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sim(
    protocol: Protocol,
    link: Option<PathBuf>,
    tags: &[String],
    pace_ms: u64,
    count: u64,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use rand::Rng;
    anyhow::ensure!(
        protocol != Protocol::Auto,
        "simulate a concrete protocol, not auto"
    );
    let uids: Vec<Vec<u8>> = if tags.is_empty() {
        demo::visitor_uids(20, matches!(protocol, Protocol::Id12 | Protocol::Rdm6300))
    } else {
        tags.iter()
            .map(|t| {
                let t = t
                    .trim()
                    .trim_start_matches("urn:rfid:")
                    .replace([':', ' ', '-'], "");
                hex::decode(&t).with_context(|| format!("tag {t:?} is not hex"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let reader = SimReader::spawn(protocol, link.as_deref()).context("cannot create a pty")?;
        println!("{}", reader.path.display());
        eprintln!(
            "simulating a {protocol} reader on {}; Ctrl-C to stop",
            reader.path.display()
        );
        let mut played = 0u64;
        loop {
            let (pause, uid) = {
                let mut rng = rand::rng();
                (
                    std::time::Duration::from_millis(
                        rng.random_range(pace_ms / 2..=pace_ms * 3 / 2),
                    ),
                    uids[rng.random_range(0..uids.len())].clone(),
                )
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(pause) => {}
            }
            tracing::info!(tag = %hex::encode_upper(&uid), "visitor taps");
            reader
                .hold(&uid, std::time::Duration::from_millis(500))
                .await;
            played += 1;
            if count > 0 && played >= count {
                // Let the last tag be read before the pty goes away.
                tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                break;
            }
        }
        if let Some(l) = link {
            let _ = std::fs::remove_file(l);
        }
        Ok(())
    })
}

fn run(
    config: Config,
    demo_visitors: bool,
    no_screen: bool,
    extras: service::Extras,
) -> anyhow::Result<()> {
    #[cfg(feature = "gtk")]
    if !no_screen
        && pollstation::screen::display_present()
        && let Some(r) = pollstation::screen::choose_renderer()
    {
        tracing::info!(
            renderer = r,
            "no GPU render node: the screen draws with GTK's {r} renderer (GSK_RENDERER overrides)"
        );
    }
    let rt = pollstation::priority::intake_runtime()?;
    let shutdown = CancellationToken::new();
    // Start everything on tokio before the screen (if any) takes the main thread.
    let running = rt.block_on(async {
        service::cancel_on_signals(shutdown.clone())?;
        // The demo's readers exist before the station opens them.
        let sims = if demo_visitors {
            demo::simulated_readers(&config)?
        } else {
            Vec::new()
        };
        let running = service::start_with(&config, shutdown.clone(), extras).await?;
        if demo_visitors {
            println!(
                "\n  pollstation demo: results on http://{}/  operator page on http://{}/operator  (admin token: {})\n",
                running.http_addr, running.http_addr, running.admin_token
            );
            tokio::spawn(demo::visitors(sims, shutdown.clone()));
        }
        anyhow::Ok(running)
    })?;
    screen(&config, &running, &rt, &shutdown, no_screen);
    rt.block_on(running.wait());
    Ok(())
}

/// Show the GTK screen on this thread until it closes, if wanted and possible;
/// otherwise return at once (the station runs headless until a signal).
#[cfg(feature = "gtk")]
fn screen(
    config: &Config,
    running: &service::Running,
    rt: &tokio::runtime::Runtime,
    shutdown: &CancellationToken,
    no_screen: bool,
) {
    use pollstation::screen;
    let has_display = screen::display_present();
    let wanted = !no_screen && config.screen.enabled.unwrap_or(has_display);
    if !wanted {
        tracing::info!(
            reason = if no_screen {
                "--no-screen"
            } else if has_display {
                "[screen] enabled = false"
            } else {
                "no display"
            },
            "running headless: no screen"
        );
        return;
    }
    if !has_display {
        tracing::warn!(
            "[screen] enabled = true but no display (DISPLAY/WAYLAND_DISPLAY unset); running headless"
        );
        return;
    }
    let options = screen::ScreenOptions {
        fullscreen: config.screen.fullscreen,
    };
    screen::run(&running.station, rt.handle(), options, shutdown);
}

#[cfg(not(feature = "gtk"))]
fn screen(
    _config: &Config,
    _running: &service::Running,
    _rt: &tokio::runtime::Runtime,
    _shutdown: &CancellationToken,
    _no_screen: bool,
) {
    tracing::info!("running headless: built without the gtk feature");
}
