//! Matrix products with few columns (`n` ≤ [`MAX_N`]): the innermost U-Net layers at batch 1,
//! whose grids are 1×1 … 8×8. There the work is reading the weights (up to 32 MB per layer)
//! once, which the `gemm` crate does poorly (it packs the whole weight matrix first and reaches
//! 5–25 GFLOP/s on these shapes); these kernels stream the weights in storage order instead.
//!
//! - weights column-major (`a.rs == 1`, the transposed convolution's `Wᵀ`): axpy form, each
//!   weight row scaled into `n` accumulator rows that stay in L1;
//! - weights row-major (`a.cs == 1`, conv2d's `W` and frozen transposed convolutions' `Wᵀ`):
//!   dot form, groups of weight rows against all `n` columns of `b` (copied to rows first) in
//!   register tiles, so that each weight is read once and every multiply-add has its operands
//!   in registers or L1;
//! - weights row-major with 9–16 columns on AVX-512: broadcast form, each row of `b` one
//!   vector and each weight a broadcast operand of a multiply-add into its row's accumulator
//!   (no horizontal sums, `b` read once per group of [`BCAST_ROWS`] weight rows).

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

/// Whether the kernels here handle this product and are faster than `gemm` on it. Measured
/// with `benches/gemm_shapes.rs` (AVX-512, 2 threads, 16 MB of weights): the dot form 2–3×
/// faster up to 8 columns (512 × 8192 row-major: 0.41 / 0.55 / 0.73 ms at n = 1 / 4 / 8
/// against gemm's 0.86 / 2.12 / 1.51), slower at 16 (1.84 against 1.29); the axpy form faster
/// from 2 to 8 columns (gemm has a fast matrix-vector path for 1, and wins at 16).
///
/// The broadcast form (AVX-512, row-major weights, 9–16 columns, long rows) measured on a
/// 2-thread Xeon with AMX (`cargo bench -p pix2pix --bench gemm_shapes`, `PIX2PIX_GEMM_SHAPES=
/// n=16`): 512 × 8192 at 0.93 ms against gemm's 0.91–1.71 and the dot form's 1.22; 8192 × 1024
/// at 1.41 against gemm's 1.51–1.64. In the ngf-32 U-Net the 4×4-grid convolution (256 × 4096)
/// went from 0.60 to 0.38–0.40 ms a call. Those two shapes read their 17 and 34 MB of weights
/// at 18 and 24 GB/s (a trial with the tile's rows interleaved into one stream gained under
/// 15 %: not worth a second copy of the weights).
///
/// In the network the weights arrive cold (the other layers' weights and activations pass
/// between two calls of a layer), and the tiles' short row pieces (one to a few KB per row)
/// give the hardware prefetchers too little to follow: both forms prefetch the next tile's
/// rows in software. Cold weights (`PIX2PIX_GEMM_SHAPES=ngf32`, 2 threads): the ngf-32 frozen
/// transposed convolution at 2×2 (4096 × 512, n = 4) 1.34 → 0.90 ms, at 4×4 (n = 16, the
/// broadcast form, which took only rows of 1024+ floats before) 0.58 against gemm's 0.85; the
/// ngf-32 U-Net's forward at batch 1, 3 interleaved runs, 19.3–19.8 → 18.6–18.8 ms. Into L2
/// rather than L1 (the next tile's rows are read a tile later, and an L2 request leaves the
/// L1 fill buffers to the current tile's loads): in-network minima over 4 interleaved runs,
/// the 4×4 transposed conv 31.1 → 29.0 ms over 41 calls, the 2×2 one 22.1 → 21.1.
pub(crate) fn applies(a: &Mat, n: usize) -> bool {
    let columns = if a.rs == 1 { 2..=8 } else { 1..=8 };
    let fits = columns.contains(&n) || bcast_applies(a, n);
    fits && (a.rs == 1 || a.cs == 1) && a.rows * a.cols >= 1 << 16
}

/// Whether the broadcast form computes this product (see [`applies`]).
fn bcast_applies(a: &Mat, n: usize) -> bool {
    a.cs == 1 && a.cols >= 512 && (9..=MAX_N).contains(&n) && isa::active() == Isa::Avx512
}

/// Weight rows per tile of the broadcast form: as many accumulators (enough independent sums
/// to hide the multiply-add latency on two ports) and as many weight streams at once.
const BCAST_ROWS: usize = 8;
/// Rows of `b` per chunk of the broadcast form's reduction: 16 KiB, a third of L1.
const BCAST_K: usize = 256;

/// `dst (m × n, row stride dst_rs) (+)= a · b`; the caller has checked the views' bounds.
/// `serial`: all rows on the calling thread (for callers that are themselves one task of a
/// rayon split and hold thread-local state across this call).
pub(crate) fn sgemm_small_n(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    serial: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let bcast = bcast_applies(&a, n);
    // b as n contiguous rows of k (dot and axpy forms), or (broadcast form) as k rows of
    // MAX_N, zero-padded: one vector each. Small either way: k × MAX_N floats at most.
    let (len, j_stride, kk_stride) = if bcast { (k * MAX_N, 1, MAX_N) } else { (n * k, k, 1) };
    let mut bt = vec![0f32; len];
    for kk in 0..k {
        for j in 0..n {
            bt[j * j_stride + kk * kk_stride] = b.data[kk * b.rs + j * b.cs];
        }
    }
    let bt = &bt;
    // dst split into disjoint row blocks, one per task (the last may be shorter in memory).
    let rows_per = match (a.rs == 1, serial) {
        (true, _) => AXPY_ROWS,
        (false, true) => m,
        (false, false) => m.div_ceil(4 * rayon::current_num_threads()).max(1),
    };
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
    let run = |(r0, rows, out): (usize, usize, &mut [f32])| {
        let job = Block { out, dst_rs, a: &a, bt, r0, rows, n, accumulate };
        match isa {
            // SAFETY: bcast_applies checked that AVX-512 is the active level (so the CPU has
            // it), and bt holds k rows of MAX_N floats.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if bcast => unsafe { bcast_rows_avx512(job) },
            // SAFETY: isa::active() only returns a level this CPU has (isa::force checks), and
            // each block_* is built for exactly that level's features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { block_avx512(job) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { block_fma(job) },
            _ => block::<false>(job, dot_rows_scalar),
        }
    };
    if serial {
        blocks.into_iter().for_each(run);
    } else {
        blocks.into_par_iter().for_each(run);
    }
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
    block::<true>(job, |o, rs, a, b, r0, rows, n, acc| dot_rows_avx2(o, rs, a, b, r0, rows, n, acc))
}

/// The same loops compiled for 512-bit vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512(job: Block) {
    block::<true>(job, |o, rs, a, b, r0, rows, n, acc| {
        dot_rows_avx512(o, rs, a, b, r0, rows, n, acc)
    })
}

#[inline(always)]
fn block<const FMA: bool>(job: Block, dot: DotRows) {
    let Block { out, dst_rs, a, bt, r0, rows, n, accumulate } = job;
    if a.rs == 1 {
        axpy_block::<FMA>(out, dst_rs, a, bt, r0, rows, n, accumulate);
    } else {
        dot(out, dst_rs, a, bt, r0, rows, n, accumulate);
    }
}

/// Rows `r0 .. r0+rows` of `dst` for a row-major `a`.
type DotRows = fn(&mut [f32], usize, &Mat, &[f32], usize, usize, usize, bool);

/// `dot_rows_<isa>`: the dot form's loops around `$tile`, the `R × C` tile kernel of one ISA
/// (`$cols`: its widest column chunk). The tile is `R × C` = 8 or 16 accumulator registers:
/// enough independent sums to hide the multiply-add latency (8), few enough to leave registers
/// for the operands; `C` is `n` rounded up to 1, 2, 4 or 8, so that all of `b`'s columns go
/// through the registers while a group of `a`'s rows is read once, from memory.
macro_rules! dot_rows {
    ($name:ident, $tile:ident, $cols:literal, $($feature:literal)?) => {
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feature)])?
        fn $name(
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
            let chunk = n.next_power_of_two().min($cols);
            let group = match chunk {
                1 => 8,
                2 => 4,
                _ => 2,
            };
            let mut r = 0;
            while r < rows {
                let tall = rows - r >= group;
                let mut j = 0;
                while j < n {
                    let cols = n - j;
                    let arow = |i: usize| a.data[(r0 + r + i) * a.rs..][..k].as_ptr();
                    // A short last chunk repeats the last column; the extra sums are dropped.
                    let bcol = |c: usize| bt[(j + c).min(n - 1) * k..][..k].as_ptr();
                    macro_rules! tile {
                        ($r:literal, $c:literal) => {{
                            // SAFETY: each pointer starts a row of k floats (sliced above), and
                            // this function runs only where its features are (the dispatch).
                            let s = unsafe {
                                $tile::<$r, $c>(
                                    std::array::from_fn(arow),
                                    std::array::from_fn(bcol),
                                    k,
                                    // The next row group, on the first column chunk only.
                                    if j == 0 { $r * a.rs } else { 0 },
                                )
                            };
                            for (i, srow) in s.iter().enumerate() {
                                let drow = &mut out[(r + i) * dst_rs + j..];
                                for (d, v) in drow.iter_mut().zip(srow).take(cols.min($c)) {
                                    *d = if accumulate { *d + v } else { *v };
                                }
                            }
                        }};
                    }
                    match (tall, chunk) {
                        (true, 1) => tile!(8, 1),
                        (true, 2) => tile!(4, 2),
                        (true, 4) => tile!(2, 4),
                        (true, _) => tile!(2, 8),
                        (false, 1) => tile!(1, 1),
                        (false, 2) => tile!(1, 2),
                        (false, 4) => tile!(1, 4),
                        (false, _) => tile!(1, 8),
                    }
                    j += chunk;
                }
                r += if tall { group } else { 1 };
            }
        }
    };
}

/// `dot_tile_<isa>::<R, C>(a, b, k)`: the `R × C` dot products of the `k`-float rows at `a`
/// and `b`, in vector partial sums held in registers.
macro_rules! dot_tile {
    ($name:ident, $feature:literal, $v:ty, $lanes:literal, $zero:ident, $load:ident, $fma:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name<const R: usize, const C: usize>(
            a: [*const f32; R],
            b: [*const f32; C],
            k: usize,
            ahead: usize,
        ) -> [[f32; C]; R] {
            use std::arch::x86_64::*;
            let body = k / $lanes * $lanes;
            let mut acc: [[$v; C]; R] = [[$zero(); C]; R];
            let mut c0 = 0;
            while c0 < body {
                if ahead > 0 {
                    for p in a {
                        // SAFETY: a prefetch never faults (isa::prefetch_l2).
                        unsafe { isa::prefetch_l2(p.wrapping_add(c0 + ahead)) };
                    }
                }
                // SAFETY (loads): c0 + lanes <= k, inside every row.
                let av: [$v; R] = std::array::from_fn(|r| unsafe { $load(a[r].add(c0)) });
                for c in 0..C {
                    let bv = unsafe { $load(b[c].add(c0)) };
                    for r in 0..R {
                        acc[r][c] = $fma(av[r], bv, acc[r][c]);
                    }
                }
                c0 += $lanes;
            }
            std::array::from_fn(|r| {
                std::array::from_fn(|c| {
                    let mut lanes = [0f32; $lanes];
                    // SAFETY: lanes holds exactly one vector.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            &acc[r][c] as *const $v as *const f32,
                            lanes.as_mut_ptr(),
                            $lanes,
                        )
                    };
                    let mut s: f32 = lanes.iter().sum();
                    for kk in body..k {
                        // SAFETY: kk < k.
                        s = unsafe { (*a[r].add(kk)).mul_add(*b[c].add(kk), s) };
                    }
                    s
                })
            })
        }
    };
}

dot_tile!(
    dot_tile_avx512,
    "avx512f,avx2,fma",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_fmadd_ps
);
dot_tile!(
    dot_tile_avx2,
    "avx2,fma",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_fmadd_ps
);

/// The portable tile: plain sums (no FMA: without the feature `mul_add` is a libm call).
///
/// # Safety
/// Each pointer starts `k` readable floats.
unsafe fn dot_tile_scalar<const R: usize, const C: usize>(
    a: [*const f32; R],
    b: [*const f32; C],
    k: usize,
    _ahead: usize,
) -> [[f32; C]; R] {
    // SAFETY: the caller's contract.
    let (a, b) = unsafe {
        (a.map(|p| std::slice::from_raw_parts(p, k)), b.map(|p| std::slice::from_raw_parts(p, k)))
    };
    std::array::from_fn(|r| {
        std::array::from_fn(|c| a[r].iter().zip(b[c]).map(|(x, y)| x * y).sum())
    })
}

#[cfg(target_arch = "x86_64")]
dot_rows!(dot_rows_avx512, dot_tile_avx512, 8, "avx512f,avx2,fma");
#[cfg(target_arch = "x86_64")]
dot_rows!(dot_rows_avx2, dot_tile_avx2, 4, "avx2,fma");
dot_rows!(dot_rows_scalar, dot_tile_scalar, 8,);

/// The broadcast form: rows `r0 .. r0+rows` of `dst` for a row-major `a`, `bt` holding `b`'s
/// k rows zero-padded to [`MAX_N`] floats. The reduction runs in chunks of [`BCAST_K`] rows of
/// `b` (16 KiB, kept in L1 while every tile of the task passes over it), the sums carried
/// between chunks in `dst`.
///
/// # Safety
/// The CPU has AVX-512 F; `bt.len() == a.cols * MAX_N`; `job.n <= MAX_N`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bcast_rows_avx512(job: Block) {
    use std::arch::x86_64::*;
    let Block { out, dst_rs, a, bt, r0, rows, n, accumulate } = job;
    let k = a.cols;
    assert!(bt.len() == k * MAX_N && n <= MAX_N, "small-n: broadcast operands malformed");
    let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
    for k0 in (0..k).step_by(BCAST_K) {
        let kc = BCAST_K.min(k - k0);
        let carry = accumulate || k0 > 0;
        let arow = |i: usize| a.data[(r0 + i) * a.rs + k0..][..kc].as_ptr();
        let b = bt[k0 * MAX_N..][..kc * MAX_N].as_ptr();
        let mut tile = |r: usize, acc: &mut [__m512]| {
            let mut d = |i: usize| out[(r + i) * dst_rs..][..n].as_mut_ptr();
            for (i, v) in acc.iter_mut().enumerate() {
                // SAFETY: d(i) starts n floats of dst; the mask touches only those.
                *v = if carry { unsafe { _mm512_maskz_loadu_ps(mask, d(i)) } } else { *v };
            }
            // SAFETY: every row pointer starts kc floats of a, b kc vectors; AVX-512 (contract).
            unsafe {
                match acc.len() {
                    BCAST_ROWS => bcast_tile::<BCAST_ROWS>(
                        std::array::from_fn(|i| arow(r + i)),
                        b,
                        kc,
                        BCAST_ROWS * a.rs,
                        acc.try_into().expect("a tile of BCAST_ROWS"),
                    ),
                    _ => bcast_tile::<1>([arow(r)], b, kc, a.rs, acc.try_into().expect("one row")),
                }
            }
            for (i, v) in acc.iter().enumerate() {
                // SAFETY: as the loads above.
                unsafe { _mm512_mask_storeu_ps(d(i), mask, *v) };
            }
        };
        let mut r = 0;
        while r + BCAST_ROWS <= rows {
            tile(r, &mut [_mm512_setzero_ps(); BCAST_ROWS]);
            r += BCAST_ROWS;
        }
        while r < rows {
            tile(r, &mut [_mm512_setzero_ps()]);
            r += 1;
        }
    }
}

/// `acc` += `R` rows of `a` (k floats each) times the k × 16 matrix at `b`, one vector per row;
/// prefetching each row of `a` `ahead` floats on (the next tile's rows).
///
/// # Safety
/// Each `a[r]` starts k readable floats, `b` 16·k; the CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn bcast_tile<const R: usize>(
    a: [*const f32; R],
    b: *const f32,
    k: usize,
    ahead: usize,
    acc: &mut [std::arch::x86_64::__m512; R],
) {
    use std::arch::x86_64::*;
    let mut sums = *acc;
    for kk in 0..k {
        if kk % 16 == 0 {
            for p in a {
                // SAFETY: a prefetch never faults (isa::prefetch_l2).
                unsafe { isa::prefetch_l2(p.wrapping_add(kk + ahead)) };
            }
        }
        // SAFETY: kk < k: inside b's k vectors and every row of a.
        unsafe {
            let bv = _mm512_loadu_ps(b.add(kk * MAX_N));
            for r in 0..R {
                sums[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a[r].add(kk)), bv, sums[r]);
            }
        }
    }
    *acc = sums;
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

#[cfg(test)]
mod tests {
    use super::super::gemm::{sgemm_on, Path};
    use super::*;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// All three forms on every instruction set the CPU has (the broadcast form on AVX-512 at
    /// 11 and 16 columns, a reduction in four chunks, the last short), against an f64 sum:
    /// column counts that fill and that leave a partial tile, a row count that leaves a partial
    /// row group, a reduction that is not a multiple of the vector, accumulation into a padded
    /// dst (150 rows: 19 per task on two threads, so whole row groups and single rows both run).
    #[test]
    fn small_n_products_match_a_direct_sum() {
        let (m, k) = (150, 1100);
        let a: Vec<f32> = test_values(m * k, 50.0);
        for level in Isa::ALL {
            if isa::force(Some(level)).is_err() {
                test_report::skipped(
                    &format!("small-n products on {}", level.name()),
                    "not on this CPU",
                );
                continue;
            }
            for n in [1, 2, 3, 4, 5, 8, 11, 16] {
                let b: Vec<f32> =
                    (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
                for a_col_major in [false, true] {
                    let av = if a_col_major { Mat::rm(&a, k, m).t() } else { Mat::rm(&a, m, k) };
                    let bv = Mat::rm(&b, k, n);
                    let rs = n + 2;
                    let mut dst = vec![1f32; m * rs];
                    sgemm_on(&mut dst, rs, av, bv, true, Path::SmallN);
                    let what = format!("{} col-major={a_col_major}", level.name());
                    super::super::mat::assert_product(&dst, rs, av, bv, &what);
                }
            }
            test_report::passed(&format!("small-n products on {}", level.name()));
        }
        isa::force(None).expect("back to the detected level");
    }
}
