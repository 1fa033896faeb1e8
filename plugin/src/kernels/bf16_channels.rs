//! Frozen convolutions in bf16 on the channel tiles ([`super::direct_channels`]) with
//! `vdpbf16ps`, for AVX512_BF16 CPUs without AMX (AMD Zen 4 and 5; Intel's go to
//! [`super::amx_conv`]).
//!
//! `vdpbf16ps` sums the products of a *pair* of bf16 values a lane. Here a pair is two
//! horizontally adjacent taps `(ky, kx)`, `(ky, kx + 1)` of one input channel: in a zero-padded
//! bf16 copy of the image their inputs are adjacent halves, one 32-bit word that a pixel's
//! broadcast reads where its base puts it (unaligned, at any stride). The weights are packed
//! once as words pairing the same two taps, [`CB`] output channels a pair. So a tap pair of a
//! tile is [`CV`] loads of weights, `NP` broadcasts and `CV·NP` `vdpbf16ps`, twice a f32 tile's
//! multiply-adds per instruction, with no column matrix: the bf16 products packed one from the
//! image for every call (kernel profile, Zen 5, ngf 32 batch 4: the 32 → 64 layer 5.4 ms a
//! call, a third of it packing, 198 GFLOP/s).

use rayon::prelude::*;

use super::amx_conv::to_bf16_row;
use super::bf16::high_bf16;
use super::direct_channels::{self, run_length, run_task, Padded, Pass, Task, Tiles, CB, CV};
use super::im2col::Geom;
use super::isa;
use super::phase_conv_transpose;
use super::scratch::Scratch;

/// Whether a layer of `m` output channels on geometry `g` runs here: AVX512_BF16 (and AVX-512
/// F for the tiles), undilated, kernel columns in pairs, at least a block of output channels
/// and 256 taps (as the f32 channel form).
pub(crate) fn suits(g: &Geom, m: usize) -> bool {
    shape_suits(g, m) && direct_channels::available() && isa::bf16_available()
}

/// [`suits`]' conditions on the layer and its input, whatever the CPU.
fn shape_suits(g: &Geom, m: usize) -> bool {
    g.dil == 1 && g.kw.is_multiple_of(2) && m >= CB && g.rows() >= 256
}

/// Whether the CPU runs the bf16 tiles (AVX-512 F and AVX512_BF16), whatever the kernels'
/// level: a test may narrow the level after a layer chose them.
fn cpu_runs() -> bool {
    isa::Isa::Avx512.available() && isa::bf16_available()
}

/// A layer's `m × k` weights as words pairing taps `(t, t + 1)` (`t` at even kernel columns):
/// blocks of [`CB`] output channels, each `k/2 × CB` words (pair-major; zeros past `m`).
pub(crate) struct Bf16ChannelWeights {
    words: Vec<u32>,
    m: usize,
    pairs: usize,
}

impl Bf16ChannelWeights {
    /// Packs `w`, `m × k` row-major (`(m, c, kh, kw)` as `nn.Conv2d` holds it, `kw` even).
    pub(crate) fn pack(w: &[f32], m: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(2) && w.len() == m * k, "bf16 channel weights: not m·k, k even");
        let pairs = k / 2;
        let mut words = vec![0u32; m.div_ceil(CB) * pairs * CB];
        words.par_chunks_mut((pairs * CB).max(1)).enumerate().for_each(|(b, blk)| {
            for j in 0..CB.min(m - b * CB) {
                let row = &w[(b * CB + j) * k..][..k];
                for (q, t) in row.chunks_exact(2).enumerate() {
                    blk[q * CB + j] = (high_bf16(t[0]) >> 16) | high_bf16(t[1]);
                }
            }
        });
        Self { words, m, pairs }
    }

    pub(crate) fn rows(&self) -> usize {
        self.m
    }

    /// Taps (`m × k`'s `k`).
    pub(crate) fn cols(&self) -> usize {
        2 * self.pairs
    }

    fn block(&self, b: usize) -> &[u32] {
        &self.words[b * self.pairs * CB..][..self.pairs * CB]
    }
}

/// The bf16 tiles: a word of two taps' inputs and [`CB`] words of their weights a pair.
struct Bf16Tiles;

impl Tiles for Bf16Tiles {
    type Src = u16;
    type W = u32;
    fn cpu_runs() -> bool {
        cpu_runs()
    }
    #[inline(always)]
    unsafe fn tile<const P: usize>(
        pass: &Pass<Self>,
        base: [usize; P],
        acc: &mut [f32],
        ahead: bool,
    ) {
        // SAFETY: the caller's contract (AVX512_BF16 and the bounds, a pair's word included),
        // which `tile` states.
        unsafe { tile::<P>(pass, base, acc, ahead) }
    }
}

/// `(nb, m, oh, ow)` = conv of `leaky_relu(x, act)` (or of `x`) — `nb` NCHW images of geometry
/// `g` — with the packed weights `w`, `bias` added, the operands rounded to bf16 and summed in
/// f32. Callers check [`suits`].
pub(crate) fn conv(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: &Bf16ChannelWeights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let (m, grid) = (w.m, g.grid());
    assert!(shape_suits(g, m), "bf16 channel conv: {g:?} with {m} outputs does not suit");
    assert!(cpu_runs(), "bf16 channel conv: AVX-512 F and AVX512_BF16 not on this CPU");
    assert_eq!(w.pairs * 2, g.rows(), "bf16 channel conv: weight columns");
    assert_eq!(x.len(), nb * g.c * g.h * g.w, "bf16 channel conv: input size");
    assert!(bias.is_none_or(|b| b.len() == m), "bf16 channel conv: bias length");
    let len = nb * m * grid;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let pad = Padded::new(g);
    // One half more per image: a pair's word at the last tap reaches one past it.
    let per_image = g.c * pad.plane() + 1;
    let src = fill_images(&pad, x, nb, g, act, per_image);
    // The first tap of each pair (even kernel columns): its input's word holds both.
    let offs: Vec<usize> = pad.tap_offsets(g).into_iter().step_by(2).collect();
    let reach = offs.iter().max().copied().unwrap_or(0) + 2;
    let blocks = m.div_ceil(CB);
    let biases: Vec<[f32; CB]> = (0..blocks)
        .map(|b| {
            std::array::from_fn(|j| bias.and_then(|bs| bs.get(b * CB + j)).copied().unwrap_or(0.0))
        })
        .collect();
    let halves: &[u16] = bytemuck::cast_slice(&src[..]);
    let per_run = run_length(grid, nb * blocks);
    let runs = grid.div_ceil(per_run);
    let dst = out.as_mut_ptr() as usize;
    (0..nb * blocks * runs).into_par_iter().for_each(|task| {
        let (n, b, r) = (task / (blocks * runs), task / runs % blocks, task % runs);
        let src = &halves[n * per_image..][..per_image];
        let (p0, p1) = (r * per_run, ((r + 1) * per_run).min(grid));
        let base = |p: usize| (p / g.ow * pad.pw + p % g.ow) * g.stride;
        assert!(base(p1 - 1) + reach <= src.len(), "bf16 channel conv: padded input too short");
        // SAFETY: every pair's word (base + offset and the half after it) lies in src (asserted
        // for the task's last pixel, whose base is the largest); the block holds pairs × CB
        // words; channels b·CB .. b·CB + channels < m of image n, pixels p0..p1 < grid are
        // inside out (nb·m·grid floats), written by this task alone (tasks own disjoint
        // (image, block, run)s); the CPU has AVX-512 F and AVX512_BF16 (`cpu_runs`, asserted).
        unsafe {
            run_task::<Bf16Tiles>(
                Task { src, offs: &offs, w: (w.block(b), CB), init: &biases[b], px: (p0, p1) },
                base,
                CB.min(m - b * CB),
                ((dst as *mut f32).add((n * m + b * CB) * grid + p0), grid),
            )
        };
    });
    // SAFETY: the tasks above wrote all len floats: every image, every channel < m (blocks of
    // CB, the last `m - b·CB`), every pixel (the runs cover 0..grid).
    unsafe { out.set_len(len) };
    out
}

/// The `nb` images' padded planes in bf16 (as [`Padded::fill`], through `leaky_relu(·, act)`),
/// `per_image` halves apart (the spare ones zero).
fn fill_images(
    pad: &Padded,
    x: &[f32],
    nb: usize,
    g: &Geom,
    act: Option<f32>,
    per_image: usize,
) -> Scratch {
    let mut buf = Scratch::take((nb * per_image).div_ceil(2));
    let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut buf[..]);
    let (hw, plane, pw) = (g.h * g.w, pad.plane(), pad.pw);
    let slope = act.unwrap_or(1.0);
    for (n, image) in halves.chunks_mut(per_image).take(nb).enumerate() {
        let (planes, spare) = image.split_at_mut(g.c * plane);
        spare.fill(0);
        planes.par_chunks_mut(plane).with_min_len(4).enumerate().for_each(|(c, dst)| {
            let src = &x[(n * g.c + c) * hw..][..hw];
            let (b0, b1) = (g.pad.min(pw), (g.pad + g.w).min(pw));
            for (a, row) in dst.chunks_exact_mut(pw).enumerate() {
                let iy = a as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    row.fill(0);
                    continue;
                }
                row[..b0].fill(0);
                row[b1..].fill(0);
                to_bf16_row(&src[iy as usize * g.w..][..b1 - b0], &mut row[b0..b1], slope);
            }
        });
    }
    buf
}

/// Whether a transposed convolution runs here by phases in bf16: as
/// [`phase_conv_transpose::suits`], on a CPU with AVX512_BF16.
pub(crate) fn suits_transposed(
    c: usize,
    m: usize,
    kernel: (usize, usize),
    hw: (usize, usize),
    plain: bool,
) -> bool {
    phase_conv_transpose::suits(c, m, kernel, hw, plain) && isa::bf16_available()
}

/// A transposed convolution's weights per output phase ([`phase_conv_transpose`]), each phase's
/// taps `(channel, r, s)` paired along `s`, whose inputs are adjacent.
pub(crate) type Bf16PhaseWeights = phase_conv_transpose::Phases<Bf16ChannelWeights>;

impl Bf16PhaseWeights {
    /// Packs `w`, `(m, 4, 4, c)` contiguous (the frozen transposed layers' row-major layout).
    pub(crate) fn pack_bf16(w: &[f32], m: usize, c: usize) -> Self {
        phase_conv_transpose::Phases::pack(w, m, c, Bf16ChannelWeights::pack)
    }
}

/// [`phase_conv_transpose::conv_t`] on bf16 pairs: the padded copy in bf16, phase `(a, b)`'s
/// pair `(channel, r)` of pixel `(i, j)` the word at padded `(i + a + r, j + b)`.
pub(crate) fn conv_t(
    parts: &[(&[f32], usize)],
    nb: usize,
    (h, w): (usize, usize),
    wt: &Bf16PhaseWeights,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (m, c) = (wt.rows(), wt.channels());
    assert!(
        phase_conv_transpose::shape_suits(c, m, (4, 4), (h, w), true),
        "bf16 phase conv_transpose: {c}->{m} on {h}x{w} does not suit"
    );
    let (ph, pw) = phase_conv_transpose::padded(h, w);
    let plane = ph * pw;
    let mut src = Scratch::take((nb * c * plane).div_ceil(2));
    let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut src[..]);
    let slope = if relu { 0.0 } else { 1.0 };
    phase_conv_transpose::fill_parts(parts, nb, (h, w), halves, |line, row| {
        to_bf16_row(line, row, slope)
    });
    let offs: [Vec<usize>; 4] = std::array::from_fn(|phase| {
        let (a, b) = (phase / 2, phase % 2);
        (0..2 * c).map(|q| (q / 2) * plane + (a + q % 2) * pw + b).collect()
    });
    let halves: &[u16] = bytemuck::cast_slice(&src[..]);
    phase_conv_transpose::run::<Bf16Tiles>(
        halves,
        c * plane,
        nb,
        (h, w),
        (m, &offs, 2),
        |phase, b| (wt.phases[phase].block(b), CB),
        bias,
    )
}

/// [`Tiles::tile`] on bf16 pairs: per pair of taps, [`CV`] vectors of weight words and one
/// broadcast word of input a pixel.
///
/// # Safety
/// The CPU has AVX-512 F and AVX512_BF16; the words at `base[j] + off` (two halves) lie in
/// `pass.src` for every `j` and `off` in `pass.offs`; `pass.w.len() >= (pass.offs.len() − 1) ·
/// pass.ws + CB` and `acc.len() >= P · CB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const P: usize>(
    pass: &Pass<Bf16Tiles>,
    base: [usize; P],
    acc: &mut [f32],
    ahead: bool,
) {
    use std::arch::x86_64::*;
    let a = acc.as_mut_ptr();
    let next_taps = if ahead { pass.next_taps() } else { 0 };
    // SAFETY (every access below): the contract's bounds; unaligned loads (the words of the
    // input lie at any even byte); prefetches never fault.
    unsafe {
        let mut sum: [[__m512; P]; CV] = std::array::from_fn(|v| {
            std::array::from_fn(|j| match pass.init {
                Some(b) => _mm512_loadu_ps(b.as_ptr().add(v * 16)),
                None => _mm512_loadu_ps(a.add(j * CB + v * 16)),
            })
        });
        let (s, mut wp) = (pass.src.as_ptr(), pass.w.as_ptr());
        let mut np = pass.next.as_ptr();
        for (t, &off) in pass.offs.iter().enumerate() {
            if t < next_taps {
                for v in 0..CV {
                    isa::prefetch_l2(np.add(v * 16).cast());
                }
                np = np.add(pass.ws);
            }
            let wv: [__m512bh; CV] = std::array::from_fn(|v| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wp.add(v * 16).cast()))
            });
            let p = s.add(off);
            for j in 0..P {
                let word = p.add(base[j]).cast::<i32>().read_unaligned();
                let x = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(word));
                for v in 0..CV {
                    sum[v][j] = _mm512_dpbf16_ps(sum[v][j], wv[v], x);
                }
            }
            wp = wp.add(pass.ws);
        }
        for (v, sv) in sum.iter().enumerate() {
            for (j, &x) in sv.iter().enumerate() {
                _mm512_storeu_ps(a.add(j * CB + v * 16), x);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const P: usize>(_: &Pass<Bf16Tiles>, _: [usize; P], _: &mut [f32], _: bool) {
    unreachable!("bf16 channel conv: suits() is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16::{from_bf16, to_bf16};
    use crate::kernels::im2col::assert_conv;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// Against the f64 sum of the definition on the operands the tiles multiply (the activated
    /// input and the weights rounded to bf16): the U-Net's geometry on large and tiny grids,
    /// stride 1, a 2-wide kernel, partial blocks and tiles, several images, bias and activation.
    #[test]
    fn bf16_channel_tiles_match_the_definition_on_bf16_operands() {
        let g0 = Geom::conv(16, (8, 8), (4, 4), 2, 1, 1).expect("geometry");
        if !suits(&g0, CB) {
            test_report::skipped("bf16 channel conv", "no AVX512_BF16 on this CPU");
            return;
        }
        let round = |v: f32| from_bf16(to_bf16(v));
        for (nb, c, (h, wd), m, (kh, kw), st, pad, act) in [
            (1, 16, (32, 32), 64, (4, 4), 2, 1, Some(0.2)),
            (2, 20, (34, 40), 80, (4, 4), 2, 1, None),
            (1, 64, (4, 4), 128, (4, 4), 2, 1, Some(0.2)),
            (1, 16, (2, 2), 64, (4, 4), 2, 1, Some(0.0)),
            (3, 32, (9, 13), 70, (3, 4), 1, 1, Some(0.2)),
            (1, 70, (12, 11), 64, (2, 2), 2, 0, None),
        ] {
            let g = Geom::conv(c, (h, wd), (kh, kw), st, pad, 1).expect("geometry");
            assert!(shape_suits(&g, m), "{g:?} with {m} outputs should suit");
            let x = test_values(nb * c * h * wd, 40.0);
            let w = test_values(m * g.rows(), 90.0);
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 0.5).collect();
            let got =
                conv(&x, nb, &g, &Bf16ChannelWeights::pack(&w, m, g.rows()), Some(&bias), act);
            let xr: Vec<f32> = x
                .iter()
                .map(|&v| round(if v < 0.0 { v * act.unwrap_or(1.0) } else { v }))
                .collect();
            let wr: Vec<f32> = w.iter().map(|&v| round(v)).collect();
            let what = format!("bf16 channel form {nb}x{c}x{h}x{wd} k{kh}x{kw} s{st} -> {m}");
            assert_conv(&got, &xr, nb, &g, &wr, m, &bias, None, &what);
        }
        test_report::passed("bf16 channel conv");
    }

    /// The transposed convolution by phases against the f64 scatter of the definition on the
    /// rounded operands: one part and two (the skip concatenation), rectified and not, several
    /// images, partial channel blocks, rows that leave partial tiles and runs.
    #[test]
    fn bf16_phases_match_the_transposed_convolution_on_bf16_operands() {
        if !suits_transposed(64, CB, (4, 4), (4, 4), true) {
            test_report::skipped("bf16 phase conv_transpose", "no AVX512_BF16 on this CPU");
            return;
        }
        phase_conv_transpose::tests::check_phases(
            &|parts, nb, hw, wr, m, c, bias, relu| {
                conv_t(parts, nb, hw, &Bf16PhaseWeights::pack_bf16(wr, m, c), Some(bias), relu)
            },
            |v| from_bf16(to_bf16(v)),
            "bf16 phases",
        );
        test_report::passed("bf16 phase conv_transpose");
    }
}
