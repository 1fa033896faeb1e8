//! `p2p_translate_ex` and `p2p_translate` with the image, stride, channel and sample-format
//! arguments a C caller could pass, garbage included, but always within the C contract: every
//! buffer is as large as its stride and height say. Any status is fine; a panic, abort, read or
//! write outside a buffer (ASan) is a finding.
#![no_main]

use std::ffi::c_void;
use std::sync::OnceLock;

use pix2pix::faces::capi::{
    p2p_image_ex_free, p2p_image_free, p2p_model_open, p2p_translate, p2p_translate_ex,
};
use pix2pix_ffi::c::{p2p_image, p2p_image_ex, p2p_model, p2p_options, P2P_OK};

/// One model per size policy (resize, pad, tile), opened once: the fuzzed part is the image.
struct Models([*mut p2p_model; 3]);
// SAFETY: a `p2p_model` may be used from several threads at once (the C contract), and these
// are never freed.
unsafe impl Send for Models {}
unsafe impl Sync for Models {}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/unet128_ngf8_instance_lsgan/generator.safetensors\0"
        );
        Models([1u32, 2, 3].map(|policy| {
            // SAFETY: `p2p_options` is plain integers, for which all-zero means "default".
            let mut opts: p2p_options = unsafe { std::mem::zeroed() };
            opts.struct_size = size_of::<p2p_options>();
            opts.size_policy = policy;
            opts.tile_overlap = 8;
            opts.threads = 1;
            let mut m = std::ptr::null_mut();
            // SAFETY: a NUL-terminated path, a full `p2p_options`, a writable out pointer.
            let s = unsafe { p2p_model_open(path.as_ptr().cast(), &opts, &mut m) };
            assert_eq!(s, P2P_OK, "the fixture model opens");
            m
        }))
    })
}

/// Fuzz bytes read front to back; zeros once they run out.
struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

/// A caller's buffer for `height` rows `stride` bytes apart (and at least one full row), filled
/// from the fuzz bytes: f32 samples may be NaN or infinite.
fn buffer(stride: usize, row: usize, height: usize, fill: &[u8]) -> Vec<u8> {
    let n = stride.max(row) * height.max(1);
    let mut v = vec![0u8; n];
    if !fill.is_empty() {
        for (i, b) in v.iter_mut().enumerate() {
            *b = fill[i % fill.len()];
        }
    }
    v
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let model = models().0[b.u8() as usize % 3];
    // Up to 300 pixels a side keeps one run fast; 0 and odd sizes stay reachable.
    let (w, h) = (b.u16() as usize % 301, b.u16() as usize % 301);
    let channels = b.u8() as usize % 6; // 0 and 5 are invalid
    let (in_format, out_format) = (b.u8() as u32 % 5, b.u8() as u32 % 5); // 4 is invalid
    let bytes = |f: u32| match f {
        2 => 2,
        3 => 4,
        _ => 1,
    };
    let in_row = w * channels * bytes(in_format);
    // Strides from too short (the library must refuse) to padded.
    let in_stride = (in_row + b.u8() as usize % 16).saturating_sub(b.u8() as usize % 4);
    let out_mode = b.u8();
    let out_channels = b.u8() as usize % 6;
    let out_pad = b.u8() as usize % 16;
    let fill = b.0;
    let mut input = buffer(in_stride, in_row, h, fill);

    if out_mode & 1 == 0 {
        // The 8-bit entry point (formats ignored).
        let src = p2p_image {
            width: w as u32,
            height: h as u32,
            stride: in_stride as u32,
            channels: channels as u32,
            data: input.as_mut_ptr(),
        };
        let out_row = w * out_channels;
        let mut out_buf = buffer(out_row + out_pad, out_row, h, &[]);
        let mut dst = p2p_image {
            width: w as u32,
            height: h as u32,
            stride: (out_row + out_pad) as u32,
            channels: out_channels as u32,
            data: if out_mode & 2 == 0 { std::ptr::null_mut() } else { out_buf.as_mut_ptr() },
        };
        let caller_owned = !dst.data.is_null();
        // SAFETY: a live model; both images describe buffers of stride × height bytes.
        let s = unsafe { p2p_translate(model, &src, &mut dst) };
        if s == P2P_OK && !caller_owned {
            // SAFETY: the library allocated `dst.data`.
            unsafe { p2p_image_free(&mut dst) };
        }
        return;
    }
    let src = p2p_image_ex {
        struct_size: size_of::<p2p_image_ex>(),
        format: in_format,
        width: w as u32,
        height: h as u32,
        channels: channels as u32,
        stride: in_stride,
        data: input.as_mut_ptr().cast::<c_void>(),
    };
    let out_row = w * out_channels * bytes(if out_format == 0 { in_format } else { out_format });
    let mut out_buf = buffer(out_row + out_pad, out_row, h, &[]);
    let mut dst = p2p_image_ex {
        struct_size: size_of::<p2p_image_ex>(),
        format: out_format,
        width: w as u32,
        height: h as u32,
        channels: out_channels as u32,
        stride: out_row + out_pad,
        data: if out_mode & 2 == 0 {
            std::ptr::null_mut()
        } else {
            out_buf.as_mut_ptr().cast::<c_void>()
        },
    };
    let caller_owned = !dst.data.is_null();
    // SAFETY: a live model; both images describe buffers of stride × height bytes.
    let s = unsafe { p2p_translate_ex(model, &src, &mut dst) };
    if s == P2P_OK && !caller_owned {
        // SAFETY: the library allocated `dst.data`.
        unsafe { p2p_image_ex_free(&mut dst) };
    }
});
