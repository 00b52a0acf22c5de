//! Secrets (the admin token, anyMeta's OAuth keys, the XMPP password, herd
//! keys): read from a configured file, else from a systemd credential
//! (`LoadCredential=` puts it in `$CREDENTIALS_DIRECTORY`). A file that other
//! users can read or write is refused with the fix, never used.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no {what}: set {setting} or the systemd credential {credential}")]
    Missing {
        what: &'static str,
        setting: &'static str,
        credential: &'static str,
    },
    #[error("cannot read {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("{} is readable or writable by other users (mode {mode:o}): chmod 600 it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
}

/// Where a secret is looked for.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// What it is, for messages: "the XMPP password".
    pub what: &'static str,
    /// The config key that names its file: "[xmpp] password_file".
    pub setting: &'static str,
    /// The systemd credential's name.
    pub credential: &'static str,
    /// The configured file, if any (it wins over the credential).
    pub file: Option<&'a Path>,
}

impl SecretSource<'_> {
    /// The file the secret is read from: the configured one, else the
    /// credential when systemd passed one.
    #[must_use]
    pub fn path(&self) -> Option<PathBuf> {
        if let Some(f) = self.file {
            return Some(f.to_path_buf());
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        let p = Path::new(&dir).join(self.credential);
        p.exists().then_some(p)
    }

    /// Read the secret, trimmed of its final line break; refused when the
    /// file is exposed to other users or empty.
    pub fn read(&self) -> Result<String, SecretError> {
        let path = self.path().ok_or(SecretError::Missing {
            what: self.what,
            setting: self.setting,
            credential: self.credential,
        })?;
        read_file(&path)
    }
}

/// Refuse a secret file others may read or write.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|error| SecretError::Unreadable {
        path: path.to_path_buf(),
        error,
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Read a private secret file.
pub fn read_file(path: &Path) -> Result<String, SecretError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|error| SecretError::Unreadable {
        path: path.to_path_buf(),
        error,
    })?;
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.trim().is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_exposed_or_empty_secret_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = SecretSource {
            what: "the XMPP password",
            setting: "[xmpp] password_file",
            credential: "pollstation-xmpp-password",
            file: Some(&p),
        };
        let e = src.read().unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(src.read().unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(src.read(), Err(SecretError::Empty { .. })));
        let none = SecretSource { file: None, ..src };
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            assert!(matches!(none.read(), Err(SecretError::Missing { .. })));
        }
    }
}
