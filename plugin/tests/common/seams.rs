//! Tile seams, measured the same way by the plugin's tiling test and the host's end-to-end one
//! (`tests/tests/host_common` includes this file by path, so it uses std only).

/// A smooth two-axis gradient as packed RGB: the hardest case for hiding tile seams.
pub fn gradient(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 128]);
        }
    }
    v
}

/// Mean |jump| of the row/column-averaged error profile (tiled − pad, packed RGB) across lines
/// that are multiples of 16, and across all other lines. Tile origins and ends sit on multiples
/// of 32 and overlap midpoints on multiples of 16 when the sides are multiples of 32 (no
/// padding), so the first set contains every seam. Averaging along lines removes the fixtures'
/// texture.
pub fn seam_error(tiled: &[u8], pad: &[u8], w: usize, h: usize) -> (f64, f64) {
    assert_eq!((tiled.len(), pad.len()), (w * h * 3, w * h * 3), "packed RGB {w}x{h}");
    let mut cols = vec![0f64; w];
    let mut rows = vec![0f64; h];
    for (y, row) in rows.iter_mut().enumerate() {
        for (x, col) in cols.iter_mut().enumerate() {
            let i = (y * w + x) * 3;
            let d: f64 = (0..3).map(|c| tiled[i + c] as f64 - pad[i + c] as f64).sum::<f64>() / 3.0;
            *col += d / h as f64;
            *row += d / w as f64;
        }
    }
    let (mut sb, mut nb, mut si, mut ni) = (0f64, 0usize, 0f64, 0usize);
    for p in [&cols, &rows] {
        for k in 1..p.len() {
            let d = (p[k] - p[k - 1]).abs();
            if k % 16 == 0 {
                sb += d;
                nb += 1;
            } else {
                si += d;
                ni += 1;
            }
        }
    }
    (sb / nb as f64, si / ni as f64)
}
