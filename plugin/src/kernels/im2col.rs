//! im2col / col2im between NCHW images and the column matrices the gemms work on.
//!
//! One geometry serves both directions: a convolution reads an *image* (`c × h × w`) and
//! produces a *grid* (`oh × ow`) of kernel positions. Conv2d goes image → grid (im2col, gemm);
//! the transposed convolution goes grid → image (gemm, col2im), so its image is its output.
//!
//! The column matrix has a row per `(c, i, j)` (channel, kernel row, kernel column) and a
//! column per `(n, oy, ox)`: batch-major blocks of `oh·ow`, so block `n` of row `r` starts at
//! `r · nb·oh·ow + n · oh·ow`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::mat::Mat;
use super::output::{assume_written, par_written};
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
    pub fn conv(
        c: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> candle_core::Result<Self> {
        let span = |n: usize, k: usize| -> candle_core::Result<usize> {
            let eff = dil * (k - 1) + 1;
            if n + 2 * pad < eff || stride == 0 || k == 0 {
                candle_core::bail!(
                    "conv: kernel {k} (dilation {dil}) larger than padded input {n}+2·{pad}"
                )
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
}

/// A `h × w` plane split into its `s × s` phases (space-to-depth), so that the taps of a
/// stride-`s` convolution read and write contiguous runs: phase `(py, px)` holds the pixels
/// `(py + s·a, px + s·b)`, row-major, `ph[py] × pw[px]` of them from `off[py·s + px]`.
/// With `s = 1` it is the plane itself.
pub(crate) struct Phases {
    pub s: usize,
    w: usize,
    pub ph: Vec<usize>,
    pub pw: Vec<usize>,
    pub off: Vec<usize>,
}

impl Phases {
    pub fn new(h: usize, w: usize, s: usize) -> Self {
        let count = |n: usize, p: usize| if p < n { (n - p).div_ceil(s) } else { 0 };
        let (ph, pw): (Vec<usize>, Vec<usize>) =
            ((0..s).map(|p| count(h, p)).collect(), (0..s).map(|p| count(w, p)).collect());
        let mut off = Vec::with_capacity(s * s);
        let mut at = 0;
        for rows in &ph {
            for cols in &pw {
                off.push(at);
                at += rows * cols;
            }
        }
        Self { s, w, ph, pw, off }
    }
    /// Phase and offset within it of the image coordinate `o·s + t` (for any grid position o).
    pub fn tap(&self, t: isize) -> (usize, isize) {
        (t.rem_euclid(self.s as isize) as usize, t.div_euclid(self.s as isize))
    }
    /// Grid positions `o0..o1` (of `grid`) whose phase index `o + base` lies in `0..n`.
    pub fn span(base: isize, n: usize, grid: usize) -> (usize, usize) {
        let o0 = (-base).max(0) as usize;
        let o1 = (n as isize - base).clamp(0, grid as isize) as usize;
        (o0.min(o1), o1)
    }
    /// Calls `f(plane_at, phase_at, len)` for every row of every phase: `len` pixels of the
    /// plane from `plane_at`, `s` apart, against the contiguous run of the phases at `phase_at`.
    fn rows(&self, mut f: impl FnMut(usize, usize, usize)) {
        let s = self.s;
        for py in 0..s {
            for px in 0..s {
                let (pw, o) = (self.pw[px], self.off[py * s + px]);
                if pw == 0 {
                    continue; // px beyond the plane's width
                }
                for a in 0..self.ph[py] {
                    f((py + s * a) * self.w + px, o + a * pw, pw);
                }
            }
        }
    }
    /// The phases of `plane` into `out`, through `leaky_relu(·, slope)` when `act` is a slope.
    pub fn split(&self, plane: &[f32], out: &mut [f32], act: Option<f32>) {
        let s = self.s;
        match act {
            None => self.rows(|p, q, n| {
                out[q..q + n]
                    .iter_mut()
                    .zip(plane[p..].iter().step_by(s))
                    .for_each(|(d, v)| *d = *v)
            }),
            Some(slope) => self.rows(|p, q, n| {
                out[q..q + n]
                    .iter_mut()
                    .zip(plane[p..].iter().step_by(s))
                    .for_each(move |(d, v)| *d = super::activation::leaky(*v, slope))
            }),
        }
    }
    /// The phases back into `plane`, `bias` added: writes every pixel of the plane.
    fn merge(&self, phases: &[f32], plane: &mut [MaybeUninit<f32>], bias: f32) {
        self.rows(|p, q, n| {
            plane[p..].iter_mut().step_by(self.s).zip(&phases[q..q + n]).for_each(|(d, v)| {
                d.write(*v + bias);
            })
        });
    }
}

/// The column matrix (`rows × nb·grid`) of `nb` NCHW images, in a scratch buffer; `act`: of
/// `leaky_relu(x, act)` (strided geometries only, where the phase split applies it for free).
pub(crate) fn im2col(x: &[f32], nb: usize, g: &Geom, act: Option<f32>) -> Scratch {
    let (s, hw) = (g.grid(), g.h * g.w);
    assert_eq!(x.len(), nb * g.c * hw, "im2col: input size");
    let row_len = nb * s;
    let mut col = Scratch::take(g.rows() * row_len);
    if col.is_empty() {
        return col;
    }
    let ph = Phases::new(g.h, g.w, g.stride);
    let split = split_phases(x, g, &ph, act);
    let src: &[f32] = split.as_deref().unwrap_or(x);
    let taps = Taps::new(g, &ph);
    col.par_chunks_mut(row_len).with_min_len(MIN_TASK.div_ceil(row_len)).enumerate().for_each(
        |(r, row)| {
            for n in 0..nb {
                taps.fill(src, g, (n, r), 0, &mut row[n * s..][..s]);
            }
        },
    );
    col
}

/// Strided convolutions: every plane of `x` split into its phases once (a scratch buffer), so
/// that each column-matrix row copies contiguous runs; `None` at stride 1 (read `x` itself).
/// `act`: the split applies `leaky_relu(·, act)` as it copies (the down path's activation, at
/// no cost of its own); stride 1 has no split to apply it in.
pub(crate) fn split_phases(x: &[f32], g: &Geom, ph: &Phases, act: Option<f32>) -> Option<Scratch> {
    let hw = g.h * g.w;
    assert!(act.is_none() || g.stride > 1, "split_phases: an activation needs a strided split");
    (g.stride > 1 && hw > 0).then(|| {
        let mut buf = Scratch::take(x.len());
        buf.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .with_min_len(MIN_TASK.div_ceil(hw))
            .for_each(|(out, plane)| ph.split(plane, out, act));
        buf
    })
}

/// Where each kernel tap `(i, j)` reads the phases, worked out once per layer (the inner
/// layers' column-matrix rows are a few floats long: per row, this bookkeeping was most of
/// im2col's time).
pub(crate) struct Taps(Vec<Tap>);

#[derive(Clone, Copy)]
struct Tap {
    /// The tap's phase within a channel's phases, and its row length.
    at: usize,
    pw: usize,
    /// Phase coordinates of grid position (0, 0).
    by: isize,
    bx: isize,
    /// Grid rows and columns whose phase coordinates lie inside the phase (others: padding).
    y: (usize, usize),
    x: (usize, usize),
}

impl Taps {
    pub fn new(g: &Geom, ph: &Phases) -> Self {
        let pad = g.pad as isize;
        let taps = (0..g.kh * g.kw)
            .map(|t| {
                let (i, j) = (t / g.kw, t % g.kw);
                let ((py, by), (px, bx)) =
                    (ph.tap((i * g.dil) as isize - pad), ph.tap((j * g.dil) as isize - pad));
                Tap {
                    at: ph.off[py * ph.s + px],
                    pw: ph.pw[px],
                    by,
                    bx,
                    y: Phases::span(by, ph.ph[py], g.oh),
                    x: Phases::span(bx, ph.pw[px], g.ow),
                }
            })
            .collect();
        Self(taps)
    }

    /// Row `r` (channel, kernel row, kernel column) of image `n`'s column matrix, from grid
    /// position `j0` on, into `out` (any length up to the grid's end; it may start and end mid
    /// grid row), padding written as zeros. `src` is the input as [`split_phases`] leaves it.
    pub fn fill(&self, src: &[f32], g: &Geom, (n, r): (usize, usize), j0: usize, out: &mut [f32]) {
        let kk = g.kh * g.kw;
        let t = self.0[r % kk];
        let phase = &src[(n * g.c + r / kk) * g.h * g.w + t.at..];
        let (mut oy, mut ox) = (j0 / g.ow, j0 % g.ow);
        let mut done = 0;
        while done < out.len() {
            // This grid row's part of out: grid columns ox .. ox + len.
            let len = (g.ow - ox).min(out.len() - done);
            let dst = &mut out[done..][..len];
            done += len;
            // The scratch buffers hold stale data: write the padding too.
            let (lo, hi) = (t.x.0.clamp(ox, ox + len), t.x.1.clamp(ox, ox + len));
            if oy < t.y.0 || oy >= t.y.1 || lo >= hi {
                dst.fill(0.0);
            } else {
                let a = (oy as isize + t.by) as usize;
                let b0 = (lo as isize + t.bx) as usize;
                dst[..lo - ox].fill(0.0);
                dst[hi - ox..].fill(0.0);
                dst[lo - ox..hi - ox].copy_from_slice(&phase[a * t.pw + b0..][..hi - lo]);
            }
            (oy, ox) = (oy + 1, 0);
        }
    }
}

/// Floats of one block of a column matrix ([`with_column_block`]): 512 KB, which stays in L2
/// between being written and being read by the product.
const BLOCK_FLOATS: usize = 128 * 1024;

/// Grid columns per block of a column matrix of `rows` rows (a multiple of 16, gemm's widest
/// tile).
pub(crate) fn block_cols(rows: usize) -> usize {
    (BLOCK_FLOATS / rows.max(1)).max(16) / 16 * 16
}

/// Whether a layer's products suit column blocks (`rows × grid` per image): the outer layers,
/// whose column matrices are large and weights small (every block's product re-reads them),
/// with at least two blocks per thread. Measured on the U-Net's second layer at ngf 32
/// (64 × 512 × 4096): im2col + one product 24–26 ms for 8 calls, in blocks 14–20.
pub(crate) fn blocks_apply(rows: usize, grid: usize) -> bool {
    let threads = rayon::current_num_threads().max(1);
    grid >= 2 * threads * block_cols(rows) && rows <= 1024
}

thread_local! {
    /// One block's column matrix, per thread (at most [`BLOCK_FLOATS`] floats past the first
    /// use, kept between calls: no page faults per block).
    static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Whether this thread is inside [`with_column_block`]'s `f`.
    static IN_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread holds its column block ([`with_column_block`]): products made
/// there must stay on the thread, since a rayon worker waiting on a split may steal another
/// block task, which would find the block borrowed (a panic, and only when the steal happens).
/// The products assert it, so that the mistake fails every time instead.
pub(crate) fn in_column_block() -> bool {
    IN_BLOCK.get()
}

/// Columns `j0 .. j0 + cols` of image `n`'s column matrix (`rows × cols`, row-major), made in
/// this thread's block buffer and handed to `f`: small enough to stay in L2 between being made
/// and being multiplied. `src` as [`split_phases`] leaves the input.
pub(crate) fn with_column_block<R>(
    src: &[f32],
    ph: &Phases,
    g: &Geom,
    n: usize,
    (j0, cols): (usize, usize),
    f: impl FnOnce(Mat) -> R,
) -> R {
    let k = g.rows();
    BLOCK.with_borrow_mut(|col| {
        if col.len() < k * cols {
            col.resize(k * cols, 0.0);
        }
        let taps = Taps::new(g, ph);
        for (r, row) in col.chunks_exact_mut(cols.max(1)).take(k).enumerate() {
            taps.fill(src, g, (n, r), j0, &mut row[..cols]);
        }
        // Reset on the way out, panics included.
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                IN_BLOCK.set(false);
            }
        }
        IN_BLOCK.set(true);
        let _leave = Leave;
        f(Mat::rm(&col[..k * cols], k, cols))
    })
}

/// The `nb` NCHW images whose column matrix is `col` (`rows × nb·grid`), overlapping taps
/// summed in `(i, j)` tap order, onto 0 with `bias` (one per channel) added last when strided
/// (as the phases merge), onto the bias at stride 1.
pub(crate) fn col2im(col: &[f32], nb: usize, g: &Geom, bias: Option<&[f32]>) -> Vec<f32> {
    let len = nb * g.c * g.h * g.w;
    let mut out = Vec::with_capacity(len);
    col2im_into(col, nb, g, bias, &mut out.spare_capacity_mut()[..len]);
    // SAFETY: col2im_into wrote all len floats.
    unsafe { out.set_len(len) };
    out
}

/// [`col2im`] into `out` (`nb·c·h·w` floats), every float of which it writes.
pub(crate) fn col2im_into(
    col: &[f32],
    nb: usize,
    g: &Geom,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let (s, hw) = (g.grid(), g.h * g.w);
    let row_len = nb * s;
    assert_eq!(col.len(), g.rows() * row_len, "col2im: column matrix size");
    assert_eq!(out.len(), nb * g.c * hw, "col2im: output size");
    if super::col2im_stride2::suits(g) {
        return super::col2im_stride2::col2im(col, nb, g, bias, out);
    }
    let ph = Phases::new(g.h, g.w, g.stride);
    // One task per output plane: planes are disjoint, so the scatter-adds need no atomics.
    let plane_task = |p: usize, plane: &mut [MaybeUninit<f32>]| {
        let (n, c) = (p / g.c, p % g.c);
        let b = bias.map_or(0.0, |b| b[c]);
        // Strided: sum into the phases (contiguous adds), interleave once at the end.
        let mut phases = if g.stride > 1 { vec![0f32; hw] } else { Vec::new() };
        let acc: &mut [f32] = if g.stride > 1 {
            &mut phases
        } else {
            plane.iter_mut().for_each(|d| {
                d.write(b);
            });
            // SAFETY: written whole just above.
            unsafe { assume_written(plane) }
        };
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (c * g.kh + i) * g.kw + j;
                let src = &col[r * row_len + n * s..][..s];
                let pad = g.pad as isize;
                let ((py, by), (px, bx)) =
                    (ph.tap((i * g.dil) as isize - pad), ph.tap((j * g.dil) as isize - pad));
                let (y0, y1) = Phases::span(by, ph.ph[py], g.oh);
                let (x0, x1) = Phases::span(bx, ph.pw[px], g.ow);
                if x0 == x1 {
                    continue;
                }
                let (pw, o) = (ph.pw[px], ph.off[py * ph.s + px]);
                let b0 = (x0 as isize + bx) as usize;
                for oy in y0..y1 {
                    let a = (oy as isize + by) as usize;
                    let dst = &mut acc[o + a * pw + b0..][..x1 - x0];
                    for (d, v) in dst.iter_mut().zip(&src[oy * g.ow + x0..oy * g.ow + x1]) {
                        *d += *v;
                    }
                }
            }
        }
        if g.stride > 1 {
            ph.merge(&phases, plane, b);
        }
    };
    // Piece p is output plane p, written whole: filled with the bias first at stride 1, else
    // by the merge of its phases, which cover every pixel.
    out.par_chunks_mut(hw.max(1))
        .with_min_len(MIN_TASK.div_ceil(hw.max(1)))
        .enumerate()
        .for_each(|(p, plane)| plane_task(p, plane));
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
pub(crate) fn cnhw_to_nchw(
    x: &[f32],
    nb: usize,
    c: usize,
    s: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let b = |ci: usize| bias.map_or(0.0, |b| b[ci]);
    // SAFETY: piece p is output plane p (s floats), written whole from its source plane.
    unsafe {
        par_written(x.len(), s, MIN_TASK.div_ceil(s.max(1)), |p, dst| {
            let (n, ci) = (p / c, p % c);
            let (src, b) = (&x[(ci * nb + n) * s..][..s], b(ci));
            dst.iter_mut().zip(src).for_each(|(d, v)| {
                d.write(v + b);
            });
        })
    }
}

/// Test oracle of the direct convolutions: asserts that `got` (`nb × m × oh × ow`) holds the
/// convolution of `leaky_relu(x, act)` (or of `x`) with the `m × g.rows()` weights `w`, `bias`
/// added, summed in f64, to f32 rounding.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn assert_conv(
    got: &[f32],
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: &[f32],
    m: usize,
    bias: &[f32],
    act: Option<f32>,
    what: &str,
) {
    let inp = |v: f32| match act {
        Some(s) if v < 0.0 => (v * s) as f64,
        _ => v as f64,
    };
    let (c, h, wd, kh, kw) = (g.c, g.h, g.w, g.kh, g.kw);
    for n in 0..nb {
        for co in 0..m {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut want = bias[co] as f64;
                    for t in 0..g.rows() {
                        let (ci, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                            continue;
                        }
                        let xv = x[((n * c + ci) * h + iy as usize) * wd + ix as usize];
                        want += inp(xv) * w[co * g.rows() + t] as f64;
                    }
                    let got = got[((n * m + co) * g.oh + oy) * g.ow + ox] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{what}: {g:?} m {m} at ({n}, {co}, {oy}, {ox}): {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;

    /// col2im against its definition, a scatter of every tap onto the image: the same bits as
    /// the scatter summed in the order its doc gives, and within rounding of the f64 sum; strided,
    /// padded, dilated, stride 1, odd sizes, batches, with and without bias.
    #[test]
    fn col2im_equals_the_scatter_of_its_taps() {
        // (nb, c, h, w, k, stride, pad, dil)
        for (nb, c, h, w, k, stride, pad, dil) in [
            (1, 3, 8, 8, 4, 2, 1, 1),
            (2, 2, 9, 13, 4, 2, 1, 1),
            (1, 2, 7, 6, 3, 1, 1, 1),
            (2, 1, 11, 10, 3, 2, 2, 2),
            (1, 2, 12, 14, 5, 3, 2, 1),
            (1, 1, 2, 2, 4, 2, 1, 1),
            // Rows of whole and partial 16-float vectors (grid widths 16, 21, 40; 1-row grids).
            (2, 3, 32, 32, 4, 2, 1, 1),
            (1, 2, 42, 84, 4, 2, 1, 1),
            (2, 1, 2, 42, 4, 2, 1, 1),
        ] {
            let g = Geom::conv(c, (h, w), (k, k), stride, pad, dil).unwrap();
            let (s, hw) = (g.grid(), h * w);
            let col: Vec<f32> = test_values(g.rows() * nb * s, 7.0);
            let bias: Vec<f32> = (0..c).map(|i| 0.3 - i as f32 * 0.7).collect();
            for b in [None, Some(&bias[..])] {
                let got = col2im(&col, nb, &g, b);
                let start = |ch: usize| if stride > 1 { 0.0 } else { b.map_or(0.0, |b| b[ch]) };
                let mut want = vec![0f32; nb * c * hw];
                let mut exact = vec![0f64; nb * c * hw];
                for n in 0..nb {
                    for ch in 0..c {
                        let plane = (n * c + ch) * hw;
                        want[plane..plane + hw].fill(start(ch));
                        for i in 0..k {
                            for j in 0..k {
                                let r = (ch * k + i) * k + j;
                                for oy in 0..g.oh {
                                    for ox in 0..g.ow {
                                        let y = (oy * stride + i * dil) as isize - pad as isize;
                                        let x = (ox * stride + j * dil) as isize - pad as isize;
                                        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                            continue;
                                        }
                                        let at = plane + y as usize * w + x as usize;
                                        let v = col[r * nb * s + n * s + oy * g.ow + ox];
                                        want[at] += v;
                                        exact[at] += v as f64;
                                    }
                                }
                            }
                        }
                        let bc = b.map_or(0.0, |b| b[ch]);
                        for at in plane..plane + hw {
                            if stride > 1 {
                                want[at] += bc;
                            }
                            exact[at] += bc as f64;
                        }
                    }
                }
                let what =
                    format!("{nb}x{c}x{h}x{w} k{k} s{stride} p{pad} d{dil} bias {}", b.is_some());
                for (at, (got, exact)) in got.iter().zip(&exact).enumerate() {
                    assert!(
                        (*got as f64 - exact).abs() <= 1e-5 * exact.abs().max(1.0),
                        "{what} at {at}"
                    );
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{what}: summation order");
            }
        }
        let stride2 = "col2im of 4×4 stride-2 kernels row by row (AVX-512)";
        match crate::kernels::isa::active() == crate::kernels::isa::Isa::Avx512 {
            true => crate::kernels::test_report::passed(stride2),
            false => crate::kernels::test_report::skipped(stride2, "no AVX-512 on this CPU"),
        }
    }
}
