//! The translation filter: a generator loaded from a checkpoint, with the options a host sets,
//! turning images of any size, sample format and channel count into translated images of the
//! same size (computed in f32, quantised only when written out).

use candle_core::Tensor;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::filter::image_tensor::{
    image_to_tensor, tensor_to_image, Image, ImageF32, ImageU8, ImageView, SampleFormat,
};
use crate::filter::memory;
use crate::filter::size_policy::{self, SizePolicy};
use crate::filter::tiling::{self, TileGeometry};
use crate::nets::arch::infer_generator;
use crate::nets::forward::{Forward, Layer, NormStats};
use crate::nets::generator::{Generator, GeneratorConfig};

/// Options fixed when a model is opened.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub norm_stats: NormStats,
    pub size_policy: SizePolicy,
    /// Overlap between tiles, in pixels, for [`SizePolicy::Tile`].
    pub tile_overlap: usize,
    /// Worker threads for one translation; 0 = all cores.
    pub threads: usize,
    /// Dropout at inference, seeded (pix2pix's noise), or off.
    pub dropout_seed: Option<u64>,
    /// Memory one translation may take, in MiB (its estimate is checked before it starts);
    /// 0 = the default, half of the memory the process may use ([`memory::budget`]).
    pub memory_budget_mb: u64,
}

impl Default for Options {
    /// The contract's defaults.
    fn default() -> Self {
        Self::from(&pix2pix_ffi::OpenOptions::default())
    }
}

/// The abi_stable face's options: the one conversion from the contract's type.
impl From<&pix2pix_ffi::OpenOptions> for Options {
    fn from(o: &pix2pix_ffi::OpenOptions) -> Self {
        Self {
            norm_stats: o.norm_stats,
            size_policy: o.size_policy,
            tile_overlap: o.tile_overlap as usize,
            threads: o.threads as usize,
            dropout_seed: o.dropout_seed.into_option(),
            memory_budget_mb: o.memory_budget_mb,
        }
    }
}

/// A generator ready to translate. `Sync`: several threads may translate with one model.
pub struct Model {
    generator: Generator,
    options: Options,
    source: String,
    pool: Option<rayon::ThreadPool>,
}

impl Model {
    /// Opens a checkpoint file (`.safetensors` or `.pth`). (The faces' "no path" meaning the
    /// shipped model is theirs: `faces::api::open_model`.)
    pub fn open(path: &std::path::Path, options: Options) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::load(path)?, options)
    }

    pub fn from_checkpoint(ckpt: &Checkpoint, options: Options) -> Result<Self> {
        let config = infer_generator(ckpt)?;
        Self::from_checkpoint_with(ckpt, config, options)
    }

    /// Opens with explicit settings; a file that contradicts them is an error naming the tensor.
    pub fn from_checkpoint_with(
        ckpt: &Checkpoint,
        config: GeneratorConfig,
        options: Options,
    ) -> Result<Self> {
        let generator = ckpt.build(|vb| Generator::new(config, vb))?;
        let pool = match options.threads {
            0 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| Error::invalid("threads", e.to_string()))?,
            ),
        };
        Ok(Self { generator, options, source: ckpt.path.display().to_string(), pool })
    }

    pub fn config(&self) -> GeneratorConfig {
        self.generator.config()
    }
    pub fn options(&self) -> &Options {
        &self.options
    }
    /// Where the weights came from (a path, or the name of the embedded model).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The generator on a (N, C, H, W) tensor whose sides are multiples of the network stride.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = Forward::infer(self.options.norm_stats);
        let f = match self.options.dropout_seed {
            Some(seed) => f.with_dropout(seed),
            None => f,
        };
        Ok(self.generator.forward(x, &f)?)
    }

    /// Translates an image whose sides suit the network as they are.
    fn translate_direct(&self, img: &ImageF32) -> Result<ImageF32> {
        tensor_to_image(&self.forward(&image_to_tensor(img)?)?)
    }

    /// Translates an image of any size (the model's input channels) into one of the same size
    /// (its output channels), by the size policy of the options.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
    pub(crate) fn translate_any(&self, img: &ImageF32) -> Result<ImageF32> {
        let config = self.config();
        let policy = self.options.size_policy;
        let (w, h) = (img.width, img.height);
        self.check_memory(w, h)?;
        let net = |img: &ImageF32| self.translate_direct(img);
        // Tile keeps its bounded memory even for stride-multiple sizes.
        if policy != SizePolicy::Tile && w % config.stride() == 0 && h % config.stride() == 0 {
            return net(img);
        }
        match policy {
            SizePolicy::Resize => size_policy::resized(&net, config.native_size(), img),
            SizePolicy::Pad => size_policy::padded(&net, config.stride(), img),
            SizePolicy::Tile => {
                tiling::translate_tiled(&|x| self.forward(x), &self.tile_geometry(), img)
            }
        }
    }

    /// Refuses a `w`×`h` translation whose estimate exceeds the memory budget, before anything
    /// of its size is allocated.
    pub fn check_memory(&self, w: usize, h: usize) -> Result<()> {
        let policy = self.options.size_policy;
        let estimate = memory::translate_bytes(&self.config(), &self.options, w, h);
        let hint = match policy {
            SizePolicy::Tile => String::new(),
            _ => format!(
                "the tile policy needs about {} for this image",
                memory::human(memory::translate_bytes(
                    &self.config(),
                    &Options { size_policy: SizePolicy::Tile, ..self.options.clone() },
                    w,
                    h
                ))
            ),
        };
        memory::check(
            &format!("translating a {w}x{h} image with the {} policy", policy.name()),
            estimate,
            self.options.memory_budget_mb,
            &hint,
        )
    }

    /// The tile policy's geometry for this network and these options.
    pub(crate) fn tile_geometry(&self) -> TileGeometry {
        tiling::geometry(&self.config(), &self.options)
    }

    /// Translates an 8-bit image of any size: [`Model::translate_as`] with 8-bit output.
    pub fn translate(&self, img: &ImageView) -> Result<ImageU8> {
        self.translate_as(img, SampleFormat::U8)?.into_u8()
    }

    /// Translates an image of any size and sample format; the output has the input's size,
    /// `format` samples, and the model's output channels, plus the input's alpha if it has one.
    /// The input is converted to the model's input channels first (gray → RGB by replication,
    /// RGB → gray by ITU-R 601-2 luma).
    pub fn translate_as(&self, img: &ImageView, format: SampleFormat) -> Result<Image> {
        let run = || -> Result<Image> {
            // Checked before the input is even converted (translate_any checks again for
            // callers that come in with a converted image).
            self.check_memory(img.width, img.height)?;
            let (in_channels, _) = self.config().channels();
            let out = self.translate_any(&img.to_channels(in_channels)?)?;
            Image::with_alpha_of(&out, img, format)
        };
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }
}
