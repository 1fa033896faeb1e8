//! Normalisation layers as the reference builds them: `nn.BatchNorm2d(c, affine=True)` with
//! running statistics (eps 1e-5, momentum 0.1, unbiased running variance) and
//! `nn.InstanceNorm2d(c, affine=False, track_running_stats=False)`.

use candle_core::{Result, Tensor, Var};
use candle_nn::VarBuilder;

use crate::kernels::{self, Groups, MomentsOp, NormAffineOp};
use crate::nets::forward::{Forward, NormStats};

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// The `norm` option of the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Batch,
    Instance,
    None,
}

impl NormKind {
    pub fn name(self) -> &'static str {
        match self {
            NormKind::Batch => "batch",
            NormKind::Instance => "instance",
            NormKind::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "batch" => Some(NormKind::Batch),
            "instance" => Some(NormKind::Instance),
            "none" => Some(NormKind::None),
            _ => None,
        }
    }
    /// Convolutions followed by batch norm carry no bias in the reference.
    pub fn conv_bias(self) -> bool {
        self != NormKind::Batch
    }
    pub fn is_some(self) -> bool {
        self != NormKind::None
    }
    /// The builder of the norm layer for `c` channels, or `None` for `norm = none` (which has
    /// no layer, and takes no index in a `Sequential`).
    pub fn layer(self, c: usize) -> Option<impl FnOnce(VarBuilder) -> Result<Norm>> {
        let batch = match self {
            NormKind::Batch => true,
            NormKind::Instance => false,
            NormKind::None => return None,
        };
        Some(move |vb: VarBuilder<'_>| {
            Ok(if batch { Norm::Batch(BatchNorm2d::new(c, vb)?) } else { Norm::Instance })
        })
    }
}

pub enum Norm {
    Batch(BatchNorm2d),
    Instance,
}

impl Norm {
    pub fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        match self {
            Norm::Batch(bn) => bn.forward(x, f),
            Norm::Instance if kernels::fast_for(x, x) => {
                let c = x.dim(1)?;
                let (mean, var) = fast_moments(x, Groups::ImageChannel)?;
                let (ones, zeros) = (
                    Tensor::ones(c, x.dtype(), x.device())?,
                    Tensor::zeros(c, x.dtype(), x.device())?,
                );
                fast_affine(x, &ones, &zeros, Groups::ImageChannel, &mean, &var, true)
            }
            Norm::Instance => {
                let (mean, var) = moments(x, (2, 3))?;
                x.broadcast_sub(&mean)?.broadcast_div(&(var + EPS)?.sqrt()?)
            }
        }
    }
}

impl Norm {
    /// On running statistics, batch norm is the per-channel map `x·scale + shift`: those (for
    /// folding into the preceding convolution of a frozen model); `None` for other norms and
    /// training variables.
    pub fn running_affine(&self) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Norm::Batch(bn) = self else { return Ok(None) };
        if bn.weight.is_variable() {
            return Ok(None);
        }
        let v = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>();
        let (g, b, m, var) = (
            v(&bn.weight)?,
            v(&bn.bias)?,
            v(bn.running_mean.as_tensor())?,
            v(bn.running_var.as_tensor())?,
        );
        let scale: Vec<f32> = g
            .iter()
            .zip(&var)
            .map(|(g, v)| (*g as f64 / (*v as f64 + EPS).sqrt()) as f32)
            .collect();
        let shift = b
            .iter()
            .zip(&m)
            .zip(&scale)
            .map(|((b, m), s)| (*b as f64 - *m as f64 * *s as f64) as f32)
            .collect();
        Ok(Some((scale, shift)))
    }
}

/// Mean and biased variance per group, by the fused kernel, as two tensors.
fn fast_moments(x: &Tensor, groups: Groups) -> Result<(Tensor, Tensor)> {
    let m = x.contiguous()?.apply_op1_no_bwd(&MomentsOp { groups })?;
    Ok((m.get(0)?, m.get(1)?))
}

/// `(x − mean)/√(var + eps)·γ + β` by the fused kernel (with its own backward).
fn fast_affine(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: Groups,
    mean: &Tensor,
    var: &Tensor,
    batch_stats: bool,
) -> Result<Tensor> {
    let rstd =
        var.to_vec1::<f32>()?.iter().map(|v| 1.0 / (*v as f64 + EPS).sqrt() as f32).collect();
    let op = NormAffineOp { groups, mean: mean.to_vec1()?, rstd, batch_stats };
    x.contiguous()?.apply_op3(gamma, beta, op)
}

/// Mean and biased variance over `dims`, kept for broadcasting.
fn moments<D: candle_core::shape::Dims + Copy>(x: &Tensor, dims: D) -> Result<(Tensor, Tensor)> {
    let mean = x.mean_keepdim(dims)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(dims)?;
    Ok((mean, var))
}

pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
}

impl BatchNorm2d {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?;
        // Var::from_tensor shares storage when the builder hands out variables (training),
        // so running-statistic updates are seen by whoever saves the VarMap.
        let running_mean = Var::from_tensor(&vb.get_with_hints(
            c,
            "running_mean",
            candle_nn::Init::Const(0.0),
        )?)?;
        let running_var =
            Var::from_tensor(&vb.get_with_hints(c, "running_var", candle_nn::Init::Const(1.0))?)?;
        let num_batches_tracked = Var::from_tensor(&vb.get_with_hints(
            (),
            "num_batches_tracked",
            candle_nn::Init::Const(0.0),
        )?)?;
        Ok(Self { weight, bias, running_mean, running_var, num_batches_tracked })
    }

    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        // Per-image statistics are instance-norm groups under batch norm's affine map (never
        // while training: the running statistics follow the whole batch).
        let per_image = f.per_image_stats && !f.update_running && f.stats == NormStats::Batch;
        if kernels::fast_for(x, &self.weight) {
            let groups = if per_image { Groups::ImageChannel } else { Groups::Channel };
            let (mean, var) = match f.stats {
                NormStats::Running => {
                    (self.running_mean.as_tensor().clone(), self.running_var.as_tensor().clone())
                }
                NormStats::Batch => {
                    let (mean, var) = fast_moments(x, groups)?;
                    if f.update_running {
                        self.update_running(x, &mean, &var)?;
                    }
                    (mean, var)
                }
            };
            return fast_affine(
                x,
                &self.weight,
                &self.bias,
                groups,
                &mean,
                &var,
                f.stats == NormStats::Batch,
            );
        }
        let c = self.weight.dim(0)?;
        let (mean, var) = match f.stats {
            NormStats::Running => (
                self.running_mean.as_tensor().reshape((1, c, 1, 1))?,
                self.running_var.as_tensor().reshape((1, c, 1, 1))?,
            ),
            NormStats::Batch if per_image => moments(x, (2, 3))?,
            NormStats::Batch => {
                let (mean, var) = moments(x, (0, 2, 3))?;
                if f.update_running {
                    self.update_running(x, &mean, &var)?;
                }
                (mean, var)
            }
        };
        let scale = self.weight.reshape((1, c, 1, 1))?;
        let shift = self.bias.reshape((1, c, 1, 1))?;
        x.broadcast_sub(&mean)?
            .broadcast_div(&(var + EPS)?.sqrt()?)?
            .broadcast_mul(&scale)?
            .broadcast_add(&shift)
    }

    fn update_running(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<()> {
        let (n, _, h, w) = x.dims4()?;
        let count = (n * h * w) as f64;
        let unbiased = (var.detach().flatten_all()? * (count / (count - 1.0).max(1.0)))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - MOMENTUM))?
            + (mean.detach().flatten_all()? * MOMENTUM)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - MOMENTUM))? + (unbiased * MOMENTUM)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        self.num_batches_tracked.set(&(self.num_batches_tracked.as_tensor() + 1.0)?)
    }
}
