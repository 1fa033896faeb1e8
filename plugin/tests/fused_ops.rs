//! The fused element-wise kernels (batch / instance norm, ReLU / LeakyReLU, tanh) and the frozen
//! transposed convolution, against candle's own composition of the same layers in f64 (which
//! the fast paths never take): outputs, running statistics, and the gradients of the input,
//! the scale and the shift, over shapes from 1×1 maps to batches of 64×64 planes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use pix2pix::kernels::{self, ConvTranspose2d};
use pix2pix::{Forward, NormKind, NormStats};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn rand_t(rng: &mut StdRng, shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale + offset).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The bit patterns of an f32 tensor, for comparisons that must be exact.
fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Asserts `got` (f32) ≈ `want` (f64) to `tol` relative to `want`'s largest magnitude (≥ 1).
fn check(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let err =
        max_abs(&(got.to_dtype(DType::F64).unwrap() - want).unwrap()) / max_abs(want).max(1.0);
    assert!(err <= tol, "{what}: max abs error {err:.2e} (relative to magnitude)");
    err
}

struct NormRun {
    y: Tensor,
    dx: Tensor,
    dgamma: Option<Tensor>,
    dbeta: Option<Tensor>,
    running: Option<(Tensor, Tensor)>,
}

/// One norm layer on `x` in `dtype` (f32: the fused kernels; f64: candle's ops), with the
/// gradients of `Σ y·r`.
fn run_norm(
    kind: NormKind,
    f: &Forward,
    x: &Tensor,
    r: &Tensor,
    params: &[Tensor; 4],
    dtype: DType,
) -> NormRun {
    let c = x.dim(1).unwrap();
    let var = |t: &Tensor| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap();
    let (gamma, beta, rm, rv) =
        (var(&params[0]), var(&params[1]), var(&params[2]), var(&params[3]));
    let mut map = HashMap::new();
    map.insert("weight".to_string(), gamma.as_tensor().clone());
    map.insert("bias".to_string(), beta.as_tensor().clone());
    map.insert("running_mean".to_string(), rm.as_tensor().clone());
    map.insert("running_var".to_string(), rv.as_tensor().clone());
    map.insert("num_batches_tracked".to_string(), Tensor::zeros((), dtype, &Device::Cpu).unwrap());
    let vb = VarBuilder::from_tensors(map, dtype, &Device::Cpu);
    let layer = kind.layer(c).expect("batch and instance norms have a layer")(vb).unwrap();
    let xv = var(x);
    let y = layer.forward(xv.as_tensor(), f).unwrap();
    let grads = (&y * r.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let batch = kind == NormKind::Batch;
    NormRun {
        dx: grads.get(xv.as_tensor()).expect("input gradient").clone(),
        dgamma: batch.then(|| grads.get(gamma.as_tensor()).expect("scale gradient").clone()),
        dbeta: batch.then(|| grads.get(beta.as_tensor()).expect("shift gradient").clone()),
        running: (batch && f.update_running)
            .then(|| (rm.as_tensor().clone(), rv.as_tensor().clone())),
        y,
    }
}

#[test]
fn norm_matches_candle_in_f64() {
    assert_eq!(
        kernels::mode(),
        kernels::Mode::Fast,
        "run these tests without PIX2PIX_KERNELS=candle"
    );
    let mut rng = StdRng::seed_from_u64(11);
    // (shape, offset): innermost U-Net maps, odd sizes, and a mean far above the spread.
    let cases: [(&[usize], f32); 6] = [
        (&[1, 8, 2, 2], 0.0),
        (&[2, 3, 1, 1], 0.5),
        (&[4, 6, 7, 5], 0.0),
        (&[2, 16, 32, 32], 100.0),
        (&[1, 8, 64, 64], -3.0),
        (&[3, 2, 9, 1], 0.0),
    ];
    let mut worst: f64 = 0.0;
    for (shape, offset) in cases {
        let c = shape[1];
        let x = rand_t(&mut rng, shape, 1.0, offset);
        let r = rand_t(&mut rng, shape, 1.0, 0.0);
        let params = [
            rand_t(&mut rng, &[c], 0.5, 1.0),
            rand_t(&mut rng, &[c], 0.5, 0.0),
            rand_t(&mut rng, &[c], 0.5, offset),
            rand_t(&mut rng, &[c], 0.4, 1.0),
        ];
        for kind in [NormKind::Batch, NormKind::Instance] {
            let modes = [
                ("train", Forward::train(None)),
                ("batch stats", Forward::infer(NormStats::Batch)),
                ("running stats", Forward::infer(NormStats::Running)),
            ];
            for (mode, f) in modes {
                if kind == NormKind::Instance && (mode != "train" || shape[2] * shape[3] == 1) {
                    continue; // instance norm has no running statistics; one pixel has no variance
                }
                let what = format!("{} {shape:?} {mode}", kind.name());
                let (fast, reference) = (
                    run_norm(kind, &f, &x, &r, &params, DType::F32),
                    run_norm(kind, &f, &x, &r, &params, DType::F64),
                );
                worst = worst.max(check(&format!("{what}: output"), &fast.y, &reference.y, 1e-5));
                // Gradients through batch statistics cancel to a small remainder: relative to r's scale.
                worst =
                    worst.max(check(&format!("{what}: input grad"), &fast.dx, &reference.dx, 1e-4));
                if let (Some(a), Some(b)) = (&fast.dgamma, &reference.dgamma) {
                    worst = worst.max(check(&format!("{what}: scale grad"), a, b, 1e-4));
                }
                if let (Some(a), Some(b)) = (&fast.dbeta, &reference.dbeta) {
                    worst = worst.max(check(&format!("{what}: shift grad"), a, b, 1e-4));
                }
                if let (Some((m, v)), Some((mr, vr))) = (&fast.running, &reference.running) {
                    check(&format!("{what}: running mean"), m, mr, 1e-5);
                    check(&format!("{what}: running var"), v, vr, 1e-5);
                }
            }
        }
    }
    println!("fused norm: worst relative error {worst:.2e}");
}

#[test]
fn leaky_relu_matches_candle_with_pytorch_gradient() {
    let mut rng = StdRng::seed_from_u64(12);
    for slope in [0.0, 0.2] {
        for shape in [&[1usize, 3, 5, 7][..], &[2, 64, 33, 33]] {
            let x = rand_t(&mut rng, shape, 1.0, 0.0);
            let run = |dtype: DType| {
                let xv = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
                let y = kernels::leaky_relu(xv.as_tensor(), slope).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                (y, g.get(xv.as_tensor()).expect("input gradient").clone())
            };
            let ((y, dx), (y64, dx64)) = (run(DType::F32), run(DType::F64));
            check(&format!("leaky_relu({slope}) {shape:?}"), &y, &y64, 1e-7);
            check(&format!("leaky_relu({slope}) {shape:?} grad"), &dx, &dx64, 1e-7);
        }
    }
    // At exactly 0 the gradient is PyTorch's (the negative side's), not candle's ReLU's 1.
    let xv = Var::from_tensor(&Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let g =
        kernels::leaky_relu(xv.as_tensor(), 0.2).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(xv.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![0.2f32; 4]);
}

/// The norm's f64 moments are the same sums, to the bit, on every instruction set the CPU has
/// (their lanes are fixed, so training resumes exactly whichever level runs), and agree with
/// candle's f64 mean and variance.
#[test]
fn norm_moments_identical_on_every_isa() {
    use kernels::isa::{self, Isa};
    let mut rng = StdRng::seed_from_u64(16);
    let x = rand_t(&mut rng, &[2, 5, 37, 29], 3.0, 1.5);
    let moments = || {
        x.apply_op1_no_bwd(&kernels::MomentsOp { groups: kernels::Groups::Channel })
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    let best = moments();
    let x64 = x.to_dtype(DType::F64).unwrap();
    let mean = x64.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let var = x64.broadcast_sub(&mean).unwrap().sqr().unwrap();
    let var = var.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let (mean, var) = (mean.flatten_all().unwrap(), var.flatten_all().unwrap());
    for (c, (m, v)) in
        mean.to_vec1::<f64>().unwrap().iter().zip(var.to_vec1::<f64>().unwrap()).enumerate()
    {
        assert!((best[0][c] as f64 - m).abs() < 1e-5, "channel {c}: mean {} vs {m}", best[0][c]);
        assert!((best[1][c] as f64 - v).abs() < 1e-5 * v, "channel {c}: var {} vs {v}", best[1][c]);
    }
    for level in Isa::ALL {
        if isa::force(Some(level)).is_err() {
            eprintln!("norm moments on {}: skipped (not on this CPU)", level.name());
            continue;
        }
        let got = moments();
        isa::force(None).unwrap();
        assert_eq!(got, best, "moments on {} differ from the best level's", level.name());
    }
}

/// `cat_relu` gives, to the bit, what the U-Net computed before it: `leaky_relu(cat, 0)`, both
/// values and the gradients of each input; and refuses mismatched shapes by name.
#[test]
fn cat_relu_equals_relu_of_cat() {
    let mut rng = StdRng::seed_from_u64(15);
    for (nb, ca, cb, h, w) in [(1, 3, 5, 7, 6), (2, 64, 32, 65, 64), (3, 1, 2, 1, 1)] {
        let a = rand_t(&mut rng, &[nb, ca, h, w], 1.0, 0.0);
        let b = rand_t(&mut rng, &[nb, cb, h, w], 1.0, 0.0);
        let r = rand_t(&mut rng, &[nb, ca + cb, h, w], 1.0, 0.0);
        let run = |fused: bool| {
            let (av, bv) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&b).unwrap());
            let y = if fused {
                kernels::cat_relu(av.as_tensor(), bv.as_tensor()).unwrap()
            } else {
                let cat = Tensor::cat(&[av.as_tensor(), bv.as_tensor()], 1).unwrap();
                kernels::leaky_relu(&cat, 0.0).unwrap()
            };
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            (bits(&y), bits(g.get(av.as_tensor()).unwrap()), bits(g.get(bv.as_tensor()).unwrap()))
        };
        assert_eq!(run(true), run(false), "cat_relu {nb}x({ca}+{cb})x{h}x{w}");
    }
    let a = rand_t(&mut rng, &[1, 2, 4, 4], 1.0, 0.0);
    let b = rand_t(&mut rng, &[1, 2, 4, 5], 1.0, 0.0);
    let err = kernels::cat_relu(&a, &b).unwrap_err().to_string();
    assert!(err.contains("differ outside the channels"), "{err}");
}

/// The fast tanh against candle's in f64: values within an f32 ulp, over the range where it
/// switches formulas (tiny, moderate, saturated, ±0, infinities), and the gradient of `Σ y·r`.
#[test]
fn tanh_matches_candle() {
    let mut rng = StdRng::seed_from_u64(14);
    for shape in [&[1usize, 3, 5, 7][..], &[2, 3, 130, 129]] {
        let x = rand_t(&mut rng, shape, 3.0, 0.0);
        let r = rand_t(&mut rng, shape, 1.0, 0.0);
        let ours = kernels::tanh(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let exact = x.to_dtype(DType::F64).unwrap().tanh().unwrap();
        let exact = exact.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for (i, (o, e)) in ours.iter().zip(&exact).enumerate() {
            let ulp = (*e as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON;
            assert!((*o as f64 - e).abs() <= ulp as f64, "tanh {shape:?} at {i}: {o} vs {e}");
        }
        let grad = |dtype: DType| {
            let xv = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
            let y = kernels::tanh(xv.as_tensor()).unwrap();
            let g =
                (y * r.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(xv.as_tensor()).expect("input gradient").clone()
        };
        check(&format!("tanh {shape:?} grad"), &grad(DType::F32), &grad(DType::F64), 1e-6);
    }
    let edges = [0.0f32, -0.0, 1e-30, -2e-4, 2.5e-4, 1e-3, 0.5, -3.0, 19.9, 20.1, -60.0, 1e30];
    let x = Tensor::new(&edges[..], &Device::Cpu).unwrap();
    let ours = kernels::tanh(&x).unwrap().to_vec1::<f32>().unwrap();
    for (x, o) in edges.iter().zip(&ours) {
        let e = (*x as f64).tanh();
        let ulp = (e as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON;
        assert!((*o as f64 - e).abs() <= ulp as f64, "tanh({x}) = {o}, exact {e}");
        assert_eq!(o.is_sign_negative(), x.is_sign_negative(), "tanh({x}) sign");
    }
    let inf = Tensor::new(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN][..], &Device::Cpu).unwrap();
    let got = kernels::tanh(&inf).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(&got[..2], &[1.0, -1.0]);
    assert!(got[2].is_nan(), "tanh(NaN) = {}", got[2]);
}

/// A transposed convolution with frozen weights (re-laid out on first use) gives what the same
/// layer with training variables gives, keeps the checkpoint layout readable, and still
/// back-propagates to an input that asks for it.
#[test]
fn frozen_transposed_convolution_equals_trainable() {
    let mut rng = StdRng::seed_from_u64(13);
    // (nb, cin, cout, side, k, stride, pad): U-Net inner layers and a stride-1 3×3.
    for (nb, cin, cout, side, k, stride, pad) in [
        (1, 64, 32, 2, 4, 2, 1),
        (2, 48, 16, 8, 4, 2, 1),
        (1, 16, 8, 5, 3, 1, 1),
        (3, 256, 64, 4, 4, 2, 1),
        // The U-Net's output layer (the direct kernel onto the image on AVX-512).
        (1, 64, 3, 16, 4, 2, 1),
        (2, 8, 1, 5, 4, 2, 1),
    ] {
        let w = rand_t(&mut rng, &[cin, cout, k, k], 0.1, 0.0);
        let b = rand_t(&mut rng, &[cout], 0.1, 0.0);
        let x = rand_t(&mut rng, &[nb, cin, side, side], 1.0, 0.0);
        let cfg = candle_nn::ConvTranspose2dConfig {
            padding: pad,
            output_padding: 0,
            stride,
            dilation: 1,
        };
        let wv = Var::from_tensor(&w).unwrap();
        let trainable = ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(
            wv.as_tensor().clone(),
            Some(b.clone()),
            cfg,
        ));
        let frozen =
            ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(w.clone(), Some(b.clone()), cfg));
        let what = format!("convT {cin}->{cout} k{k} s{stride} @{side}x{side} batch {nb}");
        let want = trainable.forward(&x).unwrap().to_dtype(DType::F64).unwrap();
        for call in 0..2 {
            check(
                &format!("{what}, frozen call {call}"),
                &frozen.forward(&x).unwrap(),
                &want,
                1e-5,
            );
        }
        let back = frozen.weight().unwrap();
        assert_eq!(back.dims(), w.dims());
        assert_eq!(max_abs(&(back - &w).unwrap()), 0.0, "{what}: weights read back differ");
        let xv = Var::from_tensor(&x).unwrap();
        let grad = |l: &ConvTranspose2d| {
            let g = l.forward(xv.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(xv.as_tensor()).expect("input gradient").clone()
        };
        check(
            &format!("{what}: input grad"),
            &grad(&frozen),
            &grad(&trainable).to_dtype(DType::F64).unwrap(),
            1e-5,
        );
    }
}

/// The U-Net's output layer on its skip concatenation's two parts, `tanh(convT(relu(cat(a,
/// b))))`, equals the unfused ops on the trainable layer, whether the frozen layer applied the
/// tanh itself (the direct kernel onto the image, on AVX-512: it must there) or left it to the
/// caller.
#[test]
fn output_layer_fuses_concatenation_relu_and_tanh() {
    let mut rng = StdRng::seed_from_u64(15);
    for (nb, ca, cb, cout, side) in [(1, 32, 32, 3, 16), (2, 8, 4, 3, 7), (1, 16, 16, 64, 8)] {
        let w = rand_t(&mut rng, &[ca + cb, cout, 4, 4], 0.1, 0.0);
        let bias = rand_t(&mut rng, &[cout], 0.1, 0.0);
        let a = rand_t(&mut rng, &[nb, ca, side, side], 1.0, 0.0);
        let b = rand_t(&mut rng, &[nb, cb, side, side], 1.0, 0.0);
        let cfg = candle_nn::ConvTranspose2dConfig {
            padding: 1,
            output_padding: 0,
            stride: 2,
            dilation: 1,
        };
        let layer = |w: Tensor| {
            ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(w, Some(bias.clone()), cfg))
        };
        let trainable = layer(Var::from_tensor(&w).unwrap().as_tensor().clone());
        let x = Tensor::cat(&[&a, &b], 1).unwrap().relu().unwrap();
        let want = trainable.forward(&x).unwrap().tanh().unwrap().to_dtype(DType::F64).unwrap();
        let (y, applied) = layer(w).forward_cat_relu(&a, &b, true).unwrap();
        let what = format!("output layer {ca}+{cb}->{cout} @{side} batch {nb}");
        let direct = kernels::isa::active() == kernels::isa::Isa::Avx512 && cout <= 4;
        assert_eq!(applied, direct, "{what}: tanh applied by the layer");
        let got = if applied { y } else { y.tanh().unwrap() };
        check(&what, &got, &want, 1e-5);
    }
}

/// Frozen layers under `Precision::Bf16` (AVX512_BF16): within bf16's rounding of the f32
/// layer, actually rounded (not silently f32) when the product has 9 columns or more and 128
/// rows or more (64 with a reduction of 64 or more), or, where the system has AMX, when the
/// direct AMX kernels take the shape (16·i input and 32·j output channels; convolutions with
/// outputs of 2 × 2 or more), exactly f32 otherwise (the outermost layers, where converting the
/// activations costs more than bf16 saves, and the innermost 1×1 grids and, without AMX, 2×2
/// ones, where the f32 small-n kernels are faster), and f32 again outside `with_precision`.
#[test]
fn frozen_layers_in_bf16_within_rounding_of_f32() {
    use kernels::{with_precision, Conv2d, Precision};
    if !kernels::isa::bf16_available() {
        eprintln!(
            "frozen_layers_in_bf16_within_rounding_of_f32: skipped: avx512bf16 not available"
        );
        return;
    }
    let mut rng = StdRng::seed_from_u64(14);
    // (nb, cin, cout, side, transposed): U-Net layers, outermost to innermost.
    for (nb, cin, cout, side, transposed) in [
        (1, 3, 16, 32, false),
        (1, 3, 64, 32, false),
        (2, 32, 64, 16, false),
        (1, 16, 128, 8, false),
        (1, 64, 64, 2, false),
        (1, 64, 32, 1, true),
        (1, 64, 32, 3, true),
        (1, 64, 32, 8, true),
        (2, 32, 64, 16, true),
        (2, 48, 16, 8, true),
        (1, 32, 3, 16, true),
    ] {
        let x = rand_t(&mut rng, &[nb, cin, side, side], 1.0, 0.0);
        let b = rand_t(&mut rng, &[cout], 0.1, 0.0);
        let (y32, y16) = if transposed {
            let w = rand_t(&mut rng, &[cin, cout, 4, 4], 0.1, 0.0);
            let cfg = candle_nn::ConvTranspose2dConfig {
                padding: 1,
                output_padding: 0,
                stride: 2,
                dilation: 1,
            };
            let l = ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(w, Some(b), cfg));
            (l.forward(&x).unwrap(), with_precision(Precision::Bf16, || l.forward(&x).unwrap()))
        } else {
            let w = rand_t(&mut rng, &[cout, cin, 4, 4], 0.1, 0.0);
            let cfg = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
            let l = Conv2d::new(candle_nn::Conv2d::new(w, Some(b), cfg));
            (l.forward(&x).unwrap(), with_precision(Precision::Bf16, || l.forward(&x).unwrap()))
        };
        let what = format!(
            "{} {cin}->{cout} @{side}x{side} batch {nb}",
            if transposed { "convT" } else { "conv" }
        );
        let y32 = y32.to_dtype(DType::F64).unwrap();
        // Operands rounded to 8 significant bits: ≤ 2^-7 of Σ|w·x| per output, a few times the
        // output's magnitude here.
        let err = check(&format!("{what}: bf16 vs f32"), &y16, &y32, 2e-2);
        let rows = if transposed { cout * 16 } else { cout };
        let k = if transposed { cin } else { cin * 16 };
        let cols = if transposed { nb * side * side } else { nb * (side / 2) * (side / 2) };
        let amx_takes = kernels::amx::available()
            && cin % 16 == 0
            && cout % 32 == 0
            && (transposed || side / 2 >= 2);
        if ((rows >= 128 || (rows >= 64 && k >= 64)) && cols >= 9) || amx_takes {
            assert!(err > 0.0, "{what}: bf16 result identical to f32: the bf16 path did not run");
        } else {
            assert_eq!(err, 0.0, "{what}: a {rows} x {cols} product should have stayed in f32");
        }
    }
    assert_eq!(kernels::precision(), Precision::F32, "with_precision leaked");
}

/// Under bf16, a frozen transposed layer on the skip concatenation's two parts
/// (`forward_cat_relu`: read in place where a kernel takes them) gives, to the bit, what it gives
/// on the concatenation made and rectified first: the U-Net's up-path shapes of 32 and 64 output
/// channels, on grids an image at a time (32², the product reading the parts as it packs
/// them) and merged (8² at batch 2).
#[test]
fn bf16_transposed_layer_on_the_parts_equals_on_the_concatenation() {
    use kernels::{with_precision, Precision};
    if !kernels::isa::bf16_available() {
        eprintln!("bf16_transposed_layer_on_the_parts: skipped: avx512bf16 not available");
        return;
    }
    let mut rng = StdRng::seed_from_u64(16);
    for (nb, ca, cb, cout, side) in [(1, 64, 64, 32, 32), (2, 64, 64, 32, 32), (2, 32, 32, 64, 8)] {
        let w = rand_t(&mut rng, &[ca + cb, cout, 4, 4], 0.1, 0.0);
        let bias = rand_t(&mut rng, &[cout], 0.1, 0.0);
        let a = rand_t(&mut rng, &[nb, ca, side, side], 1.0, -0.2);
        let b = rand_t(&mut rng, &[nb, cb, side, side], 1.0, -0.2);
        let cfg = candle_nn::ConvTranspose2dConfig {
            padding: 1,
            output_padding: 0,
            stride: 2,
            dilation: 1,
        };
        let layer = ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(w, Some(bias), cfg));
        let x = Tensor::cat(&[&a, &b], 1).unwrap().relu().unwrap();
        let (got, want) = with_precision(Precision::Bf16, || {
            (layer.forward_cat_relu(&a, &b, false).unwrap().0, layer.forward(&x).unwrap())
        });
        let what = format!("convT {ca}+{cb}->{cout} @{side} batch {nb}");
        assert_eq!(bits(&got), bits(&want), "{what}: parts and concatenation differ");
        // And bf16 did run: not f32's result.
        let f32 = layer.forward(&x).unwrap();
        assert_ne!(bits(&got), bits(&f32), "{what}: identical to f32");
    }
}

/// Frozen conv / transposed conv followed by batch norm, folded into one layer for running
/// statistics (`fold_running_norms`, as a model opened on them is): against the same layers run
/// separately in f64 (no fast path, no folding); and, unfolded, on both statistics.
#[test]
fn batch_norm_folds_into_frozen_convolutions() {
    use pix2pix::nets::layers::{conv, conv_transpose, Layer, SequentialBuilder};
    let mut rng = StdRng::seed_from_u64(15);
    for (transposed, cin, cout, side, bias) in [
        (false, 3, 8, 16, false),
        (false, 16, 32, 8, true),
        (true, 32, 16, 4, false),
        (true, 16, 3, 8, true),
    ] {
        let wshape = if transposed { [cin, cout, 4, 4] } else { [cout, cin, 4, 4] };
        let tensors = [
            ("0.weight", rand_t(&mut rng, &wshape, 0.2, 0.0)),
            ("0.bias", rand_t(&mut rng, &[cout], 0.2, 0.0)),
            ("1.weight", rand_t(&mut rng, &[cout], 0.5, 1.0)),
            ("1.bias", rand_t(&mut rng, &[cout], 0.5, 0.0)),
            ("1.running_mean", rand_t(&mut rng, &[cout], 0.5, 0.0)),
            ("1.running_var", rand_t(&mut rng, &[cout], 0.4, 1.0)),
            ("1.num_batches_tracked", Tensor::zeros((), DType::F32, &Device::Cpu).unwrap()),
        ];
        let x = rand_t(&mut rng, &[2, cin, side, side], 1.0, 0.0);
        let build = |dtype: DType| {
            let map: HashMap<String, Tensor> =
                tensors.iter().map(|(k, t)| (k.to_string(), t.to_dtype(dtype).unwrap())).collect();
            let vb = VarBuilder::from_tensors(map, dtype, &Device::Cpu);
            let seq = SequentialBuilder::new(vb);
            let seq = if transposed {
                seq.add(conv_transpose(cin, cout, 4, 2, 1, 0, bias))
            } else {
                seq.add(conv(cin, cout, 4, 2, 1, bias))
            };
            seq.unwrap().add_norm(NormKind::Batch, cout).unwrap().build()
        };
        let (fast, reference) = (build(DType::F32), build(DType::F64));
        let mut folded = build(DType::F32);
        folded.fold_running_norms().unwrap();
        let what = format!(
            "{} {cin}->{cout} bias {bias}",
            if transposed { "convT+BN" } else { "conv+BN" }
        );
        for stats in [NormStats::Running, NormStats::Batch] {
            let f = Forward::infer(stats);
            let want = reference.forward(&x.to_dtype(DType::F64).unwrap(), &f).unwrap();
            for call in 0..2 {
                let got = fast.forward(&x, &f).unwrap();
                check(&format!("{what} {stats:?} call {call}"), &got, &want, 1e-5);
            }
            if stats == NormStats::Running {
                let got = folded.forward(&x, &f).unwrap();
                check(&format!("{what} folded"), &got, &want, 1e-5);
                // Folding changes the rounding: proof the norm is no longer run on its own.
                assert_ne!(bits(&got), bits(&fast.forward(&x, &f).unwrap()), "{what}: not folded");
            }
        }
    }
}

/// A frozen strided conv after LeakyReLU (the U-Net's down path) applies the activation as it
/// reads its input (`Sequential` looks ahead), with and without a batch norm (folded on running
/// statistics): equal to the bit to the activation run as its own layer first, and within f32
/// rounding of the f64 layers run separately; stride 1 (no phase split: not fused) is checked
/// as well.
#[test]
fn leaky_relu_fuses_into_frozen_strided_convolutions() {
    use pix2pix::nets::layers::{conv, Layer, Op, SequentialBuilder};
    let mut rng = StdRng::seed_from_u64(16);
    for (cin, cout, side, stride, bias) in
        [(3, 8, 16, 2, false), (16, 32, 8, 2, true), (8, 8, 2, 2, false), (4, 8, 9, 1, true)]
    {
        let params = [
            ("weight", rand_t(&mut rng, &[cout, cin, 4, 4], 0.2, 0.0)),
            ("bias", rand_t(&mut rng, &[cout], 0.2, 0.0)),
        ];
        let norm = [
            ("weight", rand_t(&mut rng, &[cout], 0.5, 1.0)),
            ("bias", rand_t(&mut rng, &[cout], 0.5, 0.0)),
            ("running_mean", rand_t(&mut rng, &[cout], 0.5, 0.0)),
            ("running_var", rand_t(&mut rng, &[cout], 0.4, 1.0)),
            ("num_batches_tracked", Tensor::zeros((), DType::F32, &Device::Cpu).unwrap()),
        ];
        let x = rand_t(&mut rng, &[2, cin, side, side], 1.0, 0.0);
        // LeakyReLU at index `first` when it is 1, conv at `first`, norm after it.
        let build = |dtype: DType, first: usize, with_norm: bool| {
            let mut map = HashMap::new();
            for (k, t) in &params {
                map.insert(format!("{first}.{k}"), t.to_dtype(dtype).unwrap());
            }
            for (k, t) in &norm {
                map.insert(format!("{}.{k}", first + 1), t.to_dtype(dtype).unwrap());
            }
            let vb = VarBuilder::from_tensors(map, dtype, &Device::Cpu);
            let mut seq = SequentialBuilder::new(vb);
            if first == 1 {
                seq = seq.push(Op::LeakyReLU(0.2));
            }
            let seq = seq.add(conv(cin, cout, 4, stride, 1, bias)).unwrap();
            if with_norm {
                seq.add_norm(NormKind::Batch, cout).unwrap().build()
            } else {
                seq.build()
            }
        };
        for with_norm in [false, true] {
            for stats in [NormStats::Running, NormStats::Batch] {
                let (mut fused, mut separate, reference) = (
                    build(DType::F32, 1, with_norm),
                    build(DType::F32, 0, with_norm),
                    build(DType::F64, 1, with_norm),
                );
                // As a model opened on running statistics runs.
                if stats == NormStats::Running {
                    fused.fold_running_norms().unwrap();
                    separate.fold_running_norms().unwrap();
                }
                let f = Forward::infer(stats);
                let what = format!("{cin}->{cout} @{side} s{stride} norm {with_norm} {stats:?}");
                let got = fused.forward(&x, &f).unwrap();
                let activated = kernels::leaky_relu(&x, 0.2).unwrap();
                let want = separate.forward(&activated, &f).unwrap();
                assert_eq!(bits(&got), bits(&want), "{what}: fused vs separate");
                let f64_want = reference.forward(&x.to_dtype(DType::F64).unwrap(), &f).unwrap();
                check(&what, &got, &f64_want, 1e-5);
            }
        }
    }
}
