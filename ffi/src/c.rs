//! The C API: its `#[repr(C)]` types and constants here, its functions in [`functions`]
//! (`include/pix2pix.h` is generated from the two by cbindgen; `ffi/cbindgen.toml` holds the
//! settings).
//!
//! The names are the C names, so the header and the Rust side read alike.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};
use std::marker::{PhantomData, PhantomPinned};

pub mod functions;

/// Bumped when the C API changes incompatibly; `p2p_abi_version()` returns it.
pub const P2P_ABI_VERSION: u32 = 1;

/// The result of every fallible call: `P2P_OK` (0) or one of the `P2P_ERR_*` codes below.
/// On failure `p2p_last_error()` describes what went wrong. Codes are stable; new ones may be
/// added, so treat unknown non-zero values as failures.
pub type p2p_status = i32;

/// Success.
pub const P2P_OK: p2p_status = 0;
/// A required pointer argument was NULL.
pub const P2P_ERR_NULL: p2p_status = 1;
/// An argument is out of range: image size, stride, channels, an option value, a non-UTF-8 string.
pub const P2P_ERR_INVALID_ARGUMENT: p2p_status = 2;
/// A file or folder could not be read or written.
pub const P2P_ERR_IO: p2p_status = 3;
/// A checkpoint could not be read or does not hold a network the library knows.
pub const P2P_ERR_CHECKPOINT: p2p_status = 4;
/// The caller's output buffer cannot hold the result (see `p2p_translate`).
pub const P2P_ERR_BUFFER_TOO_SMALL: p2p_status = 5;
/// The progress callback asked to stop (a checkpoint was saved first).
pub const P2P_ERR_CANCELLED: p2p_status = 6;
/// A training configuration is invalid (the message names the key and line).
pub const P2P_ERR_CONFIG: p2p_status = 7;
/// An image file could not be decoded (training and evaluation data).
pub const P2P_ERR_IMAGE: p2p_status = 8;
/// The computation itself failed (a tensor operation reported an error).
pub const P2P_ERR_COMPUTE: p2p_status = 9;
/// The request needs something this build does not have (a shipped default model, a feature).
pub const P2P_ERR_UNSUPPORTED: p2p_status = 10;
/// The request's estimated memory exceeds the memory budget (`p2p_options.memory_budget_mb`;
/// for training `train.memory_budget_mb` of the config), or the system refused memory for it.
/// Nothing of the request's size was kept; the library stays usable.
pub const P2P_ERR_OUT_OF_MEMORY: p2p_status = 11;
/// A bug in the library (a caught panic). The library stays usable, but please report it.
pub const P2P_ERR_INTERNAL: p2p_status = 99;

/// `p2p_options.norm_stats`: the library's default (`P2P_NORM_STATS_BATCH`).
pub const P2P_NORM_STATS_DEFAULT: u32 = 0;
/// Normalise with the statistics of the image itself (the paper's test-time protocol).
pub const P2P_NORM_STATS_BATCH: u32 = 1;
/// Normalise with the running statistics stored in the checkpoint (PyTorch's eval mode).
pub const P2P_NORM_STATS_RUNNING: u32 = 2;

/// `p2p_options.precision`: the library's default (`P2P_PRECISION_F32`).
pub const P2P_PRECISION_DEFAULT: u32 = 0;
/// f32 products: matches the PyTorch reference to float precision.
pub const P2P_PRECISION_F32: u32 = 1;
/// bf16 products accumulated in f32 on CPUs with AVX512_BF16 (faster; outputs differ from f32
/// by about a level in 255). Where the CPU lacks AVX512_BF16 the model runs in f32 instead;
/// `p2p_model_info.precision` says which a model runs in. On CPUs with AMX the products run on
/// its tiles: the first bf16 translation asks Linux for AMX state for the process
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, which enlarges signal frames by about 8 KiB and is refused
/// when a thread's alternate signal stack is too small; AVX512_BF16 runs then). Set the
/// environment variable `PIX2PIX_AMX=0` to never ask.
pub const P2P_PRECISION_BF16: u32 = 2;

/// `p2p_options.size_policy`: the library's default (`P2P_SIZE_POLICY_PAD`).
pub const P2P_SIZE_POLICY_DEFAULT: u32 = 0;
/// Resize to the network's native size, translate, resize back.
pub const P2P_SIZE_POLICY_RESIZE: u32 = 1;
/// Reflect-pad to the next multiple of the network stride, translate, crop.
pub const P2P_SIZE_POLICY_PAD: u32 = 2;
/// Overlapping native-size tiles, blended: bounded memory for very large images.
pub const P2P_SIZE_POLICY_TILE: u32 = 3;

/// `p2p_options.flags`: apply dropout at inference, seeded with `p2p_options.dropout_seed`.
pub const P2P_OPT_DROPOUT: u32 = 1;
/// `p2p_options.flags`: `p2p_translate_batch` normalises with the statistics of the whole batch
/// (PyTorch's train-mode batch norm on the stacked images) instead of each image's own.
pub const P2P_OPT_SHARED_BATCH_STATS: u32 = 2;
/// `p2p_options.flags`: run this model's translations on a pool of `p2p_options.threads`
/// threads of its own (0: one per hardware thread), started at `p2p_model_open` and stopped at
/// `p2p_model_free`, instead of the pools the library shares.
pub const P2P_OPT_PRIVATE_POOL: u32 = 4;

/// `p2p_train_ex` flags: continue from `<output.dir>/latest`.
pub const P2P_TRAIN_RESUME: u32 = 1;

/// `p2p_export_onnx` flags: replace an existing output file (by default it is an error).
pub const P2P_EXPORT_OVERWRITE: u32 = 1;

/// `p2p_evaluate` direction: the library's default (`P2P_DIRECTION_B_TO_A`).
pub const P2P_DIRECTION_DEFAULT: u32 = 0;
/// The left half of each aligned A|B image is the input.
pub const P2P_DIRECTION_A_TO_B: u32 = 1;
/// The right half of each aligned A|B image is the input.
pub const P2P_DIRECTION_B_TO_A: u32 = 2;

/// `p2p_image_ex.format`: 8-bit unsigned samples (0 = black, 255 = white).
pub const P2P_FORMAT_U8: u32 = 1;
/// 16-bit unsigned samples in native byte order (0 = black, 65535 = white).
pub const P2P_FORMAT_U16: u32 = 2;
/// 32-bit float samples in native byte order, 0.0 = black, 1.0 = white (values outside [0, 1]
/// are clamped on input, NaN reads as 0; outputs are always within [0, 1]).
pub const P2P_FORMAT_F32: u32 = 3;
/// Output only (`p2p_translate_ex`): the output takes the input's format.
pub const P2P_FORMAT_SAME: u32 = 0;

/// An opened model (opaque). Create with `p2p_model_open`, release with `p2p_model_free`.
/// Thread-safe: any number of threads may call `p2p_translate`, `p2p_model_get_info` and
/// `p2p_evaluate` with one model at once.
pub struct p2p_model {
    _private: [u8; 0],
    _not_send_sync_unpin: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Options fixed when a model is opened. All-zero fields mean the defaults, so
/// `p2p_options o = {0}; o.struct_size = sizeof o;` is a valid set of defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct p2p_options {
    /// `sizeof(p2p_options)` as the caller compiled it. The library reads only the fields this
    /// size covers (older callers get defaults for newer fields); it must cover this field.
    pub struct_size: usize,
    /// `P2P_NORM_STATS_*`; 0 = default (batch).
    pub norm_stats: u32,
    /// `P2P_SIZE_POLICY_*`; 0 = default (pad).
    pub size_policy: u32,
    /// Overlap between tiles in pixels for `P2P_SIZE_POLICY_TILE`; 0 = default (32).
    pub tile_overlap: u32,
    /// Threads one translation uses at most; 0 = one per hardware thread the process may use
    /// (the CPU affinity mask and cgroup quota count). At most 1024. Threads are shared by the
    /// whole library, not started per model: with 0 (or a value at or above the hardware count)
    /// every model translates on one library-wide pool of one thread per hardware thread;
    /// with N below it, a translation runs on a pool of N threads borrowed from a library-wide
    /// set of at most hardware / N such pools (at least one), so concurrent translations with
    /// the same N run side by side until the set is busy, then wait for a pool. The calling
    /// thread waits while the pool works. With `P2P_OPT_PRIVATE_POOL` the model starts a pool of
    /// its own instead.
    pub threads: u32,
    /// `P2P_OPT_*` bits.
    pub flags: u32,
    /// Seed of the inference dropout when `flags` has `P2P_OPT_DROPOUT`.
    pub dropout_seed: u64,
    /// Memory one translation may take, in MiB; 0 = default: half of the memory the process may
    /// use (the least of physical memory, the cgroup's limit and the address space left under
    /// `RLIMIT_AS`). Each translation's peak is estimated from the network and the image size
    /// before anything of that size is allocated; over the budget it fails with
    /// `P2P_ERR_OUT_OF_MEMORY` and a message giving the estimate and the budget (the tile size
    /// policy translates images of any size in bounded memory). A budget above the memory the
    /// process may use is capped there. Added after `dropout_seed`:
    /// callers whose `struct_size` ends before it get the default.
    pub memory_budget_mb: u64,
    /// `P2P_PRECISION_*`; 0 = default (f32). Added after `memory_budget_mb`: callers whose
    /// `struct_size` ends before it get the default.
    pub precision: u32,
}

/// An 8-bit image: `height` rows of `width` pixels of `channels` interleaved samples
/// (1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA), row `y` starting at `data + y * stride`.
/// For 16-bit and float samples see `p2p_image_ex`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_image {
    pub width: u32,
    pub height: u32,
    /// Bytes from the start of one row to the start of the next (at least `width * channels`).
    pub stride: u32,
    pub channels: u32,
    pub data: *mut u8,
}

impl Default for p2p_image {
    fn default() -> Self {
        Self { width: 0, height: 0, stride: 0, channels: 0, data: std::ptr::null_mut() }
    }
}

/// An image of any sample format (`p2p_translate_ex`): `height` rows of `width` pixels of
/// `channels` interleaved samples (1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA) of `format`,
/// row `y` starting at `(uint8_t *)data + y * stride`. Samples are in native byte order and need
/// no particular alignment. Set `struct_size` to `sizeof(p2p_image_ex)`: this struct may grow
/// at its end; the library reads and writes only the fields `struct_size` covers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_image_ex {
    /// `sizeof(p2p_image_ex)` as the caller compiled it; must cover at least `data`.
    pub struct_size: usize,
    /// `P2P_FORMAT_*` (for an output, `P2P_FORMAT_SAME` takes the input's).
    pub format: u32,
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    /// Bytes from the start of one row to the start of the next (at least
    /// `width * channels * bytes per sample`).
    pub stride: usize,
    pub data: *mut c_void,
}

impl Default for p2p_image_ex {
    fn default() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>(),
            format: P2P_FORMAT_SAME,
            width: 0,
            height: 0,
            channels: 0,
            stride: 0,
            data: std::ptr::null_mut(),
        }
    }
}

impl crate::SampleFormat {
    /// The `P2P_FORMAT_*` code of this format.
    pub const fn code(self) -> u32 {
        match self {
            crate::SampleFormat::U8 => P2P_FORMAT_U8,
            crate::SampleFormat::U16 => P2P_FORMAT_U16,
            crate::SampleFormat::F32 => P2P_FORMAT_F32,
        }
    }
    /// The format of a `P2P_FORMAT_*` code; `None` for `P2P_FORMAT_SAME` and unknown codes.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            P2P_FORMAT_U8 => Some(crate::SampleFormat::U8),
            P2P_FORMAT_U16 => Some(crate::SampleFormat::U16),
            P2P_FORMAT_F32 => Some(crate::SampleFormat::F32),
            _ => None,
        }
    }
}

/// What a model is, as read off its checkpoint, and the options it was opened with.
/// Strings are owned by the model and stay valid until `p2p_model_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_model_info {
    /// `sizeof(p2p_model_info)` as the caller compiled it; the library writes only the fields
    /// this size covers. Must cover this field.
    pub struct_size: usize,
    /// The reference's generator name: `unet_256`, `unet_128`, `resnet_9blocks`, ...
    pub net_g: *const c_char,
    /// `batch`, `instance` or `none`.
    pub norm: *const c_char,
    /// Where the weights came from (a path, or the name of the shipped model).
    pub source: *const c_char,
    /// Filters of the first layer.
    pub ngf: u32,
    pub in_channels: u32,
    pub out_channels: u32,
    /// The network takes sides that are multiples of this (the size policy handles the rest).
    pub stride: u32,
    /// The side the network was trained at.
    pub native_size: u32,
    /// `P2P_SIZE_POLICY_*` in effect (never `P2P_SIZE_POLICY_DEFAULT`).
    pub size_policy: u32,
    /// `P2P_NORM_STATS_*` in effect (never `P2P_NORM_STATS_DEFAULT`).
    pub norm_stats: u32,
    /// Trainable parameters (normalisation running statistics not counted).
    pub parameters: u64,
    /// `P2P_PRECISION_*` the model runs in (never `P2P_PRECISION_DEFAULT`): `P2P_PRECISION_F32`
    /// where bf16 was asked for on a CPU without AVX512_BF16. Added after `parameters`.
    pub precision: u32,
}

impl Default for p2p_model_info {
    fn default() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>(),
            net_g: std::ptr::null(),
            norm: std::ptr::null(),
            source: std::ptr::null(),
            ngf: 0,
            in_channels: 0,
            out_channels: 0,
            stride: 0,
            native_size: 0,
            size_policy: 0,
            norm_stats: 0,
            parameters: 0,
            precision: 0,
        }
    }
}

/// One training step, as reported to a `p2p_progress_fn` (and, as `TrainProgress`, to a Rust
/// host's progress sink).
#[repr(C)]
#[derive(abi_stable::StableAbi, Debug, Clone, Copy, Default)]
pub struct p2p_progress {
    /// Steps done so far (1 after the first).
    pub step: u64,
    pub epoch: u64,
    /// Steps the run will take in all.
    pub total_steps: u64,
    /// Generator adversarial loss.
    pub g_gan: f32,
    /// lambda * L1, as the reference logs it.
    pub g_l1: f32,
    pub d_real: f32,
    pub d_fake: f32,
    /// Learning rate of this step.
    pub lr: f64,
    pub images_per_sec: f32,
}

/// Called after every training step with the step's report and the caller's `user` pointer.
/// Return 0 to continue, non-zero to stop (a checkpoint is saved first). The pointer is valid
/// only during the call. The callback runs on the thread that called `p2p_train`; it must not
/// unwind (C++ exceptions, longjmp) out into the library.
pub type p2p_progress_fn =
    Option<unsafe extern "C" fn(progress: *const p2p_progress, user: *mut c_void) -> c_int>;

/// Called with a warning or note from a training run (`p2p_train_with_messages`): one line of
/// NUL-terminated UTF-8, valid only during the call, and the caller's `user` pointer. Runs on the
/// thread that called the training function; it must not unwind into the library.
pub type p2p_message_fn = Option<unsafe extern "C" fn(message: *const c_char, user: *mut c_void)>;

/// Evaluation results (`p2p_evaluate`), averaged over the pairs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct p2p_metrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Peak signal-to-noise ratio in dB.
    pub psnr: f64,
    pub ssim: f64,
    /// Pairs evaluated.
    pub count: u64,
}

/// The `P2P_*` codes of the settings, both ways: the one place the C face converts them.
macro_rules! codes {
    ($ty:ty, $default:ident { $($variant:ident = $code:ident),+ $(,)? }) => {
        impl $ty {
            /// The `P2P_*` code of this value (never the `_DEFAULT` code).
            pub const fn code(self) -> u32 {
                match self {
                    $(<$ty>::$variant => $code,)+
                }
            }
            /// The value of a `P2P_*` code, the `_DEFAULT` code giving the default; `None` for
            /// codes this version does not know.
            pub fn from_code(code: u32) -> Option<Self> {
                match code {
                    $default => Some(<$ty>::default()),
                    $($code => Some(<$ty>::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

codes!(crate::NormStats, P2P_NORM_STATS_DEFAULT { Batch = P2P_NORM_STATS_BATCH, Running = P2P_NORM_STATS_RUNNING });
codes!(crate::SizePolicy, P2P_SIZE_POLICY_DEFAULT {
    Resize = P2P_SIZE_POLICY_RESIZE,
    Pad = P2P_SIZE_POLICY_PAD,
    Tile = P2P_SIZE_POLICY_TILE,
});
codes!(crate::Precision, P2P_PRECISION_DEFAULT { F32 = P2P_PRECISION_F32, Bf16 = P2P_PRECISION_BF16 });
codes!(crate::Direction, P2P_DIRECTION_DEFAULT { AtoB = P2P_DIRECTION_A_TO_B, BtoA = P2P_DIRECTION_B_TO_A });

#[cfg(test)]
mod tests {
    use crate::{Direction, NormStats, Precision, SizePolicy};

    #[test]
    fn codes_round_trip_and_defaults_agree() {
        for p in [SizePolicy::Resize, SizePolicy::Pad, SizePolicy::Tile] {
            assert_eq!(SizePolicy::from_code(p.code()), Some(p));
        }
        for n in [NormStats::Batch, NormStats::Running] {
            assert_eq!(NormStats::from_code(n.code()), Some(n));
        }
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(Precision::from_code(p.code()), Some(p));
        }
        assert_eq!(Precision::from_code(super::P2P_PRECISION_DEFAULT), Some(Precision::F32));
        for d in [Direction::AtoB, Direction::BtoA] {
            assert_eq!(Direction::from_code(d.code()), Some(d));
        }
        // The header documents these defaults.
        assert_eq!(SizePolicy::from_code(super::P2P_SIZE_POLICY_DEFAULT), Some(SizePolicy::Pad));
        assert_eq!(NormStats::from_code(super::P2P_NORM_STATS_DEFAULT), Some(NormStats::Batch));
        assert_eq!(Direction::from_code(super::P2P_DIRECTION_DEFAULT), Some(Direction::BtoA));
        assert_eq!(SizePolicy::from_code(99), None);
    }
}
