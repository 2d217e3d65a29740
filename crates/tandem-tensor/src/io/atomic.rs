//! Atomic file replacement: write to a temporary file, fsync, rename over the target.

use super::io_error;
use crate::Result;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer size between the caller's writes and the temporary file.
const BUFFER_BYTES: usize = 1 << 20;

/// How many temporary names are tried before giving up (each is normally free the first time).
const NAME_ATTEMPTS: u32 = 64;

/// Writes a file atomically: the bytes go to a temporary file in the same directory (named after
/// the target with a unique suffix: `.<name>.<pid>-<n>.tmp`), are flushed and fsync'ed, then
/// renamed over the target; on any error (or a panic in `write`) the temporary file is removed
/// and an existing target is left untouched. Errors carry the path.
///
/// Readers of `path` thus see either the old file or the complete new one, never a torn write.
/// An existing target keeps its permissions; when `path` is a symbolic link, the file it points
/// to is replaced and the link is kept.
///
/// ```
/// use std::io::Write;
/// let path = std::env::temp_dir().join(format!("tandem-doc-{}.txt", std::process::id()));
/// tandem_tensor::io::atomic_write(&path, |w| {
///     w.write_all(b"hello").map_err(|e| tandem_tensor::Error::Io {
///         path: "hello".into(),
///         source: e,
///     })
/// })
/// .unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn atomic_write(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let target = resolve_link(path);
    let name = target.file_name().ok_or_else(|| {
        io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
        )
    })?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (file, temp) = create_temp(&dir, name).map_err(|e| io_error(path, e))?;
    let guard = TempGuard(Some(temp));
    if let Ok(meta) = std::fs::metadata(&target) {
        // Keep the permissions of the file being replaced (best effort: a failure here only
        // means the new file gets the default permissions).
        let _ = file.set_permissions(meta.permissions());
    }
    let mut out = BufWriter::with_capacity(BUFFER_BYTES, file);
    write(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| io_error(path, e.into_error()))?;
    file.sync_all().map_err(|e| io_error(path, e))?;
    drop(file);
    guard.commit(&target).map_err(|e| io_error(path, e))?;
    sync_dir(&dir);
    Ok(())
}

/// The file a path finally names when it is a symbolic link (so the link survives the rename),
/// else the path itself.
fn resolve_link(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Creates a new, empty temporary file next to the target, failing rather than reusing a name
/// that exists.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_error = None;
    for _ in 0..NAME_ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}-{n}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(f) => return Ok((f, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "no free temporary file name",
        )
    }))
}

/// Removes the temporary file when dropped, unless it was renamed into place.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    /// Renames the temporary file over `target`.
    fn commit(mut self, target: &Path) -> std::io::Result<()> {
        if let Some(temp) = &self.0 {
            std::fs::rename(temp, target)?;
        }
        self.0 = None;
        Ok(())
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(temp) = self.0.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Makes the rename durable by syncing the directory (Unix only; best effort: the data itself
/// was already synced, and some file systems refuse to sync a directory).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::TempDir;
    use crate::Error;

    fn put(w: &mut dyn Write, bytes: &[u8]) -> Result<()> {
        w.write_all(bytes)
            .map_err(|e| io_error(Path::new("test"), e))
    }

    #[test]
    fn writes_and_replaces() {
        let dir = TempDir::new("atomic-ok");
        let p = dir.path("a.bin");
        atomic_write(&p, |w| put(w, b"first")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        atomic_write(&p, |w| put(w, b"second, longer")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        assert_eq!(dir.entries(), vec!["a.bin".to_string()]);
    }

    #[test]
    fn failure_midway_leaves_the_old_file_and_no_temp() {
        let dir = TempDir::new("atomic-fail");
        let p = dir.path("model.safetensors");
        std::fs::write(&p, b"old contents").unwrap();
        // Enough bytes to go past the write buffer, so some reach the temporary file.
        let big = vec![7u8; BUFFER_BYTES * 3];
        let err = atomic_write(&p, |w| {
            put(w, &big)?;
            assert_eq!(
                dir.entries().len(),
                2,
                "the temp file exists during the write"
            );
            Err(Error::invalid("test", "failed half-way"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("failed half-way"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
        assert_eq!(dir.entries(), vec!["model.safetensors".to_string()]);

        // A panic in the closure cleans up too.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = atomic_write(&p, |w| {
                put(w, b"partial")?;
                panic!("boom");
            });
        }));
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
        assert_eq!(dir.entries(), vec!["model.safetensors".to_string()]);
    }

    #[test]
    fn errors_carry_the_path() {
        let dir = TempDir::new("atomic-err");
        let p = dir.path("missing-dir").join("x.npy");
        let e = atomic_write(&p, |w| put(w, b"x")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("missing-dir"), "{e}");
        let e = atomic_write(dir.path(".."), |w| put(w, b"x")).unwrap_err();
        assert!(e.to_string().contains("names no file"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn keeps_permissions_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("atomic-perm");
        let real = dir.path("real.npy");
        std::fs::write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path("link.npy");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        atomic_write(&link, |w| put(w, b"new")).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
