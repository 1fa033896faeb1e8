//! The U-Net's strided convolutions (the down path: 4 × 4 kernels, stride 2) on Intel AMX
//! straight from the image, with no column matrix.
//!
//! AMX multiplies a 16 × 32 bf16 tile `A` by a 32 × 16 tile `B` whose rows are *pairs* along
//! the reduction (the "VNNI" layout). At stride 2, the pair of horizontal taps `(2q, 2q + 1)`
//! of output pixel `x` reads input columns `2x + 2q` and `2x + 2q + 1` (padded coordinates):
//! two adjacent bf16 values, one 32-bit word, and the next pixel's pair is the next word. So a
//! row of `B` — one input channel at one tap row `ky` and tap pair `q`, 16 output pixels — is
//! 64 contiguous bytes of a padded bf16 copy of the image, and with that copy laid out
//! `[row][channel][column]` the 16 rows of a `B` tile (16 channels) are equally spaced: one
//! `tileloadd` each, no im2col (which at ngf 32 cost more than the products it fed: the
//! 32 → 64 layer 1.6 ms a call, a third of it packing). The weights are packed once as the
//! matching `A` tiles, the sums start from the bias and are stored straight into the NCHW
//! output, 16 output channels × 16 pixels of one row per tile.

use rayon::prelude::*;

use super::amx;
use super::bf16::high_bf16;
use super::im2col::Geom;
use super::isa::on_best_isa;
use super::scratch::Scratch;

/// Output channels of an `A` tile, and input channels (pair rows) of a `B` tile.
const TILE: usize = 16;

/// Whether a layer of `m` output channels on geometry `g` runs here: AMX ready, stride 2 with
/// pairs of horizontal taps, whole tiles of channels, and output rows of whole tiles (or one
/// short tile of at least 2 pixels: on the innermost grids the layer streams its weights, and
/// at a 1 × 1 output the f32 channel form, which prefetches them, ran 512→512 in 0.4–0.6 ms a
/// call against 0.85–0.9 here; at 2 × 2 AMX's bf16 weights won, 1.6–1.8 → 0.8–1.0 ms).
pub(crate) fn suits(g: &Geom, m: usize) -> bool {
    g.stride == 2
        && g.dil == 1
        && g.kw.is_multiple_of(2)
        && g.c.is_multiple_of(TILE)
        && m.is_multiple_of(2 * TILE)
        && (g.ow.is_multiple_of(TILE) || (2..TILE).contains(&g.ow))
        && amx::ready()
}

/// Weights as `A` tiles: `[block of 16 output channels][step][16 rows][16 words]`, a step
/// being a tap row, a tap pair and 16 input channels (`(ky, q, channel block)`, in that order).
pub(crate) struct AmxConvWeights {
    m: usize,
    c: usize,
    kh: usize,
    kw: usize,
    words: Vec<u32>,
}

impl AmxConvWeights {
    /// Packs `w`, `(m, c, kh, kw)` contiguous (as `nn.Conv2d` holds it).
    pub(crate) fn pack(w: &[f32], m: usize, c: usize, kh: usize, kw: usize) -> Self {
        assert_eq!(w.len(), m * c * kh * kw, "amx conv: weights are not m·c·kh·kw");
        assert!(m.is_multiple_of(TILE) && c.is_multiple_of(TILE) && kw.is_multiple_of(2));
        let steps = kh * (kw / 2) * (c / TILE);
        let mut words = vec![0u32; m * steps * TILE];
        words.par_chunks_mut(steps * TILE * TILE).enumerate().for_each(|(b, block)| {
            for (t, tile) in block.chunks_exact_mut(TILE * TILE).enumerate() {
                let cb = t % (c / TILE);
                let (ky, q) = (t / (c / TILE) / (kw / 2), t / (c / TILE) % (kw / 2));
                for (r, row) in tile.chunks_exact_mut(TILE).enumerate() {
                    for (j, word) in row.iter_mut().enumerate() {
                        let at = |kx: usize| {
                            w[(((b * TILE + r) * c + cb * TILE + j) * kh + ky) * kw + kx]
                        };
                        *word = (high_bf16(at(2 * q)) >> 16) | high_bf16(at(2 * q + 1));
                    }
                }
            }
        });
        Self { m, c, kh, kw, words }
    }

    pub(crate) fn rows(&self) -> usize {
        self.m
    }

    /// Input channels.
    pub(crate) fn channels(&self) -> usize {
        self.c
    }

    pub(crate) fn kernel(&self) -> (usize, usize) {
        (self.kh, self.kw)
    }

    fn steps(&self) -> usize {
        self.kh * (self.kw / 2) * (self.c / TILE)
    }
}

/// The padded bf16 copy of a batch: per image `[row][channel][column]`, `leaky_relu(x, act)`
/// when asked, zeros around.
struct Padded {
    buf: Scratch,
    hp: usize,
    wp: usize,
}

impl Padded {
    fn new(x: &[f32], nb: usize, g: &Geom, act: Option<f32>) -> Self {
        // Rows and columns the taps reach: 2·(o − 1) + k.
        let hp = 2 * g.oh + g.kh - 2;
        let wp = (2 * g.ow + g.kw - 2).next_multiple_of(2);
        let row = g.c * wp;
        let mut buf = Scratch::take((nb * hp * row).div_ceil(2));
        let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut buf[..]);
        halves[..nb * hp * row].par_chunks_mut(row).enumerate().for_each(|(i, dst)| {
            let (n, yp) = (i / hp, i % hp);
            let y = yp.wrapping_sub(g.pad);
            if y >= g.h {
                dst.fill(0);
                return;
            }
            // Columns [pad, pad + w) hold the image, clipped to the columns the taps reach.
            let (x0, x1) = (g.pad.min(wp), (g.pad + g.w).min(wp));
            for (ci, out) in dst.chunks_exact_mut(wp).enumerate() {
                let src = &x[((n * g.c + ci) * g.h + y) * g.w..][..x1 - x0];
                out[..x0].fill(0);
                to_bf16_row(src, &mut out[x0..x1], act.unwrap_or(1.0));
                out[x1..].fill(0);
            }
        });
        Self { buf, hp, wp }
    }

    fn halves(&self) -> &[u16] {
        bytemuck::cast_slice(&self.buf[..])
    }
}

on_best_isa! {
    /// `dst = bf16(leaky_relu(src, slope))` (slope 1: the identity), rounded to nearest even.
    pub(crate) fn to_bf16_row => to_bf16_row_body(src: &[f32], dst: &mut [u16], slope: f32)
}

#[inline(always)]
fn to_bf16_row_body(src: &[f32], dst: &mut [u16], slope: f32) {
    for (d, &v) in dst.iter_mut().zip(src) {
        let v = if v < 0.0 { v * slope } else { v };
        *d = (high_bf16(v) >> 16) as u16;
    }
}

/// `nb` images through the convolution with weights `w` (geometry `g`), `bias` added, on
/// `leaky_relu(x, act)` when `act` is a slope: the `(nb, m, oh, ow)` result.
pub(crate) fn conv(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: &AmxConvWeights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let m = w.m;
    assert!(suits(g, m), "amx conv: geometry {g:?} with {m} outputs does not suit");
    assert_eq!((g.c, g.kh, g.kw), (w.c, w.kh, w.kw), "amx conv: weights do not fit the geometry");
    assert_eq!(x.len(), nb * g.c * g.h * g.w, "amx conv: input is not nb·c·h·w");
    let p = Padded::new(x, nb, g, act);
    let starts = amx::bias_rows(bias, m);
    let grid = amx::Segments::new(g.oh, g.ow);
    let mut out = vec![0f32; nb * m * g.oh * g.ow];
    let dst = out.as_mut_ptr() as usize;
    let halves = p.halves();
    amx::for_each_task(nb, m, grid.count, |n, b, segs| {
        let job = Job {
            w,
            image: &halves[n * p.hp * g.c * p.wp..][..p.hp * g.c * p.wp],
            wp: p.wp,
            starts: &starts[b * 2 * TILE * TILE..][..2 * TILE * TILE],
            dst: (dst as *mut f32).wrapping_add((n * m + b * 2 * TILE) * g.oh * g.ow),
            plane: g.oh * g.ow,
            ow: g.ow,
            grid,
            block: b,
        };
        // SAFETY: amx::ready held in `suits` (asserted above); the task writes output channels
        // 32b..32b+32 of image n at its segments only, disjoint from every other task, inside
        // `out` (which outlives the loop); the image slice and the weights are sized for every
        // tile the job loads (checked in `Job::run`).
        unsafe { job.run(segs) };
    });
    out
}

/// What one task needs: the image's padded copy, the block's weights and bias rows, and where
/// its output channels start.
struct Job<'a> {
    w: &'a AmxConvWeights,
    image: &'a [u16],
    wp: usize,
    starts: &'a [f32],
    dst: *mut f32,
    plane: usize,
    ow: usize,
    grid: amx::Segments,
    block: usize,
}

impl Job<'_> {
    /// Segments `segs` (two at a time) of the block's 32 output channels.
    ///
    /// # Safety
    /// AMX is ready ([`amx::ready`]); `dst` is valid for writes of this block's channels at
    /// those segments, which no one else touches meanwhile.
    #[cfg(target_arch = "x86_64")]
    #[inline(never)] // a symbol of its own in `perf` profiles
    unsafe fn run(&self, segs: std::ops::Range<usize>) {
        let (c, kw) = (self.w.c, self.w.kw);
        let steps = self.w.steps();
        let cb = c / TILE;
        let a = &self.w.words[self.block * 2 * steps * TILE * TILE..][..2 * steps * TILE * TILE];
        // The last tile row a B load reaches: channel row 15 of the last tap row, 16 words in.
        let last_seg = self.grid.at(segs.end - 1);
        let reach = ((2 * last_seg.0 + self.w.kh - 1) * c + c - 1) * self.wp
            + 2 * (last_seg.1 + self.grid.cols - 1)
            + kw;
        assert!(reach <= self.image.len(), "amx conv: padded image too short");
        assert!(self.starts.len() >= 2 * TILE * TILE, "amx conv: bias rows too short");
        // SAFETY: AMX is ready (the caller's contract).
        let tiles = unsafe { amx::tiles::Tiles::load(&amx::block_config(self.grid.cols)) };
        let image = self.image.as_ptr();
        for s0 in segs.clone().step_by(2) {
            let two = s0 + 1 < segs.end;
            let (y0, x0) = self.grid.at(s0);
            let (y1, x1) = if two { self.grid.at(s0 + 1) } else { (y0, x0) };
            let bias = self.starts.as_ptr();
            // SAFETY: the bias rows are 32 rows of 16 floats (asserted); the steps' A tiles lie
            // inside `a` (2·steps tiles of 256 words), their B rows inside the image (each load
            // ends at or before `reach`, asserted: the segments increase, so the last reaches
            // furthest); the stores write 16 output channels × grid.cols pixels of row y, a plane
            // apart, inside this block's region (the caller's contract).
            unsafe {
                tiles.start(bias, bias.add(TILE * TILE), TILE * 4);
                for t in 0..steps {
                    let (k, q) = (t / cb / (kw / 2), t / cb % (kw / 2));
                    let ch = (t % cb) * TILE;
                    let row0 = ((2 * y0 + k) * c + ch) * self.wp + 2 * x0 + 2 * q;
                    let row1 = ((2 * y1 + k) * c + ch) * self.wp + 2 * x1 + 2 * q;
                    tiles.multiply(
                        a.as_ptr().add(t * TILE * TILE),
                        a.as_ptr().add((steps + t) * TILE * TILE),
                        image.add(row0).cast(),
                        image.add(row1).cast(),
                        (TILE * 4, self.wp * 2),
                    );
                }
                let at = |o: usize, y: usize, x: usize| {
                    self.dst.wrapping_add(o * self.plane + y * self.ow + x)
                };
                let d = [at(0, y0, x0), at(0, y1, x1), at(TILE, y0, x0), at(TILE, y1, x1)];
                tiles.store(d, self.plane * 4, two);
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
    use crate::kernels::im2col::assert_conv;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    #[test]
    fn amx_tiles_match_the_definition_on_bf16_operands() {
        if !amx::ready() {
            test_report::skipped("amx conv", "no AMX on this CPU or not permitted");
            return;
        }
        let round = |v: f32| from_bf16(to_bf16(v));
        // (images, in channels, out channels, input side, kernel, padding, activation): the
        // U-Net's rows of 16 pixels and more, rows shorter than a tile, odd segment counts,
        // a kernel 2 wide and 3 tall, no padding.
        let cases = [
            (1, 32, 64, 64, (4, 4), 1, Some(0.2)),
            (2, 16, 32, 32, (4, 4), 1, None),
            (1, 64, 96, 16, (4, 4), 1, Some(0.2)),
            (2, 32, 32, 8, (4, 4), 1, Some(0.0)),
            (1, 16, 64, 10, (4, 4), 1, None),
            (1, 16, 32, 33, (3, 2), 0, Some(0.2)),
            (2, 32, 64, 4, (4, 4), 1, Some(0.2)),
            (1, 16, 32, 4, (4, 4), 1, None),
        ];
        for (i, &(nb, c, m, side, (kh, kw), pad, act)) in cases.iter().enumerate() {
            let g = Geom::conv(c, (side, side), (kh, kw), 2, pad, 1).unwrap();
            if !suits(&g, m) {
                panic!("case {i}: {g:?} should suit");
            }
            let x = test_values(nb * c * side * side, 50.0);
            let w = test_values(m * g.rows(), 500.0);
            let bias = test_values(m, 100.0);
            let got = conv(&x, nb, &g, &AmxConvWeights::pack(&w, m, c, kh, kw), Some(&bias), act);
            // The oracle on the operands the tiles multiply: the activated input and the
            // weights rounded to bf16, summed in f64.
            let xr: Vec<f32> = x
                .iter()
                .map(|&v| round(if v < 0.0 { v * act.unwrap_or(1.0) } else { v }))
                .collect();
            let wr: Vec<f32> = w.iter().map(|&v| round(v)).collect();
            assert_conv(&got, &xr, nb, &g, &wr, m, &bias, None, &format!("amx case {i}"));
        }
        test_report::passed("amx conv");
    }
}
