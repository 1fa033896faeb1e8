//! Matrix products with few columns (`n` ≤ [`MAX_N`]): the innermost U-Net layers at batch 1,
//! whose grids are 1×1 … 8×8. There the work is reading the weights (up to 32 MB per layer)
//! once, which the `gemm` crate does poorly (it packs the whole weight matrix first and reaches
//! 5–25 GFLOP/s on these shapes); these kernels stream the weights in storage order instead.
//!
//! - weights column-major (`a.rs == 1`, the transposed convolution's `Wᵀ`): axpy form, each
//!   weight row scaled into `n` accumulator rows that stay in L1;
//! - weights row-major (`a.cs == 1`, conv2d's `W`): dot form, each weight row against the `n`
//!   columns of `b` (copied to rows first).

use rayon::prelude::*;

use super::isa::{self, Isa};
use super::mat::Mat;

pub(crate) const MAX_N: usize = 16;
/// Rows of `dst` per task in the axpy form: `MAX_N × ROWS` accumulators fit L1.
const AXPY_ROWS: usize = 256;

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    // Without the fma target feature, mul_add would be a libm call per element.
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Whether the kernels here handle this product and are faster than `gemm` on it (measured
/// with `benches/gemm_shapes.rs`: only the axpy form, and from 2 columns; gemm has a fast
/// matrix-vector path for 1).
pub(crate) fn applies(a: &Mat, n: usize) -> bool {
    (2..=MAX_N).contains(&n) && a.rs == 1 && a.rows * a.cols >= 1 << 16
}

/// `dst (m × n, row stride dst_rs) (+)= a · b`; the caller has checked the views' bounds.
pub(crate) fn sgemm_small_n(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // b as n contiguous rows of k (it is small: k × n ≤ k × MAX_N).
    let mut bt = vec![0f32; n * k];
    for (j, row) in bt.chunks_exact_mut(k.max(1)).enumerate() {
        for (kk, v) in row.iter_mut().enumerate() {
            *v = b.data[kk * b.rs + j * b.cs];
        }
    }
    let bt = &bt;
    // dst split into disjoint row blocks, one per task (the last may be shorter in memory).
    let rows_per =
        if a.rs == 1 { AXPY_ROWS } else { m.div_ceil(4 * rayon::current_num_threads()).max(1) };
    let blocks: Vec<(usize, usize, &mut [f32])> = {
        let mut out = Vec::with_capacity(m.div_ceil(rows_per));
        let mut rest = &mut dst[..(m - 1) * dst_rs + n];
        let mut r0 = 0;
        while r0 < m {
            let rows = rows_per.min(m - r0);
            let cut = if r0 + rows == m { rest.len() } else { rows * dst_rs };
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(cut);
            out.push((r0, rows, mine));
            rest = tail;
            r0 += rows;
        }
        out
    };
    let isa = isa::active();
    blocks.into_par_iter().for_each(|(r0, rows, out)| {
        let job = Block { out, dst_rs, a: &a, bt, r0, rows, n, accumulate };
        match isa {
            // SAFETY: isa::active() only returns a level this CPU has (isa::force checks), and
            // each block_* is built for exactly that level's features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { block_avx512(job) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { block_fma(job) },
            _ => block::<false>(job),
        }
    });
}

/// One task: rows `r0 .. r0+rows` of dst, in `out`.
struct Block<'a> {
    out: &'a mut [f32],
    dst_rs: usize,
    a: &'a Mat<'a>,
    bt: &'a [f32],
    r0: usize,
    rows: usize,
    n: usize,
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_fma(job: Block) {
    block::<true>(job)
}

/// The same loops compiled for 512-bit vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512(job: Block) {
    block::<true>(job)
}

#[inline(always)]
fn block<const FMA: bool>(job: Block) {
    let Block { out, dst_rs, a, bt, r0, rows, n, accumulate } = job;
    if a.rs == 1 {
        axpy_block::<FMA>(out, dst_rs, a, bt, r0, rows, n, accumulate);
    } else {
        let k = a.cols;
        for r in 0..rows {
            let arow = &a.data[(r0 + r) * a.rs..][..k];
            dot_row::<FMA>(&mut out[r * dst_rs..][..n], arow, bt, k, accumulate);
        }
    }
}

/// Rows `r0 .. r0+rows` of `dst` for a column-major `a` (`a[i + kk·cs]`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn axpy_block<const FMA: bool>(
    out: &mut [f32],
    dst_rs: usize,
    a: &Mat,
    bt: &[f32],
    r0: usize,
    rows: usize,
    n: usize,
    accumulate: bool,
) {
    let k = a.cols;
    let mut acc = [[0f32; AXPY_ROWS]; MAX_N];
    for kk in 0..k {
        let w = &a.data[kk * a.cs + r0..][..rows];
        for (j, acc) in acc.iter_mut().enumerate().take(n) {
            let s = bt[j * k + kk];
            for (c, &w) in acc[..rows].iter_mut().zip(w) {
                *c = fmadd::<FMA>(w, s, *c);
            }
        }
    }
    for (i, drow) in out.chunks_mut(dst_rs).take(rows).enumerate() {
        for (j, d) in drow[..n].iter_mut().enumerate() {
            *d = if accumulate { *d + acc[j][i] } else { acc[j][i] };
        }
    }
}

/// One row of `dst`: `arow · bt[j]` for each of the n rows of `bt`.
#[inline(always)]
fn dot_row<const FMA: bool>(out: &mut [f32], arow: &[f32], bt: &[f32], k: usize, accumulate: bool) {
    const L: usize = 8;
    let n = out.len();
    let mut acc = [[0f32; L]; MAX_N];
    let body = k / L * L;
    for (c, av) in arow[..body].chunks_exact(L).enumerate() {
        for (j, acc) in acc.iter_mut().enumerate().take(n) {
            let bv = &bt[j * k + c * L..][..L];
            for l in 0..L {
                acc[l] = fmadd::<FMA>(av[l], bv[l], acc[l]);
            }
        }
    }
    for (j, d) in out.iter_mut().enumerate() {
        let mut s: f32 = acc[j].iter().sum();
        for kk in body..k {
            s = fmadd::<FMA>(arow[kk], bt[j * k + kk], s);
        }
        *d = if accumulate { *d + s } else { s };
    }
}
