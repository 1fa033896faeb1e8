//! The U-Net's transposed convolution (kernel 4, stride 2, padding 1) by output phases on the
//! channel tiles ([`super::direct_channels`]), for frozen layers and in training (its transposed
//! layers and its stride-2 convolutions' input gradients, weights packed per call by
//! [`StoredPhases`]): each phase is a 2 × 2 convolution run into its own planes, which one last
//! pass interleaves into the output.
//!
//! Phase `(a, b)` (output pixel `(2i + a, 2j + b)`) sums input pixels `(i + a + r − 1,
//! j + b + s − 1)` times taps `(3 − a − 2r, 3 − b − 2s)`, `r`, `s` in {0, 1} (as in
//! [`super::amx_conv_transpose`]). On an input padded by one pixel all round, tap `(r, s)` of
//! phase pixel `(i, j)` reads padded `(i + a + r, j + b + s)`. As gemm + col2im the layer wrote
//! a column matrix of `m·16 × h·w` a image (4× its output) that col2im read back, after a pass
//! that wrote the skip concatenation; here the input is read from the concatenation's parts
//! (rectified) into the padded copy, and the output written once. The tiles run on f32 here and
//! on bf16 pairs in [`super::bf16_channels`]. Kernel profile (ngf 32, batch 4, Zen 5, ms over 11
//! calls, gemm + col2im + cat+relu → phases): see `suits`.

use rayon::prelude::*;

use super::direct_channels::{self, run_length, run_task, ChannelWeights, Task, Tiles, CB};
use super::mat::Mat;
use super::scratch::{self, Scratch};

/// Whether a transposed convolution from `c` to `m` channels on an `h × w` input runs by
/// phases: the U-Net's kernel 4, stride 2, padding 1 (`plain`), at least a block of output
/// channels and 256 taps a phase (64 input channels), on grids of 4 × 4 and more (on smaller
/// ones most taps read padding, and the layer runs on its trimmed kernel instead), on AVX-512.
pub(crate) fn suits(
    c: usize,
    m: usize,
    kernel: (usize, usize),
    hw: (usize, usize),
    plain: bool,
) -> bool {
    shape_suits(c, m, kernel, hw, plain) && direct_channels::available()
}

/// [`suits`]' conditions on the layer and its input, whatever the CPU.
pub(crate) fn shape_suits(
    c: usize,
    m: usize,
    kernel: (usize, usize),
    (h, w): (usize, usize),
    plain: bool,
) -> bool {
    plain && kernel == (4, 4) && m >= CB && c >= 64 && h >= 4 && w >= 4
}

/// Phase `phase`'s weights as an `m × 4c` row-major matrix, its taps `(channel, r, s)`-major,
/// from `w`, `(m, 4, 4, c)` contiguous (the frozen transposed layers' row-major layout).
pub(crate) fn phase_rows(w: &[f32], m: usize, c: usize, phase: usize) -> Vec<f32> {
    assert_eq!(w.len(), m * 16 * c, "phase weights: not m·4·4·c");
    let (a, b) = (phase / 2, phase % 2);
    let k = 4 * c;
    let mut rows = vec![0f32; m * k];
    rows.par_chunks_mut(k.max(1)).enumerate().for_each(|(o, row)| {
        for (t, v) in row.iter_mut().enumerate() {
            let (ci, r, s) = (t / 4, t / 2 % 2, t % 2);
            let (ky, kx) = (3 - a - 2 * r, 3 - b - 2 * s);
            *v = w[((o * 4 + ky) * 4 + kx) * c + ci];
        }
    });
    rows
}

/// A layer's weights per output phase, each phase's `m × 4c` rows packed for a kernel's tiles.
pub(crate) struct Phases<W> {
    pub(crate) phases: [W; 4],
    m: usize,
    c: usize,
}

impl<W> Phases<W> {
    /// Packs `w`, `(m, 4, 4, c)` contiguous, a phase at a time by `pack(rows, m, 4c)`.
    pub(crate) fn pack(
        w: &[f32],
        m: usize,
        c: usize,
        pack: impl Fn(&[f32], usize, usize) -> W,
    ) -> Self {
        let phases = std::array::from_fn(|phase| pack(&phase_rows(w, m, c, phase), m, 4 * c));
        Self { phases, m, c }
    }

    pub(crate) fn rows(&self) -> usize {
        self.m
    }

    pub(crate) fn channels(&self) -> usize {
        self.c
    }
}

/// A layer's weights per phase for the f32 tiles.
pub(crate) type PhaseWeights = Phases<ChannelWeights>;

impl PhaseWeights {
    /// Packs `w`, `(m, 4, 4, c)` contiguous, for the f32 tiles.
    pub(crate) fn pack_f32(w: &[f32], m: usize, c: usize) -> Self {
        Phases::pack(w, m, c, |rows, m, k| ChannelWeights::pack(Mat::rm(rows, m, k)))
    }
}

/// Checkpoint-layout weights `(c, m, 4, 4)` for the f32 tiles, packed in one pass (training
/// packs at every call): one `m × 16c` matrix whose taps run phase-major, phase `p`'s block the
/// `4c × CB` run from its tap `4c·p`. Each block reads, per input channel, its `CB` channels'
/// 16 taps (contiguous), transposes them in registers and files each tap under its phase; the
/// memory is the kept packing buffer's ([`scratch::take_packing`]).
pub(crate) struct StoredPhases {
    w: ChannelWeights,
    c: usize,
}

impl StoredPhases {
    pub(crate) fn pack(k: &[f32], c: usize, m: usize) -> Self {
        assert_eq!(k.len(), c * m * 16, "phase weights: not c·m·4·4");
        assert!(direct_channels::available(), "phase weights: the tiles need AVX-512");
        let w = ChannelWeights::pack_in(scratch::take_packing(), m, 16 * c, |b, blk| {
            let rows = CB.min(m - b * CB);
            let mut taps = [0f32; 16 * CB];
            for ci in 0..c {
                // SAFETY: the CPU has AVX-512 F (asserted above); the rows' 16 floats each are
                // inside k (c·m·16 floats, asserted above, b·CB + rows ≤ m).
                unsafe {
                    direct_channels::to_channels_last(
                        &k[(ci * m + b * CB) * 16..],
                        rows,
                        16,
                        16,
                        &mut taps,
                    )
                };
                // Tap (ky, kx) is tap (r, s) of phase (a, b): ky = 3 − a − 2r, kx = 3 − b − 2s.
                for (t, col) in taps.chunks_exact(CB).enumerate() {
                    let (ky, kx) = (3 - t / 4, 3 - t % 4);
                    let phase = ky % 2 * 2 + kx % 2;
                    let tap = phase * 4 * c + ci * 4 + ky / 2 * 2 + kx / 2;
                    blk[tap * CB..][..CB].copy_from_slice(col);
                }
            }
        });
        Self { w, c }
    }

    /// Phase `phase`'s block `b`: `4c × CB` floats.
    pub(crate) fn block(&self, phase: usize, b: usize) -> &[f32] {
        &self.w.block(b)[phase * 4 * self.c * CB..][..4 * self.c * CB]
    }
}

impl Drop for StoredPhases {
    fn drop(&mut self) {
        scratch::keep_packing(std::mem::take(&mut self.w).into_buffer());
    }
}

/// The padded copy's geometry for an `h × w` input: `(rows, columns)`, one pixel more all
/// round.
pub(crate) fn padded(h: usize, w: usize) -> (usize, usize) {
    (h + 2, w + 2)
}

/// `nb` images `(c, h, w)` — the concatenation along channels of `parts` (data and channels
/// each), rectified when `relu` — through the transposed convolution to `m` channels whose
/// phase `p`'s block `b` of weights is `weights(p, b)` (`4c × CB` floats), `bias` added: the
/// `(nb, m, 2h, 2w)` result.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_t<'w>(
    parts: &[(&[f32], usize)],
    nb: usize,
    (h, w): (usize, usize),
    (m, c): (usize, usize),
    weights: impl Fn(usize, usize) -> &'w [f32] + Sync,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    assert!(
        shape_suits(c, m, (4, 4), (h, w), true),
        "phase conv_transpose: {c}->{m} does not suit"
    );
    let (ph, pw) = padded(h, w);
    let plane = ph * pw;
    let mut src = Scratch::take(nb * c * plane);
    fill_parts(parts, nb, (h, w), &mut src, |line, row| {
        row.iter_mut().zip(line).for_each(|(d, &v)| *d = if relu { v.max(0.0) } else { v })
    });
    // Tap (channel, r, s) of phase (a, b).
    let offs: [Vec<usize>; 4] = std::array::from_fn(|phase| {
        let (a, b) = (phase / 2, phase % 2);
        (0..4 * c).map(|t| (t / 4) * plane + (a + t / 2 % 2) * pw + b + t % 2).collect()
    });
    run::<direct_channels::F32Tiles>(
        &src,
        c * plane,
        nb,
        (h, w),
        (m, &offs, 1),
        |phase, b| (weights(phase, b), CB),
        bias,
    )
}

/// Each channel of the concatenation of `parts` (per image, `c` planes of `(h + 2) × (w + 2)`
/// elements of `dst`) from its `h × w` plane: rows `0` and `h + 1` and columns `0` and `w + 1`
/// default (zero), row `1 + y`'s middle `w` elements from input row `y` by `row`.
pub(crate) fn fill_parts<E: Default + Copy + Send>(
    parts: &[(&[f32], usize)],
    nb: usize,
    (h, w): (usize, usize),
    dst: &mut [E],
    row: impl Fn(&[f32], &mut [E]) + Sync,
) {
    let c: usize = parts.iter().map(|p| p.1).sum();
    for &(x, pc) in parts {
        assert_eq!(x.len(), nb * pc * h * w, "phase conv_transpose: input is not nb·c·h·w");
    }
    let (ph, pw) = padded(h, w);
    let source = super::part_channels(parts);
    dst[..nb * c * ph * pw].par_chunks_mut(ph * pw).with_min_len(4).enumerate().for_each(
        |(i, plane)| {
            let (n, (p, cc)) = (i / c, source[i % c]);
            let (x, pc) = parts[p];
            let src = &x[(n * pc + cc) * h * w..][..h * w];
            plane[..pw].fill(E::default());
            plane[(ph - 1) * pw..].fill(E::default());
            for (out, line) in plane[pw..(ph - 1) * pw].chunks_exact_mut(pw).zip(src.chunks(w)) {
                out[0] = E::default();
                out[pw - 1] = E::default();
                row(line, &mut out[1..=w]);
            }
        },
    );
}

/// The phases of `nb` images on tiles `T`: each image's padded input `per_image` elements apart
/// in `src`, phase `p`'s taps at offsets `offs[p]` (each read `span` elements long), its block
/// `b`'s weights `weights(p, b)` (elements and stride a tap), `bias` added; then the phases
/// interleaved into the `(nb, m, 2h, 2w)` output.
#[allow(clippy::type_complexity)]
pub(crate) fn run<'w, T: Tiles>(
    src: &[T::Src],
    per_image: usize,
    nb: usize,
    (h, w): (usize, usize),
    (m, offs, span): (usize, &[Vec<usize>; 4], usize),
    weights: impl Fn(usize, usize) -> (&'w [T::W], usize) + Sync,
    bias: Option<&[f32]>,
) -> Vec<f32>
where
    T::Src: Sync,
    T::W: Sync + 'w,
{
    assert!(bias.is_none_or(|b| b.len() == m), "phase conv_transpose: bias length");
    let pw = padded(h, w).1;
    let grid = h * w;
    let base = |p: usize| p / w * pw + p % w;
    // The last pixel's base is the largest: its furthest tap must end inside the image's copy.
    let reach = offs.iter().flatten().max().copied().unwrap_or(0) + span;
    assert!(
        grid > 0 && base(grid - 1) + reach <= per_image && src.len() >= nb * per_image,
        "phase conv_transpose: padded input too short"
    );
    let blocks = m.div_ceil(CB);
    assert!(T::cpu_runs(), "phase conv_transpose: the tiles do not run on this CPU");
    for (phase, offs) in offs.iter().enumerate() {
        for b in 0..blocks {
            let (wb, ws) = weights(phase, b);
            assert!(
                ws >= CB && wb.len() >= offs.len().saturating_sub(1) * ws + CB,
                "phase conv_transpose: phase {phase} block {b}: weights too short"
            );
        }
    }
    let biases: Vec<[f32; CB]> = (0..blocks)
        .map(|b| {
            std::array::from_fn(|j| bias.and_then(|bs| bs.get(b * CB + j)).copied().unwrap_or(0.0))
        })
        .collect();
    // Phase planes: [phase][image][channel][h·w], every float written by the tasks.
    let mut phased = Scratch::take(4 * nb * m * grid);
    let per_run = run_length(grid, 4 * nb * blocks);
    let runs = grid.div_ceil(per_run);
    let dst = phased.as_mut_ptr() as usize;
    (0..4 * nb * blocks * runs).into_par_iter().for_each(|task| {
        let (phase, n) = (task / (nb * blocks * runs), task / (blocks * runs) % nb);
        let (b, r) = (task / runs % blocks, task % runs);
        let image = &src[n * per_image..][..per_image];
        let (p0, p1) = (r * per_run, ((r + 1) * per_run).min(grid));
        // SAFETY: every tap's read lies in the image's copy (asserted above for the last
        // pixel's base, the largest, and the furthest offset and span); the block's weights
        // hold every tap's CB elements (asserted above); channels b·CB .. b·CB + channels < m
        // of (phase, image n), pixels p0..p1 < grid are inside `phased` (4·nb·m·grid floats),
        // written by this task alone; the CPU runs T's tiles (asserted above).
        unsafe {
            run_task::<T>(
                Task {
                    src: image,
                    offs: &offs[phase],
                    w: weights(phase, b),
                    init: &biases[b],
                    px: (p0, p1),
                },
                base,
                CB.min(m - b * CB),
                ((dst as *mut f32).add(((phase * nb + n) * m + b * CB) * grid + p0), grid),
            )
        };
    });
    // Output row 2i + a of (image, channel): phases (a, 0) and (a, 1) of row i, interleaved.
    let len = nb * m * 4 * grid;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let phase_plane = nb * m * grid;
    out.spare_capacity_mut()[..len].par_chunks_mut(2 * w).with_min_len(16).enumerate().for_each(
        |(row, dst)| {
            let (nm, y) = (row / (2 * h), row % (2 * h));
            let (i, a) = (y / 2, y % 2);
            let at = |b: usize| &phased[(2 * a + b) * phase_plane + nm * grid + i * w..][..w];
            for (d, (&e, &o)) in dst.chunks_exact_mut(2).zip(at(0).iter().zip(at(1))) {
                d[0].write(e);
                d[1].write(o);
            }
        },
    );
    // SAFETY: the rows above (nb·m·2h of 2w floats, every one a chunk) wrote all len floats.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::conv_transpose::reference;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// A phase kernel under test: `(parts, images, (h, w), row-major weights (m, 4, 4, c), m,
    /// c, bias, relu)` to its output.
    pub(crate) type Run<'a> = &'a dyn Fn(
        &[(&[f32], usize)],
        usize,
        (usize, usize),
        &[f32],
        usize,
        usize,
        &[f32],
        bool,
    ) -> Vec<f32>;

    /// `run` against the f64 scatter of the definition on its operands as `round` leaves them:
    /// one part and two (the skip concatenation), rectified and not, several images, partial
    /// channel blocks, rows that leave partial tiles and runs.
    pub(crate) fn check_phases(run: Run, round: impl Fn(f32) -> f32, what: &str) {
        // (images, in channels, out channels, height, width, relu, in two parts)
        for (nb, c, m, h, w, relu, two) in [
            (1, 64, 64, 8, 8, true, true),
            (2, 96, 80, 5, 7, false, false),
            (1, 128, 128, 16, 16, true, true),
            (3, 64, 64, 4, 6, true, false),
        ] {
            assert!(shape_suits(c, m, (4, 4), (h, w), true));
            let x = test_values(nb * c * h * w, 50.0);
            let wc = test_values(c * m * 16, 400.0);
            let bias = test_values(m, 10.0);
            let c0 = c / 2;
            let (lo, hi) = x.split_at(nb * c0 * h * w);
            let parts: Vec<(&[f32], usize)> = match (two, nb) {
                (true, 1) => vec![(lo, c0), (hi, c - c0)],
                _ => vec![(&x[..], c)],
            };
            let wr = reference::row_major(&wc, c, m);
            let got = run(&parts, nb, (h, w), &wr, m, c, &bias, relu);
            let xr: Vec<f32> =
                x.iter().map(|&v| round(if relu { v.max(0.0) } else { v })).collect();
            let wround: Vec<f32> = wc.iter().map(|&v| round(v)).collect();
            let want = reference::conv_t(&xr, nb, c, (h, w), &wround, m, &bias);
            reference::assert_close(&got, &want, 1e-5, &format!("{what} {nb}x{c}x{h}x{w} -> {m}"));
        }
    }

    /// Row-major weights `(m, 4, 4, c)` back in the checkpoint's `(c, m, 4, 4)`.
    fn stored(wr: &[f32], m: usize, c: usize) -> Vec<f32> {
        let mut wc = vec![0f32; wr.len()];
        for (i, &v) in wr.iter().enumerate() {
            let (o, t, cc) = (i / (16 * c), i / c % 16, i % c);
            wc[(cc * m + o) * 16 + t] = v;
        }
        wc
    }

    #[test]
    fn phases_match_the_transposed_convolution() {
        if !suits(64, CB, (4, 4), (4, 4), true) {
            test_report::skipped("phase conv_transpose", "no AVX-512 on this CPU");
            return;
        }
        check_phases(
            &|parts, nb, hw, wr, m, c, bias, relu| {
                let wt = PhaseWeights::pack_f32(wr, m, c);
                let blocks = |p: usize, b: usize| wt.phases[p].block(b);
                conv_t(parts, nb, hw, (m, c), blocks, Some(bias), relu)
            },
            |v| v,
            "phases",
        );
        // The same on checkpoint-layout weights packed phase-major (training's).
        check_phases(
            &|parts, nb, hw, wr, m, c, bias, relu| {
                let wt = StoredPhases::pack(&stored(wr, m, c), c, m);
                conv_t(parts, nb, hw, (m, c), |p, b| wt.block(p, b), Some(bias), relu)
            },
            |v| v,
            "stored phases",
        );
        test_report::passed("phase conv_transpose");
    }
}
