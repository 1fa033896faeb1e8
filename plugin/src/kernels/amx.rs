//! bf16 products on Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later): the tile
//! unit multiplies a 16 × 32 bf16 tile by a 32 × 16 one into 16 × 16 f32 sums in one
//! instruction (`tdpbf16ps`), 16× the multiply–adds per cycle of AVX-512 FMAs.
//!
//! The operands are [`bf16`](super::bf16)'s layouts unchanged: a row of `PackedA` is a row of
//! an A tile (16 words = 32 bf16 along the reduction), and 16 pair-rows of a `B` panel are a B
//! tile in the "VNNI" layout AMX wants (each word a pair along the reduction). One call keeps a
//! 32 × 32 block of `C` in four tiles for the whole reduction.
//!
//! Linux gives a process AMX state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! [`ready`] makes the first time a bf16 product runs, i.e. only in processes that asked for
//! bf16. The request enlarges the signal frames of the process's threads by about 8 KiB; the
//! kernel refuses it when a thread's alternate signal stack is too small for that, and then the
//! AVX512_BF16 kernel runs instead. `PIX2PIX_AMX=0` never asks.

use std::sync::atomic::{AtomicBool, Ordering};

use super::bf16::{PackedA, Region, NR};

/// Rows of `C` one call computes (two tiles).
pub(crate) const ROWS: usize = 32;
/// Pairs of the reduction per tile step (a tile row: 64 bytes).
pub(crate) const PAIRS: usize = 16;

/// Whether the CPU has AMX-BF16 and the tile registers.
fn cpu_has_amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // CPUID.(EAX=7, ECX=0):EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        super::isa::bf16_available() && leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// Asks Linux for AMX state for this process, once; whether it was given.
fn permitted() -> bool {
    static GIVEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GIVEN.get_or_init(|| {
        if !cpu_has_amx() || std::env::var("PIX2PIX_AMX").is_ok_and(|v| v == "0") {
            return false;
        }
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with these arguments only changes which state the kernel
            // saves for this process; it reads and writes no memory of ours.
            let r = unsafe {
                libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
            };
            r == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Keeps bf16 products off AMX (`true`) or lets them use it where it can (`false`, the
/// default), for the whole process: a switch for tests and benchmarks comparing the kernels.
pub fn disable(off: bool) {
    DISABLED.store(off, Ordering::Relaxed);
}

/// Whether bf16 products run on AMX now: the CPU has it, Linux gave it, and it is not disabled.
pub fn ready() -> bool {
    !DISABLED.load(Ordering::Relaxed) && permitted()
}

/// Whether this CPU and system could run bf16 products on AMX (not counting [`disable`]).
pub fn available() -> bool {
    permitted()
}

/// A palette-1 tile configuration (16 bytes of header, 16 row widths, 8 row counts).
#[repr(C, align(64))]
pub(crate) struct TileConfig([u8; 64]);

/// The region's rows (a multiple of [`ROWS`] from its start) and panels of `C` (+)= `a · B`,
/// `bp` being `B` packed in panels of `a.ld × NR` words.
///
/// # Safety
/// The region of `dst` is valid for writes and touched by no one else while this runs; [`ready`]
/// returned true (the CPU has AMX and the process may use it); `region.rows.start` is a multiple
/// of [`ROWS`]; `bp` holds the region's panels.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn block(r: &Region, a: &PackedA, bp: &[u32], accumulate: bool) {
    let ld = a.ld;
    debug_assert!(r.rows.start.is_multiple_of(ROWS) && ld.is_multiple_of(PAIRS));
    assert!(a.words.len() >= r.rows.end.next_multiple_of(ROWS) * ld, "amx: A strip too short");
    assert!(bp.len() >= r.panels.end * ld * NR, "amx: B panels too short");
    // The four C tiles go through this buffer: row-major 32 × 32.
    #[repr(C, align(64))]
    struct Block([f32; ROWS * NR]);
    let mut c = Block([0.0; ROWS * NR]);
    // SAFETY: AMX is ready (the caller's contract).
    let tiles = unsafe { tiles::Tiles::load(&block_config(16)) };
    for i in r.rows.clone().step_by(ROWS) {
        let rows = ROWS.min(r.rows.end - i);
        for q in r.panels.clone() {
            let j0 = q * NR;
            let cols = NR.min(r.n - j0);
            let a0 = a.words[i * ld..].as_ptr();
            let a1 = a.words[(i + 16) * ld..].as_ptr();
            let b0 = bp[q * ld * NR..].as_ptr();
            let cp = c.0.as_mut_ptr();
            // SAFETY: tmm0–3 are this block's sums, zeroed; every tile load reads 16 rows of 64
            // bytes at the given stride inside the slices asserted above (A: rows i..i+32 of ld
            // words, pairs p..p+16 < ld; B: 16 pair rows of panel q, words 0..32); the stores
            // fill `c` (32 rows of NR floats).
            unsafe {
                tiles.zero();
                for p in (0..ld).step_by(PAIRS) {
                    let b = b0.add(p * NR);
                    tiles.multiply(
                        a0.add(p),
                        a1.add(p),
                        b.cast(),
                        b.add(16).cast(),
                        (ld * 4, NR * 4),
                    );
                }
                tiles.store([cp, cp.add(16), cp.add(16 * NR), cp.add(16 * NR + 16)], NR * 4, true);
            }
            for (rr, src) in c.0.chunks_exact(NR).take(rows).enumerate() {
                // SAFETY: row i + rr < rows.end, columns j0..j0+cols < n: inside this region.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(r.dst.add((i + rr) * r.dst_rs + j0), cols)
                };
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    dst.copy_from_slice(&src[..cols]);
                }
            }
        }
    }
}

/// A grid of `rows` rows `width` pixels wide cut into the direct convolutions' segments: 16
/// pixels of one row (a B tile's columns), or the whole row where it is narrower.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segments {
    /// Pixels per segment.
    pub cols: usize,
    per_row: usize,
    pub count: usize,
}

impl Segments {
    pub(crate) fn new(rows: usize, width: usize) -> Self {
        let per_row = width.div_ceil(16);
        Self { cols: width.min(16), per_row, count: rows * per_row }
    }

    /// Row and first column of segment `s`.
    pub(crate) fn at(&self, s: usize) -> (usize, usize) {
        (s / self.per_row, s % self.per_row * 16)
    }
}

/// Runs `task(image, block, segments)` over the tasks the direct convolutions
/// ([`super::amx_conv`], [`super::amx_conv_transpose`]) cut a layer's output into: per image,
/// blocks of [`ROWS`] output channels (a 2 × 2 block's two A tiles) by runs of its `segs`
/// segments (a row's 16 pixels, taken two at a time), about 8 tasks per thread. A task reads
/// its block's weights once, so runs split only what the blocks do not.
pub(crate) fn for_each_task(
    nb: usize,
    m: usize,
    segs: usize,
    task: impl Fn(usize, usize, std::ops::Range<usize>) + Sync + Send,
) {
    use rayon::prelude::*;
    let blocks = m / ROWS;
    let pairs = segs.div_ceil(2).max(1);
    let want = 8 * rayon::current_num_threads().max(1);
    let runs = want.div_ceil((nb * blocks).max(1)).clamp(1, pairs);
    let per_run = pairs.div_ceil(runs);
    (0..nb * blocks * runs).into_par_iter().for_each(|t| {
        let (n, b, r) = (t / (blocks * runs), t / runs % blocks, t % runs);
        let (first, last) = (r * per_run * 2, ((r + 1) * per_run * 2).min(segs));
        if first < last {
            task(n, b, first..last);
        }
    });
}

/// Each of `m` output channels' bias (zero without one) as a row of 16 copies: the direct
/// convolutions' sums start from these rows, a C tile loaded with a 64-byte stride.
pub(crate) fn bias_rows(bias: Option<&[f32]>, m: usize) -> Vec<f32> {
    (0..m).flat_map(|o| [bias.map_or(0.0, |b| b[o]); 16]).collect()
}

/// The tile layout of the direct convolutions' 2 × 2 blocks ([`super::amx_conv`]): sums in
/// tmm0–3 and B tiles in tmm6–7 of `cols` words a row, A tiles in tmm4–5 of 16 words; all 16
/// rows.
pub(crate) fn block_config(cols: usize) -> TileConfig {
    assert!((1..=16).contains(&cols), "amx: a tile row holds 1 to 16 words");
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    for t in 0..8 {
        let bytes: u16 = if t == 4 || t == 5 { 64 } else { (cols * 4) as u16 };
        c[16 + 2 * t..18 + 2 * t].copy_from_slice(&bytes.to_le_bytes());
        c[48 + t] = 16;
    }
    TileConfig(c)
}

/// The 2 × 2 block primitives on the layout of [`block_config`]. Every function's safety
/// contract: [`ready`] returned true, and the tile state of this thread is the one
/// [`Tiles::load`] set (the functions run between it and the drop); each pointer is valid for
/// the 16 rows at the stride given of the tile's row length.
#[cfg(target_arch = "x86_64")]
pub(crate) mod tiles {
    use super::TileConfig;
    use std::arch::asm;

    /// This thread's tile state, configured, released on drop.
    pub(crate) struct Tiles(());

    impl Tiles {
        /// # Safety
        /// [`super::ready`] returned true.
        pub(crate) unsafe fn load(cfg: &TileConfig) -> Self {
            // SAFETY: cfg is a valid palette-1 configuration (block_config); loading it sets
            // this thread's tile state only.
            unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
            Tiles(())
        }

        /// tmm0–3 zeroed.
        ///
        /// # Safety
        /// As the module says.
        #[inline(always)]
        pub(crate) unsafe fn zero(&self) {
            // SAFETY: the caller's contract (the module's).
            unsafe { asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3") }
        }

        /// tmm0–1 from `c0`'s rows and tmm2–3 from `c1`'s, `stride` bytes apart.
        ///
        /// # Safety
        /// As the module says.
        #[inline(always)]
        pub(crate) unsafe fn start(&self, c0: *const f32, c1: *const f32, stride: usize) {
            // SAFETY: the caller's contract (the module's).
            unsafe {
                asm!(
                    "tileloadd tmm0, [{c0} + {s}*1]",
                    "tileloadd tmm1, [{c0} + {s}*1]",
                    "tileloadd tmm2, [{c1} + {s}*1]",
                    "tileloadd tmm3, [{c1} + {s}*1]",
                    c0 = in(reg) c0, c1 = in(reg) c1, s = in(reg) stride,
                    options(nostack, readonly),
                )
            }
        }

        /// tmm0 += A0·B0, tmm1 += A0·B1, tmm2 += A1·B0, tmm3 += A1·B1: the A tiles' rows `sa`
        /// bytes apart, the B tiles' `sb`.
        ///
        /// # Safety
        /// As the module says.
        #[inline(always)]
        pub(crate) unsafe fn multiply(
            &self,
            a0: *const u32,
            a1: *const u32,
            b0: *const u8,
            b1: *const u8,
            (sa, sb): (usize, usize),
        ) {
            // SAFETY: the caller's contract (the module's).
            unsafe {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                    sa = in(reg) sa, sb = in(reg) sb,
                    options(nostack, readonly),
                )
            }
        }

        /// Stores tmm0 and tmm2 at `d[0]`, `d[2]`, and when `two` tmm1 and tmm3 at `d[1]`,
        /// `d[3]`, rows `stride` bytes apart.
        ///
        /// # Safety
        /// As the module says, the pointers valid for writes.
        #[inline(always)]
        pub(crate) unsafe fn store(&self, d: [*mut f32; 4], stride: usize, two: bool) {
            // SAFETY: the caller's contract (the module's).
            unsafe {
                asm!(
                    "tilestored [{d0} + {s}*1], tmm0",
                    "tilestored [{d2} + {s}*1], tmm2",
                    d0 = in(reg) d[0], d2 = in(reg) d[2], s = in(reg) stride,
                    options(nostack),
                );
                if two {
                    asm!(
                        "tilestored [{d1} + {s}*1], tmm1",
                        "tilestored [{d3} + {s}*1], tmm3",
                        d1 = in(reg) d[1], d3 = in(reg) d[3], s = in(reg) stride,
                        options(nostack),
                    );
                }
            }
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: ends this thread's use of the tiles, which `load` began.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn block(_: &Region, _: &PackedA, _: &[u32], _: bool) {
    unreachable!("AMX runs only where amx::ready()")
}
