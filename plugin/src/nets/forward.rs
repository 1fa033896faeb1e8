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
    dropout: Option<Mutex<StdRng>>,
}

impl Forward {
    /// Inference: no dropout, running statistics untouched.
    pub fn infer(stats: NormStats) -> Self {
        Self { stats, update_running: false, dropout: None }
    }
    /// Training: batch statistics, running statistics updated with PyTorch's momentum 0.1.
    pub fn train(dropout_rng: Option<StdRng>) -> Self {
        Self { stats: NormStats::Batch, update_running: true, dropout: dropout_rng.map(Mutex::new) }
    }
    /// Inference with seeded dropout (pix2pix's noise source), on request.
    pub fn with_dropout(mut self, seed: u64) -> Self {
        self.dropout = Some(Mutex::new(StdRng::seed_from_u64(seed)));
        self
    }
    /// Hands back the dropout generator (to checkpoint its state).
    pub fn into_dropout_rng(self) -> Option<StdRng> {
        self.dropout.map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn dropout_mask(&self, like: &Tensor, p: f32) -> Result<Option<Tensor>> {
        let Some(rng) = &self.dropout else { return Ok(None) };
        let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> =
            (0..like.elem_count()).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }).collect();
        Tensor::from_vec(mask, like.shape(), like.device()).map(Some)
    }
}

/// A layer that runs under a [`Forward`] context.
pub trait Layer {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor>;
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
