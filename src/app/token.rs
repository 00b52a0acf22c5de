//! The admin token: a systemd credential (`admin-token`), the configured
//! `[http] admin_token_file`, or `<data_dir>/admin-token`, created on first
//! start with mode 0600. A token file other users can read or write is
//! refused, never used: its value might be theirs.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::sys::secret::{self, SecretSource};

/// The shortest token accepted.
const MIN_LEN: usize = 16;

/// Find or make the admin token.
pub fn admin_token(data_dir: &Path, configured: Option<&Path>) -> anyhow::Result<String> {
    let source = SecretSource {
        what: "admin token",
        setting: "[http] admin_token_file",
        credential: "admin-token",
        file: configured,
    };
    if let Some(p) = source.path() {
        return read_token(&p);
    }
    let p = data_dir.join("admin-token");
    if p.exists() || p.symlink_metadata().is_ok() {
        return read_token(&p);
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the token: {e}"))?;
    let token = hex::encode(bytes);
    let mut f = crate::sys::fs::create_private(&p)
        .with_context(|| format!("cannot create the admin token file {}", p.display()))?;
    writeln!(f, "{token}").with_context(|| format!("cannot write {}", p.display()))?;
    f.sync_all()?;
    tracing::info!(path = %p.display(), "created a new admin token");
    Ok(token)
}

fn read_token(p: &Path) -> anyhow::Result<String> {
    let t = secret::read_file(p).context("the admin token cannot be used")?;
    let t = t.trim().to_string();
    anyhow::ensure!(
        t.len() >= MIN_LEN,
        "the admin token in {} is shorter than {MIN_LEN} characters",
        p.display()
    );
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_world_writable_token_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("admin-token");
        std::fs::write(&p, "attacker-chosen-value-1234\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = admin_token(t.path(), None).unwrap_err();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            admin_token(t.path(), None).unwrap(),
            "attacker-chosen-value-1234"
        );
    }

    #[test]
    fn a_new_token_is_private_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let a = admin_token(t.path(), None).unwrap();
        let mode = std::fs::metadata(t.path().join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(admin_token(t.path(), None).unwrap(), a);
    }
}
