//! Tensor data from checkpoint bytes to an f32 tensor: the one place a checkpoint's data is
//! allocated, fallibly, after its size was checked, and where non-finite weights are caught.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::source::Source;
use crate::error::{Error, Result};

/// The element types a checkpoint tensor may have in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
}

impl FileDtype {
    pub fn size(self) -> usize {
        match self {
            FileDtype::F16 | FileDtype::BF16 => 2,
            FileDtype::F32 => 4,
            FileDtype::F64 | FileDtype::I64 => 8,
        }
    }
}

/// Number of elements of `shape`, or `None` if it overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Converted this many bytes at a time, so that no second full-size buffer is needed.
const CHUNK_BYTES: usize = 1 << 16;

/// Reads the tensor `name` of `shape`, stored as `dtype` at byte `offset` of `src`, into an f32
/// tensor. The caller has checked that the bytes lie within `src` and fit the memory limit; the
/// one allocation here is fallible all the same (an address-space limit is an error, not an
/// abort). A NaN or infinite value is an error naming the tensor: such a file gives black
/// images without any other sign.
pub fn read_tensor<S: Source + ?Sized>(
    path: &Path,
    name: &str,
    src: &S,
    offset: u64,
    dtype: FileDtype,
    shape: &[usize],
) -> Result<Tensor> {
    let bad = |msg: String| Error::checkpoint(path, format!("tensor `{name}`: {msg}"));
    let n = element_count(shape).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let mut out: Vec<f32> = Vec::new();
    out.try_reserve_exact(n).map_err(|_| {
        bad(format!("out of memory: cannot allocate {} bytes for shape {shape:?}", n as u128 * 4))
    })?;
    let io = |e: std::io::Error| bad(format!("cannot read its data: {e}"));
    if dtype == FileDtype::F32 && cfg!(target_endian = "little") {
        // Straight into the tensor's own buffer (reserved above, so `resize` does not allocate).
        out.resize(n, 0.0);
        src.read_exact_at(bytemuck::cast_slice_mut(&mut out), offset).map_err(io)?;
    } else {
        let size = dtype.size();
        let mut chunk = vec![0u8; CHUNK_BYTES.min(n.saturating_mul(size)).max(size)];
        let mut at = offset;
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() / size);
            let bytes = &mut chunk[..k * size];
            src.read_exact_at(bytes, at).map_err(io)?;
            extend_f32(&mut out, dtype, bytes);
            at += bytes.len() as u64;
            left -= k;
        }
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "holds a non-finite value ({}) at element {i}: the weights are corrupt",
            out[i]
        )));
    }
    Tensor::from_vec(out, shape, &Device::Cpu).map_err(|e| bad(e.to_string()))
}

/// Appends the little-endian values in `bytes` converted to f32 (within `out`'s capacity).
fn extend_f32(out: &mut Vec<f32>, dtype: FileDtype, bytes: &[u8]) {
    let size = dtype.size();
    let values = bytes.chunks_exact(size);
    match dtype {
        FileDtype::F32 => out.extend(values.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        FileDtype::F16 => {
            out.extend(values.map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()))
        }
        FileDtype::BF16 => {
            out.extend(values.map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()))
        }
        FileDtype::F64 => {
            out.extend(values.map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32))
        }
        FileDtype::I64 => {
            out.extend(values.map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32))
        }
    }
}
