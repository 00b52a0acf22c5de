//! The `pollstation` binary: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pollstation=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
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
            init_logging();
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            exit(run(config, false, no_screen))
        }
        Command::Sim {
            protocol,
            link,
            tags,
            pace_ms,
            count,
        } => {
            init_logging();
            exit(sim(protocol, link, &tags, pace_ms, count))
        }
        Command::Demo {
            data_dir,
            listen,
            no_screen,
            windowed,
        } => {
            init_logging();
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
            exit(run(config, true, no_screen))
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

fn run(config: Config, demo_visitors: bool, no_screen: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
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
        let running = service::start(&config, shutdown.clone()).await?;
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
