//! The abi_stable root module of `libpix2pix.so` (the interface is `pix2pix_ffi::Pix2PixModRef`).
//!
//! Thin wrappers over [`crate::faces::api`]: convert the FFI-safe types, call, convert back. Every
//! function and trait method catches panics, so none crosses the boundary (abi_stable would
//! abort the process).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_CanDowncast,
    sabi_types::RMut,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};
use pix2pix_ffi as ffi;
use pix2pix_ffi::{ProgressSink_TO, Translator, Translator_TO};

use crate::faces::api::{self, ApiResult, LoadedModel};
use crate::filter::image_tensor::ImageView;
use crate::filter::model::Options;
use crate::train;

/// The root module `Pix2PixModRef::load_from_directory` / `load_from_file` finds.
#[export_root_module]
pub fn get_library() -> ffi::Pix2PixModRef {
    ffi::Pix2PixMod {
        info,
        open_model,
        train,
        evaluate,
        bench,
        default_train_config,
        export_onnx,
        translate_ex,
        evaluate_ex,
        translate_batch,
    }
    .leak_into_prefix()
}

fn result<T>(r: ApiResult<T>) -> RResult<T, RString> {
    match r {
        Ok(v) => RResult::ROk(v),
        Err(e) => RResult::RErr(RString::from(e.message)),
    }
}

fn call<T>(f: impl FnOnce() -> ApiResult<T>) -> RResult<T, RString> {
    result(api::guard(f))
}

extern "C" fn info() -> ffi::PluginInfo {
    let make = || {
        let i = api::plugin_info();
        ffi::PluginInfo {
            name: i.name.into(),
            version: i.version.into(),
            abi_version: i.abi_version,
            features: i.features.into(),
        }
    };
    catch_unwind(make).unwrap_or_else(|_| ffi::PluginInfo {
        name: "pix2pix".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        abi_version: ffi::ABI_VERSION,
        features: RString::new(),
    })
}

extern "C" fn open_model(
    path: ROption<RStr<'_>>,
    options: ffi::OpenOptions,
) -> RResult<ffi::TranslatorBox, RString> {
    call(|| {
        let model = api::open_model(
            path.map(|p| Path::new(p.as_str())).into_option(),
            Options::from(&options),
        )?;
        // Downcastable, so that `translate_ex` can reach the model behind the trait object.
        Ok(Translator_TO::from_value(AbiModel(model), TD_CanDowncast))
    })
}

/// A [`LoadedModel`] behind the `Translator` trait object.
struct AbiModel(LoadedModel);

impl Translator for AbiModel {
    fn info(&self) -> ffi::ModelInfo {
        let make = || {
            let i = self.0.info();
            ffi::ModelInfo {
                net_g: i.net_g.as_str().into(),
                ngf: i.ngf as u32,
                norm: i.norm.into(),
                in_channels: i.in_channels as u32,
                out_channels: i.out_channels as u32,
                stride: i.stride as u32,
                native_size: i.native_size as u32,
                parameters: i.parameters,
                source: i.source.as_str().into(),
                precision: i.precision,
            }
        };
        catch_unwind(AssertUnwindSafe(make)).unwrap_or_else(|_| ffi::ModelInfo {
            net_g: RString::new(),
            ngf: 0,
            norm: RString::new(),
            in_channels: 0,
            out_channels: 0,
            stride: 0,
            native_size: 0,
            parameters: 0,
            source: RString::new(),
            precision: ffi::Precision::F32,
        })
    }

    fn translate(&self, image: ffi::ImageRef<'_>) -> RResult<ffi::ImageBuf, RString> {
        call(|| {
            let view = ImageView::new(
                image.width as usize,
                image.height as usize,
                image.stride as usize,
                image.channels as usize,
                image.data.as_slice(),
            )?;
            let out = self.0.translate(&view)?;
            Ok(ffi::ImageBuf {
                width: out.width as u32,
                height: out.height as u32,
                channels: out.channels as u32,
                data: RVec::from(out.data),
            })
        })
    }
}

extern "C" fn translate_ex(
    model: &ffi::TranslatorBox,
    image: ffi::ImageRefEx<'_>,
    out_format: ffi::SampleFormat,
) -> RResult<ffi::ImageBufEx, RString> {
    call(|| {
        let model = model.obj.downcast_as::<AbiModel>().map_err(|_| {
            api::ApiError::invalid("invalid model: not opened by this plugin's open_model")
        })?;
        let view = ImageView::with_format(
            image.width as usize,
            image.height as usize,
            image.stride as usize,
            image.channels as usize,
            image.format,
            image.data.as_slice(),
        )?;
        let out = model.0.translate_as(&view, out_format)?;
        Ok(ffi::ImageBufEx {
            width: out.width as u32,
            height: out.height as u32,
            channels: out.channels as u32,
            format: out.format,
            data: RVec::from(out.data),
        })
    })
}

extern "C" fn translate_batch(
    model: &ffi::TranslatorBox,
    images: RSlice<'_, ffi::ImageRefEx<'_>>,
    out_format: ffi::SampleFormat,
    shared_stats: bool,
) -> RResult<RVec<ffi::ImageBufEx>, RString> {
    call(|| {
        let model = model.obj.downcast_as::<AbiModel>().map_err(|_| {
            api::ApiError::invalid("invalid model: not opened by this plugin's open_model")
        })?;
        let views = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                ImageView::with_format(
                    image.width as usize,
                    image.height as usize,
                    image.stride as usize,
                    image.channels as usize,
                    image.format,
                    image.data.as_slice(),
                )
                .map_err(|e| api::ApiError::invalid(format!("image {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = model.0.translate_batch(&views, out_format, shared_stats)?;
        Ok(out
            .into_iter()
            .map(|out| ffi::ImageBufEx {
                width: out.width as u32,
                height: out.height as u32,
                channels: out.channels as u32,
                format: out.format,
                data: RVec::from(out.data),
            })
            .collect())
    })
}

extern "C" fn train(
    config_toml: RStr<'_>,
    resume: bool,
    mut sink: ProgressSink_TO<'_, RMut<'_, ()>>,
) -> RResult<ffi::TrainReport, RString> {
    call(|| {
        let s = api::train(config_toml.as_str(), resume, &mut SinkReporter(&mut sink))?;
        Ok(ffi::TrainReport {
            steps: s.steps,
            cancelled: s.cancelled,
            checkpoint_dir: s.checkpoint_dir.display().to_string().into(),
        })
    })
}

/// The host's progress sink as the trainer's reporter: steps and messages both reach the host.
struct SinkReporter<'s, 'a, 'b>(&'s mut ProgressSink_TO<'a, RMut<'b, ()>>);

impl train::Reporter for SinkReporter<'_, '_, '_> {
    fn progress(&mut self, p: &train::Progress) -> bool {
        self.0.progress(p)
    }
    fn message(&mut self, text: &str) {
        self.0.message(RStr::from_str(text));
    }
}

fn evaluate_request(
    request: &ffi::EvalRequest,
    segmenter: Option<&Path>,
) -> ApiResult<train::Metrics> {
    let direction = api::parse_direction(request.direction.as_str())?;
    let model = request.model.as_ref().map(|m| Path::new(m.as_str())).into_option();
    let html = request.html_dir.as_ref().map(|h| Path::new(h.as_str())).into_option();
    api::evaluate_path(
        model,
        Path::new(request.data.as_str()),
        direction,
        request.size as usize,
        html,
        segmenter,
    )
}

fn eval_metrics(m: &train::Metrics) -> ffi::EvalMetrics {
    ffi::EvalMetrics { mae: m.mae, psnr: m.psnr, ssim: m.ssim, count: m.count as u64 }
}

extern "C" fn evaluate(request: ffi::EvalRequest) -> RResult<ffi::EvalMetrics, RString> {
    call(|| Ok(eval_metrics(&evaluate_request(&request, None)?)))
}

extern "C" fn evaluate_ex(request: ffi::EvalRequestEx) -> RResult<ffi::EvalMetricsEx, RString> {
    call(|| {
        let segmenter = request.segmenter.as_ref().map(|s| Path::new(s.as_str())).into_option();
        let m = evaluate_request(&request.base, segmenter)?;
        Ok(ffi::EvalMetricsEx {
            base: eval_metrics(&m),
            label_score: m.label_score.into(),
            real_label_score: m.real_label_score.into(),
        })
    })
}

extern "C" fn bench(request: ffi::BenchRequest) -> RResult<ffi::BenchReport, RString> {
    call(|| {
        let spec = api::BenchSpec {
            net_g: request.net_g.to_string(),
            ngf: request.ngf as usize,
            size: request.size as usize,
            batch: request.batch as usize,
            iters: request.iters as usize,
            warmup: request.warmup as usize,
            train: request.train,
            norm_stats: request.norm_stats,
            memory_budget_mb: request.memory_budget_mb,
            precision: request.precision,
        };
        let t = api::bench(&spec)?;
        Ok(ffi::BenchReport {
            infer_ms: t.infer_ms.into(),
            train_step_ms: t.train_step_ms.into(),
            precision: t.precision,
        })
    })
}

/// Copies a constant text: nothing in it can panic but the allocation, which aborts anyway.
extern "C" fn default_train_config() -> RString {
    RString::from(crate::train::config::DEFAULT_CONFIG_TOML)
}

extern "C" fn export_onnx(
    model: ROption<RStr<'_>>,
    out: RStr<'_>,
    norm_stats: ffi::NormStats,
    overwrite: bool,
) -> RResult<RString, RString> {
    call(|| {
        let model = model.map(|m| Path::new(m.as_str())).into_option();
        let s = api::export_onnx(model, Path::new(out.as_str()), norm_stats, overwrite)?;
        Ok(s.to_string().into())
    })
}
