//! The functions `libpix2pix.so` exports to C, declared here (the contract) and defined by the
//! plugin's C face, which checks at compile time that its definitions have these signatures.
//! cbindgen writes these declarations, with their documentation, into `include/pix2pix.h`.

use std::ffi::{c_char, c_void};

use super::*;

// `p2p_model` is opaque: only pointers to it cross, never the type itself.
#[allow(improper_ctypes)]
extern "C" {
    /// The version of the C API this library implements (`P2P_ABI_VERSION` of the header it was
    /// built with). A caller compiled against a different `P2P_ABI_VERSION` must not use it.
    /// Thread-safe; never fails.
    pub fn p2p_abi_version() -> u32;

    /// The library's version, e.g. `"0.1.0"`: a static string, never NULL, never to be freed.
    /// Thread-safe; never fails.
    pub fn p2p_version() -> *const c_char;

    /// The message of the last failure on the calling thread (`""` if none yet), never NULL.
    /// Owned by the library: valid until the next failing call on the same thread; copy it to
    /// keep it. Each thread has its own message, so concurrent failures do not mix.
    pub fn p2p_last_error() -> *const c_char;

    /// A static name for a status code (`"P2P_ERR_IO"`, ...; `"unknown"` for codes this version does
    /// not know). Never NULL, never to be freed. Thread-safe.
    pub fn p2p_status_name(status: p2p_status) -> *const c_char;

    /// Opens a generator checkpoint (`.safetensors`, or a PyTorch `.pth` state dict); its
    /// architecture is read off the file.
    ///
    /// - `path`: NUL-terminated file name, or NULL for the model shipped with the library
    ///   (`P2P_ERR_UNSUPPORTED` if this build ships none).
    /// - `opts`: NULL for the defaults, or options whose `struct_size` is set (see `p2p_options`).
    /// - `out`: receives the model on success (and is set to NULL on failure); must not be NULL.
    ///   Release the model with `p2p_model_free`.
    ///
    /// Errors: `P2P_ERR_NULL`, `P2P_ERR_IO` (missing/unreadable file), `P2P_ERR_CHECKPOINT` (not a
    /// checkpoint, truncated, or not a pix2pix generator), `P2P_ERR_INVALID_ARGUMENT` (options),
    /// `P2P_ERR_UNSUPPORTED`. Thread-safe. (`opts->memory_budget_mb` is checked by each
    /// translation, not here.)
    ///
    /// # Safety
    /// Pointers are NULL or valid as described; `path` is NUL-terminated.
    pub fn p2p_model_open(
        path: *const c_char,
        opts: *const p2p_options,
        out: *mut *mut p2p_model,
    ) -> p2p_status;

    /// Releases a model from `p2p_model_open`. NULL is ignored. The model must not be in use by
    /// another thread, and must not be used afterwards (nor the strings of its `p2p_model_info`).
    ///
    /// # Safety
    /// `m` is NULL or a model from `p2p_model_open` not yet released.
    pub fn p2p_model_free(m: *mut p2p_model);

    /// Describes a model (named `_get_info` because C cannot have a function and a typedef both
    /// called `p2p_model_info`). `out->struct_size` must be set to `sizeof(p2p_model_info)`; the library
    /// fills the fields that size covers. Strings point into the model and stay valid until
    /// `p2p_model_free`. Errors: `P2P_ERR_NULL`, `P2P_ERR_INVALID_ARGUMENT` (struct_size too
    /// small). Thread-safe.
    ///
    /// # Safety
    /// `m` is NULL or a live model; `out` is NULL or points to `out->struct_size` writable bytes.
    pub fn p2p_model_get_info(m: *const p2p_model, out: *mut p2p_model_info) -> p2p_status;

    /// Translates an 8-bit image of any size (the model's size policy handles sides the network
    /// does not take as they are): `p2p_translate_ex` with `P2P_FORMAT_U8` in and out.
    ///
    /// Channels: the input is converted to the model's input channels (`p2p_model_info.in_channels`):
    /// gray is replicated to RGB for a 3-channel model, RGB becomes ITU-R 601-2 luma
    /// (L = R * 299/1000 + G * 587/1000 + B * 114/1000) for a 1-channel model. The output has the
    /// input's width and height and the model's output channels (`out_channels`: 3 = RGB,
    /// 1 = gray), plus one if the input has alpha (2 or 4 channels), its alpha copied through
    /// unchanged.
    ///
    /// Input: `in->data` must hold `in->stride * (in->height - 1) + in->width * in->channels`
    /// bytes. Width and height must be positive and `width * height` at most 2^28 pixels; `stride`
    /// at least `width * channels`; `channels` 1 to 4; the extent above at most 2^40 bytes.
    /// Violations give `P2P_ERR_INVALID_ARGUMENT` before anything is read or allocated.
    ///
    /// Output, two modes:
    /// - `out->data == NULL`: the library allocates a packed image (`stride = width * channels`)
    ///   and sets all of `*out`; release it with `p2p_image_free`.
    /// - `out->data != NULL`: the caller's buffer of `out->height` rows `out->stride` bytes apart.
    ///   It must have `out->stride >= in->width * C` and `out->height >= in->height` (C = output
    ///   channels), else `P2P_ERR_BUFFER_TOO_SMALL` and nothing is written. Row `y` is written to
    ///   `out->data + y * out->stride`, `in->width * C` bytes each; nothing else is touched (not
    ///   the bytes between rows, nor rows past `in->height`). On success `out->width`,
    ///   `out->height` and `out->channels` describe the image; `out->stride` is kept.
    ///   `out->data` may be `in->data` (in place) if the rows fit.
    ///
    /// Memory: the translation's peak is estimated from the network and the image size (after
    /// the size policy) before anything of that size is allocated; over the model's budget
    /// (`p2p_options.memory_budget_mb`, default half of the memory the process may use) the
    /// call fails with `P2P_ERR_OUT_OF_MEMORY` and a message giving the estimate, the budget
    /// and, for the pad and resize policies, what the tile policy would need (tiles take bounded
    /// memory at any image size). Memory the system refuses gives the same status.
    ///
    /// On failure `*out` is unchanged. Errors: `P2P_ERR_NULL`, `P2P_ERR_INVALID_ARGUMENT`,
    /// `P2P_ERR_BUFFER_TOO_SMALL`, `P2P_ERR_COMPUTE`, `P2P_ERR_OUT_OF_MEMORY` (over the memory
    /// budget, see above).
    ///
    /// Thread-safe: several threads may translate with one model at once (each with its own
    /// images); results do not depend on concurrency.
    ///
    /// # Safety
    /// `m` is NULL or a live model; `in`/`out` are NULL or valid, and their buffers as described.
    pub fn p2p_translate(
        m: *const p2p_model,
        r#in: *const p2p_image,
        out: *mut p2p_image,
    ) -> p2p_status;

    /// Translates an image of any size and sample format (`P2P_FORMAT_U8`, `_U16`, `_F32`): as
    /// `p2p_translate`, with sizes in bytes of samples of the format. The model computes in 32-bit
    /// float; samples are converted on the way in and quantised only on the way out, so 16-bit
    /// and float images keep their precision.
    ///
    /// Input: `in->struct_size` must cover `data`; `in->format` one of `P2P_FORMAT_U8/U16/F32`;
    /// `in->data` must hold `in->stride * (in->height - 1) + in->width * in->channels * B` bytes
    /// (B = bytes per sample); the other rules of `p2p_translate` apply with that row size.
    ///
    /// Output: `out->struct_size` must cover `data`; `out->format` is the output's format
    /// (`P2P_FORMAT_SAME`: the input's). Channels as `p2p_translate`. Two modes, as
    /// `p2p_translate`:
    /// - `out->data == NULL`: the library allocates a packed image
    ///   (`stride = width * channels * B`) and sets `format`, `width`, `height`, `channels`,
    ///   `stride` and `data`; release it with `p2p_image_ex_free`.
    /// - `out->data != NULL`: the caller's buffer of `out->height` rows `out->stride` bytes apart,
    ///   with `out->stride >= in->width * C * B` and `out->height >= in->height`, else
    ///   `P2P_ERR_BUFFER_TOO_SMALL` and nothing is written. Only the rows' `in->width * C * B`
    ///   bytes are written; on success `format`, `width`, `height` and `channels` are set and
    ///   `stride` is kept. `out->data` may be `in->data` (in place) if the rows fit.
    ///
    /// On failure `*out` is unchanged. Errors: `P2P_ERR_NULL`, `P2P_ERR_INVALID_ARGUMENT`
    /// (including an unknown format or a too-small `struct_size`), `P2P_ERR_BUFFER_TOO_SMALL`,
    /// `P2P_ERR_COMPUTE`, `P2P_ERR_OUT_OF_MEMORY` (over the memory budget, as `p2p_translate`).
    /// Thread-safe as `p2p_translate`.
    ///
    /// # Safety
    /// `m` is NULL or a live model; `in`/`out` are NULL or valid for `struct_size` bytes, and their
    /// buffers as described.
    pub fn p2p_translate_ex(
        m: *const p2p_model,
        r#in: *const p2p_image_ex,
        out: *mut p2p_image_ex,
    ) -> p2p_status;

    /// Translates `n` images of one size in one forward pass: `out[i]` receives the translation
    /// of `in[i]` exactly as `p2p_translate_ex(m, &in[i], &out[i])` describes (formats, channels,
    /// the two output modes, per element). Faster per image than one call each on many cores.
    ///
    /// Normalisation: with batch statistics (the default) each image is normalised by its own
    /// statistics, so its output equals its single translation to within float rounding (at
    /// most one level of an 8-bit sample); with `P2P_OPT_SHARED_BATCH_STATS` in the model's
    /// options batch norm takes the statistics of the whole batch instead. Seeded dropout gives
    /// each image the masks it would get alone. Under `P2P_SIZE_POLICY_TILE` the images are
    /// translated one after another.
    ///
    /// - `in`, `out`: arrays of `n` elements (plain C arrays: elements `in[0].struct_size` and
    ///   `out[0].struct_size` bytes apart; every element's `struct_size` must equal its array's
    ///   first). `out` may be `in` (in place) where the rows fit. NULL is accepted when `n` is 0.
    /// - All inputs must have the same width and height, and all outputs the same `format`
    ///   (`P2P_FORMAT_SAME` counting as its input's); otherwise `P2P_ERR_INVALID_ARGUMENT` with
    ///   a message naming the index, e.g. `in[2]`.
    /// - `n`: 0 (nothing is done, `P2P_OK`) to 1024.
    ///
    /// Everything is checked, and every library buffer allocated, before any output is written:
    /// on failure no `out[i]` and no caller buffer is changed. Errors: those of
    /// `p2p_translate_ex`, their messages naming the element (`in[i]`, `out[i]`);
    /// `P2P_ERR_OUT_OF_MEMORY` when `n` times one image's estimate exceeds the memory budget
    /// (a batch keeps all its images in memory at once).
    /// Thread-safe as `p2p_translate`.
    ///
    /// # Safety
    /// `m` is NULL or a live model; `in`/`out` are NULL or arrays of `n` elements valid for their
    /// `struct_size`, and their buffers as `p2p_translate_ex` describes.
    pub fn p2p_translate_batch(
        m: *const p2p_model,
        n: usize,
        r#in: *const p2p_image_ex,
        out: *mut p2p_image_ex,
    ) -> p2p_status;

    /// Releases the samples of an image `p2p_translate_ex` or `p2p_translate_batch` allocated
    /// (`out->data == NULL`) and sets its `data` to NULL and `width`, `height`, `channels`,
    /// `stride` to 0 (within `struct_size`). NULL, and an image whose `data` is NULL, are ignored. Never pass an image
    /// whose buffer the caller allocated.
    ///
    /// # Safety
    /// `img` is NULL or points to a `p2p_image_ex` whose `data` is NULL or library-allocated.
    pub fn p2p_image_ex_free(img: *mut p2p_image_ex);

    /// Releases the pixels of an image the library allocated (`p2p_translate` with
    /// `out->data == NULL`) and zeroes `*img`. NULL, and an image whose `data` is NULL, are
    /// ignored. Never pass an image whose buffer the caller allocated.
    ///
    /// # Safety
    /// `img` is NULL or points to a `p2p_image` whose `data` is NULL or library-allocated.
    pub fn p2p_image_free(img: *mut p2p_image);

    /// Trains a model from a TOML configuration text (not a path): `p2p_train_ex` without flags.
    ///
    /// # Safety
    /// See `p2p_train_ex`.
    pub fn p2p_train(
        config_toml: *const c_char,
        cb: p2p_progress_fn,
        user: *mut c_void,
    ) -> p2p_status;

    /// Trains a model from a TOML configuration text (not a path), writing checkpoints where the
    /// configuration says: `p2p_train_with_messages` without a message callback.
    ///
    /// - `flags`: `P2P_TRAIN_RESUME` to continue from `<output.dir>/latest`; other bits must be 0.
    /// - `cb`: NULL, or called after every step on the calling thread with `user`; returning
    ///   non-zero stops the run after a checkpoint is saved, and the call returns
    ///   `P2P_ERR_CANCELLED`.
    ///
    /// Blocks until the run ends. Errors: `P2P_ERR_NULL`, `P2P_ERR_INVALID_ARGUMENT` (not UTF-8,
    /// unknown flags), `P2P_ERR_CONFIG` (the message names the key and line), `P2P_ERR_IO`,
    /// `P2P_ERR_IMAGE`, `P2P_ERR_CHECKPOINT`, `P2P_ERR_CANCELLED`, `P2P_ERR_COMPUTE`,
    /// `P2P_ERR_OUT_OF_MEMORY` (a training step's estimate, from the networks, batch size and
    /// crop, exceeds `train.memory_budget_mb` of the config, default half of the memory the
    /// process may use; checked before the networks are built). Several runs may proceed at once on different threads if their output folders differ.
    ///
    /// # Safety
    /// `config_toml` is NULL or NUL-terminated; `cb` does not unwind into the library.
    pub fn p2p_train_ex(
        config_toml: *const c_char,
        flags: u32,
        cb: p2p_progress_fn,
        user: *mut c_void,
    ) -> p2p_status;

    /// `p2p_train_ex` that also reports warnings and notes (a skipped unreadable image, a resumed
    /// run whose settings differ, ...) to `on_message`, one line each, with the same `user`. The
    /// library prints nothing itself: without a message callback these are dropped.
    ///
    /// # Safety
    /// As `p2p_train_ex`; `on_message` does not unwind into the library.
    pub fn p2p_train_with_messages(
        config_toml: *const c_char,
        flags: u32,
        cb: p2p_progress_fn,
        on_message: p2p_message_fn,
        user: *mut c_void,
    ) -> p2p_status;

    /// Evaluates a model over a folder of aligned A|B image pairs, each resized to `size`
    /// (0 = the model's native size): mean absolute error, PSNR and SSIM into `*out`.
    ///
    /// - `data_dir`: NUL-terminated folder; `direction`: `P2P_DIRECTION_*`.
    /// - `html_dir`: NULL, or a folder to write an HTML page of input | output | target rows into.
    ///
    /// Errors: `P2P_ERR_NULL`, `P2P_ERR_INVALID_ARGUMENT`, `P2P_ERR_IO`, `P2P_ERR_IMAGE`,
    /// `P2P_ERR_COMPUTE`, `P2P_ERR_OUT_OF_MEMORY` (a pair over the model's memory budget, as
    /// `p2p_translate`). Thread-safe (several evaluations may share one model).
    ///
    /// # Safety
    /// `m` is NULL or a live model; strings are NULL or NUL-terminated; `out` is NULL or writable.
    pub fn p2p_evaluate(
        m: *const p2p_model,
        data_dir: *const c_char,
        direction: u32,
        size: u32,
        html_dir: *const c_char,
        out: *mut p2p_metrics,
    ) -> p2p_status;

    /// Writes a generator as an ONNX model (opset 17): input `input`, output `output`, NCHW
    /// float32 in [-1, 1] (`v / 127.5 - 1` for 8-bit values), batch, height and width free; height
    /// and width must be multiples of the network's stride (`p2p_model_info.stride`).
    ///
    /// - `model_path`: NUL-terminated checkpoint, or NULL for the model shipped with the library.
    /// - `out_path`: the `.onnx` file to write; it appears whole or not at all.
    /// - `norm_stats`: `P2P_NORM_STATS_*`: batch statistics (the default; each run normalises with
    ///   the input's own) or the checkpoint's running statistics (PyTorch's eval mode).
    /// - `flags`: 0, or `P2P_EXPORT_OVERWRITE` to replace an existing `out_path`.
    ///
    /// Errors: `P2P_ERR_NULL`, `P2P_ERR_INVALID_ARGUMENT`, `P2P_ERR_IO` (unreadable model, an
    /// existing output without `P2P_EXPORT_OVERWRITE`, unwritable folder), `P2P_ERR_CHECKPOINT`,
    /// `P2P_ERR_UNSUPPORTED`. Thread-safe.
    ///
    /// # Safety
    /// `model_path` is NULL or NUL-terminated; `out_path` is NUL-terminated.
    pub fn p2p_export_onnx(
        model_path: *const c_char,
        out_path: *const c_char,
        norm_stats: u32,
        flags: u32,
    ) -> p2p_status;
}
