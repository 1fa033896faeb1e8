//! The U-Net's outermost layer, the transposed convolution onto the image's few channels (4 × 4,
//! stride 2, padding 1), directly by output phases on AVX-512: it reads the skip concatenation
//! where it lies, rectifying it, and adds the bias and applies the final tanh as it writes.
//!
//! As gemm + col2im it was the network's slowest layer per flop: a 48-row product (3 channels ×
//! 16 taps) whose column matrix col2im reads back, after a pass that makes the concatenation and
//! before one that applies tanh (kernel profile, ngf 32, batch 1, f32, ms a call: gemm 1.04,
//! col2im 0.53, cat+relu 0.72, tanh 0.35). Output pixel `(2i + a, 2j + b)` sums, over channels,
//! input rows `i + a + r − 1` and columns `j + b + s − 1` times taps `(3 − a − 2r, 3 − b − 2s)`
//! (`r`, `s` in {0, 1}; as in [`super::amx_conv_transpose`]). So 16 input columns of 3 input
//! rows (9 vectors a channel) feed the four phases of every output channel (4·m accumulators,
//! 16·m weights a channel, broadcast), and the two column phases are interleaved in registers as
//! they are stored. With up to 3 output channels two blocks of 16 columns run together, so that
//! each broadcast weight feeds two FMAs (kernel profile, Zen 5: ngf 32 0.62–0.70 → 0.44–0.50 ms
//! a call, ngf 64 1.46–1.65 → 1.04–1.09).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::activation::tanh_slice;
use super::isa::{self, Isa};

/// Output channels at most: the accumulators (4 a channel) and the 9 input vectors fit the 32
/// registers.
pub(crate) const MAX_OUT: usize = 4;

/// Input columns a vector.
const LANES: usize = 16;
/// Output channels at most for two column blocks at once (`8·M` sums and 2 inputs in registers).
const PAIR_MAX_OUT: usize = 3;
/// Input channels summed across a whole row before the next ones when a layer has more than
/// [`ONE_GROUP`] (see `Job::run_m`).
const CHANNELS: usize = 16;
/// The most input channels summed as one group, block by block: the ngf-32 U-Net's 64 ran
/// 10 % slower in groups of 16 or 32; ngf 64's 128 ran 42–46 GFLOP/s at once, 69–78 in groups
/// (kernels bench, 2–3 interleaved runs each).
const ONE_GROUP: usize = 64;

/// Whether a transposed convolution to `m` channels with these settings runs here: the U-Net's
/// kernel 4, stride 2, padding 1, at most [`MAX_OUT`] output channels, on AVX-512.
pub(crate) fn suits(m: usize, kernel: (usize, usize), plain: bool) -> bool {
    plain
        && kernel == (4, 4)
        && (1..=MAX_OUT).contains(&m)
        && cfg!(target_arch = "x86_64")
        && isa::active() == Isa::Avx512
}

/// Weights as the kernel reads them: `[input channel][phase (a, b)][tap (r, s)][output
/// channel]`.
pub(crate) struct ImageConvTWeights {
    m: usize,
    c: usize,
    w: Vec<f32>,
}

impl ImageConvTWeights {
    /// Packs `w`, `(m, 4, 4, c)` contiguous (the frozen transposed layers' row-major layout).
    pub(crate) fn pack(w: &[f32], m: usize, c: usize) -> Self {
        assert_eq!(w.len(), m * 16 * c, "image conv_transpose: weights are not m·4·4·c");
        let mut packed = vec![0f32; c * 16 * m];
        for (i, v) in packed.iter_mut().enumerate() {
            let (ch, phase, tap, o) = (i / (16 * m), i / (4 * m) % 4, i / m % 4, i % m);
            let (ky, kx) = (3 - phase / 2 - 2 * (tap / 2), 3 - phase % 2 - 2 * (tap % 2));
            *v = w[((o * 4 + ky) * 4 + kx) * c + ch];
        }
        Self { m, c, w: packed }
    }

    pub(crate) fn rows(&self) -> usize {
        self.m
    }

    pub(crate) fn channels(&self) -> usize {
        self.c
    }
}

/// `nb` images `(c, h, w)` through the transposed convolution with weights `wt`, `bias` added,
/// on `relu(x)` when asked and through `tanh` after when asked: the `(nb, m, 2h, 2w)` result.
/// The input is the concatenation along channels of `parts` (data and channels each), read where
/// they lie.
pub(crate) fn conv_t(
    parts: &[(&[f32], usize)],
    nb: usize,
    (h, w): (usize, usize),
    wt: &ImageConvTWeights,
    bias: Option<&[f32]>,
    relu: bool,
    tanh: bool,
) -> Vec<f32> {
    let (m, c) = (wt.m, wt.c);
    assert!(suits(m, (4, 4), true), "image conv_transpose: {c}->{m} does not suit");
    assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), c, "image conv_transpose: channels");
    for &(x, pc) in parts {
        assert_eq!(x.len(), nb * pc * h * w, "image conv_transpose: input is not nb·c·h·w");
    }
    let bias: Vec<f32> = (0..m).map(|o| bias.map_or(0.0, |b| b[o])).collect();
    let source = super::part_channels(parts);
    let zeros = vec![0f32; w];
    let (oh, ow) = (2 * h, 2 * w);
    let len = nb * m * oh * ow;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = out.as_mut_ptr() as usize;
    // Per task: the 3 input rows of every channel, and the output rows before tanh.
    let init = || (vec![0usize; 3 * c], vec![0f32; if tanh { 2 * m * ow } else { 0 }]);
    (0..nb * h).into_par_iter().with_min_len(4).for_each_init(init, |(rows, tmp), t| {
        let (n, i) = (t / h, t % h);
        for (r3, &(p, cc)) in rows.chunks_exact_mut(3).zip(&source) {
            let (x, pc) = parts[p];
            let plane = &x[(n * pc + cc) * h * w..][..h * w];
            for (k, r) in r3.iter_mut().enumerate() {
                let y = (i + k).wrapping_sub(1);
                *r = match y < h {
                    true => plane[y * w..].as_ptr() as usize,
                    false => zeros.as_ptr() as usize,
                };
            }
        }
        // Output row 2i + a of channel o: in `tmp` when tanh follows, else in place.
        let mut row_dst = [std::ptr::null_mut::<f32>(); 2 * MAX_OUT];
        for (k, d) in row_dst[..2 * m].iter_mut().enumerate() {
            let (o, a) = (k / 2, k % 2);
            *d = match tanh {
                true => tmp[k * ow..].as_mut_ptr(),
                false => (dst as *mut f32).wrapping_add(((n * m + o) * oh + 2 * i + a) * ow),
            };
        }
        let job = Job { rows, w, weights: &wt.w, bias: &bias, dst: &row_dst[..2 * m] };
        // SAFETY: AVX-512 F (`suits`, asserted); every row pointer is an input row of w floats
        // or `zeros` (w floats); each destination holds 2w floats: a row of `tmp`, or output row
        // 2i + a of channel o of image n, which no other task writes, inside `out`'s capacity.
        unsafe { job.run(m, relu) };
        if tanh {
            for (k, y) in tmp.chunks_exact(ow).enumerate() {
                let (o, a) = (k / 2, k % 2);
                let at = ((n * m + o) * oh + 2 * i + a) * ow;
                // SAFETY: as above: this task's output row, ow floats inside `out`'s capacity.
                let d = unsafe {
                    std::slice::from_raw_parts_mut(
                        (dst as *mut MaybeUninit<f32>).wrapping_add(at),
                        ow,
                    )
                };
                tanh_slice(y, d);
            }
        }
    });
    // SAFETY: the tasks cover every image and input row i, each writing output rows 2i and 2i + 1
    // of every channel whole (columns 0..2w: the vectors cover the input's w columns).
    unsafe { out.set_len(len) };
    out
}

/// One input row's work: output rows `2i` and `2i + 1` of every channel.
struct Job<'a> {
    /// Input rows `i − 1`, `i`, `i + 1` of each channel (addresses; zeros outside the image).
    rows: &'a [usize],
    w: usize,
    weights: &'a [f32],
    bias: &'a [f32],
    /// Output rows `(o, a)`, `2w` floats each.
    dst: &'a [*mut f32],
}

impl Job<'_> {
    /// # Safety
    /// The CPU has AVX-512 F; `rows` hold `w` readable floats each and `dst` `2w` writable ones,
    /// which no one else touches meanwhile.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run(&self, m: usize, relu: bool) {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match (m, relu) {
                (1, false) => self.run_m::<1, false>(),
                (1, true) => self.run_m::<1, true>(),
                (2, false) => self.run_m::<2, false>(),
                (2, true) => self.run_m::<2, true>(),
                (3, false) => self.run_m::<3, false>(),
                (3, true) => self.run_m::<3, true>(),
                (4, false) => self.run_m::<4, false>(),
                (4, true) => self.run_m::<4, true>(),
                _ => unreachable!("image conv_transpose: {m} output channels (suits allows 1-4)"),
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _: usize, _: bool) {
        unreachable!("image conv_transpose runs only on AVX-512")
    }

    /// # Safety
    /// As [`Job::run`], with `M` output channels.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline(never)] // a symbol of its own in `perf` profiles
    unsafe fn run_m<const M: usize, const RELU: bool>(&self) {
        use std::arch::x86_64::*;
        let w = self.w;
        let c = self.rows.len() / 3;
        assert!(
            self.weights.len() >= c * 16 * M && self.bias.len() >= M && self.dst.len() >= 2 * M
        );
        // Interleaving the column phases: b = 0 to even output columns, b = 1 to odd ones.
        let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let lanes = |from: isize, to: isize| -> __mmask16 {
            let (from, to) = (from.clamp(0, 16), to.clamp(0, 16));
            (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16
        };
        // Column offset dc − 1 of block j0 reads input column j0 + l + dc − 1: inside 0..w,
        // and lane l one of the block's.
        let masks = |j0: usize| -> [__mmask16; 3] {
            let valid = (w - j0).min(LANES) as isize;
            std::array::from_fn(|dc| {
                let first = 1 - dc as isize - j0 as isize;
                lanes(first, valid.min(w as isize + 1 - dc as isize - j0 as isize))
            })
        };
        // The sums of every column block, from the bias. Many channels go by groups across the
        // whole row: all channels' rows at one block are lines of the same cache sets (planes a
        // multiple of 4 KB apart), more than L1 holds.
        let bias: [__m512; M] = std::array::from_fn(|o| _mm512_set1_ps(self.bias[o]));
        let group = if c > ONE_GROUP { CHANNELS } else { c.max(1) };
        // Each block's sums between groups (none with one group).
        let mut sums = match group < c {
            true => vec![[bias; 4]; w.div_ceil(LANES)],
            false => Vec::new(),
        };
        // The blocks' output columns, from the registers.
        let store = |j0: usize, acc: &[[__m512; M]; 4]| {
            let valid = (w - j0).min(LANES) as isize;
            let (m_lo, m_hi) = (lanes(0, 2 * valid), lanes(0, 2 * valid - 16));
            for a in 0..2 {
                for (o, (&even, &odd)) in acc[2 * a].iter().zip(&acc[2 * a + 1]).enumerate() {
                    let d = self.dst[2 * o + a].wrapping_add(2 * j0);
                    // SAFETY: output columns 2j0 .. 2j0 + 2·valid of a row of 2w floats.
                    unsafe {
                        _mm512_mask_storeu_ps(d, m_lo, _mm512_permutex2var_ps(even, lo, odd));
                        _mm512_mask_storeu_ps(
                            d.wrapping_add(LANES),
                            m_hi,
                            _mm512_permutex2var_ps(even, hi, odd),
                        );
                    }
                }
            }
        };
        for ch0 in (0..c).step_by(group) {
            let channels = ch0..(ch0 + group).min(c);
            let last = channels.end == c;
            let mut j0 = 0;
            while j0 < w {
                let block = j0 / LANES;
                // Two blocks at once where their sums fit the registers (8·M and 2 inputs): each
                // weight's broadcast then feeds two FMAs (at one, the broadcasts bound the loop:
                // 178–202 GFLOP/s on a 64-channel layer in cache, Zen 5).
                if PAIR_MAX_OUT >= M && j0 + LANES < w {
                    let start = match ch0 {
                        0 => [[bias; 4]; 2],
                        _ => [sums[block], sums[block + 1]],
                    };
                    // SAFETY: AVX-512 F and the rows' bounds (the caller's contract).
                    let acc = unsafe {
                        self.channels::<M, RELU, 2>(
                            channels.clone(),
                            j0,
                            [masks(j0), masks(j0 + LANES)],
                            start,
                        )
                    };
                    if last {
                        store(j0, &acc[0]);
                        store(j0 + LANES, &acc[1]);
                    } else {
                        sums[block] = acc[0];
                        sums[block + 1] = acc[1];
                    }
                    j0 += 2 * LANES;
                    continue;
                }
                let start = if ch0 == 0 { [[bias; 4]] } else { [sums[block]] };
                // SAFETY: as above.
                let [acc] = unsafe {
                    self.channels::<M, RELU, 1>(channels.clone(), j0, [masks(j0)], start)
                };
                if last {
                    store(j0, &acc);
                } else {
                    sums[block] = acc;
                }
                j0 += LANES;
            }
        }
    }

    /// The sums of `B` column blocks from `j0` over input `channels`, from `acc`: per channel,
    /// the blocks' 9 input vectors (3 rows × 3 column offsets, `masks` by offset), each against
    /// the weights of the (phase, tap) pairs that read it. Each sum adds its taps in the order
    /// (r, s) = (0, 0), (0, 1), (1, 0), (1, 1), whatever `B`.
    ///
    /// # Safety
    /// As [`Job::run`]; `masks` keep the lanes inside the rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    // The row and column offsets enter the tap arithmetic, and constant bounds keep the loops
    // unrolled (with `enumerate` over the slice they were not, and the sums left the registers:
    // 2× slower).
    #[allow(clippy::needless_range_loop)]
    unsafe fn channels<const M: usize, const RELU: bool, const B: usize>(
        &self,
        channels: std::ops::Range<usize>,
        j0: usize,
        masks: [[std::arch::x86_64::__mmask16; 3]; B],
        mut acc: [[[std::arch::x86_64::__m512; M]; 4]; B],
    ) -> [[[std::arch::x86_64::__m512; M]; 4]; B] {
        use std::arch::x86_64::*;
        let zero = _mm512_setzero_ps();
        for ch in channels {
            let r: [usize; 3] = std::array::from_fn(|k| self.rows[3 * ch + k]);
            // The next blocks' lines of these rows: 3 · c streams a block, more than the
            // hardware prefetchers follow (kernel profile, ngf 32: 1.27 → 1.15–1.23 ms).
            for row in r {
                for b in 0..B {
                    // SAFETY: a prefetch never faults (wrapping address arithmetic).
                    unsafe {
                        isa::prefetch((row as *const f32).wrapping_add(j0 + (B + b) * LANES))
                    };
                }
            }
            let wc = &self.weights[ch * 16 * M..][..16 * M];
            for k in 0..3 {
                for dc in 0..3 {
                    let x: [__m512; B] = std::array::from_fn(|b| {
                        // Lanes outside the row are masked off (no access), so the address may
                        // lie outside it: computed with wrapping arithmetic.
                        let p =
                            (r[k] as *const f32).wrapping_add(j0 + b * LANES + dc).wrapping_sub(1);
                        // SAFETY: AVX-512 F; the unmasked lanes read columns 0..w of a row of w
                        // floats (the caller's contract).
                        let x = unsafe { _mm512_maskz_loadu_ps(masks[b][dc], p) };
                        if RELU {
                            _mm512_max_ps(x, zero)
                        } else {
                            x
                        }
                    });
                    // Phases (a, b) with taps (r, s) = (k − a, dc − b) in {0, 1}².
                    for a in 0..2 {
                        for bp in 0..2 {
                            if k < a || k - a > 1 || dc < bp || dc - bp > 1 {
                                continue;
                            }
                            let (phase, tap) = (2 * a + bp, 2 * (k - a) + dc - bp);
                            for o in 0..M {
                                let wv = _mm512_set1_ps(wc[(phase * 4 + tap) * M + o]);
                                for b in 0..B {
                                    acc[b][phase][o] = _mm512_fmadd_ps(x[b], wv, acc[b][phase][o]);
                                }
                            }
                        }
                    }
                }
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv_transpose::reference;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    #[test]
    fn phases_match_the_transposed_convolution() {
        if !suits(3, (4, 4), true) {
            test_report::skipped("image conv_transpose", "no AVX-512 on this CPU");
            return;
        }
        // (images, in channels, out channels, height, width, relu, tanh): the U-Net's outermost
        // layer, whole and partial vectors, one-column and one-row inputs, 1–4 output channels.
        let cases = [
            (1, 64, 3, 16, 32, true, true),
            (2, 8, 3, 5, 21, true, false),
            (1, 6, 1, 1, 1, false, true),
            (1, 5, 2, 3, 17, false, false),
            (2, 4, 4, 7, 16, true, true),
            (1, 3, 3, 2, 15, false, true),
            // More channels than one group (ONE_GROUP), the last group partial.
            (1, 136, 3, 4, 40, true, true),
            (2, 72, 2, 3, 9, true, false),
        ];
        for (ci, &(nb, c, m, h, w, relu, tanh)) in cases.iter().enumerate() {
            assert!(suits(m, (4, 4), true));
            let x = test_values(nb * c * h * w, 50.0);
            let wc = test_values(c * m * 16, 400.0);
            let bias = test_values(m, 10.0);
            let packed = ImageConvTWeights::pack(&reference::row_major(&wc, c, m), m, c);
            // The input in two parts, as the U-Net's skip concatenation, where one image.
            let c0 = c / 2;
            let (lo, hi) = x.split_at(nb * c0 * h * w);
            let parts: Vec<(&[f32], usize)> = match nb {
                1 => vec![(lo, c0), (hi, c - c0)],
                _ => vec![(&x[..], c)],
            };
            let got = conv_t(&parts, nb, (h, w), &packed, Some(&bias), relu, tanh);
            let xr: Vec<f32> = x.iter().map(|&v| if relu { v.max(0.0) } else { v }).collect();
            let mut want = reference::conv_t(&xr, nb, c, (h, w), &wc, m, &bias);
            if tanh {
                want.iter_mut().for_each(|v| *v = v.tanh());
            }
            reference::assert_close(&got, &want, 1e-5, &format!("image case {ci}"));
        }
        test_report::passed("image conv_transpose");
    }
}
