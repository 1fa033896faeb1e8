//! The U-Net's transposed convolutions (the up path: 4 × 4 kernels, stride 2, padding 1) on
//! Intel AMX, phase by phase, with no column matrix and no col2im.
//!
//! Output pixel `(2i + a, 2j + b)` sums only the taps of one phase `(a, b)`: rows
//! `ky = 3 − a − 2r` of input rows `i + a + r − 1`, columns `kx = 3 − b` and `1 − b` of input
//! columns `j + b − 1` and `j + b` (`r`, `a`, `b` in {0, 1}): a 2 × 2 stride-1 convolution of
//! the input per phase, the four of them the whole layer's work with no zero taps. The pair of
//! horizontal taps is two adjacent inputs, but at stride 1 the next pixel's pair overlaps it, so
//! the image is copied once as words `(x[j − 1], x[j])` per column (bf16 pairs, the size of the
//! f32 input), laid out `[row][channel][column]`: a B tile (16 channels × 16 pixels) is then 16
//! equally spaced rows of 64 bytes, as in [`super::amx_conv`]. Each 2 × 2 block of tiles runs
//! both column phases of an output row, and their sums are interleaved into the NCHW output.

use rayon::prelude::*;

use super::amx;
use super::bf16::high_bf16;
use super::isa::on_best_isa;
use super::scratch::Scratch;

/// Output channels of an `A` tile, and input channels (pair rows) of a `B` tile.
const TILE: usize = 16;

/// Whether a transposed convolution from `c` to `m` channels with these settings, on an input
/// `w` pixels wide, runs here: the U-Net's kernel 4, stride 2, padding 1, whole tiles of
/// channels, and input rows of whole tiles (or one short tile, down to the innermost grids).
pub(crate) fn suits(c: usize, m: usize, kernel: (usize, usize), w: usize, plain: bool) -> bool {
    plain
        && kernel == (4, 4)
        && c.is_multiple_of(TILE)
        && m.is_multiple_of(2 * TILE)
        && (w.is_multiple_of(TILE) || (1..TILE).contains(&w))
        && amx::ready()
}

/// Weights as `A` tiles: `[phase (a, b)][block of 16 output channels][step][16 rows][16
/// words]`, a step being a tap row `r` and 16 input channels (in that order).
pub(crate) struct AmxConvTWeights {
    m: usize,
    c: usize,
    words: Vec<u32>,
}

impl AmxConvTWeights {
    /// Packs `w`, `(m, 4, 4, c)` contiguous (the frozen transposed layers' row-major layout).
    pub(crate) fn pack(w: &[f32], m: usize, c: usize) -> Self {
        assert_eq!(w.len(), m * 16 * c, "amx conv_transpose: weights are not m·4·4·c");
        assert!(m.is_multiple_of(TILE) && c.is_multiple_of(TILE));
        let steps = 2 * (c / TILE);
        let mut words = vec![0u32; 4 * m * steps * TILE];
        words.par_chunks_mut(steps * TILE * TILE).enumerate().for_each(|(i, block)| {
            let (phase, ob) = (i / (m / TILE), i % (m / TILE));
            let (a, b) = (phase / 2, phase % 2);
            for (t, tile) in block.chunks_exact_mut(TILE * TILE).enumerate() {
                let (r, cb) = (t / (c / TILE), t % (c / TILE));
                let ky = 3 - a - 2 * r;
                for (o, row) in tile.chunks_exact_mut(TILE).enumerate() {
                    for (j, word) in row.iter_mut().enumerate() {
                        let at = |kx: usize| {
                            w[(((ob * TILE + o) * 4 + ky) * 4 + kx) * c + cb * TILE + j]
                        };
                        *word = (high_bf16(at(3 - b)) >> 16) | high_bf16(at(1 - b));
                    }
                }
            }
        });
        Self { m, c, words }
    }

    pub(crate) fn rows(&self) -> usize {
        self.m
    }

    /// Input channels.
    pub(crate) fn channels(&self) -> usize {
        self.c
    }

    fn steps(&self) -> usize {
        2 * (self.c / TILE)
    }

    /// Block `ob` of 16 output channels of phase `(a, b)`: its `steps` tiles.
    fn tiles(&self, a: usize, b: usize, ob: usize) -> &[u32] {
        let len = self.steps() * TILE * TILE;
        &self.words[((a * 2 + b) * (self.m / TILE) + ob) * len..][..len]
    }
}

on_best_isa! {
    /// `dst[j] = (bf16(f(src[j − 1])), bf16(f(src[j])))` for `j` in `0..=src.len()` (zero
    /// outside `src`), `f` the ReLU when `relu`.
    fn pairs_row => pairs_row_body(src: &[f32], dst: &mut [u32], relu: bool)
}

#[inline(always)]
fn pairs_row_body(src: &[f32], dst: &mut [u32], relu: bool) {
    let f = |v: f32| if relu && v < 0.0 { 0.0 } else { v };
    let n = src.len();
    if n == 0 {
        return;
    }
    dst[0] = high_bf16(f(src[0]));
    // Two shifted reads rather than `windows`, which does not vectorise.
    for ((d, &l), &h) in dst[1..n].iter_mut().zip(&src[..n - 1]).zip(&src[1..]) {
        *d = (high_bf16(f(l)) >> 16) | high_bf16(f(h));
    }
    dst[n] = high_bf16(f(src[n - 1])) >> 16;
}

/// Columns `2j` and `2j + 1` of output row `dst` of each of 32 channels (`plane` floats
/// apart) from the column phases' sums of one segment (`at` into each channel's row of
/// [`Sums`]).
///
/// # Safety
/// The CPU has AVX-512 F; `dst` is valid for writes of 32 rows of `2·n` floats, `plane`
/// floats apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave(sums: &Sums, at: usize, n: usize, dst: *mut f32, plane: usize) {
    for o in 0..2 * TILE {
        let (lo, hi) = (&sums.0[0][o * 2 * TILE + at..][..n], &sums.0[1][o * 2 * TILE + at..][..n]);
        // SAFETY: row o of the 32 the caller vouches for.
        let d = unsafe { std::slice::from_raw_parts_mut(dst.add(o * plane), 2 * n) };
        for ((d, &l), &h) in d.chunks_exact_mut(2).zip(lo).zip(hi) {
            d[0] = l;
            d[1] = h;
        }
    }
}

/// Sums of the two column phases: `[phase][32 channels][2 segments][16 pixels]`.
#[repr(C, align(64))]
struct Sums([[f32; 2 * 2 * TILE * TILE]; 2]);

/// `nb` images `(c, h, w)` through the transposed convolution with weights `wt`, `bias` added,
/// on `relu(x)` when asked: the `(nb, m, 2h, 2w)` result. The input is the concatenation along
/// channels of `parts` (data and channels each), read where they lie: the U-Net's skip
/// concatenation (and its ReLU) is never written out.
pub(crate) fn conv_t(
    parts: &[(&[f32], usize)],
    nb: usize,
    (h, w): (usize, usize),
    wt: &AmxConvTWeights,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (m, c) = (wt.m, wt.c);
    assert!(
        suits(c, m, (4, 4), w, true),
        "amx conv_transpose: {c}->{m} on width {w} does not suit"
    );
    assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), c, "amx conv_transpose: channels differ");
    for &(x, pc) in parts {
        assert_eq!(x.len(), nb * pc * h * w, "amx conv_transpose: input is not nb·c·h·w");
    }
    let source = super::part_channels(parts);
    // The pair copy: rows −1..=h of the input (zero outside), columns j = 0..=w.
    let (hp, wp) = (h + 2, w + 1);
    let row = c * wp;
    let mut buf = Scratch::take(nb * hp * row);
    let words: &mut [u32] = bytemuck::cast_slice_mut(&mut buf[..]);
    words.par_chunks_mut(row).enumerate().for_each(|(i, dst)| {
        let (n, y) = (i / hp, (i % hp).wrapping_sub(1));
        if y >= h {
            dst.fill(0);
            return;
        }
        for (out, &(i, cc)) in dst.chunks_exact_mut(wp).zip(&source) {
            let (x, pc) = parts[i];
            pairs_row(&x[((n * pc + cc) * h + y) * w..][..w], out, relu);
        }
    });
    let words: &[u32] = bytemuck::cast_slice(&buf[..]);
    let starts = amx::bias_rows(bias, m);
    let grid = amx::Segments::new(h, w);
    let (oh, ow) = (2 * h, 2 * w);
    let mut out = vec![0f32; nb * m * oh * ow];
    let dst = out.as_mut_ptr() as usize;
    amx::for_each_task(nb, m, grid.count, |n, b, segs| {
        let job = Job {
            w: wt,
            image: &words[n * hp * row..][..hp * row],
            wp,
            starts: &starts[b * 2 * TILE * TILE..][..2 * TILE * TILE],
            dst: (dst as *mut f32).wrapping_add((n * m + b * 2 * TILE) * oh * ow),
            ow,
            plane: oh * ow,
            grid,
            block: b,
        };
        // SAFETY: AMX is ready (`suits`, asserted); the task writes output channels
        // 32b..32b+32 of image n at the output rows and columns of its segments only, disjoint
        // from every other task's, inside `out` (which outlives the loop).
        unsafe { job.run(segs) };
    });
    out
}

/// One task's inputs: the image's pair copy, the block's bias rows, its output's start.
struct Job<'a> {
    w: &'a AmxConvTWeights,
    image: &'a [u32],
    wp: usize,
    starts: &'a [f32],
    dst: *mut f32,
    ow: usize,
    plane: usize,
    grid: amx::Segments,
    block: usize,
}

impl Job<'_> {
    /// Segments `segs` (two at a time) of the block's 32 output channels, all four phases.
    ///
    /// # Safety
    /// AMX is ready ([`amx::ready`]); `dst` is valid for writes of this block's channels at the
    /// output pixels of those segments, which no one else touches meanwhile.
    #[cfg(target_arch = "x86_64")]
    #[inline(never)] // a symbol of its own in `perf` profiles
    unsafe fn run(&self, segs: std::ops::Range<usize>) {
        let c = self.w.c;
        let (steps, cb) = (self.w.steps(), c / TILE);
        let last = self.grid.at(segs.end - 1);
        // The furthest word a B load reaches: tap row 1 of phase 1, channel row 15, column
        // phase 1, grid.cols words.
        let reach = ((last.0 + 2) * c + c - 1) * self.wp + last.1 + 1 + self.grid.cols;
        assert!(reach <= self.image.len(), "amx conv_transpose: pair copy too short");
        assert!(self.starts.len() >= 2 * TILE * TILE, "amx conv_transpose: bias rows too short");
        let mut sums = Sums([[0.0; 2 * 2 * TILE * TILE]; 2]);
        // SAFETY: AMX is ready (the caller's contract).
        let tiles = unsafe { amx::tiles::Tiles::load(&amx::block_config(self.grid.cols)) };
        let image = self.image.as_ptr();
        let bias = self.starts.as_ptr();
        for s0 in segs.clone().step_by(2) {
            let two = s0 + 1 < segs.end;
            let (i0, j0) = self.grid.at(s0);
            let (i1, j1) = if two { self.grid.at(s0 + 1) } else { (i0, j0) };
            for a in 0..2 {
                for (b, sums) in sums.0.iter_mut().enumerate() {
                    let a0 = self.w.tiles(a, b, 2 * self.block).as_ptr();
                    let a1 = self.w.tiles(a, b, 2 * self.block + 1).as_ptr();
                    let s = sums.as_mut_ptr();
                    // SAFETY: the bias rows are 32 rows of 16 floats (asserted); the A tiles
                    // lie inside the phase's blocks (`steps` tiles each); every B load ends at
                    // or before `reach` (asserted; the last segment reaches furthest); the
                    // stores fill `sums` (32 rows of 2 × 16 floats, 128 bytes apart).
                    unsafe {
                        tiles.start(bias, bias.add(TILE * TILE), TILE * 4);
                        for t in 0..steps {
                            let (r, ch) = (t / cb, (t % cb) * TILE);
                            let p0 = ((i0 + a + r) * c + ch) * self.wp + j0 + b;
                            let p1 = ((i1 + a + r) * c + ch) * self.wp + j1 + b;
                            tiles.multiply(
                                a0.add(t * TILE * TILE),
                                a1.add(t * TILE * TILE),
                                image.add(p0).cast(),
                                image.add(p1).cast(),
                                (TILE * 4, self.wp * 4),
                            );
                        }
                        let d =
                            [s, s.add(TILE), s.add(2 * TILE * TILE), s.add(2 * TILE * TILE + TILE)];
                        tiles.store(d, 2 * TILE * 4, two);
                    }
                }
                for (k, &(i, j)) in [(i0, j0), (i1, j1)][..1 + two as usize].iter().enumerate() {
                    let row = (2 * i + a) * self.ow + 2 * j;
                    // SAFETY: AMX implies AVX-512 F; the 32 channels of this block at row
                    // 2i + a, columns 2j..2j + 2·grid.cols: inside the caller's region.
                    unsafe {
                        interleave(&sums, k * TILE, self.grid.cols, self.dst.add(row), self.plane)
                    };
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _: std::ops::Range<usize>) {
        unreachable!("AMX runs only where amx::ready()")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16::{from_bf16, to_bf16};
    use crate::kernels::conv_transpose::reference;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    #[test]
    fn amx_phases_match_the_transposed_convolution_on_bf16_operands() {
        if !amx::ready() {
            test_report::skipped("amx conv_transpose", "no AMX on this CPU or not permitted");
            return;
        }
        let round = |v: f32| from_bf16(to_bf16(v));
        // (images, in channels, out channels, height, width, relu): rows of whole tiles, two
        // tiles, short rows, an odd segment count, a non-square input.
        let cases = [
            (1, 64, 32, 16, 32, true),
            (2, 16, 64, 16, 16, false),
            (1, 32, 32, 8, 8, true),
            (1, 16, 96, 4, 4, false),
            (1, 16, 32, 3, 5, true),
            (2, 32, 64, 2, 2, true),
            (1, 16, 32, 1, 1, false),
        ];
        for (ci, &(nb, c, m, h, w, relu)) in cases.iter().enumerate() {
            assert!(suits(c, m, (4, 4), w, true), "case {ci} should suit");
            let x = test_values(nb * c * h * w, 50.0);
            let wc = test_values(c * m * 16, 500.0);
            let bias = test_values(m, 100.0);
            let packed = AmxConvTWeights::pack(&reference::row_major(&wc, c, m), m, c);
            // The input in two parts, as the U-Net's skip concatenation.
            let (lo, hi) = x.split_at(nb * 16 * h * w);
            let parts: Vec<(&[f32], usize)> = match nb {
                1 => vec![(lo, 16), (hi, c - 16)],
                _ => vec![(&x[..], c)],
            };
            let got = conv_t(&parts, nb, (h, w), &packed, Some(&bias), relu);
            // The definition on the operands the tiles multiply: rounded to bf16.
            let xr: Vec<f32> =
                x.iter().map(|&v| round(if relu && v < 0.0 { 0.0 } else { v })).collect();
            let wr: Vec<f32> = wc.iter().map(|&v| round(v)).collect();
            let want = reference::conv_t(&xr, nb, c, (h, w), &wr, m, &bias);
            reference::assert_close(&got, &want, 1e-4, &format!("amx case {ci}"));
        }
        test_report::passed("amx conv_transpose");
    }
}
