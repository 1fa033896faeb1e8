//! The abi_stable root module of `libpix2pix.so` (the interface is `pix2pix_ffi::Pix2PixModRef`).
//!
//! Thin wrappers over [`crate::api`]: convert the FFI-safe types, call, convert back. Every
//! function and trait method catches panics, so none crosses the boundary (abi_stable would
//! abort the process).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    sabi_types::RMut,
    std_types::{RResult, RStr, RString, RVec, ROption},
};
use pix2pix_ffi as ffi;
use pix2pix_ffi::{ProgressSink_TO, Translator, Translator_TO};

use crate::api::{self, ApiResult, LoadedModel};
use crate::image_tensor::ImageView;
use crate::layers::NormStats;
use crate::model::Options;
use crate::size_policy::SizePolicy;

/// The root module `Pix2PixModRef::load_from_directory` / `load_from_file` finds.
#[export_root_module]
pub fn get_library() -> ffi::Pix2PixModRef {
    ffi::Pix2PixMod { info, open_model, train, evaluate, bench, export_onnx }.leak_into_prefix()
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
        ffi::PluginInfo { name: i.name.into(), version: i.version.into(), abi_version: i.abi_version, features: i.features.into() }
    };
    catch_unwind(make).unwrap_or_else(|_| ffi::PluginInfo {
        name: "pix2pix".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        abi_version: ffi::ABI_VERSION,
        features: RString::new(),
    })
}

fn norm_stats_from_ffi(s: ffi::NormStats) -> NormStats {
    match s {
        ffi::NormStats::Batch => NormStats::Batch,
        ffi::NormStats::Running => NormStats::Running,
    }
}

pub(crate) fn options_from_ffi(o: &ffi::OpenOptions) -> Options {
    Options {
        norm_stats: norm_stats_from_ffi(o.norm_stats),
        size_policy: match o.size_policy {
            ffi::SizePolicy::Resize => SizePolicy::Resize,
            ffi::SizePolicy::Pad => SizePolicy::Pad,
            ffi::SizePolicy::Tile => SizePolicy::Tile,
        },
        tile_overlap: o.tile_overlap as usize,
        threads: o.threads as usize,
        dropout_seed: o.dropout_seed.into_option(),
    }
}

extern "C" fn open_model(path: ROption<RStr<'_>>, options: ffi::OpenOptions) -> RResult<ffi::TranslatorBox, RString> {
    call(|| {
        let model = api::open_model(path.map(|p| Path::new(p.as_str())).into_option(), options_from_ffi(&options))?;
        Ok(Translator_TO::from_value(AbiModel(model), TD_Opaque))
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
            Ok(ffi::ImageBuf { width: out.width as u32, height: out.height as u32, channels: out.channels as u32, data: RVec::from(out.data) })
        })
    }
}

extern "C" fn train(
    config_toml: RStr<'_>,
    resume: bool,
    mut sink: ProgressSink_TO<'_, RMut<'_, ()>>,
) -> RResult<ffi::TrainReport, RString> {
    call(|| {
        let mut progress = |p: &crate::train::Progress| sink.progress(&ffi::TrainProgress::from(p));
        let s = api::train(config_toml.as_str(), resume, &mut progress)?;
        Ok(ffi::TrainReport { steps: s.steps, cancelled: s.cancelled, checkpoint_dir: s.checkpoint_dir.display().to_string().into() })
    })
}

extern "C" fn evaluate(request: ffi::EvalRequest) -> RResult<ffi::EvalMetrics, RString> {
    call(|| {
        let direction = api::parse_direction(request.direction.as_str())?;
        let model = request.model.as_ref().map(|m| Path::new(m.as_str())).into_option();
        let html = request.html_dir.as_ref().map(|h| Path::new(h.as_str())).into_option();
        let m = api::evaluate_path(model, Path::new(request.data.as_str()), direction, request.size as usize, html)?;
        Ok(ffi::EvalMetrics::from(&m))
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
            norm_stats: norm_stats_from_ffi(request.norm_stats),
        };
        let t = api::bench(&spec)?;
        Ok(ffi::BenchReport { infer_ms: t.infer_ms.into(), train_step_ms: t.train_step_ms.into() })
    })
}

extern "C" fn export_onnx(model: ROption<RStr<'_>>, out: RStr<'_>, norm_stats: ffi::NormStats, overwrite: bool) -> RResult<RString, RString> {
    call(|| {
        let model = model.map(|m| Path::new(m.as_str())).into_option();
        let s = crate::export::export_onnx(model, Path::new(out.as_str()), norm_stats_from_ffi(norm_stats), overwrite)?;
        Ok(s.to_string().into())
    })
}
