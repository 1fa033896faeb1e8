//! ReLU, LeakyReLU and tanh as one parallel pass each way.
//!
//! candle-nn's `leaky_relu` is `max(x, 0) + min(x, 0)·slope`: five single-threaded passes and
//! their autograd nodes; its ReLU gradient is 1 at 0 where PyTorch's is 0. This op computes
//! `x > 0 ? x : slope·x` and its gradient `x > 0 ? dy : slope·dy`, as `nn.LeakyReLU`
//! (`slope = 0` is `nn.ReLU`). candle's `tanh` calls glibc's `tanhf`, whose `expm1f` costs
//! ~15 ns an element (3 ms for the U-Net's 3 × 256 × 256 output); [`TanhOp`] evaluates
//! `(e²ˣ − 1)/(e²ˣ + 1)` in f64 with an exponential the compiler vectorises and rounds once to
//! f32, which is within an ulp of the exact value, with candle's gradient `dy·(1 − y²)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use std::mem::MaybeUninit;

use super::contiguous_f32;
use super::isa::on_best_isa;
use super::output::par_written;
use super::profile::timed;

/// Elements per rayon task: large enough to amortise the task, small enough to split a plane.
const CHUNK: usize = 1 << 14;

/// `nn.LeakyReLU` of one value: `x > 0 ? x : slope·x` (`slope = 0`: `nn.ReLU`).
#[inline(always)]
pub(crate) fn leaky(x: f32, slope: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        x * slope
    }
}

/// `leaky(x, slope)` of every element, as one parallel pass.
pub(crate) fn leaky_relu_slice(x: &[f32], slope: f32) -> Vec<f32> {
    zip_map(x, x, move |x, _| leaky(x, slope))
}

#[derive(Clone, Copy, Debug)]
pub struct LeakyReluOp {
    pub slope: f32,
}

/// `f` over `a` and `b` element by element. Callers pass `move` closures: one that captured its
/// slope by reference made the compiler reload it for every element (it might alias the
/// output), which kept the loop scalar with a branch per element, mispredicted half the time
/// on activations (3.4 ms for a 64 × 128 × 128 ReLU, 0.5 ms vectorised).
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "zip_map: lengths differ");
    // SAFETY: piece i is out[i·CHUNK ..][..len], written whole from a's and b's piece i.
    unsafe {
        par_written(a.len(), CHUNK, 1, |i, o| {
            let (a, b) = (&a[i * CHUNK..][..o.len()], &b[i * CHUNK..][..o.len()]);
            o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| {
                o.write(f(*a, *b));
            });
        })
    }
}

impl CustomOp1 for LeakyReluOp {
    fn name(&self) -> &'static str {
        "pix2pix-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        Ok((CpuStorage::F32(leaky_relu_slice(x, self.slope)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let key = || format!("bwd    leaky  {:?}", x.dims());
        timed(key, 0.0, || Ok(Some(leaky_relu_grad(x, dy, self.slope)?)))
    }
}

/// The gradient of `leaky_relu(x, slope)` for output gradient `dy`: one pass.
pub(crate) fn leaky_relu_grad(x: &Tensor, dy: &Tensor, slope: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &GradOp::LeakyRelu { slope })
}

/// The backward of an element-wise op: one pass over the tensor it saved (the input of
/// LeakyReLU, the output of tanh) and the output gradient.
#[derive(Clone, Copy)]
enum GradOp {
    LeakyRelu { slope: f32 },
    Tanh,
}

impl CustomOp2 for GradOp {
    fn name(&self) -> &'static str {
        match self {
            GradOp::LeakyRelu { .. } => "pix2pix-leaky-relu-grad",
            GradOp::Tanh => "pix2pix-tanh-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (saved, dy) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        if saved.len() != dy.len() {
            candle_core::bail!(
                "{} backward: gradient has {} elements, the forward {}",
                self.name(),
                dy.len(),
                saved.len()
            )
        }
        let dx = match *self {
            GradOp::LeakyRelu { slope } => {
                zip_map(saved, dy, move |x, dy| if x > 0.0 { dy } else { dy * slope })
            }
            GradOp::Tanh => zip_map(saved, dy, |y, dy| dy * (1.0 - y * y)),
        };
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `eˣ` in f64 for `|x| ≤ 40`, in operations the compiler vectorises (glibc's `exp` is a call
/// per element): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2` (Cody–Waite, `ln 2` in two parts), `eʳ`
/// by its Taylor series to degree 13 (next term below 2⁻⁵³ of the sum), and `2ⁿ` built from its
/// exponent bits, `n` rounded by the 1.5·2⁵² shift (no float → int conversion, which AVX-512F
/// lacks for f64 vectors). No fused multiply-add: the same bits on every instruction set.
#[inline(always)]
fn exp_f64(x: f64) -> f64 {
    const SHIFT: f64 = 6755399441055744.0; // 1.5·2⁵²: adding it rounds to an integer
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // ln 2's leading 32 bits: n·LN2_HI is exact
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let t = x * std::f64::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Σ rᵏ/k! by Horner's rule, the coefficients 1/k! made at compile time.
    const C: [f64; 14] = {
        let mut c = [1.0; 14];
        let mut k = 1;
        while k < 14 {
            c[k] = c[k - 1] / k as f64;
            k += 1;
        }
        c
    };
    let mut p = C[13];
    for c in C[..13].iter().rev() {
        p = p * r + c;
    }
    // t's low bits hold n (two's complement, |n| < 2⁵¹): 2ⁿ has exponent field n + 1023.
    let n_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
    p * f64::from_bits(n_bits.wrapping_add(1023) << 52)
}

/// `tanh(x)` as `(e²ˣ − 1)/(e²ˣ + 1)` in f64, rounded once to f32 (within an ulp of the exact
/// value): below 2⁻¹² it is `x` to f32 precision (the next term, `x³/3`, is under 2⁻²⁵ of it),
/// and beyond 20 it rounds to ±1 (clamped there so that `e²ˣ` stays finite); in between the
/// f64 cancellation in `e²ˣ − 1` leaves far more than f32's 24 bits. Branch-free, so that a
/// slice of it vectorises.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp_f64(2.0 * x.clamp(-20.0, 20.0) as f64);
    let y = ((e - 1.0) / (e + 1.0)) as f32;
    if x.abs() < 1.0 / 4096.0 {
        x
    } else {
        y
    }
}

on_best_isa!(
    /// [`tanh`] of `x` into `y` (every element written), compiled for the best instruction set
    /// the CPU has.
    pub(crate) fn tanh_slice => tanh_each(x: &[f32], y: &mut [MaybeUninit<f32>])
);

#[inline(always)]
fn tanh_each(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    y.iter_mut().zip(x).for_each(|(y, x)| {
        y.write(tanh(*x));
    });
}

/// `tanh`, element-wise, with the gradient `dy·(1 − y²)` (from the output, as candle's).
#[derive(Clone, Copy, Debug)]
pub struct TanhOp;

impl CustomOp1 for TanhOp {
    fn name(&self) -> &'static str {
        "pix2pix-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        // SAFETY: piece i is y[i·CHUNK ..][..len], as x's piece i, written whole by tanh_slice.
        let y = unsafe {
            par_written(x.len(), CHUNK, 1, |i, y| tanh_slice(&x[i * CHUNK..][..y.len()], y))
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        timed(
            || format!("bwd    tanh   {:?}", y.dims()),
            0.0,
            || Ok(Some(y.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &GradOp::Tanh)?)),
        )
    }
}

/// `relu(cat([a, b], 1))` of two contiguous NCHW tensors: the U-Net's skip concatenation and the
/// up path's ReLU after it, written once (separately they cost a fresh tensor and a pass each:
/// at batch 4, ngf 32, 5.5 + 4.6 ms on the outer level). Values as [`LeakyReluOp`] with slope 0
/// gives them (negatives become `x·0`); the gradient is each input's channels of `dy`, masked.
#[derive(Clone, Copy, Debug)]
pub struct CatReluOp;

impl CustomOp2 for CatReluOp {
    fn name(&self) -> &'static str {
        "pix2pix-cat-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, (nb, ca, h, w)) = (contiguous_f32(s1, l1)?, l1.shape().dims4()?);
        let (b, (nb2, cb, h2, w2)) = (contiguous_f32(s2, l2)?, l2.shape().dims4()?);
        if (nb, h, w) != (nb2, h2, w2) {
            candle_core::bail!(
                "cat along channels: {:?} and {:?} differ outside the channels",
                l1.dims(),
                l2.dims()
            )
        }
        let (hw, c) = (h * w, ca + cb);
        // SAFETY: piece p is output plane p (hw floats), written whole from its source plane.
        let out = unsafe {
            par_written(nb * c * hw, hw, CHUNK.div_ceil(hw.max(1)), move |p, dst| {
                let (n, ch) = (p / c, p % c);
                let src = if ch < ca {
                    &a[(n * ca + ch) * hw..][..hw]
                } else {
                    &b[(n * cb + ch - ca) * hw..][..hw]
                };
                for (d, x) in dst.iter_mut().zip(src) {
                    d.write(leaky(*x, 0.0));
                }
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((nb, c, h, w))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        timed(
            || format!("bwd    cat+relu {:?}", dy.dims()),
            0.0,
            || {
                let (ca, dy) = (a.dim(1)?, dy.contiguous()?);
                let masked = |x: &Tensor, from: usize| -> Result<Option<Tensor>> {
                    if !x.track_op() {
                        return Ok(None);
                    }
                    Ok(Some(x.contiguous()?.apply_op2_no_bwd(&dy, &PartReluGradOp { from })?))
                };
                Ok((masked(a, 0)?, masked(b, ca)?))
            },
        )
    }
}

/// The gradient of one part of [`CatReluOp`]: `x > 0 ? dy : 0·dy` (as [`GradOp`] with slope 0)
/// over `x`'s channels, read from `dy`'s channels `from ..` in place (narrowing `dy` first
/// copied each part before the pass).
#[derive(Clone, Copy, Debug)]
struct PartReluGradOp {
    from: usize,
}

impl CustomOp2 for PartReluGradOp {
    fn name(&self) -> &'static str {
        "pix2pix-cat-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, len, h, w)) = (contiguous_f32(s1, l1)?, l1.shape().dims4()?);
        let (dy, (nb2, c, h2, w2)) = (contiguous_f32(s2, l2)?, l2.shape().dims4()?);
        if (nb, h, w) != (nb2, h2, w2) || self.from + len > c {
            candle_core::bail!(
                "cat backward: part {:?} at channel {} of gradient {:?}",
                l1.dims(),
                self.from,
                l2.dims()
            )
        }
        let (hw, from) = (h * w, self.from);
        // SAFETY: piece p is plane p of x's shape (hw floats), written whole from x's plane p and
        // dy's plane (n, from + ch).
        let out = unsafe {
            par_written(nb * len * hw, hw, CHUNK.div_ceil(hw.max(1)), move |p, dst| {
                let (n, ch) = (p / len, p % len);
                let (xs, ds) = (&x[p * hw..][..hw], &dy[(n * c + from + ch) * hw..][..hw]);
                for (d, (x, dy)) in dst.iter_mut().zip(xs.iter().zip(ds)) {
                    d.write(if *x > 0.0 { *dy } else { *dy * 0.0 });
                }
            })
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::isa::{self, Isa};
    use super::*;
    use crate::kernels::test_report;

    /// The vectorised tanh on every instruction set the CPU has: within an f32 ulp of f64's
    /// `tanh` over a sweep of 2¹⁸ magnitudes from 2⁻²⁰ to 40 and their negatives, plus the
    /// exact cases (±0, tiny, ±∞, NaN); the same bits on every level.
    #[test]
    fn tanh_within_an_ulp_on_every_isa() {
        let mut xs: Vec<f32> = (0..1 << 18)
            .map(|i| 2f32.powf(-20.0 + 25.4 * i as f32 / (1 << 18) as f32))
            .flat_map(|x| [x, -x])
            .collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-38, 20.0, -20.0, 88.0, f32::INFINITY, f32::NEG_INFINITY]);
        let mut first: Option<Vec<u32>> = None;
        for level in Isa::ALL {
            if isa::force(Some(level)).is_err() {
                test_report::skipped(&format!("tanh on {}", level.name()), "not on this CPU");
                continue;
            }
            let mut y = vec![MaybeUninit::uninit(); xs.len()];
            tanh_slice(&xs, &mut y);
            // SAFETY: tanh_slice wrote every element.
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            for (x, y) in xs.iter().zip(&y) {
                let e = (*x as f64).tanh();
                let ulp = (e as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON;
                assert!(
                    (*y as f64 - e).abs() <= ulp as f64,
                    "{}: tanh({x}) = {y}, exact {e}",
                    level.name()
                );
                assert_eq!(y.is_sign_negative(), x.is_sign_negative(), "tanh({x}) sign");
            }
            let mut nan = [MaybeUninit::uninit()];
            tanh_slice(&[f32::NAN], &mut nan);
            // SAFETY: tanh_slice wrote it.
            let nan = unsafe { nan[0].assume_init() };
            assert!(nan.is_nan(), "{}: tanh(NaN) = {nan}", level.name());
            let bits: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            match &first {
                None => first = Some(bits),
                Some(f) => {
                    assert!(f == &bits, "{}: other bits than the scalar level", level.name())
                }
            }
            test_report::passed(&format!("tanh on {}", level.name()));
        }
        isa::force(None).expect("back to the detected level");
    }
}
