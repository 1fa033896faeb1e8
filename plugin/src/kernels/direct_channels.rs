//! Direct convolution vectorised along output channels (ONNX Runtime's NCHWc scheme), on
//! AVX-512, for the encoder's many-channel layers.
//!
//! [`super::direct`]'s tiles hold 16 output *pixels* per vector and broadcast the weights: per
//! tap, 3 input loads that straddle cache lines and 8 broadcasts feed 24 FMAs, and the encoder
//! layers ran at 65–75 % of the sgemm peak where ORT's kernel runs at ~100 %. Here a register
//! tile holds [`CV`] vectors of 16 output *channels* × [`NP`] output pixels: per tap, `CV`
//! aligned loads of packed weights and `NP` broadcasts of single input floats feed `CV·NP` =
//! 24 FMAs. A broadcast reads its float wherever the stride puts it, so the input needs no
//! phase split, only a zero-padded copy (with the down path's activation applied on the way).
//!
//! The accumulators are channels-last (`[pixel][channel]`): each task keeps its pixels' sums
//! in a small channels-last buffer over passes of [`KC`] taps (16 KB of weights, which stay in
//! L1 while every tile of the task reuses them) and transposes it into the NCHW output at the
//! end. Tiles run along the task's pixels in row-major order and may span output rows.

use rayon::prelude::*;

use super::im2col::Geom;
use super::isa::{self, on_best_isa, Isa};
use super::mat::{extent, Mat};
use super::scratch::Scratch;

/// Output channels per block of the packed weights: [`CV`] vectors of 16.
pub(crate) const CB: usize = CV * 16;
/// Channel vectors per register tile.
pub(crate) const CV: usize = 4;
/// Output pixels per register tile: `CV·NP` = 24 accumulators, `CV` weight registers and a
/// broadcast of the 32 zmm registers.
pub(crate) const NP: usize = 6;
/// Taps per pass of a task over its tiles: `KC × CB` floats of weights (16 KB).
const KC: usize = 64;

/// A layer's `m × k` weights as the tiles read them: blocks of [`CB`] output channels, each
/// `k × CB` (tap-major; zeros past `m`), 64-byte aligned so that no load straddles two lines.
#[derive(Default)]
pub(crate) struct ChannelWeights {
    data: Vec<f32>,
    /// Where the aligned floats start in `data`.
    start: usize,
    m: usize,
    k: usize,
}

impl ChannelWeights {
    pub fn pack(w: Mat) -> Self {
        assert!(w.in_bounds(), "direct conv: weight view out of bounds");
        Self::pack_by(w.rows, w.cols, |b, blk| {
            let (m, k) = (w.rows, w.cols);
            let rows = CB.min(m - b * CB);
            if w.cs == 1 && available() {
                // SAFETY: the block's rows of k floats are inside w (in_bounds, asserted); blk
                // holds k × CB floats; the CPU has AVX-512 F (available).
                unsafe { to_channels_last(&w.data[b * CB * w.rs..], rows, w.rs, k, blk) };
                return;
            }
            for j in 0..rows {
                let row = (b * CB + j) * w.rs;
                for (t, d) in blk.iter_mut().skip(j).step_by(CB).enumerate() {
                    *d = w.data[row + t * w.cs];
                }
            }
        })
    }

    /// `m × k` weights whose block `b` (`k × CB` floats, tap-major, zeros past `m`) `fill`
    /// writes, in parallel over blocks.
    pub fn pack_by(m: usize, k: usize, fill: impl Fn(usize, &mut [f32]) + Sync + Send) -> Self {
        Self::pack_in(Vec::new(), m, k, fill)
    }

    /// [`Self::pack_by`] into `buf`'s memory (grown as needed, a fresh one zeroed), for `fill`s
    /// that write every float of their block: what [`Self::into_buffer`] gave back, saving a
    /// fresh allocation's page faults at every per-call packing.
    pub fn pack_in(
        mut data: Vec<f32>,
        m: usize,
        k: usize,
        fill: impl Fn(usize, &mut [f32]) + Sync + Send,
    ) -> Self {
        let len = m.div_ceil(CB) * k * CB;
        if data.len() < len + 16 {
            data = vec![0f32; len + 16];
        }
        let start = aligned_start(&data);
        data[start..][..len]
            .par_chunks_mut((k * CB).max(1))
            .enumerate()
            .for_each(|(b, blk)| fill(b, blk));
        Self { data, start, m, k }
    }
    pub fn rows(&self) -> usize {
        self.m
    }
    /// The memory, for [`Self::pack_in`].
    pub fn into_buffer(self) -> Vec<f32> {
        self.data
    }
    /// Block `b`'s `k × CB` floats.
    pub(crate) fn block(&self, b: usize) -> &[f32] {
        &self.data[self.start + b * self.k * CB..][..self.k * CB]
    }
}

/// `rows` (at most [`CB`]) rows of `cols` floats, `rs` apart in `src`, into `dst` (`cols × CB`,
/// channels-last: row `r`'s float `c` at `c·CB + r`), zeros past `rows`: 16 × 16 transposes in
/// registers, the ragged edges one float at a time. Packs weight blocks (training packs every
/// call: one float at a time, the writes `CB` apart, the 256→512 PatchGAN layer took
/// milliseconds) and lays a grid gradient out for [`super::weight_grad_channels`].
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn to_channels_last(
    src: &[f32],
    rows: usize,
    rs: usize,
    cols: usize,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(rows <= CB && dst.len() >= cols * CB, "channels-last: destination too short");
    assert!(rows == 0 || src.len() >= (rows - 1) * rs + cols, "channels-last: source too short");
    let (full_c, full_r) = (cols / 16 * 16, rows / 16 * 16);
    let (x, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY (every access): row r < rows, column c < cols inside src; column c < cols, lane
    // < CB inside dst (asserted above).
    unsafe {
        for c in (0..full_c).step_by(16) {
            for r in (0..full_r).step_by(16) {
                let v: [__m512; 16] =
                    std::array::from_fn(|i| _mm512_loadu_ps(x.add((r + i) * rs + c)));
                for (j, col) in transpose16(v).into_iter().enumerate() {
                    _mm512_storeu_ps(d.add((c + j) * CB + r), col);
                }
            }
        }
        for c in 0..cols {
            let from_r = if c < full_c { full_r } else { 0 };
            for r in from_r..CB {
                *d.add(c * CB + r) = if r < rows { *x.add(r * rs + c) } else { 0.0 };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn to_channels_last(_: &[f32], _: usize, _: usize, _: usize, _: &mut [f32]) {
    unreachable!("direct conv: available() is false off x86-64")
}

/// The index of `v`'s first 64-byte aligned float (`v` has 16 floats to spare).
fn aligned_start(v: &[f32]) -> usize {
    v.as_ptr().align_offset(64).min(16)
}

/// `len` floats of `buf` (at least `len` + 16 long) from a 64-byte boundary.
pub(crate) fn aligned(buf: &mut [f32], len: usize) -> &mut [f32] {
    let at = aligned_start(buf);
    &mut buf[at..][..len]
}

/// Whether this kernel suits a layer of `m` output channels and `k` taps (channels × kernel
/// taps), on this CPU, its weights packed as `packing` says: at least a block's 64 channels and
/// 256 taps (16 input channels at 4×4), at most [`max_weights`]. `gemm_shapes` (2-thread
/// AVX-512 Xeon, weights packed once): ahead of the pixel form and of im2col + gemm on every
/// U-Net layer of that size measured — 32→64 @128² 1.08 ms vs 1.30 and 2.30, 128→256 @32² 0.97
/// vs gemm 1.44, 256→256 @8² 0.26 vs 0.46, 256→512 @32² 3.7 vs 4.8, 512→512 @16² 2.5 vs 3.5 —;
/// behind the pixel form on the image layers (3→64 @256² 3.24 vs 2.68 ms at batch 4, 6→64 too).
pub(crate) fn suits(m: usize, k: usize, packing: Packing) -> bool {
    m >= CB && k >= 256 && m * k <= max_weights(packing) && available()
}

/// How a layer's weights reach the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Packing {
    /// Packed once and kept (frozen layers).
    Once,
    /// Packed at every call (training).
    PerCall,
}

/// The most weights a layer runs on this kernel with: 4 M (every U-Net layer) for frozen f32
/// layers, 2 M (8 MB) for training's, packed at every call, 1 M (4 MB) otherwise. A frozen layer
/// keeps its packed copy beside its f32 weights: ngf 64's eight layers of 2–4 M weights add
/// 78 MB, which `host run` affords in f32 (297 → 352 MiB, 367 with running statistics; budget
/// 1.5 × weights + 64 MiB = 375) but not in bf16, whose packed bf16 weights come on top (378 MiB
/// with running statistics); the capped ngf-64 forward measured 64.0–64.8 ms against 54.3
/// uncapped (side-by-side runs, ORT 59.7–60). A training step packs every call; on an older 2-thread Xeon, uncapped, its ngf-64 steps measured
/// 731 and 2000 ms (batch 1, 4) against 578–659 and 1797–1844 capped at 1 M, within that VM's
/// ±20 %. On Zen 5 the 2 M layers gain (kernel profile, ngf 64 batch 4, ms over 5 steps; gemm
/// with its im2col, permutes and col2im → channel tiles with their packing): the PatchGAN's
/// 256→512 @31² forward, input and weight gradients 1892 → 1587, the generator's 256→512 @16²
/// forward 68 → 54 and weight gradient 87 → 56.
fn max_weights(packing: Packing) -> usize {
    match packing {
        Packing::Once if !super::bf16::active() => 1 << 22,
        Packing::PerCall => 1 << 21,
        _ => 1 << 20,
    }
}

/// Whether the kernels' level ([`isa::active`]) is AVX-512, which [`conv`] needs.
pub(crate) fn available() -> bool {
    cfg!(target_arch = "x86_64") && isa::active() == Isa::Avx512
}

/// The zero-padded input of one image: channel `c` is a `ph × pw` plane holding input pixel
/// `(iy, ix)` at `(iy + pad, ix + pad)`, so that tap `(ky, kx)` of output pixel `(oy, ox)` reads
/// `(oy·s + ky, ox·s + kx)`.
pub(crate) struct Padded {
    pub ph: usize,
    pub pw: usize,
}

impl Padded {
    pub fn new(g: &Geom) -> Self {
        Self { ph: (g.oh - 1) * g.stride + g.kh, pw: (g.ow - 1) * g.stride + g.kw }
    }
    pub fn plane(&self) -> usize {
        self.ph * self.pw
    }
    /// Each tap's offset (tap `t` of `g.rows()`: channel, row, column of the kernel) from a
    /// pixel's base in the planes.
    pub fn tap_offsets(&self, g: &Geom) -> Vec<usize> {
        let kk = g.kh * g.kw;
        (0..g.rows()).map(|t| ((t / kk) * self.ph + t / g.kw % g.kh) * self.pw + t % g.kw).collect()
    }
    /// The `nb` images `x` ([`Padded::fill`] each), `c · plane` floats apart.
    pub fn fill_images(&self, x: &[f32], nb: usize, g: &Geom, act: Option<f32>) -> Scratch {
        let (per_image, size) = (g.c * self.plane(), g.c * g.h * g.w);
        let mut out = Scratch::take(nb * per_image);
        for (n, dst) in out.chunks_exact_mut(per_image).enumerate() {
            self.fill(&x[n * size..][..size], g, dst, act);
        }
        out
    }
    /// Image `x` (`c × h × w`) into `out` (`c · plane` floats), through `leaky_relu(·, act)`
    /// when `act` is a slope; every float of `out` is written.
    pub fn fill(&self, x: &[f32], g: &Geom, out: &mut [f32], act: Option<f32>) {
        // leaky_relu with slope 1 is the identity, to the bit: one loop for both.
        let slope = act.unwrap_or(1.0);
        let hw = g.h * g.w;
        out.par_chunks_mut(self.plane())
            .with_min_len(4)
            .enumerate()
            .for_each(|(c, dst)| fill_plane(dst, &x[c * hw..][..hw], g, self.pw, slope));
    }
}

on_best_isa!(
    /// One channel's padded plane (rows of `pw`) from its `h × w` input plane `src`.
    fn fill_plane => fill_plane_body(dst: &mut [f32], src: &[f32], g: &Geom, pw: usize, slope: f32)
);

#[inline(always)]
fn fill_plane_body(dst: &mut [f32], src: &[f32], g: &Geom, pw: usize, slope: f32) {
    let leaky = super::activation::leaky;
    let (b0, b1) = (g.pad.min(pw), (g.pad + g.w).min(pw));
    for (a, row) in dst.chunks_exact_mut(pw).enumerate() {
        let iy = a as isize - g.pad as isize;
        if iy < 0 || iy >= g.h as isize {
            row.fill(0.0);
            continue;
        }
        let line = &src[iy as usize * g.w..][..g.w];
        row[..b0].fill(0.0);
        row[b1..].fill(0.0);
        row[b0..b1].iter_mut().zip(line).for_each(|(d, &v)| *d = leaky(v, slope));
    }
}

/// `(nb, m, oh, ow)` = conv of `leaky_relu(x, act)` (or of `x`) — `nb` NCHW images of geometry
/// `g` — with the packed `m × g.rows()` weights `w`, `bias` added. Callers check [`available`]
/// and `g.dil == 1`.
pub(crate) fn conv(
    x: &[f32],
    nb: usize,
    g: &Geom,
    w: &ChannelWeights,
    bias: Option<&[f32]>,
    act: Option<f32>,
) -> Vec<f32> {
    let (m, k, grid) = (w.m, g.rows(), g.grid());
    // The CPU, not the level: a test may narrow the level after a layer chose this kernel.
    assert!(Isa::Avx512.available(), "direct conv: AVX-512 not on this CPU");
    assert_eq!(g.dil, 1, "direct conv: dilated kernel");
    assert_eq!(w.k, k, "direct conv: weight columns");
    assert_eq!(x.len(), nb * g.c * g.h * g.w, "direct conv: input size");
    assert!(bias.is_none_or(|b| b.len() == m), "direct conv: bias length");
    let len = nb * m * grid;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let pad = Padded::new(g);
    let per_image = g.c * pad.plane();
    let src = pad.fill_images(x, nb, g, act);
    let offs = pad.tap_offsets(g);
    // Past the furthest float a tile reads from its pixels' bases.
    let reach = offs.iter().max().copied().unwrap_or(0) + 1;
    let blocks = m.div_ceil(CB);
    let biases: Vec<[f32; CB]> = (0..blocks)
        .map(|b| {
            std::array::from_fn(|j| bias.and_then(|bs| bs.get(b * CB + j)).copied().unwrap_or(0.0))
        })
        .collect();
    // Tasks: (image, channel block, run of pixels); a task streams its block's weights once.
    let per_run = run_length(grid, nb * blocks);
    let runs = grid.div_ceil(per_run);
    let dst = out.as_mut_ptr() as usize;
    (0..nb * blocks * runs).into_par_iter().for_each(|task| {
        let (n, b, r) = (task / (blocks * runs), task / runs % blocks, task % runs);
        let src = &src[n * per_image..][..per_image];
        let (p0, p1) = (r * per_run, ((r + 1) * per_run).min(grid));
        let base = |p: usize| (p / g.ow * pad.pw + p % g.ow) * g.stride;
        assert!(base(p1 - 1) + reach <= src.len(), "direct conv: padded input too short");
        // SAFETY: every base + offset read is < src.len() (asserted above for the task's last
        // pixel, whose base is the largest); the packed block holds k × CB weights; channels
        // b·CB .. b·CB + channels < m of image n, pixels p0..p1 < grid are inside out (nb·m·grid
        // floats), written by this task alone (tasks own disjoint (image, block, run)s); the CPU
        // has AVX-512 F (asserted).
        unsafe {
            run_task::<F32Tiles>(
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

/// Whether [`gemm_columns`] runs `a · b`: `a` column-major, of a block's rows at least, `b`
/// row-major and at most [`COLUMNS_MAX_N`] columns, on AVX-512.
pub(crate) fn columns_apply(a: &Mat, b: &Mat) -> bool {
    a.rs == 1 && a.cs != 1 && a.rows >= CB && b.cs == 1 && b.cols <= COLUMNS_MAX_N && available()
}

/// Wider products stay on gemm, whose packed panels win once the columns amortise the packing:
/// `gemm_shapes` (2-thread AVX-512 Xeon, m × k 8192 × 1024 column-major), columns against gemm:
/// n 4 0.77 / 2.93 ms, 16 1.61 / 2.83, 64 4.46 / 6.36, 256 (4096 × 1024) 8.05 / 10.3; at 1024
/// columns (4096 × 1024) 33 / 29.5 and at 4096 (1024 × 256) 9.0 / 6.6.
const COLUMNS_MAX_N: usize = 512;

/// `dst = a · b` (`dst` row-major, `a.rows × b.cols`, row stride `dst_rs`) for `a` held
/// column-major (`a.rs == 1`) and `b` row-major (`b.cs == 1`), on the channel tiles: `a`'s
/// rows are the output channels, its columns the taps' weights, read in place (`a.cs` apart:
/// 64 contiguous floats a tap and block), `b`'s rows the taps' inputs, its columns the pixels.
///
/// Training's transposed convolutions hold their weights `(cin, cout·kh·kw)` and multiply by
/// them transposed, a column-major operand that gemm packs per call at half speed on the
/// decoder's small grids (`gemm_shapes`, m 8192 k 1024: n 64 6.8 ms against 3.1 row-major);
/// re-laying the weights out row-major first cost more than it saved. Callers check
/// [`available`].
pub(crate) fn gemm_columns(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(Isa::Avx512.available(), "column gemm: AVX-512 not on this CPU");
    assert!(a.rs == 1 && b.cs == 1, "column gemm: a column-major, b row-major");
    assert!(a.in_bounds() && b.in_bounds() && b.rows == k, "column gemm: operand views");
    assert!(extent(m, n, dst_rs, 1) <= dst.len() && dst_rs >= n, "column gemm: destination");
    if m == 0 || n == 0 {
        return;
    }
    let blocks = m.div_ceil(CB);
    // A ragged last block packed with zeros past m: read in place, its taps' 64 floats would
    // run past a's last column.
    let ragged = (m % CB != 0).then(|| {
        let (b0, rows) = ((blocks - 1) * CB, m % CB);
        let mut v = vec![0f32; k * CB];
        for (t, dst) in v.chunks_exact_mut(CB).enumerate() {
            dst[..rows].copy_from_slice(&a.data[b0 + t * a.cs..][..rows]);
        }
        v
    });
    let offs: Vec<usize> = (0..k).map(|t| t * b.rs).collect();
    let per_run = run_length(n, blocks);
    let runs = n.div_ceil(per_run);
    let out = dst.as_mut_ptr() as usize;
    (0..blocks * runs).into_par_iter().for_each(|task| {
        let (blk, r) = (task / runs, task % runs);
        let (p0, p1) = (r * per_run, ((r + 1) * per_run).min(n));
        let w: (&[f32], usize) = match &ragged {
            Some(v) if blk + 1 == blocks => (v, CB),
            _ => (&a.data[blk * CB..], a.cs),
        };
        // SAFETY: tap t of column p reads b[t·b.rs + p], inside b (in bounds, p < n, t < k);
        // tap t's CB weights end at blk·CB + t·cs + CB ≤ (k−1)·cs + m, inside the in-bounds
        // view (or in the packed ragged block); rows blk·CB .. blk·CB + channels < m, columns
        // p0..p1 ≤ n of dst (its extent asserted above) are written by this task alone (tasks
        // own disjoint (block, run)s); the CPU has AVX-512 F (asserted).
        unsafe {
            run_task::<F32Tiles>(
                Task { src: b.data, offs: &offs, w, init: &[0.0; CB], px: (p0, p1) },
                |p| p,
                CB.min(m - blk * CB),
                ((out as *mut f32).add(blk * CB * dst_rs + p0), dst_rs),
            )
        };
    });
}

/// The pixels of one task's run: `px` pixels in whole 16-pixel groups (for the transpose),
/// a few tasks per thread counting the `others` the caller splits by (images, channel blocks),
/// at least [`MIN_RUN`] where the pixels allow and at most [`MAX_RUN`].
pub(crate) fn run_length(px: usize, others: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let groups = px.div_ceil(16);
    let runs = (4 * threads)
        .div_ceil(others.max(1))
        .min(px / MIN_RUN)
        .max(px.div_ceil(MAX_RUN))
        .clamp(1, groups.max(1));
    groups.div_ceil(runs).max(1) * 16
}

/// What a channel tile reads: its input and weight elements, and the register tile that sums
/// one pass of taps ([`F32Tiles`]: floats; [`super::bf16_channels`]: bf16 pairs of taps).
pub(crate) trait Tiles {
    /// An input element (a tap of a pixel's input, read at `base + offset`).
    type Src;
    /// A weight element (tap `t`'s [`CB`] of them, one an output channel).
    type W;
    /// Whether this CPU runs the tile (whatever the kernels' level, which a test may narrow
    /// after a layer chose the tile).
    fn cpu_runs() -> bool;
    /// The pass's taps of the tile of `P` pixels (input bases `base`) × [`CB`] channels: the
    /// sums in `acc` (`P × CB`, channels-last) start from the bias or from what `acc` holds, and
    /// are stored back; with `ahead`, the next pass's weights are fetched into cache on the way.
    ///
    /// # Safety
    /// The CPU has what the tile needs; the reads of `base[j] + off` for every `j` and `off` in
    /// `pass.offs` lie in `pass.src`; `pass.w.len() >= (pass.offs.len() − 1) · pass.ws + CB`
    /// and `acc.len() >= P · CB`.
    unsafe fn tile<const P: usize>(
        pass: &Pass<Self>,
        base: [usize; P],
        acc: &mut [f32],
        ahead: bool,
    );
}

/// The f32 tiles: a float of input and [`CB`] floats of weights a tap.
pub(crate) struct F32Tiles;

impl Tiles for F32Tiles {
    type Src = f32;
    type W = f32;
    fn cpu_runs() -> bool {
        Isa::Avx512.available()
    }
    #[inline(always)]
    unsafe fn tile<const P: usize>(
        pass: &Pass<Self>,
        base: [usize; P],
        acc: &mut [f32],
        ahead: bool,
    ) {
        // SAFETY: the caller's contract (AVX-512 F and the bounds), which `tile` states.
        unsafe { tile::<P>(pass, base, acc, ahead) }
    }
}

/// One task of the channel tiles: pixels `px.0 .. px.1` of `src` over every tap of `offs`,
/// with one block's weights `w` (tap `t`'s [`CB`] elements at `w.0[t·w.1..]`), starting from
/// `init`.
pub(crate) struct Task<'a, T: Tiles + ?Sized> {
    pub src: &'a [T::Src],
    pub offs: &'a [usize],
    pub w: (&'a [T::W], usize),
    pub init: &'a [f32; CB],
    pub px: (usize, usize),
}

/// Runs `task` pass by pass ([`KC`] taps each) over tiles of [`NP`] pixels, pixel `p` reading
/// from `base(p)`, and transposes its channels-last sums into `channels` rows of `out.0`,
/// `out.1` floats apart, from the run's first pixel.
///
/// # Safety
/// The CPU has AVX-512 F; `base(p) + off < task.src.len()` for every pixel `p` of the run and
/// `off` in `task.offs`; `task.w.0` holds every tap's [`CB`] floats; `out.0 + j·out.1 + i` is
/// valid for writes by this call alone for `j < channels <= CB`, `i` below the run's length.
// Inlined into each caller's task, as the body was before it served two callers (as a call,
// the channel convolutions' profile line read 2–3 % higher in 4 interleaved runs).
#[inline(always)]
pub(crate) unsafe fn run_task<T: Tiles + ?Sized>(
    task: Task<T>,
    base: impl Fn(usize) -> usize,
    channels: usize,
    out: (*mut f32, usize),
) {
    let (k, (p0, p1), (wb, ws)) = (task.offs.len(), task.px, task.w);
    // Taps t0..t1's weights, up to the last tap's CB floats.
    let span = |t0: usize, t1: usize| match t1 > t0 {
        true => &wb[t0 * ws..][..(t1 - t0 - 1) * ws + CB],
        false => &wb[..0],
    };
    SUMS.with_borrow_mut(|buf| {
        if buf.len() < (p1 - p0) * CB + 16 {
            buf.resize((p1 - p0) * CB + 16, 0.0);
        }
        let sums = aligned(buf, (p1 - p0) * CB);
        for k0 in (0..k).step_by(KC) {
            let (k1, k2) = ((k0 + KC).min(k), (k0 + 2 * KC).min(k));
            let pass = Pass {
                src: task.src,
                offs: &task.offs[k0..k1],
                w: span(k0, k1),
                ws,
                init: (k0 == 0).then_some(task.init),
                next: span(k1, k2),
            };
            // The pass's first tile fetches the next pass's weights into L2 as it goes: on
            // small grids each pass has few tiles and the weights come from DRAM (in the
            // network, 256→256 @4² took 0.50 ms a call with cold weights, 0.26 hot; into L1
            // this made it 0.43, into L2 0.44–0.48 → 0.39–0.45 and @8² 0.83–0.98 → 0.73–0.91
            // over 4 interleaved runs). Spread over all the pass's tiles instead: no better on
            // small grids, slower on large ones.
            for p in (p0..p1).step_by(NP) {
                let (acc, ahead) = (&mut sums[(p - p0) * CB..], p == p0);
                // SAFETY: the caller's bounds for the reads; acc holds the tile's pixels' CB
                // sums; the CPU's features (the caller's).
                unsafe {
                    match p1 - p {
                        1 => T::tile::<1>(&pass, bases(p, &base), acc, ahead),
                        2 => T::tile::<2>(&pass, bases(p, &base), acc, ahead),
                        3 => T::tile::<3>(&pass, bases(p, &base), acc, ahead),
                        4 => T::tile::<4>(&pass, bases(p, &base), acc, ahead),
                        5 => T::tile::<5>(&pass, bases(p, &base), acc, ahead),
                        _ => T::tile::<NP>(&pass, bases(p, &base), acc, ahead),
                    }
                }
            }
        }
        // SAFETY: the caller's destination rows and columns; sums holds (p1 − p0) × CB floats.
        unsafe { to_planes(sums, p1 - p0, channels, out.0, out.1) };
    });
}

/// The fewest pixels a task sums where the grid allows: each task streams its block's
/// weights, so splitting a small grid reads them again per run (256→256 at 8×8: 2 runs of 32
/// pixels read the layer's 4 MB twice; one run, in-network minima over 4 interleaved runs:
/// 38.6 → 34.6 ms over 41 calls).
const MIN_RUN: usize = 128;

/// The most pixels a task sums: its channels-last sums (`MAX_RUN × CB` floats, 1 MB), which
/// each worker keeps for the next task, stay bounded whatever the image size.
const MAX_RUN: usize = 4096;

thread_local! {
    /// A task's channels-last sums, kept between tasks (a fresh 128 KB buffer per task came
    /// zeroed from fresh pages).
    static SUMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `sums` (`px × CB`, channels-last) into `channels` planes of `px` floats from `out`, `plane`
/// apart: 16 × 16 blocks transposed in registers, the ragged edges one float at a time.
///
/// # Safety
/// The CPU has AVX-512 F; `out + j·plane + p` is valid for writes for `j < channels <= CB`,
/// `p < px`; `sums.len() >= px · CB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn to_planes(sums: &[f32], px: usize, channels: usize, out: *mut f32, plane: usize) {
    use std::arch::x86_64::*;
    assert!(sums.len() >= px * CB && channels <= CB, "direct conv: sums too short");
    let s = sums.as_ptr();
    let (full_p, full_c) = (px / 16 * 16, channels / 16 * 16);
    // SAFETY (every access below): inside sums and the caller's planes, by the loop bounds.
    unsafe {
        for p in (0..full_p).step_by(16) {
            for c in (0..full_c).step_by(16) {
                let r: [__m512; 16] =
                    std::array::from_fn(|i| _mm512_loadu_ps(s.add((p + i) * CB + c)));
                for (j, col) in transpose16(r).into_iter().enumerate() {
                    _mm512_storeu_ps(out.add((c + j) * plane + p), col);
                }
            }
        }
        for p in 0..px {
            let from_c = if p < full_p { full_c } else { 0 };
            for c in from_c..channels {
                *out.add(c * plane + p) = *s.add(p * CB + c);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn to_planes(_: &[f32], _: usize, _: usize, _: *mut f32, _: usize) {
    unreachable!("direct conv: available() is false off x86-64")
}

/// The 16 × 16 transpose of rows `r`: three rounds of shuffles (within 32-bit pairs, 64-bit
/// pairs, then 128-bit lanes), written out so that it compiles to straight-line shuffles.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn transpose16(
    r: [std::arch::x86_64::__m512; 16],
) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // SAFETY: register shuffles; the caller runs with AVX-512 F.
    unsafe {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in (0..16).step_by(2) {
            // Rows i and i + 1 interleaved: the low and the high pair of each lane.
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for g in (0..16).step_by(4) {
            // u[g + q]: lane L holds column 4L + q of rows g .. g + 3.
            let pd = |i: usize| _mm512_castps_pd(t[g + i]);
            u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(0), pd(2)));
            u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(0), pd(2)));
            u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(1), pd(3)));
            u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(1), pd(3)));
        }
        let mut c = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            // Column 4L + q: lane L of u[q], u[4 + q], u[8 + q], u[12 + q].
            let lo01 = _mm512_shuffle_f32x4::<0b01_00_01_00>(u[q], u[4 + q]);
            let hi01 = _mm512_shuffle_f32x4::<0b01_00_01_00>(u[8 + q], u[12 + q]);
            let lo23 = _mm512_shuffle_f32x4::<0b11_10_11_10>(u[q], u[4 + q]);
            let hi23 = _mm512_shuffle_f32x4::<0b11_10_11_10>(u[8 + q], u[12 + q]);
            c[q] = _mm512_shuffle_f32x4::<0b10_00_10_00>(lo01, hi01);
            c[4 + q] = _mm512_shuffle_f32x4::<0b11_01_11_01>(lo01, hi01);
            c[8 + q] = _mm512_shuffle_f32x4::<0b10_00_10_00>(lo23, hi23);
            c[12 + q] = _mm512_shuffle_f32x4::<0b11_01_11_01>(lo23, hi23);
        }
        c
    }
}

/// The input bases of the `P` pixels from `p`.
fn bases<const P: usize>(p: usize, base: impl Fn(usize) -> usize) -> [usize; P] {
    std::array::from_fn(|j| base(p + j))
}

/// One pass of a task over a range of taps.
pub(crate) struct Pass<'a, T: Tiles + ?Sized> {
    /// The image's padded input.
    pub src: &'a [T::Src],
    /// The taps' offsets into `src` from a pixel's base.
    pub offs: &'a [usize],
    /// Their weights: tap `t`'s [`CB`] elements at `w[t·ws..]`.
    pub w: &'a [T::W],
    /// Elements from one tap's weights to the next: [`CB`] when packed, a column-major
    /// matrix's column stride when read in place ([`gemm_columns`]).
    pub ws: usize,
    /// The bias, on the first pass (the sums start from it).
    pub init: Option<&'a [f32; CB]>,
    /// The next pass's weights (as `w`, `ws` apart).
    pub next: &'a [T::W],
}

impl<T: Tiles + ?Sized> Pass<'_, T> {
    /// Taps in the next pass's weights.
    pub fn next_taps(&self) -> usize {
        match self.next.len() {
            0 => 0,
            len => (len - CB) / self.ws + 1,
        }
    }
}

/// The pass's taps of the tile of `P` pixels (input bases `base`) × [`CB`] channels: the sums in
/// `acc` (`P × CB`, channels-last) start from the bias or from what `acc` holds, and are stored
/// back; with `ahead`, the next pass's weights are fetched into cache on the way.
///
/// # Safety
/// The CPU has AVX-512 F; `base[j] + off < pass.src.len()` for every `j` and `off` in
/// `pass.offs`; `pass.w.len() >= (pass.offs.len() − 1) · pass.ws + CB` and
/// `acc.len() >= P · CB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const P: usize>(
    pass: &Pass<F32Tiles>,
    base: [usize; P],
    acc: &mut [f32],
    ahead: bool,
) {
    use std::arch::x86_64::*;
    let a = acc.as_mut_ptr();
    // Taps of the next pass to fetch (it may be shorter than this one).
    let next_taps = if ahead { pass.next_taps() } else { 0 };
    // SAFETY (every access below): the contract's bounds; the loads and stores are unaligned
    // forms (the aligned layout only makes them faster); prefetches never fault.
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
                    isa::prefetch_l2(np.add(v * 16));
                }
                np = np.add(pass.ws);
            }
            let wv: [__m512; CV] = std::array::from_fn(|v| _mm512_loadu_ps(wp.add(v * 16)));
            let p = s.add(off);
            for j in 0..P {
                let x = _mm512_set1_ps(*p.add(base[j]));
                for v in 0..CV {
                    sum[v][j] = _mm512_fmadd_ps(wv[v], x, sum[v][j]);
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
unsafe fn tile<const P: usize>(_: &Pass<F32Tiles>, _: [usize; P], _: &mut [f32], _: bool) {
    unreachable!("direct conv: available() is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::assert_conv;
    use crate::kernels::mat::test_values;
    use crate::kernels::test_report;

    /// Against a direct f64 sum of the definition: the U-Net's geometry (k4 s2 p1) on large and
    /// tiny grids, stride 1, an odd kernel and padding, channel counts that leave partial blocks
    /// and tiles, several images, bias and the fused activation.
    #[test]
    fn channel_tiles_match_the_definition() {
        if !available() {
            test_report::skipped("direct conv by channels on avx512", "not on this CPU");
            return;
        }
        for (nb, c, (h, wd), m, kh, st, pad, act) in [
            (1, 8, (32, 32), 64, 4, 2, 1, None),
            (2, 5, (34, 40), 80, 4, 2, 1, Some(0.2)),
            (1, 16, (4, 4), 128, 4, 2, 1, Some(0.2)),
            (1, 6, (20, 37), 24, 4, 1, 1, None),
            (3, 4, (18, 33), 64, 3, 1, 2, Some(0.2)),
            (1, 2, (40, 50), 17, 3, 2, 0, None),
            // A grid of 40 000 pixels: more tasks than the threads ask for, capped by MAX_RUN.
            (1, 1, (400, 400), 64, 4, 2, 1, None),
        ] {
            let g = Geom::conv(c, (h, wd), (kh, kh), st, pad, 1).expect("geometry");
            let x = test_values(nb * c * h * wd, 40.0);
            let w = test_values(m * g.rows(), 90.0);
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 0.5).collect();
            let packed = ChannelWeights::pack(Mat::rm(&w, m, g.rows()));
            let got = conv(&x, nb, &g, &packed, Some(&bias), act);
            assert_conv(&got, &x, nb, &g, &w, m, &bias, act, "channel form");
        }
        test_report::passed("direct conv by channels on avx512");
    }

    /// Column-major products on the channel tiles against a direct f64 sum: ragged row blocks
    /// (the packed last block), reductions that leave a partial pass, partial tiles, several
    /// column runs, strided operands and a padded destination (left alone past `n`).
    #[test]
    fn column_products_match_a_direct_sum() {
        if !available() {
            test_report::skipped("column gemm on avx512", "not on this CPU");
            return;
        }
        for (m, n, k, a_pad, b_pad) in [
            (64, 1, 1, 0, 0),
            (130, 23, 70, 5, 2),
            (64, 6, 129, 0, 0),
            (200, 700, 300, 3, 1),
            (256, 16, 512, 0, 7),
        ] {
            let (lda, ldb, rs) = (m + a_pad, n + b_pad, n + 3);
            let a = test_values(lda * k, 50.0);
            let b: Vec<f32> = (0..k * ldb).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let av = Mat { data: &a, rows: m, cols: k, rs: 1, cs: lda };
            let bv = Mat { data: &b, rows: k, cols: n, rs: ldb, cs: 1 };
            let mut dst = vec![1f32; m * rs];
            gemm_columns(&mut dst, rs, av, bv);
            // The oracle checks 1 + a·b, and that the padding kept its 1s.
            dst.chunks_mut(rs).for_each(|row| row[..n].iter_mut().for_each(|v| *v += 1.0));
            crate::kernels::mat::assert_product(&dst, rs, av, bv, "column gemm");
        }
        test_report::passed("column gemm on avx512");
    }
}
