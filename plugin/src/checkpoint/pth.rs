//! PyTorch `.pth` files (`torch.save`'s zip format): the pickle in `<archive>/data.pkl` run on
//! the bounded machine of `pickle.rs`, its state dict read as tensor descriptions, every size
//! checked against the limits and the archive, and only then each storage read.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::Tensor;

use super::decode::{element_count, read_tensor, FileDtype};
use super::limits::ReadLimits;
use super::pickle::{self, Id, Pickle, Value};
use super::source::Source;
use crate::error::{Error, Result};

/// One tensor of the state dict, as the pickle describes it.
struct TensorRef {
    name: String,
    dtype: FileDtype,
    shape: Vec<usize>,
    /// The storage's key: its data is `<archive>/data/<key>`.
    storage: String,
    /// Elements the storage holds.
    storage_len: usize,
    /// First element of the tensor in the storage.
    offset: usize,
}

/// Reads the state dict in a `.pth` archive (the top-level dict, or its `state_dict` entry).
pub fn read<S: Source + ?Sized>(
    path: &Path,
    src: &S,
    limits: &ReadLimits,
) -> Result<Vec<(String, Tensor)>> {
    let bad =
        |msg: String| Error::checkpoint(path, format!("not a readable PyTorch state_dict: {msg}"));
    let config = zip::read::Config { archive_offset: zip::read::ArchiveOffset::Known(0) };
    let mut zip =
        zip::ZipArchive::with_config(config, std::io::BufReader::new(SourceReader { src, pos: 0 }))
            .map_err(|e| bad(format!("not a valid zip archive: {e}")))?;

    let pickles: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| is_top_pickle(n))
        .map(|n| n.into_owned())
        .collect();
    let [pkl] = pickles.as_slice() else {
        return Err(bad(format!("{} `<archive>/data.pkl` entries, one expected", pickles.len())));
    };
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    let bytes = {
        let entry = zip.by_name(pkl).map_err(|e| bad(format!("{pkl}: {e}")))?;
        let max = limits.pickle.max_bytes;
        if entry.size() > max {
            return Err(bad(format!(
                "{pkl} is {} bytes, more than the limit of {max} bytes",
                entry.size()
            )));
        }
        let mut bytes = Vec::new();
        entry.take(max + 1).read_to_end(&mut bytes).map_err(|e| bad(format!("{pkl}: {e}")))?;
        bytes
    };
    let p = pickle::parse(&bytes, &limits.pickle).map_err(|e| bad(format!("{pkl}: {e}")))?;
    drop(bytes);

    let refs = state_dict(&p, limits.max_rank).map_err(bad)?;
    check_totals(path, &refs, limits)?;

    let mut out = Vec::with_capacity(refs.len());
    for t in refs {
        let entry_name = format!("{prefix}data/{}", t.storage);
        let bad_tensor =
            |msg: String| Error::checkpoint(path, format!("tensor `{}`: {msg}", t.name));
        let (start, stored) = {
            let entry = zip.by_name(&entry_name).map_err(|e| {
                bad_tensor(format!("its storage `{entry_name}` cannot be read: {e}"))
            })?;
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(bad_tensor(format!(
                    "its storage `{entry_name}` is compressed ({}); torch.save stores them",
                    entry.compression()
                )));
            }
            let start = entry
                .data_start()
                .ok_or_else(|| bad_tensor(format!("storage `{entry_name}` has no data offset")))?;
            (start, entry.compressed_size())
        };
        // The storage must hold what the pickle says, and lie within the file: checked before
        // the tensor is allocated.
        let need = (t.storage_len as u128) * t.dtype.size() as u128;
        if need > stored as u128 {
            return Err(bad_tensor(format!(
                "its storage `{entry_name}` holds {stored} bytes but the pickle declares {} elements of {} bytes",
                t.storage_len,
                t.dtype.size()
            )));
        }
        if start.checked_add(stored).is_none_or(|end| end > src.len()) {
            return Err(bad_tensor(format!("its storage `{entry_name}` ({stored} bytes at byte {start}) runs past the end of the file")));
        }
        let at = start + (t.offset as u64) * t.dtype.size() as u64;
        out.push((t.name.clone(), read_tensor(path, &t.name, src, at, t.dtype, &t.shape)?));
    }
    Ok(out)
}

/// `<archive>/data.pkl`, the pickle of the saved object (not one of a nested archive).
fn is_top_pickle(name: &str) -> bool {
    name.strip_suffix("data.pkl")
        .is_some_and(|dir| dir.is_empty() || (dir.ends_with('/') && dir.matches('/').count() == 1))
}

/// Count, names and total f32 size against the limits.
fn check_totals(path: &Path, refs: &[TensorRef], limits: &ReadLimits) -> Result<()> {
    if refs.len() > limits.max_tensors {
        return Err(Error::checkpoint(
            path,
            format!("{} tensors, more than the limit of {}", refs.len(), limits.max_tensors),
        ));
    }
    let mut total: u128 = 0;
    for t in refs {
        if t.name.len() > limits.max_name_len {
            return Err(Error::checkpoint(
                path,
                format!(
                    "a tensor name of {} bytes exceeds the limit of {}",
                    t.name.len(),
                    limits.max_name_len
                ),
            ));
        }
        total += element_count(&t.shape).unwrap_or(usize::MAX) as u128 * 4;
    }
    if total > limits.max_tensor_bytes as u128 {
        return Err(Error::checkpoint(
            path,
            format!("the tensors need {total} bytes as f32, more than the limit of {} bytes (half the physical memory by default)", limits.max_tensor_bytes),
        ));
    }
    Ok(())
}

/// The tensors of the state dict in `p`: the root dict, or its `state_dict` entry, with a
/// TorchScript-style `Module` wrapper looked through. Entries that are not tensors are skipped.
fn state_dict(p: &Pickle, max_rank: usize) -> std::result::Result<Vec<TensorRef>, String> {
    let mut root = p.root();
    if let Value::Call { callable, state: Some(state), .. } = p.get(root) {
        if p.global(*callable).is_some_and(|(m, _)| m.starts_with("__torch__")) {
            root = *state;
        }
    }
    let Value::Dict(items) = p.get(root) else {
        return Err("the pickle holds no dict of tensors".into());
    };
    let mut refs = tensors_of(p, items, max_rank)?;
    if refs.is_empty() {
        let sub =
            items.iter().find(|(k, _)| p.str(*k) == Some("state_dict")).map(|(_, v)| p.get(*v));
        if let Some(Value::Dict(items)) = sub {
            refs = tensors_of(p, items, max_rank)?;
        }
    }
    if refs.is_empty() {
        return Err("no tensors found".into());
    }
    Ok(refs)
}

fn tensors_of(
    p: &Pickle,
    items: &[(Id, Id)],
    max_rank: usize,
) -> std::result::Result<Vec<TensorRef>, String> {
    let mut refs: Vec<TensorRef> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for &(k, v) in items {
        let Some(name) = p.str(k) else { continue };
        if let Some(t) =
            tensor(p, name, v, max_rank).map_err(|e| format!("tensor `{name}`: {e}"))?
        {
            // A later equal key replaces the earlier one, as in Python.
            match index.get(name) {
                Some(&i) => refs[i] = t,
                None => {
                    index.insert(name, refs.len());
                    refs.push(t)
                }
            }
        }
    }
    Ok(refs)
}

/// The tensor `v` describes, `None` if it is not a tensor, an error if it is a malformed one.
fn tensor(
    p: &Pickle,
    name: &str,
    v: Id,
    max_rank: usize,
) -> std::result::Result<Option<TensorRef>, String> {
    let Value::Call { mut callable, mut args, .. } = *p.get(v) else {
        return Ok(None);
    };
    // Wrappers around `_rebuild_tensor_v2`, each looked through once (no recursion).
    for _ in 0..2 {
        let a = p.tuple(args).unwrap_or(&[]);
        match p.global(callable) {
            // _rebuild_parameter(data, requires_grad, backward_hooks)
            Some(("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")) => {
                let Some(Value::Call { callable: c, args: a2, .. }) = a.first().map(|&d| p.get(d))
                else {
                    return Err("parameter without tensor data".into());
                };
                (callable, args) = (*c, *a2);
            }
            // _rebuild_from_type_v2(func, new_type, args, state)
            Some(("torch._tensor", "_rebuild_from_type_v2")) => {
                let (Some(&f), Some(&fa)) = (a.first(), a.get(2)) else {
                    return Err("malformed _rebuild_from_type_v2 arguments".into());
                };
                (callable, args) = (f, fa);
            }
            _ => break,
        }
    }
    if p.global(callable) != Some(("torch._utils", "_rebuild_tensor_v2")) {
        return Ok(None);
    }
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, ...)
    let a = p.tuple(args).ok_or("_rebuild_tensor_v2 without an argument tuple")?;
    let [storage, offset, size, stride, ..] = a else {
        return Err("_rebuild_tensor_v2 with too few arguments".into());
    };
    let ints = |id: Id, what: &str| -> std::result::Result<Vec<usize>, String> {
        let t = p.tuple(id).ok_or_else(|| format!("{what} is not a tuple"))?;
        t.iter()
            .map(|&i| {
                p.int(i)
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| format!("{what} holds a value that is not a size"))
            })
            .collect()
    };
    let shape = ints(*size, "size")?;
    let stride = ints(*stride, "stride")?;
    let offset = p
        .int(*offset)
        .and_then(|i| usize::try_from(i).ok())
        .ok_or("storage offset is not a size")?;
    if shape.len() > max_rank || stride.len() != shape.len() {
        return Err(format!("shape {shape:?} with stride {stride:?} is not a tensor this reader takes (rank at most {max_rank})"));
    }
    let numel = element_count(&shape).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if numel > 0 && !is_contiguous(&shape, &stride) {
        return Err(format!(
            "is not contiguous (shape {shape:?}, stride {stride:?}); save `.contiguous()` tensors"
        ));
    }

    // Storage: persistent id ('storage', storage_type, key, location, numel).
    let Value::Persistent(pid) = *p.get(*storage) else {
        return Err("storage is not a persistent reference".into());
    };
    let pid = p.tuple(pid).ok_or("storage reference is not a tuple")?;
    let [kind, ty, key, _location, len, ..] = pid else {
        return Err("storage reference with too few fields".into());
    };
    if p.str(*kind) != Some("storage") {
        return Err("persistent reference is not a storage".into());
    }
    let (module, class) = p.global(*ty).ok_or("storage type is not a class")?;
    let dtype = match class {
        "FloatStorage" => FileDtype::F32,
        "HalfStorage" => FileDtype::F16,
        "BFloat16Storage" => FileDtype::BF16,
        "DoubleStorage" => FileDtype::F64,
        "LongStorage" => FileDtype::I64,
        _ => return Err(format!("storage type {module}.{class} is not supported (float, half, bfloat16, double or long expected)")),
    };
    let key = p.str(*key).ok_or("storage key is not a string")?;
    if key.is_empty() || key.contains('/') || key.len() > 64 {
        return Err(format!("storage key {key:?} is not a plain name"));
    }
    let storage_len =
        p.int(*len).and_then(|i| usize::try_from(i).ok()).ok_or("storage size is not a size")?;
    if offset.checked_add(numel).is_none_or(|end| end > storage_len) {
        return Err(format!(
            "elements {offset}..{offset}+{numel} lie outside its storage of {storage_len} elements"
        ));
    }
    Ok(Some(TensorRef {
        name: name.to_string(),
        dtype,
        shape,
        storage: key.to_string(),
        storage_len,
        offset,
    }))
}

/// Row-major strides (dimensions of size 1 may have any stride, as in PyTorch).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// `Read + Seek` over a [`Source`] for the zip reader.
struct SourceReader<'a, S: ?Sized> {
    src: &'a S,
    pos: u64,
}

impl<S: Source + ?Sized> Read for SourceReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.src.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.src.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: Source + ?Sized> Seek for SourceReader<'_, S> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.src.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek out of range")
        })?;
        Ok(self.pos)
    }
}
