//! The training step against PyTorch (`tests/fixtures/*/train_step.safetensors`): three steps
//! of the reference's pix2pix step on one pair, dropout off, from the fixture's weights.
//!
//! Checked: first-step gradients of every parameter (‖g − ref‖ / ‖ref‖ < 1e-3), the losses of
//! every step (within 1e-4, relative for λ·L1 ≈ 50), and the change of every parameter and
//! running statistic over the three steps (‖Δ − Δref‖ / ‖Δref‖ < 1e-3, see below).
//!
//! Two limits of what the fixtures can decide, both measured rather than assumed:
//!
//! - A convolution bias feeding an InstanceNorm without affine (the instance-norm fixtures)
//!   cannot change the output, so its true gradient is zero and both frameworks produce float
//!   round-off (‖g‖ ~ 1e-9 … 1e-5). Relative errors of noise mean nothing, and Adam turns that
//!   noise into steps of up to ~lr of arbitrary sign. For those tensors (‖g_ref‖ < 1e-4) the test
//!   checks that our gradient is noise too and that each element moved at most 3 · 2 · lr; they
//!   do not affect any output.
//! - Three Adam steps amplify round-off: Adam moves every element by ~lr whatever its gradient's
//!   size, and ReLU/L1 kinks make later gradients jump. On `unet256_ngf8_batch` (BatchNorm over
//!   2×2 maps at batch 1) scaling the input by (1 + 1e-6) changes our own 3-step Δ by ~2 %
//!   (median) and up to ~20 %, so 1e-3 against another framework's rounding is not decidable
//!   there. The test measures this floor with perturbed runs of our trainer (x · (1 ± 1e-6),
//!   weights ± 1 ulp, and the same step on candle's own ops instead of the fast kernels: another
//!   implementation's rounding, as PyTorch's is) and requires, per fixture, max and median Δ
//!   errors below max(1e-3, 3 × the floor). Where the trajectory is well conditioned (unet128)
//!   that is the plain 1e-3.

mod common;

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;
use common::*;
use pix2pix::train::config::GanMode;
use pix2pix::train::trainer::{Settings, Trainer};
use pix2pix::Checkpoint;

const GRAD_TOL: f32 = 1e-3;
const DELTA_TOL: f32 = 1e-3;
const LOSS_TOL: f32 = 1e-4;
/// Below this gradient norm a tensor's true gradient is zero (see the module doc).
const NULL_GRAD: f32 = 1e-4;
const LR: f64 = 2e-4;

fn norm(t: &Tensor) -> f32 {
    t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
}

struct Report {
    grad: f32,
    delta: f32,
    loss_abs: f32,
    loss_rel: f32,
    null: Vec<String>,
}

fn compare_grads(
    net: &str,
    ours: &BTreeMap<String, Tensor>,
    reference: &HashMap<String, Tensor>,
    r: &mut Report,
) {
    let prefix = format!("grad.{net}.");
    let names: Vec<&String> = reference.keys().filter(|k| k.starts_with(&prefix)).collect();
    assert!(!names.is_empty());
    assert_eq!(names.len(), ours.len(), "{net}: parameter count");
    for key in names {
        let name = &key[prefix.len()..];
        let g = ours.get(name).unwrap_or_else(|| panic!("no gradient for {net} `{name}`"));
        let g_ref = &reference[key];
        if norm(g_ref) < NULL_GRAD {
            assert!(
                norm(g) < NULL_GRAD,
                "{net} `{name}`: reference gradient is round-off ({:.1e}) but ours is {:.1e}",
                norm(g_ref),
                norm(g)
            );
            r.null.push(format!("{net}.{name}"));
            continue;
        }
        let e = rel(g, g_ref);
        r.grad = r.grad.max(e);
        assert!(e < GRAD_TOL, "{net} `{name}`: gradient relative error {e:.2e}");
    }
}

/// Runs `steps` steps from the fixture's weights on (x · scale, y): the trainer's state before
/// and after, and the step outputs.
fn run_on(
    mode: pix2pix::kernels::Mode,
    name: &str,
    scale: f64,
    jitter: Option<u64>,
) -> (
    Trainer,
    BTreeMap<String, Tensor>,
    BTreeMap<String, Tensor>,
    Vec<pix2pix::train::trainer::StepOutput>,
) {
    pix2pix::kernels::with_mode(mode, || run(name, scale, jitter))
}

fn run(
    name: &str,
    scale: f64,
    jitter: Option<u64>,
) -> (
    Trainer,
    BTreeMap<String, Tensor>,
    BTreeMap<String, Tensor>,
    Vec<pix2pix::train::trainer::StepOutput>,
) {
    let meta = meta(name);
    let gan_mode = if meta["gan"] == "lsgan" { GanMode::Lsgan } else { GanMode::Vanilla };
    let lambda_l1 = meta["lambda_l1"].as_f64().unwrap();
    let steps = meta["steps"].as_u64().unwrap() as usize;
    let g = Checkpoint::load(fixture(name).join("generator.safetensors")).unwrap();
    let d = Checkpoint::load(fixture(name).join("discriminator.safetensors")).unwrap();
    let settings = Settings { gan_mode, lambda_l1, ..Settings::default() };
    let mut trainer = Trainer::from_checkpoints(&g, &d, settings, LR).unwrap();
    let (g0, d0) = (trainer.generator_tensors().unwrap(), trainer.discriminator_tensors().unwrap());
    if let Some(seed) = jitter {
        // Every weight times (1 ± 2⁻²³): a rounding-sized change, like another framework's.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        for (_, v) in trainer.generator_params().iter().chain(trainer.discriminator_params()) {
            let t = v.as_tensor();
            let f: Vec<f32> = (0..t.elem_count())
                .map(|_| {
                    if rand::Rng::gen::<bool>(&mut rng) {
                        1.0 + f32::EPSILON
                    } else {
                        1.0 - f32::EPSILON / 2.0
                    }
                })
                .collect();
            v.set(&(t * Tensor::from_vec(f, t.shape(), t.device()).unwrap()).unwrap()).unwrap();
        }
    }
    let fw = load(name, "forward.safetensors");
    let x = (&fw["x"] * scale).unwrap();
    let outs = (0..steps).map(|_| trainer.step(&x, &fw["y"], None).unwrap()).collect();
    (trainer, g0, d0, outs)
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn parity(name: &str) -> Report {
    let steps = meta(name)["steps"].as_u64().unwrap() as usize;
    let ts = load(name, "train_step.safetensors");
    let (trainer, g0, d0, outs) = run(name, 1.0, None);
    let mut r = Report { grad: 0.0, delta: 0.0, loss_abs: 0.0, loss_rel: 0.0, null: Vec::new() };
    for (step, out) in outs.iter().enumerate() {
        let l = out.losses;
        let want: Vec<f32> = ts[&format!("loss.{step}")].to_vec1().unwrap();
        for (k, (a, b)) in ["D_real", "D_fake", "G_GAN", "G_L1·λ"]
            .iter()
            .zip([l.d_real, l.d_fake, l.g_gan, l.g_l1].iter().zip(&want))
        {
            let abs = (a - b).abs();
            r.loss_abs = r.loss_abs.max(abs);
            r.loss_rel = r.loss_rel.max(abs / b.abs().max(1.0));
            assert!(abs <= LOSS_TOL * b.abs().max(1.0), "{name} step {step} {k}: {a} vs {b}");
        }
    }
    compare_grads("generator", &outs[0].grads_g, &ts, &mut r);
    compare_grads("discriminator", &outs[0].grads_d, &ts, &mut r);

    // The conditioning floor: our own trainer on inputs perturbed by ±1e-6, and on weights
    // perturbed by one rounding step.
    use pix2pix::kernels::Mode::{Candle, Fast};
    let runs = [
        (Fast, 1.0 + 1e-6, None),
        (Fast, 1.0 - 1e-6, None),
        (Fast, 1.0, Some(1)),
        (Fast, 1.0, Some(2)),
        (Candle, 1.0, None),
    ];
    let perturbed: Vec<_> = runs
        .iter()
        .map(|&(m, s, j)| {
            let (t, ..) = run_on(m, name, s, j);
            (t.generator_tensors().unwrap(), t.discriminator_tensors().unwrap())
        })
        .collect();
    let (mut errs, mut floors) = (Vec::new(), Vec::new());
    let after = [trainer.generator_tensors().unwrap(), trainer.discriminator_tensors().unwrap()];
    for (i, (net, before)) in [("generator", &g0), ("discriminator", &d0)].into_iter().enumerate() {
        assert_eq!(
            before.len(),
            ts.keys().filter(|k| k.starts_with(&format!("after.{net}."))).count(),
            "{net}: state size"
        );
        for (k, t0) in before {
            let t_ref = ts
                .get(&format!("after.{net}.{k}"))
                .unwrap_or_else(|| panic!("fixture lacks after.{net}.{k}"));
            let delta_ref = (&t_ref.to_dtype(candle_core::DType::F32).unwrap() - t0).unwrap();
            let delta = (&after[i][k] - t0).unwrap();
            if r.null.iter().any(|n| n == &format!("{net}.{k}")) {
                let m = delta
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(m <= (steps as f64 * 2.0 * LR) as f32, "{net} `{k}`: moved {m:.2e}");
                continue;
            }
            let nref = norm(&delta_ref);
            if nref == 0.0 {
                assert_eq!(norm(&delta), 0.0, "{net} `{k}`: moved, the reference did not");
                continue;
            }
            errs.push((rel(&delta, &delta_ref), format!("{net}.{k}")));
            let floor = perturbed
                .iter()
                .map(|p| {
                    let pk = if i == 0 { &p.0[k] } else { &p.1[k] };
                    norm(&(pk - &after[i][k]).unwrap()) / nref
                })
                .fold(0f32, f32::max);
            floors.push(floor);
        }
    }
    let (max_err, worst) =
        errs.iter().cloned().fold((0f32, String::new()), |a, b| if b.0 > a.0 { b } else { a });
    let med_err = median(errs.iter().map(|e| e.0).collect());
    let (max_floor, med_floor) =
        (floors.iter().copied().fold(0f32, f32::max), median(floors.clone()));
    r.delta = max_err;
    println!("{name}: Δ rel err max {max_err:.2e} ({worst}), median {med_err:.2e}; conditioning floor (5 perturbed runs) max {max_floor:.2e}, median {med_floor:.2e}");
    let (tol_max, tol_med) = (DELTA_TOL.max(3.0 * max_floor), DELTA_TOL.max(3.0 * med_floor));
    assert!(
        max_err < tol_max,
        "{name}: Δ relative error {max_err:.2e} at {worst} (tolerance {tol_max:.2e})"
    );
    assert!(
        med_err < tol_med,
        "{name}: median Δ relative error {med_err:.2e} (tolerance {tol_med:.2e})"
    );
    println!(
        "{name}: max grad rel err {:.2e}, max Δ rel err {:.2e}, max loss err {:.2e} (rel {:.2e}); {} round-off-gradient tensors: {:?}",
        r.grad, r.delta, r.loss_abs, r.loss_rel, r.null.len(), r.null
    );
    r
}

#[test]
fn step_parity_unet256_batch() {
    parity("unet256_ngf8_batch");
}

#[test]
fn step_parity_unet128_instance_lsgan() {
    parity("unet128_ngf8_instance_lsgan");
}

#[test]
fn step_parity_resnet6_instance() {
    parity("resnet6_ngf8_instance");
}
