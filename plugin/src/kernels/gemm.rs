//! A bounds-checked front to the `gemm` crate (the one candle's own matmul runs on) and the
//! small-n kernels, for f32 matrices given as strided views ([`Mat`]).

use gemm::Parallelism;
use rayon::prelude::*;

use super::bf16::{sgemm_bf16, PackedA};
use super::direct_channels;
use super::im2col::in_column_block;
use super::mat::extent;
pub(crate) use super::mat::Mat;
use super::small_gemm;

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Which kernel a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The small-n kernels where they apply, else `gemm`.
    Auto,
    Gemm,
    SmallN,
    /// The channel tiles on a column-major `a` ([`super::direct_channels::gemm_columns`]).
    Columns,
}

/// The constant operand of a layer's product: f32 as stored, or packed bf16 (frozen layers
/// under [`super::Precision::Bf16`]).
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a> {
    F32(Mat<'a>),
    Bf16(&'a PackedA),
}

impl Weights<'_> {
    pub fn rows(&self) -> usize {
        match self {
            Weights::F32(m) => m.rows,
            Weights::Bf16(p) => p.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Weights::F32(m) => m.cols,
            Weights::Bf16(p) => p.cols(),
        }
    }
}

/// `dst (+)= w · b` on whichever kernel the weights' precision takes.
pub(crate) fn sgemm_w(dst: &mut [f32], dst_rs: usize, w: Weights, b: Mat, accumulate: bool) {
    match w {
        Weights::F32(a) => sgemm(dst, dst_rs, a, b, accumulate),
        Weights::Bf16(p) => sgemm_bf16(dst, dst_rs, p, b, accumulate),
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major with row stride `dst_rs`.
pub(crate) fn sgemm(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    sgemm_on(dst, dst_rs, a, b, accumulate, Path::Auto)
}

/// [`sgemm`] on the calling thread (for products that are one task of a split the caller
/// makes), the small-n kernels included: callers run this while holding a thread-local block
/// buffer, and a worker waiting on a nested rayon split may steal another task that wants the
/// same buffer (a `RefCell` already borrowed: a panic in a worker thread).
pub(crate) fn sgemm_serial(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    product_checked(dst, dst_rs, a, b, accumulate, Path::Auto, true)
}

pub(crate) fn sgemm_on(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    path: Path,
) {
    product_checked(dst, dst_rs, a, b, accumulate, path, false)
}

/// The products' common front: checks the views, then the small-n kernels, the column split
/// or gemm (threaded unless `serial`).
fn product_checked(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    path: Path,
    serial: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert!(a.in_bounds(), "gemm: lhs view out of bounds");
    assert!(b.in_bounds(), "gemm: rhs view out of bounds");
    assert!(extent(m, n, dst_rs, 1) <= dst.len(), "gemm: dst view out of bounds");
    assert!(dst_rs >= n || m <= 1, "gemm: dst rows overlap");
    assert!(serial || !in_column_block(), "gemm: a threaded product inside a column block");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let columns = || !accumulate && !serial && direct_channels::columns_apply(&a, &b);
    if path == Path::Columns || (path == Path::Auto && columns()) {
        assert!(!accumulate && !serial, "column gemm: a threaded overwrite only");
        return direct_channels::gemm_columns(dst, dst_rs, a, b);
    }
    if path == Path::SmallN || (path == Path::Auto && small_gemm::applies(&a, n)) {
        assert!(
            n <= small_gemm::MAX_N && (a.rs == 1 || a.cs == 1),
            "small-n gemm: unsupported shape"
        );
        return small_gemm::sgemm_small_n(dst, dst_rs, a, b, accumulate, serial);
    }
    // SAFETY: the asserts above keep every index the three views address inside their slices;
    // dst is borrowed mutably, so it aliases neither operand, and its rows (stride >= n) don't
    // overlap each other.
    unsafe { product_views(dst.as_mut_ptr(), dst_rs, a, b, accumulate, serial) }
}

/// `a · b` as a new row-major `a.rows × b.cols` vector, each float written once by the
/// product, which does not read its destination: no zeroing pass first. A weight gradient's
/// 1–4 MB result came zeroed from the allocator, ~3 % of a training step's samples in
/// `memset`, run on one thread while the other waited.
pub(crate) fn sgemm_new(a: Mat, b: Mat) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert!(a.in_bounds(), "gemm: lhs view out of bounds");
    assert!(b.in_bounds(), "gemm: rhs view out of bounds");
    assert!(!in_column_block(), "gemm: a threaded product inside a column block");
    if m == 0 || n == 0 || k == 0 || small_gemm::applies(&a, n) {
        let mut dst = vec![0f32; m * n];
        sgemm(&mut dst, n, a, b, false);
        return dst;
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: dst has room for m rows of n floats (row stride n, so rows don't overlap) and is
    // nobody else's; the operand views are checked above. Not accumulating, the product reads
    // none of dst (gemm's `read_dst` false) and writes all of it (the column split's tasks
    // cover columns 0..n), so every float is initialised before set_len.
    unsafe {
        product_views(dst.as_mut_ptr(), n, a, b, false, false);
        dst.set_len(m * n);
    }
    dst
}

/// The products past the small-n kernels: split by columns across the threads, or gemm
/// (threaded unless `serial`), `m × n` of `dst` (row stride `dst_rs`), read only when
/// `accumulate`.
///
/// # Safety
/// `a` and `b` are in-bounds views with `b.rows == a.cols`, `k > 0`; `dst`'s `a.rows` rows of
/// stride `dst_rs ≥ b.cols` are live memory that nothing else accesses during the call.
unsafe fn product_views(
    dst: *mut f32,
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    serial: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if k == 1 && b.cs == 1 {
        // SAFETY: the caller's contract.
        return unsafe { outer_product(dst, dst_rs, a, b, accumulate, serial) };
    }
    let threads = rayon::current_num_threads();
    if !serial && m <= SPLIT_MAX_ROWS && threads > 1 && n >= threads * SPLIT_MIN_COLUMNS {
        let per = n.div_ceil(threads);
        let (d, bp) = (dst as usize, b.data.as_ptr() as usize);
        (0..threads).into_par_iter().for_each(|t| {
            let j0 = t * per;
            if j0 < n {
                // SAFETY: task t writes only columns j0 .. j0 + cols of dst and reads only those of
                // b: sub-views of the caller's views, disjoint between tasks; dst and b outlive
                // this loop, which joins before returning.
                unsafe {
                    product(
                        m,
                        per.min(n - j0),
                        k,
                        (d as *mut f32).add(j0),
                        dst_rs,
                        accumulate,
                        &a,
                        (bp as *const f32).add(j0 * b.cs),
                        &b,
                        Parallelism::None,
                    )
                }
            }
        });
        return;
    }
    // SAFETY: the caller's contract.
    unsafe {
        product(
            m,
            n,
            k,
            dst,
            dst_rs,
            accumulate,
            &a,
            b.data.as_ptr(),
            &b,
            if serial { Parallelism::None } else { parallelism() },
        )
    }
}

/// `dst (+)= a · b` for a reduction of one (`a` a column, `b` a contiguous row): each row of
/// `dst` a multiple of `b`, written in one pass. A weight gradient on a 1 × 1 grid (the U-Net's
/// innermost layer at batch 1, 256 × 4096) took 0.9 ms a call through gemm.
///
/// # Safety
/// As [`product_views`], with `a.cols == 1` and `b.cs == 1`.
unsafe fn outer_product(
    dst: *mut f32,
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    serial: bool,
) {
    let (m, n) = (a.rows, b.cols);
    let row = &b.data[..n];
    let d = dst as usize;
    let fill = |i: usize| {
        let ai = a.data[i * a.rs];
        // SAFETY: row i of dst (n floats from i·dst_rs) is live and touched by this call alone
        // (the caller's contract; rows don't overlap and each index i runs once).
        let out = unsafe { std::slice::from_raw_parts_mut((d as *mut f32).add(i * dst_rs), n) };
        match accumulate {
            true => out.iter_mut().zip(row).for_each(|(o, &bj)| *o += ai * bj),
            false => out.iter_mut().zip(row).for_each(|(o, &bj)| *o = ai * bj),
        }
    };
    match serial {
        true => (0..m).for_each(fill),
        false => (0..m).into_par_iter().with_min_len(16).for_each(fill),
    }
}

/// `dst[.., j0 .. j0 + n] (+)= a · b` single-threaded, `dst` (`m` rows of stride `dst_rs`) at
/// `dst`: one task's columns of a product split among tasks.
///
/// # Safety
/// `dst`'s `m` rows of stride `dst_rs` must be live memory, columns `j0 .. j0 + n` of them
/// accessed by nothing else during the call; `dst_rs ≥ j0 + n`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product_into(
    dst: *mut f32,
    j0: usize,
    dst_rs: usize,
    m: usize,
    n: usize,
    a: &Mat,
    b: Mat,
    accumulate: bool,
) {
    assert!(a.in_bounds() && b.in_bounds(), "gemm: operand view out of bounds");
    assert!(a.rows == m && b.cols == n && a.cols == b.rows, "gemm: shapes differ");
    assert!(dst_rs >= j0 + n || m <= 1, "gemm: dst rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the caller's contract for dst; a and b are checked views of live slices.
    unsafe {
        product(
            m,
            n,
            a.cols,
            dst.add(j0),
            dst_rs,
            accumulate,
            a,
            b.data.as_ptr(),
            &b,
            Parallelism::None,
        )
    }
}

/// Products of at most this many rows with many columns are split by columns across the
/// threads, each running single-threaded: gemm's own threading barely speeds them up (64 rows
/// are 4 of its tiles), while the split runs ~2× faster on the outer U-Net layers (measured:
/// 64 × 4096 × 512 at 46–48 GFLOP/s threaded by gemm, 96 split).
const SPLIT_MAX_ROWS: usize = 64;
const SPLIT_MIN_COLUMNS: usize = 512;

/// `gemm::gemm` on `m × n` of `dst` (row stride `dst_rs`) from `a` and `b` (`b`'s data at
/// `b_data`, with `b`'s strides); gemm reads dst only when `accumulate`.
///
/// # Safety
/// Every element the views address must lie in live memory, `dst`'s rows must not overlap,
/// and nothing else may access `dst` during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: &Mat,
    b_data: *const f32,
    b: &Mat,
    par: Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b_data,
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// The products as the benchmarks drive them: `c (m × n, row-major) = a · b`, `a` with strides
/// `(ars, acs)`, `b` row-major or (`b_t`) column-major.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn bench_sgemm(
    c: &mut [f32],
    a: &[f32],
    ars: usize,
    acs: usize,
    b: &[f32],
    b_t: bool,
    m: usize,
    n: usize,
    k: usize,
    path: Path,
) {
    let a = Mat { data: a, rows: m, cols: k, rs: ars, cs: acs };
    let b = if b_t { Mat::rm(b, n, k).t() } else { Mat::rm(b, k, n) };
    sgemm_on(c, n, a, b, false, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;

    /// The column-split products (few rows, many columns) against a direct f64 sum, with row-
    /// and column-major operands, a padded dst row stride and accumulation.
    #[test]
    fn split_products_match_a_direct_sum() {
        for (m, n, k, a_col_major, b_col_major) in [
            (64, 4096, 48, false, false),
            (48, 1500, 33, true, false),
            (7, 2051, 19, false, true),
            (64, 1024, 5, true, true),
            // A reduction of one: the outer product, accumulated, rows padded, a strided column.
            (256, 1000, 1, false, false),
            (3, 70, 1, true, true),
        ] {
            let a: Vec<f32> = test_values(m * k, 50.0);
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let av = if a_col_major { Mat::rm(&a, k, m).t() } else { Mat::rm(&a, m, k) };
            let bv = if b_col_major { Mat::rm(&b, n, k).t() } else { Mat::rm(&b, k, n) };
            let rs = n + 3;
            let mut dst = vec![1f32; m * rs];
            sgemm_on(&mut dst, rs, av, bv, true, Path::Gemm);
            super::super::mat::assert_product(&dst, rs, av, bv, "gemm");
        }
    }

    /// Products into a new vector (never zeroed first) against a direct f64 sum, on each path:
    /// the column split, gemm (threaded), the small-n kernels, an empty inner dimension.
    #[test]
    fn new_products_match_a_direct_sum() {
        for (m, n, k) in [(64, 4096, 9), (256, 1024, 64), (512, 700, 1), (96, 8, 33), (5, 7, 0)] {
            let a: Vec<f32> = test_values(m * k, 50.0);
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            // The weight gradients' operands: a row-major, b a transposed row-major view.
            let (av, bv) = (Mat::rm(&a, m, k), Mat::rm(&b, n, k).t());
            let dst = sgemm_new(av, bv);
            assert_eq!(dst.len(), m * n);
            // The oracle wants the product added to ones.
            let dst: Vec<f32> = dst.iter().map(|v| v + 1.0).collect();
            super::super::mat::assert_product(&dst, n, av, bv, "new product");
        }
    }
}
