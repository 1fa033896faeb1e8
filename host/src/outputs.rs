//! Keeping a run's outputs where they belong, checked before any work: every output path stays
//! inside the output folder, no output is one of the inputs, a pipeline's earlier outputs are
//! not taken for new inputs, and the output folder is locked against other runs (and tidied of
//! what killed runs left behind) while the run writes.
//!
//! Earlier outputs: when the output folder lies among the inputs (the same folder, or inside a
//! searched one), a file there that is the planned output of another input is left out of the
//! inputs, so a rerun never translates its own results (`a_out.png` into `a_out_out.png`). The
//! rule needs no pattern matching and holds for every name template; an output whose input has
//! since been removed is no longer recognised and is taken as an input again.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use pix2pix_ffi::output_lock::{FolderLock, Mode, LOCK_FILE};

use crate::batch::runner::Output;
use crate::inputs::Inputs;
use crate::shard::Shard;

/// A file's identity: device and inode, so that hard links and symlinks to an input count as
/// the input.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Leaves out the inputs that are planned outputs of other inputs (see the module
/// documentation); returns how many.
pub fn without_own_outputs(found: &mut Inputs, output: &Output, model: &str) -> usize {
    let Output::Dir { .. } = output else { return 0 };
    let ids: Vec<Option<(u64, u64)>> = found.files.iter().map(|f| identity(&f.path)).collect();
    let mut outputs: HashSet<(u64, u64)> = HashSet::new();
    for (i, f) in found.files.iter().enumerate() {
        if let Some(out) = identity(&output.path_for(&f.path, i, model)) {
            if Some(out) != ids[i] {
                outputs.insert(out);
            }
        }
    }
    let before = found.files.len();
    let mut ids = ids.into_iter();
    found.files.retain(|_| !ids.next().flatten().is_some_and(|id| outputs.contains(&id)));
    before - found.files.len()
}

/// Why a rendered output name would leave the output folder, if it would.
fn escapes(rendered: &str) -> Option<&'static str> {
    let path = Path::new(rendered);
    if path.file_name().is_none() {
        return Some("it names no file");
    }
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return Some("it is an absolute path"),
            Component::ParentDir => return Some("it has a `..` component"),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    None
}

/// The nearest existing folder at or above `path`, resolved.
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find_map(|a| std::fs::canonicalize(a).ok().filter(|c| c.is_dir()))
}

/// Checks every planned output: inside the output folder (after symlinks already there), and
/// not one of the inputs.
pub fn check(output: &Output, inputs: &[(usize, &Path)], model: &str) -> Result<()> {
    let by_id: HashMap<(u64, u64), &Path> =
        inputs.iter().filter_map(|&(_, p)| identity(p).map(|id| (id, p))).collect();
    let root = match output {
        Output::Dir { dir, .. } => existing_ancestor(dir),
        Output::File(_) => None,
    };
    for &(index, path) in inputs {
        let out = output.path_for(path, index, model);
        if let Output::Dir { dir, name } = output {
            let rendered = name.render(path, index, model);
            if let Some(why) = escapes(&rendered) {
                bail!(
                    "output.name {:?} gives {rendered:?} for {}: {why}; outputs must stay inside output.dir {}",
                    name.source(),
                    path.display(),
                    dir.display()
                );
            }
            let parent = out.parent().unwrap_or(dir);
            if let (Some(root), Some(at)) = (&root, existing_ancestor(parent)) {
                if !at.starts_with(root) {
                    bail!(
                        "output.name {:?} gives {rendered:?} for {}, which resolves to {} outside output.dir {} (through a symbolic link)",
                        name.source(),
                        path.display(),
                        at.display(),
                        dir.display()
                    );
                }
            }
        }
        if let Some(input) = identity(&out).and_then(|id| by_id.get(&id)) {
            bail!(
                "the output {} is the input {}: refusing to overwrite an input; choose another output {}",
                out.display(),
                input.display(),
                if matches!(output, Output::Dir { .. }) { "folder or name" } else { "file" }
            );
        }
    }
    Ok(())
}

/// The locks a run holds on its output folder until dropped.
pub struct Locks {
    _folder: Option<FolderLock>,
    _shard: Option<FolderLock>,
}

/// Takes the output folder (created if needed) for this run: exclusively, or shared with the
/// other shards of a sharded pipeline while this shard's own lock is exclusive. Whoever finds
/// the folder free first removes temporary files that killed runs left in the folders the
/// outputs go to. A single output file is not locked (unrelated runs may write beside it);
/// only its own stale temporaries are removed.
pub fn lock(
    output: &Output,
    inputs: &[(usize, &Path)],
    model: &str,
    shard: Option<Shard>,
) -> Result<Locks> {
    let folders = || -> Vec<PathBuf> {
        let dirs: HashSet<PathBuf> = inputs
            .iter()
            .filter_map(|&(i, p)| output.path_for(p, i, model).parent().map(Path::to_path_buf))
            .collect();
        dirs.into_iter().collect()
    };
    let dir = match output {
        Output::File(file) => {
            remove_stale_temps(
                &[file.parent().unwrap_or(Path::new(".")).to_path_buf()],
                file.file_name().and_then(|n| n.to_str()),
            );
            return Ok(Locks { _folder: None, _shard: None });
        }
        Output::Dir { dir, .. } => dir,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = if shard.is_some() { Mode::Shared } else { Mode::Exclusive };
    let folder =
        FolderLock::acquire(dir, LOCK_FILE, mode, || remove_stale_temps(&folders(), None))?;
    let shard = match shard {
        Some(s) => Some(FolderLock::acquire(
            dir,
            &format!(".pix2pix.shard-{}-of-{}.lock", s.index, s.count),
            Mode::Exclusive,
            || {},
        )?),
        None => None,
    };
    Ok(Locks { _folder: Some(folder), _shard: shard })
}

/// The pid in one of [`crate::atomic`]'s temporary names, `.NAME.PID-N.tmp`.
fn temp_pid(file_name: &str) -> Option<(&str, u32)> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, tag) = rest.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    if name.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, pid.parse().ok()?))
}

fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes our temporary files whose writer is gone (killed mid-write), in `dirs`; with
/// `only`, just those of that output name.
fn remove_stale_temps(dirs: &[PathBuf], only: Option<&str>) {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((output, pid)) = name.to_str().and_then(temp_pid) else {
                continue;
            };
            if only.is_some_and(|o| o != output)
                || alive(pid)
                || !e.file_type().is_ok_and(|t| t.is_file())
            {
                continue;
            }
            if std::fs::remove_file(e.path()).is_ok() {
                eprintln!("removed {}, left by an interrupted run", e.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_and_escapes() {
        assert_eq!(temp_pid(".a_out.png.1234-7.tmp"), Some(("a_out.png", 1234)));
        assert_eq!(temp_pid(".a.png.x-7.tmp"), None);
        assert_eq!(temp_pid("a.png.12-7.tmp"), None);
        assert_eq!(temp_pid(".pix2pix.lock"), None);
        assert_eq!(escapes("x/../../y.png"), Some("it has a `..` component"));
        assert_eq!(escapes("/tmp/y.png"), Some("it is an absolute path"));
        assert_eq!(escapes("sub/./y.png"), None);
        assert!(alive(std::process::id()));
    }
}
