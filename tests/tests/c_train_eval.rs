//! Training and evaluation through the C API of the built .so (called from Rust through
//! libloading, with `extern "C"` callbacks as a C host would pass): progress reports, cancelling
//! from the callback (a checkpoint is saved and `P2P_ERR_CANCELLED` returned), the checkpoint
//! opening as a model, and evaluation over the pairs.

mod common;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use pix2pix_ffi::c::*;

use common::*;

struct Api {
    _lib: libloading::Library,
    train: unsafe extern "C" fn(*const c_char, p2p_progress_fn, *mut c_void) -> p2p_status,
    train_ex: unsafe extern "C" fn(*const c_char, u32, p2p_progress_fn, *mut c_void) -> p2p_status,
    train_with_messages: unsafe extern "C" fn(
        *const c_char,
        u32,
        p2p_progress_fn,
        p2p_message_fn,
        *mut c_void,
    ) -> p2p_status,
    last_error: unsafe extern "C" fn() -> *const c_char,
    open:
        unsafe extern "C" fn(*const c_char, *const p2p_options, *mut *mut p2p_model) -> p2p_status,
    free: unsafe extern "C" fn(*mut p2p_model),
    translate:
        unsafe extern "C" fn(*const p2p_model, *const p2p_image, *mut p2p_image) -> p2p_status,
    image_free: unsafe extern "C" fn(*mut p2p_image),
    evaluate: unsafe extern "C" fn(
        *const p2p_model,
        *const c_char,
        u32,
        u32,
        *const c_char,
        *mut p2p_metrics,
    ) -> p2p_status,
}

fn api() -> Api {
    let so = plugin_so();
    // SAFETY: our own plugin; the signatures below are those of ffi/include/pix2pix.h.
    unsafe {
        let lib = libloading::Library::new(&so).unwrap_or_else(|e| panic!("{}: {e}", so.display()));
        Api {
            train: *lib.get(b"p2p_train").unwrap(),
            train_ex: *lib.get(b"p2p_train_ex").unwrap(),
            train_with_messages: *lib.get(b"p2p_train_with_messages").unwrap(),
            last_error: *lib.get(b"p2p_last_error").unwrap(),
            open: *lib.get(b"p2p_model_open").unwrap(),
            free: *lib.get(b"p2p_model_free").unwrap(),
            translate: *lib.get(b"p2p_translate").unwrap(),
            image_free: *lib.get(b"p2p_image_free").unwrap(),
            evaluate: *lib.get(b"p2p_evaluate").unwrap(),
            _lib: lib,
        }
    }
}

impl Api {
    fn last_error(&self) -> String {
        // SAFETY: never NULL, NUL-terminated, valid until the next failing call on this thread.
        unsafe { CStr::from_ptr((self.last_error)()) }.to_string_lossy().into_owned()
    }
}

struct Seen {
    reports: Vec<p2p_progress>,
    stop_after: u64,
}

unsafe extern "C" fn on_progress(p: *const p2p_progress, user: *mut c_void) -> c_int {
    // SAFETY: `user` is the `Seen` passed to p2p_train, `p` valid for the call.
    let (seen, p) = unsafe { (&mut *user.cast::<Seen>(), *p) };
    seen.reports.push(p);
    (p.step >= seen.stop_after) as c_int
}

#[test]
fn train_cancel_resume_then_open_and_evaluate_the_checkpoint() {
    let api = api();
    let dir = scratch("c-train");
    // 3 pairs, one epoch: 3 steps.
    let (pairs, config) = tiny_training_run(&dir, 3, 100);
    // `[output]` is the config's last table.
    let config_overwrite = CString::new(format!("{config}overwrite = true\n")).unwrap();
    let config = CString::new(config).unwrap();

    // Cancel from the callback after step 2.
    let mut seen = Seen { reports: Vec::new(), stop_after: 2 };
    // SAFETY: valid config string; the callback and its `user` outlive the call.
    let status =
        unsafe { (api.train)(config.as_ptr(), Some(on_progress), ptr::from_mut(&mut seen).cast()) };
    let message = api.last_error();
    assert_eq!(status, P2P_ERR_CANCELLED, "p2p_train: {message}");
    assert!(message.contains("cancelled") && message.contains("latest"), "{message}");
    let steps: Vec<u64> = seen.reports.iter().map(|p| p.step).collect();
    assert_eq!(steps, [1, 2], "progress reports");
    for p in &seen.reports {
        assert!(p.epoch == 1 && p.total_steps == 3 && p.lr > 0.0, "{p:?}");
        assert!(
            [p.g_gan, p.g_l1, p.d_real, p.d_fake].iter().all(|l| l.is_finite() && *l >= 0.0),
            "{p:?}"
        );
    }
    let generator = dir.join("out/latest/generator.safetensors");
    assert!(generator.exists(), "no checkpoint at {} after cancelling", generator.display());

    // Resume: the remaining step.
    let mut rest = Seen { reports: Vec::new(), stop_after: u64::MAX };
    // SAFETY: as above.
    let status = unsafe {
        (api.train_ex)(
            config.as_ptr(),
            P2P_TRAIN_RESUME,
            Some(on_progress),
            ptr::from_mut(&mut rest).cast(),
        )
    };
    assert_eq!(status, P2P_OK, "p2p_train_ex(RESUME): {}", api.last_error());
    assert_eq!(rest.reports.iter().map(|p| p.step).collect::<Vec<_>>(), [3], "resumed steps");

    // No resume over a run: refused. With `[output] overwrite = true` (and no callback): a new
    // run to the end.
    // SAFETY: as above; a NULL callback is allowed.
    let status = unsafe { (api.train)(config.as_ptr(), None, ptr::null_mut()) };
    assert_eq!(status, P2P_ERR_CONFIG);
    assert!(
        api.last_error().contains("holds a training run (latest, losses.csv)"),
        "{}",
        api.last_error()
    );
    // SAFETY: as above.
    let status = unsafe { (api.train)(config_overwrite.as_ptr(), None, ptr::null_mut()) };
    assert_eq!(status, P2P_OK, "p2p_train without callback: {}", api.last_error());

    // The checkpoint is a model: translate with it, evaluate it.
    let path = CString::new(generator.to_str().unwrap()).unwrap();
    let mut m: *mut p2p_model = ptr::null_mut();
    // SAFETY: valid path, NULL options, valid out pointer.
    assert_eq!(
        unsafe { (api.open)(path.as_ptr(), ptr::null(), &mut m) },
        P2P_OK,
        "{}",
        api.last_error()
    );
    let pixels = test_image(96, 80, 3, 9);
    let input = p2p_image {
        width: 96,
        height: 80,
        stride: 96 * 3,
        channels: 3,
        data: pixels.as_ptr().cast_mut(),
    };
    let mut out = p2p_image::default();
    // SAFETY: live model, valid images.
    assert_eq!(unsafe { (api.translate)(m, &input, &mut out) }, P2P_OK, "{}", api.last_error());
    assert_eq!((out.width, out.height, out.channels), (96, 80, 3));
    // SAFETY: a library-allocated image.
    unsafe { (api.image_free)(&mut out) };

    let data = CString::new(pairs.to_str().unwrap()).unwrap();
    let html = dir.join("html");
    let html_c = CString::new(html.to_str().unwrap()).unwrap();
    let mut metrics = p2p_metrics::default();
    // SAFETY: live model, valid strings and out pointer.
    let status = unsafe {
        (api.evaluate)(m, data.as_ptr(), P2P_DIRECTION_A_TO_B, 0, html_c.as_ptr(), &mut metrics)
    };
    assert_eq!(status, P2P_OK, "p2p_evaluate: {}", api.last_error());
    assert_eq!(metrics.count, 3);
    assert!(
        metrics.mae.is_finite() && metrics.psnr.is_finite() && metrics.ssim.is_finite(),
        "{metrics:?}"
    );
    assert!(html.join("index.html").exists());
    // SAFETY: releasing the model once.
    unsafe { (api.free)(m) };
}

unsafe extern "C" fn on_message(text: *const c_char, user: *mut c_void) {
    // SAFETY: `user` is the `Vec<String>` passed to p2p_train_with_messages; `text` is a
    // NUL-terminated string valid for the call.
    let (seen, text) = unsafe { (&mut *user.cast::<Vec<String>>(), CStr::from_ptr(text)) };
    seen.push(text.to_string_lossy().into_owned());
}

/// The library prints nothing: a data-loader warning (an unreadable image in the training
/// folder) reaches a C caller through its message callback.
#[test]
fn data_loader_warnings_reach_the_message_callback() {
    let api = api();
    let dir = scratch("c-train-warning");
    let (pairs, config) = tiny_training_run(&dir, 2, 1);
    std::fs::write(pairs.join("broken.png"), b"not a png").unwrap();
    let config = CString::new(config).unwrap();
    let mut messages: Vec<String> = Vec::new();
    // SAFETY: valid config string; the callback and its `user` outlive the call.
    let status = unsafe {
        (api.train_with_messages)(
            config.as_ptr(),
            0,
            None,
            Some(on_message),
            ptr::from_mut(&mut messages).cast(),
        )
    };
    assert_eq!(status, P2P_OK, "p2p_train_with_messages: {}", api.last_error());
    assert!(
        messages.iter().any(|m| m.contains("skipping") && m.contains("broken.png")),
        "no warning naming broken.png: {messages:?}"
    );
}
