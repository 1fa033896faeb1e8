//! unet_256 on the CPU, candle's convolutions against the fast kernels (`pix2pix::kernels`).
//!
//! `cargo bench -p pix2pix --bench kernels`. Prints one line per measurement (median and min
//! over the timed iterations, after one warm-up), then the fast-vs-candle speedups.
//!
//! - `infer`: G forward with frozen weights, eval mode (running statistics), as
//!   `bench_torch.py --what infer`.
//! - `grad`:  G forward in train mode + L1 loss + backward (no optimiser); the forward alone is
//!   timed too, so backward = grad − fwd_train.
//! - `step`:  the trainer's training step (`pix2pix::train::trainer::Trainer::step`, as
//!   bench_torch.py `train`): G forward, D on fake and real + backward + Adam, D on fake again,
//!   G backward (GAN + 100·L1) + Adam.
//!
//! Environment: `PIX2PIX_BENCH=infer,grad,step` (what to run), `PIX2PIX_BENCH_MODES=candle,fast`,
//! `PIX2PIX_BENCH_NGF=64,32`, `PIX2PIX_BENCH_BATCH=1,4` (infer runs each; step the first; grad
//! batch 1), `PIX2PIX_BENCH_N` (timed iterations: default 7 fast, 3 candle),
//! `PIX2PIX_BENCH_SIZE=256`, `PIX2PIX_BENCH_PRECISION=f32|bf16` (infer's arithmetic);
//! `PIX2PIX_BENCH_STATS=batch` (infer normalises with the image's own statistics, as `host run`;
//! default: running statistics, folded into the convolutions);
//! `PIX2PIX_KERNELS_PROFILE=1` adds the fast kernels' phase timings (summed over all runs).
//! On a 2-core machine, also compare `CANDLE_BARRIER_POOL_SPIN_LIMIT=100`: candle's element-wise
//! ops spin a worker thread after each op, which takes a core from the next convolution.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pix2pix::kernels::{self, Mode};
use pix2pix::nets::generator::GeneratorConfig;
use pix2pix::nets::unet::UnetConfig;
use pix2pix::train::trainer::{Settings, Trainer};
use pix2pix::{
    DiscriminatorConfig, DiscriminatorKind, Forward, Generator, Layer, NormKind, NormStats,
};
use rand::{rngs::StdRng, SeedableRng};

fn env_list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_usizes(key: &str, default: &str) -> Vec<usize> {
    env_list(key, default)
        .iter()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{key}: not a number: {s}")))
        .collect()
}

struct Stats {
    median: f64,
    min: f64,
}

/// Median and min in ms of `n` runs of `f`, after one warm-up run.
/// The warm-up run on this thread, the timed ones on a worker of the pool, as the library's
/// translations run (`kernels::on_pool_after_first`).
fn time(n: usize, mut f: impl FnMut() -> Result<()> + Send) -> Stats {
    kernels::on_pool_after_first(true, &mut f).unwrap();
    kernels::on_pool_after_first(false, || time_here(n, f))
}

fn time_here(n: usize, mut f: impl FnMut() -> Result<()>) -> Stats {
    let mut ts: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    Stats { median: ts[ts.len() / 2], min: ts[0] }
}

fn rand_image(nb: usize, size: usize, seed: u64) -> Tensor {
    let dev = Device::Cpu;
    // Deterministic per seed: candle's rand takes no seed, so shape a fixed pattern instead.
    let n = nb * 3 * size * size;
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 2000) as f32 / 1000.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (nb, 3, size, size), &dev).unwrap()
}

fn generator(ngf: usize) -> (VarMap, Generator) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = UnetConfig {
        in_channels: 3,
        out_channels: 3,
        num_downs: 8,
        ngf,
        norm: NormKind::Batch,
        dropout: true,
    };
    let g = Generator::new(GeneratorConfig::Unet(cfg), vb).unwrap();
    (vm, g)
}

fn main() {
    let what = env_list("PIX2PIX_BENCH", "infer,grad,step");
    let modes: Vec<Mode> = env_list("PIX2PIX_BENCH_MODES", "candle,fast")
        .iter()
        .map(|m| match m.as_str() {
            "candle" => Mode::Candle,
            "fast" => Mode::Fast,
            other => panic!("PIX2PIX_BENCH_MODES: unknown mode {other}"),
        })
        .collect();
    let ngfs = env_usizes("PIX2PIX_BENCH_NGF", "64,32");
    let batches = env_usizes("PIX2PIX_BENCH_BATCH", "1,4");
    let size = env_usizes("PIX2PIX_BENCH_SIZE", "256")[0];
    // Inference's arithmetic: f32 (default) or bf16 (AMX / AVX512_BF16 where the CPU has it).
    let precision = match std::env::var("PIX2PIX_BENCH_PRECISION").as_deref() {
        Ok("bf16") => kernels::Precision::Bf16,
        Ok("f32") | Err(_) => kernels::Precision::F32,
        Ok(other) => panic!("PIX2PIX_BENCH_PRECISION: unknown precision {other}"),
    };
    let iters = |m: Mode| {
        std::env::var("PIX2PIX_BENCH_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if m == Mode::Candle { 3 } else { 7 })
    };
    println!(
        "unet_256 bench: {size}x{size}, {} rayon threads, CANDLE_BARRIER_POOL_SPIN_LIMIT={}",
        rayon::current_num_threads(),
        std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").unwrap_or_else(|_| "default".into())
    );
    // (measurement, ngf, batch) -> mode -> median ms
    let mut results: BTreeMap<(String, usize, usize), BTreeMap<&'static str, f64>> =
        BTreeMap::new();
    let mut report = |name: &str, mode: Mode, ngf: usize, nb: usize, s: Stats| {
        let m = if mode == Mode::Fast { "fast" } else { "candle" };
        println!(
            "{name:<14} kernels={m:<6} ngf={ngf:<3} batch={nb}  median {:8.1} ms  min {:8.1} ms",
            s.median, s.min
        );
        results.entry((name.to_string(), ngf, nb)).or_default().insert(m, s.median);
    };

    for &ngf in &ngfs {
        let (_vm, g) = generator(ngf);
        if what.iter().any(|w| w == "infer") {
            // Frozen weights, as a model opened from a file has them (and host bench times).
            let cfg = UnetConfig {
                in_channels: 3,
                out_channels: 3,
                num_downs: 8,
                ngf,
                norm: NormKind::Batch,
                dropout: true,
            };
            let mut g = pix2pix::faces::api::random_generator(GeneratorConfig::Unet(cfg)).unwrap();
            // PIX2PIX_BENCH_STATS=batch: the image's own statistics, as `host run` and
            // `host bench` normalise (the paper's protocol); the default folds running ones, as
            // a model opened on them does.
            let stats = match std::env::var("PIX2PIX_BENCH_STATS").as_deref() {
                Ok("batch") => NormStats::Batch,
                _ => NormStats::Running,
            };
            if stats == NormStats::Running {
                g.fold_running_norms().unwrap();
            }
            let f = Forward::infer(stats);
            for &nb in &batches {
                let x = rand_image(nb, size, 1);
                for &mode in &modes {
                    kernels::set_mode(mode);
                    let s = time(iters(mode), || {
                        kernels::with_precision(precision, || g.forward(&x, &f).map(|_| ()))
                    });
                    report("infer", mode, ngf, nb, s);
                    print!("{}", kernels::take_profile());
                }
            }
        }
        if what.iter().any(|w| w == "grad") {
            let (x, t) = (rand_image(1, size, 1), rand_image(1, size, 2));
            for &mode in &modes {
                kernels::set_mode(mode);
                let s = time(iters(mode), || {
                    let f = Forward::train(None);
                    g.forward(&x, &f).map(|_| ())
                });
                report("fwd_train", mode, ngf, 1, s);
                let s = time(iters(mode), || {
                    let f = Forward::train(None);
                    let y = g.forward(&x, &f)?;
                    let loss = (y - &t)?.abs()?.mean_all()?;
                    loss.backward().map(|_| ())
                });
                report("fwd+bwd_L1", mode, ngf, 1, s);
                print!("{}", kernels::take_profile());
            }
        }
        if what.iter().any(|w| w == "step") {
            // The trainer's own step (plugin/src/train): G forward (dropout on), D on fake and
            // real + backward + Adam, G's GAN + 100·L1 loss through the frozen D + Adam.
            // At the first of PIX2PIX_BENCH_BATCH's batch sizes.
            let nb = batches[0];
            let (x, y) = (rand_image(nb, size, 1), rand_image(nb, size, 2));
            let dcfg = DiscriminatorConfig {
                kind: DiscriminatorKind::NLayer(3),
                in_channels: 6,
                ndf: ngf,
                norm: NormKind::Batch,
            };
            let gcfg = GeneratorConfig::Unet(UnetConfig {
                in_channels: 3,
                out_channels: 3,
                num_downs: 8,
                ngf,
                norm: NormKind::Batch,
                dropout: true,
            });
            let mut trainer = Trainer::new(gcfg, dcfg, Settings::default(), 2e-4).unwrap();
            for &mode in &modes {
                kernels::set_mode(mode);
                let mut seed = 0;
                let s = time(iters(mode), || {
                    seed += 1;
                    trainer
                        .step(&x, &y, Some(StdRng::seed_from_u64(seed)))
                        .map(|_| ())
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                });
                report("train_step", mode, ngf, nb, s);
                print!("{}", kernels::take_profile());
            }
        }
    }
    println!("\nspeedup fast vs candle (median):");
    for ((name, ngf, nb), m) in &results {
        if let (Some(c), Some(f)) = (m.get("candle"), m.get("fast")) {
            println!(
                "{name:<14} ngf={ngf:<3} batch={nb}  candle {c:8.1} ms  fast {f:8.1} ms  x{:.2}",
                c / f
            );
        }
    }
}
