//! Claiming `[output] dir` for a run: the folder is locked for the whole run (two runs in one
//! folder would interleave `losses.csv` and `latest/`), and a new run does not start over one
//! that is there unless asked to (`[output] overwrite = true`); resuming is the other way on.

use std::path::Path;

use pix2pix_ffi::output_lock::{FolderLock, LockError, Mode, LOCK_FILE};

use super::state::LATEST;
use crate::error::{Error, Result};

/// What marks a folder as holding a run.
fn run_marks(dir: &Path) -> Vec<String> {
    let mut marks: Vec<String> = [LATEST, "losses.csv"]
        .iter()
        .filter(|m| dir.join(m).exists())
        .map(|m| m.to_string())
        .collect();
    let steps = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name().to_string_lossy().starts_with("step_") && e.path().is_dir()
                })
                .count()
        })
        .unwrap_or(0);
    if steps > 0 {
        marks.push(format!("{steps} step_* folders"));
    }
    marks
}

/// Creates and locks `dir`; fails if another run holds it, or if it holds a run and the new
/// one neither resumes nor overwrites it. The lock is released when the guard is dropped.
pub fn claim(dir: &Path, resume: bool, overwrite: bool) -> Result<FolderLock> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock =
        FolderLock::acquire(dir, LOCK_FILE, Mode::Exclusive, || {}).map_err(|e| match e {
            LockError::Io { path, source } => Error::io(path, source),
            busy => Error::Config(busy.to_string()),
        })?;
    if !resume && !overwrite {
        let marks = run_marks(dir);
        if !marks.is_empty() {
            return Err(Error::Config(format!(
                "output folder {} holds a training run ({}): resume it (host train --resume, P2P_TRAIN_RESUME) or replace it \
                 (host train --overwrite, `[output] overwrite = true`)",
                dir.display(),
                marks.join(", ")
            )));
        }
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_second_run_and_an_existing_one() {
        let dir = std::env::temp_dir().join(format!("p2p-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = claim(&dir, false, false).unwrap();
        let busy = claim(&dir, false, true).unwrap_err().to_string();
        assert!(busy.contains("is in use by another run"), "{busy}");
        drop(first);
        std::fs::write(dir.join("losses.csv"), "step\n").unwrap();
        let e = claim(&dir, false, false).unwrap_err().to_string();
        assert!(
            e.contains("holds a training run (losses.csv)")
                && e.contains("--resume")
                && e.contains("overwrite = true"),
            "{e}"
        );
        drop(claim(&dir, true, false).unwrap());
        drop(claim(&dir, false, true).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
