//! `pollstation demo`: a built-in config and simulated visitors, so the whole
//! station runs with no hardware.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::poll::TagUid;
use crate::station::StationHandle;

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

/// The demo's visitors: a crowd of tags that wander to a reader every now
/// and then, at a human pace.
#[must_use]
pub fn visitor_tags(n: u32) -> Vec<TagUid> {
    (0..n)
        .map(|i| {
            let b = (0x4000_0000u32 + i * 7919).to_be_bytes();
            TagUid::from_bytes(&b).expect("4-byte UIDs not starting with 08 are valid")
        })
        .collect()
}

/// Simulated visitors tapping through the Station's input channel.
pub async fn visitors(station: StationHandle, readers: Vec<String>, shutdown: CancellationToken) {
    let tags = visitor_tags(40);
    loop {
        let (pause, tag, reader) = {
            let mut rng = rand::rng();
            (
                Duration::from_millis(rng.random_range(400..2400)),
                tags[rng.random_range(0..tags.len())].clone(),
                readers[rng.random_range(0..readers.len())].clone(),
            )
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        match station.tap(&reader, tag).await {
            Ok(o) => {
                tracing::debug!(reader = %reader, seq = o.tap.seq, counted = o.counted, "demo tap")
            }
            Err(e) => tracing::debug!(reader = %reader, error = %e, "demo tap refused"),
        }
    }
}
