//! Conv2d as im2col + gemm (or on the direct kernels where they run the layer), with a backward
//! that stays on the fast paths: the input gradient is the transposed convolution of the output
//! gradient ([`ConvTranspose2dOp`]: by output phases or gemm + col2im), the weight gradient one
//! product against the im2col of the input.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::activation::leaky_relu_slice;
use super::bf16::{conv_bf16, effective, Precision};
use super::conv_transpose::ConvTranspose2dOp;
use super::direct::{self, DirectWeights};
use super::direct_channels::{self, Packing};
use super::gemm::{self, sgemm_w, Mat, Weights};
use super::im2col::{
    block_cols, blocks_apply, cnhw_to_nchw, im2col, split_phases, with_column_block, Geom, Phases,
};
use super::output::par_written;
use super::profile::timed;
use super::scratch::Scratch;
use super::single_channel;
use super::weight_grad::WeightGradOp;
use super::{batch_merge, contiguous_f32, dims4};
use rayon::prelude::*;

/// `conv2d(x', w)` without bias: x `(nb, cin, h, w)`, w `(cout, cin, kh, kw)`, `x'` =
/// `leaky_relu(x, act)` when `act` is a slope (the activation read with the input, in training
/// too: no activated tensor kept, and its pass saved), else `x`.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dOp {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub act: Option<f32>,
}

/// `nb` images through a convolution whose weights are the `m × g.rows()` matrix `w`: the
/// `(nb, m, oh, ow)` result, `bias` added. `act`: the convolution of `leaky_relu(x, act)` (the
/// U-Net's down path), applied as the input is read where the layer splits it into phases.
pub(crate) fn conv_core(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: Weights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let single = matches!(w, Weights::F32(wm) if wm.rows == 1);
    if let (Some(slope), true) = (act, g.stride == 1 || single) {
        // No phase split to apply it in: the activation's own pass first.
        return conv_core(&leaky_relu_slice(x, slope), nb, g, w, bias, None);
    }
    if let Weights::F32(wm) = w {
        if wm.rows == 1 {
            let taps: Vec<f32> = (0..wm.cols).map(|t| wm.data[t * wm.cs]).collect();
            let shape = || format!("1x{}x{nb} k{} s{} @{}x{}", g.c, g.kh, g.stride, g.oh, g.ow);
            return timed(
                || format!("conv   1-chan   {}", shape()),
                2.0 * (nb * g.grid() * g.rows()) as f64,
                || single_channel::forward(x, nb, g, &taps, bias.map_or(0.0, |b| b[0])),
            );
        }
    }
    conv_gemm(x, nb, g, w, bias, act)
}

/// [`conv_core`] as im2col + gemm; bf16 weights on large grids pack their column matrix
/// straight from the image instead ([`conv_bf16`]).
fn conv_gemm(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: Weights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let (m, s) = (w.rows(), g.grid());
    let shape = || format!("{m}x{}x{} k{} s{} @{}x{}", g.c, nb, g.kh, g.stride, g.oh, g.ow);
    let flops = 2.0 * (m * nb * s * g.rows()) as f64;
    match (w, batch_merge(nb, s)) {
        (Weights::Bf16(a), false) => timed(
            || format!("conv   bf16     {}", shape()),
            flops,
            || {
                per_image(x, nb, g, m, bias, act, |dst, src, ph, n, acc| {
                    conv_bf16(dst, a, src, ph, g, n, acc)
                })
            },
        ),
        (Weights::F32(a), _) if direct::applies(g, m, Packing::PerCall) => {
            direct::conv_direct(x, nb, g, &DirectWeights::pack(a, Packing::PerCall), bias, act)
        }
        (Weights::F32(a), false) if blocks_apply(g.rows(), s) => timed(
            || format!("conv   blocks   {}", shape()),
            flops,
            || {
                per_image(x, nb, g, m, bias, act, |dst, src, ph, n, acc| {
                    conv_blocks(dst, a, src, ph, g, n, acc, block_cols(g.rows()))
                })
            },
        ),
        _ => conv_whole(x, nb, g, w, bias, act),
    }
}

/// The `(nb, m, grid)` result of one `product(dst, src, phases, n, accumulate)` per image, on
/// the input split into phases (`src`, the down path's activation applied) and `dst` holding
/// the bias first.
fn per_image(
    x: &[f32],
    nb: usize,
    g: &Geom,
    m: usize,
    bias: Option<&[f32]>,
    act: Option<f32>,
    product: impl Fn(&mut [f32], &[f32], &Phases, usize, bool),
) -> Vec<f32> {
    let s = g.grid();
    let ph = Phases::new(g.h, g.w, g.stride);
    let split = split_phases(x, g, &ph, act);
    let src: &[f32] = split.as_deref().unwrap_or(x);
    let mut out = biased(nb, m, s, bias);
    for (n, dst) in out.chunks_exact_mut((m * s).max(1)).enumerate() {
        product(dst, src, &ph, n, bias.is_some());
    }
    out
}

/// An `(nb, m, s)` output holding each channel's bias (0 without), for products to add to:
/// one parallel pass, not a zeroing pass and then the bias.
fn biased(nb: usize, m: usize, s: usize, bias: Option<&[f32]>) -> Vec<f32> {
    // SAFETY: piece p is the s floats of channel p % m of an image, written whole.
    unsafe {
        par_written(nb * m * s, s, 1, |p, row| {
            let b = bias.map_or(0.0, |b| b[p % m]);
            row.iter_mut().for_each(|d| {
                d.write(b);
            });
        })
    }
}

/// Floats a convolution's column matrix (`rows × nb·grid`) occupies while it runs, for the
/// memory estimates: one block per thread where f32 layers run in blocks, else the whole
/// matrix (bf16 packs an image's half-size matrix at a time: within that).
pub fn column_floats(rows: usize, grid: usize, nb: usize, precision: Precision) -> usize {
    let blocked = effective(precision) == Precision::F32
        && !batch_merge(nb, grid)
        && blocks_apply(rows, grid);
    match blocked {
        true => rayon::current_num_threads().max(1) * rows * block_cols(rows),
        false => rows * nb * grid,
    }
}

/// Image `n`'s product `dst (m × grid) (+)= a · im2col` in blocks of `bc` columns, each task
/// writing its block of the column matrix into a buffer that stays in L2 and multiplying it
/// there single-threaded: the column matrix is never written whole to memory and read back.
#[allow(clippy::too_many_arguments)]
fn conv_blocks(
    dst: &mut [f32],
    a: Mat,
    src: &[f32],
    ph: &Phases,
    g: &Geom,
    n: usize,
    accumulate: bool,
    bc: usize,
) {
    let (m, k, s) = (a.rows, g.rows(), g.grid());
    assert_eq!(a.cols, k, "conv blocks: inner dimensions differ");
    assert!(dst.len() >= m * s, "conv blocks: dst too short");
    assert!(bc > 0, "conv blocks: empty blocks");
    let d = dst.as_mut_ptr() as usize;
    (0..s.div_ceil(bc)).into_par_iter().for_each(|b| {
        let (j0, cols) = (b * bc, bc.min(s - b * bc));
        with_column_block(src, ph, g, n, (j0, cols), |block| {
            // SAFETY: block b writes only columns j0 .. j0 + cols of dst's m rows (row stride
            // s, inside dst: asserted above), disjoint between blocks; dst outlives this loop,
            // which joins before returning; `a` and `block` are checked views of live slices.
            unsafe { gemm::product_into(d as *mut f32, j0, s, m, cols, &a, block, accumulate) }
        })
    });
}

/// [`conv_core`] as im2col of the whole batch + gemm.
fn conv_whole(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: Weights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let (m, s) = (w.rows(), g.grid());
    let shape = || format!("{m}x{}x{} k{} s{} @{}x{}", g.c, nb, g.kh, g.stride, g.oh, g.ow);
    let flops = 2.0 * (m * nb * s * g.rows()) as f64;
    let col = timed(|| format!("conv   im2col   {}", shape()), 0.0, || im2col(x, nb, g, act));
    let col = Mat::rm(&col, g.rows(), nb * s);
    if batch_merge(nb, s) {
        // One gemm over all batches (weights read once), then back to NCHW.
        let mut tmp = Scratch::take(m * nb * s);
        timed(
            || format!("conv   gemm     {}", shape()),
            flops,
            || sgemm_w(&mut tmp, nb * s, w, col, false),
        );
        return timed(
            || format!("conv   permute  {}", shape()),
            0.0,
            || cnhw_to_nchw(&tmp, nb, m, s, bias),
        );
    }
    let mut out = biased(nb, m, s, bias);
    timed(
        || format!("conv   gemm     {}", shape()),
        flops,
        || {
            for n in 0..nb {
                let dst = &mut out[n * m * s..][..m * s];
                // Block n of the column matrix: the same rows, columns n·s .. (n+1)·s.
                let block = Mat { data: &col.data[n * s..], cols: s, ..col };
                sgemm_w(dst, s, w, block, bias.is_some());
            }
        },
    );
    out
}

/// A conv2d layer with weights `(m, c, k, k)`, stride `s`, padding `p` over `(c, h, w)` images,
/// prepared for one strategy (weights packed as that kernel reads them, once, as a frozen
/// layer does), for benchmarks and tests comparing the strategies.
#[doc(hidden)]
pub struct BenchConv {
    g: Geom,
    m: usize,
    weights: Vec<f32>,
    packed: Packed,
}

enum Packed {
    Direct(DirectWeights),
    Gemm,
}

impl BenchConv {
    /// `None` where `path` does not run this layer here (the direct kernels need AVX-512, or
    /// AVX2 for the image layers).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (c, h, w): (usize, usize, usize),
        wt: &[f32],
        m: usize,
        k: usize,
        s: usize,
        p: usize,
        path: ConvPath,
    ) -> Option<Self> {
        let g = Geom::conv(c, (h, w), (k, k), s, p, 1).expect("bench geometry");
        let wm = Mat::rm(wt, m, g.rows());
        let packed = match path {
            ConvPath::Pixels => {
                Packed::Direct(DirectWeights::Pixels(direct::PixelWeights::pack(wm)))
            }
            ConvPath::Channels => {
                Packed::Direct(DirectWeights::Channels(direct_channels::ChannelWeights::pack(wm)))
            }
            ConvPath::Gemm => Packed::Gemm,
        };
        let runs = match path {
            ConvPath::Pixels => direct::pixels_apply(&g, m),
            ConvPath::Channels => direct_channels::available(),
            ConvPath::Gemm => true,
        };
        runs.then(|| Self { g, m, weights: wt.to_vec(), packed })
    }

    /// The forward of `nb` images `x`.
    pub fn run(&self, x: &[f32], nb: usize) -> Vec<f32> {
        let g = &self.g;
        match &self.packed {
            Packed::Direct(w) => direct::conv_direct(x, nb, g, w, None, None),
            Packed::Gemm => {
                let wm = Mat::rm(&self.weights, self.m, g.rows());
                conv_whole(x, nb, g, Weights::F32(wm), None, None)
            }
        }
    }
}

/// The strategies [`BenchConv`] compares.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum ConvPath {
    /// The direct kernel vectorised along output pixels.
    Pixels,
    /// The direct kernel vectorised along output channels.
    Channels,
    /// im2col + gemm.
    Gemm,
}

impl Conv2dOp {
    /// The forward, `bias` (one per output channel) added in the output pass, of
    /// `leaky_relu(x, act)` when `act` is a slope; on `packed` (a frozen layer's weights as
    /// the direct kernel reads them) where that kernel runs the layer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_on(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<&[f32]>,
        act: Option<f32>,
        packed: Option<&DirectWeights>,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, cin, h, w)) = (contiguous_f32(s1, l1)?, dims4(l1)?);
        let (k, (cout, kcin, kh, kw)) = (contiguous_f32(s2, l2)?, dims4(l2)?);
        if kcin != cin {
            candle_core::bail!("conv2d: input has {cin} channels, kernel expects {kcin}")
        }
        if bias.is_some_and(|b| b.len() != cout) {
            candle_core::bail!(
                "conv2d: bias of {} for {cout} channels",
                bias.map_or(0, <[f32]>::len)
            )
        }
        let g = Geom::conv(cin, (h, w), (kh, kw), self.stride, self.padding, self.dilation)?;
        let y = match packed {
            Some(p) if p.runs(&g) && p.rows() == cout => {
                direct::conv_direct(x, nb, &g, p, bias, act)
            }
            _ => conv_core(x, nb, &g, Weights::F32(Mat::rm(k, cout, g.rows())), bias, act),
        };
        Ok((CpuStorage::F32(y), Shape::from((nb, cout, g.oh, g.ow))))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward_on(s1, l1, s2, l2, None, self.act, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let (_, _, oh, ow) = dy.dims4()?;
        // The input gradient is the transposed convolution of dy with the same weights; the
        // output padding recovers the rows and columns the forward's floor division dropped.
        let dx = if x.track_op() {
            let op = ConvTranspose2dOp {
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
                output_padding: (
                    h - ((oh - 1) * self.stride + self.dilation * (kh - 1) + 1 - 2 * self.padding),
                    wd - ((ow - 1) * self.stride + self.dilation * (kw - 1) + 1 - 2 * self.padding),
                ),
            };
            let dx = dy.apply_op2_no_bwd(w, &op)?;
            // Through the activation: x' = leaky(x) has gradient dy where x > 0, slope·dy
            // elsewhere.
            Some(match self.act {
                Some(slope) => super::activation::leaky_relu_grad(x, &dx, slope)?,
                None => dx,
            })
        } else {
            None
        };
        let dw = if w.track_op() {
            let op = WeightGradOp {
                kh,
                kw,
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
                img_act: self.act,
            };
            Some(dy.apply_op2_no_bwd(&x.contiguous()?, &op)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::PackedA;
    use super::*;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// bf16 convolutions packed straight from the image give, to the bit, what im2col + the
    /// bf16 product give (the same words packed, the same product): strided, padded, dilated,
    /// stride 1, grids that leave partial panels and groups, odd reductions, bias, batches.
    #[test]
    fn bf16_conv_from_the_image_equals_im2col_then_product() {
        if !super::super::isa::bf16_available() {
            test_report::skipped("bf16 conv from the image", "no AVX512_BF16 on this CPU");
            return;
        }
        // (nb, c, h, w, m, k, stride, pad, dil)
        for (nb, c, h, w, m, k, stride, pad, dil) in [
            (1, 3, 64, 64, 16, 4, 2, 1, 1),
            (2, 5, 67, 90, 7, 4, 2, 1, 1),
            (1, 8, 33, 70, 33, 3, 1, 1, 1),
            (2, 3, 40, 41, 9, 3, 1, 2, 2),
            (1, 1, 130, 128, 4, 4, 2, 0, 1),
            // One group of panels, packed by ranges of pair rows: many pairs, a ragged last
            // range, fewer pairs than ranges.
            (1, 64, 8, 8, 20, 4, 2, 1, 1),
            (1, 3, 10, 12, 5, 3, 1, 1, 1),
            (1, 1, 9, 9, 3, 2, 1, 0, 1),
        ] {
            let g = Geom::conv(c, (h, w), (k, k), stride, pad, dil).unwrap();
            let x: Vec<f32> = test_values(nb * c * h * w, 25.0);
            let wt: Vec<f32> =
                (0..m * g.rows()).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
            let a = PackedA::new(Mat::rm(&wt, m, g.rows()));
            assert!(!batch_merge(nb, g.grid()), "case must take the packed-from-image path");
            for b in [None, Some(&bias[..])] {
                let fused = conv_gemm(&x, nb, &g, Weights::Bf16(&a), b, None);
                let whole = conv_whole(&x, nb, &g, Weights::Bf16(&a), b, None);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fused),
                    bits(&whole),
                    "{nb}x{c}x{h}x{w} k{k} s{stride} p{pad} d{dil}"
                );
            }
        }
    }

    /// Products in column blocks (the column matrix made a block at a time) against the f64
    /// product of the whole column matrix: blocks that end mid grid row and a short last
    /// block, strided, padded, dilated and stride 1, onto a bias (accumulating) and not.
    #[test]
    fn column_blocks_equal_the_product_of_the_whole_column_matrix() {
        // (nb, c, h, w, m, k, stride, pad, dil, block columns)
        for (nb, c, h, w, m, k, stride, pad, dil, bc) in [
            (1, 3, 64, 64, 16, 4, 2, 1, 1, 48),
            (2, 5, 67, 90, 7, 4, 2, 1, 1, 16),
            (1, 8, 33, 70, 33, 3, 1, 1, 1, 112),
            (2, 3, 40, 41, 9, 3, 1, 2, 2, 1000),
        ] {
            let g = Geom::conv(c, (h, w), (k, k), stride, pad, dil).unwrap();
            let x: Vec<f32> = test_values(nb * c * h * w, 25.0);
            let wt: Vec<f32> =
                (0..m * g.rows()).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let (a, s) = (Mat::rm(&wt, m, g.rows()), g.grid());
            let col = im2col(&x, nb, &g, None);
            let ph = Phases::new(g.h, g.w, g.stride);
            let split = split_phases(&x, &g, &ph, None);
            let src: &[f32] = split.as_deref().unwrap_or(&x);
            for n in 0..nb {
                let image = Mat { data: &col[n * s..], ..Mat::rm(&col, g.rows(), nb * s) };
                let image = Mat { cols: s, ..image };
                let mut dst = vec![1f32; m * s];
                conv_blocks(&mut dst, a, src, &ph, &g, n, true, bc);
                let what = format!("blocks of {bc}, {c}x{h}x{w} k{k} s{stride} p{pad} d{dil}");
                super::super::mat::assert_product(&dst, s, a, image, &what);
                let mut fresh = vec![f32::NAN; m * s];
                conv_blocks(&mut fresh, a, src, &ph, &g, n, false, bc);
                let shifted: Vec<f32> = fresh.iter().map(|v| v + 1.0).collect();
                super::super::mat::assert_product(&shifted, s, a, image, &what);
            }
        }
    }

    /// The convolution of `leaky_relu(x)` with the activation applied as the input is read
    /// equals, to the bit, the convolution of the activated input: strided (applied in the
    /// phase split, batch-merged and per-image products), stride 1 and one output channel
    /// (applied in a pass first), f32 and bf16 weights.
    #[test]
    fn activation_on_read_equals_activated_input() {
        // (nb, c, h, w, m, k, stride, pad)
        for (nb, c, h, w, m, k, stride, pad) in [
            (1, 3, 64, 64, 16, 4, 2, 1),
            (2, 5, 18, 22, 7, 4, 2, 1),
            (3, 16, 4, 4, 32, 4, 2, 1),
            (1, 8, 33, 70, 33, 3, 1, 1),
            (2, 6, 32, 32, 1, 4, 2, 1),
        ] {
            let g = Geom::conv(c, (h, w), (k, k), stride, pad, 1).unwrap();
            let x: Vec<f32> = test_values(nb * c * h * w, 25.0);
            let wt: Vec<f32> =
                (0..m * g.rows()).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for slope in [0.2f32, 0.0] {
                let activated: Vec<f32> =
                    x.iter().map(|v| if *v > 0.0 { *v } else { *v * slope }).collect();
                let wm = Mat::rm(&wt, m, g.rows());
                let packed = super::super::isa::bf16_available().then(|| PackedA::new(wm));
                let mut weights = vec![Weights::F32(wm)];
                weights.extend(packed.as_ref().map(Weights::Bf16));
                for wts in weights {
                    let on_read = conv_core(&x, nb, &g, wts, Some(&bias), Some(slope));
                    let before = conv_core(&activated, nb, &g, wts, Some(&bias), None);
                    assert_eq!(
                        bits(&on_read),
                        bits(&before),
                        "{nb}x{c}x{h}x{w} m{m} k{k} s{stride} slope {slope} bf16 {}",
                        matches!(wts, Weights::Bf16(_))
                    );
                }
            }
        }
        if !super::super::isa::bf16_available() {
            test_report::skipped("activation on read, bf16 weights", "no AVX512_BF16 on this CPU");
        }
    }
}
