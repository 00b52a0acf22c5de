//! Accessibility (issue "Fit the ecosystem"): axe-core (vendored in
//! `tests/vendor/axe-core`) run in real headless Chromium on the results
//! page, the kiosk view and the signed-in operator page: no serious or
//! critical violation. Every violation found is printed with its impact.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use chromium::{browser, chromedriver, submit_token, wait_live, wait_until};
use common::{Station, config};
use fantoccini::Client;
use serde_json::Value;

const AXE: &str = include_str!("vendor/axe-core/axe.min.js");

/// Run axe on the page; the violations as (impact, id, help, how many nodes).
async fn axe(c: &Client) -> Vec<(String, String, String, usize)> {
    c.execute(AXE, vec![]).await.expect("axe-core loads");
    let result = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               axe.run(document, { resultTypes: ["violations"] })
                  .then(r => done(r.violations.map(v => [v.impact, v.id, v.help, v.nodes.length,
                        v.nodes.slice(0, 3).map(n => n.target.join(" ") + ": " + n.failureSummary)])))
                  .catch(e => done(String(e)));"#,
            vec![],
        )
        .await
        .expect("axe ran");
    let Value::Array(vs) = result else {
        panic!("axe failed: {result}");
    };
    vs.iter()
        .map(|v| {
            println!("  {v}");
            (
                v[0].as_str().unwrap_or("").to_string(),
                v[1].as_str().unwrap_or("").to_string(),
                v[2].as_str().unwrap_or("").to_string(),
                usize::try_from(v[3].as_u64().unwrap_or(0)).unwrap_or(0),
            )
        })
        .collect()
}

fn serious(found: &[(String, String, String, usize)]) -> Vec<String> {
    found
        .iter()
        .filter(|(impact, ..)| impact == "serious" || impact == "critical")
        .map(|(impact, id, help, n)| format!("{impact} {id} ({n}): {help}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_have_no_serious_accessibility_violation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &config(&data, ""));
    assert_eq!(st.tap("all-a", "04A1B2C3").await.0, 201);
    let driver = chromedriver();
    let c = browser(&driver).await;
    let mut bad = Vec::new();

    // The check itself sees a violation when there is one.
    c.goto(&st.base).await.unwrap();
    c.execute(
        r#"const i = document.createElement("img"); i.src = "/nothing.png"; document.body.append(i);"#,
        vec![],
    )
    .await
    .unwrap();
    let planted = axe(&c).await;
    assert!(
        planted
            .iter()
            .any(|(impact, id, ..)| id == "image-alt" && impact == "critical"),
        "axe did not see an image without alt text: {planted:?}"
    );

    for (name, path) in [("results page", "/"), ("kiosk view", "/?kiosk=1")] {
        c.goto(&format!("{}{path}", st.base)).await.unwrap();
        wait_live(&c).await;
        println!("axe on the {name}:");
        bad.extend(
            serious(&axe(&c).await)
                .into_iter()
                .map(|v| format!("{name}: {v}")),
        );
    }

    c.goto(&format!("{}/operator", st.base)).await.unwrap();
    wait_until(&c, r#"!document.getElementById("login").hidden"#).await;
    println!("axe on the operator sign-in:");
    bad.extend(
        serious(&axe(&c).await)
            .into_iter()
            .map(|v| format!("sign-in: {v}")),
    );
    submit_token(&c, &st.token).await;
    wait_until(&c, r#"!document.getElementById("console").hidden"#).await;
    wait_until(
        &c,
        r##"document.querySelectorAll("#readers tbody tr").length === 6"##,
    )
    .await;
    println!("axe on the operator page:");
    bad.extend(
        serious(&axe(&c).await)
            .into_iter()
            .map(|v| format!("operator page: {v}")),
    );

    assert!(
        bad.is_empty(),
        "serious or critical violations:\n{}",
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_are_announced_politely_and_the_operator_page_works_by_keyboard() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Station::start(&data, &config(&data, ""));
    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&st.base).await.unwrap();
    wait_live(&c).await;
    let live = c
        .execute(
            r#"const a = document.getElementById("announce");
               window.announced = 0;
               new MutationObserver(() => window.announced++).observe(a, { childList: true, characterData: true, subtree: true });
               return [a.getAttribute("aria-live"), document.getElementById("polls").getAttribute("aria-live")];"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        live,
        serde_json::json!(["polite", null]),
        "one polite live region, not the whole page"
    );
    // Six votes in a burst: heard as one or two announcements, not six.
    for n in 0..6 {
        assert_eq!(st.tap("all-a", &format!("04A1B2{n:02X}")).await.0, 201);
    }
    wait_until(
        &c,
        r#"document.getElementById("announce").textContent.includes("Every tap counts? Alpha 6, Bravo 0; 6 votes.")"#,
    )
    .await;
    let announced = c.execute("return window.announced;", vec![]).await.unwrap();
    assert!(
        announced.as_u64().is_some_and(|n| (1..=2).contains(&n)),
        "announcements for 6 votes: {announced}"
    );

    // The operator page by keyboard alone: the token typed and Enter, then
    // a poll action with Enter on its focused button.
    c.goto(&format!("{}/operator", st.base)).await.unwrap();
    wait_until(&c, r#"!document.getElementById("login").hidden"#).await;
    let field = c.find(fantoccini::Locator::Id("token")).await.unwrap();
    field
        .send_keys(&format!("{}\u{E007}", st.token))
        .await
        .unwrap();
    wait_until(&c, r#"!document.getElementById("console").hidden"#).await;
    let close = r#"document.querySelector('tr[data-poll="all"] button[data-action="close"]')"#;
    wait_until(&c, &format!("{close} && !{close}.disabled")).await;
    // Tab from where the sign-in left the focus to the button.
    let mut tabs = 0;
    loop {
        let here = c
            .execute(
                &format!("return document.activeElement === {close};"),
                vec![],
            )
            .await
            .unwrap();
        if here == Value::Bool(true) {
            break;
        }
        tabs += 1;
        assert!(tabs <= 80, "the close button is not reachable with Tab");
        c.active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
    }
    println!("the close button of poll \"all\" is {tabs} Tab presses after sign-in");
    c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    wait_until(&c, &format!("{close}.disabled")).await;
    let (_, polls) = st.get("/api/v1/polls").await;
    let all = polls
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "all")
        .unwrap()
        .clone();
    assert_eq!(all["open"], false, "{all}");
}
