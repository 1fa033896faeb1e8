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

use std::mem::MaybeUninit;

use super::im2col::Geom;
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::isa::on_best_isa;
use super::output::par_written;

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

/// `y += a · x` over equal-length runs.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// `Σ a·b` in 16 interleaved partial sums (so that it vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The first input column of output column `lo` for kernel column `j`.
fn first(g: &Geom, lo: usize, j: usize) -> usize {
    ((lo * g.stride + j * g.dil) as isize - g.pad as isize) as usize
}

/// Strided: one output row `oy` of image `n` (`out`, `ow` floats) += every tap's input row.
#[inline(always)]
fn forward_row_body(out: &mut [f32], x: &[f32], n: usize, oy: usize, g: &Geom, w: &[f32]) {
    let hw = g.h * g.w;
    for c in 0..g.c {
        let plane = &x[(n * g.c + c) * hw..][..hw];
        for i in 0..g.kh {
            let Some(iy) = row(g, oy, i) else { continue };
            let src = &plane[iy * g.w..][..g.w];
            for j in 0..g.kw {
                let (lo, hi) = columns(g, j);
                if lo == hi {
                    continue;
                }
                let (wt, start) = (w[(c * g.kh + i) * g.kw + j], first(g, lo, j));
                for (k, o) in out[lo..hi].iter_mut().enumerate() {
                    *o += wt * src[start + k * g.stride];
                }
            }
        }
    }
}

on_best_isa!(fn forward_row => forward_row_body(out: &mut [f32], x: &[f32], n: usize, oy: usize, g: &Geom, w: &[f32]));

/// Stride 1: every plane zero-padded to rows of `pw = w + 2·pad` and the grid laid out on rows
/// of the same width, so that a tap `(i, j)` is one contiguous shift by `(i·pw + j)·dil` and
/// each pass over a tap is a single multiply–add run of `oh·pw` floats (the rows' last columns
/// are scratch). Short per-row runs left these layers at 4–9 GFLOP/s.
struct Padded {
    /// Padded plane width and height.
    pw: usize,
    ph: usize,
    /// Floats of the grid on `pw`-wide rows.
    run: usize,
}

impl Padded {
    fn of(g: &Geom) -> Option<Self> {
        if g.stride != 1 {
            return None;
        }
        let (pw, ph) = (g.w + 2 * g.pad, g.h + 2 * g.pad);
        // The last tap's shift plus the run stays inside the padded plane.
        // The last tap's run ends at ((kh−1)·pw + kw−1)·dil + oh·pw ≤ ph·pw + pw: inside the
        // padded plane plus its spare row, for every stride-1 geometry.
        Some(Self { pw, ph, run: g.oh * pw })
    }

    /// `plane` (`h × w`) into a zeroed padded buffer with one spare row (the last run's reach).
    fn pad(&self, g: &Geom, plane: &[f32], out: &mut [f32]) {
        for (y, src) in plane.chunks_exact(g.w).enumerate() {
            out[(y + g.pad) * self.pw + g.pad..][..g.w].copy_from_slice(src);
        }
    }

    fn plane_len(&self) -> usize {
        (self.ph + 1) * self.pw
    }
}

/// Channels one forward task sums (a fixed split, so that the sums do not depend on the threads).
const CHANNELS_PER_TASK: usize = 16;

/// Channel `c`'s taps over one padded plane into the `pw`-wide grid `acc`.
#[inline(always)]
fn forward_padded_body(acc: &mut [f32], xp: &[f32], wc: &[f32], g: &Geom, pw: usize) {
    let run = acc.len();
    for i in 0..g.kh {
        for j in 0..g.kw {
            let at = (i * pw + j) * g.dil;
            axpy(acc, wc[i * g.kw + j], &xp[at..at + run]);
        }
    }
}

on_best_isa!(fn forward_padded => forward_padded_body(acc: &mut [f32], xp: &[f32], wc: &[f32], g: &Geom, pw: usize));

/// [`forward`] at stride 1 through [`Padded`].
fn forward_stride1(x: &[f32], nb: usize, g: &Geom, w: &[f32], bias: f32, p: &Padded) -> Vec<f32> {
    let (hw, s, taps) = (g.h * g.w, g.grid(), g.kh * g.kw);
    let mut y = vec![bias; nb * s];
    for n in 0..nb {
        // Channels in fixed groups, each summed into its own padded grid, the grids then added
        // in group order: the same sums whatever the threads (training resumes bit for bit).
        let groups: Vec<Vec<f32>> = (0..g.c.div_ceil(CHANNELS_PER_TASK))
            .into_par_iter()
            .map(|t| {
                let (mut acc, mut xp) = (vec![0f32; p.run], vec![0f32; p.plane_len()]);
                for c in t * CHANNELS_PER_TASK..((t + 1) * CHANNELS_PER_TASK).min(g.c) {
                    p.pad(g, &x[(n * g.c + c) * hw..][..hw], &mut xp);
                    forward_padded(&mut acc, &xp, &w[c * taps..][..taps], g, p.pw);
                }
                acc
            })
            .collect();
        let mut acc = vec![0f32; p.run];
        for part in &groups {
            acc.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        let out = &mut y[n * s..][..s];
        for (dst, src) in out.chunks_exact_mut(g.ow).zip(acc.chunks_exact(p.pw)) {
            dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
        }
    }
    y
}

/// The grids of `dy` laid out on `pw`-wide rows, zero past `ow` (those columns must add
/// nothing).
fn grids_on_padded_rows(dy: &[f32], nb: usize, g: &Geom, p: &Padded) -> Vec<f32> {
    let mut out = vec![0f32; nb * p.run];
    for (dst, src) in out.chunks_exact_mut(p.pw).zip(dy.chunks_exact(g.ow)) {
        dst[..g.ow].copy_from_slice(src);
    }
    out
}

/// Lanes of one input-gradient run: 16 sums held in registers while every tap adds to them.
const RUN: usize = 16;

/// The grid gradient of one image placed inside zeros, so that every tap of every input pixel
/// reads inside it: at stride 1, `dx[y][x] = Σ w[i][j]·dy[y + pad − i·dil][x + pad − j·dil]`,
/// and `dy[oy][ox]` sits at row `oy + top`, column `ox + left` of a `qw`-wide plane whose rows
/// run [`RUN`] floats past the last input column.
struct Spread {
    top: usize,
    left: usize,
    qw: usize,
    rows: usize,
}

impl Spread {
    fn of(g: &Geom) -> Self {
        let (top, left) = ((g.kh - 1) * g.dil, (g.kw - 1) * g.dil);
        let qw = g.w.next_multiple_of(RUN) + g.pad + left;
        Self { top, left, qw, rows: g.h + g.pad + top }
    }

    fn place(&self, g: &Geom, grid: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.qw];
        for (oy, src) in grid.chunks_exact(g.ow).enumerate().take(self.rows - self.top) {
            let n = g.ow.min(self.qw - self.left);
            out[(oy + self.top) * self.qw + self.left..][..n].copy_from_slice(&src[..n]);
        }
        out
    }
}

/// Runs summed side by side: one run's sums are a chain of dependent adds (4 cycles each on
/// AVX-512, one run alone took 4× the arithmetic's time); [`GROUP`] independent ones fill the
/// adders.
const GROUP: usize = 8;

/// One input-gradient plane from the spread grid gradient and channel `c`'s taps: runs of
/// [`RUN`] pixels (`w.div_ceil(RUN)` per row) summed over the taps in registers, [`GROUP`] at a
/// time, each written once. Every pixel adds the taps in the same order as an `axpy` per tap
/// would (so the same sums).
#[inline(always)]
fn input_grad_plane_s1_body(
    plane: &mut [MaybeUninit<f32>],
    dyz: &[f32],
    wc: &[f32],
    g: &Geom,
    q: &Spread,
) {
    let runs = g.h * g.w.div_ceil(RUN);
    let mut r = 0;
    while r < runs {
        if r + GROUP <= runs {
            input_grad_runs::<GROUP>(plane, dyz, wc, g, q, r);
            r += GROUP;
        } else {
            input_grad_runs::<1>(plane, dyz, wc, g, q, r);
            r += 1;
        }
    }
}

/// Runs `r0 .. r0 + G` of [`input_grad_plane_s1_body`].
#[inline(always)]
fn input_grad_runs<const G: usize>(
    plane: &mut [MaybeUninit<f32>],
    dyz: &[f32],
    wc: &[f32],
    g: &Geom,
    q: &Spread,
    r0: usize,
) {
    let per_row = g.w.div_ceil(RUN);
    let pixel = |r: usize| (r / per_row, r % per_row * RUN);
    // Where tap (0, 0) of each run reads; tap (i, j) reads i·dil rows and j·dil columns before.
    let at: [usize; G] = std::array::from_fn(|k| {
        let (y, x0) = pixel(r0 + k);
        (y + g.pad + q.top) * q.qw + x0 + g.pad + q.left
    });
    let mut acc = [[0f32; RUN]; G];
    for i in 0..g.kh {
        for j in 0..g.kw {
            let (wt, back) = (wc[i * g.kw + j], (i * q.qw + j) * g.dil);
            for (acc, at) in acc.iter_mut().zip(at) {
                let src = &dyz[at - back..][..RUN];
                for l in 0..RUN {
                    acc[l] += wt * src[l];
                }
            }
        }
    }
    for (k, acc) in acc.iter().enumerate() {
        let (y, x0) = pixel(r0 + k);
        for (d, v) in plane[y * g.w + x0..(y + 1) * g.w].iter_mut().zip(acc) {
            d.write(*v);
        }
    }
}

on_best_isa!(fn input_grad_plane_s1 => input_grad_plane_s1_body(plane: &mut [MaybeUninit<f32>], dyz: &[f32], wc: &[f32], g: &Geom, q: &Spread));

/// [`input_grad_plane_s1_body`] on AVX-512 intrinsics, the same sums (a product, then an add,
/// per tap, in the same order): compiled from the portable loops, its [`GROUP`] runs of 16
/// came out as xmm/ymm pieces and scalars, and the layer ran at 15–22 GFLOP/s.
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_grad_plane_s1_avx512(
    plane: &mut [MaybeUninit<f32>],
    dyz: &[f32],
    wc: &[f32],
    g: &Geom,
    q: &Spread,
) {
    use std::arch::x86_64::*;
    let per_row = g.w.div_ceil(RUN);
    let runs = g.h * per_row;
    assert_eq!(plane.len(), g.h * g.w, "one-channel input gradient: plane size");
    assert_eq!(wc.len(), g.kh * g.kw, "one-channel input gradient: taps");
    // Where tap (0, 0) of run r reads; tap (i, j) reads (i·qw + j)·dil floats before.
    let at = |r: usize| (r / per_row + g.pad + q.top) * q.qw + r % per_row * RUN + g.pad + q.left;
    let reach = ((g.kh - 1) * q.qw + g.kw - 1) * g.dil;
    // The first run reads furthest back, the last furthest on.
    assert!(runs == 0 || (at(0) >= reach && at(runs - 1) + RUN <= dyz.len()), "spread too short");
    let d = plane.as_mut_ptr() as *mut f32;
    let mut r = 0;
    while r < runs {
        let n = GROUP.min(runs - r);
        let base: [usize; GROUP] = std::array::from_fn(|k| at(r + k.min(n - 1)));
        let mut acc = [_mm512_setzero_ps(); GROUP];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (wt, back) = (_mm512_set1_ps(wc[i * g.kw + j]), (i * q.qw + j) * g.dil);
                for (a, &b) in acc.iter_mut().zip(&base) {
                    // SAFETY: reach >= back and every run's reads lie between the first run's
                    // start less reach and the last run's end (asserted); runs past n repeat
                    // the group's last run.
                    let x = unsafe { _mm512_loadu_ps(dyz.as_ptr().add(b - back)) };
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(wt, x));
                }
            }
        }
        for (k, a) in acc.iter().enumerate().take(n) {
            let (y, x0) = ((r + k) / per_row, (r + k) % per_row * RUN);
            let m: __mmask16 = if g.w - x0 >= RUN { !0 } else { (1 << (g.w - x0)) - 1 };
            // SAFETY: pixels x0 .. min(x0 + 16, w) of row y < h of the plane (h·w floats,
            // asserted).
            unsafe { _mm512_mask_storeu_ps(d.add(y * g.w + x0), m, *a) };
        }
        r += n;
    }
}

/// [`input_grad`] at stride 1.
fn input_grad_stride1(dy: &[f32], nb: usize, g: &Geom, w: &[f32]) -> Vec<f32> {
    let (hw, s, taps) = (g.h * g.w, g.grid(), g.kh * g.kw);
    let q = Spread::of(g);
    let spread: Vec<Vec<f32>> = (0..nb).map(|n| q.place(g, &dy[n * s..][..s])).collect();
    // SAFETY: each piece is one (image, channel) plane, h rows of w pixels, and every row is
    // written whole (runs from 0 in steps of RUN up to w, on either path). Eight planes at
    // least to a task: a 31 × 31 plane is ~1000 cycles of work, and one per task spent a
    // fifth of the layer in rayon (256 planes: 0.17 → 0.13 ms).
    unsafe {
        par_written(nb * g.c * hw, hw.max(1), 8, |p, plane| {
            let (n, c) = (p / g.c, p % g.c);
            let (dyz, wc) = (&spread[n], &w[c * taps..][..taps]);
            #[cfg(target_arch = "x86_64")]
            if super::isa::active() == super::isa::Isa::Avx512 {
                // SAFETY (this call, inside the block above): isa::active never names a level
                // the CPU lacks.
                return input_grad_plane_s1_avx512(plane, dyz, wc, g, &q);
            }
            input_grad_plane_s1(plane, dyz, wc, g, &q)
        })
    }
}

/// Channel `c`'s taps of the weight gradient from one padded plane and its `pw`-wide grid.
#[inline(always)]
fn weight_grad_padded_body(dwc: &mut [f32], dyp: &[f32], xp: &[f32], g: &Geom, pw: usize) {
    let run = dyp.len();
    for i in 0..g.kh {
        for j in 0..g.kw {
            let at = (i * pw + j) * g.dil;
            dwc[i * g.kw + j] += dot(dyp, &xp[at..at + run]);
        }
    }
}

on_best_isa!(fn weight_grad_padded => weight_grad_padded_body(dwc: &mut [f32], dyp: &[f32], xp: &[f32], g: &Geom, pw: usize));

/// [`weight_grad`] at stride 1 through [`Padded`].
fn weight_grad_stride1(dy: &[f32], nb: usize, x: &[f32], g: &Geom, p: &Padded) -> Vec<f32> {
    let (hw, taps) = (g.h * g.w, g.kh * g.kw);
    let dyp = grids_on_padded_rows(dy, nb, g, p);
    let mut dw = vec![0f32; g.rows()];
    dw.par_chunks_mut(taps.max(1)).enumerate().for_each(|(c, dwc)| {
        let mut xp = vec![0f32; p.plane_len()];
        for n in 0..nb {
            p.pad(g, &x[(n * g.c + c) * hw..][..hw], &mut xp);
            weight_grad_padded(dwc, &dyp[n * p.run..][..p.run], &xp, g, p.pw);
        }
    });
    dw
}

/// `(nb, 1, oh, ow)` = the convolution of `x` with the taps `w`, plus `bias`.
pub(crate) fn forward(x: &[f32], nb: usize, g: &Geom, w: &[f32], bias: f32) -> Vec<f32> {
    let (hw, s) = (g.h * g.w, g.grid());
    assert_eq!(w.len(), g.rows(), "one-channel conv: taps");
    assert_eq!(x.len(), nb * g.c * hw, "one-channel conv: input size");
    if let Some(p) = Padded::of(g) {
        return forward_stride1(x, nb, g, w, bias, &p);
    }
    let mut y = vec![bias; nb * s];
    y.par_chunks_mut(g.ow.max(1))
        .enumerate()
        .for_each(|(r, out)| forward_row(out, x, r / g.oh, r % g.oh, g, w));
    y
}

/// Plane `c` of image `n`'s input gradient (`plane`, `h·w` floats) from the grid gradient.
#[inline(always)]
fn input_grad_plane_body(plane: &mut [f32], grid: &[f32], c: usize, g: &Geom, w: &[f32]) {
    for oy in 0..g.oh {
        let src = &grid[oy * g.ow..][..g.ow];
        for i in 0..g.kh {
            let Some(iy) = row(g, oy, i) else { continue };
            let dst = &mut plane[iy * g.w..][..g.w];
            for j in 0..g.kw {
                let (lo, hi) = columns(g, j);
                if lo == hi {
                    continue;
                }
                let (wt, start) = (w[(c * g.kh + i) * g.kw + j], first(g, lo, j));
                for (k, v) in src[lo..hi].iter().enumerate() {
                    dst[start + k * g.stride] += wt * v;
                }
            }
        }
    }
}

on_best_isa!(fn input_grad_plane => input_grad_plane_body(plane: &mut [f32], grid: &[f32], c: usize, g: &Geom, w: &[f32]));

/// `(nb, c, h, w)`: the gradient of [`forward`]'s input for output gradient `dy`.
pub(crate) fn input_grad(dy: &[f32], nb: usize, g: &Geom, w: &[f32]) -> Vec<f32> {
    let (hw, s) = (g.h * g.w, g.grid());
    assert_eq!(w.len(), g.rows(), "one-channel conv: taps");
    assert_eq!(dy.len(), nb * s, "one-channel conv: gradient size");
    if g.stride == 1 && g.w > 0 {
        return input_grad_stride1(dy, nb, g, w);
    }
    let mut dx = vec![0f32; nb * g.c * hw];
    dx.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, plane)| {
        let (n, c) = (p / g.c, p % g.c);
        input_grad_plane(plane, &dy[n * s..][..s], c, g, w)
    });
    dx
}

/// Channel `c`'s taps of the weight gradient (`dwc`, `kh·kw` floats), summed over the batch.
#[inline(always)]
fn weight_grad_channel_body(dwc: &mut [f32], dy: &[f32], nb: usize, x: &[f32], c: usize, g: &Geom) {
    let (hw, s) = (g.h * g.w, g.grid());
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
                    let start = first(g, lo, j);
                    dwc[i * g.kw + j] += d[lo..hi]
                        .iter()
                        .enumerate()
                        .map(|(k, a)| a * src[start + k * g.stride])
                        .sum::<f32>();
                }
            }
        }
    }
}

on_best_isa!(fn weight_grad_channel => weight_grad_channel_body(dwc: &mut [f32], dy: &[f32], nb: usize, x: &[f32], c: usize, g: &Geom));

/// The `c·kh·kw` taps' gradient: `Σ_n Σ_(oy, ox) dy · x` at each tap's shift.
pub(crate) fn weight_grad(dy: &[f32], nb: usize, x: &[f32], g: &Geom) -> Vec<f32> {
    assert_eq!(dy.len(), nb * g.grid(), "one-channel conv: gradient size");
    assert_eq!(x.len(), nb * g.c * g.h * g.w, "one-channel conv: input size");
    if let Some(p) = Padded::of(g) {
        return weight_grad_stride1(dy, nb, x, g, &p);
    }
    let mut dw = vec![0f32; g.rows()];
    let taps = g.kh * g.kw;
    dw.par_chunks_mut(taps.max(1))
        .enumerate()
        .for_each(|(c, dwc)| weight_grad_channel(dwc, dy, nb, x, c, g));
    dw
}
