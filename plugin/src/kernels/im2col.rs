//! im2col / col2im between NCHW images and the column matrices the gemms work on.
//!
//! One geometry serves both directions: a convolution reads an *image* (`c × h × w`) and
//! produces a *grid* (`oh × ow`) of kernel positions. Conv2d goes image → grid (im2col, gemm);
//! the transposed convolution goes grid → image (gemm, col2im), so its image is its output.
//!
//! The column matrix has a row per `(c, i, j)` (channel, kernel row, kernel column) and a
//! column per `(n, oy, ox)`: batch-major blocks of `oh·ow`, so block `n` of row `r` starts at
//! `r · nb·oh·ow + n · oh·ow`.

use rayon::prelude::*;

use super::scratch::Scratch;

/// Rows of work below this many elements are not worth a rayon task of their own.
const MIN_TASK: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// The grid of a convolution over an image, as `nn.Conv2d` sizes it.
    pub fn conv(c: usize, (h, w): (usize, usize), (kh, kw): (usize, usize), stride: usize, pad: usize, dil: usize)
        -> candle_core::Result<Self> {
        let span = |n: usize, k: usize| -> candle_core::Result<usize> {
            let eff = dil * (k - 1) + 1;
            if n + 2 * pad < eff || stride == 0 || k == 0 {
                candle_core::bail!("conv: kernel {k} (dilation {dil}) larger than padded input {n}+2·{pad}")
            }
            Ok((n + 2 * pad - eff) / stride + 1)
        };
        Ok(Self { c, h, w, kh, kw, stride, pad, dil, oh: span(h, kh)?, ow: span(w, kw)? })
    }
    pub fn rows(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub fn grid(&self) -> usize {
        self.oh * self.ow
    }
    /// Image coordinate of grid position `o` under kernel tap `t` (may be out of the image).
    fn at(&self, o: usize, t: usize) -> isize {
        (o * self.stride + t * self.dil) as isize - self.pad as isize
    }
    /// The grid positions `o0..o1` along a side of `n` whose tap `t` lands inside the image,
    /// and the image coordinate of the first.
    fn valid(&self, t: usize, grid: usize, n: usize) -> (usize, usize, usize) {
        let off = (t * self.dil) as isize - self.pad as isize;
        // Smallest o with o·s + off >= 0, largest with o·s + off <= n - 1.
        let o0 = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(self.stride) };
        let last = n as isize - 1 - off;
        let o1 = if last < 0 { 0 } else { (last as usize / self.stride + 1).min(grid) };
        if o0 >= o1 {
            return (0, 0, 0);
        }
        (o0, o1, (o0 as isize * self.stride as isize + off) as usize)
    }
}

/// The column matrix (`rows × nb·grid`) of `nb` NCHW images, in a scratch buffer.
pub(crate) fn im2col(x: &[f32], nb: usize, g: &Geom) -> Scratch {
    let (s, hw, kk) = (g.grid(), g.h * g.w, g.kh * g.kw);
    assert_eq!(x.len(), nb * g.c * hw, "im2col: input size");
    let row_len = nb * s;
    let mut col = Scratch::take(g.rows() * row_len);
    if col.is_empty() {
        return col;
    }
    col.par_chunks_mut(row_len).with_min_len(MIN_TASK.div_ceil(row_len)).enumerate().for_each(|(r, row)| {
        let (c, i, j) = (r / kk, (r / g.kw) % g.kh, r % g.kw);
        let (x0, x1, ix0) = g.valid(j, g.ow, g.w);
        for n in 0..nb {
            let plane = &x[(n * g.c + c) * hw..][..hw];
            let out = &mut row[n * s..][..s];
            for (oy, dst) in out.chunks_exact_mut(g.ow).enumerate() {
                let iy = g.at(oy, i);
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0); // padding rows (the scratch buffer holds stale data)
                    continue;
                }
                let src = &plane[iy as usize * g.w..][..g.w];
                dst[..x0].fill(0.0);
                dst[x1..].fill(0.0);
                let dst = &mut dst[x0..x1];
                if g.stride == 1 {
                    dst.copy_from_slice(&src[ix0..ix0 + dst.len()]);
                } else {
                    for (d, v) in dst.iter_mut().zip(src[ix0..].chunks(g.stride)) {
                        *d = v[0];
                    }
                }
            }
        }
    });
    col
}

/// The `nb` NCHW images whose column matrix is `col` (`rows × nb·grid`), overlapping taps
/// summed; `bias` (one per channel) starts each plane.
pub(crate) fn col2im(col: &[f32], nb: usize, g: &Geom, bias: Option<&[f32]>) -> Vec<f32> {
    let (s, hw) = (g.grid(), g.h * g.w);
    let row_len = nb * s;
    assert_eq!(col.len(), g.rows() * row_len, "col2im: column matrix size");
    let mut img = vec![0f32; nb * g.c * hw];
    if img.is_empty() {
        return img;
    }
    // One task per output plane: planes are disjoint, so the scatter-adds need no atomics.
    img.par_chunks_mut(hw).with_min_len(MIN_TASK.div_ceil(hw)).enumerate().for_each(|(p, plane)| {
        let (n, c) = (p / g.c, p % g.c);
        if let Some(b) = bias {
            plane.fill(b[c]);
        }
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (c * g.kh + i) * g.kw + j;
                let src = &col[r * row_len + n * s..][..s];
                let (x0, x1, ix0) = g.valid(j, g.ow, g.w);
                for oy in 0..g.oh {
                    let iy = g.at(oy, i);
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    let src = &src[oy * g.ow..][..g.ow][x0..x1];
                    if g.stride == 1 {
                        for (d, v) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst[ix0..].chunks_mut(g.stride).zip(src) {
                            d[0] += *v;
                        }
                    }
                }
            }
        }
    });
    img
}

/// `(nb, c, s)` → `(c, nb, s)`: activations as one `c × nb·s` matrix for a single gemm.
pub(crate) fn nchw_to_cnhw(x: &[f32], nb: usize, c: usize, s: usize) -> Scratch {
    let mut out = Scratch::take(x.len());
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(nb * s).enumerate().for_each(|(ci, dst)| {
        for n in 0..nb {
            dst[n * s..][..s].copy_from_slice(&x[(n * c + ci) * s..][..s]);
        }
    });
    out
}

/// `(c, nb, s)` → `(nb, c, s)`, adding `bias[c]` on the way.
pub(crate) fn cnhw_to_nchw(x: &[f32], nb: usize, c: usize, s: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(s).with_min_len(MIN_TASK.div_ceil(s)).enumerate().for_each(|(p, dst)| {
        let (n, ci) = (p / c, p % c);
        let src = &x[(ci * nb + n) * s..][..s];
        match bias {
            Some(b) => dst.iter_mut().zip(src).for_each(|(d, v)| *d = v + b[ci]),
            None => dst.copy_from_slice(src),
        }
    });
    out
}
