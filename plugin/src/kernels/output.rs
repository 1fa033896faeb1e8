//! Kernel outputs allocated without zeroing first: the kernels here write every float of
//! their output once, and a zeroing pass before it (and the first touch of fresh pages inside
//! it) showed as ~2.5 % of an inference; the direct convolution ran its 3-channel layer 2.2×
//! faster once its output was no longer zeroed first (`gemm_shapes`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A `len`-float vector made by `fill(i, piece)` on its consecutive pieces of `chunk` floats
/// (the last one shorter), in parallel, at least `min_pieces` to a task.
///
/// # Safety
/// Every call of `fill` writes every element of the piece it is given.
pub(crate) unsafe fn par_written(
    len: usize,
    chunk: usize,
    min_pieces: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .with_min_len(min_pieces.max(1))
        .enumerate()
        .for_each(|(i, piece)| fill(i, piece));
    // SAFETY: the pieces cover 0..len, and the caller's fill initialised each of them.
    unsafe { v.set_len(len) };
    v
}

/// `piece` as the f32 slice it is, once every element has been written.
///
/// # Safety
/// Every element of `piece` is initialised.
pub(crate) unsafe fn assume_written(piece: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the caller vouches for the values.
    unsafe { &mut *(piece as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces cover the vector in order, the last one short.
    #[test]
    fn pieces_cover_the_output_in_order() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 4), (4096, 1000), (7, 1)] {
            // SAFETY: each piece is written whole.
            let v = unsafe {
                par_written(len, chunk, 1, |i, piece| {
                    for (j, d) in piece.iter_mut().enumerate() {
                        d.write((i * chunk + j) as f32);
                    }
                })
            };
            assert_eq!(v, (0..len).map(|i| i as f32).collect::<Vec<_>>(), "{len} by {chunk}");
        }
    }
}
