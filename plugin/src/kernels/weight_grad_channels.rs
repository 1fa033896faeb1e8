//! The weight gradient of many-channel convolutions in the channel form of
//! [`super::direct_channels`], on AVX-512: `dW[co, t] = Σ_n Σ_p act[n, co, p] · img[n, t, p]`,
//! with `img[n, t, p]` tap `t` of grid position `p` read straight from the zero-padded image.
//!
//! im2col + gemm (`weight_grad::weight_grad_blocks`) ran the U-Net's gradients at 120–145
//! GFLOP/s: the column matrix is as large as the product's reduction is long. Here a register
//! tile holds [`CV`] vectors of 16 output channels × [`NT`] taps and runs down the grid: per
//! position, `CV` aligned loads of the grid gradient (laid out channels-last first) and `NT`
//! broadcasts of image floats feed 24 FMAs; the sums stay in registers over a chunk of grid rows
//! (whose gradient, [`CHUNK`] positions × 64 channels, stays in L1 while every tile of the task
//! reuses it).
//!
//! Each gradient element is one sum in a fixed order (images, then positions), whatever the
//! threads: the result is the same on any pool.

use rayon::prelude::*;

use super::direct_channels::{self, aligned, Packing, Padded, CB};
use super::im2col::Geom;
use super::scratch::Scratch;

/// Channel vectors per register tile (of [`CB`] / 16).
const CV: usize = CB / 16;
/// Taps per register tile: `CV·NT` = 24 accumulators.
const NT: usize = 6;
/// Grid positions per chunk (whole grid rows, at least one): their gradient, `CHUNK × CB`
/// floats (32 KB), stays in L1 while the task's tiles run over it.
const CHUNK: usize = 128;
/// Tiles per task: the task's sums (`TILES × NT × CB` floats, 12 KB) next to the chunk.
const TILES: usize = 8;

/// Whether this kernel runs the weight gradient of a layer of `m` grid channels and `rows`
/// (image channels × taps) over a reduction of `reduction` grid positions (all images): as the
/// forward's channel form ([`direct_channels::suits`]), on undilated kernels, with a reduction
/// of at least [`MIN_REDUCTION`].
pub(crate) fn suits(m: usize, g: &Geom, reduction: usize) -> bool {
    g.dil == 1
        && reduction >= MIN_REDUCTION
        && direct_channels::suits(m, g.rows(), Packing::PerCall)
}

/// Shorter reductions stay on im2col + gemm: each tile's sums go to memory and back per chunk
/// of the grid and its taps' share of the work shrinks with the grid. ngf-32 training-step
/// profile (2-thread AVX-512 Xeon, 11 steps): ahead from 32×32 grids (128→64 channels 72.8 →
/// 43.6 ms, the PatchGAN's 31×31 stride-1 layer 115.9 → 88.8), behind at 16×16 (512→128 24.2
/// → 30.3 ms) and far behind on the smaller grids (8×8 16.9 → 38.2). The PatchGAN's 31×31
/// layer at batch 1 (961 positions) is ahead too: 175–190 → 121–127 ms over 26 calls (2
/// interleaved runs of 13 steps), ~4.5 ms a step.
const MIN_REDUCTION: usize = 900;

/// `dW` (`m × g.rows()`, row-major) = `Σ_n act[n] · im2col(img'[n])ᵀ` for `nb` grids `act`
/// (`m × g.grid()` each) and images `img` (`g.c × g.h × g.w` each), `img'` = `leaky_relu(img,
/// img_act)` when `img_act` is a slope (applied in the padded copy), else `img`. Callers check
/// [`suits`].
pub(crate) fn weight_grad(
    act: &[f32],
    nb: usize,
    m: usize,
    img: &[f32],
    g: &Geom,
    img_act: Option<f32>,
) -> Vec<f32> {
    let (s, k) = (g.grid(), g.rows());
    assert!(direct_channels::available(), "weight gradient: AVX-512 not on this CPU");
    assert_eq!(act.len(), nb * m * s, "weight gradient: grid gradient size");
    assert_eq!(img.len(), nb * g.c * g.h * g.w, "weight gradient: image size");
    let blocks = m.div_ceil(CB);
    // The grid gradient channels-last, per image and block: [n][b][p][CB] (zeros past m).
    let mut buf = Scratch::take(nb * blocks * s * CB + 16);
    let dyt = aligned(&mut buf, nb * blocks * s * CB);
    dyt.par_chunks_mut(s * CB).enumerate().for_each(|(i, dst)| {
        let (n, b) = (i / blocks, i % blocks);
        let channels = CB.min(m - b * CB);
        let src = &act[(n * m + b * CB) * s..][..channels * s];
        // SAFETY: src holds `channels` planes of s floats, dst s × CB; AVX-512 (asserted).
        unsafe { direct_channels::to_channels_last(src, channels, s, s, dst) };
    });
    let dyt = &*dyt;
    let pad = Padded::new(g);
    let per_image = g.c * pad.plane();
    let xpad = pad.fill_images(img, nb, g, img_act);
    let offs = pad.tap_offsets(g);
    // Reads stay in the image: the last position's base plus the furthest tap.
    let last = ((g.oh - 1) * pad.pw + g.ow - 1) * g.stride;
    assert!(last + offs.iter().max().copied().unwrap_or(0) < per_image, "weight gradient: pad");
    let rows_per_chunk = (CHUNK / g.ow).max(1);
    let tiles = k.div_ceil(NT);
    // Every task streams its block's whole grid gradient. With one block of channels (ngf 32's
    // 32 → 64 layer) the groups of TILES tiles made 11 tasks that each streamed all of it:
    // two per thread instead, kernels bench ngf 32 batch 4, 2 interleaved runs, this layer
    // 164.8 / 165.5 → 149.7 / 148.4 ms over 27 calls (`gemm_shapes` 4.7–5.3 → 4.2–4.6 ms a
    // call); with more blocks the tasks stream a block each and fewer groups measured slower
    // (64 → 128 @64² batch 4: 3.7–3.9 ms at 11 groups, 3.9 at 8, 4.3 at 4).
    let groups = match blocks {
        1 => tiles.div_ceil(TILES).min(2 * rayon::current_num_threads()).max(1),
        _ => tiles.div_ceil(TILES),
    };
    let per_group = tiles.div_ceil(groups);
    let mut dw: Vec<f32> = Vec::with_capacity(m * k);
    let out = dw.as_mut_ptr() as usize;
    (0..blocks * groups).into_par_iter().for_each(|task| {
        let (b, grp) = (task / groups, task % groups);
        let (t0, t1) = (grp * per_group * NT, ((grp + 1) * per_group * NT).min(k));
        let mut buf = vec![0f32; (t1 - t0) * CB + 16];
        let sums = aligned(&mut buf, (t1 - t0) * CB);
        for n in 0..nb {
            let x = &xpad[n * per_image..][..per_image];
            let dy = &dyt[(n * blocks + b) * s * CB..][..s * CB];
            for oy0 in (0..g.oh).step_by(rows_per_chunk) {
                let oys = oy0..(oy0 + rows_per_chunk).min(g.oh);
                let chunk =
                    Chunk { dy: &dy[oy0 * g.ow * CB..], oys, ow: g.ow, s: g.stride, pw: pad.pw, x };
                for t in (t0..t1).step_by(NT) {
                    let acc = &mut sums[(t - t0) * CB..];
                    let o = &offs[t..];
                    // SAFETY: every read is inside x (asserted above for the last position and
                    // the furthest tap) and inside dy (whole rows of the grid); acc holds the
                    // tile's taps' CB sums; AVX-512 (asserted).
                    unsafe {
                        match t1 - t {
                            1 => tile::<1>(&chunk, taps(o), acc),
                            2 => tile::<2>(&chunk, taps(o), acc),
                            3 => tile::<3>(&chunk, taps(o), acc),
                            4 => tile::<4>(&chunk, taps(o), acc),
                            5 => tile::<5>(&chunk, taps(o), acc),
                            _ => tile::<NT>(&chunk, taps(o), acc),
                        }
                    }
                }
            }
        }
        // Tap-major sums into the block's rows of dW.
        for j in 0..CB.min(m - b * CB) {
            for t in t0..t1 {
                // SAFETY: row b·CB + j < m, column t < k: inside dW (m·k floats), written by
                // this task alone (tasks own disjoint (block, taps)s).
                unsafe { *(out as *mut f32).add((b * CB + j) * k + t) = sums[(t - t0) * CB + j] };
            }
        }
    });
    // SAFETY: the tasks wrote every (row < m, column < k): the blocks cover the rows, the
    // groups the columns.
    unsafe { dw.set_len(m * k) };
    dw
}

/// [`weight_grad`] of a k4 s2 p1 layer of `c` → `m` channels on `nb` `side × side` images,
/// for `gemm_shapes` (which times it; the gradients' values are not the point). `None` where
/// the kernel does not run (no AVX-512).
#[doc(hidden)]
pub fn bench(dy: &[f32], x: &[f32], nb: usize, (c, side, m): (usize, usize, usize)) -> Option<f32> {
    let g = Geom::conv(c, (side, side), (4, 4), 2, 1, 1).ok()?;
    (direct_channels::available()
        && dy.len() == nb * m * g.grid()
        && x.len() == nb * c * side * side)
        .then(|| weight_grad(dy, nb, m, x, &g, None)[0])
}

/// The first `P` tap offsets of `o`.
fn taps<const P: usize>(o: &[usize]) -> [usize; P] {
    std::array::from_fn(|j| o[j])
}

/// A chunk of grid rows of one image.
struct Chunk<'a> {
    /// The chunk's gradient, channels-last from its first row.
    dy: &'a [f32],
    oys: std::ops::Range<usize>,
    ow: usize,
    s: usize,
    pw: usize,
    /// The image's padded planes.
    x: &'a [f32],
}

/// `acc` (`P × CB`, tap-major) += the chunk's positions' products of the gradient's [`CB`]
/// channels with taps `offs` of the image.
///
/// # Safety
/// The CPU has AVX-512 F; every `(oy·pw + ox)·s + off` is inside `chunk.x`, `chunk.dy` holds
/// the chunk's rows × `ow` × `CB` floats, `acc` `P · CB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const P: usize>(chunk: &Chunk, offs: [usize; P], acc: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(acc.len() >= P * CB && chunk.dy.len() >= chunk.oys.len() * chunk.ow * CB);
    let a = acc.as_mut_ptr();
    // SAFETY (every access): the contract's bounds.
    unsafe {
        let mut sum: [[__m512; P]; CV] = std::array::from_fn(|v| {
            std::array::from_fn(|j| _mm512_loadu_ps(a.add(j * CB + v * 16)))
        });
        let mut d = chunk.dy.as_ptr();
        for oy in chunk.oys.clone() {
            let row = chunk.x.as_ptr().add(oy * chunk.s * chunk.pw);
            for ox in 0..chunk.ow {
                let dv: [__m512; CV] = std::array::from_fn(|v| _mm512_loadu_ps(d.add(v * 16)));
                let xp = row.add(ox * chunk.s);
                for j in 0..P {
                    let x = _mm512_set1_ps(*xp.add(offs[j]));
                    for v in 0..CV {
                        sum[v][j] = _mm512_fmadd_ps(dv[v], x, sum[v][j]);
                    }
                }
                d = d.add(CB);
            }
        }
        for (v, sv) in sum.iter().enumerate() {
            for (j, &x) in sv.iter().enumerate() {
                _mm512_storeu_ps(a.add(j * CB + v * 16), x);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const P: usize>(_: &Chunk, _: [usize; P], _: &mut [f32]) {
    unreachable!("weight gradient: AVX-512 only")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// Against a direct f64 sum of the definition: the U-Net's geometry on grids whose rows
    /// span chunks or fill several, stride 1 (the PatchGAN), an odd kernel, tap counts that
    /// leave partial tiles and groups, channel counts that leave a partial block, several
    /// images, a grid shorter than the full one (as transposed convolutions have).
    #[test]
    fn channel_weight_gradient_matches_the_definition() {
        if !direct_channels::available() {
            test_report::skipped("weight gradient by channels on avx512", "not on this CPU");
            return;
        }
        for (nb, c, (h, wd), m, kh, st, pad, short) in [
            (1, 16, (32, 32), 64, 4, 2, 1, 0),
            (2, 17, (20, 34), 80, 4, 2, 1, 0),
            (1, 16, (9, 9), 64, 4, 1, 1, 0),
            (3, 29, (7, 12), 64, 3, 1, 1, 0),
            (1, 16, (12, 12), 70, 4, 2, 1, 1),
        ] {
            let mut g = Geom::conv(c, (h, wd), (kh, kh), st, pad, 1).expect("geometry");
            (g.oh, g.ow) = (g.oh - short, g.ow - short);
            let (s, k) = (g.grid(), g.rows());
            let dy = test_values(nb * m * s, 30.0);
            let x = test_values(nb * c * h * wd, 50.0);
            let got = weight_grad(&dy, nb, m, &x, &g, None);
            for co in 0..m {
                for t in 0..k {
                    let (ci, ky, kx) = (t / (kh * kh), t / kh % kh, t % kh);
                    let mut want = 0f64;
                    for n in 0..nb {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let iy = (oy * st + ky) as isize - pad as isize;
                                let ix = (ox * st + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((n * c + ci) * h + iy as usize) * wd + ix as usize];
                                want += dy[(n * m + co) * s + oy * g.ow + ox] as f64 * xv as f64;
                            }
                        }
                    }
                    let got = got[co * k + t] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{g:?} m {m} at ({co}, {t}): {got} vs {want}"
                    );
                }
            }
        }
        test_report::passed("weight gradient by channels on avx512");
    }
}
