//! The data directory: created private, trusted only when it is ours.
//!
//! A directory another user can write to (or one they own) could hold
//! planted files: a symlink where the station writes, an admin token with a
//! value of their choosing. So the station refuses such a directory with a
//! message that says how to fix it, creates what it writes with mode 0600,
//! and probes writability with a fresh random name that cannot be a link.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {dir}: {error}")]
    Create { dir: PathBuf, error: io::Error },
    #[error(
        "the data directory {dir} belongs to uid {owner}, not to the station's user (uid {uid}): \
         chown it to the station's user (e.g. chown -R pollstation: {dir})"
    )]
    NotOwned { dir: PathBuf, owner: u32, uid: u32 },
    #[error(
        "the data directory {dir} can be written by other users (mode {mode:o}): chmod 700 {dir}"
    )]
    WritableByOthers { dir: PathBuf, mode: u32 },
    #[error("the data directory {dir} is not writable: {error}")]
    NotWritable { dir: PathBuf, error: io::Error },
}

impl DataDirError {
    /// The OS error behind a failed write probe (read-only, full disk), if any.
    #[must_use]
    pub fn os_error(&self) -> Option<i32> {
        match self {
            DataDirError::NotWritable { error, .. } | DataDirError::Create { error, .. } => {
                error.raw_os_error()
            }
            _ => None,
        }
    }
}

/// The effective user id of this process.
#[must_use]
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Create `dir` (mode 0700) if missing, and check that it is owned by this
/// process's user, not writable by anyone else, and writable by us.
pub fn prepare_data_dir(dir: &Path) -> Result<(), DataDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| DataDirError::Create {
            dir: dir.to_path_buf(),
            error,
        })?;
    let meta = std::fs::metadata(dir).map_err(|error| DataDirError::Create {
        dir: dir.to_path_buf(),
        error,
    })?;
    let uid = euid();
    if meta.uid() != uid {
        return Err(DataDirError::NotOwned {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::WritableByOthers {
            dir: dir.to_path_buf(),
            mode,
        });
    }
    probe_writable(dir)
}

/// Write and remove a file under a fresh random name, created exclusively
/// and never through a symlink: fails early and clearly where SQLite would
/// only say "unable to open database file".
pub fn probe_writable(dir: &Path) -> Result<(), DataDirError> {
    let mut name = [0u8; 8];
    let _ = getrandom::fill(&mut name);
    let probe = dir.join(format!(".pollstation-write-test-{}", hex::encode(name)));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&probe)?;
        f.write_all(b"ok")?;
        drop(f);
        std::fs::remove_file(&probe)
    })();
    result.map_err(|error| DataDirError::NotWritable {
        dir: dir.to_path_buf(),
        error,
    })
}

/// Create a new file only this user can read, refusing to follow a link
/// or to replace anything.
pub fn create_private(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// From now on, files and sockets this process creates are private (mode
/// 0600 / 0700 unless given otherwise): the log, its WAL, the token.
pub fn private_umask() {
    // SAFETY: umask only changes this process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_data_dir_is_private_and_a_shared_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        prepare_data_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_data_dir(&dir).unwrap_err();
        assert!(
            matches!(e, DataDirError::WritableByOthers { mode: 0o777, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 700"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&dir).unwrap();
    }

    #[test]
    fn the_probe_never_writes_through_a_planted_link() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // The old fixed probe name, planted as a link: not used any more.
        std::os::unix::fs::symlink(&victim, t.path().join(".pollstation-write-test")).unwrap();
        probe_writable(t.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A private file is never created through a link either.
        let link = t.path().join("token");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_private(&link).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
