//! Adam (Kingma & Ba 2015) written to follow `torch.optim.Adam` (no weight decay, no amsgrad)
//! operation by operation in f32, so a step here and a step there agree to rounding:
//!
//! ```text
//! m ← lerp(m, g, 1 − β1)            (torch's lerp: g − (g − m)·β1 when 1 − β1 ≥ 0.5)
//! v ← v·β2 + (1 − β2)·g·g
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! with the scalars computed in f64 and rounded to f32, as PyTorch does on the CPU. The state
//! (step count and both moments of every parameter) exports to named tensors for checkpoints.

use std::collections::BTreeMap;

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
struct Moments {
    step: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    state: BTreeMap<String, Moments>,
}

/// Elements per parallel chunk of the update.
const CHUNK: usize = 1 << 15;

/// The element-wise update of one parameter, run in place on its storage.
struct Update<'a> {
    step_size: f32,
    bc2_sqrt: f32,
    weight: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (dst, src) else {
            candle_core::bail!("adam: f32 parameters and gradients expected")
        };
        let (Some((p0, p1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), src_l.contiguous_offsets())
        else {
            candle_core::bail!("adam: contiguous parameters and gradients expected")
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let mut guard = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let (m, v) = &mut *guard;
        if p.len() != g.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("adam: sizes differ")
        }
        let Update { step_size, bc2_sqrt, weight: w, beta2, one_minus_beta2, eps, .. } = *self;
        let n = p.len();
        crate::kernels::timed(
            || format!("adam   update {n}"),
            0.0,
            || {
                // `move`: the closure holds the coefficients by value; by reference the loop
                // reloaded them for every element (they might alias p, m or v), stayed scalar.
                p.par_chunks_mut(CHUNK)
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK))
                    .for_each(move |(((p, m), v), g)| {
                        for i in 0..p.len() {
                            let gi = g[i];
                            m[i] = if w.abs() < 0.5 {
                                m[i] + w * (gi - m[i])
                            } else {
                                gi - (gi - m[i]) * (1.0 - w)
                            };
                            v[i] = v[i] * beta2 + one_minus_beta2 * gi * gi;
                            let denom = v[i].sqrt() / bc2_sqrt + eps;
                            p[i] += step_size * (m[i] / denom);
                        }
                    })
            },
        );
        Ok(())
    }
}

/// `n` zeros, written: `vec![0.0; n]` of a large `n` is fresh pages that the first update
/// reads (the shared zero page) and then writes, a copy-on-write fault per page whose TLB flush
/// interrupts the other core; written first, each page faults in once, writable (ngf 32: the
/// first step's updates ~85–100 → ~15 ms, the kernels bench's first two steps 1.12–1.48 →
/// 0.91–0.94 s).
fn zeros_written(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0);
    v
}

impl Adam {
    pub fn new(beta1: f64, beta2: f64, eps: f64) -> Self {
        Self { beta1, beta2, eps, state: BTreeMap::new() }
    }

    /// One update of every parameter that has a gradient in `grads` (by name; as torch,
    /// parameters without one are left alone, their state included). The parameters are
    /// updated in place, in their own storage.
    pub fn step(
        &mut self,
        lr: f64,
        params: &[(String, Var)],
        grads: &BTreeMap<String, Tensor>,
    ) -> Result<()> {
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let g = g.to_dtype(DType::F32)?.contiguous()?;
            let n = var.as_tensor().elem_count();
            if g.elem_count() != n {
                return Err(Error::invalid(
                    "gradient",
                    format!("`{name}` has {n} elements, its gradient {}", g.elem_count()),
                ));
            }
            let st = self.state.entry(name.clone()).or_insert_with(|| Moments {
                step: 0,
                exp_avg: zeros_written(n),
                exp_avg_sq: zeros_written(n),
            });
            if st.exp_avg.len() != n {
                return Err(Error::invalid(
                    "optimizer state",
                    format!("`{name}` has {} elements, the parameter {n}", st.exp_avg.len()),
                ));
            }
            st.step += 1;
            let t = st.step as i32;
            let bias_correction1 = 1.0 - self.beta1.powi(t);
            let bias_correction2 = 1.0 - self.beta2.powi(t);
            let update = Update {
                step_size: -(lr / bias_correction1) as f32,
                bc2_sqrt: bias_correction2.sqrt() as f32,
                weight: (1.0 - self.beta1) as f32,
                beta2: self.beta2 as f32,
                one_minus_beta2: (1.0 - self.beta2) as f32,
                eps: self.eps as f32,
                moments: Mutex::new((&mut st.exp_avg, &mut st.exp_avg_sq)),
            };
            var.as_tensor().inplace_op2(&g, &update)?;
        }
        Ok(())
    }

    /// The state as tensors: `<prefix>.step.<param>` (int64, one element),
    /// `<prefix>.exp_avg.<param>` and `<prefix>.exp_avg_sq.<param>` (f32, the parameter's shape).
    pub fn export(&self, prefix: &str, params: &[(String, Var)]) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (name, var) in params {
            let Some(st) = self.state.get(name) else { continue };
            let shape = var.as_tensor().shape();
            out.push((
                format!("{prefix}.step.{name}"),
                Tensor::new(&[st.step as i64], &Device::Cpu)?,
            ));
            out.push((
                format!("{prefix}.exp_avg.{name}"),
                Tensor::from_slice(&st.exp_avg, shape, &Device::Cpu)?,
            ));
            out.push((
                format!("{prefix}.exp_avg_sq.{name}"),
                Tensor::from_slice(&st.exp_avg_sq, shape, &Device::Cpu)?,
            ));
        }
        Ok(out)
    }

    /// Restores what [`Adam::export`] wrote; `get` looks a tensor up by name.
    pub fn import(
        &mut self,
        prefix: &str,
        params: &[(String, Var)],
        get: impl Fn(&str) -> Option<Tensor>,
    ) -> Result<()> {
        self.state.clear();
        for (name, var) in params {
            let Some(step) = get(&format!("{prefix}.step.{name}")) else { continue };
            let step = step
                .to_dtype(DType::I64)?
                .flatten_all()?
                .to_vec1::<i64>()?
                .first()
                .copied()
                .unwrap_or(0)
                .max(0) as u64;
            let moment = |kind: &str| -> Result<Vec<f32>> {
                let key = format!("{prefix}.{kind}.{name}");
                let t = get(&key)
                    .ok_or_else(|| Error::invalid("optimizer state", format!("missing `{key}`")))?;
                if t.dims() != var.as_tensor().dims() {
                    return Err(Error::invalid(
                        "optimizer state",
                        format!(
                            "`{key}` has shape {:?}, the parameter {:?}",
                            t.dims(),
                            var.as_tensor().dims()
                        ),
                    ));
                }
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            };
            let exp_avg = moment("exp_avg")?;
            let exp_avg_sq = moment("exp_avg_sq")?;
            self.state.insert(name.clone(), Moments { step, exp_avg, exp_avg_sq });
        }
        Ok(())
    }

    /// Steps taken (that of the first parameter; they move together).
    pub fn steps(&self) -> u64 {
        self.state.values().map(|s| s.step).max().unwrap_or(0)
    }
}
