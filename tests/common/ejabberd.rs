//! A real two-node ejabberd cluster (Debian's 23.01) on loopback for
//! tests: each node its own Erlang node name, spool, log directory and
//! client port; the second joins the first with `ejabberdctl
//! join_cluster`; mnesia (replicated by the cluster) holds accounts and
//! pubsub items. A node can be killed hard and started again on the same
//! spool, when it rejoins the cluster by itself.
//!
//! `ejabberdctl` runs only as root or as the `ejabberd` user (it then runs
//! the node as `ejabberd`), so the node directories belong to that user.

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
}

/// The node's ejabberd.yml: the herd's settings of
/// `xmpp-server/ejabberd-herd.yml` on a loopback port, no TLS.
fn config(port: u16) -> String {
    format!(
        r#"hosts: [localhost]
loglevel: info
certfiles: []
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: false
auth_method: internal
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
            std::fs::write(node.dir.join("ejabberd.yml"), config(node.port)).unwrap();
            std::fs::write(
                node.dir.join("ejabberdctl.cfg"),
                format!("ERLANG_NODE={}\nINET_DIST_INTERFACE=127.0.0.1\n", node.name),
            )
            .unwrap();
            nodes.push(node);
        }
        // The node runs as `ejabberd`: it must reach and own its directories.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = Command::new("chown")
            .args(["-R", "ejabberd:ejabberd"])
            .arg(&root)
            .status()
            .expect("chown");
        assert!(status.success(), "chown ejabberd {}", root.display());
        let mut cluster = Cluster { nodes };
        cluster.restart(0);
        cluster.restart(1);
        let first = cluster.nodes[0].name.clone();
        run(&cluster.nodes[1], &["join_cluster", &first]);
        for user in users {
            run(
                &cluster.nodes[0],
                &["register", user, "localhost", super::prosody::PASSWORD],
            );
        }
        cluster
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
            .expect("ejabberdctl (apt install ejabberd)");
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
