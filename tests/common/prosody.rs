//! A real Prosody on loopback for tests: generated config in a temp dir, an
//! ephemeral port, a pubsub component, users registered with prosodyctl.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use futures_util::StreamExt;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::pubsub::{self, NodeName, PubSub};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse, Stanza};

use super::{WAIT, free_port};

pub const PASSWORD: &str = "s3cret-for-tests";

pub struct Prosody {
    pub dir: PathBuf,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Prosody {
    /// Configure (users `station` — a pubsub admin — and `watcher`) and start.
    pub fn start(dir: &Path) -> Prosody {
        Self::start_with(dir, false, "internal")
    }

    /// With `tls`: STARTTLS required, with a self-signed certificate for
    /// `localhost` in `<dir>/prosody/localhost.crt`. `storage`: Prosody's
    /// store ("internal" files survive restarts; "memory" is fast and does
    /// not: its file store rewrites a node's items on every publish).
    pub fn start_with(dir: &Path, tls: bool, storage: &str) -> Prosody {
        Self::start_setup(
            dir,
            tls,
            &format!(
                "storage = {{ accounts = \"internal\"; pubsub_nodes = \"{storage}\"; pubsub_data = \"{storage}\"; }}"
            ),
            &["station", "watcher"],
            &[],
        )
    }

    /// For a herd: every store in SQLite (`lua-dbi-sqlite3`: the file
    /// store rewrites a node per publish), PEP nodes of up to 10,000 items,
    /// the `herd`'s stations (admins of the votes' pubsub component, as
    /// `xmpp-server/prosody-herd.cfg.lua` says: Prosody lets only admins
    /// make nodes there) and `others` (plain accounts).
    pub fn start_herd(dir: &Path, herd: &[&str], others: &[&str]) -> Prosody {
        let users: Vec<&str> = herd.iter().chain(others).copied().collect();
        Self::start_setup(
            dir,
            false,
            "storage = \"sql\"\nsql = { driver = \"SQLite3\"; database = \"prosody.sqlite\"; }\npep_max_items = 10000",
            &users,
            herd,
        )
    }

    fn start_setup(
        dir: &Path,
        tls: bool,
        storage: &str,
        users: &[&str],
        pubsub_admins: &[&str],
    ) -> Prosody {
        let dir = dir.join("prosody");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = free_port();
        let config = dir.join("prosody.cfg.lua");
        let d = dir.display();
        let tls_config = if tls {
            self_signed(&dir, "localhost");
            format!(
                "modules_enabled = {{ \"roster\"; \"saslauth\"; \"disco\"; \"ping\"; \"posix\"; \"pep\"; \"tls\"; }}\n\
                 c2s_require_encryption = true\n\
                 ssl = {{ key = \"{d}/localhost.key\"; certificate = \"{d}/localhost.crt\"; }}\n"
            )
        } else {
            "modules_enabled = { \"roster\"; \"saslauth\"; \"disco\"; \"ping\"; \"posix\"; \"pep\"; }\n\
             modules_disabled = { \"s2s\"; \"dialback\"; \"http\"; \"tls\"; }\n\
             c2s_require_encryption = false\n\
             allow_unencrypted_plain_auth = true\n"
                .to_string()
        };
        std::fs::write(
            &config,
            format!(
                r#"
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{d}/prosody.log" }}, {{ levels = {{ min = "info" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
admins = {{ "station@localhost" }}
{tls_config}
authentication = "internal_hashed"
{storage}
VirtualHost "localhost"
Component "pubsub.localhost" "pubsub"
  autocreate_on_publish = false
  pubsub_max_items = 10000
  admins = {{ {} }}
"#,
                pubsub_admins
                    .iter()
                    .map(|u| format!("\"{u}@localhost\""))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .unwrap();
        for &user in users {
            let out = Command::new("prosodyctl")
                .arg("--config")
                .arg(&config)
                .args(["register", user, "localhost", PASSWORD])
                .output()
                .expect("prosodyctl (apt install prosody)");
            assert!(out.status.success(), "prosodyctl register {user}: {out:?}");
        }
        let mut p = Prosody {
            dir,
            port,
            config,
            child: None,
        };
        p.restart();
        p
    }

    /// Start (again) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let mut child = Command::new("prosody")
            .args(["-F", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody (apt install prosody)");
        // Ready when it says it listens on our port (its log, on stdout);
        // the rest of its output is drained so it never blocks on the pipe.
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let listening = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.port);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains(&listening) {
                    let _ = ready_tx.send(());
                }
            }
        });
        self.child = Some(child);
        assert!(
            ready.recv_timeout(WAIT).is_ok(),
            "prosody did not listen on {} (see its log in {})",
            self.port,
            self.config.display()
        );
    }

    /// Stop it hard (SIGKILL): clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prosody.log")).unwrap_or_default()
    }
}

/// A self-signed certificate rustls accepts (SAN, CA:FALSE): `<name>.key`
/// and `<name>.crt` in `dir`.
pub fn self_signed(dir: &Path, name: &str) -> PathBuf {
    let crt = dir.join(format!("{name}.crt"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args([
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
        ])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    crt
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A second XMPP client: subscribes to a node and collects what arrives.
pub struct Watcher {
    client: Client,
    pub bound: Jid,
}

impl Watcher {
    pub async fn connect(port: u16) -> Watcher {
        let mut client = Client::new_plaintext(
            "watcher@localhost".parse::<Jid>().unwrap(),
            PASSWORD,
            DnsConfig::addr(&format!("127.0.0.1:{port}")),
            Timeouts::default(),
        );
        let bound = tokio::time::timeout(WAIT, async {
            loop {
                match client.next().await {
                    Some(Event::Online { bound_jid, .. }) => return bound_jid,
                    Some(_) => {}
                    None => panic!("watcher client ended"),
                }
            }
        })
        .await
        .expect("watcher logged in");
        Watcher { client, bound }
    }

    pub async fn subscribe(&mut self, node: &str) -> Result<(), String> {
        let req = PubSub::Subscribe {
            subscribe: Some(pubsub::pubsub::Subscribe {
                jid: self.bound.clone(),
                node: Some(NodeName(node.into())),
            }),
            options: None,
        };
        self.iq(IqRequest::Set(req.into())).await.map(|_| ())
    }

    async fn iq(&mut self, req: IqRequest) -> Result<Option<Element>, String> {
        let token = self
            .client
            .send_iq(Some("pubsub.localhost".parse().unwrap()), req)
            .await;
        // The worker delivers the answer; keep polling the stream meanwhile.
        let client = &mut self.client;
        let drive = async {
            loop {
                if client.next().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(WAIT, token) => match r {
                Ok(Ok(IqResponse::Result(e))) => Ok(e),
                Ok(Ok(IqResponse::Error(e))) => Err(format!("{:?}", e.defined_condition)),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Err(_) => Err("timeout".into()),
            },
            () = drive => unreachable!(),
        }
    }

    /// Every item the node holds: (item id, payload).
    pub async fn items(&mut self, node: &str) -> Vec<(String, Element)> {
        let req = PubSub::Items(pubsub::pubsub::Items {
            max_items: None,
            node: NodeName(node.into()),
            subid: None,
            items: vec![],
        });
        let answer = self.iq(IqRequest::Get(req.into())).await.expect("items");
        let Some(PubSub::Items(items)) = answer.and_then(|e| PubSub::try_from(e).ok()) else {
            panic!("no items in the answer");
        };
        items
            .items
            .into_iter()
            .map(|i| (i.id.unwrap().0, i.payload.unwrap()))
            .collect()
    }

    /// The next published item notification: (node, item id, payload).
    pub async fn next_item(&mut self) -> (String, String, Element) {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.client.next().await {
                    Some(Event::Stanza(Stanza::Message(m))) => {
                        for p in m.payloads {
                            if let Ok(ev) = pubsub::Event::try_from(p)
                                && let pubsub::event::Payload::Items {
                                    node, published, ..
                                } = ev.payload
                                && let Some(item) = published.into_iter().next()
                            {
                                return (node.0, item.id.unwrap().0, item.payload.unwrap());
                            }
                        }
                    }
                    Some(_) => {}
                    None => panic!("watcher client ended"),
                }
            }
        })
        .await
        .expect("a pubsub notification in time")
    }
}
