//! The translation filter: a generator loaded from a checkpoint, with the options a host sets,
//! turning 8-bit images of any size into translated images of the same size.

use std::path::Path;

use candle_core::Tensor;

use crate::arch::infer_generator;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::generator::{Generator, GeneratorConfig};
use crate::image_tensor::{rgb_to_tensor, tensor_to_rgb, ImageU8, ImageView};
use crate::layers::{Forward, Layer, NormStats};
use crate::size_policy::SizePolicy;

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
    fn default() -> Self {
        Self { norm_stats: NormStats::Batch, size_policy: SizePolicy::default(), tile_overlap: 32, threads: 0, dropout_seed: None }
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
    /// Opens a checkpoint (`.safetensors` or `.pth`), or the shipped default model for `None`.
    pub fn open(path: Option<&Path>, options: Options) -> Result<Self> {
        let ckpt = match path {
            Some(p) => Checkpoint::load(p)?,
            None => crate::default_model::checkpoint()?,
        };
        Self::from_checkpoint(&ckpt, options)
    }

    pub fn from_checkpoint(ckpt: &Checkpoint, options: Options) -> Result<Self> {
        let config = infer_generator(ckpt)?;
        Self::from_checkpoint_with(ckpt, config, options)
    }

    /// Opens with explicit settings; a file that contradicts them is an error naming the tensor.
    pub fn from_checkpoint_with(ckpt: &Checkpoint, config: GeneratorConfig, options: Options) -> Result<Self> {
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
    pub(crate) fn translate_rgb(&self, rgb: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
        let x = rgb_to_tensor(rgb, width, height)?;
        let (out, _, _) = tensor_to_rgb(&self.forward(&x)?)?;
        Ok(out)
    }

    /// Translates an image of any size; the output has the input's size, 3 channels, or 4 with
    /// the input's alpha copied through.
    pub fn translate(&self, img: &ImageView) -> Result<ImageU8> {
        let run = || -> Result<ImageU8> {
            let rgb = img.to_rgb();
            let out = self.options.size_policy.translate(self, &rgb, img.width, img.height)?;
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
