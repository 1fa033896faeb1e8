//! `C (+)= A · Bᵀ` where both operands' rows are long and contiguous and `C` is small: the
//! weight gradients of the image layers (a few dozen grid channels against 48–96 image taps,
//! reduced over a block of a 128 × 128 grid), on AVX-512.
//!
//! gemm packs both operands into panels and keeps `C`'s tile in registers only for one chunk
//! of the reduction; with `C` a few thousand floats and the reduction thousands long, those
//! layers ran at 74–103 GFLOP/s (ngf-32 training-step profile). Here a register tile holds
//! [`R`] × [`N`] dot products as 16-lane partial sums over the whole reduction: per 16 floats
//! of it, `R + N` contiguous loads feed `R·N` = 24 FMAs, and each sum is reduced across its
//! lanes once at the end.

use super::isa::{self, Isa};
use super::mat::Mat;

/// Rows of `A` per register tile.
const R: usize = 4;
/// Rows of `B` per register tile: `R·N` = 24 accumulators, `R` vectors of `A` and one of `B`
/// in the 32 zmm registers.
const N: usize = 6;

/// Whether [`sgemm_nt`] runs on this CPU (the kernels' level is AVX-512).
pub(crate) fn available() -> bool {
    cfg!(target_arch = "x86_64") && isa::active() == Isa::Avx512
}

/// `c (m × n, row stride ldc) (+)= a (m × k) · b (n × k)ᵀ`, on the calling thread; `a` and
/// `b` have contiguous rows (`cs == 1`). Callers check [`available`].
pub(crate) fn sgemm_nt(c: &mut [f32], ldc: usize, a: Mat, b: Mat, accumulate: bool) {
    let (m, n, k) = (a.rows, b.rows, a.cols);
    assert!(Isa::Avx512.available(), "dot tiles: AVX-512 not on this CPU");
    assert_eq!(b.cols, k, "dot tiles: reduction lengths differ");
    assert!(a.cs == 1 && b.cs == 1, "dot tiles: rows not contiguous");
    assert!(a.in_bounds() && b.in_bounds(), "dot tiles: operand view out of bounds");
    assert!(m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n, "dot tiles: result too short");
    assert!(n <= ldc || m <= 1, "dot tiles: result rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    // The tile's rows of b stay in L1 while a's rows stream past them.
    for j0 in (0..n).step_by(N) {
        for i0 in (0..m).step_by(R) {
            let t = Tile {
                a: a.data[i0 * a.rs..].as_ptr(),
                lda: a.rs,
                b: b.data[j0 * b.rs..].as_ptr(),
                ldb: b.rs,
                k,
                c: c[i0 * ldc + j0..].as_mut_ptr(),
                ldc,
                accumulate,
            };
            // SAFETY: rows i0 .. i0 + rows of a and j0 .. j0 + cols of b hold k floats each
            // inside their views (in_bounds, asserted); c's elements (i0 + i, j0 + j) for i <
            // rows, j < cols lie inside c (its length, asserted); the CPU has AVX-512 F.
            unsafe { t.run((m - i0).min(R), (n - j0).min(N)) };
        }
    }
}

/// One register tile's operands.
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
}

impl Tile {
    /// The tile of `rows × cols` dot products (at most `R × N`).
    ///
    /// # Safety
    /// As [`Tile::dots`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn run(&self, rows: usize, cols: usize) {
        macro_rules! dispatch {
            ($($r:literal),*; $($n:literal),*) => {
                dispatch!(@rows rows, cols; [$($r),*]; [$($n),*])
            };
            (@rows $rows:ident, $cols:ident; [$($r:literal),*]; $ns:tt) => {
                match $rows {
                    $($r => dispatch!(@cols $r, $cols; $ns),)*
                    _ => unreachable!("dot tiles: tile rows"),
                }
            };
            (@cols $r:literal, $cols:ident; [$($n:literal),*]) => {
                match $cols {
                    // SAFETY: the caller's contract, with the tile's shape.
                    $($n => unsafe { self.dots::<$r, $n>() },)*
                    _ => unreachable!("dot tiles: tile columns"),
                }
            };
        }
        dispatch!(1, 2, 3, 4; 1, 2, 3, 4, 5, 6)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _: usize, _: usize) {
        unreachable!("dot tiles: available() is false off x86-64")
    }

    /// `c[i][j] (+)= Σ_p a[i][p] · b[j][p]` for `i < RT`, `j < NT`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `a + i·lda + p` and `b + j·ldb + p` are readable for `i < RT`,
    /// `j < NT`, `p < k`; `c + i·ldc + j` is valid for reads and writes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn dots<const RT: usize, const NT: usize>(&self) {
        use std::arch::x86_64::*;
        let (a, b, lda, ldb) = (self.a, self.b, self.lda, self.ldb);
        let mut acc = [[_mm512_setzero_ps(); NT]; RT];
        let full = self.k / 16 * 16;
        for p in (0..full).step_by(16) {
            // a's RT vectors held, b's loaded one at a time: RT + 1 + RT·NT registers (29).
            // SAFETY: p + 16 <= k.
            let av: [__m512; RT] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_ps(a.add(i * lda + p)) });
            for j in 0..NT {
                // SAFETY: as above.
                let bj = unsafe { _mm512_loadu_ps(b.add(j * ldb + p)) };
                for (row, &ai) in acc.iter_mut().zip(&av) {
                    row[j] = _mm512_fmadd_ps(ai, bj, row[j]);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                // SAFETY: element (i, j) of the tile inside c (the caller's contract).
                unsafe {
                    let d = self.c.add(i * self.ldc + j);
                    // The last k mod 16 products (a masked vector step spilled the sums).
                    let tail: f32 =
                        (full..self.k).map(|p| *a.add(i * lda + p) * *b.add(j * ldb + p)).sum();
                    let sum = _mm512_reduce_add_ps(s) + tail;
                    *d = if self.accumulate { *d + sum } else { sum };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// Against f64 dot products: full and ragged tiles, reductions with and without a partial
    /// vector, strided rows, a result wider than `n`, and accumulation onto existing values.
    #[test]
    fn dot_tiles_match_f64_dot_products() {
        if !available() {
            test_report::skipped("dot tiles on avx512", "not on this CPU");
            return;
        }
        for (m, n, k, lda, ldb, ldc, accumulate) in [
            (32, 96, 1360, 16384, 1360, 96, false),
            (64, 48, 2720, 3000, 2720, 48, true),
            (5, 7, 33, 40, 33, 9, true),
            (3, 13, 16, 16, 20, 13, false),
            (1, 1, 1, 1, 1, 1, false),
            (9, 2, 100, 100, 100, 2, true),
        ] {
            let a = test_values((m - 1) * lda + k, 13.0);
            let b = test_values((n - 1) * ldb + k, 29.0);
            let mut c = test_values((m - 1) * ldc + n, 7.0);
            let before = c.clone();
            let (am, bm) = (
                Mat { data: &a, rows: m, cols: k, rs: lda, cs: 1 },
                Mat { data: &b, rows: n, cols: k, rs: ldb, cs: 1 },
            );
            sgemm_nt(&mut c, ldc, am, bm, accumulate);
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 =
                        (0..k).map(|p| a[i * lda + p] as f64 * b[j * ldb + p] as f64).sum();
                    let want = dot + if accumulate { before[i * ldc + j] as f64 } else { 0.0 };
                    let got = c[i * ldc + j] as f64;
                    let scale = (0..k)
                        .map(|p| (a[i * lda + p] as f64 * b[j * ldb + p] as f64).abs())
                        .sum::<f64>()
                        + before[i * ldc + j].abs() as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * scale + 1e-30,
                        "{m}x{n}x{k} ({i}, {j}): {got} against {want}"
                    );
                }
                // Columns past n of a wider result are left alone.
                for j in n..ldc.min(c.len() - i * ldc) {
                    assert_eq!(c[i * ldc + j], before[i * ldc + j], "{m}x{n}x{k}: column {j}");
                }
            }
        }
        test_report::passed("dot tiles on avx512");
    }
}
