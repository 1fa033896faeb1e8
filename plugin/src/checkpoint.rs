//! Checkpoint I/O in the reference key layout: safetensors (read and write) and PyTorch `.pth`
//! state dicts (read), with errors that name the file and the tensor.
//!
//! Every tensor is held as f32 (f16/bf16/f64 converted; int64 `num_batches_tracked` too) and
//! written back in the reference dtypes, so PyTorch's `load_state_dict` takes our files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use safetensors::tensor::TensorView;

use crate::error::{Error, Result};

/// A state dict: names → f32 tensors, remembering the file it came from.
pub struct Checkpoint {
    pub path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a `.safetensors` or a PyTorch `.pth` (zip) file, told apart by content.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut magic = [0u8; 4];
        let zip = match std::io::Read::read_exact(&mut file, &mut magic) {
            Ok(()) => magic == *b"PK\x03\x04",
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        // Tensor by tensor, never the whole file in memory: loading peaks at the weights plus
        // the largest tensor, not twice the weights.
        let tensors = if zip { read_pth(path)? } else { read_safetensors_file(path, &file)? };
        Self::from_tensors(path, tensors)
    }

    /// Wraps tensors already in memory (a training state, an embedded model).
    pub fn from_tensors(path: impl Into<PathBuf>, tensors: impl IntoIterator<Item = (String, Tensor)>) -> Result<Self> {
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

    /// Reads safetensors from memory (the embedded default model).
    pub fn from_safetensors_bytes(name: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self> {
        let name = name.into();
        let tensors = read_safetensors(&name, bytes)?;
        Self::from_tensors(name, tensors)
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
        let t = self.tensors.iter().filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone())));
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
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(t) = self.ckpt.tensors.get(name) else {
            candle_core::bail!("missing tensor `{name}` (the network needs shape {:?})", s.dims())
        };
        if t.dims() != s.dims() {
            candle_core::bail!("tensor `{name}` has shape {:?} in the file but the network needs {:?}", t.dims(), s.dims())
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

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
    st.tensors().into_iter().map(|(name, view)| Ok((name.clone(), view_to_f32(path, &name, &view)?))).collect()
}

/// Reads a safetensors file's header, then each tensor from its offset.
fn read_safetensors_file(path: &Path, file: &std::fs::File) -> Result<Vec<(String, Tensor)>> {
    use std::os::unix::fs::FileExt;
    let bad = |why: String| Error::checkpoint(path, format!("not a valid safetensors file: {why}"));
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n);
    // safetensors' own limit on header size.
    if n > 100_000_000 || 8 + n > file_len {
        return Err(bad(format!("header length {n} does not fit the file ({file_len} bytes)")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| Error::io(path, e))?;
    // Deserialising validates dtypes, shapes and that the offsets tile the data section.
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let start = 8 + n;
    if start + meta.data_len() as u64 != file_len {
        return Err(bad(format!("the header describes {} data bytes, the file holds {}", meta.data_len(), file_len - start)));
    }
    let mut tensors: Vec<(String, &safetensors::tensor::TensorInfo)> = meta.tensors().into_iter().collect();
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    tensors
        .into_iter()
        .map(|(name, info)| {
            let (a, b) = info.data_offsets;
            let at = start + a as u64;
            if info.dtype == safetensors::Dtype::F32 && cfg!(target_endian = "little") {
                // Straight into the tensor's own buffer (validation checked b − a = 4·elements).
                let mut v = vec![0f32; (b - a) / 4];
                file.read_exact_at(bytemuck::cast_slice_mut(&mut v), at).map_err(|e| Error::io(path, e))?;
                let t = Tensor::from_vec(v, info.shape.as_slice(), &Device::Cpu)
                    .map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))?;
                return Ok((name, t));
            }
            let mut data = vec![0u8; b - a];
            file.read_exact_at(&mut data, at).map_err(|e| Error::io(path, e))?;
            Ok((name.clone(), bytes_to_f32(path, &name, info.dtype, &info.shape, &data)?))
        })
        .collect()
}

fn view_to_f32(path: &Path, name: &str, view: &TensorView) -> Result<Tensor> {
    bytes_to_f32(path, name, view.dtype(), view.shape(), view.data())
}

fn bytes_to_f32(path: &Path, name: &str, dtype: safetensors::Dtype, shape: &[usize], data: &[u8]) -> Result<Tensor> {
    use safetensors::Dtype as S;
    let dtype = match dtype {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::I64 => DType::I64,
        other => {
            return Err(Error::checkpoint(path, format!("tensor `{name}` has unsupported dtype {other:?} (f32, f16, bf16, f64 or i64 expected)")))
        }
    };
    let t = Tensor::from_raw_buffer(data, dtype, shape, &Device::Cpu)
        .map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))?;
    Ok(t.to_dtype(DType::F32)?)
}

fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    // candle's pickle reader was not written for hostile input; a panic in it must not cross the
    // plugin boundary, so it is contained here and reported as a bad file.
    let read = |key: Option<&str>| {
        std::panic::catch_unwind(|| candle_core::pickle::read_all_with_key(path, key))
            .unwrap_or_else(|_| Err(candle_core::Error::Msg("malformed pickle data".into())))
    };
    let tensors = match read(None) {
        Ok(t) if !t.is_empty() => t,
        first => match read(Some("state_dict")) {
            Ok(t) if !t.is_empty() => t,
            _ => {
                let why = first.err().map(|e| e.to_string()).unwrap_or_else(|| "no tensors found".into());
                return Err(Error::checkpoint(path, format!("not a readable PyTorch state_dict: {why}")));
            }
        },
    };
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.to_dtype(DType::F32).map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))?;
            Ok((name, t))
        })
        .collect()
}

/// Writes `tensors` as safetensors, atomically: a temporary file in the same folder, synced,
/// then renamed over `path`, so a reader never sees a partial file. `num_batches_tracked` is
/// stored as int64 and everything else as `dtype` (f32, or f16/bf16 for small shipped models).
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &BTreeMap<String, Tensor>, dtype: DType) -> Result<()> {
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
