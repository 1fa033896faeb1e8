//! The plugin and its models: what the plugin says about itself, and opening a checkpoint (or
//! the shipped default model) into a [`LoadedModel`] with its description.

use std::path::Path;
use std::sync::OnceLock;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::faces::api::error::{ApiError, ApiResult, ErrorKind};
use crate::faces::default_model;
use crate::filter::image_tensor::{Image, ImageU8, ImageView, SampleFormat};
use crate::filter::model::{Model, Options};
use crate::filter::size_policy::SizePolicy;
use crate::kernels::Precision;
use crate::nets::forward::NormStats;

// The faces hand one model to several threads at once.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Model>();
    send_sync::<LoadedModel>();
};

/// What the plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub abi_version: u32,
    /// Space-separated features.
    pub features: String,
}

pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        name: "pix2pix",
        version: env!("CARGO_PKG_VERSION"),
        abi_version: pix2pix_ffi::ABI_VERSION,
        features: features().to_string(),
    }
}

fn features() -> &'static str {
    static FEATURES: OnceLock<String> = OnceLock::new();
    FEATURES.get_or_init(|| {
        let mut f = String::from("translate train evaluate bench");
        if default_model::checkpoint().is_ok() {
            f.push_str(" default-model");
        }
        f
    })
}

/// Worker threads a model may ask for.
pub const MAX_THREADS: usize = 1024;

/// What a model is, as read off its checkpoint, and how it was opened.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub net_g: String,
    pub ngf: usize,
    pub norm: &'static str,
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    pub native_size: usize,
    /// Trainable parameters: every tensor of the checkpoint but the normalisation running
    /// statistics (the checkpoint holds exactly the network's tensors, or it does not open).
    pub parameters: u64,
    pub source: String,
    pub size_policy: SizePolicy,
    pub norm_stats: NormStats,
    /// The arithmetic the model runs in (f32 where bf16 was asked for but the CPU lacks it).
    pub precision: Precision,
}

/// An opened [`Model`] with its description.
pub struct LoadedModel {
    model: Model,
    info: ModelInfo,
}

/// The checkpoint at `path`, or the shipped default model for `None`: the one place a face's
/// "no path" becomes the shipped model.
pub fn checkpoint_or_default(path: Option<&Path>) -> ApiResult<Checkpoint> {
    Ok(match path {
        Some(p) => Checkpoint::load(p)?,
        None => default_model::checkpoint()
            .map_err(|e| ApiError::new(ErrorKind::Unsupported, e.to_string()))?,
    })
}

/// Opens a checkpoint (`.safetensors` or `.pth`), or the shipped default model for `None`.
pub fn open_model(path: Option<&Path>, options: Options) -> ApiResult<LoadedModel> {
    if options.threads > MAX_THREADS {
        return Err(ApiError::invalid(format!(
            "invalid threads: {} (at most {MAX_THREADS})",
            options.threads
        )));
    }
    let ckpt = checkpoint_or_default(path)?;
    let model = Model::from_checkpoint(ckpt, options)?;
    let config = model.config();
    let parameters = config.parameters().map_err(Error::from)?;
    let (in_channels, out_channels) = config.channels();
    let info = ModelInfo {
        net_g: config.net_g(),
        ngf: config.ngf(),
        norm: config.norm().name(),
        in_channels,
        out_channels,
        stride: config.stride(),
        native_size: config.native_size(),
        parameters,
        source: model.source().to_string(),
        size_policy: model.options().size_policy,
        norm_stats: model.options().norm_stats,
        precision: model.precision(),
    };
    Ok(LoadedModel { model, info })
}

impl LoadedModel {
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// Translates an 8-bit image of any size: same size out, the model's output channels, plus
    /// the input's alpha if it has one.
    pub fn translate(&self, image: &ImageView) -> ApiResult<ImageU8> {
        Ok(self.model.translate(image)?)
    }
    /// Translates an image of any size and sample format into `format` samples (channels as
    /// [`LoadedModel::translate`]).
    pub fn translate_as(&self, image: &ImageView, format: SampleFormat) -> ApiResult<Image> {
        Ok(self.model.translate_as(image, format)?)
    }
    /// Translates images of one size in one forward pass into `format` samples (channels as
    /// [`LoadedModel::translate`]); each image normalised by its own statistics unless
    /// `shared_stats`.
    pub fn translate_batch(
        &self,
        images: &[ImageView],
        format: SampleFormat,
        shared_stats: bool,
    ) -> ApiResult<Vec<Image>> {
        Ok(self.model.translate_batch(images, format, shared_stats)?)
    }
}
