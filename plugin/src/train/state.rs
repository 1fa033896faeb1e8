//! Checkpoint folders: `<output.dir>/latest/` and `<output.dir>/step_NNNNNNN/`, each holding
//! `generator.safetensors` and `discriminator.safetensors` (the reference key layout, so
//! PyTorch loads them) and `state.safetensors` (both Adam states, the step, the epoch, the seed
//! that with the step is the whole RNG state, and the config text in the metadata).
//!
//! A folder is written whole or not at all: its files go into a hidden temporary sibling, are
//! synced, and the folder is renamed into place; an existing folder is first renamed aside and
//! removed after the swap. A kill at any moment leaves either the previous folder or the new
//! one (if it falls between the two renames, [`recover`] puts the previous one back), and
//! never a partial file inside a checkpoint folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::trainer::Trainer;
use crate::checkpoint::{save_safetensors, write_atomic, Checkpoint};
use crate::error::{Error, Result};

pub const GENERATOR: &str = "generator.safetensors";
pub const DISCRIMINATOR: &str = "discriminator.safetensors";
pub const STATE: &str = "state.safetensors";
pub const LATEST: &str = "latest";
const FORMAT: &str = "pix2pix-train-state/1";

/// `step_0000150`.
pub fn step_name(step: u64) -> String {
    format!("step_{step:07}")
}

/// Where a run stands, besides the weights and the optimiser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// Steps completed.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    pub seed: u64,
    pub steps_per_epoch: u64,
    pub config_text: String,
}

/// A file of a checkpoint folder and the function that writes it to a given path.
pub type FileWriter<'a> = (&'a str, Box<dyn Fn(&Path) -> Result<()> + 'a>);

fn tmp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", std::process::id())
}
fn old_name(name: &str) -> String {
    format!(".{name}.old-{}", std::process::id())
}

fn sync_dir(dir: &Path) {
    // Makes the renames durable; not every platform can open a folder, hence best effort.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes the folder `<dir>/<name>` atomically from `files`. On any failure the temporary
/// folder is removed and `<dir>/<name>` is left as it was.
pub fn write_folder(dir: &Path, name: &str, files: &[FileWriter]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(tmp_name(name));
    let target = dir.join(name);
    let result = (|| -> Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for (file, write) in files {
            write(&tmp.join(file))?;
        }
        sync_dir(&tmp);
        install(&tmp, &target, &dir.join(old_name(name)))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    sync_dir(dir);
    result.map(|_| target)
}

/// Moves a finished temporary folder to `target`, replacing what is there.
fn install(tmp: &Path, target: &Path, old: &Path) -> Result<()> {
    if !target.exists() {
        return std::fs::rename(tmp, target).map_err(|e| Error::io(target, e));
    }
    if old.exists() {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    std::fs::rename(target, old).map_err(|e| Error::io(target, e))?;
    if let Err(e) = std::fs::rename(tmp, target) {
        let _ = std::fs::rename(old, target);
        return Err(Error::io(target, e));
    }
    std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))
}

/// Tidies `<dir>` after an interrupted save: a checkpoint folder renamed aside but not replaced
/// is put back (and said so through `note`), and leftover temporary folders are removed.
pub fn recover(dir: &Path, note: &mut dyn FnMut(&str)) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        let Some(rest) = n.strip_prefix('.') else { continue };
        let path = dir.join(n);
        if let Some((name, _)) = rest.rsplit_once(".old-") {
            let target = dir.join(name);
            if !target.exists() {
                note(&format!("warning: restoring {} from an interrupted save", target.display()));
                std::fs::rename(&path, &target).map_err(|e| Error::io(&target, e))?;
                continue;
            }
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        } else if rest.contains(".tmp-") && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

fn scalar_i64(v: i64) -> Result<Tensor> {
    Ok(Tensor::new(&[v], &Device::Cpu)?)
}

/// The bytes of `state.safetensors`.
pub fn state_bytes(trainer: &Trainer, run: &RunState) -> Result<Vec<u8>> {
    let mut tensors = trainer.optimizer_tensors()?;
    tensors.push(("run.step".into(), scalar_i64(run.step as i64)?));
    tensors.push(("run.epoch".into(), scalar_i64(run.epoch as i64)?));
    tensors.push(("run.seed".into(), scalar_i64(run.seed as i64)?));
    tensors.push(("run.steps_per_epoch".into(), scalar_i64(run.steps_per_epoch as i64)?));
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), run.config_text.clone()),
        (
            "rng".to_string(),
            "counter-based: every draw derives from (run.seed, stream, counter); see train/rng.rs"
                .to_string(),
        ),
    ]);
    safetensors::tensor::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| Error::invalid("training state", format!("cannot serialise: {e}")))
}

/// Saves the training state as the folders `names` of `dir` (written once, hard-linked for the
/// others, copied where links are not possible).
pub fn save(
    dir: &Path,
    names: &[String],
    trainer: &Trainer,
    run: &RunState,
) -> Result<Vec<PathBuf>> {
    let g = trainer.generator_tensors()?;
    let d = trainer.discriminator_tensors()?;
    let state = state_bytes(trainer, run)?;
    let mut out: Vec<PathBuf> = Vec::new();
    for name in names {
        let first = out.first().cloned();
        let files: Vec<FileWriter> = [GENERATOR, DISCRIMINATOR, STATE]
            .into_iter()
            .map(|file| -> FileWriter {
                let (g, d, state, first) = (&g, &d, &state, first.clone());
                (
                    file,
                    Box::new(move |path: &Path| {
                        if let Some(src) = &first {
                            let src = src.join(file);
                            if std::fs::hard_link(&src, path).is_ok() {
                                return Ok(());
                            }
                            std::fs::copy(&src, path).map_err(|e| Error::io(path, e))?;
                            return Ok(());
                        }
                        match file {
                            GENERATOR => save_safetensors(path, g, candle_core::DType::F32),
                            DISCRIMINATOR => save_safetensors(path, d, candle_core::DType::F32),
                            _ => write_atomic(path, state),
                        }
                    }),
                )
            })
            .collect();
        out.push(write_folder(dir, name, &files)?);
    }
    Ok(out)
}

/// A checkpoint folder, read back.
pub struct Loaded {
    pub generator: Checkpoint,
    pub discriminator: Checkpoint,
    pub run: RunState,
    /// The optimiser tensors (`opt_g.*`, `opt_d.*`).
    pub optimizer: HashMap<String, Tensor>,
}

pub fn load(folder: &Path) -> Result<Loaded> {
    let generator = Checkpoint::load(folder.join(GENERATOR))?;
    let discriminator = Checkpoint::load(folder.join(DISCRIMINATOR))?;
    let path = folder.join(STATE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::checkpoint(&path, format!("not a valid safetensors file: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::checkpoint(
            &path,
            format!(
                "not a training state of this version (format {:?}, {FORMAT} expected)",
                meta.get("format")
            ),
        ));
    }
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    let mut int = |key: &str| -> Result<i64> {
        let t = tensors
            .remove(key)
            .ok_or_else(|| Error::checkpoint(&path, format!("missing `{key}`")))?;
        let v = t.to_dtype(candle_core::DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        v.first().copied().ok_or_else(|| Error::checkpoint(&path, format!("`{key}` is empty")))
    };
    let run = RunState {
        step: int("run.step")? as u64,
        epoch: int("run.epoch")? as u64,
        seed: int("run.seed")? as u64,
        steps_per_epoch: int("run.steps_per_epoch")? as u64,
        config_text: meta.get("config").cloned().unwrap_or_default(),
    };
    Ok(Loaded { generator, discriminator, run, optimizer: tensors })
}
