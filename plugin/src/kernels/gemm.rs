//! A bounds-checked front to the `gemm` crate (the one candle's own matmul runs on), for f32
//! matrices given as a slice plus row and column strides, so transposed and per-batch views cost
//! no copy.

use gemm::Parallelism;

/// A read-only `rows × cols` view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix starting at `data[0]`.
    pub fn rm(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// Largest index a strided `rows × cols` view touches, plus one (0 when empty).
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 }
}

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
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major with row stride `dst_rs`.
pub(crate) fn sgemm(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    sgemm_on(dst, dst_rs, a, b, accumulate, Path::Auto)
}

pub(crate) fn sgemm_on(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, path: Path) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert!(extent(a.rows, a.cols, a.rs, a.cs) <= a.data.len(), "gemm: lhs view out of bounds");
    assert!(extent(b.rows, b.cols, b.rs, b.cs) <= b.data.len(), "gemm: rhs view out of bounds");
    assert!(extent(m, n, dst_rs, 1) <= dst.len(), "gemm: dst view out of bounds");
    assert!(dst_rs >= n || m <= 1, "gemm: dst rows overlap");
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
    if path == Path::SmallN || (path == Path::Auto && super::small_gemm::applies(&a, n)) {
        assert!(n <= super::small_gemm::MAX_N && (a.rs == 1 || a.cs == 1), "small-n gemm: unsupported shape");
        return super::small_gemm::sgemm_small_n(dst, dst_rs, a, b, accumulate);
    }
    // SAFETY: the asserts above keep every index the three views address inside their slices;
    // dst is borrowed mutably, so it aliases neither operand, and its rows (stride >= n) don't
    // overlap each other. gemm reads dst only when read_dst (accumulate) is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    }
}

/// The products as the benchmarks drive them: `c (m × n, row-major) = a · b`, `a` with strides
/// `(ars, acs)`, `b` row-major or (`b_t`) column-major.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn bench_sgemm(c: &mut [f32], a: &[f32], ars: usize, acs: usize, b: &[f32], b_t: bool, m: usize, n: usize, k: usize, path: Path) {
    let a = Mat { data: a, rows: m, cols: k, rs: ars, cs: acs };
    let b = if b_t { Mat::rm(b, n, k).t() } else { Mat::rm(b, k, n) };
    sgemm_on(c, n, a, b, false, path)
}
