//! The room, in real headless Chromium: the kiosk view fills a projector
//! (row geometry at 1920×1080 and 1280×720), a counted vote pulses its bar
//! and the banner names the answer while a refused one marks nothing, the
//! QR code read back from a screenshot (zbarimg) is the public address,
//! rotation cycles the open polls; the timeline endpoint equals a fold of
//! the export for every rule and across a reset; the results page draws
//! the chart, the word cloud and the download button, in Dutch; the SVG
//! results parse and carry labels and counts. Screenshots go to
//! `artifacts/`.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::collections::HashMap;
use std::process::Command;

use chromium::{
    artifact, browser, chromedriver, screenshot, submit_token, text_of, wait_live, wait_until,
};
use common::{Station, config};
use fantoccini::Client;
use serde_json::Value;

const FOOD: [(&str, &str); 8] = [
    ("a", "Pizza"),
    ("b", "Bravo pasta"),
    ("c", "Curry"),
    ("d", "Dumplings"),
    ("e", "Enchiladas"),
    ("f", "Falafel"),
    ("g", "Gnocchi"),
    ("h", "Hummus"),
];

const WORDS: [&str; 12] = [
    "music", "food", "talks", "people", "venue", "drinks", "coffee", "light", "sound", "chairs",
    "wifi", "maps",
];

/// Three polls: eight dishes (the active one, bars), a mood and a word
/// cloud; a fixed reader per answer used below.
fn room_config(data: &std::path::Path, language: &str, rotate: u64) -> String {
    let dishes: Vec<String> = FOOD
        .iter()
        .map(|(id, label)| format!(r#"{{ id = "{id}", label = "{label}" }}"#))
        .collect();
    let words: Vec<String> = WORDS
        .iter()
        .map(|w| format!(r#"{{ id = "{w}", label = "{w}" }}"#))
        .collect();
    let mut readers = String::new();
    for (id, _) in FOOD {
        readers.push_str(&format!(
            "[[reader]]\nid = \"food-{id}\"\ndevice = \"/nonexistent/food-{id}\"\nprotocol = \"text\"\npoll = \"food\"\nanswer = \"{id}\"\n\n"
        ));
    }
    for w in ["music", "food", "talks"] {
        readers.push_str(&format!(
            "[[reader]]\nid = \"word-{w}\"\ndevice = \"/nonexistent/word-{w}\"\nprotocol = \"text\"\npoll = \"words\"\nanswer = \"{w}\"\n\n"
        ));
    }
    format!(
        r#"
[station]
id = "room"
data_dir = "{data}"
active_poll = "food"
language = "{language}"

[http]
listen = "127.0.0.1:0"
public_url = "http://poll.example.org:8080/"

[screen]
rotate_s = {rotate}

[[poll]]
id = "food"
question = "What shall we eat tonight?"
rule = "one-per-person"
answers = [{dishes}]

[[poll]]
id = "mood"
question = "How was the day?"
rule = "last-wins"
answers = [{{ id = "up", label = "Great" }}, {{ id = "down", label = "Tiring" }}]

[[poll]]
id = "words"
question = "What did you like?"
rule = "unlimited"
display = "cloud"
answers = [{words}]

{readers}"#,
        data = data.display(),
        dishes = dishes.join(", "),
        words = words.join(", "),
    )
}

async fn num(c: &Client, js: &str) -> f64 {
    c.execute(&format!("return {js};"), vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// The QR codes zbarimg finds in a PNG.
fn qr_codes(png: &std::path::Path) -> String {
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .expect("zbarimg (make test installs zbar-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Size the window so that the page's viewport is `w`×`h`.
async fn viewport(c: &Client, w: u32, h: u32) {
    c.set_window_size(w, h).await.unwrap();
    let chrome = num(c, "outerHeight - innerHeight").await.max(0.0) as u32;
    c.set_window_size(w, h + chrome).await.unwrap();
    wait_until(c, &format!("innerWidth === {w} && innerHeight === {h}")).await;
}

/// At this viewport size the kiosk's rows fill the screen: each at least
/// 1/12 of its height, the question at least 4% tall, nothing below the fold.
async fn projector_geometry(c: &Client, w: u32, h: u32) {
    viewport(c, w, h).await;
    wait_until(
        c,
        r#"document.querySelectorAll('section[data-poll="food"] .answer').length === 8 && innerHeight > 0"#,
    )
    .await;
    let vh = num(c, "innerHeight").await;
    let rows: Vec<f64> = c
        .execute(
            r#"return [...document.querySelectorAll('section[data-poll="food"] .answer')].map(r => r.getBoundingClientRect().height);"#,
            vec![],
        )
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for r in &rows {
        assert!(*r >= vh / 12.0, "{w}×{h}: a row is {r} px of {vh}");
    }
    let bottom = num(
        c,
        r#"Math.max(...[...document.querySelectorAll('section[data-poll="food"] .answer')].map(r => r.getBoundingClientRect().bottom))"#,
    )
    .await;
    assert!(
        bottom <= vh,
        "{w}×{h}: the rows end at {bottom}, below {vh}"
    );
    let question = num(
        c,
        r#"parseFloat(getComputedStyle(document.querySelector('section[data-poll="food"] h2')).fontSize)"#,
    )
    .await;
    assert!(
        question >= 0.04 * vh,
        "{w}×{h}: the question is {question} px"
    );
    let label = num(
        c,
        r#"parseFloat(getComputedStyle(document.querySelector('section[data-poll="food"] .label')).fontSize)"#,
    )
    .await;
    assert!(label >= 0.03 * vh, "{w}×{h}: labels are {label} px");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiosk_fills_a_projector_lights_up_the_vote_and_leads_phones_to_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &room_config(&data, "en", 0));
    let (_, room) = st.get("/api/v1/room").await;
    assert_eq!(room["public_url"], "http://poll.example.org:8080/");
    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&format!("{}/?kiosk=1", st.base)).await.unwrap();
    wait_until(&c, "document.body.classList.contains('kiosk')").await;
    projector_geometry(&c, 1280, 720).await;
    projector_geometry(&c, 1920, 1080).await;
    wait_until(&c, r#"document.querySelector('#qr img').complete && document.querySelector('#qr img').naturalWidth > 0"#).await;
    // Wait for the stream, then vote.
    wait_until(
        &c,
        r#"document.getElementById("status").textContent.startsWith("live")"#,
    )
    .await;

    assert_eq!(st.tap("food-b", "0A000001").await.0, 201);
    wait_until(
        &c,
        r#"document.querySelector('section[data-poll="food"] [data-answer="b"]').classList.contains("pulse")"#,
    )
    .await;
    assert_eq!(
        num(&c, "document.querySelectorAll('.pulse').length").await,
        1.0,
        "only the answer voted for pulses"
    );
    assert_eq!(
        text_of(&c, r#"document.getElementById("thanks").textContent"#).await,
        "Thank you! · Bravo pasta"
    );
    // The banner stays below the rows: it hides no count.
    let (banner_top, rows_bottom) = (
        num(&c, r#"document.getElementById("thanks").getBoundingClientRect().top"#).await,
        num(
            &c,
            r#"Math.max(...[...document.querySelectorAll('section[data-poll="food"] .answer')].map(r => r.getBoundingClientRect().bottom))"#,
        )
        .await,
    );
    assert!(
        banner_top >= rows_bottom,
        "banner at {banner_top}, rows end at {rows_bottom}"
    );
    wait_until(
        &c,
        r#"document.querySelector('section[data-poll="food"] [data-answer="b"] .num').textContent === "1 · 100%""#,
    )
    .await;
    screenshot(&c, "room-kiosk-1080p.png").await;
    let shot = artifact("room-kiosk-1080p.png");
    assert_eq!(qr_codes(&shot), "http://poll.example.org:8080/");

    // The same person again, at another answer: refused, nothing lights up.
    wait_until(&c, "document.querySelectorAll('.pulse').length === 0").await;
    assert_eq!(st.tap("food-c", "0A000001").await.0, 201);
    wait_until(
        &c,
        r#"document.getElementById("thanks").textContent === "Already voted""#,
    )
    .await;
    assert_eq!(
        num(&c, "document.querySelectorAll('.pulse').length").await,
        0.0
    );
    viewport(&c, 1280, 720).await;
    screenshot(&c, "room-kiosk-720p.png").await;
    assert_eq!(
        qr_codes(&artifact("room-kiosk-720p.png")),
        "http://poll.example.org:8080/"
    );

    // Rotation: the active poll first, then the other open ones.
    c.goto(&format!("{}/?kiosk=1&rotate=1", st.base))
        .await
        .unwrap();
    wait_until(
        &c,
        r#"document.querySelector('section.poll') && document.querySelector('section.poll').dataset.poll === "food""#,
    )
    .await;
    wait_until(
        &c,
        r#"document.querySelector('section.poll').dataset.poll === "mood""#,
    )
    .await;
    wait_until(
        &c,
        r#"document.querySelector('section.poll').dataset.poll === "words" && document.querySelector('.cloud')"#,
    )
    .await;
    c.close().await.unwrap();
    st.terminate();
}

/// What the timeline must say, folded here from the export: per bucket
/// end, the taps before it under the poll's rule, those at or before the
/// reset forgotten once the reset was taken.
fn fold(
    taps: &[Value],
    poll: &str,
    rule: &str,
    answers: &[&str],
    end: i64,
    reset: Option<i64>,
) -> Vec<u64> {
    let mut mine: Vec<&Value> = taps
        .iter()
        .filter(|t| t["poll"] == poll)
        .filter(|t| t["at"].as_i64().unwrap() < end)
        .filter(|t| reset.is_none_or(|r| t["at"].as_i64().unwrap() > r))
        .collect();
    mine.sort_by_key(|t| {
        (
            t["at"].as_i64().unwrap(),
            t["station"].as_str().unwrap().to_string(),
            t["seq"].as_u64().unwrap(),
        )
    });
    let mut counted: Vec<&Value> = Vec::new();
    let mut by_tag: HashMap<&str, &Value> = HashMap::new();
    for t in mine {
        let tag = t["tag"].as_str().unwrap();
        match rule {
            "unlimited" => counted.push(t),
            "one-per-person" => {
                by_tag.entry(tag).or_insert(t);
            }
            _ => {
                by_tag.insert(tag, t);
            }
        }
    }
    counted.extend(by_tag.values());
    answers
        .iter()
        .map(|a| counted.iter().filter(|t| t["answer"] == *a).count() as u64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_is_a_fold_of_the_log_for_every_rule_and_across_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &config(&data, ""));
    let readers = [
        "first-a", "first-b", "last-a", "last-b", "all-a", "first-b", "last-a",
    ];
    let tap_round = |n: usize, base: u32| {
        let st = &st;
        async move {
            for i in 0..n {
                let tag = format!("{:08X}", base + (i % 5) as u32);
                let status = st.tap(readers[i % readers.len()], &tag).await.0;
                assert!(status == 201 || status == 200, "tap {i}: {status}");
            }
        }
    };
    tap_round(60, 0x2200_0000).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for poll in ["first", "last", "all"] {
        let (s, body) = st
            .admin_post(&format!("/api/v1/polls/{poll}/reset"), Value::Null)
            .await;
        assert_eq!(s, 200, "{body}");
    }
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tap_round(40, 0x2200_0000).await;
    let taps = st.export().await;

    let mut compared = 0;
    for (poll, rule) in [
        ("first", "one-per-person"),
        ("last", "last-wins"),
        ("all", "unlimited"),
    ] {
        let (s, t) = st
            .get(&format!("/api/v1/polls/{poll}/timeline?bucket=0.02"))
            .await;
        assert_eq!(s, 200, "{t}");
        assert_eq!(t["bucket_ms"], 20);
        assert_eq!(t["answers"], serde_json::json!(["a", "b"]));
        let buckets = t["buckets"].as_array().unwrap();
        assert!(buckets.len() >= 3, "{poll}: {} buckets", buckets.len());
        for b in buckets {
            let end = b["end"].as_i64().unwrap();
            if end > before && end <= after {
                continue; // the reset was taken somewhere in here
            }
            let reset = (end > after).then_some(before);
            // Every tap acknowledged before the reset was asked for lies below it.
            let want = fold(&taps, poll, rule, &["a", "b"], end, reset);
            let got: Vec<u64> = b["counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(got, want, "{poll} ({rule}), bucket ending {end}");
            compared += 1;
        }
        // The last bucket is the live tally.
        let last: Vec<u64> = buckets.last().unwrap()["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(last, st.tally(poll).await, "{poll}");
    }
    assert!(compared >= 9, "only {compared} buckets compared");

    // Bad queries are refused with a reason; an unknown poll is a 404.
    for (q, want) in [
        ("/api/v1/polls/all/timeline?bucket=0", 400),
        ("/api/v1/polls/all/timeline?bucket=abc", 400),
        ("/api/v1/polls/all/timeline?bucket=-5", 400),
        ("/api/v1/polls/all/timeline?bucket=NaN", 400),
        ("/api/v1/polls/all/timeline?when=now", 400),
        ("/api/v1/polls/nope/timeline", 404),
        ("/api/v1/polls/nope/tally.svg", 404),
    ] {
        let (s, body) = st.get_text(q).await;
        assert_eq!(s, want, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{q}: {body}"
        );
    }
    st.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_page_draws_the_chart_the_cloud_and_an_image_in_dutch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &room_config(&data, "nl", 0));
    for (reader, tag) in [
        ("food-a", "0B000001"),
        ("food-a", "0B000002"),
        ("food-a", "0B000003"),
        ("food-d", "0B000004"),
        ("word-talks", "0B000001"),
        ("word-talks", "0B000002"),
        ("word-talks", "0B000003"),
        ("word-music", "0B000004"),
        ("word-food", "0B000005"),
    ] {
        assert_eq!(st.tap(reader, tag).await.0, 201);
    }

    // The results as an image: parses, with the question, labels and counts.
    let (s, svg) = st.get_text("/api/v1/polls/food/tally.svg").await;
    assert_eq!(s, 200);
    let doc = roxmltree::Document::parse(&svg).expect("tally.svg is XML");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for want in [
        "What shall we eat tonight?",
        "Pizza",
        "3 · 75%",
        "Dumplings",
        "1 · 25%",
        "Hummus",
        "0 · 0%",
    ] {
        assert!(texts.contains(&want), "{want} not in {texts:?}");
    }
    assert!(
        texts.iter().any(|t| t.starts_with("4 stemmen · ")),
        "{texts:?}"
    );

    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&st.base).await.unwrap();
    wait_until(
        &c,
        r#"document.getElementById("status").textContent.startsWith("live")"#,
    )
    .await;
    assert_eq!(text_of(&c, "document.documentElement.lang").await, "nl");
    wait_until(
        &c,
        r#"document.querySelector('section[data-poll="food"] .meta').textContent.startsWith("4 stemmen")"#,
    )
    .await;
    // One line per answer in each chart.
    wait_until(
        &c,
        r#"document.querySelectorAll('section[data-poll="food"] .chart svg polyline.series').length === 8
           && document.querySelectorAll('section[data-poll="mood"] .chart svg polyline.series').length === 2"#,
    )
    .await;
    assert_eq!(
        text_of(
            &c,
            r#"document.querySelector('section[data-poll="food"] figcaption').textContent"#
        )
        .await,
        "Stemmen in de tijd"
    );
    // The cloud: the word with the most votes is the largest.
    wait_until(
        &c,
        r#"document.querySelector('.word[data-answer="talks"]').dataset.count === "3""#,
    )
    .await;
    let largest = text_of(
        &c,
        r#"[...document.querySelectorAll('section[data-poll="words"] .word')]
            .sort((a, b) => parseFloat(getComputedStyle(b).fontSize) - parseFloat(getComputedStyle(a).fontSize))[0].dataset.answer"#,
    )
    .await;
    assert_eq!(largest, "talks");
    let (big, small) = (
        num(&c, r#"parseFloat(getComputedStyle(document.querySelector('.word[data-answer="talks"]')).fontSize)"#).await,
        num(&c, r#"parseFloat(getComputedStyle(document.querySelector('.word[data-answer="wifi"]')).fontSize)"#).await,
    );
    assert!(big >= 3.5 * small, "talks {big} px, wifi {small} px");
    // The download button links the image.
    let (href, label) = (
        text_of(&c, r#"document.querySelector('section[data-poll="food"] a.download').getAttribute("href")"#).await,
        text_of(&c, r#"document.querySelector('section[data-poll="food"] a.download').textContent"#).await,
    );
    assert_eq!(href, "/api/v1/polls/food/tally.svg");
    assert_eq!(label, "Afbeelding downloaden");
    c.set_window_size(1280, 1600).await.unwrap();
    screenshot(&c, "room-results-nl.png").await;
    viewport(&c, 390, 844).await;
    screenshot(&c, "room-results-phone.png").await;

    // The kiosk speaks Dutch too.
    c.goto(&format!("{}/?kiosk=1", st.base)).await.unwrap();
    wait_live(&c).await;
    viewport(&c, 1920, 1080).await;
    assert_eq!(st.tap("food-b", "0B000009").await.0, 201);
    wait_until(
        &c,
        r#"document.getElementById("thanks").textContent === "Dank je wel! · Bravo pasta""#,
    )
    .await;
    assert_eq!(st.tap("food-c", "0B000009").await.0, 201);
    wait_until(
        &c,
        r#"document.getElementById("thanks").textContent === "Al gestemd""#,
    )
    .await;
    screenshot(&c, "room-kiosk-nl.png").await;

    // The operator page: the active poll's chart, an image per poll.
    c.goto(&format!("{}/operator", st.base)).await.unwrap();
    submit_token(&c, &st.token).await;
    wait_until(
        &c,
        r#"document.getElementById("chart-poll").value === "food"
           && document.querySelectorAll('#chart svg polyline.series').length === 8
           && document.querySelectorAll('#polls a.download[href$="/tally.svg"]').length === 3"#,
    )
    .await;
    screenshot(&c, "room-operator.png").await;
    c.close().await.unwrap();
    st.terminate();
}
