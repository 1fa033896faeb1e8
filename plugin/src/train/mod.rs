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
use crate::filter::model::Model;

pub mod adam;
mod claim;
pub mod config;
pub mod data;
mod divergence;
pub mod evaluate;
pub mod init;
pub mod label_score;
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

/// One training step's report to the caller (the contract's type). `step` counts completed
/// steps (1 after the first); `epoch` is 1-based, as the reference prints it.
pub use pix2pix_ffi::TrainProgress as Progress;

/// Which half of an aligned A|B image is the input (the contract's setting).
pub use pix2pix_ffi::Direction;

/// Where a run reports: after every step, and with warnings and notes (skipped files, a
/// resumed run that differs). The library prints nothing itself; each face passes these on
/// through its own channel.
pub trait Reporter {
    /// Returning `false` cancels the run (a checkpoint is saved first).
    fn progress(&mut self, p: &Progress) -> bool;
    /// A warning or note, one line.
    fn message(&mut self, text: &str);
}

/// A progress callback alone: messages are dropped.
struct ProgressOnly<'a>(&'a mut dyn FnMut(&Progress) -> bool);

impl Reporter for ProgressOnly<'_> {
    fn progress(&mut self, p: &Progress) -> bool {
        (self.0)(p)
    }
    fn message(&mut self, _text: &str) {}
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
    /// named in a warning to the [`Reporter`].
    pub skipped: Vec<PathBuf>,
}

/// Trains from a TOML config text ([`config::Config`]), reporting steps only (warnings are
/// dropped; [`train_with`] hears them too). `progress` returning `false` cancels the run: `latest/` is saved first and the summary says
/// `cancelled`. `resume` continues from `<output.dir>/latest` exactly where it stopped (same
/// data order, augmentation and dropout as an uninterrupted run); without it a new run starts
/// in the folder, which must not hold a run unless `[output] overwrite = true`: then
/// `losses.csv` begins afresh and its checkpoints replace same-named folders of the earlier run
/// (other `step_*` folders of that run are left alone). The folder is locked for the run, and
/// a run whose losses turn non-finite stops with an error, `latest/` kept finite.
pub fn train(
    config_toml: &str,
    resume: bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<TrainSummary> {
    run::train(config_toml, resume, &mut ProgressOnly(progress))
}

/// [`train`], reporting every step and every warning to `report`.
pub fn train_with(
    config_toml: &str,
    resume: bool,
    report: &mut dyn Reporter,
) -> Result<TrainSummary> {
    run::train(config_toml, resume, report)
}

/// The evaluation protocol of the reference trainer's `evaluate`: means over the pairs of MAE
/// (0–255), PSNR (dB) and SSIM (scikit-image's defaults) on uint8 RGB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    pub mae: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub count: usize,
    /// With a segmenter: the outputs' label-consistency score ([`label_score`]) and the real
    /// targets' for scale.
    pub label_score: Option<f64>,
    pub real_label_score: Option<f64>,
}

/// Evaluates `model` over the aligned pairs in `data` (a folder of A|B images), resized to
/// `size`; writes an HTML page of input | output | target rows into `html_dir` if given
/// (`index.html` and `images/`). The protocol wants the model opened with batch statistics and
/// dropout off (`Options::default()`). See [`evaluate::evaluate`].
pub fn evaluate(
    model: &Model,
    data: &Path,
    direction: Direction,
    size: usize,
    html_dir: Option<&Path>,
) -> Result<Metrics> {
    evaluate::evaluate(model, data, direction, size, html_dir, None)
}

/// [`evaluate`], also scoring label consistency with `segmenter` (see [`label_score`]).
pub fn evaluate_with_segmenter(
    model: &Model,
    data: &Path,
    direction: Direction,
    size: usize,
    html_dir: Option<&Path>,
    segmenter: &label_score::Segmenter,
) -> Result<Metrics> {
    evaluate::evaluate(model, data, direction, size, html_dir, Some(segmenter))
}
