//! The C API of `libpix2pix.so`: the definitions of the functions the contract declares in
//! `pix2pix_ffi::c::functions` (documented there and in `ffi/include/pix2pix.h`).
//!
//! Thin wrappers over [`crate::faces::api`]: check pointers, convert the C types, call, convert back.
//! Every exported function catches panics (a panic becomes `P2P_ERR_INTERNAL`).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::mem::{offset_of, size_of};
use std::path::PathBuf;

use pix2pix_ffi::c::functions as contract;
use pix2pix_ffi::c::*;

use pix2pix_ffi::{Direction, NormStats, Precision, SampleFormat, SizePolicy};

use crate::faces::api::{self, ApiError, ApiResult, ErrorKind, LoadedModel};
use crate::filter::image_tensor::{Image, ImageView};
use crate::filter::model::Options;
use crate::train;

mod buffers;

// Images the library allocates come from the C heap, so `p2p_image_free` needs nothing but the
// pointer (not the size, which the caller could have changed in `*img`).
extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

// Each definition below has the signature the contract declares (`pix2pix_ffi::c::functions`,
// from which the header is generated): a pair of function items only coerces to one
// function-pointer type, as an array needs, when their signatures agree.
const _: () = {
    let _ = [contract::p2p_abi_version, p2p_abi_version];
    let _ = [contract::p2p_version, p2p_version];
    let _ = [contract::p2p_last_error, p2p_last_error];
    let _ = [contract::p2p_status_name, p2p_status_name];
    let _ = [contract::p2p_model_open, p2p_model_open];
    let _ = [contract::p2p_model_free, p2p_model_free];
    let _ = [contract::p2p_model_get_info, p2p_model_get_info];
    let _ = [contract::p2p_translate, p2p_translate];
    let _ = [contract::p2p_image_free, p2p_image_free];
    let _ = [contract::p2p_translate_ex, p2p_translate_ex];
    let _ = [contract::p2p_image_ex_free, p2p_image_ex_free];
    let _ = [contract::p2p_translate_batch, p2p_translate_batch];
    let _ = [contract::p2p_train, p2p_train];
    let _ = [contract::p2p_train_ex, p2p_train_ex];
    let _ = [contract::p2p_train_with_messages, p2p_train_with_messages];
    let _ = [contract::p2p_evaluate, p2p_evaluate];
    let _ = [contract::p2p_export_onnx, p2p_export_onnx];
};

/// What a `p2p_model *` points to: the model and the strings `p2p_model_get_info` lends out.
struct CModel {
    model: LoadedModel,
    net_g: CString,
    norm: CString,
    source: CString,
}

// Several threads use one `p2p_model *` at once.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<CModel>();
};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn status_of(kind: ErrorKind) -> p2p_status {
    match kind {
        ErrorKind::Null => P2P_ERR_NULL,
        ErrorKind::InvalidArgument => P2P_ERR_INVALID_ARGUMENT,
        ErrorKind::Io => P2P_ERR_IO,
        ErrorKind::Checkpoint => P2P_ERR_CHECKPOINT,
        ErrorKind::BufferTooSmall => P2P_ERR_BUFFER_TOO_SMALL,
        ErrorKind::Cancelled => P2P_ERR_CANCELLED,
        ErrorKind::Config => P2P_ERR_CONFIG,
        ErrorKind::Image => P2P_ERR_IMAGE,
        ErrorKind::Compute => P2P_ERR_COMPUTE,
        ErrorKind::Unsupported => P2P_ERR_UNSUPPORTED,
        ErrorKind::OutOfMemory => P2P_ERR_OUT_OF_MEMORY,
        ErrorKind::Internal => P2P_ERR_INTERNAL,
    }
}

fn c_string(s: &str) -> CString {
    // Interior NULs cannot come from paths or our messages, but must not lose the rest if they do.
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

fn set_last_error(e: &ApiError) {
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = c_string(&e.message));
}

/// Runs `f` with panics caught; failures set the thread's last error and give their status.
fn run(f: impl FnOnce() -> ApiResult<()>) -> p2p_status {
    match api::guard(f) {
        Ok(()) => P2P_OK,
        Err(e) => {
            set_last_error(&e);
            status_of(e.kind)
        }
    }
}

fn null(what: &str) -> ApiError {
    ApiError::new(ErrorKind::Null, format!("{what} is NULL"))
}

/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> ApiResult<&'a CStr> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL, and the caller's contract (documented per function) is a NUL-terminated
    // string that lives for the duration of the call.
    Ok(unsafe { CStr::from_ptr(p) })
}

fn utf8<'a>(s: &'a CStr, what: &str) -> ApiResult<&'a str> {
    s.to_str().map_err(|e| ApiError::invalid(format!("invalid {what}: not UTF-8 ({e})")))
}

#[cfg(unix)]
fn path_of(s: &CStr) -> ApiResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
}

#[cfg(not(unix))]
fn path_of(s: &CStr) -> ApiResult<PathBuf> {
    Ok(PathBuf::from(utf8(s, "path")?))
}

/// # Safety
/// `m` is NULL or a pointer `p2p_model_open` returned and `p2p_model_free` has not released.
unsafe fn model_ref<'a>(m: *const p2p_model) -> ApiResult<&'a CModel> {
    if m.is_null() {
        return Err(null("model"));
    }
    // SAFETY: every non-NULL `p2p_model *` the library hands out is a `Box<CModel>` turned into
    // a raw pointer; the caller keeps it alive until `p2p_model_free`. `CModel` is `Sync`, so
    // shared references from several threads at once are fine.
    Ok(unsafe { &*m.cast::<CModel>() })
}

/// Where field `$f` of struct `$ty` lies in a caller's struct at `$p`: (end offset, typed pointer).
macro_rules! field {
    ($p:expr, $ty:ident, $f:ident) => {{
        let probe = std::mem::MaybeUninit::<$ty>::uninit();
        // SAFETY: a place projection inside a live local of the right type; nothing is read.
        let typed = unsafe { std::ptr::addr_of!((*probe.as_ptr()).$f) };
        let off = offset_of!($ty, $f);
        (off + pointee_size(typed), retype($p.cast::<u8>().wrapping_add(off), typed))
    }};
}

/// Reads field `$f` of a caller's struct at `$p` if the caller's `$size` covers it.
macro_rules! read_field {
    ($p:expr, $size:expr, $ty:ident, $f:ident) => {{
        let (end, ptr) = field!($p, $ty, $f);
        if end <= $size {
            // SAFETY: the caller's struct is `$size` readable bytes (its `struct_size`), and the
            // field lies wholly inside it.
            Some(unsafe { ptr.read_unaligned() })
        } else {
            None
        }
    }};
}

/// Writes field `$f` of a caller's struct at `$p` if the caller's `$size` covers it.
macro_rules! write_field {
    ($p:expr, $size:expr, $ty:ident, $f:ident, $v:expr) => {{
        let (end, ptr) = field!($p, $ty, $f);
        if end <= $size {
            // SAFETY: the caller's struct is `$size` writable bytes (its `struct_size`), and the
            // field lies wholly inside it.
            unsafe { ptr.cast_mut().write_unaligned($v) }
        }
    }};
}

fn pointee_size<T>(_: *const T) -> usize {
    size_of::<T>()
}

fn retype<T>(p: *const u8, _: *const T) -> *const T {
    p.cast()
}

/// # Safety
/// `p` is NULL or points to a `p2p_options` of at least `p->struct_size` readable bytes.
unsafe fn read_options(p: *const p2p_options) -> ApiResult<Options> {
    let mut o = Options::default();
    if p.is_null() {
        return Ok(o);
    }
    // SAFETY: non-NULL; the struct starts with `struct_size`, which every caller must set.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    if size < size_of::<usize>() {
        return Err(ApiError::invalid(format!(
            "invalid options: struct_size {size} (set it to sizeof(p2p_options))"
        )));
    }
    if let Some(v) = read_field!(p, size, p2p_options, norm_stats) {
        o.norm_stats = NormStats::from_code(v).ok_or_else(|| {
            ApiError::invalid(format!("invalid options.norm_stats: {v} (P2P_NORM_STATS_*)"))
        })?;
    }
    if let Some(v) = read_field!(p, size, p2p_options, size_policy) {
        o.size_policy = SizePolicy::from_code(v).ok_or_else(|| {
            ApiError::invalid(format!("invalid options.size_policy: {v} (P2P_SIZE_POLICY_*)"))
        })?;
    }
    if let Some(v) = read_field!(p, size, p2p_options, tile_overlap) {
        if v != 0 {
            o.tile_overlap = v as usize;
        }
    }
    if let Some(v) = read_field!(p, size, p2p_options, threads) {
        o.threads = v as usize;
    }
    let flags = read_field!(p, size, p2p_options, flags).unwrap_or(0);
    const KNOWN: u32 = P2P_OPT_DROPOUT | P2P_OPT_SHARED_BATCH_STATS | P2P_OPT_PRIVATE_POOL;
    if flags & !KNOWN != 0 {
        return Err(ApiError::invalid(format!("invalid options.flags: {flags:#x} (unknown bits)")));
    }
    o.shared_batch_stats = flags & P2P_OPT_SHARED_BATCH_STATS != 0;
    o.private_pool = flags & P2P_OPT_PRIVATE_POOL != 0;
    if flags & P2P_OPT_DROPOUT != 0 {
        o.dropout_seed = Some(read_field!(p, size, p2p_options, dropout_seed).unwrap_or(0));
    }
    if let Some(v) = read_field!(p, size, p2p_options, memory_budget_mb) {
        o.memory_budget_mb = v;
    }
    if let Some(v) = read_field!(p, size, p2p_options, precision) {
        o.precision = Precision::from_code(v).ok_or_else(|| {
            ApiError::invalid(format!("invalid options.precision: {v} (P2P_PRECISION_*)"))
        })?;
    }
    Ok(o)
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL"),
    };

/// `p2p_abi_version` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
#[no_mangle]
pub extern "C" fn p2p_abi_version() -> u32 {
    // Nothing here can panic; the guard keeps the rule "every export catches panics" uniform.
    std::panic::catch_unwind(|| P2P_ABI_VERSION).unwrap_or(P2P_ABI_VERSION)
}

/// `p2p_version` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
#[no_mangle]
pub extern "C" fn p2p_version() -> *const c_char {
    std::panic::catch_unwind(|| VERSION.as_ptr()).unwrap_or(VERSION.as_ptr())
}

/// `p2p_last_error` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
#[no_mangle]
pub extern "C" fn p2p_last_error() -> *const c_char {
    let ptr = std::panic::catch_unwind(|| LAST_ERROR.try_with(|l| l.borrow().as_ptr()).ok());
    match ptr {
        Ok(Some(p)) => p,
        _ => c"".as_ptr(),
    }
}

/// `p2p_status_name` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
#[no_mangle]
pub extern "C" fn p2p_status_name(status: p2p_status) -> *const c_char {
    std::panic::catch_unwind(|| status_name(status)).unwrap_or(c"unknown").as_ptr()
}

fn status_name(status: p2p_status) -> &'static CStr {
    match status {
        P2P_OK => c"P2P_OK",
        P2P_ERR_NULL => c"P2P_ERR_NULL",
        P2P_ERR_INVALID_ARGUMENT => c"P2P_ERR_INVALID_ARGUMENT",
        P2P_ERR_IO => c"P2P_ERR_IO",
        P2P_ERR_CHECKPOINT => c"P2P_ERR_CHECKPOINT",
        P2P_ERR_BUFFER_TOO_SMALL => c"P2P_ERR_BUFFER_TOO_SMALL",
        P2P_ERR_CANCELLED => c"P2P_ERR_CANCELLED",
        P2P_ERR_CONFIG => c"P2P_ERR_CONFIG",
        P2P_ERR_IMAGE => c"P2P_ERR_IMAGE",
        P2P_ERR_COMPUTE => c"P2P_ERR_COMPUTE",
        P2P_ERR_UNSUPPORTED => c"P2P_ERR_UNSUPPORTED",
        P2P_ERR_OUT_OF_MEMORY => c"P2P_ERR_OUT_OF_MEMORY",
        P2P_ERR_INTERNAL => c"P2P_ERR_INTERNAL",
        _ => c"unknown",
    }
}

/// `p2p_model_open` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_model_open(
    path: *const c_char,
    opts: *const p2p_options,
    out: *mut *mut p2p_model,
) -> p2p_status {
    run(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `out` is non-NULL and points to a writable `p2p_model *` (caller contract).
        unsafe { out.write(std::ptr::null_mut()) };
        let path = if path.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated (caller contract).
            Some(path_of(unsafe { c_str(path, "path") }?)?)
        };
        // SAFETY: `opts` is NULL or a `p2p_options` of `struct_size` bytes (caller contract).
        let options = unsafe { read_options(opts) }?;
        let model = api::open_model(path.as_deref(), options)?;
        let info = model.info();
        let c = CModel {
            net_g: c_string(&info.net_g),
            norm: c_string(info.norm),
            source: c_string(&info.source),
            model,
        };
        // SAFETY: checked non-NULL above.
        unsafe { out.write(Box::into_raw(Box::new(c)).cast::<p2p_model>()) };
        Ok(())
    })
}

/// `p2p_model_free` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_model_free(m: *mut p2p_model) {
    if m.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `m` came from `Box::into_raw` in `p2p_model_open` and is released once
        // (caller contract), so re-boxing and dropping it is sound.
        drop(unsafe { Box::from_raw(m.cast::<CModel>()) });
    });
}

/// `p2p_model_get_info` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_model_get_info(
    m: *const p2p_model,
    out: *mut p2p_model_info,
) -> p2p_status {
    run(|| {
        // SAFETY: caller contract on `m`.
        let c = unsafe { model_ref(m) }?;
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: non-NULL; the struct starts with `struct_size`, which the caller must set.
        let size = unsafe { out.cast::<usize>().read_unaligned() };
        if size < size_of::<usize>() {
            return Err(ApiError::invalid(format!(
                "invalid model info: struct_size {size} (set it to sizeof(p2p_model_info))"
            )));
        }
        let i = c.model.info();
        write_field!(out, size, p2p_model_info, net_g, c.net_g.as_ptr());
        write_field!(out, size, p2p_model_info, norm, c.norm.as_ptr());
        write_field!(out, size, p2p_model_info, source, c.source.as_ptr());
        write_field!(out, size, p2p_model_info, ngf, i.ngf as u32);
        write_field!(out, size, p2p_model_info, in_channels, i.in_channels as u32);
        write_field!(out, size, p2p_model_info, out_channels, i.out_channels as u32);
        write_field!(out, size, p2p_model_info, stride, i.stride as u32);
        write_field!(out, size, p2p_model_info, native_size, i.native_size as u32);
        write_field!(out, size, p2p_model_info, size_policy, i.size_policy.code());
        write_field!(out, size, p2p_model_info, norm_stats, i.norm_stats.code());
        write_field!(out, size, p2p_model_info, parameters, i.parameters);
        write_field!(out, size, p2p_model_info, precision, i.precision.code());
        Ok(())
    })
}

/// An image as either C struct describes it (`p2p_image`: 8-bit, `p2p_image_ex`: any format).
#[derive(Clone, Copy)]
struct ImageDesc {
    width: usize,
    height: usize,
    stride: usize,
    channels: usize,
    format: SampleFormat,
    data: *mut u8,
}

/// A checked input: its byte extent in `data`.
fn input_extent(src: &ImageDesc) -> ApiResult<usize> {
    if src.data.is_null() {
        return Err(null("in->data"));
    }
    buffers::image_extent(src.width, src.height, src.stride, src.channels, src.format.bytes())
}

/// A checked output for the translation of `src`: the bytes the library will write into the
/// caller's buffer, or `None` when it allocates (`dst.data` NULL).
fn output_len(c: &CModel, src: &ImageDesc, dst: &ImageDesc) -> ApiResult<Option<usize>> {
    if dst.data.is_null() {
        return Ok(None);
    }
    let out_ch = buffers::output_channels(src.channels, c.model.info().out_channels);
    let (w, h) = (src.width, src.height);
    buffers::output_extent(w, h, out_ch, dst.format.bytes(), dst.stride, dst.height).map(Some)
}

/// A view of a checked input.
///
/// # Safety
/// `src.data` holds `len` readable bytes for as long as the view is used.
unsafe fn input_view<'a>(src: &ImageDesc, len: usize) -> ApiResult<ImageView<'a>> {
    // SAFETY: the caller's guarantee; `len` is at most `MAX_EXTENT`, so it fits in `isize`.
    let data = unsafe { std::slice::from_raw_parts(src.data, len) };
    Ok(ImageView::with_format(src.width, src.height, src.stride, src.channels, src.format, data)?)
}

/// Where a translated image goes: the caller's checked buffer, or a fresh `malloc`ed one.
enum Destination {
    Caller { data: *mut u8, stride: usize, len: usize },
    Allocated(*mut u8),
}

/// Allocates what `image` needs when `out_len` is `None`.
fn destination(image: &Image, dst: &ImageDesc, out_len: Option<usize>) -> ApiResult<Destination> {
    if let Some(len) = out_len {
        return Ok(Destination::Caller { data: dst.data, stride: dst.stride, len });
    }
    let n = image.data.len();
    // SAFETY: `malloc` of a positive size; NULL is handled below.
    let p = unsafe { malloc(n) }.cast::<u8>();
    if p.is_null() {
        return Err(ApiError::new(
            ErrorKind::OutOfMemory,
            format!("cannot allocate {n} bytes for the output image"),
        ));
    }
    Ok(Destination::Allocated(p))
}

/// Writes `image` to its destination and returns the output's description (stride: the
/// caller's for its buffer, packed for a fresh one).
///
/// # Safety
/// A caller destination is writable for `len` bytes (checked by `output_extent`) and no other
/// reference to it is alive; an allocated one holds `image.data.len()` bytes.
unsafe fn deliver(image: &Image, to: Destination) -> ApiResult<ImageDesc> {
    let desc = |stride, data| ImageDesc {
        width: image.width,
        height: image.height,
        stride,
        channels: image.channels,
        format: image.format,
        data,
    };
    match to {
        Destination::Caller { data, stride, len } => {
            // SAFETY: the function's contract.
            let buf = unsafe { std::slice::from_raw_parts_mut(data, len) };
            buffers::copy_to_strided(image, buf, stride)?;
            Ok(desc(stride, data))
        }
        Destination::Allocated(p) => {
            // SAFETY: `p` is a fresh allocation of `image.data.len()` bytes, disjoint from it.
            unsafe { std::ptr::copy_nonoverlapping(image.data.as_ptr(), p, image.data.len()) };
            Ok(desc(image.width * image.channels * image.format.bytes(), p))
        }
    }
}

/// The one translation path of both C functions: translates `src` into `dst`'s buffer, or into
/// a fresh `malloc`ed one when `dst.data` is NULL, and returns the output's description (stride:
/// `dst.stride` for the caller's buffer, packed for a fresh one). `dst.width` and `dst.channels`
/// are ignored; `dst.format` is the output format.
///
/// # Safety
/// `src.data` holds the bytes its description needs (the documented contract, checked against
/// sizes here before it is read), and a non-NULL `dst.data` is writable for `dst.height` rows
/// `dst.stride` bytes apart.
unsafe fn translate_into(c: &CModel, src: ImageDesc, dst: ImageDesc) -> ApiResult<ImageDesc> {
    let len = input_extent(&src)?;
    let out_len = output_len(c, &src, &dst)?;
    let image = {
        // SAFETY: `in->data` holds `len` readable bytes (the documented contract, `len` by its
        // rule). The view ends with this block, before the output (which may alias it) is
        // written.
        let view = unsafe { input_view(&src, len) }?;
        c.model.translate_as(&view, dst.format)?
    };
    let to = destination(&image, &dst, out_len)?;
    // SAFETY: the destination was checked (or allocated) for this image; the input is no
    // longer borrowed.
    unsafe { deliver(&image, to) }
}

/// `p2p_translate` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_translate(
    m: *const p2p_model,
    r#in: *const p2p_image,
    out: *mut p2p_image,
) -> p2p_status {
    run(|| {
        // SAFETY: caller contract on `m`.
        let c = unsafe { model_ref(m) }?;
        if r#in.is_null() {
            return Err(null("in"));
        }
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: both non-NULL and pointing to `p2p_image`s (caller contract); copied out so
        // that `in == out` is harmless.
        let (src, dst) = unsafe { (r#in.read(), out.read()) };
        let u8_desc = |i: &p2p_image| ImageDesc {
            width: i.width as usize,
            height: i.height as usize,
            stride: i.stride as usize,
            channels: i.channels as usize,
            format: SampleFormat::U8,
            data: i.data,
        };
        // SAFETY: the caller's contract on the buffers is the one `translate_into` needs.
        let o = unsafe { translate_into(c, u8_desc(&src), u8_desc(&dst)) }?;
        let desc = p2p_image {
            width: o.width as u32,
            height: o.height as u32,
            // The caller's own stride, or a packed row of at most 4 · 2^28 bytes.
            stride: u32::try_from(o.stride).unwrap_or(dst.stride),
            channels: o.channels as u32,
            data: o.data,
        };
        // SAFETY: `out` is non-NULL and writable (caller contract).
        unsafe { out.write(desc) };
        Ok(())
    })
}

/// The size of a `p2p_image_ex` a caller's `struct_size` must cover (up to `data`).
const IMAGE_EX_SIZE: usize = size_of::<p2p_image_ex>();

/// Reads a caller's `p2p_image_ex`, checking its `struct_size`.
///
/// # Safety
/// `p` is non-NULL and points to a `p2p_image_ex` of at least `p->struct_size` readable bytes.
unsafe fn read_image_ex(p: *const p2p_image_ex, what: &str) -> ApiResult<p2p_image_ex> {
    // SAFETY: non-NULL; the struct starts with `struct_size`, which every caller must set.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    if size < IMAGE_EX_SIZE {
        return Err(ApiError::invalid(format!(
            "invalid {what}: struct_size {size} (set it to sizeof(p2p_image_ex), at least {IMAGE_EX_SIZE})"
        )));
    }
    // SAFETY: the caller's struct is `size` ≥ `size_of::<p2p_image_ex>()` readable bytes.
    Ok(unsafe { p.read_unaligned() })
}

/// `p2p_translate_ex` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_translate_ex(
    m: *const p2p_model,
    r#in: *const p2p_image_ex,
    out: *mut p2p_image_ex,
) -> p2p_status {
    run(|| {
        // SAFETY: caller contract on `m`.
        let c = unsafe { model_ref(m) }?;
        if r#in.is_null() {
            return Err(null("in"));
        }
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: both non-NULL, valid for their `struct_size` (caller contract); copied out so
        // that `in == out` is harmless.
        let (src, dst) = unsafe { (read_image_ex(r#in, "in")?, read_image_ex(out, "out")?) };
        let (src_desc, dst_desc) = ex_descs(&src, &dst, "")?;
        // SAFETY: the caller's contract on the buffers is the one `translate_into` needs.
        let o = unsafe { translate_into(c, src_desc, dst_desc) }?;
        // SAFETY: `out` is non-NULL and writable for its `struct_size` ≥ `size_of` bytes.
        unsafe { out.write_unaligned(written_ex(&dst, &o)) };
        Ok(())
    })
}

/// The descriptions of a `p2p_image_ex` input and output (`P2P_FORMAT_SAME` resolved);
/// `at` names the array element in messages (`"[2]"`), or is empty.
fn ex_descs(src: &p2p_image_ex, dst: &p2p_image_ex, at: &str) -> ApiResult<(ImageDesc, ImageDesc)> {
    let in_format = SampleFormat::from_code(src.format).ok_or_else(|| {
        ApiError::invalid(format!(
            "invalid in{at}->format: {} (P2P_FORMAT_U8, _U16 or _F32)",
            src.format
        ))
    })?;
    let out_format = match dst.format {
        P2P_FORMAT_SAME => in_format,
        f => SampleFormat::from_code(f).ok_or_else(|| {
            ApiError::invalid(format!(
                "invalid out{at}->format: {f} (P2P_FORMAT_SAME, _U8, _U16 or _F32)"
            ))
        })?,
    };
    let desc = |i: &p2p_image_ex, format| ImageDesc {
        width: i.width as usize,
        height: i.height as usize,
        stride: i.stride,
        channels: i.channels as usize,
        format,
        data: i.data.cast(),
    };
    Ok((desc(src, in_format), desc(dst, out_format)))
}

/// The `p2p_image_ex` a caller's `dst` becomes once `o` is written.
fn written_ex(dst: &p2p_image_ex, o: &ImageDesc) -> p2p_image_ex {
    p2p_image_ex {
        struct_size: dst.struct_size,
        format: o.format.code(),
        width: o.width as u32,
        height: o.height as u32,
        channels: o.channels as u32,
        stride: o.stride,
        data: o.data.cast(),
    }
}

/// Images one `p2p_translate_batch` call takes at most.
const MAX_BATCH: usize = 1024;

/// Reads element `i` of a caller's array of `p2p_image_ex` whose elements are `size` bytes
/// apart (the `struct_size` of its first element), checking the element's own `struct_size`.
///
/// # Safety
/// `p` points to at least `i + 1` elements of `size` readable bytes each.
unsafe fn read_image_ex_at(
    p: *const p2p_image_ex,
    i: usize,
    size: usize,
    what: &str,
) -> ApiResult<p2p_image_ex> {
    let at = p.cast::<u8>().wrapping_add(i * size).cast::<p2p_image_ex>();
    // SAFETY: element `i` lies within the caller's array (the function's contract).
    let img = unsafe { read_image_ex(at, &format!("{what}[{i}]")) }?;
    if img.struct_size != size {
        return Err(ApiError::invalid(format!(
            "invalid {what}[{i}]: struct_size {} differs from {what}[0]'s {size}",
            img.struct_size
        )));
    }
    Ok(img)
}

/// `p2p_translate_batch` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_translate_batch(
    m: *const p2p_model,
    n: usize,
    r#in: *const p2p_image_ex,
    out: *mut p2p_image_ex,
) -> p2p_status {
    run(|| {
        // SAFETY: caller contract on `m`.
        let c = unsafe { model_ref(m) }?;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_BATCH {
            return Err(ApiError::invalid(format!("invalid n: {n} (1 to {MAX_BATCH} images)")));
        }
        if r#in.is_null() {
            return Err(null("in"));
        }
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: both arrays start with a `p2p_image_ex` (caller contract), which starts with
        // `struct_size`; their elements are that many bytes apart.
        let (in_size, out_size) = unsafe {
            (r#in.cast::<usize>().read_unaligned(), out.cast::<usize>().read_unaligned())
        };
        let mut pairs = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: `n` elements each (caller contract); copied out, so `in == out` is
            // harmless.
            let (src, dst) = unsafe {
                (
                    read_image_ex_at(r#in, i, in_size, "in")?,
                    read_image_ex_at(out, i, out_size, "out")?,
                )
            };
            let (sd, dd) = ex_descs(&src, &dst, &format!("[{i}]"))?;
            let len = input_extent(&sd).map_err(|e| at_index(e, "in", i))?;
            let out_len = output_len(c, &sd, &dd).map_err(|e| at_index(e, "out", i))?;
            if let Some(first) = pairs.first() {
                let first: &BatchItem = first;
                if (sd.width, sd.height) != (first.src.width, first.src.height) {
                    return Err(ApiError::invalid(format!(
                        "invalid in[{i}]: {}x{} differs from in[0]'s {}x{} (a batch holds images of one size)",
                        sd.width, sd.height, first.src.width, first.src.height
                    )));
                }
            }
            pairs.push(BatchItem { src: sd, dst: dd, out: dst, len, out_len });
        }
        let images = {
            // SAFETY: each `in[i].data` holds its `len` readable bytes (the documented
            // contract); the views end with this block, before any output is written.
            let views = pairs
                .iter()
                .map(|p| unsafe { input_view(&p.src, p.len) })
                .collect::<ApiResult<Vec<_>>>()?;
            let format = pairs[0].dst.format;
            if let Some(i) = pairs.iter().position(|p| p.dst.format != format) {
                return Err(ApiError::invalid(format!(
                    "invalid out[{i}]->format: {} differs from out[0]'s {format} (one output format per batch)",
                    pairs[i].dst.format
                )));
            }
            c.model.translate_batch(&views, format, c.model.model().options().shared_batch_stats)?
        };
        // Every allocation before any write: a failure leaves the caller's memory untouched.
        let mut dests = Vec::with_capacity(n);
        for (image, p) in images.iter().zip(&pairs) {
            match destination(image, &p.dst, p.out_len) {
                Ok(d) => dests.push(d),
                Err(e) => {
                    for d in dests {
                        if let Destination::Allocated(p) = d {
                            // SAFETY: allocated by `destination` above, not handed out.
                            unsafe { free(p.cast()) };
                        }
                    }
                    return Err(e);
                }
            }
        }
        for (i, ((image, to), p)) in images.iter().zip(dests).zip(&pairs).enumerate() {
            // SAFETY: each destination was checked or allocated for its image; no input is
            // borrowed any more.
            let o = unsafe { deliver(image, to) }?;
            let at = out.cast::<u8>().wrapping_add(i * out_size).cast::<p2p_image_ex>();
            // SAFETY: element `i` of the caller's array, writable for its `struct_size` ≥
            // `size_of` bytes.
            unsafe { at.write_unaligned(written_ex(&p.out, &o)) };
        }
        Ok(())
    })
}

/// One image of a batch: its input and output descriptions, the caller's output struct, the
/// input's byte extent and the output's (`None`: the library allocates).
struct BatchItem {
    src: ImageDesc,
    dst: ImageDesc,
    out: p2p_image_ex,
    len: usize,
    out_len: Option<usize>,
}

/// An error about element `i` of the array `what`, said so.
fn at_index(e: ApiError, what: &str, i: usize) -> ApiError {
    ApiError::new(e.kind, format!("{what}[{i}]: {}", e.message))
}

/// `p2p_image_ex_free` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_image_ex_free(img: *mut p2p_image_ex) {
    if img.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `img` is non-NULL and points to a `p2p_image_ex` of `struct_size` bytes
        // (caller contract), which starts with that field.
        let size = unsafe { img.cast::<usize>().read_unaligned() };
        if size < IMAGE_EX_SIZE {
            return;
        }
        // SAFETY: as above; the struct covers all of `p2p_image_ex`.
        let mut i = unsafe { img.read_unaligned() };
        if !i.data.is_null() {
            // SAFETY: a non-NULL `data` here came from `malloc` in `p2p_translate_ex` (caller
            // contract) and is freed once, since it is set to NULL right after.
            unsafe { free(i.data) };
        }
        (i.data, i.width, i.height, i.channels, i.stride) = (std::ptr::null_mut(), 0, 0, 0, 0);
        // SAFETY: as above.
        unsafe { img.write_unaligned(i) };
    });
}

/// `p2p_image_free` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_image_free(img: *mut p2p_image) {
    if img.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `img` is non-NULL and points to a `p2p_image` (caller contract).
        let data = unsafe { (*img).data };
        if !data.is_null() {
            // SAFETY: a non-NULL `data` here came from `malloc` in `p2p_translate` (caller
            // contract) and is freed once, since `*img` is zeroed right after.
            unsafe { free(data.cast()) };
        }
        // SAFETY: as above.
        unsafe { img.write(p2p_image::default()) };
    });
}

/// `p2p_train` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_train(
    config_toml: *const c_char,
    cb: p2p_progress_fn,
    user: *mut c_void,
) -> p2p_status {
    // SAFETY: same contract.
    unsafe { p2p_train_ex(config_toml, 0, cb, user) }
}

/// `p2p_train_ex` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_train_ex(
    config_toml: *const c_char,
    flags: u32,
    cb: p2p_progress_fn,
    user: *mut c_void,
) -> p2p_status {
    // SAFETY: same contract.
    unsafe { p2p_train_with_messages(config_toml, flags, cb, None, user) }
}

/// `p2p_train_with_messages` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_train_with_messages(
    config_toml: *const c_char,
    flags: u32,
    cb: p2p_progress_fn,
    on_message: p2p_message_fn,
    user: *mut c_void,
) -> p2p_status {
    run(|| {
        // SAFETY: caller contract on `config_toml`.
        let text = utf8(unsafe { c_str(config_toml, "config_toml") }?, "config_toml")?;
        if flags & !P2P_TRAIN_RESUME != 0 {
            return Err(ApiError::invalid(format!("invalid flags: {flags:#x} (unknown bits)")));
        }
        let mut report = CallbackReporter { progress: cb, message: on_message, user };
        let s = api::train(text, flags & P2P_TRAIN_RESUME != 0, &mut report)?;
        if s.cancelled {
            return Err(ApiError::new(
                ErrorKind::Cancelled,
                format!(
                    "training cancelled after step {}; checkpoint saved in {}",
                    s.steps,
                    s.checkpoint_dir.display()
                ),
            ));
        }
        Ok(())
    })
}

/// The caller's callbacks as the trainer's reporter.
struct CallbackReporter {
    progress: p2p_progress_fn,
    message: p2p_message_fn,
    user: *mut c_void,
}

impl train::Reporter for CallbackReporter {
    fn progress(&mut self, p: &train::Progress) -> bool {
        let Some(cb) = self.progress else { return true };
        // SAFETY: the caller's callback with its own `user`; `p` lives for the call.
        let stop: c_int = unsafe { cb(p, self.user) };
        stop == 0
    }
    fn message(&mut self, text: &str) {
        let Some(cb) = self.message else { return };
        let text = c_string(text);
        // SAFETY: the caller's callback with its own `user`; `text` lives for the call.
        unsafe { cb(text.as_ptr(), self.user) };
    }
}

/// `p2p_evaluate` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_evaluate(
    m: *const p2p_model,
    data_dir: *const c_char,
    direction: u32,
    size: u32,
    html_dir: *const c_char,
    out: *mut p2p_metrics,
) -> p2p_status {
    run(|| {
        // SAFETY: caller contract on `m`.
        let c = unsafe { model_ref(m) }?;
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: caller contract on the strings.
        let data = path_of(unsafe { c_str(data_dir, "data_dir") }?)?;
        let html = match html_dir.is_null() {
            true => None,
            // SAFETY: non-NULL and NUL-terminated (caller contract).
            false => Some(path_of(unsafe { c_str(html_dir, "html_dir") }?)?),
        };
        let direction = Direction::from_code(direction).ok_or_else(|| {
            ApiError::invalid(format!("invalid direction: {direction} (P2P_DIRECTION_*)"))
        })?;
        let m = api::evaluate(&c.model, &data, direction, size as usize, html.as_deref())?;
        let metrics = p2p_metrics { mae: m.mae, psnr: m.psnr, ssim: m.ssim, count: m.count as u64 };
        // SAFETY: non-NULL and writable (caller contract).
        unsafe { out.write(metrics) };
        Ok(())
    })
}

/// `p2p_export_onnx` of the contract (`pix2pix_ffi::c::functions`, documented there and in the header).
///
/// # Safety
/// As the contract documents.
#[no_mangle]
pub unsafe extern "C" fn p2p_export_onnx(
    model_path: *const c_char,
    out_path: *const c_char,
    norm_stats: u32,
    flags: u32,
) -> p2p_status {
    run(|| {
        let model = match model_path.is_null() {
            true => None,
            // SAFETY: non-NULL and NUL-terminated (caller contract).
            false => Some(path_of(unsafe { c_str(model_path, "model_path") }?)?),
        };
        // SAFETY: NULL is checked by `c_str`; otherwise NUL-terminated (caller contract).
        let out = path_of(unsafe { c_str(out_path, "out_path") }?)?;
        let stats = NormStats::from_code(norm_stats).ok_or_else(|| {
            ApiError::invalid(format!("invalid norm_stats: {norm_stats} (P2P_NORM_STATS_*)"))
        })?;
        if flags & !P2P_EXPORT_OVERWRITE != 0 {
            return Err(ApiError::invalid(format!("invalid flags: {flags:#x} (unknown bits)")));
        }
        let overwrite = flags & P2P_EXPORT_OVERWRITE != 0;
        api::export_onnx(model.as_deref(), &out, stats, overwrite)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: never NULL, NUL-terminated.
        unsafe { CStr::from_ptr(p2p_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_is_an_internal_error_with_a_message() {
        assert_eq!(run(|| panic!("kaboom")), P2P_ERR_INTERNAL);
        assert!(last_error().contains("kaboom"), "{}", last_error());
        assert_eq!(run(|| Ok(())), P2P_OK);
    }

    #[test]
    fn last_error_is_per_thread() {
        assert_eq!(run(|| Err(ApiError::invalid("main thread"))), P2P_ERR_INVALID_ARGUMENT);
        std::thread::spawn(|| {
            assert_eq!(last_error(), "");
            assert_eq!(run(|| Err(ApiError::new(ErrorKind::Io, "worker"))), P2P_ERR_IO);
            assert_eq!(last_error(), "worker");
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), "main thread");
    }

    #[test]
    fn options_read_only_what_struct_size_covers() {
        let full = p2p_options {
            struct_size: size_of::<p2p_options>(),
            norm_stats: P2P_NORM_STATS_RUNNING,
            size_policy: P2P_SIZE_POLICY_RESIZE,
            tile_overlap: 8,
            threads: 2,
            flags: P2P_OPT_DROPOUT,
            dropout_seed: 5,
            memory_budget_mb: 300,
            precision: P2P_PRECISION_BF16,
        };
        // SAFETY: pointers to live `p2p_options`.
        let o = unsafe { read_options(&full) }.unwrap();
        assert_eq!(o.precision, Precision::Bf16);
        // A caller compiled before `precision` gets f32.
        let before = p2p_options { struct_size: offset_of!(p2p_options, precision), ..full };
        // SAFETY: as above (a shorter struct_size reads less).
        assert_eq!(unsafe { read_options(&before) }.unwrap().precision, Precision::F32);
        let bad = p2p_options { precision: 7, ..full };
        // SAFETY: as above.
        let e = unsafe { read_options(&bad) }.unwrap_err();
        assert!(e.message.contains("options.precision: 7"), "{}", e.message);
        assert_eq!(
            (o.norm_stats, o.size_policy, o.tile_overlap, o.threads, o.dropout_seed),
            (NormStats::Running, SizePolicy::Resize, 8, 2, Some(5))
        );
        assert_eq!(o.memory_budget_mb, 300);
        // A caller compiled before `memory_budget_mb` gets the default budget.
        let before = p2p_options { struct_size: offset_of!(p2p_options, memory_budget_mb), ..full };
        // SAFETY: as above (a shorter struct_size reads less).
        assert_eq!(unsafe { read_options(&before) }.unwrap().memory_budget_mb, 0);
        let old = p2p_options {
            struct_size: offset_of!(p2p_options, tile_overlap),
            flags: 0xFFFF,
            ..full
        };
        // SAFETY: as above.
        let o = unsafe { read_options(&old) }.unwrap();
        let d = Options::default();
        assert_eq!(
            (o.norm_stats, o.size_policy, o.tile_overlap, o.threads, o.dropout_seed),
            (NormStats::Running, SizePolicy::Resize, d.tile_overlap, d.threads, None)
        );
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { read_options(std::ptr::null()) }.unwrap(), d);
        let zero = p2p_options::default();
        // SAFETY: as above.
        assert_eq!(unsafe { read_options(&zero) }.unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn status_names_cover_every_kind() {
        use ErrorKind::*;
        for kind in [
            Null,
            InvalidArgument,
            Io,
            Checkpoint,
            BufferTooSmall,
            Cancelled,
            Config,
            Image,
            Compute,
            Unsupported,
            OutOfMemory,
            Internal,
        ] {
            let status = status_of(kind);
            assert_ne!(status, P2P_OK);
            // SAFETY: a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(p2p_status_name(status)) };
            assert!(
                name.to_str().unwrap().starts_with("P2P_ERR_"),
                "{kind:?} → {status} → {name:?}"
            );
        }
    }
}
