//! The pix2pix trainer (in progress): the public surface the plugin's ABI and C API call.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;

/// One training step's report to the caller.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub step: u64,
    pub epoch: u64,
    /// Steps the run will take in all (from the schedule or `max_steps`).
    pub total_steps: u64,
    pub g_gan: f32,
    /// λ·L1, as the reference logs it.
    pub g_l1: f32,
    pub d_real: f32,
    pub d_fake: f32,
    pub lr: f64,
    pub images_per_sec: f32,
}

/// What a finished (or cancelled) run leaves.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub cancelled: bool,
    /// `<output.dir>/latest`.
    pub checkpoint_dir: PathBuf,
}

/// Trains from a TOML config text. `progress` is called after every step; returning `false`
/// cancels the run (a checkpoint is saved first). `resume` continues from `<output.dir>/latest`.
pub fn train(_config_toml: &str, _resume: bool, _progress: &mut dyn FnMut(&Progress) -> bool) -> Result<TrainSummary> {
    Err(Error::invalid("train", "not implemented yet"))
}

/// Which half of an aligned A|B image is the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    AtoB,
    #[default]
    BtoA,
}

/// The evaluation protocol of the reference trainer's `evaluate`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    pub mae: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub count: usize,
}

/// Evaluates `model` over the aligned pairs in `data` (a folder of A|B images), resized to
/// `size`; writes an HTML page of input | output | target rows into `html_dir` if given.
pub fn evaluate(_model: &Model, _data: &Path, _direction: Direction, _size: usize, _html_dir: Option<&Path>) -> Result<Metrics> {
    Err(Error::invalid("evaluate", "not implemented yet"))
}
