//! Convolution without a materialised column matrix, for layers with few input taps (the
//! outermost layers: 3 or 6 image channels × 4×4 kernel = 48 or 96 taps).
//!
//! There a gemm has a reduction of only 48–96 over a column matrix of `taps × oh·ow` floats
//! (3 MB at 256², 12 MB at batch 4) that is written once and read once: bandwidth, not
//! arithmetic. Here each task takes one output row: it gathers that row's `taps × ow` patch
//! (≤ 48 KB, stays in L1/L2), then runs register tiles of [`CO`] output channels × [`LANES`]
//! output columns over the taps, each step one vector of the patch against [`CO`] broadcast
//! weights (an implicit GEMM whose packing pass is the row patch).
//!
//! Measured (benches/gemm_shapes.rs, interleaved with im2col + gemm on a loaded 2-core
//! AVX-512 machine): 7–12× slower than im2col + gemm, so the layers do not dispatch to it; it
//! stays as a tested trial (`bench_conv2d`) until its tiles are made to vectorise.

use rayon::prelude::*;

use super::im2col::{Geom, Phases};
use super::isa::{self, Isa};
use super::mat::Mat;

/// Output channels per register tile.
const CO: usize = 8;
/// Output columns per register tile (one AVX-512 vector, two AVX2 ones).
const LANES: usize = 16;

/// `(nb, m, oh, ow)` = conv of `x` (`nb` NCHW images of geometry `g`) with the `m × g.rows()`
/// weights `w`, `bias` added.
pub(crate) fn conv_direct(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: Mat,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (m, taps, hw, s) = (w.rows, g.rows(), g.h * g.w, g.grid());
    assert_eq!(w.cols, taps, "direct conv: weight columns");
    assert!(w.in_bounds(), "direct conv: weight view out of bounds");
    assert_eq!(x.len(), nb * g.c * hw, "direct conv: input size");
    let mut out = vec![0f32; nb * m * s];
    if out.is_empty() {
        return out;
    }
    // Weights as taps × m (padded to whole tiles with zeros): a tile reads CO adjacent ones.
    let mp = m.next_multiple_of(CO);
    let mut wt = vec![0f32; taps * mp];
    for co in 0..m {
        for t in 0..taps {
            wt[t * mp + co] = w.data[co * w.rs + t * w.cs];
        }
    }
    // Strided: the phases of every plane, so that each tap's row is a contiguous run.
    let ph = Phases::new(g.h, g.w, g.stride);
    let split: Vec<f32>;
    let src: &[f32] = if g.stride > 1 {
        split = {
            let mut buf = vec![0f32; x.len()];
            buf.par_chunks_mut(hw)
                .zip(x.par_chunks(hw))
                .for_each(|(o, plane)| ph.split(plane, o, None));
            buf
        };
        &split
    } else {
        x
    };
    let isa = isa::active();
    let owp = g.ow.next_multiple_of(LANES);
    // One task per (image, output row); rows of different images and rows are disjoint in out,
    // so the tasks write through a shared pointer to disjoint places.
    let dst = out.as_mut_ptr() as usize;
    (0..nb * g.oh).into_par_iter().for_each_init(
        || vec![0f32; taps * owp],
        |patch, task| {
            let (n, oy) = (task / g.oh, task % g.oh);
            gather_row(src, n, oy, g, &ph, patch, owp);
            let job = Row { patch, owp, wt: &wt, mp, m, taps, ow: g.ow, bias };
            // SAFETY: this task writes only row oy of every channel of image n, at
            // dst + ((n·m + co)·oh + oy)·ow for co < m: inside out, and no other task's row.
            // isa::active() returns only levels the CPU has, matching each row_* variant.
            unsafe {
                let base = (dst as *mut f32).add(n * m * s + oy * g.ow);
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => row_avx512(job, base, s),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => row_avx2(job, base, s),
                    _ => row::<false>(job, base, s),
                }
            }
        },
    );
    out
}

/// The `taps × owp` patch of output row `oy` of image `n`: patch[t][ox] is the input under
/// tap t at output column ox (zero in the padding and past `ow`).
fn gather_row(
    src: &[f32],
    n: usize,
    oy: usize,
    g: &Geom,
    ph: &Phases,
    patch: &mut [f32],
    owp: usize,
) {
    let (kk, hw) = (g.kh * g.kw, g.h * g.w);
    let pad = g.pad as isize;
    for (t, dst) in patch.chunks_exact_mut(owp).enumerate() {
        let (c, i, j) = (t / kk, (t / g.kw) % g.kh, t % g.kw);
        let ((py, by), (px, bx)) =
            (ph.tap((i * g.dil) as isize - pad), ph.tap((j * g.dil) as isize - pad));
        let (y0, y1) = Phases::span(by, ph.ph[py], g.oh);
        let (x0, x1) = Phases::span(bx, ph.pw[px], g.ow);
        if oy < y0 || oy >= y1 || x0 == x1 {
            dst.fill(0.0);
            continue;
        }
        let pw = ph.pw[px];
        let phase = &src[(n * g.c + c) * hw + ph.off[py * ph.s + px]..];
        let a = (oy as isize + by) as usize;
        let b0 = (x0 as isize + bx) as usize;
        dst[..x0].fill(0.0);
        dst[x1..].fill(0.0);
        dst[x0..x1].copy_from_slice(&phase[a * pw + b0..][..x1 - x0]);
    }
}

/// One output row's work.
struct Row<'a> {
    patch: &'a [f32],
    owp: usize,
    wt: &'a [f32],
    mp: usize,
    m: usize,
    taps: usize,
    ow: usize,
    bias: Option<&'a [f32]>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn row_avx512(job: Row, out: *mut f32, plane: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { row::<true>(job, out, plane) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(job: Row, out: *mut f32, plane: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { row::<true>(job, out, plane) }
}

/// # Safety
/// `out + co·plane + ox` is valid for writes for every `co < m`, `ox < ow`, and no one else
/// touches those floats during the call.
#[inline(always)]
unsafe fn row<const FMA: bool>(job: Row, out: *mut f32, plane: usize) {
    let Row { patch, owp, wt, mp, m, taps, ow, bias } = job;
    for c0 in (0..m).step_by(CO) {
        for x0 in (0..owp).step_by(LANES) {
            let mut acc = [[0f32; LANES]; CO];
            for t in 0..taps {
                let v: &[f32; LANES] =
                    patch[t * owp + x0..][..LANES].try_into().expect("LANES floats");
                let w: &[f32; CO] = wt[t * mp + c0..][..CO].try_into().expect("CO floats");
                for (acc, &w) in acc.iter_mut().zip(w) {
                    for (a, &v) in acc.iter_mut().zip(v) {
                        *a = if FMA { w.mul_add(v, *a) } else { *a + w * v };
                    }
                }
            }
            let cols = LANES.min(ow - x0.min(ow));
            for (co, acc) in acc.iter().enumerate().take(m - c0) {
                let b = bias.map_or(0.0, |b| b[c0 + co]);
                for (l, &a) in acc.iter().enumerate().take(cols) {
                    // SAFETY: c0 + co < m and x0 + l < ow: inside this row (caller's contract).
                    unsafe { *out.add((c0 + co) * plane + x0 + l) = a + b };
                }
            }
        }
    }
}
