//! Start-up rebuilds the same state from a snapshot plus the tail of the log
//! as from the whole log.

use pollstation::config::Config;
use pollstation::domain::ActionKind;
use pollstation::domain::TagUid;
use pollstation::station;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
[station]
id = "replay"
data_dir = "{}"
debounce_ms = 0

[[poll]]
id = "one"
question = "?"
rule = "one-per-person"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[poll]]
id = "last"
question = "?"
rule = "last-wins"
answers = [{{ id = "a", label = "A" }}, {{ id = "b", label = "B" }}]

[[reader]]
id = "one-a"
device = "/x/1"
protocol = "text"
poll = "one"
answer = "a"

[[reader]]
id = "one-b"
device = "/x/2"
protocol = "text"
poll = "one"
answer = "b"

[[reader]]
id = "last-a"
device = "/x/3"
protocol = "text"
poll = "last"
answer = "a"

[[reader]]
id = "last-b"
device = "/x/4"
protocol = "text"
poll = "last"
answer = "b"
"#,
        dir.display()
    );
    Config::parse(&text, dir).unwrap()
}

async fn start(
    cfg: &Config,
) -> (
    station::StationHandle,
    tokio::task::JoinHandle<()>,
    CancellationToken,
) {
    let token = CancellationToken::new();
    let started = station::start(cfg, token.clone(), Default::default(), None).unwrap();
    let (h, task) = (started.handle, started.task);
    (h, task, token)
}

#[tokio::test]
async fn snapshot_plus_tail_equals_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let readers = ["one-a", "one-b", "last-a", "last-b"];
    let (h, task, token) = start(&cfg).await;
    for i in 0..300u32 {
        let tag = TagUid::from_bytes(&(0x3000_0000 + i % 37).to_be_bytes()).unwrap();
        h.tap(readers[(i % 4) as usize], tag).await.unwrap();
        if i == 150 {
            h.poll_action("one", ActionKind::Reset).await.unwrap();
        }
    }
    let before = h.snapshot().tallies.clone();
    token.cancel();
    task.await.unwrap(); // clean stop: writes a snapshot

    // From the snapshot.
    let (h, task, token) = start(&cfg).await;
    let startup = h.snapshot().store.startup;
    assert!(
        startup.from_checkpoint && startup.replayed_taps == 0,
        "{startup:?}"
    );
    assert_eq!(h.snapshot().tallies, before);
    // More taps after the snapshot (the tail).
    for i in 0..50u32 {
        let tag = TagUid::from_bytes(&(0x3000_0000 + i % 41).to_be_bytes()).unwrap();
        h.tap(readers[(i % 4) as usize], tag).await.unwrap();
    }
    let after = h.snapshot().tallies.clone();
    let seq_next = h.snapshot().store.taps + 1;
    token.cancel();
    task.await.unwrap();

    // Without any snapshot: the whole log.
    let db = dir.path().join("pollstation.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM snapshots", [])
        .unwrap();
    let (h, task, token) = start(&cfg).await;
    let startup = h.snapshot().store.startup;
    assert!(
        !startup.from_checkpoint && startup.replayed_taps == 350,
        "{startup:?}"
    );
    assert_eq!(h.snapshot().tallies, after);
    let o = h
        .tap("one-a", TagUid::parse("7E6FD7A0").unwrap())
        .await
        .unwrap();
    assert_eq!(o.tap.seq, seq_next);
    token.cancel();
    task.await.unwrap();

    // A snapshot taken under another config is refused: the log is replayed.
    let mut changed = cfg.clone();
    changed.polls[0].rule = pollstation::domain::Rule::Unlimited;
    let (h, task, token) = start(&changed).await;
    let one = h.snapshot().tally("one").unwrap().clone();
    assert!(
        one.total > after[0].total,
        "unlimited counts every tap since the reset"
    );
    token.cancel();
    task.await.unwrap();
}
