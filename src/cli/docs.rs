//! Man pages and shell completions, generated from the clap definitions so
//! they never drift from `--help` (`pollstation docs --out DIR`, hidden; the
//! Debian package runs it).
//!
//! Writes `DIR/man/pollstation.1` and one `pollstation-<sub>.1` per
//! subcommand (nested ones as `pollstation-<sub>-<subsub>.1`), and
//! `DIR/completions/` for bash, zsh and fish.

use std::path::Path;

use clap::CommandFactory;

use super::Cli;

/// Write the man pages and completions under `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn write(out: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let mut written = Vec::new();
    pages(&cmd, "pollstation", &man, &mut written)?;
    let comp = out.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut c = Cli::command();
        written.push(clap_complete::generate_to(
            shell,
            &mut c,
            "pollstation",
            &comp,
        )?);
    }
    Ok(written)
}

/// The page of `cmd` as `name`, then its subcommands'.
fn pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    let page = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_every_subcommand_and_completions_for_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "pollstation.1",
            "pollstation-run.1",
            "pollstation-check-config.1",
            "pollstation-demo.1",
            "pollstation-ctl.1",
            "pollstation-sim.1",
            "pollstation-herd.1",
            "pollstation-herd-init.1",
            "pollstation.bash",
            "_pollstation",
            "pollstation.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("docs")), "{names:?}");
        let run = std::fs::read_to_string(dir.path().join("man/pollstation-run.1")).unwrap();
        assert!(run.contains("\\-\\-no\\-screen"), "{run}");
    }
}
