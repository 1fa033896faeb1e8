//! The translation filter: a generator loaded from a checkpoint, with the options a host sets,
//! turning 8-bit images of any size into translated images of the same size.

use candle_core::Tensor;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::filter::image_tensor::{rgb_to_tensor, tensor_to_rgb, ImageU8, ImageView};
use crate::filter::size_policy::{self, SizePolicy};
use crate::filter::tiling::{self, TileGeometry};
use crate::nets::arch::infer_generator;
use crate::nets::forward::{Forward, Layer, NormStats};
use crate::nets::generator::{Generator, GeneratorConfig};
use crate::nets::norm::NormKind;

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

    /// Translates packed RGB8 whose sides suit the network as they are.
    fn translate_rgb(&self, rgb: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
        let x = rgb_to_tensor(rgb, width, height)?;
        let (out, _, _) = tensor_to_rgb(&self.forward(&x)?)?;
        Ok(out)
    }

    /// Translates packed RGB8 of any size into packed RGB8 of the same size, by the size policy
    /// of the options.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
    pub(crate) fn translate_any(&self, rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
        let config = self.config();
        let policy = self.options.size_policy;
        let net = |rgb: &[u8], w: usize, h: usize| self.translate_rgb(rgb, w, h);
        // Tile keeps its bounded memory even for stride-multiple sizes.
        if policy != SizePolicy::Tile && w % config.stride() == 0 && h % config.stride() == 0 {
            return net(rgb, w, h);
        }
        match policy {
            SizePolicy::Resize => size_policy::resized(&net, config.native_size(), rgb, w, h),
            SizePolicy::Pad => size_policy::padded(&net, config.stride(), rgb, w, h),
            SizePolicy::Tile => {
                tiling::translate_tiled(&|x| self.forward(x), &self.tile_geometry(), rgb, w, h)
            }
        }
    }

    /// The tile policy's geometry for this network and these options.
    pub(crate) fn tile_geometry(&self) -> TileGeometry {
        let config = self.config();
        TileGeometry {
            tile: config.native_size(),
            stride: config.stride(),
            overlap: self.options.tile_overlap,
            // All tiles in one batch share batch-norm statistics; any other norm is per tile.
            shared_stats: config.norm() == NormKind::Batch
                && self.options.norm_stats == NormStats::Batch,
        }
    }

    /// Translates an image of any size; the output has the input's size, 3 channels, or 4 with
    /// the input's alpha copied through.
    pub fn translate(&self, img: &ImageView) -> Result<ImageU8> {
        let run = || -> Result<ImageU8> {
            let rgb = img.to_rgb();
            let out = self.translate_any(&rgb, img.width, img.height)?;
            Ok(match img.channels {
                4 => {
                    let mut rgba = Vec::with_capacity(img.width * img.height * 4);
                    for y in 0..img.height {
                        let alpha = img.row(y).chunks_exact(4).map(|p| p[3]);
                        let row = &out[y * img.width * 3..(y + 1) * img.width * 3];
                        for (px, a) in row.chunks_exact(3).zip(alpha) {
                            rgba.extend_from_slice(&[px[0], px[1], px[2], a]);
                        }
                    }
                    ImageU8 { width: img.width, height: img.height, channels: 4, data: rgba }
                }
                _ => ImageU8 { width: img.width, height: img.height, channels: 3, data: out },
            })
        };
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }
}
