//! Training and evaluation, as every face calls them.

use std::path::Path;

use crate::faces::api::error::{ApiError, ApiResult};
use crate::faces::api::model::{open_model, LoadedModel};
use crate::filter::image_tensor::MAX_PIXELS;
use crate::filter::model::Options;
use crate::train;

/// Trains from a TOML config text, reporting steps and warnings to `report`; its `progress`
/// returning `false` cancels (after a checkpoint).
pub fn train(
    config_toml: &str,
    resume: bool,
    report: &mut dyn train::Reporter,
) -> ApiResult<train::TrainSummary> {
    Ok(train::train_with(config_toml, resume, report)?)
}

/// A direction by its contract name; empty means the contract's default.
pub fn parse_direction(s: &str) -> ApiResult<train::Direction> {
    match s {
        "" => Ok(train::Direction::default()),
        s => train::Direction::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "invalid direction: `{s}` ({} expected)",
                train::Direction::NAMES.join(" or ")
            ))
        }),
    }
}

/// Evaluates `model` over the aligned A|B pairs in `data`, at `size` (0 = the model's native
/// size), writing an HTML page into `html_dir` if given.
pub fn evaluate(
    model: &LoadedModel,
    data: &Path,
    direction: train::Direction,
    size: usize,
    html_dir: Option<&Path>,
) -> ApiResult<train::Metrics> {
    evaluate_ex(model, data, direction, size, html_dir, None)
}

/// [`evaluate`], and with a `segmenter` checkpoint (a photo → labels unet_128) the label
/// score of the outputs and of the real targets (`train::label_score`).
pub fn evaluate_ex(
    model: &LoadedModel,
    data: &Path,
    direction: train::Direction,
    size: usize,
    html_dir: Option<&Path>,
    segmenter: Option<&Path>,
) -> ApiResult<train::Metrics> {
    let size = if size == 0 { model.info().native_size } else { size };
    if size.checked_mul(size).is_none_or(|p| p > MAX_PIXELS) {
        return Err(ApiError::invalid(format!(
            "invalid evaluation size: {size} (at most {MAX_PIXELS} pixels)"
        )));
    }
    Ok(match segmenter {
        Some(path) => {
            let seg = train::label_score::Segmenter::open(path)?;
            train::evaluate_with_segmenter(model.model(), data, direction, size, html_dir, &seg)?
        }
        None => train::evaluate(model.model(), data, direction, size, html_dir)?,
    })
}

/// Evaluation by checkpoint path (`None` = the shipped default model), default options, with
/// an optional segmenter as [`evaluate_ex`].
pub fn evaluate_path(
    model: Option<&Path>,
    data: &Path,
    direction: train::Direction,
    size: usize,
    html_dir: Option<&Path>,
    segmenter: Option<&Path>,
) -> ApiResult<train::Metrics> {
    let model = open_model(model, Options::default())?;
    evaluate_ex(&model, data, direction, size, html_dir, segmenter)
}
