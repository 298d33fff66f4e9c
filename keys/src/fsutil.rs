//! File-system helpers shared by the key store and the pin store: atomic
//! writes (temporary file in the same directory, fsync, rename, fsync of the
//! directory), private modes and permission checks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Mode of every file this crate writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the data directory when this crate creates it.
pub const DIR_MODE: u32 = 0o700;
/// Largest file this crate ever reads (key files are a few KiB; pins files
/// are bounded by this too), so a planted huge file cannot exhaust memory.
pub const MAX_FILE_LEN: u64 = 4 * 1024 * 1024;

/// Prefix of temporary files; they are never read back.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// A file-system failure, with the path it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file that group or others may access, refused.
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}); fix it with `chmod 600 {path}` \
         (or pass --insecure-permissions to load it anyway)"
    )]
    InsecureFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory that group or others may write into, refused.
    #[error(
        "directory {path} is writable by group or others (mode {mode:04o}); fix it with \
         `chmod 700 {path}` (or pass --insecure-permissions)"
    )]
    InsecureDir {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is a symbolic link or not a regular file.
    #[error("{path} is not a regular file (symbolic links are refused)")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// A file larger than [`MAX_FILE_LEN`].
    #[error("{path} is too large ({len} bytes, at most {max})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FsError + use<> {
    let path = path.to_path_buf();
    move |source| FsError::Io { op, path, source }
}

/// Creates `dir` (and its parents) if missing, giving a newly created leaf
/// directory mode 0700; checks an existing one unless `insecure`.
pub fn ensure_private_dir(dir: &Path, insecure: bool) -> Result<(), FsError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => check_dir(dir, insecure),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
            }
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(DIR_MODE);
            }
            match builder.create(dir) {
                Ok(()) => Ok(()),
                // Lost a race with another creator: check what is there.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_dir(dir, insecure),
                Err(e) => Err(io_err("create directory", dir)(e)),
            }
        }
        Err(e) => Err(io_err("inspect directory", dir)(e)),
    }
}

/// Refuses a directory that group or others may write into (they could swap
/// key files), unless `insecure`.
pub fn check_dir(dir: &Path, insecure: bool) -> Result<(), FsError> {
    let meta = fs::metadata(dir).map_err(io_err("inspect directory", dir))?;
    if !meta.is_dir() {
        return Err(FsError::Io {
            op: "use as directory",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if !insecure && mode & 0o022 != 0 {
            return Err(FsError::InsecureDir {
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = insecure;
    Ok(())
}

/// Whether `path` exists (as anything, a dangling symbolic link included).
pub fn exists(path: &Path) -> Result<bool, FsError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

/// Reads a private file: refuses symbolic links, non-regular files, files
/// larger than [`MAX_FILE_LEN`] and (unless `insecure`) files that group or
/// others may access. Returns `None` if the file does not exist.
pub fn read_private(path: &Path, insecure: bool) -> Result<Option<Vec<u8>>, FsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.file_type().is_file() {
        return Err(FsError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if !insecure && mode & 0o077 != 0 {
            return Err(FsError::InsecureFile {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = insecure;
    if meta.len() > MAX_FILE_LEN {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
            max: MAX_FILE_LEN,
        });
    }
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // `take` bounds the read even if the file grew since `metadata`.
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    if buf.len() as u64 > MAX_FILE_LEN {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
            max: MAX_FILE_LEN,
        });
    }
    Ok(Some(buf))
}

/// Writes `bytes` to `path` atomically: a new temporary file (mode 0600) in
/// the same directory, fsync, rename over `path`, fsync of the directory. A
/// crash leaves either the old file or the new one, plus at worst a stray
/// temporary file that nothing reads.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let tmp = temp_path(path)?;
    let result = write_temp(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename into place", path)));
    if result.is_err() {
        // Best effort: the temporary file holds nothing a reader would use.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
}

/// Like [`write_atomic`] but never replaces an existing file, even one
/// created concurrently: the finished temporary file is hard-linked to
/// `path` (which fails if `path` exists), then unlinked. Returns
/// `Ok(false)`, writing nothing, when `path` already exists.
pub fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<bool, FsError> {
    let dir = parent_dir(path);
    let tmp = temp_path(path)?;
    let result = write_temp(&tmp, bytes).and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("link into place", path)(e)),
    });
    // The temporary name is either a second link to `path` or garbage.
    let _ = fs::remove_file(&tmp);
    let created = result?;
    sync_dir(&dir)?;
    Ok(created)
}

fn temp_path(path: &Path) -> Result<PathBuf, FsError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| FsError::Io {
        op: "draw random temporary name for",
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(parent_dir(path).join(format!("{TEMP_PREFIX}{name}.{}", hex::encode(suffix))))
}

fn write_temp(tmp: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let mut file = options.open(tmp).map_err(io_err("create", tmp))?;
    file.write_all(bytes).map_err(io_err("write", tmp))?;
    file.sync_all().map_err(io_err("fsync", tmp))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", dir))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_private_file_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(read_private(&path, false).unwrap().unwrap(), b"one");
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // no temporary file left behind
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(write_new_atomic(&path, b"first").unwrap());
        assert!(!write_new_atomic(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left"
        );
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_private(&dir.path().join("nope"), false)
                .unwrap()
                .is_none()
        );
    }

    #[cfg(unix)]
    #[test]
    fn loose_modes_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_atomic(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private(&path, false).unwrap_err();
        assert!(matches!(err, FsError::InsecureFile { mode: 0o640, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert_eq!(read_private(&path, true).unwrap().unwrap(), b"x");

        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_dir(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        check_dir(dir.path(), true).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        write_atomic(&target, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_private(&link, false),
            Err(FsError::NotRegularFile { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn new_dir_is_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        ensure_private_dir(&data, false).unwrap();
        let mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&data, false).unwrap();
    }
}
