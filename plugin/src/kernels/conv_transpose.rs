//! The transposed convolution as gemm + col2im: each input pixel's channel vector times the
//! weights gives its `cout·kh·kw` contributions in one matrix product, col2im sums them into the
//! output; on AVX-512 the U-Net's shapes run without the column matrix instead (by output phases,
//! or at stride 1 as the convolution with the flipped kernel, on the channel tiles). The backward
//! is a conv2d (input gradient) and a weight-gradient product.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::conv2d::Conv2dOp;
use super::direct::{self, DirectWeights};
use super::direct_channels::{self, ChannelWeights, Packing::PerCall, CB};
use super::gemm::{sgemm_w, Mat, Weights};
use super::im2col::{col2im, col2im_into, nchw_to_cnhw, Geom};
use super::phase_conv_transpose::{self, StoredPhases};
use super::profile::timed;
use super::scratch::Scratch;
use super::single_channel;
use super::weight_grad::WeightGradOp;
use super::{batch_merge, contiguous_f32, dims4};

/// `conv_transpose2d(x, w)` without bias: x `(nb, cin, h, w)`, w `(cin, cout, kh, kw)`, output
/// `(h−1)·s − 2p + d·(k−1) + output_padding + 1` per side, as `nn.ConvTranspose2d`.
#[derive(Clone, Copy, Debug)]
pub struct ConvTranspose2dOp {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    /// (rows, columns).
    pub output_padding: (usize, usize),
}

impl ConvTranspose2dOp {
    /// The geometry of the conv2d this op transposes: the image is this op's output, the grid
    /// this op's input.
    pub(crate) fn geom(
        &self,
        cout: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
    ) -> Result<Geom> {
        let side = |n: usize, k: usize, op: usize| -> Result<usize> {
            let full = (n.max(1) - 1) * self.stride + self.dilation * (k - 1) + 1 + op;
            if n == 0 || full <= 2 * self.padding {
                candle_core::bail!("conv_transpose2d: empty output for input side {n}")
            }
            Ok(full - 2 * self.padding)
        };
        let (oh, ow) = (side(h, kh, self.output_padding.0)?, side(w, kw, self.output_padding.1)?);
        let mut g = Geom::conv(cout, (oh, ow), (kh, kw), self.stride, self.padding, self.dilation)?;
        // An output padding of a stride or more (legal below the dilation) lets the conv2d
        // over the output see more grid positions than there are inputs: use the first h × w.
        if g.oh < h || g.ow < w {
            candle_core::bail!(
                "conv_transpose2d: output padding {:?} too large",
                self.output_padding
            )
        }
        (g.oh, g.ow) = (h, w);
        Ok(g)
    }
}

/// `nb` grids of `k` channels (`x`: `(nb, k, oh, ow)`) through the transposed convolution whose
/// weights are the `g.rows() × k` matrix `wt`: the `(nb, g.c, g.h, g.w)` images, `bias` added.
pub(crate) fn conv_t_core(
    x: &[f32],
    nb: usize,
    g: &Geom,
    wt: Weights,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (k, s, rows) = (wt.cols(), g.grid(), g.rows());
    let shape = || format!("{k}x{}x{} k{} s{} @{}x{}", g.c, nb, g.kh, g.stride, g.oh, g.ow);
    if let (Weights::F32(wm), 1) = (wt, k) {
        // One input channel (a one-channel conv's input gradient): no column matrix.
        let taps: Vec<f32> = (0..rows).map(|r| wm.data[r * wm.rs]).collect();
        let mut y = timed(
            || format!("convT  1-chan   {}", shape()),
            2.0 * (nb * s * rows) as f64,
            || single_channel::input_grad(x, nb, g, &taps),
        );
        if let Some(b) = bias {
            let hw = g.h * g.w;
            y.chunks_mut(hw.max(1)).enumerate().for_each(|(p, plane)| {
                plane.iter_mut().for_each(|v| *v += b[p % g.c]);
            });
        }
        return y;
    }
    let flops = 2.0 * (rows * nb * s * k) as f64;
    if batch_merge(nb, s) {
        let mut col = Scratch::take(rows * nb * s);
        let xm =
            timed(|| format!("convT  permute  {}", shape()), 0.0, || nchw_to_cnhw(x, nb, k, s));
        timed(
            || format!("convT  gemm     {}", shape()),
            flops,
            || sgemm_w(&mut col, nb * s, wt, Mat::rm(&xm, k, nb * s), false),
        );
        return timed(|| format!("convT  col2im   {}", shape()), 0.0, || col2im(&col, nb, g, bias));
    }
    by_image_groups(nb, k, g, bias, |col, col_rs, n| {
        let xn = &x[n * k * s..][..k * s];
        sgemm_w(col, col_rs, wt, Mat::rm(xn, k, s), false)
    })
}

/// The transposed convolution of `nb` images of `k` channels whose column matrix (`g.rows() ×
/// g.grid()` an image) `product(col, col_rs, n)` writes for image `n` (row stride `col_rs`),
/// `bias` added. A group of images at a
/// time, whose column matrix is summed into them while still in cache (the whole batch's,
/// 32 MB at batch 4 in ngf 32's outer layer, went to memory and back: col2im 4.3 -> 3.9 ms a
/// call, and the products' strided writes faster): one image per group, but the whole batch
/// where the output has few channels, since col2im splits by output plane (3 per image in the
/// outermost layer).
pub(crate) fn by_image_groups(
    nb: usize,
    k: usize,
    g: &Geom,
    bias: Option<&[f32]>,
    product: impl Fn(&mut [f32], usize, usize),
) -> Vec<f32> {
    let (s, rows) = (g.grid(), g.rows());
    let shape = || format!("{k}x{}x{nb} k{} s{} @{}x{}", g.c, g.kh, g.stride, g.oh, g.ow);
    let flops = 2.0 * (rows * nb * s * k) as f64;
    let q = if g.c >= 4 * rayon::current_num_threads() { 1 } else { nb };
    let mut col = Scratch::take(rows * q * s);
    let image = g.c * g.h * g.w;
    let mut out = Vec::with_capacity(nb * image);
    let chunk = (q * image).max(1);
    for (group, dst) in out.spare_capacity_mut()[..nb * image].chunks_mut(chunk).enumerate() {
        let imgs = dst.len() / image;
        let col = &mut col[..rows * imgs * s];
        timed(
            || format!("convT  gemm     {}", shape()),
            flops * (imgs as f64 / nb as f64),
            || {
                for i in 0..imgs {
                    // Block i of the column matrix: row stride imgs·s, columns i·s .. (i+1)·s.
                    product(&mut col[i * s..], imgs * s, group * q + i);
                }
            },
        );
        timed(
            || format!("convT  col2im   {}", shape()),
            0.0,
            || col2im_into(col, imgs, g, bias, dst),
        );
    }
    // SAFETY: col2im_into wrote every group's images whole.
    unsafe { out.set_len(nb * image) };
    out
}

impl ConvTranspose2dOp {
    /// The forward on weights `(cin, cout, kh, kw)` as stored or, `row_major`, re-laid out as
    /// `(cout, kh, kw, cin)` (see `frozen.rs`).
    pub(crate) fn forward_on(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        row_major: bool,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, cin, h, w)) = (contiguous_f32(s1, l1)?, dims4(l1)?);
        let (k, d) = (contiguous_f32(s2, l2)?, dims4(l2)?);
        let (kcin, cout, kh, kw) = if row_major { (d.3, d.0, d.1, d.2) } else { d };
        if kcin != cin {
            candle_core::bail!("conv_transpose2d: input has {cin} channels, kernel expects {kcin}")
        }
        let g = self.geom(cout, (h, w), (kh, kw))?;
        // Stored: (cin, cout·kh·kw) row-major, transposed by the view.
        let wt = if row_major { Mat::rm(k, g.rows(), cin) } else { Mat::rm(k, cin, g.rows()).t() };
        if bias.is_some_and(|b| b.len() != cout) {
            candle_core::bail!(
                "conv_transpose2d: bias of {} for {cout} channels",
                bias.map_or(0, <[f32]>::len)
            )
        }
        let dims = (cin, cout, kh, kw);
        let y = match self.flipped_geom(cin, (h, w), dims).filter(|_| !row_major) {
            Some(gf) => {
                let packed = timed(
                    || format!("convT  flip     {cin}x{cout} k{kh}"),
                    0.0,
                    || flipped(k, dims),
                );
                direct::conv_direct(x, nb, &gf, &packed, bias, None)
            }
            None if !row_major && self.by_phases(cin, cout, (h, w), (kh, kw)) => {
                let shape = || format!("{cin}x{cout}x{nb} k4 s2 @{h}x{w}");
                let packed = timed(
                    || format!("convT  pack ph  {}", shape()),
                    0.0,
                    || StoredPhases::pack(k, cin, cout),
                );
                timed(
                    || format!("convT  phases   {}", shape()),
                    2.0 * (16 * cout * cin * nb * h * w) as f64,
                    || {
                        let blocks = |p: usize, b: usize| packed.block(p, b);
                        phase_conv_transpose::conv_t(
                            &[(x, cin)],
                            nb,
                            (h, w),
                            (cout, cin),
                            blocks,
                            bias,
                            false,
                        )
                    },
                )
            }
            None => conv_t_core(x, nb, &g, Weights::F32(wt), bias),
        };
        Ok((CpuStorage::F32(y), Shape::from((nb, cout, g.h, g.w))))
    }

    /// Whether the layer runs by output phases on the channel tiles
    /// ([`phase_conv_transpose`]): the U-Net's kernel 4, stride 2, padding 1, from `c` to `m`
    /// channels on an `h × w` input, with no output padding (training's transposed layers and
    /// its stride-2 convolutions' input gradients), the weights packed at every call. No column
    /// matrix (4× the output) and no col2im pass. Kernel profile, ngf 64 batch 4, ms over 5
    /// steps (Zen 5), gemm + col2im → packing + phases: 256→128 @32² 272 → 213, 128→64 @64²
    /// 285 → 247, 1024→256 @16² 127 → 111, 512→512 @8² 42 → 33; 256→64 @64² 120 → 126
    /// (one block of outputs). Grids under 8 × 8 stay on gemm: there the weights' packing
    /// (a 1024→512 layer's 32 MB, ~3.5 ms) outweighs the col2im saved (@4²: 16 → 34).
    fn by_phases(&self, c: usize, m: usize, hw: (usize, usize), kernel: (usize, usize)) -> bool {
        let plain =
            (self.stride, self.padding, self.dilation, self.output_padding) == (2, 1, 1, (0, 0));
        phase_conv_transpose::suits(c, m, kernel, hw, plain) && hw.0.min(hw.1) >= 8
    }

    /// At stride 1 the transposed convolution is the convolution of its input (`c` channels,
    /// `h × w`) with the kernel flipped and its channel axes swapped, padded `k − 1 − p`: the
    /// geometry of that convolution where the channel form runs it from the image, with no
    /// column matrix and no col2im. The PatchGAN's 31×31 stride-1 layer's input gradient, 3 a
    /// training step (ngf-32 profile, 13 steps, 4 runs, ms over 39 calls): gemm + col2im
    /// 232–233 → 175–192 (the conv 157–179, the flipped packing 18–25), ~3–4 ms a step.
    fn flipped_geom(
        &self,
        c: usize,
        (h, w): (usize, usize),
        (_, cout, kh, kw): (usize, usize, usize, usize),
    ) -> Option<Geom> {
        let plain = (self.stride, self.dilation, self.output_padding) == (1, 1, (0, 0));
        if !plain || kh != kw || self.padding >= kh || !direct_channels::available() {
            return None;
        }
        let g = Geom::conv(c, (h, w), (kh, kw), 1, kh - 1 - self.padding, 1).ok()?;
        direct_channels::suits(cout, g.rows(), PerCall).then_some(g)
    }
}

/// Weights `k`, `(cin, cout, kh, kw)` as stored, packed for the channel form as the `cout ×
/// cin·kh·kw` kernel of the equivalent stride-1 convolution: flipping both axes reverses each
/// `(cin, cout)` pair's taps. Each block of [`CB`] output channels reads, per input channel,
/// `CB` consecutive tap runs (a `CB × kh·kw` matrix, contiguous) and writes them transposed.
fn flipped(k: &[f32], (cin, cout, kh, kw): (usize, usize, usize, usize)) -> DirectWeights {
    let taps = kh * kw;
    let packed = ChannelWeights::pack_by(cout, cin * taps, |b, blk| {
        let rows = CB.min(cout - b * CB);
        let mut tmp = vec![0f32; taps * CB];
        for (c, dst) in blk.chunks_exact_mut(taps * CB).enumerate() {
            let src = &k[(c * cout + b * CB) * taps..][..rows * taps];
            // SAFETY: the CPU has AVX-512 F (`flipped_geom` checks `available`).
            unsafe { direct_channels::to_channels_last(src, rows, taps, taps, &mut tmp) };
            for (d, t) in dst.chunks_exact_mut(CB).zip(tmp.chunks_exact(CB).rev()) {
                d.copy_from_slice(t);
            }
        }
    });
    DirectWeights::Channels(packed)
}

impl CustomOp2 for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward_on(s1, l1, s2, l2, false, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (_, _, kh, kw) = w.dims4()?;
        // dx: the conv2d of dy with the same weights read as (out = cin, in = cout).
        let dx = if x.track_op() {
            let op = Conv2dOp {
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
                act: None,
            };
            let (_, _, h, wd) = x.dims4()?;
            let dx = dy.apply_op2_no_bwd(w, &op)?;
            // Extra grid positions (output padding >= stride, see geom) have no input.
            if dx.dims4()?.2 != h || dx.dims4()?.3 != wd {
                Some(dx.narrow(2, 0, h)?.narrow(3, 0, wd)?)
            } else {
                Some(dx)
            }
        } else {
            None
        };
        // dw: x against the im2col of dy, which lands in the (cin, cout, kh, kw) layout.
        let dw = if w.track_op() {
            let op = WeightGradOp {
                kh,
                kw,
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
                img_act: None,
            };
            Some(x.contiguous()?.apply_op2_no_bwd(&dy, &op)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Test oracle of the transposed-convolution kernels: the U-Net's transposed convolution
/// (kernel 4, stride 2, padding 1) by its definition, each input pixel scattering its taps,
/// summed in f64.
#[cfg(test)]
pub(crate) mod reference {
    /// Checkpoint-layout weights `(c, m, 4, 4)` in the frozen layers' `(m, 4, 4, c)` layout.
    pub(crate) fn row_major(wc: &[f32], c: usize, m: usize) -> Vec<f32> {
        let mut wr = vec![0f32; wc.len()];
        for (i, &v) in wc.iter().enumerate() {
            let (cc, o, t) = (i / (m * 16), i / 16 % m, i % 16);
            wr[(o * 16 + t) * c + cc] = v;
        }
        wr
    }

    /// `(nb, m, 2h, 2w)`: `x` `(nb, c, h, w)` through weights `wc` `(c, m, 4, 4)`, plus `bias`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_t(
        x: &[f32],
        nb: usize,
        c: usize,
        (h, w): (usize, usize),
        wc: &[f32],
        m: usize,
        bias: &[f32],
    ) -> Vec<f64> {
        let (oh, ow) = (2 * h, 2 * w);
        let mut out = vec![0f64; nb * m * oh * ow];
        for n in 0..nb {
            for o in 0..m {
                out[(n * m + o) * oh * ow..][..oh * ow].fill(bias[o] as f64);
            }
            for cc in 0..c {
                for iy in 0..h {
                    for ix in 0..w {
                        let v = x[((n * c + cc) * h + iy) * w + ix] as f64;
                        for o in 0..m {
                            for ky in 0..4 {
                                for kx in 0..4 {
                                    let (yy, xx) = (2 * iy + ky, 2 * ix + kx);
                                    if yy < 1 || xx < 1 || yy > oh || xx > ow {
                                        continue;
                                    }
                                    let wv = wc[((cc * m + o) * 4 + ky) * 4 + kx] as f64;
                                    out[((n * m + o) * oh + yy - 1) * ow + xx - 1] += v * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Every `got` within `tol` of `want`, relative to `max(|want|, 1)`.
    pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: sizes differ");
        for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - e).abs() <= tol * e.abs().max(1.0), "{what} at {i}: {g} vs {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// Stride-1 transposed convolutions (the channel form on the flipped kernel where it takes
    /// them) against the definition, each input pixel scattering its taps, summed in f64: as
    /// stored and row-major, padded 1 and 0, batch 2, a non-square input.
    #[test]
    fn stride_one_matches_the_definition() {
        // (images, in channels, out channels, height, width, kernel, padding, row major)
        let cases = [
            (2, 32, 64, 9, 7, 4, 1, false),
            (1, 32, 128, 6, 6, 3, 0, true),
            (1, 24, 64, 5, 8, 4, 2, false),
        ];
        let mut flipped_ran = false;
        for (ci, &(nb, c, m, h, w, k, pad, row_major)) in cases.iter().enumerate() {
            let op =
                ConvTranspose2dOp { stride: 1, padding: pad, dilation: 1, output_padding: (0, 0) };
            flipped_ran |= op.flipped_geom(c, (h, w), (c, m, k, k)).is_some();
            let x = test_values(nb * c * h * w, 50.0);
            let wc = test_values(c * m * k * k, 300.0);
            let bias = test_values(m, 10.0);
            let (oh, ow) = (h + k - 1 - 2 * pad, w + k - 1 - 2 * pad);
            let mut want = vec![0f64; nb * m * oh * ow];
            for n in 0..nb {
                for o in 0..m {
                    for (i, v) in want[(n * m + o) * oh * ow..][..oh * ow].iter_mut().enumerate() {
                        let (y, xx) = ((i / ow) as isize, (i % ow) as isize);
                        let mut acc = bias[o] as f64;
                        for cc in 0..c {
                            for ky in 0..k {
                                for kx in 0..k {
                                    // Output y = input iy + ky − pad.
                                    let (iy, ix) = (
                                        y + pad as isize - ky as isize,
                                        xx + pad as isize - kx as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv = x[((n * c + cc) * h + iy as usize) * w + ix as usize];
                                    acc += xv as f64 * wc[((cc * m + o) * k + ky) * k + kx] as f64;
                                }
                            }
                        }
                        *v = acc;
                    }
                }
            }
            // Weights as the op takes them: stored (c, m, k, k) or row-major (m, k, k, c).
            let wk: Vec<f32> = match row_major {
                false => wc.clone(),
                true => (0..wc.len())
                    .map(|i| {
                        let (o, t, cc) = (i / (k * k * c), i / c % (k * k), i % c);
                        wc[(cc * m + o) * k * k + t]
                    })
                    .collect(),
            };
            let kdims: Vec<usize> = match row_major {
                false => vec![c, m, k, k],
                true => vec![m, k, k, c],
            };
            let xs = CpuStorage::F32(x.clone());
            let ws = CpuStorage::F32(wk);
            let (xl, wl) = (Layout::contiguous((nb, c, h, w)), Layout::contiguous(kdims));
            let (y, shape) = op.forward_on(&xs, &xl, &ws, &wl, row_major, Some(&bias)).unwrap();
            assert_eq!(shape.dims(), &[nb, m, oh, ow]);
            let CpuStorage::F32(got) = y else { panic!("case {ci}: not f32") };
            reference::assert_close(&got, &want, 1e-5, &format!("stride-1 case {ci}"));
        }
        match flipped_ran {
            true => test_report::passed("stride-1 transposed conv on the channel form"),
            false => {
                test_report::skipped("stride-1 transposed conv on the channel form", "no AVX-512")
            }
        }
    }
}
