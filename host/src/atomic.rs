//! Atomic file writes: the bytes go to a temporary file in the destination's folder, are
//! flushed to disk, and the file is renamed over the destination. A reader (or a resumed run
//! checking what exists) sees either no file or the whole file, never a partial image.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name: hidden, with a `.tmp` extension (never taken for an image by input
/// discovery), unique per process and call so that concurrent writers never share one.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(dest);
    let result = (|| -> std::io::Result<()> {
        let mut f: File = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", dest.display()))
}

/// Writes `dest` atomically unless it exists: `Ok(false)` (and nothing written) when it does.
/// The check and the write are one step (a no-replace rename), so of two runs racing for one
/// output exactly one writes it and the other is told it exists.
pub fn write_new(dest: &Path, bytes: &[u8]) -> Result<bool> {
    let tmp = temp_path(dest);
    let result = (|| -> std::io::Result<bool> {
        let mut f: File = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match crate::no_replace::rename(&tmp, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("host-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("a.png");
        write(&dest, b"one").unwrap();
        write(&dest, b"second").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"second");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = std::env::temp_dir().join(format!("host-atomic-new-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("a.png");
        assert!(write_new(&dest, b"first").unwrap());
        assert!(!write_new(&dest, b"second").unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
