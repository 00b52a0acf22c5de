//! D-Bus: the station follows NetworkManager and systemd's device units over
//! a real `dbus-daemon` (a private "system bus" in a temp dir, config in
//! tests/dbus/system-bus.conf). The test process serves stand-ins for both
//! services with zbus, with the real services' bus names, object paths,
//! interfaces, property and signal signatures:
//!
//! - NetworkManager: <https://networkmanager.dev/docs/api/latest/gdbus-org.freedesktop.NetworkManager.html>
//!   (`State` u, `Connectivity` u, signal `StateChanged(u)`, and
//!   `org.freedesktop.DBus.Properties.PropertiesChanged`);
//! - systemd: org.freedesktop.systemd1(5), interface
//!   `org.freedesktop.systemd1.Manager` (`Subscribe()`,
//!   `ListUnitsByPatterns(as states, as patterns) → a(ssssssouso)`,
//!   signals `UnitNew(s id, o unit)` and `UnitRemoved(s id, o unit)`).
//!
//! The station runs as its own process with `DBUS_SYSTEM_BUS_ADDRESS`
//! pointing at the private bus, so production code runs unchanged.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chromium::wait_until;
use common::{Sse, Station, WAIT};
use fantoccini::Locator;
use pollstation::app::sim::SimReader;
use pollstation::config::Protocol;
use pollstation::hotplug::unit_name;
use zbus::object_server::SignalEmitter;

const NM_NAME: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const SD_NAME: &str = "org.freedesktop.systemd1";
const SD_PATH: &str = "/org/freedesktop/systemd1";

// ---- the private bus ----------------------------------------------------

struct Bus {
    child: Child,
    socket: PathBuf,
    address: String,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("system_bus_socket");
        let _ = std::fs::remove_file(&socket);
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dbus/system-bus.conf");
        let address = format!("unix:path={}", socket.display());
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg(format!("--address={address}"))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon (apt install dbus)");
        // It prints its address once it listens.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon said {line:?}");
        Bus {
            child,
            socket,
            address,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- NetworkManager stand-in ----------------------------------------------

struct FakeNm {
    state: u32,
    connectivity: u32,
}

#[zbus::interface(name = "org.freedesktop.NetworkManager")]
impl FakeNm {
    #[zbus(property)]
    fn state(&self) -> u32 {
        self.state
    }

    #[zbus(property)]
    fn connectivity(&self) -> u32 {
        self.connectivity
    }

    #[zbus(signal, name = "StateChanged")]
    async fn nm_state_changed(emitter: &SignalEmitter<'_>, state: u32) -> zbus::Result<()>;
}

async fn serve_nm(bus: &Bus, state: u32, connectivity: u32) -> zbus::Connection {
    let conn = bus.connect().await;
    conn.object_server()
        .at(
            NM_PATH,
            FakeNm {
                state,
                connectivity,
            },
        )
        .await
        .unwrap();
    conn.request_name(NM_NAME).await.unwrap();
    conn
}

/// Change NetworkManager's state the way NM does: the property changes,
/// `PropertiesChanged` and `StateChanged` are emitted.
async fn set_nm(conn: &zbus::Connection, state: u32, connectivity: u32) {
    let iface = conn
        .object_server()
        .interface::<_, FakeNm>(NM_PATH)
        .await
        .unwrap();
    {
        let mut nm = iface.get_mut().await;
        nm.state = state;
        nm.connectivity = connectivity;
    }
    let nm = iface.get().await;
    nm.state_changed(iface.signal_emitter()).await.unwrap();
    nm.connectivity_changed(iface.signal_emitter())
        .await
        .unwrap();
    FakeNm::nm_state_changed(iface.signal_emitter(), state)
        .await
        .unwrap();
}

// ---- systemd stand-in -------------------------------------------------------

/// `ListUnitsByPatterns`' row, as the station's client reads it.
use pollstation::hotplug::UnitInfo;

#[derive(Default)]
struct FakeSystemd {
    units: Vec<String>,
    subscribers: u32,
}

/// systemd's object path for a unit: `_XX` for every byte that is not alnum.
fn unit_path(unit: &str) -> zbus::OwnedObjectPath {
    let mut label = String::new();
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            label.push(char::from(b));
        } else {
            label.push_str(&format!("_{b:02x}"));
        }
    }
    zbus::OwnedObjectPath::try_from(format!("{SD_PATH}/unit/{label}")).unwrap()
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    fn subscribe(&mut self) {
        self.subscribers += 1;
    }

    fn list_units_by_patterns(&self, states: Vec<String>, patterns: Vec<String>) -> Vec<UnitInfo> {
        let pats: Vec<glob::Pattern> = patterns
            .iter()
            .map(|p| glob::Pattern::new(p).unwrap())
            .collect();
        self.units
            .iter()
            .filter(|u| pats.is_empty() || pats.iter().any(|p| p.matches(u)))
            .filter(|_| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| ["loaded", "active", "plugged"].contains(&s.as_str()))
            })
            .map(|u| {
                (
                    u.clone(),
                    "RFID reader".into(),
                    "loaded".into(),
                    "active".into(),
                    "plugged".into(),
                    String::new(),
                    unit_path(u),
                    0,
                    String::new(),
                    zbus::OwnedObjectPath::try_from("/").unwrap(),
                )
            })
            .collect()
    }

    #[zbus(signal)]
    async fn unit_new(
        emitter: &SignalEmitter<'_>,
        id: &str,
        unit: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn unit_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        unit: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;
}

async fn serve_systemd(bus: &Bus) -> zbus::Connection {
    let conn = bus.connect().await;
    conn.object_server()
        .at(SD_PATH, FakeSystemd::default())
        .await
        .unwrap();
    conn.request_name(SD_NAME).await.unwrap();
    conn
}

/// A device unit appears (`plug`) or goes: the unit list changes and
/// `UnitNew` / `UnitRemoved` is sent, as systemd does to subscribed clients.
async fn device_unit(conn: &zbus::Connection, device: &Path, plug: bool) {
    let unit = unit_name(device);
    let iface = conn
        .object_server()
        .interface::<_, FakeSystemd>(SD_PATH)
        .await
        .unwrap();
    let subscribed = {
        let mut sd = iface.get_mut().await;
        sd.units.retain(|u| u != &unit);
        if plug {
            sd.units.push(unit.clone());
        }
        sd.subscribers > 0
    };
    if !subscribed {
        return; // systemd sends unit signals only to subscribers
    }
    let path = unit_path(&unit);
    if plug {
        FakeSystemd::unit_new(iface.signal_emitter(), &unit, path.as_ref())
            .await
            .unwrap();
    } else {
        FakeSystemd::unit_removed(iface.signal_emitter(), &unit, path.as_ref())
            .await
            .unwrap();
    }
}

async fn subscribers(conn: &zbus::Connection) -> u32 {
    conn.object_server()
        .interface::<_, FakeSystemd>(SD_PATH)
        .await
        .unwrap()
        .get()
        .await
        .subscribers
}

// ---- the station -------------------------------------------------------------

fn start_station(dir: &Path, bus: &str, extra: &str) -> Station {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.join("station.toml");
    std::fs::write(&config, common::config(&data, extra)).unwrap();
    Station::start_env(&data, &config, &[("DBUS_SYSTEM_BUS_ADDRESS", bus)])
}

/// Until the station's network state is `state`; returns how long it took.
async fn network_becomes(sse: &mut Sse, state: &str) -> Duration {
    let t = Instant::now();
    sse.until_any(|name, v| name == "status" && v["network"]["state"] == state)
        .await;
    t.elapsed()
}

#[tokio::test]
async fn network_state_follows_networkmanager_and_survives_the_bus_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Bus::start(dir.path());
    let nm = serve_nm(&bus, 70, 4).await;
    let st = start_station(
        dir.path(),
        &bus.address,
        "[network]\ndebounce_ms = 300\n[hotplug]\nenabled = false\n",
    );
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    network_becomes(&mut sse, "online").await;

    // Offline: the station follows after the debounce, not before, and
    // within a bounded time.
    let t = Instant::now();
    set_nm(&nm, 20, 1).await;
    network_becomes(&mut sse, "offline").await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "offline after {took:?}"
    );
    let (_, station) = st.get("/api/v1/station").await;
    assert_eq!(station["network"]["state"], "offline");
    assert_eq!(station["network"]["detail"], "disconnected");
    let (_, metrics) = st.get_text("/metrics").await;
    assert!(
        metrics.contains("pollstation_network_state{state=\"offline\"} 1"),
        "{metrics}"
    );

    // A transient blip (connecting for a moment, then back to disconnected)
    // is filtered: the next state seen is the one that holds.
    set_nm(&nm, 40, 1).await;
    set_nm(&nm, 20, 1).await;
    set_nm(&nm, 70, 3).await; // connected, limited connectivity: holds
    let v = sse
        .until_any(|name, v| name == "status" && v["network"]["state"] != "offline")
        .await;
    assert_eq!(v["network"]["state"], "limited", "{v}");
    set_nm(&nm, 70, 4).await;
    network_becomes(&mut sse, "online").await;

    // Taps are recorded whatever the network does.
    let (code, _) = st.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);

    // NetworkManager leaves the bus: unknown at once.
    drop(nm);
    network_becomes(&mut sse, "unknown").await;
    let nm = serve_nm(&bus, 70, 4).await;
    network_becomes(&mut sse, "online").await;

    // The bus daemon dies: unknown; it comes back: the station reconnects.
    drop(nm);
    bus.kill();
    let v = sse
        .until_any(|name, v| {
            name == "status"
                && v["network"]["state"] == "unknown"
                && v["network"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("system bus"))
        })
        .await;
    assert_eq!(v["network"]["state"], "unknown");
    let bus = Bus::start(dir.path());
    let _nm = serve_nm(&bus, 50, 1).await;
    let took = network_becomes(&mut sse, "limited").await;
    assert!(took < WAIT, "reconnected after {took:?}");
    let (code, _) = st.tap("last-a", "urn:rfid:04A1B2C4").await;
    assert_eq!(code, 201);
    assert!(st.terminate().success());
}

#[tokio::test]
async fn without_a_bus_the_network_is_unknown_and_everything_else_works() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix:path={}/no-such-bus", dir.path().display());
    let st = start_station(dir.path(), &missing, "");
    let s = st
        .station_until("reporting the missing bus", |s| {
            s["network"]["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("system bus"))
                && s["hotplug"]["state"] == "unavailable"
                && s["hotplug"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("systemd on the system bus"))
        })
        .await;
    assert_eq!(s["network"]["state"], "unknown");
    let (code, _) = st.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);
    assert!(st.terminate().success());
}

#[tokio::test]
async fn readers_attach_and_detach_with_their_device_units_and_new_ones_can_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let sd = serve_systemd(&bus).await;
    let dev = dir.path().join("dev/rfid");
    let post = dev.join("post-1");
    let spare = dev.join("spare");
    let extra = format!(
        "[network]\nwatch = false\n[hotplug]\npattern = \"*-rfid-*.device\"\n\n\
         [[reader]]\nid = \"post-1\"\ndevice = \"{}\"\nprotocol = \"text\"\npoll = \"all\"\nanswer = \"a\"\n",
        post.display()
    );
    let st = start_station(dir.path(), &bus.address, &extra);
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    // Not plugged in: the station says it waits for the unit.
    let waiting = |r: &serde_json::Value| {
        r["id"] == "post-1"
            && r["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("not plugged in (waiting for"))
    };
    sse.until_any(|name, v| match name {
        "reader" => waiting(v),
        "status" => v["readers"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(waiting)),
        _ => false,
    })
    .await;
    let (_, station) = st.get("/api/v1/station").await;
    assert_eq!(station["hotplug"]["state"], "watching", "{station}");
    assert!(subscribers(&sd).await >= 1, "the station must Subscribe()");

    // Plugged in: the device and its unit appear; the reader attaches and
    // its taps count.
    let sim = SimReader::spawn(Protocol::Text, Some(&post)).unwrap();
    device_unit(&sd, &post, true).await;
    sse.reader_status("post-1", "connected").await;
    sim.hold(&[0x04, 0x11, 0x22, 0x33], Duration::from_millis(50))
        .await;
    let tap = sse.until("tap", |v| v["reader"] == "post-1").await;
    assert_eq!(tap["counted"], true);

    // The unit goes (the pty stays open, so no I/O error will tell): the
    // reader is disconnected at once.
    let t = Instant::now();
    device_unit(&sd, &post, false).await;
    let v = sse.reader_status("post-1", "disconnected").await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "disconnected after {took:?}");
    let err = if v["id"] == "post-1" {
        v["last_error"].clone()
    } else {
        v["readers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "post-1")
            .unwrap()["last_error"]
            .clone()
    };
    assert!(
        err.as_str().is_some_and(|e| e.starts_with("unplugged")),
        "{v}"
    );
    // And back.
    device_unit(&sd, &post, true).await;
    sse.reader_status("post-1", "connected").await;

    // A reader the config does not name is shown to the operator…
    let spare_sim = SimReader::spawn(Protocol::Text, Some(&spare)).unwrap();
    device_unit(&sd, &spare, true).await;
    let spare_path = spare.display().to_string();
    sse.until_any(|name, v| {
        name == "status"
            && v["hotplug"]["unbound"]
                .as_array()
                .is_some_and(|u| u.iter().any(|d| d == spare_path.as_str()))
    })
    .await;
    // …and bound to a slot of the active poll without a restart.
    let (code, body) = st
        .admin_post(
            "/api/v1/readers",
            serde_json::json!({ "device": spare_path, "slot": "B", "protocol": "text" }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["id"], "spare");
    sse.reader_status("spare", "connected").await;
    spare_sim
        .hold(&[0x04, 0x55, 0x66, 0x77], Duration::from_millis(50))
        .await;
    let tap = sse.until("tap", |v| v["reader"] == "spare").await;
    assert_eq!(tap["counted"], true);
    let (_, station) = st.get("/api/v1/station").await;
    assert_eq!(station["hotplug"]["unbound"], serde_json::json!([]));
    // Binding it twice, or to nonsense, is refused with a reason.
    let (code, body) = st
        .admin_post(
            "/api/v1/readers",
            serde_json::json!({ "device": spare_path, "slot": "A" }),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = st
        .admin_post(
            "/api/v1/readers",
            serde_json::json!({ "device": "/dev/rfid/x", "poll": "all", "answer": "zzz" }),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, _) = st
        .admin_post("/api/v1/readers", serde_json::json!({ "device": "rel" }))
        .await;
    assert_eq!(code, 400);

    // The binding survives a restart.
    let data = st.data_dir.clone();
    let config = st.config_path.clone();
    assert!(st.terminate().success());
    let st = Station::start_env(&data, &config, &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)]);
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    sse.reader_status("spare", "connected").await;
    assert!(st.terminate().success());
}

/// The operator, in real Chromium, sees a reader device that systemd
/// reports but no reader uses, names it, binds it to a slot, and sees it
/// connect and its taps count, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_binds_a_reader_that_was_plugged_in() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let sd = serve_systemd(&bus).await;
    let door = dir.path().join("dev/rfid/door-1");
    let extra = "[network]\nwatch = false\n[hotplug]\npattern = \"*-rfid-*.device\"\n";
    let st = start_station(dir.path(), &bus.address, extra);
    let (_, station) = st.get("/api/v1/station").await;
    let active = station["active_poll"].as_str().unwrap().to_string();

    let driver = chromium::chromedriver();
    let c = chromium::browser(&driver).await;
    c.goto(&st.url("/operator")).await.unwrap();
    wait_until(&c, r#"!document.getElementById("login").hidden"#).await;
    chromium::submit_token(&c, &st.token).await;
    wait_until(
        &c,
        r#"document.getElementById("hotplug").textContent.startsWith("hotplug: watching")"#,
    )
    .await;
    assert_eq!(
        chromium::text_of(&c, r#"String(document.getElementById("unbound").hidden)"#).await,
        "true",
        "nothing is plugged in yet"
    );

    // A reader nobody configured is plugged in.
    let sim = SimReader::spawn(Protocol::Text, Some(&door)).unwrap();
    device_unit(&sd, &door, true).await;
    let row = format!(r#"#unbound-list tr[data-device="{}"]"#, door.display());
    wait_until(
        &c,
        &format!(
            r#"!document.getElementById("unbound").hidden && document.querySelector('{row}') !== null"#
        ),
    )
    .await;
    c.execute(
        r#"document.getElementById("unbound").scrollIntoView()"#,
        vec![],
    )
    .await
    .unwrap();
    chromium::screenshot(&c, "operator-unbound.png").await;

    // The slots offered are the active poll's answers.
    assert_eq!(
        chromium::text_of(
            &c,
            &format!(
                r#"[...document.querySelectorAll('{row} option')].map(o => o.value + "=" + o.textContent).join("|")"#
            )
        )
        .await,
        "A=A · Alpha|B=B · Bravo"
    );

    // Named "door", on slot B of the active poll.
    let id = c.find(Locator::Css(&format!("{row} input"))).await.unwrap();
    id.clear().await.unwrap();
    id.send_keys("door").await.unwrap();
    c.find(Locator::Css(&format!("{row} select")))
        .await
        .unwrap()
        .select_by_value("B")
        .await
        .unwrap();
    // A second device arriving meanwhile redraws the list; what the operator
    // typed and picked stays.
    let other = dir.path().join("dev/rfid/door-2");
    let _other_sim = SimReader::spawn(Protocol::Text, Some(&other)).unwrap();
    device_unit(&sd, &other, true).await;
    wait_until(
        &c,
        r##"document.querySelectorAll("#unbound-list tbody tr").length === 2"##,
    )
    .await;
    assert_eq!(
        chromium::text_of(
            &c,
            &format!(
                r#"document.querySelector('{row} input').value + "/" + document.querySelector('{row} select').value"#
            )
        )
        .await,
        "door/B"
    );
    chromium::click(&c, &format!("{row} button")).await;
    wait_until(
        &c,
        r##"(() => {
            const tr = document.querySelector('#readers tr[data-reader="door"]');
            return tr !== null && tr.cells[1].textContent === "connected"
                && tr.cells[2].textContent === "slot B";
        })() && document.querySelectorAll("#unbound-list tbody tr").length === 1"##,
    )
    .await;
    assert_eq!(
        chromium::text_of(&c, r#"document.getElementById("action-error").textContent"#).await,
        ""
    );

    // Its taps count for answer B of the active poll.
    let before = st.tally(&active).await;
    sim.hold(&[0x04, 0x55, 0x66, 0x77], Duration::from_millis(50))
        .await;
    wait_until(
        &c,
        r##"(() => {
            const tr = document.querySelector("#taps tbody tr");
            return tr !== null && tr.cells[2].textContent === "door"
                && tr.cells[3].textContent === "urn:rfid:04556677" && tr.cells[5].textContent === "b";
        })()"##,
    )
    .await;
    // The reader's own counters follow: one tap, one good frame.
    wait_until(
        &c,
        r##"(() => {
            const tr = document.querySelector('#readers tr[data-reader="door"]');
            return tr.cells[4].textContent === "1" && tr.cells[5].textContent === "1";
        })()"##,
    )
    .await;
    chromium::screenshot(&c, "operator-bound.png").await;
    let after = st.tally(&active).await;
    assert_eq!((after[0], after[1]), (before[0], before[1] + 1));
    c.close().await.unwrap();
    assert!(st.terminate().success());
}

/// Offline means queue and wait; online again means flush (XMPP).
#[tokio::test]
async fn xmpp_waits_while_networkmanager_says_offline_and_flushes_when_online() {
    use common::prosody::{PASSWORD, Prosody};
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let nm = serve_nm(&bus, 70, 4).await;
    let prosody = Prosody::start(dir.path());
    let pw = dir.path().join("xmpp.password");
    common::write_secret(&pw, PASSWORD);
    let extra = format!(
        "[network]\ndebounce_ms = 100\n[hotplug]\nenabled = false\n\
         [xmpp]\njid = \"station@localhost\"\npassword_file = \"{}\"\nserver = \"127.0.0.1:{}\"\n\
         tls = \"none\"\npubsub = \"pubsub.localhost\"\n",
        pw.display(),
        prosody.port
    );
    let st = start_station(dir.path(), &bus.address, &extra);
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    sse.until_any(|n, v| n == "status" && v["xmpp"]["state"] == "online")
        .await;
    let (code, _) = st.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);

    set_nm(&nm, 20, 1).await;
    sse.until_any(|n, v| n == "status" && v["xmpp"]["state"] == "waiting")
        .await;
    for i in 0..5 {
        let (code, _) = st.tap("all-a", &format!("urn:rfid:04A1B3{i:02X}")).await;
        assert_eq!(code, 201, "taps are acknowledged while offline");
    }
    // Enqueued within a few ms of the taps (they ride with the next commit
    // or go alone after 10 ms idle).
    let s = st
        .station_until("queueing 5", |s| s["xmpp"]["outbox"].as_u64() >= Some(5))
        .await;
    let published_offline = s["xmpp"]["published"].as_u64().unwrap();
    assert!(
        s["xmpp"]["detail"].as_str().unwrap().contains("queued"),
        "{}",
        s["xmpp"]
    );

    set_nm(&nm, 70, 4).await;
    st.station_until("flushing", |s| {
        s["xmpp"]["outbox"] == 0 && s["xmpp"]["published"].as_u64() == Some(6)
    })
    .await;
    assert!(published_offline <= 1, "nothing published while offline");
    assert!(st.terminate().success());
}

/// Identity lookups wait while NetworkManager says offline, then run.
#[tokio::test]
async fn identity_lookups_wait_while_offline() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let nm = serve_nm(&bus, 20, 1).await; // offline from the start
    // A stand-in anyMeta that counts identify calls and knows nobody.
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/rest/", listener.local_addr().unwrap());
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/services/rest/",
        axum::routing::post(move |body: String| {
            let c = c.clone();
            async move {
                if body.contains("identity.identify") {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                axum::Json(serde_json::json!(false))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let creds = dir.path().join("anymeta.toml");
    std::fs::write(
        &creds,
        "c_key = \"k\"\nc_sec = \"s\"\nt_key = \"t\"\nt_sec = \"u\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "[network]\ndebounce_ms = 100\n[hotplug]\nenabled = false\n\
         [identity]\nanymeta = \"{url}\"\ncredentials = \"{}\"\n",
        creds.display()
    );
    let st = start_station(dir.path(), &bus.address, &extra);
    let mut sse = Sse::connect(&st.url("/api/v1/events")).await;
    network_becomes(&mut sse, "offline").await;
    let (code, _) = st.tap("all-a", "urn:rfid:04A1B2C3").await;
    assert_eq!(code, 201);
    let v = sse
        .until_any(|n, v| n == "status" && v["identity"]["state"] == "offline")
        .await;
    assert_eq!(v["identity"]["pending"], 1, "{}", v["identity"]);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no lookup while offline");

    set_nm(&nm, 70, 4).await;
    st.station_until("running the lookup", |s| s["identity"]["pending"] == 0)
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(st.terminate().success());
}
