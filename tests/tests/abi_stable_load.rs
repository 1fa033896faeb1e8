//! The plugin through its abi_stable root module, as a Rust host loads it: layout-checked
//! loading, model info, translations equal to the Rust API's, four threads sharing a model, and
//! errors as messages.

mod common;

use std::sync::OnceLock;

use abi_stable::library::RootModule;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString};
use pix2pix_ffi::{
    BenchRequest, EvalRequest, ImageRef, NormStats, OpenOptions, Pix2PixModRef, ProgressSink,
    ProgressSink_TO, TrainProgress, TranslatorBox,
};

use common::*;

fn module() -> Pix2PixModRef {
    static MODULE: OnceLock<Pix2PixModRef> = OnceLock::new();
    *MODULE.get_or_init(|| {
        let so = plugin_so();
        Pix2PixModRef::load_from_file(&so)
            .unwrap_or_else(|e| panic!("loading {} through abi_stable: {e}", so.display()))
    })
}

fn open(fixture: &str) -> TranslatorBox {
    let path = generator(fixture);
    let path = path.to_str().expect("UTF-8 path");
    match module().open_model()(ROption::RSome(RStr::from(path)), OpenOptions::default()) {
        RResult::ROk(m) => m,
        RResult::RErr(e) => panic!("open_model({path}): {e}"),
    }
}

fn translate(m: &TranslatorBox, pixels: &[u8], w: usize, h: usize, c: usize) -> Vec<u8> {
    let image = ImageRef {
        width: w as u32,
        height: h as u32,
        stride: (w * c) as u32,
        channels: c as u32,
        data: RSlice::from_slice(pixels),
    };
    match m.translate(image) {
        RResult::ROk(out) => {
            assert_eq!(
                (out.width as usize, out.height as usize, out.channels as usize),
                (w, h, if c == 4 { 4 } else { 3 })
            );
            out.data.into_vec()
        }
        RResult::RErr(e) => panic!("translate: {e}"),
    }
}

#[test]
fn plugin_info() {
    let info = module().info()();
    assert_eq!(info.name.as_str(), "pix2pix");
    assert_eq!(info.version.as_str(), env!("CARGO_PKG_VERSION"));
    assert_eq!(info.abi_version, pix2pix_ffi::ABI_VERSION);
    assert!(
        info.features.as_str().split(' ').any(|f| f == "translate"),
        "features: {}",
        info.features
    );
}

#[test]
fn model_info_matches_the_checkpoint() {
    for (fixture, net_g, norm) in
        [(UNET128, "unet_128", "instance"), (UNET256, "unet_256", "batch")]
    {
        let info = open(fixture).info();
        assert_eq!(info.net_g.as_str(), net_g);
        assert_eq!(info.norm.as_str(), norm);
        assert_eq!((info.ngf, info.in_channels, info.out_channels), (8, 3, 3));
        let side = if fixture == UNET128 { 128 } else { 256 };
        assert_eq!((info.stride, info.native_size), (side, side));
        // Parameters: every tensor of the file but the batch-norm running statistics.
        let bytes = std::fs::read(generator(fixture)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let expected: usize = st
            .tensors()
            .iter()
            .filter(|(n, _)| {
                !(n.ends_with("running_mean")
                    || n.ends_with("running_var")
                    || n.ends_with("num_batches_tracked"))
            })
            .map(|(_, t)| t.shape().iter().product::<usize>())
            .sum();
        assert_eq!(info.parameters, expected as u64, "{fixture}");
        assert!(info.source.as_str().ends_with("generator.safetensors"));
    }
}

#[test]
fn translations_equal_the_rust_api() {
    for (fixture, w, h, c) in [(UNET128, 150, 100, 3), (UNET128, 64, 64, 1), (UNET256, 260, 256, 4)]
    {
        let pixels = test_image(w, h, c, 7);
        let through_plugin = translate(&open(fixture), &pixels, w, h, c);
        let through_rlib = rust_translate(&generator(fixture), &pixels, w, h, c);
        assert!(
            through_plugin == through_rlib,
            "{fixture} {w}x{h}x{c}: the plugin's bytes differ from the Rust API's"
        );
    }
}

#[test]
fn four_threads_share_a_model() {
    let m = open(UNET256);
    let (w, h, c) = (256, 256, 3);
    let pixels = test_image(w, h, c, 3);
    let single = translate(&m, &pixels, w, h, c);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| (0..2).map(|_| translate(&m, &pixels, w, h, c)).collect::<Vec<_>>())
            })
            .collect();
        for (t, handle) in handles.into_iter().enumerate() {
            for (r, out) in handle.join().expect("thread").into_iter().enumerate() {
                assert!(out == single, "thread {t} round {r}: differs from one thread's output");
            }
        }
    });
}

#[test]
fn errors_are_messages() {
    let missing = match module().open_model()(
        ROption::RSome(RStr::from("/nonexistent/generator.safetensors")),
        OpenOptions::default(),
    ) {
        RResult::RErr(e) => e,
        RResult::ROk(_) => panic!("opened a missing file"),
    };
    assert!(missing.as_str().contains("/nonexistent/generator.safetensors"), "{missing}");
    let m = open(UNET128);
    let pixels = [0u8; 12];
    let bad = ImageRef {
        width: 100000,
        height: 100000,
        stride: 300000,
        channels: 3,
        data: RSlice::from_slice(&pixels),
    };
    match m.translate(bad) {
        RResult::RErr(e) => assert!(e.as_str().contains("limit"), "{e}"),
        RResult::ROk(_) => panic!("translated a 100000x100000 image from 12 bytes"),
    }
    let short = ImageRef {
        width: 4,
        height: 2,
        stride: 12,
        channels: 3,
        data: RSlice::from_slice(&pixels),
    };
    match m.translate(short) {
        RResult::RErr(e) => assert!(e.as_str().contains("image data"), "{e}"),
        RResult::ROk(_) => panic!("read past a 12-byte buffer"),
    }
}

#[test]
fn bench_times_inference_and_training_steps() {
    let request = |train: bool| BenchRequest {
        net_g: RString::from("unet_128"),
        ngf: 8,
        size: 128,
        batch: 1,
        iters: 2,
        warmup: 1,
        train,
        norm_stats: NormStats::Batch,
        memory_budget_mb: 0,
        precision: pix2pix_ffi::Precision::F32,
    };
    match module().bench()(request(false)) {
        RResult::ROk(r) => {
            assert_eq!(r.infer_ms.len(), 2);
            assert!(r.infer_ms.iter().all(|&t| t > 0.0));
            assert_eq!(r.precision, pix2pix_ffi::Precision::F32);
        }
        RResult::RErr(e) => panic!("bench: {e}"),
    }
    // Eval-mode inference, as other runtimes are timed.
    match module().bench()(BenchRequest { norm_stats: NormStats::Running, ..request(false) }) {
        RResult::ROk(r) => assert!(r.infer_ms.len() == 2 && r.infer_ms.iter().all(|&t| t > 0.0)),
        RResult::RErr(e) => panic!("bench with running statistics: {e}"),
    }
    let bad = BenchRequest { size: 100, ..request(false) };
    match module().bench()(bad) {
        RResult::RErr(e) => assert!(e.as_str().contains("multiple of 128"), "{e}"),
        RResult::ROk(_) => panic!("benchmarked a size unet_128 does not take"),
    }
    match module().bench()(request(true)) {
        RResult::ROk(r) => {
            assert_eq!((r.infer_ms.len(), r.train_step_ms.len()), (2, 2));
            assert!(r.train_step_ms.iter().all(|&t| t > 0.0));
        }
        RResult::RErr(e) => panic!("bench with training steps: {e}"),
    }
    let absurd = BenchRequest { ngf: 100000, ..request(false) };
    match module().bench()(absurd) {
        RResult::RErr(e) => assert!(e.as_str().contains("ngf"), "{e}"),
        RResult::ROk(_) => panic!("benchmarked ngf 100000"),
    }
}

struct Sink {
    steps: Vec<u64>,
    messages: Vec<String>,
}

impl ProgressSink for Sink {
    fn progress(&mut self, p: &TrainProgress) -> bool {
        self.steps.push(p.step);
        p.step < 1
    }
    fn message(&mut self, text: RStr<'_>) {
        self.messages.push(text.to_string());
    }
}

#[test]
fn train_cancels_and_evaluates() {
    let dir = scratch("abi-train");
    let (pairs, config) = tiny_training_run(&dir, 2, 3);
    let mut sink = Sink { steps: Vec::new(), messages: Vec::new() };
    let report = match module().train()(
        RStr::from(config.as_str()),
        false,
        ProgressSink_TO::from_ptr(&mut sink, TD_Opaque),
    ) {
        RResult::ROk(r) => r,
        RResult::RErr(e) => panic!("train: {e}"),
    };
    assert!(report.cancelled && report.steps == 1, "{report:?}");
    assert_eq!(sink.steps, [1]);
    let generator =
        std::path::Path::new(report.checkpoint_dir.as_str()).join("generator.safetensors");
    assert!(generator.exists(), "{}", generator.display());

    let request = EvalRequest {
        model: ROption::RSome(RString::from(generator.to_str().unwrap())),
        data: RString::from(pairs.to_str().unwrap()),
        direction: RString::from("AtoB"),
        size: 0,
        html_dir: ROption::RNone,
    };
    match module().evaluate()(request.clone()) {
        RResult::ROk(m) => assert_eq!(m.count, 2),
        RResult::RErr(e) => panic!("evaluate: {e}"),
    }
    match module().evaluate()(EvalRequest { direction: RString::from("sideways"), ..request }) {
        RResult::RErr(e) => assert!(e.as_str().contains("direction"), "{e}"),
        RResult::ROk(_) => panic!("evaluated in direction `sideways`"),
    }
}

/// The library prints nothing: a data-loader warning (an unreadable image in the training
/// folder) reaches a Rust host through its sink's `message`.
#[test]
fn data_loader_warnings_reach_the_sink() {
    let dir = scratch("abi-train-warning");
    let (pairs, config) = tiny_training_run(&dir, 2, 1);
    std::fs::write(pairs.join("broken.png"), b"not a png").unwrap();
    let mut sink = Sink { steps: Vec::new(), messages: Vec::new() };
    match module().train()(
        RStr::from(config.as_str()),
        false,
        ProgressSink_TO::from_ptr(&mut sink, TD_Opaque),
    ) {
        RResult::ROk(r) => assert_eq!(r.steps, 1, "{r:?}"),
        RResult::RErr(e) => panic!("train: {e}"),
    }
    assert!(
        sink.messages.iter().any(|m| m.contains("skipping") && m.contains("broken.png")),
        "no warning naming broken.png: {:?}",
        sink.messages
    );
}

/// `translate_ex`, appended to the root module after its prefix: 16-bit samples in and out,
/// equal to the Rust API's 16-bit translation; a 3→1 model gives gray; a translator from
/// elsewhere is refused with a message.
#[test]
fn translate_ex_takes_16_bit_samples() {
    use pix2pix_ffi::{ImageRefEx, SampleFormat};
    let translate_ex = module().translate_ex().expect("this plugin has translate_ex");
    let (w, h, c) = (150usize, 100usize, 3usize);
    let samples: Vec<u16> = test_image(w, h, c, 9)
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as u16 * 257).wrapping_add((i % 200) as u16))
        .collect();
    let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let image = ImageRefEx {
        width: w as u32,
        height: h as u32,
        stride: (w * c * 2) as u32,
        channels: c as u32,
        format: SampleFormat::U16,
        data: RSlice::from_slice(&bytes),
    };
    let out = match translate_ex(&open(UNET128), image, SampleFormat::U16) {
        RResult::ROk(out) => out,
        RResult::RErr(e) => panic!("translate_ex: {e}"),
    };
    assert_eq!((out.width, out.height, out.channels, out.format), (150, 100, 3, SampleFormat::U16));
    let m = pix2pix::Model::open(&generator(UNET128), pix2pix::Options::default()).unwrap();
    let view =
        pix2pix::ImageView::with_format(w, h, w * c * 2, c, SampleFormat::U16, &bytes).unwrap();
    assert_eq!(out.data.as_slice(), m.translate_as(&view, SampleFormat::U16).unwrap().data);

    let gray_model = root().join("tests/fixtures/unet128_ngf8_3to1/generator.safetensors");
    let path = gray_model.to_str().expect("UTF-8 path");
    let m = match module().open_model()(ROption::RSome(RStr::from(path)), OpenOptions::default()) {
        RResult::ROk(m) => m,
        RResult::RErr(e) => panic!("open_model({path}): {e}"),
    };
    match translate_ex(&m, image, SampleFormat::F32) {
        RResult::ROk(out) => assert_eq!((out.channels, out.format), (1, SampleFormat::F32)),
        RResult::RErr(e) => panic!("translate_ex: {e}"),
    }

    // A translator the plugin did not open cannot be translated by it.
    struct Other;
    impl pix2pix_ffi::Translator for Other {
        fn info(&self) -> pix2pix_ffi::ModelInfo {
            unreachable!()
        }
        fn translate(&self, _: ImageRef<'_>) -> RResult<pix2pix_ffi::ImageBuf, RString> {
            unreachable!()
        }
    }
    let other: TranslatorBox = pix2pix_ffi::Translator_TO::from_value(Other, TD_Opaque);
    match translate_ex(&other, image, SampleFormat::U16) {
        RResult::RErr(e) => assert!(e.contains("not opened by this plugin"), "{e}"),
        RResult::ROk(_) => panic!("a foreign translator was accepted"),
    }
}
