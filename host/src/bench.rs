//! `host bench`: times the generator (and, with --train, a full training step) inside the
//! plugin; the plugin returns per-iteration times and the host reports their median.

use std::process::ExitCode;

use anyhow::{bail, Result};
use pix2pix_ffi::{BenchRequest, NormStats, Precision};

use crate::plugin::{into_result, PluginArg};
use crate::settings::parser;

/// How `host bench` maps onto the README's performance table (`bench/side_by_side.sh` runs it
/// this way, with --iters 7, for each row).
pub const ABOUT: &str = "\
README performance table, column by column (one row: --net-g unet_256 --ngf 64 --size 256 --batch 1):
  ours, inference              host bench --norm-stats running      (infer_ms)
  ours, `host run`'s default   host bench                           (infer_ms; --norm-stats batch)
  ours, training step          host bench --train                   (train_step_ms)
Rows: unet_256 ngf 64 / ngf 32 at --size 256, unet_128 ngf 64 at --size 128, and --batch 4.
The PyTorch and ONNX Runtime columns come from ../shared/reference/bench_torch.py through
bench/side_by_side.sh. The weights are random: speed does not depend on them.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArg,
    /// Generator: unet_256, unet_128, resnet_9blocks, resnet_6blocks (the README's rows use
    /// unet_256 and unet_128).
    #[arg(long, default_value = "unet_256")]
    net_g: String,
    /// Generator filters in the first layer (64: the paper's; 32: the shipped default model's).
    /// With --train the discriminator gets as many (ndf = ngf).
    #[arg(long, default_value_t = 64)]
    ngf: u32,
    /// Image side in pixels, square (a multiple of the generator's stride: 256 for unet_256,
    /// 128 for unet_128, 4 for the ResNets).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Images per forward pass (and per training step); the README's last row is --batch 4.
    /// Inference normalises each image by its own statistics, as the plugin's batch
    /// translation does; images_per_s is batch / the median infer_ms.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: u32,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Also time a full training step (G and D forward, backward, Adam): the README's "ours,
    /// training step" column (train_step_ms).
    #[arg(long)]
    train: bool,
    /// Normalisation statistics of the timed inference: running = the checkpoint's running
    /// statistics (here the fresh network's), PyTorch's eval mode, what bench_torch.py and ONNX
    /// Runtime time: the README's "ours, inference" column; batch = the statistics of the input
    /// itself, the paper's protocol and `host run`'s default: the "ours, `host run`'s default"
    /// column. Training steps always use the batch's.
    #[arg(long, value_parser = parser::<NormStats>(), default_value_t = NormStats::default())]
    norm_stats: NormStats,
    /// Arithmetic of the timed inference's convolutions: f32 (matches the reference) or bf16 (bf16 products
    /// accumulated in f32 on CPUs with AVX512_BF16: faster, outputs within about a level of
    /// f32's; elsewhere f32 runs, and this says so). bf16 with `--norm-stats running`: the
    /// README's "ours, bf16" column.
    #[arg(long, value_parser = parser::<Precision>(), default_value_t = Precision::default())]
    precision: Precision,
    /// Memory the benchmark may take, in MiB (0 = half of the machine's memory, or of the
    /// cgroup's or RLIMIT_AS limit if lower).
    #[arg(long, value_name = "MiB", default_value_t = 0)]
    memory_budget: u64,
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

pub fn main(args: Args) -> Result<ExitCode> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let plugin = args.plugin.load()?;
    let request = BenchRequest {
        net_g: args.net_g.as_str().into(),
        ngf: args.ngf,
        size: args.size,
        batch: args.batch,
        iters: args.iters,
        warmup: args.warmup,
        train: args.train,
        norm_stats: args.norm_stats,
        memory_budget_mb: args.memory_budget,
        precision: args.precision,
    };
    let r = into_result((plugin.module.bench())(request))?;
    let precision = match (args.precision, r.precision) {
        (Precision::Bf16, Precision::F32) => "f32 (bf16 asked for; this CPU lacks AVX512_BF16)",
        (_, p) => p.name(),
    };
    eprintln!(
        "{} ngf {} size {} batch {}, {} statistics, {precision}: {} iterations after {} warm-up",
        args.net_g,
        args.ngf,
        args.size,
        args.batch,
        args.norm_stats.name(),
        args.iters,
        args.warmup
    );
    let infer: Vec<f64> = r.infer_ms.to_vec();
    let line = |name: &str, v: &[f64]| -> Result<()> {
        let Some(m) = median(v) else { bail!("the plugin returned no {name} times") };
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        eprintln!("{name}: min {min:.2} max {max:.2} over {}", v.len());
        println!("{name} {m:.3}");
        Ok(())
    };
    // Throughput first: the medians stay the last lines, which scripts read.
    if let Some(m) = median(&infer).filter(|m| *m > 0.0) {
        println!("images_per_s {:.3}", args.batch as f64 * 1e3 / m);
    }
    line("infer_ms", &infer)?;
    if args.train {
        line("train_step_ms", &r.train_step_ms.to_vec())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(super::median(&[]), None);
    }
}
