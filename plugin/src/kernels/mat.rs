//! Strided read-only matrix views, shared by the product kernels (`gemm`, `small_gemm`) and
//! their callers, so that transposed and per-batch views cost no copy; and the one transposing
//! copy they need.

use rayon::prelude::*;

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
    /// Whether every element the view addresses lies inside `data`.
    pub fn in_bounds(&self) -> bool {
        extent(self.rows, self.cols, self.rs, self.cs) <= self.data.len()
    }
}

/// Largest index a strided `rows × cols` view touches, plus one (0 when empty).
pub(crate) fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `src` (`rows × cols`, row-major) transposed, in parallel over blocks of destination rows,
/// through `B × B` tiles that stay in L1. The closure takes the sizes by value (`move`), so
/// the loop need not reload them for every element in case they alias `dst`.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let mut dst = vec![0f32; src.len()];
    if src.is_empty() {
        return dst;
    }
    dst.par_chunks_mut(B * rows).enumerate().for_each(move |(bi, d)| {
        let (c0, nc) = (bi * B, d.len() / rows);
        for r0 in (0..rows).step_by(B) {
            for c in 0..nc {
                for r in r0..(r0 + B).min(rows) {
                    d[c * rows + r] = src[r * cols + c0 + c];
                }
            }
        }
    });
    dst
}

/// `len` test values spread over `±50 / scale` in a scrambled order (no two neighbours alike,
/// so a misplaced element shows), shared by the kernels' tests.
#[cfg(test)]
pub(crate) fn test_values(len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / scale).collect()
}

/// Test oracle of the product kernels: asserts that `dst` (rows `rs` apart, filled with 1
/// before an accumulating product) holds `1 + a·b` summed in f64, to f32 rounding, and that the
/// padding after each row's `b.cols` results was not written.
#[cfg(test)]
pub(crate) fn assert_product(dst: &[f32], rs: usize, a: Mat, b: Mat, what: &str) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    for i in 0..m {
        for j in 0..n {
            let want = 1.0
                + (0..k)
                    .map(|kk| {
                        a.data[i * a.rs + kk * a.cs] as f64 * b.data[kk * b.rs + j * b.cs] as f64
                    })
                    .sum::<f64>();
            let got = dst[i * rs + j] as f64;
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{what} {m}x{n}x{k} at ({i}, {j}): {got} vs {want}"
            );
        }
        assert!(
            dst[i * rs + n..(i + 1) * rs].iter().all(|&v| v == 1.0),
            "{what} {m}x{n}x{k}: padding of row {i} written"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, on sizes that leave partial tiles both ways.
    #[test]
    fn transpose_moves_every_element() {
        for (rows, cols) in [(1, 1), (3, 70), (65, 33), (128, 96)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], src[r * cols + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
        }
    }
}
