//! The weight gradient shared by conv2d and the transposed convolution: for a convolution from
//! an image to a grid, `Σ_n act[n] · im2col(img[n])ᵀ`, one gemm whose reduction runs over the
//! grid positions (of all batches, when they are merged).
//!
//! Conv2d: act = dy `(nb, cout, oh, ow)`, img = x → `(cout, cin, kh, kw)`.
//! Transposed: act = x `(nb, cin, h, w)`, img = dy → `(cin, cout, kh, kw)`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};

use super::gemm::{sgemm, Mat};
use super::im2col::{im2col, nchw_to_cnhw, Geom};
use super::mat::transpose;
use super::profile::timed;
use super::single_channel;
use super::{batch_merge, contiguous_f32, dims4};

#[derive(Clone, Copy, Debug)]
pub struct WeightGradOp {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

/// The transposed product pays when the reduction is long and the weights few: its gemm ran
/// 1.3–2.9× faster on the outer U-Net layers' shapes (grids of 32×32 and more; m = 32…256
/// against rows = 96…1024), but the transposing copy of a large weight over a short grid cost
/// more than it saved (ngf 32 training-step profile, AVX-512).
fn transposed_pays(m: usize, rows: usize, reduction: usize) -> bool {
    reduction >= 1024 && m * rows <= 1 << 19
}

pub(crate) fn weight_grad(act: &[f32], nb: usize, m: usize, img: &[f32], g: &Geom) -> Vec<f32> {
    let (s, rows) = (g.grid(), g.rows());
    let shape = || format!("{m}x{}x{} k{} s{} @{}x{}", g.c, nb, g.kh, g.stride, g.oh, g.ow);
    let flops = 2.0 * (m * nb * s * rows) as f64;
    if m == 1 {
        // One-channel grid (the PatchGAN's last layer): no column matrix.
        return timed(
            || format!("wgrad  1-chan   {}", shape()),
            flops,
            || single_channel::weight_grad(act, nb, img, g),
        );
    }
    let col = timed(|| format!("wgrad  im2col   {}", shape()), 0.0, || im2col(img, nb, g, None));
    let transposed = transposed_pays(m, rows, nb * s);
    // dw = act · colᵀ (m × rows), or dwᵀ = col · actᵀ (rows × m) transposed back.
    let product = |dst: &mut [f32], act: Mat, col: Mat, accumulate: bool| {
        if transposed {
            sgemm(dst, m, col, act.t(), accumulate)
        } else {
            sgemm(dst, rows, act, col.t(), accumulate)
        }
    };
    let mut dw = vec![0f32; rows * m];
    if batch_merge(nb, s) {
        let a =
            timed(|| format!("wgrad  permute  {}", shape()), 0.0, || nchw_to_cnhw(act, nb, m, s));
        timed(
            || format!("wgrad  gemm     {}", shape()),
            flops,
            || product(&mut dw, Mat::rm(&a, m, nb * s), Mat::rm(&col, rows, nb * s), false),
        );
    } else {
        timed(
            || format!("wgrad  gemm     {}", shape()),
            flops,
            || {
                for n in 0..nb {
                    let a = Mat::rm(&act[n * m * s..][..m * s], m, s);
                    // Block n of the column matrix: the same rows, columns n·s .. (n+1)·s.
                    let block = Mat { data: &col[n * s..], rows, cols: s, rs: nb * s, cs: 1 };
                    product(&mut dw, a, block, n > 0);
                }
            },
        );
    }
    if !transposed {
        return dw;
    }
    timed(|| format!("wgrad  transpose {}", shape()), 0.0, || transpose(&dw, rows, m))
}

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (act, (nb, m, oh, ow)) = (contiguous_f32(s1, l1)?, dims4(l1)?);
        let (img, (inb, c, h, w)) = (contiguous_f32(s2, l2)?, dims4(l2)?);
        let mut g =
            Geom::conv(c, (h, w), (self.kh, self.kw), self.stride, self.padding, self.dilation)?;
        // The grid may stop short of the full one (transposed conv with a large output padding).
        if inb != nb || g.oh < oh || g.ow < ow {
            candle_core::bail!(
                "conv weight gradient: grid {:?} does not match image {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        (g.oh, g.ow) = (oh, ow);
        let dw = weight_grad(act, nb, m, img, &g);
        Ok((CpuStorage::F32(dw), Shape::from((m, c, self.kh, self.kw))))
    }
}
