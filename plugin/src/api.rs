//! The one implementation behind both plugin interfaces: the abi_stable root module
//! ([`crate::abi_module`]) and the C API ([`crate::capi`]) only convert types and call these
//! functions (the conversions both need are here too). Everything here returns an [`ApiError`],
//! whose [`ErrorKind`] becomes a C status code and whose message is what either interface shows.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pix2pix_ffi as ffi;
use pix2pix_ffi::c::{p2p_metrics, p2p_progress};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::generator::{Generator, GeneratorConfig};
use crate::image_tensor::{ImageU8, ImageView, MAX_PIXELS};
use crate::layers::{Forward, Layer, NormStats};
use crate::model::{Model, Options};
use crate::norm::NormKind;
use crate::patchgan::{DiscriminatorConfig, DiscriminatorKind};
use crate::resnet::ResnetConfig;
use crate::size_policy::SizePolicy;
use crate::train;
use crate::train::config::InitType;
use crate::train::trainer::{Settings, Trainer};
use crate::unet::UnetConfig;

// The interfaces hand one model to several threads at once.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Model>();
    send_sync::<LoadedModel>();
};

/// What kind of failure an [`ApiError`] is; the C API maps each to its own status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Null,
    InvalidArgument,
    Io,
    Checkpoint,
    BufferTooSmall,
    Cancelled,
    Config,
    Image,
    Compute,
    Unsupported,
    OutOfMemory,
    /// A caught panic: a bug in the library.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io { .. } => ErrorKind::Io,
            Error::Checkpoint { .. } => ErrorKind::Checkpoint,
            Error::Invalid { .. } => ErrorKind::InvalidArgument,
            Error::Image { .. } => ErrorKind::Image,
            Error::Config(_) => ErrorKind::Config,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Candle(_) => ErrorKind::Compute,
        };
        Self { kind, message: e.to_string() }
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// Runs `f`, turning a panic into an [`ErrorKind::Internal`] error so that no unwinding crosses
/// the plugin boundary.
pub fn guard<T>(f: impl FnOnce() -> ApiResult<T>) -> ApiResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panic_error(payload)))
}

/// The error a caught panic becomes.
pub fn panic_error(payload: Box<dyn Any + Send>) -> ApiError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    ApiError::new(ErrorKind::Internal, format!("internal error (please report this bug): {what}"))
}

// ---------------------------------------------------------------------------------------------
// Plugin

/// What the plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub abi_version: u32,
    /// Space-separated features.
    pub features: String,
}

pub fn plugin_info() -> PluginInfo {
    PluginInfo { name: "pix2pix", version: env!("CARGO_PKG_VERSION"), abi_version: pix2pix_ffi::ABI_VERSION, features: features().to_string() }
}

fn features() -> &'static str {
    static FEATURES: OnceLock<String> = OnceLock::new();
    FEATURES.get_or_init(|| {
        let mut f = String::from("translate train evaluate bench");
        if crate::default_model::checkpoint().is_ok() {
            f.push_str(" default-model");
        }
        f
    })
}

// ---------------------------------------------------------------------------------------------
// Models

/// Worker threads a model may ask for.
pub const MAX_THREADS: usize = 1024;

/// What a model is, as read off its checkpoint, and how it was opened.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub net_g: String,
    pub ngf: usize,
    pub norm: &'static str,
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    pub native_size: usize,
    /// Trainable parameters: every tensor of the checkpoint but the normalisation running
    /// statistics (the checkpoint holds exactly the network's tensors, or it does not open).
    pub parameters: u64,
    pub source: String,
    pub size_policy: SizePolicy,
    pub norm_stats: NormStats,
}

/// An opened [`Model`] with its description.
pub struct LoadedModel {
    model: Model,
    info: ModelInfo,
}

/// Opens a checkpoint (`.safetensors` or `.pth`), or the shipped default model for `None`.
pub fn open_model(path: Option<&Path>, options: Options) -> ApiResult<LoadedModel> {
    if options.threads > MAX_THREADS {
        return Err(ApiError::invalid(format!("invalid threads: {} (at most {MAX_THREADS})", options.threads)));
    }
    let ckpt = match path {
        Some(p) => Checkpoint::load(p)?,
        None => crate::default_model::checkpoint().map_err(|e| ApiError::new(ErrorKind::Unsupported, e.to_string()))?,
    };
    let model = Model::from_checkpoint(&ckpt, options)?;
    let parameters = ckpt
        .tensors()
        .iter()
        .filter(|(name, _)| !["running_mean", "running_var", "num_batches_tracked"].iter().any(|s| name.ends_with(s)))
        .map(|(_, t)| t.elem_count() as u64)
        .sum();
    let config = model.config();
    let (in_channels, out_channels) = config.channels();
    let info = ModelInfo {
        net_g: config.net_g(),
        ngf: config.ngf(),
        norm: config.norm().name(),
        in_channels,
        out_channels,
        stride: config.stride(),
        native_size: config.native_size(),
        parameters,
        source: model.source().to_string(),
        size_policy: model.options().size_policy,
        norm_stats: model.options().norm_stats,
    };
    Ok(LoadedModel { model, info })
}

impl LoadedModel {
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// Translates an image of any size: same size out, 3 channels, or 4 with the input's alpha.
    pub fn translate(&self, image: &ImageView) -> ApiResult<ImageU8> {
        Ok(self.model.translate(image)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Image buffers described by raw sizes (the C API, and hosts that hand the plugin raw memory)

/// No image buffer is larger than this (1 TiB): a larger extent is a garbage size or stride.
pub const MAX_EXTENT: usize = 1 << 40;

/// Checks an image description before any memory is touched or allocated, and returns the
/// number of bytes its buffer must hold: `stride · (height − 1) + width · channels`.
pub fn image_extent(width: usize, height: usize, stride: usize, channels: usize) -> ApiResult<usize> {
    if !matches!(channels, 1 | 3 | 4) {
        return Err(ApiError::invalid(format!("invalid image channels: {channels} (1, 3 or 4 expected)")));
    }
    if width == 0 || height == 0 {
        return Err(ApiError::invalid(format!("invalid image size: {width}x{height} (both sides must be positive)")));
    }
    if width.checked_mul(height).is_none_or(|p| p > MAX_PIXELS) {
        return Err(ApiError::invalid(format!("invalid image size: {width}x{height} exceeds the limit of {MAX_PIXELS} pixels")));
    }
    let row = width * channels;
    if stride < row {
        return Err(ApiError::invalid(format!(
            "invalid image stride: {stride} bytes is less than a row ({width} × {channels} = {row} bytes)"
        )));
    }
    stride
        .checked_mul(height - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= MAX_EXTENT)
        .ok_or_else(|| ApiError::invalid(format!("invalid image stride: {stride} bytes × {height} rows exceeds the limit of {MAX_EXTENT} bytes")))
}

/// Channels of the translation of an image with `in_channels`: 4 if it has alpha, else 3.
pub fn output_channels(in_channels: usize) -> usize {
    if in_channels == 4 {
        4
    } else {
        3
    }
}

/// Checks that a caller's buffer of `buf_height` rows `buf_stride` bytes apart can take a
/// `width`×`height` image of `channels`, and returns the bytes the library will write into:
/// `buf_stride · (height − 1) + width · channels` from the start of the buffer.
pub fn output_extent(width: usize, height: usize, channels: usize, buf_stride: usize, buf_height: usize) -> ApiResult<usize> {
    let row = width * channels;
    if buf_stride < row || buf_height < height {
        return Err(ApiError::new(
            ErrorKind::BufferTooSmall,
            format!(
                "output buffer too small: {width}x{height} with {channels} channels needs stride ≥ {row} and height ≥ {height}, \
                 the buffer has stride {buf_stride} and height {buf_height}"
            ),
        ));
    }
    buf_stride
        .checked_mul(height - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= MAX_EXTENT)
        .ok_or_else(|| ApiError::invalid(format!("invalid output stride: {buf_stride} bytes × {height} rows exceeds the limit of {MAX_EXTENT} bytes")))
}

/// Copies a packed image into a buffer with rows `stride` bytes apart; the bytes between the
/// end of one row and the start of the next are left as they are.
pub fn copy_to_strided(image: &ImageU8, dst: &mut [u8], stride: usize) -> ApiResult<()> {
    let row = image.width * image.channels;
    let need = output_extent(image.width, image.height, image.channels, stride, image.height)?;
    if dst.len() < need || image.data.len() < row * image.height {
        return Err(ApiError::new(ErrorKind::Internal, "internal error: output buffer smaller than its checked extent"));
    }
    for (y, src) in image.data.chunks_exact(row).take(image.height).enumerate() {
        dst[y * stride..y * stride + row].copy_from_slice(src);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Training and evaluation

/// Trains from a TOML config text; `progress` returning `false` cancels (after a checkpoint).
pub fn train(config_toml: &str, resume: bool, progress: &mut dyn FnMut(&train::Progress) -> bool) -> ApiResult<train::TrainSummary> {
    Ok(train::train(config_toml, resume, progress)?)
}

/// `impl From<&$from>` for each listed boundary type, copying the named fields (with a cast
/// where the widths differ): one field list per report, so the interfaces cannot drift apart.
macro_rules! from_fields {
    ($from:ty => [$($to:ty),+] $fields:tt) => {
        $(from_fields!(@one $from => $to $fields);)+
    };
    (@one $from:ty => $to:ty { $($field:ident $(as $cast:ty)?),+ $(,)? }) => {
        impl From<&$from> for $to {
            fn from(v: &$from) -> Self {
                Self { $($field: v.$field $(as $cast)?),+ }
            }
        }
    };
}

from_fields!(train::Progress => [ffi::TrainProgress, p2p_progress] {
    step, epoch, total_steps, g_gan, g_l1, d_real, d_fake, lr, images_per_sec,
});

from_fields!(train::Metrics => [ffi::EvalMetrics, p2p_metrics] { mae, psnr, ssim, count as u64 });

pub fn parse_direction(s: &str) -> ApiResult<train::Direction> {
    match s {
        "" => Ok(train::Direction::default()),
        "AtoB" => Ok(train::Direction::AtoB),
        "BtoA" => Ok(train::Direction::BtoA),
        other => Err(ApiError::invalid(format!("invalid direction: `{other}` (AtoB or BtoA expected)"))),
    }
}

/// Evaluates `model` over the aligned A|B pairs in `data`, at `size` (0 = the model's native
/// size), writing an HTML page into `html_dir` if given.
pub fn evaluate(
    model: &LoadedModel,
    data: &Path,
    direction: train::Direction,
    size: usize,
    html_dir: Option<&Path>,
) -> ApiResult<train::Metrics> {
    let size = if size == 0 { model.info.native_size } else { size };
    if size.checked_mul(size).is_none_or(|p| p > MAX_PIXELS) {
        return Err(ApiError::invalid(format!("invalid evaluation size: {size} (at most {MAX_PIXELS} pixels)")));
    }
    Ok(train::evaluate(&model.model, data, direction, size, html_dir)?)
}

/// Evaluation by checkpoint path (`None` = the shipped default model), default options.
pub fn evaluate_path(
    model: Option<&Path>,
    data: &Path,
    direction: train::Direction,
    size: usize,
    html_dir: Option<&Path>,
) -> ApiResult<train::Metrics> {
    let model = open_model(model, Options::default())?;
    evaluate(&model, data, direction, size, html_dir)
}

// ---------------------------------------------------------------------------------------------
// Benchmark

/// A benchmark: randomly initialised networks (the trainer's `normal` init, batch norm) run on
/// random input: generator inference, and on request full training steps (G + D, Adam).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchSpec {
    /// `unet_256`, `unet_128`, `resnet_9blocks`, …
    pub net_g: String,
    pub ngf: usize,
    pub size: usize,
    pub batch: usize,
    pub iters: usize,
    pub warmup: usize,
    /// Also time full training steps (G + D, Adam).
    pub train: bool,
    /// Statistics the timed inference normalises with: the input's own (the paper's protocol),
    /// or the running ones (PyTorch's eval mode, what other runtimes are usually timed in).
    pub norm_stats: NormStats,
}

/// Milliseconds per timed iteration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchTimes {
    pub infer_ms: Vec<f64>,
    pub train_step_ms: Vec<f64>,
}

pub const MAX_BENCH_NGF: usize = 256;
pub const MAX_BENCH_ITERS: usize = 100_000;
/// Generator weights a benchmark may build (1 GiB of f32; the paper's `unet_256` has 54 M).
pub const MAX_BENCH_PARAMETERS: u64 = 1 << 28;

/// The convolution weights of a generator (biases and norm scales left out), computed from its
/// settings without building it, to refuse absurd benchmarks before allocating.
pub fn estimated_parameters(config: &GeneratorConfig) -> u64 {
    let conv = |i: usize, o: usize, k: usize| (i as u64) * (o as u64) * (k * k) as u64;
    match config {
        GeneratorConfig::Unet(c) => {
            let width = |level: usize| c.ngf * (1usize << level.min(3));
            (0..c.num_downs)
                .map(|l| {
                    let outer = if l == 0 { c.in_channels } else { width(l - 1) };
                    let up_in = if l + 1 == c.num_downs { width(l) } else { 2 * width(l) };
                    let up_out = if l == 0 { c.out_channels } else { width(l - 1) };
                    conv(outer, width(l), 4) + conv(up_in, up_out, 4)
                })
                .sum()
        }
        GeneratorConfig::Resnet(c) => {
            let n = c.ngf;
            conv(c.in_channels, n, 7)
                + 2 * (conv(n, 2 * n, 3) + conv(2 * n, 4 * n, 3))
                + 2 * c.n_blocks as u64 * conv(4 * n, 4 * n, 3)
                + conv(n, c.out_channels, 7)
        }
    }
}

/// The generator a `netG` name stands for, at `ngf`, 3 → 3 channels, batch norm, dropout.
pub fn generator_config(net_g: &str, ngf: usize) -> ApiResult<GeneratorConfig> {
    let bad = || ApiError::invalid(format!("invalid net_g: `{net_g}` (unet_<side> with side a power of two ≥ 32, or resnet_<n>blocks)"));
    if let Some(side) = net_g.strip_prefix("unet_") {
        let side: usize = side.parse().map_err(|_| bad())?;
        if !side.is_power_of_two() || !(32..=1 << 16).contains(&side) {
            return Err(bad());
        }
        let num_downs = side.trailing_zeros() as usize;
        return Ok(GeneratorConfig::Unet(UnetConfig { in_channels: 3, out_channels: 3, num_downs, ngf, norm: NormKind::Batch, dropout: true }));
    }
    if let Some(n) = net_g.strip_prefix("resnet_").and_then(|s| s.strip_suffix("blocks")) {
        let n_blocks: usize = n.parse().map_err(|_| bad())?;
        if !(1..=64).contains(&n_blocks) {
            return Err(bad());
        }
        return Ok(GeneratorConfig::Resnet(ResnetConfig { in_channels: 3, out_channels: 3, ngf, n_blocks, norm: NormKind::Batch, dropout: false }));
    }
    Err(bad())
}

/// A generator with fresh weights, initialised as the trainer does (`init_type = normal`,
/// gain 0.02, seed 0), frozen as a model opened from a file is (so inference takes the same
/// paths as `host run`).
pub fn random_generator(config: GeneratorConfig) -> ApiResult<Generator> {
    let vars = VarMap::new();
    // Built once for its variables (named and shaped as a checkpoint's), then on their values.
    Generator::new(config, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).map_err(Error::from)?;
    train::init::init_weights(&vars, InitType::Normal, 0.02, &mut StdRng::seed_from_u64(0))?;
    let frozen: std::collections::HashMap<String, Tensor> = {
        let data = vars.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter().map(|(name, var)| (name.clone(), var.as_tensor().detach())).collect()
    };
    Ok(Generator::new(config, VarBuilder::from_tensors(frozen, DType::F32, &Device::Cpu)).map_err(Error::from)?)
}

/// Times generator inference (and, on request, training steps) at `spec`'s size and batch.
#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
pub fn bench(spec: &BenchSpec) -> ApiResult<BenchTimes> {
    if spec.ngf == 0 || spec.ngf > MAX_BENCH_NGF {
        return Err(ApiError::invalid(format!("invalid ngf: {} (1 to {MAX_BENCH_NGF})", spec.ngf)));
    }
    if spec.iters == 0 || spec.iters > MAX_BENCH_ITERS || spec.warmup > MAX_BENCH_ITERS {
        return Err(ApiError::invalid(format!(
            "invalid iterations: {} timed, {} warm-up (1 to {MAX_BENCH_ITERS} timed)",
            spec.iters, spec.warmup
        )));
    }
    let config = generator_config(&spec.net_g, spec.ngf)?;
    let parameters = estimated_parameters(&config);
    if parameters > MAX_BENCH_PARAMETERS {
        return Err(ApiError::invalid(format!(
            "invalid benchmark: {} with ngf {} has about {parameters} parameters (at most {MAX_BENCH_PARAMETERS})",
            spec.net_g, spec.ngf
        )));
    }
    let stride = config.stride();
    if spec.size == 0 || spec.size % stride != 0 {
        return Err(ApiError::invalid(format!("invalid size: {} (a positive multiple of {stride} for {})", spec.size, spec.net_g)));
    }
    if spec.batch == 0 || spec.size.checked_mul(spec.size).and_then(|p| p.checked_mul(spec.batch)).is_none_or(|p| p > MAX_PIXELS) {
        return Err(ApiError::invalid(format!(
            "invalid batch: {} images of {}x{} (at least 1, at most {MAX_PIXELS} pixels in all)",
            spec.batch, spec.size, spec.size
        )));
    }
    let shape = (spec.batch, 3, spec.size, spec.size);
    // Inputs in [-1, 1], as images are.
    let x = Tensor::randn(0f32, 0.5, shape, &Device::Cpu).and_then(|t| t.tanh()).map_err(Error::from)?;
    let generator = random_generator(config)?;
    let f = Forward::infer(spec.norm_stats);
    let infer_ms = time_iterations(spec, |_| {
        generator.forward(&x, &f).map_err(Error::from)?;
        Ok(())
    })?;
    drop(generator);

    let mut train_step_ms = Vec::new();
    if spec.train {
        // The reference's defaults: basic PatchGAN with ndf = ngf, batch norm, vanilla GAN + 100·L1.
        let d = DiscriminatorConfig { kind: DiscriminatorKind::NLayer(3), in_channels: 6, ndf: spec.ngf, norm: NormKind::Batch };
        let mut trainer = Trainer::new(config, d, Settings::default(), 2e-4)?;
        trainer.init_weights(InitType::Normal, 0.02, &mut StdRng::seed_from_u64(0), &mut StdRng::seed_from_u64(1))?;
        let y = Tensor::randn(0f32, 0.5, shape, &Device::Cpu).and_then(|t| t.tanh()).map_err(Error::from)?;
        train_step_ms = time_iterations(spec, |i| {
            trainer.step(&x, &y, Some(StdRng::seed_from_u64(i as u64)))?;
            Ok(())
        })?;
    }
    Ok(BenchTimes { infer_ms, train_step_ms })
}

/// Runs `f` `warmup + iters` times and returns the milliseconds of the last `iters` runs.
fn time_iterations(spec: &BenchSpec, mut f: impl FnMut(usize) -> ApiResult<()>) -> ApiResult<Vec<f64>> {
    let mut ms = Vec::with_capacity(spec.iters);
    for i in 0..spec.warmup + spec.iters {
        let t = Instant::now();
        f(i)?;
        if i >= spec.warmup {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        let e = guard::<()>(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("boom 42"), "{}", e.message);
        let e = guard::<()>(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
    }

    #[test]
    fn image_extent_rules() {
        assert_eq!(image_extent(4, 3, 12, 3), Ok(36));
        assert_eq!(image_extent(4, 3, 20, 3), Ok(52));
        assert_eq!(image_extent(1, 1, 1, 1), Ok(1));
        for (w, h, s, c) in [(0, 3, 12, 3), (4, 0, 12, 3), (4, 3, 11, 3), (4, 3, 12, 2), (100_000, 100_000, 300_000, 3), (1, 1 << 27, u32::MAX as usize, 1)] {
            let e = image_extent(w, h, s, c).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{w}x{h} stride {s} channels {c}");
        }
        assert_eq!(image_extent(usize::MAX, usize::MAX, usize::MAX, 4).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn output_extent_rules() {
        assert_eq!(output_extent(4, 3, 3, 12, 3), Ok(36));
        assert_eq!(output_extent(4, 3, 4, 20, 5), Ok(56));
        assert_eq!(output_extent(4, 3, 3, 11, 3).unwrap_err().kind, ErrorKind::BufferTooSmall);
        assert_eq!(output_extent(4, 3, 3, 12, 2).unwrap_err().kind, ErrorKind::BufferTooSmall);
        let img = ImageU8 { width: 2, height: 2, channels: 3, data: (0..12).collect() };
        let mut buf = vec![0xEEu8; 8 * 2];
        copy_to_strided(&img, &mut buf, 8).unwrap();
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 0xEE, 0xEE, 6, 7, 8, 9, 10, 11, 0xEE, 0xEE]);
        assert!(copy_to_strided(&img, &mut buf[..13], 8).is_err());
        assert_eq!((output_channels(1), output_channels(3), output_channels(4)), (3, 3, 4));
    }

    #[test]
    fn generator_names() {
        assert!(matches!(generator_config("unet_256", 64), Ok(GeneratorConfig::Unet(c)) if c.num_downs == 8));
        assert!(matches!(generator_config("unet_128", 8), Ok(GeneratorConfig::Unet(c)) if c.num_downs == 7));
        assert!(matches!(generator_config("resnet_9blocks", 64), Ok(GeneratorConfig::Resnet(c)) if c.n_blocks == 9));
        for bad in ["unet_100", "unet_16", "unet_", "resnet_blocks", "resnet_0blocks", "vgg", ""] {
            assert_eq!(generator_config(bad, 64).unwrap_err().kind, ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn parameter_estimate_is_close() {
        // The reference networks have 54.41 M (unet_256) and 11.38 M (resnet_9blocks) parameters
        // in all, almost all of them convolution weights.
        let unet256 = generator_config("unet_256", 64).unwrap();
        let est = estimated_parameters(&unet256);
        assert!((54_000_000..54_500_000).contains(&est), "{est}");
        let resnet9 = generator_config("resnet_9blocks", 64).unwrap();
        let est = estimated_parameters(&resnet9);
        assert!((11_300_000..11_400_000).contains(&est), "{est}");
    }

    #[test]
    fn bench_refuses_absurd_requests_before_building_anything() {
        let ok = BenchSpec { net_g: "unet_128".into(), ngf: 8, size: 128, batch: 1, iters: 1, warmup: 0, train: false, norm_stats: NormStats::Batch };
        for bad in [
            BenchSpec { ngf: 0, ..ok.clone() },
            BenchSpec { ngf: 100_000, ..ok.clone() },
            BenchSpec { size: 100, ..ok.clone() },
            BenchSpec { batch: 0, ..ok.clone() },
            BenchSpec { size: 1 << 20, batch: 1 << 20, ..ok.clone() },
            BenchSpec { iters: 0, ..ok.clone() },
            BenchSpec { net_g: "unet_7".into(), ..ok.clone() },
            BenchSpec { net_g: "unet_65536".into(), ngf: 256, ..ok.clone() },
        ] {
            assert_eq!(bench(&bad).unwrap_err().kind, ErrorKind::InvalidArgument, "{bad:?}");
        }
    }
}
