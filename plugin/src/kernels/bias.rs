//! A per-channel bias on NCHW activations, with its gradient, as one parallel pass each way.
//!
//! candle's `broadcast_add` of a `(1, c, 1, 1)` bias takes the bias gradient as a strided
//! `sum_keepdim` over batch and pixels on one thread: 3.9 % of an ngf-32, batch-4 training
//! step (`perf record --call-graph dwarf`, under `Tensor::backward`'s `reduce_op`) for the three
//! trainable layers with a bias (the PatchGAN's first and last, the U-Net's outermost
//! transposed conv). Here each channel's gradient is one f64 sum over its planes, channels in
//! parallel (the same sums whatever the threads).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::norm::sum_f64;
use super::output::par_written;
use super::{contiguous_f32, dims4, with_f32};

/// `x + b` with `b` (`c` values) broadcast over the batch and pixels of `x` (`(n, c, h, w)`).
#[derive(Clone, Copy, Debug)]
pub struct BiasOp;

impl CustomOp2 for BiasOp {
    fn name(&self) -> &'static str {
        "pix2pix-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, (_, c, h, w)) = (contiguous_f32(s1, l1)?, dims4(l1)?);
        let b = contiguous_f32(s2, l2)?;
        if b.len() != c {
            candle_core::bail!("bias of {} for {c} channels", b.len())
        }
        let hw = h * w;
        // SAFETY: piece p is plane p of the output, written whole from plane p of x.
        let y = unsafe {
            par_written(x.len(), hw.max(1), 1, |p, out| {
                let (bias, src) = (b[p % c], &x[p * hw..][..out.len()]);
                for (o, v) in out.iter_mut().zip(src) {
                    o.write(v + bias);
                }
            })
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (nb, c, h, w) = dy.dims4()?;
        let hw = h * w;
        let sums: Vec<f32> = with_f32(&dy, |g| {
            (0..c)
                .into_par_iter()
                .map(|ch| {
                    let plane = |n: usize| &g[(n * c + ch) * hw..][..hw];
                    (0..nb).map(|n| sum_f64(plane(n), plane(n), |v, _| v as f64)).sum::<f64>()
                        as f32
                })
                .collect()
        })?;
        let db = Tensor::from_vec(sums, b.shape(), b.device())?;
        Ok((Some(dy), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Output and both gradients against candle's broadcast add, for a batch of 2.
    #[test]
    fn bias_matches_broadcast_add() -> Result<()> {
        let dev = Device::Cpu;
        let vals = |n: usize, s: f32| crate::kernels::mat::test_values(n, s);
        let x = Tensor::from_vec(vals(2 * 3 * 5 * 7, 3.0), (2, 3, 5, 7), &dev)?;
        let b = Tensor::from_vec(vals(3, 2.0), 3, &dev)?;
        let r = Tensor::from_vec(vals(2 * 3 * 5 * 7, 5.0), (2, 3, 5, 7), &dev)?;
        let run = |fast: bool| -> Result<(Tensor, Tensor, Tensor)> {
            let (xv, bv) = (Var::from_tensor(&x)?, Var::from_tensor(&b)?);
            let y = match fast {
                true => xv.as_tensor().apply_op2(bv.as_tensor(), BiasOp)?,
                false => xv.as_tensor().broadcast_add(&bv.as_tensor().reshape((1, 3, 1, 1))?)?,
            };
            let g = (&y * &r)?.sum_all()?.backward()?;
            let grad = |v: &Var| g.get(v.as_tensor()).cloned().expect("gradient");
            Ok((y, grad(&xv), grad(&bv)))
        };
        let (fast, reference) = (run(true)?, run(false)?);
        for (what, a, b) in [
            ("output", &fast.0, &reference.0),
            ("input gradient", &fast.1, &reference.1),
            ("bias gradient", &fast.2, &reference.2),
        ] {
            assert_eq!(a.dims(), b.dims(), "{what}");
            let err = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "{what}: error {err}");
        }
        Ok(())
    }
}
