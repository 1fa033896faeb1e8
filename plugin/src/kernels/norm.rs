//! Batch and instance normalisation as a few fused, parallel passes, forward and backward.
//!
//! candle composes `(x − mean) / √(var + eps) · γ + β` from eight broadcast ops, each a
//! single-threaded pass over the activation with its own autograd node; in the U-Net that was
//! a fifth of an inference and much of a training step. Here the statistics are one parallel
//! reduction (f64 sums, mean then variance as PyTorch does), the affine map one pass
//! (`x·a + b` per channel), and the backward one task per group: the sums `Σdy`,
//! `Σdy·(x − mean)`, then `dx` as one fused expression while the group is still in cache.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::isa::on_best_isa;
use super::output::par_written;
use super::profile::timed;
use super::{contiguous_f32, dims4};

/// Which elements of an NCHW tensor share statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Groups {
    /// One channel over the whole batch (batch norm): `c` groups.
    Channel,
    /// One channel of one image (instance norm): `n·c` groups.
    ImageChannel,
}

impl Groups {
    fn count(self, nb: usize, c: usize) -> usize {
        match self {
            Groups::Channel => c,
            Groups::ImageChannel => nb * c,
        }
    }
    /// The group of plane `p` (`p = n·c + channel`).
    fn of_plane(self, p: usize, c: usize) -> usize {
        match self {
            Groups::Channel => p % c,
            Groups::ImageChannel => p,
        }
    }
    /// The planes of group `g`.
    fn planes(self, g: usize, nb: usize, c: usize) -> impl Iterator<Item = usize> {
        let (first, step, count) = match self {
            Groups::Channel => (g, c, nb),
            Groups::ImageChannel => (g, 1, 1),
        };
        (0..count).map(move |i| first + i * step)
    }
}

on_best_isa!(
    /// Σ f(a[i], b[i]) over a plane (`a` and `b` equally long) in eight f64 lanes: exact enough
    /// for the variance of a 256×256 plane, and the same sum whichever instruction set runs it
    /// (lane `l` adds the elements `i ≡ l mod 8` in order, the tail last). Compiled for the best
    /// level the CPU has: at the baseline (SSE2) the f64 lanes ran one at a time.
    pub(crate) fn sum_f64 => lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64 + Copy) -> f64
);

#[inline(always)]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let (a8, b8) = (a.chunks_exact(8), b[..a.len()].chunks_exact(8));
    let (at, bt) = (a8.remainder(), b8.remainder());
    for (a8, b8) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += f(a8[l], b8[l]);
        }
    }
    let tail: f64 = at.iter().zip(bt).map(|(a, b)| f(*a, *b)).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Per group: mean and biased variance, as a `(2, groups)` tensor.
#[derive(Clone, Copy, Debug)]
pub struct MomentsOp {
    pub groups: Groups,
}

impl CustomOp1 for MomentsOp {
    fn name(&self) -> &'static str {
        "pix2pix-norm-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, c, h, w)) = (contiguous_f32(s, l)?, dims4(l)?);
        let (hw, ng) = (h * w, self.groups.count(nb, c));
        let count = (self.groups.planes(0, nb, c).count() * hw).max(1) as f64;
        let stats: Vec<(f32, f32)> = (0..ng)
            .into_par_iter()
            .map(|g| {
                let planes = || self.groups.planes(g, nb, c).map(|p| &x[p * hw..][..hw]);
                let mean = planes().map(|x| sum_f64(x, x, |x, _| x as f64)).sum::<f64>() / count;
                let var = planes()
                    .map(|x| sum_f64(x, x, move |x, _| (x as f64 - mean).powi(2)))
                    .sum::<f64>()
                    / count;
                (mean as f32, var as f32)
            })
            .collect();
        let (mean, var): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
        Ok((CpuStorage::F32([mean, var].concat()), Shape::from((2, ng))))
    }
}

/// `y = (x − mean) · rstd · γ + β`, with the statistics given per group and `γ`, `β` per
/// channel. With `batch_stats` the statistics are those of `x` itself (the backward accounts
/// for them); otherwise they are constants (running statistics).
#[derive(Clone, Debug)]
pub struct NormAffineOp {
    pub groups: Groups,
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
    pub batch_stats: bool,
}

impl NormAffineOp {
    /// For plane `p`: its mean, the scale `a = γ·rstd` and the shift `β`.
    fn coefficients(&self, p: usize, c: usize, gamma: &[f32], beta: &[f32]) -> (f32, f32, f32) {
        let g = self.groups.of_plane(p, c);
        (self.mean[g], gamma[p % c] * self.rstd[g], beta[p % c])
    }
}

fn check_params(c: usize, gamma: &[f32], beta: &[f32]) -> Result<()> {
    if gamma.len() != c || beta.len() != c {
        candle_core::bail!(
            "norm: {c} channels but {} scales and {} shifts",
            gamma.len(),
            beta.len()
        )
    }
    Ok(())
}

impl CustomOp3 for NormAffineOp {
    fn name(&self) -> &'static str {
        "pix2pix-norm-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, c, h, w)) = (contiguous_f32(s1, l1)?, dims4(l1)?);
        let (gamma, beta) = (contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        check_params(c, gamma, beta)?;
        let hw = h * w;
        // SAFETY: piece p is plane p (hw floats), written whole from x's plane p.
        let y = unsafe {
            par_written(x.len(), hw, 1, |p, y| {
                // (x − mean)·a + β rather than x·a + b: no cancellation when |mean| ≫ std.
                let (mean, a, b) = self.coefficients(p, c, gamma, beta);
                y.iter_mut().zip(&x[p * hw..][..hw]).for_each(|(y, x)| {
                    y.write((x - mean) * a + b);
                });
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((nb, c, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        timed(|| format!("bwd    norm   {:?}", x.dims()), 0.0, || self.backward(x, gamma, beta, dy))
    }
}

impl NormAffineOp {
    /// dx, dγ, dβ: dx by [`GradOp`] (which leaves the sums dγ and dβ are made of), the sums
    /// alone by [`GradSumsOp`] where `x` needs no gradient.
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let gamma_v = gamma.to_vec1::<f32>()?;
        let c = gamma_v.len();
        let (dx, sum_dy, sum_dy_xc) = if x.track_op() {
            let op = GradOp { affine: self.clone(), gamma: gamma_v, sums: Default::default() };
            let sums = op.sums.clone();
            let dx = x.apply_op2_no_bwd(&dy, &op)?;
            let Some((s0, s1)) = sums.get() else {
                candle_core::bail!("norm backward: the gradient left no sums")
            };
            (Some(dx), s0.clone(), s1.clone())
        } else {
            let op = GradSumsOp { groups: self.groups, mean: self.mean.clone() };
            let sums = x.apply_op2_no_bwd(&dy, &op)?.to_vec2::<f32>()?;
            let [s0, s1]: [Vec<f32>; 2] = sums
                .try_into()
                .map_err(|_| candle_core::Error::Msg("norm backward: bad sums".into()))?;
            (None, s0, s1)
        };
        // Per channel: dβ = Σdy, dγ = Σdy·x̂ (instance norm sums its images' groups).
        let per_channel = |sums: &[f32], scale_by_rstd: bool| -> Result<Tensor> {
            let mut out = vec![0f32; c];
            for (g, s) in sums.iter().enumerate() {
                out[g % c] += if scale_by_rstd { s * self.rstd[g] } else { *s };
            }
            Tensor::from_vec(out, c, gamma.device())
        };
        let dgamma = if gamma.track_op() { Some(per_channel(&sum_dy_xc, true)?) } else { None };
        let dbeta = if beta.track_op() { Some(per_channel(&sum_dy, false)?) } else { None };
        Ok((dx, dgamma, dbeta))
    }
}

/// The backward ops' operands: the input, its output's gradient (same size), the input's dims.
#[allow(clippy::type_complexity)]
fn input_and_grad<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> Result<(&'a [f32], &'a [f32], (usize, usize, usize, usize))> {
    let (x, dy) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
    if dy.len() != x.len() {
        candle_core::bail!("norm backward: gradient has {} elements, input {}", dy.len(), x.len())
    }
    Ok((x, dy, dims4(l1)?))
}

/// `(x, dy)` → `(2, groups)`: `Σdy` and `Σdy·(x − mean)` per group.
struct GradSumsOp {
    groups: Groups,
    mean: Vec<f32>,
}

impl CustomOp2 for GradSumsOp {
    fn name(&self) -> &'static str {
        "pix2pix-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy, (nb, c, h, w)) = input_and_grad(s1, l1, s2, l2)?;
        let (hw, ng) = (h * w, self.groups.count(nb, c));
        if self.mean.len() != ng {
            candle_core::bail!("norm backward: {} means for {ng} groups", self.mean.len())
        }
        let sums: Vec<(f32, f32)> = (0..ng)
            .into_par_iter()
            .map(|g| grad_sums(x, dy, self.groups, g, self.mean[g], (nb, c, hw)))
            .collect();
        let (s0, s1): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
        Ok((CpuStorage::F32([s0, s1].concat()), Shape::from((2, ng))))
    }
}

/// Group `g`'s `Σdy` and `Σdy·(x − mean)` (f64 sums, rounded to f32).
fn grad_sums(
    x: &[f32],
    dy: &[f32],
    groups: Groups,
    g: usize,
    mean: f32,
    (nb, c, hw): (usize, usize, usize),
) -> (f32, f32) {
    let m = mean as f64;
    let (mut s0, mut s1) = (0f64, 0f64);
    for p in groups.planes(g, nb, c) {
        let (x, dy) = (&x[p * hw..][..hw], &dy[p * hw..][..hw]);
        s0 += sum_f64(dy, dy, |dy, _| dy as f64);
        s1 += sum_f64(dy, x, move |dy, x| dy as f64 * (x as f64 - m));
    }
    (s0 as f32, s1 as f32)
}

/// `(x, dy)` → dx. With batch statistics,
/// `dx = a·(dy − Σdy/M − (x − mean)·rstd²·Σdy(x − mean)/M)`, `a = γ·rstd`, `M` the group size,
/// i.e. `a·dy + k1·(x − mean) + k0` per group; with constant statistics `dx = a·dy`. Each
/// group's sums are taken, then its planes' dx written while they are still in cache (as two
/// passes, sums then dx, they read `x` and `dy` from memory twice: ngf-32 batch-4 norm
/// backward 140–142 → 125–128 ms over 9 steps); the sums are left in `sums` for γ's and β's
/// gradients.
struct GradOp {
    affine: NormAffineOp,
    gamma: Vec<f32>,
    sums: Arc<OnceLock<(Vec<f32>, Vec<f32>)>>,
}

impl CustomOp2 for GradOp {
    fn name(&self) -> &'static str {
        "pix2pix-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy, (nb, c, h, w)) = input_and_grad(s1, l1, s2, l2)?;
        let (hw, affine) = (h * w, &self.affine);
        let (groups, ng) = (affine.groups, affine.groups.count(nb, c));
        if self.gamma.len() != c || affine.mean.len() != ng || affine.rstd.len() != ng {
            candle_core::bail!("norm backward: inconsistent shapes")
        }
        let m = (groups.planes(0, nb, c).count() * hw).max(1) as f32;
        let mut dx: Vec<f32> = Vec::with_capacity(x.len());
        let out = dx.as_mut_ptr() as usize;
        let sums: Vec<(f32, f32)> = (0..ng)
            .into_par_iter()
            .map(|g| {
                let (rstd, mean) = (affine.rstd[g], affine.mean[g]);
                let (sum_dy, sum_dy_xc) = grad_sums(x, dy, groups, g, mean, (nb, c, hw));
                for p in groups.planes(g, nb, c) {
                    let a = self.gamma[p % c] * rstd;
                    let (k1, k0) = match affine.batch_stats {
                        true => (-a * rstd * rstd * sum_dy_xc / m, -a * sum_dy / m),
                        false => (0.0, 0.0),
                    };
                    // SAFETY: plane p (hw floats from p·hw, p < nb·c) lies inside dx's capacity
                    // of x.len() floats, and only its group's task writes it (a plane belongs
                    // to one group); MaybeUninit, so no reference to uninitialised floats.
                    let d = unsafe {
                        std::slice::from_raw_parts_mut(
                            (out as *mut MaybeUninit<f32>).add(p * hw),
                            hw,
                        )
                    };
                    let (x, dy) = (&x[p * hw..][..hw], &dy[p * hw..][..hw]);
                    for ((d, x), dy) in d.iter_mut().zip(x).zip(dy) {
                        d.write(dy * a + ((x - mean) * k1 + k0));
                    }
                }
                (sum_dy, sum_dy_xc)
            })
            .collect();
        // SAFETY: the groups' planes cover all nb·c planes, each written whole above.
        unsafe { dx.set_len(x.len()) };
        if self.sums.set(sums.into_iter().unzip()).is_err() {
            candle_core::bail!("norm backward: an op's sums set twice")
        }
        Ok((CpuStorage::F32(dx), Shape::from((nb, c, h, w))))
    }
}
