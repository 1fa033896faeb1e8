//! Convolutions with one output channel (the PatchGAN's last layer: 8·ndf channels → 1 logit
//! per patch) without a column matrix.
//!
//! Through im2col such a layer is a matrix–vector product over a `c·kh·kw × oh·ow` column
//! matrix (29 MB for ndf 64 at 256²) written and read once per pass, and its input gradient an
//! outer product of the same size folded back by col2im. Here every pass walks the taps
//! `(c, i, j)` against shifted rows of the input plane instead: a multiply–add per tap and output
//! pixel, reading the input once per kernel row. Forward, input gradient and weight gradient.
//!
//! Conventions as `im2col`: `g` is the convolution's geometry, image `x` `(nb, c, h, w)`, grid
//! (the one-channel output) `(nb, 1, oh, ow)`, weights one row of `c·kh·kw` taps.

use rayon::prelude::*;

use super::im2col::Geom;

/// Output columns `ox` whose input column `ox·s + j·d − p` lies in `0..w`, for kernel column `j`.
fn columns(g: &Geom, j: usize) -> (usize, usize) {
    let shift = (j * g.dil) as isize - g.pad as isize;
    let s = g.stride as isize;
    // ox·s + shift ≥ 0  and  ox·s + shift ≤ w − 1.
    let lo = if shift >= 0 { 0 } else { ((-shift) + s - 1) / s };
    let hi = (g.w as isize - 1 - shift).div_euclid(s) + 1;
    let (lo, hi) = (lo.max(0) as usize, hi.clamp(0, g.ow as isize) as usize);
    (lo.min(hi), hi)
}

/// The input row of output row `oy` and kernel row `i`, if inside the image.
fn row(g: &Geom, oy: usize, i: usize) -> Option<usize> {
    let iy = (oy * g.stride + i * g.dil) as isize - g.pad as isize;
    (0..g.h as isize).contains(&iy).then_some(iy as usize)
}

/// `(nb, 1, oh, ow)` = the convolution of `x` with the taps `w`, plus `bias`.
pub(crate) fn forward(x: &[f32], nb: usize, g: &Geom, w: &[f32], bias: f32) -> Vec<f32> {
    let (hw, s) = (g.h * g.w, g.grid());
    assert_eq!(w.len(), g.rows(), "one-channel conv: taps");
    assert_eq!(x.len(), nb * g.c * hw, "one-channel conv: input size");
    let mut y = vec![bias; nb * s];
    y.par_chunks_mut(g.ow.max(1)).enumerate().for_each(|(r, out)| {
        let (n, oy) = (r / g.oh, r % g.oh);
        for c in 0..g.c {
            let plane = &x[(n * g.c + c) * hw..][..hw];
            for i in 0..g.kh {
                let Some(iy) = row(g, oy, i) else { continue };
                let src = &plane[iy * g.w..][..g.w];
                for j in 0..g.kw {
                    let wt = w[(c * g.kh + i) * g.kw + j];
                    let (lo, hi) = columns(g, j);
                    if lo == hi {
                        continue;
                    }
                    let start = (lo * g.stride + j * g.dil) as isize - g.pad as isize;
                    let start = start as usize;
                    if g.stride == 1 {
                        let src = &src[start..start + (hi - lo)];
                        out[lo..hi].iter_mut().zip(src).for_each(|(o, v)| *o += wt * v);
                    } else {
                        for (k, o) in out[lo..hi].iter_mut().enumerate() {
                            *o += wt * src[start + k * g.stride];
                        }
                    }
                }
            }
        }
    });
    y
}

/// `(nb, c, h, w)`: the gradient of [`forward`]'s input for output gradient `dy`.
pub(crate) fn input_grad(dy: &[f32], nb: usize, g: &Geom, w: &[f32]) -> Vec<f32> {
    let (hw, s) = (g.h * g.w, g.grid());
    assert_eq!(w.len(), g.rows(), "one-channel conv: taps");
    assert_eq!(dy.len(), nb * s, "one-channel conv: gradient size");
    let mut dx = vec![0f32; nb * g.c * hw];
    dx.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, plane)| {
        let (n, c) = (p / g.c, p % g.c);
        let grid = &dy[n * s..][..s];
        for oy in 0..g.oh {
            let src = &grid[oy * g.ow..][..g.ow];
            for i in 0..g.kh {
                let Some(iy) = row(g, oy, i) else { continue };
                let dst = &mut plane[iy * g.w..][..g.w];
                for j in 0..g.kw {
                    let wt = w[(c * g.kh + i) * g.kw + j];
                    let (lo, hi) = columns(g, j);
                    if lo == hi {
                        continue;
                    }
                    let start = ((lo * g.stride + j * g.dil) as isize - g.pad as isize) as usize;
                    if g.stride == 1 {
                        let dst = &mut dst[start..start + (hi - lo)];
                        dst.iter_mut().zip(&src[lo..hi]).for_each(|(d, v)| *d += wt * v);
                    } else {
                        for (k, v) in src[lo..hi].iter().enumerate() {
                            dst[start + k * g.stride] += wt * v;
                        }
                    }
                }
            }
        }
    });
    dx
}

/// The `c·kh·kw` taps' gradient: `Σ_n Σ_(oy, ox) dy · x` at each tap's shift.
pub(crate) fn weight_grad(dy: &[f32], nb: usize, x: &[f32], g: &Geom) -> Vec<f32> {
    let (hw, s) = (g.h * g.w, g.grid());
    assert_eq!(dy.len(), nb * s, "one-channel conv: gradient size");
    assert_eq!(x.len(), nb * g.c * hw, "one-channel conv: input size");
    let mut dw = vec![0f32; g.rows()];
    let taps = g.kh * g.kw;
    dw.par_chunks_mut(taps.max(1)).enumerate().for_each(|(c, dwc)| {
        for n in 0..nb {
            let plane = &x[(n * g.c + c) * hw..][..hw];
            let grid = &dy[n * s..][..s];
            for oy in 0..g.oh {
                let d = &grid[oy * g.ow..][..g.ow];
                for i in 0..g.kh {
                    let Some(iy) = row(g, oy, i) else { continue };
                    let src = &plane[iy * g.w..][..g.w];
                    for j in 0..g.kw {
                        let (lo, hi) = columns(g, j);
                        if lo == hi {
                            continue;
                        }
                        let start =
                            ((lo * g.stride + j * g.dil) as isize - g.pad as isize) as usize;
                        let sum: f32 = if g.stride == 1 {
                            d[lo..hi].iter().zip(&src[start..]).map(|(a, b)| a * b).sum()
                        } else {
                            d[lo..hi]
                                .iter()
                                .enumerate()
                                .map(|(k, a)| a * src[start + k * g.stride])
                                .sum()
                        };
                        dwc[i * g.kw + j] += sum;
                    }
                }
            }
        }
    });
    dw
}
