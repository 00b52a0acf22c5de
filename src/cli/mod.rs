//! The subcommands: `run`, `check-config`, `demo`, `ctl`, `sim`, `herd`. Their
//! arguments ([`Cli`]) are defined here, once (the man page and shell
//! completions come from the same definitions); `main.rs` only parses and
//! calls [`run`].
//!
//! - [`ctl`]: the control socket's client; [`tables`]: what it prints;
//! - [`sim`]: `pollstation sim`, a simulated reader with visitors;
//! - [`docs`]: the man pages and completions, for the package.

pub mod ctl;
pub mod docs;
pub mod sim;
pub mod tables;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{self, Extras, demo};
use crate::config::{Config, Protocol};

/// RFID polling station: serial readers in, durable votes, live tallies out.
#[derive(Parser)]
#[command(name = "pollstation", version, about, long_about = None)]
pub struct Cli {
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
        /// Where the demo keeps its log and admin token (default: a fresh
        /// private directory under the temp dir, printed at start).
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
    Ctl(ctl::CtlArgs),
    /// Play a reader on a pseudo-terminal, with visitors tapping tags; prints
    /// the device path to put in a config.
    Sim(sim::SimArgs),
    /// The herd's certificates.
    #[command(subcommand)]
    Herd(HerdCommand),
    /// Write the man pages and shell completions into OUT (for packaging).
    #[command(hide = true)]
    Docs {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum HerdCommand {
    /// Make a herd CA and one certificate per station (SAN = station id) in
    /// DIR; run again on the same DIR to add stations (its CA is reused).
    Init {
        /// The station ids, e.g. hall-a,hall-b,hall-c.
        #[arg(long, value_delimiter = ',', required = true)]
        stations: Vec<String>,
        /// Where the files go (ca.pem, ca.key, <station>.pem, <station>.key).
        #[arg(long)]
        out: PathBuf,
        /// The herd's name, for the CA's subject.
        #[arg(long, default_value = "pollstation")]
        herd: String,
    },
}

/// Log to stdout; the returned function changes the filter live.
fn init_logging() -> crate::control::SetLogLevel {
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

/// The demo's data directory: the one given, else a fresh private one.
fn demo_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(tempfile::Builder::new()
            .prefix("pollstation-demo-")
            .tempdir()?
            .keep()),
    }
}

/// Run the command `cli` names; the process's exit code.
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
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
            let extras = Extras {
                config_path: Some(config),
                set_log_level: Some(set_log_level),
            };
            exit(app::run::run(&loaded, false, no_screen, extras))
        }
        Command::Ctl(args) => match ctl::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pollstation ctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Herd(HerdCommand::Init {
            stations,
            out,
            herd,
        }) => match crate::herd::init::init(&herd, &stations, &out) {
            Ok(made) => {
                if made.ca_created {
                    println!(
                        "made the herd CA: {0}/ca.pem (give it to every station) and {0}/ca.key (keep it safe)",
                        out.display()
                    );
                }
                for s in made.stations {
                    println!(
                        "made {0}/{s}.pem and {0}/{s}.key (mode 0600) for station {s}",
                        out.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pollstation herd init: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sim(args) => {
            let _ = init_logging();
            exit(sim::run(args))
        }
        Command::Docs { out } => match docs::write(&out) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pollstation docs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo {
            data_dir,
            listen,
            no_screen,
            windowed,
        } => {
            let set_log_level = init_logging();
            let config = demo_dir(data_dir).and_then(|dir| {
                crate::sys::fs::prepare_data_dir(&dir)?;
                demo::config(&dir, &listen)
            });
            let mut config = match config {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pollstation demo: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            if windowed {
                config.screen.fullscreen = false;
            }
            let extras = Extras {
                config_path: None,
                set_log_level: Some(set_log_level),
            };
            exit(app::run::run(&config, true, no_screen, extras))
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

/// The protocols a simulated reader can speak (not `auto`).
fn concrete_protocol(s: &str) -> Result<Protocol, String> {
    match s.parse::<Protocol>() {
        Ok(Protocol::Auto) => Err("simulate a concrete protocol, not auto".into()),
        Ok(p) => Ok(p),
        Err(e) => Err(e.to_string()),
    }
}
