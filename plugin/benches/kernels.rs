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
//! - `peak`:  the CPU's f32 multiply-add peak in GFLOP/s (every pool thread running independent
//!   fused multiply-adds from registers), the ceiling the profile's GFLOP/s read against.
//!
//! Environment: `PIX2PIX_BENCH=infer,grad,step` (what to run, `peak` too on request), `PIX2PIX_BENCH_MODES=candle,fast`,
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

/// Independent chains of fused multiply-adds, 16 lanes each, `rounds` times: `12·16·2·rounds`
/// FLOP, from registers (12 chains cover the 4-cycle latency of two FMA pipes).
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(1e-9));
    let mut a: [__m512; 12] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
    for _ in 0..rounds {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_ps(*v, b, c);
        }
    }
    a.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

/// The same on 8 lanes (AVX2 + FMA).
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(1e-9));
    let mut a: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
    for _ in 0..rounds {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, b, c);
        }
    }
    let mut out = [0f32; 8];
    a.iter().fold(0.0, |s, &v| {
        // SAFETY: `out` holds the 8 floats stored.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        s + out.iter().sum::<f32>()
    })
}

/// The f32 multiply-add peak of all the pool's threads at once: GFLOP/s and the vector width.
#[cfg(target_arch = "x86_64")]
fn fma_peak() -> Option<(f64, &'static str)> {
    let (lanes, isa) = match () {
        _ if is_x86_feature_detected!("avx512f") => (16, "avx512f"),
        _ if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => (8, "avx2+fma"),
        _ => return None,
    };
    let rounds = 100_000_000u64;
    let run = || {
        // SAFETY: each runs only where the CPU has its features (detected above).
        std::hint::black_box(unsafe {
            match lanes {
                16 => fma_chains_avx512(rounds),
                _ => fma_chains_avx2(rounds),
            }
        })
    };
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            rayon::broadcast(|_| run());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let flop = (rayon::current_num_threads() as u64 * rounds * 12 * lanes * 2) as f64;
    Some((flop / best / 1e9, isa))
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak() -> Option<(f64, &'static str)> {
    None
}

fn main() {
    let what = env_list("PIX2PIX_BENCH", "infer,grad,step");
    if what.iter().any(|w| w == "peak") {
        match fma_peak() {
            Some((gflops, isa)) => println!(
                "fma peak: {gflops:.0} GFLOP/s ({isa}, {} threads)",
                rayon::current_num_threads()
            ),
            None => println!("fma peak: skipped (no AVX2 + FMA on this CPU)"),
        }
    }
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
