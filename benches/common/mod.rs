//! What the benches that run the real binary share.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Start `cmd` (a `pollstation run …`), read its output until `ready` says
/// so, and return the child and its `http://ADDR`. The rest of the output is
/// drained on a thread.
pub fn start_station(mut cmd: Command, ready: impl Fn(&str) -> bool) -> (Child, String) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the station");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = String::new();
    loop {
        let l = lines.next().expect("station output").unwrap();
        if let Some(i) = l.find("listening on http://") {
            addr = l[i + 20..].split_whitespace().next().unwrap().to_string();
        }
        if !addr.is_empty() && ready(&l) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}

/// Stop the station (SIGTERM) and reap it.
pub fn stop_station(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}
