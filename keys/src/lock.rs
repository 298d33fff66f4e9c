//! An exclusive lock on a data directory.
//!
//! The record `seq`, the key files and the pins must have one writer at a
//! time: two processes on one directory could sign two records with the same
//! `seq`, or one could rotate a key while the other keeps using the old one
//! and rewrites the pins from a stale copy. `pqnode run` holds this lock for
//! its whole life, and the `pqnode keys` commands that write (generate,
//! rotate, export-record) hold it while they work; a second one is refused
//! with a message naming the holder.
//!
//! The lock is an advisory `flock`-style lock on `pqnode.lock` (through
//! `std::fs::File::try_lock`): the kernel drops it when the holder exits,
//! however it exits, so a crash never leaves a stale lock behind. The file
//! stays in the directory; it holds only the holder's PID, command and start
//! time, for the error message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::{self, FsError, io_err};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "pqnode.lock";

/// Longest holder description read back from the lock file.
const MAX_HOLDER_LEN: u64 = 256;

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another pqnode process ({holder}); stop it first, \
         or use another --data-dir"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// What the lock file says about the holder.
        holder: String,
    },
    /// The directory or the lock file could not be used.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    // Held for its lock; closing the file releases it.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `dir` (created with mode 0700 if missing) for
    /// `command`, a short description such as `"run"`, or fails at once if
    /// another process holds it.
    pub fn acquire(dir: &Path, command: &str, insecure: bool) -> Result<Self, LockError> {
        fsutil::ensure_private_dir(dir, insecure)?;
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(fsutil::FILE_MODE);
            // A planted symbolic link must not redirect the lock (and our
            // writes to it) elsewhere.
            options.custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e).into()),
        }
        let holder = format!(
            "pid {}, `pqnode {command}`, since unix time {}",
            std::process::id(),
            crate::time::unix_now()
        );
        file.set_len(0).map_err(io_err("write lock file", &path))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(io_err("write lock file", &path))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The holder's description, printable and bounded; never fails.
fn read_holder(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(MAX_HOLDER_LEN).read_to_end(&mut bytes));
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "holder unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data, "run", false).unwrap();
        let err = DataDirLock::acquire(&data, "keys rotate", false).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("`pqnode run`"),
            "{msg}"
        );
        assert!(msg.contains("in use by another pqnode process"), "{msg}");
        drop(first);
        let second = DataDirLock::acquire(&data, "keys rotate", false).unwrap();
        let text = std::fs::read_to_string(second.path()).unwrap();
        assert!(text.contains("`pqnode keys rotate`"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(second.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&data).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_in_place_of_the_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let err = DataDirLock::acquire(dir.path(), "run", false).unwrap_err();
        assert!(matches!(err, LockError::Fs(_)), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = DataDirLock::acquire(dir.path(), "run", false).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert!(!dir.path().join(LOCK_FILE).exists());
    }
}
