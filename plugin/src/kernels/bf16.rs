//! bf16 products on AVX512_BF16 CPUs (`vdpbf16ps`): weights stored as bf16 pairs, activations
//! rounded to bf16 on the way in, every product accumulated in f32. Opt-in ([`Precision`]) for
//! inference: bf16 keeps 8 bits of mantissa, so results differ from f32 at the 1e-3 level.
//!
//! Layouts, with `kp = ⌈k/2⌉` pairs along the reduction (an odd `k` is padded with a zero) and
//! rows `ld` words long (`kp` rounded up to whole AMX tiles, zero-padded):
//! - weights `A` (`m × k`): [`PackedA`], row-major words, word `(i, p)` holding `A[i, 2p]` in
//!   its low half and `A[i, 2p+1]` in its high half, rows zero-padded to a multiple of 32;
//!   packed once per weight;
//! - activations `B` (`k × n`): per call, panels of [`NR`] columns, each `ld × NR` words.
//!
//! Two kernels read these layouts. Where the CPU has AMX (Sapphire Rapids and later) the
//! product runs on its tile unit ([`super::amx`]: 16× the multiply–adds per cycle of AVX-512
//! FMAs); else the AVX512_BF16 micro-kernel keeps an `MR × NR` block of `C` in 12 zmm registers,
//! each step broadcasting one word of `A` per row against two vectors of `B` (`vdpbf16ps`: the
//! same multiply–adds per cycle as f32 FMAs on current CPUs, so it gains only bandwidth).

use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

use super::im2col;
use super::mat::Mat;
use super::scratch::Scratch;
use super::{amx, isa};

/// The precision frozen (inference) products run in: the contract's setting (bf16 falls back to
/// f32 where the CPU lacks AVX512_BF16).
pub use pix2pix_ffi::Precision;

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of inference products for the whole process (default f32).
pub fn set_precision(p: Precision) {
    PRECISION.store(matches!(p, Precision::Bf16) as u8, Ordering::Relaxed);
}

thread_local! {
    static THREAD_PRECISION: std::cell::Cell<Option<Precision>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's frozen layers in precision `p` (layers choose their kernel on
/// the calling thread), leaving other threads as they are.
pub fn with_precision<R>(p: Precision, f: impl FnOnce() -> R) -> R {
    let before = THREAD_PRECISION.with(|c| c.replace(Some(p)));
    struct Restore(Option<Precision>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_PRECISION.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// [`with_precision`]'s on this thread, if any.
pub(crate) fn thread_precision() -> Option<Precision> {
    THREAD_PRECISION.with(|c| c.get())
}

/// [`with_precision`]'s on this thread, else [`set_precision`]'s.
pub fn precision() -> Precision {
    if let Some(p) = thread_precision() {
        return p;
    }
    if PRECISION.load(Ordering::Relaxed) == 1 {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// The precision products asked to run in `p` actually run in: f32 for bf16 where the CPU lacks
/// AVX512_BF16.
pub fn effective(p: Precision) -> Precision {
    match p {
        Precision::Bf16 if !isa::bf16_available() => Precision::F32,
        p => p,
    }
}

/// Whether inference products run in bf16 now: asked for, and the CPU can.
pub(crate) fn active() -> bool {
    precision() == Precision::Bf16 && isa::bf16_available()
}

/// Rows and columns of the micro-kernel's block of `C`.
const MR: usize = 6;
pub(crate) const NR: usize = 32;
/// Pairs of the reduction per pass over a block: an `MR × KC` strip of `A` (12 KB) stays in L1,
/// a `KC × NR` panel of `B` (64 KB) in L2.
const KC: usize = 512;

/// f32 → bf16, rounding to nearest even (as `vcvtne2ps2bf16`); NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// A weight matrix packed for [`sgemm_bf16`].
pub struct PackedA {
    m: usize,
    k: usize,
    kp: usize,
    /// Words per row: `kp` rounded up to a multiple of [`amx::PAIRS`].
    pub(crate) ld: usize,
    /// `m` rounded up to a multiple of [`amx::ROWS`] rows of `ld` words (the padding is zero).
    pub(crate) words: Vec<u32>,
}

impl PackedA {
    /// Packs the `m × k` view `a` (any strides).
    pub(crate) fn new(a: Mat) -> Self {
        assert!(a.in_bounds(), "bf16 pack: view out of bounds");
        let (m, k) = (a.rows, a.cols);
        let kp = k.div_ceil(2);
        let ld = kp.next_multiple_of(amx::PAIRS).max(amx::PAIRS);
        let mut words = vec![0u32; m.next_multiple_of(amx::ROWS) * ld];
        words.par_chunks_mut(ld).take(m).enumerate().for_each(|(i, row)| {
            let at = |kk: usize| if kk < k { a.data[i * a.rs + kk * a.cs] } else { 0.0 };
            for (p, w) in row[..kp].iter_mut().enumerate() {
                *w = pair(at(2 * p), at(2 * p + 1));
            }
        });
        Self { m, k, kp, ld, words }
    }
    pub fn rows(&self) -> usize {
        self.m
    }
    pub fn cols(&self) -> usize {
        self.k
    }
}

/// [`to_bf16`] left in the high half of a word (the low half zero), without branches so that
/// loops of it vectorise.
#[inline(always)]
pub(crate) fn high_bf16(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { b | 0x0040_0000 } else { rounded }) & 0xffff_0000
}

/// Words pairing `lo[j]` (low half) with `hi[j]` (high half).
#[inline(always)]
fn pair_rows(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    for ((w, l), h) in out.iter_mut().zip(lo).zip(hi) {
        *w = (high_bf16(*l) >> 16) | high_bf16(*h);
    }
}

/// [`pair_rows`] compiled for AVX-512 (the conversion is most of a bf16 product's overhead).
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pair_rows_avx512(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    pair_rows(lo, hi, out)
}

/// Panels one packing task fills: their rows are read in runs of `GROUP · NR` floats, long
/// enough for the prefetchers (one panel's 128-byte runs, 16 KB apart, left it at a third of
/// the memory bandwidth).
const GROUP: usize = 8;

/// `b` (`k × n`) as panels of `NR` columns of bf16 pairs, `ld` pair rows each (zero past `n`
/// and `k`), in a reused scratch buffer (read it with `bytemuck::cast_slice::<f32, u32>`): a
/// fresh one cost its page faults on every product (8 MB for the U-Net's second layer at ngf 64).
fn pack_b(b: &Mat, ld: usize) -> Scratch {
    let (k, n) = (b.rows, b.cols);
    let pairs = k.div_ceil(2);
    let mut buf = Scratch::take(n.div_ceil(NR) * ld * NR);
    let out: &mut [u32] = bytemuck::cast_slice_mut(&mut buf[..]);
    let zeros = [0f32; NR * GROUP];
    out.par_chunks_mut(GROUP * ld * NR).enumerate().for_each(|(g, group)| {
        let j0 = g * GROUP * NR;
        let width = (GROUP * NR).min(n - j0);
        for (q, panel) in group.chunks_mut(ld * NR).enumerate() {
            zero_padding(panel, pairs, width.saturating_sub(q * NR).min(NR));
        }
        for p in 0..pairs {
            let (k0, k1) = (2 * p, 2 * p + 1);
            if b.cs == 1 {
                // Rows are contiguous: convert them a vector at a time.
                let lo = &b.data[k0 * b.rs + j0..][..width];
                let hi = if k1 < k { &b.data[k1 * b.rs + j0..][..width] } else { &zeros[..width] };
                pair_into(group, ld, p, lo, hi);
                continue;
            }
            for jj in 0..width {
                let j = j0 + jj;
                let lo = b.data[k0 * b.rs + j * b.cs];
                let hi = if k1 < k { b.data[k1 * b.rs + j * b.cs] } else { 0.0 };
                group[((jj / NR) * ld + p) * NR + jj % NR] = pair(lo, hi);
            }
        }
    });
    buf
}

/// [`pack_b`] of the `k × n` matrix whose rows `fill(r, j0, out)` writes, `out.len()` columns
/// from column `j0` (a convolution's column matrix, made a piece at a time and never whole).
/// Each task fills a group's panels over a range of pair rows: the inner layers' grids make one
/// or two groups, which one thread a group left half the machine idle (kernel profile, ngf 32,
/// batch 1, Zen 5, ms a call: 4096 × 64 0.16, 2048 × 256 0.18).
fn pack_rows(
    k: usize,
    n: usize,
    ld: usize,
    fill: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Scratch {
    let pairs = k.div_ceil(2);
    let mut buf = Scratch::take(n.div_ceil(NR) * ld * NR);
    let out: &mut [u32] = bytemuck::cast_slice_mut(&mut buf[..]);
    let groups = n.div_ceil(GROUP * NR);
    let splits = (2 * rayon::current_num_threads()).div_ceil(groups.max(1)).clamp(1, pairs.max(1));
    // Task (group, s) fills pair rows bounds[s] .. bounds[s + 1] of every panel of the group;
    // the last range ends at ld, taking the padding rows.
    let per = pairs.div_ceil(splits);
    let bounds: Vec<usize> =
        (0..=splits).map(|s| if s == splits { ld } else { (s * per).min(pairs) }).collect();
    let mut tasks: Vec<(usize, usize, Vec<&mut [u32]>)> = Vec::with_capacity(groups * splits);
    for (g, group) in out.chunks_mut(GROUP * ld * NR).enumerate() {
        let first = tasks.len();
        tasks.extend((0..splits).map(|s| (g, bounds[s], Vec::with_capacity(GROUP))));
        for panel in group.chunks_mut(ld * NR) {
            let mut rest = panel;
            for (task, b) in tasks[first..].iter_mut().zip(bounds.windows(2)) {
                let (mine, after) = std::mem::take(&mut rest).split_at_mut((b[1] - b[0]) * NR);
                task.2.push(mine);
                rest = after;
            }
        }
    }
    tasks.into_par_iter().for_each(|(g, p0, mut panels)| {
        let j0 = g * GROUP * NR;
        let width = (GROUP * NR).min(n - j0);
        let p1 = (p0 + per).min(pairs);
        for (q, rows) in panels.iter_mut().enumerate() {
            zero_padding(rows, pairs.saturating_sub(p0), width.saturating_sub(q * NR).min(NR));
        }
        let (mut lo, mut hi) = ([0f32; NR * GROUP], [0f32; NR * GROUP]);
        for p in p0..p1 {
            fill(2 * p, j0, &mut lo[..width]);
            if 2 * p + 1 < k {
                fill(2 * p + 1, j0, &mut hi[..width]);
            } else {
                hi.fill(0.0);
            }
            for (rows, (lo, hi)) in
                panels.iter_mut().zip(lo[..width].chunks(NR).zip(hi[..width].chunks(NR)))
            {
                pair_words(lo, hi, &mut rows[(p - p0) * NR..][..lo.len()]);
            }
        }
    });
    buf
}

/// Zeroes the padding of one panel's run of pair rows (rows from `pairs`, columns from `cols`):
/// the scratch holds stale words, which the kernels multiply by A's zeros and must not be NaN.
fn zero_padding(rows: &mut [u32], pairs: usize, cols: usize) {
    let pairs = pairs.min(rows.len() / NR);
    rows[pairs * NR..].fill(0);
    if cols < NR {
        rows[..pairs * NR].chunks_mut(NR).for_each(|w| w[cols..].fill(0));
    }
}

/// Words pairing `lo` with `hi` (one pair row of a panel).
fn pair_words(lo: &[f32], hi: &[f32], words: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if isa::active() == isa::Isa::Avx512 {
        // SAFETY: the CPU has AVX-512 F (isa::active never exceeds what it has).
        unsafe { pair_rows_avx512(lo, hi, words) };
        return;
    }
    pair_rows(lo, hi, words);
}

/// Pair row `p` of a group of panels from the two rows' runs `lo` and `hi` (the group's width).
fn pair_into(group: &mut [u32], ld: usize, p: usize, lo: &[f32], hi: &[f32]) {
    for (q, (lo, hi)) in lo.chunks(NR).zip(hi.chunks(NR)).enumerate() {
        pair_words(lo, hi, &mut group[(q * ld + p) * NR..][..lo.len()]);
    }
}

/// The convolution product of image `n` (`dst (m × grid) (+)= a · im2col`), its column matrix
/// packed straight from the image: no f32 column matrix is written and read back (for the
/// U-Net's second layer at ngf 64, 16 MB). `src` as [`im2col::split_phases`] leaves the input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bf16(
    dst: &mut [f32],
    a: &PackedA,
    src: &[f32],
    ph: &im2col::Phases,
    g: &im2col::Geom,
    n: usize,
    accumulate: bool,
) {
    let (k, s) = (g.rows(), g.grid());
    assert_eq!(k, a.k, "bf16 conv: inner dimensions differ");
    let taps = im2col::Taps::new(g, ph);
    let bp = super::profile::timed(
        || format!("bf16   im2col+pack {k}x{s}"),
        0.0,
        || pack_rows(k, s, a.ld, |r, j0, out| taps.fill(src, g, (n, r), j0, out)),
    );
    product_packed(dst, s, a, bytemuck::cast_slice(&bp[..]), s, accumulate);
}

/// `dst (m × n, row stride dst_rs) = a · B` with bf16 operands and f32 sums, `B`'s rows (`a.k`
/// of `n`) written a piece at a time by `fill(r, j0, out)`, `out.len()` columns from column
/// `j0`, as they are packed: a matrix never made whole (the skip concatenation's two parts,
/// rectified as read). Panics if the CPU lacks AVX512_BF16.
pub(crate) fn sgemm_bf16_rows(
    dst: &mut [f32],
    dst_rs: usize,
    a: &PackedA,
    n: usize,
    fill: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    assert!(isa::bf16_available(), "bf16 gemm: this CPU lacks AVX512_BF16");
    if a.m == 0 || n == 0 {
        return;
    }
    let bp = super::profile::timed(
        || format!("bf16   pack rows {}x{n}", a.k),
        0.0,
        || pack_rows(a.k, n, a.ld, fill),
    );
    product_packed(dst, dst_rs, a, bytemuck::cast_slice(&bp[..]), n, false);
}

/// `dst (m × n, row stride dst_rs) = a · b` (`+=` when `accumulate`) with bf16 operands and f32
/// sums. Panics if the CPU lacks AVX512_BF16 (callers check [`isa::bf16_available`]).
pub(crate) fn sgemm_bf16(dst: &mut [f32], dst_rs: usize, a: &PackedA, b: Mat, accumulate: bool) {
    let (m, n) = (a.m, b.cols);
    assert_eq!(b.rows, a.k, "bf16 gemm: inner dimensions differ");
    assert!(b.in_bounds(), "bf16 gemm: rhs view out of bounds");
    assert!(super::mat::extent(m, n, dst_rs, 1) <= dst.len(), "bf16 gemm: dst view out of bounds");
    assert!(dst_rs >= n || m <= 1, "bf16 gemm: dst rows overlap");
    assert!(isa::bf16_available(), "bf16 gemm: this CPU lacks AVX512_BF16");
    if m == 0 || n == 0 {
        return;
    }
    let bp = super::profile::timed(
        || format!("bf16   pack B   {}x{}", b.rows, b.cols),
        0.0,
        || pack_b(&b, a.ld),
    );
    product_packed(dst, dst_rs, a, bytemuck::cast_slice(&bp[..]), n, accumulate);
}

/// `dst (m × n, row stride dst_rs) (+)= a · B`, `B` packed (`bp`) by [`pack_b`] or
/// [`pack_rows`].
fn product_packed(
    dst: &mut [f32],
    dst_rs: usize,
    a: &PackedA,
    bp: &[u32],
    n: usize,
    accumulate: bool,
) {
    let m = a.m;
    assert!(super::mat::extent(m, n, dst_rs, 1) <= dst.len(), "bf16 gemm: dst view out of bounds");
    assert!(dst_rs >= n || m <= 1, "bf16 gemm: dst rows overlap");
    assert!(bp.len() >= n.div_ceil(NR) * a.ld * NR, "bf16 gemm: B panels too short");
    assert!(isa::bf16_available(), "bf16 gemm: this CPU lacks AVX512_BF16");
    if m == 0 || n == 0 {
        return;
    }
    let on_amx = amx::ready();
    // Rows a kernel call takes: AMX blocks are two tiles tall.
    let granule = if on_amx { amx::ROWS } else { MR };
    // Tasks: groups of column panels × blocks of rows, about four per thread.
    let panels = n.div_ceil(NR);
    let want = 4 * rayon::current_num_threads().max(1);
    let groups = panels.min(want);
    let cols_per_task = panels.div_ceil(groups);
    let row_blocks = want.div_ceil(groups).min(m.div_ceil(granule));
    let rows_per = m.div_ceil(row_blocks).next_multiple_of(granule);
    let tasks: Vec<(usize, usize)> = (0..m)
        .step_by(rows_per)
        .flat_map(|r0| (0..panels).step_by(cols_per_task).map(move |q0| (r0, q0)))
        .collect();
    let d = dst.as_mut_ptr() as usize;
    tasks.into_par_iter().for_each(|(r0, q0)| {
        let r1 = (r0 + rows_per).min(m);
        let q1 = (q0 + cols_per_task).min(panels);
        let region = Region { dst: d as *mut f32, dst_rs, n, rows: r0..r1, panels: q0..q1 };
        // SAFETY: task (r0, q0) writes only rows r0..r1 × columns q0·NR..min(q1·NR, n) of dst,
        // disjoint from every other task's and inside the view checked above; dst outlives the
        // loop, which joins before returning; the CPU has AVX512_BF16 (asserted above) and, on
        // that path, AMX with the process's permission (amx::ready).
        unsafe {
            if on_amx {
                amx::block(&region, a, bp, accumulate)
            } else {
                block(region.dst, dst_rs, a, bp, n, r0, r1, q0, q1, accumulate)
            }
        }
    });
}

/// The part of `C` one task computes: rows `rows` and columns `panels·NR` (up to `n`) of
/// `dst`, whose rows are `dst_rs` floats apart.
pub(crate) struct Region {
    pub dst: *mut f32,
    pub dst_rs: usize,
    pub n: usize,
    pub rows: std::ops::Range<usize>,
    pub panels: std::ops::Range<usize>,
}

/// Rows `r0..r1`, panels `q0..q1` of `C`.
///
/// # Safety
/// That region of `dst` is valid for writes and touched by no one else; AVX512_BF16 present.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn block(
    dst: *mut f32,
    dst_rs: usize,
    a: &PackedA,
    bp: &[u32],
    n: usize,
    r0: usize,
    r1: usize,
    q0: usize,
    q1: usize,
    accumulate: bool,
) {
    let (kp, ld) = (a.kp, a.ld);
    for p0 in (0..kp).step_by(KC) {
        let pc = KC.min(kp - p0);
        // Pairs before p0 are already in dst: add to them.
        let add = accumulate || p0 > 0;
        for q in q0..q1 {
            let j0 = q * NR;
            let cols = NR.min(n - j0);
            let panel = &bp[q * ld * NR + p0 * NR..][..pc * NR];
            let mut i = r0;
            while i < r1 {
                let rows = MR.min(r1 - i);
                let strip = &a.words[i * ld + p0..];
                let out = dst.add(i * dst_rs + j0);
                // SAFETY: rows i..i+rows, columns j0..j0+cols lie in this task's region.
                unsafe {
                    match rows {
                        6 => micro::<6>(strip, ld, panel, pc, out, dst_rs, cols, add),
                        5 => micro::<5>(strip, ld, panel, pc, out, dst_rs, cols, add),
                        4 => micro::<4>(strip, ld, panel, pc, out, dst_rs, cols, add),
                        3 => micro::<3>(strip, ld, panel, pc, out, dst_rs, cols, add),
                        2 => micro::<2>(strip, ld, panel, pc, out, dst_rs, cols, add),
                        _ => micro::<1>(strip, ld, panel, pc, out, dst_rs, cols, add),
                    }
                }
                i += rows;
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    _: *mut f32,
    _: usize,
    _: &PackedA,
    _: &[u32],
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("bf16 gemm runs only where isa::bf16_available()")
}

/// `R × cols` (cols ≤ NR) of `C` at `out` (row stride `rs`) (+)= the strip's `pc` pairs of `R`
/// rows of `A` (row stride `kp` words) times the panel (`pc × NR` words).
///
/// # Safety
/// `out` valid for `R` rows of `cols` floats at stride `rs`; `strip` holds `(R−1)·kp + pc`
/// words; AVX512_BF16 present.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn micro<const R: usize>(
    strip: &[u32],
    kp: usize,
    panel: &[u32],
    pc: usize,
    out: *mut f32,
    rs: usize,
    cols: usize,
    add: bool,
) {
    use std::arch::x86_64::*;
    assert!(strip.len() >= (R - 1) * kp + pc && panel.len() >= pc * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a, b) = (strip.as_ptr(), panel.as_ptr());
    for p in 0..pc {
        // SAFETY: p < pc and r < R keep both reads inside the lengths asserted above.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + p) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], w, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], w, b1);
            }
        }
    }
    let mask = |c: usize| -> __mmask16 {
        if c >= 16 {
            0xffff
        } else {
            ((1u32 << c) - 1) as u16
        }
    };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: masked to the first `cols` floats of row r, which the caller guarantees.
        unsafe {
            let row = out.add(r * rs);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if add {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            // Past `cols` when cols ≤ 16, but then the mask is empty and nothing is touched.
            _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
        }
    }
}

/// `c (m × n, row-major) = a (m × k, row-major) · b (k × n, row-major)` in bf16, for tests and
/// benchmarks; `Err` where the CPU lacks AVX512_BF16.
#[doc(hidden)]
pub fn bench_sgemm_bf16(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), String> {
    if !isa::bf16_available() {
        return Err("AVX512_BF16 is not available on this CPU".into());
    }
    let packed = PackedA::new(Mat::rm(a, m, k));
    sgemm_bf16(c, n, &packed, Mat::rm(b, k, n), false);
    Ok(())
}

/// A row-major `m × k` matrix packed once for [`sgemm_bf16`], as frozen layers keep their
/// weights: benchmarks time the product alone with it.
#[doc(hidden)]
pub struct Bf16Weights(PackedA);

impl Bf16Weights {
    /// `Err` where the CPU lacks AVX512_BF16.
    pub fn pack(a: &[f32], m: usize, k: usize) -> Result<Self, String> {
        if !isa::bf16_available() {
            return Err("AVX512_BF16 is not available on this CPU".into());
        }
        Ok(Self(PackedA::new(Mat::rm(a, m, k))))
    }

    /// `c (m × n, row-major) = A · b (k × n, row-major)`.
    pub fn product(&self, c: &mut [f32], b: &[f32], n: usize) {
        sgemm_bf16(c, n, &self.0, Mat::rm(b, self.0.k, n), false);
    }
}
