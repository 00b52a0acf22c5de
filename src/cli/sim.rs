//! `pollstation sim`: a simulated reader on a pseudo-terminal, with
//! visitors tapping tags at random; prints the device path to put in a
//! config.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;

use crate::app::demo;
use crate::app::sim::SimReader;
use crate::config::Protocol;

#[derive(clap::Args)]
pub struct SimArgs {
    /// pn532 | sm130 | id12 | rdm6300 | text
    #[arg(long, value_parser = super::concrete_protocol)]
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
}

/// Play the reader until Ctrl-C (or `--count` taps).
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let SimArgs {
        protocol,
        link,
        tags,
        pace_ms,
        count,
    } = args;
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
                    Duration::from_millis(rng.random_range(pace_ms / 2..=pace_ms * 3 / 2)),
                    uids[rng.random_range(0..uids.len())].clone(),
                )
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(pause) => {}
            }
            tracing::info!(tag = %hex::encode_upper(&uid), "visitor taps");
            reader.hold(&uid, Duration::from_millis(500)).await;
            played += 1;
            if count > 0 && played >= count {
                // The visitor holds the last tag for its half second
                // before the pty goes away.
                tokio::time::sleep(Duration::from_millis(600)).await;
                break;
            }
        }
        if let Some(l) = link {
            let _ = std::fs::remove_file(l);
        }
        Ok(())
    })
}
