//! Direct convolution for the outer layers (an implicit GEMM with no column matrix), on AVX-512
//! and, for the image layers, AVX2.
//!
//! There im2col + gemm spends as long making and re-reading the column matrix (`c·k² × oh·ow`:
//! 16× the input at k4 s2) as multiplying: gemm ran the U-Net's 32→64 layer at 143 GFLOP/s
//! where ONNX Runtime's NCHWc direct kernel runs 300. Here the input is laid out once as
//! zero-padded phases (space-to-depth for the stride, so that every tap of a stride-`s`
//! convolution reads 16 *contiguous* pixels of one phase row), and each register tile holds
//! [`CO`] output channels × [`V`] vectors of 16 output pixels: per weight, `V` plain loads of the
//! input, [`CO`] broadcasts of packed weights and `V·CO` FMAs into accumulators that stay in
//! registers over a pass of [`KC`] taps, then one masked store per vector (bias added on the
//! first pass). Each tile runs all channel blocks on a pass's taps before the next pass, so the
//! input it reads is fetched once for all blocks; the weights (at most [`MAX_WEIGHTS`]) stay in
//! L2. The output is not zeroed first: the tiles write all of it.
//!
//! On AVX2 the tile is 8 channels × one vector of 8 pixels (16 ymm registers), run only on the
//! image layers ([`AVX2_MAX_TAPS`]); scalar CPUs keep im2col + gemm.

use rayon::prelude::*;

use super::direct_channels::{self, ChannelWeights, Packing};
use super::im2col::Geom;
use super::isa::{self, on_best_isa, Isa};
use super::mat::Mat;
use super::scratch::Scratch;

/// Output channels per register tile (a block of the packed weights).
const CO: usize = 8;
/// A register tile's shape on one instruction set: `v` vectors of `lanes` output pixels (×
/// [`CO`] channels). AVX-512: 3 × 16 (24 accumulators of the 32 zmm); AVX2: 1 × 8 (8 of the 16
/// ymm, the rest for the input vector and the broadcast).
#[derive(Clone, Copy)]
struct Form {
    isa: Isa,
    lanes: usize,
    v: usize,
}

impl Form {
    /// The tile on `isa`, if it has one and the CPU runs it.
    fn of(isa: Isa) -> Option<Form> {
        let f = match isa {
            Isa::Avx512 => Form { isa, lanes: 16, v: 3 },
            Isa::Avx2 => Form { isa, lanes: 8, v: 1 },
            Isa::Scalar => return None,
        };
        (cfg!(target_arch = "x86_64") && isa.available()).then_some(f)
    }
    /// The tile on the kernels' level ([`isa::active`]); should a test have narrowed that to
    /// scalar since a layer was dispatched here, the CPU's best (any tile is exact, the level
    /// only chooses the speed).
    fn now() -> Option<Form> {
        Form::of(isa::active()).or_else(|| Form::of(isa::detected()))
    }
}
/// Taps per pass of a tile over its channel blocks: the input they read (`KC` runs of `V`
/// vectors, ~4 cache lines each: 16 KB) stays in L1 while every block reuses it. 64 and 128
/// measured alike (`gemm_shapes`); the pass keeps the input well inside L1 either way.
const KC: usize = 64;

/// Whether [`conv_direct`] runs this layer, of `m` output channels, its weights packed as
/// `packing` says: on the channel form where that suits the layer ([`direct_channels::suits`]),
/// else on the pixel form where it applies.
pub(crate) fn applies(g: &Geom, m: usize, packing: Packing) -> bool {
    g.dil == 1 && (direct_channels::suits(m, g.rows(), packing) || pixels_apply(g, m))
}

/// Whether the pixel form runs this layer: output rows of at least a vector (on narrower grids
/// most lanes would be masked off) and at most [`MAX_WEIGHTS`] weights on AVX-512; on AVX2 only
/// the image layers (at most [`AVX2_MAX_TAPS`] taps).
pub(crate) fn pixels_apply(g: &Geom, m: usize) -> bool {
    let fits = |f: Form| match f.isa {
        Isa::Avx2 => g.rows() <= AVX2_MAX_TAPS,
        _ => m * g.rows() <= MAX_WEIGHTS,
    };
    Form::of(isa::active()).is_some_and(|f| g.ow >= f.lanes && fits(f))
        && g.dil == 1
        && g.rows() > 0
}

/// On AVX2 the direct kernel runs layers of at most this many taps (3 channels × 4×4: the
/// generator's first layer). Its 8-accumulator tile was measured only on an AVX-512 machine
/// with the tile forced to AVX2 and gemm still on AVX-512 (`gemm_shapes`): 3→32 @256² 0.55 ms vs
/// 0.88, 3→64 even, 6→64 and 32→64 slower (2.3 vs 1.8, 2.9 vs 2.3 ms); against an AVX2 gemm
/// the larger layers may win too, not measured.
const AVX2_MAX_TAPS: usize = 48;

/// Layers with more weights than this (512 KB) stay on im2col + gemm: every tile reads all of
/// its weights, which then come from L3, where gemm's blocking reads them once per panel
/// (`gemm_shapes`, 2-thread AVX-512 Xeon: 128→256 channels @64² 5.5 ms direct vs 4.5, 256→512
/// @32² 7.2 vs 4.5; at 128 × 1024 weights and less direct wins, 1.4–2.2× on the outermost).
const MAX_WEIGHTS: usize = 128 * 1024;

/// The zero-padded phases of one input (see the module doc): phase `(py, px)` of channel `c`
/// is a `ph × pw` plane at `((c·s + py)·s + px)·ph·pw`; the tap `(ky, kx)` of output pixel
/// `(oy, ox)` reads its plane at `(oy + dy)·pw + ox + dx`, with `(py, dy)` and `(px, dx)` from
/// [`Padded::tap`].
struct Padded {
    s: usize,
    /// The phases' smallest tap offsets (`-pad` divided by the stride, rounded down).
    lo_y: isize,
    lo_x: isize,
    ph: usize,
    pw: usize,
}

impl Padded {
    fn new(g: &Geom, lanes: usize) -> Self {
        let s = g.stride as isize;
        let (pad, kh, kw) = (g.pad as isize, g.kh as isize, g.kw as isize);
        let (lo_y, hi_y) = ((-pad).div_euclid(s), (kh - 1 - pad).div_euclid(s));
        let (lo_x, hi_x) = ((-pad).div_euclid(s), (kw - 1 - pad).div_euclid(s));
        // Rows of vectors read up to ow rounded up to a vector (the lanes past ow are computed
        // from zeros and never stored).
        let owp = g.ow.next_multiple_of(lanes);
        let ph = g.oh + (hi_y - lo_y) as usize;
        let pw = owp + (hi_x - lo_x) as usize;
        Self { s: g.stride, lo_y, lo_x, ph, pw }
    }
    fn plane(&self) -> usize {
        self.ph * self.pw
    }
    /// Offset of tap `(c, ky, kx)` from output pixel `(0, 0)`'s place in channel 0's planes.
    fn tap(&self, g: &Geom, c: usize, ky: usize, kx: usize) -> usize {
        let s = self.s as isize;
        let (ty, tx) = (ky as isize - g.pad as isize, kx as isize - g.pad as isize);
        let (py, dy) = (ty.rem_euclid(s) as usize, (ty.div_euclid(s) - self.lo_y) as usize);
        let (px, dx) = (tx.rem_euclid(s) as usize, (tx.div_euclid(s) - self.lo_x) as usize);
        ((c * self.s + py) * self.s + px) * self.plane() + dy * self.pw + dx
    }
    /// Image `x` (`c × h × w`) into `out` (`c·s² · plane` floats), through
    /// `leaky_relu(·, act)` when `act` is a slope; every float of `out` is written.
    fn fill(&self, x: &[f32], g: &Geom, out: &mut [f32], act: Option<f32>) {
        let (s, hw, plane) = (self.s, g.h * g.w, self.plane());
        // leaky_relu with slope 1 is the identity, to the bit: one loop for both.
        let slope = act.unwrap_or(1.0);
        // Tasks: the s phases (px) of one (channel, py), written together from each line.
        out.par_chunks_mut(s * plane).with_min_len(2).enumerate().for_each(|(i, dst)| {
            let (c, py) = (i / s, i % s);
            let src = &x[c * hw..][..hw];
            let mut phases: Vec<&mut [f32]> = dst.chunks_exact_mut(plane).collect();
            for a in 0..self.ph {
                let iy = s as isize * (a as isize + self.lo_y) + py as isize;
                let rows = phases.iter_mut().map(|p| &mut p[a * self.pw..][..self.pw]);
                if iy < 0 || iy >= g.h as isize {
                    rows.for_each(|r| r.fill(0.0));
                    continue;
                }
                let line = &src[iy as usize * g.w..][..g.w];
                for (px, row) in rows.enumerate() {
                    // Columns b whose pixel s·(b + lo_x) + px lies in 0..w (lo_x <= 0, px < s);
                    // zeros around them.
                    let b0 = ((-self.lo_x) as usize).min(self.pw);
                    let b1 = (b0 + g.w.saturating_sub(px).div_ceil(s)).min(self.pw);
                    row[..b0].fill(0.0);
                    row[b1..].fill(0.0);
                    if b0 < b1 {
                        gather(&line[px..], s, &mut row[b0..b1], slope);
                    }
                }
            }
        });
    }
}

on_best_isa!(
    /// `dst[i] = leaky_relu(src[i·s], slope)`: one phase's row from an image line.
    fn gather => gather_body(src: &[f32], s: usize, dst: &mut [f32], slope: f32)
);

#[inline(always)]
fn gather_body(src: &[f32], s: usize, dst: &mut [f32], slope: f32) {
    let leaky = super::activation::leaky;
    match s {
        // The U-Net's stride, as fixed-size pairs: vectorised (a shuffle), where step_by is not.
        2 => {
            let pairs = src.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            let n = dst.len().min(pairs.len());
            dst[..n].iter_mut().zip(pairs).for_each(|(d, p)| *d = leaky(p[0], slope));
            if let (Some(d), Some(v)) = (dst.get_mut(n), last) {
                *d = leaky(v, slope);
            }
        }
        _ => dst.iter_mut().zip(src.iter().step_by(s)).for_each(|(d, v)| *d = leaky(*v, slope)),
    }
}

/// A layer's weights packed for the direct kernel that suits it: the channel form
/// ([`direct_channels`]) for many-channel layers, the pixel form (this file) for the image
/// layers. Frozen layers keep theirs, made once; others pack per call.
pub(crate) enum DirectWeights {
    Pixels(PixelWeights),
    Channels(ChannelWeights),
}

impl DirectWeights {
    pub fn pack(w: Mat, packing: Packing) -> Self {
        match direct_channels::suits(w.rows, w.cols, packing) {
            true => Self::Channels(ChannelWeights::pack(w)),
            false => Self::Pixels(PixelWeights::pack(w)),
        }
    }
    pub fn rows(&self) -> usize {
        match self {
            Self::Pixels(w) => w.m,
            Self::Channels(w) => w.rows(),
        }
    }
    /// Whether these weights' kernel runs grid `g` on the kernels' level (a test may have
    /// narrowed it since they were packed).
    pub fn runs(&self, g: &Geom) -> bool {
        g.dil == 1
            && match self {
                Self::Pixels(w) => pixels_apply(g, w.m),
                Self::Channels(_) => direct_channels::available(),
            }
    }
}

/// A layer's `m × k` weights as the pixel form's tiles read them: blocks of [`CO`] output
/// channels, each `k × CO` (zeros past `m`).
pub(crate) struct PixelWeights {
    data: Vec<f32>,
    m: usize,
    k: usize,
}

impl PixelWeights {
    pub fn pack(w: Mat) -> Self {
        assert!(w.in_bounds(), "direct conv: weight view out of bounds");
        let (m, k) = (w.rows, w.cols);
        let mut data = vec![0f32; m.div_ceil(CO) * k * CO];
        // Row by row, so that the reads run along the rows (the writes, CO apart, stay in the
        // block's k·CO floats).
        data.par_chunks_mut((k * CO).max(1)).enumerate().for_each(|(b, blk)| {
            for j in 0..CO.min(m - b * CO) {
                let row = (b * CO + j) * w.rs;
                for (t, d) in blk.iter_mut().skip(j).step_by(CO).enumerate() {
                    *d = w.data[row + t * w.cs];
                }
            }
        });
        Self { data, m, k }
    }
}

/// `(nb, m, oh, ow)` = conv of `leaky_relu(x, act)` (or of `x`) — `nb` NCHW images of geometry
/// `g` — with the packed `m × g.rows()` weights `w`, `bias` added. Callers check
/// [`DirectWeights::runs`] (or [`applies`] before packing).
pub(crate) fn conv_direct(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: &DirectWeights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let m = w.rows();
    let form = match w {
        DirectWeights::Pixels(_) => "direct  ",
        DirectWeights::Channels(_) => "channels",
    };
    super::timed(
        || format!("conv   {form} {m}x{}x{nb} k{} s{} @{}x{}", g.c, g.kh, g.stride, g.oh, g.ow),
        2.0 * (m * nb * g.grid() * g.rows()) as f64,
        || match w {
            DirectWeights::Pixels(w) => {
                let f =
                    Form::now().expect("direct conv: dispatched on a CPU without AVX2 or AVX-512");
                conv_on(f, x, nb, g, w, bias, act)
            }
            DirectWeights::Channels(w) => direct_channels::conv(x, nb, g, w, bias, act),
        },
    )
}

/// The pixel form of [`conv_direct`], on the tile `f`.
fn conv_on(
    f: Form,
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: &PixelWeights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let (m, k, s) = (w.m, g.rows(), g.grid());
    assert!(f.isa.available(), "direct conv: {} not on this CPU", f.isa.name());
    assert_eq!(g.dil, 1, "direct conv: dilated kernel");
    assert_eq!(w.k, k, "direct conv: weight columns");
    assert_eq!(x.len(), nb * g.c * g.h * g.w, "direct conv: input size");
    assert!(bias.is_none_or(|b| b.len() == m), "direct conv: bias length");
    let len = nb * m * s;
    // Not zeroed first (a pass over up to 8 MB): the tiles write every float (below).
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let pad = Padded::new(g, f.lanes);
    let blocks = m.div_ceil(CO);
    let wp = &w.data;
    let kk = g.kh * g.kw;
    let offs: Vec<usize> = (0..k).map(|t| pad.tap(g, t / kk, t / g.kw % g.kh, t % g.kw)).collect();
    let reach = offs.iter().max().copied().unwrap_or(0) + f.lanes;
    let per_image = g.c * g.stride * g.stride * pad.plane();
    let mut src = Scratch::take(nb * per_image);
    for (n, dst) in src.chunks_exact_mut(per_image).enumerate() {
        pad.fill(&x[n * g.c * g.h * g.w..][..g.c * g.h * g.w], g, dst, act);
    }
    // Vectors of output pixels, row by row; tiles of f.v of them (a tile may span rows).
    let row_vecs = g.ow.div_ceil(f.lanes);
    let vecs = g.oh * row_vecs;
    let tiles = vecs.div_ceil(f.v);
    // Tasks: (image, run of tiles), a few per thread; each tile runs every channel block on a
    // range of taps in turn, so that the input it reads comes into L1 once and not once per
    // block (read once per block, the layers ran at 120 GFLOP/s).
    let threads = rayon::current_num_threads().max(1);
    let runs = (4 * threads).div_ceil(nb).clamp(1, tiles);
    let per_run = tiles.div_ceil(runs);
    let jobs: Vec<Job> = (0..blocks)
        .map(|b| Job {
            offs: &offs,
            reach,
            w: &wp[b * k * CO..][..k * CO],
            bias: std::array::from_fn(|j| {
                bias.and_then(|bs| bs.get(b * CO + j)).copied().unwrap_or(0.0)
            }),
            channels: CO.min(m - b * CO),
            pw: pad.pw,
            ow: g.ow,
            row_vecs,
            plane: s,
        })
        .collect();
    let dst = out.as_mut_ptr() as usize;
    (0..nb * runs).into_par_iter().for_each(|task| {
        let (n, r) = (task / runs, task % runs);
        let src = &src[n * per_image..][..per_image];
        let (t0, t1) = (r * per_run, ((r + 1) * per_run).min(tiles));
        for t in t0..t1 {
            let v0 = t * f.v;
            for k0 in (0..k).step_by(KC) {
                let kc = k0..(k0 + KC).min(k);
                for (b, job) in jobs.iter().enumerate() {
                    // SAFETY: this task accesses only the pixels of vectors v0 .. v0 + f.v of
                    // image n (output rows are disjoint between vectors and tiles, tiles between
                    // runs, images between images), channel block b's channels, all inside out
                    // (m·s floats per image). The CPU has f's ISA (asserted above).
                    unsafe {
                        let base = (dst as *mut f32).add((n * m + b * CO) * s);
                        match (f.isa, v0 + 3 <= vecs) {
                            (Isa::Avx2, _) => tile_avx2::<1>(job, src, kc.clone(), v0, base),
                            (_, true) => tile_avx512::<3>(job, src, kc.clone(), v0, base),
                            (_, false) => {
                                for v in v0..vecs {
                                    tile_avx512::<1>(job, src, kc.clone(), v, base);
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    // SAFETY: the tasks above wrote all len floats: every image, every channel < m (blocks of
    // CO, the last one `m - b·CO`), every pixel (the vectors of each row cover 0..ow, their
    // masks its end); a tile reads out only where its first range of taps wrote.
    unsafe { out.set_len(len) };
    out
}

/// What every tile of one channel block reads, but the input.
struct Job<'a> {
    /// Each weight column's tap offset into `src`.
    offs: &'a [usize],
    /// Past the furthest float a vector at offset 0 reads, at any tap.
    reach: usize,
    /// The block's packed weights, `k × CO`.
    w: &'a [f32],
    bias: [f32; CO],
    /// Channels of the block that exist (the rest of `w` is zero padding).
    channels: usize,
    pw: usize,
    ow: usize,
    row_vecs: usize,
    /// Floats of one output channel plane.
    plane: usize,
}

/// One instruction set's vectors as the tile uses them. The methods are `inline(always)` so
/// that they compile inside the `target_feature` functions that call them ([`tile_avx512`],
/// [`tile_avx2`]), whose features the intrinsics need.
#[cfg(target_arch = "x86_64")]
trait Vectors {
    const LANES: usize;
    type V: Copy;
    type Mask: Copy;
    unsafe fn splat(v: f32) -> Self::V;
    /// The first `lanes` lanes.
    unsafe fn mask(lanes: usize) -> Self::Mask;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self::V;
    unsafe fn store_masked(p: *mut f32, m: Self::Mask, v: Self::V);
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Vectors for Avx512 {
    const LANES: usize = 16;
    type V = std::arch::x86_64::__m512;
    type Mask = u16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        // SAFETY (here and below): the caller runs with AVX-512 F enabled (trait doc).
        unsafe { std::arch::x86_64::_mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> u16 {
        ((1u32 << lanes.min(16)) - 1) as u16
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: u16) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, m: u16, v: Self::V) {
        unsafe { std::arch::x86_64::_mm512_mask_storeu_ps(p, m, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, c) }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Vectors for Avx2 {
    const LANES: usize = 8;
    type V = std::arch::x86_64::__m256;
    type Mask = std::arch::x86_64::__m256i;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        // SAFETY (here and below): the caller runs with AVX2 and FMA enabled (trait doc).
        unsafe { std::arch::x86_64::_mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> Self::Mask {
        use std::arch::x86_64::*;
        unsafe {
            let ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes.min(8) as i32), ids)
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_maskload_ps(p, m) }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, m: Self::Mask, v: Self::V) {
        unsafe { std::arch::x86_64::_mm256_maskstore_ps(p, m, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, c) }
    }
}

/// Taps `kc` (a range of the reduction) of the tile of `NV` vectors from vector `v0`
/// (`job.row_vecs` per output row) of the block's channels, on `src` (an image's padded
/// phases), at `out` (the block's first channel plane): the first range starts from the bias,
/// the others add to what `out` holds.
///
/// # Safety
/// The CPU has `S`'s instruction set and the caller is compiled for it; `out + j·plane +
/// oy·ow + ox` is valid for reads and writes, and accessed by no one else, for the block's
/// channels `j` and the tile's pixels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<S: Vectors, const NV: usize>(
    job: &Job,
    src: &[f32],
    kc: std::ops::Range<usize>,
    v0: usize,
    out: *mut f32,
) {
    let (mut base, mut at) = ([0usize; NV], [0usize; NV]);
    // SAFETY (every intrinsic below): the caller's contract on the instruction set.
    let mut mask = [unsafe { S::mask(0) }; NV];
    for i in 0..NV {
        let (oy, ox) = ((v0 + i) / job.row_vecs, (v0 + i) % job.row_vecs * S::LANES);
        base[i] = oy * job.pw + ox;
        at[i] = oy * job.ow + ox;
        mask[i] = unsafe { S::mask(job.ow - ox) };
    }
    let (offs, w) = (&job.offs[kc.clone()], &job.w[kc.start * CO..kc.end * CO]);
    // Every read below stays inside src: the planes are padded so that a vector's last lane,
    // at any tap, is at most (ph - 1)·pw + pw - 1 into its plane (Padded::new).
    assert!(base[NV - 1] + job.reach <= src.len(), "direct conv: padded input too short");
    let src = src.as_ptr();
    let mut acc = [[unsafe { S::splat(0.0) }; NV]; CO];
    for (j, acc) in acc.iter_mut().enumerate().take(job.channels) {
        for i in 0..NV {
            acc[i] = match kc.start {
                0 => unsafe { S::splat(job.bias[j]) },
                // SAFETY: this tile's pixels of channel j (caller's contract).
                _ => unsafe { S::load_masked(out.add(j * job.plane + at[i]), mask[i]) },
            };
        }
    }
    for (t, &off) in offs.iter().enumerate() {
        // SAFETY: off + base[i] + LANES - 1 < src.len() for every tap's off (asserted above),
        // so the prefetched addresses too; t·CO + j < w.len().
        unsafe {
            let p = src.add(off);
            // The input a few taps on, whose jumps between phase planes the hardware
            // prefetchers do not follow (on the 32→64 layer alone, 1 thread: 3.0 → 2.5 ms;
            // with every tap's input kept in L1 instead, 2.4; in the whole network the layers
            // measured within the noise).
            if let Some(&ahead) = offs.get(t + PREFETCH_TAPS) {
                for b in base {
                    let q = src.add(ahead + b);
                    isa::prefetch(q);
                    isa::prefetch(q.add(S::LANES - 1));
                }
            }
            let v: [S::V; NV] = std::array::from_fn(|i| S::load(p.add(base[i])));
            let w = w.as_ptr().add(t * CO);
            for (j, acc) in acc.iter_mut().enumerate() {
                let wj = S::splat(*w.add(j));
                for i in 0..NV {
                    acc[i] = S::fmadd(wj, v[i], acc[i]);
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate().take(job.channels) {
        for i in 0..NV {
            // SAFETY: the masked lanes are this tile's pixels of channel j (caller's contract).
            unsafe { S::store_masked(out.add(j * job.plane + at[i]), mask[i], acc[i]) }
        }
    }
}

/// How far ahead in the taps [`tile`] prefetches its input (4, 8 and 16 measured alike).
const PREFETCH_TAPS: usize = 8;

/// Defines `$name`: [`tile`] on `$vectors`, compiled with `$features` enabled (a
/// `target_feature` function cannot be generic over them); off x86-64, where [`applies`] is
/// false, a stub that is never called.
macro_rules! tile_entry {
    ($(#[$doc:meta])* $name:ident, $vectors:ident, $features:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As [`tile`], the CPU having the features this function is compiled for.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<const NV: usize>(
            job: &Job,
            src: &[f32],
            kc: std::ops::Range<usize>,
            v0: usize,
            out: *mut f32,
        ) {
            // SAFETY: the contract, passed on; this function is compiled for the features.
            unsafe { tile::<$vectors, NV>(job, src, kc, v0, out) }
        }

        #[cfg(not(target_arch = "x86_64"))]
        unsafe fn $name<const NV: usize>(
            _: &Job,
            _: &[f32],
            _: std::ops::Range<usize>,
            _: usize,
            _: *mut f32,
        ) {
            unreachable!("direct conv: applies() is false off x86-64")
        }
    };
}

tile_entry!(
    /// [`tile`] on AVX-512 F: vectors of 16 pixels.
    tile_avx512,
    Avx512,
    "avx512f"
);
tile_entry!(
    /// [`tile`] on AVX2 + FMA: vectors of 8 pixels.
    tile_avx2,
    Avx2,
    "avx2,fma"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::assert_conv;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// Against a direct f64 sum of the definition, on the U-Net's geometry (k4 s2 p1), stride
    /// 1 (the PatchGAN's last layers), an odd kernel and padding, rows that end mid-vector,
    /// channel counts that leave partial blocks and tiles, bias and the fused activation.
    #[test]
    fn direct_conv_matches_the_definition() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            match Form::of(isa) {
                Some(f) => check_tiles(f),
                None => test_report::skipped(
                    &format!("direct conv on {}", isa.name()),
                    "not on this CPU",
                ),
            }
        }
    }

    fn check_tiles(f: Form) {
        for (nb, c, (h, wd), m, kh, st, pad, act) in [
            (1, 3, (64, 64), 32, 4, 2, 1, None),
            (2, 5, (34, 40), 13, 4, 2, 1, Some(0.2)),
            (1, 6, (20, 37), 8, 4, 1, 1, None),
            (1, 4, (18, 33), 9, 3, 1, 2, Some(0.2)),
            (1, 2, (40, 50), 17, 3, 2, 0, None),
        ] {
            let g = Geom::conv(c, (h, wd), (kh, kh), st, pad, 1).expect("geometry");
            let x = test_values(nb * c * h * wd, 40.0);
            let w = test_values(m * g.rows(), 90.0);
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 0.5).collect();
            let packed = PixelWeights::pack(Mat::rm(&w, m, g.rows()));
            let got = conv_on(f, &x, nb, &g, &packed, Some(&bias), act);
            assert_conv(&got, &x, nb, &g, &w, m, &bias, act, f.isa.name());
        }
    }
}
