//! The fast convolution kernels against candle's own ops: outputs and the gradients of the
//! input, the weights and the bias, over random shapes, strides, paddings, output paddings,
//! dilations and batch sizes.

use candle_core::{CustomOp2, DType, Device, Module, Tensor, Var};
use pix2pix::kernels::{self, Conv2dOp, ConvTranspose2dOp};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Max abs error allowed, relative to the reference's largest magnitude (at least 1).
const TOL: f32 = 1e-4;

fn randn(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Asserts `got ≈ want`; returns the error relative to `want`'s scale.
fn check(what: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let err = max_abs(&(got - want).unwrap()) / max_abs(want).max(1.0);
    assert!(err <= TOL, "{what}: max abs error {err:e} (relative to magnitude)");
    err
}

#[derive(Debug, Clone, Copy)]
struct Case {
    nb: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    out_pad: usize,
}

/// A direct f64 convolution and its gradients under the cotangent `r`, as an oracle independent
/// of both implementations (candle's own backward mis-sizes some of these shapes: conv2d takes
/// one output padding for both sides, conv_transpose2d ignores output padding ≥ stride).
/// Returns (y, dL/dx, dL/dw) for L = Σ y·r; `r = None` only sizes y.
fn oracle(
    c: &Case,
    transposed: bool,
    x: &Tensor,
    w: &Tensor,
    r: Option<&Tensor>,
) -> (Tensor, Tensor, Tensor) {
    let f = |t: &Tensor| {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
    };
    let (xv, wv) = (f(x), f(w));
    let eff = c.dil * (c.k - 1) + 1;
    // Image (the convolution's input side) and grid sizes, as the conv from image to grid sees them.
    let (ci_img, ci_grid, ih, iw, gh, gw) = if transposed {
        let side = |n: usize| (n - 1) * c.stride + eff + c.out_pad - 2 * c.pad;
        (c.cout, c.cin, side(c.h), side(c.w), c.h, c.w)
    } else {
        (
            c.cin,
            c.cout,
            c.h,
            c.w,
            (c.h + 2 * c.pad - eff) / c.stride + 1,
            (c.w + 2 * c.pad - eff) / c.stride + 1,
        )
    };
    let (img_len, grid_len) = (c.nb * ci_img * ih * iw, c.nb * ci_grid * gh * gw);
    let rv = r.map(f);
    let (mut img, mut grid, mut gimg, mut ggrid, mut gw_) = (
        vec![0f64; img_len],
        vec![0f64; grid_len],
        vec![0f64; img_len],
        vec![0f64; grid_len],
        vec![0f64; wv.len()],
    );
    if transposed {
        grid.copy_from_slice(&xv)
    } else {
        img.copy_from_slice(&xv)
    }
    // The convolution's output side (y) and its cotangent.
    for n in 0..c.nb {
        for a in 0..ci_grid {
            for b in 0..ci_img {
                for i in 0..c.k {
                    for j in 0..c.k {
                        // Weights: conv (grid ch, img ch, i, j); transposed (grid ch = cin, img ch = cout, i, j).
                        let wi = ((a * ci_img + b) * c.k + i) * c.k + j;
                        for oy in 0..gh {
                            let iy = (oy * c.stride + i * c.dil) as isize - c.pad as isize;
                            if iy < 0 || iy >= ih as isize {
                                continue;
                            }
                            for ox in 0..gw {
                                let ix = (ox * c.stride + j * c.dil) as isize - c.pad as isize;
                                if ix < 0 || ix >= iw as isize {
                                    continue;
                                }
                                let ii = ((n * ci_img + b) * ih + iy as usize) * iw + ix as usize;
                                let gi = ((n * ci_grid + a) * gh + oy) * gw + ox;
                                if transposed {
                                    img[ii] += grid[gi] * wv[wi];
                                    if let Some(r) = &rv {
                                        ggrid[gi] += r[ii] * wv[wi];
                                        gw_[wi] += r[ii] * grid[gi];
                                    }
                                } else {
                                    grid[gi] += img[ii] * wv[wi];
                                    if let Some(r) = &rv {
                                        gimg[ii] += r[gi] * wv[wi];
                                        gw_[wi] += r[gi] * img[ii];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let t = |v: Vec<f64>, shape: &[usize]| {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap()
    };
    let (img_shape, grid_shape) = ([c.nb, ci_img, ih, iw], [c.nb, ci_grid, gh, gw]);
    if transposed {
        (t(img, &img_shape), t(ggrid, &grid_shape), t(gw_, w.dims()))
    } else {
        (t(grid, &grid_shape), t(gimg, &img_shape), t(gw_, w.dims()))
    }
}

/// Runs `fast(x, w)` and compares its output and the gradients of x and w under a random linear
/// loss with the f64 oracle, and with candle's `reference` where candle's backward can run.
fn compare<F, R>(
    what: &str,
    c: &Case,
    transposed: bool,
    x: &Tensor,
    w: &Tensor,
    fast: F,
    reference: R,
) -> f32
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
    R: Fn(&Tensor, &Tensor) -> Tensor,
{
    let y_shape = oracle(c, transposed, x, w, None).0.dims().to_vec();
    let r = randn(&mut StdRng::seed_from_u64(7), &y_shape);
    let run = |f: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
        let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
        let y = f(xv.as_tensor(), wv.as_tensor());
        let g = (&y * &r).unwrap().sum_all().unwrap().backward();
        let grads = g.ok().map(|g| {
            (g.get(xv.as_tensor()).unwrap().clone(), g.get(wv.as_tensor()).unwrap().clone())
        });
        (y, grads)
    };
    let (y, grads) = run(&fast);
    let (gx, gw) = grads.expect("fast backward");
    let (y_o, gx_o, gw_o) = oracle(c, transposed, x, w, Some(&r));
    let mut worst = check(&format!("{what} output vs oracle"), &y, &y_o);
    worst = worst.max(check(&format!("{what} input grad vs oracle"), &gx, &gx_o));
    worst = worst.max(check(&format!("{what} weight grad vs oracle"), &gw, &gw_o));
    // candle's backward panics or mis-sizes where its implied output padding differs per side,
    // underflows, or reaches the stride; compare gradients with it elsewhere.
    let eff = (c.dil * (c.k - 1) + 1) as isize;
    let implied = |n: usize, g: usize| {
        n as isize - ((g as isize - 1) * c.stride as isize + eff - 2 * c.pad as isize)
    };
    let candle_bwd_ok = if transposed {
        c.out_pad < c.stride
    } else {
        let (gh, gw) = (y_shape[2], y_shape[3]);
        let (ph, pw) = (implied(c.h, gh), implied(c.w, gw));
        ph == pw && ph <= c.h as isize && ph >= 0
    };
    let (y_c, grads_c) = if candle_bwd_ok { run(&reference) } else { (reference(x, w), None) };
    worst = worst.max(check(&format!("{what} output vs candle"), &y, &y_c));
    if let Some((gx_c, gw_c)) = grads_c.filter(|(gx_c, _)| gx_c.dims() == gx.dims()) {
        worst = worst.max(check(&format!("{what} input grad vs candle"), &gx, &gx_c));
        worst = worst.max(check(&format!("{what} weight grad vs candle"), &gw, &gw_c));
        CANDLE_GRADS_COMPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    worst
}

/// How many cases also had their gradients checked against candle's backward.
static CANDLE_GRADS_COMPARED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

fn random_case(rng: &mut StdRng, transposed: bool) -> Case {
    let k = [1, 2, 3, 4, 5, 7][rng.gen_range(0..6)];
    let stride = rng.gen_range(1..=3);
    let dil = if rng.gen_bool(0.2) { 2 } else { 1 };
    let pad = rng.gen_range(0..=(dil * (k - 1) / 2 + 1).min(3));
    let out_pad = if transposed { rng.gen_range(0..stride.max(dil)) } else { 0 };
    let (h, w) = (rng.gen_range(1..=9), rng.gen_range(1..=9));
    let c = Case {
        nb: rng.gen_range(1..=3),
        cin: rng.gen_range(1..=6),
        cout: rng.gen_range(1..=6),
        h,
        w,
        k,
        stride,
        pad,
        dil,
        out_pad,
    };
    let eff = dil * (k - 1) + 1;
    if !transposed && (h + 2 * c.pad < eff || w + 2 * c.pad < eff) {
        return random_case(rng, transposed);
    }
    // The transposed output must be non-empty: (n−1)s + d(k−1) + 1 + op > 2p.
    if transposed && ((h.min(w) - 1) * stride + eff + out_pad <= 2 * c.pad) {
        return random_case(rng, transposed);
    }
    c
}

fn conv2d_case(c: Case, rng: &mut StdRng) -> f32 {
    let x = randn(rng, &[c.nb, c.cin, c.h, c.w]);
    let w = randn(rng, &[c.cout, c.cin, c.k, c.k]);
    let op = Conv2dOp { stride: c.stride, padding: c.pad, dilation: c.dil, act: None };
    compare(
        &format!("conv2d {c:?}"),
        &c,
        false,
        &x,
        &w,
        |x, w| x.apply_op2(w, op).unwrap(),
        |x, w| x.conv2d(w, c.pad, c.stride, c.dil, 1).unwrap(),
    )
}

fn conv_t_case(c: Case, rng: &mut StdRng) -> f32 {
    let x = randn(rng, &[c.nb, c.cin, c.h, c.w]);
    let w = randn(rng, &[c.cin, c.cout, c.k, c.k]);
    let op = ConvTranspose2dOp {
        stride: c.stride,
        padding: c.pad,
        dilation: c.dil,
        output_padding: (c.out_pad, c.out_pad),
    };
    compare(
        &format!("conv_transpose2d {c:?}"),
        &c,
        true,
        &x,
        &w,
        |x, w| x.apply_op2(w, op).unwrap(),
        |x, w| x.conv_transpose2d(w, c.pad, c.out_pad, c.stride, c.dil).unwrap(),
    )
}

#[test]
fn conv2d_random_shapes() {
    let mut rng = StdRng::seed_from_u64(1);
    let worst =
        (0..60).map(|_| conv2d_case(random_case(&mut rng, false), &mut rng)).fold(0f32, f32::max);
    println!(
        "conv2d: worst relative error {worst:.2e} ({} cases so far with candle's gradients too)",
        CANDLE_GRADS_COMPARED.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn conv_transpose2d_random_shapes() {
    let mut rng = StdRng::seed_from_u64(2);
    let worst =
        (0..60).map(|_| conv_t_case(random_case(&mut rng, true), &mut rng)).fold(0f32, f32::max);
    println!("conv_transpose2d: worst relative error {worst:.2e} ({} cases so far with candle's gradients too)", CANDLE_GRADS_COMPARED.load(std::sync::atomic::Ordering::Relaxed));
}

/// The configurations the networks use, with grids large enough for the per-batch gemm path
/// (≥ 1024 positions) next to the merged one.
#[test]
fn network_shapes() {
    let mut rng = StdRng::seed_from_u64(3);
    let c = |nb, cin, cout, h, k, stride, pad, out_pad| Case {
        nb,
        cin,
        cout,
        h,
        w: h,
        k,
        stride,
        pad,
        dil: 1,
        out_pad,
    };
    let mut worst = 0f32;
    for nb in [1, 2] {
        // U-Net down / up (k4 s2 p1), on a 64×64 image: a 32×32 grid either way (long enough
        // for the weight gradient's transposed product; the smaller grids below take the other).
        worst = worst.max(conv2d_case(c(nb, 3, 5, 64, 4, 2, 1, 0), &mut rng));
        worst = worst.max(conv_t_case(c(nb, 5, 3, 32, 4, 2, 1, 0), &mut rng));
        // Enough output channels for the per-image column matrices (up to 6 threads).
        worst = worst.max(conv_t_case(c(nb, 5, 24, 32, 4, 2, 1, 0), &mut rng));
        worst = worst.max(conv_t_case(c(nb, 6, 4, 2, 4, 2, 1, 0), &mut rng));
        // Many-channel layers (64 grid channels, 256 taps) on a 32×32 grid: the channel-form
        // forward and weight gradients (direct_channels, weight_grad_channels) on AVX-512.
        worst = worst.max(conv2d_case(c(nb, 16, 64, 64, 4, 2, 1, 0), &mut rng));
        worst = worst.max(conv_t_case(c(nb, 64, 16, 32, 4, 2, 1, 0), &mut rng));
        // Transposed layers of 64 channels on an 8×8 grid, and a stride-2 convolution's input
        // gradient of that shape: by output phases on the channel tiles, on AVX-512.
        worst = worst.max(conv_t_case(c(nb, 64, 64, 8, 4, 2, 1, 0), &mut rng));
        worst = worst.max(conv2d_case(c(nb, 64, 64, 16, 4, 2, 1, 0), &mut rng));
        // Innermost U-Net layers: grids of 2×2 and 1×1 with enough weights for the small-n kernels.
        worst = worst.max(conv_t_case(c(nb, 64, 64, 2, 4, 2, 1, 0), &mut rng));
        worst = worst.max(conv_t_case(c(nb, 64, 64, 1, 4, 2, 1, 0), &mut rng));
        worst = worst.max(conv2d_case(c(nb, 64, 64, 4, 4, 2, 1, 0), &mut rng));
        // The PatchGAN's last layer (one output channel, k4 s1 p1: no column matrix), a strided
        // one-channel conv, and a transposed conv from one channel (the same kernels).
        worst = worst.max(conv2d_case(c(nb, 16, 1, 9, 4, 1, 1, 0), &mut rng));
        // One-channel stride-1 input gradients: rows over one run of 16, padding past the
        // kernel's reach.
        worst = worst.max(conv2d_case(c(nb, 4, 1, 21, 4, 1, 1, 0), &mut rng));
        worst = worst.max(conv2d_case(c(nb, 3, 1, 5, 3, 1, 3, 0), &mut rng));
        worst = worst.max(conv2d_case(c(nb, 5, 1, 11, 3, 2, 1, 0), &mut rng));
        worst = worst.max(conv_t_case(c(nb, 1, 4, 6, 4, 2, 1, 0), &mut rng));
        // ResNet: k7 s1 p0 after reflection padding, k3 s2 p1 down, k3 s2 p1 op1 up.
        worst = worst.max(conv2d_case(c(nb, 3, 4, 38, 7, 1, 0, 0), &mut rng));
        worst = worst.max(conv2d_case(c(nb, 4, 6, 33, 3, 2, 1, 0), &mut rng));
        worst = worst.max(conv_t_case(c(nb, 6, 4, 16, 3, 2, 1, 1), &mut rng));
    }
    println!("network shapes: worst relative error {worst:.2e}");
}

/// A convolution that applies LeakyReLU to its input as it reads it (the U-Net's down path and
/// the PatchGAN in training) gives, to the bit, the output and the input and weight gradients
/// of the activation's own op followed by the plain convolution: the channel form (its padded
/// copy applies the slope, forward and weight gradient), the column-matrix paths, stride 1,
/// and a one-channel output.
#[test]
fn activation_read_in_training_equals_a_separate_activation() {
    let mut rng = StdRng::seed_from_u64(12);
    // (nb, cin, cout, side, k, stride, pad)
    for (nb, cin, cout, side, k, stride, pad) in [
        (2, 16, 64, 64, 4, 2, 1),
        (1, 3, 5, 9, 4, 2, 1),
        (2, 8, 16, 12, 4, 1, 1),
        (1, 16, 1, 12, 4, 1, 1),
    ] {
        let what = format!("{nb}x{cin}x{side}x{side} -> {cout} k{k} s{stride} p{pad}");
        let x = randn(&mut rng, &[nb, cin, side, side]);
        let w = randn(&mut rng, &[cout, cin, k, k]);
        let plain = Conv2dOp { stride, padding: pad, dilation: 1, act: None };
        let fused = Conv2dOp { act: Some(0.2), ..plain };
        let run = |f: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            let y = f(xv.as_tensor(), wv.as_tensor());
            let r = randn(&mut StdRng::seed_from_u64(5), y.dims());
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (gx, gw) = (g.get(xv.as_tensor()).unwrap(), g.get(wv.as_tensor()).unwrap());
            (v(&y), v(gx), v(gw))
        };
        let want = run(&|x, w| kernels::leaky_relu(x, 0.2).unwrap().apply_op2(w, plain).unwrap());
        let got = run(&|x, w| x.apply_op2(w, fused).unwrap());
        assert!(got.0 == want.0, "{what}: output");
        assert!(got.1 == want.1, "{what}: input gradient");
        assert!(got.2 == want.2, "{what}: weight gradient");
    }
}

/// The entry points the networks call, with bias, against the candle_nn layers themselves.
#[test]
fn layers_with_bias() {
    assert_eq!(
        kernels::mode(),
        kernels::Mode::Fast,
        "run these tests without PIX2PIX_KERNELS=candle"
    );
    let mut rng = StdRng::seed_from_u64(4);
    let x = randn(&mut rng, &[2, 4, 10, 10]);
    for transposed in [false, true] {
        let (cin, cout, k, stride, pad, out_pad) =
            if transposed { (4, 3, 3, 2, 1, 1) } else { (4, 3, 4, 2, 1, 0) };
        let wshape = if transposed { [cin, cout, k, k] } else { [cout, cin, k, k] };
        let (w, b) = (randn(&mut rng, &wshape), randn(&mut rng, &[cout]));
        let run = |fast: bool| {
            let (xv, wv, bv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&w).unwrap(),
                Var::from_tensor(&b).unwrap(),
            );
            let (wt, bt) = (wv.as_tensor().clone(), Some(bv.as_tensor().clone()));
            let y = if transposed {
                let cfg = candle_nn::ConvTranspose2dConfig {
                    padding: pad,
                    output_padding: out_pad,
                    stride,
                    dilation: 1,
                };
                let l = candle_nn::ConvTranspose2d::new(wt, bt, cfg);
                if fast {
                    kernels::conv_transpose2d(xv.as_tensor(), &l)
                } else {
                    l.forward(xv.as_tensor())
                }
            } else {
                let cfg = candle_nn::Conv2dConfig { padding: pad, stride, ..Default::default() };
                let l = candle_nn::Conv2d::new(wt, bt, cfg);
                if fast {
                    kernels::conv2d(xv.as_tensor(), &l)
                } else {
                    l.forward(xv.as_tensor())
                }
            }
            .unwrap();
            let r = randn(&mut StdRng::seed_from_u64(5), y.dims());
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
            (y, get(&xv), get(&wv), get(&bv))
        };
        let (fast, reference) = (run(true), run(false));
        let what = if transposed { "conv_transpose2d layer" } else { "conv2d layer" };
        check(&format!("{what} output"), &fast.0, &reference.0);
        check(&format!("{what} input grad"), &fast.1, &reference.1);
        check(&format!("{what} weight grad"), &fast.2, &reference.2);
        check(&format!("{what} bias grad"), &fast.3, &reference.3);
    }
}

/// Strided views (a transposed tensor) go through the entry points unchanged; other dtypes fall
/// back to candle.
#[test]
fn non_contiguous_and_other_dtypes() {
    let mut rng = StdRng::seed_from_u64(6);
    let x = randn(&mut rng, &[1, 3, 8, 8]).transpose(2, 3).unwrap();
    let w = randn(&mut rng, &[3, 2, 4, 4]);
    let cfg =
        candle_nn::ConvTranspose2dConfig { padding: 1, output_padding: 0, stride: 2, dilation: 1 };
    let l = candle_nn::ConvTranspose2d::new(w.clone(), None, cfg);
    check("strided input", &kernels::conv_transpose2d(&x, &l).unwrap(), &l.forward(&x).unwrap());
    let l64 = candle_nn::ConvTranspose2d::new(w.to_dtype(DType::F64).unwrap(), None, cfg);
    let y64 = kernels::conv_transpose2d(&x.to_dtype(DType::F64).unwrap(), &l64).unwrap();
    assert_eq!(y64.dtype(), DType::F64);
    let _ = Conv2dOp { stride: 1, padding: 0, dilation: 1, act: None }.name();
}

/// Tests that force an instruction set hold this lock, so that one test's choice is not
/// undone under another's (all other tests are correct on every level anyway).
static ISA_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with the hand-written kernels forced to each level this CPU has, saying plainly
/// which levels it skipped; the `gemm` crate keeps its own choice (it offers no switch).
fn on_every_isa(what: &str, mut f: impl FnMut()) {
    let _guard = ISA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for isa in kernels::Isa::ALL {
        if !isa.available() {
            eprintln!("{what}: skipped: {} not available", isa.name());
            continue;
        }
        kernels::isa::force(Some(isa)).unwrap();
        assert_eq!(kernels::isa::active(), isa);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut f));
        kernels::isa::force(None).unwrap();
        if let Err(e) = r {
            eprintln!("{what}: failed on {}", isa.name());
            std::panic::resume_unwind(e);
        }
        eprintln!("{what}: passed on {} (gemm crate on {})", isa.name(), kernels::isa::gemm_isa());
    }
}

/// The outermost layers', the one-channel layers' and the small-n products of the innermost
/// ones, on every instruction set: against the f64 oracle.
#[test]
fn strategies_on_every_isa() {
    let c = |nb, cin, cout, h, w, k, stride, pad| Case {
        nb,
        cin,
        cout,
        h,
        w,
        k,
        stride,
        pad,
        dil: 1,
        out_pad: 0,
    };
    on_every_isa("strategies", || {
        let mut rng = StdRng::seed_from_u64(8);
        // Direct conv: U-Net / PatchGAN first layers (3 or 6 channels, k4 s2 p1), a width that
        // leaves a partial tile and a channel count that leaves a partial channel tile, a
        // stride-1 k3 and a dilated one.
        for case in [
            c(1, 3, 8, 64, 64, 4, 2, 1),
            c(2, 6, 13, 40, 70, 4, 2, 1),
            c(1, 2, 5, 21, 37, 3, 1, 1),
            c(2, 3, 9, 12, 33, 4, 2, 0),
            Case { dil: 2, ..c(1, 3, 4, 20, 40, 3, 1, 2) },
        ] {
            conv2d_case(case, &mut rng);
        }
        // One-channel convolutions (the PatchGAN's last layer; the loops compiled per level):
        // output runs longer and shorter than a vector, strided, and a one-channel-input
        // transposed conv.
        for nb in [1, 2] {
            conv2d_case(c(nb, 8, 1, 37, 37, 4, 1, 1), &mut rng);
            conv2d_case(c(nb, 5, 1, 9, 14, 3, 2, 1), &mut rng);
            conv_t_case(c(nb, 1, 3, 19, 19, 4, 1, 1), &mut rng);
            conv2d_case(Case { dil: 2, ..c(nb, 4, 1, 15, 13, 3, 1, 2) }, &mut rng);
            conv_t_case(Case { dil: 2, ..c(nb, 1, 2, 9, 11, 3, 1, 1) }, &mut rng);
            conv2d_case(c(nb, 3, 1, 6, 6, 4, 1, 0), &mut rng);
        }
        // Small-n products: transposed convolutions from 1×1 and 2×2 grids, conv2d onto them.
        for nb in [1, 3] {
            conv_t_case(c(nb, 64, 64, 1, 1, 4, 2, 1), &mut rng);
            conv_t_case(c(nb, 64, 64, 2, 2, 4, 2, 1), &mut rng);
            conv2d_case(c(nb, 64, 64, 4, 4, 4, 2, 1), &mut rng);
        }
    });
}

/// The direct (column-matrix-free) conv kernels against im2col + gemm (itself checked against
/// the f64 oracle above) where they run (AVX-512; the pixel form also runs the image layers on
/// AVX2); elsewhere said skipped.
#[test]
fn direct_conv_matches_im2col_gemm() {
    use kernels::{BenchConv, ConvPath};
    on_every_isa("direct conv", || {
        let mut rng = StdRng::seed_from_u64(10);
        // (nb, c, h, w, m, k, s, p): outermost U-Net / PatchGAN layers, partial tiles, encoder
        // layers (the channel form), a tiny grid.
        for (nb, c, h, w, m, k, s, p) in [
            (1, 3, 64, 64, 8, 4, 2, 1),
            (2, 6, 40, 70, 13, 4, 2, 1),
            (1, 2, 21, 37, 5, 3, 1, 1),
            (2, 3, 12, 36, 9, 4, 2, 0),
            (1, 32, 32, 32, 64, 4, 2, 1),
            (2, 16, 8, 8, 80, 4, 2, 1),
        ] {
            let x: Vec<f32> = (0..nb * c * h * w).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
            let wt: Vec<f32> = (0..m * c * k * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
            let conv = |path| BenchConv::new((c, h, w), &wt, m, k, s, p, path);
            let g = conv(ConvPath::Gemm).expect("im2col + gemm runs every layer").run(&x, nb);
            let isa = kernels::isa::active();
            for path in [ConvPath::Pixels, ConvPath::Channels] {
                let Some(d) = conv(path) else {
                    // AVX-512 runs every case here (the pixel form on rows of 16 outputs or
                    // more), AVX2 the image layers (<= 48 taps) on the pixel form.
                    let ow = (w + 2 * p - k) / s + 1;
                    let expected = match (isa, path) {
                        (kernels::Isa::Avx512, ConvPath::Pixels) => ow >= 16,
                        (kernels::Isa::Avx512, ConvPath::Channels) => true,
                        (kernels::Isa::Avx2, ConvPath::Pixels) => c * k * k <= 48,
                        _ => false,
                    };
                    assert!(
                        !expected,
                        "direct conv {path:?}: {c} channels, k{k} not run on {}",
                        isa.name()
                    );
                    eprintln!(
                        "direct conv {path:?}: {c} channels, k{k}: skipped on {}",
                        isa.name()
                    );
                    continue;
                };
                let d = d.run(&x, nb);
                let scale = g.iter().fold(1f32, |a, v| a.max(v.abs()));
                let err = d.iter().zip(&g).fold(0f32, |a, (d, g)| a.max((d - g).abs())) / scale;
                assert_eq!(d.len(), g.len());
                assert!(err <= TOL, "direct conv {path:?} {nb}x{c}x{h}x{w} -> {m}: error {err:e}");
            }
        }
    });
}

/// bf16 products (AVX512_BF16): exact up to f32 summation against an f64 product of the
/// bf16-rounded operands, and within bf16's rounding of the f32 product.
#[test]
fn bf16_gemm_against_f32() {
    if !kernels::isa::bf16_available() {
        eprintln!("bf16_gemm_against_f32: skipped: avx512bf16 not available");
        return;
    }
    // Both bf16 kernels: AMX where the CPU and system have it, and AVX512_BF16.
    let amx = kernels::amx::available();
    if !amx {
        eprintln!("bf16_gemm_against_f32: AMX kernel skipped: AMX not available here");
    }
    for off in [false, true] {
        if !off && !amx {
            continue;
        }
        kernels::amx::disable(off);
        bf16_gemm_cases();
    }
    kernels::amx::disable(false);
    assert_eq!(kernels::to_bf16(1.0), 0x3f80);
    assert_eq!(kernels::to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80, "ties to even");
    assert_eq!(kernels::to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82, "ties to even");
}

fn bf16_gemm_cases() {
    let mut rng = StdRng::seed_from_u64(9);
    // Row and column tails of the 6 × 32 and 32 × 32 blocks, odd reductions, reductions past
    // one pass (512 pairs) and past whole tiles (16 pairs).
    for (m, n, k) in [
        (33, 31, 33),
        (32, 64, 64),
        (1, 1, 1),
        (6, 32, 2),
        (7, 33, 3),
        (13, 70, 31),
        (64, 16, 1100),
        (100, 257, 64),
        (5, 3, 2049),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        // A product on NaNs first: its packing returns a NaN-filled buffer to the kernels'
        // scratch pool, which this case's packing then reuses; its padding (pairs past k,
        // columns past n) must be rewritten, or A's zeros times NaN spoil the result.
        let mut poisoned = vec![0f32; 1024];
        kernels::bench_sgemm_bf16(&mut poisoned, &[1.0; 1024], &[f32::NAN; 1 << 20], 1, 1024, 1024)
            .unwrap();
        let mut c = vec![f32::NAN; m * n];
        kernels::bench_sgemm_bf16(&mut c, &a, &b, m, n, k).unwrap();
        let r = |v: f32| kernels::from_bf16(kernels::to_bf16(v)) as f64;
        for i in 0..m {
            for j in 0..n {
                let (mut rounded, mut exact, mut scale) = (0f64, 0f64, 0f64);
                for kk in 0..k {
                    let (x, y) = (a[i * k + kk], b[kk * n + j]);
                    rounded += r(x) * r(y);
                    exact += x as f64 * y as f64;
                    scale += (x as f64 * y as f64).abs();
                }
                let got = c[i * n + j] as f64;
                // f32 sums of k terms: a few ulps of the sum of magnitudes.
                assert!(
                    (got - rounded).abs() <= 1e-6 * scale.max(1.0),
                    "{m}x{n}x{k} ({i},{j}): {got} vs bf16-exact {rounded}"
                );
                // bf16 keeps 8 significant bits: each operand off by at most 2^-8 relative (half
                // an ulp of 2^-7), the product by 2^-7 (+ 2^-16).
                assert!(
                    (got - exact).abs() <= (2f64.powi(-7) + 2f64.powi(-16)) * scale + 1e-6,
                    "{m}x{n}x{k} ({i},{j}): {got} vs f32 {exact}"
                );
            }
        }
    }
}
