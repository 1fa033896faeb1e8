//! Strided read-only matrix views, shared by the product kernels (`gemm`, `small_gemm`) and
//! their callers, so that transposed and per-batch views cost no copy.

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
