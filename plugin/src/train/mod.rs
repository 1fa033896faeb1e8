//! The pix2pix trainer: the public surface the plugin's ABI and C API call ([`train()`],
//! [`evaluate()`]), and its parts, one concept per module.
//!
//! A run is described by one TOML file ([`config`]); it reads pairs through a loader thread
//! ([`data`], [`preprocess`]), takes the reference's step ([`trainer`], [`loss`], [`adam`],
//! [`schedule`], [`init`]) with every random draw derived from (seed, counter) ([`rng`]), and
//! leaves atomic checkpoint folders ([`state`]), `losses.csv` ([`log`]), sample PNGs
//! ([`samples`]) and a loss-curve PNG ([`loss_curve`]) in `[output] dir`. Resuming from
//! `latest/` continues exactly.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::model::Model;

pub mod adam;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod init;
pub mod log;
pub mod loss;
pub mod loss_curve;
pub mod metrics;
pub mod preprocess;
pub mod rng;
mod run;
pub mod samples;
pub mod schedule;
pub mod state;
pub mod trainer;

/// One training step's report to the caller. `step` counts completed steps (1 after the first);
/// `epoch` is 1-based, as the reference prints it.
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
    /// Usable pairs in the training set.
    pub pairs: usize,
    /// Files left out of the training set (unreadable, or without a partner); each was
    /// named in a warning on stderr.
    pub skipped: Vec<PathBuf>,
}

/// Trains from a TOML config text ([`config::Config`]). `progress` is called after every step;
/// returning `false` cancels the run: `latest/` is saved first and the summary says
/// `cancelled`. `resume` continues from `<output.dir>/latest` exactly where it stopped (same
/// data order, augmentation and dropout as an uninterrupted run); without it a new run starts
/// in the folder: `losses.csv` begins afresh and its checkpoints replace same-named folders of
/// an earlier run (other `step_*` folders of that run are left alone).
pub fn train(config_toml: &str, resume: bool, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<TrainSummary> {
    run::train(config_toml, resume, progress)
}

/// Which half of an aligned A|B image is the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    AtoB,
    #[default]
    BtoA,
}

/// The evaluation protocol of the reference trainer's `evaluate`: means over the pairs of MAE
/// (0–255), PSNR (dB) and SSIM (scikit-image's defaults) on uint8 RGB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    pub mae: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub count: usize,
}

/// Evaluates `model` over the aligned pairs in `data` (a folder of A|B images), resized to
/// `size`; writes an HTML page of input | output | target rows into `html_dir` if given
/// (`index.html` and `images/`). The protocol wants the model opened with batch statistics and
/// dropout off (`Options::default()`). See [`evaluate::evaluate`].
pub fn evaluate(model: &Model, data: &Path, direction: Direction, size: usize, html_dir: Option<&Path>) -> Result<Metrics> {
    evaluate::evaluate(model, data, direction, size, html_dir)
}
