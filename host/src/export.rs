//! `host export`: a model written for other runtimes (ONNX Runtime, OpenCV dnn, ffmpeg's
//! `dnn_processing`, vs-mlrt).

use std::path::PathBuf;
use std::process::ExitCode;

use abi_stable::std_types::{ROption, RStr};
use anyhow::{bail, Context, Result};

use pix2pix_ffi::NormStats;

use crate::plugin::{into_result, model_path, ModelArg};
use crate::settings::parser;

pub const ABOUT: &str = "\
The ONNX model (opset 17) takes `input` and gives `output`, both NCHW float32 in [-1, 1]
(8-bit values v map to v / 127.5 - 1 and back by (x + 1) * 127.5, rounded). Batch, height
and width are free, but height and width must be multiples of the network's stride: 2^depth
for a U-Net (256 for unet_256, 128 for unet_128), 4 for a ResNet; `host info --model M`
prints it, and so does the model's `stride` metadata entry. `host run` reflect-pads other
sizes; do the same before calling the ONNX model. Dropout is off.

--norm-stats batch (default, as `host run`): batch-norm layers normalise with the input's own
mean and variance over batch, height and width (a batch of several images shares them, as
in PyTorch's train mode; feed one image per run to match `host run`). running: the
checkpoint's running statistics (PyTorch's eval mode), as plain BatchNormalization nodes.
Instance-norm models are the same either way.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// The .onnx file to write (whole or not at all).
    #[arg(long, value_name = "OUT")]
    onnx: PathBuf,
    /// Normalisation statistics baked into the graph: batch (the input's own, `host run`'s
    /// default) or running (the checkpoint's, PyTorch's eval mode).
    #[arg(long, value_parser = parser::<NormStats>(), default_value_t = NormStats::default())]
    norm_stats: NormStats,
    /// Replace OUT if it exists.
    #[arg(long)]
    overwrite: bool,
}

pub fn main(args: Args) -> Result<ExitCode> {
    if !args.overwrite && args.onnx.symlink_metadata().is_ok() {
        bail!("--onnx {}: already exists (pass --overwrite to replace it)", args.onnx.display());
    }
    let out = args
        .onnx
        .to_str()
        .with_context(|| format!("--onnx {}: path is not valid UTF-8", args.onnx.display()))?;
    let model = model_path(args.model.path.as_deref())?;
    let plugin = args.model.plugin.load()?;
    let Some(export) = plugin.module.export_onnx() else {
        bail!("this plugin predates ONNX export; use a libpix2pix.so of version 0.1.0 or later built with it")
    };
    let model = match model {
        Some(m) => ROption::RSome(RStr::from(m)),
        None => ROption::RNone,
    };
    let summary = into_result(export(model, RStr::from(out), args.norm_stats, args.overwrite))
        .with_context(|| format!("exporting to {}", args.onnx.display()))?;
    println!("wrote {}: {summary}", args.onnx.display());
    println!("norm statistics: {}", args.norm_stats.name());
    Ok(ExitCode::SUCCESS)
}
