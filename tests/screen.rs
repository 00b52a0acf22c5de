//! The GTK screen in a real window under Xvfb: the real binary with the
//! screen, taps through the API, a screenshot (`artifacts/screen-*.png`)
//! read back with OCR (tesseract) and compared with what the API reports.
#![cfg(feature = "gtk")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{BIN, WAIT};

struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An X server on a free display (Xvfb picks it and tells us: -displayfd),
/// its screen `geometry` ("1920x1080x24").
fn xvfb(geometry: &str) -> Xvfb {
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            geometry,
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb (make test installs xvfb)");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            s.push(b[0] as char);
        }
        let _ = tx.send(s);
    });
    let n = rx.recv_timeout(WAIT).expect("Xvfb reports its display");
    Xvfb {
        child,
        display: format!(":{}", n.trim()),
    }
}

/// The station with its screen, and its log lines as they come.
struct ScreenStation {
    child: Child,
    stderr: PathBuf,
    seen: Vec<String>,
    lines: mpsc::Receiver<String>,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Drop for ScreenStation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScreenStation {
    fn start(x: &Xvfb, data: &Path, config: &str) -> ScreenStation {
        std::fs::create_dir_all(data).unwrap();
        let cfg = data.join("station.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new("dbus-run-session")
            .args(["--", BIN, "run", "--config"])
            .arg(&cfg)
            .env("DISPLAY", &x.display)
            .env("GTK_A11Y", "none")
            // Cairo instead of GL on llvmpipe: the same pixels for OCR, far less CPU.
            .env("GSK_RENDERER", "cairo")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "pollstation=debug,warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut st = ScreenStation {
            child,
            stderr: data.join("stderr.log"),
            seen: Vec::new(),
            lines,
            base: String::new(),
            token: String::new(),
            http: reqwest::Client::new(),
        };
        let line = st.wait_line(|l| l.contains("listening on http://"));
        let i = line.find("listening on http://").unwrap();
        st.base = format!(
            "http://{}",
            line[i + 20..].split_whitespace().next().unwrap()
        );
        st.token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        st
    }

    /// A log line (seen so far or still to come) that satisfies `pred`,
    /// within WAIT. Lines are kept: waiting for one never loses another.
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no such log line within {WAIT:?}; saw:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(self.stderr.as_path()).unwrap_or_default()
                ),
            }
        }
    }

    /// Until the screen has painted a state whose log says `what`.
    fn painted(&mut self, what: &str) {
        self.wait_line(|l| l.contains("screen painted") && l.contains(what));
    }

    /// Each tap, in turn, counted or not but taken.
    async fn taps(&self, taps: &[(&str, &str)]) {
        for (reader, tag) in taps {
            assert_eq!(self.tap(reader, tag).await, 201, "{reader} {tag}");
        }
    }

    async fn tap(&self, reader: &str, tag: &str) -> u16 {
        self.http
            .post(format!("{}/api/v1/taps", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"reader": reader, "tag": tag}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// OCR reads the middle dot as -, •, :, nothing at all and more, spaces
/// come and go, and large text comes back in capitals now and then:
/// compare letters (in lower case), digits, '%', '?' and '!' only.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '%' | '?' | '!' | '\n'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// OCR after an ImageMagick pass (`prep`: its options), at twice the
/// size (small text) and at its own (a projector's large text).
fn ocr(png: &Path, prep: &[&str]) -> String {
    format!(
        "{}\n{}",
        ocr_at(png, prep, "200%"),
        ocr_at(png, prep, "100%")
    )
}

fn ocr_at(png: &Path, prep: &[&str], scale: &str) -> String {
    let input = png.with_extension("ocr.png");
    // /usr/bin/convert: ImageMagick itself, whatever else is on the PATH.
    let ok = Command::new("/usr/bin/convert")
        .arg(png)
        .args(prep)
        .args(["-resize", scale])
        .arg(&input)
        .status()
        .unwrap()
        .success();
    assert!(ok, "convert failed");
    let out = Command::new("tesseract")
        .arg(&input)
        .args(["-", "--psm", "11"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&input);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Screenshot the X screen and OCR it twice: negated (grey text reads best
/// so), and thresholded to black on white (white on the banner's colour).
fn screenshot_text(x: &Xvfb, name: &str) -> String {
    text_of(&screenshot(x, name))
}

/// The X screen as `artifacts/{name}`.
fn screenshot(x: &Xvfb, name: &str) -> PathBuf {
    let png = artifact(name);
    let ok = Command::new("import")
        .args(["-display", &x.display, "-window", "root"])
        .arg(&png)
        .status()
        .unwrap()
        .success();
    assert!(ok, "import failed");
    png
}

/// OCR of a PNG, both ways.
fn text_of(png: &Path) -> String {
    let png = png.to_path_buf();
    let negated = ocr(&png, &["-negate"]);
    let thresholded = ocr(
        &png,
        &["-colorspace", "Gray", "-threshold", "60%", "-negate"],
    );
    norm(&format!("{negated}\n{thresholded}"))
}

fn config(data: &Path, polls: &str) -> String {
    format!(
        r#"
[station]
id = "screen"
data_dir = "{}"

[http]
listen = "127.0.0.1:0"

[screen]
enabled = true
fullscreen = true
{polls}
"#,
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_shows_the_tally_and_thanks_the_voter() {
    let x = xvfb("1280x800x24");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let people = dir.path().join("people.csv");
    std::fs::write(&people, "21000009,Anna de Vries,anna\n").unwrap();
    let polls = format!("[identity]\npeople = \"{}\"\n", people.display())
        + r#"
[[poll]]
id = "lunch"
question = "What should we have for lunch?"
rule = "one-per-person"
answers = [{ id = "pizza", label = "Pizza" }, { id = "sushi", label = "Sushi" }, { id = "salad", label = "Green salad" }]

[[reader]]
id = "pizza"
device = "/nonexistent/pizza"
protocol = "text"
poll = "lunch"
answer = "pizza"

[[reader]]
id = "sushi"
device = "/nonexistent/sushi"
protocol = "text"
poll = "lunch"
answer = "sushi"
"#;
    let mut st = ScreenStation::start(&x, &data, &config(&data, &polls));
    st.wait_line(|l| l.contains("screen updated") && l.contains("total=0"));
    st.taps(&[
        ("pizza", "21000001"),
        ("pizza", "21000002"),
        ("sushi", "21000003"),
    ])
    .await;
    // Painted, not just applied: the screenshot must show the new state.
    st.painted("total=3");
    st.painted("thanks counted=true");
    let text = screenshot_text(&x, "screen-tally.png");
    for want in [
        "What should we have for lunch?",
        "Pizza",
        "Sushi",
        "Green salad",
        "2 · 67%",
        "1 · 33%",
        "0 · 0%",
        "3 votes",
        "Thank you!",
    ] {
        assert!(
            text.contains(&norm(want)),
            "OCR did not find {want:?} in:\n{text}"
        );
    }
    // A second tap by the same person does not count: the banner says so.
    assert_eq!(st.tap("sushi", "21000001").await, 201);
    st.painted("thanks counted=false");
    let text = screenshot_text(&x, "screen-already.png");
    assert!(text.contains(&norm("Already voted")), "{text}");
    // A known voter is thanked by first name once the lookup answers.
    assert_eq!(st.tap("pizza", "21000009").await, 201);
    st.painted("thanks name=Anna");
    let text = screenshot_text(&x, "screen-thanks-name.png");
    assert!(text.contains(&norm("Thank you, Anna!")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_answers_stay_legible() {
    let x = xvfb("1280x800x24");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let answers: Vec<String> = (1..=50)
        .map(|i| format!("{{ id = \"a{i}\", label = \"Choice {i:02}\" }}"))
        .collect();
    let polls = format!(
        "[[poll]]\nid = \"many\"\nquestion = \"Fifty answers?\"\nrule = \"unlimited\"\nanswers = [{}]\n\n[[reader]]\nid = \"r\"\ndevice = \"/nonexistent/r\"\nprotocol = \"text\"\npoll = \"many\"\nanswer = \"a7\"\n",
        answers.join(", ")
    );
    let mut st = ScreenStation::start(&x, &data, &config(&data, &polls));
    assert_eq!(st.tap("r", "22000001").await, 201);
    st.painted("total=1");
    let text = screenshot_text(&x, "screen-fifty.png");
    let missing: Vec<String> = (1..=50)
        .map(|i| format!("Choice {i:02}"))
        .filter(|l| !text.contains(&norm(l)))
        .collect();
    assert!(missing.is_empty(), "OCR missed {missing:?} in:\n{text}");
}

/// The lower half of a screenshot, for OCR on its own.
fn lower_half(png: &Path, w: u32, h: u32) -> PathBuf {
    let out = png.with_extension("lower.png");
    let ok = Command::new("/usr/bin/convert")
        .arg(png)
        .args(["-crop", &format!("{w}x{}+0+{}", h / 2, h / 2), "+repage"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "convert -crop failed");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_1080p_projector_the_poll_fills_the_screen_and_the_banner_names_the_answer() {
    let x = xvfb("1920x1080x24");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let polls = r#"
[http]
listen = "127.0.0.1:0"
public_url = "http://poll.example.org:8080/"

[[poll]]
id = "lunch"
question = "What should we have for lunch?"
rule = "one-per-person"
answers = [{ id = "pizza", label = "Pizza" }, { id = "sushi", label = "Sushi" }, { id = "salad", label = "Green salad" }, { id = "soup", label = "Tomato soup" }]

[[reader]]
id = "pizza"
device = "/nonexistent/pizza"
protocol = "text"
poll = "lunch"
answer = "pizza"

[[reader]]
id = "soup"
device = "/nonexistent/soup"
protocol = "text"
poll = "lunch"
answer = "soup"
"#;
    // The [http] section above replaces the default one.
    let cfg =
        config(&data, polls).replace("[http]\nlisten = \"127.0.0.1:0\"\n\n[screen]", "[screen]");
    let mut st = ScreenStation::start(&x, &data, &cfg);
    st.wait_line(|l| l.contains("screen sized") && l.contains("height=1080"));
    st.taps(&[
        ("pizza", "23000001"),
        ("pizza", "23000002"),
        ("soup", "23000003"),
    ])
    .await;
    st.painted("total=3");
    st.painted("pulse answer=soup");
    st.painted("thanks counted=true");
    let png = screenshot(&x, "screen-1080p.png");
    let all = text_of(&png);
    for want in [
        "What should we have for lunch?",
        "3 votes",
        "Thank you! · Tomato soup",
    ] {
        assert!(
            all.contains(&norm(want)),
            "OCR did not find {want:?} in:\n{all}"
        );
    }
    // The layout fills the screen: answers and their counts in the lower half too.
    let lower = text_of(&lower_half(&png, 1920, 1080));
    for want in ["Green salad", "0 · 0%", "Tomato soup", "1 · 33%"] {
        assert!(
            lower.contains(&norm(want)),
            "OCR did not find {want:?} in the lower half:\n{lower}"
        );
    }
    // The QR code leads to the public results address.
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&png)
        .output()
        .expect("zbarimg (make test installs zbar-tools)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "http://poll.example.org:8080/"
    );
}
