//! The web pages in real headless Chromium (Debian's chromium and
//! chromium-driver), driven over WebDriver: live updates, reconnect after a
//! station restart, the kiosk view, and the operator page flow. Screenshots
//! go to `artifacts/`.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use chromium::{artifact, browser, chromedriver, submit_token, text_of, wait_live, wait_until};
use common::{Station, config};
use fantoccini::Locator;

fn num(poll: &str, answer: &str) -> String {
    format!(r#"document.querySelector('[data-poll="{poll}"] [data-answer="{answer}"] .num')"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_page_follows_taps_reconnects_and_the_operator_resets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &config(&data, ""));
    let port = st.base.rsplit(':').next().unwrap().to_string();
    let driver = chromedriver();
    let c = browser(&driver).await;

    c.goto(&st.base).await.unwrap();
    wait_live(&c).await;
    wait_until(
        &c,
        &format!(r#"{}.textContent === "0 · 0%""#, num("all", "a")),
    )
    .await;

    for n in 1..=3 {
        assert_eq!(
            st.tap("all-a", &format!("{:08X}", 0x1100_0000 + n)).await.0,
            201
        );
    }
    assert_eq!(st.tap("first-b", "11000009").await.0, 201);
    wait_until(
        &c,
        &format!(r#"{}.textContent === "3 · 100%""#, num("all", "a")),
    )
    .await;
    wait_until(
        &c,
        &format!(r#"{}.textContent === "1 · 100%""#, num("first", "b")),
    )
    .await;
    let width = text_of(
        &c,
        r#"document.querySelector('[data-poll="all"] [data-answer="a"] .fill').style.width"#,
    )
    .await;
    assert_eq!(width, "100%");
    // The page never shows a tag.
    let html = text_of(&c, "document.documentElement.outerHTML").await;
    assert!(!html.contains("urn:rfid") && !html.contains("11000001"));
    std::fs::write(artifact("results.png"), c.screenshot().await.unwrap()).unwrap();

    // Kiosk: only the active poll, large.
    c.goto(&format!("{}/?kiosk=1", st.base)).await.unwrap();
    wait_until(&c, r#"document.querySelectorAll("section.poll").length === 1 && document.body.classList.contains("kiosk")"#).await;
    wait_until(
        &c,
        &format!(r#"{}.textContent === "1 · 100%""#, num("first", "b")),
    )
    .await;
    std::fs::write(artifact("kiosk.png"), c.screenshot().await.unwrap()).unwrap();

    // Restart the station under the page: it says so, reconnects, resyncs.
    c.goto(&st.base).await.unwrap();
    wait_until(
        &c,
        &format!(r#"{}.textContent === "3 · 100%""#, num("all", "a")),
    )
    .await;
    let cfg = st.config_path.clone();
    assert!(st.terminate().success());
    wait_until(
        &c,
        r#"document.getElementById("status").textContent.startsWith("reconnecting")"#,
    )
    .await;
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    let st = Station::start_with(&data, &cfg);
    assert_eq!(st.tap("all-a", "11000004").await.0, 201);
    wait_until(
        &c,
        &format!(r#"{}.textContent === "4 · 100%""#, num("all", "a")),
    )
    .await;
    wait_live(&c).await;
    let results = c.window().await.unwrap();

    // The operator page, in a second window: sign in, see readers and tags,
    // reset a poll; the results page follows.
    let op = c.new_window(false).await.unwrap();
    c.switch_to_window(op.handle).await.unwrap();
    c.goto(&format!("{}/operator", st.base)).await.unwrap();
    wait_until(&c, r#"!document.getElementById("login").hidden"#).await;
    submit_token(&c, "wrong-token-wrong").await;
    wait_until(
        &c,
        r#"document.getElementById("login-error").textContent.includes("refused")"#,
    )
    .await;
    submit_token(&c, &st.token).await;
    wait_until(&c, r#"!document.getElementById("console").hidden"#).await;
    wait_until(
        &c,
        r##"document.querySelectorAll("#readers tbody tr").length === 6"##,
    )
    .await;
    wait_until(
        &c,
        r##"document.querySelector("#taps tbody td.tag").textContent === "urn:rfid:11000004""##,
    )
    .await;
    // Health: a reader that is not there is an ERROR, with what to do.
    wait_until(
        &c,
        r##"[...document.querySelectorAll("#health tbody tr")].some(tr =>
            tr.cells[1].textContent === "reader:all-a" && tr.cells[0].textContent === "ERROR"
            && tr.cells[3].textContent.includes("plug the reader in"))"##,
    )
    .await;
    wait_until(
        &c,
        r#"document.getElementById("health-level").textContent === "ERROR""#,
    )
    .await;
    std::fs::write(artifact("operator.png"), c.screenshot().await.unwrap()).unwrap();
    c.find(Locator::Css(
        r#"tr[data-poll="all"] button[data-action="reset"]"#,
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let alert = c.get_alert_text().await.unwrap();
    assert!(alert.contains("Reset poll \"all\""), "{alert}");
    c.accept_alert().await.unwrap();
    c.switch_to_window(results).await.unwrap();
    wait_until(
        &c,
        &format!(r#"{}.textContent === "0 · 0%""#, num("all", "a")),
    )
    .await;
    assert_eq!(st.tally("all").await, vec![0, 0]);
    c.close().await.unwrap();
}
