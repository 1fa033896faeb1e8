//! `.safetensors` files: the header read and checked in full (dtypes, shapes, byte ranges within
//! the file and not overlapping, total size against the limits) before any tensor is allocated,
//! then each tensor read from its offset.

use std::path::Path;

use candle_core::Tensor;
use safetensors::tensor::Metadata;
use safetensors::Dtype;

use super::decode::{element_count, read_tensor, FileDtype};
use super::limits::ReadLimits;
use super::source::Source;
use crate::error::{Error, Result};

/// safetensors' own limit on the header's size.
const MAX_HEADER: u64 = 100_000_000;

pub fn read<S: Source + ?Sized>(
    path: &Path,
    src: &S,
    limits: &ReadLimits,
) -> Result<Vec<(String, Tensor)>> {
    let bad = |why: String| Error::checkpoint(path, format!("not a valid safetensors file: {why}"));
    let file_len = src.len();
    let mut n = [0u8; 8];
    src.read_exact_at(&mut n, 0)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > file_len - 8 {
        return Err(bad(format!(
            "header length {n} does not fit the file ({file_len} bytes) or exceeds {MAX_HEADER}"
        )));
    }
    let mut header = Vec::new();
    header
        .try_reserve_exact(n as usize)
        .map_err(|_| bad(format!("out of memory for a header of {n} bytes")))?;
    header.resize(n as usize, 0);
    src.read_exact_at(&mut header, 8).map_err(|e| Error::io(path, e))?;
    // Deserialising validates dtypes and shapes, and that the offsets tile the data section, with
    // checked arithmetic; the checks below repeat what the reads rely on.
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    drop(header);
    let start = 8 + n;
    let data_len = file_len - start;
    if meta.data_len() as u64 != data_len {
        return Err(bad(format!(
            "the header describes {} data bytes, the file holds {data_len}",
            meta.data_len()
        )));
    }

    let mut tensors: Vec<(String, &safetensors::tensor::TensorInfo)> =
        meta.tensors().into_iter().collect();
    if tensors.len() > limits.max_tensors {
        return Err(bad(format!(
            "{} tensors, more than the limit of {}",
            tensors.len(),
            limits.max_tensors
        )));
    }
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let mut total: u128 = 0;
    let mut end_of_previous = 0usize;
    let mut plan = Vec::with_capacity(tensors.len());
    for (name, info) in &tensors {
        let bad_tensor = |msg: String| Error::checkpoint(path, format!("tensor `{name}`: {msg}"));
        if name.len() > limits.max_name_len {
            return Err(bad(format!(
                "a tensor name of {} bytes exceeds the limit of {}",
                name.len(),
                limits.max_name_len
            )));
        }
        let dtype = file_dtype(info.dtype).ok_or_else(|| {
            bad_tensor(format!(
                "has unsupported dtype {:?} (f32, f16, bf16, f64 or i64 expected)",
                info.dtype
            ))
        })?;
        if info.shape.len() > limits.max_rank {
            return Err(bad_tensor(format!(
                "rank {} exceeds the limit of {}",
                info.shape.len(),
                limits.max_rank
            )));
        }
        let (a, b) = info.data_offsets;
        let bytes = element_count(&info.shape).and_then(|n| n.checked_mul(dtype.size()));
        if a < end_of_previous || b < a || bytes != Some(b - a) || b as u64 > data_len {
            return Err(bad_tensor(format!("byte range {a}..{b} does not fit shape {:?} of {:?} within the {data_len} data bytes", info.shape, info.dtype)));
        }
        end_of_previous = b;
        total += (b - a) as u128 / dtype.size() as u128 * 4;
        plan.push((name, dtype, &info.shape, start + a as u64));
    }
    if total > limits.max_tensor_bytes as u128 {
        return Err(Error::checkpoint(
            path,
            format!("the tensors need {total} bytes as f32, more than the limit of {} bytes (half the physical memory by default)", limits.max_tensor_bytes),
        ));
    }
    plan.into_iter()
        .map(|(name, dtype, shape, at)| {
            Ok((name.clone(), read_tensor(path, name, src, at, dtype, shape)?))
        })
        .collect()
}

fn file_dtype(d: Dtype) -> Option<FileDtype> {
    Some(match d {
        Dtype::F32 => FileDtype::F32,
        Dtype::F16 => FileDtype::F16,
        Dtype::BF16 => FileDtype::BF16,
        Dtype::F64 => FileDtype::F64,
        Dtype::I64 => FileDtype::I64,
        _ => return None,
    })
}
