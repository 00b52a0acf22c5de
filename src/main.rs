//! The `pollstation` binary: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pollstation::config::Config;
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
        Command::Run { config } => {
            init_logging();
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            exit(run(config, false))
        }
        Command::Demo { data_dir, listen } => {
            init_logging();
            let config = match std::fs::create_dir_all(&data_dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| demo::config(&data_dir, &listen))
            {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pollstation demo: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            exit(run(config, true))
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

fn run(config: Config, demo_visitors: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        service::cancel_on_signals(shutdown.clone())?;
        let running = service::start(&config, shutdown.clone()).await?;
        if demo_visitors {
            println!(
                "\n  pollstation demo: results on http://{}/  (admin token: {})\n",
                running.http_addr, running.admin_token
            );
            let readers = config.readers.iter().map(|r| r.id.clone()).collect();
            tokio::spawn(demo::visitors(
                running.station.clone(),
                readers,
                shutdown.clone(),
            ));
        }
        running.wait().await;
        Ok(())
    })
}
