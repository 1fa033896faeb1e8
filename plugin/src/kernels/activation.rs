//! ReLU, LeakyReLU and tanh as one parallel pass each way.
//!
//! candle-nn's `leaky_relu` is `max(x, 0) + min(x, 0)·slope`: five single-threaded passes and
//! their autograd nodes; its ReLU gradient is 1 at 0 where PyTorch's is 0. This op computes
//! `x > 0 ? x : slope·x` and its gradient `x > 0 ? dy : slope·dy`, as `nn.LeakyReLU`
//! (`slope = 0` is `nn.ReLU`). candle's `tanh` calls glibc's `tanhf`, whose `expm1f` costs
//! ~15 ns an element (3 ms for the U-Net's 3 × 256 × 256 output); [`TanhOp`] evaluates
//! `(e²ˣ − 1)/(e²ˣ + 1)` in f64 (glibc's `exp` is fast) and rounds once to f32, which is within
//! an ulp of the exact value, with candle's gradient `dy·(1 − y²)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

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

#[derive(Clone, Copy, Debug)]
pub struct LeakyReluOp {
    pub slope: f32,
}

/// `f` over `a` and `b` element by element. Callers pass `move` closures: one that captured its
/// slope by reference made the compiler reload it for every element (it might alias the
/// output), which kept the loop scalar with a branch per element, mispredicted half the time
/// on activations (3.4 ms for a 64 × 128 × 128 ReLU, 0.5 ms vectorised).
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(
        |(o, (a, b))| {
            o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = f(*a, *b));
        },
    );
    out
}

impl CustomOp1 for LeakyReluOp {
    fn name(&self) -> &'static str {
        "pix2pix-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let slope = self.slope;
        let y = zip_map(x, x, move |x, _| leaky(x, slope));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.contiguous()?
                .apply_op2_no_bwd(&dy.contiguous()?, &GradOp::LeakyRelu { slope: self.slope })?,
        ))
    }
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

/// `tanh(x)` rounded from f64: below 2⁻¹² it is `x` to f32 precision (the next term,
/// `x³/3`, is under 2⁻²⁵ of it), and beyond 20 it rounds to ±1 (where `e²ˣ` could overflow);
/// in between the f64 cancellation in `e²ˣ − 1` leaves far more than f32's 24 bits.
fn tanh(x: f32) -> f32 {
    let a = x.abs();
    if a < 1.0 / 4096.0 {
        x
    } else if a > 20.0 {
        1f32.copysign(x)
    } else {
        let e = (2.0 * x as f64).exp();
        ((e - 1.0) / (e + 1.0)) as f32
    }
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
        let y = zip_map(x, x, |x, _| tanh(x));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &GradOp::Tanh)?))
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
        let mut out = vec![0f32; nb * c * hw];
        if hw > 0 {
            out.par_chunks_mut(hw).with_min_len(CHUNK.div_ceil(hw)).enumerate().for_each(
                move |(p, dst)| {
                    let (n, ch) = (p / c, p % c);
                    let src = if ch < ca {
                        &a[(n * ca + ch) * hw..][..hw]
                    } else {
                        &b[(n * cb + ch - ca) * hw..][..hw]
                    };
                    for (d, x) in dst.iter_mut().zip(src) {
                        *d = leaky(*x, 0.0);
                    }
                },
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((nb, c, h, w))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (ca, cb) = (a.dim(1)?, b.dim(1)?);
        let masked = |x: &Tensor, from: usize, len: usize| -> Result<Option<Tensor>> {
            if !x.track_op() {
                return Ok(None);
            }
            let dyx = dy.narrow(1, from, len)?.contiguous()?;
            Ok(Some(x.contiguous()?.apply_op2_no_bwd(&dyx, &GradOp::LeakyRelu { slope: 0.0 })?))
        };
        Ok((masked(a, 0, ca)?, masked(b, ca, cb)?))
    }
}
