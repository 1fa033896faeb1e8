//! Raw matrix-product throughput on the shapes the U-Net's layers produce: the `gemm` crate
//! against the small-n kernels of `pix2pix::kernels`, to place the switch between them.
//! `cargo bench -p pix2pix --bench gemm_shapes` (`PIX2PIX_GEMM_SHAPES=n=16`: only the shapes
//! whose label contains that text).

use std::time::Instant;

use pix2pix::kernels::{amx, bench_sgemm, isa, BenchConv, Bf16Weights, ConvPath, GemmPath};

/// Median seconds of `n` runs of `f` after a warm-up.
fn med(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    ts[n / 2]
}

fn main() {
    // (label, m, n, k, a column-major, b column-major)
    let mut shapes: Vec<(String, usize, usize, usize, bool, bool)> = vec![
        ("square 1024".into(), 1024, 1024, 1024, false, false),
        ("conv 128<-64 @64x64".into(), 128, 4096, 1024, false, false),
        ("conv 512<-256 @16x16".into(), 512, 256, 4096, false, false),
        ("convT 256->64 @64x64".into(), 1024, 4096, 256, true, false),
        ("convT 1024->256 @16x16".into(), 4096, 256, 1024, true, false),
        ("convT 128->3 @128x128".into(), 48, 16384, 128, true, false),
        // The ngf-32 U-Net's 16×16 and 8×8-grid convolutions, as run (weights · columns) and
        // transposed (columnsᵀ · weightsᵀ: pixels as gemm's rows).
        ("mid 256<-128 @16x16".into(), 256, 256, 2048, false, false),
        ("mid(t) 256<-128 @16x16".into(), 256, 256, 2048, true, true),
        ("mid 256<-256 @8x8".into(), 256, 64, 4096, false, false),
        ("mid(t) 256<-256 @8x8".into(), 64, 256, 4096, true, true),
    ];
    for n in [1, 4, 8, 16, 64] {
        shapes.push((format!("conv 512<-512 n={n}"), 512, n, 8192, false, false));
        shapes.push((format!("convT 1024->512 n={n}"), 8192, n, 1024, true, false));
        // Frozen transposed convolutions hold their weights row-major (frozen.rs).
        shapes.push((format!("convT(rm) 1024->512 n={n}"), 8192, n, 1024, false, false));
    }
    // The ngf-32 U-Net's inner layers (256 channels, 8 MB of transposed and 4 MB of forward
    // weights): the grids 1×1 … 8×8 at batch 1.
    for n in [1, 4, 16, 64] {
        shapes.push((format!("ngf32 conv 256<-256 n={n}"), 256, n, 4096, false, false));
        shapes.push((format!("ngf32 convT(rm) 512->256 n={n}"), 4096, n, 512, false, false));
    }
    // Weights that stay in L2 (1 MB): no DRAM; at tens of µs a call, mostly the call's start.
    for n in [8, 16] {
        shapes.push((format!("hot(rm) 256x1024 n={n}"), 256, n, 1024, false, false));
    }
    // Weight gradients: (cout, cin·16) = dy (cout × S) · colᵀ (S × cin·16), k = S small inside.
    for s in [4, 16, 64] {
        // b = colᵀ, read in place from the column matrix: column-major.
        shapes.push((format!("wgrad 1024x8192 k=S={s}"), 1024, 8192, s, false, true));
    }
    println!(
        "{} rayon threads, our kernels on {}, gemm on {}",
        rayon::current_num_threads(),
        isa::active().name(),
        isa::gemm_isa()
    );
    // PIX2PIX_GEMM_SHAPES=text: only the shapes whose label contains it.
    let only = std::env::var("PIX2PIX_GEMM_SHAPES").unwrap_or_default();
    // The outer layers (k4 s2 p1): the direct kernel on each ISA it has a tile for (forced)
    // against im2col + gemm (gemm on its own choice, AVX-512 where the CPU has it), interleaved
    // (pass by pass) so that load on the machine hits both alike.
    for level in [isa::Isa::Avx512, isa::Isa::Avx2] {
        if isa::force(Some(level)).is_err() {
            println!("direct conv on {}: skipped (not on this CPU)", level.name());
            continue;
        }
        for (c, m, side, nb) in [
            (3, 64, 256, 1),
            (3, 32, 256, 1),
            (6, 64, 256, 1),
            (3, 64, 256, 4),
            (32, 64, 128, 1),
            (64, 128, 128, 1),
            (64, 128, 64, 1),
            (128, 256, 32, 1),
            (128, 256, 64, 1),
            (256, 512, 32, 1),
            (256, 256, 16, 1),
            (256, 256, 8, 1),
            (256, 256, 4, 1),
            (32, 64, 128, 4),
            (512, 512, 16, 1),
            (512, 512, 8, 1),
            (512, 512, 4, 1),
            (128, 256, 32, 4),
            (256, 256, 8, 4),
        ] {
            let label = format!("conv {c}->{m} @{side} b{nb} ({})", level.name());
            if !label.contains(&only) {
                continue;
            }
            let x: Vec<f32> = (0..nb * c * side * side).map(|i| (i % 13) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..m * c * 16).map(|i| (i % 7) as f32 * 0.1).collect();
            let fl = 2.0 * (m * c * 16 * nb * (side / 2) * (side / 2)) as f64;
            // PIX2PIX_CONV_PATHS=text: only the paths whose name contains it (to profile one).
            let pick = std::env::var("PIX2PIX_CONV_PATHS").unwrap_or_default();
            let paths: Vec<ConvPath> = [ConvPath::Pixels, ConvPath::Channels, ConvPath::Gemm]
                .into_iter()
                .filter(|p| format!("{p:?}").contains(&pick))
                .collect();
            // PIX2PIX_CONV_COLD=1: each path rotates over copies of its layer whose weights
            // together exceed the caches (256 MB), as in the network, where the other layers'
            // weights and activations pass between two calls of one layer.
            let copies = match std::env::var("PIX2PIX_CONV_COLD").is_ok() {
                true => ((256 << 20) / (w.len() * 4)).max(1),
                false => 1,
            };
            let convs: Vec<Vec<BenchConv>> = paths
                .iter()
                .map(|&path| {
                    (0..copies)
                        .map_while(|_| BenchConv::new((c, side, side), &w, m, 4, 2, 1, path))
                        .collect()
                })
                .collect();
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
            for _ in 0..7 {
                for (t, conv) in times.iter_mut().zip(&convs) {
                    if !conv.is_empty() {
                        let mut next = conv.iter().cycle();
                        t.push(med(3, || drop(next.next().map(|c| c.run(&x, nb)))));
                    }
                }
            }
            let cells: Vec<String> = paths
                .iter()
                .zip(&mut times)
                .map(|(path, t)| {
                    t.sort_by(f64::total_cmp);
                    match t.len() {
                        0 => format!("{path:?} not run here"),
                        n => format!(
                            "{path:?} {:6.3} ms ({:5.1} GF/s, spread {:.3}-{:.3})",
                            t[n / 2] * 1e3,
                            fl / t[n / 2] / 1e9,
                            t[0] * 1e3,
                            t[n - 1] * 1e3
                        ),
                    }
                })
                .collect();
            println!("{label}: {}", cells.join(" | "));
        }
    }
    isa::force(None).expect("back to the detected level");
    // The many-channel layers' weight gradients (k4 s2 p1) on the channel tiles.
    for (c, m, side, nb) in
        [(32, 64, 128, 4), (64, 128, 64, 4), (32, 64, 128, 1), (128, 256, 32, 4)]
    {
        let label = format!("wgrad channels {c}->{m} @{side} b{nb}");
        if !label.contains(&only) {
            continue;
        }
        let s = (side / 2) * (side / 2);
        let dy: Vec<f32> = (0..nb * m * s).map(|i| (i % 11) as f32 * 0.1).collect();
        let x: Vec<f32> = (0..nb * c * side * side).map(|i| (i % 13) as f32 * 0.1).collect();
        if pix2pix::kernels::bench_channel_weight_grad(&dy, &x, nb, (c, side, m)).is_none() {
            println!("{label}: skipped (no AVX-512 here)");
            continue;
        }
        let fl = 2.0 * (m * c * 16 * nb * s) as f64;
        let mut t: Vec<f64> = (0..7)
            .map(|_| {
                med(3, || {
                    std::hint::black_box(pix2pix::kernels::bench_channel_weight_grad(
                        &dy,
                        &x,
                        nb,
                        (c, side, m),
                    ));
                })
            })
            .collect();
        t.sort_by(f64::total_cmp);
        println!(
            "{label}: {:6.3} ms ({:5.1} GF/s, spread {:.3}-{:.3})",
            t[3] * 1e3,
            fl / t[3] / 1e9,
            t[0] * 1e3,
            t[6] * 1e3
        );
    }
    for (label, m, n, k, lt, bt) in shapes.into_iter().filter(|s| s.0.contains(&only)) {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let (ars, acs) = if lt { (1, m) } else { (k, 1) };
        let fl = 2.0 * (m * n * k) as f64;
        let t1 = med(9, || bench_sgemm(&mut c, &a, ars, acs, &b, bt, m, n, k, GemmPath::Gemm));
        let has_small = n <= 16;
        // Weights cold, as in the network (other layers' weights and activations pass between
        // two calls of one layer): rotate over copies that together exceed the caches.
        let cold = if label.starts_with("ngf32") {
            let copies: Vec<Vec<f32>> = (0..(256 << 20) / (m * k * 4)).map(|_| a.clone()).collect();
            let mut i = 0;
            let mut run = |path| {
                med(9, || {
                    i = (i + 1) % copies.len();
                    bench_sgemm(&mut c, &copies[i], ars, acs, &b, bt, m, n, k, path)
                })
            };
            let (tg, ts) =
                (run(GemmPath::Gemm), if has_small { run(GemmPath::SmallN) } else { f64::NAN });
            format!(
                "| cold: gemm {:5.2} ms small-n {:5.2} ms (best {:4.1} GB/s) ",
                tg * 1e3,
                ts * 1e3,
                (m * k * 4) as f64 / ts.min(tg) / 1e9
            )
        } else {
            String::new()
        };
        let small = if has_small {
            let t2 =
                med(9, || bench_sgemm(&mut c, &a, ars, acs, &b, bt, m, n, k, GemmPath::SmallN));
            format!("| small-n {:7.2} ms {:6.1} GF/s", t2 * 1e3, fl / t2 / 1e9)
        } else {
            String::new()
        };
        // A column-major `a` on the channel tiles, where the CPU has AVX-512.
        let columns = match (lt, bt, isa::Isa::Avx512.available()) {
            (true, false, true) => {
                let t = med(9, || {
                    bench_sgemm(&mut c, &a, ars, acs, &b, bt, m, n, k, GemmPath::Columns)
                });
                format!("| columns {:7.2} ms {:6.1} GF/s ", t * 1e3, fl / t / 1e9)
            }
            (true, false, false) => "| columns skipped (no AVX-512 here) ".into(),
            _ => String::new(),
        };
        // bf16 on weights packed once (as frozen layers hold them): the AVX512_BF16 kernel,
        // then AMX where the system has it.
        let bf16 = match Bf16Weights::pack(&a, m, k) {
            Err(why) => format!("| bf16 skipped: {why}"),
            Ok(w) => {
                let mut cols = String::new();
                for off in [true, false] {
                    if !off && !amx::available() {
                        cols.push_str(" | amx skipped: not available here");
                        continue;
                    }
                    amx::disable(off);
                    let t = med(9, || w.product(&mut c, &b, n));
                    let name = if off { "bf16" } else { "amx" };
                    cols.push_str(&format!(
                        " | {name} {:7.2} ms {:6.1} GF/s",
                        t * 1e3,
                        fl / t / 1e9
                    ));
                }
                amx::disable(false);
                cols
            }
        };
        println!(
            "{label:<24} m{m:<6} n{n:<6} k{k:<5} gemm {:7.2} ms {:6.1} GF/s {small} {columns}{cold}{bf16}",
            t1 * 1e3,
            fl / t1 / 1e9
        );
    }
}
