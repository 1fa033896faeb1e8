//! col2im of the 4 × 4, stride-2, padding-1 kernel that every strided layer of the U-Net and
//! the PatchGAN has, on AVX-512: each output row straight from its (at most) eight column rows.
//!
//! With that geometry output row `2a` gathers kernel rows 1 and 3 (input rows `a` and `a − 1`),
//! row `2a + 1` kernel rows 0 and 2 (input rows `a + 1` and `a`), and likewise for columns, so a
//! vector of 16 even outputs and one of 16 odd outputs are each four loads summed, then
//! interleaved as they are stored. The general col2im sums each plane's phases in a zeroed
//! buffer (its adds 4-wide: the baseline target) and interleaves them in a second, scalar pass;
//! here every float of the column matrix is read once and every output written once. Sums run
//! in the general col2im's order (taps by kernel row, then column, from 0; the bias last), so the
//! results are the same bits.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::im2col::Geom;
use super::isa::Isa;

/// The fewest output floats a task writes (whole rows): short rows go several to a task.
const MIN_TASK: usize = 8192;

/// Whether [`col2im`] takes geometry `g` (image `h × w` from grid `oh × ow`) on this CPU.
pub(crate) fn suits(g: &Geom) -> bool {
    cfg!(target_arch = "x86_64")
        && super::isa::active() == Isa::Avx512
        && (g.kh, g.kw, g.stride, g.pad, g.dil) == (4, 4, 2, 1, 1)
        && (g.h, g.w) == (2 * g.oh, 2 * g.ow)
}

/// `super::im2col::col2im_into` for a geometry that [`suits`], after its size checks: every
/// float of `out` written.
pub(crate) fn col2im(
    col: &[f32],
    nb: usize,
    g: &Geom,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(suits(g), "col2im stride 2: geometry or CPU not suited");
    let (s, w) = (g.grid(), g.w);
    let row_len = nb * s;
    assert!(bias.is_none_or(|b| b.len() == g.c), "col2im: bias length");
    out.par_chunks_mut(w.max(1)).with_min_len(MIN_TASK.div_ceil(w.max(1))).enumerate().for_each(
        |(row, dst)| {
            let (plane, r) = (row / g.h, row % g.h);
            let (n, c) = (plane / g.c, plane % g.c);
            let b = bias.map_or(0.0, |b| b[c]);
            // Kernel rows and the input row each reads, in kernel-row order.
            let a = r / 2;
            let taps = match r % 2 {
                0 => [(1, Some(a)), (3, a.checked_sub(1))],
                _ => [(0, Some(a + 1).filter(|&i| i < g.oh)), (2, Some(a))],
            };
            // Column row (c, ky, kx) of image n, input row iy: `ow` floats.
            let line = |ky: usize, kx: usize, iy: usize| {
                &col[((c * 4 + ky) * 4 + kx) * row_len + n * s + iy * g.ow..][..g.ow]
            };
            let lines: [Option<[&[f32]; 4]>; 2] =
                taps.map(|(ky, iy)| iy.map(|iy| std::array::from_fn(|kx| line(ky, kx, iy))));
            // SAFETY: suits (asserted; isa::active never names a level the CPU lacks) says the
            // CPU has AVX-512 F; dst is one output row of 2·ow floats and each line ow floats
            // long (slices above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                row_avx512(dst, &lines, g.ow, b)
            };
        },
    );
}

/// One output row (`2·ow` floats) from the lines of its two kernel rows (`None`: that input row
/// is outside the image), each line indexed by kernel column.
///
/// # Safety
/// The CPU has AVX-512 F; `dst.len() == 2·ow` and every line holds `ow` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(
    dst: &mut [MaybeUninit<f32>],
    lines: &[Option<[&[f32]; 4]>; 2],
    ow: usize,
    bias: f32,
) {
    use std::arch::x86_64::*;
    assert!(dst.len() == 2 * ow, "col2im stride 2: row length");
    assert!(lines.iter().flatten().flatten().all(|l| l.len() == ow), "col2im stride 2: lines");
    let d = dst.as_mut_ptr() as *mut f32;
    // Lanes 0..8 of (even, odd) interleaved, then lanes 8..16.
    let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    let hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    let vb = _mm512_set1_ps(bias);
    for b0 in (0..ow).step_by(16) {
        let n = (ow - b0).min(16);
        let m: __mmask16 = if n == 16 { !0 } else { (1 << n) - 1 };
        // Lanes whose b − 1 (kernel column 3) and b + 1 (kernel column 0) are in the row.
        let m_left = if b0 == 0 { m & !1 } else { m };
        let m_right = if b0 + n == ow { m >> 1 } else { m };
        let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for l in lines.iter().flatten() {
            let at = |kx: usize, shift: isize| l[kx].as_ptr().wrapping_offset(b0 as isize + shift);
            // SAFETY: a masked load reads only its set lanes, each at a column in 0..ow of a
            // line (m: b < ow; m_left: b − 1 ≥ 0; m_right: b + 1 < ow); the masked-off lanes
            // are never accessed, wherever their addresses fall.
            unsafe {
                even = _mm512_add_ps(even, _mm512_maskz_loadu_ps(m, at(1, 0)));
                even = _mm512_add_ps(even, _mm512_maskz_loadu_ps(m_left, at(3, -1)));
                odd = _mm512_add_ps(odd, _mm512_maskz_loadu_ps(m_right, at(0, 1)));
                odd = _mm512_add_ps(odd, _mm512_maskz_loadu_ps(m, at(2, 0)));
            }
        }
        let (even, odd) = (_mm512_add_ps(even, vb), _mm512_add_ps(odd, vb));
        let (first, second) =
            (_mm512_permutex2var_ps(even, lo, odd), _mm512_permutex2var_ps(even, hi, odd));
        // Output pairs 0..n: lanes 0..2n of the two interleaved vectors.
        let (m1, m2): (__mmask16, __mmask16) = match n {
            16 => (!0, !0),
            n if n >= 8 => (!0, ((1u32 << (2 * n - 16)) - 1) as u16),
            n => (((1u32 << (2 * n)) - 1) as u16, 0),
        };
        // SAFETY: pairs b0 .. b0 + n of the row, i.e. floats 2·b0 .. 2·(b0 + n) <= 2·ow of dst
        // (masks m1, m2 cover exactly those).
        unsafe {
            _mm512_mask_storeu_ps(d.add(2 * b0), m1, first);
            if m2 != 0 {
                _mm512_mask_storeu_ps(d.add(2 * b0 + 16), m2, second);
            }
        }
    }
}
