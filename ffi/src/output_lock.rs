//! The advisory lock on an output folder, shared by the plugin's trainer and the host's
//! pipelines so that two runs never write one folder at once: an `flock` on a hidden file in
//! the folder (`.pix2pix.lock`, holding the owner's pid for the error message).
//!
//! The lock file is removed when the last holder lets go, so a finished run leaves nothing
//! behind. Removing a lock file others may have open is safe because every holder checks,
//! once locked, that the path still names the file it locked, and starts over if not. A run
//! killed by SIGKILL leaves the file, unlocked (the kernel drops the lock); the next run takes
//! it over. On NFS, Linux maps `flock` to POSIX byte-range locks, which the server arbitrates.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file of a folder.
pub const LOCK_FILE: &str = ".pix2pix.lock";

/// How a folder is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One run alone (a training run, an unsharded pipeline, `host run`).
    Exclusive,
    /// Runs that cooperate (the shards of one pipeline); no exclusive holder meanwhile.
    Shared,
}

#[derive(Debug)]
pub enum LockError {
    /// Another run holds the folder.
    Busy {
        dir: PathBuf,
        pid: Option<u32>,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Busy { dir, pid: Some(pid) } => {
                write!(f, "output folder {} is in use by another run (pid {pid})", dir.display())
            }
            LockError::Busy { dir, pid: None } => {
                write!(f, "output folder {} is in use by another run", dir.display())
            }
            LockError::Io { path, source } => write!(f, "cannot lock {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}

/// A held lock; dropping it releases the folder.
#[derive(Debug)]
pub struct FolderLock {
    file: File,
    path: PathBuf,
    mode: Mode,
}

impl FolderLock {
    /// Takes `<dir>/<name>` in `mode` (`name`: [`LOCK_FILE`], or another name for a finer lock
    /// such as one shard's) without waiting for another run; a shared holder waits up to 2 s
    /// for the brief exclusive hold of a shard that tidies the folder. `alone` runs while the folder is held
    /// exclusively, even in shared mode when no one else holds it: the moment to tidy what
    /// killed runs left behind. `dir` must exist.
    pub fn acquire(
        dir: &Path,
        name: &str,
        mode: Mode,
        alone: impl FnOnce(),
    ) -> Result<Self, LockError> {
        let path = dir.join(name);
        let io_err = |source| LockError::Io { path: path.clone(), source };
        let mut alone = Some(alone);
        // A few rounds: each retry means a holder removed the file between our open and lock.
        for _ in 0..100 {
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err)?;
            if sys::try_lock(&file, true).map_err(io_err)? {
                if !sys::same_file(&file, &path) {
                    continue;
                }
                if let Some(f) = alone.take() {
                    f();
                }
                record_pid(&file);
                if mode == Mode::Exclusive {
                    return Ok(FolderLock { file, path, mode });
                }
                // Shared: converted below (not atomically: another shard may slip in first).
            } else if mode == Mode::Exclusive {
                return Err(LockError::Busy { dir: dir.to_path_buf(), pid: read_pid(&mut file) });
            }
            // Another shard may hold the folder exclusively for a moment while it tidies:
            // wait for that, not for an exclusive run.
            let mut shared = false;
            for _ in 0..SHARED_WAIT_ROUNDS {
                if sys::try_lock(&file, false).map_err(io_err)? {
                    shared = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if !shared {
                return Err(LockError::Busy { dir: dir.to_path_buf(), pid: read_pid(&mut file) });
            }
            if sys::same_file(&file, &path) {
                return Ok(FolderLock { file, path, mode });
            }
        }
        Err(io_err(io::Error::other("the lock file keeps being replaced")))
    }
}

/// How long a shared holder waits for a brief exclusive hold to end (× 10 ms).
const SHARED_WAIT_ROUNDS: u32 = 200;

fn record_pid(file: &File) {
    // Informational only (for the other run's error message): failures do not matter.
    let mut f = file;
    let _ = f.set_len(0);
    let _ = f.seek(io::SeekFrom::Start(0));
    let _ = writeln!(f, "{}", std::process::id());
}

/// The holder's pid, for the message. A holder writes it just after taking the lock, so a
/// file still empty is read again for a moment.
fn read_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut s = String::new();
        if file.seek(io::SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut s).is_ok() {
            if let Ok(pid) = s.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // The last holder removes the file, while still holding it exclusively (see the module
        // documentation); a shared holder that cannot get it exclusively leaves it to the others.
        let alone =
            self.mode == Mode::Exclusive || sys::try_lock(&self.file, true).unwrap_or(false);
        if alone {
            let _ = std::fs::remove_file(&self.path);
        }
        // Closing the file releases the lock.
    }
}

#[cfg(unix)]
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    /// `flock` without waiting: Ok(false) when another open file holds a conflicting lock.
    /// Called on a file that holds a lock already, it converts that lock.
    pub fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
        loop {
            // SAFETY: `flock` on a descriptor `file` owns and keeps open for the call.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(false),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }

    /// Whether `path` still names the open `file` (it may have been removed and recreated).
    pub fn same_file(file: &File, path: &Path) -> bool {
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

#[cfg(not(unix))]
mod sys {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub fn try_lock(_: &File, _: bool) -> io::Result<bool> {
        Ok(true)
    }
    pub fn same_file(_: &File, path: &Path) -> bool {
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("p2p-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn exclusive_excludes_and_leaves_no_file() {
        let d = temp("excl");
        let mut tidied = false;
        let a = FolderLock::acquire(&d, LOCK_FILE, Mode::Exclusive, || tidied = true).unwrap();
        assert!(tidied);
        let e = FolderLock::acquire(&d, LOCK_FILE, Mode::Exclusive, || panic!("not alone"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "output folder {} is in use by another run (pid {})",
                d.display(),
                std::process::id()
            )
        );
        assert!(FolderLock::acquire(&d, LOCK_FILE, Mode::Shared, || panic!("not alone")).is_err());
        drop(a);
        assert!(!d.join(LOCK_FILE).exists());
        drop(FolderLock::acquire(&d, LOCK_FILE, Mode::Exclusive, || {}).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shared_holders_coexist_and_the_last_removes_the_file() {
        let d = temp("shared");
        let mut first_alone = false;
        let a = FolderLock::acquire(&d, LOCK_FILE, Mode::Shared, || first_alone = true).unwrap();
        let mut second_alone = false;
        let b = FolderLock::acquire(&d, LOCK_FILE, Mode::Shared, || second_alone = true).unwrap();
        assert!(first_alone && !second_alone);
        assert!(FolderLock::acquire(&d, LOCK_FILE, Mode::Exclusive, || {}).is_err());
        drop(a);
        assert!(d.join(LOCK_FILE).exists(), "b still holds it");
        drop(b);
        assert!(!d.join(LOCK_FILE).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
