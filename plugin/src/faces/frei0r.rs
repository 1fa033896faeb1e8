//! The frei0r 1.2 filter interface, so ffmpeg (`-vf frei0r=pix2pix:…`), MLT (Kdenlive,
//! Shotcut) and other frei0r hosts run the generator with no code of their own.
//!
//! Opens and translates through the same [`crate::faces::api`] as the C and abi_stable faces. A frei0r host has no error channel, so a model
//! that fails to load passes frames through unchanged and is reported once on stderr. Frames are
//! RGBA8888; the model sees them as its input channels (RGB, or luma for a 1-channel model), a
//! 1-channel output is replicated to RGB, and alpha passes through. Inference uses batch statistics over the frame and no
//! dropout, so the same frame always gives the same output.
//!
//! Parameters: 0 `model` (string, a checkpoint path; empty = the shipped default model),
//! 1 `size_policy` (string: pad | resize | tile), 2 `norm_stats` (string: batch | running).

use std::ffi::{c_char, c_double, c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pix2pix_ffi::{NormStats, SizePolicy};

use crate::faces::api::{self, LoadedModel};
use crate::filter::image_tensor::{ImageU8, ImageView};
use crate::filter::model::Options;

const F0R_PLUGIN_TYPE_FILTER: c_int = 0;
const F0R_COLOR_MODEL_RGBA8888: c_int = 1;
const F0R_PARAM_STRING: c_int = 4;

/// `f0r_plugin_info_t` of frei0r.h.
#[repr(C)]
pub struct F0rPluginInfo {
    name: *const c_char,
    author: *const c_char,
    plugin_type: c_int,
    color_model: c_int,
    frei0r_version: c_int,
    major_version: c_int,
    minor_version: c_int,
    num_params: c_int,
    explanation: *const c_char,
}

/// `f0r_param_info_t` of frei0r.h.
#[repr(C)]
pub struct F0rParamInfo {
    name: *const c_char,
    param_type: c_int,
    explanation: *const c_char,
}

const PARAMS: [(&CStr, &CStr); 3] = [
    (c"model", c"Checkpoint path (.safetensors or .pth); empty = the shipped default model"),
    (c"size_policy", c"pad | resize | tile"),
    (c"norm_stats", c"batch | running"),
];

struct Instance {
    width: usize,
    height: usize,
    /// Current parameter strings, NUL-terminated so `f0r_get_param_value` can hand them out.
    params: [std::ffi::CString; 3],
    model: Option<LoadedModel>,
    /// Parameters changed since the model was (re)loaded.
    dirty: bool,
    /// A load failure is reported once per parameter change, not per frame.
    reported: bool,
}

impl Instance {
    fn param(&self, i: usize) -> &str {
        self.params[i].to_str().unwrap_or_default()
    }

    fn options(&self) -> Result<Options, String> {
        let size_policy = SizePolicy::parse(self.param(1)).ok_or_else(|| {
            format!("size_policy `{}`: expected {}", self.param(1), SizePolicy::NAMES.join(", "))
        })?;
        let norm_stats = NormStats::parse(self.param(2)).ok_or_else(|| {
            format!("norm_stats `{}`: expected {}", self.param(2), NormStats::NAMES.join(", "))
        })?;
        Ok(Options { size_policy, norm_stats, ..Options::default() })
    }

    /// (Re)loads the model when a parameter changed; never per frame.
    fn ensure_model(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.model = None;
        let path = self.param(0).to_string();
        let loaded = self.options().and_then(|opts| {
            let p = (!path.is_empty()).then(|| Path::new(&path));
            api::guard(|| api::open_model(p, opts)).map_err(|e| e.message)
        });
        match loaded {
            Ok(m) => self.model = Some(m),
            Err(e) if !self.reported => {
                self.reported = true;
                eprintln!("pix2pix frei0r: {e}; frames pass through unchanged");
            }
            Err(_) => {}
        }
    }

    fn update(&mut self, input: &[u8], output: &mut [u8]) {
        self.ensure_model();
        let translated = self.model.as_ref().map(|m| {
            api::guard(|| {
                let view = ImageView::new(self.width, self.height, self.width * 4, 4, input)?;
                m.translate(&view)
            })
        });
        match translated {
            Some(Ok(img)) if img.channels == 4 && img.data.len() == output.len() => {
                output.copy_from_slice(&img.data)
            }
            Some(Ok(img)) if img.channels == 2 && img.data.len() * 2 == output.len() => {
                gray_alpha_to_rgba(&img, output)
            }
            Some(Err(e)) if !self.reported => {
                self.reported = true;
                eprintln!("pix2pix frei0r: {e}; frames pass through unchanged");
                output.copy_from_slice(input);
            }
            _ => output.copy_from_slice(input),
        }
    }
}

/// A 1-channel model's gray + alpha output as the RGBA frame frei0r hosts expect.
fn gray_alpha_to_rgba(img: &ImageU8, output: &mut [u8]) {
    for (px, ga) in output.chunks_exact_mut(4).zip(img.data.chunks_exact(2)) {
        px.copy_from_slice(&[ga[0], ga[0], ga[0], ga[1]]);
    }
}

#[no_mangle]
pub extern "C" fn f0r_init() -> c_int {
    1
}

#[no_mangle]
pub extern "C" fn f0r_deinit() {}

/// # Safety
/// `info` must be NULL or point to a writable `f0r_plugin_info_t`, as frei0r hosts pass.
#[no_mangle]
pub unsafe extern "C" fn f0r_get_plugin_info(info: *mut F0rPluginInfo) {
    if info.is_null() {
        return;
    }
    // SAFETY: non-NULL and, by the frei0r contract, valid for writes; the strings are 'static.
    unsafe {
        *info = F0rPluginInfo {
            name: c"pix2pix".as_ptr(),
            author: c"pix2pix-rs".as_ptr(),
            plugin_type: F0R_PLUGIN_TYPE_FILTER,
            color_model: F0R_COLOR_MODEL_RGBA8888,
            frei0r_version: 1,
            major_version: 0,
            minor_version: 1,
            num_params: PARAMS.len() as c_int,
            explanation: c"pix2pix image-to-image translation (U-Net generator)".as_ptr(),
        };
    }
}

/// # Safety
/// `info` must be NULL or point to a writable `f0r_param_info_t`.
#[no_mangle]
pub unsafe extern "C" fn f0r_get_param_info(info: *mut F0rParamInfo, index: c_int) {
    let Some((name, explanation)) = usize::try_from(index).ok().and_then(|i| PARAMS.get(i)) else {
        return;
    };
    if info.is_null() {
        return;
    }
    // SAFETY: non-NULL and valid for writes by the frei0r contract; the strings are 'static.
    unsafe {
        *info = F0rParamInfo {
            name: name.as_ptr(),
            param_type: F0R_PARAM_STRING,
            explanation: explanation.as_ptr(),
        }
    };
}

#[no_mangle]
pub extern "C" fn f0r_construct(width: c_uint, height: c_uint) -> *mut c_void {
    catch_unwind(|| {
        if width == 0 || height == 0 {
            return std::ptr::null_mut();
        }
        let params = [c"", c"pad", c"batch"].map(|s| s.to_owned());
        let inst = Instance {
            width: width as usize,
            height: height as usize,
            params,
            model: None,
            dirty: true,
            reported: false,
        };
        Box::into_raw(Box::new(inst)).cast()
    })
    .unwrap_or(std::ptr::null_mut())
}

/// # Safety
/// `instance` must be NULL or a pointer returned by `f0r_construct`, not yet destructed.
#[no_mangle]
pub unsafe extern "C" fn f0r_destruct(instance: *mut c_void) {
    if !instance.is_null() {
        // SAFETY: created by Box::into_raw in f0r_construct and destructed once (frei0r contract).
        drop(unsafe { Box::from_raw(instance.cast::<Instance>()) });
    }
}

/// # Safety
/// `instance` from `f0r_construct`; `param` points to a `f0r_param_string` (a `char *`).
#[no_mangle]
pub unsafe extern "C" fn f0r_set_param_value(
    instance: *mut c_void,
    param: *mut c_void,
    index: c_int,
) {
    if instance.is_null() || param.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: frei0r passes string parameters as a pointer to a NUL-terminated `char *`.
        let value = unsafe {
            let s = *param.cast::<*const c_char>();
            if s.is_null() {
                return;
            }
            CStr::from_ptr(s).to_owned()
        };
        // SAFETY: a live instance from f0r_construct; frei0r calls one instance from one thread.
        let inst = unsafe { &mut *instance.cast::<Instance>() };
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| inst.params.get_mut(i)) {
            if *slot != value {
                *slot = value;
                inst.dirty = true;
                inst.reported = false;
            }
        }
    }));
}

/// # Safety
/// `instance` from `f0r_construct`; `param` points to a writable `f0r_param_string`.
#[no_mangle]
pub unsafe extern "C" fn f0r_get_param_value(
    instance: *mut c_void,
    param: *mut c_void,
    index: c_int,
) {
    if instance.is_null() || param.is_null() {
        return;
    }
    // SAFETY: a live instance; the string handed out lives until the parameter changes, as
    // frei0r hosts expect of string parameters.
    let inst = unsafe { &*instance.cast::<Instance>() };
    if let Some(value) = usize::try_from(index).ok().and_then(|i| inst.params.get(i)) {
        // SAFETY: `param` is valid for a `char *` write by the frei0r contract.
        unsafe { *param.cast::<*const c_char>() = value.as_ptr() };
    }
}

/// # Safety
/// `instance` from `f0r_construct`; `inframe` and `outframe` hold width·height RGBA pixels.
#[no_mangle]
pub unsafe extern "C" fn f0r_update(
    instance: *mut c_void,
    _time: c_double,
    inframe: *const u32,
    outframe: *mut u32,
) {
    if instance.is_null() || inframe.is_null() || outframe.is_null() {
        return;
    }
    // SAFETY: a live instance, used from one thread at a time (frei0r contract).
    let inst = unsafe { &mut *instance.cast::<Instance>() };
    let n = inst.width * inst.height * 4;
    // SAFETY: frames are width·height 32-bit pixels as constructed. The input is copied out
    // before the output slice exists, so hosts that pass the same buffer twice are fine too.
    let input = unsafe { std::slice::from_raw_parts(inframe.cast::<u8>(), n) }.to_vec();
    let output = unsafe { std::slice::from_raw_parts_mut(outframe.cast::<u8>(), n) };
    if catch_unwind(AssertUnwindSafe(|| inst.update(&input, output))).is_err() {
        output.copy_from_slice(&input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::image_tensor::ImageU8;

    /// A 3→1 model through the frei0r face: RGBA frames in, the gray output replicated to RGB
    /// and the frame's alpha kept, equal to the filter's own gray + alpha translation.
    #[test]
    fn a_gray_model_gives_gray_rgba_frames_with_alpha_kept() {
        let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/unet128_ngf8_3to1/generator.safetensors");
        let (w, h) = (64usize, 48usize);
        let frame: Vec<u8> = (0..w * h * 4).map(|i| (i * 29 % 256) as u8).collect();
        let inst = f0r_construct(w as c_uint, h as c_uint);
        assert!(!inst.is_null());
        let path = std::ffi::CString::new(model.to_str().unwrap()).unwrap();
        let mut p = path.as_ptr();
        let words = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let input = words(&frame);
        let mut output = vec![0u32; w * h];
        // SAFETY: a live instance; a pointer to a NUL-terminated string; frames of w·h pixels.
        unsafe {
            f0r_set_param_value(inst, (&mut p as *mut *const c_char).cast(), 0);
            f0r_update(inst, 0.0, input.as_ptr(), output.as_mut_ptr());
            f0r_destruct(inst);
        }
        let out: Vec<u8> = output.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let m = crate::Model::open(&model, Options::default()).unwrap();
        let want: ImageU8 = m.translate(&ImageView::new(w, h, w * 4, 4, &frame).unwrap()).unwrap();
        assert_eq!(want.channels, 2);
        for (px, ga) in out.chunks_exact(4).zip(want.data.chunks_exact(2)) {
            assert_eq!(px, [ga[0], ga[0], ga[0], ga[1]]);
        }
        assert!(out.chunks_exact(4).zip(frame.chunks_exact(4)).all(|(o, i)| o[3] == i[3]));
    }
}
