//! The appliance as a technician installs it: the systemd unit's sandbox
//! (`systemd-analyze security --offline=yes`, goal ≤ 2.0) and validity
//! (`systemd-analyze verify`), and the Debian package built by
//! `scripts/build-deb`, unpacked into a throwaway root and inspected.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pollstation");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The exposure figure `systemd-analyze security` gives a unit file.
fn exposure(unit: &Path) -> f64 {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure in:\n{out}"));
    let figure = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    figure.parse().unwrap()
}

#[test]
fn the_service_unit_is_sandboxed_to_an_exposure_of_at_most_2() {
    let e = exposure(&repo().join("systemd/pollstation.service"));
    println!("systemd-analyze security --offline=yes systemd/pollstation.service: {e}");
    assert!(e <= 2.0, "exposure {e} > 2.0");
    // The kiosk unit trades some of it for the screen (see its comment).
    let k = exposure(&repo().join("systemd/pollstation-kiosk.service"));
    println!("systemd-analyze security --offline=yes systemd/pollstation-kiosk.service: {k}");
    assert!(k <= 3.0, "kiosk exposure {k}");
}

#[test]
fn the_debian_package_installs_what_a_station_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(Command::new(repo().join("scripts/build-deb"))
        .args(["--binary", BIN, "--out"])
        .arg(tmp.path()));
    let deb = PathBuf::from(out.lines().last().unwrap().trim());
    assert!(deb.exists(), "{out}");

    // Paths, modes and owners as dpkg will install them.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| -> (String, String) {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"));
        let mut f = line.split_whitespace();
        (f.next().unwrap().to_string(), f.next().unwrap().to_string())
    };
    for (path, mode) in [
        ("/usr/bin/pollstation", "-rwxr-xr-x"),
        ("/lib/systemd/system/pollstation.service", "-rw-r--r--"),
        (
            "/lib/systemd/system/pollstation-kiosk.service",
            "-rw-r--r--",
        ),
        (
            "/lib/udev/rules.d/70-pollstation-readers.rules",
            "-rw-r--r--",
        ),
        ("/etc/pollstation/pollstation.toml", "-rw-r--r--"),
        ("/usr/share/doc/pollstation/README.md", "-rw-r--r--"),
        ("/usr/share/doc/pollstation/copyright", "-rw-r--r--"),
        ("/usr/share/man/man1/pollstation.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/pollstation-run.1.gz", "-rw-r--r--"),
        (
            "/usr/share/man/man1/pollstation-herd-init.1.gz",
            "-rw-r--r--",
        ),
        (
            "/usr/share/bash-completion/completions/pollstation",
            "-rw-r--r--",
        ),
        (
            "/usr/share/zsh/vendor-completions/_pollstation",
            "-rw-r--r--",
        ),
        (
            "/usr/share/fish/vendor_completions.d/pollstation.fish",
            "-rw-r--r--",
        ),
    ] {
        assert_eq!(
            entry(path),
            (mode.to_string(), "root/root".to_string()),
            "{path}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for want in [
        "Package: pollstation",
        "Depends: libc6, libgtk-4-1 (>= 4.8), adduser, init-system-helpers (>= 1.50)",
        "conffiles",
        "postinst",
    ] {
        assert!(info.contains(want), "control lacks {want:?}:\n{info}");
    }
    // Debian's own checker: no error and no warning (its info tags are
    // printed for the record).
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--display-info"])
        .arg(&deb)
        .output()
        .expect("lintian (scripts/install-deps test)");
    let said = String::from_utf8_lossy(&lint.stdout).to_string();
    println!("lintian:\n{said}");
    let bad: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(bad.is_empty(), "lintian:\n{said}");
    let package = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Package"));
    assert_eq!(package.trim(), "pollstation");

    // Unpacked into a throwaway root.
    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/pollstation/pollstation.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    for want in [
        "udevadm control --reload",
        "install -d -o pollstation -g pollstation -m 0700 /var/lib/pollstation",
        "adduser pollstation \"$g\"",
        "/etc/pollstation/admin-token",
    ] {
        assert!(postinst.contains(want), "postinst lacks {want:?}");
    }
    // The shipped units are the repo's, and the example config is valid.
    for unit in ["pollstation.service", "pollstation-kiosk.service"] {
        assert_eq!(
            std::fs::read(root.join("lib/systemd/system").join(unit)).unwrap(),
            std::fs::read(repo().join("systemd").join(unit)).unwrap()
        );
    }
    let check = run(Command::new(root.join("usr/bin/pollstation"))
        .arg("check-config")
        .arg(root.join("etc/pollstation/pollstation.toml")));
    assert!(check.contains("data in /var/lib/pollstation"), "{check}");

    // The man pages render, and name every subcommand.
    let page = run(Command::new("man")
        .env("MANWIDTH", "100")
        .arg("-l")
        .arg(root.join("usr/share/man/man1/pollstation.1.gz")));
    for want in ["pollstation", "SYNOPSIS", "check-config", "ctl", "herd"] {
        assert!(
            page.contains(want),
            "man pollstation lacks {want:?}:\n{page}"
        );
    }
    let page = run(Command::new("man")
        .env("MANWIDTH", "100")
        .arg("-l")
        .arg(root.join("usr/share/man/man1/pollstation-run.1.gz")));
    assert!(page.contains("--no-screen"), "{page}");
    let bash =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/pollstation"))
            .unwrap();
    assert!(bash.contains("check-config"), "{bash}");

    // `systemd-analyze verify` in that root: it needs the units the service
    // orders itself against and the programs it runs, so lend it the host's.
    let units = root.join("lib/systemd/system");
    for e in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        let wanted = [".target", ".slice", ".socket", ".service"]
            .iter()
            .any(|s| n.ends_with(s));
        if wanted && !n.starts_with("pollstation") && e.path().is_file() {
            let _ = std::fs::copy(e.path(), units.join(&name));
        }
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let verify = |unit: &str| {
        run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.display()))
            .arg(unit))
    };
    let v = verify("pollstation.service");
    assert!(
        !v.contains("pollstation.service:"),
        "verify complained:\n{v}"
    );
    if Path::new("/usr/bin/cage").exists() {
        std::fs::copy("/usr/bin/cage", root.join("usr/bin/cage")).unwrap();
        let v = verify("pollstation-kiosk.service");
        assert!(
            !v.contains("pollstation-kiosk.service:"),
            "verify complained:\n{v}"
        );
    } else {
        println!("cage is not installed: pollstation-kiosk.service not verified");
    }
}
