//! A real two-node ejabberd cluster (Debian's 23.01) on loopback for
//! tests: each node its own Erlang node name, spool, log directory and
//! client port; the second joins the first with `ejabberdctl
//! join_cluster`. Accounts and pubsub (nodes, items, subscriptions) live
//! in a PostgreSQL (Debian's 15, its own data directory and port) that both
//! nodes share, as `xmpp-server/ejabberd-herd.yml` says; mnesia (replicated
//! by the cluster) keeps the rest (sessions, routes). A node can be killed
//! hard and started again on the same spool, when it rejoins the cluster
//! by itself.
//!
//! `ejabberdctl` runs only as root or as the `ejabberd` user (it then runs
//! the node as `ejabberd`), so the node directories belong to that user;
//! PostgreSQL runs as `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{WAIT, free_port};

/// One node of the cluster.
struct Node {
    name: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    sql: Postgres,
}

/// The cluster's SQL database: a PostgreSQL server of its own.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

const SQL_PASSWORD: &str = "herd-test";

impl Postgres {
    /// A fresh database `ejabberd` (user `ejabberd`) with ejabberd's schema.
    fn start(dir: &Path) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL (apt install postgresql)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("PostgreSQL's initdb (apt install postgresql)");
        std::fs::create_dir_all(dir).unwrap();
        chown("postgres:postgres", dir);
        let pg = Postgres {
            bin,
            data: dir.join("data"),
            port: free_port(),
        };
        pg.as_postgres(&format!(
            "{} -D {} -A trust -U postgres --no-sync",
            pg.bin.join("initdb").display(),
            pg.data.display()
        ));
        pg.as_postgres(&format!(
            "{} -D {} -w -l {}/log -o '-p {} -k {} -c listen_addresses=127.0.0.1' start",
            pg.bin.join("pg_ctl").display(),
            pg.data.display(),
            dir.display(),
            pg.port,
            dir.display()
        ));
        pg.psql(
            "postgres",
            &[
                "-c",
                &format!("CREATE USER ejabberd PASSWORD '{SQL_PASSWORD}'"),
                "-c",
                "CREATE DATABASE ejabberd OWNER ejabberd",
            ],
        );
        pg.psql("ejabberd", &["-f", "/usr/share/ejabberd/sql/pg.sql"]);
        pg
    }

    fn as_postgres(&self, cmd: &str) {
        let out = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", cmd])
            .output()
            .expect("su");
        assert!(out.status.success(), "{cmd}: {out:?}");
    }

    fn psql(&self, db: &str, args: &[&str]) -> String {
        let user = if db == "postgres" {
            "postgres"
        } else {
            "ejabberd"
        };
        let out = Command::new(self.bin.join("psql"))
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", user, db])
            .args(args)
            .env("PGPASSWORD", SQL_PASSWORD)
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!(
                "{} -D {} -m immediate stop",
                self.bin.join("pg_ctl").display(),
                self.data.display()
            ))
            .output();
    }
}

fn chown(owner: &str, path: &Path) {
    let status = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {owner} {}", path.display());
}

/// The node's ejabberd.yml: the herd's settings of
/// `xmpp-server/ejabberd-herd.yml` on a loopback port, no TLS.
fn config(port: u16, sql_port: u16) -> String {
    format!(
        r#"hosts: [localhost]
loglevel: info
certfiles: []
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: false
sql_type: pgsql
sql_server: 127.0.0.1
sql_port: {sql_port}
sql_database: ejabberd
sql_username: ejabberd
sql_password: {SQL_PASSWORD}
auth_method: sql
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_caps: {{}}
  mod_pubsub:
    db_type: sql
    access_createnode: local
    plugins: [flat, pep]
    max_items_node: 10000
"#
    )
}

fn ctl(node: &Node) -> Command {
    let mut c = Command::new("ejabberdctl");
    c.arg("--config")
        .arg(node.dir.join("ejabberd.yml"))
        .arg("--ctl-config")
        .arg(node.dir.join("ejabberdctl.cfg"))
        .arg("--spool")
        .arg(node.dir.join("spool"))
        .arg("--logs")
        .arg(node.dir.join("logs"))
        .arg("--node")
        .arg(&node.name);
    c
}

fn run(node: &Node, args: &[&str]) {
    let out = ctl(node)
        .args(args)
        .output()
        .expect("ejabberdctl (apt install ejabberd)");
    assert!(
        out.status.success(),
        "ejabberdctl {} on {}: {out:?}",
        args.join(" "),
        node.name
    );
}

impl Cluster {
    /// Two nodes, clustered, with these users (password
    /// [`super::prosody::PASSWORD`]).
    pub fn start(dir: &Path, users: &[&str]) -> Cluster {
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout == b"0\n"),
            "ejabberdctl runs only as root or as ejabberd: run this test as root (CI does)"
        );
        let root = dir.join("ejabberd");
        // The node runs as `ejabberd`, PostgreSQL as `postgres`: both must
        // reach their directories.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sql = Postgres::start(&dir.join("postgres"));
        let tag = free_port();
        let mut nodes = Vec::new();
        for i in 1..=2 {
            let node = Node {
                // No hyphen: Erlang quotes such a name in the "started" line.
                name: format!("ejabberd{i}n{tag}@localhost"),
                dir: root.join(format!("node{i}")),
                port: free_port(),
                child: None,
            };
            std::fs::create_dir_all(node.dir.join("spool")).unwrap();
            std::fs::create_dir_all(node.dir.join("logs")).unwrap();
            std::fs::write(node.dir.join("ejabberd.yml"), config(node.port, sql.port)).unwrap();
            std::fs::write(
                node.dir.join("ejabberdctl.cfg"),
                format!("ERLANG_NODE={}\nINET_DIST_INTERFACE=127.0.0.1\n", node.name),
            )
            .unwrap();
            nodes.push(node);
        }
        chown("ejabberd:ejabberd", &root);
        let mut cluster = Cluster { nodes, sql };
        cluster.restart(0);
        cluster.restart(1);
        let first = cluster.nodes[0].name.clone();
        run(&cluster.nodes[1], &["join_cluster", &first]);
        cluster.register(users);
        cluster
    }

    /// Make accounts `users`@localhost (password
    /// [`super::prosody::PASSWORD`]), straight into the shared SQL store
    /// (plain passwords, ejabberd's default): `ejabberdctl register` starts
    /// an Erlang VM per account, a second each.
    pub fn register(&self, users: &[&str]) {
        if users.is_empty() {
            return;
        }
        let rows: Vec<String> = users
            .iter()
            .map(|u| format!("('{u}', '{}')", super::prosody::PASSWORD))
            .collect();
        self.sql.psql(
            "ejabberd",
            &[
                "-c",
                &format!(
                    "INSERT INTO users (username, password) VALUES {}",
                    rows.join(", ")
                ),
            ],
        );
    }

    /// The processes of node `i` (its Erlang VM) and of the SQL server, for
    /// CPU and memory readings.
    pub fn pids(&self) -> (Vec<Vec<u32>>, Vec<u32>) {
        let pgrep = |pattern: &str| -> Vec<u32> {
            Command::new("pgrep")
                .args(["-f", pattern])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter_map(|l| l.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let nodes = self
            .nodes
            .iter()
            .map(|n| pgrep(&format!("beam.smp.*-sname {} ", n.name)))
            .collect();
        // The postmaster (its pid is the first line of postmaster.pid) and
        // its backends.
        let sql = std::fs::read_to_string(self.sql.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
            .map(|main| {
                let mut all = vec![main];
                all.extend(
                    Command::new("pgrep")
                        .args(["-P", &main.to_string()])
                        .output()
                        .map(|o| {
                            String::from_utf8_lossy(&o.stdout)
                                .lines()
                                .filter_map(|l| l.trim().parse::<u32>().ok())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                );
                all
            })
            .unwrap_or_default();
        (nodes, sql)
    }

    /// Rows in one of ejabberd's SQL tables (e.g. `pubsub_item`).
    pub fn sql_rows(&self, table: &str) -> u64 {
        let out = self.sql.psql(
            "ejabberd",
            &["-A", "-t", "-c", &format!("SELECT count(*) FROM {table}")],
        );
        out.trim().parse().expect("a count")
    }

    /// The client port of node `i` (0 or 1).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Start node `i` (again, on its spool) and wait until it says it has
    /// started.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none());
        let mut child = ctl(node)
            .arg("foreground")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ejabberdctl (apt install ejabberd erlang-p1-pgsql)");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let started = format!("is started in the node {}", node.name);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains(&started) {
                    let _ = ready_tx.send(());
                }
            }
        });
        node.child = Some(child);
        assert!(
            ready.recv_timeout(WAIT * 2).is_ok(),
            "ejabberd node {} did not start (its log: {})",
            node.name,
            node.dir.join("logs/ejabberd.log").display()
        );
    }

    /// Kill node `i` hard (SIGKILL to its Erlang VM): its clients see the
    /// connection drop, the other node sees its peer vanish.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut c) = node.child.take() {
            // The VM runs under `su`, as `ejabberd`: find it by node name.
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &format!("name {} ", node.name)])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("logs/ejabberd.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
