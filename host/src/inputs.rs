//! Finding the input images: files, folders (their images, optionally recursively) and glob
//! patterns, resolved against a base folder, deduplicated and sorted.
//!
//! The order is the sort order of each file's key: its path relative to the base folder when
//! it lies inside it (else its full path), so machines that mount the data at different places
//! but run the same config agree on it (sharding relies on this).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::imageio::has_image_extension;

#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    /// The sort key (see the module documentation).
    pub key: String,
}

#[derive(Debug, Default)]
pub struct Inputs {
    pub files: Vec<Input>,
    /// Files in searched folders skipped for not having an image extension.
    pub ignored: usize,
}

/// Expands `specs`. A spec naming a file is taken whatever its extension (the user asked for
/// it; a non-image then fails when decoded); folders and globs contribute files with image
/// extensions only. Hidden files (`.name`) are skipped: atomic writes use such temporaries.
pub fn discover(specs: &[String], base: &Path, recursive: bool) -> Result<Inputs> {
    let mut found = Inputs::default();
    let mut files: Vec<PathBuf> = Vec::new();
    for spec in specs {
        let path = base.join(spec);
        if path.is_file() {
            files.push(path);
        } else if path.is_dir() {
            walk(&path, recursive, &mut files, &mut found.ignored)
                .with_context(|| format!("input {spec}"))?;
        } else if spec.contains(['*', '?', '[']) {
            let pattern = path
                .to_str()
                .with_context(|| format!("input {spec}: pattern is not valid UTF-8"))?;
            let matches =
                glob::glob(pattern).with_context(|| format!("input {spec}: bad glob pattern"))?;
            let mut any = false;
            for m in matches {
                let p = m.with_context(|| format!("input {spec}"))?;
                any = true;
                if p.is_dir() {
                    walk(&p, recursive, &mut files, &mut found.ignored)?;
                } else if has_image_extension(&p) && !is_hidden(&p) {
                    files.push(p);
                } else if !is_hidden(&p) {
                    found.ignored += 1;
                }
            }
            if !any {
                bail!("input {spec}: the pattern matches nothing");
            }
        } else {
            let why = match std::fs::metadata(&path) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && path.symlink_metadata().is_err() =>
                {
                    "no such file or folder".to_string()
                }
                _ => crate::file_check::regular_file(&path).err().unwrap_or_default(),
            };
            bail!("input {spec}: {why} ({})", path.display());
        }
    }
    let mut seen = HashSet::new();
    for path in files {
        // The same file reached twice (a folder and a glob) is processed once.
        let id = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.insert(id) {
            let key = key(&path, base);
            found.files.push(Input { path, key });
        }
    }
    found.files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

fn key(path: &Path, base: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.to_string_lossy().replace('\\', "/")
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn walk(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>, ignored: &mut usize) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            if recursive {
                walk(&path, recursive, files, ignored)?;
            }
        } else if has_image_extension(&path) {
            files.push(path);
        } else {
            *ignored += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_globs_and_files_sorted_and_deduplicated() {
        let dir = std::env::temp_dir().join(format!("host-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/sub")).unwrap();
        for f in ["a/2.png", "a/1.jpg", "a/notes.txt", "a/.hidden.png", "a/sub/3.png", "b.PNG"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let specs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let flat = discover(&specs(&["a"]), &dir, false).unwrap();
        let keys: Vec<&str> = flat.files.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a/1.jpg", "a/2.png"]);
        assert_eq!(flat.ignored, 1);
        let all = discover(&specs(&["a", "a/*.png", "*.PNG"]), &dir, true).unwrap();
        let keys: Vec<&str> = all.files.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a/1.jpg", "a/2.png", "a/sub/3.png", "b.PNG"]);
        assert!(discover(&specs(&["missing"]), &dir, false).is_err());
        assert!(discover(&specs(&["none*.png"]), &dir, false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
