//! ReLU and LeakyReLU as one parallel pass each way.
//!
//! candle-nn's `leaky_relu` is `max(x, 0) + min(x, 0)·slope`: five single-threaded passes and
//! their autograd nodes; its ReLU gradient is 1 at 0 where PyTorch's is 0. This op computes
//! `x > 0 ? x : slope·x` and its gradient `x > 0 ? dy : slope·dy`, as `nn.LeakyReLU`
//! (`slope = 0` is `nn.ReLU`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// Elements per rayon task: large enough to amortise the task, small enough to split a plane.
const CHUNK: usize = 1 << 14;

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
        let y = zip_map(x, x, move |x, _| if x > 0.0 { x } else { x * slope });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.contiguous()?
                .apply_op2_no_bwd(&dy.contiguous()?, &LeakyReluGradOp { slope: self.slope })?,
        ))
    }
}

struct LeakyReluGradOp {
    slope: f32,
}

impl CustomOp2 for LeakyReluGradOp {
    fn name(&self) -> &'static str {
        "pix2pix-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        if x.len() != dy.len() {
            candle_core::bail!(
                "leaky_relu backward: gradient has {} elements, input {}",
                dy.len(),
                x.len()
            )
        }
        let slope = self.slope;
        let dx = zip_map(x, dy, move |x, dy| if x > 0.0 { dy } else { dy * slope });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
