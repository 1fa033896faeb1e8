//! Which instruction set the hand-written kernels run on, chosen at run time.
//!
//! The `gemm` crate picks its own kernels (AVX-512 with its `x86-v4` feature, else AVX2+FMA,
//! else scalar) from the CPU and offers no way to force one; the kernels of this module
//! (small-n products, direct convolutions, bf16) dispatch on [`active`], which is the best the
//! CPU has unless [`force`] narrowed it, so that tests can run every path the CPU supports.

use std::sync::atomic::{AtomicU8, Ordering};

/// Defines `fn $name(args) -> ret`, which runs `$body(args)` compiled for the level [`active`]
/// names: element-wise loops and short multiply–add runs that the baseline x86-64 target
/// compiles to 4-wide SSE without FMA. `$body` should be `#[inline(always)]` so that each copy
/// is compiled for its level.
macro_rules! on_best_isa {
    ($(#[$attr:meta])* $vis:vis fn $name:ident => $body:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::kernels::isa::active() {
                    // SAFETY: isa::active never names a level the CPU lacks.
                    $crate::kernels::isa::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::isa::Isa::Scalar => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use on_best_isa;

/// Asks for the cache line of `p` in L1.
///
/// # Safety
/// None beyond SSE, which every x86-64 CPU has: a prefetch never faults, whatever the address
/// (callers compute out-of-range ones with `wrapping_add`, which keeps the arithmetic defined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn prefetch(p: *const f32) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: SSE is part of x86-64; prefetches do not access memory architecturally.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

/// Asks for the cache line of `p` in L2 (see [`prefetch`]): for streams read a little later,
/// which then need not hold an L1 line meanwhile.
///
/// # Safety
/// As [`prefetch`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn prefetch_l2(p: *const f32) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    // SAFETY: SSE is part of x86-64; prefetches do not access memory architecturally.
    unsafe { _mm_prefetch::<_MM_HINT_T1>(p as *const i8) }
}

/// An instruction-set level of the kernels, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, whatever the compiler's baseline target gives.
    Scalar,
    /// AVX2 + FMA (x86-64-v3).
    Avx2,
    /// AVX-512 F (x86-64-v4).
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Whether this CPU runs the kernels built for `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => cpu().avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => cpu().avx512,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512f",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }
}

#[derive(Clone, Copy)]
struct Cpu {
    avx2: bool,
    avx512: bool,
    bf16: bool,
}

fn cpu() -> Cpu {
    static CPU: std::sync::OnceLock<Cpu> = std::sync::OnceLock::new();
    *CPU.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2 && is_x86_feature_detected!("avx512f");
            let bf16 = avx512 && is_x86_feature_detected!("avx512bf16");
            Cpu { avx2, avx512, bf16 }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cpu { avx2: false, avx512: false, bf16: false }
    })
}

/// The best level this CPU has.
pub fn detected() -> Isa {
    Isa::ALL.into_iter().rev().find(|i| i.available()).unwrap_or(Isa::Scalar)
}

/// 0: not forced; else `Isa::code`.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The level the kernels run on now: [`force`]'s if set, else [`detected`].
pub fn active() -> Isa {
    match FORCED.load(Ordering::Relaxed) {
        0 => detected(),
        c => Isa::ALL[(c - 1) as usize],
    }
}

/// Makes the kernels run on `isa` (`None`: the best available again), for the whole process.
/// Refused, and nothing changed, when the CPU lacks it. A switch for tests and benchmarks: the
/// `gemm` crate's own choice is not affected.
pub fn force(isa: Option<Isa>) -> Result<(), String> {
    match isa {
        Some(i) if !i.available() => Err(format!("{} is not available on this CPU", i.name())),
        Some(i) => {
            FORCED.store(i.code(), Ordering::Relaxed);
            Ok(())
        }
        None => {
            FORCED.store(0, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// Whether the CPU has AVX512_BF16 (`vdpbf16ps`), which the bf16 products need.
pub fn bf16_available() -> bool {
    cpu().bf16
}

/// What the `gemm` crate runs on here (it decides for itself, from the same CPU flags).
pub fn gemm_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "scalar"
}
