//! The weight gradient shared by conv2d and the transposed convolution: for a convolution from
//! an image to a grid, `Σ_n act[n] · im2col(img[n])ᵀ`, one gemm whose reduction runs over the
//! grid positions (of all batches, when they are merged).
//!
//! Conv2d: act = dy `(nb, cout, oh, ow)`, img = x → `(cout, cin, kh, kw)`.
//! Transposed: act = x `(nb, cin, h, w)`, img = dy → `(cin, cout, kh, kw)`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};

use rayon::prelude::*;

use super::activation::leaky_relu_slice;
use super::dot_tiles;
use super::gemm::{sgemm, sgemm_new, sgemm_serial, Mat};
use super::im2col::{
    block_cols, blocks_apply, im2col, nchw_to_cnhw, split_phases, with_column_block, Geom, Phases,
};
use super::mat::transpose;
use super::profile::timed;
use super::single_channel;
use super::weight_grad_channels;
use super::{batch_merge, contiguous_f32, dims4};

#[derive(Clone, Copy, Debug)]
pub struct WeightGradOp {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    /// The slope of a LeakyReLU the convolution applied to its image as it read it: the
    /// gradient is then against the activated image.
    pub img_act: Option<f32>,
}

/// The transposed product pays when the reduction is long and the weights few: its gemm ran
/// 1.3–2.9× faster on the outer U-Net layers' shapes (grids of 32×32 and more; m = 32…256
/// against rows = 96…1024), but the transposing copy of a large weight over a short grid cost
/// more than it saved (ngf 32 training-step profile, AVX-512).
fn transposed_pays(m: usize, rows: usize, reduction: usize) -> bool {
    reduction >= 1024 && m * rows <= 1 << 19
}

/// `Σ_n act[n] · im2col(img'[n])ᵀ`, `img'` = `leaky_relu(img, img_act)` when `img_act` is a
/// slope (else `img`).
pub(crate) fn weight_grad(
    act: &[f32],
    nb: usize,
    m: usize,
    img: &[f32],
    g: &Geom,
    img_act: Option<f32>,
) -> Vec<f32> {
    let (s, rows) = (g.grid(), g.rows());
    let shape = || format!("{m}x{}x{} k{} s{} @{}x{}", g.c, nb, g.kh, g.stride, g.oh, g.ow);
    let flops = 2.0 * (m * nb * s * rows) as f64;
    if weight_grad_channels::suits(m, g, nb * s) {
        // Its padded copy of the image applies the activation.
        return timed(
            || format!("wgrad  channels {}", shape()),
            flops,
            || weight_grad_channels::weight_grad(act, nb, m, img, g, img_act),
        );
    }
    // Strided, the phase split applies it as it reads the image (as the forward's `conv_core`);
    // otherwise (stride 1, one-channel grid) the activated image is made first.
    let activated;
    let (img, img_act) = match img_act {
        Some(slope) if g.stride == 1 || m == 1 => {
            activated = leaky_relu_slice(img, slope);
            (&activated[..], None)
        }
        a => (img, a),
    };
    if m == 1 {
        // One-channel grid (the PatchGAN's last layer): no column matrix.
        return timed(
            || format!("wgrad  1-chan   {}", shape()),
            flops,
            || single_channel::weight_grad(act, nb, img, g),
        );
    }
    let transposed = transposed_pays(m, rows, nb * s);
    if !batch_merge(nb, s) && blocks_apply(rows, s) {
        return timed(
            || format!("wgrad  blocks   {}", shape()),
            flops,
            || weight_grad_blocks(act, nb, m, img, g, img_act, transposed),
        );
    }
    let col = timed(|| format!("wgrad  im2col   {}", shape()), 0.0, || im2col(img, nb, g, img_act));
    // dw = act · colᵀ (m × rows), or dwᵀ = col · actᵀ (rows × m) transposed back.
    let product = |dst: &mut [f32], act: Mat, col: Mat, accumulate: bool| {
        if transposed {
            sgemm(dst, m, col, act.t(), accumulate)
        } else {
            sgemm(dst, rows, act, col.t(), accumulate)
        }
    };
    // The first product makes dw (no zeroing pass); the batch's other images add to it.
    let first = |act: Mat, col: Mat| match transposed {
        true => sgemm_new(col, act.t()),
        false => sgemm_new(act, col.t()),
    };
    let dw = if batch_merge(nb, s) {
        let a =
            timed(|| format!("wgrad  permute  {}", shape()), 0.0, || nchw_to_cnhw(act, nb, m, s));
        timed(
            || format!("wgrad  gemm     {}", shape()),
            flops,
            || first(Mat::rm(&a, m, nb * s), Mat::rm(&col, rows, nb * s)),
        )
    } else {
        timed(
            || format!("wgrad  gemm     {}", shape()),
            flops,
            || {
                // Image n's block of the column matrix: the same rows, columns n·s .. (n+1)·s.
                let image = |n: usize| {
                    let a = Mat::rm(&act[n * m * s..][..m * s], m, s);
                    (a, Mat { data: &col[n * s..], rows, cols: s, rs: nb * s, cs: 1 })
                };
                let (a, block) = image(0);
                let mut dw = first(a, block);
                for n in 1..nb {
                    let (a, block) = image(n);
                    product(&mut dw, a, block, true);
                }
                dw
            },
        )
    };
    if !transposed {
        return dw;
    }
    timed(|| format!("wgrad  transpose {}", shape()), 0.0, || transpose(&dw, rows, m))
}

/// Partial sums of a weight gradient in blocks: a fixed number, so that the result does not
/// depend on how many threads compute it.
const PARTS: usize = 4;

/// [`weight_grad`] with the column matrix made a block at a time ([`with_column_block`]): the
/// blocks (image, columns) are cut into [`PARTS`] runs, each reduced into its own partial
/// gradient by single-threaded products, and the partials added in order. The reduction over
/// the grid never writes the column matrix whole, and its order is fixed. `img_act`: a
/// LeakyReLU the phase split applies to a strided layer's image.
fn weight_grad_blocks(
    act: &[f32],
    nb: usize,
    m: usize,
    img: &[f32],
    g: &Geom,
    img_act: Option<f32>,
    transposed: bool,
) -> Vec<f32> {
    let (s, rows) = (g.grid(), g.rows());
    assert_eq!(act.len(), nb * m * s, "weight gradient: grid gradient size");
    let bc = block_cols(rows);
    let per_image = s.div_ceil(bc);
    let blocks = nb * per_image;
    // The dot tiles make dw (m × rows) straight from both operands' contiguous rows.
    let dots = dot_tiles::available();
    let transposed = transposed && !dots;
    let ph = Phases::new(g.h, g.w, g.stride);
    let split = split_phases(img, g, &ph, img_act);
    let src: &[f32] = split.as_deref().unwrap_or(img);
    let mut parts: Vec<Vec<f32>> = (0..PARTS)
        .into_par_iter()
        .map(|p| {
            let mut dw = vec![0f32; rows * m];
            for (i, b) in (p * blocks / PARTS..(p + 1) * blocks / PARTS).enumerate() {
                let (n, j0) = (b / per_image, (b % per_image) * bc);
                let cols = bc.min(s - j0);
                let a = Mat { data: &act[n * m * s + j0..], rows: m, cols, rs: s, cs: 1 };
                with_column_block(src, &ph, g, n, (j0, cols), |col| {
                    // dw = act · colᵀ (m × rows), or dwᵀ = col · actᵀ (rows × m).
                    match (dots, transposed) {
                        (true, _) => dot_tiles::sgemm_nt(&mut dw, rows, a, col, i > 0),
                        (false, true) => sgemm_serial(&mut dw, m, col, a.t(), i > 0),
                        (false, false) => sgemm_serial(&mut dw, rows, a, col.t(), i > 0),
                    }
                });
            }
            dw
        })
        .collect();
    let (first, rest) = parts.split_at_mut(1);
    for part in rest.iter() {
        first[0].iter_mut().zip(part).for_each(|(d, p)| *d += p);
    }
    let dw = std::mem::take(&mut first[0]);
    match transposed {
        true => transpose(&dw, rows, m),
        false => dw,
    }
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
        let dw = weight_grad(act, nb, m, img, &g, self.img_act);
        Ok((CpuStorage::F32(dw), Shape::from((m, c, self.kh, self.kw))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;

    /// The weight gradient in blocks against `Σ_n act[n] · im2col(img[n])ᵀ` summed in f64 over
    /// the whole column matrix: several blocks per image with a short last one, fewer blocks
    /// than partial sums, blocks of two images in one partial, both product orientations.
    #[test]
    fn blocks_equal_the_reduction_over_the_whole_column_matrix() {
        // (nb, c, h, w, m, k, stride, pad)
        for (nb, c, h, w, m, k, stride, pad) in [
            (1, 64, 66, 80, 16, 4, 2, 1),
            (2, 3, 130, 98, 32, 4, 2, 1),
            (2, 64, 20, 20, 8, 4, 2, 1),
            (3, 8, 41, 37, 12, 3, 1, 1),
        ] {
            let g = Geom::conv(c, (h, w), (k, k), stride, pad, 1).unwrap();
            let (s, rows) = (g.grid(), g.rows());
            let img: Vec<f32> = test_values(nb * c * h * w, 25.0);
            let act: Vec<f32> =
                (0..nb * m * s).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let col = im2col(&img, nb, &g, None);
            let case = format!(
                "{nb}x{c}x{h}x{w} k{k} s{stride} -> {m}: {} blocks",
                s.div_ceil(block_cols(rows))
            );
            for transposed in [false, true] {
                let dw = weight_grad_blocks(&act, nb, m, &img, &g, None, transposed);
                for o in 0..m {
                    for r in 0..rows {
                        let terms =
                            (0..nb).flat_map(|n| (0..s).map(move |j| (n, j))).map(|(n, j)| {
                                act[(n * m + o) * s + j] as f64 * col[r * nb * s + n * s + j] as f64
                            });
                        let (want, scale) =
                            terms.fold((0.0, 0.0), |(sum, abs), t: f64| (sum + t, abs + t.abs()));
                        let got = dw[o * rows + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * scale.max(1.0),
                            "{case}, transposed {transposed}, ({o}, {r}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
