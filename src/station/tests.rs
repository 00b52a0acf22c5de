//! The Station's state machine, in process: a real store in a temp dir,
//! the handle's commands, tokio's paused clock where time matters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::domain::intake::Refusal;
use crate::domain::{ActionKind, TagUid};

fn config(dir: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        r#"
[station]
id = "t"
data_dir = "{}"
debounce_ms = 2000

[[poll]]
id = "first"
question = "First?"
rule = "one-per-person"
answers = [{{ id = "a", label = "Alpha" }}, {{ id = "b", label = "Bravo" }}]

[[poll]]
id = "all"
question = "All?"
rule = "unlimited"
answers = [{{ id = "a", label = "Alpha" }}, {{ id = "b", label = "Bravo" }}]

[[reader]]
id = "first-a"
device = "/nonexistent/first-a"
protocol = "text"
poll = "first"
answer = "a"

[[reader]]
id = "first-b"
device = "/nonexistent/first-b"
protocol = "text"
poll = "first"
answer = "b"

[[reader]]
id = "all-a"
device = "/nonexistent/all-a"
protocol = "text"
poll = "all"
answer = "a"

[[reader]]
id = "slot-b"
device = "/nonexistent/slot-b"
protocol = "text"
slot = "B"
{extra}
"#,
        dir.join("data").display()
    );
    Config::parse(&text, dir).expect("the test config is valid")
}

fn tag(n: u8) -> TagUid {
    TagUid::from_bytes(&[0x10, 0, 0, n]).unwrap()
}

/// Records the votes the Station hands its outbox encoder.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(u64, String, u64)>>);

impl OutboxEncoder for Recorder {
    fn encode(&self, votes: &[Vote<'_>]) -> Vec<OutboxItem> {
        let mut seen = self.0.lock().unwrap();
        votes
            .iter()
            .map(|v| {
                seen.push((v.tap.seq, v.tap.answer.to_string(), v.tally.total));
                OutboxItem {
                    id: 0,
                    seq: v.tap.seq,
                    node: format!("vote/{}", v.tap.poll),
                    item_id: format!("{}-{}", v.tap.station, v.tap.seq),
                    payload: "<x xmlns='urn:test'/>".into(),
                    at: v.tap.at,
                }
            })
            .collect()
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    started: Started,
    stop: CancellationToken,
}

impl Rig {
    fn start(extra: &str, encoder: Option<Arc<dyn OutboxEncoder>>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), extra);
        let stop = CancellationToken::new();
        let started = start(&cfg, stop.clone(), Default::default(), encoder).unwrap();
        Rig {
            _dir: dir,
            started,
            stop,
        }
    }

    fn st(&self) -> &StationHandle {
        &self.started.handle
    }

    async fn finish(self) {
        self.stop.cancel();
        self.started.task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_repeat_inside_the_debounce_window_is_the_earlier_tap() {
    let rig = Rig::start("", None);
    let st = rig.st();
    let first = st.tap("all-a", tag(1)).await.unwrap();
    assert!(!first.repeat && first.counted);
    tokio::time::advance(Duration::from_millis(1999)).await;
    let again = st.tap("all-a", tag(1)).await.unwrap();
    assert!(again.repeat, "inside the window");
    assert_eq!(again.tap, first.tap, "the earlier tap, nothing new logged");
    // Another reader is another tap, at once.
    assert!(!st.tap("first-a", tag(1)).await.unwrap().repeat);
    // Past the window: a new tap (no real seconds waited).
    tokio::time::advance(Duration::from_millis(1)).await;
    let later = st.tap("all-a", tag(1)).await.unwrap();
    assert!(!later.repeat);
    assert_eq!(later.tap.seq, first.tap.seq + 2);
    assert_eq!(st.snapshot().tally("all").unwrap().total, 2);
    // A reset starts a new round: the same tag right after is a new tap.
    st.poll_action("all", ActionKind::Reset).await.unwrap();
    let after_reset = st.tap("all-a", tag(1)).await.unwrap();
    assert!(!after_reset.repeat && after_reset.counted);
    assert_eq!(st.snapshot().tally("all").unwrap().total, 1);
    rig.finish().await;
}

#[tokio::test]
async fn slot_readers_follow_the_active_poll_and_closed_polls_refuse() {
    let rig = Rig::start("", None);
    let st = rig.st();
    // The first open poll is active at start.
    let o = st.tap("slot-b", tag(1)).await.unwrap();
    assert_eq!((&*o.tap.poll, &*o.tap.answer), ("first", "b"));
    st.poll_action("all", ActionKind::Activate).await.unwrap();
    let o = st.tap("slot-b", tag(2)).await.unwrap();
    assert_eq!((&*o.tap.poll, &*o.tap.answer), ("all", "b"));
    let closed = st.poll_action("all", ActionKind::Close).await.unwrap();
    assert!(!closed.def.open && closed.active);
    assert_eq!(
        st.tap("slot-b", tag(3)).await,
        Err(TapError::Refused(Refusal::PollClosed("all".into())))
    );
    assert_eq!(
        st.tap("nope", tag(3)).await,
        Err(TapError::UnknownReader("nope".into()))
    );
    assert_eq!(
        st.poll_action("nope", ActionKind::Open).await,
        Err(ActionError::UnknownPoll("nope".into()))
    );
    // Refused taps are not in the log.
    assert_eq!(st.tail(10).await.unwrap().len(), 2);
    rig.finish().await;
}

#[tokio::test]
async fn one_per_person_and_its_announcements() {
    let rig = Rig::start("", None);
    let st = rig.st();
    let mut events = st.subscribe();
    let a = st.tap("first-a", tag(1)).await.unwrap();
    let b = st.tap("first-b", tag(1)).await.unwrap();
    assert!(a.counted && !b.counted, "the first tap of a person counts");
    assert_eq!(st.snapshot().tally("first").unwrap().total, 1);
    // Each durable tap is announced once, with its tally after it.
    let mut taps = Vec::new();
    while taps.len() < 2 {
        if let Event::Tap(t) = events.recv().await.unwrap() {
            taps.push((t.seq, t.counted));
        }
    }
    assert_eq!(taps, [(a.tap.seq, true), (b.tap.seq, false)]);
    // A resumed stream gets exactly what came after the seq it names.
    let (_, replay, through) = st.subscribe_after(Some(a.tap.seq));
    assert_eq!(through, b.tap.seq);
    assert_eq!(
        replay.unwrap().iter().map(|t| t.seq).collect::<Vec<_>>(),
        [b.tap.seq]
    );
    rig.finish().await;
}

#[tokio::test]
async fn a_restart_continues_the_log_and_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    for round in 1..=2u64 {
        let stop = CancellationToken::new();
        let started = start(&cfg, stop.clone(), Default::default(), None).unwrap();
        let o = started.handle.tap("all-a", tag(round as u8)).await.unwrap();
        assert_eq!(o.tap.seq, round, "seq continues after a restart");
        assert_eq!(started.handle.snapshot().tally("all").unwrap().total, round);
        stop.cancel();
        started.task.await.unwrap();
    }
}

#[tokio::test]
async fn counted_votes_reach_the_outbox_encoder_with_their_tally() {
    let recorder = Arc::new(Recorder::default());
    let rig = Rig::start(
        "\n[xmpp]\njid = \"t@localhost\"\nserver = \"127.0.0.1:1\"\ntls = \"none\"\npubsub = \"pubsub.localhost\"\n",
        Some(recorder.clone()),
    );
    let st = rig.st();
    st.tap("first-a", tag(1)).await.unwrap();
    st.tap("first-b", tag(1)).await.unwrap(); // not counted: no item
    st.tap("first-b", tag(2)).await.unwrap();
    let mut watch = st.watch();
    let snap = watch
        .wait_for(|s| s.xmpp.outbox == 2)
        .await
        .unwrap()
        .clone();
    assert_eq!(snap.xmpp.outbox, 2, "two counted votes queued");
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen, [(1, "a".into(), 1), (3, "b".into(), 2)]);
    rig.finish().await;
}

#[tokio::test]
async fn identities_merge_two_tags_of_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.csv");
    std::fs::write(&people, "10000001,Anna,p1\n").unwrap();
    let mut rig = Rig::start(
        &format!("\n[identity]\npeople = \"{}\"\n", people.display()),
        None,
    );
    let mut lookups = std::mem::replace(
        &mut rig.started.lookups,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    let st = rig.st();
    st.tap("first-a", tag(1)).await.unwrap();
    st.tap("first-b", tag(2)).await.unwrap();
    assert_eq!(st.snapshot().tally("first").unwrap().total, 2);
    // Each tapped tag is asked about once.
    assert_eq!(lookups.recv().await, Some(tag(1)));
    assert_eq!(lookups.recv().await, Some(tag(2)));
    // Both turn out to be Anna: one vote, the first.
    let person = crate::domain::Person {
        id: "local:p1".into(),
        name: "Anna".into(),
        first: "Anna".into(),
    };
    let tx = st.sender();
    for n in [1, 2] {
        tx.send(Command::Identity {
            tag: tag(n),
            person: Some(person.clone()),
            source: "test".into(),
        })
        .await
        .unwrap();
    }
    let mut watch = st.watch();
    let snap = watch
        .wait_for(|s| s.identity.known == 2)
        .await
        .unwrap()
        .clone();
    let first = snap.tally("first").unwrap();
    assert_eq!(
        first.answers.iter().map(|a| a.count).collect::<Vec<_>>(),
        [1, 0]
    );
    rig.finish().await;
}

#[tokio::test]
async fn a_reload_applies_what_it_can_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let stop = CancellationToken::new();
    let mut started = start(&cfg, stop.clone(), Default::default(), None).unwrap();
    let st = started.handle.clone();
    let mut new = cfg.clone();
    new.polls[1].answers[0].label = "Aye".into();
    new.polls[0].rule = crate::domain::Rule::Unlimited;
    new.readers.retain(|r| r.id != "first-b");
    let mut added = new.readers[0].clone();
    added.id = "extra".into();
    added.device = "/nonexistent/extra".into();
    new.readers.push(added.clone());
    let report = st.reload(new).await.unwrap();
    assert!(
        report
            .applied
            .contains(&"poll all: question and labels updated".to_string()),
        "{report:?}"
    );
    assert!(
        report
            .applied
            .contains(&"reader first-b removed".to_string()),
        "{report:?}"
    );
    assert!(
        report.applied.contains(&"reader extra added".to_string()),
        "{report:?}"
    );
    assert_eq!(
        report.needs_restart,
        ["poll first: rule or answer ids changed: restart to apply"]
    );
    assert_eq!(
        started.reader_ctl.recv().await,
        Some(ReaderCtl::Stop("first-b".into()))
    );
    assert_eq!(
        started.reader_ctl.recv().await,
        Some(ReaderCtl::Start(added))
    );
    let snap = st.snapshot();
    assert_eq!(snap.tally("all").unwrap().answers[0].label, "Aye");
    assert!(snap.readers.iter().any(|r| &*r.id == "extra"));
    assert!(!snap.readers.iter().any(|r| &*r.id == "first-b"));
    stop.cancel();
    started.task.await.unwrap();
}
