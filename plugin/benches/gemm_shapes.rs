//! Raw matrix-product throughput on the shapes the U-Net's layers produce: the `gemm` crate
//! against the small-n kernels of `pix2pix::kernels`, to place the switch between them.
//! `cargo bench -p pix2pix --bench gemm_shapes`.

use std::time::Instant;

use pix2pix::kernels::{bench_sgemm, GemmPath};

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
    ];
    for n in [1, 4, 8, 16, 64] {
        shapes.push((format!("conv 512<-512 n={n}"), 512, n, 8192, false, false));
        shapes.push((format!("convT 1024->512 n={n}"), 8192, n, 1024, true, false));
    }
    // Weight gradients: (cout, cin·16) = dy (cout × S) · colᵀ (S × cin·16), k = S small inside.
    for s in [4, 16, 64] {
        // b = colᵀ, read in place from the column matrix: column-major.
        shapes.push((format!("wgrad 1024x8192 k=S={s}"), 1024, 8192, s, false, true));
    }
    println!("{} rayon threads", rayon::current_num_threads());
    for (label, m, n, k, lt, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let (ars, acs) = if lt { (1, m) } else { (k, 1) };
        let fl = 2.0 * (m * n * k) as f64;
        let t1 = med(9, || bench_sgemm(&mut c, &a, ars, acs, &b, bt, m, n, k, GemmPath::Gemm));
        let small = if n <= 16 {
            let t2 =
                med(9, || bench_sgemm(&mut c, &a, ars, acs, &b, bt, m, n, k, GemmPath::SmallN));
            format!("| small-n {:7.2} ms {:6.1} GF/s", t2 * 1e3, fl / t2 / 1e9)
        } else {
            String::new()
        };
        println!(
            "{label:<24} m{m:<6} n{n:<6} k{k:<5} gemm {:7.2} ms {:6.1} GF/s {small}",
            t1 * 1e3,
            fl / t1 / 1e9
        );
    }
}
