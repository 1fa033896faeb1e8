//! The benchmark: generator inference (and training steps) of randomly initialised networks.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pix2pix_ffi::GeneratorName;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::Error;
use crate::faces::api::error::{ApiError, ApiResult};
use crate::filter::image_tensor::MAX_PIXELS;
use crate::nets::forward::{Forward, Layer, NormStats};
use crate::nets::generator::{Generator, GeneratorConfig};
use crate::nets::memory;
use crate::nets::norm::NormKind;
use crate::nets::patchgan::{DiscriminatorConfig, DiscriminatorKind};
use crate::train;
use crate::train::config::InitType;
use crate::train::trainer::{Settings, Trainer};

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
    /// Memory the benchmark may take, in MiB; 0 = the default budget
    /// ([`crate::filter::memory::budget`]).
    pub memory_budget_mb: u64,
    /// The arithmetic of the timed inference (training steps are always f32).
    pub precision: crate::kernels::Precision,
}

/// Milliseconds per timed iteration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchTimes {
    pub infer_ms: Vec<f64>,
    pub train_step_ms: Vec<f64>,
    /// The arithmetic the inference ran in (f32 where bf16 was asked for but the CPU lacks it).
    pub precision: crate::kernels::Precision,
}

pub const MAX_BENCH_NGF: usize = 256;
pub const MAX_BENCH_ITERS: usize = 100_000;
/// Generator weights a benchmark may build (1 GiB of f32; the paper's `unet_256` has 54 M).
pub const MAX_BENCH_PARAMETERS: u64 = 1 << 28;

/// The generator a `netG` name stands for, at `ngf`, 3 → 3 channels, batch norm, dropout in
/// the U-Nets only (as the reference's defaults).
pub fn generator_config(net_g: &str, ngf: usize) -> ApiResult<GeneratorConfig> {
    let name = GeneratorName::parse(net_g).ok_or_else(|| {
        ApiError::invalid(format!("invalid net_g: `{net_g}` ({})", GeneratorName::EXPECTED))
    })?;
    let dropout = matches!(name, GeneratorName::Unet { .. });
    Ok(GeneratorConfig::named(name, ngf, NormKind::Batch, dropout))
}

/// A generator with fresh weights, initialised as the trainer does (`init_type = normal`,
/// gain 0.02, seed 0), frozen as a model opened from a file is (so inference takes the same
/// paths as `host run`).
pub fn random_generator(config: GeneratorConfig) -> ApiResult<Generator> {
    let vars = VarMap::new();
    // Built once for its variables (named and shaped as a checkpoint's), then on their values.
    Generator::new(config, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))
        .map_err(Error::from)?;
    train::init::init_weights(&vars, InitType::Normal, 0.02, &mut StdRng::seed_from_u64(0))?;
    let frozen: std::collections::HashMap<String, Tensor> = {
        let data = vars.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter().map(|(name, var)| (name.clone(), var.as_tensor().detach())).collect()
    };
    Ok(Generator::new(config, VarBuilder::from_tensors(frozen, DType::F32, &Device::Cpu))
        .map_err(Error::from)?)
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
    // Counted on placeholders, before anything of that size is allocated.
    let parameters = config.parameters().map_err(Error::from)?;
    if parameters > MAX_BENCH_PARAMETERS {
        return Err(ApiError::invalid(format!(
            "invalid benchmark: {} with ngf {} has {parameters} parameters (at most {MAX_BENCH_PARAMETERS})",
            spec.net_g, spec.ngf
        )));
    }
    let stride = config.stride();
    if spec.size == 0 || spec.size % stride != 0 {
        return Err(ApiError::invalid(format!(
            "invalid size: {} (a positive multiple of {stride} for {})",
            spec.size, spec.net_g
        )));
    }
    if spec.batch == 0
        || spec
            .size
            .checked_mul(spec.size)
            .and_then(|p| p.checked_mul(spec.batch))
            .is_none_or(|p| p > MAX_PIXELS)
    {
        return Err(ApiError::invalid(format!(
            "invalid batch: {} images of {}x{} (at least 1, at most {MAX_PIXELS} pixels in all)",
            spec.batch, spec.size, spec.size
        )));
    }
    check_memory(spec, &config, parameters)?;
    let shape = (spec.batch, 3, spec.size, spec.size);
    // Inputs in [-1, 1], as images are.
    let x = Tensor::randn(0f32, 0.5, shape, &Device::Cpu)
        .and_then(|t| t.tanh())
        .map_err(Error::from)?;
    let mut generator = random_generator(config)?;
    if spec.norm_stats == NormStats::Running {
        // As a model opened on running statistics runs (`filter::Model`).
        generator.fold_running_norms().map_err(Error::from)?;
    }
    // As the batch translation runs: each image normalised by its own statistics.
    let f = Forward::infer(spec.norm_stats).per_image();
    let infer_ms = time_iterations(spec, |i| {
        // Where translations run (`filter::Model::translate_batch`).
        crate::kernels::on_pool_after_first(i == 0, || {
            crate::kernels::with_precision(spec.precision, || generator.forward(&x, &f))
        })
        .map_err(Error::from)?;
        Ok(())
    })?;
    drop(generator);

    let mut train_step_ms = Vec::new();
    if spec.train {
        // The reference's defaults: basic PatchGAN with ndf = ngf, batch norm, vanilla GAN + 100·L1.
        let d = reference_discriminator(spec.ngf);
        let mut trainer = Trainer::new(config, d, Settings::default(), 2e-4)?;
        trainer.init_weights(
            InitType::Normal,
            0.02,
            &mut StdRng::seed_from_u64(0),
            &mut StdRng::seed_from_u64(1),
        )?;
        let y = Tensor::randn(0f32, 0.5, shape, &Device::Cpu)
            .and_then(|t| t.tanh())
            .map_err(Error::from)?;
        train_step_ms = time_iterations(spec, |i| {
            trainer.step(&x, &y, Some(StdRng::seed_from_u64(i as u64)))?;
            Ok(())
        })?;
    }
    let precision = crate::kernels::effective_precision(spec.precision);
    Ok(BenchTimes { infer_ms, train_step_ms, precision })
}

/// Refuses a benchmark whose estimated memory exceeds its budget: the generator's weights
/// (twice: initialised, then frozen), the inputs and the forward peak; with training, a
/// training step of G and the reference's D.
fn check_memory(spec: &BenchSpec, config: &GeneratorConfig, parameters: u64) -> ApiResult<()> {
    let (n, side) = (spec.batch, spec.size);
    let inputs = 2 * 4 * (n * 3 * side * side) as u64;
    let mut estimate = (8 * parameters)
        .saturating_add(inputs)
        .saturating_add(memory::forward_peak(config, n, side, side, false, spec.precision));
    if spec.train {
        let d = reference_discriminator(spec.ngf);
        let d_parameters = d.parameters().map_err(Error::from)?;
        let step = memory::train_step_bytes(config, parameters, &d, d_parameters, n, side, side);
        estimate = estimate.max(inputs.saturating_add(step));
    }
    let what = format!(
        "benchmarking {} ngf {} at batch {n} of {side}x{side}{}",
        spec.net_g,
        spec.ngf,
        if spec.train { " with training steps" } else { "" }
    );
    Ok(crate::filter::memory::check(&what, estimate, spec.memory_budget_mb, || {
        "a smaller --size or --batch needs less".into()
    })?)
}

/// The reference's defaults: basic PatchGAN with ndf = ngf, batch norm, on RGB pairs.
fn reference_discriminator(ngf: usize) -> DiscriminatorConfig {
    DiscriminatorConfig {
        kind: DiscriminatorKind::NLayer(3),
        in_channels: 6,
        ndf: ngf,
        norm: NormKind::Batch,
    }
}

/// Runs `f` `warmup + iters` times and returns the milliseconds of the last `iters` runs.
fn time_iterations(
    spec: &BenchSpec,
    mut f: impl FnMut(usize) -> ApiResult<()>,
) -> ApiResult<Vec<f64>> {
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
    use crate::faces::api::error::ErrorKind;

    #[test]
    fn generator_names() {
        assert!(
            matches!(generator_config("unet_256", 64), Ok(GeneratorConfig::Unet(c)) if c.num_downs == 8)
        );
        assert!(
            matches!(generator_config("unet_128", 8), Ok(GeneratorConfig::Unet(c)) if c.num_downs == 7)
        );
        assert!(
            matches!(generator_config("resnet_9blocks", 64), Ok(GeneratorConfig::Resnet(c)) if c.n_blocks == 9)
        );
        for bad in ["unet_100", "unet_16", "unet_", "resnet_blocks", "resnet_0blocks", "vgg", ""] {
            assert_eq!(
                generator_config(bad, 64).unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn parameter_count_is_the_reference_networks() {
        // The reference networks have 54.41 M (unet_256) and 11.38 M (resnet_9blocks) parameters
        // in all, almost all of them convolution weights.
        let unet256 = generator_config("unet_256", 64).unwrap();
        let n = unet256.parameters().unwrap();
        assert!((54_000_000..54_500_000).contains(&n), "{n}");
        let resnet9 = generator_config("resnet_9blocks", 64).unwrap();
        let n = resnet9.parameters().unwrap();
        assert!((11_300_000..11_400_000).contains(&n), "{n}");
    }

    #[test]
    fn bench_refuses_absurd_requests_before_building_anything() {
        let ok = BenchSpec {
            net_g: "unet_128".into(),
            ngf: 8,
            size: 128,
            batch: 1,
            iters: 1,
            warmup: 0,
            train: false,
            norm_stats: NormStats::Batch,
            memory_budget_mb: 0,
            precision: crate::kernels::Precision::F32,
        };
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
