//! Checkpoint I/O in the reference key layout: safetensors (read and write) and PyTorch `.pth`
//! state dicts (read), with errors that name the file and the tensor.
//!
//! Reading is built for hostile files (`ReadLimits`): only regular files are opened, the pickle
//! of a `.pth` runs on a bounded machine that shares instead of copying and never recurses, and
//! every declared size is checked against the file and the limits before it is allocated.
//!
//! Every tensor is held as f32 (f16/bf16/f64 converted; int64 `num_batches_tracked` too) and
//! written back in the reference dtypes, so PyTorch's `load_state_dict` takes our files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use source::Source;

mod average;
mod decode;
mod limits;
pub mod pickle;
mod pth;
mod safetensors_reader;
mod source;

pub use average::average;
pub use limits::{physical_memory, PickleLimits, ReadLimits};

/// A state dict: names → f32 tensors, remembering the file it came from. Clones share the
/// tensors.
#[derive(Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a `.safetensors` or a PyTorch `.pth` (zip) file, told apart by content, within the
    /// default [`ReadLimits`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with_limits(path, &ReadLimits::default())
    }

    /// [`Checkpoint::load`] within `limits`. Only a regular file is opened (a FIFO, device,
    /// directory or symlink loop is refused with the reason); every size the file declares is
    /// checked against the file and the limits before anything is allocated; a non-finite
    /// weight is an error naming the tensor.
    pub fn load_with_limits(path: impl AsRef<Path>, limits: &ReadLimits) -> Result<Self> {
        let path = path.as_ref();
        let file = source::open_regular(path)?;
        // Tensor by tensor, never the whole file in memory: loading peaks at the weights plus
        // one conversion chunk.
        let tensors = read_any(path, &file, limits)?;
        Self::from_tensors(path, tensors)
    }

    /// Reads safetensors from memory (the embedded default model).
    pub fn from_safetensors_bytes(name: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self> {
        let name = name.into();
        let tensors = safetensors_reader::read(&name, bytes, &ReadLimits::default())?;
        Self::from_tensors(name, tensors)
    }

    /// Reads a `.safetensors` or `.pth` file's bytes from memory (`name` names it in errors).
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: &[u8], limits: &ReadLimits) -> Result<Self> {
        let name = name.into();
        let tensors = read_any(&name, bytes, limits)?;
        Self::from_tensors(name, tensors)
    }

    /// Wraps tensors already in memory (a training state, an embedded model).
    pub fn from_tensors(
        path: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Result<Self> {
        let path = path.into();
        let mut map = BTreeMap::new();
        for (name, t) in tensors {
            // DataParallel saves prefix every key with `module.`.
            let name = name.strip_prefix("module.").map(str::to_string).unwrap_or(name);
            map.insert(name, t.to_dtype(DType::F32)?);
        }
        if map.is_empty() {
            return Err(Error::checkpoint(&path, "holds no tensors"));
        }
        Ok(Self { path, tensors: map })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.dims())
    }
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }
    /// Keeps only the tensors under `prefix.`, without it (`generator.` in a training state).
    pub fn sub(&self, prefix: &str) -> Result<Checkpoint> {
        let p = format!("{prefix}.");
        let t = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone())));
        Checkpoint::from_tensors(self.path.clone(), t)
    }

    /// Builds a network from this file. Shape mismatches and missing tensors are errors naming
    /// the file, the tensor and both shapes; tensors the network does not use are an error too,
    /// since they mean the file holds a different architecture.
    pub fn build<T>(&self, build: impl FnOnce(VarBuilder) -> candle_core::Result<T>) -> Result<T> {
        let backend = Backend { ckpt: self, used: Mutex::new(HashSet::new()) };
        let net = {
            let vb = VarBuilder::from_backend(Box::new(&backend), DType::F32, Device::Cpu);
            build(vb).map_err(|e| match e {
                candle_core::Error::Msg(m) => Error::checkpoint(&self.path, m),
                e => Error::checkpoint(&self.path, e.to_string()),
            })?
        };
        let used = backend.used.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(extra) = self.tensors.keys().find(|k| !used.contains(k.as_str())) {
            return Err(Error::checkpoint(
                &self.path,
                format!("tensor `{extra}` {:?} is not part of the network built from the given settings", self.tensors[extra].dims()),
            ));
        }
        Ok(net)
    }
}

struct Backend<'a> {
    ckpt: &'a Checkpoint,
    used: Mutex<HashSet<String>>,
}

impl SimpleBackend for &Backend<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(t) = self.ckpt.tensors.get(name) else {
            candle_core::bail!("missing tensor `{name}` (the network needs shape {:?})", s.dims())
        };
        if t.dims() != s.dims() {
            candle_core::bail!(
                "tensor `{name}` has shape {:?} in the file but the network needs {:?}",
                t.dims(),
                s.dims()
            )
        }
        self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.ckpt.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("missing tensor `{name}`"),
        }
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.ckpt.tensors.contains_key(name)
    }
}

/// A zip archive (`.pth`) or safetensors, told apart by the zip magic.
fn read_any<S: Source + ?Sized>(
    path: &Path,
    src: &S,
    limits: &ReadLimits,
) -> Result<Vec<(String, Tensor)>> {
    let mut magic = [0u8; 4];
    let zip = src.read_exact_at(&mut magic, 0).is_ok() && magic == *b"PK\x03\x04";
    if zip {
        pth::read(path, src, limits)
    } else {
        safetensors_reader::read(path, src, limits)
    }
}

/// Writes `tensors` as safetensors, atomically: a temporary file in the same folder, synced,
/// then renamed over `path`, so a reader never sees a partial file. `num_batches_tracked` is
/// stored as int64 and everything else as `dtype` (f32, or f16/bf16 for small shipped models).
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, Tensor>,
    dtype: DType,
) -> Result<()> {
    let path = path.as_ref();
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let d = if name.ends_with("num_batches_tracked") { DType::I64 } else { dtype };
        out.push((name.clone(), t.to_dtype(d)?.contiguous()?));
    }
    let data = safetensors::tensor::serialize(out.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &data)
}

/// Writes bytes to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
