//! The translation filter: a generator loaded from a checkpoint, with the options a host sets,
//! turning images of any size, sample format and channel count into translated images of the
//! same size (computed in f32, quantised only when written out).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::filter::image_tensor::{
    images_to_tensor, tensor_to_images, Image, ImageF32, ImageU8, ImageView, SampleFormat,
};
use crate::filter::memory;
use crate::filter::size_policy::{self, SizePolicy};
use crate::filter::threads::Threads;
use crate::filter::tiling::{self, TileGeometry};
use crate::kernels::{self, Precision};
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
    /// Threads one translation uses at most, on pools the whole library shares
    /// ([`crate::filter::threads`]); 0 = all of the machine's.
    pub threads: usize,
    /// Run on the model's own pool of `threads` threads instead of the shared ones.
    pub private_pool: bool,
    /// Batches ([`Model::translate_batch`]) normalise with the statistics of the whole batch
    /// instead of each image's own.
    pub shared_batch_stats: bool,
    /// Dropout at inference, seeded (pix2pix's noise), or off.
    pub dropout_seed: Option<u64>,
    /// Memory one translation may take, in MiB (its estimate is checked before it starts);
    /// 0 = the default, half of the memory the process may use ([`memory::budget`]).
    pub memory_budget_mb: u64,
    /// The arithmetic of the convolutions' products (bf16 only where the CPU has AVX512_BF16).
    pub precision: Precision,
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
            private_pool: false,
            shared_batch_stats: false,
            dropout_seed: o.dropout_seed.into_option(),
            memory_budget_mb: o.memory_budget_mb,
            precision: o.precision,
        }
    }
}

/// A generator ready to translate. `Sync`: several threads may translate with one model.
pub struct Model {
    generator: Generator,
    options: Options,
    source: String,
    threads: Threads,
    /// Whether a translation has started (see `translate_batch`).
    translated: AtomicBool,
}

impl Model {
    /// Opens a checkpoint file (`.safetensors` or `.pth`). (The faces' "no path" meaning the
    /// shipped model is theirs: `faces::api::open_model`.)
    pub fn open(path: &std::path::Path, options: Options) -> Result<Self> {
        Self::from_checkpoint(Checkpoint::load(path)?, options)
    }

    /// Builds the model from `ckpt`, consumed: a model pinned to running statistics folds its
    /// weights once the checkpoint's own copies are gone, so its peak is one copy, not two.
    pub fn from_checkpoint(ckpt: Checkpoint, options: Options) -> Result<Self> {
        let config = infer_generator(&ckpt)?;
        Self::from_checkpoint_with(ckpt, config, options)
    }

    /// Opens with explicit settings; a file that contradicts them is an error naming the tensor.
    pub fn from_checkpoint_with(
        ckpt: Checkpoint,
        config: GeneratorConfig,
        options: Options,
    ) -> Result<Self> {
        let mut generator = ckpt.build(|vb| Generator::new(config, vb))?;
        let source = ckpt.path.display().to_string();
        drop(ckpt);
        if options.norm_stats == NormStats::Running {
            // Pinned for the model's life: one folded copy of the weights, not two.
            generator.fold_running_norms()?;
        }
        let threads = match options.private_pool {
            true => Threads::private(options.threads)?,
            false => Threads::shared(options.threads),
        };
        Ok(Self { generator, options, source, threads, translated: AtomicBool::new(false) })
    }

    pub fn config(&self) -> GeneratorConfig {
        self.generator.config()
    }
    pub fn options(&self) -> &Options {
        &self.options
    }
    /// The arithmetic the model runs in: the options' precision where the CPU can.
    pub fn precision(&self) -> Precision {
        kernels::effective_precision(self.options.precision)
    }

    /// Runs the generator in this model's precision (layers pick their kernels on the calling
    /// thread, so the choice is this thread's, not the process's).
    fn run(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        Ok(kernels::with_precision(self.options.precision, || self.generator.forward(x, f))?)
    }

    /// Where the weights came from (a path, or the name of the embedded model).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The generator on a (N, C, H, W) tensor whose sides are multiples of the network stride,
    /// the batch normalised as one (tiles of one image share their statistics).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = Forward::infer(self.options.norm_stats);
        let f = match self.options.dropout_seed {
            Some(seed) => f.with_dropout(seed),
            None => f,
        };
        self.run(x, &f)
    }

    /// The generator on a batch of independent images: each normalised by its own statistics
    /// and given its own dropout masks (exactly as alone), unless `shared_stats`.
    fn forward_images(&self, x: &Tensor, shared_stats: bool) -> Result<Tensor> {
        // One image: the plain pass (identical results, per-image or not).
        if shared_stats || x.dim(0)? == 1 {
            return self.forward(x);
        }
        let f = Forward::infer(self.options.norm_stats).per_image();
        let f = match self.options.dropout_seed {
            Some(seed) => f.with_dropout_per_image(seed, x.dim(0)?),
            None => f,
        };
        self.run(x, &f)
    }

    /// Translates images of one size that suit the network as they are, in one forward pass.
    fn translate_direct(&self, imgs: &[ImageF32], shared_stats: bool) -> Result<Vec<ImageF32>> {
        tensor_to_images(&self.forward_images(&images_to_tensor(imgs)?, shared_stats)?)
    }

    /// Translates images of one size (any size; the model's input channels) into images of the
    /// same size (its output channels), by the size policy of the options: one forward pass for
    /// all of them, except under the tile policy, which translates them one by one.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
    pub(crate) fn translate_any(
        &self,
        imgs: &[ImageF32],
        shared_stats: bool,
    ) -> Result<Vec<ImageF32>> {
        let Some(first) = imgs.first() else { return Ok(Vec::new()) };
        let config = self.config();
        let policy = self.options.size_policy;
        let (w, h) = (first.width, first.height);
        let net = |imgs: &[ImageF32]| self.translate_direct(imgs, shared_stats);
        // Tile keeps its bounded memory even for stride-multiple sizes.
        if policy != SizePolicy::Tile && w % config.stride() == 0 && h % config.stride() == 0 {
            return net(imgs);
        }
        match policy {
            SizePolicy::Resize => size_policy::resized(&net, config.native_size(), imgs),
            SizePolicy::Pad => size_policy::padded(&net, config.stride(), imgs),
            SizePolicy::Tile => imgs
                .iter()
                .map(|img| {
                    tiling::translate_tiled(&|x| self.forward(x), &self.tile_geometry(), img)
                })
                .collect(),
        }
    }

    /// Refuses translating `n` images of `w`×`h` whose estimate exceeds the memory budget,
    /// before anything of their size is allocated.
    pub fn check_memory(&self, w: usize, h: usize, n: usize) -> Result<()> {
        let policy = self.options.size_policy;
        // A batch keeps every image's buffers and activations alive at once: n times one
        // image's estimate bounds it (tile runs them one by one, still n times the ends).
        let n64 = n.max(1) as u64;
        let estimate = memory::translate_bytes(&self.config(), &self.options, w, h);
        // The tile policy's estimate, only for the message of a refusal.
        let hint = || match policy {
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
        let what = match n {
            0 | 1 => format!("translating a {w}x{h} image with the {} policy", policy.name()),
            n => {
                format!("translating {n} {w}x{h} images at once with the {} policy", policy.name())
            }
        };
        memory::check(&what, estimate.saturating_mul(n64), self.options.memory_budget_mb, hint)
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
        let mut out = self.translate_batch(std::slice::from_ref(img), format, false)?;
        out.pop().ok_or_else(|| Error::invalid("image", "no output"))
    }

    /// Translates images of one size (any sample formats and channel counts) together, in one
    /// forward pass: each output as [`Model::translate_as`] gives it. Each image is normalised
    /// by its own statistics (as alone, to within float rounding), unless `shared_stats`: then
    /// batch norm takes the statistics of the whole batch. An image of another size than the
    /// first is an error naming its index.
    pub fn translate_batch(
        &self,
        imgs: &[ImageView],
        format: SampleFormat,
        shared_stats: bool,
    ) -> Result<Vec<Image>> {
        let Some(first) = imgs.first() else { return Ok(Vec::new()) };
        for (i, img) in imgs.iter().enumerate() {
            if (img.width, img.height) != (first.width, first.height) {
                return Err(Error::invalid(
                    format!("batch image {i}"),
                    format!(
                        "{}x{} differs from image 0's {}x{} (a batch holds images of one size)",
                        img.width, img.height, first.width, first.height
                    ),
                ));
            }
        }
        // Before the inputs are even converted: translate_any (this function's alone) does not
        // check again.
        self.check_memory(first.width, first.height, imgs.len())?;
        let work = || {
            let (in_channels, _) = self.config().channels();
            let srcs = imgs
                .iter()
                .enumerate()
                .map(|(i, img)| {
                    // A single image's error is the image's own; in a batch it names the index.
                    img.to_channels(in_channels).map_err(|e| match imgs.len() {
                        1 => e,
                        _ => Error::invalid(format!("batch image {i}"), e.to_string()),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let outs = self.translate_any(&srcs, shared_stats)?;
            outs.iter().zip(imgs).map(|(out, img)| Image::with_alpha_of(out, img, format)).collect()
        };
        match self.threads {
            // The first translation makes the layers' first-use weights: on this thread.
            Threads::Shared => {
                kernels::on_pool_after_first(!self.translated.swap(true, Ordering::Relaxed), work)
            }
            _ => self.threads.install(work),
        }
    }
}
