//! The filter steps, applied to one image in order.

use std::sync::Arc;

use anyhow::{bail, Result};
use image::{imageops, imageops::FilterType, DynamicImage, GenericImageView};
use serde::Deserialize;

use crate::plugin::Model;

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Half {
    Left,
    Right,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Nearest,
    Triangle,
    #[default]
    CatmullRom,
    Gaussian,
    Lanczos3,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlipDirection {
    #[default]
    Horizontal,
    Vertical,
}

/// What `concat` puts beside its input.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConcatWith {
    /// The image the previous step received (e.g. the label a translate step turned into the
    /// photo): review sheets of input | output.
    #[default]
    Input,
    /// The image as read from the file.
    Original,
}

/// Where the other image goes.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    #[default]
    Left,
    Right,
}

pub enum Step {
    Split(Half),
    Crop {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    },
    Resize {
        width: Option<u32>,
        height: Option<u32>,
        filter: Filter,
    },
    Flip(FlipDirection),
    /// A model instance shared by all workers (the plugin's models are thread-safe).
    Translate(Arc<Model>),
    Concat {
        with: ConcatWith,
        side: Side,
    },
}

/// Runs `steps` over `original`.
pub fn apply_all(steps: &[Step], original: &DynamicImage) -> Result<DynamicImage> {
    // `previous_input`: what the step before the current one received, for `concat`.
    let mut previous_input = original.clone();
    let mut current = original.clone();
    for (i, step) in steps.iter().enumerate() {
        let next = step
            .apply(&current, original, &previous_input)
            .map_err(|e| e.context(format!("step {} ({})", i + 1, step.name())))?;
        previous_input = std::mem::replace(&mut current, next);
    }
    Ok(current)
}

/// Runs `steps` over several images at once, each as [`apply_all`] would: translate steps send
/// same-size images to their model together, up to `batch` per forward pass; the other steps
/// run image by image. A failure is only the failing image's; results come in input order.
pub fn apply_all_batch(
    steps: &[Step],
    originals: &[DynamicImage],
    batch: usize,
) -> Vec<Result<DynamicImage>> {
    // Per image: (what the current step's predecessor received, the current image).
    let mut state: Vec<Result<(DynamicImage, DynamicImage)>> =
        originals.iter().map(|o| Ok((o.clone(), o.clone()))).collect();
    for (i, step) in steps.iter().enumerate() {
        let context = |e: anyhow::Error| e.context(format!("step {} ({})", i + 1, step.name()));
        match step {
            Step::Translate(model) if batch > 1 => {
                let live: Vec<(usize, &DynamicImage)> = state
                    .iter()
                    .enumerate()
                    .filter_map(|(k, s)| s.as_ref().ok().map(|(_, cur)| (k, cur)))
                    .collect();
                let imgs: Vec<&DynamicImage> = live.iter().map(|(_, img)| *img).collect();
                let results = model.translate_many(&imgs, batch);
                let ks: Vec<usize> = live.iter().map(|(k, _)| *k).collect();
                for (k, result) in ks.into_iter().zip(results) {
                    match result {
                        Ok(next) => {
                            if let Ok((previous_input, current)) = &mut state[k] {
                                *previous_input = std::mem::replace(current, next);
                            }
                        }
                        Err(e) => state[k] = Err(context(e)),
                    }
                }
            }
            _ => {
                for (s, original) in state.iter_mut().zip(originals) {
                    let Ok((previous_input, current)) = s else { continue };
                    match step.apply(current, original, previous_input) {
                        Ok(next) => *previous_input = std::mem::replace(current, next),
                        Err(e) => *s = Err(context(e)),
                    }
                }
            }
        }
    }
    state.into_iter().map(|s| s.map(|(_, current)| current)).collect()
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Split(_) => "split",
            Step::Crop { .. } => "crop",
            Step::Resize { .. } => "resize",
            Step::Flip(_) => "flip",
            Step::Translate(_) => "translate",
            Step::Concat { .. } => "concat",
        }
    }

    fn apply(
        &self,
        img: &DynamicImage,
        original: &DynamicImage,
        previous_input: &DynamicImage,
    ) -> Result<DynamicImage> {
        let (w, h) = img.dimensions();
        Ok(match self {
            Step::Split(half) => {
                if w < 2 {
                    bail!("a {w}x{h} image has no halves");
                }
                match half {
                    Half::Left => img.crop_imm(0, 0, w / 2, h),
                    Half::Right => img.crop_imm(w / 2, 0, w - w / 2, h),
                }
            }
            &Step::Crop { x, y, width, height } => {
                if x.checked_add(width).is_none_or(|r| r > w)
                    || y.checked_add(height).is_none_or(|b| b > h)
                {
                    bail!(
                        "the crop {width}x{height} at ({x}, {y}) falls outside the {w}x{h} image"
                    );
                }
                img.crop_imm(x, y, width, height)
            }
            &Step::Resize { width, height, filter } => {
                // One side alone keeps the aspect ratio.
                let (nw, nh) = match (width, height) {
                    (Some(a), Some(b)) => (a, b),
                    (Some(a), None) => (a, scale(h, a, w)),
                    (None, Some(b)) => (scale(w, b, h), b),
                    (None, None) => (w, h),
                };
                // One side given, the other follows the aspect ratio: checked here, where the
                // input's size is known (the config checks what it states).
                if u64::from(nw) * u64::from(nh) > crate::pipeline::config::MAX_RESIZE_PIXELS {
                    bail!(
                        "resizing {w}x{h} to {nw}x{nh} exceeds {} pixels (the limit of a resize step)",
                        crate::pipeline::config::MAX_RESIZE_PIXELS
                    );
                }
                img.resize_exact(nw, nh, filter_type(filter))
            }
            Step::Flip(FlipDirection::Horizontal) => img.fliph(),
            Step::Flip(FlipDirection::Vertical) => img.flipv(),
            Step::Translate(model) => model.translate(img)?,
            &Step::Concat { with, side } => {
                let other = match with {
                    ConcatWith::Input => previous_input,
                    ConcatWith::Original => original,
                };
                match side {
                    Side::Left => concat(other, img),
                    Side::Right => concat(img, other),
                }
            }
        })
    }
}

/// `side · num / den`, rounded, at least 1.
fn scale(side: u32, num: u32, den: u32) -> u32 {
    ((side as u64 * num as u64 + den as u64 / 2) / den.max(1) as u64).max(1) as u32
}

fn filter_type(f: Filter) -> FilterType {
    match f {
        Filter::Nearest => FilterType::Nearest,
        Filter::Triangle => FilterType::Triangle,
        Filter::CatmullRom => FilterType::CatmullRom,
        Filter::Gaussian => FilterType::Gaussian,
        Filter::Lanczos3 => FilterType::Lanczos3,
    }
}

/// `a | b` side by side; `a` is scaled to `b`'s height (keeping its aspect ratio) when they
/// differ. The result is RGBA if either has alpha, gray if both are gray, else RGB.
fn concat(a: &DynamicImage, b: &DynamicImage) -> DynamicImage {
    let a = if a.height() != b.height() {
        a.resize_exact(scale(a.width(), b.height(), a.height()), b.height(), FilterType::CatmullRom)
    } else {
        a.clone()
    };
    let (w, h) = (a.width() + b.width(), b.height());
    let gray = |i: &DynamicImage| matches!(i, DynamicImage::ImageLuma8(_));
    if a.color().has_alpha() || b.color().has_alpha() {
        let mut out = image::RgbaImage::new(w, h);
        imageops::replace(&mut out, &a.to_rgba8(), 0, 0);
        imageops::replace(&mut out, &b.to_rgba8(), a.width() as i64, 0);
        DynamicImage::ImageRgba8(out)
    } else if gray(&a) && gray(b) {
        let mut out = image::GrayImage::new(w, h);
        imageops::replace(&mut out, &a.to_luma8(), 0, 0);
        imageops::replace(&mut out, &b.to_luma8(), a.width() as i64, 0);
        DynamicImage::ImageLuma8(out)
    } else {
        let mut out = image::RgbImage::new(w, h);
        imageops::replace(&mut out, &a.to_rgb8(), 0, 0);
        imageops::replace(&mut out, &b.to_rgb8(), a.width() as i64, 0);
        DynamicImage::ImageRgb8(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([x as u8, y as u8, 0])
        }))
    }

    #[test]
    fn geometry_steps() {
        let i = img(10, 4);
        let right = apply_all(&[Step::Split(Half::Right)], &i).unwrap();
        assert_eq!(right.dimensions(), (5, 4));
        assert_eq!(right.to_rgb8().get_pixel(0, 0)[0], 5);
        let r = apply_all(
            &[Step::Resize { width: Some(20), height: None, filter: Filter::Nearest }],
            &i,
        )
        .unwrap();
        assert_eq!(r.dimensions(), (20, 8));
        assert!(apply_all(&[Step::Crop { x: 8, y: 0, width: 4, height: 1 }], &i).is_err());
        let f = apply_all(&[Step::Flip(FlipDirection::Horizontal)], &i).unwrap();
        assert_eq!(f.to_rgb8().get_pixel(0, 0)[0], 9);
        // concat with the input of the previous step: the split's input is the original.
        let c = apply_all(
            &[Step::Split(Half::Left), Step::Concat { with: ConcatWith::Input, side: Side::Left }],
            &i,
        )
        .unwrap();
        assert_eq!(c.dimensions(), (15, 4));
        let c = apply_all(
            &[
                Step::Split(Half::Left),
                Step::Flip(FlipDirection::Vertical),
                Step::Concat { with: ConcatWith::Input, side: Side::Right },
            ],
            &i,
        )
        .unwrap();
        assert_eq!(c.dimensions(), (10, 4));
    }
}
