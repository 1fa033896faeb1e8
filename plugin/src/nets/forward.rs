//! The forward context every layer runs under: which normalisation statistics to use, whether
//! running statistics move (training), and the dropout generator.

use std::sync::Mutex;

use candle_core::{Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Which statistics normalisation layers use (the contract's setting).
pub use pix2pix_ffi::NormStats;

/// How a forward pass runs: the norm statistics, whether running statistics move (training),
/// and dropout (off unless a seeded generator is given).
pub struct Forward {
    pub stats: NormStats,
    pub update_running: bool,
    /// With batch statistics, batch norm normalises each image of the batch by its own
    /// statistics (over H, W per image and channel, with the layer's affine map), so that an
    /// image comes out as it would in a batch of one; otherwise by the whole batch's.
    pub per_image_stats: bool,
    dropout: Option<Dropout>,
}

/// The dropout generator: one for the whole batch (training), or one per image, each seeded
/// alike (inference of a batch: every image gets the masks it would get alone).
enum Dropout {
    Batch(Box<Mutex<StdRng>>),
    PerImage(Mutex<Vec<StdRng>>),
}

impl Forward {
    /// Inference: no dropout, running statistics untouched.
    pub fn infer(stats: NormStats) -> Self {
        Self { stats, update_running: false, per_image_stats: false, dropout: None }
    }
    /// Inference of a batch whose images are independent: each normalised by its own
    /// statistics, and with seeded dropout each given its own generator (see
    /// [`Forward::with_dropout_per_image`]).
    pub fn per_image(mut self) -> Self {
        self.per_image_stats = true;
        self
    }
    /// Training: batch statistics, running statistics updated with PyTorch's momentum 0.1.
    pub fn train(dropout_rng: Option<StdRng>) -> Self {
        Self {
            stats: NormStats::Batch,
            update_running: true,
            per_image_stats: false,
            dropout: dropout_rng.map(|r| Dropout::Batch(Box::new(Mutex::new(r)))),
        }
    }
    /// Inference with seeded dropout (pix2pix's noise source), on request.
    pub fn with_dropout(mut self, seed: u64) -> Self {
        self.dropout = Some(Dropout::Batch(Box::new(Mutex::new(StdRng::seed_from_u64(seed)))));
        self
    }
    /// Inference of a batch of `images` with seeded dropout, each image drawing its masks from
    /// its own generator seeded with `seed`: the masks it would get translated alone.
    pub fn with_dropout_per_image(mut self, seed: u64, images: usize) -> Self {
        let rngs = (0..images).map(|_| StdRng::seed_from_u64(seed)).collect();
        self.dropout = Some(Dropout::PerImage(Mutex::new(rngs)));
        self
    }
    /// Hands back the dropout generator (to checkpoint its state).
    pub fn into_dropout_rng(self) -> Option<StdRng> {
        match self.dropout? {
            Dropout::Batch(m) => Some(m.into_inner().unwrap_or_else(|e| e.into_inner())),
            Dropout::PerImage(_) => None,
        }
    }

    pub(crate) fn dropout_mask(&self, like: &Tensor, p: f32) -> Result<Option<Tensor>> {
        let Some(dropout) = &self.dropout else { return Ok(None) };
        let keep = 1.0 / (1.0 - p);
        let draw = |rng: &mut StdRng, n: usize, mask: &mut Vec<f32>| {
            mask.extend((0..n).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }))
        };
        let mut mask = Vec::with_capacity(like.elem_count());
        match dropout {
            Dropout::Batch(rng) => draw(
                &mut rng.lock().unwrap_or_else(|e| e.into_inner()),
                like.elem_count(),
                &mut mask,
            ),
            Dropout::PerImage(rngs) => {
                let mut rngs = rngs.lock().unwrap_or_else(|e| e.into_inner());
                let n = like.dim(0)?;
                if n != rngs.len() {
                    candle_core::bail!("dropout: a batch of {n} images, {} generators", rngs.len())
                }
                let per = like.elem_count() / n.max(1);
                for rng in rngs.iter_mut() {
                    draw(rng, per, &mut mask);
                }
            }
        }
        Tensor::from_vec(mask, like.shape(), like.device()).map(Some)
    }
}

/// A layer that runs under a [`Forward`] context.
pub trait Layer {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor>;

    /// The output as the two tensors it concatenates along channels, where it is such a
    /// concatenation (the U-Net's skip blocks): the layers after it can then read the parts in
    /// place (the up path's ReLU and transposed convolution); `None`: call `forward`.
    fn forward_parts(&self, _x: &Tensor, _f: &Forward) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }

    /// Folds each batch norm on running statistics into the convolution before it, for a
    /// frozen model that will only normalise with running statistics (`filter::Model` opened
    /// so): afterwards the layer computes the same map with one copy of the weights instead of
    /// the stored and folded pair, and batch statistics are no longer possible.
    fn fold_running_norms(&mut self) -> Result<()> {
        Ok(())
    }
}

/// `x.run(&layer, f)`: candle's `apply`, with the forward context.
pub trait Run {
    fn run<L: Layer + ?Sized>(&self, layer: &L, f: &Forward) -> Result<Tensor>;
}

impl Run for Tensor {
    fn run<L: Layer + ?Sized>(&self, layer: &L, f: &Forward) -> Result<Tensor> {
        layer.forward(self, f)
    }
}
