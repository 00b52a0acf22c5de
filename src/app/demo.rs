//! `pollstation demo`: a built-in config, simulated readers speaking the real
//! protocols over pseudo-terminals, and simulated visitors, so the whole
//! station runs with no hardware.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::sim::SimReader;
use crate::config::{Config, Protocol};

/// The demo's config; `data_dir` and `listen` are filled in by the caller.
pub const DEMO_CONFIG: &str = r#"
[station]
id = "demo"
data_dir = "@DATA_DIR@"
debounce_ms = 2000
active_poll = "talk"

[http]
listen = "@LISTEN@"

[[poll]]
id = "lunch"
question = "What should we have for lunch?"
rule = "one-per-person"
answers = [
  { id = "pizza", label = "Pizza" },
  { id = "sushi", label = "Sushi" },
  { id = "salad", label = "Salad" },
  { id = "soup", label = "Soup of the day" },
]

[[poll]]
id = "talk"
question = "Which talk should get the prize?"
rule = "last-wins"
answers = [
  { id = "rfid", label = "RFID at scale" },
  { id = "rust", label = "Rust on small boxes" },
  { id = "xmpp", label = "XMPP is not dead" },
]

# A keyword poll: drawn as a word cloud, every tap counts.
[[poll]]
id = "likes"
question = "What did you like most today?"
rule = "unlimited"
display = "cloud"
answers = [
  { id = "talks", label = "talks" }, { id = "demos", label = "demos" },
  { id = "coffee", label = "coffee" }, { id = "people", label = "people" },
  { id = "music", label = "music" }, { id = "venue", label = "venue" },
  { id = "food", label = "food" }, { id = "workshops", label = "workshops" },
  { id = "wifi", label = "wifi" }, { id = "stickers", label = "stickers" },
]

[[reader]]
id = "likes-talks"
device = "@DEV@/likes-talks"
protocol = "text"
poll = "likes"
answer = "talks"

[[reader]]
id = "likes-coffee"
device = "@DEV@/likes-coffee"
protocol = "text"
poll = "likes"
answer = "coffee"

[[reader]]
id = "likes-people"
device = "@DEV@/likes-people"
protocol = "text"
poll = "likes"
answer = "people"

[[reader]]
id = "lunch-pizza"
device = "@DEV@/lunch-pizza"
protocol = "pn532"
poll = "lunch"
answer = "pizza"

[[reader]]
id = "lunch-sushi"
device = "@DEV@/lunch-sushi"
protocol = "sm130"
poll = "lunch"
answer = "sushi"

[[reader]]
id = "lunch-salad"
device = "@DEV@/lunch-salad"
protocol = "rdm6300"
poll = "lunch"
answer = "salad"

[[reader]]
id = "lunch-soup"
device = "@DEV@/lunch-soup"
protocol = "id12"
poll = "lunch"
answer = "soup"

[[reader]]
id = "slot-a"
device = "@DEV@/slot-a"
protocol = "text"
slot = "A"

[[reader]]
id = "slot-b"
device = "@DEV@/slot-b"
protocol = "text"
slot = "B"

[[reader]]
id = "slot-c"
device = "@DEV@/slot-c"
protocol = "text"
slot = "C"
"#;

/// The demo config for a data directory and listen address.
pub fn config(data_dir: &Path, listen: &str) -> anyhow::Result<Config> {
    let dev = data_dir.join("dev");
    let text = DEMO_CONFIG
        .replace("@DATA_DIR@", &data_dir.display().to_string())
        .replace("@DEV@", &dev.display().to_string())
        .replace("@LISTEN@", listen);
    Config::parse(&text, data_dir).map_err(|problems| {
        anyhow::anyhow!(
            "the built-in demo config is invalid: {}",
            problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// The demo's visitors: a crowd of 4-byte Mifare tags and 5-byte EM4100
/// cards (the 125 kHz readers only see the latter).
#[must_use]
pub fn visitor_uids(n: u32, em4100: bool) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let b = (0x4000_0000u32 + i * 7919).to_be_bytes();
            if em4100 {
                let mut v = vec![0x1A];
                v.extend_from_slice(&b);
                v
            } else {
                b.to_vec()
            }
        })
        .collect()
}

/// One simulated reader per configured reader, each on a pseudo-terminal
/// linked at the reader's device path.
pub fn simulated_readers(config: &Config) -> std::io::Result<Vec<(SimReader, Protocol)>> {
    config
        .readers
        .iter()
        .map(|r| Ok((SimReader::spawn(r.protocol, Some(&r.device))?, r.protocol)))
        .collect()
}

/// Simulated visitors: now and then someone holds their tag on a reader
/// for about half a second. The taps travel the real path: serial bytes,
/// codec, presence, Station, store, web.
pub async fn visitors(readers: Vec<(SimReader, Protocol)>, shutdown: CancellationToken) {
    let mifare = visitor_uids(40, false);
    let em = visitor_uids(40, true);
    loop {
        let (pause, hold, reader, uid) = {
            let mut rng = rand::rng();
            let (reader, protocol) = &readers[rng.random_range(0..readers.len())];
            let crowd = if matches!(protocol, Protocol::Id12 | Protocol::Rdm6300) {
                &em
            } else {
                &mifare
            };
            (
                Duration::from_millis(rng.random_range(400..2400)),
                Duration::from_millis(rng.random_range(300..900)),
                reader.clone(),
                crowd[rng.random_range(0..crowd.len())].clone(),
            )
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        reader.hold(&uid, hold).await;
    }
}
