//! ONNX export for the faces: the model path (or the shipped default) to an `.onnx` file.

use std::path::Path;

use pix2pix_ffi::NormStats;

use super::error::ApiResult;
use super::model::checkpoint_or_default;
use crate::export::{check_output, export_checkpoint, OnnxSummary};

/// Writes the generator at `model` (`None`: the shipped default model) to `out` as ONNX.
pub fn export_onnx(
    model: Option<&Path>,
    out: &Path,
    norm_stats: NormStats,
    overwrite: bool,
) -> ApiResult<OnnxSummary> {
    // Before reading a model of hundreds of megabytes.
    check_output(out, overwrite)?;
    let ckpt = checkpoint_or_default(model)?;
    Ok(export_checkpoint(&ckpt, out, norm_stats, overwrite)?)
}
