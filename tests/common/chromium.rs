//! Real headless Chromium (Debian's chromium and chromium-driver) over
//! WebDriver, for the tests that look at the web pages. Included with
//! `#[path]` by the test binaries that need it, so the others do not build
//! it.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::common::{WAIT, free_port};
use serde_json::{Value, json};

pub struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chromedriver() -> Driver {
    let port = free_port();
    let mut child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (make test installs chromium-driver)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("started successfully") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(WAIT).expect("chromedriver started");
    Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    }
}

pub async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Resolve once the JS expression `cond` is true in the page, re-checking on
/// every DOM change (a MutationObserver, not a timer); fail after 20 s.
pub async fn wait_until(c: &Client, cond: &str) {
    let script = format!(
        r#"
        const done = arguments[arguments.length - 1];
        const check = () => {{ try {{ return !!({cond}); }} catch (e) {{ return false; }} }};
        if (check()) {{ done(true); return; }}
        const obs = new MutationObserver(() => {{ if (check()) {{ obs.disconnect(); done(true); }} }});
        obs.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
        setTimeout(() => {{ obs.disconnect(); done(check()); }}, 20000);
        "#
    );
    let ok = c.execute_async(&script, vec![]).await.expect("script ran");
    assert_eq!(ok, Value::Bool(true), "page never satisfied: {cond}");
}

/// Until the results page says its event stream is live.
pub async fn wait_live(c: &Client) {
    wait_until(
        c,
        r#"document.getElementById("status").textContent.startsWith("live")"#,
    )
    .await;
}

pub async fn text_of(c: &Client, js: &str) -> String {
    c.execute(&format!("return {js};"), vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Click `css` (the first element it finds).
pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// On the operator page's sign-in form: type `token` (replacing what is
/// there) and submit. The caller waits for what should follow.
pub async fn submit_token(c: &Client, token: &str) {
    let field = c.find(Locator::Id("token")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    click(c, "#login button").await;
}

/// Save a screenshot of the page as `artifacts/{name}`.
pub async fn screenshot(c: &Client, name: &str) {
    std::fs::write(artifact(name), c.screenshot().await.unwrap()).unwrap();
}
